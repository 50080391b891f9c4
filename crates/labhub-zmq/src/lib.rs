//! A thin safe wrapper over libzmq 4.3.5 with CURVE, exposing what labhub uses.
//!
//! libzmq and libsodium are built from source by `labhub-zmq-sys`; `cargo build` alone
//! suffices and CURVE is always available ([`has`]`("curve")`).
//!
//! - [`Context`]: `Send + Sync`, cheap to clone; terminated after its last socket is closed.
//! - [`Socket`]: `Send`, not `Sync` (one owning thread); LINGER [`DEFAULT_LINGER`] by default,
//!   so dropping never hangs on a dead peer; multipart send/receive, typed options.
//! - [`poll`] over several sockets with a timeout.
//! - CURVE keys ([`CurveKeyPair`]), Z85 ([`z85_encode`], [`z85_decode`]).
//! - ZAP ([`Context::start_zap_handler`]): a closure admits or refuses each connecting peer.
//! - Socket monitor ([`Socket::enable_monitor`]): connection and handshake events, and
//!   [`peer`]: acting on one accepted TCP connection that an event names.
//!
//! Every failure is a [`ZmqError`]; libzmq errors keep their errno and name the call.
//!
//! ```
//! use labhub_zmq::{Context, CurveKeyPair, Flags, SocketType};
//! use std::time::Duration;
//!
//! let context = Context::new()?;
//! let server_keys = CurveKeyPair::generate()?;
//! let server = context.socket(SocketType::Rep)?;
//! server.set_curve_server_keys(&server_keys.secret)?;
//! server.bind("tcp://127.0.0.1:0")?;
//! let endpoint = server.last_endpoint()?;
//!
//! let client_keys = CurveKeyPair::generate()?;
//! let client = context.socket(SocketType::Req)?;
//! client.set_curve_client_keys(&server_keys.public, &client_keys.public, &client_keys.secret)?;
//! client.set_rcvtimeo(Some(Duration::from_secs(10)))?;
//! client.connect(&endpoint)?;
//!
//! client.send(b"ping", Flags::NONE)?;
//! assert_eq!(&*server.recv(Flags::NONE)?, b"ping");
//! server.send(b"pong", Flags::NONE)?;
//! assert_eq!(&*client.recv(Flags::NONE)?, b"pong");
//! # Ok::<(), labhub_zmq::ZmqError>(())
//! ```
#![deny(missing_docs)]

use std::ffi::CString;

use labhub_zmq_sys as sys;

mod context;
mod curve;
mod error;
mod message;
mod monitor;
pub mod peer;
mod poll;
mod socket;
mod zap;

pub use context::{Context, DEFAULT_LINGER};
pub use curve::{
    CURVE_KEY_LEN, CURVE_KEY_Z85_LEN, CurveKeyPair, CurvePublicKey, CurveSecretKey, curve_public,
    z85_decode, z85_encode,
};
pub use error::{Z85Error, ZmqError};
pub use message::Message;
pub use monitor::{MonitorEvent, SocketEvent};
pub use poll::{PollEvents, PollItem, poll};
pub use socket::{Flags, Mechanism, Socket, SocketType};
pub use zap::{ZAP_ENDPOINT, ZapDecision, ZapHandler, ZapRequest, ZapStatus};

/// Whether the linked libzmq supports a capability: `"curve"`, `"ipc"`, `"ws"`, ...
pub fn has(capability: &str) -> bool {
    let Ok(capability) = CString::new(capability) else {
        return false;
    };
    // SAFETY: a NUL-terminated string alive for the call; zmq_has only reads it.
    unsafe { sys::zmq_has(capability.as_ptr()) == 1 }
}

/// The linked libzmq version as (major, minor, patch): (4, 3, 5).
pub fn version() -> (i32, i32, i32) {
    let (mut major, mut minor, mut patch) = (0, 0, 0);
    // SAFETY: three valid, writable int pointers.
    unsafe { sys::zmq_version(&mut major, &mut minor, &mut patch) };
    (major, minor, patch)
}
