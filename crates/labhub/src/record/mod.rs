//! Recording channels to Zarr v3 with their metadata, and replaying recordings into live
//! channels (cargo feature `record`).
//!
//! A recording is a directory in the Zarr v3 format, readable by any Zarr v3 implementation
//! (zarr-python: `zarr.open_group("run.zarr")["cam0/frames"][i]` is frame i as an N-d array of
//! its dtype). [`Recorder`] consumes channels losslessly and writes them; [`Replayer`] reads a
//! recording back and publishes it with the original timing (or faster).
//!
//! # Layout
//! - `zarr.json` (group): attributes `labhub_recording` (format version, 1), `run_id`, `host`,
//!   `started`/`stopped` (RFC 3339) with `started_ns`/`stopped_ns` (Unix ns), `complete`
//!   (false until a clean stop), `channels`, `attributes` (the user's `key=value` pairs) and
//!   `labhub_version`.
//! - `<channel>/zarr.json` (group): the channel's settings and schema (`element`,
//!   `numpy_dtype`, `max_shape`, `policy`, `slots`, `flex_size`, `checksum`, `schema_name`,
//!   `schema_version`, `layout_version`), what was recorded (`frames`, `first_frame_id`,
//!   `last_frame_id`), every loss (`losses`: `missed` — overwritten before the recorder read
//!   them, `producer_dropped` — refused or dropped by the channel's backpressure while
//!   recording, `frame_id_gaps` — ids missing between recorded frames, `unreadable` —
//!   frames skipped for a failed checksum or a corrupt descriptor) and the flexible-zone state
//!   changes (`state_changes`: `[{"frame_index", "timestamp_ns", "version", "state"}]`: the
//!   state in effect from recorded frame `frame_index` on, exactly — each frame carries the
//!   state version it was committed under (docs/SHM_LAYOUT.md, `state_version`); a state
//!   written and replaced before the recorder read it is counted in
//!   `losses.state_changes_not_kept`).
//! - `<channel>/frames`: `[N, *max_shape]` of the channel's dtype. Chunk = one frame, shard =
//!   [`frames_per_shard`] frames (so small high-rate frames do not become a file each), the
//!   shard index first (`index_location: start`, bytes + crc32c). A frame smaller than the
//!   largest shape is stored padded with zeros to it; its own shape is in `shape`.
//! - `<channel>/frame_id`, `<channel>/timestamp_ns`: `[N]` u64; `<channel>/shape`:
//!   `[N, ndim]` u64. Chunked like the frames' shards.
//!
//! # Crash safety
//! The recorder flushes every [`RecordOptions::flush_interval`] and when a shard is full:
//! frame bytes are appended to the shard file, then its index (one page at most, written in
//! one `pwrite`, which a SIGKILL cannot cut short) names them, then the per-frame chunks and
//! every `zarr.json` are replaced atomically (temporary file and rename), the array shapes
//! last. A recorder killed at any point leaves a recording readable up to its last flush.
//!
//! # Why the frames' shards are written here
//! zarrs encodes a shard in memory before it stores it, copying every frame twice; the
//! recorder instead streams each frame from the held shared-memory slot into the shard file
//! and writes the index itself (the format is the sharding codec's: `(offset, nbytes)` u64
//! pairs, `u64::MAX` for an empty chunk, then the CRC32C), which keeps recording at the speed
//! of a plain sequential write (docs/PERFORMANCE.md). Replay reads the frames the same way,
//! straight into the loaned slot. Metadata, attributes and the per-frame arrays go through
//! zarrs, and every recording's metadata is parsed and checked through zarrs on replay.
#![deny(unsafe_code)]

mod reader;
mod shard;
mod store;
mod writer;

use std::path::PathBuf;

pub use reader::{
    Rate, RateParseError, RecordedChannel, ReplayOptions, ReplaySummary, Replayer, Sink,
};
pub use writer::{ChannelProgress, RecordOptions, RecordSummary, Recorder, Source, StopHandle};

use crate::shm::ElementType;

/// The format version in the root group's `labhub_recording` attribute.
pub const FORMAT_VERSION: u64 = 1;
/// Largest frame (padded to its largest shape) a replay accepts by default.
pub const DEFAULT_MAX_FRAME_BYTES: u64 = 1 << 30;
/// Largest `zarr.json` a replay reads.
pub const MAX_METADATA_BYTES: u64 = 4 << 20;
/// Most frames in one shard: the shard index (16 bytes per frame and a 4-byte checksum) must
/// fit one page, so that one `pwrite` writes it whole.
pub const MAX_FRAMES_PER_SHARD: u64 = 255;
/// Most flexible-zone state changes kept per channel; later ones are counted only.
pub const MAX_STATE_CHANGES: usize = 10_000;

/// Frames per shard for frames of `frame_bytes`: about `target_bytes` per shard, from 1 to
/// [`MAX_FRAMES_PER_SHARD`].
pub fn frames_per_shard(frame_bytes: u64, target_bytes: u64) -> u64 {
    (target_bytes / frame_bytes.max(1)).clamp(1, MAX_FRAMES_PER_SHARD)
}

/// Recording or replaying failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordingError {
    /// A file operation failed.
    #[error("{op} {path} failed")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was done (`create`, `write`, `read`, …).
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The output already exists.
    #[error("{path} exists already (a recording is never overwritten)")]
    Exists {
        /// The path.
        path: PathBuf,
    },
    /// Opening or creating a channel failed.
    #[error("channel {channel:?}")]
    Channel {
        /// The channel.
        channel: String,
        /// Why.
        #[source]
        source: crate::shm::ChannelError,
    },
    /// Reading a frame failed in a way the recorder cannot go on from (it was evicted).
    #[error("reading channel {channel:?}")]
    Read {
        /// The channel.
        channel: String,
        /// Why.
        #[source]
        source: crate::shm::ReadError,
    },
    /// Publishing a replayed frame failed.
    #[error("publishing on channel {channel:?}")]
    Publish {
        /// The channel.
        channel: String,
        /// Why.
        #[source]
        source: crate::shm::PublishError,
    },
    /// zarrs refused to write or read something.
    #[error("zarr {what} of {path}: {problem}")]
    Zarr {
        /// The node or file.
        path: PathBuf,
        /// What was done.
        what: &'static str,
        /// zarrs' message.
        problem: String,
    },
    /// A recording's metadata or data is not what a labhub recording holds (written by
    /// another program, truncated, or hostile).
    #[error("{path}: {field}: {problem}")]
    Invalid {
        /// The node or file.
        path: PathBuf,
        /// The field or part.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// A recording declares more than this replay accepts.
    #[error("{path}: {what} is {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// The node or file.
        path: PathBuf,
        /// What is too large.
        what: &'static str,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A bad option.
    #[error("invalid option {option}: {problem}")]
    Option {
        /// The option.
        option: &'static str,
        /// What is wrong.
        problem: String,
    },
}

/// Whether channel name `name` may name a group of a recording: Zarr v3 reserves names that
/// start with `__`, and `zarr.json` is the root's metadata document.
pub(crate) fn node_name_allowed(name: &str) -> bool {
    !name.starts_with("__") && name != "zarr.json"
}

/// The zarr data type name of an element type.
pub(crate) fn zarr_dtype(t: ElementType) -> &'static str {
    match t {
        ElementType::U8 => "uint8",
        ElementType::I8 => "int8",
        ElementType::U16 => "uint16",
        ElementType::I16 => "int16",
        ElementType::U32 => "uint32",
        ElementType::I32 => "int32",
        ElementType::U64 => "uint64",
        ElementType::I64 => "int64",
        ElementType::F32 => "float32",
        ElementType::F64 => "float64",
        ElementType::Complex64 => "complex64",
        ElementType::Complex128 => "complex128",
        ElementType::Bool => "bool",
    }
}

/// Calls `f(compact_offset, padded_offset, bytes)` for each row (last dimension) of a frame of
/// `shape` stored in C order compactly and inside a frame of `max` (C order, padded): the
/// copy between the two forms. `shape` is within `max`, both of one length.
pub(crate) fn for_each_row(
    shape: &[u64],
    max: &[u64],
    esize: usize,
    mut f: impl FnMut(usize, usize, usize),
) {
    let ndim = shape.len();
    if ndim == 0 || ndim != max.len() || shape.contains(&0) {
        return;
    }
    let row = shape[ndim - 1] as usize * esize;
    let mut stride = vec![esize; ndim];
    for d in (0..ndim - 1).rev() {
        stride[d] = stride[d + 1] * max[d + 1] as usize;
    }
    let rows = shape[..ndim - 1].iter().product::<u64>() as usize;
    let mut index = vec![0u64; ndim - 1];
    for r in 0..rows {
        let at: usize = index
            .iter()
            .zip(&stride)
            .map(|(&i, &s)| i as usize * s)
            .sum();
        f(r * row, at, row);
        for d in (0..index.len()).rev() {
            index[d] += 1;
            if index[d] < shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
}

fn io(path: impl Into<PathBuf>, op: &'static str) -> impl FnOnce(std::io::Error) -> RecordingError {
    let path = path.into();
    move |source| RecordingError::Io { path, op, source }
}

fn zarr<E: std::fmt::Display>(
    path: impl Into<PathBuf>,
    what: &'static str,
) -> impl FnOnce(E) -> RecordingError {
    let path = path.into();
    move |e| RecordingError::Zarr {
        path,
        what,
        problem: e.to_string(),
    }
}
