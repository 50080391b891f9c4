"""Message channels made through a Hub: pub/sub and request/reply, CurveZMQ end to end.

The publisher or server gets a fresh key pair and registers its public key with the broker;
subscribers and clients learn it from the broker and connect with the Hub's client key, and
the publisher or server admits only the keys the broker admits. Payloads are bytes (``str``
is sent as UTF-8); the ``*_json`` methods encode and decode JSON with the standard library.
"""

from __future__ import annotations

import json
import logging
import numbers
from typing import Any, Callable, Iterator, Optional, Union

from . import _schema
from ._errors import ClosedError

_log = logging.getLogger("labhub")

Payload = Union[bytes, bytearray, memoryview, str]


def _bytes_of(value: Any, arg: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{arg}: {type(value).__name__} is neither bytes nor str")


def _count_of(value: Any, arg: str, low: int, high: int) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{arg}: {value!r} is not an integer")
    if not low <= int(value) <= high:
        raise ValueError(f"{arg}: {value} is not between {low} and {high}")
    return int(value)


def options(hwm: Any, max_message_size: Any) -> dict:
    """The checked socket options of a message-channel end."""
    return {
        "hwm": _count_of(hwm, "hwm", 1, 2**31 - 1),
        "max_message_size": _count_of(max_message_size, "max_message_size", 1, 2**62),
    }


class Message:
    """One pub/sub message: ``topic`` and ``payload`` (bytes)."""

    __slots__ = ("topic", "payload")

    def __init__(self, topic: bytes, payload: bytes) -> None:
        self.topic = topic
        self.payload = payload

    @property
    def text(self) -> str:
        """The payload decoded as UTF-8."""
        return self.payload.decode()

    def json(self) -> Any:
        """The payload decoded as JSON (``ValueError`` if it is not)."""
        return json.loads(self.payload)

    def __repr__(self) -> str:
        return f"<labhub.Message topic={self.topic!r} {len(self.payload)} bytes>"


class _End:
    """What every message-channel end shares: a name, an endpoint, close and ``with``."""

    def __init__(self, native: Any) -> None:
        self._native = native

    @property
    def name(self) -> str:
        """The channel's name at the broker."""
        return self._native.name

    @property
    def endpoint(self) -> str:
        """The ZeroMQ endpoint of the channel's publisher or server."""
        return self._native.endpoint

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._native.closed

    def close(self) -> None:
        """Unregisters (publisher, server) or detaches (subscriber, client) and closes the
        socket. Later calls raise ``labhub.ClosedError``."""
        self._native.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else self.endpoint
        return f"<labhub.{type(self).__name__} {self.name} {state}>"


class Publisher(_End):
    """The publisher of a pub/sub channel (``Hub.create_publisher``). Sending never blocks:
    a subscriber that does not keep up loses messages, nobody else does."""

    def send(self, topic: Payload, payload: Payload = b"") -> None:
        """Sends ``payload`` under ``topic`` to every subscriber whose prefix matches."""
        self._native.send(_bytes_of(topic, "topic"), _bytes_of(payload, "payload"))

    def send_json(self, topic: Payload, value: Any) -> None:
        """Sends ``value`` encoded as JSON."""
        self.send(topic, json.dumps(value).encode())

    @property
    def subscriptions(self) -> int:
        """The subscriptions (one per topic prefix of each subscriber) that reached it."""
        return self._native.subscriptions()

    def wait_for_subscribers(self, count: int = 1, timeout: Optional[float] = None) -> int:
        """Waits until ``count`` subscriptions have arrived (a subscriber attached at the
        broker before subscribing), so nothing sent after is lost to a late join; returns
        how many have. ``labhub.TimeoutError`` after ``timeout`` seconds."""
        count = _count_of(count, "count", 0, 2**31 - 1)
        return self._native.wait_for_subscribers(count, _schema.seconds_of(timeout, "timeout"))


class Subscriber(_End):
    """A subscriber of a pub/sub channel (``Hub.open_subscriber``); iterate it for
    messages."""

    def recv(self, timeout: Optional[float] = None) -> Message:
        """The next message, waiting up to ``timeout`` seconds (``None``: forever);
        ``labhub.TimeoutError`` if none came. ``labhub.MsgError`` for a message over the
        size limit (dropped; the subscriber goes on) or a connection that closed."""
        topic, payload = self._native.recv(_schema.seconds_of(timeout, "timeout"))
        return Message(topic, payload)

    def recv_json(self, timeout: Optional[float] = None) -> Any:
        """The next message's payload decoded as JSON."""
        return self.recv(timeout).json()

    def subscribe(self, prefix: Payload) -> None:
        """Adds a topic prefix (``""``: every topic)."""
        self._native.subscribe(_bytes_of(prefix, "prefix"))

    def __iter__(self) -> Iterator[Message]:
        while True:
            yield self.recv()


Handler = Callable[[bytes], Any]


class ReqServer(_End):
    """The server of a request/reply channel (``Hub.create_server``): answers each request
    with a handler function."""

    def __init__(self, native: Any, handler: Optional[Handler], json_mode: bool) -> None:
        super().__init__(native)
        self._handler = None if handler is None else _wrap(handler, json_mode, self.name)

    def serve_one(self, handler: Optional[Handler] = None, timeout: Optional[float] = None,
                  *, json: bool = False) -> bool:
        """Answers one request with ``handler`` (or the one given at creation), waiting up
        to ``timeout`` seconds (``None``: forever); ``False`` if none came. The handler
        takes the request's payload (bytes; decoded JSON with ``json=True``) and returns the
        reply (bytes or str; any JSON value with ``json=True``). If it raises, the client
        gets ``labhub.RemoteError`` with the exception's type and text, the exception is
        logged (logger ``labhub``), and the server goes on; KeyboardInterrupt propagates."""
        call = self._handler if handler is None else _wrap(handler, json, self.name)
        if call is None:
            raise TypeError("handler: none given here nor at create_server")
        return self._native.serve_one(call, _schema.seconds_of(timeout, "timeout"))

    def serve(self, handler: Optional[Handler] = None, *, json: bool = False,
              timeout: Optional[float] = None) -> int:
        """Answers requests until ``close()`` (from another thread), Ctrl-C, or ``timeout``
        seconds with no request; returns how many it answered."""
        call = self._handler if handler is None else _wrap(handler, json, self.name)
        if call is None:
            raise TypeError("handler: none given here nor at create_server")
        timeout = _schema.seconds_of(timeout, "timeout")
        served = 0
        while not self.closed:
            try:
                answered = self._native.serve_one(call, 0.1 if timeout is None else timeout)
            except ClosedError:
                break
            if answered:
                served += 1
            elif timeout is not None:
                break
        return served


def _wrap(handler: Handler, json_mode: bool, name: str) -> Callable[[bytes], bytes]:
    if not callable(handler):
        raise TypeError(f"handler: {handler!r} is not callable")

    def call(payload: bytes) -> bytes:
        try:
            if json_mode:
                reply = json.dumps(handler(json.loads(payload))).encode()
            else:
                reply = handler(payload)
                if reply is None:
                    reply = b""
                elif not isinstance(reply, bytes):
                    reply = _bytes_of(reply, "the handler's reply")
            return reply
        except Exception:
            _log.exception("the handler of request/reply channel %s raised", name)
            raise

    return call


class ReqClient(_End):
    """A client of a request/reply channel (``Hub.open_client``). One request at a time;
    a request that timed out leaves the client usable (its late reply is discarded)."""

    def request(self, payload: Payload, timeout: float = 5.0) -> bytes:
        """Sends ``payload`` and returns the reply; ``labhub.TimeoutError`` after
        ``timeout`` seconds, ``labhub.RemoteError`` if the server's handler failed."""
        return self._native.request(_bytes_of(payload, "payload"),
                                    _schema.seconds_of(timeout, "timeout", False))

    def request_json(self, value: Any, timeout: float = 5.0) -> Any:
        """Sends ``value`` as JSON and returns the reply decoded from JSON."""
        return json.loads(self.request(json.dumps(value).encode(), timeout))


def topics_of(topics: Any) -> list:
    if isinstance(topics, (str, bytes, bytearray, memoryview)):
        topics = [topics]
    try:
        out = [_bytes_of(t, "topics") for t in topics]
    except TypeError as e:
        if "topics" in str(e):
            raise
        raise TypeError(f"topics: {topics!r} is neither a topic nor a list of topics") from None
    if not out:
        raise ValueError("topics: give at least one prefix (\"\" for every topic)")
    return out


def bind_of(bind: Any, advertise_host: Any) -> dict:
    for arg, value in (("bind", bind), ("advertise_host", advertise_host)):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{arg}: {value!r} is not a string")
    return {"bind": bind, "advertise_host": advertise_host}
