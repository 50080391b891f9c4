//! The Hub client: what an application uses to reach the broker and open channels.
//!
//! A [`Hub`] is a handle to one connection to the broker. The connection is an actor: one
//! worker thread owns the CurveZMQ DEALER socket (requests), the SUB socket (the broker's
//! notices) and the heartbeat timer; API calls from any thread are messages to it and wait for
//! their answer on a channel of their own. So no ZeroMQ socket is ever touched by two threads,
//! and a call that times out leaves nothing half-done behind: every request carries an id, and a
//! reply that arrives after its caller gave up is dropped.
//!
//! - Every reply is decoded by [`protocol::decode_reply`](crate::protocol::decode_reply) and
//!   checked against the request before use: a reply that is not a JSON object, lacks a field or
//!   has one of the wrong type is [`ClientError::BadReply`], never a panic.
//! - No broker: calls fail with [`ClientError::Timeout`], and [`Hub::shutdown`] (or dropping the
//!   last handle) returns within a bounded time, since the sockets have a short LINGER.
//! - The heartbeat carries the liveness of every producer and consumer of this client and
//!   per-channel counters. When the broker answers a heartbeat with `unknown_client` (it
//!   restarted, or this client was silent too long), the client registers its channels and
//!   attaches its consumers again by itself.
//! - The client is a lifecycle module ([`module`]): it starts after the log
//!   module and stops before it; [`hub`] returns the running client of the global lifecycle.
//!
//! Message channels, CurveZMQ end to end: `hub.publisher(name).create()` and
//! `hub.req_server(name).create()` bind on a free loopback port with a fresh CURVE key pair,
//! register the dialable endpoint (never `0.0.0.0`) and the public key, and admit only the
//! client keys the broker admits (the registration's reply lists them);
//! `hub.subscriber(name).topic(..).open()` and `hub.req_client(name).open()` discover endpoint
//! and key over the authenticated broker connection and connect with this client's key pair.
//! The builders are [`crate::msg`]'s, with every option of a channel of its own.
//!
//! Shared-memory channels: [`Hub::channel`] is the [`shm::Channel`](crate::shm::Channel)
//! builder through the Hub, whose channels are memfds the broker holds and hands out
//! (docs/PROTOCOL.md §9). `create` makes the channel's memfds, hands them to the broker after
//! a `produce` grant, and registers it (size, policy, element type, shape); `open` discovers
//! it, gets the memfds through a `consume` grant (the broker's access list decides), and
//! attaches, checking what the broker announces against the segment's header (a difference is
//! [`ClientError::LayoutMismatch`] naming the field, so a consumer never reads a segment other
//! than the one announced). [`Hub::inspect`] reads a channel's segment report. An
//! [`ShmConsumer`] resumes by itself: it keeps reading when a restarted producer takes the
//! same segment over, attaches again when the segment was recreated or it was evicted. A
//! [`ShmProducer`] evicts the consumers whose clients the broker dropped (`consumer_dropped`).
//!
//! ```no_run
//! use labhub::client::{ClientConfig, Hub};
//! use labhub::shm::Policy;
//!
//! // Keys and endpoints from the labhub home (where `labhub hub` writes them).
//! let hub = Hub::connect(ClientConfig::from_env()?)?;
//! let mut producer = hub.channel("cam0").policy(Policy::DoubleBuffer).bytes(4096).create()?;
//! producer.publish(b"frame", &[5])?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_code)]

mod admission;
mod connection;
mod grant;
mod heartbeat;
mod msg;
mod shm;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use connection::Hub;
pub use heartbeat::ChannelCounters;
#[cfg(feature = "bridge")]
pub(crate) use msg::create_registered;
pub use msg::{OnHub, Registered};
pub use shm::{ConsumeError, OwnedFrame, ShmConsumer, ShmProducer, ViaHub};

use crate::keys::{self, KeyError, KeyPair, PublicKey};
use crate::protocol::{ChannelKind, ChannelName, ClientId, ErrorCode, NameError, Notification};

/// The name of the client module in the lifecycle.
pub const MODULE_NAME: &str = "labhub::client";

/// How long the lifecycle waits for the client to unregister and close at shutdown.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The default time a request waits for its reply.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How to reach and authenticate to the broker.
#[derive(Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The broker's ROUTER endpoint (dialable: `tcp://127.0.0.1:5570`).
    pub endpoint: String,
    /// The broker's notification PUB endpoint; `None` runs without notices.
    pub notify_endpoint: Option<String>,
    /// The broker's CURVE public key.
    pub server_key: PublicKey,
    /// This client's CURVE key pair (the broker admits the local user's client key).
    pub keys: KeyPair,
    /// The client id; `None` generates one unique to this process.
    pub client_id: Option<ClientId>,
    /// How long a request waits for its reply.
    pub request_timeout: Duration,
    /// The heartbeat interval until the broker tells its own.
    pub heartbeat_interval: Duration,
    /// How long a shared-memory producer's `create` through the Hub retries while the broker
    /// still holds the channel for a producer that died (until its heartbeat times out there;
    /// a predecessor whose process the broker saw end loses the channel at once).
    pub takeover_wait: Duration,
    /// The broker's grant socket as this process reaches it (a container that mounts it
    /// elsewhere); `None` uses the path the broker announces.
    pub grant_socket: Option<PathBuf>,
    /// libzmq I/O threads of this client's context, which encrypt and decrypt its CurveZMQ
    /// traffic (one connection runs on one of them); default 1.
    pub io_threads: u32,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("endpoint", &self.endpoint)
            .field("notify_endpoint", &self.notify_endpoint)
            .field("server_key", &self.server_key)
            .field("public_key", &self.keys.public)
            .field("client_id", &self.client_id)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

/// A bind address (`tcp://*:5570`, `tcp://0.0.0.0:5570`) made dialable on this machine by the
/// one rule message channels use too ([`crate::msg`]: a wildcard host becomes loopback).
fn dialable(endpoint: &str) -> Result<String, ClientError> {
    crate::msg::dialable(endpoint, None).map_err(|e| ClientError::Config {
        path: PathBuf::from("endpoint"),
        problem: e.to_string(),
    })
}

impl ClientConfig {
    /// A configuration for the broker at `endpoint` with public key `server_key`, using `keys`;
    /// no notices until [`ClientConfig::notify_endpoint`] is set.
    pub fn new(endpoint: impl Into<String>, server_key: PublicKey, keys: KeyPair) -> Self {
        Self {
            endpoint: endpoint.into(),
            notify_endpoint: None,
            server_key,
            keys,
            client_id: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            heartbeat_interval: Duration::from_secs(1),
            takeover_wait: Duration::from_secs(10),
            grant_socket: None,
            io_threads: 1,
        }
    }

    /// The configuration of the broker whose home is `home`: its public key from
    /// `<home>/keys/broker.pub`, the local user's client key from `<home>/keys` (created on first
    /// use; the broker admits it), and the endpoints from `LABHUB_BROKER_ENDPOINT` /
    /// `LABHUB_BROKER_NOTIFY_ENDPOINT`, else `<home>/broker.toml`, else the defaults.
    pub fn from_home(home: &Path) -> Result<Self, ClientError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let keys_dir = home.join("keys");
        let server_key = keys::read_public(&keys_dir.join("broker.pub"))?;
        let client = keys::local_client_key(&keys_dir)?;
        let found = crate::home::broker_endpoints(home, &var).map_err(|e| match e {
            crate::home::HomeError::Config { path, problem } => {
                ClientError::Config { path, problem }
            }
            other => ClientError::Config {
                path: home.to_owned(),
                problem: other.to_string(),
            },
        })?;
        let (endpoint, notify) = (found.endpoint, found.notify_endpoint);
        let mut config =
            Self::new(dialable(&endpoint)?, server_key, client).notify_endpoint(dialable(&notify)?);
        config.grant_socket = var("LABHUB_GRANT_SOCKET").map(PathBuf::from);
        Ok(config)
    }

    /// [`ClientConfig::from_home`] for the labhub home: `LABHUB_HOME`, else the platform's data
    /// directory.
    pub fn from_env() -> Result<Self, ClientError> {
        let home = crate::home::default_home(&|k| std::env::var(k).ok()).map_err(|e| {
            ClientError::Config {
                path: PathBuf::from("LABHUB_HOME"),
                problem: e.to_string(),
            }
        })?;
        Self::from_home(&home)
    }

    /// Subscribes to the broker's notices at `endpoint`.
    pub fn notify_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.notify_endpoint = Some(endpoint.into());
        self
    }

    /// Uses `id` as the client id.
    pub fn client_id(mut self, id: ClientId) -> Self {
        self.client_id = Some(id);
        self
    }

    /// How long each request waits for its reply.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The heartbeat interval used until the broker announces its own.
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval;
        self
    }

    /// How long a producer retries registering while the broker still holds the channel for a
    /// dead predecessor.
    pub fn takeover_wait(mut self, wait: Duration) -> Self {
        self.takeover_wait = wait;
        self
    }

    /// Gives the client's ZeroMQ context `threads` I/O threads (at least 1): a bridge with
    /// several connections encrypts them in parallel.
    pub fn io_threads(mut self, threads: u32) -> Self {
        self.io_threads = threads.max(1);
        self
    }

    /// Reaches the broker's grant socket at `path` instead of the path it announces (a
    /// container that mounts the socket elsewhere).
    pub fn grant_socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.grant_socket = Some(path.into());
        self
    }
}

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A configuration file could not be used.
    #[error("client configuration {path} is unusable: {problem}")]
    Config {
        /// The file (or variable) at fault.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A key file was refused.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A name given by the caller is invalid.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// A ZeroMQ call failed.
    #[error("{what} failed for {endpoint}")]
    Zmq {
        /// What the client was doing.
        what: &'static str,
        /// The endpoint involved.
        endpoint: String,
        /// The libzmq error.
        #[source]
        source: labhub_zmq::ZmqError,
    },
    /// No reply arrived in time (is the broker running, and does it admit this key?).
    #[error("{request} request to {endpoint} got no reply within {waited:?}")]
    Timeout {
        /// The request type.
        request: &'static str,
        /// The broker endpoint.
        endpoint: String,
        /// How long the request waited.
        waited: Duration,
    },
    /// The broker's reply is malformed: not the protocol, not an object, a field missing or of
    /// the wrong type, or contents that do not answer the request.
    #[error("malformed reply to {request}: {problem}")]
    BadReply {
        /// The request type.
        request: &'static str,
        /// What is wrong with the reply, naming the field.
        problem: String,
    },
    /// The broker refused the request.
    #[error("broker refused {request}{}: {code}: {message}", channel.as_ref().map(|c| format!(" of channel {c}")).unwrap_or_default())]
    Refused {
        /// The request type.
        request: &'static str,
        /// The channel concerned, if any.
        channel: Option<String>,
        /// The broker's error code.
        code: ErrorCode,
        /// The broker's explanation.
        message: String,
    },
    /// This client already has a publisher or server of the channel open (a second one would
    /// replace the first's registration at the broker).
    #[error(
        "channel {channel} is already served by this hub client (another publisher or server of it is open)"
    )]
    AlreadyServing {
        /// The channel.
        channel: String,
    },
    /// The client was shut down.
    #[error("the hub client is shut down")]
    Stopped,
    /// The channel is of another kind than the caller asked for.
    #[error("channel {channel} is a {found} channel, not {expected}", found = found.as_str(), expected = expected.as_str())]
    WrongKind {
        /// The channel.
        channel: String,
        /// The kind asked for.
        expected: ChannelKind,
        /// The kind registered.
        found: ChannelKind,
    },
    /// What the broker announces disagrees with the channel itself .
    #[error(
        "channel {channel}: the broker announces {field} = {broker}, the segment has {segment}"
    )]
    LayoutMismatch {
        /// The channel.
        channel: String,
        /// The field that differs (`size`, `shm_name`, `element`, `shape`).
        field: &'static str,
        /// The broker's value.
        broker: String,
        /// The segment's value.
        segment: String,
    },
    /// A message channel was registered without a CURVE server key, so it cannot be reached
    /// over CurveZMQ (labhub's message channels are CurveZMQ only).
    #[error("{} channel {channel} was registered without a CURVE server key", kind.as_str())]
    NoServerKey {
        /// The channel.
        channel: String,
        /// Its kind.
        kind: ChannelKind,
    },
    /// Creating or connecting a ZeroMQ message channel failed.
    #[error("message channel {channel}")]
    Msg {
        /// The channel.
        channel: String,
        /// The cause.
        #[source]
        source: Box<crate::msg::MsgError>,
    },
    /// The broker's grant socket could not be reached or used.
    #[error("grant socket {path} for channel {channel}")]
    GrantSocket {
        /// The channel.
        channel: String,
        /// The socket.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// No channel of this hub is bridged from `source` (`CHANNEL@HUB`): no bridge brings it
    /// here (run `labhub bridge CHANNEL --to <this hub>` on that hub's host).
    #[error("no channel here is bridged from {wanted}")]
    NotBridged {
        /// The channel asked for, `CHANNEL@HUB`.
        wanted: String,
    },
    /// Creating or attaching to the shared-memory channel failed.
    #[error("shared-memory channel {channel}")]
    Shm {
        /// The channel.
        channel: String,
        /// The cause.
        #[source]
        source: crate::shm::ChannelError,
    },
}

impl ClientError {
    /// The broker's error code, if the broker refused the request (`already_exists` too for
    /// [`ClientError::AlreadyServing`], the same refusal made by this client).
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Refused { code, .. } => Some(*code),
            // What the broker answers a second client that registers a live channel.
            Self::AlreadyServing { .. } => Some(ErrorCode::AlreadyExists),
            _ => None,
        }
    }
}

/// Something the broker or the client itself reports to interested channel objects.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Notice {
    /// A notification published by the broker.
    Broker(Notification),
    /// The broker had forgotten this client (it restarted); its channels were registered and its
    /// consumers attached again.
    Reregistered {
        /// The channel registered or attached again.
        channel: ChannelName,
    },
    /// Registering or attaching again after a broker restart failed.
    ReregisterFailed {
        /// The channel.
        channel: ChannelName,
        /// What went wrong.
        problem: String,
    },
}

impl Notice {
    /// The channel the notice is about, if any.
    pub fn channel(&self) -> Option<&ChannelName> {
        match self {
            Self::Broker(Notification::ChannelUp { channel }) => Some(&channel.spec.name),
            Self::Broker(Notification::ChannelDown { name, .. })
            | Self::Broker(Notification::ConsumerDropped { name, .. }) => Some(name),
            Self::Reregistered { channel } | Self::ReregisterFailed { channel, .. } => {
                Some(channel)
            }
        }
    }

    /// A short name of the notice kind (`channel_down`, `reregistered`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Broker(n) => n.type_name(),
            Self::Reregistered { .. } => "reregistered",
            Self::ReregisterFailed { .. } => "reregister_failed",
        }
    }
}

/// The client module: a lifecycle service whose startup connects a [`Hub`] with `config` and
/// whose shutdown unregisters its channels and closes it. It depends on the log module
/// ([`crate::log::MODULE_NAME`]); use [`module_without_log`] in a lifecycle without one.
pub fn module(config: ClientConfig) -> crate::lifecycle::ModuleDef {
    module_without_log(config).depends_on(crate::log::MODULE_NAME)
}

/// The client module with no dependency on the log module.
pub fn module_without_log(config: ClientConfig) -> crate::lifecycle::ModuleDef {
    crate::lifecycle::ModuleDef::service(
        MODULE_NAME,
        move || Ok(Arc::new(Hub::connect(config)?)),
        SHUTDOWN_TIMEOUT,
        |hub: Arc<Hub>| hub.shutdown(),
    )
}

/// The client of the global lifecycle's client module, while it runs.
pub fn hub() -> Option<Arc<Hub>> {
    crate::lifecycle::Lifecycle::global().service::<Hub>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_bind_addresses_become_dialable() {
        assert_eq!(dialable("tcp://*:5570").unwrap(), "tcp://127.0.0.1:5570");
        assert_eq!(dialable("tcp://0.0.0.0:1").unwrap(), "tcp://127.0.0.1:1");
        assert_eq!(dialable("tcp://10.0.0.2:1").unwrap(), "tcp://10.0.0.2:1");
        assert_eq!(dialable("ipc:///tmp/x").unwrap(), "ipc:///tmp/x");
        assert!(dialable("tcp://*:0").is_err(), "no concrete port");
    }
}
