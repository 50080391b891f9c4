//! Request/reply: [`ReqServer`] (ROUTER, binds) and [`ReqClient`] (DEALER, connects).

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use labhub_zmq::{
    Context, CurveKeyPair, CurvePublicKey, Flags, Message as Frame, PollEvents, Socket, SocketType,
    poll,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::endpoint::{self, BindOptions, ClientCurve};
use super::{DEFAULT_HWM, FrameError, MsgError, recv_frames};

/// Frames of a request as the ROUTER sees it: routing id, delimiter, request id, payload.
const REQUEST_FRAMES: usize = 4;
/// Frames of a reply as the DEALER sees it: delimiter, request id, status, body.
const REPLY_FRAMES: usize = 4;
/// Status byte of a reply carrying the handler's result.
const STATUS_OK: u8 = 0;
/// Status byte of a reply carrying an error text (UTF-8).
const STATUS_ERROR: u8 = 1;

/// What the server sends back for a request it drops without replying.
const DROPPED_WITHOUT_REPLY: &str = "the server dropped the request without replying";

/// A request/reply server: a ROUTER socket bound to an endpoint. Each request is received
/// first and answered after, with a reply computed from it; replies can be sent in any order.
///
/// `Send`, not `Sync`: one thread owns it. A failing or panicking handler becomes an error
/// reply ([`MsgError::Remote`] at the client); the server goes on.
pub struct ReqServer {
    socket: Socket,
    endpoint: String,
    curve_public: Option<CurvePublicKey>,
}

/// Builds a [`ReqServer`]; see [`ReqServer::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `create` is called"]
pub struct ReqServerBuilder {
    context: Context,
    bind: BindOptions,
}

impl ReqServerBuilder {
    /// The endpoint to bind: `tcp://HOST:PORT` (port 0 or `*` lets the system pick, a
    /// wildcard host listens on every interface) or `ipc://PATH`. Default
    /// [`DEFAULT_BIND`](super::DEFAULT_BIND).
    pub fn bind(mut self, endpoint: impl Into<String>) -> Self {
        self.bind.endpoint = endpoint.into();
        self
    }

    /// The host to report in [`ReqServer::endpoint`] when binding to a wildcard host.
    /// Default: the loopback address.
    pub fn advertise_host(mut self, host: impl Into<String>) -> Self {
        self.bind.advertise_host = Some(host.into());
        self
    }

    /// Encrypts and authenticates with CurveZMQ: this is the server key pair; clients need
    /// its public half.
    pub fn curve(mut self, server_keys: &CurveKeyPair) -> Self {
        self.bind.curve = Some(server_keys.clone());
        self
    }

    /// Messages queued per client, each way. Default [`DEFAULT_HWM`](super::DEFAULT_HWM).
    pub fn hwm(mut self, messages: i32) -> Self {
        self.bind.hwm = messages;
        self
    }

    /// Creates the socket and binds it.
    pub fn create(self) -> Result<ReqServer, MsgError> {
        let (socket, endpoint) = self.bind.bind(&self.context, SocketType::Router)?;
        // A reply to a client that has gone fails (EHOSTUNREACH) instead of vanishing, so
        // the server can tell.
        socket
            .set_router_mandatory(true)
            .map_err(|e| MsgError::zmq("set router mandatory", &endpoint, e))?;
        Ok(ReqServer {
            socket,
            endpoint,
            curve_public: self.bind.curve.map(|keys| keys.public),
        })
    }
}

/// What [`ReqServer::serve_one`] did.
#[derive(Debug)]
#[non_exhaustive]
pub enum Served {
    /// No request arrived within the timeout.
    Idle,
    /// The handler's reply was sent.
    Replied {
        /// The request's id.
        request_id: u64,
    },
    /// The handler failed or panicked, or the request could not be decoded; an error reply
    /// carrying `message` was sent.
    ErrorReplied {
        /// The request's id.
        request_id: u64,
        /// The error text sent to the client.
        message: String,
    },
    /// A message that is not a request arrived and was dropped (with an error reply when it
    /// carried a request id). Holds the [`MsgError::Malformed`] describing it.
    Rejected(MsgError),
    /// The reply could not be delivered: the client is gone.
    ClientGone {
        /// The request's id.
        request_id: u64,
    },
}

impl ReqServer {
    /// A builder for a server on `context`, bound to [`DEFAULT_BIND`](super::DEFAULT_BIND)
    /// unless told otherwise.
    pub fn builder(context: &Context) -> ReqServerBuilder {
        ReqServerBuilder {
            context: context.clone(),
            bind: BindOptions::new(DEFAULT_HWM),
        }
    }

    /// The endpoint clients dial: never a wildcard host.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The CURVE public key clients need, if the server uses CURVE.
    pub fn curve_public_key(&self) -> Option<&CurvePublicKey> {
        self.curve_public.as_ref()
    }

    /// Waits up to `timeout` for a request; `None` if none came. Answer it with
    /// [`Request::reply`] (now or after receiving others).
    ///
    /// A message that is not a request is consumed and reported as [`MsgError::Malformed`]
    /// (after an error reply if it carried a request id); the server stays usable.
    pub fn recv_request(&self, timeout: Duration) -> Result<Option<Request<'_>>, MsgError> {
        let Some(frames) = recv_frames(&self.socket, timeout)
            .map_err(|e| MsgError::zmq("receive", &self.endpoint, e))?
        else {
            return Ok(None);
        };
        let found = frames.len();
        let problem = match <[Frame; REQUEST_FRAMES]>::try_from(frames) {
            Ok([routing_id, delimiter, id, payload]) => {
                match (delimiter.is_empty(), request_id(&id)) {
                    (true, Some(id)) => {
                        return Ok(Some(Request {
                            server: self,
                            routing_id,
                            id,
                            payload,
                            answered: false,
                        }));
                    }
                    (false, _) => FrameError::Delimiter {
                        found: delimiter.len(),
                    },
                    (true, None) => FrameError::RequestId { found: id.len() },
                }
            }
            Err(frames) => {
                let problem = FrameError::FrameCount {
                    expected: REQUEST_FRAMES,
                    found,
                };
                // Tell the client if it can recognise the answer: envelope and id intact.
                if let [routing_id, delimiter, id, ..] = frames.as_slice()
                    && delimiter.is_empty()
                    && let Some(id) = request_id(id)
                {
                    let _ = self.send_reply(
                        routing_id,
                        id,
                        STATUS_ERROR,
                        format!("malformed request: {problem}").as_bytes(),
                    );
                }
                problem
            }
        };
        Err(MsgError::Malformed {
            endpoint: self.endpoint.clone(),
            what: "request",
            problem,
        })
    }

    /// Waits up to `timeout` for one request and answers it with `handler(payload)`. A
    /// panicking handler becomes an error reply. Only a socket failure is an `Err`; every
    /// per-request outcome, a malformed request included, is a [`Served`].
    pub fn serve_one(
        &self,
        timeout: Duration,
        mut handler: impl FnMut(&[u8]) -> Vec<u8>,
    ) -> Result<Served, MsgError> {
        self.serve_with(timeout, |payload| Ok(handler(payload)))
    }

    /// [`ReqServer::serve_one`] with a handler that can fail: `Err(e)` becomes an error reply
    /// with the text `e.to_string()`.
    pub fn try_serve_one<E: fmt::Display>(
        &self,
        timeout: Duration,
        mut handler: impl FnMut(&[u8]) -> Result<Vec<u8>, E>,
    ) -> Result<Served, MsgError> {
        self.serve_with(timeout, |payload| {
            handler(payload).map_err(|e| e.to_string())
        })
    }

    /// [`ReqServer::try_serve_one`] with JSON: the request is decoded into `Q` (a request that
    /// is not a `Q` gets an error reply), the handler's `R` is encoded as the reply.
    pub fn serve_one_json<Q, R, E>(
        &self,
        timeout: Duration,
        mut handler: impl FnMut(Q) -> Result<R, E>,
    ) -> Result<Served, MsgError>
    where
        Q: DeserializeOwned,
        R: Serialize,
        E: fmt::Display,
    {
        self.serve_with(timeout, |payload| {
            let request = serde_json::from_slice(payload)
                .map_err(|e| format!("invalid json request: {e}"))?;
            let reply = handler(request).map_err(|e| e.to_string())?;
            serde_json::to_vec(&reply).map_err(|e| format!("cannot encode the json reply: {e}"))
        })
    }

    fn serve_with(
        &self,
        timeout: Duration,
        mut handler: impl FnMut(&[u8]) -> Result<Vec<u8>, String>,
    ) -> Result<Served, MsgError> {
        let request = match self.recv_request(timeout) {
            Ok(Some(request)) => request,
            Ok(None) => return Ok(Served::Idle),
            Err(malformed @ MsgError::Malformed { .. }) => return Ok(Served::Rejected(malformed)),
            Err(e) => return Err(e),
        };
        let request_id = request.id();
        // The handler is the caller's code: a panic in it must not take the server down.
        let outcome = catch_unwind(AssertUnwindSafe(|| handler(request.payload())))
            .unwrap_or_else(|panic| Err(format!("handler panicked: {}", panic_text(&*panic))));
        let (sent, served) = match outcome {
            Ok(body) => (request.reply(body), Served::Replied { request_id }),
            Err(message) => (
                request.reply_error(&message),
                Served::ErrorReplied {
                    request_id,
                    message,
                },
            ),
        };
        match sent {
            Ok(()) => Ok(served),
            Err(MsgError::ClientGone { request_id, .. }) => Ok(Served::ClientGone { request_id }),
            Err(e) => Err(e),
        }
    }

    fn send_reply(
        &self,
        routing_id: &[u8],
        request_id: u64,
        status: u8,
        body: &[u8],
    ) -> Result<(), MsgError> {
        let id = request_id.to_le_bytes();
        // DONTWAIT: a client that stopped reading must not stall the server.
        match self
            .socket
            .send_multipart([routing_id, &[], &id, &[status], body], Flags::DONTWAIT)
        {
            Ok(()) => Ok(()),
            Err(e) if e.is_host_unreachable() || e.is_again() => Err(MsgError::ClientGone {
                endpoint: self.endpoint.clone(),
                request_id,
            }),
            Err(e) => Err(MsgError::zmq("send reply", &self.endpoint, e)),
        }
    }
}

impl fmt::Debug for ReqServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReqServer")
            .field("endpoint", &self.endpoint)
            .field("curve", &self.curve_public.is_some())
            .finish()
    }
}

/// A request received by [`ReqServer::recv_request`], to be answered once.
///
/// Dropping it unanswered sends an error reply, so the client fails at once instead of
/// waiting for its timeout.
#[must_use = "a request left unanswered gets an error reply when dropped"]
pub struct Request<'s> {
    server: &'s ReqServer,
    routing_id: Frame,
    id: u64,
    payload: Frame,
    answered: bool,
}

impl Request<'_> {
    /// The request id the client chose (unique per client, not across clients).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The request's payload.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The payload decoded from JSON. On error the request is still to be answered (e.g.
    /// with [`Request::reply_error`]).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, MsgError> {
        serde_json::from_slice(&self.payload).map_err(|source| MsgError::Decode {
            endpoint: self.server.endpoint.clone(),
            what: format!("request {}", self.id),
            source,
        })
    }

    /// Sends `body` as the reply. Fails with [`MsgError::ClientGone`] if the client left.
    pub fn reply(mut self, body: impl AsRef<[u8]>) -> Result<(), MsgError> {
        self.answered = true;
        self.server
            .send_reply(&self.routing_id, self.id, STATUS_OK, body.as_ref())
    }

    /// Sends `value` as a JSON reply; if it cannot be encoded, sends an error reply and
    /// returns [`MsgError::Encode`].
    pub fn reply_json<T: Serialize + ?Sized>(self, value: &T) -> Result<(), MsgError> {
        match serde_json::to_vec(value) {
            Ok(body) => self.reply(body),
            Err(source) => {
                let endpoint = self.server.endpoint.clone();
                self.reply_error(format!("cannot encode the json reply: {source}"))?;
                Err(MsgError::Encode { endpoint, source })
            }
        }
    }

    /// Sends an error reply; the client's request fails with [`MsgError::Remote`] carrying
    /// `message`.
    pub fn reply_error(mut self, message: impl fmt::Display) -> Result<(), MsgError> {
        self.answered = true;
        self.server.send_reply(
            &self.routing_id,
            self.id,
            STATUS_ERROR,
            message.to_string().as_bytes(),
        )
    }
}

impl Drop for Request<'_> {
    fn drop(&mut self) {
        if !self.answered {
            let _ = self.server.send_reply(
                &self.routing_id,
                self.id,
                STATUS_ERROR,
                DROPPED_WITHOUT_REPLY.as_bytes(),
            );
        }
    }
}

impl fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("id", &self.id)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

/// A request/reply client: a DEALER socket connected to a [`ReqServer`]'s endpoint.
///
/// Every request carries a fresh id and only the reply with that id is accepted, so a
/// request that timed out never wedges the client (the original's REQ socket did): its late
/// reply is discarded when it arrives. `Send`, not `Sync`.
pub struct ReqClient {
    socket: Socket,
    endpoint: String,
    next_id: u64,
}

/// Builds a [`ReqClient`]; see [`ReqClient::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `open` is called"]
pub struct ReqClientBuilder {
    context: Context,
    endpoint: String,
    curve: Option<ClientCurve>,
    hwm: i32,
}

impl ReqClientBuilder {
    /// Connects with CurveZMQ to a server whose public key is `server`, authenticating with
    /// `own_keys`.
    pub fn curve(mut self, server: &CurvePublicKey, own_keys: &CurveKeyPair) -> Self {
        self.curve = Some(ClientCurve {
            server: *server,
            keys: own_keys.clone(),
        });
        self
    }

    /// Messages queued each way. Default [`DEFAULT_HWM`](super::DEFAULT_HWM).
    pub fn hwm(mut self, messages: i32) -> Self {
        self.hwm = messages;
        self
    }

    /// Creates the socket and connects it (asynchronously: the server need not be up yet).
    pub fn open(self) -> Result<ReqClient, MsgError> {
        let socket = endpoint::connect(
            &self.context,
            SocketType::Dealer,
            &self.endpoint,
            self.curve.as_ref(),
            self.hwm,
        )?;
        Ok(ReqClient {
            socket,
            endpoint: self.endpoint,
            next_id: 1,
        })
    }
}

impl ReqClient {
    /// A builder for a client on `context` to the server at `endpoint`.
    pub fn builder(context: &Context, endpoint: impl Into<String>) -> ReqClientBuilder {
        ReqClientBuilder {
            context: context.clone(),
            endpoint: endpoint.into(),
            curve: None,
            hwm: DEFAULT_HWM,
        }
    }

    /// The server's endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Sends `payload` and waits up to `timeout` for the reply.
    ///
    /// Fails with [`MsgError::Timeout`] if none came (the client stays usable; the late
    /// reply is discarded), [`MsgError::Remote`] if the server replied with an error, and
    /// [`MsgError::Malformed`] if something that is not a reply arrived.
    pub fn request(
        &mut self,
        payload: impl AsRef<[u8]>,
        timeout: Duration,
    ) -> Result<Vec<u8>, MsgError> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let deadline = Instant::now().checked_add(timeout);
        let timed_out = || MsgError::Timeout {
            endpoint: self.endpoint.clone(),
            request_id: id,
            timeout,
        };
        let frames: [&[u8]; 3] = [&[], &id.to_le_bytes(), payload.as_ref()];
        loop {
            match self.socket.send_multipart(frames, Flags::DONTWAIT) {
                Ok(()) => break,
                Err(e) if e.is_again() => {
                    // The queue to the server is full: wait for room, within the deadline.
                    let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                    if left.is_some_and(|left| left.is_zero()) {
                        return Err(timed_out());
                    }
                    let mut items = [self.socket.poll_item(PollEvents::OUT)];
                    poll(&mut items, left)
                        .map_err(|e| MsgError::zmq("wait to send", &self.endpoint, e))?;
                }
                Err(e) => return Err(MsgError::zmq("send request", &self.endpoint, e)),
            }
        }
        loop {
            let left = match deadline {
                Some(deadline) => deadline.saturating_duration_since(Instant::now()),
                None => Duration::MAX,
            };
            let Some(frames) = recv_frames(&self.socket, left)
                .map_err(|e| MsgError::zmq("receive reply", &self.endpoint, e))?
            else {
                return Err(timed_out());
            };
            let (reply_id, status, body) =
                parse_reply(frames).map_err(|problem| MsgError::Malformed {
                    endpoint: self.endpoint.clone(),
                    what: "reply",
                    problem,
                })?;
            if reply_id != id {
                tracing::debug!(
                    endpoint = %self.endpoint,
                    reply_id,
                    request_id = id,
                    "discarding a late reply to an earlier request"
                );
                continue;
            }
            return match status {
                STATUS_OK => Ok(body.to_vec()),
                _ => Err(MsgError::Remote {
                    endpoint: self.endpoint.clone(),
                    request_id: id,
                    message: String::from_utf8_lossy(&body).into_owned(),
                }),
            };
        }
    }

    /// Sends `request` as JSON and decodes the reply from JSON.
    pub fn request_json<Q, R>(&mut self, request: &Q, timeout: Duration) -> Result<R, MsgError>
    where
        Q: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let payload = serde_json::to_vec(request).map_err(|source| MsgError::Encode {
            endpoint: self.endpoint.clone(),
            source,
        })?;
        let request_id = self.next_id;
        let reply = self.request(payload, timeout)?;
        serde_json::from_slice(&reply).map_err(|source| MsgError::Decode {
            endpoint: self.endpoint.clone(),
            what: format!("reply to request {request_id}"),
            source,
        })
    }
}

impl fmt::Debug for ReqClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReqClient")
            .field("endpoint", &self.endpoint)
            .field("next_id", &self.next_id)
            .finish()
    }
}

/// The request id of an id frame, if it is 8 bytes.
fn request_id(frame: &[u8]) -> Option<u64> {
    frame.try_into().ok().map(u64::from_le_bytes)
}

/// Splits a reply `[delimiter, id, status, body]` as the DEALER receives it.
fn parse_reply(frames: Vec<Frame>) -> Result<(u64, u8, Frame), FrameError> {
    let found = frames.len();
    let [delimiter, id, status, body] =
        <[Frame; REPLY_FRAMES]>::try_from(frames).map_err(|_| FrameError::FrameCount {
            expected: REPLY_FRAMES,
            found,
        })?;
    if !delimiter.is_empty() {
        return Err(FrameError::Delimiter {
            found: delimiter.len(),
        });
    }
    let id = request_id(&id).ok_or(FrameError::RequestId { found: id.len() })?;
    match *status {
        [STATUS_OK] => Ok((id, STATUS_OK, body)),
        [STATUS_ERROR] => Ok((id, STATUS_ERROR, body)),
        _ => Err(FrameError::Status {
            found: status.to_vec(),
        }),
    }
}

/// The text of a panic payload (`&str` or `String`; anything else is unnamed).
fn panic_text(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a non-string panic payload")
}
