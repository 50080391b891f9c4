#!/usr/bin/env python3
"""A camera-like producer: writes synthetic 16-bit images straight into loaned slots of
channel CHANNEL, with its settings in the state zone. Ctrl-C stops it.

    python3 camera.py [--channel cam0] [--fps 30] [--no-hub]
"""

import argparse
import signal
import time

import numpy as np

import labhub


def sensor(shape, k, out):
    """Fills `out` with a moving gradient plus noise (what a sensor SDK would write)."""
    rows = np.arange(shape[0], dtype=np.uint16)[:, None]
    cols = np.arange(shape[1], dtype=np.uint16)[None, :]
    np.add(rows, cols + np.uint16(k), out=out)
    out += np.random.randint(0, 16, size=shape, dtype=np.uint16)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--channel", default="cam0")
    p.add_argument("--shape", type=int, nargs=2, default=(480, 640))
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--no-hub", action="store_true", help="a brokerless channel (labhub.shm)")
    args = p.parse_args()
    shape = tuple(args.shape)
    hub = None if args.no_hub else labhub.Hub()
    maker = labhub.shm if hub is None else hub
    cam = maker.create_producer(args.channel, dtype=np.uint16, shape=shape,
                                policy="ring:8:block", flex_size=1024)
    cam.write_state({"sensor": "synthetic", "fps": args.fps, "shape": list(shape)})
    print(f"publishing {shape} uint16 frames on {args.channel!r} at {args.fps} frames/s; Ctrl-C stops")
    # Ctrl-C (SIGINT, also when started in the background) ends the loop between frames, so
    # a frame is never left half written.
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(True))
    period = 1.0 / args.fps
    try:
        next_at = time.monotonic()
        while not stop:
            try:
                with cam.loan() as frame:   # waits while the ring is full (1 s at most)
                    sensor(shape, frame.frame_id, frame.array)
            except labhub.TimeoutError:
                continue                    # no consumer kept up: try again
            next_at += period
            time.sleep(max(0.0, next_at - time.monotonic()))
        print(f"\nstopped after {cam.next_frame_id} frames")
    finally:
        cam.close()
        if hub is not None:
            hub.close()


if __name__ == "__main__":
    main()
