//! One sample of the broker's figures, as `/api/sample`, the monitor's event stream and
//! `labhub top --json` carry it (JSON; every field documented in `docs/PROTOCOL.md` §10).
//!
//! Rates are per second over the interval between a client's last two heartbeats; latencies
//! are the frames read in the consumer's last heartbeat interval (frame timestamp to read).
//! A figure nobody reported is absent (`null` when read by other tools), never a made-up 0.
#![deny(unsafe_code)]

use serde::{Deserialize, Serialize};

/// The whole picture at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// When the broker took it, in ms since the Unix epoch.
    pub time_unix_ms: u64,
    /// The broker's own figures.
    pub broker: BrokerSample,
    /// Every channel the broker holds, and channels gone in the last minute, by name.
    pub channels: Vec<ChannelSample>,
    /// Every live client, by id.
    pub clients: Vec<ClientSample>,
}

/// The broker's own figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BrokerSample {
    /// Channels registered (up and down).
    pub channels: u64,
    /// Live clients.
    pub clients: u64,
    /// Requests answered since start.
    pub replies: u64,
    /// Messages refused by the decoder since start.
    pub refused_messages: u64,
    /// Notifications published since start.
    pub notifications: u64,
    /// The heartbeat interval clients are told, in ms.
    pub heartbeat_interval_ms: u64,
    /// Seconds since the broker started.
    pub uptime_s: f64,
}

/// Whether a channel's producer is alive, as the monitor shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ChannelStatus {
    /// The producer is alive.
    #[default]
    Up,
    /// The producer is gone; consumers still hold the channel.
    Down,
    /// The broker removed the channel (kept in samples for a minute so people see it go).
    Gone,
}

/// One channel.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChannelSample {
    /// The channel name.
    pub name: String,
    /// `shm`, `pubsub` or `reqrep`.
    pub kind: String,
    /// Up, down or gone.
    pub state: ChannelStatus,
    /// The producer's client id.
    pub producer: String,
    /// The producer's process id, if it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer_pid: Option<u32>,
    /// The producer's host, if it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer_host: Option<String>,
    /// The producer's client version (from its heartbeats).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer_version: Option<String>,
    /// Seconds since the producer's last heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer_heartbeat_age_s: Option<f64>,
    /// The registered policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The segment's size in bytes (shm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_bytes: Option<u64>,
    /// Frames published since the channel was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames_total: Option<u64>,
    /// Bytes published (frames published by copy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<u64>,
    /// Frames published per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames_per_s: Option<f64>,
    /// MB (10^6 bytes) published per second; the fastest consumer's when the producer does not
    /// count bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mb_per_s: Option<f64>,
    /// Publish attempts that failed (full ring, timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_failures: Option<u64>,
    /// Frames lost to backpressure (shm segment header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<u64>,
    /// Frames consumers lost to overwrites (shm segment header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overwritten: Option<u64>,
    /// Mean latency over all consumers' last interval, µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_mean_us: Option<f64>,
    /// 99th percentile latency over all consumers' last interval, µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p99_us: Option<f64>,
    /// The largest lag of a consumer, in frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lag_frames: Option<u64>,
    /// Its consumers: the attached clients, then consumer-table entries of processes that are
    /// not attached clients.
    #[serde(default)]
    pub consumers: Vec<ConsumerSample>,
}

/// One consumer of a channel.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConsumerSample {
    /// Its client id; absent for a segment reader the broker does not know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// Its process id (from its heartbeat or the segment's consumer table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Its client version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Seconds since its last heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_age_s: Option<f64>,
    /// Frames it read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames_total: Option<u64>,
    /// Frames it read per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames_per_s: Option<f64>,
    /// MB it read per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mb_per_s: Option<f64>,
    /// Frames it lost to overwrites.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed: Option<u64>,
    /// Times it re-attached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reattached: Option<u64>,
    /// Frames committed that it has not read yet (shm consumer table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_frames: Option<u64>,
    /// Mean latency in its last interval, µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_mean_us: Option<f64>,
    /// 99th percentile latency in its last interval, µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p99_us: Option<f64>,
}

/// One live client.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientSample {
    /// Its id.
    pub id: String,
    /// Its client version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Its process id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Seconds since its last heartbeat; absent when it sent none yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_age_s: Option<f64>,
    /// Channels it produces.
    #[serde(default)]
    pub produces: Vec<String>,
    /// Channels it consumes.
    #[serde(default)]
    pub consumes: Vec<String>,
}

/// One point of a channel's rate history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct HistoryPoint {
    /// When, in ms since the Unix epoch.
    pub t: u64,
    /// Frames per second then (absent: not known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fps: Option<f64>,
    /// MB per second then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mbps: Option<f64>,
}
