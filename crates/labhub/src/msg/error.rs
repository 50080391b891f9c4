//! The error type of the message channels.

use std::time::Duration;

use labhub_zmq::ZmqError;

/// What went wrong on a message channel.
///
/// Errors about one message or event ([`MsgError::Malformed`], [`MsgError::Decode`],
/// [`MsgError::TooLarge`], [`MsgError::Remote`], [`MsgError::Timeout`],
/// [`MsgError::ClientGone`], [`MsgError::ConnectionClosed`]) leave the channel usable: the next
/// call works as if the bad message had never arrived.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MsgError {
    /// A libzmq call failed.
    #[error("{op} on {endpoint}: {source}")]
    Zmq {
        /// What the channel was doing, e.g. `"bind"`, `"send"`.
        op: &'static str,
        /// The channel's endpoint.
        endpoint: String,
        /// The libzmq error.
        #[source]
        source: ZmqError,
    },
    /// The endpoint cannot be used by a channel (only `tcp://` and `ipc://` can).
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why it was refused.
        reason: String,
    },
    /// The socket is bound, but no address a peer could dial can be given for it.
    #[error("no dialable address for bound endpoint {bound:?}: {reason}")]
    Undialable {
        /// The endpoint libzmq reports as bound.
        bound: String,
        /// Why no dialable form exists.
        reason: String,
    },
    /// A subscriber was opened without a topic prefix, so it would silently receive nothing.
    #[error(
        "subscriber to {endpoint} has no topic prefix: give at least one (the empty prefix for all)"
    )]
    NoTopics {
        /// The endpoint it was to connect to.
        endpoint: String,
    },
    /// No reply to a request arrived in time. The client stays usable; a late reply to this
    /// request is discarded.
    #[error("no reply from {endpoint} to request {request_id} within {timeout:?}")]
    Timeout {
        /// The server's endpoint.
        endpoint: String,
        /// The id of the request that timed out.
        request_id: u64,
        /// The time waited.
        timeout: Duration,
    },
    /// Fewer subscriptions than waited for reached a publisher in time (see
    /// `Publisher::wait_for_subscribers`). The publisher stays usable.
    #[error(
        "only {found} of {expected} subscriptions reached the publisher on {endpoint} within {timeout:?}"
    )]
    SubscriberTimeout {
        /// The publisher's endpoint.
        endpoint: String,
        /// Subscriptions waited for.
        expected: usize,
        /// Subscriptions received.
        found: usize,
        /// The time waited.
        timeout: Duration,
    },
    /// A message did not have the channel's frame layout. It was consumed and dropped.
    #[error("malformed {what} on {endpoint}: {problem}")]
    Malformed {
        /// The channel's endpoint.
        endpoint: String,
        /// `"message"`, `"request"` or `"reply"`.
        what: &'static str,
        /// What was wrong with the frames.
        #[source]
        problem: FrameError,
    },
    /// A payload was not the JSON expected. The message was consumed and dropped.
    #[error("invalid json in {what} on {endpoint}: {source}")]
    Decode {
        /// The channel's endpoint.
        endpoint: String,
        /// Which message, e.g. `message of topic "cam0"` or `reply to request 7`.
        what: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A value could not be encoded as JSON.
    #[error("cannot encode json for {endpoint}: {source}")]
    Encode {
        /// The channel's endpoint.
        endpoint: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The server answered the request with an error reply (its handler failed or panicked,
    /// or it could not decode the request).
    #[error("request {request_id} to {endpoint} failed in the server: {message}")]
    Remote {
        /// The server's endpoint.
        endpoint: String,
        /// The id of the request.
        request_id: u64,
        /// The server's error text.
        message: String,
    },
    /// A message larger than the channel's maximum message size (all frames together)
    /// arrived. It was dropped; the channel stays usable.
    #[error("{what} of {size} bytes on {endpoint} exceeds the limit of {limit} bytes; dropped")]
    TooLarge {
        /// The channel's endpoint.
        endpoint: String,
        /// `"message"`, `"request"` or `"reply"`.
        what: &'static str,
        /// The message's size, all frames together.
        size: usize,
        /// The channel's maximum message size.
        limit: usize,
    },
    /// The connection to the peer closed (see [`CloseReason`]). The channel stays usable;
    /// whether anything more arrives depends on the reason.
    #[error("connection to {endpoint} closed: {reason}")]
    ConnectionClosed {
        /// The peer's endpoint.
        endpoint: String,
        /// Why, as far as ZeroMQ tells.
        #[source]
        reason: CloseReason,
    },
    /// A builder option was given a value it cannot take.
    #[error("invalid {option} {value}: expected {expected}")]
    InvalidOption {
        /// The option, e.g. `"hwm"`.
        option: &'static str,
        /// The value given.
        value: String,
        /// What it may be.
        expected: &'static str,
    },
    /// A reply could not be delivered: the client that sent the request is no longer
    /// connected (or its queue is full).
    #[error("reply to request {request_id} on {endpoint} not delivered: the client is gone")]
    ClientGone {
        /// The server's endpoint.
        endpoint: String,
        /// The id of the request.
        request_id: u64,
    },
}

/// Why the connection of a connecting channel ([`Subscriber`](super::Subscriber),
/// [`ReqClient`](super::ReqClient)) closed, as far as ZeroMQ tells.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CloseReason {
    /// The handshake failed: the peer on the endpoint is not the server whose CURVE key was
    /// given (an impostor bound there), does not speak CURVE, or does not admit this
    /// channel's client key. Nothing is received from it.
    #[error(
        "the handshake failed ({detail}): the peer is not the server whose key was given, \
         does not speak CURVE, or does not admit this client's key"
    )]
    HandshakeFailed {
        /// What ZeroMQ reported.
        detail: String,
    },
    /// The connection broke after its handshake: the peer went away (ZeroMQ reconnects), or
    /// it sent a frame larger than the channel's limit, which ZeroMQ refuses by closing the
    /// connection for good.
    #[error(
        "the peer went away, or sent a frame larger than the limit of {limit} bytes \
         (then ZeroMQ does not reconnect)"
    )]
    Dropped {
        /// The channel's maximum message size, in bytes.
        limit: usize,
    },
}

/// How a received message differs from the channel's frame layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Wrong number of frames.
    #[error("expected {expected} frames, found {found}")]
    FrameCount {
        /// Frames of the layout.
        expected: usize,
        /// Frames received.
        found: usize,
    },
    /// The first frame of a request or reply must be empty.
    #[error("expected an empty delimiter frame, found {found} bytes")]
    Delimiter {
        /// Length of the frame found.
        found: usize,
    },
    /// The request id frame must be 8 bytes (u64 little-endian).
    #[error("request id frame must be 8 bytes, found {found}")]
    RequestId {
        /// Length of the frame found.
        found: usize,
    },
    /// The status frame of a reply must be one byte, 0 (ok) or 1 (error).
    #[error("reply status frame must be the byte 0 or 1, found {found:?}")]
    Status {
        /// The frame found.
        found: Vec<u8>,
    },
}

impl MsgError {
    pub(crate) fn zmq(op: &'static str, endpoint: &str, source: ZmqError) -> Self {
        Self::Zmq {
            op,
            endpoint: endpoint.to_owned(),
            source,
        }
    }
}
