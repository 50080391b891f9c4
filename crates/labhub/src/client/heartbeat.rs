//! Per-channel counters that the client's heartbeat carries to the broker.
#![deny(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::Weak;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::protocol::{ChannelName, Counters, MAX_HEARTBEAT_CHANNELS};

/// Counters of one channel end (a producer or a consumer of this client), updated by the
/// channel object and read by the heartbeat.
#[derive(Debug, Default)]
pub struct ChannelCounters {
    /// Frames published (the producer's next frame id).
    pub published: AtomicU64,
    /// Publish attempts that failed (full ring, timeout).
    pub publish_failures: AtomicU64,
    /// Frames consumed.
    pub consumed: AtomicU64,
    /// Frames the consumer missed (overwritten before it read them).
    pub missed: AtomicU64,
    /// Times the consumer re-attached (producer restarted on a new segment, or eviction).
    pub reattached: AtomicU64,
}

/// Which end of a channel this client holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Producer,
    Consumer,
}

impl ChannelCounters {
    /// The counters as the heartbeat reports them.
    pub(crate) fn snapshot(&self, role: Role) -> Counters {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut c = Counters::new();
        match role {
            Role::Producer => {
                c.insert("frames_published".into(), get(&self.published));
                c.insert("publish_failures".into(), get(&self.publish_failures));
            }
            Role::Consumer => {
                c.insert("frames_consumed".into(), get(&self.consumed));
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
pub(crate) fn collect(tracked: &mut BTreeMap<u64, Tracked>) -> BTreeMap<ChannelName, Counters> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_heartbeat_reports_live_ends_and_prefers_the_producer_of_a_channel() {
        let p = Arc::new(ChannelCounters::default());
        p.published.store(7, Ordering::Relaxed);
        let c = Arc::new(ChannelCounters::default());
        c.consumed.store(3, Ordering::Relaxed);
        let gone = Arc::new(ChannelCounters::default());
        let name = |s: &str| ChannelName::new(s).unwrap();
        let t = |n: &str, role, c: &Arc<ChannelCounters>| Tracked {
            name: name(n),
            role,
            counters: Arc::downgrade(c),
        };
        let mut tracked = BTreeMap::new();
        tracked.insert(1, t("a", Role::Consumer, &c));
        tracked.insert(2, t("a", Role::Producer, &p));
        tracked.insert(3, t("b", Role::Consumer, &c));
        tracked.insert(4, t("z", Role::Consumer, &gone));
        drop(gone);
        let out = collect(&mut tracked);
        assert_eq!(out.len(), 2);
        assert_eq!(out[&name("a")]["frames_published"], 7);
        assert_eq!(out[&name("b")]["frames_consumed"], 3);
        assert_eq!(tracked.len(), 3, "the dropped end is forgotten");
        // Every counter name passes the broker's validation.
        for counters in out.values() {
            for key in counters.keys() {
                assert!(
                    key.chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
                );
            }
        }
    }
}
