//! The broker thread's side of the metrics: what heartbeats report, kept per client and
//! channel end, and a [`Snapshot`] handed to the metrics thread at a bounded rate.
//!
//! Everything here runs on the broker's ZeroMQ thread, so it only copies and adds numbers:
//! no I/O, no lock held longer than a pointer swap.
#![deny(unsafe_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::broker::registry::Registry;
use crate::broker::server::BrokerStats;
use crate::latency::Histogram;
use crate::protocol::{ChannelInfo, ChannelName, ClientId, Counters, Heartbeat};
use crate::shm::MemfdPair;

use super::Shared;

/// Heartbeats closer together than this do not start a new rate interval (a client sending
/// two at once would otherwise give a rate over microseconds).
const MIN_RATE_SPAN: Duration = Duration::from_millis(20);

/// What the broker thread knows of one channel end from its heartbeats.
#[derive(Debug)]
struct EndFeed {
    counters: Counters,
    at: Instant,
    /// Where the current rate interval started: time, frames, bytes.
    base: (Instant, Option<u64>, Option<u64>),
    frames_per_s: Option<f64>,
    bytes_per_s: Option<f64>,
    /// The latencies of the last heartbeat.
    window: Option<Box<Histogram>>,
}

/// The frame and byte counters of an end, whichever role it has.
fn frames_and_bytes(c: &Counters) -> (Option<u64>, Option<u64>) {
    let get = |a: &str, b: &str| c.get(a).or_else(|| c.get(b)).copied();
    (
        get("frames_published", "frames_consumed"),
        get("bytes_published", "bytes_consumed"),
    )
}

fn rate(now: Option<u64>, then: Option<u64>, seconds: f64) -> Option<f64> {
    // A counter that went backwards was reset (the end was recreated): no rate this time.
    now?.checked_sub(then?).map(|d| d as f64 / seconds)
}

#[derive(Debug)]
struct ClientFeed {
    version: Option<String>,
    pid: Option<u32>,
    last_heartbeat: Instant,
    ends: HashMap<ChannelName, EndFeed>,
}

/// One channel end in a snapshot.
#[derive(Debug, Clone)]
pub(super) struct EndSnap {
    pub counters: Counters,
    pub age: Duration,
    pub frames_per_s: Option<f64>,
    pub bytes_per_s: Option<f64>,
    pub window: Option<Box<Histogram>>,
}

/// One client in a snapshot.
#[derive(Debug, Clone)]
pub(super) struct ClientSnap {
    pub version: Option<String>,
    pub pid: Option<u32>,
    pub heartbeat_age: Option<Duration>,
    pub ends: HashMap<ChannelName, EndSnap>,
}

/// One channel in a snapshot.
#[derive(Debug, Clone)]
pub(super) struct ChannelSnap {
    pub info: ChannelInfo,
    pub consumers: Vec<ClientId>,
    /// Every latency its consumers reported since the broker started.
    pub latency_total: Option<Box<Histogram>>,
}

/// The registry and the heartbeat figures at one moment.
#[derive(Debug, Clone)]
pub(super) struct Snapshot {
    pub taken: Instant,
    pub time_unix_ms: u64,
    pub uptime: Duration,
    pub heartbeat_interval: Duration,
    pub stats: BrokerStats,
    pub channels: Vec<ChannelSnap>,
    pub clients: HashMap<ClientId, ClientSnap>,
    /// The segments of broker-granted (memfd) channels, which have no name to open.
    pub memfds: HashMap<ChannelName, Arc<MemfdPair>>,
}

/// The broker thread's metrics state. See the module documentation.
#[derive(Debug)]
pub(super) struct Feed {
    shared: Arc<Shared>,
    clients: HashMap<ClientId, ClientFeed>,
    channel_latency: HashMap<ChannelName, Box<Histogram>>,
    started: Instant,
    interval: Duration,
    next_publish: Instant,
}

impl Feed {
    pub fn new(shared: Arc<Shared>, interval: Duration) -> Self {
        let now = Instant::now();
        Self {
            shared,
            clients: HashMap::new(),
            channel_latency: HashMap::new(),
            started: now,
            interval,
            next_publish: now,
        }
    }

    /// Takes in a heartbeat the registry accepted.
    pub fn heartbeat(&mut self, now: Instant, h: &Heartbeat) {
        let client = self
            .clients
            .entry(h.client.clone())
            .or_insert_with(|| ClientFeed {
                version: None,
                pid: None,
                last_heartbeat: now,
                ends: HashMap::new(),
            });
        client.last_heartbeat = now;
        client.pid = h.pid;
        if client.version != h.client_version {
            client.version.clone_from(&h.client_version);
        }
        // Each heartbeat lists all of the client's ends: forget the ones it no longer reports.
        client.ends.retain(|name, _| h.channels.contains_key(name));
        for (name, counters) in &h.channels {
            let (frames, bytes) = frames_and_bytes(counters);
            let window = h.latency.get(name).map(|summary| {
                let mut w = Box::new(Histogram::new());
                w.add_summary(summary);
                w
            });
            match client.ends.get_mut(name) {
                Some(end) => {
                    let span = now.saturating_duration_since(end.base.0);
                    if span >= MIN_RATE_SPAN {
                        let seconds = span.as_secs_f64();
                        end.frames_per_s = rate(frames, end.base.1, seconds);
                        end.bytes_per_s = rate(bytes, end.base.2, seconds);
                        end.base = (now, frames, bytes);
                    }
                    end.counters.clone_from(counters);
                    end.at = now;
                    end.window = window;
                }
                None => {
                    client.ends.insert(
                        name.clone(),
                        EndFeed {
                            counters: counters.clone(),
                            at: now,
                            base: (now, frames, bytes),
                            frames_per_s: None,
                            bytes_per_s: None,
                            window,
                        },
                    );
                }
            }
        }
        for (name, summary) in &h.latency {
            if client.ends.contains_key(name) {
                self.channel_latency
                    .entry(name.clone())
                    .or_default()
                    .add_summary(summary);
            }
        }
    }

    /// Hands a snapshot to the metrics thread when one is due (at most once per interval).
    pub fn publish_if_due(
        &mut self,
        now: Instant,
        registry: &Registry,
        stats: BrokerStats,
        memfds: impl FnOnce() -> HashMap<ChannelName, Arc<MemfdPair>>,
    ) {
        if now < self.next_publish {
            return;
        }
        self.next_publish = now + self.interval;
        // Forget what the registry forgot, so the feed never outgrows it.
        self.clients
            .retain(|id, _| registry.knows_client(id.as_str()));
        self.channel_latency
            .retain(|name, _| registry.channel(name.as_str()).is_some());
        let channels = registry
            .channels_with_consumers()
            .map(|(info, consumers)| ChannelSnap {
                latency_total: self.channel_latency.get(&info.spec.name).cloned(),
                info,
                consumers,
            })
            .collect();
        let mut clients: HashMap<ClientId, ClientSnap> = registry
            .client_ids()
            .map(|id| {
                (
                    id.clone(),
                    ClientSnap {
                        version: None,
                        pid: None,
                        heartbeat_age: None,
                        ends: HashMap::new(),
                    },
                )
            })
            .collect();
        for (id, feed) in &self.clients {
            let Some(snap) = clients.get_mut(id) else {
                continue;
            };
            snap.version.clone_from(&feed.version);
            snap.pid = feed.pid;
            snap.heartbeat_age = Some(now.saturating_duration_since(feed.last_heartbeat));
            snap.ends = feed
                .ends
                .iter()
                .map(|(name, end)| {
                    (
                        name.clone(),
                        EndSnap {
                            counters: end.counters.clone(),
                            age: now.saturating_duration_since(end.at),
                            frames_per_s: end.frames_per_s,
                            bytes_per_s: end.bytes_per_s,
                            window: end.window.clone(),
                        },
                    )
                })
                .collect();
        }
        let snapshot = Snapshot {
            taken: now,
            time_unix_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            uptime: now.saturating_duration_since(self.started),
            heartbeat_interval: registry.config().heartbeat_interval,
            stats,
            channels,
            clients,
            memfds: memfds(),
        };
        self.shared.offer(snapshot);
    }
}
