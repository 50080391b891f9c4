//! Typed errors of the shm operations: one enum per operation, each naming what was wrong.
#![deny(unsafe_code)]

use std::io;

use crate::name::NameError;

/// A segment's header is not a labhub channel header this build can read.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LayoutError {
    /// The magic word is wrong: not a labhub channel.
    #[error("bad magic {found:#018x} (expected {expected:#018x})")]
    BadMagic {
        /// What a channel carries.
        expected: u64,
        /// What the segment carries.
        found: u64,
    },
    /// The segment's magic was never published. labhub creates segments under a private name
    /// and names them only once initialised, so this is a segment made another way (another
    /// implementation) whose creator died or is still working; `remove_channel` removes it.
    #[error("segment not initialised (magic still zero after waiting)")]
    NotInitialized,
    /// A layout version this build does not know.
    #[error("layout version {found} (this build reads version {expected})")]
    VersionMismatch {
        /// The version this build reads.
        expected: u32,
        /// The version in the segment.
        found: u32,
    },
    /// The header size field disagrees with this build's header.
    #[error("header size {found} (expected {expected})")]
    HeaderSize {
        /// This build's header size.
        expected: u64,
        /// The stored size.
        found: u64,
    },
    /// A parameter is out of range or not a known code.
    #[error("invalid header field {field} = {value}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// A stored size or offset disagrees with the one the parameters imply.
    #[error("header field {field} is {found}, but the parameters imply {expected}")]
    Inconsistent {
        /// The field.
        field: &'static str,
        /// What the parameters imply.
        expected: u64,
        /// What is stored.
        found: u64,
    },
    /// The segment is smaller than its header says.
    #[error("segment truncated: header needs {header} bytes, segment has {actual}")]
    Truncated {
        /// Size the header requires.
        header: u64,
        /// Real size of the segment.
        actual: u64,
    },
}

/// Creating, attaching to or removing a channel failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The channel name is not 1–128 characters of `[A-Za-z0-9_.-]` (or is `.` or `..`).
    #[error("invalid channel name {name:?}")]
    InvalidName {
        /// The name given (truncated to 128 characters).
        name: String,
        /// What is wrong with it.
        #[source]
        source: NameError,
    },
    /// A configuration value is out of range.
    #[error("invalid channel configuration: {field} {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// No channel of that name exists (for this user).
    #[error("channel {channel:?} not found")]
    NotFound {
        /// The channel.
        channel: String,
    },
    /// A system call failed.
    #[error("{op} of channel {channel:?} failed")]
    Io {
        /// The channel.
        channel: String,
        /// The operation (`create`, `open`, `stat`, `map`, `unlink`).
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The channel's segment name holds something labhub refuses: a file of another user (who
    /// may have created it first to block the channel), a symbolic link, or a file others may
    /// open. labhub uses only a regular file of its own user with mode 600; remove the file
    /// (its owner or root can) or use another channel name.
    #[error(
        "channel {channel:?}: {path} is a {kind} owned by uid {owner}{} with mode {mode:o}; labhub uses only a regular file of its own user with mode 600 (remove it, or use another channel name)",
        owner_name.as_ref().map(|n| format!(" ({n})")).unwrap_or_default()
    )]
    ForeignSegment {
        /// The channel.
        channel: String,
        /// The file (`/dev/shm/labhub.<uid>.<channel>`).
        path: String,
        /// What it is (`regular file`, `symbolic link`, …).
        kind: &'static str,
        /// Its owner's uid.
        owner: u32,
        /// Its owner's user name, if `/etc/passwd` has it.
        owner_name: Option<String>,
        /// Its permission bits.
        mode: u32,
    },
    /// The shared-memory file system has no room for the segment (reserved at creation, so a
    /// full `/dev/shm` is this error rather than SIGBUS at the first write).
    #[error(
        "no room for channel {channel:?}: its segment needs {needed} bytes, the shared-memory file system has {} available",
        available.map_or_else(|| "an unknown number of bytes".to_owned(), |a| a.to_string())
    )]
    NoSpace {
        /// The channel.
        channel: String,
        /// Bytes the segment needs.
        needed: u64,
        /// Bytes available (`statvfs` of `/dev/shm`), if known.
        available: Option<u64>,
    },
    /// The channel's frames are not what the caller expects (element type, shape, application
    /// schema): refused at open, before any frame is read.
    #[error("channel {channel:?} has {field} {found}, expected {expected}")]
    SchemaMismatch {
        /// The channel.
        channel: String,
        /// The differing field: `element`, `shape`, `schema_name` or `schema_version`.
        field: &'static str,
        /// What the caller expects.
        expected: String,
        /// What the channel has.
        found: String,
    },
    /// The segment's header is invalid.
    #[error("channel {channel:?} has an invalid segment")]
    Layout {
        /// The channel.
        channel: String,
        /// What is invalid.
        #[source]
        source: LayoutError,
    },
    /// The caller expected another segment size.
    #[error("channel {channel:?} is {found} bytes, expected {expected}")]
    SizeMismatch {
        /// The channel.
        channel: String,
        /// The size the caller was told.
        expected: u64,
        /// The size in the header.
        found: u64,
    },
    /// The secret does not match the channel's.
    #[error("wrong secret for channel {channel:?}")]
    WrongSecret {
        /// The channel.
        channel: String,
    },
    /// All consumer-table entries are taken by live consumers.
    #[error("channel {channel:?} consumer table is full ({capacity} consumers)")]
    ConsumerTableFull {
        /// The channel.
        channel: String,
        /// Table size.
        capacity: u32,
    },
    /// A live producer already owns the channel.
    #[error("channel {channel:?} already has a live producer (pid {pid})")]
    ChannelBusy {
        /// The channel.
        channel: String,
        /// The live producer's pid.
        pid: u32,
    },
    /// Settings that differ from the existing channel's (a producer taking the channel over,
    /// or a consumer that asked for a policy).
    #[error("channel {channel:?} exists with {field} = {found}, but {expected} was asked for")]
    ConfigMismatch {
        /// The channel.
        channel: String,
        /// The differing field.
        field: &'static str,
        /// What was asked for.
        expected: String,
        /// What the channel has.
        found: String,
    },
}

/// Publishing a frame failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishError {
    /// A frame shape with another number of dimensions than the channel's, or a dimension
    /// larger than the channel's largest shape.
    #[error("frame shape {shape:?} is not within the channel's largest shape {max:?}")]
    ShapeOutOfRange {
        /// The shape given.
        shape: Vec<u64>,
        /// The channel's largest shape.
        max: Vec<u64>,
    },
    /// Data whose length is not the shape's number of elements (bytes for a runtime-typed
    /// channel).
    #[error("{found} items given for a frame of shape {shape:?}, which holds {expected}")]
    LengthMismatch {
        /// The shape given.
        shape: Vec<u64>,
        /// Items the shape holds.
        expected: u64,
        /// Items given.
        found: u64,
    },
    /// The ring is full and the channel's rule is `Fail`.
    #[error("channel {channel:?} is full: the slowest consumer is {slots} frames behind")]
    Full {
        /// The channel.
        channel: String,
        /// Ring size.
        slots: u32,
    },
    /// The ring stayed full for the whole blocking timeout.
    #[error("channel {channel:?} stayed full for the whole timeout")]
    Timeout {
        /// The channel.
        channel: String,
    },
    /// The producer's interrupt check asked to give up waiting for space on a full ring (see
    /// `Producer::set_interrupt`); no frame was dropped.
    #[error("waiting for space on channel {channel:?} was interrupted")]
    Interrupted {
        /// The channel.
        channel: String,
    },
}

/// A frame was rewritten by the producer while it was read (lossy policies), so what was read
/// is not one frame; see [`ReadError::Overwritten`].
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[error("frame {frame_id} was overwritten while it was read")]
pub struct Overwritten {
    /// The frame.
    pub frame_id: u64,
}

/// Reading a frame failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadError {
    /// No frame arrived within the timeout.
    #[error("no frame within the timeout")]
    Timeout,
    /// The producer overwrote the frame while it was read (lossy policy); its bytes are not whole.
    #[error("frame {frame_id} was overwritten while it was read")]
    Overwritten {
        /// The frame.
        frame_id: u64,
    },
    /// The frame's checksum does not match its bytes.
    #[error("frame {frame_id} checksum mismatch: stored {stored:#018x}, computed {computed:#018x}")]
    ChecksumMismatch {
        /// The frame.
        frame_id: u64,
        /// Checksum in the slot descriptor.
        stored: u64,
        /// Checksum of the bytes.
        computed: u64,
    },
    /// The producer (or a reclaimer, or the broker through the producer) declared this
    /// consumer dead or stuck and freed its table entry; attach again to go on.
    #[error("consumer was evicted from channel {channel:?}")]
    Evicted {
        /// The channel.
        channel: String,
    },
    /// The segment holds a value no producer writes (a frame descriptor whose shape or size
    /// disagrees with the channel's, a commit position the slots do not hold). The frame is
    /// skipped; the next read goes on.
    #[error("channel {channel:?}: {problem}")]
    Corrupt {
        /// The channel.
        channel: String,
        /// What is wrong.
        problem: String,
    },
}

impl From<Overwritten> for ReadError {
    fn from(o: Overwritten) -> Self {
        Self::Overwritten {
            frame_id: o.frame_id,
        }
    }
}

/// Writing or reading the flexible-zone state failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The serialised state does not fit in the flexible zone.
    #[error("state of {size} bytes exceeds the flexible zone of {capacity} bytes")]
    TooLarge {
        /// Serialised size.
        size: u64,
        /// Zone capacity.
        capacity: u64,
    },
    /// Serialising failed.
    #[error("state serialisation failed: {0}")]
    Serialize(String),
    /// Deserialising failed (wrong type or corrupt bytes).
    #[error("state deserialisation failed: {0}")]
    Deserialize(String),
    /// The channel uses a format this build was compiled without.
    #[error("state format {format} is not supported by this build (enable the `msgpack` feature)")]
    UnsupportedFormat {
        /// The format code.
        format: u32,
    },
    /// The producer rewrote the state during every read attempt.
    #[error("state kept changing during every read attempt")]
    Contended,
    /// The segment's state version is one no producer writes (it would overflow).
    #[error("flexible-zone version {version} is corrupt")]
    CorruptVersion {
        /// The stored version.
        version: u64,
    },
}
