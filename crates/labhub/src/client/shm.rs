//! Shared-memory channels through the hub: a producer that registers what it creates, and a
//! consumer that checks what the broker announces against the segment and resumes by itself
//! when its producer restarts.
#![deny(unsafe_code)]

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use super::heartbeat::{ChannelCounters, Role};
use super::{ClientError, Hub, Notice};
use crate::protocol::{
    ChannelInfo, ChannelKind, ChannelName, ChannelSpec, ErrorCode, Metadata, Notification, ShmName,
};
use crate::shm::{
    self, AttachOptions, Backpressure, ChannelConfig, ChannelError, Consumer, Frame, FrameMeta,
    Policy, Producer, PublishError, ReadError, SlotWriter,
};

/// How long one wait of [`ShmConsumer::read`] lasts before it looks at notices and liveness.
const SLICE: Duration = Duration::from_millis(100);
/// How often a consumer whose producer is gone looks for a recreated segment.
const RESUME_EVERY: Duration = Duration::from_millis(500);
/// How long a re-attach waits for a segment being created to become ready.
const RESUME_READY_WAIT: Duration = Duration::from_millis(50);
/// Pause between registration attempts while the broker still holds the channel for a dead
/// producer.
const TAKEOVER_RETRY: Duration = Duration::from_millis(100);
/// Most notices kept for [`ShmConsumer::try_notice`] / [`ShmProducer::try_notice`].
const BACKLOG: usize = 1024;

/// The policy as registered with the broker (`latest`, `double`, `ring:8:block`, …).
fn policy_label(policy: Policy) -> String {
    match policy {
        Policy::Latest => "latest".into(),
        Policy::DoubleBuffer => "double".into(),
        Policy::Ring { slots, when_full } => {
            let rule = match when_full {
                Backpressure::Block { .. } => "block",
                Backpressure::Fail => "fail",
                Backpressure::DropOldest => "drop-oldest",
            };
            format!("ring:{slots}:{rule}")
        }
    }
}

fn shm_err(channel: &str) -> impl FnOnce(ChannelError) -> ClientError + '_ {
    move |source| ClientError::Shm {
        channel: channel.to_owned(),
        source,
    }
}

/// The size of channel `name`'s segment, as a consumer's header check sees it.
fn segment_size(name: &str) -> Result<u64, ClientError> {
    match shm::segment::Segment::open(name).map_err(shm_err(name))? {
        Some(seg) => Ok(seg.len() as u64),
        None => Err(ClientError::Shm {
            channel: name.to_owned(),
            source: ChannelError::NotFound {
                channel: name.to_owned(),
            },
        }),
    }
}

/// Keeps the newest notices for `try_notice`.
fn push_backlog(backlog: &mut VecDeque<Notice>, notice: Notice) {
    if backlog.len() >= BACKLOG {
        backlog.pop_front();
    }
    backlog.push_back(notice);
}

impl Hub {
    /// Creates (or, after a crash, re-attaches to) the shared-memory channel `name` and
    /// registers it with the broker, announcing its segment name, size and policy.
    ///
    /// If the broker still holds the channel for a predecessor that died (its heartbeat has not
    /// timed out yet), registration is retried for up to
    /// [`ClientConfig::takeover_wait`](super::ClientConfig::takeover_wait). The segment is never
    /// removed by a producer, also when registration fails (review item 1.3).
    pub fn create_shm_producer(
        &self,
        name: &str,
        config: ChannelConfig,
    ) -> Result<ShmProducer, ClientError> {
        let channel = ChannelName::new(name)?;
        let notices = self.subscribe(Some(channel.clone()))?;
        let policy = config.policy();
        let producer = Producer::create(name, config).map_err(shm_err(name))?;
        let size = segment_size(name)?;
        let shm_name = ShmName::new(shm::os_name(name).map_err(shm_err(name))?)?;
        let mut metadata = Metadata::new();
        metadata.insert("slot_size".into(), producer.slot_size().into());
        let spec = ChannelSpec {
            name: channel.clone(),
            kind: ChannelKind::Shm,
            endpoint: None,
            shm_name: Some(shm_name),
            size: Some(size),
            policy: Some(policy_label(policy)),
            schema: None,
            metadata,
        };
        let give_up = Instant::now() + self.takeover_wait();
        loop {
            match self.register(spec.clone()) {
                Ok(()) => break,
                // We hold the segment, so its previous producer is dead; the broker will notice.
                Err(e)
                    if e.code() == Some(ErrorCode::AlreadyExists) && Instant::now() < give_up =>
                {
                    std::thread::sleep(TAKEOVER_RETRY);
                }
                Err(e) => return Err(e),
            }
        }
        let counters = Arc::new(ChannelCounters::default());
        counters
            .published
            .store(producer.next_frame_id(), Ordering::Relaxed);
        let track_id = self.track(channel.clone(), Role::Producer, &counters);
        Ok(ShmProducer {
            producer,
            name: channel,
            counters,
            notices,
            backlog: VecDeque::new(),
            track_id,
            hub: self.clone(),
        })
    }

    /// Discovers the shared-memory channel `name`, attaches to its segment and reports the
    /// attachment to the broker.
    ///
    /// The broker's announcement is checked against the segment before any frame is read: a
    /// segment name or size that differs is [`ClientError::LayoutMismatch`] naming the field
    /// (review item 1.2); a channel of another kind is [`ClientError::WrongKind`].
    pub fn find_shm_consumer(
        &self,
        name: &str,
        options: AttachOptions,
    ) -> Result<ShmConsumer, ClientError> {
        let channel = ChannelName::new(name)?;
        let notices = self.subscribe(Some(channel.clone()))?;
        let info = self.discover(name)?;
        let consumer = attach_checked(name, &info, options.clone())?;
        let info = self.attach(name)?;
        let counters = Arc::new(ChannelCounters::default());
        let track_id = self.track(channel.clone(), Role::Consumer, &counters);
        Ok(ShmConsumer {
            consumer,
            name: channel,
            options,
            info,
            counters,
            notices,
            backlog: VecDeque::new(),
            resume_hint: false,
            evicted: false,
            last_resume_try: Instant::now(),
            track_id,
            hub: self.clone(),
        })
    }
}

/// Attaches to `name` after checking the broker's `info` against the segment.
fn attach_checked(
    name: &str,
    info: &ChannelInfo,
    options: AttachOptions,
) -> Result<Consumer, ClientError> {
    if info.spec.kind != ChannelKind::Shm {
        return Err(ClientError::WrongKind {
            channel: name.to_owned(),
            expected: ChannelKind::Shm,
            found: info.spec.kind,
        });
    }
    let ours = shm::os_name(name).map_err(shm_err(name))?;
    let mismatch = |field, broker: String, segment: String| ClientError::LayoutMismatch {
        channel: name.to_owned(),
        field,
        broker,
        segment,
    };
    match &info.spec.shm_name {
        Some(s) if s.as_str() == ours => {}
        other => {
            return Err(mismatch(
                "shm_name",
                other.as_ref().map_or("none".into(), ToString::to_string),
                ours,
            ));
        }
    }
    let Some(size) = info.spec.size else {
        return Err(mismatch("size", "none".into(), "a sized segment".into()));
    };
    Consumer::attach(name, options.expected_size(size)).map_err(|e| match e {
        ChannelError::SizeMismatch {
            expected, found, ..
        } => mismatch("size", expected.to_string(), found.to_string()),
        source => ClientError::Shm {
            channel: name.to_owned(),
            source,
        },
    })
}

/// The producer of a shared-memory channel registered with the broker. Dropping it
/// unregisters the channel (the segment stays: consumers keep their mapping, and a restarted
/// producer re-attaches and continues the frame ids).
pub struct ShmProducer {
    producer: Producer,
    name: ChannelName,
    counters: Arc<ChannelCounters>,
    notices: Receiver<Notice>,
    backlog: VecDeque<Notice>,
    track_id: u64,
    hub: Hub,
}

impl std::fmt::Debug for ShmProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmProducer")
            .field("channel", &self.name)
            .field("next_frame_id", &self.producer.next_frame_id())
            .finish_non_exhaustive()
    }
}

impl ShmProducer {
    /// The channel name.
    pub fn channel(&self) -> &str {
        self.name.as_str()
    }

    /// Publishes a copy of `data` (see [`Producer::publish_bytes`]); returns its frame id.
    pub fn publish_bytes(&mut self, data: &[u8], meta: &FrameMeta) -> Result<u64, PublishError> {
        let result = self.producer.publish_bytes(data, meta);
        if result.is_ok() {
            self.counters
                .bytes_published
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        self.count(result.is_err());
        result
    }

    /// Claims the next slot to fill in place (see [`Producer::begin_publish`]).
    pub fn begin_publish(&mut self) -> Result<SlotWriter<'_>, PublishError> {
        // Counts the frames published so far; this one is counted by the next call.
        self.counters
            .published
            .store(self.producer.next_frame_id(), Ordering::Relaxed);
        let result = self.producer.begin_publish();
        if result.is_err() {
            self.counters
                .publish_failures
                .fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn count(&self, failed: bool) {
        self.counters
            .published
            .store(self.producer.next_frame_id(), Ordering::Relaxed);
        if failed {
            self.counters
                .publish_failures
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The id the next frame will get.
    pub fn next_frame_id(&self) -> u64 {
        self.producer.next_frame_id()
    }

    /// The counters the heartbeat reports for this channel.
    pub fn counters(&self) -> &ChannelCounters {
        &self.counters
    }

    /// The underlying shared-memory producer (state zone, statistics).
    pub fn producer(&mut self) -> &mut Producer {
        &mut self.producer
    }

    /// The next notice about this channel (e.g. `consumer_dropped`), if one arrived.
    pub fn try_notice(&mut self) -> Option<Notice> {
        while let Ok(n) = self.notices.try_recv() {
            push_backlog(&mut self.backlog, n);
        }
        self.backlog.pop_front()
    }
}

impl Drop for ShmProducer {
    fn drop(&mut self) {
        self.hub
            .forget(self.track_id, self.name.clone(), Role::Producer);
    }
}

/// Reading from a channel through [`ShmConsumer::read`] failed.
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
    /// The frame could not be read whole (overwritten under a lossy policy, bad checksum).
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedFrame {
    /// The frame id.
    pub frame_id: u64,
    /// Its metadata.
    pub meta: FrameMeta,
    /// Its bytes.
    pub data: Vec<u8>,
}

/// A consumer of a shared-memory channel, attached at the broker. It resumes by itself when the
/// producer restarts: frames keep coming from the same segment when the new producer re-attaches
/// to it, and the consumer re-attaches when the segment was recreated (it notices when the
/// broker announces the channel up again, or by itself when the old segment's producer stays
/// dead). Dropping it detaches.
pub struct ShmConsumer {
    consumer: Consumer,
    name: ChannelName,
    options: AttachOptions,
    info: ChannelInfo,
    counters: Arc<ChannelCounters>,
    notices: Receiver<Notice>,
    backlog: VecDeque<Notice>,
    resume_hint: bool,
    evicted: bool,
    last_resume_try: Instant,
    track_id: u64,
    hub: Hub,
}

impl std::fmt::Debug for ShmConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmConsumer")
            .field("channel", &self.name)
            .field("cursor", &self.consumer.cursor())
            .finish_non_exhaustive()
    }
}

impl ShmConsumer {
    /// The channel name.
    pub fn channel(&self) -> &str {
        self.name.as_str()
    }

    /// The channel as the broker last described it.
    pub fn info(&self) -> &ChannelInfo {
        &self.info
    }

    /// The counters the heartbeat reports for this consumer.
    pub fn counters(&self) -> &ChannelCounters {
        &self.counters
    }

    /// The underlying shared-memory consumer (statistics, state zone). Reading frames through
    /// it bypasses resuming and the counters.
    pub fn consumer(&mut self) -> &mut Consumer {
        &mut self.consumer
    }

    /// Waits up to `timeout` (`None`: forever) for the next frame, hands it to `f` in place,
    /// and returns what `f` returns once the frame proved whole ([`Frame::finish`]).
    pub fn read<R>(
        &mut self,
        timeout: Option<Duration>,
        f: impl FnOnce(&Frame<'_>) -> R,
    ) -> Result<R, ConsumeError> {
        let start = Instant::now();
        let deadline = timeout.map(|t| start + t);
        let (value, (len, timestamp_ns), outcome) = loop {
            self.drain_notices();
            if self.evicted || self.resume_hint {
                self.resume()?;
            }
            let slice = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()).min(SLICE),
                None => SLICE,
            };
            // The frame's borrow must end inside this match, so errors are handled after it.
            let error = match self.consumer.next(Some(slice)) {
                Ok(frame) => {
                    let value = f(&frame);
                    let seen = (frame.len(), frame.meta().timestamp_ns);
                    break (value, seen, frame.finish());
                }
                Err(e) => e,
            };
            match error {
                ReadError::Timeout => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(ConsumeError::Timeout {
                            channel: self.name.to_string(),
                            waited: start.elapsed(),
                        });
                    }
                    if self.last_resume_try.elapsed() >= RESUME_EVERY
                        && !self.consumer.producer_alive()
                    {
                        self.resume()?;
                    }
                }
                ReadError::Evicted { .. } => self.evicted = true,
                source => {
                    return Err(ConsumeError::Read {
                        channel: self.name.to_string(),
                        source,
                    });
                }
            }
        };
        self.counters
            .missed
            .store(self.consumer.missed(), Ordering::Relaxed);
        match outcome {
            Ok(()) => {
                self.counters.record_consumed(len, timestamp_ns);
                Ok(value)
            }
            Err(source) => Err(ConsumeError::Read {
                channel: self.name.to_string(),
                source,
            }),
        }
    }

    /// [`ShmConsumer::read`] that copies the frame out.
    pub fn next_copy(&mut self, timeout: Option<Duration>) -> Result<OwnedFrame, ConsumeError> {
        self.read(timeout, |f| OwnedFrame {
            frame_id: f.frame_id(),
            meta: *f.meta(),
            data: f.data().to_vec(),
        })
    }

    /// The next notice about this channel (`channel_down`, `channel_up`, `reregistered`…), if
    /// one arrived. Notices are also taken in by [`ShmConsumer::read`], which keeps them here.
    pub fn try_notice(&mut self) -> Option<Notice> {
        self.drain_notices();
        self.backlog.pop_front()
    }

    fn drain_notices(&mut self) {
        while let Ok(n) = self.notices.try_recv() {
            if let Notice::Broker(Notification::ChannelUp { channel }) = &n
                && channel.spec.name == self.name
            {
                // The producer is back; possibly on a new segment.
                self.info = (**channel).clone();
                self.resume_hint = true;
            }
            push_backlog(&mut self.backlog, n);
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
        let mut options = self.options.clone();
        options.ready_timeout = RESUME_READY_WAIT;
        options.expected_size = None;
        let fresh = match Consumer::attach(self.name.as_str(), options) {
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
        if self.info.spec.size != Some(size) {
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
            self.info = info;
        }
        tracing::info!(channel = %self.name, evicted, "consumer re-attached to the channel");
        self.consumer = fresh;
        self.evicted = false;
        self.counters.reattached.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }
}

impl Drop for ShmConsumer {
    fn drop(&mut self) {
        self.hub
            .forget(self.track_id, self.name.clone(), Role::Consumer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_labels_pass_the_brokers_policy_rule() {
        for p in [
            Policy::Latest,
            Policy::DoubleBuffer,
            Policy::Ring {
                slots: 65536,
                when_full: Backpressure::DropOldest,
            },
            Policy::Ring {
                slots: 8,
                when_full: Backpressure::Block {
                    timeout: Duration::from_secs(1),
                },
            },
        ] {
            let label = policy_label(p);
            assert!(label.len() <= 32, "{label}");
            assert!(
                label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':')),
                "{label}"
            );
        }
    }
}
