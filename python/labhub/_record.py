"""Recording channels to Zarr v3 and replaying recordings into live channels.

A recording is read back with zarr-python: ``zarr.open_group(path, mode="r")["cam0/frames"][i]``
is frame ``i`` as a numpy array of the channel's dtype (padded to the largest shape;
``["cam0/shape"][i]`` is its own shape); docs/PYTHON.md has the whole layout.
"""

from __future__ import annotations

import atexit
import json
import numbers
import os
import weakref
from typing import Any, Iterable, Mapping, Optional

from . import _native, _schema


def _positive_int(value: Any, arg: str, low: int, high: int) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{arg}: {value!r} is not an integer")
    if not low <= int(value) <= high:
        raise ValueError(f"{arg}: {value} is not between {low} and {high}")
    return int(value)


def _path_of(path: Any) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: {path!r} is not a path")
    return os.fspath(path)


# Runs not yet waited for: at interpreter exit each is stopped and waited for, so a recording
# is completed (flushed, its metadata final) rather than cut off with the process.
_live: "weakref.WeakSet[_Run]" = weakref.WeakSet()


@atexit.register
def _finish_runs() -> None:
    for run in list(_live):
        try:
            run._native.stop()
            run._native.wait(None)
        except BaseException:
            pass


class _Run:
    def __init__(self, native: Any) -> None:
        self._native = native
        _live.add(self)

    @property
    def path(self) -> str:
        """The recording's directory."""
        return str(self._native.path)

    @property
    def run_id(self) -> Optional[str]:
        """The run id stored in the recording."""
        return self._native.run_id

    @property
    def done(self) -> bool:
        """Whether it has ended (stopped, its limit reached, or failed)."""
        return self._native.done

    def stop(self) -> dict:
        """Ends it (a recording flushes and completes its metadata) and returns the summary."""
        self._native.stop()
        return self._native.wait(None)

    def wait(self, timeout: Optional[float] = None) -> Optional[dict]:
        """Waits up to ``timeout`` seconds (``None``: until it ends) and returns the summary,
        or ``None`` if it still runs; raises its error if it failed. Ctrl-C raises
        KeyboardInterrupt here and leaves it running (``stop()`` ends it)."""
        return self._native.wait(_schema.seconds_of(timeout, "timeout"))

    def __enter__(self):
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self._native.stop()
        try:
            self._native.wait(None)
        except Exception:
            if exc_type is None:
                raise    # the run's own error; never in place of the one already raised


class Recording(_Run):
    """A recording running on a thread of its own (``start_recording``)."""

    def progress(self) -> list:
        """Per channel: ``channel``, ``frames``, ``bytes``, ``lag`` (frames committed it has not
        read yet) and ``losses``, about four times a second."""
        return self._native.progress()

    def __repr__(self) -> str:
        return f"<labhub.Recording {self.path} {'done' if self.done else 'running'}>"


class Replay(_Run):
    """A replay running on a thread of its own (``start_replay``)."""

    def __repr__(self) -> str:
        return f"<labhub.Replay {self.path} {'done' if self.done else 'running'}>"


def start_recording(hub: Any, channels: Iterable[str], path: Any, *,
                    attributes: Optional[Mapping[str, Any]] = None,
                    seconds: Optional[float] = None, frames: Optional[int] = None,
                    flush_interval: float = 1.0, shard_size: int = 64 << 20) -> Recording:
    if isinstance(channels, str):
        channels = [channels]
    channels = [_schema.name_of(c) for c in channels]
    if not channels:
        raise ValueError("channels: give at least one channel")
    if attributes is None:
        attributes = {}
    if not isinstance(attributes, Mapping):
        raise TypeError(f"attributes: {attributes!r} is not a mapping")
    try:
        attributes_json = json.dumps(dict(attributes))
    except (TypeError, ValueError) as e:
        raise TypeError(f"attributes: not JSON-serialisable ({e})") from None
    seconds = _schema.seconds_of(seconds, "seconds")
    if seconds is not None and seconds <= 0:
        raise ValueError("seconds: must be above 0")
    flush = _schema.seconds_of(flush_interval, "flush_interval", False)
    if not 0.01 <= flush <= 3600:
        raise ValueError(f"flush_interval: {flush} is not between 0.01 and 3600 seconds")
    native = _native.start_recording(
        hub, channels, _path_of(path), attributes_json, flush,
        _positive_int(shard_size, "shard_size", 4 << 10, 4 << 30),
        _positive_int(frames, "frames", 1, 2**64 - 1), seconds)
    return Recording(native)


def start_replay(hub: Any, path: Any, *, rename: Optional[Mapping[str, str]] = None,
                 rate: Any = "1x", loop: bool = False, keep_timestamps: bool = False,
                 max_frame_size: int = 1 << 30, preload: Any = False) -> Replay:
    rename = dict(rename or {})
    for k, v in rename.items():
        _schema.name_of(k)
        _schema.name_of(v)
    if isinstance(rate, numbers.Real) and not isinstance(rate, bool):
        rate = f"{float(rate)}x"
    if not isinstance(rate, str):
        raise TypeError(f"rate: {rate!r} is neither a number nor a string such as '2x' or 'max'")
    if preload is True:
        preload = 4 << 30
    elif preload is False or preload is None:
        preload = None
    else:
        preload = _positive_int(preload, "preload", 1, 1 << 40)
    native = _native.start_replay(
        hub, _path_of(path), rename, rate, bool(loop), bool(keep_timestamps),
        _positive_int(max_frame_size, "max_frame_size", 1, 1 << 40), preload)
    return Replay(native)


def wait_or_stop(run: _Run) -> dict:
    """Waits for ``run``; Ctrl-C stops it (a recording is completed) and propagates."""
    try:
        return run.wait()
    except KeyboardInterrupt:
        run._native.stop()
        run._native.wait(None)
        raise
