//! The consumer side of a channel: open by name, read frames (held in place under lossless
//! rings, through validated copies or atomic reads under lossy policies), read the state.

use std::marker::PhantomData;
use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, Instant};

use super::builder::Settings;
use super::element::{ElementType, Payload};
use super::error::{ChannelError, Overwritten, ReadError, StateError};
use super::layout::{self, View, consumer_state};
use super::producer::{commit_plausible, current_process, policy_of, same_rule};
use super::sync_impl::ProcessId;
use super::{ChannelStats, DeliveryMode, Policy, flex};
use crate::name::ChannelName;
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

/// Checks what a caller expects of a channel's frames (`want`, from its builder or its own
/// creation parameters) against the segment's; the first difference is
/// [`ChannelError::SchemaMismatch`].
pub(super) fn check_schema(
    name: &ChannelName,
    want: &layout::SchemaParams,
    have: &layout::Params,
) -> Result<(), ChannelError> {
    let mismatch = |field, expected: String, found: String| ChannelError::SchemaMismatch {
        channel: name.to_string(),
        field,
        expected,
        found,
    };
    let have = &have.schema;
    if want.element != have.element {
        return Err(mismatch(
            "element",
            want.element_type().to_string(),
            have.element_type().to_string(),
        ));
    }
    if want.shape() != have.shape() {
        return Err(mismatch(
            "shape",
            format!("{:?}", want.shape()),
            format!("{:?}", have.shape()),
        ));
    }
    if want.name() != have.name() {
        return Err(mismatch(
            "schema_name",
            want.name().unwrap_or("none").to_owned(),
            have.name().unwrap_or("none").to_owned(),
        ));
    }
    if want.version != have.version {
        return Err(mismatch(
            "schema_version",
            want.version.to_string(),
            have.version.to_string(),
        ));
    }
    Ok(())
}

/// Checks the parts of `settings` an opener gave against the channel.
fn check_open(
    name: &ChannelName,
    settings: &Settings,
    fixed: Option<ElementType>,
    view: &View,
) -> Result<(), ChannelError> {
    let have = view.geometry().params;
    let mismatch = |field, expected: String, found: String| ChannelError::SchemaMismatch {
        channel: name.to_string(),
        field,
        expected,
        found,
    };
    let element = have.schema.element_type();
    if let Some(want) = fixed.or(settings.element)
        && want != element
    {
        return Err(mismatch("element", want.to_string(), element.to_string()));
    }
    if let Some(want) = settings.shape()
        && want != have.schema.shape()
    {
        return Err(mismatch(
            "shape",
            format!("{want:?}"),
            format!("{:?}", have.schema.shape()),
        ));
    }
    let (schema_name, schema_version) = settings.schema();
    if let Some(want) = schema_name
        && Some(want) != have.schema.name()
    {
        return Err(mismatch(
            "schema_name",
            want.to_owned(),
            have.schema.name().unwrap_or("none").to_owned(),
        ));
    }
    if let Some(want) = schema_version
        && want != have.schema.version
    {
        return Err(mismatch(
            "schema_version",
            want.to_string(),
            have.schema.version.to_string(),
        ));
    }
    if let (Some(want), Some(found)) = (settings.policy, policy_of(&have))
        && !same_rule(want, found)
    {
        return Err(ChannelError::ConfigMismatch {
            channel: name.to_string(),
            field: "policy",
            expected: want.to_string(),
            found: found.to_string(),
        });
    }
    if let Some(expected) = settings.expected_size
        && expected != view.geometry().total_size
    {
        return Err(ChannelError::SizeMismatch {
            channel: name.to_string(),
            expected,
            found: view.geometry().total_size,
        });
    }
    if !super::check_secret(view, settings.secret.as_ref()) {
        return Err(ChannelError::WrongSecret {
            channel: name.to_string(),
        });
    }
    Ok(())
}

/// A reader of a channel, registered (and monitored) in its consumer table; made by
/// [`Channel::open`](super::Channel::open) or
/// [`Channel::open_or_create`](super::Channel::open_or_create). `T` is what frames are read
/// as: an [`Element`](super::Element) type, or [`Dynamic`](super::Dynamic) (bytes). Dropping
/// it frees its table entry.
///
/// # Reading frames
/// [`Consumer::next`] returns the next [`Frame`]. Under a lossless ring (Block or Fail), read
/// in the lossless [`DeliveryMode`] (the default), the frame is **held**: the producer never
/// rewrites its slot while this consumer's position covers it, so [`Frame::held`] gives the
/// elements in place as `&[T]`, released when the frame is dropped.
///
/// A consumer in any other delivery mode (`latest`, `queue:N`, `every:K`, `max-rate:HZ`)
/// holds nothing back, so the producer may rewrite any slot it reads: it reads like a reader
/// of a lossy policy, below, on every channel.
///
/// Under a lossy policy (Latest, DoubleBuffer, DropOldest) the producer never waits for
/// readers and may rewrite a slot while it is read. A `&[T]` to such a slot would be undefined
/// behaviour under Rust's memory model — a non-atomic read racing a write — however carefully
/// the seq word is checked afterwards, so a lossy frame is not held: it is read through
/// [`Frame::to_vec`] / [`Frame::copy_to`] (a per-byte atomic copy, then the seq re-check) or
/// [`Frame::read`] (a closure over [`Shared`], whose reads are atomic, with the outcome in the
/// type: `Result<R, Overwritten>`).
///
/// ```
/// use labhub::shm::{self, Channel, Policy};
/// # let name = format!("doc-consumer-{}", std::process::id());
/// let mut p = Channel::new(&name).policy(Policy::Latest).bytes(16).create()?;
/// let mut c = Channel::new(&name).bytes(16).open()?;
/// p.publish(b"hello", &[5])?;
/// let frame = c.next(None)?;
/// assert!(frame.held().is_none(), "Latest is lossy: no frame is held");
/// assert_eq!(frame.to_vec()?, b"hello");
/// // Or read through atomic accesses, and learn afterwards whether the frame stayed whole.
/// let first = frame.read(|s| s.get(0))?;
/// assert_eq!(first, Some(b'h'));
/// # drop(frame); drop(c); drop(p); shm::remove_channel(&name)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Eviction
/// A producer blocked on a full lossless ring evicts a consumer whose process is dead, or
/// whose heartbeat (refreshed by every read, and at least every 500 ms while it waits) is
/// older than the consumer timeout: a stopped process, or a reader holding one frame longer
/// than that. An evicted consumer **loses its hold**: the producer may rewrite the slot of a
/// frame it still holds, so the slice it has may change under it (a mix of frames), and
/// [`Frame::finish`] reports `Evicted` (or `Overwritten`); every later read returns
/// [`ReadError::Evicted`] until it opens the channel again (a Hub consumer does that by
/// itself). Frames it was evicted for are not delivered to it.
#[must_use = "dropping the consumer detaches it"]
pub struct Consumer<T: Payload> {
    view: View,
    entry: usize,
    state_word: u64,
    owner_tag: u64,
    cursor: u64,
    /// Last commit position accepted; frames below it exist (or existed).
    known_commit: u64,
    /// A commit position the slots cannot hold (written by another process), ignored until
    /// the producer stores another one.
    rejected_commit: Option<u64>,
    mode: WaitMode,
    /// How this consumer takes frames.
    delivery: DeliveryMode,
    /// The delivery mode is lossless: the entry's position holds the producer back (and is
    /// written per frame); otherwise the entry's cursor is written instead.
    lossless_mode: bool,
    /// Frames are held in place: a lossless ring read in the lossless delivery mode.
    holds: bool,
    /// `every:K`: frames below this id are skipped (the next after frame f is f + K).
    skip_until: u64,
    /// `max-rate:HZ`: no frame is handed out before this instant.
    next_due: Option<Instant>,
    _payload: PhantomData<fn() -> T>,
}

impl<T: Payload> std::fmt::Debug for Consumer<T> {
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

/// A tag unique to one attach: the low half of `ConsumerEntry::owner_tag`, so two consumers of
/// one process (same pid, same start time) never mistake each other's entry for their own.
fn attach_nonce() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // Mixed with the clock so that tags of a forked child differ from its parent's.
    let t = sys::monotonic_ns() as u32;
    (n ^ t.rotate_left(16)).max(1)
}

impl<T: Payload> Consumer<T> {
    /// Opens the existing channel `settings` name (see `Channel::open`).
    pub(crate) fn open(settings: &Settings) -> Result<Self, ChannelError> {
        let name = settings.name()?;
        check_delivery(settings)?;
        let view = super::open_view(name, settings.ready_timeout)?;
        check_open(name, settings, T::FIXED, &view)?;
        Self::attach(name, view, settings)
    }

    #[cfg_attr(not(feature = "zmq"), allow(dead_code))]
    /// Attaches to the memfd pair a broker handed over for the channel `settings` name,
    /// mapping its data region read-only (see `Channel::open`).
    pub(crate) fn open_memfd(
        settings: &Settings,
        pair: super::MemfdPair,
    ) -> Result<Self, ChannelError> {
        let name = settings.name()?;
        let view = super::memfd_view(name, pair, false)?;
        check_open(name, settings, T::FIXED, &view)?;
        Self::attach(name, view, settings)
    }

    /// Opens the channel, creating it without a producer if it does not exist (see
    /// `Channel::open_or_create`).
    pub(crate) fn open_or_create(settings: &Settings) -> Result<Self, ChannelError> {
        let (name, _, params) = settings.params()?;
        check_delivery(settings)?;
        let geo = super::producer::geometry(params)?;
        loop {
            if let Some(view) = super::producer::create_segment(&name, geo, settings, None)? {
                return Self::attach(&name, view, settings);
            }
            match super::open_view(&name, settings.ready_timeout) {
                Ok(view) => {
                    super::producer::check_same_params(&name, &params, &view.geometry().params)?;
                    check_open(&name, settings, T::FIXED, &view)?;
                    return Self::attach(&name, view, settings);
                }
                // Removed between our create and open: try creating again.
                Err(ChannelError::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    #[cfg_attr(not(feature = "zmq"), allow(dead_code))]
    /// A consumer of a producer-less memfd pair only this process holds: what a Hub consumer
    /// that starts first reads (nothing) until its producer's channel comes up.
    pub(crate) fn open_private_memfd(settings: &Settings) -> Result<Self, ChannelError> {
        let view = super::producer::create_private_memfd(settings)?;
        let name = view.segment().channel().clone();
        Self::attach(&name, view, settings)
    }

    fn attach(name: &ChannelName, view: View, settings: &Settings) -> Result<Self, ChannelError> {
        let me = current_process(name)?;
        let owner_tag = (u64::from(settings.client_tag) << 32) | u64::from(attach_nonce());
        let delivery = settings.delivery;
        // Frame ids only grow across a takeover, so a resume point beyond the commit position
        // means the channel was made again, numbering its frames from 0: resume from there.
        let resume_at = settings.resume_at.map(|at| {
            if at > view.header().commit_pos.load(Ordering::SeqCst) {
                0
            } else {
                at
            }
        });
        let (entry, state_word, cursor) = claim_entry(&view, me, owner_tag, delivery, resume_at)?;
        // Frames from where a resuming consumer stopped that the producer overwrote since.
        let skipped = resume_at.map_or(0, |at| cursor.saturating_sub(at));
        if skipped > 0
            && let Some(e) = view.consumer(entry)
        {
            e.missed.store(skipped, Ordering::Relaxed);
        }
        let p = view.geometry().params;
        let lossless_mode = delivery.holds_producer();
        let holds = lossless_mode && policy_of(&p).is_some_and(Policy::is_lossless);
        tracing::debug!(channel = %name, entry, cursor, %delivery, "consumer attached");
        Ok(Self {
            view,
            entry,
            state_word,
            owner_tag,
            cursor,
            known_commit: 0,
            rejected_commit: None,
            mode: settings.wait_mode,
            delivery,
            lossless_mode,
            holds,
            skip_until: 0,
            next_due: None,
            _payload: PhantomData,
        })
    }

    /// The channel name.
    pub fn channel(&self) -> &ChannelName {
        self.view.segment().channel()
    }

    /// The channel's policy (a blocking ring's timeout, which the segment does not store, as
    /// the default).
    pub fn policy(&self) -> Option<Policy> {
        policy_of(&self.view.geometry().params)
    }

    /// Whether frames are held in place (a lossless ring read in the lossless delivery mode)
    /// rather than read through checked copies.
    pub fn is_lossless(&self) -> bool {
        self.holds
    }

    /// How this consumer takes frames (see [`DeliveryMode`]).
    pub fn delivery_mode(&self) -> DeliveryMode {
        self.delivery
    }

    /// Frames committed that this consumer has not looked at yet (the commit position less
    /// its cursor): one atomic load.
    pub fn lag(&self) -> u64 {
        self.view
            .header()
            .commit_pos
            .load(Ordering::Acquire)
            .saturating_sub(self.cursor)
    }

    /// The version of the flexible-zone state now (0: none yet): one atomic load, so a
    /// reader can poll it and call [`Consumer::read_state`] only when it changed.
    pub fn state_version(&self) -> u64 {
        self.view.header().flex_version.load(Ordering::Acquire)
    }

    /// Frames this consumer's delivery mode skipped on purpose (latest, queue, every,
    /// max-rate).
    pub fn dropped(&self) -> u64 {
        self.entry().dropped.load(Ordering::Relaxed)
    }

    /// The element type of every frame.
    pub fn element_type(&self) -> ElementType {
        self.view.geometry().element()
    }

    /// The largest frame shape.
    pub fn max_shape(&self) -> &[u64] {
        self.view.geometry().params.schema.shape()
    }

    /// The application's schema name and version, if the producer gave one.
    pub fn schema(&self) -> Option<(&str, u32)> {
        let s = &self.view.geometry().params.schema;
        s.name().map(|n| (n, s.version))
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

    /// What the segment says about itself (as [`inspect`](super::inspect) reads it): how it
    /// is shared, header, counters, consumers with their liveness.
    pub fn report(&self) -> super::SegmentReport {
        super::inspect::report(&self.view)
    }

    /// The reader count of each slot (index = descriptor slot, frame id mod N): how many live
    /// consumers hold a frame of that slot now. Derived from the consumer table, so a reader
    /// killed while holding a frame stops counting at once (see `docs/SHM_LAYOUT.md`).
    pub fn slot_readers(&self) -> Vec<u32> {
        super::slot_readers(&self.view)
    }

    /// Whether a live producer is attached now.
    pub fn producer_alive(&self) -> bool {
        super::producer_alive(&self.view)
    }

    #[cfg_attr(not(feature = "zmq"), allow(dead_code))]
    /// The random id of the channel incarnation this consumer reads (a memfd channel taken
    /// over by a restarted producer is a new incarnation).
    pub(crate) fn instance(&self) -> u64 {
        self.view.header().instance
    }

    /// Frames this consumer lost because a lossy policy overwrote them (or a corrupt
    /// descriptor).
    pub fn missed(&self) -> u64 {
        self.entry().missed.load(Ordering::Relaxed)
    }

    /// Whether this consumer's table entry is still its own (not evicted).
    pub fn is_attached(&self) -> bool {
        let e = self.entry();
        e.state.load(Ordering::Acquire) == self.state_word
            && e.owner_tag.load(Ordering::Acquire) == self.owner_tag
    }

    fn entry(&self) -> &layout::ConsumerEntry {
        self.view
            .consumer(self.entry)
            .expect("entry index validated at attach")
    }

    fn check_entry(&self) -> Result<&layout::ConsumerEntry, ReadError> {
        if !self.is_attached() {
            // Evicted: the entry is someone else's to claim now.
            self.view.segment().unlock_byte(self.entry as u64);
            return Err(ReadError::Evicted {
                channel: self.channel().to_string(),
            });
        }
        let e = self.entry();
        e.heartbeat_ns
            .store(sys::monotonic_coarse_ns(), Ordering::Relaxed);
        Ok(e)
    }

    fn lose(&self, frames: u64) {
        // Only this consumer writes its entry's counters: a plain saturating update.
        let e = self.entry();
        let missed = e.missed.load(Ordering::Relaxed);
        e.missed
            .store(missed.saturating_add(frames), Ordering::Relaxed);
        super::saturating_add(&self.view.control().overwritten, frames);
    }

    fn set_position(&mut self, cursor: u64) {
        self.cursor = cursor;
        if self.lossless_mode {
            self.entry().position.store(cursor, Ordering::SeqCst);
        } else {
            // Holds nothing back: the position stays NOT_HOLDING; the cursor is for lag.
            self.entry().cursor.store(cursor, Ordering::Relaxed);
        }
    }

    /// Moves the cursor where the delivery mode says the next frame is, given that frames
    /// below `commit` exist; counts the frames it skips as dropped.
    fn apply_delivery(&mut self, commit: u64) {
        let target = match self.delivery {
            DeliveryMode::Lossless => return,
            DeliveryMode::Latest | DeliveryMode::MaxRate(_) => commit - 1,
            DeliveryMode::Queue(n) => commit.saturating_sub(u64::from(n)),
            DeliveryMode::Every(_) => self.skip_until.min(commit),
        };
        if target > self.cursor {
            let e = self.entry();
            let dropped = e.dropped.load(Ordering::Relaxed);
            e.dropped.store(
                dropped.saturating_add(target - self.cursor),
                Ordering::Relaxed,
            );
            self.set_position(target);
        }
    }

    /// `max-rate:HZ`: waits (refreshing the heartbeat) until the next frame may be handed
    /// out, or `deadline`.
    fn wait_due(&mut self, deadline: Option<Instant>) -> Result<(), ReadError> {
        let Some(due) = self.next_due else {
            return Ok(());
        };
        loop {
            self.check_entry()?;
            let now = Instant::now();
            if now >= due {
                return Ok(());
            }
            if deadline.is_some_and(|d| now >= d) {
                return Err(ReadError::Timeout);
            }
            let until = deadline.map_or(due, |d| d.min(due));
            std::thread::sleep((until - now).min(HEARTBEAT_NAP));
        }
    }

    /// A new commit position beyond the cursor, if the producer stored one the slots hold.
    /// A position they cannot hold is remembered and ignored (logged once), so a corrupt value
    /// is neither jumped to nor spun on; the producer's next commit replaces it.
    fn refresh_commit(&mut self) {
        let c = self.view.header().commit_pos.load(Ordering::Acquire);
        if c <= self.cursor || Some(c) == self.rejected_commit {
            return;
        }
        if commit_plausible(&self.view, c) {
            self.known_commit = c;
            self.rejected_commit = None;
        } else {
            tracing::warn!(
                channel = %self.channel(),
                commit = c,
                cursor = self.cursor,
                "ignoring a commit position the slots do not hold (segment corrupt?)"
            );
            self.rejected_commit = Some(c);
        }
    }

    /// Whether the commit position moved beyond the cursor to a value not rejected.
    #[inline]
    fn commit_moved(&self, order: Ordering) -> bool {
        let c = self.view.header().commit_pos.load(order);
        c > self.cursor && Some(c) != self.rejected_commit
    }

    /// Waits up to `timeout` (`None`: forever) for the next frame and returns it.
    ///
    /// Frames are returned in order. Under a lossless ring the frame is held (see the type's
    /// documentation) and its checksum, if the channel has checksums, was verified. Under a
    /// lossy policy a slow consumer skips frames that were overwritten before it got to them
    /// (counted in [`Consumer::missed`]).
    ///
    /// ```
    /// use labhub::shm::{self, Channel, Policy};
    /// # let name = format!("doc-next-{}", std::process::id());
    /// let mut p = Channel::new(&name).policy(Policy::ring(4)).frames::<i16>(&[2, 2]).create()?;
    /// let mut c = Channel::new(&name).element::<i16>().open()?;
    /// p.publish(&[1, -2, 3, -4], &[2, 2])?;
    /// let frame = c.next(Some(std::time::Duration::from_secs(5)))?;
    /// assert_eq!((frame.frame_id(), frame.shape()), (0, &[2u64, 2][..]));
    /// assert_eq!(frame.held(), Some(&[1, -2, 3, -4][..]));
    /// frame.finish()?; // or drop it: either releases the slot
    /// # drop(c); drop(p); shm::remove_channel(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`ReadError::Timeout`]; [`ReadError::Evicted`]; [`ReadError::ChecksumMismatch`] (the
    /// frame is skipped); [`ReadError::Corrupt`] for a descriptor no producer writes (skipped).
    pub fn next(&mut self, timeout: Option<Duration>) -> Result<Frame<'_, T>, ReadError> {
        if self.next_due.is_some() {
            let deadline =
                timeout.map(|t| Instant::now().checked_add(t).unwrap_or_else(far_future));
            self.wait_due(deadline)?;
        }
        let snap = self.wait_snapshot(timeout)?;
        self.hand_out(snap, self.holds)
    }

    /// Waits for the next frame and returns its descriptor, without handing it out.
    pub(crate) fn wait_snapshot(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Snapshot, ReadError> {
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
            // A mode that skips ahead (latest, queue, …) needs the newest commit every time.
            if self.cursor >= self.known_commit || !self.lossless_mode {
                self.refresh_commit();
            }
            let commit = self.known_commit;
            if !self.lossless_mode && self.cursor < commit {
                self.apply_delivery(commit);
            }
            if self.cursor < commit {
                match self.snapshot(self.cursor, commit)? {
                    Some(snap) => return Ok(snap),
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
                        self.commit_moved(Ordering::Acquire)
                    }) {
                        continue;
                    }
                    *started.insert(Instant::now())
                }
            };
            let deadline = timeout.map(|t| start.checked_add(t).unwrap_or_else(far_future));
            // Spin mode: poll the commit position, looking at the clock every 64 polls. No
            // yielding: spin mode is for a host with a core to spare for this consumer.
            if let Some(spin) = spin_for {
                let until = start + spin;
                let mut polls = 0u32;
                while !self.commit_moved(Ordering::Acquire) {
                    polls = polls.wrapping_add(1);
                    if polls.is_multiple_of(64) {
                        let now = Instant::now();
                        if deadline.is_some_and(|d| now >= d) {
                            return Err(ReadError::Timeout);
                        }
                        if now >= until {
                            spin_for = None;
                            break;
                        }
                    }
                    std::hint::spin_loop();
                }
                continue;
            }
            let c = self.view.control();
            let seen = c.data_event.sequence();
            // Announce the sleep, then re-check (Dekker with the producer's commit store and
            // flag load): the producer notifies only when it finds the flag set. A producer
            // that commits without a full barrier relies on our heavy fence between the two;
            // where the kernel refuses it, sleep in short naps instead of trusting a wake-up.
            c.data_waiting.store(1, Ordering::SeqCst);
            let mut longest = HEARTBEAT_NAP;
            if h.commit_fence.load(Ordering::SeqCst) != layout::commit_fence_code::FULL
                && !sys::heavy_fence()
            {
                longest = UNFENCED_NAP;
            }
            if self.commit_moved(Ordering::SeqCst) {
                continue;
            }
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
            c.data_event.wait_changed(seen, Some(nap));
        }
    }

    /// The newest committed frame still in the ring, or `None` if there is none. Frames between
    /// the cursor and it are skipped (not counted as missed); [`Consumer::next`] continues
    /// after it. Under a lossless ring the frame is held, also when this consumer had already
    /// passed it, if the producer has not yet been allowed past it; otherwise it is read like a
    /// lossy frame.
    ///
    /// # Errors
    /// [`ReadError::Evicted`], [`ReadError::ChecksumMismatch`], [`ReadError::Corrupt`].
    pub fn latest(&mut self) -> Result<Option<Frame<'_, T>>, ReadError> {
        loop {
            self.check_entry()?;
            let h = self.view.header();
            let commit = h.commit_pos.load(Ordering::Acquire);
            let oldest = commit.saturating_sub(self.view.geometry().slots());
            // Newest first; a slot emptied by a crashed or abandoning producer is passed over.
            let found = (oldest..commit)
                .rev()
                .find_map(|f| match self.read_meta(f) {
                    MetaRead::Frame(s) => Some(s),
                    MetaRead::Gone | MetaRead::Corrupt(_) => None,
                });
            if let Some(snap) = found {
                let mut held = false;
                if self.holds {
                    if snap.frame >= self.cursor {
                        // Holding position ≤ frame keeps a lossless producer off its slot.
                        self.set_position(snap.frame);
                        held = true;
                    } else {
                        held = self.protect(snap.frame);
                    }
                    // Held only if the frame is still there now that it is protected.
                    if held
                        && !matches!(self.read_meta(snap.frame), MetaRead::Frame(s) if s.seq == snap.seq)
                    {
                        let c = self.cursor;
                        self.set_position(c);
                        held = false;
                    }
                }
                return self.hand_out(snap, held).map(Some);
            }
            if h.commit_pos.load(Ordering::Acquire) == commit {
                return Ok(None);
            }
        }
    }

    /// Lowers this consumer's position to frame `f` (< cursor) so the producer keeps off its
    /// slot, if that is still possible: the position store and the bound load pair with the
    /// producer's bound store and re-scan (see `Producer::scan`). If the producer may already
    /// write past `f` without scanning, the position is restored and false returned.
    fn protect(&mut self, f: u64) -> bool {
        let n = self.view.geometry().slots();
        let e = self.entry();
        e.position.store(f, Ordering::SeqCst);
        let bound = self.view.header().space_bound.load(Ordering::SeqCst);
        if bound <= f.saturating_add(n) {
            return true;
        }
        e.position.store(self.cursor, Ordering::SeqCst);
        false
    }

    /// Tries to snapshot frame `cursor` (< commit); on loss, advances the cursor and returns
    /// `None`.
    fn snapshot(&mut self, cursor: u64, commit: u64) -> Result<Option<Snapshot>, ReadError> {
        let n = self.view.geometry().slots();
        // Frames older than commit - n are gone from the ring.
        let oldest = commit.saturating_sub(n);
        if cursor < oldest {
            self.lose(oldest - cursor);
            self.set_position(oldest);
            return Ok(None);
        }
        match self.read_meta(cursor) {
            MetaRead::Frame(s) => Ok(Some(s)),
            MetaRead::Gone => {
                // Overwritten (lossy), abandoned by a crashed producer, or evicted.
                self.lose(1);
                self.set_position(cursor + 1);
                Ok(None)
            }
            MetaRead::Corrupt(problem) => {
                self.lose(1);
                self.set_position(cursor + 1);
                Err(ReadError::Corrupt {
                    channel: self.channel().to_string(),
                    problem: format!("frame {cursor}: {problem}"),
                })
            }
        }
    }

    /// Reads frame `f`'s descriptor if the slot holds committed frame `f`, consistently, and
    /// checks it against the channel's schema.
    fn read_meta(&self, f: u64) -> MetaRead {
        let m = self.view.slot_meta(f);
        let seq = m.seq.load(Ordering::Acquire);
        if seq != layout::committed_seq(f) {
            return MetaRead::Gone;
        }
        let geo = self.view.geometry();
        let schema = &geo.params.schema;
        let ndim = m.ndim.load(Ordering::Relaxed);
        let mut dims = [0u64; layout::MAX_DIMS];
        // The second cache line of the descriptor only when it holds something (see commit).
        let used = (schema.ndim as usize).min(layout::MAX_DIMS);
        for (d, a) in dims.iter_mut().zip(&m.dims).take(used) {
            *d = a.load(Ordering::Relaxed);
        }
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
        let state_version = if geo.params.flex_size > 0 {
            m.state_version.load(Ordering::Relaxed)
        } else {
            0
        };
        let len = m.data_size.load(Ordering::Relaxed);
        let timestamp_ns = m.timestamp_ns.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        if m.seq.load(Ordering::Relaxed) != seq {
            return MetaRead::Gone;
        }
        // Consistent, but written by another process: only a frame the producer could have
        // committed is handed out.
        if ndim != u64::from(schema.ndim) {
            return MetaRead::Corrupt("its number of dimensions is not the channel's");
        }
        if dims.iter().zip(&schema.max_shape).any(|(d, m)| d > m) {
            return MetaRead::Corrupt("its shape exceeds the channel's largest shape");
        }
        // Within the largest shape: no overflow.
        let expected = dims[..used].iter().product::<u64>() * geo.element().size();
        if len != expected {
            return MetaRead::Corrupt("its byte length disagrees with its shape");
        }
        MetaRead::Frame(Snapshot {
            frame: f,
            payload: geo.payload_of(f, chunk),
            seq,
            len,
            checksum,
            timestamp_ns,
            state_version,
            ndim: used,
            dims,
        })
    }

    /// Hands out frame `snap`, held or not; a held frame of a checksummed channel is verified
    /// first (and skipped if it fails).
    pub(crate) fn hand_out(
        &mut self,
        snap: Snapshot,
        held: bool,
    ) -> Result<Frame<'_, T>, ReadError> {
        let checksummed = self.view.geometry().params.checksum == layout::checksum_code::XXH3_64;
        if held && checksummed {
            // SAFETY: held — this consumer's position covers the frame (set by the cursor or
            // by `protect`), so the producer does not write its buffer.
            let bytes: &[u8] = unsafe { self.view.payload_held(snap.payload, snap.len) };
            let computed = super::checksum_of(bytes);
            if computed != snap.checksum {
                let next = self.cursor.max(snap.frame + 1);
                self.set_position(next);
                return Err(ReadError::ChecksumMismatch {
                    frame_id: snap.frame,
                    stored: snap.checksum,
                    computed,
                });
            }
        }
        if let DeliveryMode::MaxRate(hz) = self.delivery {
            self.next_due = Some(Instant::now() + Duration::from_secs(1) / hz.max(1));
        }
        let e = self.entry();
        e.held.store(snap.frame + 1, Ordering::Relaxed);
        // Only this consumer writes its entry's counters: a plain update, not a locked one.
        let received = e.received.load(Ordering::Relaxed);
        e.received
            .store(received.saturating_add(1), Ordering::Relaxed);
        Ok(Frame {
            consumer: self,
            snap,
            held,
            validated: std::cell::Cell::new(false),
        })
    }

    /// Reads the flexible-zone state: `Ok(None)` before the producer wrote any, else the version
    /// and the value. Never returns a partially written state.
    ///
    /// # Errors
    /// A deserialisation error, [`StateError::Contended`] if the producer rewrote the state
    /// during every attempt, [`StateError::CorruptVersion`].
    pub fn read_state<S: serde::de::DeserializeOwned>(
        &self,
    ) -> Result<Option<(u64, S)>, StateError> {
        flex::read_state(&self.view)
    }

    /// Reads the flexible-zone state as the bytes the producer serialised (in the channel's
    /// [`StateFormat`](super::StateFormat)): `Ok(None)` before any; never a partial state.
    ///
    /// # Errors
    /// As [`Consumer::read_state`], less the deserialisation.
    pub fn read_state_bytes(&self) -> Result<Option<(u64, Vec<u8>)>, StateError> {
        flex::read_state_bytes(&self.view)
    }

    /// The serialisation of the channel's flexible-zone state; `None` for a format this build
    /// does not know (MessagePack without the `msgpack` feature).
    pub fn state_format(&self) -> Option<super::StateFormat> {
        super::StateFormat::from_code(self.view.geometry().params.state_format)
    }
}

impl<T: Payload> Drop for Consumer<T> {
    fn drop(&mut self) {
        if self.is_attached() {
            super::release_entry(&self.view, self.entry(), self.state_word);
        }
        self.view.segment().unlock_byte(self.entry as u64);
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365)
}

/// Checks the delivery mode's parameter.
fn check_delivery(settings: &Settings) -> Result<(), ChannelError> {
    settings
        .delivery
        .validate()
        .map_err(|reason| ChannelError::InvalidConfig {
            field: "delivery",
            reason,
        })
}

/// Takes a free (or dead consumer's) table entry. Returns (index, state word, start cursor).
/// `resume_at`: start there rather than at the commit position, or at the oldest frame the
/// producer cannot have overwritten since, whichever is later.
fn claim_entry(
    view: &View,
    me: ProcessId,
    owner_tag: u64,
    delivery: DeliveryMode,
    resume_at: Option<u64>,
) -> Result<(usize, u64, u64), ChannelError> {
    let (delivery_code, delivery_param) = delivery.to_code();
    let holding = delivery.holds_producer();
    let h = view.header();
    let claiming = (consumer_state::CLAIMING << 32) | u64::from(me.pid);
    let active = (consumer_state::ACTIVE << 32) | u64::from(me.pid);
    let locked = view.liveness() == layout::liveness_code::LOCK;
    for i in 0..layout::CONSUMER_CAPACITY as usize {
        let Some(e) = view.consumer(i) else { break };
        let state = e.state.load(Ordering::SeqCst);
        if state != consumer_state::FREE && !super::reclaim_if_dead(view, i, state) {
            continue;
        }
        // Under lock liveness the claimer holds the entry's lock before it claims the entry,
        // so nobody ever judges it dead while it fills the entry in; a lock held by someone
        // else means the entry is still in use (an evicted owner that has not noticed yet).
        if locked && !view.segment().try_lock_byte(i as u64) {
            continue;
        }
        let give_up = || {
            if locked {
                view.segment().unlock_byte(i as u64);
            }
        };
        if e.state
            .compare_exchange(
                consumer_state::FREE,
                claiming,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_err()
        {
            give_up();
            continue;
        }
        // Provisional position: conservative (it can only hold the producer back), raised below.
        // A mode that holds nothing back never names a frame here, not even for a moment.
        // Resuming starts lower, which holds the producer back more: as safe.
        let c0 = h.commit_pos.load(Ordering::SeqCst);
        let c0 = resume_at.map_or(c0, |at| at.min(c0));
        e.position.store(
            if holding { c0 } else { layout::NOT_HOLDING },
            Ordering::SeqCst,
        );
        e.delivery.store(delivery_code, Ordering::Relaxed);
        e.delivery_param.store(delivery_param, Ordering::Relaxed);
        e.cursor.store(c0, Ordering::Relaxed);
        e.dropped.store(0, Ordering::Relaxed);
        e.start_time.store(me.start_time, Ordering::SeqCst);
        e.heartbeat_ns
            .store(sys::monotonic_coarse_ns(), Ordering::Relaxed);
        e.held.store(0, Ordering::Relaxed);
        e.received.store(0, Ordering::Relaxed);
        e.missed.store(0, Ordering::Relaxed);
        e.owner_tag.store(owner_tag, Ordering::SeqCst);
        // A compare-and-swap, not a store: if someone judged this claim dead and freed the
        // entry meanwhile, it is no longer ours.
        if e.state
            .compare_exchange(claiming, active, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            give_up();
            continue;
        }
        // The producer may write frames below `space_bound` without scanning the table again,
        // so start no earlier than `space_bound - n` (Dekker pairing with Producer::scan: it
        // stores the bound, then scans; we store our entry, then load the bound). Clamped to
        // the commit position, in case the header holds garbage.
        let bound = h.space_bound.load(Ordering::SeqCst);
        let commit = h.commit_pos.load(Ordering::SeqCst);
        let commit = if commit_plausible(view, commit) {
            commit
        } else {
            c0
        };
        let start = c0
            .max(bound.saturating_sub(view.geometry().slots()))
            .min(commit.max(c0));
        if holding {
            e.position.store(start, Ordering::SeqCst);
        }
        e.cursor.store(start, Ordering::Relaxed);
        return Ok((i, active, start));
    }
    Err(ChannelError::ConsumerTableFull {
        channel: view.segment().channel().to_string(),
        capacity: layout::CONSUMER_CAPACITY,
    })
}

/// What reading a descriptor found.
enum MetaRead {
    Frame(Snapshot),
    /// Not (or no longer) the committed frame asked for.
    Gone,
    /// A consistent descriptor no producer writes.
    Corrupt(&'static str),
}

/// A frame's descriptor, read consistently.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Snapshot {
    frame: u64,
    /// The payload buffer holding the frame.
    payload: usize,
    seq: u64,
    /// Payload bytes.
    len: u64,
    checksum: u64,
    timestamp_ns: u64,
    state_version: u64,
    ndim: usize,
    dims: [u64; layout::MAX_DIMS],
}

/// A frame read from a channel; its slot is released when it is dropped.
///
/// Held (lossless rings): [`Frame::held`] gives the elements in place. Not held (lossy
/// policies, or a frame [`Consumer::latest`] could not protect): read it with
/// [`Frame::to_vec`], [`Frame::copy_to`] or [`Frame::read`], each of which says whether the
/// frame stayed whole. See [`Consumer`] for why.
#[must_use = "dropping a frame releases it at once"]
pub struct Frame<'a, T: Payload> {
    consumer: &'a mut Consumer<T>,
    snap: Snapshot,
    held: bool,
    validated: std::cell::Cell<bool>,
}

impl<T: Payload> std::fmt::Debug for Frame<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("frame_id", &self.snap.frame)
            .field("shape", &self.shape())
            .field("held", &self.held)
            .finish()
    }
}

impl<'a, T: Payload> Frame<'a, T> {
    /// The consumer this frame was read from (its settings, counters and state zone stay
    /// readable while the frame holds it borrowed).
    #[inline]
    pub fn consumer(&self) -> &Consumer<T> {
        self.consumer
    }

    /// The frame id (0, 1, … in publish order).
    #[inline]
    pub fn frame_id(&self) -> u64 {
        self.snap.frame
    }

    /// The producer's timestamp in ns (`CLOCK_REALTIME` at commit unless it set one).
    #[inline]
    pub fn timestamp_ns(&self) -> u64 {
        self.snap.timestamp_ns
    }

    /// The state version (see [`Producer::write_state`](super::Producer::write_state)) the
    /// producer had written when it committed this frame: the frame follows that state. 0
    /// when the channel has no flexible zone or no state was written yet.
    #[inline]
    pub fn state_version(&self) -> u64 {
        self.snap.state_version
    }

    /// The frame's shape.
    #[inline]
    pub fn shape(&self) -> &[u64] {
        &self.snap.dims[..self.snap.ndim]
    }

    /// The element type.
    #[inline]
    pub fn element_type(&self) -> ElementType {
        self.consumer.view.geometry().element()
    }

    /// The frame's id in the channel it came from: for a frame a bridge brought from another
    /// hub, the source channel's frame id; for a frame that originated here, [`Frame::frame_id`].
    /// `None` if a lossy producer overwrote the slot since the frame was read (the frame is
    /// then stale anyway, see [`Frame::read`]).
    pub fn origin_id(&self) -> Option<u64> {
        let m = self.consumer.view.slot_meta(self.snap.frame);
        let origin = m.origin_id.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        if m.seq.load(Ordering::Relaxed) != self.snap.seq {
            return None;
        }
        Some(origin.checked_sub(1).unwrap_or(self.snap.frame))
    }

    /// Items in the frame: elements, or bytes for a runtime-typed consumer.
    #[inline]
    pub fn len(&self) -> usize {
        (self.snap.len / std::mem::size_of::<T::Item>() as u64) as usize
    }

    /// Whether the frame holds no items.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.snap.len == 0
    }

    /// Whether the frame is held in place (see [`Frame::held`]).
    #[inline]
    pub fn is_held(&self) -> bool {
        self.held
    }

    /// The items in place in shared memory (no copy), if the frame is held: under a lossless
    /// ring the producer does not rewrite the slot until this frame is dropped (unless this
    /// consumer is evicted, see [`Consumer`]). `None` under lossy policies.
    #[inline]
    pub fn held(&self) -> Option<&[T::Item]> {
        // SAFETY: held — the consumer's position covers this frame, so no process writes its
        // buffer while the frame (which borrows the consumer) lives. An evicted consumer loses
        // that guarantee; that edge is documented on `Consumer`.
        self.held.then(|| unsafe {
            self.consumer
                .view
                .payload_held(self.snap.payload, self.snap.len)
        })
    }

    /// Whether the producer has left the frame alone since it was handed out (its seq word is
    /// unchanged): every read made before this call saw only this frame's bytes.
    #[inline]
    fn unchanged(&self) -> bool {
        // Seqlock reader side: the payload reads before happen before the re-check.
        fence(Ordering::Acquire);
        let m = self.consumer.view.slot_meta(self.snap.frame);
        m.seq.load(Ordering::Relaxed) == self.snap.seq
    }

    fn overwritten(&self) -> Overwritten {
        Overwritten {
            frame_id: self.snap.frame,
        }
    }

    /// Copies the frame into `dst`, which must hold exactly [`Frame::len`] items, then checks
    /// that it stayed whole and (if the channel has checksums) its checksum.
    ///
    /// # Errors
    /// [`ReadError::Overwritten`] if the producer rewrote the slot meanwhile (lossy policies;
    /// `dst` then holds a mix of frames), [`ReadError::ChecksumMismatch`],
    /// [`ReadError::Corrupt`] if `dst` has another length.
    pub fn copy_to(&self, dst: &mut [T::Item]) -> Result<(), ReadError> {
        if dst.len() != self.len() {
            return Err(ReadError::Corrupt {
                channel: self.consumer.channel().to_string(),
                problem: format!(
                    "frame {} holds {} items, the buffer {}",
                    self.snap.frame,
                    self.len(),
                    dst.len()
                ),
            });
        }
        match self.held() {
            Some(items) => dst.copy_from_slice(items),
            None => self
                .consumer
                .view
                .payload_copy(self.snap.payload, bytemuck::cast_slice_mut(dst)),
        }
        if !self.unchanged() {
            return Err(self.overwritten().into());
        }
        self.validated.set(true);
        let view = &self.consumer.view;
        if view.geometry().params.checksum == layout::checksum_code::XXH3_64 && !self.held {
            let computed = super::checksum_of(bytemuck::cast_slice(dst));
            if computed != self.snap.checksum {
                return Err(ReadError::ChecksumMismatch {
                    frame_id: self.snap.frame,
                    stored: self.snap.checksum,
                    computed,
                });
            }
        }
        Ok(())
    }

    /// The frame copied out (see [`Frame::copy_to`]).
    ///
    /// # Errors
    /// Those of [`Frame::copy_to`].
    pub fn to_vec(&self) -> Result<Vec<T::Item>, ReadError> {
        let mut v: Vec<T::Item> = bytemuck::zeroed_vec(self.len());
        self.copy_to(&mut v)?;
        Ok(v)
    }

    /// Hands `f` a [`Shared`] view of the frame, whose reads are atomic (defined even while
    /// the producer rewrites the slot), and returns what `f` returns if the frame stayed whole
    /// meanwhile. Checksums are not verified here (that needs every byte: use
    /// [`Frame::to_vec`]).
    ///
    /// # Errors
    /// [`Overwritten`] if the producer rewrote the slot while `f` ran.
    pub fn read<R>(&self, f: impl FnOnce(Shared<'_, T>) -> R) -> Result<R, Overwritten> {
        let r = f(Shared {
            view: &self.consumer.view,
            payload: self.snap.payload,
            len: self.len(),
            _payload: PhantomData,
        });
        if !self.unchanged() {
            return Err(self.overwritten());
        }
        self.validated.set(true);
        Ok(r)
    }

    /// Releases the frame, reporting whether it stayed whole while it was held or read.
    ///
    /// # Errors
    /// [`ReadError::Evicted`] if this consumer was evicted meanwhile (what it read of a held
    /// frame after that point may be a mix of frames); [`ReadError::Overwritten`] if the slot
    /// was rewritten (the frame is then counted as missed).
    pub fn finish(self) -> Result<(), ReadError> {
        if !self.consumer.is_attached() {
            return Err(ReadError::Evicted {
                channel: self.consumer.channel().to_string(),
            });
        }
        if !self.unchanged() {
            return Err(self.overwritten().into());
        }
        self.validated.set(true);
        Ok(())
    }
}

#[cfg(feature = "ndarray")]
impl<T> Frame<'_, T>
where
    T: super::Element + Payload<Item = T>,
{
    /// The held frame as an n-dimensional array view in place (cargo feature `ndarray`);
    /// `None` if the frame is not held.
    pub fn array(&self) -> Option<ndarray::ArrayViewD<'_, T>> {
        let shape: Vec<usize> = self.shape().iter().map(|&d| d as usize).collect();
        let items = self.held()?;
        ndarray::ArrayViewD::from_shape(ndarray::IxDyn(&shape), items).ok()
    }

    /// The frame copied into an owned array, checked like [`Frame::to_vec`] (cargo feature
    /// `ndarray`).
    ///
    /// # Errors
    /// Those of [`Frame::copy_to`].
    pub fn to_array(&self) -> Result<ndarray::ArrayD<T>, ReadError> {
        let shape: Vec<usize> = self.shape().iter().map(|&d| d as usize).collect();
        let v = self.to_vec()?;
        ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&shape), v).map_err(|e| ReadError::Corrupt {
            channel: self.consumer.channel().to_string(),
            problem: e.to_string(),
        })
    }
}

impl<T: Payload> Drop for Frame<'_, T> {
    fn drop(&mut self) {
        let c = &mut *self.consumer;
        let m = c.view.slot_meta(self.snap.frame);
        if !self.held && !self.validated.get() && m.seq.load(Ordering::Acquire) != self.snap.seq {
            c.lose(1);
        }
        c.entry().held.store(0, Ordering::Relaxed);
        // Past this frame, or back to the cursor after holding an older one (`latest`).
        let next = c.cursor.max(self.snap.frame + 1);
        if let DeliveryMode::Every(k) = c.delivery {
            c.skip_until = self.snap.frame.saturating_add(u64::from(k));
        }
        c.set_position(next);
        // Dekker with the producer: it sets `producer_waiting` then re-checks positions; we
        // stored our position (SeqCst) and now check the flag.
        let ctl = c.view.control();
        // The first releaser to see the flag clears it and wakes the producer: one wake per
        // sleep. The producer sets the flag again before each sleep.
        if c.holds
            && ctl.producer_waiting.load(Ordering::SeqCst) != 0
            && ctl.producer_waiting.swap(0, Ordering::SeqCst) != 0
        {
            ctl.space_event.notify_all();
        }
    }
}

/// A frame's items read with atomic loads, inside [`Frame::read`]: defined even while the
/// producer rewrites the slot (the values may then mix frames, which `read` reports).
pub struct Shared<'f, T: Payload> {
    view: &'f View,
    payload: usize,
    len: usize,
    _payload: PhantomData<fn() -> T>,
}

impl<T: Payload> std::fmt::Debug for Shared<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("len", &self.len).finish()
    }
}

impl<T: Payload> Shared<'_, T> {
    /// Items in the frame.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the frame holds no items.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Item `i`, or `None` past the end.
    pub fn get(&self, i: usize) -> Option<T::Item> {
        if i >= self.len {
            return None;
        }
        self.view.payload_element::<T::Item>(self.payload, i)
    }

    /// Copies the first `dst.len()` items (at most [`Shared::len`]) into `dst`; returns how
    /// many were copied.
    pub fn copy_to(&self, dst: &mut [T::Item]) -> usize {
        let n = dst.len().min(self.len);
        self.view
            .payload_copy(self.payload, bytemuck::cast_slice_mut(&mut dst[..n]));
        n
    }
}
