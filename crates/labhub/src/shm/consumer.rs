//! The consumer side of a channel: attach by name, read frames in place, read the state.
#![deny(unsafe_code)]

use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, Instant};

use super::error::{ChannelError, ReadError, StateError};
use super::layout::{self, View, backpressure_code, consumer_state, policy_code};
use super::sync_impl::ProcessId;
use super::{ChannelStats, FrameMeta, Secret, flex};
use crate::sys;

/// How [`Consumer::next`] waits for a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WaitMode {
    /// Sleep on the channel's data event (no CPU while waiting), after polling the commit
    /// position for about a microsecond.
    #[default]
    Blocking,
    /// Poll the commit position for up to `spin_for`, then sleep on the data event: the lowest
    /// latency, at the price of a busy core while spinning.
    Spin {
        /// How long to spin before sleeping.
        spin_for: Duration,
    },
}

/// Options of [`Consumer::attach`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AttachOptions {
    /// The channel's secret, if it has one.
    pub secret: Option<Secret>,
    /// The segment size the caller was told (e.g. by a broker); attach fails if it differs.
    pub expected_size: Option<u64>,
    /// How `next` waits.
    pub mode: WaitMode,
    /// How long to wait for a segment whose magic is not yet published to become ready. A
    /// labhub producer names its segment only once it is initialised, so a channel being
    /// created is reported `NotFound` at once; this wait only matters for segments made by
    /// other implementations.
    pub ready_timeout: Duration,
}

impl Default for AttachOptions {
    fn default() -> Self {
        Self {
            secret: None,
            expected_size: None,
            mode: WaitMode::Blocking,
            ready_timeout: Duration::from_secs(2),
        }
    }
}

impl AttachOptions {
    /// Presents `secret`.
    pub fn secret(mut self, secret: impl Into<Secret>) -> Self {
        self.secret = Some(secret.into());
        self
    }
    /// Requires the segment to be `bytes` long.
    pub fn expected_size(mut self, bytes: u64) -> Self {
        self.expected_size = Some(bytes);
        self
    }
    /// Sets the wait mode.
    pub fn mode(mut self, mode: WaitMode) -> Self {
        self.mode = mode;
        self
    }
}

/// A reader of a channel, registered (and monitored) in its consumer table.
pub struct Consumer {
    view: View,
    entry: usize,
    state_word: u64,
    cursor: u64,
    /// Last commit position read; frames below it exist (or existed).
    known_commit: u64,
    mode: WaitMode,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("channel", &self.view.segment().channel())
            .field("entry", &self.entry)
            .field("cursor", &self.cursor)
            .finish_non_exhaustive()
    }
}

/// Longest sleep between heartbeats while waiting without a timeout.
const HEARTBEAT_NAP: Duration = Duration::from_millis(500);
/// Longest sleep on the data event when the producer commits without a full barrier and this
/// process cannot run the heavy side of the asymmetric fence: a wake-up may then be lost, and
/// this bounds the delay it costs.
const UNFENCED_NAP: Duration = Duration::from_millis(1);
/// Polls of the commit position in blocking mode before sleeping on the data event.
const BLOCKING_POLLS: u32 = 32;

impl Consumer {
    /// Attaches to channel `name`: validates the segment, checks the secret and the expected
    /// size, and takes an entry in the consumer table. The consumer receives every frame
    /// committed after this returns (under a lossless ring, the producer waits for it).
    pub fn attach(name: &str, options: AttachOptions) -> Result<Self, ChannelError> {
        let view = super::open_view(name, options.ready_timeout)?;
        let total = view.geometry().total_size;
        if let Some(expected) = options.expected_size
            && expected != total
        {
            return Err(ChannelError::SizeMismatch {
                channel: name.to_owned(),
                expected,
                found: total,
            });
        }
        if !super::check_secret(&view, options.secret.as_ref()) {
            return Err(ChannelError::WrongSecret {
                channel: name.to_owned(),
            });
        }
        let me = ProcessId::current().map_err(|source| ChannelError::Io {
            channel: name.to_owned(),
            op: "identify process",
            source,
        })?;
        let (entry, state_word, cursor) = claim_entry(&view, me)?;
        tracing::debug!(channel = name, entry, cursor, "consumer attached");
        Ok(Self {
            view,
            entry,
            state_word,
            cursor,
            known_commit: 0,
            mode: options.mode,
        })
    }

    /// The channel name.
    pub fn channel(&self) -> &str {
        self.view.segment().channel()
    }

    /// Size of the segment in bytes (what a broker would announce).
    pub fn segment_size(&self) -> u64 {
        self.view.geometry().total_size
    }

    /// The id of the next frame [`Consumer::next`] will return (if not overwritten first).
    pub fn cursor(&self) -> u64 {
        self.cursor
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

    /// Whether a live producer is attached now.
    pub fn producer_alive(&self) -> bool {
        let h = self.view.header();
        let pid = h.producer_pid.load(Ordering::Acquire);
        pid != 0
            && ProcessId {
                pid: u32::try_from(pid).unwrap_or(0),
                start_time: h.producer_start_time.load(Ordering::Acquire),
            }
            .is_alive()
    }

    /// Frames this consumer lost because a lossy policy overwrote them.
    pub fn missed(&self) -> u64 {
        self.entry().missed.load(Ordering::Relaxed)
    }

    fn entry(&self) -> &layout::ConsumerEntry {
        self.view
            .consumer(self.entry)
            .expect("entry index validated at attach")
    }

    fn lossless(&self) -> bool {
        let p = self.view.geometry().params;
        p.policy == policy_code::RING
            && matches!(
                p.backpressure,
                backpressure_code::BLOCK | backpressure_code::FAIL
            )
    }

    fn check_entry(&self) -> Result<&layout::ConsumerEntry, ReadError> {
        let e = self.entry();
        if e.state.load(Ordering::Acquire) != self.state_word {
            return Err(ReadError::Evicted {
                channel: self.channel().to_owned(),
            });
        }
        e.heartbeat_ns
            .store(sys::monotonic_coarse_ns(), Ordering::Relaxed);
        Ok(e)
    }

    fn lose(&mut self, frames: u64) {
        self.entry().missed.fetch_add(frames, Ordering::Relaxed);
        self.view
            .header()
            .overwritten
            .fetch_add(frames, Ordering::Relaxed);
    }

    fn set_position(&mut self, cursor: u64) {
        self.cursor = cursor;
        self.entry().position.store(cursor, Ordering::SeqCst);
    }

    /// Waits up to `timeout` (`None`: forever) for the next frame and returns it in place.
    ///
    /// Frames are returned in order. Under a lossy policy a slow consumer skips frames that were
    /// overwritten before it got to them (counted in [`Consumer::missed`]).
    pub fn next(&mut self, timeout: Option<Duration>) -> Result<Frame<'_>, ReadError> {
        // When the wait began; read only once a short poll found nothing, so a consumer keeping
        // up with a streaming producer does not read the clock per frame.
        let mut started: Option<Instant> = None;
        let mut spin_for = match self.mode {
            WaitMode::Spin { spin_for } => Some(spin_for),
            WaitMode::Blocking => None,
        };
        loop {
            self.check_entry()?;
            // Reload the shared commit position only when the known one is used up. (Not the
            // next slot's seq word instead: while the producer writes that slot, reading it
            // costs the producer one more transfer of the line.)
            if self.cursor >= self.known_commit {
                self.known_commit = self.view.header().commit_pos.load(Ordering::Acquire);
            }
            let commit = self.known_commit;
            if self.cursor < commit {
                match self.snapshot(self.cursor, commit) {
                    Some(snap) => return Ok(self.frame(snap)),
                    None => continue,
                }
            }
            let h = self.view.header();
            // Nothing new. A producer streaming on another core commits the next frame within
            // a few hundred ns, far less than a futex sleep and wake cost both sides, so poll a
            // little first (about a microsecond, so a loaded host loses little CPU).
            let start = match started {
                Some(start) => start,
                None => {
                    if (0..BLOCKING_POLLS).any(|_| {
                        std::hint::spin_loop();
                        h.commit_pos.load(Ordering::Acquire) > self.cursor
                    }) {
                        continue;
                    }
                    *started.insert(Instant::now())
                }
            };
            // Spin mode: poll the commit position, looking at the clock every 64 polls. No
            // yielding: spin mode is for a host with a core to spare for this consumer.
            if let Some(spin) = spin_for {
                let until = start + spin;
                let mut polls = 0u32;
                while h.commit_pos.load(Ordering::Acquire) <= self.cursor {
                    polls = polls.wrapping_add(1);
                    if polls.is_multiple_of(64) && Instant::now() >= until {
                        spin_for = None;
                        break;
                    }
                    std::hint::spin_loop();
                }
                continue;
            }
            let seen = h.data_event.sequence();
            // Announce the sleep, then re-check (Dekker with the producer's commit store and
            // flag load): the producer notifies only when it finds the flag set. A producer
            // that commits without a full barrier relies on our heavy fence between the two;
            // where the kernel refuses it, sleep in short naps instead of trusting a wake-up.
            h.data_waiting.store(1, Ordering::SeqCst);
            let mut longest = HEARTBEAT_NAP;
            if h.commit_fence.load(Ordering::SeqCst) != layout::commit_fence_code::FULL
                && !sys::heavy_fence()
            {
                longest = UNFENCED_NAP;
            }
            if h.commit_pos.load(Ordering::SeqCst) > self.cursor {
                continue;
            }
            let deadline = timeout.map(|t| start.checked_add(t).unwrap_or_else(far_future));
            let nap = match deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Err(ReadError::Timeout);
                    }
                    (d - now).min(longest)
                }
                None => longest,
            };
            h.data_event.wait_changed(seen, Some(nap));
        }
    }

    /// The newest committed frame still in the ring, in place, or `None` if there is none.
    /// Frames between the cursor and it are skipped (not counted as missed); [`Consumer::next`]
    /// continues after it.
    pub fn latest(&mut self) -> Result<Option<Frame<'_>>, ReadError> {
        loop {
            self.check_entry()?;
            let h = self.view.header();
            let commit = h.commit_pos.load(Ordering::Acquire);
            let oldest = commit.saturating_sub(self.view.geometry().slots());
            // Newest first; a slot emptied by a crashed or abandoning producer is passed over.
            if let Some(snap) = (oldest..commit).rev().find_map(|f| self.read_meta(f)) {
                if snap.frame > self.cursor {
                    // Holding position ≤ frame keeps a lossless producer off its slot.
                    self.set_position(snap.frame);
                }
                return Ok(Some(self.frame(snap)));
            }
            if h.commit_pos.load(Ordering::Acquire) == commit {
                return Ok(None);
            }
        }
    }

    /// Tries to snapshot frame `self.cursor` (< commit); on loss, advances the cursor and
    /// returns None.
    fn snapshot(&mut self, cursor: u64, commit: u64) -> Option<Snapshot> {
        let n = self.view.geometry().slots();
        // Frames older than commit - n are gone from the ring.
        let oldest = commit.saturating_sub(n);
        if cursor < oldest {
            self.lose(oldest - cursor);
            self.set_position(oldest);
            return None;
        }
        match self.read_meta(cursor) {
            Some(s) => Some(s),
            None => {
                // Overwritten (lossy), abandoned by a crashed producer, or evicted.
                self.lose(1);
                self.set_position(cursor + 1);
                None
            }
        }
    }

    /// Reads frame `f`'s descriptor if the slot holds committed frame `f`, consistently.
    fn read_meta(&self, f: u64) -> Option<Snapshot> {
        let m = self.view.slot_meta(f);
        let seq = m.seq.load(Ordering::Acquire);
        if seq != layout::committed_seq(f) {
            return None;
        }
        let ndim = m.ndim.load(Ordering::Relaxed).min(layout::MAX_DIMS as u64);
        let mut dims = [0u64; layout::MAX_DIMS];
        // The second cache line of the descriptor only when it holds something (see publish).
        let used = (ndim as usize).max(layout::DIMS_IN_FIRST_LINE);
        for (d, a) in dims.iter_mut().zip(&m.dims).take(used) {
            *d = a.load(Ordering::Relaxed);
        }
        let geo = self.view.geometry();
        let checksum = if geo.params.checksum == layout::checksum_code::NONE {
            0
        } else {
            m.checksum.load(Ordering::Relaxed)
        };
        let chunk = if geo.pooled() {
            m.chunk.load(Ordering::Relaxed)
        } else {
            0
        };
        let snap = Snapshot {
            frame: f,
            payload: geo.payload_of(f, chunk),
            seq,
            len: m.data_size.load(Ordering::Relaxed),
            checksum,
            meta: FrameMeta {
                timestamp_ns: m.timestamp_ns.load(Ordering::Relaxed),
                type_hash: m.type_hash.load(Ordering::Relaxed),
                ndim: ndim as u8,
                dims,
            },
        };
        fence(Ordering::Acquire);
        if m.seq.load(Ordering::Relaxed) != seq {
            return None;
        }
        // Written by another process: a frame larger than its slot or with more than 4
        // dimensions is not a frame the producer could have committed; clamp and let the
        // checksum (if any) or the application judge. Lengths are clamped in slot_bytes too.
        Some(Snapshot {
            len: snap.len.min(self.view.geometry().params.slot_size),
            ..snap
        })
    }

    fn frame(&mut self, snap: Snapshot) -> Frame<'_> {
        let e = self.entry();
        e.held.store(snap.frame + 1, Ordering::Relaxed);
        // Only this consumer writes its entry's counters: a plain increment, not a locked one.
        let received = e.received.load(Ordering::Relaxed);
        e.received
            .store(received.wrapping_add(1), Ordering::Relaxed);
        Frame {
            consumer: self,
            snap,
            validated: std::cell::Cell::new(false),
        }
    }

    /// Reads the flexible-zone state: `Ok(None)` before the producer wrote any, else the version
    /// and the value. Never returns a partially written state.
    pub fn read_state<T: serde::de::DeserializeOwned>(
        &self,
    ) -> Result<Option<(u64, T)>, StateError> {
        flex::read_state(&self.view)
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let e = self.entry();
        let _ = e
            .state
            .compare_exchange(self.state_word, 0, Ordering::SeqCst, Ordering::SeqCst);
        self.view.header().space_event.notify_all();
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365)
}

/// Takes a free (or dead consumer's) table entry. Returns (index, state word, start cursor).
fn claim_entry(view: &View, me: ProcessId) -> Result<(usize, u64, u64), ChannelError> {
    let h = view.header();
    let claiming = (consumer_state::CLAIMING << 32) | u64::from(me.pid);
    let active = (consumer_state::ACTIVE << 32) | u64::from(me.pid);
    for i in 0..layout::CONSUMER_CAPACITY as usize {
        let Some(e) = view.consumer(i) else { break };
        let mut state = e.state.load(Ordering::SeqCst);
        if state != 0 && super::reclaim_if_dead(view, e, state) {
            state = 0;
        }
        if state != 0 {
            continue;
        }
        if e.state
            .compare_exchange(0, claiming, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            continue;
        }
        // Provisional position: conservative (it can only hold the producer back), raised below.
        let c0 = h.commit_pos.load(Ordering::SeqCst);
        e.position.store(c0, Ordering::SeqCst);
        e.start_time.store(me.start_time, Ordering::SeqCst);
        e.heartbeat_ns
            .store(sys::monotonic_coarse_ns(), Ordering::Relaxed);
        e.held.store(0, Ordering::Relaxed);
        e.received.store(0, Ordering::Relaxed);
        e.missed.store(0, Ordering::Relaxed);
        e.state.store(active, Ordering::SeqCst);
        // The producer may write frames below `space_bound` without scanning the table again,
        // so start no earlier than `space_bound - n` (Dekker pairing with Producer::scan: it
        // stores the bound, then scans; we store our entry, then load the bound). Clamped to
        // the commit position, in case the header holds garbage.
        let bound = h.space_bound.load(Ordering::SeqCst);
        let commit = h.commit_pos.load(Ordering::SeqCst);
        let start = c0
            .max(bound.saturating_sub(view.geometry().slots()))
            .min(commit.max(c0));
        e.position.store(start, Ordering::SeqCst);
        return Ok((i, active, start));
    }
    Err(ChannelError::ConsumerTableFull {
        channel: view.segment().channel().to_owned(),
        capacity: layout::CONSUMER_CAPACITY,
    })
}

#[derive(Debug, Clone, Copy)]
struct Snapshot {
    frame: u64,
    /// The payload buffer holding the frame.
    payload: usize,
    seq: u64,
    len: u64,
    checksum: u64,
    meta: FrameMeta,
}

/// A frame read in place; the slot is released when it is dropped.
///
/// Under a lossy policy the bytes of [`Frame::data`] are only guaranteed whole if
/// [`Frame::finish`] or [`Frame::validate`] returns `Ok` after reading them.
#[must_use = "dropping a frame releases it at once"]
pub struct Frame<'a> {
    consumer: &'a mut Consumer,
    snap: Snapshot,
    validated: std::cell::Cell<bool>,
}

impl std::fmt::Debug for Frame<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("frame_id", &self.snap.frame)
            .field("len", &self.snap.len)
            .field("meta", &self.snap.meta)
            .finish()
    }
}

impl Frame<'_> {
    /// The frame id (0, 1, … in publish order).
    #[inline]
    pub fn frame_id(&self) -> u64 {
        self.snap.frame
    }

    /// The metadata (timestamp, type hash, dimensions).
    #[inline]
    pub fn meta(&self) -> &FrameMeta {
        &self.snap.meta
    }

    /// Payload length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.snap.len as usize
    }

    /// Whether the payload is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.snap.len == 0
    }

    /// The payload, in place in shared memory (no copy). See the type's note on lossy policies.
    #[inline]
    pub fn data(&self) -> &[u8] {
        self.consumer
            .view
            .payload_bytes(self.snap.payload, self.snap.len)
    }

    /// Checks that the frame was not overwritten since it was returned, and its checksum if the
    /// channel has checksums. `Ok` means every byte read from [`Frame::data`] before this call
    /// belonged to this frame.
    #[inline]
    pub fn validate(&self) -> Result<(), ReadError> {
        let view = &self.consumer.view;
        let m = view.slot_meta(self.snap.frame);
        let computed = (view.geometry().params.checksum == layout::checksum_code::XXH3_64)
            .then(|| super::checksum_of(self.data()));
        // Seqlock reader side: the payload reads above happen before the re-check.
        fence(Ordering::Acquire);
        if m.seq.load(Ordering::Relaxed) != self.snap.seq {
            return Err(ReadError::Overwritten {
                frame_id: self.snap.frame,
            });
        }
        // Whole as read: an overwrite after this point is not a loss to this reader.
        self.validated.set(true);
        if let Some(computed) = computed
            && computed != self.snap.checksum
        {
            return Err(ReadError::ChecksumMismatch {
                frame_id: self.snap.frame,
                stored: self.snap.checksum,
                computed,
            });
        }
        Ok(())
    }

    /// Validates (see [`Frame::validate`]) and releases the frame. An overwritten frame is
    /// counted as missed.
    #[inline]
    pub fn finish(self) -> Result<(), ReadError> {
        self.validate()
    }

    /// Copies the payload out and validates it; the copy is whole if this returns `Ok`.
    pub fn copy_to_vec(&self) -> Result<Vec<u8>, ReadError> {
        let v = self.data().to_vec();
        self.validate()?;
        Ok(v)
    }
}

impl Drop for Frame<'_> {
    fn drop(&mut self) {
        let c = &mut *self.consumer;
        let m = c.view.slot_meta(self.snap.frame);
        if !self.validated.get() && m.seq.load(Ordering::Acquire) != self.snap.seq {
            c.lose(1);
        }
        c.entry().held.store(0, Ordering::Relaxed);
        let next = self.snap.frame + 1;
        if next > c.cursor {
            c.set_position(next);
        }
        // Dekker with the producer: it sets `producer_waiting` then re-checks positions; we
        // stored our position (SeqCst) and now check the flag.
        let h = c.view.header();
        // The first releaser to see the flag clears it and wakes the producer: one wake per
        // sleep. The producer sets the flag again before each sleep.
        if c.lossless()
            && h.producer_waiting.load(Ordering::SeqCst) != 0
            && h.producer_waiting.swap(0, Ordering::SeqCst) != 0
        {
            h.space_event.notify_all();
        }
    }
}
