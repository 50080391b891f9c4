//! The byte layout of a channel segment, and the only casts into a mapping.
//!
//! `docs/SHM_LAYOUT.md` documents every row; each row has a `const` assertion here, and a test
//! below parses the document's tables and checks every offset, size and constant against this
//! file, so the document and the code cannot drift. All multi-byte values are little-endian (the native order
//! of every platform labhub runs on; a big-endian build refuses to compile below).
//!
//! Every value read from a segment was written by another process and is validated before it is
//! used for arithmetic or indexing: [`Geometry::from_header`] recomputes the whole layout from the
//! header's parameters with checked arithmetic and refuses any offset or size that disagrees.
//! After that, every index is reduced modulo a validated count and every offset lies inside the
//! mapping, so the accessors below are safe.

use std::mem::{offset_of, size_of};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::element::ElementType;
use super::error::LayoutError;
use super::segment::Segment;
use super::sync_impl::{ProcessEvent, ProcessMutex};

#[cfg(target_endian = "big")]
compile_error!("the shm layout is little-endian");

/// `b"LABHUBDB"` read as a little-endian u64: the data header's magic.
pub const MAGIC: u64 = u64::from_le_bytes(*b"LABHUBDB");
/// `b"LABHUBCT"` read as a little-endian u64: the control header's magic.
pub const CONTROL_MAGIC: u64 = u64::from_le_bytes(*b"LABHUBCT");
/// Layout version; any change to this file's structs bumps it.
pub const LAYOUT_VERSION: u32 = 7;
/// Alignment of regions and granularity of the segment size (bytes).
pub const PAGE: u64 = 4096;
/// Entries in the consumer table.
pub const CONSUMER_CAPACITY: u32 = 16;
/// Largest slot count a channel may have.
pub const MAX_SLOTS: u32 = 1 << 16;
/// Largest segment labhub creates or accepts (1 TiB).
pub const MAX_TOTAL: u64 = 1 << 40;
/// Largest number of dimensions of a frame.
pub const MAX_DIMS: usize = 4;
/// Dimensions held in the first cache line of a [`SlotMeta`]; the last one, and the checksum,
/// are in its second line, which is written and read only when the frame uses them.
pub const DIMS_IN_FIRST_LINE: usize = 3;
/// Longest application schema name, in bytes.
pub const MAX_SCHEMA_NAME: usize = 64;

/// Policy codes stored in [`Header::policy`].
pub mod policy_code {
    /// One slot; the newest frame wins.
    pub const LATEST: u32 = 1;
    /// Two slots; the newest frame wins.
    pub const DOUBLE_BUFFER: u32 = 2;
    /// N slots, lossless unless the backpressure rule drops.
    pub const RING: u32 = 3;
}

/// Backpressure codes stored in [`Header::backpressure`].
pub mod backpressure_code {
    /// Lossy policy: the producer never waits.
    pub const NONE: u32 = 0;
    /// Ring full: the producer waits (with a timeout).
    pub const BLOCK: u32 = 1;
    /// Ring full: publishing fails with `Full`.
    pub const FAIL: u32 = 2;
    /// Ring full: the oldest unread frame is overwritten.
    pub const DROP_OLDEST: u32 = 3;
}

/// Checksum codes stored in [`Header::checksum`].
pub mod checksum_code {
    /// No per-frame checksum.
    pub const NONE: u32 = 0;
    /// XXH3-64 of the frame bytes.
    pub const XXH3_64: u32 = 1;
}

/// State-format codes stored in [`Header::state_format`].
pub mod state_format_code {
    /// JSON (serde_json).
    pub const JSON: u32 = 1;
    /// MessagePack (rmp-serde, cargo feature `msgpack`).
    pub const MSGPACK: u32 = 2;
}

/// Codes stored in [`Header::payload_mode`].
pub mod payload_mode_code {
    /// Frame f's payload is buffer f mod N.
    pub const RING_ORDER: u32 = 0;
    /// Frame f's payload is the buffer its descriptor's `chunk` names (lossless rings only;
    /// see [`super::Geometry::pooled`]).
    pub const POOLED: u32 = 1;
}

/// Codes stored in [`Header::commit_fence`].
pub mod commit_fence_code {
    /// The producer stores `commit_pos` SeqCst (a full barrier per frame); a consumer about to
    /// sleep needs only its own SeqCst store of `data_waiting`.
    pub const FULL: u32 = 0;
    /// The producer stores `commit_pos` Release with a compiler-only barrier; a consumer about
    /// to sleep must first run the heavy side of the asymmetric fence (Linux
    /// `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`), or else sleep only briefly.
    pub const ASYMMETRIC: u32 = 1;
}

/// Codes stored in [`Control::liveness`]: how a process judges whether the owner of a
/// consumer-table entry, or the producer, is alive.
pub mod liveness_code {
    /// By pid and start time (named segments: every holder shares the creator's pid
    /// namespace).
    pub const PID: u32 = 0;
    /// By a lock the kernel breaks on death: the owner of entry i holds an open-file-description
    /// write lock on byte i of the control file, the producer on byte
    /// [`PRODUCER_LOCK_BYTE`](super::PRODUCER_LOCK_BYTE). Works across pid namespaces
    /// (broker-granted memfd channels).
    pub const LOCK: u32 = 1;
}

/// The byte of the control file whose lock the producer holds under [`liveness_code::LOCK`]
/// (consumer entry i's owner holds byte i).
pub const PRODUCER_LOCK_BYTE: u64 = 4095;

/// Consumer-entry state, the high 32 bits of [`ConsumerEntry::state`]; the low 32 bits hold the pid.
pub mod consumer_state {
    /// Free entry (the whole word is 0).
    pub const FREE: u64 = 0;
    /// Being filled in by the consumer whose pid is in the low bits.
    pub const CLAIMING: u64 = 1;
    /// Attached and monitored.
    pub const ACTIVE: u64 = 2;
    /// Being freed by the process whose pid is in the low bits (the winner of the
    /// compare-and-swap that ended the entry's owner): it clears the start time, then frees.
    pub const RELEASING: u64 = 3;
}

/// Delivery-mode codes stored in [`ConsumerEntry::delivery`] (see `shm::DeliveryMode`).
pub mod delivery_code {
    /// Every frame; the entry's position holds the producer back (0: what a zeroed entry says).
    pub const LOSSLESS: u32 = 0;
    /// The newest frame.
    pub const LATEST: u32 = 1;
    /// At most `delivery_param` frames behind.
    pub const QUEUE: u32 = 2;
    /// One frame of every `delivery_param`.
    pub const EVERY: u32 = 3;
    /// The newest frame at most `delivery_param` times per second.
    pub const MAX_RATE: u32 = 4;
}

/// The [`ConsumerEntry::position`] of an entry that holds nothing back (a delivery mode other
/// than lossless): no frame id reaches it, so the producer's space computation passes over it.
pub const NOT_HOLDING: u64 = u64::MAX;

/// Slots at least this large use pooled payloads in lossless rings (see [`Geometry::pooled`]).
/// Below it a ring's slots mostly fit in cache anyway, and the consumer-table scan pooling needs
/// for every frame costs more than it saves (64 KiB frames: 0.78–0.81× memcpy pooled against
/// 0.87–0.95× in ring order, alternated runs).
pub const POOL_MIN_SLOT_SIZE: u64 = 256 << 10;

/// Most payload bytes [`View::prefetch_for_write`] fetches per frame: beyond this the copy
/// itself dominates and the hardware prefetcher streams the lines.
pub const PREFETCH_MAX_BYTES: usize = 4096;

/// Whether the CPU has `PREFETCHW` (CPUID 0x8000_0001, ECX bit 8), asked once.
#[cfg(target_arch = "x86_64")]
fn has_prefetchw() -> bool {
    use std::sync::atomic::AtomicU8;
    static KNOWN: AtomicU8 = AtomicU8::new(0);
    match KNOWN.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let has = std::arch::x86_64::__cpuid(0x8000_0001).ecx & (1 << 8) != 0;
            KNOWN.store(if has { 1 } else { 2 }, Ordering::Relaxed);
            has
        }
    }
}

/// `PREFETCHW` of the line holding `p`. (`_mm_prefetch` with `_MM_HINT_ET0` compiles to a read
/// prefetch unless the whole crate is built for a CPU with the feature.)
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetchw(p: *const u8) {
    // SAFETY: a prefetch never faults, whatever the address, and writes no memory; callers
    // check `has_prefetchw` first (on a CPU without it the opcode is not defined).
    unsafe {
        std::arch::asm!("prefetchw [{}]", in(reg) p, options(nostack, preserves_flags, readonly));
    }
}

/// The data header at offset 0 of the data region (512 bytes).
///
/// Fields up to `reserved1` (offsets 0–191) and the schema block from `max_shape` (384–511) are
/// written once at creation, before `magic` and `layout_version` are published, and never
/// change; the rest are atomics. Only the producer writes any of it: consumers may map the data
/// region read-only (a broker-granted channel's is sealed so), so everything a consumer writes
/// lives in the [`Control`] region.
#[repr(C, align(64))]
pub struct Header {
    /// [`MAGIC`]; stored last at creation.
    pub magic: AtomicU64,
    /// [`LAYOUT_VERSION`]; stored just before the magic.
    pub layout_version: AtomicU32,
    /// `size_of::<Header>()` of the creator.
    pub header_size: u32,
    /// Size of the data region in bytes.
    pub total_size: u64,
    /// A [`policy_code`].
    pub policy: u32,
    /// A [`backpressure_code`].
    pub backpressure: u32,
    /// Number of slots.
    pub slot_count: u32,
    /// Reserved, zero.
    pub reserved0: u32,
    /// Largest frame payload in bytes.
    pub slot_size: u64,
    /// Distance between slot payloads (slot_size rounded up to 64).
    pub slot_stride: u64,
    /// Capacity of each of the two flexible-zone buffers in bytes.
    pub flex_size: u64,
    /// Size of the channel's control region.
    pub control_size: u64,
    /// Offset of the slot descriptors.
    pub slot_meta_offset: u64,
    /// Offset of the flexible zone.
    pub flex_offset: u64,
    /// Offset of slot 0's payload (page-aligned).
    pub data_offset: u64,
    /// A [`checksum_code`].
    pub checksum: u32,
    /// A [`state_format_code`].
    pub state_format: u32,
    /// 1 if the channel has a secret, else 0.
    pub has_secret: u32,
    /// A [`payload_mode_code`]: where frame f's payload is.
    pub payload_mode: u32,
    /// Random salt of the secret hash.
    pub secret_salt: [u8; 16],
    /// BLAKE3(salt ‖ secret), all zero without a secret.
    pub secret_hash: [u8; 32],
    /// An [`ElementType`] code: what each element of a frame is.
    pub element_type: u32,
    /// Dimensions of every frame (1–4).
    pub ndim: u32,
    /// The application's schema version (0 when it gave none).
    pub schema_version: u32,
    /// Bytes of `schema_name` used (0: no application schema).
    pub schema_name_len: u32,
    /// A random id of this incarnation of the channel, never 0; its control region carries the
    /// same, so a data region is never paired with another channel's control region.
    pub instance: u64,
    /// Reserved, zero.
    pub reserved1: u64,
    /// Pid of the producer attached now, 0 when none.
    pub producer_pid: AtomicU64,
    /// Start time (clock ticks since boot) of that process; with the pid it survives pid reuse.
    pub producer_start_time: AtomicU64,
    /// `CLOCK_MONOTONIC` ns of the producer's last publish or attach.
    pub producer_heartbeat_ns: AtomicU64,
    /// How many times a producer has attached (1 after creation).
    pub producer_attaches: AtomicU64,
    /// Frames lost to backpressure (Full, timed out, or the oldest dropped).
    pub dropped: AtomicU64,
    /// Version of the flexible-zone state (0: none yet).
    pub flex_version: AtomicU64,
    /// A [`commit_fence_code`]: how the attached producer orders its commit store before its
    /// `data_waiting` load, and so what a consumer must do before it sleeps.
    pub commit_fence: AtomicU32,
    /// Reserved, zero.
    pub reserved2: u32,
    /// Reserved, zero.
    pub reserved3: u64,
    /// Next frame id the producer will claim (its own cache line: written per frame).
    pub write_pos: AtomicU64,
    /// Ring: frames below this id may be written without scanning the consumer table again
    /// (the producer stores it, SeqCst, before the scan that justifies it).
    pub space_bound: AtomicU64,
    /// Reserved, zero.
    pub reserved4: [u8; 48],
    /// Number of committed frames = last committed frame id + 1 (0: none yet). Alone on its
    /// cache line: consumers that keep up poll it, the producer writes it once per frame.
    pub commit_pos: AtomicU64,
    /// Reserved, zero.
    pub reserved5: [u8; 56],
    /// The largest frame shape: `ndim` dimensions, the rest 0. A frame's shape has the same
    /// number of dimensions, each at most the one here.
    pub max_shape: [u64; MAX_DIMS],
    /// The application's schema name (UTF-8, `schema_name_len` bytes, the rest 0).
    pub schema_name: [u8; MAX_SCHEMA_NAME],
    /// Reserved, zero.
    pub reserved6: [u8; 32],
}

const _: () = assert!(size_of::<Header>() == 512);
const _: () = assert!(offset_of!(Header, magic) == 0);
const _: () = assert!(offset_of!(Header, layout_version) == 8);
const _: () = assert!(offset_of!(Header, header_size) == 12);
const _: () = assert!(offset_of!(Header, total_size) == 16);
const _: () = assert!(offset_of!(Header, policy) == 24);
const _: () = assert!(offset_of!(Header, backpressure) == 28);
const _: () = assert!(offset_of!(Header, slot_count) == 32);
const _: () = assert!(offset_of!(Header, reserved0) == 36);
const _: () = assert!(offset_of!(Header, slot_size) == 40);
const _: () = assert!(offset_of!(Header, slot_stride) == 48);
const _: () = assert!(offset_of!(Header, flex_size) == 56);
const _: () = assert!(offset_of!(Header, control_size) == 64);
const _: () = assert!(offset_of!(Header, slot_meta_offset) == 72);
const _: () = assert!(offset_of!(Header, flex_offset) == 80);
const _: () = assert!(offset_of!(Header, data_offset) == 88);
const _: () = assert!(offset_of!(Header, checksum) == 96);
const _: () = assert!(offset_of!(Header, state_format) == 100);
const _: () = assert!(offset_of!(Header, has_secret) == 104);
const _: () = assert!(offset_of!(Header, payload_mode) == 108);
const _: () = assert!(offset_of!(Header, secret_salt) == 112);
const _: () = assert!(offset_of!(Header, secret_hash) == 128);
const _: () = assert!(offset_of!(Header, element_type) == 160);
const _: () = assert!(offset_of!(Header, ndim) == 164);
const _: () = assert!(offset_of!(Header, schema_version) == 168);
const _: () = assert!(offset_of!(Header, schema_name_len) == 172);
const _: () = assert!(offset_of!(Header, instance) == 176);
const _: () = assert!(offset_of!(Header, reserved1) == 184);
const _: () = assert!(offset_of!(Header, producer_pid) == 192);
const _: () = assert!(offset_of!(Header, producer_start_time) == 200);
const _: () = assert!(offset_of!(Header, producer_heartbeat_ns) == 208);
const _: () = assert!(offset_of!(Header, producer_attaches) == 216);
const _: () = assert!(offset_of!(Header, dropped) == 224);
const _: () = assert!(offset_of!(Header, flex_version) == 232);
const _: () = assert!(offset_of!(Header, commit_fence) == 240);
const _: () = assert!(offset_of!(Header, reserved2) == 244);
const _: () = assert!(offset_of!(Header, reserved3) == 248);
const _: () = assert!(offset_of!(Header, write_pos) == 256);
const _: () = assert!(offset_of!(Header, space_bound) == 264);
const _: () = assert!(offset_of!(Header, reserved4) == 272);
const _: () = assert!(offset_of!(Header, commit_pos) == 320);
const _: () = assert!(offset_of!(Header, reserved5) == 328);
const _: () = assert!(offset_of!(Header, max_shape) == 384);
const _: () = assert!(offset_of!(Header, schema_name) == 416);
const _: () = assert!(offset_of!(Header, reserved6) == 480);

/// The control header at offset 0 of the control region (384 bytes), followed by the consumer
/// table: everything consumers write, with the producer's mutex and the two events.
///
/// Fields up to `instance` (offsets 0–47) are written once at creation, before `magic` is
/// published; the rest are atomics and sync words shared by all processes.
#[repr(C, align(64))]
pub struct Control {
    /// [`CONTROL_MAGIC`]; stored last at creation.
    pub magic: AtomicU64,
    /// [`LAYOUT_VERSION`]; stored just before the magic.
    pub layout_version: AtomicU32,
    /// `size_of::<Control>()` of the creator.
    pub header_size: u32,
    /// Size of the control region in bytes.
    pub control_size: u64,
    /// Number of consumer-table entries.
    pub consumer_capacity: u32,
    /// A [`liveness_code`]: how the owner of an entry (and the producer) is judged alive.
    pub liveness: u32,
    /// Offset of the consumer table in the control region.
    pub consumer_table_offset: u64,
    /// The channel incarnation's id, the data header's `instance`.
    pub instance: u64,
    /// Consumers evicted (dead, or heartbeat older than the consumer timeout, or dropped by
    /// the broker) since creation.
    pub consumers_evicted: AtomicU64,
    /// Reserved, zero.
    pub reserved1: u64,
    /// Notified after a commit when `data_waiting` is set (and when a producer leaves).
    pub data_event: ProcessEvent,
    /// 1 while a consumer may sleep on `data_event`; the producer swaps it to 0 and notifies,
    /// so a sleep costs one wake rather than one per commit until the sleeper runs.
    pub data_waiting: AtomicU32,
    /// Reserved, zero.
    pub reserved2: [u8; 52],
    /// Notified when a consumer releases a frame or detaches (lossless rings).
    pub space_event: ProcessEvent,
    /// Ring: 1 while the producer sleeps on `space_event`, so releases notify only then. Read
    /// by consumers after every frame and written by the producer only when it sleeps, so the
    /// line stays shared, not bounced.
    pub producer_waiting: AtomicU32,
    /// Reserved, zero.
    pub reserved3: u32,
    /// Frames consumers lost because a lossy policy overwrote them (written by consumers).
    pub overwritten: AtomicU64,
    /// Reserved, zero.
    pub reserved4: [u8; 104],
    /// Serialises producer attach and takeover.
    pub producer_mutex: ProcessMutex,
    /// Reserved, zero.
    pub reserved5: [u8; 64],
}

const _: () = assert!(size_of::<Control>() == 384);
const _: () = assert!(offset_of!(Control, magic) == 0);
const _: () = assert!(offset_of!(Control, layout_version) == 8);
const _: () = assert!(offset_of!(Control, header_size) == 12);
const _: () = assert!(offset_of!(Control, control_size) == 16);
const _: () = assert!(offset_of!(Control, consumer_capacity) == 24);
const _: () = assert!(offset_of!(Control, liveness) == 28);
const _: () = assert!(offset_of!(Control, consumer_table_offset) == 32);
const _: () = assert!(offset_of!(Control, instance) == 40);
const _: () = assert!(offset_of!(Control, consumers_evicted) == 48);
const _: () = assert!(offset_of!(Control, reserved1) == 56);
const _: () = assert!(offset_of!(Control, data_event) == 64);
const _: () = assert!(offset_of!(Control, data_waiting) == 72);
const _: () = assert!(offset_of!(Control, reserved2) == 76);
const _: () = assert!(offset_of!(Control, space_event) == 128);
const _: () = assert!(offset_of!(Control, producer_waiting) == 136);
const _: () = assert!(offset_of!(Control, reserved3) == 140);
const _: () = assert!(offset_of!(Control, overwritten) == 144);
const _: () = assert!(offset_of!(Control, reserved4) == 152);
const _: () = assert!(offset_of!(Control, producer_mutex) == 256);
const _: () = assert!(offset_of!(Control, reserved5) == 320);
const _: () = assert!(size_of::<ProcessEvent>() == 8);
const _: () = assert!(size_of::<ProcessMutex>() == 64);

/// One consumer-table entry (128 bytes).
///
/// The first cache line is what the producer reads when it computes space (`state`,
/// `position`) and what the consumer writes per frame; the second holds the delivery mode and
/// the per-consumer counters, written by the consumer alone and read by inspection.
#[repr(C, align(64))]
pub struct ConsumerEntry {
    /// `(state << 32) | pid`, see [`consumer_state`]; 0 when free.
    pub state: AtomicU64,
    /// Start time of the consumer process (with the pid: survives pid reuse).
    pub start_time: AtomicU64,
    /// `CLOCK_MONOTONIC` ns of the consumer's last read or wait.
    pub heartbeat_ns: AtomicU64,
    /// Lowest frame id this consumer still needs (the next to read, or the one it holds);
    /// [`NOT_HOLDING`] for a consumer whose delivery mode holds nothing back.
    pub position: AtomicU64,
    /// Frame id + 1 of the frame held now, 0 when none (diagnostics).
    pub held: AtomicU64,
    /// Frames this consumer read.
    pub received: AtomicU64,
    /// Frames this consumer lost to overwrites.
    pub missed: AtomicU64,
    /// A tag of the consumer's Hub client (a hash of its client id), so a producer told by the
    /// broker that the client went silent can evict its entries; 0 without a Hub.
    pub owner_tag: AtomicU64,
    /// A [`delivery_code`]: how this consumer takes frames. Written before the entry becomes
    /// active, never changed while it is.
    pub delivery: AtomicU32,
    /// Reserved, zero.
    pub reserved1: u32,
    /// The delivery mode's parameter (queue length, decimation factor, rate), 0 for none.
    pub delivery_param: AtomicU64,
    /// The next frame id this consumer will look at (every mode; for a lossless consumer the
    /// same as `position`). With the commit position it gives the consumer's lag.
    pub cursor: AtomicU64,
    /// Frames this consumer's delivery mode skipped on purpose (latest, queue, every,
    /// max-rate).
    pub dropped: AtomicU64,
    /// Reserved, zero.
    pub reserved2: [u8; 32],
}

const _: () = assert!(size_of::<ConsumerEntry>() == 128);
const _: () = assert!(offset_of!(ConsumerEntry, state) == 0);
const _: () = assert!(offset_of!(ConsumerEntry, start_time) == 8);
const _: () = assert!(offset_of!(ConsumerEntry, heartbeat_ns) == 16);
const _: () = assert!(offset_of!(ConsumerEntry, position) == 24);
const _: () = assert!(offset_of!(ConsumerEntry, held) == 32);
const _: () = assert!(offset_of!(ConsumerEntry, received) == 40);
const _: () = assert!(offset_of!(ConsumerEntry, missed) == 48);
const _: () = assert!(offset_of!(ConsumerEntry, owner_tag) == 56);
const _: () = assert!(offset_of!(ConsumerEntry, delivery) == 64);
const _: () = assert!(offset_of!(ConsumerEntry, reserved1) == 68);
const _: () = assert!(offset_of!(ConsumerEntry, delivery_param) == 72);
const _: () = assert!(offset_of!(ConsumerEntry, cursor) == 80);
const _: () = assert!(offset_of!(ConsumerEntry, dropped) == 88);
const _: () = assert!(offset_of!(ConsumerEntry, reserved2) == 96);

/// One slot descriptor (128 bytes): the sequence word and the frame's metadata.
///
/// Metadata words are atomics (accessed Relaxed, ordered by `seq`) so that a reader racing an
/// overwrite reads stale values, never undefined ones; the `seq` re-check decides.
#[repr(C, align(64))]
pub struct SlotMeta {
    /// 0: empty; odd `2f+1`: frame f being written; even `2f+2`: frame f committed.
    pub seq: AtomicU64,
    /// Frame id.
    pub frame_id: AtomicU64,
    /// Producer's timestamp in ns (`CLOCK_REALTIME` unless the producer set one).
    pub timestamp_ns: AtomicU64,
    /// Payload bytes: the product of the frame's dimensions times the element size.
    pub data_size: AtomicU64,
    /// Dimensions of the frame (the header's `ndim`).
    pub ndim: AtomicU64,
    /// The frame's shape, each dimension at most the header's `max_shape`.
    pub dims: [AtomicU64; MAX_DIMS],
    /// XXH3-64 of the payload when the channel has checksums, else 0.
    pub checksum: AtomicU64,
    /// Pooled payloads only: the payload buffer holding this frame.
    pub chunk: AtomicU64,
    /// Channels with a flexible zone only: the state version (`flex_version`) when the frame
    /// was committed, so a reader knows which state each frame followed.
    pub state_version: AtomicU64,
    /// The frame's id in the channel it came from, plus one (a bridged frame: the source
    /// channel's id); 0: the frame originated in this channel.
    pub origin_id: AtomicU64,
    /// Reserved, zero.
    pub reserved: [u64; 3],
}

const _: () = assert!(size_of::<SlotMeta>() == 128);
const _: () = assert!(offset_of!(SlotMeta, seq) == 0);
const _: () = assert!(offset_of!(SlotMeta, frame_id) == 8);
const _: () = assert!(offset_of!(SlotMeta, timestamp_ns) == 16);
const _: () = assert!(offset_of!(SlotMeta, data_size) == 24);
const _: () = assert!(offset_of!(SlotMeta, ndim) == 32);
const _: () = assert!(offset_of!(SlotMeta, dims) == 40);
const _: () = assert!(offset_of!(SlotMeta, dims) + DIMS_IN_FIRST_LINE * 8 == 64);
const _: () = assert!(offset_of!(SlotMeta, checksum) == 72);
const _: () = assert!(offset_of!(SlotMeta, chunk) == 80);
const _: () = assert!(offset_of!(SlotMeta, state_version) == 88);
const _: () = assert!(offset_of!(SlotMeta, origin_id) == 96);
const _: () = assert!(offset_of!(SlotMeta, reserved) == 104);

/// Header of one flexible-zone buffer (64 bytes); `flex_size` bytes of state follow it.
#[repr(C, align(64))]
pub struct FlexHeader {
    /// 0: empty; odd: being written; even `2v`: holds state version v.
    pub seq: AtomicU64,
    /// Bytes of serialised state.
    pub len: AtomicU64,
    /// Reserved, zero.
    pub reserved: [u64; 6],
}

const _: () = assert!(size_of::<FlexHeader>() == 64);
const _: () = assert!(offset_of!(FlexHeader, seq) == 0);
const _: () = assert!(offset_of!(FlexHeader, len) == 8);

/// Seq word of frame `f` while it is being written.
pub const fn writing_seq(frame: u64) -> u64 {
    frame.wrapping_mul(2).wrapping_add(1)
}

/// Seq word of frame `f` once committed.
pub const fn committed_seq(frame: u64) -> u64 {
    frame.wrapping_mul(2).wrapping_add(2)
}

/// The parameters a channel is created with; everything else in the layout follows from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// A [`policy_code`].
    pub policy: u32,
    /// A [`backpressure_code`].
    pub backpressure: u32,
    /// Number of slots.
    pub slot_count: u32,
    /// Largest payload.
    pub slot_size: u64,
    /// Capacity of each flexible-zone buffer.
    pub flex_size: u64,
    /// A [`checksum_code`].
    pub checksum: u32,
    /// A [`state_format_code`].
    pub state_format: u32,
    /// A [`payload_mode_code`]. Chosen by the creator (see [`Params::payload_mode_for`]) and
    /// stored in the header: attachers follow the segment, whatever rule their build has.
    pub payload_mode: u32,
    /// What a frame holds.
    pub schema: SchemaParams,
}

/// The schema part of the parameters: element type, largest shape, application schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaParams {
    /// An [`ElementType`] code.
    pub element: u32,
    /// Dimensions (1–4).
    pub ndim: u32,
    /// The largest shape; unused dimensions are 0.
    pub max_shape: [u64; MAX_DIMS],
    /// The application's schema version (0: none).
    pub version: u32,
    /// Bytes of `name` used (0: no application schema).
    pub name_len: u32,
    /// The application's schema name, UTF-8.
    pub name: [u8; MAX_SCHEMA_NAME],
}

impl SchemaParams {
    /// The element type (the code was validated by [`Geometry::compute`]).
    pub fn element_type(&self) -> ElementType {
        ElementType::from_code(self.element).unwrap_or(ElementType::U8)
    }

    /// The largest shape.
    pub fn shape(&self) -> &[u64] {
        &self.max_shape[..(self.ndim as usize).min(MAX_DIMS)]
    }

    /// The application's schema name, if any (validated UTF-8).
    pub fn name(&self) -> Option<&str> {
        let len = (self.name_len as usize).min(MAX_SCHEMA_NAME);
        (len > 0).then(|| std::str::from_utf8(&self.name[..len]).unwrap_or(""))
    }

    /// Elements in a frame of `shape`, if the product fits in a u64.
    pub fn elements(shape: &[u64]) -> Option<u64> {
        shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d))
    }

    /// Checks the element code, the shape and the name; returns the bytes of a largest frame.
    pub fn validate(&self) -> Result<u64, LayoutError> {
        let t = ElementType::from_code(self.element)
            .ok_or_else(|| invalid("element_type", self.element.into()))?;
        if !(1..=MAX_DIMS as u32).contains(&self.ndim) {
            return Err(invalid("ndim", self.ndim.into()));
        }
        let ndim = self.ndim as usize;
        for (i, &d) in self.max_shape.iter().enumerate() {
            if (i < ndim && d == 0) || (i >= ndim && d != 0) {
                return Err(invalid("max_shape", d));
            }
        }
        let bytes = Self::elements(self.shape())
            .and_then(|n| n.checked_mul(t.size()))
            .filter(|&b| b <= MAX_TOTAL)
            .ok_or_else(|| invalid("max_shape", u64::MAX))?;
        let len = self.name_len as usize;
        if len > MAX_SCHEMA_NAME {
            return Err(invalid("schema_name_len", self.name_len.into()));
        }
        match std::str::from_utf8(&self.name[..len]) {
            Ok(name) if !name.chars().any(char::is_control) => {}
            _ => return Err(invalid("schema_name", len as u64)),
        }
        Ok(bytes)
    }
}

impl Params {
    /// The payload mode a creator picks for these parameters: pooled for lossless rings with
    /// slots of at least [`POOL_MIN_SLOT_SIZE`].
    pub fn payload_mode_for(policy: u32, backpressure: u32, slot_size: u64) -> u32 {
        if policy == policy_code::RING
            && matches!(
                backpressure,
                backpressure_code::BLOCK | backpressure_code::FAIL
            )
            && slot_size >= POOL_MIN_SLOT_SIZE
        {
            payload_mode_code::POOLED
        } else {
            payload_mode_code::RING_ORDER
        }
    }
}

/// A validated layout: parameters plus every offset, all inside `total_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// The parameters.
    pub params: Params,
    /// Consumer-table entries.
    pub consumer_capacity: u32,
    /// Offset of the consumer table in the control region.
    pub consumer_table_offset: u64,
    /// Size of the control region.
    pub control_size: u64,
    /// Offset of the slot descriptors in the data region.
    pub slot_meta_offset: u64,
    /// Offset of the flexible zone.
    pub flex_offset: u64,
    /// Bytes per flexible-zone buffer including its header.
    pub flex_stride: u64,
    /// Offset of slot 0's payload.
    pub data_offset: u64,
    /// Distance between payloads.
    pub slot_stride: u64,
    /// Size of the data region.
    pub total_size: u64,
}

/// Offset of the consumer table in the control region: right after its header.
pub const CONSUMER_TABLE_OFFSET: u64 = size_of::<Control>() as u64;
/// Size of every channel's control region: its header and the consumer table, rounded up to
/// a page.
pub const CONTROL_SIZE: u64 = (CONSUMER_TABLE_OFFSET
    + CONSUMER_CAPACITY as u64 * size_of::<ConsumerEntry>() as u64)
    .div_ceil(PAGE)
    * PAGE;
const _: () = assert!(PRODUCER_LOCK_BYTE >= CONSUMER_CAPACITY as u64);

fn round_up(v: u64, to: u64) -> Option<u64> {
    v.checked_add(to - 1).map(|x| x / to * to)
}

fn invalid(field: &'static str, value: u64) -> LayoutError {
    LayoutError::InvalidField { field, value }
}

impl Geometry {
    /// Computes the layout for `params`, checking every parameter and every sum.
    pub fn compute(params: Params) -> Result<Self, LayoutError> {
        let p = params;
        match p.policy {
            policy_code::LATEST if p.slot_count == 1 => {}
            policy_code::DOUBLE_BUFFER if p.slot_count == 2 => {}
            policy_code::RING if (1..=MAX_SLOTS).contains(&p.slot_count) => {}
            policy_code::LATEST | policy_code::DOUBLE_BUFFER | policy_code::RING => {
                return Err(invalid("slot_count", p.slot_count.into()));
            }
            other => return Err(invalid("policy", other.into())),
        }
        let lossy = p.policy != policy_code::RING;
        let bp_ok = match p.backpressure {
            backpressure_code::NONE => lossy,
            backpressure_code::BLOCK | backpressure_code::FAIL | backpressure_code::DROP_OLDEST => {
                !lossy
            }
            _ => false,
        };
        if !bp_ok {
            return Err(invalid("backpressure", p.backpressure.into()));
        }
        if !matches!(p.checksum, checksum_code::NONE | checksum_code::XXH3_64) {
            return Err(invalid("checksum", p.checksum.into()));
        }
        if !matches!(
            p.state_format,
            state_format_code::JSON | state_format_code::MSGPACK
        ) {
            return Err(invalid("state_format", p.state_format.into()));
        }
        let pool_ok = match p.payload_mode {
            payload_mode_code::RING_ORDER => true,
            // A lossy policy overwrites in place: its readers rely on fixed buffers.
            payload_mode_code::POOLED => {
                p.policy == policy_code::RING
                    && matches!(
                        p.backpressure,
                        backpressure_code::BLOCK | backpressure_code::FAIL
                    )
            }
            _ => false,
        };
        if !pool_ok {
            return Err(invalid("payload_mode", p.payload_mode.into()));
        }
        let frame_bytes = p.schema.validate()?;
        if p.slot_size == 0 || p.slot_size > MAX_TOTAL {
            return Err(invalid("slot_size", p.slot_size));
        }
        if p.slot_size != frame_bytes {
            return Err(LayoutError::Inconsistent {
                field: "slot_size",
                expected: frame_bytes,
                found: p.slot_size,
            });
        }
        if p.flex_size > MAX_TOTAL {
            return Err(invalid("flex_size", p.flex_size));
        }
        let too_big = || invalid("total_size", u64::MAX);
        let cap = CONSUMER_CAPACITY;
        let slot_meta_offset = size_of::<Header>() as u64;
        let flex_offset = slot_meta_offset
            .checked_add(u64::from(p.slot_count) * size_of::<SlotMeta>() as u64)
            .ok_or_else(too_big)?;
        let flex_stride = round_up(p.flex_size, 64)
            .and_then(|f| f.checked_add(size_of::<FlexHeader>() as u64))
            .ok_or_else(too_big)?;
        let flex_end = flex_stride
            .checked_mul(2)
            .and_then(|f| f.checked_add(flex_offset))
            .ok_or_else(too_big)?;
        let data_offset = round_up(flex_end, PAGE).ok_or_else(too_big)?;
        let slot_stride = round_up(p.slot_size, 64).ok_or_else(too_big)?;
        let total_size = slot_stride
            .checked_mul(u64::from(p.slot_count))
            .and_then(|d| d.checked_add(data_offset))
            .and_then(|t| round_up(t, PAGE))
            .ok_or_else(too_big)?;
        // A named segment holds both regions: its whole size must fit too.
        if total_size > MAX_TOTAL
            || total_size
                .checked_add(CONTROL_SIZE)
                .and_then(|t| usize::try_from(t).ok())
                .is_none()
        {
            return Err(invalid("total_size", total_size));
        }
        Ok(Self {
            params,
            consumer_capacity: cap,
            consumer_table_offset: CONSUMER_TABLE_OFFSET,
            control_size: CONTROL_SIZE,
            slot_meta_offset,
            flex_offset,
            flex_stride,
            data_offset,
            slot_stride,
            total_size,
        })
    }

    /// Reads the parameters from a published data header, recomputes the layout and checks
    /// that every stored size and offset agrees and that the data region fits in `mapped_len`
    /// bytes.
    pub fn from_header(h: &Header, mapped_len: u64) -> Result<Self, LayoutError> {
        if h.header_size as usize != size_of::<Header>() {
            return Err(LayoutError::HeaderSize {
                expected: size_of::<Header>() as u64,
                found: h.header_size.into(),
            });
        }
        if h.instance == 0 {
            return Err(invalid("instance", 0));
        }
        let params = Params {
            policy: h.policy,
            backpressure: h.backpressure,
            slot_count: h.slot_count,
            slot_size: h.slot_size,
            flex_size: h.flex_size,
            checksum: h.checksum,
            state_format: h.state_format,
            payload_mode: h.payload_mode,
            schema: SchemaParams {
                element: h.element_type,
                ndim: h.ndim,
                max_shape: h.max_shape,
                version: h.schema_version,
                name_len: h.schema_name_len,
                name: h.schema_name,
            },
        };
        let g = Self::compute(params)?;
        let checks: [(&'static str, u64, u64); 6] = [
            ("total_size", g.total_size, h.total_size),
            ("slot_stride", g.slot_stride, h.slot_stride),
            ("control_size", g.control_size, h.control_size),
            ("slot_meta_offset", g.slot_meta_offset, h.slot_meta_offset),
            ("flex_offset", g.flex_offset, h.flex_offset),
            ("data_offset", g.data_offset, h.data_offset),
        ];
        for (field, expected, found) in checks {
            if expected != found {
                return Err(LayoutError::Inconsistent {
                    field,
                    expected,
                    found,
                });
            }
        }
        if h.has_secret > 1 {
            return Err(invalid("has_secret", h.has_secret.into()));
        }
        if g.total_size > mapped_len {
            return Err(LayoutError::Truncated {
                header: g.total_size,
                actual: mapped_len,
            });
        }
        Ok(g)
    }

    /// Checks a published control header against this geometry and the data header's
    /// `instance`: sizes, offsets, capacity, liveness code, and that the region of `mapped_len`
    /// bytes holds it all. Returns its liveness code.
    pub fn check_control(
        &self,
        c: &Control,
        instance: u64,
        mapped_len: u64,
    ) -> Result<u32, LayoutError> {
        let (magic, version) = load_control_magic(c);
        if magic != CONTROL_MAGIC {
            return Err(if magic == 0 {
                LayoutError::NotInitialized
            } else {
                LayoutError::BadMagic {
                    expected: CONTROL_MAGIC,
                    found: magic,
                }
            });
        }
        if version != LAYOUT_VERSION {
            return Err(LayoutError::VersionMismatch {
                expected: LAYOUT_VERSION,
                found: version,
            });
        }
        if c.header_size as usize != size_of::<Control>() {
            return Err(LayoutError::HeaderSize {
                expected: size_of::<Control>() as u64,
                found: c.header_size.into(),
            });
        }
        if c.consumer_capacity != self.consumer_capacity {
            return Err(invalid("consumer_capacity", c.consumer_capacity.into()));
        }
        let checks: [(&'static str, u64, u64); 3] = [
            ("control_size", self.control_size, c.control_size),
            (
                "consumer_table_offset",
                self.consumer_table_offset,
                c.consumer_table_offset,
            ),
            ("instance", instance, c.instance),
        ];
        for (field, expected, found) in checks {
            if expected != found {
                return Err(LayoutError::Inconsistent {
                    field,
                    expected,
                    found,
                });
            }
        }
        if !matches!(c.liveness, liveness_code::PID | liveness_code::LOCK) {
            return Err(invalid("liveness", c.liveness.into()));
        }
        if self.control_size > mapped_len {
            return Err(LayoutError::Truncated {
                header: self.control_size,
                actual: mapped_len,
            });
        }
        Ok(c.liveness)
    }

    /// The element type of every frame.
    #[inline]
    pub fn element(&self) -> ElementType {
        self.params.schema.element_type()
    }

    /// Slot index of frame `f`.
    #[inline]
    pub fn slot_of(&self, frame: u64) -> usize {
        // slot_count ≥ 1 by validation; the result is < slot_count ≤ MAX_SLOTS. A power of two
        // (the common case) takes a mask: a 64-bit division costs tens of cycles per frame.
        let n = u64::from(self.params.slot_count.max(1));
        if n.is_power_of_two() {
            (frame & (n - 1)) as usize
        } else {
            (frame % n) as usize
        }
    }

    /// Number of slots.
    #[inline]
    pub fn slots(&self) -> u64 {
        u64::from(self.params.slot_count)
    }

    /// Whether payloads are pooled (the header's `payload_mode`; creators pick it for lossless
    /// rings with slots of at least [`POOL_MIN_SLOT_SIZE`]): each descriptor's `chunk` names the
    /// payload buffer its frame uses, and the producer reuses the most recently released
    /// buffer (still in cache) instead of rotating through all of them. Otherwise frame f's
    /// payload is buffer f mod N.
    #[inline]
    pub fn pooled(&self) -> bool {
        self.params.payload_mode == payload_mode_code::POOLED
    }

    /// The payload buffer of frame `f` whose descriptor names `chunk` (see [`Geometry::pooled`]);
    /// always < the slot count, whatever `chunk` holds.
    #[inline]
    pub fn payload_of(&self, frame: u64, chunk: u64) -> usize {
        if self.pooled() {
            self.slot_of(chunk)
        } else {
            self.slot_of(frame)
        }
    }
}

/// A mapped segment (its data and control regions) together with its validated geometry: the
/// safe window into a channel.
pub struct View {
    seg: Segment,
    geo: Geometry,
    /// A [`liveness_code`], from the control header.
    liveness: u32,
    /// The base of the data region and of the control region, inside `seg`'s mappings:
    /// taken once, every frame's accesses start from them.
    data: NonNull<u8>,
    control: NonNull<u8>,
}

// SAFETY: `data` and `control` point into mappings `seg` owns, which stay where they are when
// the view moves and live as long as it; everything reached through them is accessed through
// atomics or under the channel protocol, as for the Segment itself (Send + Sync).
unsafe impl Send for View {}
// SAFETY: as above; `&View` only hands out shared references and pointers into the mappings.
unsafe impl Sync for View {}

impl View {
    /// Wraps a segment whose headers have not been published yet (the creator's view). The
    /// caller computed `geo` and created the segment's regions with exactly its sizes.
    pub fn new_unchecked_header(
        seg: Segment,
        geo: Geometry,
        liveness: u32,
    ) -> Result<Self, LayoutError> {
        Self::check_sizes(&seg, &geo)?;
        Ok(Self::with_bases(seg, geo, liveness))
    }

    /// The view, its region bases taken from `seg` (whose sizes were checked).
    fn with_bases(seg: Segment, geo: Geometry, liveness: u32) -> Self {
        let base = |p: *mut u8| NonNull::new(p).unwrap_or(NonNull::dangling());
        let (data, control) = (base(seg.data_ptr()), base(seg.control_ptr(geo.total_size)));
        Self {
            seg,
            geo,
            liveness,
            data,
            control,
        }
    }

    fn check_sizes(seg: &Segment, geo: &Geometry) -> Result<(), LayoutError> {
        let truncated = |header: u64, actual: usize| LayoutError::Truncated {
            header,
            actual: actual as u64,
        };
        if (seg.data_len() as u64) < geo.total_size {
            return Err(truncated(geo.total_size, seg.data_len()));
        }
        let control_len = seg.control_len(geo.total_size);
        if (control_len as u64) < geo.control_size {
            return Err(truncated(geo.control_size, control_len));
        }
        Ok(())
    }

    /// The data header of a mapping at least one header long, before any validation.
    pub fn raw_header(seg: &Segment) -> Result<&Header, LayoutError> {
        if seg.data_len() < size_of::<Header>() {
            return Err(LayoutError::Truncated {
                header: size_of::<Header>() as u64,
                actual: seg.data_len() as u64,
            });
        }
        // SAFETY: the mapping is page-aligned (≥ 64, Header's alignment) and at least
        // size_of::<Header>() bytes long; every bit pattern is a valid Header (integers, byte
        // arrays and atomics). Other processes may write it concurrently only through atomics,
        // or (for the creation fields) before publishing the magic; garbage is validated
        // before use. Only loads are made through a shared reference to it, so a read-only
        // mapping serves as well.
        Ok(unsafe { &*seg.data_ptr().cast::<Header>() })
    }

    /// Validates the data header of `seg` (magic and version already checked by the caller)
    /// and its control header, and builds the view.
    pub fn attach(seg: Segment) -> Result<Self, LayoutError> {
        let h = Self::raw_header(&seg)?;
        let geo = Geometry::from_header(h, seg.data_len() as u64)?;
        let instance = h.instance;
        Self::check_sizes(&seg, &geo)?;
        // SAFETY: check_sizes found the control region at least control_size ≥
        // size_of::<Control>() bytes long; its base is page-aligned (a mapping's base, or
        // total_size, a multiple of PAGE, past it). Any bit pattern is a valid Control
        // (integers, atomics and the sync words, whose own code handles every pattern).
        let c = unsafe { &*seg.control_ptr(geo.total_size).cast::<Control>() };
        let liveness = geo.check_control(c, instance, seg.control_len(geo.total_size) as u64)?;
        Ok(Self::with_bases(seg, geo, liveness))
    }

    /// The segment.
    #[inline]
    pub fn segment(&self) -> &Segment {
        &self.seg
    }

    /// The validated geometry.
    #[inline]
    pub fn geometry(&self) -> &Geometry {
        &self.geo
    }

    /// How the owners of entries and the producer are judged alive (a [`liveness_code`]).
    #[inline]
    pub fn liveness(&self) -> u32 {
        self.liveness
    }

    /// Whether the liveness lock on `byte` of the control file is held (by anyone, this view's
    /// segment included).
    #[inline]
    pub fn lock_held(&self, byte: u64) -> bool {
        self.seg.byte_held(byte)
    }

    /// The data header.
    #[inline]
    pub fn header(&self) -> &Header {
        // SAFETY: as in `raw_header`; the data region is ≥ total_size ≥ size_of::<Header>().
        unsafe { &*self.data.as_ptr().cast::<Header>() }
    }

    /// The control header.
    #[inline]
    pub fn control(&self) -> &Control {
        // SAFETY: as in `attach`: the control region (checked by `check_sizes`) is at least
        // size_of::<Control>() bytes and page-aligned; any bit pattern is valid. Consumers
        // write it, so it is always mapped writable.
        unsafe { &*self.control.as_ptr().cast::<Control>() }
    }

    /// Consumer entry `i`, or `None` if `i` is out of range.
    #[inline]
    pub fn consumer(&self, i: usize) -> Option<&ConsumerEntry> {
        if i >= self.geo.consumer_capacity as usize {
            return None;
        }
        let off = self.geo.consumer_table_offset as usize + i * size_of::<ConsumerEntry>();
        // SAFETY: i < capacity, so [off, off + 128) lies inside the consumer table, inside the
        // control region (CONTROL_SIZE covers the table, checked by `check_sizes`); off is
        // 64-aligned (384 + 128 i) and the region's base is page-aligned. All fields are
        // atomics: any bit pattern is valid.
        Some(unsafe { &*self.control.as_ptr().add(off).cast::<ConsumerEntry>() })
    }

    /// Descriptor of the slot that frame `f` uses.
    #[inline]
    pub fn slot_meta(&self, frame: u64) -> &SlotMeta {
        let slot = self.geo.slot_of(frame);
        let off = self.geo.slot_meta_offset as usize + slot * size_of::<SlotMeta>();
        // SAFETY: slot < slot_count, so [off, off+128) lies inside the descriptor array, inside
        // the mapping; off is 64-aligned. All fields are atomics or plain integers.
        unsafe { &*self.data.as_ptr().add(off).cast::<SlotMeta>() }
    }

    /// Start of payload buffer `index` (reduced modulo the slot count); `slot_size` bytes are
    /// valid there. [`Geometry::payload_of`] says which buffer a frame uses.
    #[inline]
    fn payload_ptr(&self, index: usize) -> *mut u8 {
        let slot = self.geo.slot_of(index as u64) as u64;
        // slot * stride + data_offset + slot_size ≤ total_size by Geometry::compute.
        let off = (self.geo.data_offset + slot * self.geo.slot_stride) as usize;
        // SAFETY: off < total_size ≤ mapping length (checked in compute / from_header).
        unsafe { self.data.as_ptr().add(off) }
    }

    /// Asks the CPU to fetch, for writing, the lines the producer will write for frame `f`:
    /// its descriptor's first line and the payload lines of its first `len` bytes (at most
    /// [`PREFETCH_MAX_BYTES`]) and last byte.
    ///
    /// A reader on another core that read the slot last holds those lines; taking them back
    /// costs a cross-core transfer each (about 160 ns on the development host), and a store
    /// waiting for one holds up every later store of the producer. Requested a few frames
    /// early, the transfers overlap with the producer's work on the frames in between. A hint
    /// only: it changes no memory, and a CPU without `PREFETCHW` skips it.
    #[inline]
    pub fn prefetch_for_write(&self, f: u64, len: u64) {
        #[cfg(target_arch = "x86_64")]
        {
            if !has_prefetchw() {
                return;
            }
            let len = len.min(self.geo.params.slot_size) as usize;
            let meta = std::ptr::from_ref(self.slot_meta(f)).cast::<u8>();
            let data = self.payload_ptr(self.geo.slot_of(f)).cast_const();
            prefetchw(meta);
            let mut off = 0;
            while off < len.min(PREFETCH_MAX_BYTES) {
                // SAFETY: off < len ≤ slot_size: inside the slot, inside the mapping.
                prefetchw(unsafe { data.add(off) });
                off += 64;
            }
            if len > off {
                // SAFETY: len - 1 < slot_size: inside the slot.
                prefetchw(unsafe { data.add(len - 1) });
            }
        }
    }

    /// The first `len` bytes of payload buffer `index`, in place, as a slice of `T`. `len` is
    /// clamped to slot_size and rounded down to whole elements.
    ///
    /// # Safety
    /// No process may write these bytes while the returned slice lives: the caller holds the
    /// frame in this buffer under the lossless-ring protocol (its consumer position keeps the
    /// producer off the buffer), or is the producer itself, which alone writes payloads.
    #[inline]
    pub unsafe fn payload_held<T: bytemuck::Pod>(&self, index: usize, len: u64) -> &[T] {
        let len = len.min(self.geo.params.slot_size) as usize;
        let ptr = self.payload_ptr(index);
        const { assert!(std::mem::align_of::<T>() <= 64) };
        // SAFETY: len ≤ slot_size bytes from payload_ptr lie inside the mapping, which lives as
        // long as &self; the bytes are always initialised (shared memory starts zeroed); the
        // pointer is 64-aligned (data_offset is page-aligned and slot_stride a multiple of 64),
        // which T's alignment (≤ 64, asserted above) divides; T is Pod, so any bytes are a
        // valid T; and no write happens while the slice lives (the caller's contract).
        unsafe { std::slice::from_raw_parts(ptr.cast::<T>(), len / std::mem::size_of::<T>()) }
    }

    /// Copies the first `dst.len()` (≤ slot_size) bytes of payload buffer `index` into `dst`
    /// with per-byte atomic loads (`atomic-memcpy`), so the copy is defined even while the
    /// producer rewrites the buffer; whether the bytes belong to one frame is the seq
    /// re-check's business.
    #[inline]
    pub fn payload_copy(&self, index: usize, dst: &mut [u8]) {
        let len = (dst.len() as u64).min(self.geo.params.slot_size) as usize;
        atomic_copy(self.payload_ptr(index), &mut dst[..len]);
    }

    /// Element `i` of payload buffer `index` read as a `T` with atomic loads, or `None` if the
    /// element lies beyond the slot.
    #[inline]
    pub fn payload_element<T: bytemuck::Pod>(&self, index: usize, i: usize) -> Option<T> {
        let size = std::mem::size_of::<T>();
        let end = i.checked_add(1)?.checked_mul(size)?;
        if end as u64 > self.geo.params.slot_size {
            return None;
        }
        const { assert!(std::mem::align_of::<T>() <= 64) };
        // SAFETY: [i·size, end) lies inside the slot (checked above), inside the mapping; the
        // slot is 64-aligned and size is a multiple of T's alignment, so the element is aligned.
        let src = unsafe { self.payload_ptr(index).add(i * size) }
            .cast::<T>()
            .cast_const();
        // SAFETY: `src` is valid for reads of one aligned T (above); atomic_load never races in
        // the language's sense; its bytes are initialised (shared memory starts zeroed).
        let v = unsafe { atomic_memcpy::atomic_load(src, Ordering::Relaxed) };
        // SAFETY: every byte was loaded from initialised memory, and T is Pod: any bytes are a
        // valid T.
        Some(unsafe { v.assume_init() })
    }

    /// The first `len` (≤ slot_size) bytes of payload buffer `index` as a slice of `T`, for
    /// the producer to fill.
    ///
    /// # Safety
    /// The caller is the channel's only producer (enforced by the producer identity in the
    /// header), has marked every frame whose descriptor names this buffer as overwritten or
    /// being written (seq), and holds no other slice of this buffer from this view while the
    /// returned one lives.
    #[allow(clippy::mut_from_ref)] // exclusivity is the caller's documented contract
    #[inline]
    pub unsafe fn payload_mut<T: bytemuck::Pod>(&self, index: usize, len: u64) -> &mut [T] {
        let len = len.min(self.geo.params.slot_size) as usize;
        const { assert!(std::mem::align_of::<T>() <= 64) };
        // SAFETY: in bounds and aligned as in `payload_held`; T is Pod, so any bytes are a valid
        // T and any T written is valid bytes; exclusivity within this process is the caller's
        // contract; readers in other mappings read either held frames (which the producer never
        // writes) or with atomic copies checked by the seqlock protocol.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.payload_ptr(index).cast::<T>(),
                len / std::mem::size_of::<T>(),
            )
        }
    }

    /// Flexible-zone buffer `b` (0 or 1): its header and a pointer to its `flex_size` bytes.
    pub fn flex(&self, b: usize) -> (&FlexHeader, *mut u8) {
        let b = (b & 1) as u64;
        let off = (self.geo.flex_offset + b * self.geo.flex_stride) as usize;
        // SAFETY: both buffers lie in [flex_offset, flex_offset + 2 flex_stride) ⊂ mapping;
        // off is 64-aligned (flex_offset and flex_stride are multiples of 64). All fields are
        // atomics or integers.
        let h = unsafe { &*self.data.as_ptr().add(off).cast::<FlexHeader>() };
        // SAFETY: the data follow the 64-byte header inside the same buffer.
        let data = unsafe { self.data.as_ptr().add(off + size_of::<FlexHeader>()) };
        (h, data)
    }

    /// Copies `len` (≤ flex_size) bytes out of flexible-zone buffer `b`, with atomic loads
    /// (the producer may be rewriting them: the caller re-checks the buffer's seq word).
    pub fn flex_read(&self, b: usize, len: u64) -> Vec<u8> {
        let len = len.min(self.geo.params.flex_size) as usize;
        let (_, p) = self.flex(b);
        let mut v = vec![0u8; len];
        atomic_copy(p, &mut v);
        v
    }

    /// Copies `src` (≤ flex_size bytes) into flexible-zone buffer `b`.
    ///
    /// # Safety
    /// The caller is the only producer and has marked buffer `b` as being written (odd seq).
    pub unsafe fn flex_write(&self, b: usize, src: &[u8]) {
        let len = (src.len() as u64).min(self.geo.params.flex_size) as usize;
        let (_, p) = self.flex(b);
        // SAFETY: `len` ≤ flex_size bytes at p lie inside the mapping; src is a separate
        // allocation. Exclusivity among writers is the caller's contract.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), p, len) };
    }
}

/// Copies `dst.len()` bytes from `src` (8-aligned, inside the mapping) into `dst` with atomic
/// loads: 256-byte blocks through `atomic_memcpy::atomic_load` (which loads them word by word),
/// then the last words and bytes. Used for every read of bytes a producer may be rewriting:
/// a plain copy racing a write is undefined behaviour, an atomic one is not (its result may be
/// a mix of frames, which the caller's seq re-check detects).
fn atomic_copy(src: *const u8, dst: &mut [u8]) {
    type Block = [u64; 32];
    const BLOCK: usize = std::mem::size_of::<Block>();
    let len = dst.len();
    let mut off = 0;
    while off + BLOCK <= len {
        // SAFETY: [src + off, src + off + BLOCK) lies inside the region the caller named; src
        // is 8-aligned and off a multiple of 256, so the block is aligned for u64; the bytes
        // are initialised (shared memory starts zeroed). atomic_load reads them atomically.
        let block =
            unsafe { atomic_memcpy::atomic_load(src.add(off).cast::<Block>(), Ordering::Relaxed) };
        // SAFETY: `block` holds BLOCK initialised bytes (loaded from initialised memory) and
        // dst[off..off + BLOCK] is in bounds; the regions are distinct.
        unsafe {
            std::ptr::copy_nonoverlapping(
                block.as_ptr().cast::<u8>(),
                dst.as_mut_ptr().add(off),
                BLOCK,
            )
        };
        off += BLOCK;
    }
    while off + 8 <= len {
        // SAFETY: as above, for one aligned u64.
        let word =
            unsafe { atomic_memcpy::atomic_load(src.add(off).cast::<u64>(), Ordering::Relaxed) };
        // SAFETY: initialised bytes (as above); any bits are a u64.
        dst[off..off + 8].copy_from_slice(&unsafe { word.assume_init() }.to_ne_bytes());
        off += 8;
    }
    while off < len {
        // SAFETY: as above, for one byte.
        let byte = unsafe { atomic_memcpy::atomic_load(src.add(off), Ordering::Relaxed) };
        // SAFETY: an initialised byte.
        dst[off] = unsafe { byte.assume_init() };
        off += 1;
    }
}

/// Publishes a freshly initialised header: the version, then the magic, both Release.
pub fn publish_magic(h: &Header) {
    h.layout_version.store(LAYOUT_VERSION, Ordering::Release);
    // SYNC POINT: every creation field and the zeroed regions happen-before any process that
    // loads MAGIC from `magic` with Acquire (see `load_magic`).
    h.magic.store(MAGIC, Ordering::Release);
}

/// Publishes a freshly initialised control header: the version, then the magic, both Release.
pub fn publish_control_magic(c: &Control) {
    c.layout_version.store(LAYOUT_VERSION, Ordering::Release);
    // SYNC POINT: the control header's creation fields and the zeroed table happen-before any
    // process that loads CONTROL_MAGIC with Acquire (see `load_control_magic`).
    c.magic.store(CONTROL_MAGIC, Ordering::Release);
}

/// Loads the control header's magic and version.
pub fn load_control_magic(c: &Control) -> (u64, u32) {
    // SYNC POINT: pairs with the Release store in `publish_control_magic`.
    let magic = c.magic.load(Ordering::Acquire);
    let version = c.layout_version.load(Ordering::Acquire);
    (magic, version)
}

/// Loads the magic and the version for an attach.
pub fn load_magic(h: &Header) -> (u64, u32) {
    // SYNC POINT: pairs with the Release store in `publish_magic`; after seeing MAGIC, the
    // creation fields are complete.
    let magic = h.magic.load(Ordering::Acquire);
    let version = h.layout_version.load(Ordering::Acquire);
    (magic, version)
}

/// Writes the creation fields of a fresh (all-zero) data header, and its `instance`. The magic
/// is published separately.
///
/// # Safety
/// No other process may access the data region yet: the segment was just created exclusively
/// (or is a memfd no other process has) and its magic is still zero, so attachers wait instead
/// of reading.
pub unsafe fn init_header(view: &View, secret: Option<([u8; 16], [u8; 32])>, instance: u64) {
    let g = view.geo;
    let p = view.data.as_ptr().cast::<Header>();
    // SAFETY: `p` points to a header-sized, aligned, zeroed region only we access (see the
    // function's contract); we write plain fields through the raw pointer.
    unsafe {
        (*p).header_size = size_of::<Header>() as u32;
        (*p).total_size = g.total_size;
        (*p).policy = g.params.policy;
        (*p).backpressure = g.params.backpressure;
        (*p).slot_count = g.params.slot_count;
        (*p).slot_size = g.params.slot_size;
        (*p).slot_stride = g.slot_stride;
        (*p).flex_size = g.params.flex_size;
        (*p).control_size = g.control_size;
        (*p).slot_meta_offset = g.slot_meta_offset;
        (*p).flex_offset = g.flex_offset;
        (*p).data_offset = g.data_offset;
        (*p).checksum = g.params.checksum;
        (*p).state_format = g.params.state_format;
        (*p).payload_mode = g.params.payload_mode;
        let schema = g.params.schema;
        (*p).element_type = schema.element;
        (*p).ndim = schema.ndim;
        (*p).max_shape = schema.max_shape;
        (*p).schema_version = schema.version;
        (*p).schema_name_len = schema.name_len;
        (*p).schema_name = schema.name;
        if let Some((salt, hash)) = secret {
            (*p).has_secret = 1;
            (*p).secret_salt = salt;
            (*p).secret_hash = hash;
        }
        (*p).instance = instance;
    }
}

/// Replaces the data header's `instance` (a memfd data region made as a copy of another, for
/// its new incarnation).
///
/// # Safety
/// As for [`init_header`]: no other process may map the data region yet.
pub unsafe fn set_instance(view: &View, instance: u64) {
    let p = view.data.as_ptr().cast::<Header>();
    // SAFETY: an aligned header only we access (the contract); a plain field write.
    unsafe { (*p).instance = instance };
}

/// Copies the whole data region of `src` into the (equally large) data region of `dst`, with
/// atomic loads from `src`.
///
/// # Safety
/// No other process may access `dst`'s data region yet, and this process holds no reference
/// into it while the copy runs.
pub unsafe fn copy_data(src: &View, dst: &View) {
    let len = src.geo.total_size.min(dst.geo.total_size) as usize;
    // SAFETY: `len` bytes lie inside dst's data mapping (its geometry's total_size, checked
    // at construction); nothing else reads or writes them now (the contract); u8 has no
    // invalid values. The source is 8-aligned (a mapping base) and `len` bytes of it lie
    // inside src's mapping.
    let dst_bytes = unsafe { std::slice::from_raw_parts_mut(dst.data.as_ptr(), len) };
    atomic_copy(src.data.as_ptr(), dst_bytes);
}

/// Writes the creation fields of a fresh (all-zero) control header. The magic is published
/// separately ([`publish_control_magic`]).
///
/// # Safety
/// No other process may access the control region yet (as for [`init_header`]).
pub unsafe fn init_control(view: &View, instance: u64, liveness: u32) {
    let g = view.geo;
    let p = view.control.as_ptr().cast::<Control>();
    // SAFETY: `p` points to a control-header-sized, aligned, zeroed region only we access (the
    // contract); plain field writes through the raw pointer.
    unsafe {
        (*p).header_size = size_of::<Control>() as u32;
        (*p).control_size = g.control_size;
        (*p).consumer_capacity = g.consumer_capacity;
        (*p).liveness = liveness;
        (*p).consumer_table_offset = g.consumer_table_offset;
        (*p).instance = instance;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: u64) -> SchemaParams {
        SchemaParams {
            element: ElementType::U8.code(),
            ndim: 1,
            max_shape: [n, 0, 0, 0],
            version: 0,
            name_len: 0,
            name: [0; MAX_SCHEMA_NAME],
        }
    }

    fn ring(slots: u32, slot_size: u64, flex_size: u64) -> Params {
        Params {
            policy: policy_code::RING,
            backpressure: backpressure_code::BLOCK,
            slot_count: slots,
            slot_size,
            flex_size,
            checksum: checksum_code::NONE,
            state_format: state_format_code::JSON,
            payload_mode: payload_mode_code::RING_ORDER,
            schema: bytes(slot_size),
        }
    }

    #[test]
    fn the_documented_offsets_follow_from_the_parameters() {
        let g = Geometry::compute(ring(4, 1000, 100)).unwrap();
        assert_eq!(g.slot_meta_offset, 512);
        assert_eq!(g.flex_offset, 512 + 4 * 128);
        assert_eq!(g.flex_stride, 64 + 128);
        assert_eq!(g.data_offset, 4096);
        assert_eq!(g.slot_stride, 1024);
        assert_eq!(g.total_size, 8192);
        assert_eq!(g.total_size % PAGE, 0);
        assert_eq!(g.consumer_table_offset, 384);
        assert_eq!(g.control_size, 4096);
        assert!(g.consumer_table_offset + 16 * 64 <= g.control_size);
    }

    #[test]
    fn impossible_parameters_are_refused_without_overflow() {
        for p in [
            ring(0, 64, 0),
            ring(MAX_SLOTS + 1, 64, 0),
            ring(4, 0, 0),
            Params {
                schema: bytes(u64::MAX),
                ..ring(4, u64::MAX, 0)
            },
            ring(4, 64, u64::MAX),
            Params {
                schema: bytes(MAX_TOTAL),
                ..ring(MAX_SLOTS, MAX_TOTAL, 0)
            },
            Params {
                policy: policy_code::LATEST,
                ..ring(2, 64, 0)
            },
            Params {
                policy: 9,
                ..ring(2, 64, 0)
            },
            Params {
                backpressure: backpressure_code::NONE,
                ..ring(2, 64, 0)
            },
            Params {
                checksum: 7,
                ..ring(2, 64, 0)
            },
            Params {
                state_format: 0,
                ..ring(2, 64, 0)
            },
            Params {
                payload_mode: 2,
                ..ring(2, 64, 0)
            },
            // A slot size that is not the largest frame's.
            Params {
                slot_size: 65,
                ..ring(2, 64, 0)
            },
            Params {
                schema: SchemaParams {
                    element: 0,
                    ..bytes(64)
                },
                ..ring(2, 64, 0)
            },
            Params {
                schema: SchemaParams {
                    ndim: 5,
                    ..bytes(64)
                },
                ..ring(2, 64, 0)
            },
            Params {
                schema: SchemaParams {
                    max_shape: [64, 1, 0, 0],
                    ..bytes(64)
                },
                ..ring(2, 64, 0)
            },
            Params {
                schema: SchemaParams {
                    element: ElementType::U64.code(),
                    ndim: 4,
                    max_shape: [u64::MAX; 4],
                    ..bytes(64)
                },
                ..ring(2, 64, 0)
            },
            Params {
                schema: SchemaParams {
                    name_len: 65,
                    ..bytes(64)
                },
                ..ring(2, 64, 0)
            },
            Params {
                policy: policy_code::DOUBLE_BUFFER,
                backpressure: backpressure_code::NONE,
                payload_mode: payload_mode_code::POOLED,
                ..ring(2, 64, 0)
            },
        ] {
            assert!(Geometry::compute(p).is_err(), "{p:?}");
        }
    }

    #[test]
    fn seq_words_are_odd_while_written_and_even_once_committed() {
        for f in [0, 1, 7, u64::MAX / 2 - 1] {
            assert_eq!(writing_seq(f) % 2, 1);
            assert_eq!(committed_seq(f) % 2, 0);
            assert_ne!(committed_seq(f), 0, "0 means empty");
        }
    }

    /// Size of the field `f` selects (for the table check below).
    fn size_of_field<T, F>(_: fn(&T) -> &F) -> usize {
        size_of::<F>()
    }

    macro_rules! fields {
        ($t:ty: $($f:ident),* $(,)?) => {
            vec![$((stringify!($f), offset_of!($t, $f), size_of_field(|x: &$t| &x.$f))),*]
        };
    }

    /// The rows of the markdown table under heading `heading` of `doc`: cells, trimmed, with
    /// backticks removed and `\|` unescaped.
    fn table(doc: &str, heading: &str) -> Vec<Vec<String>> {
        let start = doc
            .find(&format!("\n## {heading}"))
            .unwrap_or_else(|| panic!("no section {heading:?} in SHM_LAYOUT.md"));
        let section = &doc[start + 1..];
        let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
        section
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .skip(2) // the header row and the separator
            .map(|l| {
                let l = l.replace("\\|", "\u{0}");
                l.trim_matches('|')
                    .split('|')
                    .map(|c| c.trim().replace('`', "").replace('\u{0}', "|"))
                    .collect()
            })
            .collect()
    }

    /// Checks one struct's table: every documented offset and size is the code's, every field
    /// of the code is documented, names agree (`reserved` rows match the code's `reserved*`).
    fn check_struct(
        doc: &str,
        heading: &str,
        size: usize,
        fields: Vec<(&'static str, usize, usize)>,
    ) {
        let rows = table(doc, heading);
        assert_eq!(rows.len(), fields.len(), "{heading}: rows and fields");
        let mut covered = 0;
        for row in &rows {
            let offset: usize = row[0]
                .parse()
                .unwrap_or_else(|_| panic!("{heading}: {row:?}"));
            let bytes: usize = row[1]
                .parse()
                .unwrap_or_else(|_| panic!("{heading}: {row:?}"));
            let name = row[2].split_whitespace().next().unwrap_or("");
            let (code, _, code_size) = fields
                .iter()
                .find(|(_, o, _)| *o == offset)
                .unwrap_or_else(|| panic!("{heading}: no field at offset {offset} ({row:?})"));
            assert_eq!(bytes, *code_size, "{heading}: size of {code} at {offset}");
            if name == "reserved" || name == "data" {
                assert!(
                    code.starts_with("reserved") || *code == "data",
                    "{heading}: {code} at {offset} is documented as {name}"
                );
            } else {
                assert_eq!(name, *code, "{heading}: the field at {offset}");
            }
            covered += bytes;
        }
        assert_eq!(covered, size, "{heading}: the table covers the struct");
    }

    #[test]
    fn the_layout_document_matches_the_code() {
        let doc = include_str!("../../../../docs/SHM_LAYOUT.md");
        assert!(
            doc.starts_with(&format!(
                "# Shared-memory channel layout (version {LAYOUT_VERSION})"
            )),
            "the title names the layout version"
        );
        check_struct(
            doc,
            "Header",
            size_of::<Header>(),
            fields!(Header: magic, layout_version, header_size, total_size, policy,
                backpressure, slot_count, reserved0, slot_size, slot_stride, flex_size,
                control_size, slot_meta_offset, flex_offset, data_offset, checksum,
                state_format, has_secret, payload_mode, secret_salt, secret_hash, element_type,
                ndim, schema_version, schema_name_len, instance, reserved1, producer_pid,
                producer_start_time, producer_heartbeat_ns, producer_attaches, dropped,
                flex_version, commit_fence, reserved2, reserved3, write_pos, space_bound,
                reserved4, commit_pos, reserved5, max_shape, schema_name, reserved6),
        );
        check_struct(
            doc,
            "Control header",
            size_of::<Control>(),
            fields!(Control: magic, layout_version, header_size, control_size,
                consumer_capacity, liveness, consumer_table_offset, instance,
                consumers_evicted, reserved1, data_event, data_waiting, reserved2, space_event,
                producer_waiting, reserved3, overwritten, reserved4, producer_mutex, reserved5),
        );
        check_struct(
            doc,
            "Consumer table entry",
            size_of::<ConsumerEntry>(),
            fields!(ConsumerEntry: state, start_time, heartbeat_ns, position, held, received,
                missed, owner_tag, delivery, reserved1, delivery_param, cursor, dropped,
                reserved2),
        );
        check_struct(
            doc,
            "Slot descriptor",
            size_of::<SlotMeta>(),
            fields!(SlotMeta: seq, frame_id, timestamp_ns, data_size, ndim, dims, checksum,
                chunk, state_version, origin_id, reserved),
        );
        // The flexible-zone table documents the header and the data that follows it.
        let mut flex = fields!(FlexHeader: seq, len, reserved);
        flex.push(("data", size_of::<FlexHeader>(), 0));
        let rows = table(doc, "Flexible-zone buffer");
        assert_eq!(rows.last().map(|r| r[1].as_str()), Some("F"));
        let doc_without_data = doc.replace("| 64 | F | data |", "| 64 | 0 | data |");
        check_struct(
            &doc_without_data,
            "Flexible-zone buffer",
            size_of::<FlexHeader>(),
            flex,
        );

        // Constants stated in the header tables.
        let meaning_in = |heading: &str, field: &str| {
            table(doc, heading)
                .iter()
                .find(|r| r[2].split_whitespace().next() == Some(field))
                .map(|r| r[3].clone())
                .unwrap_or_else(|| panic!("no row for {field} in {heading}"))
        };
        let meaning = |field: &str| meaning_in("Header", field);
        assert!(
            meaning("magic").contains(&format!("{MAGIC:#x}")),
            "the magic value"
        );
        assert!(meaning("magic").contains("LABHUBDB"));
        assert_eq!(MAGIC.to_le_bytes(), *b"LABHUBDB");
        assert!(meaning("layout_version").starts_with(&LAYOUT_VERSION.to_string()));
        assert_eq!(meaning("header_size"), size_of::<Header>().to_string());
        assert_eq!(meaning("control_size"), CONTROL_SIZE.to_string());
        let g = Geometry::compute(ring(4, 1000, 100)).unwrap();
        assert_eq!(meaning("slot_meta_offset"), g.slot_meta_offset.to_string());
        assert_eq!(
            meaning("flex_offset"),
            format!("{} + 128 N", g.slot_meta_offset)
        );
        let control = |field: &str| meaning_in("Control header", field);
        assert!(control("magic").contains(&format!("{CONTROL_MAGIC:#x}")));
        assert!(control("magic").contains("LABHUBCT"));
        assert_eq!(CONTROL_MAGIC.to_le_bytes(), *b"LABHUBCT");
        assert!(control("layout_version").starts_with(&LAYOUT_VERSION.to_string()));
        assert_eq!(control("header_size"), size_of::<Control>().to_string());
        assert_eq!(control("control_size"), CONTROL_SIZE.to_string());
        assert_eq!(control("consumer_capacity"), CONSUMER_CAPACITY.to_string());
        assert_eq!(
            control("consumer_table_offset"),
            CONSUMER_TABLE_OFFSET.to_string()
        );
        assert!(control("liveness").contains(&format!("{} pid", liveness_code::PID)));
        assert!(control("liveness").contains(&format!("{} lock", liveness_code::LOCK)));
        assert!(control("liveness").contains(&PRODUCER_LOCK_BYTE.to_string()));

        // The regions tables.
        let data = table(doc, "Data region");
        assert_eq!(
            data[0][..2],
            ["0".to_owned(), size_of::<Header>().to_string()]
        );
        assert_eq!(data[1][0], g.slot_meta_offset.to_string());
        assert!(data[1][1].starts_with(&format!("N × {}", size_of::<SlotMeta>())));
        let regions = table(doc, "Control region");
        assert_eq!(
            regions[0][..2],
            ["0".to_owned(), size_of::<Control>().to_string()]
        );
        assert_eq!(regions[1][0], CONSUMER_TABLE_OFFSET.to_string());
        assert!(regions[1][1].ends_with(&format!(
            "= {}",
            CONSUMER_CAPACITY as usize * size_of::<ConsumerEntry>()
        )));
        let table_end = CONSUMER_TABLE_OFFSET as usize
            + CONSUMER_CAPACITY as usize * size_of::<ConsumerEntry>();
        assert_eq!(regions[2][0], table_end.to_string());
        assert!(regions[2][2].ends_with(&format!("= {CONTROL_SIZE}")));

        // The element types: code, name, size, numpy dtype.
        let elements = table(doc, "Element types");
        assert_eq!(elements.len(), crate::shm::element::ALL.len());
        for (row, t) in elements.iter().zip(crate::shm::element::ALL) {
            assert_eq!(row[0], t.code().to_string(), "{t}");
            assert_eq!(row[1], t.name(), "{t}");
            assert_eq!(row[2], t.size().to_string(), "{t}");
            assert_eq!(row[3], t.numpy_dtype(), "{t}");
        }
    }
}
