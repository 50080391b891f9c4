//! A ZAP handler (ZeroMQ RFC 27): decides which peers may connect to this context's sockets.
//!
//! libzmq asks the handler bound at `inproc://zeromq.zap.01` in the socket's context about every
//! new connection that uses CURVE or PLAIN (and NULL connections to sockets with a ZAP domain).
//! [`Context::start_zap_handler`] runs such a handler on its own thread and asks a closure.

#![deny(unsafe_code)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use crate::context::Context;
use crate::curve::CurvePublicKey;
use crate::error::ZmqError;
use crate::message::Message;
use crate::poll::{PollEvents, poll};
use crate::socket::{Flags, Socket, SocketType};

/// The endpoint libzmq sends ZAP requests to (RFC 27).
pub const ZAP_ENDPOINT: &str = "inproc://zeromq.zap.01";

const ZAP_VERSION: &[u8] = b"1.0";

/// One ZAP request: a peer is connecting and asks to be admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ZapRequest {
    /// The ZAP domain of the socket being connected to (`Socket::set_zap_domain`), may be empty.
    pub domain: String,
    /// The peer's address, e.g. `127.0.0.1` (no port).
    pub address: String,
    /// The routing id the peer announced, may be empty.
    pub routing_id: Vec<u8>,
    /// `"NULL"`, `"PLAIN"` or `"CURVE"`.
    pub mechanism: String,
    /// Mechanism credentials: CURVE, one frame holding the client's 32-byte public key.
    pub credentials: Vec<Vec<u8>>,
}

impl ZapRequest {
    /// The client's long-term public key if the mechanism is CURVE.
    pub fn curve_public_key(&self) -> Option<CurvePublicKey> {
        if self.mechanism != "CURVE" {
            return None;
        }
        CurvePublicKey::from_bytes(self.credentials.first()?).ok()
    }
}

/// Why a peer is refused, as a ZAP status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ZapStatus {
    /// 300: temporary error, the peer may retry.
    TemporaryFailure,
    /// 400: authentication failed.
    Denied,
    /// 500: the handler failed.
    InternalError,
}

impl ZapStatus {
    /// The numeric status code.
    pub fn code(self) -> u16 {
        match self {
            Self::TemporaryFailure => 300,
            Self::Denied => 400,
            Self::InternalError => 500,
        }
    }
}

/// The handler's answer to a [`ZapRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ZapDecision {
    /// Admit the peer. Every message from it carries `user_id` ([`Message::user_id`]).
    Allow {
        /// Identity of the peer for the application, e.g. a role name or the key in Z85.
        user_id: String,
    },
    /// Refuse the peer; the connection is closed and the peer gets nothing.
    Deny {
        /// The status code reported (400 for "not allowed").
        status: ZapStatus,
        /// A short reason, logged by the peer's monitor.
        text: String,
    },
}

impl ZapDecision {
    /// Admit with this user id.
    pub fn allow(user_id: impl Into<String>) -> Self {
        Self::Allow {
            user_id: user_id.into(),
        }
    }

    /// Refuse with status 400 and this reason.
    pub fn deny(text: impl Into<String>) -> Self {
        Self::Deny {
            status: ZapStatus::Denied,
            text: text.into(),
        }
    }
}

/// A running ZAP handler. Dropping it stops and joins its thread; connections handshaking
/// afterwards are then admitted without a check (libzmq 4.3 without a handler), so keep it
/// alive as long as the sockets it guards.
#[derive(Debug)]
pub struct ZapHandler {
    stop: Socket,
    thread: Option<JoinHandle<()>>,
}

impl Context {
    /// Starts the ZAP handler of this context on a new thread; `decide` is called once per
    /// connecting peer and must not block for long (it delays every handshake).
    ///
    /// A panic in `decide` refuses that peer with status 500; the handler keeps running.
    /// Fails with `EADDRINUSE` if this context already has a ZAP handler.
    pub fn start_zap_handler<F>(&self, decide: F) -> Result<ZapHandler, ZmqError>
    where
        F: Fn(&ZapRequest) -> ZapDecision + Send + 'static,
    {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);

        // Bind on this thread so that errors (a second handler) are reported here.
        let zap = self.socket(SocketType::Rep)?;
        zap.bind(ZAP_ENDPOINT)?;
        let stop_endpoint = format!(
            "inproc://labhub-zap-stop-{}",
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        );
        let stop_rx = self.socket(SocketType::Pair)?;
        stop_rx.bind(&stop_endpoint)?;
        let stop = self.socket(SocketType::Pair)?;
        stop.connect(&stop_endpoint)?;

        let thread = std::thread::Builder::new()
            .name("labhub-zap".into())
            .spawn(move || serve(&zap, &stop_rx, &decide))
            .map_err(|e| ZmqError::invalid("start_zap_handler", "thread", e.to_string()))?;
        Ok(ZapHandler {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for ZapHandler {
    fn drop(&mut self) {
        // Fails only if the context was shut down, in which case the thread saw ETERM and ended.
        let _ = self.stop.send(b"", Flags::DONTWAIT);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(zap: &Socket, stop: &Socket, decide: &dyn Fn(&ZapRequest) -> ZapDecision) {
    serve_until_stopped(zap, stop, decide);
    // Unbinding an inproc endpoint is synchronous, unlike closing the socket (done later by
    // libzmq's reaper thread): once the handler is joined, a new one can bind at once.
    let _ = zap.unbind(ZAP_ENDPOINT);
}

fn serve_until_stopped(zap: &Socket, stop: &Socket, decide: &dyn Fn(&ZapRequest) -> ZapDecision) {
    loop {
        let mut items = [
            zap.poll_item(PollEvents::IN),
            stop.poll_item(PollEvents::IN),
        ];
        if poll(&mut items, None).is_err() {
            return; // ETERM: the context is shutting down
        }
        if items[1].is_readable() {
            return;
        }
        if !items[0].is_readable() {
            continue;
        }
        let request = match zap.recv_multipart(Flags::DONTWAIT) {
            Ok(frames) => frames,
            Err(e) if e.is_again() => continue,
            Err(_) => return,
        };
        let reply = answer(&request, decide);
        if let Err(e) = zap.send_multipart(&reply, Flags::NONE) {
            if e.is_term() {
                return;
            }
            tracing::warn!(error = %e, "zap handler could not send its reply");
        }
    }
}

/// The reply frames (RFC 27) to one request.
fn answer(frames: &[Message], decide: &dyn Fn(&ZapRequest) -> ZapDecision) -> [Vec<u8>; 6] {
    let request_id = frames.get(1).map(Message::to_vec).unwrap_or_default();
    let decision = match parse(frames) {
        Err(reason) => {
            tracing::warn!(reason, "malformed zap request");
            ZapDecision::Deny {
                status: ZapStatus::InternalError,
                text: reason.to_owned(),
            }
        }
        Ok(request) => match catch_unwind(AssertUnwindSafe(|| decide(&request))) {
            Ok(decision) => decision,
            Err(_) => {
                tracing::error!("zap decision closure panicked; refusing the peer");
                ZapDecision::Deny {
                    status: ZapStatus::InternalError,
                    text: "zap handler failed".to_owned(),
                }
            }
        },
    };
    let (status, text, user_id) = match decision {
        ZapDecision::Allow { user_id } => (200, "OK".to_owned(), user_id),
        ZapDecision::Deny { status, text } => (status.code(), text, String::new()),
    };
    [
        ZAP_VERSION.to_vec(),
        request_id,
        status.to_string().into_bytes(),
        text.into_bytes(),
        user_id.into_bytes(),
        Vec::new(), // metadata: none
    ]
}

fn parse(frames: &[Message]) -> Result<ZapRequest, &'static str> {
    if frames.len() < 6 {
        return Err("zap request has fewer than 6 frames");
    }
    if frames[0].as_bytes() != ZAP_VERSION {
        return Err("zap request version is not 1.0");
    }
    let text = |m: &Message| String::from_utf8_lossy(m).into_owned();
    Ok(ZapRequest {
        domain: text(&frames[2]),
        address: text(&frames[3]),
        routing_id: frames[4].to_vec(),
        mechanism: text(&frames[5]),
        credentials: frames[6..].iter().map(Message::to_vec).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(parts: &[&[u8]]) -> Vec<Message> {
        parts
            .iter()
            .map(|p| Message::copy_from(p).unwrap())
            .collect()
    }

    #[test]
    fn a_curve_request_is_parsed_and_allowed_with_the_user_id() {
        let key = [9u8; 32];
        let request = frames(&[b"1.0", b"7", b"labhub", b"127.0.0.1", b"", b"CURVE", &key]);
        let reply = answer(&request, &|r: &ZapRequest| {
            assert_eq!(r.domain, "labhub");
            assert_eq!(r.curve_public_key().unwrap().as_bytes(), &key);
            ZapDecision::allow("alice")
        });
        assert_eq!(reply[0], b"1.0");
        assert_eq!(reply[1], b"7");
        assert_eq!(reply[2], b"200");
        assert_eq!(reply[4], b"alice");
    }

    #[test]
    fn a_malformed_request_is_refused_with_500() {
        let reply = answer(&frames(&[b"2.0", b"1", b"", b"", b"", b"NULL"]), &|_| {
            ZapDecision::allow("x")
        });
        assert_eq!(reply[2], b"500");
        let reply = answer(&frames(&[b"1.0"]), &|_| ZapDecision::allow("x"));
        assert_eq!(reply[2], b"500");
    }

    #[test]
    fn a_panicking_closure_refuses_the_peer_with_500() {
        let request = frames(&[b"1.0", b"1", b"", b"", b"", b"NULL"]);
        let reply = answer(&request, &|_| panic!("boom"));
        assert_eq!(reply[2], b"500");
        assert_eq!(reply[4], b"");
    }

    #[test]
    fn a_denial_carries_its_status_and_text() {
        let request = frames(&[b"1.0", b"1", b"", b"", b"", b"NULL"]);
        let reply = answer(&request, &|_| ZapDecision::deny("not on the list"));
        assert_eq!(reply[2], b"400");
        assert_eq!(reply[3], b"not on the list");
    }
}
