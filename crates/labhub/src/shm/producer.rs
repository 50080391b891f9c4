//! The producer side of a channel: create or re-attach, publish frames, write the state.

use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, Instant};

use super::error::{ChannelError, PublishError, StateError};
use super::layout::{self, View, backpressure_code, consumer_state, policy_code};
use super::segment::{self, Segment};
use super::sync_impl::ProcessId;
use super::{Backpressure, ChannelConfig, ChannelStats, FrameMeta, Policy, flex};
use crate::sys;

/// How long a producer re-attaching waits for a half-created segment to be published.
const REATTACH_WAIT: Duration = Duration::from_secs(2);
/// While blocked on a full ring, how often the producer re-checks whether the consumers holding
/// it back are still alive.
const LIVENESS_INTERVAL: Duration = Duration::from_millis(20);
/// How long a producer blocked on a full ring spins before sleeping.
const SPIN_BEFORE_SLEEP: Duration = Duration::from_micros(20);

/// The single writer of a channel.
///
/// Dropping it leaves the channel in place (consumers keep their mappings and the last frames);
/// a producer created later under the same name re-attaches and continues the frame ids.
pub struct Producer {
    view: View,
    config: ChannelConfig,
    next_frame: u64,
    /// Frames below this id need no consumer-table scan (ring policies).
    space_bound: u64,
    me: ProcessId,
    /// This process is registered for the asymmetric fence: commits need no full barrier.
    light_commit: bool,
    /// How many frames ahead `begin_publish` prefetches slots for writing (0: never).
    prefetch_ahead: u64,
    /// Length of the last frame published: the guess for the frames ahead.
    last_len: u64,
    /// Pooled payloads (see `Geometry::pooled`): which frame each buffer holds.
    pool: Option<PayloadPool>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("channel", &self.view.segment().channel())
            .field("next_frame", &self.next_frame)
            .finish_non_exhaustive()
    }
}

fn mismatch(
    channel: &str,
    field: &'static str,
    expected: impl ToString,
    found: impl ToString,
) -> ChannelError {
    ChannelError::ConfigMismatch {
        channel: channel.to_owned(),
        field,
        expected: expected.to_string(),
        found: found.to_string(),
    }
}

fn policy_name(code: u32) -> &'static str {
    match code {
        policy_code::LATEST => "latest",
        policy_code::DOUBLE_BUFFER => "double-buffer",
        policy_code::RING => "ring",
        _ => "unknown",
    }
}

fn backpressure_name(code: u32) -> &'static str {
    match code {
        backpressure_code::NONE => "none",
        backpressure_code::BLOCK => "block",
        backpressure_code::FAIL => "fail",
        backpressure_code::DROP_OLDEST => "drop-oldest",
        _ => "unknown",
    }
}

impl Producer {
    /// Creates channel `name`, or re-attaches to it if it exists, has the same configuration and
    /// no live producer (its previous producer exited or died); frame ids then continue.
    ///
    /// Errors: an invalid name or configuration, [`ChannelError::ChannelBusy`] if a live producer
    /// owns the channel, [`ChannelError::ConfigMismatch`] naming the first differing field.
    pub fn create(name: &str, config: ChannelConfig) -> Result<Self, ChannelError> {
        segment::validate_name(name)?;
        let params = config.params();
        let geo = layout::Geometry::compute(params).map_err(|e| ChannelError::InvalidConfig {
            field: match e {
                super::LayoutError::InvalidField { field, .. } => field,
                _ => "size",
            },
            reason: e.to_string(),
        })?;
        let me = current_process(name)?;
        match Segment::create(name, geo.total_size)? {
            Some(seg) => {
                let view = View::new_unchecked_header(seg, geo).map_err(|source| {
                    ChannelError::Layout {
                        channel: name.to_owned(),
                        source,
                    }
                })?;
                let secret = config.secret.as_ref().map(|s| {
                    let salt = super::random_salt();
                    (salt, s.hash(&salt))
                });
                // SAFETY: we just created the segment exclusively and have not published its
                // magic, so no other process reads the header yet.
                unsafe { layout::init_header(&view, secret) };
                let h = view.header();
                h.producer_pid.store(u64::from(me.pid), Ordering::Relaxed);
                h.producer_start_time
                    .store(me.start_time, Ordering::Relaxed);
                h.producer_heartbeat_ns
                    .store(sys::monotonic_coarse_ns(), Ordering::Relaxed);
                h.producer_attaches.store(1, Ordering::Relaxed);
                let light_commit = use_light_commit(geo.params.slot_size);
                h.commit_fence
                    .store(commit_fence_for(light_commit), Ordering::Relaxed);
                layout::publish_magic(h);
                if !view.segment().publish()? {
                    // Another producer created the channel meanwhile: ours was never seen.
                    drop(view);
                    return Self::reattach(name, config, me);
                }
                tracing::debug!(channel = name, size = geo.total_size, "created channel");
                let pool = PayloadPool::new(&view);
                Ok(Self {
                    prefetch_ahead: prefetch_ahead(&config, pool.is_some()),
                    pool,
                    view,
                    last_len: config.slot_size,
                    config,
                    next_frame: 0,
                    space_bound: 0,
                    me,
                    light_commit,
                })
            }
            None => Self::reattach(name, config, me),
        }
    }

    fn reattach(name: &str, config: ChannelConfig, me: ProcessId) -> Result<Self, ChannelError> {
        let view = super::open_view(name, REATTACH_WAIT)?;
        let want = config.params();
        let have = view.geometry().params;
        if want.policy != have.policy {
            return Err(mismatch(
                name,
                "policy",
                policy_name(want.policy),
                policy_name(have.policy),
            ));
        }
        if want.slot_count != have.slot_count {
            return Err(mismatch(
                name,
                "slot_count",
                want.slot_count,
                have.slot_count,
            ));
        }
        if want.backpressure != have.backpressure {
            return Err(mismatch(
                name,
                "backpressure",
                backpressure_name(want.backpressure),
                backpressure_name(have.backpressure),
            ));
        }
        if want.slot_size != have.slot_size {
            return Err(mismatch(name, "slot_size", want.slot_size, have.slot_size));
        }
        if want.flex_size != have.flex_size {
            return Err(mismatch(name, "flex_size", want.flex_size, have.flex_size));
        }
        if want.checksum != have.checksum {
            return Err(mismatch(name, "checksum", want.checksum, have.checksum));
        }
        if want.state_format != have.state_format {
            return Err(mismatch(
                name,
                "state_format",
                want.state_format,
                have.state_format,
            ));
        }
        if !super::check_secret(&view, config.secret.as_ref()) {
            return Err(mismatch(
                name,
                "secret",
                "the given secret",
                "another secret",
            ));
        }
        let light_commit = use_light_commit(have.slot_size);
        let next_frame = Self::take_over(name, &view, me, light_commit)?;
        tracing::debug!(channel = name, next_frame, "re-attached producer");
        let pool = PayloadPool::rebuild(&view);
        Ok(Self {
            prefetch_ahead: prefetch_ahead(&config, pool.is_some()),
            pool,
            view,
            last_len: config.slot_size,
            config,
            next_frame,
            space_bound: 0,
            me,
            light_commit,
        })
    }

    /// Under the producer mutex: refuses a live producer, else installs `me` and repairs.
    fn take_over(
        name: &str,
        view: &View,
        me: ProcessId,
        light_commit: bool,
    ) -> Result<u64, ChannelError> {
        let h = view.header();
        let _guard = match h.producer_mutex.lock() {
            Ok(g) => g,
            Err(e) => match e.into_guard() {
                // The previous holder died inside the takeover below; we redo it.
                Some(g) => g,
                None => {
                    return Err(ChannelError::ChannelBusy {
                        channel: name.to_owned(),
                        pid: 0,
                    });
                }
            },
        };
        let pid = h.producer_pid.load(Ordering::Acquire);
        if pid != 0 {
            let prev = ProcessId {
                pid: u32::try_from(pid).unwrap_or(0),
                start_time: h.producer_start_time.load(Ordering::Acquire),
            };
            if prev.pid != 0 && prev.is_alive() {
                return Err(ChannelError::ChannelBusy {
                    channel: name.to_owned(),
                    pid: prev.pid,
                });
            }
            tracing::warn!(channel = name, pid, "taking over from a dead producer");
        }
        h.producer_pid.store(u64::from(me.pid), Ordering::Release);
        h.producer_start_time
            .store(me.start_time, Ordering::Release);
        h.producer_heartbeat_ns
            .store(sys::monotonic_coarse_ns(), Ordering::Relaxed);
        h.producer_attaches.fetch_add(1, Ordering::Relaxed);
        // Must stay SeqCst (as must the `data_waiting` load in publish): a consumer going to
        // sleep that read the previous producer's mode (full barrier) skips the heavy fence;
        // its `commit_fence` load then precedes this store in the SeqCst order, so this
        // producer's later `data_waiting` load sees its flag and wakes it.
        h.commit_fence
            .store(commit_fence_for(light_commit), Ordering::SeqCst);
        Ok(recover(view))
    }

    /// The channel name.
    pub fn channel(&self) -> &str {
        self.view.segment().channel()
    }

    /// The id the next published frame will get.
    pub fn next_frame_id(&self) -> u64 {
        self.next_frame
    }

    /// Largest frame payload in bytes.
    pub fn slot_size(&self) -> usize {
        self.view.geometry().params.slot_size as usize
    }

    /// Counters and positions of the channel.
    pub fn stats(&self) -> ChannelStats {
        super::stats(&self.view)
    }

    /// The reader count of each slot (index = descriptor slot, frame id mod N): how many live
    /// consumers hold a frame of that slot now. Derived from the consumer table, so a reader killed while
    /// holding a frame stops counting at once (see `docs/SHM_LAYOUT.md`).
    pub fn slot_readers(&self) -> Vec<u32> {
        super::slot_readers(&self.view)
    }

    /// Claims the next slot and returns a guard to fill it. The frame becomes visible to readers
    /// only when [`SlotWriter::publish`] commits it; dropping the guard abandons it (no frame id
    /// is used).
    ///
    /// On a full lossless ring this applies the channel's [`Backpressure`] rule: it waits (and
    /// evicts consumers found dead while waiting), fails with `Full`, or drops the oldest frame.
    #[inline]
    pub fn begin_publish(&mut self) -> Result<SlotWriter<'_>, PublishError> {
        let w = self.next_frame;
        let h = self.view.header();
        h.write_pos.store(w.wrapping_add(1), Ordering::Release);
        if let Err(e) = self.wait_for_space(w) {
            let h = self.view.header();
            h.write_pos.store(w, Ordering::Release);
            h.dropped.fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
        if self.prefetch_ahead != 0 {
            self.view
                .prefetch_for_write(w.wrapping_add(self.prefetch_ahead), self.last_len);
        }
        let meta = self.view.slot_meta(w);
        meta.seq.store(layout::writing_seq(w), Ordering::Relaxed);
        let payload = match &mut self.pool {
            // Frames below the bound's base were released by every consumer (the scan that
            // set the bound just ran: pooled channels scan for every frame).
            Some(pool) => {
                let released_below = self
                    .space_bound
                    .saturating_sub(self.view.geometry().slots());
                pool.take(&self.view, w, released_below)
            }
            None => self.view.geometry().slot_of(w),
        };
        // Orders the odd seq (and the emptied descriptor of a reused buffer's previous frame)
        // before every write of the payload (seqlock writer side).
        fence(Ordering::Release);
        Ok(SlotWriter {
            producer: self,
            frame: w,
            payload,
            len: None,
            meta: FrameMeta::default(),
            done: false,
        })
    }

    /// Publishes `data` as one frame with `meta`; returns its frame id.
    pub fn publish_bytes(&mut self, data: &[u8], meta: &FrameMeta) -> Result<u64, PublishError> {
        let cap = self.view.geometry().params.slot_size;
        if data.len() as u64 > cap {
            return Err(PublishError::TooLarge {
                size: data.len() as u64,
                capacity: cap,
            });
        }
        let mut slot = self.begin_publish()?;
        slot.data_mut()[..data.len()].copy_from_slice(data);
        slot.set_len(data.len())?;
        slot.set_meta(meta);
        slot.publish()
    }

    /// Serialises `state` into the flexible zone as a new version; readers never see a partial
    /// state. Returns the new version (1, 2, …).
    pub fn write_state<T: serde::Serialize>(&mut self, state: &T) -> Result<u64, StateError> {
        flex::write_state(&self.view, state)
    }

    #[inline]
    fn wait_for_space(&mut self, w: u64) -> Result<(), PublishError> {
        let p = self.view.geometry().params;
        // A pooled channel scans for every frame: the scan tells which buffers were released.
        if p.policy != policy_code::RING || (w < self.space_bound && self.pool.is_none()) {
            return Ok(());
        }
        let n = u64::from(p.slot_count);
        let deadline = match self.config.policy {
            Policy::Ring {
                when_full: Backpressure::Block { timeout },
                ..
            } => Some(
                Instant::now()
                    .checked_add(timeout)
                    .unwrap_or_else(far_future),
            ),
            _ => None,
        };
        let result = self.wait_for_space_slow(w, n, p.backpressure, deadline);
        self.view
            .header()
            .producer_waiting
            .store(0, Ordering::Relaxed);
        result
    }

    #[cold]
    fn wait_for_space_slow(
        &mut self,
        w: u64,
        n: u64,
        backpressure: u32,
        deadline: Option<Instant>,
    ) -> Result<(), PublishError> {
        let mut check_liveness = true;
        let mut spun = false;
        loop {
            let h = self.view.header();
            let seen = h.space_event.sequence();
            if let Some(bound) = self.scan(w, n, check_liveness) {
                self.space_bound = bound;
                return Ok(());
            }
            match backpressure {
                backpressure_code::FAIL => {
                    return Err(PublishError::Full {
                        channel: self.channel().to_owned(),
                        slots: n as u32,
                    });
                }
                backpressure_code::DROP_OLDEST => {
                    h.dropped.fetch_add(1, Ordering::Relaxed);
                    // Everything up to this frame is decided; rescan at the next one.
                    self.space_bound = w.wrapping_add(1);
                    return Ok(());
                }
                _ => {}
            }
            let Some(deadline) = deadline else {
                return Ok(());
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(PublishError::Timeout {
                    channel: self.channel().to_owned(),
                });
            }
            if !spun {
                // A consumer running on another core frees a slot within microseconds: spin a
                // little before paying for a futex sleep and wake.
                spun = true;
                check_liveness = false;
                let until = now + SPIN_BEFORE_SLEEP;
                while Instant::now() < until && self.table_min(w, n, false).is_none() {
                    std::hint::spin_loop();
                }
                continue;
            }
            // Announce the sleep, then re-check (Dekker with the consumer's position store and
            // flag load), then sleep until a release or the liveness interval.
            h.producer_waiting.store(1, Ordering::SeqCst);
            if self.scan(w, n, false).is_some() {
                continue;
            }
            let nap = (deadline - now).min(LIVENESS_INTERVAL);
            // Woken by the interval rather than a release: look for dead consumers again.
            check_liveness = !h.space_event.wait_changed(seen, Some(nap));
        }
    }

    /// Scans the consumer table for frame `w`. `None`: a live consumer still needs the frame in
    /// slot `w % n` (with `check_liveness`, dead ones are evicted on the way). `Some(bound)`:
    /// frames below `bound` can be written without scanning again.
    ///
    /// Why a bound is safe: positions only grow, and a consumer that becomes active stores its
    /// entry (SeqCst) and then reads `space_bound` (SeqCst), starting at or after
    /// `space_bound - n`. The producer stores the bound and then scans again (SeqCst): a consumer
    /// this second scan misses has seen the bound; one it sees is accounted for.
    fn scan(&self, w: u64, n: u64, check_liveness: bool) -> Option<u64> {
        let h = self.view.header();
        let mut min = self.table_min(w, n, check_liveness)?;
        loop {
            let bound = min.saturating_add(n);
            h.space_bound.store(bound, Ordering::SeqCst);
            let again = self.table_min(w, n, false)?;
            if again >= min {
                return Some(bound);
            }
            // A consumer attached meanwhile with a lower position: tighten the bound.
            min = again;
        }
    }

    /// The lowest position of the active consumers (at most `w`), or `None` if one of them still
    /// needs the frame in slot `w % n`.
    fn table_min(&self, w: u64, n: u64, check_liveness: bool) -> Option<u64> {
        let mut min = w;
        let mut full = false;
        for i in 0..layout::CONSUMER_CAPACITY as usize {
            let Some(e) = self.view.consumer(i) else {
                break;
            };
            let state = e.state.load(Ordering::SeqCst);
            if state >> 32 != consumer_state::ACTIVE {
                continue;
            }
            let pos = e.position.load(Ordering::SeqCst);
            if pos.saturating_add(n) <= w {
                if check_liveness
                    && (super::reclaim_if_dead(&self.view, e, state)
                        || self.evict_if_stale(e, state))
                {
                    continue;
                }
                full = true;
            }
            min = min.min(pos);
        }
        (!full).then_some(min)
    }
}

impl Producer {
    /// Evicts entry `e` (recorded `state`) if the channel has a consumer timeout and the entry's
    /// heartbeat is older than it. Returns true if evicted.
    fn evict_if_stale(&self, e: &layout::ConsumerEntry, state: u64) -> bool {
        let Some(timeout) = self.config.consumer_timeout else {
            return false;
        };
        let beat = e.heartbeat_ns.load(Ordering::Acquire);
        let age = sys::monotonic_coarse_ns().saturating_sub(beat);
        if u128::from(age) <= timeout.as_nanos() {
            return false;
        }
        if e.state
            .compare_exchange(state, 0, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return false;
        }
        tracing::warn!(
            channel = self.channel(),
            pid = state & 0xffff_ffff,
            age_ms = age / 1_000_000,
            "evicted a consumer whose heartbeat is older than the consumer timeout"
        );
        true
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365)
}

impl Drop for Producer {
    fn drop(&mut self) {
        let h = self.view.header();
        // Give the channel up, but only if it is still ours (review item 1.3: never unlink).
        if h.producer_pid.load(Ordering::Acquire) == u64::from(self.me.pid)
            && h.producer_start_time.load(Ordering::Acquire) == self.me.start_time
        {
            h.producer_pid.store(0, Ordering::Release);
        }
        h.data_event.notify_all();
    }
}

/// Frames ahead of the one being written whose slots the producer prefetches for writing.
const PREFETCH_AHEAD: u64 = 2;

/// Prefetching runs [`PREFETCH_AHEAD`] frames ahead in rings of at least 8 slots. In smaller
/// rings (and Latest, DoubleBuffer) that slot may be the one readers are reading now.
/// Not for pooled payloads either: they do not follow the ring order (and their frames are
/// large, the copy dominates).
fn prefetch_ahead(config: &ChannelConfig, pooled: bool) -> u64 {
    match config.policy {
        Policy::Ring { slots, .. } if u64::from(slots) >= 4 * PREFETCH_AHEAD && !pooled => {
            PREFETCH_AHEAD
        }
        _ => 0,
    }
}

/// Slots at least this large commit with a full barrier (see [`use_light_commit`]).
const FULL_FENCE_FROM: u64 = 64 << 10;

/// Whether to commit with the light side of the asymmetric fence. For small frames a full
/// barrier per commit is a large share of the frame's cost (it waits for the frame's stores to
/// drain); for large frames it is negligible next to the copy, while every consumer sleep —
/// about one per frame once frames take longer than a consumer's short poll — would interrupt
/// this process with the heavy fence's inter-processor interrupt.
fn use_light_commit(slot_size: u64) -> bool {
    slot_size < FULL_FENCE_FROM && sys::register_light_fence()
}

fn commit_fence_for(light_commit: bool) -> u32 {
    if light_commit {
        layout::commit_fence_code::ASYMMETRIC
    } else {
        layout::commit_fence_code::FULL
    }
}

fn current_process(name: &str) -> Result<ProcessId, ChannelError> {
    ProcessId::current().map_err(|source| ChannelError::Io {
        channel: name.to_owned(),
        op: "identify process",
        source,
    })
}

/// Repairs what a dead producer left: a slot caught mid-write is emptied (its bytes are partial),
/// a slot committed but not yet counted is counted, and the write position returns to the commit
/// position. Returns the next frame id.
fn recover(view: &View) -> u64 {
    let h = view.header();
    let mut commit = h.commit_pos.load(Ordering::Acquire);
    // A frame whose seq was committed before the crash but whose commit position was not.
    // (A header another process wrote may hold any commit position: no arithmetic here may
    // overflow.)
    if view.slot_meta(commit).seq.load(Ordering::Acquire) == layout::committed_seq(commit)
        && commit != u64::MAX
    {
        commit += 1;
        h.commit_pos.store(commit, Ordering::Release);
    }
    for s in 0..view.geometry().slots() {
        let meta = view.slot_meta(s);
        let seq = meta.seq.load(Ordering::Acquire);
        if seq % 2 == 1 {
            meta.seq.store(0, Ordering::Release);
        }
    }
    h.write_pos.store(commit, Ordering::SeqCst);
    h.data_event.notify_all();
    commit
}

/// A claimed slot being filled; publish it with [`SlotWriter::publish`], or drop it to abandon.
#[must_use = "a slot that is not published is abandoned when dropped"]
pub struct SlotWriter<'a> {
    producer: &'a mut Producer,
    frame: u64,
    /// The payload buffer this frame is written into.
    payload: usize,
    len: Option<usize>,
    meta: FrameMeta,
    done: bool,
}

impl SlotWriter<'_> {
    /// The frame id this slot will publish.
    #[inline]
    pub fn frame_id(&self) -> u64 {
        self.frame
    }

    /// The whole slot (slot size bytes), to write the frame into in place.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: the producer is the channel's only writer (its identity is in the header and a
        // second producer is refused); this frame's seq is odd and the buffer's previous frame
        // was marked overwritten (both in begin_publish); this guard borrows the producer
        // mutably, so no other slice of this buffer exists here.
        unsafe { self.producer.view.payload_bytes_mut(self.payload) }
    }

    /// Sets the frame's length in bytes (default: the whole slot).
    #[inline]
    pub fn set_len(&mut self, len: usize) -> Result<(), PublishError> {
        let cap = self.producer.view.geometry().params.slot_size;
        if len as u64 > cap {
            return Err(PublishError::TooLarge {
                size: len as u64,
                capacity: cap,
            });
        }
        self.len = Some(len);
        Ok(())
    }

    /// Sets all metadata at once.
    #[inline]
    pub fn set_meta(&mut self, meta: &FrameMeta) {
        self.meta = *meta;
    }

    /// Sets the timestamp (ns); 0 stamps `CLOCK_REALTIME` at publish.
    #[inline]
    pub fn set_timestamp_ns(&mut self, ns: u64) {
        self.meta.timestamp_ns = ns;
    }

    /// Sets the type hash.
    #[inline]
    pub fn set_type_hash(&mut self, hash: u64) {
        self.meta.type_hash = hash;
    }

    /// Sets the dimensions (at most 4).
    pub fn set_dims(&mut self, dims: &[u64]) -> Result<(), PublishError> {
        self.meta.set_dims(dims)
    }

    /// Commits the frame: readers see all of it or none of it. Returns its frame id.
    #[inline]
    pub fn publish(mut self) -> Result<u64, PublishError> {
        let w = self.frame;
        let view = &self.producer.view;
        let params = view.geometry().params;
        let len = self.len.unwrap_or(params.slot_size as usize);
        let m = view.slot_meta(w);
        let ts = if self.meta.timestamp_ns == 0 {
            sys::realtime_ns()
        } else {
            self.meta.timestamp_ns
        };
        m.frame_id.store(w, Ordering::Relaxed);
        m.timestamp_ns.store(ts, Ordering::Relaxed);
        m.data_size.store(len as u64, Ordering::Relaxed);
        m.type_hash.store(self.meta.type_hash, Ordering::Relaxed);
        let ndim = usize::from(self.meta.ndim).min(layout::MAX_DIMS);
        m.ndim.store(ndim as u64, Ordering::Relaxed);
        // The descriptor's second cache line (dims 2 and 3, the checksum) is written, and read,
        // only when used: most frames then move one line of metadata between cores, not two.
        let used = ndim.max(layout::DIMS_IN_FIRST_LINE);
        for (d, v) in m.dims.iter().zip(self.meta.dims).take(used) {
            d.store(v, Ordering::Relaxed);
        }
        if params.checksum == layout::checksum_code::XXH3_64 {
            let sum = super::checksum_of(view.payload_bytes(self.payload, len as u64));
            m.checksum.store(sum, Ordering::Relaxed);
        }
        if self.producer.pool.is_some() {
            m.chunk.store(self.payload as u64, Ordering::Relaxed);
        }
        // Commit: the even seq publishes payload and metadata (Release), then the commit position
        // tells waiting readers the frame exists.
        m.seq.store(layout::committed_seq(w), Ordering::Release);
        let h = view.header();
        // Dekker with a consumer about to sleep (it sets `data_waiting`, then re-reads the
        // commit position): one of the two must see the other's store. A full barrier here
        // would wait for the whole frame's stores to drain, per frame; with the asymmetric
        // fence the consumer pays instead, once per sleep (see `commit_fence_code`).
        if self.producer.light_commit {
            h.commit_pos.store(w.wrapping_add(1), Ordering::Release);
            sys::light_fence();
        } else {
            h.commit_pos.store(w.wrapping_add(1), Ordering::SeqCst);
        }
        h.producer_heartbeat_ns
            .store(sys::monotonic_coarse_ns(), Ordering::Relaxed);
        // SeqCst, not weaker: see the `commit_fence` store in `take_over`.
        if h.data_waiting.load(Ordering::SeqCst) != 0
            && h.data_waiting.swap(0, Ordering::SeqCst) != 0
        {
            h.data_event.notify_all();
        }
        self.done = true;
        self.producer.next_frame = w.wrapping_add(1);
        self.producer.last_len = len as u64;
        Ok(w)
    }
}

impl Drop for SlotWriter<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Abandon: the slot's old bytes may be partly overwritten, so it becomes empty (a reader
        // that was reading its old frame sees the seq change); the frame id is not used.
        let view = &self.producer.view;
        view.slot_meta(self.frame).seq.store(0, Ordering::Release);
        view.header().write_pos.store(self.frame, Ordering::SeqCst);
        if let Some(pool) = &mut self.producer.pool {
            // Its previous frame was emptied when it was taken: the buffer holds nothing now.
            pool.holder[self.payload] = None;
        }
    }
}

/// The payload buffers of a pooled channel (see `Geometry::pooled`), from the producer's side.
///
/// A buffer may be rewritten once every live consumer's position is past the frame it holds.
/// Of those, the producer takes the one written most recently: it is still in this core's cache,
/// while a ring's next slot has usually been evicted (8 × 1 MiB does not fit a 2 MiB L2).
#[derive(Debug)]
struct PayloadPool {
    /// The frame each buffer holds (committed or being written), `None` if none.
    holder: Vec<Option<u64>>,
}

impl PayloadPool {
    fn new(view: &View) -> Option<Self> {
        let geo = view.geometry();
        geo.pooled().then(|| Self {
            holder: vec![None; geo.slots() as usize],
        })
    }

    /// After a takeover: the buffers named by committed descriptors hold those frames. (A
    /// buffer named twice keeps the newer frame; the older descriptor is emptied, its bytes are
    /// gone.)
    fn rebuild(view: &View) -> Option<Self> {
        let mut pool = Self::new(view)?;
        let geo = view.geometry();
        for s in 0..geo.slots() {
            let m = view.slot_meta(s);
            let seq = m.seq.load(Ordering::Acquire);
            if seq == 0 || seq % 2 == 1 {
                continue;
            }
            let frame = seq / 2 - 1;
            let buffer = geo.payload_of(frame, m.chunk.load(Ordering::Relaxed));
            match pool.holder[buffer] {
                Some(other) if other > frame => {
                    let _ = m
                        .seq
                        .compare_exchange(seq, 0, Ordering::AcqRel, Ordering::Relaxed);
                }
                Some(other) => {
                    let older = view.slot_meta(other);
                    let _ = older.seq.compare_exchange(
                        layout::committed_seq(other),
                        0,
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    );
                    pool.holder[buffer] = Some(frame);
                }
                None => pool.holder[buffer] = Some(frame),
            }
        }
        Some(pool)
    }

    /// Takes a buffer for frame `w`, given that every frame below `released_below` was
    /// released by all live consumers. Empties the descriptor of the frame the buffer held, so
    /// a reader still looking at that frame (one it had already passed, through `latest`)
    /// sees it overwritten rather than torn bytes.
    fn take(&mut self, view: &View, w: u64, released_below: u64) -> usize {
        // Fewer than N frames are in flight (the ring is not full), so some buffer is free or
        // released; the most recently written of them is still in cache. The newest frame's
        // buffer is kept while another is free, as a ring keeps it: if this producer dies
        // mid-write, the last complete frame is still there.
        let newest = w.checked_sub(1);
        let pick = |keep_newest: bool| {
            self.holder
                .iter()
                .enumerate()
                .filter(|(_, h)| h.is_none_or(|f| f < released_below))
                .filter(|(_, h)| !(keep_newest && newest.is_some() && **h == newest))
                .max_by_key(|(_, h)| h.map_or(0, |f| f + 1))
                .map(|(i, _)| i)
        };
        // Only with one buffer (or corrupted positions) is nothing else free; rewriting the
        // oldest buffer still never hands a reader torn bytes (its frame is marked overwritten).
        let buffer = pick(true).or_else(|| pick(false)).unwrap_or_else(|| {
            self.holder
                .iter()
                .enumerate()
                .min_by_key(|(_, h)| h.unwrap_or(0))
                .map_or(0, |(i, _)| i)
        });
        if let Some(old) = self.holder[buffer] {
            let _ = view.slot_meta(old).seq.compare_exchange(
                layout::committed_seq(old),
                0,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
        self.holder[buffer] = Some(w);
        buffer
    }
}
