#!/usr/bin/env python3
"""A live viewer: prints statistics of every frame of channel CHANNEL (mean, min, max, rate,
latency). Ctrl-C stops it.

    python3 viewer.py [--channel cam0] [--no-hub]
"""

import argparse
import signal
import time

import labhub


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--channel", default="cam0")
    p.add_argument("--no-hub", action="store_true", help="a brokerless channel (labhub.shm)")
    args = p.parse_args()
    # Ctrl-C raises KeyboardInterrupt, also when started in the background (where the shell
    # ignores SIGINT for its children).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    hub = None if args.no_hub else labhub.Hub()
    viewer = (labhub.shm if hub is None else hub).open_consumer(args.channel)
    print(f"{args.channel}: {viewer.shape} {viewer.dtype}, {viewer.policy}; state {viewer.read_state()}")
    last = time.monotonic()
    try:
        for frame in viewer:
            with frame:
                a = frame.array                  # in place, read-only
                mean, lo, hi = float(a.mean()), a.min(), a.max()
                del a                            # the view pins the frame: let it go
            now = time.monotonic()
            latency_ms = (time.time_ns() - frame.timestamp_ns) / 1e6
            print(f"frame {frame.frame_id:6d}  mean {mean:9.2f}  min {lo:6}  max {hi:6}  "
                  f"{1 / max(now - last, 1e-9):7.1f} frames/s  latency {latency_ms:6.2f} ms")
            last = now
    except KeyboardInterrupt:
        print(f"\nstopped; missed {viewer.stats()['missed']} frames")
    finally:
        viewer.close()
        if hub is not None:
            hub.close()


if __name__ == "__main__":
    main()
