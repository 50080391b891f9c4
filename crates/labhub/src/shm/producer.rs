//! The producer side of a channel: create or take over, loan a slot and commit it, write the
//! state.

use std::marker::PhantomData;
use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, Instant};

use super::builder::Settings;
use super::element::{ElementType, Payload};
use super::error::{ChannelError, PublishError, StateError};
use super::layout::{self, View, backpressure_code, consumer_state, policy_code};
use super::segment::Segment;
use super::sync_impl::ProcessId;
use super::{Backpressure, ChannelStats, Policy, flex};
use crate::name::ChannelName;
use crate::sys;

/// How long a producer taking a channel over waits for a half-created segment to be published.
const REATTACH_WAIT: Duration = Duration::from_secs(2);
/// While blocked on a full ring, how often the producer re-checks whether the consumers holding
/// it back are still alive (or stuck, or dropped by the broker).
const LIVENESS_INTERVAL: Duration = Duration::from_millis(20);
/// How long a producer blocked on a full ring spins before sleeping.
const SPIN_BEFORE_SLEEP: Duration = Duration::from_micros(20);

/// Where a producer learns of consumers to evict because the broker dropped their client (see
/// `client::shm`): called while blocked on a full ring, it returns the client tags to evict.
pub(crate) type DroppedFeed = Box<dyn FnMut() -> Vec<u32> + Send>;

/// Asked by a producer blocked on a full ring, at least every [`LIVENESS_INTERVAL`], whether to
/// give up the wait (see [`Producer::set_interrupt`]).
pub type InterruptCheck = Box<dyn FnMut() -> bool + Send>;

/// The single writer of a channel, created by [`Channel::create`](super::Channel::create).
///
/// `T` is what frames are written as: an [`Element`](super::Element) type, or
/// [`Dynamic`](super::Dynamic) (bytes). Dropping the producer leaves the channel in place
/// (consumers keep their mappings and the last frames); a producer created later under the
/// same name with the same settings takes it over and continues the frame ids.
///
/// ```
/// use labhub::shm::{self, Channel, Policy};
/// # let name = format!("doc-producer-{}", std::process::id());
/// let mut producer = Channel::new(&name).policy(Policy::Latest).bytes(64).create()?;
/// // Fill a slot in place: its length is the frame's (here the largest shape, 64 bytes).
/// let mut slot = producer.loan()?;
/// slot.copy_from_slice(&[1; 64]);
/// assert_eq!(slot.commit(), 0);
/// // A shorter frame: a loan with its shape.
/// let mut slot = producer.loan_shape(&[5])?;
/// slot.copy_from_slice(b"hello");
/// assert_eq!(slot.commit(), 1);
/// // Or copy a slice in.
/// assert_eq!(producer.publish(b"hi", &[2])?, 2);
/// # drop(producer); shm::remove_channel(&name)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "dropping the producer gives the channel up"]
pub struct Producer<T: Payload> {
    view: View,
    policy: Policy,
    consumer_timeout: Option<Duration>,
    next_frame: u64,
    /// Frames below this id need no consumer-table scan (ring policies).
    space_bound: u64,
    me: ProcessId,
    /// This process is registered for the asymmetric fence: commits need no full barrier.
    light_commit: bool,
    /// How many frames ahead `loan` prefetches slots for writing (0: never).
    prefetch_ahead: u64,
    /// Length of the last frame published: the guess for the frames ahead.
    last_len: u64,
    /// Pooled payloads (see `Geometry::pooled`): which frame each buffer holds.
    pool: Option<PayloadPool>,
    /// The element type and its size, and the largest shape with its byte length.
    element: ElementType,
    max_shape: [u64; layout::MAX_DIMS],
    ndim: usize,
    full_bytes: u64,
    dropped_feed: Option<DroppedFeed>,
    interrupt: Option<InterruptCheck>,
    /// A frame committed by this producer carried an origin id (see [`SlotMut::set_origin_id`]).
    writes_origins: bool,
    _payload: PhantomData<fn() -> T>,
}

impl<T: Payload> std::fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("channel", &self.view.segment().channel())
            .field("element", &self.element)
            .field("max_shape", &self.max_shape())
            .field("next_frame", &self.next_frame)
            .finish_non_exhaustive()
    }
}

fn mismatch(
    channel: &ChannelName,
    field: &'static str,
    expected: impl ToString,
    found: impl ToString,
) -> ChannelError {
    ChannelError::ConfigMismatch {
        channel: channel.to_string(),
        field,
        expected: expected.to_string(),
        found: found.to_string(),
    }
}

/// The policy a segment's header describes (the blocking timeout is not stored: the default).
pub(super) fn policy_of(params: &layout::Params) -> Option<Policy> {
    Some(match (params.policy, params.backpressure) {
        (policy_code::LATEST, _) => Policy::Latest,
        (policy_code::DOUBLE_BUFFER, _) => Policy::DoubleBuffer,
        (policy_code::RING, bp) => Policy::Ring {
            slots: params.slot_count,
            when_full: match bp {
                backpressure_code::BLOCK => Backpressure::block(),
                backpressure_code::FAIL => Backpressure::Fail,
                backpressure_code::DROP_OLDEST => Backpressure::DropOldest,
                _ => return None,
            },
        },
        _ => return None,
    })
}

/// The same policy, ignoring the blocking timeout (a producer-side setting).
pub(super) fn same_rule(a: Policy, b: Policy) -> bool {
    match (a, b) {
        (
            Policy::Ring {
                slots: sa,
                when_full: wa,
            },
            Policy::Ring {
                slots: sb,
                when_full: wb,
            },
        ) => sa == sb && std::mem::discriminant(&wa) == std::mem::discriminant(&wb),
        _ => a == b,
    }
}

/// Checks an existing channel's parameters against what a creator (a producer taking over, or
/// `open_or_create`) would have made: the first difference is named.
pub(super) fn check_same_params(
    name: &ChannelName,
    want: &layout::Params,
    have: &layout::Params,
) -> Result<(), ChannelError> {
    if let (Some(w), Some(h)) = (policy_of(want), policy_of(have))
        && !same_rule(w, h)
    {
        return Err(mismatch(name, "policy", w, h));
    }
    super::consumer::check_schema(name, &want.schema, have)?;
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
    Ok(())
}

/// Creates a producer-less memfd pair for the channel `settings` describe, for this process
/// alone (not sealed, not handed to anyone): what a Hub consumer that starts before its
/// producer reads until the producer's channel comes up.
pub(super) fn create_private_memfd(settings: &Settings) -> Result<View, ChannelError> {
    let (name, _, params) = settings.params()?;
    let geo = geometry(params)?;
    let seg = Segment::create_memfd(&name, geo.total_size, geo.control_size)?;
    let view = View::new_unchecked_header(seg, geo, layout::liveness_code::LOCK)
        .map_err(layout_error(&name))?;
    // SAFETY: the memfds were just created and no other process has them.
    unsafe { init_headers(&view, settings, layout::liveness_code::LOCK) };
    publish_headers(&view);
    Ok(view)
}

/// Creates the named segment of a new channel and publishes its headers, with `producer`
/// installed as its producer (or none, for a consumer that starts first). Returns `None` if
/// the channel exists (another creator won).
pub(super) fn create_segment(
    name: &ChannelName,
    geo: layout::Geometry,
    settings: &Settings,
    producer: Option<(ProcessId, bool)>,
) -> Result<Option<View>, ChannelError> {
    let Some(seg) = Segment::create(name, geo.total_size, geo.control_size)? else {
        return Ok(None);
    };
    let view = View::new_unchecked_header(seg, geo, layout::liveness_code::PID)
        .map_err(layout_error(name))?;
    // SAFETY: we just created the segment exclusively and have not published its magic or its
    // name, so no other process reads its headers yet.
    unsafe { init_headers(&view, settings, layout::liveness_code::PID) };
    if let Some((me, light_commit)) = producer {
        install_fresh(&view, me, light_commit);
    }
    publish_headers(&view);
    if !view.segment().publish()? {
        // Another creator named the channel meanwhile: ours was never seen.
        return Ok(None);
    }
    tracing::debug!(channel = %name, size = geo.total_size, "created channel");
    Ok(Some(view))
}

fn busy(name: &ChannelName) -> ChannelError {
    ChannelError::ChannelBusy {
        channel: name.to_string(),
        pid: 0,
    }
}

fn layout_error(name: &ChannelName) -> impl Fn(super::LayoutError) -> ChannelError + '_ {
    move |source| ChannelError::Layout {
        channel: name.to_string(),
        source,
    }
}

/// A random incarnation id, never 0.
fn new_instance() -> u64 {
    let salt = super::random_salt();
    u64::from_le_bytes(salt[..8].try_into().unwrap_or([1; 8])).max(1)
}

/// Writes both headers of a fresh segment (a new incarnation).
///
/// # Safety
/// No other process may access the segment yet (see `layout::init_header`).
unsafe fn init_headers(view: &View, settings: &Settings, liveness: u32) {
    let secret = settings.secret.as_ref().map(|s| {
        let salt = super::random_salt();
        (salt, s.hash(&salt))
    });
    let instance = new_instance();
    // SAFETY: the caller's contract.
    unsafe {
        layout::init_header(view, secret, instance);
        layout::init_control(view, instance, liveness);
    }
}

/// Publishes both headers: the data header's magic, then the control header's.
fn publish_headers(view: &View) {
    layout::publish_magic(view.header());
    layout::publish_control_magic(view.control());
}

/// Installs `me` as the producer of a segment no other process sees yet.
fn install_fresh(view: &View, me: ProcessId, light_commit: bool) {
    let h = view.header();
    h.producer_pid.store(u64::from(me.pid), Ordering::Relaxed);
    h.producer_start_time
        .store(me.start_time, Ordering::Relaxed);
    h.producer_heartbeat_ns
        .store(sys::monotonic_coarse_ns(), Ordering::Relaxed);
    h.producer_attaches.store(1, Ordering::Relaxed);
    h.commit_fence
        .store(commit_fence_for(light_commit), Ordering::Relaxed);
}

/// The layout of `params`, or the setting that makes it impossible.
pub(super) fn geometry(params: layout::Params) -> Result<layout::Geometry, ChannelError> {
    layout::Geometry::compute(params).map_err(|e| ChannelError::InvalidConfig {
        field: match e {
            super::LayoutError::InvalidField { field, .. }
            | super::LayoutError::Inconsistent { field, .. } => field,
            _ => "size",
        },
        reason: e.to_string(),
    })
}

impl<T: Payload> Producer<T> {
    /// Creates the channel `settings` describe, or takes it over (see `Channel::create`).
    pub(crate) fn create(settings: &Settings) -> Result<Self, ChannelError> {
        let (name, policy, params) = Self::checked_params(settings)?;
        let geo = geometry(params)?;
        let me = current_process(&name)?;
        let light_commit = use_light_commit(geo.params.slot_size);
        match create_segment(&name, geo, settings, Some((me, light_commit)))? {
            Some(view) => Ok(Self::new(view, policy, settings, 0, me, light_commit)),
            None => Self::take_over(&name, policy, &params, settings, me),
        }
    }

    fn checked_params(
        settings: &Settings,
    ) -> Result<(ChannelName, Policy, layout::Params), ChannelError> {
        let params = settings.params()?;
        if let Some(fixed) = T::FIXED
            && Some(fixed) != settings.element
        {
            // The builder's typed setters keep these equal; a mismatch is a bug in a caller.
            return Err(ChannelError::InvalidConfig {
                field: "element",
                reason: format!("frames of {fixed} need a {fixed} channel"),
            });
        }
        Ok(params)
    }

    #[cfg_attr(not(feature = "zmq"), allow(dead_code))]
    /// Creates the channel `settings` describe as a memfd pair for a broker to hand out
    /// (docs/SHM_LAYOUT.md): fresh, or — given the pair the broker held for it, `previous` — a
    /// new incarnation that continues the previous one (its frames, frame ids, counters and
    /// state are copied over; a data memfd sealed against writes cannot be written by a new
    /// process, so taking a memfd channel over means a new data memfd).
    ///
    /// The data memfd is sealed once mapped here; the producer holds the producer lock of the
    /// control file. Returns the producer; [`Producer::memfds`] gives what to hand the broker.
    pub(crate) fn create_memfd(
        settings: &Settings,
        previous: Option<super::MemfdPair>,
    ) -> Result<Self, ChannelError> {
        let (name, policy, params) = Self::checked_params(settings)?;
        let geo = geometry(params)?;
        let me = current_process(&name)?;
        let light_commit = use_light_commit(geo.params.slot_size);
        let lock = layout::liveness_code::LOCK;
        let predecessor = match previous {
            Some(pair) => {
                let old = super::memfd_view(&name, pair, false)?;
                check_same_params(&name, &params, &old.geometry().params)?;
                if !super::check_secret(&old, settings.secret.as_ref()) {
                    return Err(mismatch(
                        &name,
                        "secret",
                        "the given secret",
                        "another secret",
                    ));
                }
                // The previous producer holds this lock while it lives, whatever pid
                // namespace it runs in.
                if !old.segment().try_lock_byte(layout::PRODUCER_LOCK_BYTE) {
                    let pid = old.header().producer_pid.load(Ordering::Acquire);
                    return Err(ChannelError::ChannelBusy {
                        channel: name.to_string(),
                        pid: u32::try_from(pid).unwrap_or(0),
                    });
                }
                Some(old)
            }
            None => None,
        };
        let seg = Segment::create_memfd(&name, geo.total_size, geo.control_size)?;
        let view = View::new_unchecked_header(seg, geo, lock).map_err(layout_error(&name))?;
        let next_frame = match &predecessor {
            Some(old) => {
                // SAFETY: the new memfds are this process's alone until it hands them to the
                // broker; the old data region has no writer (its producer is dead: we hold
                // its lock).
                unsafe {
                    layout::copy_data(old, &view);
                    layout::set_instance(&view, new_instance());
                    layout::init_control(&view, view.header().instance, lock);
                }
                layout::publish_control_magic(view.control());
                if !view.segment().try_lock_byte(layout::PRODUCER_LOCK_BYTE) {
                    return Err(busy(&name));
                }
                let next = install(&name, &view, me, light_commit, true)?;
                tracing::debug!(channel = %name, next, "producer continues a memfd channel");
                next
            }
            None => {
                // SAFETY: the memfds were just created and are this process's alone.
                unsafe { init_headers(&view, settings, lock) };
                install_fresh(&view, me, light_commit);
                if !view.segment().try_lock_byte(layout::PRODUCER_LOCK_BYTE) {
                    return Err(busy(&name));
                }
                publish_headers(&view);
                0
            }
        };
        drop(predecessor);
        view.segment().seal()?;
        Ok(Self::new(
            view,
            policy,
            settings,
            next_frame,
            me,
            light_commit,
        ))
    }

    #[cfg_attr(not(feature = "zmq"), allow(dead_code))]
    /// New descriptors of this producer's memfds (control, data), to hand to a broker; `None`
    /// for a named segment.
    pub(crate) fn memfds(&self) -> Option<super::MemfdPair> {
        let (control, data) = self.view.segment().memfds()?;
        Some(super::MemfdPair {
            control: control.try_clone_to_owned().ok()?,
            data: data.try_clone_to_owned().ok()?,
        })
    }

    fn new(
        view: View,
        policy: Policy,
        settings: &Settings,
        next_frame: u64,
        me: ProcessId,
        light_commit: bool,
    ) -> Self {
        let geo = *view.geometry();
        let pool = if next_frame == 0 {
            PayloadPool::new(&view)
        } else {
            PayloadPool::rebuild(&view)
        };
        let schema = geo.params.schema;
        Self {
            prefetch_ahead: prefetch_ahead(policy, pool.is_some()),
            pool,
            consumer_timeout: settings.consumer_timeout_for(policy),
            policy,
            last_len: geo.params.slot_size,
            next_frame,
            space_bound: 0,
            me,
            light_commit,
            element: geo.element(),
            max_shape: schema.max_shape,
            ndim: schema.ndim as usize,
            full_bytes: geo.params.slot_size,
            dropped_feed: None,
            interrupt: None,
            writes_origins: false,
            view,
            _payload: PhantomData,
        }
    }

    fn take_over(
        name: &ChannelName,
        policy: Policy,
        want: &layout::Params,
        settings: &Settings,
        me: ProcessId,
    ) -> Result<Self, ChannelError> {
        let view = super::open_view(name, REATTACH_WAIT)?;
        let have = view.geometry().params;
        check_same_params(name, want, &have)?;
        if !super::check_secret(&view, settings.secret.as_ref()) {
            return Err(mismatch(
                name,
                "secret",
                "the given secret",
                "another secret",
            ));
        }
        let light_commit = use_light_commit(have.slot_size);
        let next_frame = install(name, &view, me, light_commit, false)?;
        tracing::debug!(channel = %name, next_frame, "producer took the channel over");
        Ok(Self::new(
            view,
            policy,
            settings,
            next_frame,
            me,
            light_commit,
        ))
    }

    /// The channel name.
    pub fn channel(&self) -> &ChannelName {
        self.view.segment().channel()
    }

    /// The policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The element type of every frame.
    pub fn element_type(&self) -> ElementType {
        self.element
    }

    /// The largest frame shape (what [`Producer::loan`] gives).
    pub fn max_shape(&self) -> &[u64] {
        &self.max_shape[..self.ndim]
    }

    /// The id the next committed frame will get.
    pub fn next_frame_id(&self) -> u64 {
        self.next_frame
    }

    /// The origin id of the newest committed frame (see [`SlotMut::set_origin_id`]), if it
    /// carried one: where a bridge that took the channel over resumes.
    pub fn newest_origin_id(&self) -> Option<u64> {
        let last = self.next_frame_id().checked_sub(1)?;
        let m = self.view.slot_meta(last);
        if m.seq.load(Ordering::Acquire) != layout::committed_seq(last) {
            return None;
        }
        m.origin_id.load(Ordering::Relaxed).checked_sub(1)
    }

    /// Size of the segment in bytes (what a broker announces).
    pub fn segment_size(&self) -> u64 {
        self.view.geometry().total_size
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

    /// Installs where the producer learns of consumers the broker dropped.
    #[cfg(feature = "zmq")]
    pub(crate) fn set_dropped_feed(&mut self, feed: DroppedFeed) {
        self.dropped_feed = Some(feed);
    }

    /// Installs `check`, which a loan blocked on a full ring (policy `ring:N:block`) calls when
    /// it starts waiting and after every wake-up (at least every 20 ms); when it returns true
    /// the loan gives up with [`PublishError::Interrupted`] (not counted as a dropped frame).
    /// For programs that must answer a signal (Ctrl-C) promptly during a long blocking
    /// timeout; `None` removes it.
    ///
    /// ```
    /// use labhub::shm::{self, Channel, Policy, PublishError};
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use std::sync::Arc;
    /// # let name = format!("doc-interrupt-{}", std::process::id());
    /// let mut p = Channel::new(&name).policy("ring:1:block:1min".parse()?).bytes(8).create()?;
    /// let _reader = Channel::new(&name).bytes(8).open()?; // reads nothing: the ring fills
    /// p.publish(&[0; 8], &[8])?;
    /// let stop = Arc::new(AtomicBool::new(true)); // set by a signal handler, say
    /// let flag = Arc::clone(&stop);
    /// p.set_interrupt(Some(Box::new(move || flag.load(Ordering::Relaxed))));
    /// assert!(matches!(p.loan(), Err(PublishError::Interrupted { .. })));
    /// assert_eq!(p.stats().dropped, 0);
    /// # drop(p); shm::remove_channel(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_interrupt(&mut self, check: Option<InterruptCheck>) {
        self.interrupt = check;
    }

    /// Evicts every consumer entry of the Hub client with tag `client_tag` (the broker said
    /// the client went silent). Returns how many were evicted.
    pub(crate) fn evict_client(&self, client_tag: u32) -> u32 {
        if client_tag == 0 {
            return 0;
        }
        let mut evicted = 0;
        for i in 0..layout::CONSUMER_CAPACITY as usize {
            let Some(e) = self.view.consumer(i) else {
                break;
            };
            let state = e.state.load(Ordering::SeqCst);
            if state >> 32 != consumer_state::ACTIVE
                || (e.owner_tag.load(Ordering::Acquire) >> 32) as u32 != client_tag
            {
                continue;
            }
            if super::release_entry(&self.view, e, state) {
                super::saturating_add(&self.view.control().consumers_evicted, 1);
                tracing::warn!(
                    channel = %self.channel(),
                    pid = state & 0xffff_ffff,
                    "evicted a consumer the broker dropped (its client went silent)"
                );
                evicted += 1;
            }
        }
        evicted
    }

    /// Loans the next slot, for a frame of the largest shape. The frame becomes visible to
    /// readers only when [`SlotMut::commit`] commits it; dropping the loan abandons it (no
    /// frame id is used).
    ///
    /// On a full lossless ring this applies the channel's [`Backpressure`] rule: it waits
    /// (evicting consumers found dead or stuck while waiting), fails with `Full`, or drops the
    /// oldest frame.
    ///
    /// # Errors
    /// [`PublishError::Full`] (Fail) or [`PublishError::Timeout`] (Block) on a full ring.
    #[inline]
    pub fn loan(&mut self) -> Result<SlotMut<'_, T>, PublishError> {
        let (shape, ndim, bytes) = (self.max_shape, self.ndim, self.full_bytes);
        self.loan_checked(shape, ndim, bytes)
    }

    /// Loans the next slot for a frame of `shape`: as many dimensions as the channel's, each at
    /// most the largest shape's. The slot's length is that frame's.
    ///
    /// # Errors
    /// [`PublishError::ShapeOutOfRange`], and those of [`Producer::loan`].
    #[inline]
    pub fn loan_shape(&mut self, shape: &[u64]) -> Result<SlotMut<'_, T>, PublishError> {
        let bytes = self.frame_bytes(shape)?;
        let mut dims = [0u64; layout::MAX_DIMS];
        dims[..shape.len()].copy_from_slice(shape);
        self.loan_checked(dims, shape.len(), bytes)
    }

    /// Publishes a copy of `data` as one frame of `shape`; returns its frame id.
    ///
    /// ```
    /// use labhub::shm::{self, Channel, Policy};
    /// # let name = format!("doc-publish-{}", std::process::id());
    /// let mut p = Channel::new(&name).policy(Policy::ring(4)).frames::<f32>(&[2, 3]).create()?;
    /// let id = p.publish(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
    /// assert_eq!(id, 0);
    /// assert!(p.publish(&[1.0], &[2, 3]).is_err(), "six elements are needed");
    /// # drop(p); shm::remove_channel(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`PublishError::ShapeOutOfRange`], [`PublishError::LengthMismatch`] if `data` does not
    /// hold the shape's elements (bytes, for a runtime-typed channel), and those of
    /// [`Producer::loan`].
    pub fn publish(&mut self, data: &[T::Item], shape: &[u64]) -> Result<u64, PublishError> {
        let bytes = self.frame_bytes(shape)?;
        let expected = bytes / std::mem::size_of::<T::Item>() as u64;
        if data.len() as u64 != expected {
            return Err(PublishError::LengthMismatch {
                shape: shape.to_vec(),
                expected,
                found: data.len() as u64,
            });
        }
        let mut slot = self.loan_shape(shape)?;
        slot.copy_from_slice(data);
        Ok(slot.commit())
    }

    /// Serialises `state` into the flexible zone as a new version; readers never see a partial
    /// state. Returns the new version (1, 2, …).
    ///
    /// # Errors
    /// [`StateError::TooLarge`] if it does not fit the zone, a serialisation error, or
    /// [`StateError::CorruptVersion`] if the segment's version word was overwritten.
    pub fn write_state<S: serde::Serialize>(&mut self, state: &S) -> Result<u64, StateError> {
        flex::write_state(&self.view, state)
    }

    /// Writes `bytes`, a state already serialised in the channel's
    /// [`StateFormat`](super::StateFormat), into the flexible zone as a new version (a bridge
    /// carrying another channel's state). Returns the new version.
    ///
    /// # Errors
    /// [`StateError::TooLarge`] or [`StateError::CorruptVersion`].
    pub fn write_state_bytes(&mut self, bytes: &[u8]) -> Result<u64, StateError> {
        flex::write_state_bytes(&self.view, bytes)
    }

    /// The byte length of a frame of `shape`, if the shape is within the largest one.
    fn frame_bytes(&self, shape: &[u64]) -> Result<u64, PublishError> {
        let max = self.max_shape();
        if shape.len() != max.len() || shape.iter().zip(max).any(|(d, m)| d > m) {
            return Err(PublishError::ShapeOutOfRange {
                shape: shape.to_vec(),
                max: max.to_vec(),
            });
        }
        // Within the largest shape, whose byte length was checked at creation: no overflow.
        Ok(shape.iter().product::<u64>() * self.element.size())
    }

    #[inline]
    fn loan_checked(
        &mut self,
        shape: [u64; layout::MAX_DIMS],
        ndim: usize,
        bytes: u64,
    ) -> Result<SlotMut<'_, T>, PublishError> {
        let w = self.next_frame;
        let h = self.view.header();
        h.write_pos.store(w.wrapping_add(1), Ordering::Release);
        if let Err(e) = self.wait_for_space(w) {
            let h = self.view.header();
            h.write_pos.store(w, Ordering::Release);
            // A wait given up on request loses no frame: the caller may loan again.
            if !matches!(e, PublishError::Interrupted { .. }) {
                let dropped = h.dropped.load(Ordering::Relaxed);
                h.dropped
                    .store(dropped.saturating_add(1), Ordering::Relaxed);
            }
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
        Ok(SlotMut {
            producer: self,
            frame: w,
            payload,
            shape,
            ndim,
            bytes,
            timestamp_ns: 0,
            origin: 0,
            done: false,
        })
    }

    #[inline]
    fn wait_for_space(&mut self, w: u64) -> Result<(), PublishError> {
        let p = self.view.geometry().params;
        // A pooled channel scans for every frame: the scan tells which buffers were released.
        if p.policy != policy_code::RING || (w < self.space_bound && self.pool.is_none()) {
            return Ok(());
        }
        let n = u64::from(p.slot_count);
        let deadline = match self.policy {
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
            .control()
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
            if check_liveness {
                self.evict_dropped();
            }
            let h = self.view.header();
            let c = self.view.control();
            let seen = c.space_event.sequence();
            if let Some(bound) = self.scan(w, n, check_liveness) {
                self.space_bound = bound;
                return Ok(());
            }
            match backpressure {
                backpressure_code::FAIL => {
                    return Err(PublishError::Full {
                        channel: self.channel().to_string(),
                        slots: n as u32,
                    });
                }
                backpressure_code::DROP_OLDEST => {
                    let dropped = h.dropped.load(Ordering::Relaxed);
                    h.dropped
                        .store(dropped.saturating_add(1), Ordering::Relaxed);
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
                    channel: self.channel().to_string(),
                });
            }
            if self.interrupt.as_mut().is_some_and(|check| check()) {
                return Err(PublishError::Interrupted {
                    channel: self.channel().to_string(),
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
            c.producer_waiting.store(1, Ordering::SeqCst);
            if self.scan(w, n, false).is_some() {
                continue;
            }
            let nap = (deadline - now).min(LIVENESS_INTERVAL);
            // Woken by the interval rather than a release: look for dead consumers again.
            check_liveness = !c.space_event.wait_changed(seen, Some(nap));
        }
    }

    /// Scans the consumer table for frame `w`. `None`: a live consumer still needs the frame in
    /// slot `w % n` (with `check_liveness`, dead, stuck and dropped ones are evicted on the
    /// way). `Some(bound)`: frames below `bound` can be written without scanning again.
    ///
    /// Why a bound is safe: a consumer lowers its position only to hold a frame it passed
    /// (`Consumer::latest`) and then re-reads the bound, like a consumer that becomes active:
    /// it stores its entry or position (SeqCst) and then reads `space_bound` (SeqCst), and
    /// relies on the position only if the bound does not pass it. The producer stores the
    /// bound and then scans again (SeqCst): a consumer this second scan misses has seen the
    /// bound; one it sees is accounted for.
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
            // A consumer attached (or lowered its position) meanwhile: tighten the bound.
            min = again;
        }
    }

    /// Evicts the consumers whose clients the broker dropped (through the Hub).
    fn evict_dropped(&mut self) {
        let Some(mut feed) = self.dropped_feed.take() else {
            return;
        };
        for tag in feed() {
            self.evict_client(tag);
        }
        self.dropped_feed = Some(feed);
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
                if check_liveness && state != consumer_state::FREE {
                    // A claimer or releaser that died half-way.
                    super::reclaim_if_dead(&self.view, i, state);
                }
                continue;
            }
            let pos = e.position.load(Ordering::SeqCst);
            // A consumer whose delivery mode holds nothing back (position NOT_HOLDING) is
            // passed over: it is never full and never lowers the minimum.
            if pos.saturating_add(n) <= w {
                if check_liveness
                    && (super::reclaim_if_dead(&self.view, i, state)
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

    /// Evicts entry `e` (recorded `state`) if the producer has a consumer timeout and the
    /// entry's heartbeat is older than it. Returns true if evicted.
    fn evict_if_stale(&self, e: &layout::ConsumerEntry, state: u64) -> bool {
        let Some(timeout) = self.consumer_timeout else {
            return false;
        };
        let beat = e.heartbeat_ns.load(Ordering::Acquire);
        let age = sys::monotonic_coarse_ns().saturating_sub(beat);
        if u128::from(age) <= timeout.as_nanos() {
            return false;
        }
        if !super::release_entry(&self.view, e, state) {
            return false;
        }
        super::saturating_add(&self.view.control().consumers_evicted, 1);
        tracing::warn!(
            channel = %self.channel(),
            pid = state & 0xffff_ffff,
            age_ms = age / 1_000_000,
            "evicted a consumer that held the ring back longer than the consumer timeout"
        );
        true
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365)
}

impl<T: Payload> Drop for Producer<T> {
    fn drop(&mut self) {
        let h = self.view.header();
        // Give the channel up, but only if it is still ours. The segment itself stays: a
        // producer never unlinks, so consumers keep their frames and a restart takes it over.
        if h.producer_pid.load(Ordering::Acquire) == u64::from(self.me.pid)
            && h.producer_start_time.load(Ordering::Acquire) == self.me.start_time
        {
            h.producer_pid.store(0, Ordering::Release);
        }
        // Explicitly: a descriptor of this segment kept elsewhere in the process (the Hub's,
        // for re-registering) would keep the lock, and the producer alive, after this drop.
        self.view.segment().unlock_byte(layout::PRODUCER_LOCK_BYTE);
        self.view.control().data_event.notify_all();
    }
}

/// Under the producer mutex: refuses a live producer (unless `proven_dead`: the caller knows
/// the recorded one is gone), else installs `me` and repairs what a previous producer left.
/// Returns the next frame id.
fn install(
    name: &ChannelName,
    view: &View,
    me: ProcessId,
    light_commit: bool,
    proven_dead: bool,
) -> Result<u64, ChannelError> {
    let h = view.header();
    let _guard = match view.control().producer_mutex.lock() {
        Ok(g) => g,
        Err(e) => match e.into_guard() {
            // The previous holder died inside the takeover below; we redo it.
            Some(g) => g,
            None => {
                return Err(ChannelError::ChannelBusy {
                    channel: name.to_string(),
                    pid: 0,
                });
            }
        },
    };
    let pid = h.producer_pid.load(Ordering::Acquire);
    if pid != 0 && !proven_dead {
        let prev = ProcessId {
            pid: u32::try_from(pid).unwrap_or(0),
            start_time: h.producer_start_time.load(Ordering::Acquire),
        };
        if prev.pid != 0 && prev.is_alive() {
            return Err(ChannelError::ChannelBusy {
                channel: name.to_string(),
                pid: prev.pid,
            });
        }
        tracing::warn!(channel = %name, pid, "taking over from a dead producer");
    }
    h.producer_pid.store(u64::from(me.pid), Ordering::Release);
    h.producer_start_time
        .store(me.start_time, Ordering::Release);
    h.producer_heartbeat_ns
        .store(sys::monotonic_coarse_ns(), Ordering::Relaxed);
    super::saturating_add(&h.producer_attaches, 1);
    // Must stay SeqCst (as must the `data_waiting` load in commit): a consumer going to sleep
    // that read the previous producer's mode (full barrier) skips the heavy fence; its
    // `commit_fence` load then precedes this store in the SeqCst order, so this producer's
    // later `data_waiting` load sees its flag and wakes it.
    h.commit_fence
        .store(commit_fence_for(light_commit), Ordering::SeqCst);
    Ok(recover(view))
}

/// Frames ahead of the one being written whose slots the producer prefetches for writing.
const PREFETCH_AHEAD: u64 = 2;

/// Prefetching runs [`PREFETCH_AHEAD`] frames ahead in rings of at least 8 slots. In smaller
/// rings (and Latest, DoubleBuffer) that slot may be the one readers are reading now.
/// Not for pooled payloads either: they do not follow the ring order (and their frames are
/// large, the copy dominates).
fn prefetch_ahead(policy: Policy, pooled: bool) -> u64 {
    match policy {
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

pub(super) fn current_process(name: &ChannelName) -> Result<ProcessId, ChannelError> {
    ProcessId::current().map_err(|source| ChannelError::Io {
        channel: name.to_string(),
        op: "identify process",
        source,
    })
}

/// The frame a seq word names (being written or committed), if any.
pub(super) fn frame_of_seq(seq: u64) -> Option<u64> {
    (seq != 0).then(|| (seq - 1) / 2)
}

/// Whether the slots can hold commit position `commit`: the descriptor of frame `commit - 1`
/// names that frame or a later one (the producer stores the seq before the commit position,
/// and only ever moves a descriptor forward). A position another process wrote that no
/// descriptor supports (`u64::MAX`, say) is not a commit.
///
/// One legitimate state has an empty descriptor there: a single-slot channel whose producer
/// abandoned (or, pooled, emptied) the frame after `commit - 1` in the same slot. Then the
/// commit position must not pass the write position, which the producer never lets it do.
pub(super) fn commit_plausible(view: &View, commit: u64) -> bool {
    let Some(last) = commit.checked_sub(1) else {
        return true;
    };
    let seq = view.slot_meta(last).seq.load(Ordering::Acquire);
    match frame_of_seq(seq) {
        Some(f) => f >= last,
        None => {
            view.geometry().slots() == 1
                && commit <= view.header().write_pos.load(Ordering::Acquire)
        }
    }
}

/// Repairs what a dead producer left: a slot caught mid-write is emptied (its bytes are partial),
/// a slot committed but not yet counted is counted, a commit position the slots do not hold is
/// replaced by the newest committed frame's, and the write position returns to the commit
/// position. Returns the next frame id.
fn recover(view: &View) -> u64 {
    let h = view.header();
    let mut commit = h.commit_pos.load(Ordering::Acquire);
    if !commit_plausible(view, commit) {
        // Written by another process: resynchronise to what the descriptors hold.
        let newest = (0..view.geometry().slots())
            .filter_map(|s| {
                let seq = view.slot_meta(s).seq.load(Ordering::Acquire);
                (seq != 0 && seq.is_multiple_of(2)).then(|| seq / 2 - 1)
            })
            .max();
        let resync = newest.map_or(0, |f| f.saturating_add(1));
        tracing::warn!(
            commit,
            resync,
            "the commit position was corrupt; resynchronised"
        );
        commit = resync;
        h.commit_pos.store(commit, Ordering::Release);
    }
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
    view.control().data_event.notify_all();
    commit
}

/// A loaned slot: the frame being written, in place in shared memory, exactly as long as the
/// frame (its shape's elements; bytes for a runtime-typed channel). Dereferences to a mutable
/// slice; [`SlotMut::commit`] publishes it, dropping it abandons it.
///
/// ```
/// use labhub::shm::{self, Channel, Policy};
/// # let name = format!("doc-slot-{}", std::process::id());
/// let mut p = Channel::new(&name).policy(Policy::ring(2)).frames::<u32>(&[4]).create()?;
/// let mut slot = p.loan_shape(&[3])?;
/// assert_eq!(slot.len(), 3, "the frame's length, not the slot's");
/// slot.copy_from_slice(&[1, 2, 3]);
/// slot.set_timestamp_ns(1_000);
/// let id = slot.commit();
/// {
///     let abandoned = p.loan()?; // dropped without commit: no frame id is used
/// }
/// assert_eq!(p.next_frame_id(), id + 1);
/// # drop(p); shm::remove_channel(&name)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "a slot that is not committed is abandoned when dropped"]
pub struct SlotMut<'a, T: Payload> {
    producer: &'a mut Producer<T>,
    frame: u64,
    /// The payload buffer this frame is written into.
    payload: usize,
    shape: [u64; layout::MAX_DIMS],
    ndim: usize,
    bytes: u64,
    timestamp_ns: u64,
    /// The frame's id in the channel it came from, plus one; 0: none.
    origin: u64,
    done: bool,
}

impl<T: Payload> std::fmt::Debug for SlotMut<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotMut")
            .field("frame_id", &self.frame)
            .field("shape", &self.shape())
            .finish_non_exhaustive()
    }
}

impl<T: Payload> SlotMut<'_, T> {
    /// The producer this slot was loaned from (its settings and counters stay readable while
    /// the loan holds it borrowed).
    #[inline]
    pub fn producer(&self) -> &Producer<T> {
        self.producer
    }

    /// The frame id this slot will commit.
    #[inline]
    pub fn frame_id(&self) -> u64 {
        self.frame
    }

    /// The frame's shape.
    #[inline]
    pub fn shape(&self) -> &[u64] {
        &self.shape[..self.ndim]
    }

    /// Sets the frame's timestamp in ns; by default (or 0) the commit stamps `CLOCK_REALTIME`.
    #[inline]
    pub fn set_timestamp_ns(&mut self, ns: u64) {
        self.timestamp_ns = ns;
    }

    /// Marks the frame as frame `id` of another channel it was copied from (a bridge
    /// republishing a remote channel's frames); consumers read it with
    /// [`Frame::origin_id`](super::Frame::origin_id). By default a frame originates here.
    #[inline]
    pub fn set_origin_id(&mut self, id: u64) {
        self.origin = id.saturating_add(1);
    }

    /// The frame's elements (bytes for a runtime-typed channel), in place.
    #[inline]
    fn items(&self) -> &[T::Item] {
        // SAFETY: the producer alone writes payloads, and this loan borrows it mutably, so no
        // write to this buffer happens while the slice lives except through `items_mut`, which
        // needs `&mut self`.
        unsafe {
            self.producer
                .view
                .payload_held::<T::Item>(self.payload, self.bytes)
        }
    }

    /// Commits the frame: readers see all of it or none of it. Returns its frame id. Cannot
    /// fail: every check happened when the slot was loaned.
    #[inline]
    pub fn commit(mut self) -> u64 {
        let w = self.frame;
        let view = &self.producer.view;
        let params = view.geometry().params;
        let len = self.bytes;
        let m = view.slot_meta(w);
        let ts = if self.timestamp_ns == 0 {
            sys::realtime_ns()
        } else {
            self.timestamp_ns
        };
        m.frame_id.store(w, Ordering::Relaxed);
        m.timestamp_ns.store(ts, Ordering::Relaxed);
        m.data_size.store(len, Ordering::Relaxed);
        m.ndim.store(self.ndim as u64, Ordering::Relaxed);
        // The descriptor's second cache line (the last dimension, the checksum) is written,
        // and read, only when used: most frames then move one line of metadata between cores.
        for (d, &v) in m.dims.iter().zip(&self.shape).take(self.ndim) {
            d.store(v, Ordering::Relaxed);
        }
        if params.checksum == layout::checksum_code::XXH3_64 {
            let sum = super::checksum_of(bytemuck::cast_slice(self.items()));
            m.checksum.store(sum, Ordering::Relaxed);
        }
        if self.producer.pool.is_some() {
            m.chunk.store(self.payload as u64, Ordering::Relaxed);
        }
        // Written once any frame carried one, so no slot keeps an earlier frame's origin.
        if self.origin != 0 || self.producer.writes_origins {
            self.producer.writes_origins = true;
            m.origin_id.store(self.origin, Ordering::Relaxed);
        }
        // Only a channel with a state has a version to tie frames to (the second line again).
        if params.flex_size > 0 {
            let v = view.header().flex_version.load(Ordering::Relaxed);
            m.state_version.store(v, Ordering::Relaxed);
        }
        // Commit: the even seq publishes payload and metadata (Release), then the commit position
        // tells waiting readers the frame exists.
        m.seq.store(layout::committed_seq(w), Ordering::Release);
        let h = view.header();
        let c = view.control();
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
        // SeqCst, not weaker: see the `commit_fence` store in `install`.
        if c.data_waiting.load(Ordering::SeqCst) != 0
            && c.data_waiting.swap(0, Ordering::SeqCst) != 0
        {
            c.data_event.notify_all();
        }
        self.done = true;
        self.producer.next_frame = w.wrapping_add(1);
        self.producer.last_len = len;
        w
    }
}

impl<T: Payload> std::ops::Deref for SlotMut<'_, T> {
    type Target = [T::Item];
    #[inline]
    fn deref(&self) -> &[T::Item] {
        self.items()
    }
}

impl<T: Payload> std::ops::DerefMut for SlotMut<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [T::Item] {
        // SAFETY: the producer is the channel's only writer (its identity is in the header and a
        // second producer is refused); this frame's seq is odd and the buffer's previous frame
        // was marked overwritten (both in the loan); this loan borrows the producer mutably and
        // itself mutably here, so no other slice of this buffer exists in this process.
        unsafe {
            self.producer
                .view
                .payload_mut::<T::Item>(self.payload, self.bytes)
        }
    }
}

#[cfg(feature = "ndarray")]
impl<T> SlotMut<'_, T>
where
    T: super::Element + Payload<Item = T>,
{
    /// The frame as a mutable n-dimensional array view (cargo feature `ndarray`).
    pub fn array_mut(&mut self) -> ndarray::ArrayViewMutD<'_, T> {
        let shape: Vec<usize> = self.shape().iter().map(|&d| d as usize).collect();
        ndarray::ArrayViewMutD::from_shape(ndarray::IxDyn(&shape), &mut self[..])
            .expect("a slot holds exactly its shape's elements")
    }
}

impl<T: Payload> Drop for SlotMut<'_, T> {
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
