//! The socket of a connecting channel ([`Subscriber`](super::Subscriber),
//! [`ReqClient`](super::ReqClient)) and what its monitor tells about the connection.
//!
//! ZeroMQ hides connection trouble from the receiving side: a peer that fails the CURVE
//! handshake (an impostor bound on the endpoint, a server that refuses this client's key) or
//! that sends a frame over `MAXMSGSIZE` is disconnected, and for those protocol errors ZeroMQ
//! does not reconnect, so the channel would wait forever for messages that can never come.
//! The monitor's events turn that into [`MsgError::ConnectionClosed`], reported after every
//! message that arrived before the close.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use labhub_zmq::{Flags, Message as Frame, PollEvents, Socket, SocketEvent, poll};

use super::{CloseReason, MsgError, check_size};

/// `ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC`: a CURVE box did not open (wrong keys).
const PROTOCOL_ERROR_CRYPTOGRAPHIC: u64 = 0x1100_0001;
/// `ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH`: the peer does not use CURVE.
const PROTOCOL_ERROR_MECHANISM_MISMATCH: u64 = 0x1100_0002;

/// A connected socket and the state of its connection.
pub(crate) struct Link {
    socket: Socket,
    endpoint: String,
    limit: usize,
    state: RefCell<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The last handshake failure since the last handshake that succeeded, described, and
    /// whether ZeroMQ gives up on the peer after it.
    handshake_failure: Option<(String, bool)>,
    /// Why the connection closed, while no handshake has succeeded since.
    closed: Option<Closed>,
    /// A close not yet reported to the caller.
    unreported: bool,
    /// A failed handshake was reported since the last [`Link::settle`] or success: the next
    /// ones (ZeroMQ retries some peers every reconnect interval) are not reported again.
    handshake_reported: bool,
}

#[derive(Debug, Clone)]
struct Closed {
    reason: CloseReason,
    /// ZeroMQ does not reconnect: the handshake failed on a protocol or authentication
    /// error, after which nothing can arrive from the endpoint.
    for_good: bool,
}

impl Link {
    /// Watches `socket`, whose monitor is enabled and which is connected to `endpoint`, with
    /// `limit` as the largest message accepted.
    pub(crate) fn new(socket: Socket, endpoint: String, limit: usize) -> Self {
        Self {
            socket,
            endpoint,
            limit,
            state: RefCell::new(State::default()),
        }
    }

    pub(crate) fn socket(&self) -> &Socket {
        &self.socket
    }

    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Reads the events that arrived and forgets closes not yet reported, so that what a
    /// caller hears of next happens after this call. Returns why the connection is closed
    /// for good (a failed handshake ZeroMQ does not retry), if it is.
    pub(crate) fn settle(&self) -> Result<Option<CloseReason>, MsgError> {
        self.read_waiting_events()?;
        let mut state = self.state.borrow_mut();
        state.unreported = false;
        state.handshake_reported = false;
        Ok(state
            .closed
            .as_ref()
            .filter(|c| c.for_good)
            .map(|c| c.reason.clone()))
    }

    /// Reads the events that arrived; the reason of a close not reported yet (once per close,
    /// even if ZeroMQ has reconnected since: what was queued for the old connection is lost).
    #[cfg(feature = "bridge")]
    pub(crate) fn take_close(&self) -> Result<Option<CloseReason>, MsgError> {
        self.read_waiting_events()?;
        Ok(self.take_unreported())
    }

    /// Reads the monitor's events that arrived, without waiting.
    fn read_waiting_events(&self) -> Result<(), MsgError> {
        if let Some(monitor) = self.socket.monitor_socket() {
            let mut items = [monitor.poll_item(PollEvents::IN)];
            poll(&mut items, Some(Duration::ZERO))
                .map_err(|e| MsgError::zmq("poll", &self.endpoint, e))?;
            if items[0].is_readable() {
                self.read_events()?;
            }
        }
        Ok(())
    }

    /// Why the connection is closed, if it has not come back since it closed.
    pub(crate) fn closed(&self) -> Option<CloseReason> {
        self.state
            .borrow()
            .closed
            .as_ref()
            .map(|c| c.reason.clone())
    }

    /// Waits up to `timeout` for one message (`what`: `"message"`, `"reply"`), `None` if none
    /// came. A message over the limit is consumed and reported as [`MsgError::TooLarge`]; a
    /// close of the connection as [`MsgError::ConnectionClosed`], once, after the messages
    /// that came before it.
    pub(crate) fn recv(
        &self,
        what: &'static str,
        timeout: Duration,
    ) -> Result<Option<Vec<Frame>>, MsgError> {
        // No deadline (a timeout too large to add) waits forever.
        let deadline = Instant::now().checked_add(timeout);
        loop {
            match self.socket.recv_multipart(Flags::DONTWAIT) {
                Ok(frames) => {
                    return check_size(frames, self.limit, &self.endpoint, what).map(Some);
                }
                Err(e) if e.is_again() => {}
                Err(e) => return Err(MsgError::zmq("receive", &self.endpoint, e)),
            }
            // Reached only with no message waiting, so a close is reported after the messages
            // that came before it.
            if let Some(reason) = self.take_unreported() {
                return Err(MsgError::ConnectionClosed {
                    endpoint: self.endpoint.clone(),
                    reason,
                });
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left.is_some_and(|left| left.is_zero()) {
                return Ok(None);
            }
            // Events are read only when the monitor has some: the common wait costs one poll.
            if self.wait(left)? {
                self.read_events()?;
            }
        }
    }

    /// Waits up to `timeout` for a message or a monitor event; true if the monitor has one.
    fn wait(&self, timeout: Option<Duration>) -> Result<bool, MsgError> {
        let poll_err = |e| MsgError::zmq("poll", &self.endpoint, e);
        match self.socket.monitor_socket() {
            Some(monitor) => {
                let mut items = [
                    self.socket.poll_item(PollEvents::IN),
                    monitor.poll_item(PollEvents::IN),
                ];
                poll(&mut items, timeout).map_err(poll_err)?;
                Ok(items[1].is_readable())
            }
            None => {
                let mut items = [self.socket.poll_item(PollEvents::IN)];
                poll(&mut items, timeout).map_err(poll_err)?;
                Ok(false)
            }
        }
    }

    fn take_unreported(&self) -> Option<CloseReason> {
        let mut state = self.state.borrow_mut();
        if !state.unreported {
            return None;
        }
        state.unreported = false;
        let reason = state.closed.as_ref()?.reason.clone();
        if matches!(reason, CloseReason::HandshakeFailed { .. }) {
            state.handshake_reported = true;
        }
        Some(reason)
    }

    /// Reads every waiting monitor event.
    fn read_events(&self) -> Result<(), MsgError> {
        loop {
            let event = match self.socket.recv_monitor_event(Flags::DONTWAIT) {
                Ok(event) => event,
                Err(e) if e.is_again() => return Ok(()),
                Err(e) => return Err(MsgError::zmq("read monitor event", &self.endpoint, e)),
            };
            let mut state = self.state.borrow_mut();
            match event.event {
                SocketEvent::HandshakeSucceeded => {
                    state.handshake_failure = None;
                    state.closed = None;
                    state.handshake_reported = false;
                }
                // ZeroMQ treats these two as protocol errors and does not reconnect.
                SocketEvent::HandshakeFailedProtocol => {
                    state.handshake_failure = Some((protocol_error(event.value), true));
                }
                SocketEvent::HandshakeFailedAuth => {
                    let detail = format!(
                        "the server refused this client's key (ZAP status {})",
                        event.value
                    );
                    state.handshake_failure = Some((detail, true));
                }
                SocketEvent::HandshakeFailedNoDetail => {
                    let detail = format!(
                        "the connection closed during the handshake (errno {})",
                        event.value
                    );
                    state.handshake_failure = Some((detail, false));
                }
                SocketEvent::Disconnected => {
                    let closed = match state.handshake_failure.take() {
                        Some((detail, for_good)) => Closed {
                            reason: CloseReason::HandshakeFailed { detail },
                            for_good,
                        },
                        None => Closed {
                            reason: CloseReason::Dropped { limit: self.limit },
                            for_good: false,
                        },
                    };
                    let repeated = state.handshake_reported
                        && matches!(closed.reason, CloseReason::HandshakeFailed { .. });
                    if !repeated {
                        tracing::debug!(endpoint = %self.endpoint, reason = %closed.reason, "connection closed");
                        state.unreported = true;
                    }
                    state.closed = Some(closed);
                }
                _ => {}
            }
        }
    }
}

/// A `ZMQ_PROTOCOL_ERROR_*` code in words.
fn protocol_error(code: u64) -> String {
    match code {
        PROTOCOL_ERROR_CRYPTOGRAPHIC => "CURVE cryptographic error: wrong keys".to_owned(),
        PROTOCOL_ERROR_MECHANISM_MISMATCH => "the peer does not speak CURVE".to_owned(),
        other => format!("ZMTP protocol error {other:#010x}"),
    }
}
