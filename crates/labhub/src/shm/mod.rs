//! Shared-memory data channels: frames from one producer process reach any number of consumer
//! processes at memory speed, whole or not at all, with no broker involved.
//!
//! A channel is one named POSIX shared-memory segment (mode 0600, named from the channel name and
//! the user id, see [`segment`]). Its byte layout is documented in `docs/SHM_LAYOUT.md` and
//! defined in [`layout`]: a header, a consumer table, slot descriptors, a flexible zone for a
//! small state object, and the slots.
//!
//! - [`Producer::create`] creates the channel, or re-attaches to it if it exists and its previous
//!   producer is dead (frame ids continue). Dropping a producer never removes the channel;
//!   [`remove_channel`] does.
//! - [`Consumer::attach`] attaches by channel name; [`Consumer::next`] waits for the next frame
//!   and returns it in place (zero copy).
//! - [`Policy`] picks Latest (one slot), DoubleBuffer, or a lossless Ring with a [`Backpressure`]
//!   rule.
//!
//! # Reading in place from a lossy channel
//! Under [`Policy::Latest`], [`Policy::DoubleBuffer`] and [`Backpressure::DropOldest`], the
//! producer never waits for readers, so it may overwrite a frame while a reader looks at it.
//! [`Frame::data`] then shows bytes that may be torn: they are **only guaranteed whole if
//! [`Frame::finish`] (or [`Frame::copy_to_vec`]) returns `Ok`** afterwards. Under a lossless ring
//! (`Block` or `Fail`) a frame is never overwritten while a consumer holds it, except one that
//! [`Consumer::latest`] returned although the consumer had already passed it: the same rule
//! applies to that one.
//!
//! # Large frames
//! In a lossless ring with slots of 256 KiB or more, payload buffers are pooled: the producer
//! writes each frame into the buffer released most recently (still in its cache) rather than
//! the next one in ring order, so a consumer that keeps up leaves a small working set whatever
//! the slot count. Frame ids, order and backpressure are those of the ring.
//!
//! # Example
//! ```
//! use labhub::shm::{self, AttachOptions, ChannelConfig, Consumer, FrameMeta, Policy, Producer};
//! use std::time::Duration;
//! # let name = format!("doc-example-{}", std::process::id());
//! let mut producer = Producer::create(&name, ChannelConfig::new(Policy::DoubleBuffer, 1024))?;
//! let mut consumer = Consumer::attach(&name, AttachOptions::default())?;
//! producer.publish_bytes(b"hello", &FrameMeta::default())?;
//! let frame = consumer.next(Some(Duration::from_secs(5)))?;
//! assert_eq!(frame.data(), b"hello");
//! frame.finish()?;
//! # drop(consumer); drop(producer);
//! shm::remove_channel(&name)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod consumer;
mod error;
mod flex;
pub mod layout;
mod producer;
pub mod segment;

pub use consumer::{AttachOptions, Consumer, Frame, WaitMode};
pub use error::{ChannelError, LayoutError, PublishError, ReadError, StateError};
pub use producer::{Producer, SlotWriter};

/// The sync primitives the layout embeds, and the process identity.
pub(crate) mod sync_impl {
    pub use crate::sync::{ProcessEvent, ProcessMutex};
    pub use crate::sys::ProcessId;
}

use std::sync::atomic::Ordering;
use std::time::Duration;

use layout::{backpressure_code, checksum_code, consumer_state, policy_code, state_format_code};

/// How slots are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Policy {
    /// One slot; the newest frame wins; readers racing a write see `Overwritten`.
    Latest,
    /// Two slots; the newest frame wins; a reader has one frame period to finish.
    DoubleBuffer,
    /// `slots` slots, lossless unless `when_full` is [`Backpressure::DropOldest`]: the ring is
    /// full when the slowest live consumer is `slots` frames behind.
    Ring {
        /// Number of slots (1–65536).
        slots: u32,
        /// What the producer does when the ring is full.
        when_full: Backpressure,
    },
}

/// What a ring's producer does when the slowest live consumer is a full ring behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backpressure {
    /// Wait for space, up to `timeout` (then [`PublishError::Timeout`]); dead consumers are
    /// detected and evicted while waiting.
    Block {
        /// Longest wait.
        timeout: Duration,
    },
    /// Fail at once with [`PublishError::Full`].
    Fail,
    /// Overwrite the oldest unread frame (counted as dropped); slow readers skip it.
    DropOldest,
}

/// Serialisation of the flexible-zone state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StateFormat {
    /// JSON.
    #[default]
    Json,
    /// MessagePack (cargo feature `msgpack`).
    #[cfg(feature = "msgpack")]
    MessagePack,
}

/// A channel secret: consumers must present the same bytes to attach. Only a salted BLAKE3
/// hash is stored in the segment.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// A secret from bytes.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }
    fn hash(&self, salt: &[u8; 16]) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(b"labhub channel secret v1");
        h.update(salt);
        h.update(&self.0);
        *h.finalize().as_bytes()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl From<u64> for Secret {
    fn from(v: u64) -> Self {
        Self(v.to_le_bytes().to_vec())
    }
}

impl From<&[u8]> for Secret {
    fn from(v: &[u8]) -> Self {
        Self(v.to_vec())
    }
}

impl From<&str> for Secret {
    fn from(v: &str) -> Self {
        Self(v.as_bytes().to_vec())
    }
}

/// How a channel is created: policy, slot size, flexible zone, checksum, secret.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    policy: Policy,
    slot_size: u64,
    flex_size: u64,
    checksum: bool,
    state_format: StateFormat,
    secret: Option<Secret>,
    consumer_timeout: Option<Duration>,
}

impl ChannelConfig {
    /// A channel with `policy` and slots of `slot_size` bytes; no flexible zone, no checksum,
    /// no secret.
    pub fn new(policy: Policy, slot_size: u64) -> Self {
        Self {
            policy,
            slot_size,
            flex_size: 0,
            checksum: false,
            state_format: StateFormat::Json,
            secret: None,
            consumer_timeout: None,
        }
    }
    /// Capacity of the flexible-zone state in bytes.
    pub fn flex_size(mut self, bytes: u64) -> Self {
        self.flex_size = bytes;
        self
    }
    /// Stores an XXH3-64 checksum per frame, verified by readers.
    pub fn checksum(mut self, on: bool) -> Self {
        self.checksum = on;
        self
    }
    /// Serialisation of the flexible-zone state.
    pub fn state_format(mut self, format: StateFormat) -> Self {
        self.state_format = format;
        self
    }
    /// Requires consumers to present `secret`.
    pub fn secret(mut self, secret: impl Into<Secret>) -> Self {
        self.secret = Some(secret.into());
        self
    }
    /// Evicts a consumer that holds a lossless ring back and whose heartbeat (refreshed by every
    /// read and at least every 500 ms while it waits) is older than `timeout`, even if its
    /// process lives (a stuck reader). Without it (the default) only dead consumers are evicted.
    /// A producer-side setting: not stored in the segment.
    pub fn consumer_timeout(mut self, timeout: Duration) -> Self {
        self.consumer_timeout = Some(timeout);
        self
    }
    /// The policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    fn params(&self) -> layout::Params {
        let (policy, slot_count, backpressure) = match self.policy {
            Policy::Latest => (policy_code::LATEST, 1, backpressure_code::NONE),
            Policy::DoubleBuffer => (policy_code::DOUBLE_BUFFER, 2, backpressure_code::NONE),
            Policy::Ring { slots, when_full } => (
                policy_code::RING,
                slots,
                match when_full {
                    Backpressure::Block { .. } => backpressure_code::BLOCK,
                    Backpressure::Fail => backpressure_code::FAIL,
                    Backpressure::DropOldest => backpressure_code::DROP_OLDEST,
                },
            ),
        };
        layout::Params {
            policy,
            backpressure,
            slot_count,
            slot_size: self.slot_size,
            flex_size: self.flex_size,
            checksum: if self.checksum {
                checksum_code::XXH3_64
            } else {
                checksum_code::NONE
            },
            state_format: match self.state_format {
                StateFormat::Json => state_format_code::JSON,
                #[cfg(feature = "msgpack")]
                StateFormat::MessagePack => state_format_code::MSGPACK,
            },
            payload_mode: layout::Params::payload_mode_for(policy, backpressure, self.slot_size),
        }
    }
}

/// Frame metadata set by the producer and read by consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameMeta {
    /// Timestamp in ns; 0 lets the producer stamp `CLOCK_REALTIME` at publish.
    pub timestamp_ns: u64,
    /// The application's type hash.
    pub type_hash: u64,
    /// Number of used entries in `dims` (0–4).
    pub ndim: u8,
    /// Dimensions.
    pub dims: [u64; layout::MAX_DIMS],
}

impl FrameMeta {
    /// Metadata with a type hash and dimensions (at most 4).
    pub fn new(type_hash: u64, dims: &[u64]) -> Result<Self, PublishError> {
        let mut m = Self {
            type_hash,
            ..Self::default()
        };
        m.set_dims(dims)?;
        Ok(m)
    }
    /// Sets the dimensions (at most 4).
    pub fn set_dims(&mut self, dims: &[u64]) -> Result<(), PublishError> {
        if dims.len() > layout::MAX_DIMS {
            return Err(PublishError::TooManyDims { ndim: dims.len() });
        }
        self.dims = [0; layout::MAX_DIMS];
        self.dims[..dims.len()].copy_from_slice(dims);
        self.ndim = dims.len() as u8;
        Ok(())
    }
    /// The used dimensions.
    pub fn dims(&self) -> &[u64] {
        &self.dims[..usize::from(self.ndim).min(layout::MAX_DIMS)]
    }
}

/// Counters and positions of a channel, read from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelStats {
    /// Frames committed.
    pub published: u64,
    /// Frames lost to backpressure.
    pub dropped: u64,
    /// Frames consumers lost to overwrites (lossy policies).
    pub overwritten: u64,
    /// Next frame id to be committed.
    pub next_frame_id: u64,
    /// Consumers in the table now.
    pub consumers: u32,
    /// Pid of the live producer, if any.
    pub producer_pid: Option<u32>,
}

/// Removes channel `name` (its segment name). Processes that have it mapped keep working on the
/// old segment; new producers create a fresh one.
pub fn remove_channel(name: &str) -> Result<(), ChannelError> {
    segment::Segment::unlink(name)
}

/// The OS name of channel `name` for this user (`/labhub.<uid>.<name>`).
pub fn os_name(name: &str) -> Result<String, ChannelError> {
    segment::validate_name(name)?;
    Ok(segment::os_name(name))
}

// ---- helpers shared by producer and consumer -------------------------------------------------

fn stats(view: &layout::View) -> ChannelStats {
    let h = view.header();
    let mut consumers = 0;
    for i in 0..layout::CONSUMER_CAPACITY as usize {
        if view
            .consumer(i)
            .is_some_and(|e| e.state.load(Ordering::Relaxed) != 0)
        {
            consumers += 1;
        }
    }
    let pid = h.producer_pid.load(Ordering::Acquire);
    ChannelStats {
        // Every frame id below the commit position was committed exactly once.
        published: h.commit_pos.load(Ordering::Acquire),
        dropped: h.dropped.load(Ordering::Relaxed),
        overwritten: h.overwritten.load(Ordering::Relaxed),
        next_frame_id: h.commit_pos.load(Ordering::Acquire),
        consumers,
        producer_pid: u32::try_from(pid).ok().filter(|&p| p != 0),
    }
}

/// How many live consumers hold a frame of each slot now (index = slot number).
///
/// Not a count stored per slot: a stored count that a SIGKILLed reader incremented and never
/// decremented would be wrong forever (and the original design's writer waited on it). It is
/// derived from the consumer table: each live, active entry's `held` frame counts for its slot;
/// an entry whose process died counts for nothing, whether or not it was reclaimed yet.
fn slot_readers(view: &layout::View) -> Vec<u32> {
    let geo = view.geometry();
    let mut readers = vec![0u32; geo.slots() as usize];
    for i in 0..layout::CONSUMER_CAPACITY as usize {
        let Some(e) = view.consumer(i) else { break };
        let state = e.state.load(Ordering::Acquire);
        let held = e.held.load(Ordering::Acquire);
        if state >> 32 != consumer_state::ACTIVE || held == 0 || entry_owner_dead(e, state) {
            continue;
        }
        if let Some(n) = readers.get_mut(geo.slot_of(held - 1)) {
            *n += 1;
        }
    }
    readers
}

/// Whether the process owning a consumer-table entry is gone (pid dead or reused).
fn entry_owner_dead(e: &layout::ConsumerEntry, state: u64) -> bool {
    let pid = (state & 0xffff_ffff) as u32;
    if pid == 0 {
        return true;
    }
    let start_time = e.start_time.load(Ordering::Acquire);
    if state >> 32 == consumer_state::CLAIMING && start_time == 0 {
        // Still filling in: only the pid is known.
        return !crate::sys::thread_alive(pid);
    }
    !sync_impl::ProcessId { pid, start_time }.is_alive()
}

/// Frees entry `e` if its owner (recorded in `state`) is dead. Returns true if freed.
fn reclaim_if_dead(view: &layout::View, e: &layout::ConsumerEntry, state: u64) -> bool {
    if state == 0 || !entry_owner_dead(e, state) {
        return false;
    }
    if e.state
        .compare_exchange(state, 0, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
    {
        tracing::warn!(
            channel = view.segment().channel(),
            pid = state & 0xffff_ffff,
            "reclaimed the consumer-table entry of a dead consumer"
        );
        view.header().space_event.notify_all();
        return true;
    }
    false
}

fn checksum_of(data: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(data)
}

fn random_salt() -> [u8; 16] {
    use std::io::Read;
    let mut salt = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut salt))
        .is_err()
    {
        // Fall back to time and pid; the salt only has to differ between channels.
        let t = crate::sys::monotonic_ns() ^ crate::sys::realtime_ns();
        salt[..8].copy_from_slice(&t.to_le_bytes());
        salt[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    }
    salt
}

/// Opens and validates an existing channel: waits (up to `timeout`) for the segment to be sized
/// and its magic published, then checks version, layout and (if given) the expected size.
fn open_view(name: &str, timeout: Duration) -> Result<layout::View, ChannelError> {
    let deadline = std::time::Instant::now() + timeout;
    let layout_err = |source| ChannelError::Layout {
        channel: name.to_owned(),
        source,
    };
    let seg = loop {
        if let Some(seg) = segment::Segment::open(name)? {
            break seg;
        }
        if std::time::Instant::now() >= deadline {
            return Err(layout_err(LayoutError::NotInitialized));
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let header = layout::View::raw_header(&seg).map_err(layout_err)?;
    loop {
        let (magic, version) = layout::load_magic(header);
        if magic == layout::MAGIC {
            if version != layout::LAYOUT_VERSION {
                return Err(layout_err(LayoutError::VersionMismatch {
                    expected: layout::LAYOUT_VERSION,
                    found: version,
                }));
            }
            break;
        }
        if magic != 0 {
            return Err(layout_err(LayoutError::BadMagic {
                expected: layout::MAGIC,
                found: magic,
            }));
        }
        if std::time::Instant::now() >= deadline {
            return Err(layout_err(LayoutError::NotInitialized));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    layout::View::attach(seg).map_err(layout_err)
}

fn check_secret(view: &layout::View, secret: Option<&Secret>) -> bool {
    let h = view.header();
    match (h.has_secret, secret) {
        (0, None) => true,
        (1, Some(s)) => {
            let computed = blake3::Hash::from(s.hash(&h.secret_salt));
            computed == blake3::Hash::from(h.secret_hash)
        }
        _ => false,
    }
}
