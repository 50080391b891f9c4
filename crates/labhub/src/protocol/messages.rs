//! Message bodies: what each request, reply and notification carries as JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::curve_key::CurveKey;
use super::names::{ChannelName, ClientId, Endpoint, ShmName};
pub use crate::latency::LatencySummary;

/// Free key/value metadata of a channel (a JSON object, at most [`MAX_METADATA_BYTES`] when
/// serialised and nested at most [`MAX_METADATA_DEPTH`] deep).
pub type Metadata = serde_json::Map<String, serde_json::Value>;

/// The [`Metadata`] key of a channel a bridge republishes: `CHANNEL@HUB`, the channel and peer
/// hub its frames come from (docs/PROTOCOL.md §12).
pub const BRIDGED_FROM: &str = "bridged_from";

/// Counters a producer reports for a channel in its heartbeat (`frames_written`, …).
pub type Counters = BTreeMap<String, u64>;

/// Largest serialised metadata object, in bytes.
pub const MAX_METADATA_BYTES: usize = 4096;
/// Deepest nesting of metadata values.
pub const MAX_METADATA_DEPTH: usize = 8;
/// Most counters per channel in one heartbeat.
pub const MAX_COUNTERS: usize = 32;
/// Longest counter name.
pub const MAX_COUNTER_NAME_LEN: usize = 64;
/// Most channels one heartbeat may report counters for.
pub const MAX_HEARTBEAT_CHANNELS: usize = 256;
/// Most latency bucket entries (`[index, count]` pairs) one heartbeat may carry, all channels
/// together.
pub const MAX_LATENCY_ENTRIES: usize = 2048;
/// Longest `client_version`.
pub const MAX_CLIENT_VERSION_LEN: usize = 64;
/// Longest free-text label (policy, schema name, schema hash, host).
pub const MAX_LABEL_LEN: usize = 128;
/// Largest shared-memory segment a channel may announce (1 TiB).
pub const MAX_SEGMENT_SIZE: u64 = 1 << 40;

/// The transport of a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ChannelKind {
    /// A shared-memory DataBlock segment on the broker's machine (`shm_name` and `size`).
    Shm,
    /// A ZeroMQ PUB socket (`endpoint`).
    Pubsub,
    /// A ZeroMQ REP/ROUTER server (`endpoint`).
    Reqrep,
}

impl ChannelKind {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shm => "shm",
            Self::Pubsub => "pubsub",
            Self::Reqrep => "reqrep",
        }
    }
}

/// How a shared-memory channel's segment is shared (`named` or `memfd`), as
/// `shm::SegmentReport` says it too.
pub use crate::shm::Sharing;

/// What a grant lets its holder do with a memfd channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Role {
    /// Hand the broker the channel's segment (and get back the one it holds for a restarted
    /// producer).
    Produce,
    /// Receive the channel's segment, its data read-only.
    Consume,
}

impl Role {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Produce => "produce",
            Self::Consume => "consume",
        }
    }
}

/// Type information of a channel's frames, compared by consumers before they attach.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schema {
    /// The type name (`"f32[640x480]"`, `"my.Frame"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The schema version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// A hash of the layout, hexadecimal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// Shared-memory channels: the element type of the frames (`u8`, `u16`, `f32`,
    /// `complex64`, `bool`, …; see `shm::ElementType`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub element: Option<String>,
    /// Shared-memory channels: the largest frame shape, 1 to 4 dimensions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<Vec<u64>>,
}

/// What a producer announces when it registers a channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSpec {
    /// The channel's name, unique on the broker.
    pub name: ChannelName,
    /// Its transport.
    pub kind: ChannelKind,
    /// The dialable endpoint (pubsub and reqrep only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<Endpoint>,
    /// The CURVE public key of the channel's server socket (pubsub and reqrep only);
    /// subscribers and clients connect with it as their server key, and refuse a channel
    /// registered without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_key: Option<CurveKey>,
    /// The segment name (shm only).
    /// The segment name (shm channels shared by name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_name: Option<ShmName>,
    /// How a shm channel's segment is shared (absent: `named`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharing: Option<Sharing>,
    /// The segment size in bytes (shm: required), or the largest message (others: optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The buffering policy (`latest`, `double`, `ring:8:block`, …; see `shm::Policy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Frame type information.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Schema>,
    /// Free metadata.
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub metadata: Metadata,
}

/// `register`: a producer announces a channel it serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Register {
    /// The request id, echoed in the reply.
    pub request_id: u64,
    /// The producer's client id.
    pub client: ClientId,
    /// The channel.
    pub channel: ChannelSpec,
    /// The producer's process id, for people reading `list` (not used for liveness).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The producer's host name, for people reading `list`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// `discover`: look up a channel by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Discover {
    /// The request id.
    pub request_id: u64,
    /// The channel.
    pub name: ChannelName,
    /// The asking client, if it has an id (refreshes its liveness).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientId>,
}

/// `unregister`, `attach`, `detach`: a client acts on one channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelRequest {
    /// The request id.
    pub request_id: u64,
    /// The acting client.
    pub client: ClientId,
    /// The channel.
    pub name: ChannelName,
}

/// `heartbeat`: a client says it is alive, optionally with per-channel counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// The request id.
    pub request_id: u64,
    /// The client.
    pub client: ClientId,
    /// Counters per channel it produces or consumes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub channels: BTreeMap<ChannelName, Counters>,
    /// The client library and its version (`labhub-rs/0.1.0`), for people reading metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_version: Option<String>,
    /// The client's process id, matched against the consumer tables of shm segments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Per channel it consumes: the latencies of the frames read since its previous heartbeat.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub latency: BTreeMap<ChannelName, LatencySummary>,
}

/// `grant`: a client asks for a one-time ticket to redeem on the broker's grant socket for a
/// memfd channel's segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    /// The request id.
    pub request_id: u64,
    /// The asking client.
    pub client: ClientId,
    /// The channel.
    pub name: ChannelName,
    /// What the client means to do.
    pub role: Role,
}

/// `list`: every channel, optionally filtered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct List {
    /// The request id.
    pub request_id: u64,
    /// Only channels whose name starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Only channels of this kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ChannelKind>,
}

/// `status`: the broker's own state (audit log, connections, counters); answered by any
/// admitted client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    /// The request id.
    pub request_id: u64,
}

/// A decoded, validated request.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Request {
    /// `register`
    Register(Box<Register>),
    /// `discover`
    Discover(Discover),
    /// `unregister`
    Unregister(ChannelRequest),
    /// `attach`: become a consumer of a channel.
    Attach(ChannelRequest),
    /// `detach`: stop being a consumer.
    Detach(ChannelRequest),
    /// `heartbeat`
    Heartbeat(Heartbeat),
    /// `list`
    List(List),
    /// `status`
    Status(StatusRequest),
    /// `grant`: a ticket for a memfd channel's segment.
    Grant(GrantRequest),
}

impl Request {
    /// The request id.
    pub fn request_id(&self) -> u64 {
        match self {
            Self::Register(r) => r.request_id,
            Self::Discover(r) => r.request_id,
            Self::Unregister(r) | Self::Attach(r) | Self::Detach(r) => r.request_id,
            Self::Heartbeat(r) => r.request_id,
            Self::List(r) => r.request_id,
            Self::Status(r) => r.request_id,
            Self::Grant(r) => r.request_id,
        }
    }

    /// The message type frame.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Register(_) => "register",
            Self::Discover(_) => "discover",
            Self::Unregister(_) => "unregister",
            Self::Attach(_) => "attach",
            Self::Detach(_) => "detach",
            Self::Heartbeat(_) => "heartbeat",
            Self::List(_) => "list",
            Self::Status(_) => "status",
            Self::Grant(_) => "grant",
        }
    }

    /// The client id the request is made by, if any.
    pub fn client(&self) -> Option<&ClientId> {
        match self {
            Self::Register(r) => Some(&r.client),
            Self::Discover(r) => r.client.as_ref(),
            Self::Unregister(r) | Self::Attach(r) | Self::Detach(r) => Some(&r.client),
            Self::Heartbeat(r) => Some(&r.client),
            Self::Grant(r) => Some(&r.client),
            Self::List(_) | Self::Status(_) => None,
        }
    }
}

/// Whether a channel's producer is alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ChannelState {
    /// The producer is alive.
    Up,
    /// The producer is gone; the entry stays while consumers still hold the segment.
    Down,
}

/// A channel as the broker describes it in replies and notifications.
// No deny_unknown_fields: it does not work with `flatten`, and clients should accept fields a
// newer broker of the same major version adds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelInfo {
    /// What the producer registered.
    #[serde(flatten)]
    pub spec: ChannelSpec,
    /// The producer's client id.
    pub producer: ClientId,
    /// The producer's process id, if it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer_pid: Option<u32>,
    /// The producer's host, if it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer_host: Option<String>,
    /// Up or down.
    pub state: ChannelState,
    /// Consumers attached.
    pub consumers: u32,
    /// The counters of the producer's latest heartbeat.
    #[serde(default, skip_serializing_if = "Counters::is_empty")]
    pub counters: Counters,
    /// Memfd channels: who holds a grant now (the producer, and each consumer client), most
    /// recent grant per client and role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<GrantRecord>,
}

/// One grant a broker handed out: to which key and client, for which role, and to which
/// process (the Unix peer's credentials as the kernel gave them, `SO_PEERCRED`, in the
/// broker's namespaces).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRecord {
    /// `produce` or `consume`.
    pub role: Role,
    /// The client id the grant was issued to.
    pub client: ClientId,
    /// Its CURVE public key (Z85).
    pub key: String,
    /// The process that redeemed it.
    pub pid: u32,
    /// Its user id.
    pub uid: u32,
    /// Its group id.
    pub gid: u32,
}

/// A ticket for the grant socket, in a `grant` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantTicket {
    /// 64 hexadecimal digits (32 random bytes): present once on the grant socket.
    pub ticket: String,
    /// The grant socket's path, as the broker binds it.
    pub socket: String,
    /// Milliseconds the ticket stays valid.
    pub expires_ms: u64,
}

/// The error codes of replies (`error_code`), stable across versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// Success (`status` is `ok`).
    None,
    /// Wrong number of frames or an empty frame where one is needed.
    BadFrames,
    /// The first frame is not the protocol tag.
    BadTag,
    /// The version frame is not one this broker speaks.
    UnsupportedVersion,
    /// The type frame names no known message.
    UnknownType,
    /// The message or one of its frames is larger than allowed.
    TooLarge,
    /// The body is not JSON, or not an object.
    MalformedBody,
    /// A field is missing, unknown, of the wrong type or out of bounds.
    InvalidField,
    /// No such channel.
    NotFound,
    /// The channel is registered by another live client.
    AlreadyExists,
    /// The client id or channel belongs to another client or key.
    NotOwner,
    /// The channel's producer is gone.
    ChannelDown,
    /// The channel has as many consumers as it allows.
    ChannelFull,
    /// The broker does not know this client (it restarted, or the client expired): register
    /// and attach again.
    UnknownClient,
    /// The client is not a consumer of the channel.
    NotAttached,
    /// A broker-wide limit (channels, clients) is reached.
    LimitReached,
    /// The broker failed internally; the request may be retried.
    Internal,
    /// The broker's access list does not let this key produce or consume this channel.
    AccessDenied,
    /// A grant ticket is unknown, used, expired, or presented for another channel or role.
    InvalidTicket,
    /// `register` of a memfd channel whose segment this client has not handed to the broker
    /// on the grant socket.
    NoSegment,
}

impl ErrorCode {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::BadFrames => "bad_frames",
            Self::BadTag => "bad_tag",
            Self::UnsupportedVersion => "unsupported_version",
            Self::UnknownType => "unknown_type",
            Self::TooLarge => "too_large",
            Self::MalformedBody => "malformed_body",
            Self::InvalidField => "invalid_field",
            Self::NotFound => "not_found",
            Self::AlreadyExists => "already_exists",
            Self::NotOwner => "not_owner",
            Self::ChannelDown => "channel_down",
            Self::ChannelFull => "channel_full",
            Self::UnknownClient => "unknown_client",
            Self::NotAttached => "not_attached",
            Self::LimitReached => "limit_reached",
            Self::Internal => "internal",
            Self::AccessDenied => "access_denied",
            Self::InvalidTicket => "invalid_ticket",
            Self::NoSegment => "no_segment",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `ok` or `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Status {
    /// The request was carried out.
    Ok,
    /// It was not; see `error_code` and `message`.
    Error,
}

/// The body of every reply (message type `reply`).
// Clients accept unknown fields so that a newer broker of the same major version can add some.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// The request's id, or `null` when the request was too broken to have one.
    pub request_id: Option<u64>,
    /// `ok` or `error`.
    pub status: Status,
    /// `none` on success.
    pub error_code: ErrorCode,
    /// Empty on success; says what was wrong otherwise.
    pub message: String,
    /// `discover`, `attach`: the channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<ChannelInfo>,
    /// `list`: the channels, sorted by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<ChannelInfo>>,
    /// `register`, `attach`, `heartbeat`: how often to send heartbeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval_ms: Option<u64>,
    /// `register`, `attach`, `heartbeat`: how many intervals may pass silently before the
    /// client is declared gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_missed_heartbeats: Option<u32>,
    /// `register` of a pubsub or reqrep channel: the client keys the broker admits, which the
    /// channel's server admits too (empty when `any_key_admitted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admitted_keys: Option<Vec<CurveKey>>,
    /// `register` of a pubsub or reqrep channel: the broker admits every client key, so the
    /// channel's server does too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub any_key_admitted: bool,
    /// `status`: the broker's own state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<BrokerStatus>,
    /// `grant`: the ticket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<GrantTicket>,
}

/// The broker's own state, in a `status` reply.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BrokerStatus {
    /// The audit log.
    pub audit: AuditStatus,
    /// The request socket's connections.
    pub requests: ConnectionStatus,
    /// The notification socket's connections.
    pub notifications: ConnectionStatus,
    /// Handshakes refused by admission (ZAP) since the start.
    pub refused_handshakes: u64,
    /// Requests answered since the start (error replies included).
    pub replies: u64,
    /// Messages the decoder refused since the start.
    pub refused_messages: u64,
    /// Notifications published since the start.
    pub notifications_published: u64,
    /// The broker's open-file limit (`RLIMIT_NOFILE`, soft).
    pub open_files_limit: u64,
}

/// The state of the audit log, in a `status` reply.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AuditStatus {
    /// The file.
    pub path: String,
    /// Whether the last write succeeded.
    pub ok: bool,
    /// The error of the last failed write, while writes fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Writes that failed since the start.
    pub write_errors: u64,
    /// Lines dropped since the start (the backlog of unwritten lines was full).
    pub lines_lost: u64,
    /// Lines waiting to be written.
    pub lines_pending: u64,
}

/// The connections of one broker socket, in a `status` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConnectionStatus {
    /// Connections in their handshake now.
    pub pending: u64,
    /// Authenticated connections now.
    pub authenticated: u64,
    /// Connections accepted since the start.
    pub accepted: u64,
    /// Pending connections shut down to make room for newer ones.
    pub evicted: u64,
    /// Connections shut down for sending more than their budget.
    pub cut: u64,
}

impl Reply {
    /// A bare success reply.
    pub fn ok(request_id: u64) -> Self {
        Self {
            request_id: Some(request_id),
            status: Status::Ok,
            error_code: ErrorCode::None,
            message: String::new(),
            channel: None,
            channels: None,
            heartbeat_interval_ms: None,
            max_missed_heartbeats: None,
            admitted_keys: None,
            any_key_admitted: false,
            broker: None,
            grant: None,
        }
    }

    /// An error reply.
    pub fn error(request_id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            request_id,
            status: Status::Error,
            error_code: code,
            message: message.into(),
            ..Self::ok(0)
        }
    }

    /// Whether the status is `ok`.
    pub fn is_ok(&self) -> bool {
        self.status == Status::Ok
    }
}

/// Why a channel went down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DownReason {
    /// The producer stopped sending heartbeats.
    HeartbeatTimeout,
    /// The producer unregistered it.
    Unregistered,
    /// The producer's process ended (the broker saw it gone before its heartbeats stopped
    /// counting: another client asked for the channel).
    ProcessEnded,
}

/// Why a consumer was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DropReason {
    /// The consumer stopped sending heartbeats.
    HeartbeatTimeout,
    /// The consumer's client ended with its process (its process also produced a channel the
    /// broker saw it gone from).
    ProcessEnded,
}

/// Notifications published on the broker's PUB socket.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Notification {
    /// `channel_up`: a channel was registered (or its producer came back).
    ChannelUp {
        /// The channel.
        channel: Box<ChannelInfo>,
    },
    /// `channel_down`: a channel's producer is gone.
    ChannelDown {
        /// The channel.
        name: ChannelName,
        /// Its producer.
        producer: ClientId,
        /// Why.
        reason: DownReason,
    },
    /// `consumer_dropped`: a consumer went silent and lost its slot; addressed to the producer.
    ConsumerDropped {
        /// The channel.
        name: ChannelName,
        /// Its producer (who should release the consumer's slot).
        producer: ClientId,
        /// The consumer that went silent.
        consumer: ClientId,
        /// Why.
        reason: DropReason,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ChannelUpBody {
    pub seq: u64,
    pub channel: ChannelInfo,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ChannelDownBody {
    pub seq: u64,
    pub name: ChannelName,
    pub producer: ClientId,
    pub reason: DownReason,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConsumerDroppedBody {
    pub seq: u64,
    pub name: ChannelName,
    pub producer: ClientId,
    pub consumer: ClientId,
    pub reason: DropReason,
}

impl Notification {
    /// The message type frame.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::ChannelUp { .. } => "channel_up",
            Self::ChannelDown { .. } => "channel_down",
            Self::ConsumerDropped { .. } => "consumer_dropped",
        }
    }
}
