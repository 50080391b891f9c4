//! Bridges: a shared-memory channel of this host republished, frame by frame, into a channel
//! of another host's hub over CurveZMQ (cargo feature `bridge`).
//!
//! Two ends, each a client of its own hub:
//!
//! - A [`Gateway`] runs on the receiving host (`labhub gateway`). It binds a CurveZMQ ROUTER,
//!   registers it with its hub as the req/rep channel [`GATEWAY_CHANNEL`], and admits exactly
//!   the client keys its hub admits. For every bridge that connects it creates the channel
//!   through its hub (the source's policy, element type, shape, flexible zone, checksums and
//!   schema; `bridged_from = CHANNEL@HUB` in the registry, which `labhub ls` shows) and
//!   writes the frames into it with their timestamps, shapes, states and source frame ids
//!   ([`Frame::origin_id`](crate::shm::Frame::origin_id)). Remote consumers open it like any
//!   local channel, or as `CHANNEL@HUB`.
//! - A [`Bridge`] runs on the sending host (`labhub bridge cam0 --to ws`). It consumes the
//!   local channel, finds the gateway through the peer hub (whose broker it reaches with this
//!   host's client key, which that hub must admit), and streams frames to it over one or more
//!   connections.
//!
//! Flow control is by credit: the gateway says how many items may be in flight (its window)
//! and credits each once committed to the ring, so a remote ring that is full (its consumers
//! slow) stops the credit, and, in [`Delivery::Lossless`], the sender stops reading, and the
//! local ring's backpressure reaches the local producer. In [`Delivery::Lossy`] the sender
//! reads the newest frame whenever credit allows and skips the rest. Losses are counted at
//! both ends: the sender counts the frames it skipped ([`BridgeStats::skipped`]), the gateway
//! the source ids that never arrived or could not be written ([`SessionReport::lost`]),
//! reported back to the sender ([`BridgeStats::remote_lost`]).
//!
//! Either side may restart or the connection break: the sender reconnects by itself and, in
//! lossless delivery, sends again every item not yet credited; the gateway writes each source
//! frame once (it resumes after the newest source id in the ring, even as a new process that
//! took the channel over). Frames produced while no sender ran are counted lost.
//!
//! The messages are in docs/PROTOCOL.md §12.
#![deny(unsafe_code)]

mod gateway;
mod sender;
mod spool;
pub mod wire;

pub use gateway::{Gateway, GatewayOptions, SessionReport};
pub use sender::{Bridge, BridgeOptions, BridgeStats, MAX_CONNECTIONS};
pub use wire::Delivery;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crate::client::ClientError;

/// The req/rep channel name under which a hub's gateway registers.
pub const GATEWAY_CHANNEL: &str = "labhub.bridge";

/// Why a bridge or gateway failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// An option is out of range.
    #[error("bridge option {option}: {problem}")]
    Option {
        /// The option.
        option: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// A request to a hub failed (the channel is missing, the hub is unreachable, ...).
    #[error(transparent)]
    Hub(#[from] ClientError),
    /// The peer hub has no gateway registered.
    #[error("the hub at {hub} runs no bridge gateway (start `labhub gateway` on its host)")]
    NoGateway {
        /// The peer hub's endpoint.
        hub: String,
    },
    /// The gateway refused this host's client key (or is not the server the hub announced).
    #[error("the gateway at {endpoint} refused this host's key: {detail}")]
    KeyRefused {
        /// The gateway's endpoint.
        endpoint: String,
        /// What ZeroMQ reported.
        detail: String,
    },
    /// The gateway refused the bridge.
    #[error("the gateway refused the bridge: {code}: {message}")]
    Refused {
        /// Its code (`mismatch`, `channel`, `version`, `bad_request`).
        code: String,
        /// Its explanation.
        message: String,
    },
    /// The gateway did not answer in time.
    #[error("the gateway at {endpoint} did not answer")]
    Silent {
        /// The gateway's endpoint.
        endpoint: String,
    },
    /// A message from the gateway could not be decoded.
    #[error(transparent)]
    Wire(#[from] wire::WireError),
    /// A connection could not be made.
    #[error("bridge connection")]
    Msg(#[source] Box<crate::msg::MsgError>),
    /// A ZeroMQ call failed.
    #[error("{what} failed")]
    Zmq {
        /// What was being done.
        what: &'static str,
        /// The libzmq error.
        #[source]
        source: labhub_zmq::ZmqError,
    },
}

impl BridgeError {
    /// Whether retrying cannot help: a refused key, the gateway's refusal, a bad option, a
    /// local channel that cannot be read.
    pub fn is_fatal(&self) -> bool {
        match self {
            Self::Option { .. } | Self::KeyRefused { .. } => true,
            // Another bridge still holds the channel: it may be a dead sender the gateway
            // has not given up on yet.
            Self::Refused { code, .. } => code != "busy" && code != "no_session",
            Self::Hub(e) => matches!(e, ClientError::InvalidName(_) | ClientError::Key(_)),
            _ => false,
        }
    }
}

/// A background thread of the bridge (the gateway's socket thread, a sender) and the flag that
/// stops it.
struct Background {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), BridgeError>>>,
    what: &'static str,
}

impl Background {
    /// Starts `run` on a thread called `name`; `run` is given the stop flag.
    fn spawn(
        name: String,
        what: &'static str,
        run: impl FnOnce(Arc<AtomicBool>) -> Result<(), BridgeError> + Send + 'static,
    ) -> Result<Self, BridgeError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || run(flag))
            .map_err(|e| BridgeError::Option {
                option: what,
                problem: e.to_string(),
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
            what,
        })
    }

    fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Stops the thread and returns what it ended with (once; later calls return `Ok`).
    fn finish(&mut self) -> Result<(), BridgeError> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|_| {
                Err(BridgeError::Option {
                    option: self.what,
                    problem: "panicked".into(),
                })
            }),
            None => Ok(()),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// A random 64-bit number (bridge and attempt ids): std's randomly keyed hasher over the time
/// and the pid, enough to tell runs and attempts apart.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}
