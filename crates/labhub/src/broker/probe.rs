//! A minimal synchronous broker client: one DEALER socket with CURVE, one request at a time.
//!
//! It exists for tests, benchmarks and diagnostics; programs use the Hub client (its own
//! module), which adds a heartbeat thread, re-registration and the lifecycle. [`Probe::send_raw`]
//! sends arbitrary frames, so tests can also feed the broker garbage.
#![deny(unsafe_code)]

use std::time::{Duration, Instant};

use labhub_zmq::{
    Context, CurvePublicKey, CurveSecretKey, Flags, PollEvents, Socket, SocketType, ZmqError, poll,
};

use crate::keys::{KeyPair, PublicKey};
use crate::protocol::{self, DecodeError, Notification, Reply};

/// Why a probe request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// A ZeroMQ call failed.
    #[error("{what} failed")]
    Zmq {
        /// What the probe was doing.
        what: &'static str,
        /// The libzmq error.
        #[source]
        source: ZmqError,
    },
    /// No reply within the timeout (no broker, wrong key, or refused by ZAP).
    #[error("no reply from the broker within {0:?}")]
    Timeout(Duration),
    /// The reply did not decode.
    #[error("malformed reply from the broker")]
    BadReply(#[source] DecodeError),
}

fn zmq(what: &'static str) -> impl FnOnce(ZmqError) -> ProbeError {
    move |source| ProbeError::Zmq { what, source }
}

fn curve_client(
    context: &Context,
    kind: SocketType,
    server: &PublicKey,
    client: &KeyPair,
) -> Result<Socket, ProbeError> {
    let socket = context.socket(kind).map_err(zmq("creating a socket"))?;
    let server = CurvePublicKey::from_bytes(server.as_bytes()).map_err(|e| ProbeError::Zmq {
        what: "server key",
        source: e.into(),
    })?;
    let public =
        CurvePublicKey::from_bytes(client.public.as_bytes()).map_err(|e| ProbeError::Zmq {
            what: "client key",
            source: e.into(),
        })?;
    let secret =
        CurveSecretKey::from_bytes(client.secret_bytes()).map_err(|e| ProbeError::Zmq {
            what: "client key",
            source: e.into(),
        })?;
    socket
        .set_curve_client_keys(&server, &public, &secret)
        .map_err(zmq("setting CURVE keys"))?;
    Ok(socket)
}

/// A synchronous request client. See the module documentation.
pub struct Probe {
    socket: Socket,
    _context: Context,
    next_id: u64,
    timeout: Duration,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("next_id", &self.next_id)
            .finish_non_exhaustive()
    }
}

impl Probe {
    /// Connects (asynchronously, as ZeroMQ does) to the broker at `endpoint`.
    pub fn connect(
        endpoint: &str,
        server: &PublicKey,
        client: &KeyPair,
        timeout: Duration,
    ) -> Result<Self, ProbeError> {
        let context = Context::new().map_err(zmq("creating a context"))?;
        let socket = curve_client(&context, SocketType::Dealer, server, client)?;
        socket.connect(endpoint).map_err(zmq("connecting"))?;
        Ok(Self {
            socket,
            _context: context,
            next_id: 1,
            timeout,
        })
    }

    /// Sends `body` (a JSON object; its `request_id` is set here) as a `kind` request and waits
    /// for the reply carrying the same request id.
    pub fn request(
        &mut self,
        kind: &str,
        mut body: serde_json::Value,
    ) -> Result<Reply, ProbeError> {
        let id = self.next_id;
        self.next_id += 1;
        body["request_id"] = id.into();
        let json = serde_json::to_vec(&body).unwrap_or_default();
        self.send_raw(&[
            protocol::TAG,
            protocol::VERSION_FRAME,
            kind.as_bytes(),
            &json,
        ])?;
        let deadline = Instant::now() + self.timeout;
        loop {
            let reply = self.recv_reply_until(deadline)?;
            // Skip late replies to earlier requests that timed out.
            if reply.request_id.is_none_or(|r| r >= id) {
                return Ok(reply);
            }
        }
    }

    /// Sends arbitrary frames (tests use it to send garbage).
    pub fn send_raw(&self, frames: &[&[u8]]) -> Result<(), ProbeError> {
        self.socket
            .send_multipart(frames.iter().copied(), Flags::NONE)
            .map_err(zmq("sending"))
    }

    /// Waits up to the timeout for the next reply.
    pub fn recv_reply(&self) -> Result<Reply, ProbeError> {
        self.recv_reply_until(Instant::now() + self.timeout)
    }

    fn recv_reply_until(&self, deadline: Instant) -> Result<Reply, ProbeError> {
        let frames = recv_until(&self.socket, deadline, self.timeout)?;
        protocol::decode_reply(&frames).map_err(ProbeError::BadReply)
    }
}

fn recv_until(
    socket: &Socket,
    deadline: Instant,
    timeout: Duration,
) -> Result<Vec<Vec<u8>>, ProbeError> {
    let left = deadline.saturating_duration_since(Instant::now());
    let mut items = [socket.poll_item(PollEvents::IN)];
    poll(&mut items, Some(left)).map_err(zmq("polling"))?;
    if !items[0].is_readable() {
        return Err(ProbeError::Timeout(timeout));
    }
    socket
        .recv_multipart_bytes(Flags::NONE)
        .map_err(zmq("receiving"))
}

/// A CURVE SUB socket receiving the broker's notifications.
pub struct NotificationListener {
    socket: Socket,
    _context: Context,
}

impl std::fmt::Debug for NotificationListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotificationListener")
            .finish_non_exhaustive()
    }
}

impl NotificationListener {
    /// Subscribes to everything the broker at `endpoint` publishes.
    pub fn connect(
        endpoint: &str,
        server: &PublicKey,
        client: &KeyPair,
    ) -> Result<Self, ProbeError> {
        let context = Context::new().map_err(zmq("creating a context"))?;
        let socket = curve_client(&context, SocketType::Sub, server, client)?;
        socket.subscribe(b"").map_err(zmq("subscribing"))?;
        socket.connect(endpoint).map_err(zmq("connecting"))?;
        Ok(Self {
            socket,
            _context: context,
        })
    }

    /// The next notification, or `Timeout`.
    pub fn next(&self, timeout: Duration) -> Result<(u64, Notification), ProbeError> {
        let frames = recv_until(&self.socket, Instant::now() + timeout, timeout)?;
        protocol::decode_notification(&frames).map_err(ProbeError::BadReply)
    }
}
