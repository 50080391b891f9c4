//! Named shared-memory segments: channel-name validation, the OS name, create, open, map, unlink.
//!
//! This is the only shm module that talks to `sys`. A segment is named
//! `/labhub.<uid>.<channel>`, so two users never collide, and is created with mode 0600
//! (forced with `fchmod`, whatever the umask). Opening refuses a segment that another user owns
//! or that others can access.
#![deny(unsafe_code)]

use std::io;
use std::os::fd::OwnedFd;

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

/// A mapped, named segment. Dropping it unmaps; it never unlinks.
#[derive(Debug)]
pub struct Segment {
    channel: String,
    _fd: OwnedFd,
    map: sys::ShmMapping,
}

fn io_err<'a>(channel: &'a str, op: &'static str) -> impl FnOnce(io::Error) -> ChannelError + 'a {
    move |source| ChannelError::Io {
        channel: channel.to_owned(),
        op,
        source,
    }
}

impl Segment {
    /// Creates the segment of channel `name` with `size` bytes, zero-filled.
    ///
    /// Returns `Ok(None)` if it already exists.
    pub fn create(name: &str, size: u64) -> Result<Option<Self>, ChannelError> {
        validate_name(name)?;
        let len = usize::try_from(size).map_err(|_| ChannelError::InvalidConfig {
            field: "size",
            reason: format!("{size} bytes does not fit in memory"),
        })?;
        let fd = match sys::shm_create_exclusive(&os_name(name), size) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(None),
            Err(e) => return Err(io_err(name, "create")(e)),
        };
        let map = match sys::ShmMapping::map(&fd, len) {
            Ok(m) => m,
            Err(e) => {
                let _ = sys::shm_unlink(&os_name(name));
                return Err(io_err(name, "map")(e));
            }
        };
        Ok(Some(Self {
            channel: name.to_owned(),
            _fd: fd,
            map,
        }))
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
