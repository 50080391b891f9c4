"""The exceptions labhub raises. Every one is a ``labhub.Error``; many are also the builtin
exception a caller would catch anyway (``labhub.TimeoutError`` is a ``TimeoutError``,
``labhub.FramesHeld`` a ``BufferError``, ...). Attributes name what failed."""

import builtins


class Error(Exception):
    """Base of labhub's exceptions. Keyword arguments become attributes (``channel``,
    ``field``, ``expected``, ``found``, ...)."""

    def __init__(self, message: str = "", **attrs: str) -> None:
        super().__init__(message)
        for key, value in attrs.items():
            setattr(self, key, value)


class TimeoutError(Error, builtins.TimeoutError):
    """Nothing arrived in time: no frame, a full ring that stayed full, no broker reply."""


class ChannelNotFound(Error, LookupError):
    """No channel of that name (brokerless: no segment; through a Hub: the broker knows none)."""


class SchemaMismatch(Error):
    """The channel's frames are not what was asked for (``field``: element, shape,
    schema_name, schema_version, ...; ``expected``, ``found``)."""


class ConfigMismatch(Error):
    """A setting differs from the existing channel's (policy, flex_size, checksum, ...)."""


class ChannelBusy(Error):
    """A live producer already owns the channel (``pid``)."""


class ChannelFull(Error):
    """The ring is full and its policy is ``ring:N:fail``."""


class WrongSecret(Error):
    """The channel was created with another secret."""


class ConsumerTableFull(Error):
    """The channel has as many consumers as its table holds."""


class Overwritten(Error):
    """The frame was rewritten by the producer while it was read (lossy policies, or an
    evicted consumer)."""


class ChecksumMismatch(Error):
    """The frame's bytes do not match its stored checksum."""


class Evicted(Error):
    """The producer evicted this consumer (dead or stuck longer than the consumer timeout)."""


class CorruptFrame(Error):
    """The segment holds a frame descriptor no producer writes; the frame was skipped."""


class FramesHeld(Error, BufferError):
    """A consumer holds one frame at a time: numpy views of the current frame still exist,
    so it cannot read on (delete the views or copy the array)."""


class ViewsExist(Error, BufferError):
    """A loan cannot be committed while numpy views of it exist (they could write the frame
    after its commit)."""


class ReleasedError(Error, ValueError):
    """The frame was released, or the loan committed or abandoned: its array is gone."""


class LoanOpen(Error, RuntimeError):
    """A producer has one loan at a time: commit or abandon the open one first."""


class ClosedError(Error, ValueError):
    """The producer, consumer or hub was closed."""


class StateError(Error):
    """The flexible-zone state could not be read."""


class ShmError(Error, OSError):
    """The shared-memory segment could not be created, opened or used (no space, a foreign
    file in its place, an unreadable layout, ...)."""


class BrokerError(Error):
    """The broker refused a request (``code``) or answered wrongly."""


class ConfigError(Error):
    """The labhub home, a key file or an endpoint is unusable."""


class MsgError(Error):
    """A message channel failed (``channel``): a closed connection, a failed handshake, a
    malformed or oversized message."""


class RemoteError(MsgError):
    """The request/reply server answered with an error: its handler raised
    (``remote_message``: ``"TypeName: text"``), or it could not take the request."""


class RecordingError(Error, OSError):
    """A recording could not be written or read: the path exists already, a file operation
    failed, or a recording is not what ``labhub record`` writes (``path`` when known)."""


class ForkedError(Error, RuntimeError):
    """A labhub object was used in a process forked after it was made."""


class InternalError(Error, RuntimeError):
    """A bug in labhub (a Rust panic caught at the boundary)."""
