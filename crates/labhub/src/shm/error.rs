//! Typed errors of the shm operations: one enum per operation, each naming what was wrong.
#![deny(unsafe_code)]

use std::io;

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
    /// implementation, or an older labhub) whose creator died or is still working;
    /// `remove_channel` removes it.
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
    /// The channel name is not 1–128 characters of `[A-Za-z0-9_.-]`.
    #[error("invalid channel name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
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
    /// The segment belongs to another user or is accessible to others; labhub refuses it.
    #[error(
        "channel {channel:?} segment is owned by uid {uid} with mode {mode:o}, expected ours with mode 600"
    )]
    NotOwned {
        /// The channel.
        channel: String,
        /// Owner uid.
        uid: u32,
        /// Permission bits.
        mode: u32,
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
    /// A producer re-attaching with a configuration that differs from the channel's.
    #[error(
        "channel {channel:?} exists with {field} = {found}, but the producer asked for {expected}"
    )]
    ConfigMismatch {
        /// The channel.
        channel: String,
        /// The differing field.
        field: &'static str,
        /// What the producer asked for.
        expected: String,
        /// What the channel has.
        found: String,
    },
}

/// Publishing a frame failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishError {
    /// The frame is larger than a slot.
    #[error("frame of {size} bytes exceeds the slot size {capacity}")]
    TooLarge {
        /// Bytes requested.
        size: u64,
        /// Slot size.
        capacity: u64,
    },
    /// More than 4 dimensions.
    #[error("frame has {ndim} dimensions, at most 4 are supported")]
    TooManyDims {
        /// Dimensions given.
        ndim: usize,
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
    /// The producer declared this consumer dead and freed its table entry.
    #[error("consumer was evicted from channel {channel:?}")]
    Evicted {
        /// The channel.
        channel: String,
    },
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
}
