"""labhub for Python: shared-memory channels with zero-copy numpy views, the Hub client
(the labhub broker), and message channels.

Three lines to start (a hub running: ``labhub hub``)::

    import labhub, numpy as np
    with labhub.Hub() as hub:
        cam = hub.create_producer("cam0", dtype=np.uint16, shape=(480, 640))
        with cam.loan() as frame:
            frame.array[:] = 7          # written in place, committed at the end of the block

and elsewhere::

    with labhub.Hub() as hub:
        for frame in hub.open_consumer("cam0"):
            with frame:
                print(frame.frame_id, frame.array.mean())

Message channels, CurveZMQ end to end::

    with labhub.Hub() as hub:
        status = hub.create_publisher("status")
        status.send_json("temps", {"cryostat": 4.2})
        ctl = hub.create_server("ctl", lambda request: {"ok": True}, json=True)
        ctl.serve()                     # until Ctrl-C or ctl.close()

``labhub.shm`` makes the same shared-memory channels without a broker. See docs/PYTHON.md.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from . import _msg, _native, _record, _schema
from ._errors import (
    BrokerError, ChannelBusy, ChannelFull, ChannelNotFound, ChecksumMismatch, ClosedError,
    ConfigError, ConfigMismatch, ConsumerTableFull, CorruptFrame, Error, Evicted, ForkedError,
    FramesHeld, InternalError, LoanOpen, MsgError, Overwritten, ReleasedError, SchemaMismatch,
    RecordingError, RemoteError, ShmError, StateError, TimeoutError, ViewsExist, WrongSecret,
)
from ._msg import Message, Publisher, ReqClient, ReqServer, Subscriber
from ._record import Recording, Replay
from ._native import Consumer, Frame, Loan, Producer
from . import shm

__all__ = [
    "Hub", "Producer", "Consumer", "Loan", "Frame", "shm",
    "Publisher", "Subscriber", "Message", "ReqServer", "ReqClient", "RemoteError",
    "Recording", "Replay", "RecordingError",
    "Error", "TimeoutError", "ChannelNotFound", "SchemaMismatch", "ConfigMismatch",
    "ChannelBusy", "ChannelFull", "WrongSecret", "ConsumerTableFull", "Overwritten",
    "ChecksumMismatch", "Evicted", "CorruptFrame", "FramesHeld", "ViewsExist", "ReleasedError",
    "LoanOpen", "ClosedError", "StateError", "ShmError", "BrokerError", "ConfigError", "MsgError",
    "ForkedError", "InternalError",
]


class Hub:
    """A connection to the labhub broker (``labhub hub``), with its keys and endpoints taken
    from the labhub home as the CLI does (``LABHUB_HOME``, else the platform's data
    directory); ``home``, ``endpoint``, ``notify_endpoint`` and ``server_key`` (Z85) override.

    Connecting does not wait for the broker: without one, the first request raises
    ``labhub.TimeoutError`` after ``request_timeout`` seconds. Use it as a context manager
    (``close()`` at the end unregisters this client's channels). Every waiting call releases
    the GIL and answers Ctrl-C.
    """

    def __init__(self, home: Optional[str] = None, *, endpoint: Optional[str] = None,
                 notify_endpoint: Optional[str] = None, server_key: Optional[str] = None,
                 request_timeout: float = 5.0) -> None:
        self._hub = _native._Hub(
            home=None if home is None else str(home), endpoint=endpoint,
            notify_endpoint=notify_endpoint, server_key=server_key,
            request_timeout=_schema.seconds_of(request_timeout, "request_timeout", False),
        )

    @property
    def endpoint(self) -> str:
        """The broker endpoint."""
        return self._hub.endpoint

    @property
    def client_id(self) -> str:
        """This client's id at the broker."""
        return self._hub.client_id

    def create_producer(self, name: str, dtype: Any, shape: Any, policy: str = "ring:8:block",
                        *, flex_size: int = 0, checksum: bool = False,
                        state_format: str = "json", secret: Any = None,
                        consumer_timeout: Any = "default",
                        schema: Optional[Tuple[str, int]] = None) -> Producer:
        """Creates shared-memory channel ``name`` (or takes it over from a producer that died,
        with equal settings: frame ids continue) and registers it with the broker.

        - ``dtype``: the numpy element type of every frame (``np.uint16``, ``"f4"``, ...).
        - ``shape``: the largest frame shape, 1 to 4 dimensions (a loan may be smaller).
        - ``policy``: ``"ring:N:block"`` (lossless; waits when the slowest consumer is N frames
          behind, default 1 s, ``"ring:N:block:500ms"``), ``"ring:N:fail"`` (raises
          ``ChannelFull``), ``"ring:N:drop"``, ``"latest"``, ``"double"`` (lossy).
        - ``flex_size``: bytes of the flexible zone for ``write_state`` (0: none).
        - ``checksum``: store an XXH3 checksum per frame, verified by readers.
        - ``state_format``: ``"json"`` or ``"msgpack"``.
        - ``secret``: consumers must give the same (str or bytes).
        - ``consumer_timeout``: seconds a consumer may hold back a full ring before it is
          evicted as stuck; ``None``: only dead ones; ``"default"``: 5 s for lossless rings.
        - ``schema``: an application schema ``(name, version)`` consumers may insist on.
        """
        args = _schema.producer_args(name, dtype, shape, policy, flex_size, checksum,
                                     state_format, secret, consumer_timeout, schema)
        return _native.create_producer(self._hub, **args)

    def open_consumer(self, name: str, dtype: Any = None, shape: Any = None,
                      policy: Optional[str] = None, *, create: bool = False,
                      flex_size: int = 0, checksum: bool = False, state_format: str = "json",
                      secret: Any = None, schema: Optional[Tuple[str, int]] = None,
                      spin: Optional[float] = None) -> Consumer:
        """Discovers channel ``name`` through the broker and attaches to it; the consumer
        resumes by itself when its producer restarts. ``dtype``, ``shape``, ``policy`` and
        ``schema``, when given, must be the channel's (``SchemaMismatch`` /
        ``ConfigMismatch`` otherwise); what is not given is taken from the channel. With
        ``create=True`` a channel nobody registered yet is created without a producer (then
        ``dtype``, ``shape`` and ``policy`` are needed). ``spin``: seconds to poll before
        sleeping while waiting (lowest latency, a busy core)."""
        args = _schema.consumer_args(name, dtype, shape, policy, create, flex_size, checksum,
                                     state_format, secret, schema, spin)
        return _native.open_consumer(self._hub, **args)

    def create_publisher(self, name: str, *, bind: Optional[str] = None,
                         advertise_host: Optional[str] = None, hwm: Optional[int] = None,
                         max_message_size: Optional[int] = None) -> Publisher:
        """Binds a publisher with a fresh CURVE key pair and registers it as pub/sub channel
        ``name``; only subscribers whose keys the broker admits can connect.

        - ``bind``: the endpoint to bind (default: a free loopback TCP port,
          ``tcp://127.0.0.1:*``; ``tcp://0.0.0.0:*`` to be reached from other machines).
        - ``advertise_host``: the host name registered for a wildcard ``bind``.
        - ``hwm``: messages queued per subscriber before it loses messages (default 1000).
        - ``max_message_size``: bytes, for what the publisher receives (default 32 MiB).
        """
        native = self._hub.create_publisher(_schema.name_of(name),
                                            **_msg.bind_of(bind, advertise_host),
                                            **_msg.options(hwm, max_message_size))
        return Publisher(native)

    def open_subscriber(self, name: str, topics: Any = "", *, hwm: Optional[int] = None,
                        max_message_size: Optional[int] = None) -> Subscriber:
        """Discovers pub/sub channel ``name``, attaches to it, and subscribes to ``topics``
        (a prefix or a list of prefixes; ``""``, the default, is every topic) over CurveZMQ
        with the key the broker announced. ``max_message_size`` (bytes, default 32 MiB): a
        larger message is dropped with ``labhub.MsgError``."""
        native = self._hub.open_subscriber(_schema.name_of(name), _msg.topics_of(topics),
                                           **_msg.options(hwm, max_message_size))
        return Subscriber(native)

    def create_server(self, name: str, handler: Optional[Any] = None, *, json: bool = False,
                      bind: Optional[str] = None, advertise_host: Optional[str] = None,
                      hwm: Optional[int] = None,
                      max_message_size: Optional[int] = None) -> ReqServer:
        """Binds a request/reply server with a fresh CURVE key pair and registers it as
        channel ``name``; only clients whose keys the broker admits can connect. ``handler``
        (``payload -> reply``; JSON values with ``json=True``) answers each request in
        ``serve()`` / ``serve_one()``. ``bind``, ``advertise_host``, ``hwm`` and
        ``max_message_size`` as for ``create_publisher``."""
        native = self._hub.create_server(_schema.name_of(name),
                                         **_msg.bind_of(bind, advertise_host),
                                         **_msg.options(hwm, max_message_size))
        return ReqServer(native, handler, bool(json))

    def open_client(self, name: str, *, hwm: Optional[int] = None,
                    max_message_size: Optional[int] = None) -> ReqClient:
        """Discovers request/reply channel ``name``, attaches to it and connects to its
        server over CurveZMQ with the key the broker announced."""
        native = self._hub.open_client(_schema.name_of(name),
                                       **_msg.options(hwm, max_message_size))
        return ReqClient(native)

    def start_recording(self, channels: Any, path: Any, *, attributes: Optional[dict] = None,
                        seconds: Optional[float] = None, frames: Optional[int] = None,
                        flush_interval: float = 1.0, shard_size: int = 64 << 20) -> Recording:
        """Starts recording ``channels`` (a name or a list) into the new Zarr v3 directory
        ``path``, on a thread of its own, as a lossless consumer of each: if storage cannot
        keep up, each channel's backpressure decides and every loss is counted and stored.

        - ``attributes``: JSON values stored with the run (operator, sample, ...).
        - ``seconds``, ``frames`` (per channel): when to stop by itself.
        - ``flush_interval``: the longest time between flushes (what a killed process loses).
        - ``shard_size``: about how large one shard file grows (bytes).

        ``stop()`` ends it and returns the summary (``run_id``, ``elapsed_s``, per channel
        ``frames``, ``bytes``, ``lag``, ``losses``); ``progress()`` reports while it runs.
        """
        return _record.start_recording(self._hub, channels, path, attributes=attributes,
                                       seconds=seconds, frames=frames,
                                       flush_interval=flush_interval, shard_size=shard_size)

    def record(self, channels: Any, path: Any, **options: Any) -> dict:
        """Records until ``seconds`` or ``frames`` (or Ctrl-C, which completes the recording
        and then propagates) and returns the summary; options as for ``start_recording``."""
        return _record.wait_or_stop(self.start_recording(channels, path, **options))

    def start_replay(self, path: Any, *, rename: Optional[dict] = None, rate: Any = "1x",
                     loop: bool = False, keep_timestamps: bool = False,
                     max_frame_size: int = 1 << 30, preload: Any = False) -> Replay:
        """Creates each recorded channel (under its recorded name, or ``rename[name]``) with
        the recorded settings, registered with the broker, and publishes the recording into
        them on a thread of its own: with the recorded timing (``rate="1x"``), scaled
        (``"2x"``, ``0.5``), or as fast as the consumers take it (``"max"``); ``loop`` starts
        again at the end until ``stop()``. ``keep_timestamps`` stamps frames with their
        recorded times. A recording is untrusted input: frames above ``max_frame_size`` bytes
        and anything not as ``labhub record`` writes it raise ``labhub.RecordingError``.
        ``preload`` (``True``: up to 4 GiB, or a byte limit) reads every frame into memory
        first, so publishing runs at memory speed and a loop reads the files once."""
        return _record.start_replay(self._hub, path, rename=rename, rate=rate, loop=loop,
                                    keep_timestamps=keep_timestamps,
                                    max_frame_size=max_frame_size, preload=preload)

    def replay(self, path: Any, **options: Any) -> dict:
        """Replays to the end (Ctrl-C stops it and propagates) and returns the summary
        (per channel the ``frames`` published); options as for ``start_replay``."""
        return _record.wait_or_stop(self.start_replay(path, **options))

    def notice(self, timeout: Optional[float] = 0.0) -> Optional[dict]:
        """The next notice from the broker about any channel, as a dict with ``kind``
        (``channel_up``, ``channel_down``, ``consumer_dropped``, ``reregistered``, ...) and
        ``channel``; waits up to ``timeout`` seconds (``None``: forever); ``None`` if none."""
        return self._hub.notice(_schema.seconds_of(timeout, "timeout"))

    def close(self) -> None:
        """Unregisters this client's channels and closes the connection."""
        self._hub.close()

    def __enter__(self) -> "Hub":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<labhub.Hub {self.endpoint} as {self.client_id}>"
