//! What the client's heartbeat carries to the broker besides liveness: per-channel counters,
//! the latencies its consumers measured since the previous heartbeat, its version and pid.
//!
//! The broker turns these into its metrics (frames/s, MB/s, latency, drops) without touching
//! the data path.
#![deny(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Weak};

use crate::latency::{Histogram, LatencyRecorder, LatencySummary};
use crate::protocol::{
    ChannelName, ClientId, Counters, Heartbeat, MAX_HEARTBEAT_CHANNELS, MAX_LATENCY_ENTRIES,
    MAX_MESSAGE_BYTES,
};

/// The `client_version` this library reports.
pub const CLIENT_VERSION: &str = concat!("labhub-rs/", env!("CARGO_PKG_VERSION"));

/// Room left in a heartbeat for the frames around its body.
const ENVELOPE_BYTES: usize = 64;

/// Counters of one channel end (a producer or a consumer of this client), updated by the
/// channel object and read by the heartbeat.
#[derive(Debug, Default)]
pub struct ChannelCounters {
    /// Frames published (the producer's next frame id).
    pub published: AtomicU64,
    /// Publish attempts that failed (full ring, timeout).
    pub publish_failures: AtomicU64,
    /// Bytes of the frames published by copy.
    pub bytes_published: AtomicU64,
    /// Frames consumed.
    pub consumed: AtomicU64,
    /// Bytes of the frames consumed.
    pub bytes_consumed: AtomicU64,
    /// Frames the consumer missed (overwritten before it read them).
    pub missed: AtomicU64,
    /// Times the consumer re-attached (producer restarted on a new segment, or eviction).
    pub reattached: AtomicU64,
    /// Latency (frame timestamp to read) of every frame consumed with a timestamp.
    latency: LatencyRecorder,
    /// The latency counts as last reported, so each heartbeat carries what was added since.
    latency_reported: Mutex<Option<Box<Histogram>>>,
}

/// Which end of a channel this client holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Producer,
    Consumer,
}

impl ChannelCounters {
    /// Counts a frame consumed: `bytes` long, stamped `timestamp_ns` (Unix ns; 0 or a time
    /// after now counts no latency).
    #[inline]
    pub fn record_consumed(&self, bytes: usize, timestamp_ns: u64) {
        self.consumed.fetch_add(1, Ordering::Relaxed);
        self.bytes_consumed
            .fetch_add(bytes as u64, Ordering::Relaxed);
        if timestamp_ns != 0
            && let Some(latency) = crate::sys::realtime_ns().checked_sub(timestamp_ns)
        {
            self.latency.record(latency);
        }
    }

    /// The latency counts so far.
    pub fn latency(&self) -> Histogram {
        self.latency.load()
    }

    /// The counters as the heartbeat reports them.
    pub(crate) fn snapshot(&self, role: Role) -> Counters {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut c = Counters::new();
        match role {
            Role::Producer => {
                c.insert("frames_published".into(), get(&self.published));
                c.insert("bytes_published".into(), get(&self.bytes_published));
                c.insert("publish_failures".into(), get(&self.publish_failures));
            }
            Role::Consumer => {
                c.insert("frames_consumed".into(), get(&self.consumed));
                c.insert("bytes_consumed".into(), get(&self.bytes_consumed));
                c.insert("frames_missed".into(), get(&self.missed));
                c.insert("reattached".into(), get(&self.reattached));
            }
        }
        c
    }
}

/// One channel end the heartbeat reports.
#[derive(Debug)]
pub(crate) struct Tracked {
    pub name: ChannelName,
    pub role: Role,
    pub counters: Weak<ChannelCounters>,
}

/// The channels part of a heartbeat: producers first (the broker records those), at most
/// [`MAX_HEARTBEAT_CHANNELS`], dropping ends whose channel object is gone.
fn collect(tracked: &mut BTreeMap<u64, Tracked>) -> BTreeMap<ChannelName, Counters> {
    tracked.retain(|_, t| t.counters.strong_count() > 0);
    let mut out = BTreeMap::new();
    for want in [Role::Producer, Role::Consumer] {
        for Tracked {
            name,
            role,
            counters,
        } in tracked.values()
        {
            if *role != want || out.contains_key(name) || out.len() >= MAX_HEARTBEAT_CHANNELS {
                continue;
            }
            if let Some(c) = counters.upgrade() {
                out.insert(name.clone(), c.snapshot(*role));
            }
        }
    }
    out
}

/// A consumer's latency counts now, to be marked reported once the heartbeat carries them.
struct Pending {
    counters: std::sync::Arc<ChannelCounters>,
    now: Histogram,
}

/// The latencies added since the last report, per consumed channel, within
/// [`MAX_HEARTBEAT_CHANNELS`] channels and [`MAX_LATENCY_ENTRIES`] bucket entries; a channel left
/// out keeps its counts for the next heartbeat.
fn collect_latency(
    tracked: &BTreeMap<u64, Tracked>,
) -> (BTreeMap<ChannelName, LatencySummary>, Vec<Pending>) {
    let mut merged: BTreeMap<ChannelName, Histogram> = BTreeMap::new();
    let mut pending = Vec::new();
    let mut entries = 0usize;
    let empty = Histogram::new();
    for t in tracked.values().filter(|t| t.role == Role::Consumer) {
        let Some(counters) = t.counters.upgrade() else {
            continue;
        };
        let now = counters.latency();
        let delta = {
            let reported = counters
                .latency_reported
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            now.since(reported.as_deref().unwrap_or(&empty))
        };
        if delta.is_empty() {
            continue;
        }
        let fresh = !merged.contains_key(&t.name);
        if entries + delta.buckets.len() > MAX_LATENCY_ENTRIES
            || (fresh && merged.len() >= MAX_HEARTBEAT_CHANNELS)
        {
            continue;
        }
        entries += delta.buckets.len();
        merged
            .entry(t.name.clone())
            .or_default()
            .add_summary(&delta);
        pending.push(Pending { counters, now });
    }
    let summaries = merged
        .into_iter()
        .map(|(name, h)| (name, h.since(&empty)))
        .collect();
    (summaries, pending)
}

/// The heartbeat for this client's tracked channel ends. Its latency part is left out when the
/// whole would exceed [`MAX_MESSAGE_BYTES`] (those counts then go with a later heartbeat).
pub(crate) fn build(
    request_id: u64,
    client: ClientId,
    tracked: &mut BTreeMap<u64, Tracked>,
) -> Heartbeat {
    let channels = collect(tracked);
    let (latency, pending) = collect_latency(tracked);
    let mut heartbeat = Heartbeat {
        request_id,
        client,
        channels,
        client_version: Some(CLIENT_VERSION.to_owned()),
        pid: Some(std::process::id()),
        latency,
    };
    let size = serde_json::to_vec(&heartbeat).map_or(usize::MAX, |body| body.len());
    if size + ENVELOPE_BYTES > MAX_MESSAGE_BYTES {
        heartbeat.latency.clear();
        return heartbeat;
    }
    for Pending { counters, now } in pending {
        let mut reported = counters
            .latency_reported
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *reported = Some(Box::new(now));
    }
    heartbeat
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn name(s: &str) -> ChannelName {
        ChannelName::new(s).unwrap()
    }

    fn track(n: &str, role: Role, c: &Arc<ChannelCounters>) -> Tracked {
        Tracked {
            name: name(n),
            role,
            counters: Arc::downgrade(c),
        }
    }

    #[test]
    fn a_heartbeat_reports_live_ends_and_prefers_the_producer_of_a_channel() {
        let p = Arc::new(ChannelCounters::default());
        p.published.store(7, Ordering::Relaxed);
        let c = Arc::new(ChannelCounters::default());
        c.consumed.store(3, Ordering::Relaxed);
        let gone = Arc::new(ChannelCounters::default());
        let mut tracked = BTreeMap::new();
        tracked.insert(1, track("a", Role::Consumer, &c));
        tracked.insert(2, track("a", Role::Producer, &p));
        tracked.insert(3, track("b", Role::Consumer, &c));
        tracked.insert(4, track("z", Role::Consumer, &gone));
        drop(gone);
        let client = ClientId::new("me").unwrap();
        let hb = build(1, client, &mut tracked);
        let out = &hb.channels;
        assert_eq!(out.len(), 2);
        assert_eq!(out[&name("a")]["frames_published"], 7);
        assert_eq!(out[&name("b")]["frames_consumed"], 3);
        assert_eq!(tracked.len(), 3, "the dropped end is forgotten");
        assert_eq!(hb.client_version.as_deref(), Some(CLIENT_VERSION));
        assert_eq!(hb.pid, Some(std::process::id()));
        // The whole heartbeat passes the broker's validation.
        let frames = crate::protocol::encode_request(&crate::protocol::Request::Heartbeat(hb));
        crate::protocol::decode_request(&frames).outcome.unwrap();
    }

    #[test]
    fn each_heartbeat_carries_the_latencies_added_since_the_previous_one() {
        let c = Arc::new(ChannelCounters::default());
        let mut tracked = BTreeMap::new();
        tracked.insert(1, track("cam", Role::Consumer, &c));
        let client = ClientId::new("me").unwrap();
        let now = crate::sys::realtime_ns();
        c.record_consumed(10, now - 5_000_000);
        c.record_consumed(10, now - 5_000_000);
        c.record_consumed(10, 0);
        let first = build(1, client.clone(), &mut tracked);
        assert_eq!(first.latency[&name("cam")].count(), 2);
        assert_eq!(first.channels[&name("cam")]["bytes_consumed"], 30);
        let second = build(2, client.clone(), &mut tracked);
        assert!(second.latency.is_empty(), "nothing new: {second:?}");
        c.record_consumed(10, now - 1_000);
        let third = build(3, client, &mut tracked);
        assert_eq!(third.latency[&name("cam")].count(), 1);
    }

    #[test]
    fn latency_beyond_the_entry_limit_waits_for_a_later_heartbeat() {
        let client = ClientId::new("me").unwrap();
        let mut tracked = BTreeMap::new();
        let mut all = Vec::new();
        // 40 consumers with 100 distinct buckets each: 4000 entries, more than one heartbeat takes.
        for i in 0..40u64 {
            let c = Arc::new(ChannelCounters::default());
            for b in 1..=100usize {
                c.latency.record(crate::latency::lower_bound_ns(b));
            }
            tracked.insert(i, track(&format!("ch{i}"), Role::Consumer, &c));
            all.push(c);
        }
        let mut total = 0;
        for id in 0..3 {
            let hb = build(id, client.clone(), &mut tracked);
            let entries: usize = hb.latency.values().map(|s| s.buckets.len()).sum();
            assert!(entries <= MAX_LATENCY_ENTRIES);
            let frames =
                crate::protocol::encode_request(&crate::protocol::Request::Heartbeat(hb.clone()));
            crate::protocol::decode_request(&frames).outcome.unwrap();
            total += hb.latency.values().map(LatencySummary::count).sum::<u64>();
        }
        assert_eq!(total, 40 * 100, "every count is reported exactly once");
    }
}
