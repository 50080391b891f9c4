//! Named shared-memory segments: channel-name validation, the OS name, create, open, map, unlink.
//!
//! This is the only shm module that talks to `sys`. A segment is named
//! `/labhub.<uid>.<channel>`, so two users never collide, and is created with mode 0600
//! (forced with `fchmod`, whatever the umask). Opening refuses a segment that another user owns
//! or that others can access.
#![deny(unsafe_code)]

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Mutex;

use super::error::ChannelError;
use crate::sys;

/// Longest channel name.
pub const MAX_NAME_LEN: usize = 128;

/// Checks a channel name: 1–128 characters of `[A-Za-z0-9_.-]`.
pub fn validate_name(name: &str) -> Result<(), ChannelError> {
    let bad = |reason| {
        Err(ChannelError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("longer than 128 characters");
    }
    if name == "." || name == ".." {
        return bad("reserved name");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return bad("only A-Z, a-z, 0-9, '_', '.' and '-' are allowed");
    }
    Ok(())
}

/// The OS name of channel `name` for the current user: `/labhub.<uid>.<name>`.
pub fn os_name(name: &str) -> String {
    format!("/labhub.{}.{}", sys::getuid(), name)
}

/// Removes the private segments that creators of channel `name` left when they died before
/// publishing it (best effort: errors are ignored, a live creator's segment is kept). Returns
/// how many were removed.
pub fn remove_orphans(name: &str) -> usize {
    let Ok(found) = sys::shm_hidden_of(&os_name(name)) else {
        return 0;
    };
    found
        .into_iter()
        .filter(|&(_, pid, start_time)| !sys::ProcessId { pid, start_time }.is_alive())
        .filter(|(hidden, _, _)| sys::shm_unlink(hidden).is_ok())
        .count()
}

/// A mapped, named segment. Dropping it unmaps; it never unlinks a published segment.
#[derive(Debug)]
pub struct Segment {
    channel: String,
    _fd: OwnedFd,
    map: sys::ShmMapping,
    /// The private name of a segment [`Segment::create`] made and [`Segment::publish`] has not
    /// yet named; removed on drop.
    hidden: Mutex<Option<String>>,
}

impl Drop for Segment {
    fn drop(&mut self) {
        let hidden = self.hidden.get_mut().map(Option::take);
        if let Ok(Some(hidden)) = hidden {
            let _ = sys::shm_unlink(&hidden);
        }
    }
}

fn io_err<'a>(channel: &'a str, op: &'static str) -> impl FnOnce(io::Error) -> ChannelError + 'a {
    move |source| ChannelError::Io {
        channel: channel.to_owned(),
        op,
        source,
    }
}

impl Segment {
    /// Creates a segment for channel `name` with `size` bytes, zero-filled, under a private
    /// name: no other process can open it until [`Segment::publish`] names it, so nobody ever
    /// sees a half-initialised channel, and a creator killed before publishing leaves no
    /// channel behind (its private segment is removed by the next creator, see
    /// [`remove_orphans`]).
    ///
    /// Returns `Ok(None)` if the channel already exists.
    pub fn create(name: &str, size: u64) -> Result<Option<Self>, ChannelError> {
        validate_name(name)?;
        let len = usize::try_from(size).map_err(|_| ChannelError::InvalidConfig {
            field: "size",
            reason: format!("{size} bytes does not fit in memory"),
        })?;
        match sys::shm_open_existing(&os_name(name)) {
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(name, "open")(e)),
        }
        remove_orphans(name);
        let me = sys::ProcessId::current().map_err(io_err(name, "identify process"))?;
        let (fd, hidden) = sys::shm_create_hidden(&os_name(name), size, me.pid, me.start_time)
            .map_err(io_err(name, "create"))?;
        let map = match sys::ShmMapping::map(&fd, len) {
            Ok(m) => m,
            Err(e) => {
                let _ = sys::shm_unlink(&hidden);
                return Err(io_err(name, "map")(e));
            }
        };
        Ok(Some(Self {
            channel: name.to_owned(),
            _fd: fd,
            map,
            hidden: Mutex::new(Some(hidden)),
        }))
    }

    /// Gives a segment made by [`Segment::create`] its channel name, atomically. Returns false
    /// if another process created the channel meanwhile (this segment then stays private and
    /// is removed when dropped). A published or opened segment returns true.
    pub fn publish(&self) -> Result<bool, ChannelError> {
        let mut hidden = self.hidden.lock().unwrap_or_else(|e| e.into_inner());
        let Some(private) = hidden.take() else {
            return Ok(true);
        };
        match sys::shm_publish_hidden(&private, &os_name(&self.channel)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(io_err(&self.channel, "publish")(e)),
        }
    }

    /// Opens and maps the existing segment of channel `name`, whole (its real size, from
    /// `fstat`). Returns `Ok(None)` while the segment is still empty (its creator has not sized
    /// it yet).
    pub fn open(name: &str) -> Result<Option<Self>, ChannelError> {
        validate_name(name)?;
        let fd = match sys::shm_open_existing(&os_name(name)) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ChannelError::NotFound {
                    channel: name.to_owned(),
                });
            }
            Err(e) => return Err(io_err(name, "open")(e)),
        };
        let st = sys::shm_stat(&fd).map_err(io_err(name, "stat"))?;
        if st.uid != sys::getuid() || st.mode & 0o077 != 0 {
            return Err(ChannelError::NotOwned {
                channel: name.to_owned(),
                uid: st.uid,
                mode: st.mode,
            });
        }
        if st.size == 0 {
            return Ok(None);
        }
        let len = usize::try_from(st.size).map_err(|_| ChannelError::InvalidConfig {
            field: "size",
            reason: format!("segment of {} bytes does not fit in memory", st.size),
        })?;
        let map = sys::ShmMapping::map(&fd, len).map_err(io_err(name, "map"))?;
        Ok(Some(Self {
            channel: name.to_owned(),
            _fd: fd,
            map,
            hidden: Mutex::new(None),
        }))
    }

    /// Removes the name of channel `name`. Mapped segments stay usable until dropped.
    pub fn unlink(name: &str) -> Result<(), ChannelError> {
        validate_name(name)?;
        match sys::shm_unlink(&os_name(name)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ChannelError::NotFound {
                channel: name.to_owned(),
            }),
            Err(e) => Err(io_err(name, "unlink")(e)),
        }
    }

    /// The channel name.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Base address of the mapping (page-aligned).
    #[inline]
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_ptr()
    }

    /// Length of the mapping.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Never true (empty segments are not mapped).
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(tag: &str) -> String {
        format!("seg-test-{}-{tag}", std::process::id())
    }

    #[test]
    fn a_created_segment_is_invisible_until_published_and_the_first_publisher_wins() {
        let name = channel("race");
        let a = Segment::create(&name, 4096).unwrap().expect("new channel");
        let b = Segment::create(&name, 4096)
            .unwrap()
            .expect("still new: a is private");
        assert!(matches!(
            Segment::open(&name),
            Err(ChannelError::NotFound { .. })
        ));
        assert!(a.publish().unwrap(), "first to publish names the channel");
        assert!(!b.publish().unwrap(), "the name is taken");
        assert!(Segment::open(&name).unwrap().is_some());
        assert!(Segment::create(&name, 4096).unwrap().is_none());
        drop((a, b));
        let hidden = sys::shm_hidden_of(&os_name(&name)).unwrap();
        assert!(hidden.is_empty(), "private names left: {hidden:?}");
        Segment::unlink(&name).unwrap();
    }

    #[test]
    fn a_segment_dropped_before_publishing_leaves_nothing() {
        let name = channel("abandoned");
        drop(Segment::create(&name, 4096).unwrap().unwrap());
        assert!(sys::shm_hidden_of(&os_name(&name)).unwrap().is_empty());
        assert!(matches!(
            Segment::open(&name),
            Err(ChannelError::NotFound { .. })
        ));
    }

    #[test]
    fn orphans_of_dead_creators_are_removed_and_live_ones_kept() {
        let name = channel("orphans");
        let me = sys::ProcessId::current().unwrap();
        // The same pid with another start time is a dead process (pid reuse).
        let dead = format!("{}@{}-{}-0", os_name(&name), me.pid, me.start_time + 1);
        let live = format!("{}@{}-{}-7", os_name(&name), me.pid, me.start_time);
        drop(sys::shm_create_exclusive(&dead, 4096).unwrap());
        drop(sys::shm_create_exclusive(&live, 4096).unwrap());
        assert_eq!(remove_orphans(&name), 1);
        let left: Vec<String> = sys::shm_hidden_of(&os_name(&name))
            .unwrap()
            .into_iter()
            .map(|(n, _, _)| n)
            .collect();
        assert_eq!(left, vec![live.clone()]);
        sys::shm_unlink(&live).unwrap();
    }
}
