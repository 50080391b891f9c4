//! Reading a shared-memory channel's header directly (no broker, no attach): geometry,
//! policy, counters and the consumer table, for `info` and `ls`.

use std::sync::atomic::Ordering;

use labhub::shm::layout::{self, backpressure_code, consumer_state, policy_code};
use labhub::shm::segment::Segment;
use serde::Serialize;

/// One consumer-table entry in use.
#[derive(Debug, Clone, Serialize)]
pub struct ConsumerSlot {
    /// Table index.
    pub index: usize,
    /// The consumer's process id.
    pub pid: u32,
    /// `active` or `claiming`.
    pub state: &'static str,
    /// The next frame id it needs.
    pub position: u64,
    /// Frames it read.
    pub received: u64,
    /// Frames it lost to overwrites.
    pub missed: u64,
    /// The frame id it holds now (reads in place), if any.
    pub held: Option<u64>,
}

/// What the segment header says.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentReport {
    /// The segment's OS name.
    pub shm_name: String,
    /// Mapped size in bytes.
    pub total_size: u64,
    /// `latest`, `double`, `ring:N:rule`.
    pub policy: String,
    /// Number of slots.
    pub slots: u32,
    /// Bytes per slot.
    pub slot_size: u64,
    /// Flexible-zone capacity.
    pub flex_size: u64,
    /// Frames committed.
    pub published: u64,
    /// Frames lost to backpressure.
    pub dropped: u64,
    /// Frames consumers lost to overwrites.
    pub overwritten: u64,
    /// The producer's pid, 0 when none.
    pub producer_pid: u64,
    /// Consumers in the table.
    pub consumers: Vec<ConsumerSlot>,
}

fn policy_name(policy: u32, backpressure: u32, slots: u32) -> String {
    match policy {
        policy_code::LATEST => "latest".into(),
        policy_code::DOUBLE_BUFFER => "double".into(),
        policy_code::RING => {
            let rule = match backpressure {
                backpressure_code::BLOCK => "block",
                backpressure_code::FAIL => "fail",
                backpressure_code::DROP_OLDEST => "drop-oldest",
                _ => "unknown",
            };
            format!("ring:{slots}:{rule}")
        }
        other => format!("unknown({other})"),
    }
}

/// Reads channel `name`'s header; `None` if this user has no such segment or it is not ready.
pub fn read(name: &str) -> Option<SegmentReport> {
    let seg = Segment::open(name).ok()??;
    let header = layout::View::raw_header(&seg).ok()?;
    let (magic, version) = layout::load_magic(header);
    if magic != layout::MAGIC || version != layout::LAYOUT_VERSION {
        return None;
    }
    let view = layout::View::attach(seg).ok()?;
    let h = view.header();
    let mut consumers = Vec::new();
    for index in 0..layout::CONSUMER_CAPACITY as usize {
        let Some(e) = view.consumer(index) else { break };
        let state = e.state.load(Ordering::Acquire);
        if state == consumer_state::FREE {
            continue;
        }
        consumers.push(ConsumerSlot {
            index,
            pid: (state & 0xffff_ffff) as u32,
            state: if state >> 32 == consumer_state::ACTIVE {
                "active"
            } else {
                "claiming"
            },
            position: e.position.load(Ordering::Relaxed),
            received: e.received.load(Ordering::Relaxed),
            missed: e.missed.load(Ordering::Relaxed),
            held: e.held.load(Ordering::Relaxed).checked_sub(1),
        });
    }
    Some(SegmentReport {
        shm_name: labhub::shm::os_name(name).ok()?,
        total_size: h.total_size,
        policy: policy_name(h.policy, h.backpressure, h.slot_count),
        slots: h.slot_count,
        slot_size: h.slot_size,
        flex_size: h.flex_size,
        // Frame ids below the commit position were each committed once (since layout v3).
        published: h.commit_pos.load(Ordering::Acquire),
        dropped: h.dropped.load(Ordering::Relaxed),
        overwritten: h.overwritten.load(Ordering::Relaxed),
        producer_pid: h.producer_pid.load(Ordering::Acquire),
        consumers,
    })
}
