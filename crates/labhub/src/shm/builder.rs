//! The one channel builder: [`Channel`], with the same setters for a brokerless channel
//! ([`Local`]) and one made through the Hub (`Hub::channel`), ending in `create`, `open` or
//! `open_or_create`.
#![deny(unsafe_code)]

use std::marker::PhantomData;
use std::time::Duration;

use super::consumer::{Consumer, WaitMode};
use super::element::{Dynamic, Element, ElementType, Payload};
use super::error::ChannelError;
use super::layout;
use super::producer::Producer;
use super::{DeliveryMode, Policy, Secret, StateFormat};
use crate::name::ChannelName;

/// How long a consumer of a lossless ring may go without reading (or waiting in the library)
/// before its producer, blocked on a full ring, evicts it: [`Channel::consumer_timeout`]'s
/// default.
pub const DEFAULT_CONSUMER_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) mod sealed {
    /// Seals [`Backend`](super::Backend): the implementations are this crate's.
    pub trait Sealed {}
}

/// Where a [`Channel`] builder makes its channel: [`Local`] (shared memory alone) or the Hub
/// (`labhub::client::Hub::channel`, which also registers, discovers and resumes). Sealed.
pub trait Backend: sealed::Sealed + Sized {
    /// What `create` returns.
    type Producer<T: Payload>;
    /// What `open` and `open_or_create` return.
    type Consumer<T: Payload>;
    /// What the terminal methods fail with.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Creates the channel (or takes it over from a dead producer) and returns its producer.
    ///
    /// # Errors
    /// See [`Channel::create`].
    fn create<T: Payload>(self, settings: Settings) -> Result<Self::Producer<T>, Self::Error>;

    /// Opens the existing channel and returns a consumer.
    ///
    /// # Errors
    /// See [`Channel::open`].
    fn open<T: Payload>(self, settings: Settings) -> Result<Self::Consumer<T>, Self::Error>;

    /// Opens the channel, creating it without a producer if there is none yet.
    ///
    /// # Errors
    /// See [`Channel::open_or_create`].
    fn open_or_create<T: Payload>(
        self,
        settings: Settings,
    ) -> Result<Self::Consumer<T>, Self::Error>;
}

/// The brokerless backend: a channel is its shared-memory segment alone, found by name.
#[derive(Debug, Clone, Copy, Default)]
pub struct Local;

impl sealed::Sealed for Local {}

impl Backend for Local {
    type Producer<T: Payload> = Producer<T>;
    type Consumer<T: Payload> = Consumer<T>;
    type Error = ChannelError;

    fn create<T: Payload>(self, settings: Settings) -> Result<Producer<T>, ChannelError> {
        Producer::create(&settings)
    }

    fn open<T: Payload>(self, settings: Settings) -> Result<Consumer<T>, ChannelError> {
        Consumer::open(&settings)
    }

    fn open_or_create<T: Payload>(self, settings: Settings) -> Result<Consumer<T>, ChannelError> {
        Consumer::open_or_create(&settings)
    }
}

/// What a consumer timeout was set to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeoutSetting {
    /// [`DEFAULT_CONSUMER_TIMEOUT`] for lossless rings, none otherwise.
    Default,
    /// This one (`None`: only dead consumers are evicted).
    Set(Option<Duration>),
}

/// What a [`Channel`] builder was told, handed to its [`Backend`]. Checked by the terminal
/// method, which names the first bad value.
#[derive(Debug, Clone)]
pub struct Settings {
    pub(crate) name: Result<ChannelName, (String, crate::name::NameError)>,
    pub(crate) policy: Option<Policy>,
    pub(crate) element: Option<ElementType>,
    pub(crate) shape: Option<Vec<u64>>,
    pub(crate) flex_size: u64,
    pub(crate) checksum: bool,
    pub(crate) state_format: StateFormat,
    pub(crate) secret: Option<Secret>,
    pub(crate) consumer_timeout: TimeoutSetting,
    pub(crate) schema_name: Option<String>,
    pub(crate) schema_version: Option<u32>,
    pub(crate) wait_mode: WaitMode,
    pub(crate) delivery: DeliveryMode,
    pub(crate) ready_timeout: Duration,
    /// The segment size a broker announced: an attach to a segment of another size fails.
    pub(crate) expected_size: Option<u64>,
    /// The Hub client's tag for the consumer-table entry (see `ConsumerEntry::owner_tag`).
    pub(crate) client_tag: u32,
    /// What the broker lists with a channel created through the Hub.
    pub(crate) annotations: serde_json::Map<String, serde_json::Value>,
    /// A consumer that resumes on a new incarnation of its channel starts at this frame (the
    /// one after the last it read), as far as the new segment still holds it.
    pub(crate) resume_at: Option<u64>,
}

impl Settings {
    fn new(name: &str) -> Self {
        Self {
            name: ChannelName::new(name).map_err(|e| {
                (
                    name.chars()
                        .take(crate::name::MAX_CHANNEL_NAME_LEN)
                        .collect(),
                    e,
                )
            }),
            policy: None,
            element: None,
            shape: None,
            flex_size: 0,
            checksum: false,
            state_format: StateFormat::Json,
            secret: None,
            consumer_timeout: TimeoutSetting::Default,
            schema_name: None,
            schema_version: None,
            wait_mode: WaitMode::Blocking,
            delivery: DeliveryMode::Lossless,
            ready_timeout: Duration::from_secs(2),
            expected_size: None,
            client_tag: 0,
            annotations: serde_json::Map::new(),
            resume_at: None,
        }
    }

    /// The channel name, or the error naming what is wrong with it.
    ///
    /// # Errors
    /// [`ChannelError::InvalidName`].
    pub fn name(&self) -> Result<&ChannelName, ChannelError> {
        self.name
            .as_ref()
            .map_err(|(name, source)| ChannelError::InvalidName {
                name: name.clone(),
                source: source.clone(),
            })
    }

    /// The policy asked for, if any.
    pub fn policy(&self) -> Option<Policy> {
        self.policy
    }

    /// The element type asked for, if any.
    pub fn element(&self) -> Option<ElementType> {
        self.element
    }

    /// The largest frame shape asked for, if any.
    pub fn shape(&self) -> Option<&[u64]> {
        self.shape.as_deref()
    }

    /// The consumer's delivery mode.
    pub fn delivery(&self) -> DeliveryMode {
        self.delivery
    }

    /// The application schema name and version asked for.
    pub fn schema(&self) -> (Option<&str>, Option<u32>) {
        (self.schema_name.as_deref(), self.schema_version)
    }

    /// The consumer timeout a producer applies under `policy`.
    pub(crate) fn consumer_timeout_for(&self, policy: Policy) -> Option<Duration> {
        match self.consumer_timeout {
            TimeoutSetting::Set(t) => t,
            TimeoutSetting::Default => policy.is_lossless().then_some(DEFAULT_CONSUMER_TIMEOUT),
        }
    }

    fn invalid(field: &'static str, reason: impl Into<String>) -> ChannelError {
        ChannelError::InvalidConfig {
            field,
            reason: reason.into(),
        }
    }

    /// The layout parameters to create a channel with: every setting a creator needs, checked.
    pub(crate) fn params(&self) -> Result<(ChannelName, Policy, layout::Params), ChannelError> {
        use layout::{backpressure_code, checksum_code, policy_code};
        let name = self.name()?.clone();
        let policy = self
            .policy
            .ok_or_else(|| Self::invalid("policy", "a channel is created with a policy"))?;
        let element = self.element.ok_or_else(|| {
            Self::invalid(
                "element",
                "a channel is created with an element type (frames, bytes or dynamic)",
            )
        })?;
        let shape = self.shape.as_deref().ok_or_else(|| {
            Self::invalid("shape", "a channel is created with a largest frame shape")
        })?;
        if shape.is_empty() || shape.len() > layout::MAX_DIMS {
            return Err(Self::invalid(
                "shape",
                format!("{shape:?} must have 1 to {} dimensions", layout::MAX_DIMS),
            ));
        }
        if shape.contains(&0) {
            return Err(Self::invalid(
                "shape",
                format!("{shape:?}: every dimension of the largest shape must be at least 1"),
            ));
        }
        let slot_size = layout::SchemaParams::elements(shape)
            .and_then(|n| n.checked_mul(element.size()))
            .filter(|&b| b <= layout::MAX_TOTAL)
            .ok_or_else(|| {
                Self::invalid(
                    "slot_size",
                    format!("a {element} frame of shape {shape:?} is larger than 1 TiB"),
                )
            })?;
        let mut max_shape = [0u64; layout::MAX_DIMS];
        max_shape[..shape.len()].copy_from_slice(shape);
        let mut name_bytes = [0u8; layout::MAX_SCHEMA_NAME];
        let name_len = match &self.schema_name {
            None => 0,
            Some(n)
                if n.is_empty()
                    || n.len() > layout::MAX_SCHEMA_NAME
                    || n.chars().any(char::is_control) =>
            {
                return Err(Self::invalid(
                    "schema_name",
                    format!(
                        "{n:?} must be 1 to {} bytes without control characters",
                        layout::MAX_SCHEMA_NAME
                    ),
                ));
            }
            Some(n) => {
                name_bytes[..n.len()].copy_from_slice(n.as_bytes());
                n.len() as u32
            }
        };
        let (code, slot_count, backpressure) = match policy {
            Policy::Latest => (policy_code::LATEST, 1, backpressure_code::NONE),
            Policy::DoubleBuffer => (policy_code::DOUBLE_BUFFER, 2, backpressure_code::NONE),
            Policy::Ring { slots, when_full } => (
                policy_code::RING,
                slots,
                match when_full {
                    super::Backpressure::Block { .. } => backpressure_code::BLOCK,
                    super::Backpressure::Fail => backpressure_code::FAIL,
                    super::Backpressure::DropOldest => backpressure_code::DROP_OLDEST,
                },
            ),
        };
        let params = layout::Params {
            policy: code,
            backpressure,
            slot_count,
            slot_size,
            flex_size: self.flex_size,
            checksum: if self.checksum {
                checksum_code::XXH3_64
            } else {
                checksum_code::NONE
            },
            state_format: self.state_format.code(),
            payload_mode: layout::Params::payload_mode_for(code, backpressure, slot_size),
            schema: layout::SchemaParams {
                element: element.code(),
                ndim: shape.len() as u32,
                max_shape,
                version: self.schema_version.unwrap_or(0),
                name_len,
                name: name_bytes,
            },
        };
        Ok((name, policy, params))
    }
}

/// A channel builder: name, policy, what a frame holds, and options; then
/// [`create`](Channel::create) (a producer), [`open`](Channel::open) (a consumer of an existing
/// channel) or [`open_or_create`](Channel::open_or_create) (a consumer that may start first).
///
/// `Channel::new(name)` builds a brokerless channel ([`Local`]); `hub.channel(name)` the same
/// through the Hub. The type parameter says how frames are accessed: an [`Element`] type set
/// with [`frames`](Channel::frames), [`element`](Channel::element) or
/// [`bytes`](Channel::bytes) (`u8`), or [`Dynamic`] (the default: element type and shape from
/// the segment, or set at run time with [`dynamic`](Channel::dynamic); bytes access).
///
/// `open` checks what it was told against the channel and fails with
/// [`ChannelError::SchemaMismatch`] (element type, shape, schema) or
/// [`ChannelError::ConfigMismatch`] (policy) before any frame is read; settings it was not
/// told are taken from the segment.
///
/// ```
/// use labhub::shm::{self, Channel, Policy};
/// # let name = format!("doc-builder-{}", std::process::id());
/// let mut producer = Channel::new(&name)
///     .policy(Policy::ring(8))
///     .frames::<u16>(&[480, 640])
///     .create()?;
/// let mut consumer = Channel::new(&name).frames::<u16>(&[480, 640]).open()?;
/// let mut slot = producer.loan()?;
/// slot.fill(7);
/// slot.commit();
/// let frame = consumer.next(None)?;
/// assert_eq!(frame.shape(), &[480, 640]);
/// assert!(frame.held().unwrap().iter().all(|&px| px == 7));
/// # drop(frame); drop(consumer); drop(producer); shm::remove_channel(&name)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "a channel builder does nothing until create, open or open_or_create"]
#[derive(Debug, Clone)]
pub struct Channel<B: Backend = Local, T: Payload = Dynamic> {
    backend: B,
    settings: Settings,
    _payload: PhantomData<fn() -> T>,
}

impl Channel<Local, Dynamic> {
    /// A brokerless channel named `name` (1–128 characters of `[A-Za-z0-9_.-]`; a bad name is
    /// reported by the terminal method).
    pub fn new(name: impl AsRef<str>) -> Self {
        Self::with_backend(Local, name)
    }
}

impl<B: Backend> Channel<B, Dynamic> {
    /// A channel named `name` made through `backend`.
    pub fn with_backend(backend: B, name: impl AsRef<str>) -> Self {
        Self {
            backend,
            settings: Settings::new(name.as_ref()),
            _payload: PhantomData,
        }
    }
}

impl<B: Backend, T: Payload> Channel<B, T> {
    fn retype<U: Payload>(self) -> Channel<B, U> {
        Channel {
            backend: self.backend,
            settings: self.settings,
            _payload: PhantomData,
        }
    }

    /// The settings so far.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// How the channel uses its slots. Required to create; when opening, the channel must have
    /// this policy (the blocking timeout, a producer-side setting, is not compared).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.settings.policy = Some(policy);
        self
    }

    /// Frames of element type `E` with largest shape `shape` (1–4 dimensions, each at least 1).
    /// When opening, the channel must have both.
    pub fn frames<E: Element + Payload>(mut self, shape: &[u64]) -> Channel<B, E> {
        self.settings.element = Some(E::TYPE);
        self.settings.shape = Some(shape.to_vec());
        self.retype()
    }

    /// Frames of element type `E`, any shape: for opening a channel whose shape the consumer
    /// takes from the segment.
    pub fn element<E: Element + Payload>(mut self) -> Channel<B, E> {
        self.settings.element = Some(E::TYPE);
        self.settings.shape = None;
        self.retype()
    }

    /// A byte channel: `u8` frames of at most `max_len` bytes, one dimension.
    pub fn bytes(self, max_len: u64) -> Channel<B, u8> {
        self.frames::<u8>(&[max_len])
    }

    /// A runtime-typed channel of `element` frames of largest shape `shape`, accessed as bytes
    /// (for bindings, recorders and tools that learn the type at run time).
    pub fn dynamic(mut self, element: ElementType, shape: &[u64]) -> Channel<B, Dynamic> {
        self.settings.element = Some(element);
        self.settings.shape = Some(shape.to_vec());
        self.retype()
    }

    /// Capacity of the flexible zone (a small versioned state object, see
    /// `Producer::write_state`), in bytes; 0 (the default) for none.
    pub fn flex_size(mut self, bytes: u64) -> Self {
        self.settings.flex_size = bytes;
        self
    }

    /// Stores an XXH3-64 checksum per frame, which readers verify.
    pub fn checksum(mut self, on: bool) -> Self {
        self.settings.checksum = on;
        self
    }

    /// Serialisation of the flexible-zone state (JSON by default).
    pub fn state_format(mut self, format: StateFormat) -> Self {
        self.settings.state_format = format;
        self
    }

    /// A channel secret: consumers must present the same to open it (see [`Secret`]).
    pub fn secret(mut self, secret: impl Into<Secret>) -> Self {
        self.settings.secret = Some(secret.into());
        self
    }

    /// How long a consumer may go without reading (its heartbeat is refreshed by every read
    /// and at least every 500 ms while it waits) before a producer blocked on a full ring
    /// evicts it as stuck (a stopped process, a reader holding one frame too long). `None`
    /// evicts only dead consumers. Default: [`DEFAULT_CONSUMER_TIMEOUT`] for lossless rings.
    /// A producer setting, not stored in the segment.
    pub fn consumer_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.settings.consumer_timeout = TimeoutSetting::Set(timeout);
        self
    }

    /// The application's schema: a name (1–64 bytes, no control characters) and a version,
    /// stored in the segment (what a type hash stood for). When opening, the channel must have
    /// both.
    pub fn schema(mut self, name: impl Into<String>, version: u32) -> Self {
        self.settings.schema_name = Some(name.into());
        self.settings.schema_version = Some(version);
        self
    }

    /// How this consumer takes frames ([`DeliveryMode`]; `lossless` by default): only a
    /// lossless consumer holds the producer back, every other mode reads through checked
    /// copies and never holds anyone back. A consumer setting, stored in its consumer-table
    /// entry.
    ///
    /// ```
    /// use labhub::shm::{self, Channel, DeliveryMode, Policy};
    /// # let name = format!("doc-delivery-{}", std::process::id());
    /// let mut p = Channel::new(&name).policy(Policy::ring(4)).bytes(8).create()?;
    /// let mut viewer = Channel::new(&name).bytes(8).delivery(DeliveryMode::Latest).open()?;
    /// for i in 0..10u8 {
    ///     p.publish(&[i], &[1])?; // never blocked by the viewer
    /// }
    /// let frame = viewer.next(None)?;
    /// assert_eq!((frame.frame_id(), frame.to_vec()?), (9, vec![9]));
    /// # drop(frame);
    /// assert_eq!(viewer.dropped(), 9);
    /// # drop(viewer); drop(p); shm::remove_channel(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn delivery(mut self, mode: DeliveryMode) -> Self {
        self.settings.delivery = mode;
        self
    }

    /// A key and value the broker lists with the channel (the registration's `metadata`, shown
    /// by `labhub info`), for a channel created through the Hub; a brokerless channel has no
    /// registry and ignores them. `bridged_from` is what a bridge sets (see `labhub::bridge`).
    pub fn annotate(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings
            .annotations
            .insert(key.into(), serde_json::Value::String(value.into()));
        self
    }

    /// How a consumer waits for frames (blocking by default).
    pub fn wait_mode(mut self, mode: WaitMode) -> Self {
        self.settings.wait_mode = mode;
        self
    }

    /// How long `open` waits for a segment whose header is not yet published (only segments
    /// made by other implementations; labhub names a segment once it is initialised).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.settings.ready_timeout = timeout;
        self
    }

    /// Creates the channel, or takes it over from a producer that died or left (frame ids
    /// continue), and returns its producer.
    ///
    /// # Errors
    /// An invalid name or setting (`InvalidName`, `InvalidConfig` naming the field);
    /// `ChannelBusy` if a live producer owns the channel; `ConfigMismatch` / `SchemaMismatch`
    /// naming the first setting that differs from the existing channel's; `ForeignSegment`
    /// if the name holds a file labhub refuses; `NoSpace` if `/dev/shm` has no room; through
    /// the Hub also the broker's refusals.
    pub fn create(self) -> Result<B::Producer<T>, B::Error> {
        self.backend.create(self.settings)
    }

    /// Opens the existing channel and returns a consumer, which receives every frame committed
    /// after this returns.
    ///
    /// # Errors
    /// `NotFound`; `SchemaMismatch` or `ConfigMismatch` if the channel is not what the builder
    /// says; `WrongSecret`; `ConsumerTableFull`; `ForeignSegment`; `Layout` for a segment this
    /// build cannot read; through the Hub also `LayoutMismatch` when the broker's announcement
    /// disagrees with the segment.
    pub fn open(self) -> Result<B::Consumer<T>, B::Error> {
        self.backend.open(self.settings)
    }

    /// Opens the channel, creating it (with no producer) if it does not exist, so a consumer
    /// may start before its producer; the producer's `create` later takes it over if its
    /// settings are equal. Needs what `create` needs.
    ///
    /// # Errors
    /// Those of [`Channel::open`] and [`Channel::create`].
    pub fn open_or_create(self) -> Result<B::Consumer<T>, B::Error> {
        self.backend.open_or_create(self.settings)
    }
}
