"""Shared-memory channels without a broker: the same producers and consumers as
``labhub.Hub``'s, found by name on this machine (for this user)."""

from __future__ import annotations

from typing import Any, Optional, Tuple

from . import _native, _record, _schema
from ._native import Consumer, Producer
from ._record import Recording, Replay

__all__ = ["create_producer", "open_consumer", "remove_channel", "record", "start_recording",
           "replay", "start_replay"]


def create_producer(name: str, dtype: Any, shape: Any, policy: str = "ring:8:block", *,
                    flex_size: int = 0, checksum: bool = False, state_format: str = "json",
                    secret: Any = None, consumer_timeout: Any = "default",
                    schema: Optional[Tuple[str, int]] = None) -> Producer:
    """Creates channel ``name`` (or takes it over from a producer that died or left, with
    equal settings: frame ids continue). Arguments as for ``Hub.create_producer``."""
    args = _schema.producer_args(name, dtype, shape, policy, flex_size, checksum,
                                 state_format, secret, consumer_timeout, schema)
    return _native.create_producer(None, **args)


def open_consumer(name: str, dtype: Any = None, shape: Any = None,
                  policy: Optional[str] = None, *, create: bool = False, flex_size: int = 0,
                  checksum: bool = False, state_format: str = "json", secret: Any = None,
                  schema: Optional[Tuple[str, int]] = None,
                  spin: Optional[float] = None) -> Consumer:
    """Opens channel ``name``. Arguments as for ``Hub.open_consumer``."""
    args = _schema.consumer_args(name, dtype, shape, policy, create, flex_size, checksum,
                                 state_format, secret, schema, spin)
    return _native.open_consumer(None, **args)


def remove_channel(name: str) -> None:
    """Removes channel ``name``'s segment (processes that have it mapped keep working on
    it; a producer created later makes a fresh one)."""
    _native.remove_channel(_schema.name_of(name))


def start_recording(channels: Any, path: Any, **options: Any) -> Recording:
    """Starts recording brokerless channels into the new Zarr v3 directory ``path`` on a
    thread of its own. Options as for ``Hub.start_recording``."""
    return _record.start_recording(None, channels, path, **options)


def record(channels: Any, path: Any, **options: Any) -> dict:
    """Records brokerless channels until ``seconds`` or ``frames`` (or Ctrl-C, which completes
    the recording and propagates) and returns the summary. Options as for ``Hub.record``."""
    return _record.wait_or_stop(start_recording(channels, path, **options))


def start_replay(path: Any, **options: Any) -> Replay:
    """Starts replaying a recording into brokerless channels (created by name). Options as
    for ``Hub.start_replay``."""
    return _record.start_replay(None, path, **options)


def replay(path: Any, **options: Any) -> dict:
    """Replays a recording into brokerless channels to its end and returns the summary."""
    return _record.wait_or_stop(start_replay(path, **options))
