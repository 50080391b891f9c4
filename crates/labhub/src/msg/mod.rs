//! ZeroMQ message channels: publish/subscribe and request/reply, optionally CurveZMQ.
//!
//! These are the channels the Hub client creates and finds through the broker
//! (`hub.publisher(name)`, `hub.subscriber(name)`, `hub.req_server(name)`,
//! `hub.req_client(name)`, CurveZMQ end to end); they do not depend on the broker. The binding
//! side reports an endpoint peers can dial, to be registered; the connecting side is given that
//! endpoint.
//!
//! Every channel is built by one of two builders, generic over the channel and over where it
//! goes: [`BindBuilder`] (ends in `create`) and [`ConnectBuilder`] (ends in `open`), here with
//! [`OnContext`] / [`ToEndpoint`], through the Hub with its target. Each option is one setter,
//! checked by the terminal method ([`MsgError::InvalidOption`] names a bad one).
//!
//! | type | socket | side | does |
//! |---|---|---|---|
//! | [`Publisher`] | XPUB | binds | [`send`](Publisher::send)`(topic, payload)`, never blocks; [`wait_for_subscribers`](Publisher::wait_for_subscribers) |
//! | [`Subscriber`] | SUB | connects | receives topics matching its prefixes, with a timeout |
//! | [`ReqServer`] | ROUTER | binds | receives a request, then replies (in any order) |
//! | [`ReqClient`] | DEALER | connects | sends a request, waits for its reply with a timeout |
//!
//! Each channel owns one socket and is `Send` but not `Sync`: one thread uses it at a time.
//! Sockets linger at most [`labhub_zmq::DEFAULT_LINGER`] on drop, so dropping never hangs,
//! queue at most [`DEFAULT_HWM`] messages per peer and accept messages of at most
//! [`DEFAULT_MAX_MESSAGE_SIZE`] (both configurable on each builder). A larger frame makes
//! ZeroMQ close the connection before reading it; a larger message of smaller frames is
//! [`MsgError::TooLarge`]. A connecting channel reports its connection closing (a failed
//! CURVE handshake, a drop) as [`MsgError::ConnectionClosed`], after the messages that came
//! before it, rather than waiting silently: ZeroMQ does not reconnect after such failures.
//!
//! # Endpoints
//!
//! Binding channels bind [`DEFAULT_BIND`] (`tcp://127.0.0.1:0`, a free port) unless given
//! another `tcp://` or `ipc://` endpoint, and report the resolved endpoint. A wildcard host
//! (`tcp://0.0.0.0:0`, `tcp://*:0`) listens on every interface, but is not an address: the
//! reported endpoint has the host given to `advertise_host` instead, or the loopback address,
//! so what is registered is always dialable.
//!
//! # Wire format
//!
//! Every message is a ZeroMQ multipart message, so any ZeroMQ binding can speak it
//! (`docs/PROTOCOL.md` §10 has it too, with the key exchange of the Hub's channels).
//!
//! Publish/subscribe: `[topic, payload]`, exactly two frames. The topic is always sent, even
//! when empty, so subscriptions (byte prefixes of the first frame) always apply to the
//! topic. A message with another frame count is a [`MsgError::Malformed`] at the subscriber.
//! The publisher's XPUB socket is a PUB socket to its peers: any SUB socket subscribes to it.
//!
//! Request/reply, as the client's DEALER sends and receives them:
//!
//! | message | frames |
//! |---|---|
//! | request | `[b"", request_id, payload]` |
//! | reply | `[b"", request_id, status, body]` |
//!
//! - the empty delimiter frame is the usual ROUTER envelope separator;
//! - `request_id` is 8 bytes, a little-endian `u64` the client picks fresh for each request
//!   (ours count from 1); the reply carries the request's id back, and a client discards a
//!   reply whose id is not that of the request it is waiting for;
//! - `status` is one byte: 0 = ok, `body` is the reply payload; 1 = error, `body` is a UTF-8
//!   error text (the handler failed or panicked, the request was malformed, or the server
//!   dropped it unanswered).
//!
//! The server's ROUTER sees the client's routing id as an extra first frame and sends it back
//! first. From Python (pyzmq):
//!
//! ```text
//! client = ctx.socket(zmq.DEALER); client.connect(endpoint)
//! client.send_multipart([b"", struct.pack("<Q", 1), b"ping"])
//! _, rid, status, body = client.recv_multipart()        # status == b"\x00"
//!
//! server = ctx.socket(zmq.ROUTER); server.bind("tcp://127.0.0.1:5555")
//! peer, _, rid, payload = server.recv_multipart()
//! server.send_multipart([peer, b"", rid, b"\x00", b"pong"])
//!
//! sub.setsockopt(zmq.SUBSCRIBE, b"cam"); topic, payload = sub.recv_multipart()
//! pub.send_multipart([b"cam0", payload])
//! ```
//!
//! # CurveZMQ
//!
//! A binding channel given a server key pair (`curve(&keys)`) accepts only CurveZMQ
//! clients; a connecting channel given the server's public key and its own key pair
//! (`curve(&server_public, &own_keys)`) speaks CurveZMQ. A client with a wrong server key
//! never completes the handshake: it receives nothing, and its requests fail with
//! [`MsgError::ConnectionClosed`]. Without a ZAP handler on the context a CURVE server admits
//! every client key; the Hub's channels admit only the keys the broker admits.
//!
//! # Example
//!
//! The server serves on this thread, the client requests from a scoped one: each channel is
//! used by exactly one thread.
//!
//! ```
//! use std::time::Duration;
//! use labhub::msg::{Context, ReqClient, ReqServer};
//!
//! let context = Context::new()?;
//! let server = ReqServer::builder(&context).create()?;
//! let mut client = ReqClient::builder(&context, server.endpoint()).open()?;
//!
//! let serving = std::thread::scope(|scope| {
//!     let handle = scope.spawn(|| client.request(b"ping", Duration::from_secs(10)));
//!     server.serve_one(Duration::from_secs(10), |request| [request, b"/pong"].concat())?;
//!     handle.join().expect("client thread")
//! })?;
//! assert_eq!(serving, b"ping/pong");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_code)]

use std::time::{Duration, Instant};

use labhub_zmq::{Flags, Message as Frame, PollEvents, Socket, ZmqError, poll};

mod builder;
mod endpoint;
mod error;
mod link;
mod pubsub;
mod reqrep;

pub use builder::{
    BindBuilder, ConnectBuilder, OnContext, PublisherBuilder, ReqClientBuilder, ReqServerBuilder,
    SubscriberBuilder, ToEndpoint,
};
pub use endpoint::DEFAULT_BIND;
pub(crate) use endpoint::{BindOptions, ClientCurve, ConnectOptions, dialable};
pub use error::{CloseReason, FrameError, MsgError};
pub use labhub_zmq::{Context, CurveKeyPair, CurvePublicKey, CurveSecretKey};
#[cfg(feature = "bridge")]
pub(crate) use link::Link;
pub use pubsub::{JsonMessage, Message, Publisher, Subscriber};
pub use reqrep::{ReqClient, ReqServer, Request, Served};

/// Messages queued per peer (each way) before a publisher drops further ones for that peer
/// or a sender waits: libzmq's default, stated so it does not change under us.
pub const DEFAULT_HWM: u32 = 1000;

/// The largest message a channel accepts unless told otherwise (32 MiB), all frames together:
/// a peer cannot make a receiver hold more than this per message.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 32 << 20;

/// Refuses a received message larger than `limit` bytes, all frames together.
fn check_size(
    frames: Vec<Frame>,
    limit: usize,
    endpoint: &str,
    what: &'static str,
) -> Result<Vec<Frame>, MsgError> {
    let size: usize = frames.iter().map(|f| f.len()).sum();
    if size > limit {
        return Err(MsgError::TooLarge {
            endpoint: endpoint.to_owned(),
            what,
            size,
            limit,
        });
    }
    Ok(frames)
}

/// Receives one multipart message, waiting up to `timeout`; `None` if none came.
fn recv_frames(socket: &Socket, timeout: Duration) -> Result<Option<Vec<Frame>>, ZmqError> {
    // No deadline (a timeout too large to add) waits forever.
    let deadline = Instant::now().checked_add(timeout);
    loop {
        // Try first: when a message is waiting, this saves the poll.
        match socket.recv_multipart(Flags::DONTWAIT) {
            Ok(frames) => return Ok(Some(frames)),
            Err(e) if e.is_again() => {}
            Err(e) => return Err(e),
        }
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left.is_some_and(|left| left.is_zero()) {
            return Ok(None);
        }
        let mut items = [socket.poll_item(PollEvents::IN)];
        poll(&mut items, left)?;
    }
}
