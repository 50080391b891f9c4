//! The figures the metrics read from a channel's shared-memory segment header: size, commit
//! position, losses, and each consumer's position. Read on the metrics thread, never the
//! broker's, through shm's one inspection API, which validates a segment another process wrote
//! before any field is used.
#![deny(unsafe_code)]

use crate::protocol::{ChannelName, ShmName};
use crate::shm::{self, MemfdPair};

/// What a segment header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SegmentFigures {
    /// Mapped size in bytes.
    pub size: u64,
    /// Frames committed (the commit position).
    pub published: u64,
    /// Frames lost to backpressure.
    pub dropped: u64,
    /// Frames consumers lost to overwrites.
    pub overwritten: u64,
    /// `(pid, lowest frame id it still needs)` of every active consumer-table entry.
    pub consumers: Vec<(u32, u64)>,
}

/// Where a channel's segment is found.
#[derive(Debug, Clone, Copy)]
pub(super) enum Source<'a> {
    /// A named segment (`shm_name` is the name the broker's own namespace gives the channel).
    Named(&'a ShmName),
    /// A broker-granted channel: the memfds the broker holds.
    Memfd(&'a MemfdPair),
}

/// Reads channel `channel`'s segment through shm's inspection API: a named segment only if it
/// is this user's, a memfd through a duplicate of the broker's descriptors.
pub(super) fn read(channel: &ChannelName, source: Source<'_>) -> Option<SegmentFigures> {
    let report = match source {
        Source::Named(shm_name) => {
            if channel.segment_name() != shm_name.as_str() {
                return None;
            }
            shm::inspect(channel.as_str()).ok()?
        }
        Source::Memfd(pair) => shm::inspect_memfd(channel, pair.try_clone().ok()?).ok()?,
    };
    let consumers = report
        .consumers
        .iter()
        .filter(|c| c.state == "active")
        .map(|c| (c.pid, c.position))
        .collect();
    Some(SegmentFigures {
        size: report.total_size,
        published: report.published,
        dropped: report.dropped,
        overwritten: report.overwritten,
        consumers,
    })
}
