//! Socket monitor: connection and handshake events of a socket (`zmq_socket_monitor`).

use std::ffi::CString;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use labhub_zmq_sys as sys;

use crate::context::Context;
use crate::error::ZmqError;
use crate::message::Message;
use crate::socket::{Flags, Socket, SocketType};

/// What happened on a monitored socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SocketEvent {
    /// A connection was established.
    Connected,
    /// A synchronous connect failed and is being retried.
    ConnectDelayed,
    /// An asynchronous reconnect was attempted; value: the interval, ms.
    ConnectRetried,
    /// The socket is listening on an endpoint.
    Listening,
    /// Binding failed; value: errno.
    BindFailed,
    /// A connection was accepted.
    Accepted,
    /// Accepting failed; value: errno.
    AcceptFailed,
    /// A connection was closed.
    Closed,
    /// Closing failed; value: errno.
    CloseFailed,
    /// A session broke (peer gone, heartbeat timeout, handshake failure).
    Disconnected,
    /// Monitoring stopped.
    MonitorStopped,
    /// The handshake failed for a system reason; value: errno.
    HandshakeFailedNoDetail,
    /// The handshake, including authentication, succeeded.
    HandshakeSucceeded,
    /// The handshake failed on a protocol error (ZMTP, CURVE or ZAP); value: the
    /// `ZMQ_PROTOCOL_ERROR_*` code.
    HandshakeFailedProtocol,
    /// Authentication refused the peer; value: the ZAP status code (300, 400, 500).
    HandshakeFailedAuth,
    /// An event this crate does not name.
    Other(u16),
}

impl SocketEvent {
    fn from_raw(raw: u16) -> Self {
        match raw {
            sys::ZMQ_EVENT_CONNECTED => Self::Connected,
            sys::ZMQ_EVENT_CONNECT_DELAYED => Self::ConnectDelayed,
            sys::ZMQ_EVENT_CONNECT_RETRIED => Self::ConnectRetried,
            sys::ZMQ_EVENT_LISTENING => Self::Listening,
            sys::ZMQ_EVENT_BIND_FAILED => Self::BindFailed,
            sys::ZMQ_EVENT_ACCEPTED => Self::Accepted,
            sys::ZMQ_EVENT_ACCEPT_FAILED => Self::AcceptFailed,
            sys::ZMQ_EVENT_CLOSED => Self::Closed,
            sys::ZMQ_EVENT_CLOSE_FAILED => Self::CloseFailed,
            sys::ZMQ_EVENT_DISCONNECTED => Self::Disconnected,
            sys::ZMQ_EVENT_MONITOR_STOPPED => Self::MonitorStopped,
            sys::ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL => Self::HandshakeFailedNoDetail,
            sys::ZMQ_EVENT_HANDSHAKE_SUCCEEDED => Self::HandshakeSucceeded,
            sys::ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL => Self::HandshakeFailedProtocol,
            sys::ZMQ_EVENT_HANDSHAKE_FAILED_AUTH => Self::HandshakeFailedAuth,
            other => Self::Other(other),
        }
    }
}

/// One monitor event.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MonitorEvent {
    /// What happened.
    pub event: SocketEvent,
    /// The event's value (file descriptor, errno, status code, protocol error, interval; see
    /// [`SocketEvent`]). For [`SocketEvent::Accepted`], [`SocketEvent::Connected`],
    /// [`SocketEvent::Disconnected`] and [`SocketEvent::Closed`] it is the connection's file
    /// descriptor.
    pub value: u64,
    /// This side's endpoint, e.g. the bound `tcp://127.0.0.1:5570` of an accepted connection.
    pub local: String,
    /// The peer's endpoint, e.g. `tcp://127.0.0.1:41234` of an accepted connection; empty
    /// for events that concern no connection (listening, bind failures).
    pub remote: String,
}

impl Socket {
    /// Starts reporting this socket's connection and handshake events, read with
    /// [`Socket::recv_monitor_event`] (or polled through [`Socket::monitor_socket`]).
    ///
    /// Events carry both endpoints of the connection (libzmq's version 2 event format), so
    /// the events of one connection can be told apart from another's by the peer's address.
    /// Unread events queue without limit, so read them or drop the socket; monitoring stops
    /// when the socket is dropped. Enabling it twice restarts it.
    ///
    /// # Errors
    ///
    /// A libzmq error creating or binding the monitor's PAIR socket.
    pub fn enable_monitor(&mut self) -> Result<(), ZmqError> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let endpoint = format!(
            "inproc://labhub-monitor-{}",
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        );
        let context = Context {
            inner: Arc::clone(&self.context),
        };
        let receiver = context.socket(SocketType::Pair)?;
        // Unlimited: libzmq's I/O thread sends events with a blocking send, so a full queue
        // would stall it.
        receiver.set_rcvhwm(0)?;
        let c_endpoint = CString::new(endpoint.as_str())
            .map_err(|_| ZmqError::invalid("enable_monitor", "endpoint", "contains NUL"))?;
        // SAFETY: the socket is open and owned by this thread; the endpoint is NUL-terminated.
        // libzmq binds a PAIR there, replacing (and stopping) any previous monitor.
        let rc = unsafe {
            sys::zmq_socket_monitor_versioned(
                self.as_ptr(),
                c_endpoint.as_ptr(),
                u64::from(sys::ZMQ_EVENT_ALL as u32),
                2,
                sys::ZMQ_PAIR,
            )
        };
        if rc != 0 {
            return Err(ZmqError::last("zmq_socket_monitor_versioned", endpoint));
        }
        // inproc connect to a bound endpoint completes synchronously, before any new event.
        receiver.connect(&endpoint)?;
        self.monitor = Some(Box::new(receiver));
        Ok(())
    }

    /// The socket receiving monitor events, for [`crate::poll`]; `None` if not enabled.
    pub fn monitor_socket(&self) -> Option<&Socket> {
        self.monitor.as_deref()
    }

    /// Receives the next monitor event (blocking per `flags`; the monitor socket has no
    /// receive timeout, so use [`Flags::DONTWAIT`] with [`crate::poll`] to bound the wait).
    ///
    /// # Errors
    ///
    /// `EAGAIN` (see [`ZmqError::is_again`]) with [`Flags::DONTWAIT`] when no event is queued;
    /// an invalid-argument error if monitoring is not enabled or an event is malformed.
    pub fn recv_monitor_event(&self, flags: Flags) -> Result<MonitorEvent, ZmqError> {
        let monitor = self.monitor.as_deref().ok_or_else(|| {
            ZmqError::invalid("recv_monitor_event", "socket", "monitor not enabled")
        })?;
        let frames = monitor.recv_multipart(flags)?;
        let malformed =
            |reason: &str| ZmqError::invalid("recv_monitor_event", "event", reason.to_owned());
        let u64_of = |frame: &[u8]| -> Result<u64, ZmqError> {
            let bytes: [u8; 8] = frame
                .try_into()
                .map_err(|_| malformed("a version 2 number frame is 8 bytes"))?;
            Ok(u64::from_ne_bytes(bytes))
        };
        // event, value count, values…, local endpoint, remote endpoint
        let [event, count, rest @ ..] = frames.as_slice() else {
            return Err(malformed("fewer than 2 frames"));
        };
        let event = u64_of(event)?;
        let count = usize::try_from(u64_of(count)?).unwrap_or(usize::MAX);
        if rest.len() != count.saturating_add(2) {
            return Err(malformed("the frame count does not match the value count"));
        }
        let value = match rest.first() {
            Some(v) if count > 0 => u64_of(v)?,
            _ => 0,
        };
        let text = |frame: &Message| String::from_utf8_lossy(frame).into_owned();
        Ok(MonitorEvent {
            event: SocketEvent::from_raw(u16::try_from(event).unwrap_or(u16::MAX)),
            value,
            local: text(&rest[count]),
            remote: text(&rest[count + 1]),
        })
    }
}
