"""Recording and replay from Python: a recording read back with the real zarr-python, one made
through a real `labhub hub` and replayed into a live channel, Ctrl-C during a recording, and
bad arguments and hostile recordings as typed errors."""

import signal

import numpy as np
import pytest
import zarr

import labhub
from labhub import shm

from conftest import WATCHDOG


def test_a_recording_of_typed_frames_opens_in_zarr_python(name, tmp_path):
    path = tmp_path / "run.zarr"
    cam = shm.create_producer(name, dtype=np.uint16, shape=(3, 4), policy="ring:8:block",
                              flex_size=256, schema=("camera", 2))
    cam.write_state({"exposure_ms": 12.5})
    rec = shm.start_recording(name, path, frames=5, attributes={"operator": "ada", "n": 3})
    for k in range(5):
        with cam.loan(shape=(3, 4) if k % 2 == 0 else (2, 4)) as f:
            f.array[:] = np.arange(f.array.size, dtype=np.uint16).reshape(f.array.shape) + k
    summary = rec.wait(WATCHDOG)
    assert summary is not None, "watchdog: the recording did not end after 5 frames"
    assert summary["run_id"] == rec.run_id
    assert [(c["channel"], c["frames"], c["losses"]) for c in summary["channels"]] == [(name, 5, 0)]
    assert rec.done

    root = zarr.open_group(str(path), mode="r")
    assert root.attrs["complete"] is True
    assert root.attrs["run_id"] == rec.run_id
    assert root.attrs["attributes"] == {"operator": "ada", "n": 3}
    frames, shapes = root[f"{name}/frames"], root[f"{name}/shape"][:]
    assert frames.dtype == np.uint16 and frames.shape == (5, 3, 4)
    assert shapes.tolist() == [[3, 4], [2, 4], [3, 4], [2, 4], [3, 4]]
    for k in range(5):
        h, w = shapes[k]
        expect = np.arange(h * w, dtype=np.uint16).reshape(h, w) + k
        np.testing.assert_array_equal(frames[k][:h, :w], expect)
    assert root[f"{name}/frame_id"][:].tolist() == list(range(5))
    cam.close()


def test_a_hub_channel_is_recorded_and_replayed_into_a_live_channel(hub_process, name, tmp_path):
    path = tmp_path / "hub.zarr"
    again = name + "-again"
    with hub_process.client() as hub:
        cam = hub.create_producer(name, dtype=np.float32, shape=(8,), policy="ring:4:block")
        rec = hub.start_recording([name], path, frames=3)
        for k in range(3):
            cam.publish(np.full(8, k + 0.5, dtype=np.float32))
        summary = rec.wait(WATCHDOG)
        assert summary["channels"][0]["frames"] == 3
        cam.close()

        replay = hub.start_replay(path, rename={name: again}, rate="max", loop=True,
                                  preload=True)
        viewer = hub.open_consumer(again, dtype=np.float32, shape=(8,))
        seen = []
        while len(seen) < 4:
            with viewer.next(WATCHDOG) as f:
                seen.append(float(f.array[0]))
        assert set(seen) <= {0.5, 1.5, 2.5} and len(set(seen)) >= 2, seen
        done = replay.stop()
        assert done["channels"][0]["channel"] == again
        assert done["channels"][0]["frames"] >= 4


CHILD_RECORDING = r"""
import signal, sys, numpy as np, labhub
signal.signal(signal.SIGINT, signal.default_int_handler)  # a background parent may ignore it
cam = labhub.shm.create_producer(sys.argv[1], dtype=np.uint8, shape=(16,), policy="ring:8:drop")
rec = labhub.shm.start_recording(sys.argv[1], sys.argv[2])
cam.publish(np.full(16, 7, dtype=np.uint8))
try:
    # Inside the try: the parent's SIGINT may come as soon as the line is out.
    print("recording", flush=True)
    rec.wait()
except KeyboardInterrupt:
    summary = rec.stop()
    print("interrupted", summary["channels"][0]["frames"], flush=True)
"""


def test_ctrl_c_ends_a_recording_that_is_then_complete(name, spawn, tmp_path):
    path = tmp_path / "ctrl-c.zarr"
    child = spawn(CHILD_RECORDING, name, path)
    child.expect("recording")
    child.proc.send_signal(signal.SIGINT)
    line = child.expect("interrupted")
    assert child.wait() == 0
    root = zarr.open_group(str(path), mode="r")
    assert root.attrs["complete"] is True
    assert root[f"{name}/frames"].shape[0] == int(line.split()[1])


def test_bad_arguments_and_hostile_recordings_are_typed_errors(name, tmp_path):
    cam = shm.create_producer(name, dtype=np.uint8, shape=(4,))
    with pytest.raises(labhub.ChannelNotFound):
        shm.start_recording(name + "-none", tmp_path / "none.zarr")
    assert not (tmp_path / "none.zarr").exists(), "a failed start leaves no directory"
    (tmp_path / "exists.zarr").mkdir()
    (tmp_path / "exists.zarr" / "precious").write_text("kept")
    with pytest.raises(labhub.RecordingError) as err:
        shm.start_recording(name, tmp_path / "exists.zarr")
    assert isinstance(err.value, OSError)
    assert (tmp_path / "exists.zarr" / "precious").read_text() == "kept", "never removed"
    with pytest.raises(ValueError, match="channels"):
        shm.start_recording([], tmp_path / "a.zarr")
    with pytest.raises(TypeError, match="attributes"):
        shm.start_recording(name, tmp_path / "b.zarr", attributes={"x": object()})
    with pytest.raises(ValueError, match="flush_interval"):
        shm.start_recording(name, tmp_path / "c.zarr", flush_interval=0)
    with pytest.raises(TypeError, match="path"):
        shm.start_recording(name, 42)

    not_a_recording = tmp_path / "plain"
    not_a_recording.mkdir()
    (not_a_recording / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    with pytest.raises(labhub.RecordingError, match="labhub_recording"):
        shm.start_replay(not_a_recording)
    (not_a_recording / "zarr.json").write_text("not json")
    with pytest.raises(labhub.RecordingError):
        shm.start_replay(not_a_recording)
    with pytest.raises(labhub.RecordingError):
        shm.start_replay(tmp_path / "missing")

    path = tmp_path / "ok.zarr"
    rec = shm.start_recording(name, path, frames=1)
    cam.publish(np.zeros(4, dtype=np.uint8))
    assert rec.wait(WATCHDOG) is not None
    with pytest.raises(ValueError, match="rate"):
        shm.start_replay(path, rate="fast")
    with pytest.raises(ValueError, match="rename"):
        shm.start_replay(path, rename={"nope": "x"})
    with pytest.raises(labhub.RecordingError, match="limit"):
        shm.start_replay(path, max_frame_size=2)
    with pytest.raises(labhub.RecordingError, match="preloaded"):
        shm.start_replay(path, rename={name: name + "-small"}, preload=2).wait(WATCHDOG)
    shm.remove_channel(name + "-small")
    with pytest.raises(TypeError, match="preload"):
        shm.start_replay(path, preload="lots")
    cam.close()


def test_two_threads_waiting_on_one_recording_both_get_its_summary(name, tmp_path):
    import threading
    cam = shm.create_producer(name, dtype=np.uint8, shape=(4,))
    rec = shm.start_recording(name, tmp_path / "two.zarr", frames=2)
    got = []
    waiters = [threading.Thread(target=lambda: got.append(rec.wait(WATCHDOG))) for _ in range(2)]
    for w in waiters:
        w.start()
    for k in range(2):
        cam.publish(np.full(4, k, dtype=np.uint8))
    for w in waiters:
        w.join(WATCHDOG)
    assert len(got) == 2 and got[0] == got[1] and got[0]["channels"][0]["frames"] == 2
    assert rec.wait(0) == got[0]
    cam.close()
