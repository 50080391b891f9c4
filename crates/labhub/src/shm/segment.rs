//! Channel segments: named shared-memory segments (the OS name, create with the space
//! reserved, open, map, unlink, the refusal of segment files another user planted) and the
//! memfd pairs a broker hands out (create, seal, map read-only).
//!
//! This is the only shm module that talks to `sys` about segments. A segment is named
//! `/labhub.<uid>.<channel>` ([`ChannelName::segment_name`]), so two users never collide, and
//! is created with mode 0600 (forced with `fchmod`, whatever the umask). A name that holds
//! anything else — a file of another user, a symbolic link, a file others may open — is refused
//! with [`ChannelError::ForeignSegment`] naming the file, its kind and its owner: `/dev/shm` is
//! writable by every user, so another user can create the name first.
#![deny(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::ChannelError;
use super::layout::PRODUCER_LOCK_BYTE;
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

/// A mapped channel segment: its data region and its control region (docs/SHM_LAYOUT.md),
/// either one named POSIX segment holding both (data first, control after it) or two memfds
/// handed over by a broker. Dropping it unmaps; it never unlinks a published segment.
#[derive(Debug)]
pub struct Segment {
    channel: ChannelName,
    backing: Backing,
    /// The lock bytes this segment's descriptor holds (see [`Segment::try_lock_byte`]): bit i
    /// for byte i < 63, bit 63 for [`PRODUCER_LOCK_BYTE`].
    own_locks: AtomicU64,
}

#[derive(Debug)]
enum Backing {
    Named {
        fd: OwnedFd,
        map: sys::ShmMapping,
        /// The private name of a segment [`Segment::create`] made and [`Segment::publish`] has
        /// not yet named; removed on drop.
        hidden: Mutex<Option<String>>,
    },
    Memfd {
        control_fd: OwnedFd,
        data_fd: OwnedFd,
        control: sys::ShmMapping,
        data: sys::ShmMapping,
    },
}

impl Drop for Segment {
    fn drop(&mut self) {
        if let Backing::Named { hidden, .. } = &mut self.backing {
            let hidden = hidden.get_mut().map(Option::take);
            if let Ok(Some(hidden)) = hidden {
                let _ = sys::shm_unlink(&hidden);
            }
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

fn fits(channel: &ChannelName, size: u64) -> Result<usize, ChannelError> {
    usize::try_from(size).map_err(|_| ChannelError::InvalidConfig {
        field: "size",
        reason: format!("segment of {size} bytes does not fit in memory of channel {channel}"),
    })
}

/// The two descriptors of a broker-granted channel: its control memfd (writable) and its data
/// memfd (sealed against writes once its producer mapped it).
#[derive(Debug)]
pub struct MemfdPair {
    /// The control region.
    pub control: OwnedFd,
    /// The data region.
    pub data: OwnedFd,
}

impl MemfdPair {
    #[cfg_attr(not(feature = "broker"), allow(dead_code))] // the broker grants memfds
    /// New descriptors of the same two files (`dup`, close-on-exec), sharing these open file
    /// descriptions.
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(Self {
            control: self.control.try_clone()?,
            data: self.data.try_clone()?,
        })
    }
}

impl Segment {
    /// Creates a named segment for channel `name` with a data region of `data_size` bytes
    /// followed by a control region of `control_size`, zero-filled and reserved (its pages
    /// allocated: a shared-memory file system without room is [`ChannelError::NoSpace`] now,
    /// not SIGBUS later), under a private name: no other process can open it until
    /// [`Segment::publish`] names it, so nobody ever sees a half-initialised channel, and a
    /// creator killed before publishing leaves no channel behind (its private segment is
    /// removed by the next creator, see [`remove_orphans`]).
    ///
    /// Returns `Ok(None)` if the channel already exists.
    pub fn create(
        name: &ChannelName,
        data_size: u64,
        control_size: u64,
    ) -> Result<Option<Self>, ChannelError> {
        let size =
            data_size
                .checked_add(control_size)
                .ok_or_else(|| ChannelError::InvalidConfig {
                    field: "size",
                    reason: format!("{data_size} + {control_size} bytes overflow"),
                })?;
        let len = fits(name, size)?;
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
            backing: Backing::Named {
                fd,
                map,
                hidden: Mutex::new(Some(hidden)),
            },
            own_locks: AtomicU64::new(0),
        }))
    }

    /// Creates the two memfds of a broker-granted channel, unsealed, of `data_size` and
    /// `control_size` bytes (pages reserved), and maps both writable: the producer's segment
    /// before it seals it ([`Segment::seal`]). They have no name in `/dev/shm`; the kernel
    /// frees them when the last descriptor and mapping are gone.
    pub fn create_memfd(
        name: &ChannelName,
        data_size: u64,
        control_size: u64,
    ) -> Result<Self, ChannelError> {
        let (data_len, control_len) = (fits(name, data_size)?, fits(name, control_size)?);
        let create = |what: &str, size| {
            sys::memfd_create(&format!("labhub:{name}:{what}"), size).map_err(|e| {
                if matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::ENOMEM)) {
                    ChannelError::NoSpace {
                        channel: name.to_string(),
                        needed: data_size + control_size,
                        available: None,
                    }
                } else {
                    io_err(name, "create a memfd")(e)
                }
            })
        };
        let data_fd = create("data", data_size)?;
        let control_fd = create("control", control_size)?;
        let data = sys::ShmMapping::map(&data_fd, data_len).map_err(io_err(name, "map"))?;
        let control =
            sys::ShmMapping::map(&control_fd, control_len).map_err(io_err(name, "map"))?;
        Ok(Self {
            channel: name.clone(),
            backing: Backing::Memfd {
                control_fd,
                data_fd,
                control,
                data,
            },
            own_locks: AtomicU64::new(0),
        })
    }

    /// Maps the memfds of a channel a broker handed over: the control region writable, the
    /// data region writable only for `writable_data` (a producer taking over a segment never
    /// needs it: a sealed data memfd refuses writable mappings) and otherwise read-only. The
    /// sizes come from `fstat`; the caller validates the headers.
    pub fn from_memfd(
        name: &ChannelName,
        pair: MemfdPair,
        writable_data: bool,
    ) -> Result<Self, ChannelError> {
        let size = |fd: &OwnedFd| -> Result<usize, ChannelError> {
            let size = sys::file_size(fd.as_fd()).map_err(io_err(name, "stat"))?;
            if size == 0 {
                return Err(ChannelError::Layout {
                    channel: name.to_string(),
                    source: super::LayoutError::Truncated {
                        header: 1,
                        actual: 0,
                    },
                });
            }
            fits(name, size)
        };
        let (data_len, control_len) = (size(&pair.data)?, size(&pair.control)?);
        let data = if writable_data {
            sys::ShmMapping::map(&pair.data, data_len)
        } else {
            sys::ShmMapping::map_read_only(&pair.data, data_len)
        }
        .map_err(io_err(name, "map"))?;
        let control =
            sys::ShmMapping::map(&pair.control, control_len).map_err(io_err(name, "map"))?;
        Ok(Self {
            channel: name.clone(),
            backing: Backing::Memfd {
                control_fd: pair.control,
                data_fd: pair.data,
                control,
                data,
            },
            own_locks: AtomicU64::new(0),
        })
    }

    /// Seals a memfd segment its producer has mapped: the data memfd against writes, writable
    /// mappings, size changes and further seals (the producer's mapping keeps writing), the
    /// control memfd against size changes and further seals. A named segment has no seals.
    pub fn seal(&self) -> Result<(), ChannelError> {
        if let Backing::Memfd {
            control_fd,
            data_fd,
            ..
        } = &self.backing
        {
            sys::add_seals(data_fd.as_fd(), sys::DATA_SEALS)
                .map_err(io_err(&self.channel, "seal the data memfd"))?;
            sys::add_seals(control_fd.as_fd(), sys::CONTROL_SEALS)
                .map_err(io_err(&self.channel, "seal the control memfd"))?;
        }
        Ok(())
    }

    /// The memfds of a broker-granted segment; `None` for a named one.
    pub fn memfds(&self) -> Option<(BorrowedFd<'_>, BorrowedFd<'_>)> {
        match &self.backing {
            Backing::Memfd {
                control_fd,
                data_fd,
                ..
            } => Some((control_fd.as_fd(), data_fd.as_fd())),
            Backing::Named { .. } => None,
        }
    }

    /// The descriptor of the control region, through which this process takes and tests the
    /// locks of [`liveness_code::LOCK`](super::layout::liveness_code::LOCK).
    pub fn control_fd(&self) -> BorrowedFd<'_> {
        match &self.backing {
            Backing::Named { fd, .. } => fd.as_fd(),
            Backing::Memfd { control_fd, .. } => control_fd.as_fd(),
        }
    }

    fn lock_bit(byte: u64) -> u64 {
        if byte == PRODUCER_LOCK_BYTE {
            1 << 63
        } else {
            1 << byte.min(62)
        }
    }

    /// Takes the write lock on byte `byte` of the control file through this segment's own
    /// open file description (docs/SHM_LAYOUT.md, liveness). False if another description
    /// holds it (or the lock cannot be taken).
    pub fn try_lock_byte(&self, byte: u64) -> bool {
        let bit = Self::lock_bit(byte);
        if self.own_locks.load(Ordering::Acquire) & bit != 0 {
            return true;
        }
        match sys::lock_byte(self.control_fd(), byte) {
            Ok(true) => {
                self.own_locks.fetch_or(bit, Ordering::AcqRel);
                true
            }
            Ok(false) => false,
            Err(e) => {
                tracing::warn!(channel = %self.channel, byte, error = %e, "cannot take a liveness lock");
                false
            }
        }
    }

    /// Releases a lock [`Segment::try_lock_byte`] took (nothing if it holds none there).
    pub fn unlock_byte(&self, byte: u64) {
        let bit = Self::lock_bit(byte);
        if self.own_locks.fetch_and(!bit, Ordering::AcqRel) & bit != 0 {
            let _ = sys::unlock_byte(self.control_fd(), byte);
        }
    }

    /// Whether some process holds the lock on byte `byte` of the control file (this segment
    /// included). Errs towards yes when the lock cannot be tested.
    pub fn byte_held(&self, byte: u64) -> bool {
        if self.own_locks.load(Ordering::Acquire) & Self::lock_bit(byte) != 0 {
            return true;
        }
        sys::byte_locked(self.control_fd(), byte).unwrap_or(true)
    }

    /// Gives a segment made by [`Segment::create`] its channel name, atomically. Returns false
    /// if another process created the channel meanwhile (this segment then stays private and
    /// is removed when dropped). A published, opened or memfd segment returns true.
    pub fn publish(&self) -> Result<bool, ChannelError> {
        let Backing::Named { hidden, .. } = &self.backing else {
            return Ok(true);
        };
        let mut hidden = hidden.lock().unwrap_or_else(|e| e.into_inner());
        let Some(private) = hidden.take() else {
            return Ok(true);
        };
        match sys::shm_publish_hidden(&private, &self.channel.segment_name()) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(io_err(&self.channel, "publish")(e)),
        }
    }

    /// Opens and maps the existing named segment of channel `name`, whole (its real size, from
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
        let len = fits(name, st.size)?;
        let map = sys::ShmMapping::map(&fd, len).map_err(io_err(name, "map"))?;
        Ok(Some(Self {
            channel: name.clone(),
            backing: Backing::Named {
                fd,
                map,
                hidden: Mutex::new(None),
            },
            own_locks: AtomicU64::new(0),
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

    /// Whether this is a broker-granted memfd segment.
    pub fn is_memfd(&self) -> bool {
        matches!(self.backing, Backing::Memfd { .. })
    }

    /// Base address of the data region (page-aligned).
    #[inline]
    pub fn data_ptr(&self) -> *mut u8 {
        match &self.backing {
            Backing::Named { map, .. } => map.as_ptr(),
            Backing::Memfd { data, .. } => data.as_ptr(),
        }
    }

    /// Length of the data region's mapping (a named segment's: the whole segment).
    pub fn data_len(&self) -> usize {
        match &self.backing {
            Backing::Named { map, .. } => map.len(),
            Backing::Memfd { data, .. } => data.len(),
        }
    }

    /// Base address of the control region, given the data region's size `data_size` (after
    /// which a named segment holds it). Page-aligned when `data_size` is a multiple of a page;
    /// in bounds when [`Segment::control_len`] is not 0.
    #[inline]
    pub fn control_ptr(&self, data_size: u64) -> *mut u8 {
        match &self.backing {
            Backing::Named { map, .. } => {
                let off = (data_size as usize).min(map.len());
                map.as_ptr().wrapping_add(off)
            }
            Backing::Memfd { control, .. } => control.as_ptr(),
        }
    }

    /// Length of the control region from [`Segment::control_ptr`].
    pub fn control_len(&self, data_size: u64) -> usize {
        match &self.backing {
            Backing::Named { map, .. } => map.len().saturating_sub(data_size as usize),
            Backing::Memfd { control, .. } => control.len(),
        }
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
        let a = Segment::create(&name, 4096, 4096)
            .unwrap()
            .expect("new channel");
        let b = Segment::create(&name, 4096, 4096)
            .unwrap()
            .expect("still new: a is private");
        assert!(matches!(
            Segment::open(&name),
            Err(ChannelError::NotFound { .. })
        ));
        assert!(a.publish().unwrap(), "first to publish names the channel");
        assert!(!b.publish().unwrap(), "the name is taken");
        assert!(Segment::open(&name).unwrap().is_some());
        assert!(Segment::create(&name, 4096, 4096).unwrap().is_none());
        drop((a, b));
        let hidden = sys::shm_hidden_of(&name.segment_name()).unwrap();
        assert!(hidden.is_empty(), "private names left: {hidden:?}");
        Segment::unlink(&name).unwrap();
    }

    #[test]
    fn a_segment_dropped_before_publishing_leaves_nothing() {
        let name = channel("abandoned");
        drop(Segment::create(&name, 4096, 4096).unwrap().unwrap());
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
        let seg = Segment::create(&name, 1 << 20, 4096).unwrap().unwrap();
        assert!(seg.publish().unwrap());
        let md = std::fs::metadata(sys::shm_path(&name.segment_name())).unwrap();
        // st_blocks counts 512-byte units actually allocated: all of them, before any write.
        assert!(md.blocks() * 512 >= 1 << 20, "{} blocks", md.blocks());
        drop(seg);
        Segment::unlink(&name).unwrap();
    }
}
