//! Segment cleanup: the broker unlinks a channel's shared-memory segment once nobody holds it
//! (producers never unlink, so consumers keep their frames across a producer's crash), and at
//! start reaps the stale segments of its own namespace (`/labhub.<uid>.*`) whose producer and
//! consumers are all dead.
//!
//! The broker never maps a segment for data and never decodes its header itself: it asks
//! [`shm::inspect`] whether a live process still uses it, by the liveness rule shm evicts by.
//! A segment whose producer process is alive is never unlinked, even if the producer went
//! silent on the control plane: removal is retried until that process is gone.
#![deny(unsafe_code)]

use crate::shm::{self, ChannelError, LayoutError};
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

/// Who still holds a segment, judged from its header by [`shm::inspect`].
fn holder(channel: &str) -> Result<Option<&'static str>, ChannelError> {
    match shm::inspect(channel) {
        Ok(report) if report.producer.as_ref().is_some_and(|p| p.alive) => {
            Ok(Some("its producer process is alive"))
        }
        Ok(report) if report.in_use() => Ok(Some("a consumer process still holds it")),
        Ok(_) => Ok(None),
        // Being sized or initialised by its creator (another implementation: labhub names a
        // segment only once it is ready): leave it to that creator.
        Err(ChannelError::Layout {
            source: LayoutError::NotInitialized,
            ..
        }) => Ok(Some("being created")),
        // Another labhub version's channel: its processes may be alive, and this build cannot
        // tell.
        Err(ChannelError::Layout {
            source: LayoutError::VersionMismatch { .. },
            ..
        }) => Ok(Some("a segment of another layout version")),
        // Not a labhub channel header at all (bad magic, inconsistent, truncated): nothing a
        // labhub process could hold.
        Err(ChannelError::Layout { .. }) => Ok(None),
        Err(e) => Err(e),
    }
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
    let prefix = crate::name::segment_prefix_of(sys::getuid());
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
                let channel = crate::name::ChannelName::new(public.strip_prefix(&prefix)?).ok()?;
                if shm::remove_orphans(&channel) > 0 {
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
    use crate::protocol::{ChannelName, ShmName};
    use crate::shm::{Channel, Policy};

    fn shm_name(channel: &str) -> ShmName {
        ShmName::of(&ChannelName::new(channel).unwrap())
    }

    #[test]
    fn a_segment_with_a_live_producer_is_kept_and_removed_once_it_is_gone() {
        let channel = format!("broker-seg-{}", std::process::id());
        let producer = Channel::new(&channel)
            .policy(Policy::Latest)
            .bytes(64)
            .create()
            .unwrap();
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
        let name = ShmName::new(crate::name::segment_name_of(other, "x")).unwrap();
        assert_eq!(remove_if_unheld(&name), Removal::ForeignNamespace);
    }
}
