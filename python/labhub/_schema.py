"""Argument checks shared by labhub.Hub and labhub.shm: numpy dtypes to labhub element
types, shapes, timeouts, secrets. Each error names the argument."""

from __future__ import annotations

import numbers
from typing import Any, Optional, Sequence, Tuple

import numpy as np

# numpy dtype string (explicit byte order) -> labhub element type name.
_ELEMENTS = {
    "|u1": "u8", "|i1": "i8", "<u2": "u16", "<i2": "i16", "<u4": "u32", "<i4": "i32",
    "<u8": "u64", "<i8": "i64", "<f4": "f32", "<f8": "f64", "<c8": "complex64",
    "<c16": "complex128", "|b1": "bool",
}

MAX_DIMS = 4


def element_of(dtype: Any) -> str:
    """The labhub element type of a numpy dtype (``np.uint16``, ``"u2"``, ``"float32"``)."""
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"dtype: {dtype!r} is not a numpy dtype ({e})") from None
    if dt.byteorder == ">":
        raise ValueError(f"dtype: {dt} is big-endian; labhub frames are little-endian")
    name = _ELEMENTS.get(dt.newbyteorder("<").str if dt.itemsize > 1 else dt.str)
    if name is None:
        raise TypeError(
            f"dtype: {dt} is not a labhub element type "
            "(uint8/16/32/64, int8/16/32/64, float32/64, complex64/128, bool)"
        )
    return name


def shape_of(shape: Any, arg: str = "shape") -> list[int]:
    """A frame shape: 1 to 4 positive integers."""
    if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        dims = list(shape)
    except TypeError:
        raise TypeError(f"{arg}: {shape!r} is not a tuple of integers") from None
    if not 1 <= len(dims) <= MAX_DIMS:
        raise ValueError(f"{arg}: {tuple(dims)} must have 1 to {MAX_DIMS} dimensions")
    out = []
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, numbers.Integral):
            raise TypeError(f"{arg}: {d!r} in {tuple(dims)} is not an integer")
        if not 0 <= int(d) < 2**63:
            raise ValueError(f"{arg}: {d} in {tuple(dims)} is not a size")
        out.append(int(d))
    return out


def secret_of(secret: Any) -> Optional[bytes]:
    if secret is None:
        return None
    if isinstance(secret, str):
        return secret.encode()
    if isinstance(secret, (bytes, bytearray, memoryview)):
        return bytes(secret)
    raise TypeError(f"secret: {type(secret).__name__} is neither str nor bytes")


def seconds_of(value: Any, arg: str, allow_none: bool = True) -> Optional[float]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{arg}: {value!r} is not a number of seconds")
    value = float(value)
    if not 0.0 <= value < 1e9:
        raise ValueError(f"{arg}: {value} is not a number of seconds >= 0")
    return value


def schema_of(schema: Optional[Tuple[str, int]]) -> Optional[Tuple[str, int]]:
    if schema is None:
        return None
    try:
        name, version = schema
    except (TypeError, ValueError):
        raise TypeError(f"schema: {schema!r} is not a (name, version) pair") from None
    if not isinstance(name, str):
        raise TypeError(f"schema: name {name!r} is not a string")
    if isinstance(version, bool) or not isinstance(version, numbers.Integral) or not 0 <= version < 2**32:
        raise ValueError(f"schema: version {version!r} is not an integer from 0 to 2**32-1")
    return (name, int(version))


def name_of(name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError(f"name: {name!r} is not a string")
    return name


def producer_args(name: Any, dtype: Any, shape: Any, policy: Any, flex_size: Any,
                  checksum: Any, state_format: Any, secret: Any, consumer_timeout: Any,
                  schema: Any) -> dict:
    if not isinstance(policy, str):
        raise TypeError(f"policy: {policy!r} is not a string like 'ring:8:block'")
    if isinstance(flex_size, bool) or not isinstance(flex_size, numbers.Integral) or flex_size < 0:
        raise ValueError(f"flex_size: {flex_size!r} is not a number of bytes >= 0")
    if not isinstance(state_format, str):
        raise TypeError(f"state_format: {state_format!r} is not 'json' or 'msgpack'")
    if consumer_timeout == "default":
        timeout = -1.0
    else:
        timeout = seconds_of(consumer_timeout, "consumer_timeout")
    return dict(
        name=name_of(name), element=element_of(dtype), shape=shape_of(shape), policy=policy,
        flex_size=int(flex_size), checksum=bool(checksum), state_format=state_format,
        secret=secret_of(secret), consumer_timeout=timeout, schema=schema_of(schema),
    )


def consumer_args(name: Any, dtype: Any, shape: Any, policy: Any, create: Any,
                  flex_size: Any, checksum: Any, state_format: Any, secret: Any,
                  schema: Any, spin: Any) -> dict:
    if policy is not None and not isinstance(policy, str):
        raise TypeError(f"policy: {policy!r} is not a string like 'ring:8:block'")
    if create and (dtype is None or shape is None or policy is None):
        raise ValueError("create: a consumer that may create the channel needs dtype, shape and policy")
    return dict(
        name=name_of(name),
        element=None if dtype is None else element_of(dtype),
        shape=None if shape is None else shape_of(shape),
        policy=policy, create=bool(create), flex_size=int(flex_size), checksum=bool(checksum),
        state_format=state_format, secret=secret_of(secret), schema=schema_of(schema),
        spin=seconds_of(spin, "spin"),
    )
