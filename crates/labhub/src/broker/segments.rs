//! Segment cleanup: the broker unlinks a channel's shared-memory segment once nobody holds it
//! (review item 1.3: producers never unlink), and at start reaps the stale segments of its own
//! namespace (`/labhub.<uid>.*`) whose producer and consumers are all dead.
//!
//! The broker never maps a segment for data; it only reads the header's producer identity and
//! consumer table to decide whether a segment is still held. A segment whose producer process
//! is alive is never unlinked, even if the producer went silent on the control plane: removal
//! is retried until that process is gone.
#![deny(unsafe_code)]

use std::sync::atomic::Ordering;

use crate::shm::{self, layout};
use crate::sys;

/// What a removal attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Removal {
    /// The segment was unlinked.
    Removed,
    /// There was no such segment.
    Absent,
    /// A process still holds it; try again later.
    Held(&'static str),
    /// The segment belongs to another user's namespace; the broker leaves it alone.
    ForeignNamespace,
    /// The attempt failed.
    Failed(String),
}

impl Removal {
    /// The audit spelling.
    pub fn describe(&self) -> String {
        match self {
            Self::Removed => "removed".into(),
            Self::Absent => "absent".into(),
            Self::Held(who) => format!("deferred: {who}"),
            Self::ForeignNamespace => "skipped: another user's namespace".into(),
            Self::Failed(e) => format!("failed: {e}"),
        }
    }
}

/// Who still holds a segment, judged from its header.
fn holder(channel: &str) -> Result<Option<&'static str>, shm::ChannelError> {
    let Some(seg) = shm::segment::Segment::open(channel)? else {
        // Size 0: a creator between create and truncate. Leave it to that creator.
        return Ok(Some("being created"));
    };
    let Ok(header) = layout::View::raw_header(&seg) else {
        return Ok(None);
    };
    let pid = header.producer_pid.load(Ordering::Acquire);
    let start_time = header.producer_start_time.load(Ordering::Acquire);
    if let Ok(pid) = u32::try_from(pid)
        && pid != 0
        && (sys::ProcessId { pid, start_time }).is_alive()
    {
        return Ok(Some("its producer process is alive"));
    }
    if header.magic.load(Ordering::Acquire) != layout::MAGIC {
        return Ok(None);
    }
    let Ok(view) = layout::View::attach(seg) else {
        return Ok(None);
    };
    for i in 0..layout::CONSUMER_CAPACITY as usize {
        let Some(entry) = view.consumer(i) else {
            break;
        };
        let state = entry.state.load(Ordering::Acquire);
        let pid = (state & 0xffff_ffff) as u32;
        if pid == 0 {
            continue;
        }
        let start_time = entry.start_time.load(Ordering::Acquire);
        let alive = if start_time == 0 {
            sys::thread_alive(pid)
        } else {
            sys::ProcessId { pid, start_time }.is_alive()
        };
        if alive {
            return Ok(Some("a consumer process still holds it"));
        }
    }
    Ok(None)
}

/// Unlinks the segment of `channel` in this user's namespace unless a live process holds it.
pub fn remove_if_unheld(shm_name: &crate::protocol::ShmName) -> Removal {
    if shm_name.uid() != sys::getuid() {
        return Removal::ForeignNamespace;
    }
    let channel = shm_name.channel_part();
    match holder(channel) {
        Ok(Some(who)) => return Removal::Held(who),
        Ok(None) => {}
        Err(shm::ChannelError::NotFound { .. }) => return Removal::Absent,
        Err(e) => return Removal::Failed(e.to_string()),
    }
    match shm::remove_channel(channel) {
        Ok(()) => Removal::Removed,
        Err(shm::ChannelError::NotFound { .. }) => Removal::Absent,
        Err(e) => Removal::Failed(e.to_string()),
    }
}

/// Unlinks every segment of this user's namespace that no live process holds. Returns each
/// segment looked at with the outcome.
pub fn reap_stale() -> Vec<(String, Removal)> {
    let prefix = format!("/labhub.{}.", sys::getuid());
    let names = match sys::shm_list(&prefix) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list shared-memory segments; no stale segment reaped");
            return Vec::new();
        }
    };
    names
        .into_iter()
        .filter_map(|name| {
            if let Some((public, _)) = name.split_once(sys::HIDDEN_MARK) {
                // A channel's private creation segment: removed if its creator died.
                let channel = public.strip_prefix(&prefix)?;
                if crate::shm::segment::remove_orphans(channel) > 0 {
                    return Some((name, Removal::Removed));
                }
                return None;
            }
            let shm_name = crate::protocol::ShmName::new(name.clone()).ok()?;
            let outcome = remove_if_unheld(&shm_name);
            Some((name, outcome))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ShmName;
    use crate::shm::{ChannelConfig, Policy, Producer};

    fn shm_name(channel: &str) -> ShmName {
        ShmName::new(format!("/labhub.{}.{channel}", sys::getuid())).unwrap()
    }

    #[test]
    fn a_segment_with_a_live_producer_is_kept_and_removed_once_it_is_gone() {
        let channel = format!("broker-seg-{}", std::process::id());
        let producer = Producer::create(&channel, ChannelConfig::new(Policy::Latest, 64)).unwrap();
        assert!(matches!(
            remove_if_unheld(&shm_name(&channel)),
            Removal::Held(_)
        ));
        drop(producer);
        assert_eq!(remove_if_unheld(&shm_name(&channel)), Removal::Removed);
        assert_eq!(remove_if_unheld(&shm_name(&channel)), Removal::Absent);
    }

    #[test]
    fn another_users_namespace_is_left_alone() {
        let other = sys::getuid().wrapping_add(1);
        let name = ShmName::new(format!("/labhub.{other}.x")).unwrap();
        assert_eq!(remove_if_unheld(&name), Removal::ForeignNamespace);
    }
}
