#!/usr/bin/env python3
"""Throughput of a Python producer -> Python consumer through labhub, against the same
channel between Rust processes, multiprocessing.shared_memory with a Pipe, and pyzmq
zero-copy PUSH/PULL over ipc; frames of 4 KiB, 1 MiB and 4 MiB. The producer writes every
frame with numpy (into the loan for labhub), the consumer touches the first and last byte.
Systems are run alternately, round after round, and the median of the rounds is reported.

    python3 python/bench/bench_channels.py [--rounds 5] [--child PATH]

needs the labhub package (built in release), numpy and pyzmq; --child is a release build of
labhub-test-child (the Rust baseline): `cargo build --release -p labhub-tests --bin
labhub-test-child`.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid

import numpy as np

SIZES = {"4KiB": 4096, "1MiB": 1 << 20, "4MiB": 4 << 20}
FRAMES = {"4KiB": 400_000, "1MiB": 20_000, "4MiB": 5000}


# ---- labhub, Python on both sides -------------------------------------------------------

def labhub_consumer(name, size, frames):
    import labhub
    c = labhub.shm.open_consumer(name)
    print("attached", flush=True)
    start = None
    total = 0
    for _ in range(frames):
        with c.next(60) as f:
            if start is None:
                start = time.perf_counter()
            a = f.array
            total += int(a[0]) + int(a[-1])
            del a
    print("rate", (frames - 1) / (time.perf_counter() - start), total, flush=True)


def run_labhub(size, frames):
    import labhub
    name = f"bench-py-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    cam = labhub.shm.create_producer(name, dtype=np.uint8, shape=(size,), policy="ring:8:block")
    child = subprocess.Popen([sys.executable, __file__, "--role", "labhub-consumer", name,
                              str(size), str(frames)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().startswith("attached")
    for k in range(frames):
        with cam.loan() as f:
            f.array[:] = k & 0xFF
    rate = float(child.stdout.readline().split()[1])
    child.wait()
    cam.close()
    labhub.shm.remove_channel(name)
    return rate


# ---- the same channel between Rust processes ---------------------------------------------

def run_rust(size, frames, child_bin):
    name = f"bench-rs-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    prod = subprocess.Popen([child_bin, "interop-bench-produce", name, "u8", str(size), str(frames)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert prod.stdout.readline().startswith("created")
    cons = subprocess.Popen([child_bin, "interop-bench-consume", name, "u8", str(size), str(frames)],
                            stdout=subprocess.PIPE, text=True)
    assert cons.stdout.readline().startswith("attached")
    prod.stdin.write("go\n")
    prod.stdin.flush()
    rate = float(cons.stdout.readline().split()[1])
    cons.wait()
    prod.wait()
    import labhub
    labhub.shm.remove_channel(name)
    return rate


# ---- multiprocessing.shared_memory with a Pipe --------------------------------------------

SLOTS = 8


def shm_consumer(shm_name, size, frames, conn):
    from multiprocessing import shared_memory
    mem = shared_memory.SharedMemory(name=shm_name)
    slots = np.ndarray((SLOTS, size), dtype=np.uint8, buffer=mem.buf)
    start = None
    total = 0
    for _ in range(frames):
        slot = conn.recv()
        if start is None:
            start = time.perf_counter()
        a = slots[slot]
        total += int(a[0]) + int(a[-1])
        conn.send(slot)  # the slot is free again
    conn.send(("rate", (frames - 1) / (time.perf_counter() - start)))
    del slots, a
    mem.close()


def run_shared_memory(size, frames):
    import multiprocessing as mp
    from multiprocessing import shared_memory
    ctx = mp.get_context("spawn")
    mem = shared_memory.SharedMemory(create=True, size=SLOTS * size)
    slots = np.ndarray((SLOTS, size), dtype=np.uint8, buffer=mem.buf)
    here, there = ctx.Pipe()
    child = ctx.Process(target=shm_consumer, args=(mem.name, size, frames, there))
    child.start()
    free = list(range(SLOTS))
    for k in range(frames):
        if not free:
            free.append(here.recv())
        slot = free.pop()
        slots[slot][:] = k & 0xFF
        here.send(slot)
    while True:
        msg = here.recv()
        if isinstance(msg, tuple):
            rate = msg[1]
            break
    child.join()
    del slots
    mem.close()
    mem.unlink()
    return rate


# ---- pyzmq zero-copy PUSH/PULL over ipc ----------------------------------------------------

def zmq_consumer(endpoint, frames):
    import zmq
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.connect(endpoint)
    print("attached", flush=True)
    start = None
    total = 0
    for _ in range(frames):
        msg = pull.recv(copy=False)
        if start is None:
            start = time.perf_counter()
        a = np.frombuffer(msg.buffer, dtype=np.uint8)
        total += int(a[0]) + int(a[-1])
    print("rate", (frames - 1) / (time.perf_counter() - start), total, flush=True)
    pull.close(0)
    ctx.term()


def run_zmq(size, frames):
    import zmq
    endpoint = f"ipc:///tmp/labhub-bench-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, SLOTS)
    push.bind(endpoint)
    child = subprocess.Popen([sys.executable, __file__, "--role", "zmq-consumer", endpoint,
                              "0", str(frames)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().startswith("attached")
    for k in range(frames):
        buf = np.empty(size, dtype=np.uint8)   # a fresh buffer: zmq holds it until sent
        buf[:] = k & 0xFF
        push.send(buf, copy=False)
    rate = float(child.stdout.readline().split()[1])
    child.wait()
    push.close(0)
    ctx.term()
    return rate


# ---- per-frame costs ----------------------------------------------------------------------

def per_frame_costs(size=4096, n=100_000):
    """ns per loan+commit (with a numpy write of the frame) and per read (next, the view, a
    touch, release), one process, the consumer keeping up."""
    import labhub
    name = f"bench-cost-{os.getpid()}"
    cam = labhub.shm.create_producer(name, dtype=np.uint8, shape=(size,), policy="ring:8:block")
    c = labhub.shm.open_consumer(name)
    loan_ns = read_ns = 0
    for k in range(n):
        t0 = time.perf_counter_ns()
        with cam.loan() as f:
            f.array[:] = k & 0xFF
        t1 = time.perf_counter_ns()
        with c.next(5) as g:
            a = g.array
            _ = int(a[0]) + int(a[-1])
            del a
        t2 = time.perf_counter_ns()
        loan_ns += t1 - t0
        read_ns += t2 - t1
    cam.close()
    c.close()
    labhub.shm.remove_channel(name)
    return loan_ns / n, read_ns / n


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--child", default=os.path.join(os.path.dirname(__file__), "../../target/release/labhub-test-child"))
    p.add_argument("--role")
    p.add_argument("rest", nargs="*")
    a = p.parse_args()
    if a.role == "labhub-consumer":
        return labhub_consumer(a.rest[0], int(a.rest[1]), int(a.rest[2]))
    if a.role == "zmq-consumer":
        return zmq_consumer(a.rest[0], int(a.rest[2]))
    systems = {
        "labhub-python": lambda s, f: run_labhub(s, f),
        "labhub-rust": lambda s, f: run_rust(s, f, a.child),
        "shared_memory+Pipe": run_shared_memory,
        "pyzmq": run_zmq,
    }
    print(f"load before: {os.getloadavg()}")
    results = {}
    for label, size in SIZES.items():
        frames = FRAMES[label]
        rates = {k: [] for k in systems}
        for _ in range(a.rounds):
            for system, run in systems.items():
                rates[system].append(run(size, frames))
        results[label] = {k: statistics.median(v) for k, v in rates.items()}
        r = results[label]
        py = r["labhub-python"]
        print(f"{label}: " + ", ".join(f"{k} {v:,.0f} frames/s" for k, v in r.items()))
        print(f"{label}: ratios python/rust {py / r['labhub-rust']:.2f}, "
              f"python/shared_memory {py / r['shared_memory+Pipe']:.2f}, "
              f"python/pyzmq {py / r['pyzmq']:.2f}", flush=True)
    loan, read = per_frame_costs()
    print(f"per frame (4 KiB, one process): loan+write+commit {loan:.0f} ns, read {read:.0f} ns")
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
