"""Brokerless channels: frames, metadata, element types, the view lifetime rules, lossy
copies, the state zone, bad arguments, the panic boundary and fork."""

import gc
import os
import sys

import numpy as np
import pytest

import labhub
from labhub import shm

ALL_DTYPES = [np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.uint64,
              np.int64, np.float32, np.float64, np.complex64, np.complex128, np.bool_]


def test_a_loan_written_in_place_reaches_the_consumer_with_dtype_shape_and_metadata(name):
    cam = shm.create_producer(name, dtype=np.uint16, shape=(4, 5), policy="ring:4:block")
    viewer = shm.open_consumer(name)
    with cam.loan() as frame:
        assert (frame.frame_id, frame.shape, frame.dtype) == (0, (4, 5), np.dtype("<u2"))
        frame.array[:] = np.arange(20, dtype=np.uint16).reshape(4, 5)
        frame.timestamp_ns = 123
    with viewer.next(timeout=WATCHDOG) as got:
        assert (got.frame_id, got.shape, got.dtype, got.timestamp_ns) == (0, (4, 5), np.dtype("<u2"), 123)
        assert got.held and got.valid()
        np.testing.assert_array_equal(got.array, np.arange(20).reshape(4, 5))
    assert viewer.dtype == np.uint16 and viewer.shape == (4, 5) and viewer.lossless


WATCHDOG = 30.0


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=lambda d: np.dtype(d).name)
def test_every_element_type_round_trips(name, dtype):
    cam = shm.create_producer(name, dtype=dtype, shape=(3, 2))
    viewer = shm.open_consumer(name, dtype=dtype, shape=(3, 2))
    data = (np.arange(6) % 2 == 1) if dtype is np.bool_ else np.arange(6).astype(dtype)
    cam.publish(data.reshape(3, 2))
    with viewer.next(WATCHDOG) as f:
        assert f.array.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(f.array, data.reshape(3, 2))


def test_a_smaller_loan_carries_its_own_shape(name):
    cam = shm.create_producer(name, dtype="f4", shape=(8, 8))
    viewer = shm.open_consumer(name)
    with cam.loan(shape=(2, 3)) as frame:
        assert frame.array.shape == (2, 3)
        frame.array[:] = 1.5
    with viewer.next(WATCHDOG) as f:
        assert f.shape == (2, 3) and f.array.sum() == 9.0
    with pytest.raises(ValueError, match="shape"):
        cam.loan(shape=(9, 1))


def test_publish_checks_dtype_and_shape_and_copies_non_contiguous_arrays(name):
    cam = shm.create_producer(name, dtype=np.int32, shape=(4, 4))
    viewer = shm.open_consumer(name)
    with pytest.raises(TypeError, match="array: dtype"):
        cam.publish(np.zeros((4, 4), dtype=np.float64))
    with pytest.raises(TypeError, match="array"):
        cam.publish([1, 2, 3])
    with pytest.raises(ValueError, match="shape"):
        cam.publish(np.zeros((5, 4), dtype=np.int32))
    source = np.arange(16, dtype=np.int32).reshape(4, 4)
    assert cam.publish(source.T) == 0
    with viewer.next(WATCHDOG) as f:
        np.testing.assert_array_equal(f.array, source.T)


def test_consumer_views_are_read_only_and_cannot_be_made_writable(name):
    cam = shm.create_producer(name, dtype=np.uint8, shape=(16,))
    viewer = shm.open_consumer(name)
    cam.publish(np.zeros(16, dtype=np.uint8))
    with viewer.next(WATCHDOG) as f:
        view = f.array
        with pytest.raises(ValueError):
            view[0] = 1
        with pytest.raises(ValueError):
            view.flags.writeable = True
        with pytest.raises(ValueError):
            view[2:].setflags(write=True)
        with pytest.raises(TypeError):
            memoryview(view.base)  # the base offers no buffer numpy could write through
        del view


def test_a_view_pins_its_frame_and_the_consumer_refuses_to_read_on_while_it_lives(name):
    cam = shm.create_producer(name, dtype=np.uint8, shape=(8,), policy="ring:4:block")
    viewer = shm.open_consumer(name)
    for k in range(3):
        cam.publish(np.full(8, k, dtype=np.uint8))
    frame = viewer.next(WATCHDOG)
    kept = frame.array[2:]          # a derived view pins the frame as well
    frame.release()                 # deferred: a view is alive
    del frame
    gc.collect()
    assert kept.sum() == 0 and viewer.stats()["published"] == 3
    with pytest.raises(labhub.FramesHeld) as err:
        viewer.next(WATCHDOG)
    assert isinstance(err.value, BufferError) and "copy" in str(err.value)
    del kept                        # the last view: the frame is released
    with viewer.next(WATCHDOG) as f:
        assert f.frame_id == 1 and f.array[0] == 1


def test_the_view_keeps_the_consumer_and_its_mapping_alive(name):
    cam = shm.create_producer(name, dtype=np.uint32, shape=(1024,))
    viewer = shm.open_consumer(name)
    cam.publish(np.arange(1024, dtype=np.uint32))
    view = viewer.next(WATCHDOG).array
    del viewer
    gc.collect()
    assert int(view[1023]) == 1023


def test_a_released_frame_has_no_array(name):
    cam = shm.create_producer(name, dtype=np.uint8, shape=(4,))
    viewer = shm.open_consumer(name)
    cam.publish(np.ones(4, dtype=np.uint8))
    frame = viewer.next(WATCHDOG)
    with frame:
        pass
    with pytest.raises(labhub.ReleasedError):
        frame.array
    assert frame.frame_id == 0 and not frame.valid()


def test_a_commit_is_refused_while_a_view_of_the_loan_exists(name):
    cam = shm.create_producer(name, dtype=np.uint8, shape=(4,))
    viewer = shm.open_consumer(name)
    loan = cam.loan()
    kept = loan.array
    with pytest.raises(labhub.ViewsExist) as err:
        loan.commit()
    assert isinstance(err.value, BufferError)
    with pytest.raises(labhub.LoanOpen):
        cam.loan()
    kept[:] = 9
    del kept
    assert loan.commit() == 0
    with pytest.raises(labhub.ReleasedError):
        loan.array
    with viewer.next(WATCHDOG) as f:
        assert list(f.array) == [9, 9, 9, 9]


def test_an_exception_in_the_with_block_abandons_the_loan(name):
    cam = shm.create_producer(name, dtype=np.uint8, shape=(4,))
    viewer = shm.open_consumer(name)
    with pytest.raises(RuntimeError):
        with cam.loan() as frame:
            frame.array[:] = 5
            raise RuntimeError("sensor failed")
    assert cam.next_frame_id == 0
    with pytest.raises(labhub.TimeoutError):
        viewer.next(0.05)


def test_an_abandoned_loan_with_views_stays_loaned_until_they_are_gone(name):
    cam = shm.create_producer(name, dtype=np.uint8, shape=(4,))
    loan = cam.loan()
    kept = loan.array
    loan.abandon()
    with pytest.raises(labhub.LoanOpen):
        cam.loan()
    del kept
    with cam.loan() as again:
        assert again.frame_id == 0


def test_a_dropped_loan_is_abandoned(name):
    cam = shm.create_producer(name, dtype=np.uint8, shape=(4,))
    cam.loan().array[:] = 1
    gc.collect()
    with cam.loan() as frame:
        assert frame.frame_id == 0


def test_a_loan_fills_through_the_buffer_protocol_free_numpy_way(name):
    cam = shm.create_producer(name, dtype=np.uint8, shape=(6,))
    viewer = shm.open_consumer(name)
    with cam.loan() as frame:
        np.copyto(frame.array, np.frombuffer(b"abcdef", dtype=np.uint8))
    with viewer.next(WATCHDOG) as f:
        assert f.array.tobytes() == b"abcdef"


@pytest.mark.parametrize("policy", ["latest", "double", "ring:4:drop"])
def test_lossy_policies_hand_out_validated_copies(name, policy):
    cam = shm.create_producer(name, dtype=np.float64, shape=(128,), policy=policy)
    viewer = shm.open_consumer(name)
    assert not viewer.lossless
    cam.publish(np.full(128, 2.5))
    f = viewer.next(WATCHDOG)
    assert not f.held and f.valid()
    copy = f.array
    assert copy.sum() == 320.0 and not copy.flags.writeable
    cam.publish(np.full(128, 7.0))
    assert copy.sum() == 320.0, "a copy does not change with the slot"
    with viewer.next(WATCHDOG) as g:
        assert g.array[0] == 7.0
        writable = g.copy()
        writable[0] = 1.0


def test_latest_skips_to_the_newest_frame(name):
    cam = shm.create_producer(name, dtype=np.uint8, shape=(1,), policy="ring:8:block")
    viewer = shm.open_consumer(name)
    assert viewer.latest() is None
    for k in range(5):
        cam.publish(np.array([k], dtype=np.uint8))
    with viewer.latest() as f:
        assert f.frame_id == 4


def test_schema_mismatch_names_the_field(name):
    shm.create_producer(name, dtype=np.uint16, shape=(4, 4), schema=("camera", 2))
    with pytest.raises(labhub.SchemaMismatch) as err:
        shm.open_consumer(name, dtype=np.float32)
    assert (err.value.field, err.value.expected, err.value.found) == ("element", "f32", "u16")
    with pytest.raises(labhub.SchemaMismatch) as err:
        shm.open_consumer(name, dtype=np.uint16, shape=(4, 5))
    assert err.value.field == "shape"
    with pytest.raises(labhub.SchemaMismatch) as err:
        shm.open_consumer(name, schema=("camera", 3))
    assert err.value.field == "schema_version"
    with pytest.raises(labhub.ConfigMismatch) as err:
        shm.open_consumer(name, policy="latest")
    assert err.value.field == "policy"


def test_a_second_live_producer_is_refused(name):
    first = shm.create_producer(name, dtype=np.uint8, shape=(4,))
    with pytest.raises(labhub.ChannelBusy):
        shm.create_producer(name, dtype=np.uint8, shape=(4,))
    first.close()
    second = shm.create_producer(name, dtype=np.uint8, shape=(4,))
    assert second.next_frame_id == 0


def test_a_missing_channel_and_a_wrong_secret(name):
    with pytest.raises(labhub.ChannelNotFound) as err:
        shm.open_consumer(name)
    assert isinstance(err.value, LookupError)
    shm.create_producer(name, dtype=np.uint8, shape=(4,), secret="run-17")
    with pytest.raises(labhub.WrongSecret):
        shm.open_consumer(name, secret=b"run-18")
    shm.open_consumer(name, secret="run-17")


def test_a_read_times_out_with_a_builtin_timeout_error(name):
    shm.create_producer(name, dtype=np.uint8, shape=(4,))
    viewer = shm.open_consumer(name)
    with pytest.raises(TimeoutError):
        viewer.next(timeout=0.05)


def test_a_full_failing_ring_raises_channel_full(name):
    cam = shm.create_producer(name, dtype=np.uint8, shape=(4,), policy="ring:2:fail")
    viewer = shm.open_consumer(name)
    cam.publish(np.zeros(4, dtype=np.uint8))
    cam.publish(np.zeros(4, dtype=np.uint8))
    with pytest.raises(labhub.ChannelFull):
        cam.loan()
    with viewer.next(WATCHDOG):
        pass
    cam.publish(np.zeros(4, dtype=np.uint8))


def test_a_blocking_ring_times_out_when_the_reader_stalls(name):
    cam = shm.create_producer(name, dtype=np.uint8, shape=(4,), policy="ring:1:block:50ms")
    viewer = shm.open_consumer(name)
    cam.publish(np.zeros(4, dtype=np.uint8))
    with pytest.raises(labhub.TimeoutError):
        cam.loan()
    assert cam.stats()["dropped"] == 1
    del viewer


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_the_state_zone_holds_a_dict(name, fmt):
    cam = shm.create_producer(name, dtype=np.uint8, shape=(4,), flex_size=4096, state_format=fmt)
    viewer = shm.open_consumer(name)
    assert viewer.read_state() is None
    assert cam.write_state({"exposure_ms": 12.5, "gain": 3, "mode": "fast"}) == 1
    assert viewer.read_state() == (1, {"exposure_ms": 12.5, "gain": 3, "mode": "fast"})
    with pytest.raises(ValueError, match="state"):
        cam.write_state({"big": "x" * 5000})
    with pytest.raises(ValueError, match="state"):
        cam.write_state({"not json": object()})


@pytest.mark.parametrize("kwargs, error, word", [
    (dict(dtype=np.uint16, shape=(0,)), ValueError, "shape"),
    (dict(dtype=np.uint16, shape=()), ValueError, "shape"),
    (dict(dtype=np.uint16, shape=(1, 1, 1, 1, 1)), ValueError, "shape"),
    (dict(dtype=np.uint16, shape=(-1,)), ValueError, "shape"),
    (dict(dtype=np.uint16, shape=(2**40, 2**40)), ValueError, "slot_size"),
    (dict(dtype=np.uint16, shape=(2**64,)), ValueError, "shape"),
    (dict(dtype=np.uint16, shape=(1.5,)), TypeError, "shape"),
    (dict(dtype=np.uint16, shape="abc"), TypeError, "shape"),
    (dict(dtype=object, shape=(4,)), TypeError, "dtype"),
    (dict(dtype=">u2", shape=(4,)), ValueError, "dtype"),
    (dict(dtype="U8", shape=(4,)), TypeError, "dtype"),
    (dict(dtype=np.uint16, shape=(4,), policy="ring:0:block"), ValueError, "policy"),
    (dict(dtype=np.uint16, shape=(4,), policy="sometimes"), ValueError, "policy"),
    (dict(dtype=np.uint16, shape=(4,), policy=8), TypeError, "policy"),
    (dict(dtype=np.uint16, shape=(4,), flex_size=-1), ValueError, "flex_size"),
    (dict(dtype=np.uint16, shape=(4,), state_format="xml"), ValueError, "state_format"),
    (dict(dtype=np.uint16, shape=(4,), consumer_timeout=-3), ValueError, "consumer_timeout"),
    (dict(dtype=np.uint16, shape=(4,), secret=12), TypeError, "secret"),
    (dict(dtype=np.uint16, shape=(4,), schema=("x\n", 1)), ValueError, "schema_name"),
])
def test_bad_arguments_name_what_is_wrong(name, kwargs, error, word):
    with pytest.raises(error, match=word):
        shm.create_producer(name, **kwargs)


@pytest.mark.parametrize("bad", ["", "a/b", "..", "x" * 200, "sp ace"])
def test_bad_channel_names_are_value_errors(bad):
    with pytest.raises(ValueError, match="name"):
        shm.create_producer(bad, dtype=np.uint8, shape=(4,))
    with pytest.raises(TypeError, match="name"):
        shm.open_consumer(42)


def test_a_timeout_must_be_a_number_of_seconds(name):
    shm.create_producer(name, dtype=np.uint8, shape=(4,))
    viewer = shm.open_consumer(name)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="timeout"):
            viewer.next(bad)
    with pytest.raises(TypeError):
        viewer.next("soon")


def test_the_native_layer_refuses_hostile_arguments_without_crashing(name):
    native = labhub._native
    with pytest.raises(ValueError, match="dtype"):
        native.create_producer(None, name, "u17", [4], "latest")
    with pytest.raises(OverflowError):
        native.create_producer(None, name, "u8", [-4], "latest")
    with pytest.raises(ValueError, match="shape"):
        native.create_producer(None, name, "u8", [], "latest")
    with pytest.raises(TypeError):
        native.create_producer(None, name, "u8", "4", "latest")
    with pytest.raises(ValueError, match="slot_size"):
        native.create_producer(None, name, "u64", [2**32, 2**32], "latest")


def test_a_rust_panic_arrives_as_internal_error_not_a_crash():
    with pytest.raises(labhub.InternalError, match="deliberate panic") as err:
        labhub._native._panic_for_test()
    assert isinstance(err.value, RuntimeError)
    assert type(err.value).__name__ != "PanicException"


def test_closed_ends_say_so(name):
    cam = shm.create_producer(name, dtype=np.uint8, shape=(4,))
    viewer = shm.open_consumer(name)
    with cam:
        pass
    with pytest.raises(labhub.ClosedError):
        cam.loan()
    viewer.close()
    with pytest.raises(labhub.ClosedError):
        viewer.next(0)
    assert list(viewer) == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_cannot_use_or_give_up_its_parents_channel(name):
    cam = shm.create_producer(name, dtype=np.uint8, shape=(4,))
    viewer = shm.open_consumer(name)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            try:
                cam.publish(np.zeros(4, dtype=np.uint8))
            except labhub.ForkedError:
                try:
                    viewer.next(0)
                except labhub.ForkedError:
                    code = 0
            del cam, viewer
            gc.collect()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert cam.stats()["producer_pid"] == os.getpid()
    assert cam.stats()["consumers"] == 1
    cam.publish(np.ones(4, dtype=np.uint8))
    with viewer.next(WATCHDOG) as f:
        assert f.array[0] == 1


def test_help_explains_the_api():
    assert "numpy view" in labhub.Loan.__doc__
    assert "timeout" in labhub.Consumer.next.__doc__
    assert "dtype" in labhub.Hub.create_producer.__doc__


def test_closing_with_views_alive_waits_for_them(name):
    cam = shm.create_producer(name, dtype=np.uint8, shape=(4,))
    viewer = shm.open_consumer(name)
    cam.publish(np.full(4, 3, dtype=np.uint8))
    kept = viewer.next(WATCHDOG).array
    viewer.close()                     # detaches once `kept` is gone
    with pytest.raises(labhub.ClosedError):
        viewer.next(0)
    assert kept.sum() == 12 and cam.stats()["consumers"] == 1
    del kept
    assert cam.stats()["consumers"] == 0
    loan = cam.loan()
    view = loan.array
    loan.abandon()
    cam.close()                        # the producer goes with the loan's last view
    assert shm.open_consumer(name).producer_alive
    del view, loan
    gc.collect()
    assert not shm.open_consumer(name).producer_alive
