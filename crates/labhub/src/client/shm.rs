//! Shared-memory channels through the Hub: the channel builder's Hub backend. `create` makes
//! the channel's segment as two memfds, hands them to the broker on its grant socket and
//! registers the channel; `open` gets them from the broker (a grant, by the broker's access
//! list), checks what the broker announces against the segment, attaches, and resumes by
//! itself when the producer restarts; a producer evicts the consumers whose clients the broker
//! dropped. Channels other programs registered as named segments are opened by name.
#![deny(unsafe_code)]

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::heartbeat::{ChannelCounters, Role};
use super::{ClientError, Hub, Notice};
use crate::protocol::{
    ChannelInfo, ChannelKind, ChannelName, ChannelSpec, ClientId, ErrorCode, Notification,
    Role as GrantRole, Schema, Sharing, ShmName,
};
use crate::shm::{
    self, ChannelError, ChannelStats, Consumer, ElementType, Frame, Payload, Producer,
    PublishError, ReadError, Settings, SlotMut, StateError,
};

/// How long one wait of [`ShmConsumer::next`] lasts before it looks at notices and liveness.
const SLICE: Duration = Duration::from_millis(100);
/// How often a consumer whose producer is gone (or that was evicted) looks for a segment to
/// attach to again.
const RESUME_EVERY: Duration = Duration::from_millis(500);
/// How long a re-attach waits for a segment being created to become ready.
const RESUME_READY_WAIT: Duration = Duration::from_millis(50);
/// Pause between registration attempts while the broker still holds the channel for a dead
/// producer.
const TAKEOVER_RETRY: Duration = Duration::from_millis(100);
/// Most notices kept for [`ShmConsumer::try_notice`] / [`ShmProducer::try_notice`].
const BACKLOG: usize = 1024;

fn shm_err(channel: &ChannelName) -> impl FnOnce(ChannelError) -> ClientError + '_ {
    move |source| ClientError::Shm {
        channel: channel.to_string(),
        source,
    }
}

/// The builder's channel name, or why it is invalid.
fn channel_of(settings: &Settings) -> Result<ChannelName, ClientError> {
    match settings.name() {
        Ok(name) => Ok(name.clone()),
        Err(ChannelError::InvalidName { source, .. }) => Err(ClientError::InvalidName(source)),
        Err(source) => Err(ClientError::Shm {
            channel: String::new(),
            source,
        }),
    }
}

/// The tag a Hub client's consumers carry in the consumer table (see
/// `ConsumerEntry::owner_tag`): a hash of its client id, never 0.
fn client_tag(id: &ClientId) -> u32 {
    (xxhash_rust::xxh3::xxh3_64(id.as_str().as_bytes()) as u32).max(1)
}

/// Keeps the newest notices for `try_notice`.
fn push_backlog(backlog: &mut VecDeque<Notice>, notice: Notice) {
    if backlog.len() >= BACKLOG {
        backlog.pop_front();
    }
    backlog.push_back(notice);
}

/// The channel builder's Hub backend (`Hub::channel`): create registers the channel with the
/// broker, open discovers it, checks the announcement against the segment, attaches and
/// resumes across producer restarts.
#[derive(Debug, Clone)]
pub struct ViaHub {
    hub: Hub,
}

impl shm::sealed::Sealed for ViaHub {}

impl Hub {
    /// A shared-memory channel through this Hub: the same builder as
    /// [`shm::Channel::new`], whose `create` also registers the channel with the broker
    /// (segment name, size, policy, element type and shape) and whose `open` discovers it and
    /// attaches, resuming by itself when its producer restarts.
    ///
    /// ```no_run
    /// use labhub::client::{ClientConfig, Hub};
    /// use labhub::shm::Policy;
    ///
    /// let hub = Hub::connect(ClientConfig::from_env()?)?;
    /// let mut camera = hub.channel("cam0").policy(Policy::ring(8)).frames::<u16>(&[480, 640]).create()?;
    /// let mut slot = camera.loan()?;
    /// slot.fill(0);
    /// slot.commit();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn channel(&self, name: impl AsRef<str>) -> shm::Channel<ViaHub> {
        shm::Channel::with_backend(ViaHub { hub: self.clone() }, name)
    }
}

/// The broker's schema object for a channel: the application schema, element type and shape.
fn schema_of(element: ElementType, shape: &[u64], settings: &Settings) -> Schema {
    let (name, version) = settings.schema();
    Schema {
        name: name.map(str::to_owned),
        version,
        hash: None,
        element: Some(element.name().to_owned()),
        shape: Some(shape.to_vec()),
    }
}

impl shm::Backend for ViaHub {
    type Producer<T: Payload> = ShmProducer<T>;
    type Consumer<T: Payload> = ShmConsumer<T>;
    type Error = ClientError;

    /// Creates (or, after a crash, takes over) the channel and registers it with the broker.
    ///
    /// The segment is two memfds (docs/SHM_LAYOUT.md): this producer creates them, seals the
    /// data one and hands both to the broker on its grant socket, after a `produce` grant the
    /// broker's access list must allow. If the broker holds the segment of a producer of this
    /// channel that died, it hands that over first and this producer continues it (frame ids,
    /// last frames, counters and state carry over into its new segment). A predecessor whose
    /// process has ended loses the channel at once (the broker knows the process that handed it
    /// the segment); if the broker still holds the channel for a predecessor it cannot check
    /// (its heartbeat has not timed out yet), the grant is retried for up to
    /// [`ClientConfig::takeover_wait`](super::ClientConfig::takeover_wait).
    fn create<T: Payload>(self, settings: Settings) -> Result<ShmProducer<T>, ClientError> {
        let hub = self.hub;
        let channel = channel_of(&settings)?;
        let notices = hub.subscribe(Some(channel.clone()))?;
        let give_up = Instant::now() + hub.takeover_wait();
        let mut redeemed = loop {
            match hub.redeem(&channel, GrantRole::Produce) {
                Ok(r) => break r,
                Err(e)
                    if e.code() == Some(ErrorCode::AlreadyExists) && Instant::now() < give_up =>
                {
                    std::thread::sleep(TAKEOVER_RETRY);
                }
                Err(e) => return Err(e),
            }
        };
        let previous = redeemed.pair.take();
        let mut producer =
            Producer::<T>::create_memfd(&settings, previous).map_err(shm_err(&channel))?;
        let pair = producer.memfds().ok_or_else(|| ClientError::Shm {
            channel: channel.to_string(),
            source: ChannelError::InvalidConfig {
                field: "segment",
                reason: "a memfd producer has no memfds".into(),
            },
        })?;
        redeemed.provide(&pair)?;
        let spec = ChannelSpec {
            name: channel.clone(),
            kind: ChannelKind::Shm,
            endpoint: None,
            server_key: None,
            shm_name: None,
            sharing: Some(Sharing::Memfd),
            size: Some(producer.segment_size()),
            policy: Some(producer.policy().to_string()),
            schema: Some(schema_of(
                producer.element_type(),
                producer.max_shape(),
                &settings,
            )),
            metadata: settings.annotations.clone(),
        };
        hub.register(spec)?;
        // Kept to hand the segment over again should the broker restart.
        hub.share(channel.clone(), pair);
        let inbox = Arc::new(Mutex::new(Inbox {
            notices,
            backlog: VecDeque::new(),
            dropped: Vec::new(),
            channel: channel.clone(),
        }));
        let feed = Arc::clone(&inbox);
        // Called by the producer while a full ring blocks it: the consumers the broker dropped
        // (their clients went silent: stopped, hung, cut off) are evicted, so they stop
        // holding the ring back.
        producer.set_dropped_feed(Box::new(move || {
            let mut inbox = feed.lock().unwrap_or_else(|e| e.into_inner());
            inbox.drain();
            std::mem::take(&mut inbox.dropped)
        }));
        let counters = Arc::new(ChannelCounters::default());
        counters
            .published
            .store(producer.next_frame_id(), Ordering::Relaxed);
        let track_id = hub.track(channel.clone(), Role::Producer, &counters);
        Ok(ShmProducer {
            producer,
            name: channel,
            counters,
            loaned_bytes: 0,
            inbox,
            track_id,
            hub,
        })
    }

    /// Discovers the channel, attaches to its segment and reports the attachment to the
    /// broker.
    ///
    /// The broker's announcement is checked against the segment before any frame is read: a
    /// segment name, size, element type or shape that differs is
    /// [`ClientError::LayoutMismatch`] naming the field; a channel of another kind is
    /// [`ClientError::WrongKind`].
    ///
    /// A name `CHANNEL@HUB` opens the local channel a bridge brought from channel `CHANNEL` of
    /// peer hub `HUB` (whatever name it has here: the one registered with
    /// `bridged_from = "CHANNEL@HUB"`).
    fn open<T: Payload>(self, mut settings: Settings) -> Result<ShmConsumer<T>, ClientError> {
        if let Err((raw, _)) = &settings.name
            && let Some((channel, peer)) = raw.rsplit_once('@')
        {
            let source = format!("{channel}@{peer}");
            let local = self
                .hub
                .list(None, Some(ChannelKind::Shm))?
                .into_iter()
                .find(|c| {
                    c.spec.metadata.get(crate::protocol::BRIDGED_FROM)
                        == Some(&serde_json::Value::String(source.clone()))
                })
                .ok_or(ClientError::NotBridged { wanted: source })?;
            settings.name = Ok(local.spec.name);
        }
        ShmConsumer::open(self.hub, settings, false)
    }

    /// Like `open`, but a channel the broker does not know yet is created on the spot (with
    /// no producer): the consumer attaches at the broker when the producer registers.
    fn open_or_create<T: Payload>(self, settings: Settings) -> Result<ShmConsumer<T>, ClientError> {
        ShmConsumer::open(self.hub, settings, true)
    }
}

/// Notices about one channel, taken in by whoever asks first (the user through `try_notice`,
/// the producer through its dropped-consumer feed), with the evictions they call for.
struct Inbox {
    notices: Receiver<Notice>,
    backlog: VecDeque<Notice>,
    /// Client tags whose consumers the broker dropped, not yet evicted.
    dropped: Vec<u32>,
    channel: ChannelName,
}

impl Inbox {
    fn drain(&mut self) {
        while let Ok(n) = self.notices.try_recv() {
            if let Notice::Broker(Notification::ConsumerDropped { name, consumer, .. }) = &n
                && *name == self.channel
            {
                self.dropped.push(client_tag(consumer));
            }
            push_backlog(&mut self.backlog, n);
        }
    }
}

/// Checks the broker's `info` against the segment `consumer` opened.
fn check_announcement<T: Payload>(
    name: &ChannelName,
    info: &ChannelInfo,
    consumer: &Consumer<T>,
) -> Result<(), ClientError> {
    let mismatch = |field, broker: String, segment: String| ClientError::LayoutMismatch {
        channel: name.to_string(),
        field,
        broker,
        segment,
    };
    if let Some(schema) = &info.spec.schema {
        if let Some(element) = &schema.element
            && element != consumer.element_type().name()
        {
            return Err(mismatch(
                "element",
                element.clone(),
                consumer.element_type().to_string(),
            ));
        }
        if let Some(shape) = &schema.shape
            && shape.as_slice() != consumer.max_shape()
        {
            return Err(mismatch(
                "shape",
                format!("{shape:?}"),
                format!("{:?}", consumer.max_shape()),
            ));
        }
    }
    Ok(())
}

/// Opens the segment the broker's `info` announces for `name`, as it is shared: the memfds
/// the broker grants (a `consume` grant), or a named segment; checks the announcement against
/// it.
fn open_announced<T: Payload>(
    hub: &Hub,
    name: &ChannelName,
    info: &ChannelInfo,
    settings: &Settings,
) -> Result<Consumer<T>, ClientError> {
    if info.spec.kind != ChannelKind::Shm {
        return Err(ClientError::WrongKind {
            channel: name.to_string(),
            expected: ChannelKind::Shm,
            found: info.spec.kind,
        });
    }
    match info.spec.sharing.unwrap_or(Sharing::Named) {
        Sharing::Memfd => open_granted(hub, name, info, settings),
        _ => open_checked(name, info, settings),
    }
}

fn layout_mismatch(
    name: &ChannelName,
    field: &'static str,
    broker: String,
    segment: String,
) -> ClientError {
    ClientError::LayoutMismatch {
        channel: name.to_string(),
        field,
        broker,
        segment,
    }
}

/// An attach's error: a size other than the broker announced is a layout mismatch.
fn open_error(name: &ChannelName) -> impl FnOnce(ChannelError) -> ClientError + '_ {
    move |e| match e {
        ChannelError::SizeMismatch {
            expected, found, ..
        } => layout_mismatch(name, "size", expected.to_string(), found.to_string()),
        source => ClientError::Shm {
            channel: name.to_string(),
            source,
        },
    }
}

/// Attaches to the memfds the broker grants for `name` (their data region read-only).
fn open_granted<T: Payload>(
    hub: &Hub,
    name: &ChannelName,
    info: &ChannelInfo,
    settings: &Settings,
) -> Result<Consumer<T>, ClientError> {
    let Some(size) = info.spec.size else {
        return Err(layout_mismatch(
            name,
            "size",
            "none".into(),
            "a sized segment".into(),
        ));
    };
    let pair = hub
        .redeem(name, GrantRole::Consume)?
        .pair
        .ok_or_else(|| ClientError::BadReply {
            request: "grant socket",
            problem: "no descriptors for a consumer".into(),
        })?;
    let mut settings = settings.clone();
    settings.expected_size = Some(size);
    let consumer = Consumer::open_memfd(&settings, pair).map_err(open_error(name))?;
    check_announcement(name, info, &consumer)?;
    Ok(consumer)
}

/// Opens `name`'s named segment after checking the broker's `info`: segment name, size.
fn open_checked<T: Payload>(
    name: &ChannelName,
    info: &ChannelInfo,
    settings: &Settings,
) -> Result<Consumer<T>, ClientError> {
    let ours = ShmName::of(name);
    let mismatch = |field, broker: String, segment: String| ClientError::LayoutMismatch {
        channel: name.to_string(),
        field,
        broker,
        segment,
    };
    if info.spec.shm_name.as_ref() != Some(&ours) {
        return Err(mismatch(
            "shm_name",
            info.spec
                .shm_name
                .as_ref()
                .map_or("none".into(), ToString::to_string),
            ours.to_string(),
        ));
    }
    let Some(size) = info.spec.size else {
        return Err(mismatch("size", "none".into(), "a sized segment".into()));
    };
    let mut settings = settings.clone();
    settings.expected_size = Some(size);
    let consumer = Consumer::open(&settings).map_err(open_error(name))?;
    check_announcement(name, info, &consumer)?;
    Ok(consumer)
}

/// The producer of a shared-memory channel registered with the broker: the
/// [`shm::Producer`] API, counted in the heartbeat. Dropping it unregisters the channel (the
/// segment stays: consumers keep their mapping, and a restarted producer takes it over and
/// continues the frame ids).
#[must_use = "dropping the producer unregisters the channel"]
pub struct ShmProducer<T: Payload> {
    producer: Producer<T>,
    name: ChannelName,
    counters: Arc<ChannelCounters>,
    /// The bytes of the frame loaned last, counted once it was committed.
    loaned_bytes: u64,
    inbox: Arc<Mutex<Inbox>>,
    track_id: u64,
    hub: Hub,
}

impl<T: Payload> std::fmt::Debug for ShmProducer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmProducer")
            .field("channel", &self.name)
            .field("next_frame_id", &self.producer.next_frame_id())
            .finish_non_exhaustive()
    }
}

impl<T: Payload> ShmProducer<T> {
    /// The channel name.
    pub fn channel(&self) -> &ChannelName {
        &self.name
    }

    /// Counts the frames committed so far (`result` is this call's publish, if it was one) and
    /// a failure; a loan's bytes count once its frame was committed.
    fn count<R>(&mut self, result: &Result<R, PublishError>, published_now: bool) {
        let committed = self.producer.next_frame_id();
        let before = self.counters.published.swap(committed, Ordering::Relaxed);
        let loaned = std::mem::take(&mut self.loaned_bytes);
        let own = u64::from(published_now && result.is_ok());
        if committed.saturating_sub(before) > own {
            self.counters
                .bytes_published
                .fetch_add(loaned, Ordering::Relaxed);
        }
        if result.is_err() {
            self.counters
                .publish_failures
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Loans the next slot for a frame of the largest shape (see [`Producer::loan`]).
    ///
    /// # Errors
    /// Those of [`Producer::loan`].
    pub fn loan(&mut self) -> Result<SlotMut<'_, T>, PublishError> {
        // Counts the frames committed so far; this one is counted by the next call.
        self.count(&Ok::<(), _>(()), false);
        let result = self.producer.loan();
        note_loan(&self.counters, &mut self.loaned_bytes, result)
    }

    /// Loans the next slot for a frame of `shape` (see [`Producer::loan_shape`]).
    ///
    /// # Errors
    /// Those of [`Producer::loan_shape`].
    pub fn loan_shape(&mut self, shape: &[u64]) -> Result<SlotMut<'_, T>, PublishError> {
        self.count(&Ok::<(), _>(()), false);
        let result = self.producer.loan_shape(shape);
        note_loan(&self.counters, &mut self.loaned_bytes, result)
    }

    /// Publishes a copy of `data` as a frame of `shape` (see [`Producer::publish`]).
    ///
    /// # Errors
    /// Those of [`Producer::publish`].
    pub fn publish(&mut self, data: &[T::Item], shape: &[u64]) -> Result<u64, PublishError> {
        let result = self.producer.publish(data, shape);
        if result.is_ok() {
            let bytes = std::mem::size_of_val(data) as u64;
            self.counters
                .bytes_published
                .fetch_add(bytes, Ordering::Relaxed);
        }
        self.count(&result, true);
        result
    }

    /// Writes the flexible-zone state (see [`Producer::write_state`]).
    ///
    /// # Errors
    /// Those of [`Producer::write_state`].
    pub fn write_state<S: serde::Serialize>(&mut self, state: &S) -> Result<u64, StateError> {
        self.producer.write_state(state)
    }

    /// The id the next frame will get.
    pub fn next_frame_id(&self) -> u64 {
        self.producer.next_frame_id()
    }

    /// Counters and positions of the channel.
    pub fn stats(&self) -> ChannelStats {
        self.producer.stats()
    }

    /// The counters the heartbeat reports for this channel.
    pub fn counters(&self) -> &ChannelCounters {
        &self.counters
    }

    /// The underlying shared-memory producer. Frames published through it are counted in the
    /// heartbeat at the next call through this handle.
    pub fn producer(&mut self) -> &mut Producer<T> {
        &mut self.producer
    }

    /// The next notice about this channel (e.g. `consumer_dropped`, whose consumer this
    /// producer evicts the next time a full ring holds it back), if one arrived.
    pub fn try_notice(&mut self) -> Option<Notice> {
        let mut inbox = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
        inbox.drain();
        inbox.backlog.pop_front()
    }
}

/// Remembers a loan's size for the count after its commit, or counts its failure.
fn note_loan<'a, T: Payload>(
    counters: &ChannelCounters,
    loaned_bytes: &mut u64,
    result: Result<SlotMut<'a, T>, PublishError>,
) -> Result<SlotMut<'a, T>, PublishError> {
    match &result {
        Ok(slot) => {
            let items: u64 = slot.shape().iter().product();
            *loaned_bytes = items.saturating_mul(std::mem::size_of::<T::Item>() as u64);
        }
        Err(_) => {
            counters.publish_failures.fetch_add(1, Ordering::Relaxed);
        }
    }
    result
}

impl<T: Payload> Drop for ShmProducer<T> {
    fn drop(&mut self) {
        self.hub
            .forget(self.track_id, self.name.clone(), Role::Producer);
    }
}

/// Reading from a channel through [`ShmConsumer::next`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumeError {
    /// No frame arrived within the timeout.
    #[error("no frame from channel {channel} within {waited:?}")]
    Timeout {
        /// The channel.
        channel: String,
        /// How long the call waited.
        waited: Duration,
    },
    /// The frame could not be read whole (overwritten under a lossy policy, bad checksum, a
    /// corrupt descriptor); the next call goes on with the next frame.
    #[error("reading channel {channel}")]
    Read {
        /// The channel.
        channel: String,
        /// Why.
        #[source]
        source: ReadError,
    },
    /// The producer restarted on a new segment and attaching to it failed.
    #[error("resuming channel {channel} on its new segment")]
    Resume {
        /// The channel.
        channel: String,
        /// Why.
        #[source]
        source: Box<ClientError>,
    },
}

/// A frame copied out of the channel by [`ShmConsumer::next_copy`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct OwnedFrame<I> {
    /// The frame id.
    pub frame_id: u64,
    /// The producer's timestamp, ns.
    pub timestamp_ns: u64,
    /// The frame's shape.
    pub shape: Vec<u64>,
    /// Its items (elements, or bytes for a runtime-typed consumer).
    pub data: Vec<I>,
}

/// A consumer of a shared-memory channel, attached at the broker. It resumes by itself: when
/// the producer restarts on the same segment frames simply keep coming; when the segment was
/// recreated (it notices when the broker announces the channel up again, or by itself when the
/// old segment's producer stays dead) it attaches to the new one; when it was evicted (it
/// stopped for longer than the producer's consumer timeout, or the broker dropped it) it
/// attaches again and goes on from the newest frames. Dropping it detaches.
#[must_use = "dropping the consumer detaches it"]
pub struct ShmConsumer<T: Payload> {
    consumer: Consumer<T>,
    name: ChannelName,
    settings: Settings,
    info: Option<ChannelInfo>,
    counters: Arc<ChannelCounters>,
    notices: Receiver<Notice>,
    backlog: VecDeque<Notice>,
    resume_hint: bool,
    evicted: bool,
    /// Frames missed by the consumers this one replaced when it attached again.
    missed_before: u64,
    /// Whether the broker has this consumer attached (not yet, for `open_or_create` of a
    /// channel no producer registered).
    broker_attached: bool,
    last_resume_try: Instant,
    track_id: u64,
    hub: Hub,
}

impl<T: Payload> std::fmt::Debug for ShmConsumer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmConsumer")
            .field("channel", &self.name)
            .field("cursor", &self.consumer.cursor())
            .finish_non_exhaustive()
    }
}

impl<T: Payload> ShmConsumer<T> {
    fn open(hub: Hub, mut settings: Settings, create: bool) -> Result<Self, ClientError> {
        let channel = channel_of(&settings)?;
        settings.client_tag = client_tag(hub.client_id());
        let notices = hub.subscribe(Some(channel.clone()))?;
        let (consumer, info) = match hub.discover(channel.as_str()) {
            Ok(info) => (
                open_announced(&hub, &channel, &info, &settings)?,
                Some(info),
            ),
            // No producer yet: read a segment of our own (nothing comes) until its channel
            // comes up, then attach to that.
            Err(e) if create && e.code() == Some(ErrorCode::NotFound) => (
                Consumer::open_private_memfd(&settings).map_err(shm_err(&channel))?,
                None,
            ),
            Err(e) => return Err(e),
        };
        let (info, broker_attached) = match info {
            Some(_) => (Some(hub.attach(channel.as_str())?), true),
            None => (None, false),
        };
        let counters = Arc::new(ChannelCounters::default());
        let track_id = hub.track(channel.clone(), Role::Consumer, &counters);
        Ok(Self {
            consumer,
            name: channel,
            settings,
            info,
            counters,
            notices,
            backlog: VecDeque::new(),
            resume_hint: false,
            missed_before: 0,
            evicted: false,
            broker_attached,
            last_resume_try: Instant::now(),
            track_id,
            hub,
        })
    }

    /// The channel name.
    pub fn channel(&self) -> &ChannelName {
        &self.name
    }

    /// The channel as the broker last described it (`None` until a producer registered it,
    /// after `open_or_create`).
    pub fn info(&self) -> Option<&ChannelInfo> {
        self.info.as_ref()
    }

    /// The counters the heartbeat reports for this consumer.
    pub fn counters(&self) -> &ChannelCounters {
        &self.counters
    }

    /// The underlying shared-memory consumer (statistics, state zone, schema). Reading frames
    /// through it bypasses resuming and the counters.
    pub fn consumer(&mut self) -> &mut Consumer<T> {
        &mut self.consumer
    }

    fn timeout_error(&self, start: Instant) -> ConsumeError {
        ConsumeError::Timeout {
            channel: self.name.to_string(),
            waited: start.elapsed(),
        }
    }

    /// Waits up to `timeout` (`None`: forever) for the next frame and returns it (held in
    /// place under a lossless ring; see [`shm::Consumer`]), resuming on the way if the
    /// producer restarted on a new segment or this consumer was evicted. Every wait inside,
    /// including one for a segment to come back, ends by the deadline.
    ///
    /// # Errors
    /// [`ConsumeError::Timeout`]; [`ConsumeError::Read`] for a frame that could not be read
    /// (the next call goes on); [`ConsumeError::Resume`] if attaching to a new segment failed.
    pub fn next(&mut self, timeout: Option<Duration>) -> Result<Frame<'_, T>, ConsumeError> {
        let start = Instant::now();
        let deadline = timeout.and_then(|t| start.checked_add(t));
        let snap = loop {
            self.drain_notices();
            let resume_due = self.last_resume_try.elapsed() >= RESUME_EVERY;
            if self.resume_hint || (self.evicted && resume_due) {
                self.resume()?;
            }
            let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if self.evicted {
                // No segment to attach to yet: wait for a notice (the channel coming back) or
                // the next attempt, but never past the deadline.
                let until_retry = RESUME_EVERY.saturating_sub(self.last_resume_try.elapsed());
                let wait = remaining.map_or(until_retry, |r| r.min(until_retry));
                if remaining.is_some_and(|r| r.is_zero()) {
                    return Err(self.timeout_error(start));
                }
                self.wait_notice(wait);
                continue;
            }
            let slice = remaining.map_or(SLICE, |r| r.min(SLICE));
            match self.consumer.wait_snapshot(Some(slice)) {
                Ok(snap) => break snap,
                Err(ReadError::Timeout) => {
                    // Before the deadline's check: a caller that waits in short slices must
                    // still notice a producer that died or moved to a new segment.
                    if self.last_resume_try.elapsed() >= RESUME_EVERY
                        && !self.consumer.producer_alive()
                    {
                        self.resume()?;
                    }
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(self.timeout_error(start));
                    }
                }
                Err(ReadError::Evicted { .. }) => {
                    tracing::warn!(channel = %self.name, "consumer was evicted; attaching again");
                    self.evicted = true;
                    self.last_resume_try = start.checked_sub(RESUME_EVERY).unwrap_or(start);
                }
                Err(source) => {
                    self.counters
                        .missed
                        .store(self.consumer.missed(), Ordering::Relaxed);
                    return Err(ConsumeError::Read {
                        channel: self.name.to_string(),
                        source,
                    });
                }
            }
        };
        self.counters.missed.store(self.missed(), Ordering::Relaxed);
        let held = self.consumer.is_lossless();
        match self.consumer.hand_out(snap, held) {
            Ok(frame) => {
                let bytes = frame.len() * std::mem::size_of::<T::Item>();
                self.counters.record_consumed(bytes, frame.timestamp_ns());
                Ok(frame)
            }
            Err(source) => Err(ConsumeError::Read {
                channel: self.name.to_string(),
                source,
            }),
        }
    }

    /// [`ShmConsumer::next`] that copies the frame out, checked (works under every policy).
    ///
    /// # Errors
    /// Those of [`ShmConsumer::next`]; a frame overwritten while it was copied is
    /// [`ConsumeError::Read`].
    pub fn next_copy(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<OwnedFrame<T::Item>, ConsumeError> {
        let name = self.name.to_string();
        let frame = self.next(timeout)?;
        let owned = frame.to_vec().map(|data| OwnedFrame {
            frame_id: frame.frame_id(),
            timestamp_ns: frame.timestamp_ns(),
            shape: frame.shape().to_vec(),
            data,
        });
        owned.map_err(|source| ConsumeError::Read {
            channel: name,
            source,
        })
    }

    /// The next notice about this channel (`channel_down`, `channel_up`, `reregistered`…), if
    /// one arrived. Notices are also taken in by [`ShmConsumer::next`], which keeps them here.
    pub fn try_notice(&mut self) -> Option<Notice> {
        self.drain_notices();
        self.backlog.pop_front()
    }

    fn take_notice(&mut self, n: Notice) {
        if let Notice::Broker(Notification::ChannelUp { channel }) = &n
            && channel.spec.name == self.name
        {
            // The producer is back; possibly on a new segment.
            self.info = Some((**channel).clone());
            self.resume_hint = true;
            if !self.broker_attached {
                match self.hub.attach(self.name.as_str()) {
                    Ok(info) => {
                        self.info = Some(info);
                        self.broker_attached = true;
                    }
                    Err(e) => {
                        tracing::warn!(channel = %self.name, error = %e, "attaching at the broker")
                    }
                }
            }
        }
        push_backlog(&mut self.backlog, n);
    }

    fn drain_notices(&mut self) {
        while let Ok(n) = self.notices.try_recv() {
            self.take_notice(n);
        }
    }

    /// Waits up to `wait` for a notice (and takes it in).
    fn wait_notice(&mut self, wait: Duration) {
        match self.notices.recv_timeout(wait) {
            Ok(n) => self.take_notice(n),
            Err(RecvTimeoutError::Timeout) => {}
            // The Hub is gone: nothing will come; wait out the time anyway, without spinning.
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(wait),
        }
    }

    fn resume(&mut self) -> Result<(), ConsumeError> {
        self.try_resume()
            .map(|_| ())
            .map_err(|source| ConsumeError::Resume {
                channel: self.name.to_string(),
                source: Box::new(source),
            })
    }

    /// Switches to a new segment if the producer recreated it, or to a new table entry if this
    /// consumer was evicted. Returns whether it switched.
    fn try_resume(&mut self) -> Result<bool, ClientError> {
        self.resume_hint = false;
        self.last_resume_try = Instant::now();
        let evicted = self.evicted;
        if !evicted && self.consumer.producer_alive() {
            // The producer re-attached to our segment: frames continue where they were.
            return Ok(false);
        }
        let named = self
            .info
            .as_ref()
            .is_some_and(|i| i.spec.sharing.unwrap_or(Sharing::Named) == Sharing::Named);
        if !named {
            return self.resume_granted(evicted);
        }
        let mut settings = self.resume_settings();
        settings.ready_timeout = RESUME_READY_WAIT;
        settings.expected_size = None;
        let fresh = match Consumer::<T>::open(&settings) {
            Ok(c) => c,
            Err(ChannelError::NotFound { .. } | ChannelError::Layout { .. }) => return Ok(false),
            Err(source) => {
                return Err(ClientError::Shm {
                    channel: self.name.to_string(),
                    source,
                });
            }
        };
        // Same segment (its producer is back, or nobody is there yet): keep reading it.
        if !evicted && (self.consumer.producer_alive() || !fresh.producer_alive()) {
            return Ok(false);
        }
        let size = fresh.segment_size();
        if let Some(info) = &self.info
            && info.spec.size != Some(size)
        {
            // The producer came back with another size; trust it only if the broker says so.
            let info = self.hub.discover(self.name.as_str())?;
            if info.spec.size != Some(size) {
                return Err(ClientError::LayoutMismatch {
                    channel: self.name.to_string(),
                    field: "size",
                    broker: info.spec.size.map_or("none".into(), |s| s.to_string()),
                    segment: size.to_string(),
                });
            }
            check_announcement(&self.name, &info, &fresh)?;
            self.info = Some(info);
        }
        self.switch_to(fresh, evicted);
        Ok(true)
    }

    /// The settings to attach again with: a lossless consumer goes on from the frame after
    /// the last it read, as far as the segment still holds it (frames ids continue across a
    /// producer's restart); the frames it cannot have count as missed.
    fn resume_settings(&self) -> Settings {
        let mut settings = self.settings.clone();
        if self.consumer.is_lossless() {
            settings.resume_at = Some(self.consumer.cursor());
        }
        settings
    }

    /// Frames this consumer lost: overwritten before it read them, or gone when it attached
    /// again (summed over every segment it read).
    pub fn missed(&self) -> u64 {
        self.missed_before + self.consumer.missed()
    }

    fn switch_to(&mut self, fresh: Consumer<T>, evicted: bool) {
        tracing::info!(channel = %self.name, evicted, "consumer re-attached to the channel");
        self.missed_before += self.consumer.missed();
        self.consumer = fresh;
        self.evicted = false;
        self.counters.reattached.fetch_add(1, Ordering::Relaxed);
    }

    /// [`ShmConsumer::try_resume`] for a channel the broker grants: asks it for the channel's
    /// segment now and switches to it if it is a new incarnation (a restarted producer's) or
    /// this consumer was evicted.
    fn resume_granted(&mut self, evicted: bool) -> Result<bool, ClientError> {
        let gone = |e: &ClientError| {
            matches!(e.code(), Some(ErrorCode::NotFound | ErrorCode::ChannelDown))
        };
        let info = match self.hub.discover(self.name.as_str()) {
            Ok(info) => info,
            Err(e) if gone(&e) => return Ok(false),
            Err(e) => return Err(e),
        };
        let fresh = match open_announced::<T>(&self.hub, &self.name, &info, &self.resume_settings())
        {
            Ok(c) => c,
            Err(e) if gone(&e) => return Ok(false),
            Err(e) => return Err(e),
        };
        if !evicted && fresh.instance() == self.consumer.instance() {
            return Ok(false);
        }
        if !self.broker_attached {
            self.hub.attach(self.name.as_str())?;
            self.broker_attached = true;
        }
        self.info = Some(info);
        self.switch_to(fresh, evicted);
        Ok(true)
    }
}

impl<T: Payload> Drop for ShmConsumer<T> {
    fn drop(&mut self) {
        self.hub
            .forget(self.track_id, self.name.clone(), Role::Consumer);
    }
}
