//! Shared-memory data channels: typed n-dimensional frames from one producer process reach any
//! number of consumer processes at memory speed, whole or not at all, with no broker involved.
//!
//! A channel has a data region, which only its producer writes — a header (with the channel's
//! schema: element type, largest shape, optional application schema name and version), slot
//! descriptors (each frame's own shape, id and timestamp), a flexible zone for a small state
//! object, and the slots — and a control region, which its consumers write too (the consumer
//! table, the wake-up events). The byte layout is in `docs/SHM_LAYOUT.md`. Without a broker
//! (this module's [`Channel::new`]) both lie in one named POSIX shared-memory segment (mode
//! 0600, named from the channel name and the user id: [`ChannelName::segment_name`]); through
//! a broker (`labhub::client::Hub::channel`) they are two memfds the broker hands out, the data
//! one sealed so that consumers can map it only read-only.
//!
//! - [`Channel`] is the one builder: a name, a [`Policy`], what a frame holds
//!   ([`frames`](Channel::frames) of an [`Element`] type, [`bytes`](Channel::bytes), or
//!   [`dynamic`](Channel::dynamic) for an element type chosen at run time), options, then
//!   [`create`](Channel::create) → [`Producer`], [`open`](Channel::open) → [`Consumer`] (its
//!   expectations checked: [`ChannelError::SchemaMismatch`]), or
//!   [`open_or_create`](Channel::open_or_create) (a consumer that may start before its
//!   producer). `labhub::client::Hub::channel` is the same builder through the broker.
//! - [`Producer::loan`] / [`Producer::loan_shape`] give a [`SlotMut`] exactly as long as the
//!   frame; [`SlotMut::commit`] consumes it and cannot fail; dropping it abandons it.
//!   [`Producer::publish`] copies a slice in.
//! - [`Consumer::next`] returns a [`Frame`]: held in place (`&[T]`) under lossless rings, read
//!   through checked copies or atomic accesses under lossy policies (see [`Consumer`] for why).
//! - Each consumer chooses its [`DeliveryMode`] ([`Channel::delivery`]): `lossless` (the
//!   default, holds the producer back), `latest`, `queue:N`, `every:K` or `max-rate:HZ`, which
//!   never hold anyone back and read through checked copies; one channel serves a lossless
//!   recorder, a latest-only viewer and a bounded analysis job at once.
//! - [`inspect`] reads a channel's header, counters and consumer table without attaching.
//! - Dropping a producer never removes the channel; a producer created later takes it over and
//!   continues the frame ids; [`remove_channel`] removes it.
//!
//! # Large frames
//! In a lossless ring with slots of 256 KiB or more, payload buffers are pooled: the producer
//! writes each frame into the buffer released most recently (still in its cache) rather than
//! the next one in ring order, so a consumer that keeps up leaves a small working set whatever
//! the slot count. Frame ids, order and backpressure are those of the ring.
//!
//! # Example
//! ```
//! use labhub::shm::{self, Channel, Policy};
//! use std::time::Duration;
//! # let name = format!("doc-example-{}", std::process::id());
//! // A camera publishing 480 x 640 frames of u16 into a lossless ring of 8 slots.
//! let mut camera = Channel::new(&name).policy("ring:8:block".parse()?).frames::<u16>(&[480, 640]).create()?;
//! // A consumer that expects exactly that (anything else is refused at open).
//! let mut viewer = Channel::new(&name).frames::<u16>(&[480, 640]).open()?;
//!
//! let mut slot = camera.loan()?;          // the frame's 307200 pixels, in place
//! slot.fill(1000);
//! slot.commit();                          // readers see all of it or none of it
//!
//! let frame = viewer.next(Some(Duration::from_secs(5)))?;
//! let pixels: &[u16] = frame.held().expect("a lossless ring holds its frames");
//! assert_eq!((frame.shape(), pixels[0]), (&[480u64, 640][..], 1000));
//! drop(frame);                            // releases the slot to the producer
//! # drop(viewer); drop(camera);
//! shm::remove_channel(&name)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod builder;
mod consumer;
mod delivery;
mod element;
mod error;
mod flex;
mod inspect;
mod layout;
mod policy;
mod producer;
mod segment;

#[cfg(feature = "zmq")]
pub(crate) use builder::sealed;
pub use builder::{Backend, Channel, DEFAULT_CONSUMER_TIMEOUT, Local, Settings};
pub use consumer::{Consumer, Frame, Shared, WaitMode};
pub use delivery::{DeliveryMode, DeliveryParseError, MAX_DELIVERY_PARAM};
pub use element::{
    Bool, Complex32, Complex64, Dynamic, Element, ElementType, Payload, UnknownElementType,
};
pub use error::{ChannelError, LayoutError, Overwritten, PublishError, ReadError, StateError};
#[cfg_attr(not(feature = "zmq"), allow(unused_imports))]
pub(crate) use inspect::inspect_memfd;
pub use inspect::{ConsumerReport, ProducerReport, SegmentReport, Sharing, inspect};
pub use policy::{Backpressure, MAX_POLICY_LEN, Policy, PolicyParseError};
pub use producer::{InterruptCheck, Producer, SlotMut};
pub(crate) use segment::MemfdPair;
#[cfg(feature = "broker")]
pub(crate) use segment::remove_orphans;

/// Largest number of dimensions of a frame.
pub const MAX_DIMS: usize = layout::MAX_DIMS;
/// Consumers a channel's table holds.
pub const CONSUMER_CAPACITY: u32 = layout::CONSUMER_CAPACITY;
/// The segment layout version this build reads and writes.
pub const LAYOUT_VERSION: u32 = layout::LAYOUT_VERSION;
/// Size of every channel's control region (docs/SHM_LAYOUT.md): a broker checks a control
/// memfd handed to it against it.
pub const CONTROL_SIZE: u64 = layout::CONTROL_SIZE;
/// Slots at least this large are pooled in lossless rings (see the module documentation).
pub const POOL_MIN_SLOT_SIZE: u64 = layout::POOL_MIN_SLOT_SIZE;

/// The sync primitives the layout embeds, and the process identity.
pub(crate) mod sync_impl {
    pub use crate::sync::{ProcessEvent, ProcessMutex};
    pub use crate::sys::ProcessId;
}

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::name::ChannelName;
use layout::consumer_state;

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

impl StateFormat {
    /// Its code in the segment header (docs/SHM_LAYOUT.md: 1 JSON, 2 MessagePack).
    pub fn code(self) -> u32 {
        match self {
            Self::Json => layout::state_format_code::JSON,
            #[cfg(feature = "msgpack")]
            Self::MessagePack => layout::state_format_code::MSGPACK,
        }
    }

    /// The format of header code `code`, if this build knows it.
    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            layout::state_format_code::JSON => Some(Self::Json),
            #[cfg(feature = "msgpack")]
            layout::state_format_code::MSGPACK => Some(Self::MessagePack),
            _ => None,
        }
    }

    /// Its name: `json`, `msgpack`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "json",
            #[cfg(feature = "msgpack")]
            Self::MessagePack => "msgpack",
        }
    }
}

/// A channel secret: consumers must present the same bytes to open the channel. Only a salted
/// BLAKE3 hash is stored in the segment.
///
/// Not an access control: the segment is readable by every process of its user (and by no
/// other user, mode 0600), secret or not. It keeps out consumers given another secret — of
/// another run or experiment — that open a channel of the same name by mistake.
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
    /// Consumers evicted since the channel was created (dead, stuck longer than the consumer
    /// timeout, or dropped by the broker).
    pub evicted: u64,
    /// Pid of the live producer, if any.
    pub producer_pid: Option<u32>,
}

/// Removes channel `name` (its segment name). Processes that have it mapped keep working on the
/// old segment; new producers create a fresh one.
///
/// # Errors
/// `InvalidName`, `NotFound`, or `Io` if the unlink failed.
pub fn remove_channel(name: &str) -> Result<(), ChannelError> {
    segment::Segment::unlink(&channel_name(name)?)
}

/// Checks a channel name given as text.
fn channel_name(name: &str) -> Result<ChannelName, ChannelError> {
    ChannelName::new(name).map_err(|source| ChannelError::InvalidName {
        name: name
            .chars()
            .take(crate::name::MAX_CHANNEL_NAME_LEN)
            .collect(),
        source,
    })
}

// ---- helpers shared by producer, consumer and inspection ---------------------------------------

/// Adds `n` to a shared counter, stopping at `u64::MAX` (another process may have written any
/// value there; a counter never wraps back to small numbers).
fn saturating_add(counter: &std::sync::atomic::AtomicU64, n: u64) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        (v != u64::MAX).then(|| v.saturating_add(n))
    });
}

fn stats(view: &layout::View) -> ChannelStats {
    let h = view.header();
    let c = view.control();
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
    let commit = h.commit_pos.load(Ordering::Acquire);
    ChannelStats {
        // Every frame id below the commit position was committed exactly once.
        published: commit,
        dropped: h.dropped.load(Ordering::Relaxed),
        overwritten: c.overwritten.load(Ordering::Relaxed),
        next_frame_id: commit,
        consumers,
        evicted: c.consumers_evicted.load(Ordering::Relaxed),
        producer_pid: u32::try_from(pid).ok().filter(|&p| p != 0),
    }
}

/// How many live consumers hold a frame of each slot now (index = slot number).
///
/// Not a count stored per slot: a stored count that a SIGKILLed reader incremented and never
/// decremented would be wrong forever, and a writer waiting on it would wedge. It is derived
/// from the consumer table: each live, active entry's `held` frame counts for its slot; an
/// entry whose process died counts for nothing, whether or not it was reclaimed yet.
fn slot_readers(view: &layout::View) -> Vec<u32> {
    let geo = view.geometry();
    let mut readers = vec![0u32; geo.slots() as usize];
    for i in 0..layout::CONSUMER_CAPACITY as usize {
        let Some(e) = view.consumer(i) else { break };
        let state = e.state.load(Ordering::Acquire);
        let held = e.held.load(Ordering::Acquire);
        if state >> 32 != consumer_state::ACTIVE || held == 0 || entry_owner_dead(view, i, state) {
            continue;
        }
        if let Some(n) = readers.get_mut(geo.slot_of(held - 1)) {
            *n += 1;
        }
    }
    readers
}

/// Whether the process owning consumer-table entry `i` (its state word `state`) is gone: the
/// one liveness rule of the table, used by producers, consumers, the CLI and the broker.
///
/// By the channel's liveness code: under [`layout::liveness_code::LOCK`] (broker-granted
/// channels, whose processes may live in other pid namespaces) the owner is alive while it
/// holds its lock on byte `i` of the control file, which the kernel releases when it dies.
/// Otherwise the pid and the start time together identify a process across pid reuse; an
/// entry whose start time is 0 — being claimed, being released, or cleared by someone else —
/// is judged by its pid alone (a thread of that id exists and is not a zombie).
fn entry_owner_dead(view: &layout::View, i: usize, state: u64) -> bool {
    if view.liveness() == layout::liveness_code::LOCK {
        return !view.lock_held(i as u64);
    }
    let Some(e) = view.consumer(i) else {
        return true;
    };
    let pid = (state & 0xffff_ffff) as u32;
    if pid == 0 {
        return true;
    }
    let start_time = e.start_time.load(Ordering::Acquire);
    if start_time == 0 {
        return !crate::sys::thread_alive(pid);
    }
    !sync_impl::ProcessId { pid, start_time }.is_alive()
}

/// Whether the producer the data header records is alive, by the channel's liveness code (see
/// [`entry_owner_dead`]; the producer holds [`layout::PRODUCER_LOCK_BYTE`]).
fn producer_alive(view: &layout::View) -> bool {
    let h = view.header();
    let pid = h.producer_pid.load(Ordering::Acquire);
    if pid == 0 {
        return false;
    }
    if view.liveness() == layout::liveness_code::LOCK {
        return view.lock_held(layout::PRODUCER_LOCK_BYTE);
    }
    sync_impl::ProcessId {
        pid: u32::try_from(pid).unwrap_or(0),
        start_time: h.producer_start_time.load(Ordering::Acquire),
    }
    .is_alive()
}

/// Ends the ownership `state` of entry `e` and frees it: a compare-and-swap to `RELEASING`
/// (only its winner goes on), then the start time, held frame and tag are cleared, then the
/// entry is freed. So a freed entry never carries a previous owner's start time, which would
/// make the next claimer look dead while it fills the entry in (two owners). Returns whether
/// this call freed it.
fn release_entry(view: &layout::View, e: &layout::ConsumerEntry, state: u64) -> bool {
    let releasing = (consumer_state::RELEASING << 32) | u64::from(crate::sys::getpid());
    if e.state
        .compare_exchange(state, releasing, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        return false;
    }
    e.start_time.store(0, Ordering::SeqCst);
    e.held.store(0, Ordering::Relaxed);
    e.owner_tag.store(0, Ordering::Relaxed);
    e.state.store(consumer_state::FREE, Ordering::SeqCst);
    view.control().space_event.notify_all();
    true
}

/// Frees entry `i` (state word `state`) if its owner is dead. Returns true if freed.
fn reclaim_if_dead(view: &layout::View, i: usize, state: u64) -> bool {
    let Some(e) = view.consumer(i) else {
        return false;
    };
    if state == consumer_state::FREE || !entry_owner_dead(view, i, state) {
        return false;
    }
    if !release_entry(view, e, state) {
        return false;
    }
    if state >> 32 != consumer_state::RELEASING {
        saturating_add(&view.control().consumers_evicted, 1);
        tracing::warn!(
            channel = %view.segment().channel(),
            pid = state & 0xffff_ffff,
            "reclaimed the consumer-table entry of a dead consumer"
        );
    }
    true
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
/// and its magic published, then checks version and layout.
fn open_view(name: &ChannelName, timeout: Duration) -> Result<layout::View, ChannelError> {
    let deadline = std::time::Instant::now() + timeout;
    let layout_err = |source| ChannelError::Layout {
        channel: name.to_string(),
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
    wait_published(header, deadline).map_err(layout_err)?;
    layout::View::attach(seg).map_err(layout_err)
}

/// Waits (until `deadline`) for a data header's magic, then checks it and the version.
fn wait_published(
    header: &layout::Header,
    deadline: std::time::Instant,
) -> Result<(), LayoutError> {
    loop {
        let (magic, version) = layout::load_magic(header);
        if magic == layout::MAGIC {
            if version != layout::LAYOUT_VERSION {
                return Err(LayoutError::VersionMismatch {
                    expected: layout::LAYOUT_VERSION,
                    found: version,
                });
            }
            return Ok(());
        }
        if magic != 0 {
            return Err(LayoutError::BadMagic {
                expected: layout::MAGIC,
                found: magic,
            });
        }
        if std::time::Instant::now() >= deadline {
            return Err(LayoutError::NotInitialized);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[cfg_attr(not(feature = "zmq"), allow(dead_code))]
/// Maps and validates the memfd pair a broker handed over for channel `name` (the data region
/// read-only unless `writable_data`).
fn memfd_view(
    name: &ChannelName,
    pair: segment::MemfdPair,
    writable_data: bool,
) -> Result<layout::View, ChannelError> {
    let layout_err = |source| ChannelError::Layout {
        channel: name.to_string(),
        source,
    };
    let seg = segment::Segment::from_memfd(name, pair, writable_data)?;
    let header = layout::View::raw_header(&seg).map_err(layout_err)?;
    // A memfd is handed over only once its producer published it: no wait.
    wait_published(header, std::time::Instant::now()).map_err(layout_err)?;
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

#[cfg(test)]
mod memfd_tests;
