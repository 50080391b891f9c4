//! The figures the metrics read from a channel's shared-memory segment header: size, commit
//! position, losses, and each consumer's position. Read on the metrics thread, never the
//! broker's; a segment another process wrote is validated by shm before any field is used.
#![deny(unsafe_code)]

use std::sync::atomic::Ordering;

use crate::protocol::{ChannelName, ShmName};
use crate::shm::{self, layout};

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
    /// `(pid, next frame id it needs)` of every consumer-table entry in use.
    pub consumers: Vec<(u32, u64)>,
}

/// Reads channel `channel`'s segment, if it is this user's (`shm_name` is the name the broker's
/// own namespace gives the channel) and carries a valid header of this layout version.
pub(super) fn read(channel: &ChannelName, shm_name: &ShmName) -> Option<SegmentFigures> {
    if shm::os_name(channel.as_str()).ok()? != shm_name.as_str() {
        return None;
    }
    let seg = shm::segment::Segment::open(channel.as_str()).ok()??;
    let header = layout::View::raw_header(&seg).ok()?;
    let (magic, version) = layout::load_magic(header);
    if magic != layout::MAGIC || version != layout::LAYOUT_VERSION {
        return None;
    }
    let view = layout::View::attach(seg).ok()?;
    let h = view.header();
    let consumers = (0..layout::CONSUMER_CAPACITY as usize)
        .map_while(|i| view.consumer(i))
        .filter_map(|e| {
            let state = e.state.load(Ordering::Acquire);
            let pid = (state & 0xffff_ffff) as u32;
            (state >> 32 == layout::consumer_state::ACTIVE && pid != 0)
                .then(|| (pid, e.position.load(Ordering::Relaxed)))
        })
        .collect();
    Some(SegmentFigures {
        size: h.total_size,
        published: h.commit_pos.load(Ordering::Acquire),
        dropped: h.dropped.load(Ordering::Relaxed),
        overwritten: h.overwritten.load(Ordering::Relaxed),
        consumers,
    })
}
