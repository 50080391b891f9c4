//! Request/reply: [`ReqServer`] (ROUTER, binds) and [`ReqClient`] (DEALER, connects).

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use labhub_zmq::{
    Context, CurvePublicKey, Flags, Message as Frame, PollEvents, Socket, SocketType, poll,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::builder::{BindBuilder, ConnectBuilder, OnContext, ToEndpoint};
use super::endpoint::{BindOptions, ConnectOptions};
use super::link::Link;
use super::{FrameError, MsgError, ReqClientBuilder, ReqServerBuilder, recv_frames};

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
    max_message_size: usize,
}

impl BindBuilder<ReqServer, OnContext> {
    /// Creates the socket and binds it.
    ///
    /// # Errors
    ///
    /// [`MsgError::InvalidOption`], [`MsgError::InvalidEndpoint`] or
    /// [`MsgError::Undialable`] for a bad option, [`MsgError::Zmq`] if binding fails.
    pub fn create(self) -> Result<ReqServer, MsgError> {
        let (at, options) = self.into_parts();
        ReqServer::bind_with(&at.context, &options)
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
    /// A message that is not a request, or one over the maximum message size, arrived and
    /// was dropped (with an error reply when it carried a request id). Holds the
    /// [`MsgError::Malformed`] or [`MsgError::TooLarge`] describing it.
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
        BindBuilder::new(OnContext {
            context: context.clone(),
        })
    }

    /// Creates the ROUTER socket with `options` and binds it.
    pub(crate) fn bind_with(context: &Context, options: &BindOptions) -> Result<Self, MsgError> {
        let (socket, endpoint) = options.bind(context, SocketType::Router)?;
        // A reply to a client that has gone fails (EHOSTUNREACH) instead of vanishing, so
        // the server can tell.
        socket
            .set_router_mandatory(true)
            .map_err(|e| MsgError::zmq("set router mandatory", &endpoint, e))?;
        Ok(Self {
            socket,
            endpoint,
            curve_public: options.curve.as_ref().map(|keys| keys.public),
            max_message_size: options.max_message_size,
        })
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
    /// # Errors
    ///
    /// A message that is not a request is consumed and reported as [`MsgError::Malformed`],
    /// one over the maximum message size as [`MsgError::TooLarge`] (each after an error
    /// reply if it carried a request id); the server stays usable. [`MsgError::Zmq`] if a
    /// socket call fails.
    pub fn recv_request(&self, timeout: Duration) -> Result<Option<Request<'_>>, MsgError> {
        let Some(frames) = recv_frames(&self.socket, timeout)
            .map_err(|e| MsgError::zmq("receive", &self.endpoint, e))?
        else {
            return Ok(None);
        };
        let size: usize = frames.iter().map(|f| f.len()).sum();
        if size > self.max_message_size {
            let error = MsgError::TooLarge {
                endpoint: self.endpoint.clone(),
                what: "request",
                size,
                limit: self.max_message_size,
            };
            self.reply_error_if_recognisable(&frames, &error.to_string());
            return Err(error);
        }
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
                self.reply_error_if_recognisable(&frames, &format!("malformed request: {problem}"));
                problem
            }
        };
        Err(MsgError::Malformed {
            endpoint: self.endpoint.clone(),
            what: "request",
            problem,
        })
    }

    /// Sends `text` as an error reply to a refused message whose envelope and id are intact,
    /// so its client can recognise the answer.
    fn reply_error_if_recognisable(&self, frames: &[Frame], text: &str) {
        if let [routing_id, delimiter, id, ..] = frames
            && delimiter.is_empty()
            && let Some(id) = request_id(id)
        {
            let _ = self.send_reply(routing_id, id, STATUS_ERROR, text.as_bytes());
        }
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
            Err(refused @ (MsgError::Malformed { .. } | MsgError::TooLarge { .. })) => {
                return Ok(Served::Rejected(refused));
            }
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
/// request that timed out never wedges the client (a REQ socket would): its late reply is
/// discarded when it arrives. `Send`, not `Sync`.
pub struct ReqClient {
    link: Link,
    next_id: u64,
}

impl ConnectBuilder<ReqClient, ToEndpoint> {
    /// Creates the socket and connects it (asynchronously: the server need not be up yet).
    ///
    /// # Errors
    ///
    /// [`MsgError::InvalidOption`] or [`MsgError::InvalidEndpoint`] for a bad option,
    /// [`MsgError::Zmq`] if a socket call fails.
    pub fn open(self) -> Result<ReqClient, MsgError> {
        let (at, options) = self.into_parts();
        ReqClient::connect_with(&at.context, at.endpoint, &options)
    }
}

impl ReqClient {
    /// A builder for a client on `context` to the server at `endpoint`.
    pub fn builder(context: &Context, endpoint: impl Into<String>) -> ReqClientBuilder {
        ConnectBuilder::new(ToEndpoint {
            context: context.clone(),
            endpoint: endpoint.into(),
        })
    }

    /// Creates the DEALER socket with `options` and connects it to `endpoint`.
    pub(crate) fn connect_with(
        context: &Context,
        endpoint: String,
        options: &ConnectOptions,
    ) -> Result<Self, MsgError> {
        let socket = options.connect(context, SocketType::Dealer, &endpoint)?;
        Ok(Self {
            link: Link::new(socket, endpoint, options.max_message_size),
            next_id: 1,
        })
    }

    /// The server's endpoint.
    pub fn endpoint(&self) -> &str {
        self.link.endpoint()
    }

    /// Sends `payload` and waits up to `timeout` for the reply.
    ///
    /// # Errors
    ///
    /// [`MsgError::Timeout`] if none came (the client stays usable; the late reply is
    /// discarded), [`MsgError::ConnectionClosed`] if the connection to the server closed
    /// while waiting, or was closed and never came back (a server that refused the
    /// handshake, a reply over the maximum message size), [`MsgError::Remote`] if the
    /// server replied with an error, [`MsgError::Malformed`] or [`MsgError::TooLarge`] if
    /// something that is not an acceptable reply arrived.
    pub fn request(
        &mut self,
        payload: impl AsRef<[u8]>,
        timeout: Duration,
    ) -> Result<Vec<u8>, MsgError> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let deadline = Instant::now().checked_add(timeout);
        let endpoint = self.link.endpoint();
        // What happened to the connection before this request is not this request's fault,
        // unless it closed for good: then no reply can come.
        if let Some(reason) = self.link.settle()? {
            return Err(MsgError::ConnectionClosed {
                endpoint: endpoint.to_owned(),
                reason,
            });
        }
        let timed_out = || match self.link.closed() {
            Some(reason) => MsgError::ConnectionClosed {
                endpoint: endpoint.to_owned(),
                reason,
            },
            None => MsgError::Timeout {
                endpoint: endpoint.to_owned(),
                request_id: id,
                timeout,
            },
        };
        let socket = self.link.socket();
        let frames: [&[u8]; 3] = [&[], &id.to_le_bytes(), payload.as_ref()];
        loop {
            match socket.send_multipart(frames, Flags::DONTWAIT) {
                Ok(()) => break,
                Err(e) if e.is_again() => {
                    // The queue to the server is full: wait for room, within the deadline.
                    let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                    if left.is_some_and(|left| left.is_zero()) {
                        return Err(timed_out());
                    }
                    let mut items = [socket.poll_item(PollEvents::OUT)];
                    poll(&mut items, left)
                        .map_err(|e| MsgError::zmq("wait to send", endpoint, e))?;
                }
                Err(e) => return Err(MsgError::zmq("send request", endpoint, e)),
            }
        }
        loop {
            let left = match deadline {
                Some(deadline) => deadline.saturating_duration_since(Instant::now()),
                None => Duration::MAX,
            };
            let Some(frames) = self.link.recv("reply", left)? else {
                return Err(timed_out());
            };
            let (reply_id, status, body) =
                parse_reply(frames).map_err(|problem| MsgError::Malformed {
                    endpoint: endpoint.to_owned(),
                    what: "reply",
                    problem,
                })?;
            if reply_id != id {
                tracing::debug!(
                    endpoint,
                    reply_id,
                    request_id = id,
                    "discarding a late reply to an earlier request"
                );
                continue;
            }
            return match status {
                STATUS_OK => Ok(body.to_vec()),
                _ => Err(MsgError::Remote {
                    endpoint: endpoint.to_owned(),
                    request_id: id,
                    message: String::from_utf8_lossy(&body).into_owned(),
                }),
            };
        }
    }

    /// Sends `request` as JSON and decodes the reply from JSON.
    ///
    /// # Errors
    ///
    /// Those of [`ReqClient::request`], [`MsgError::Encode`] if `request` cannot be encoded,
    /// [`MsgError::Decode`] if the reply is not an `R`.
    pub fn request_json<Q, R>(&mut self, request: &Q, timeout: Duration) -> Result<R, MsgError>
    where
        Q: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let payload = serde_json::to_vec(request).map_err(|source| MsgError::Encode {
            endpoint: self.endpoint().to_owned(),
            source,
        })?;
        let request_id = self.next_id;
        let reply = self.request(payload, timeout)?;
        serde_json::from_slice(&reply).map_err(|source| MsgError::Decode {
            endpoint: self.endpoint().to_owned(),
            what: format!("reply to request {request_id}"),
            source,
        })
    }
}

impl fmt::Debug for ReqClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReqClient")
            .field("endpoint", &self.link.endpoint())
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
