"""Producers and consumers in separate processes: a producer SIGKILLed mid-write, Ctrl-C
during blocking calls, Python <-> Rust on one channel."""

import os
import signal
import sys
import time

import numpy as np
import pytest

import labhub
from labhub import shm

from conftest import WATCHDOG, binary

PRODUCER = r"""
import sys, numpy as np, labhub
name, start = sys.argv[1], int(sys.argv[2])
cam = labhub.shm.create_producer(name, dtype=np.uint32, shape=(256, 256), policy="ring:4:block")
print("created", cam.next_frame_id, flush=True)
sys.stdin.readline()           # consumers attach first
while True:
    with cam.loan() as frame:
        k = frame.frame_id
        a = frame.array
        a[:128] = k            # half the frame, then the marker line the killer waits for
        if k == start + 20:
            print("mid-write", k, flush=True)
            sys.stdin.readline()   # SIGKILLed here, half written
        a[128:] = k
        del a
"""


def test_frames_cross_processes_and_a_sigkilled_producer_leaves_no_torn_frame(name, spawn):
    producer = spawn(PRODUCER, name, 0)
    producer.expect("created 0")
    viewer = shm.open_consumer(name, dtype=np.uint32, shape=(256, 256))
    producer.send("go")
    producer_pid = producer.proc.pid
    seen = []
    while True:
        with viewer.next(WATCHDOG) as f:
            a = f.array
            assert (a == f.frame_id).all(), f"frame {f.frame_id} is torn"
            seen.append(f.frame_id)
            del a
        if f.frame_id == 19:
            break
    producer.expect("mid-write 20")
    os.kill(producer_pid, signal.SIGKILL)
    producer.wait()
    with pytest.raises(labhub.TimeoutError):
        viewer.next(0.2)            # the half-written frame 20 is never handed out
    restarted = spawn(PRODUCER, name, 100)
    restarted.expect("created 20")  # frame ids continue after the restart
    restarted.send("go")
    with viewer.next(WATCHDOG) as f:
        assert f.frame_id == 20 and (f.array == 20).all()
    assert seen == list(range(20))


CONSUMER_WAITING = r"""
import signal, sys, time, labhub
signal.signal(signal.SIGINT, signal.default_int_handler)  # a background parent may ignore it
viewer = labhub.shm.open_consumer(sys.argv[1])
try:
    # Inside the try: the parent's SIGINT may come as soon as the line is out.
    print("waiting", flush=True)
    viewer.next()
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


def test_ctrl_c_interrupts_a_blocking_read(name, spawn):
    cam = shm.create_producer(name, dtype=np.uint8, shape=(4,))  # kept: the child opens it
    child = spawn(CONSUMER_WAITING, name)
    child.expect("waiting")
    time.sleep(0.1)  # let it enter the wait; being early only makes the test pass sooner
    child.proc.send_signal(signal.SIGINT)
    child.expect("interrupted", timeout=WATCHDOG)
    assert child.wait() == 0
    cam.close()


PRODUCER_BLOCKED = r"""
import signal, sys, numpy as np, labhub
signal.signal(signal.SIGINT, signal.default_int_handler)  # a background parent may ignore it
cam = labhub.shm.create_producer(sys.argv[1], dtype=np.uint8, shape=(4,), policy="ring:1:block:1h")
print("created", flush=True)
sys.stdin.readline()
cam.publish(np.zeros(4, dtype=np.uint8))
try:
    # Inside the try: the parent's SIGINT may come as soon as the line is out.
    print("blocking", flush=True)
    cam.loan()
except KeyboardInterrupt:
    print("interrupted dropped=%d" % cam.stats()["dropped"], flush=True)
"""


def test_ctrl_c_interrupts_a_loan_blocked_on_a_full_ring(name, spawn):
    child = spawn(PRODUCER_BLOCKED, name)
    child.expect("created")
    viewer = shm.open_consumer(name)   # reads nothing: the ring of one slot fills
    child.send("go")
    child.expect("blocking")
    time.sleep(0.1)
    child.proc.send_signal(signal.SIGINT)
    child.expect("interrupted dropped=0", timeout=WATCHDOG)
    assert child.wait() == 0
    del viewer


CONSUMER_THREAD = r"""
import sys, threading, labhub
viewer = labhub.shm.open_consumer(sys.argv[1])
got = []
t = threading.Thread(target=lambda: got.append(viewer.next(30).frame_id))
t.start()
print("started", flush=True)
sys.stdin.readline()
t.join()
print("got", got[0], flush=True)
"""


def test_a_read_in_another_thread_does_not_block_the_interpreter(name, spawn):
    cam = shm.create_producer(name, dtype=np.uint8, shape=(4,))
    child = spawn(CONSUMER_THREAD, name)
    child.expect("started")
    child.send("")        # the main thread runs while the reader waits with the GIL released
    cam.publish(np.zeros(4, dtype=np.uint8))
    child.expect("got 0")


@pytest.mark.parametrize("dtype, shape", [(np.uint16, (3, 4)), (np.float32, (2, 3, 5)),
                                          (np.complex128, (7,)), (np.int8, (2, 2, 2, 2))])
def test_a_python_producer_feeds_a_rust_consumer(name, spawn, dtype, shape):
    element = labhub._schema.element_of(dtype)
    dims = ",".join(map(str, shape))
    cam = shm.create_producer(name, dtype=dtype, shape=shape)
    rust = spawn([binary("labhub-test-child"), "interop-consume", name, element, dims, 3])
    rust.expect("attached")
    for _ in range(3):
        with cam.loan() as frame:
            k = frame.frame_id
            n = frame.nbytes
            frame.array.view(np.uint8).reshape(-1)[:] = (k + np.arange(n)) % 251
    for k in range(3):
        assert rust.expect("frame") == f"frame {k} {element} {list(shape)}"
    rust.expect("done")
    assert rust.wait() == 0


@pytest.mark.parametrize("dtype, shape", [(np.uint16, (3, 4)), (np.float64, (5, 2)),
                                          (np.bool_, (9,))])
def test_a_rust_producer_feeds_a_python_consumer(name, spawn, dtype, shape):
    element = labhub._schema.element_of(dtype)
    rust = spawn([binary("labhub-test-child"), "interop-produce", name, element,
                  ",".join(map(str, shape)), 3])
    rust.expect("created")
    viewer = shm.open_consumer(name, dtype=dtype, shape=shape)
    rust.send("go")
    for k in range(3):
        with viewer.next(WATCHDOG) as f:
            assert (f.frame_id, f.dtype, f.shape) == (k, np.dtype(dtype), shape)
            raw = f.array.view(np.uint8).reshape(-1)
            assert (raw == (k + np.arange(raw.size)) % 251).all()
            del raw
    rust.expect("published 3")


EXAMPLES = __import__("pathlib").Path(__file__).resolve().parents[1] / "examples"


def test_the_examples_camera_and_viewer_run_and_stop_on_ctrl_c(name, spawn):
    camera = spawn([sys.executable, "-u", EXAMPLES / "camera.py", "--no-hub", "--channel", name,
                    "--fps", "200", "--shape", "48", "64"])
    camera.expect("publishing")
    viewer = spawn([sys.executable, "-u", EXAMPLES / "viewer.py", "--no-hub", "--channel", name])
    viewer.expect(f"{name}: (48, 64) uint16")
    line = viewer.expect("frame ")
    assert "mean" in line and "frames/s" in line
    for child in (viewer, camera):
        child.proc.send_signal(signal.SIGINT)
        child.expect("stopped")
        assert child.wait() == 0
