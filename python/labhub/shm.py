"""Shared-memory channels without a broker: the same producers and consumers as
``labhub.Hub``'s, found by name on this machine (for this user)."""

from __future__ import annotations

from typing import Any, Optional, Tuple

from . import _native, _schema
from ._native import Consumer, Producer

__all__ = ["create_producer", "open_consumer", "remove_channel"]


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
