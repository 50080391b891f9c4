//! Named shared-memory segments: the OS name, create (space reserved), open, map, unlink, and
//! the refusal of segment files another user planted.
//!
//! This is the only shm module that talks to `sys` about segments. A segment is named
//! `/labhub.<uid>.<channel>` ([`ChannelName::segment_name`]), so two users never collide, and
//! is created with mode 0600 (forced with `fchmod`, whatever the umask). A name that holds
//! anything else — a file of another user, a symbolic link, a file others may open — is refused
//! with [`ChannelError::ForeignSegment`] naming the file, its kind and its owner: `/dev/shm` is
//! writable by every user, so another user can create the name first.
#![deny(unsafe_code)]

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Mutex;

use super::error::ChannelError;
use crate::name::ChannelName;
use crate::sys;

/// Removes the private segments that creators of channel `name` left when they died before
/// publishing it (best effort: errors are ignored, a live creator's segment is kept). Returns
/// how many were removed.
pub fn remove_orphans(name: &ChannelName) -> usize {
    let Ok(found) = sys::shm_hidden_of(&name.segment_name()) else {
        return 0;
    };
    found
        .into_iter()
        .filter(|&(_, pid, start_time)| !sys::ProcessId { pid, start_time }.is_alive())
        .filter(|(hidden, _, _)| sys::shm_unlink(hidden).is_ok())
        .count()
}

/// The name of user `uid` from `/etc/passwd`, if it is there (for error messages only).
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let id: u32 = f.nth(1)?.parse().ok()?;
        (id == uid).then(|| name.to_owned())
    })
}

fn foreign(name: &ChannelName, kind: &'static str, uid: u32, mode: u32) -> ChannelError {
    ChannelError::ForeignSegment {
        channel: name.to_string(),
        path: sys::shm_path(&name.segment_name()),
        kind,
        owner: uid,
        owner_name: user_name(uid),
        mode,
    }
}

/// Whether a segment file of `uid` with `mode` is one labhub may use: ours, owner-only.
fn acceptable(uid: u32, mode: u32) -> bool {
    uid == sys::getuid() && mode & 0o077 == 0
}

/// Explains why the segment name of `name` could not be opened, if it holds something labhub
/// refuses; `None` when the file looks like ours (the error is then an ordinary I/O error).
fn diagnose(name: &ChannelName) -> Option<ChannelError> {
    let entry = sys::shm_lstat(&name.segment_name()).ok()??;
    (entry.kind != "regular file" || !acceptable(entry.uid, entry.mode))
        .then(|| foreign(name, entry.kind, entry.uid, entry.mode))
}

/// A mapped, named segment. Dropping it unmaps; it never unlinks a published segment.
#[derive(Debug)]
pub struct Segment {
    channel: ChannelName,
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

fn io_err<'a>(
    channel: &'a ChannelName,
    op: &'static str,
) -> impl FnOnce(io::Error) -> ChannelError + 'a {
    move |source| ChannelError::Io {
        channel: channel.to_string(),
        op,
        source,
    }
}

impl Segment {
    /// Creates a segment for channel `name` with `size` bytes, zero-filled and reserved (its
    /// pages allocated: a shared-memory file system without room is
    /// [`ChannelError::NoSpace`] now, not SIGBUS later), under a private name: no other
    /// process can open it until [`Segment::publish`] names it, so nobody ever sees a
    /// half-initialised channel, and a creator killed before publishing leaves no channel
    /// behind (its private segment is removed by the next creator, see [`remove_orphans`]).
    ///
    /// Returns `Ok(None)` if the channel already exists.
    pub fn create(name: &ChannelName, size: u64) -> Result<Option<Self>, ChannelError> {
        let len = usize::try_from(size).map_err(|_| ChannelError::InvalidConfig {
            field: "size",
            reason: format!("{size} bytes does not fit in memory"),
        })?;
        match sys::shm_open_existing(&name.segment_name()) {
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(diagnose(name).unwrap_or_else(|| io_err(name, "open")(e))),
        }
        remove_orphans(name);
        let me = sys::ProcessId::current().map_err(io_err(name, "identify process"))?;
        let (fd, hidden) =
            match sys::shm_create_hidden(&name.segment_name(), size, me.pid, me.start_time) {
                Ok(created) => created,
                Err(e) if e.kind() == io::ErrorKind::StorageFull => {
                    return Err(ChannelError::NoSpace {
                        channel: name.to_string(),
                        needed: size,
                        available: sys::shm_space_available(),
                    });
                }
                Err(e) => return Err(io_err(name, "create")(e)),
            };
        let map = match sys::ShmMapping::map(&fd, len) {
            Ok(m) => m,
            Err(e) => {
                let _ = sys::shm_unlink(&hidden);
                return Err(io_err(name, "map")(e));
            }
        };
        Ok(Some(Self {
            channel: name.clone(),
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
        match sys::shm_publish_hidden(&private, &self.channel.segment_name()) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(io_err(&self.channel, "publish")(e)),
        }
    }

    /// Opens and maps the existing segment of channel `name`, whole (its real size, from
    /// `fstat`). Returns `Ok(None)` while the segment is still empty (its creator has not sized
    /// it yet).
    pub fn open(name: &ChannelName) -> Result<Option<Self>, ChannelError> {
        let fd = match sys::shm_open_existing(&name.segment_name()) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ChannelError::NotFound {
                    channel: name.to_string(),
                });
            }
            Err(e) => return Err(diagnose(name).unwrap_or_else(|| io_err(name, "open")(e))),
        };
        let st = sys::shm_stat(&fd).map_err(io_err(name, "stat"))?;
        if !acceptable(st.uid, st.mode) {
            return Err(foreign(name, "regular file", st.uid, st.mode));
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
            channel: name.clone(),
            _fd: fd,
            map,
            hidden: Mutex::new(None),
        }))
    }

    /// Removes the name of channel `name`. Mapped segments stay usable until dropped.
    pub fn unlink(name: &ChannelName) -> Result<(), ChannelError> {
        match sys::shm_unlink(&name.segment_name()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ChannelError::NotFound {
                channel: name.to_string(),
            }),
            Err(e) => Err(io_err(name, "unlink")(e)),
        }
    }

    /// The channel name.
    pub fn channel(&self) -> &ChannelName {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(tag: &str) -> ChannelName {
        ChannelName::new(format!("seg-test-{}-{tag}", std::process::id())).unwrap()
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
        let hidden = sys::shm_hidden_of(&name.segment_name()).unwrap();
        assert!(hidden.is_empty(), "private names left: {hidden:?}");
        Segment::unlink(&name).unwrap();
    }

    #[test]
    fn a_segment_dropped_before_publishing_leaves_nothing() {
        let name = channel("abandoned");
        drop(Segment::create(&name, 4096).unwrap().unwrap());
        assert!(sys::shm_hidden_of(&name.segment_name()).unwrap().is_empty());
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
        let os = name.segment_name();
        let dead = format!("{os}@{}-{}-0", me.pid, me.start_time + 1);
        let live = format!("{os}@{}-{}-7", me.pid, me.start_time);
        drop(sys::shm_create_exclusive(&dead, 4096).unwrap());
        drop(sys::shm_create_exclusive(&live, 4096).unwrap());
        assert_eq!(remove_orphans(&name), 1);
        let left: Vec<String> = sys::shm_hidden_of(&os)
            .unwrap()
            .into_iter()
            .map(|(n, _, _)| n)
            .collect();
        assert_eq!(left, vec![live.clone()]);
        sys::shm_unlink(&live).unwrap();
    }

    #[test]
    fn a_created_segment_has_its_pages_reserved() {
        use std::os::unix::fs::MetadataExt;
        let name = channel("reserved");
        let seg = Segment::create(&name, 1 << 20).unwrap().unwrap();
        assert!(seg.publish().unwrap());
        let md = std::fs::metadata(sys::shm_path(&name.segment_name())).unwrap();
        // st_blocks counts 512-byte units actually allocated: all of them, before any write.
        assert!(md.blocks() * 512 >= 1 << 20, "{} blocks", md.blocks());
        drop(seg);
        Segment::unlink(&name).unwrap();
    }
}
