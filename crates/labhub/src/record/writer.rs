//! The recorder: lossless consumers of channels, each written to its group of a Zarr v3
//! recording by a thread of its own.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value, json};
use zarrs::array::codec::{BytesCodec, Crc32cCodec, ShardingCodecBuilder, ShardingIndexLocation};
use zarrs::array::{Array, ArrayBuilder, DataType, data_type};
use zarrs::filesystem::FilesystemStore;
use zarrs::group::GroupBuilder;

use super::shard::ShardWriter;
use super::store::AtomicStore;
use super::{FORMAT_VERSION, MAX_STATE_CHANGES, RecordingError, io, zarr, zarr_dtype};
use crate::shm::{self, Consumer, DeliveryMode, Dynamic, ElementType, ReadError};

/// What the recorder reads a channel through: a [`Consumer`] of runtime-typed frames, alone
/// or inside a Hub consumer. It must be lossless (the default [`DeliveryMode`]).
pub trait Source: Send + 'static {
    /// The consumer.
    fn consumer(&mut self) -> &mut Consumer<Dynamic>;
}

impl Source for Consumer<Dynamic> {
    fn consumer(&mut self) -> &mut Consumer<Dynamic> {
        self
    }
}

#[cfg(feature = "zmq")]
impl Source for crate::client::ShmConsumer<Dynamic> {
    fn consumer(&mut self) -> &mut Consumer<Dynamic> {
        crate::client::ShmConsumer::consumer(self)
    }
}

/// How a [`Recorder`] records.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    /// Longest time between two flushes (what a killed recorder can lose). Default 1 s.
    pub flush_interval: Duration,
    /// About how many bytes one shard file holds (at most [`super::MAX_FRAMES_PER_SHARD`]
    /// frames). Default 64 MiB.
    pub shard_bytes: u64,
    /// Stop each channel after this many frames.
    pub max_frames: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// The user's attributes, stored in the root group's `attributes`.
    pub attributes: Map<String, Value>,
}

impl Default for RecordOptions {
    fn default() -> Self {
        Self {
            flush_interval: Duration::from_secs(1),
            shard_bytes: 64 << 20,
            max_frames: None,
            duration: None,
            attributes: Map::new(),
        }
    }
}

/// Stops a running [`Recorder`] from another thread or a signal handler's thread.
#[derive(Debug, Clone)]
#[must_use]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    /// A handle not yet stopped (for [`super::ReplayOptions::stop`]).
    pub fn new() -> Self {
        Self(Arc::new(AtomicBool::new(false)))
    }

    /// Asks the recorder (or replay) to flush and stop.
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether it was asked to stop.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

impl Default for StopHandle {
    fn default() -> Self {
        Self::new()
    }
}

/// Where one channel's recording stands, for a progress line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelProgress {
    /// The channel.
    pub channel: String,
    /// Frames recorded.
    pub frames: u64,
    /// Frame bytes recorded (as stored, padded to the largest shape).
    pub bytes: u64,
    /// Frames committed that the recorder has not read yet.
    pub lag: u64,
    /// Frames lost (see the recording's `losses`).
    pub losses: u64,
}

/// What a recording holds, returned by [`Recorder::run`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RecordSummary {
    /// The run id stored in the recording.
    pub run_id: String,
    /// Each channel's totals.
    pub channels: Vec<ChannelProgress>,
    /// How long the recording ran.
    pub elapsed: Duration,
}

#[derive(Default)]
struct Progress {
    frames: AtomicU64,
    bytes: AtomicU64,
    lag: AtomicU64,
    losses: AtomicU64,
}

/// Records channels into a Zarr v3 recording (see the [module docs](super) for the layout).
///
/// ```
/// use labhub::record::{RecordOptions, Recorder};
/// use labhub::shm::{self, Channel, Policy};
/// # let name = format!("doc-record-{}", std::process::id());
/// # let dir = std::env::temp_dir().join(format!("doc-record-{}.zarr", std::process::id()));
/// let mut camera = Channel::new(&name).policy(Policy::ring(8)).frames::<u16>(&[4, 4]).create()?;
/// let options = RecordOptions { max_frames: Some(3), ..RecordOptions::default() };
/// let mut recorder = Recorder::create(&dir, options)?;
/// recorder.add(Channel::new(&name).open()?)?;
/// for i in 0..3u16 {
///     camera.publish(&[i; 16], &[4, 4])?;
/// }
/// let summary = recorder.run(|_progress| {})?;
/// assert_eq!(summary.channels[0].frames, 3);
/// # drop(camera); shm::remove_channel(&name)?; std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "a recorder records only when run"]
pub struct Recorder {
    path: PathBuf,
    store: Arc<AtomicStore>,
    options: RecordOptions,
    root: Map<String, Value>,
    channels: Vec<ChannelWriter>,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("path", &self.path)
            .field("channels", &self.channels.len())
            .finish_non_exhaustive()
    }
}

fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn run_id() -> String {
    use std::io::Read as _;
    let mut b = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        let t = unix_ns(SystemTime::now()) ^ u64::from(std::process::id()).rotate_left(32);
        b[..8].copy_from_slice(&t.to_le_bytes());
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

fn zarr_data_type(t: ElementType) -> DataType {
    match t {
        ElementType::I8 => data_type::int8(),
        ElementType::U16 => data_type::uint16(),
        ElementType::I16 => data_type::int16(),
        ElementType::U32 => data_type::uint32(),
        ElementType::I32 => data_type::int32(),
        ElementType::U64 => data_type::uint64(),
        ElementType::I64 => data_type::int64(),
        ElementType::F32 => data_type::float32(),
        ElementType::F64 => data_type::float64(),
        ElementType::Complex64 => data_type::complex64(),
        ElementType::Complex128 => data_type::complex128(),
        ElementType::Bool => data_type::bool(),
        _ => data_type::uint8(),
    }
}

/// The fill value of absent elements: zero of the element type.
fn zero_fill(t: ElementType) -> zarrs::array::FillValueMetadata {
    use zarrs::array::FillValueMetadata as F;
    match t {
        ElementType::F32 | ElementType::F64 => F::from(0.0f64),
        ElementType::Complex64 | ElementType::Complex128 => {
            F::Array(vec![F::from(0.0f64), F::from(0.0f64)])
        }
        ElementType::Bool => F::from(false),
        _ => F::from(0u64),
    }
}

impl Recorder {
    /// Creates the recording directory `path` (which must not exist) and its root group.
    ///
    /// # Errors
    /// [`RecordingError::Exists`], [`RecordingError::Option`] for a zero flush interval or
    /// shard size, `Io` and `Zarr` errors of the writes.
    pub fn create(path: impl AsRef<Path>, options: RecordOptions) -> Result<Self, RecordingError> {
        let path = path.as_ref().to_owned();
        if options.flush_interval.is_zero() || options.shard_bytes == 0 {
            return Err(RecordingError::Option {
                option: "flush_interval/shard_bytes",
                problem: "must be more than zero".into(),
            });
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io(parent, "create"))?;
        }
        // One `mkdir` of the recording itself: a path that exists, or appears meanwhile, is
        // never written into.
        match std::fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(RecordingError::Exists { path });
            }
            Err(e) => return Err(io(&path, "create")(e)),
        }
        let fs = FilesystemStore::new(&path).map_err(zarr(&path, "store"))?;
        let store = Arc::new(AtomicStore::new(fs));
        let now = SystemTime::now();
        let mut root = Map::new();
        root.insert("labhub_recording".into(), json!(FORMAT_VERSION));
        root.insert("run_id".into(), json!(run_id()));
        root.insert("host".into(), json!(host()));
        root.insert(
            "started".into(),
            json!(humantime::format_rfc3339_nanos(now).to_string()),
        );
        root.insert("started_ns".into(), json!(unix_ns(now)));
        root.insert("stopped".into(), Value::Null);
        root.insert("stopped_ns".into(), Value::Null);
        root.insert("complete".into(), json!(false));
        root.insert("channels".into(), json!([]));
        root.insert(
            "attributes".into(),
            Value::Object(options.attributes.clone()),
        );
        root.insert("labhub_version".into(), json!(env!("CARGO_PKG_VERSION")));
        let recorder = Self {
            path,
            store,
            options,
            root,
            channels: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
        };
        recorder.store_root()?;
        Ok(recorder)
    }

    fn store_root(&self) -> Result<(), RecordingError> {
        GroupBuilder::new()
            .attributes(self.root.clone())
            .build(self.store.clone(), "/")
            .map_err(zarr(&self.path, "group"))?
            .store_metadata()
            .map_err(zarr(&self.path, "group metadata"))
    }

    /// The run id stored in the recording (128 random bits, hex).
    pub fn run_id(&self) -> &str {
        self.root["run_id"].as_str().unwrap_or("")
    }

    /// A handle that stops [`Recorder::run`].
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.stop.clone())
    }

    /// Adds a channel: creates its group and arrays with its settings and schema.
    ///
    /// # Errors
    /// [`RecordingError::Option`] if the consumer is not lossless or the channel was added
    /// already; `Zarr` errors.
    pub fn add(&mut self, mut source: impl Source) -> Result<(), RecordingError> {
        let c = source.consumer();
        let channel = c.channel().to_string();
        if c.delivery_mode() != DeliveryMode::Lossless {
            return Err(RecordingError::Option {
                option: "consumer",
                problem: format!(
                    "a recorder reads channel {channel:?} losslessly, not {}",
                    c.delivery_mode()
                ),
            });
        }
        if !super::node_name_allowed(&channel) {
            return Err(RecordingError::Option {
                option: "channel",
                problem: format!(
                    "{channel:?} cannot name a group of a recording (zarr.json, or starting with __)"
                ),
            });
        }
        if self.channels.iter().any(|w| w.channel == channel) {
            return Err(RecordingError::Option {
                option: "channel",
                problem: format!("{channel:?} is recorded once"),
            });
        }
        // Through the consumer's own mapping: a broker-granted channel has no name to inspect.
        let report = c.report();
        let writer = ChannelWriter::new(
            Box::new(source),
            &self.path,
            self.store.clone(),
            &report,
            &self.options,
        )?;
        self.channels.push(writer);
        let names: Vec<Value> = self.channels.iter().map(|w| json!(w.channel)).collect();
        self.root.insert("channels".into(), Value::Array(names));
        self.store_root()
    }

    /// Records until stopped ([`StopHandle`]), the duration passed, or every channel has its
    /// frame count; calls `progress` about four times a second. Flushes and completes the
    /// recording's metadata before it returns.
    ///
    /// # Errors
    /// The first channel's error (its recording stays readable up to its last flush);
    /// `Option` with no channel added.
    pub fn run(
        mut self,
        mut progress: impl FnMut(&[ChannelProgress]),
    ) -> Result<RecordSummary, RecordingError> {
        if self.channels.is_empty() {
            return Err(RecordingError::Option {
                option: "channels",
                problem: "nothing to record".into(),
            });
        }
        let start = Instant::now();
        let deadline = self.options.duration.map(|d| start + d);
        let cells: Vec<(String, Arc<Progress>)> = self
            .channels
            .iter()
            .map(|w| (w.channel.clone(), w.progress.clone()))
            .collect();
        // Each thread says when it is done, so `run` returns as soon as the last one is.
        let (done_tx, done) = std::sync::mpsc::channel::<()>();
        let threads: Vec<_> = std::mem::take(&mut self.channels)
            .into_iter()
            .map(|mut w| {
                let stop = self.stop.clone();
                let done_tx = done_tx.clone();
                std::thread::Builder::new()
                    .name(format!("record-{}", w.channel))
                    .spawn(move || {
                        let result = w.record(&stop);
                        let _ = done_tx.send(());
                        result
                    })
            })
            .collect::<Result<_, _>>()
            .map_err(io(&self.path, "spawn a thread for"))?;
        let snapshot = || -> Vec<ChannelProgress> {
            cells
                .iter()
                .map(|(channel, p)| ChannelProgress {
                    channel: channel.clone(),
                    frames: p.frames.load(Ordering::Relaxed),
                    bytes: p.bytes.load(Ordering::Relaxed),
                    lag: p.lag.load(Ordering::Relaxed),
                    losses: p.losses.load(Ordering::Relaxed),
                })
                .collect()
        };
        drop(done_tx);
        let mut running = threads.len();
        while running > 0 {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                self.stop.store(true, Ordering::SeqCst);
            }
            progress(&snapshot());
            let mut wait = Duration::from_millis(250);
            if let Some(d) = deadline {
                wait = wait.min(d.saturating_duration_since(Instant::now()));
            }
            match done.recv_timeout(wait) {
                Ok(()) => running -= 1,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                // A thread that panicked dropped its sender without a word.
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let mut first_error = None;
        for t in threads {
            let result = t.join().unwrap_or_else(|_| {
                Err(RecordingError::Option {
                    option: "recorder thread",
                    problem: "panicked".into(),
                })
            });
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        let now = SystemTime::now();
        self.root.insert(
            "stopped".into(),
            json!(humantime::format_rfc3339_nanos(now).to_string()),
        );
        self.root.insert("stopped_ns".into(), json!(unix_ns(now)));
        self.root
            .insert("complete".into(), json!(first_error.is_none()));
        self.store_root()?;
        if let Some(e) = first_error {
            return Err(e);
        }
        let channels = snapshot();
        progress(&channels);
        Ok(RecordSummary {
            run_id: self.run_id().to_owned(),
            channels,
            elapsed: start.elapsed(),
        })
    }
}

/// One channel's part of a recording, written by its own thread.
struct ChannelWriter {
    channel: String,
    source: Box<dyn Source>,
    root: PathBuf,
    store: Arc<AtomicStore>,
    attrs: Map<String, Value>,
    frames: Array<AtomicStore>,
    frame_id: Array<AtomicStore>,
    timestamp: Array<AtomicStore>,
    shape: Array<AtomicStore>,
    element: ElementType,
    max_shape: Vec<u64>,
    frame_bytes: u64,
    per_shard: u64,
    flush_interval: Duration,
    max_frames: Option<u64>,
    shard: Option<ShardWriter>,
    /// The per-frame values of the shard being written.
    ids: Vec<u64>,
    stamps: Vec<u64>,
    shapes: Vec<u64>,
    recorded: u64,
    first_id: Option<u64>,
    last_id: Option<u64>,
    gaps: u64,
    unreadable: u64,
    missed_at_start: u64,
    dropped_at_start: u64,
    /// The newest state version read from the flexible zone (0: none yet).
    state_version: u64,
    /// The flexible zone's version when the recording began (the state then in effect is
    /// recorded; those before it are not this recording's).
    state_at_start: u64,
    /// States read but not yet followed by a recorded frame: `(version, state)`, oldest first.
    pending_states: Vec<(u64, Value)>,
    state_changes: Vec<Value>,
    state_changes_lost: u64,
    /// A frame padded to the largest shape (frames of another shape, or not held).
    pad: Vec<u8>,
    copy: Vec<u8>,
    progress: Arc<Progress>,
}

impl ChannelWriter {
    fn new(
        mut source: Box<dyn Source>,
        root: &Path,
        store: Arc<AtomicStore>,
        report: &shm::SegmentReport,
        options: &RecordOptions,
    ) -> Result<Self, RecordingError> {
        let c = source.consumer();
        let channel = c.channel().to_string();
        let element = c.element_type();
        let max_shape = c.max_shape().to_vec();
        let ndim = max_shape.len() as u64;
        let frame_bytes = max_shape.iter().product::<u64>() * element.size();
        let per_shard = super::frames_per_shard(frame_bytes, options.shard_bytes);
        let group = format!("/{channel}");
        let node = root.join(&channel);
        let mut attrs = Map::new();
        attrs.insert("channel".into(), json!(channel));
        attrs.insert("element".into(), json!(element.name()));
        attrs.insert("numpy_dtype".into(), json!(element.numpy_dtype()));
        attrs.insert("max_shape".into(), json!(max_shape));
        attrs.insert("policy".into(), json!(report.policy.to_string()));
        attrs.insert("slots".into(), json!(report.slots));
        attrs.insert("flex_size".into(), json!(report.flex_size));
        attrs.insert("checksum".into(), json!(report.checksum));
        attrs.insert("schema_name".into(), json!(report.schema_name));
        attrs.insert("schema_version".into(), json!(report.schema_version));
        attrs.insert("layout_version".into(), json!(report.layout_version));
        attrs.insert("frames_per_shard".into(), json!(per_shard));
        let dtype = zarr_data_type(element);
        let mut frames_shape = vec![0];
        frames_shape.extend(&max_shape);
        let mut shard_shape = vec![per_shard];
        shard_shape.extend(&max_shape);
        let mut chunk_shape = vec![std::num::NonZeroU64::MIN];
        chunk_shape.extend(
            max_shape
                .iter()
                .map(|&d| std::num::NonZeroU64::new(d).unwrap_or(std::num::NonZeroU64::MIN)),
        );
        let sharding = ShardingCodecBuilder::new(chunk_shape, &dtype)
            .array_to_bytes_codec(Arc::new(BytesCodec::little()))
            .index_array_to_bytes_codec(Arc::new(BytesCodec::little()))
            .index_bytes_to_bytes_codecs(vec![Arc::new(Crc32cCodec::new())])
            .index_location(ShardingIndexLocation::Start)
            .build_arc();
        let mut dims = vec!["frame".to_owned()];
        dims.extend((0..ndim).map(|i| format!("dim{i}")));
        let frames = ArrayBuilder::new(
            frames_shape,
            shard_shape.as_slice(),
            zarr_dtype(element),
            zero_fill(element),
        )
        .array_to_bytes_codec(sharding)
        .dimension_names(Some(dims))
        .build(store.clone(), &format!("{group}/frames"))
        .map_err(zarr(&node, "array"))?;
        let per_frame = |name: &str, shape: Vec<u64>, chunk: Vec<u64>| {
            ArrayBuilder::new(
                shape,
                chunk.as_slice(),
                "uint64",
                zero_fill(ElementType::U64),
            )
            .array_to_bytes_codec(Arc::new(BytesCodec::little()))
            .build(store.clone(), &format!("{group}/{name}"))
            .map_err(zarr(node.join(name), "array"))
        };
        let frame_id = per_frame("frame_id", vec![0], vec![per_shard])?;
        let timestamp = per_frame("timestamp_ns", vec![0], vec![per_shard])?;
        let shape = per_frame("shape", vec![0, ndim], vec![per_shard, ndim])?;
        let stats = c.stats();
        let missed_at_start = c.missed();
        let state_at_start = c.state_version();
        let progress = Arc::new(Progress::default());
        let mut w = Self {
            channel,
            source,
            root: root.to_owned(),
            store,
            attrs,
            frames,
            frame_id,
            timestamp,
            shape,
            element,
            max_shape,
            frame_bytes,
            per_shard,
            flush_interval: options.flush_interval,
            max_frames: options.max_frames,
            shard: None,
            ids: vec![0; per_shard as usize],
            stamps: vec![0; per_shard as usize],
            shapes: vec![0; (per_shard * ndim) as usize],
            recorded: 0,
            first_id: None,
            last_id: None,
            gaps: 0,
            unreadable: 0,
            missed_at_start,
            dropped_at_start: stats.dropped,
            state_version: 0,
            state_at_start,
            pending_states: Vec::new(),
            state_changes: Vec::new(),
            state_changes_lost: 0,
            pad: Vec::new(),
            copy: Vec::new(),
            progress,
        };
        w.store_metadata()?;
        Ok(w)
    }

    fn node(&self) -> PathBuf {
        self.root.join(&self.channel)
    }

    fn losses(&mut self) -> (u64, u64) {
        let c = self.source.consumer();
        let missed = c.missed().saturating_sub(self.missed_at_start);
        let dropped = c.stats().dropped.saturating_sub(self.dropped_at_start);
        (missed, dropped)
    }

    /// Records until `stop`, the frame limit, or an error; flushes in every case.
    fn record(&mut self, stop: &AtomicBool) -> Result<(), RecordingError> {
        let result = self.record_frames(stop);
        // States no recorded frame followed come after the last frame.
        self.read_state();
        for (version, state) in std::mem::take(&mut self.pending_states) {
            self.keep_state(version, state);
        }
        let flushed = self.flush();
        result.and(flushed)
    }

    fn record_frames(&mut self, stop: &AtomicBool) -> Result<(), RecordingError> {
        let mut last_flush = Instant::now();
        let poll = self.flush_interval.min(Duration::from_millis(100));
        while !stop.load(Ordering::Relaxed) && self.max_frames.is_none_or(|m| self.recorded < m) {
            // Read a new state soon after it is written, before a later one replaces it.
            self.read_state();
            let c = self.source.consumer();
            let mut follows = 0;
            let recorded = match c.next(Some(poll)) {
                Ok(frame) => {
                    let id = frame.frame_id();
                    let ts = frame.timestamp_ns();
                    follows = frame.state_version();
                    let shape: Vec<u64> = frame.shape().to_vec();
                    let full = shape == self.max_shape && self.element != ElementType::Bool;
                    // Held frames (a lossless ring) are written from the slot itself.
                    if let (Some(b), true) = (frame.held(), full) {
                        append(
                            &mut self.shard,
                            &self.frames,
                            self.per_shard,
                            self.recorded,
                            b,
                        )?;
                        Some((id, ts, shape))
                    } else {
                        self.copy.resize(frame.len(), 0);
                        let read = frame.copy_to(&mut self.copy);
                        drop(frame);
                        match read {
                            Ok(()) => {
                                self.pad.clear();
                                self.pad.resize(self.frame_bytes as usize, 0);
                                pad_into(
                                    &mut self.pad,
                                    &self.copy,
                                    &shape,
                                    &self.max_shape,
                                    self.element,
                                );
                                append(
                                    &mut self.shard,
                                    &self.frames,
                                    self.per_shard,
                                    self.recorded,
                                    &self.pad,
                                )?;
                                Some((id, ts, shape))
                            }
                            // Overwritten: counted as missed by the consumer.
                            Err(ReadError::Overwritten { .. }) => None,
                            Err(_) => {
                                self.unreadable += 1;
                                None
                            }
                        }
                    }
                }
                Err(ReadError::Timeout) => None,
                Err(ReadError::ChecksumMismatch { .. } | ReadError::Corrupt { .. }) => {
                    self.unreadable += 1;
                    None
                }
                Err(source) => {
                    return Err(RecordingError::Read {
                        channel: self.channel.clone(),
                        source,
                    });
                }
            };
            if let Some((id, ts, shape)) = recorded {
                self.follow_state(follows);
                let lag = self.source.consumer().lag();
                self.note_frame(id, ts, &shape, lag)?;
            }
            if last_flush.elapsed() >= self.flush_interval {
                self.flush()?;
                last_flush = Instant::now();
            }
        }
        Ok(())
    }

    /// Reads the flexible zone's state if its version moved since the last read, keeping it
    /// until a recorded frame follows it.
    fn read_state(&mut self) {
        let c = self.source.consumer();
        if c.state_version() == self.state_version {
            return;
        }
        let Ok(Some((version, state))) = c.read_state::<Value>() else {
            return;
        };
        if version <= self.state_version {
            return;
        }
        // Versions written and replaced between two reads were never seen.
        let expected = if self.state_version == 0 {
            self.state_at_start.max(1)
        } else {
            self.state_version + 1
        };
        self.state_changes_lost += version.saturating_sub(expected);
        self.state_version = version;
        self.pending_states.push((version, state));
    }

    /// Frame number `self.recorded`, just recorded, followed state version `version` (the
    /// producer's state when it committed the frame): every pending state up to that version
    /// starts at this frame, the newest of them in effect.
    fn follow_state(&mut self, version: u64) {
        if version > self.state_version {
            self.read_state();
        }
        let ready = self
            .pending_states
            .iter()
            .take_while(|(v, _)| *v <= version)
            .count();
        let ready: Vec<_> = self.pending_states.drain(..ready).collect();
        for (v, state) in ready {
            self.keep_state(v, state);
        }
    }

    /// Stores a state change starting at frame `self.recorded`.
    fn keep_state(&mut self, version: u64, state: Value) {
        if self.state_changes.len() >= MAX_STATE_CHANGES {
            self.state_changes_lost += 1;
            return;
        }
        self.state_changes.push(json!({
            "frame_index": self.recorded,
            "timestamp_ns": unix_ns(SystemTime::now()),
            "version": version,
            "state": state,
        }));
    }

    fn note_frame(
        &mut self,
        id: u64,
        ts: u64,
        shape: &[u64],
        lag: u64,
    ) -> Result<(), RecordingError> {
        let i = (self.recorded % self.per_shard) as usize;
        self.ids[i] = id;
        self.stamps[i] = ts;
        let ndim = self.max_shape.len();
        self.shapes[i * ndim..(i + 1) * ndim].copy_from_slice(shape);
        if let Some(prev) = self.last_id
            && id > prev + 1
        {
            self.gaps += id - prev - 1;
        }
        self.first_id.get_or_insert(id);
        self.last_id = Some(id);
        self.recorded += 1;
        let p = &self.progress;
        p.frames.store(self.recorded, Ordering::Relaxed);
        p.bytes.fetch_add(self.frame_bytes, Ordering::Relaxed);
        p.lag.store(lag, Ordering::Relaxed);
        if self.shard.as_ref().is_some_and(ShardWriter::is_full) {
            self.finish_shard()?;
        }
        Ok(())
    }

    /// Writes the full shard's index and its per-frame chunks, and closes it.
    fn finish_shard(&mut self) -> Result<(), RecordingError> {
        if let Some(mut shard) = self.shard.take() {
            shard.flush()?;
            self.store_per_frame((self.recorded - 1) / self.per_shard)?;
        }
        Ok(())
    }

    fn store_per_frame(&mut self, shard: u64) -> Result<(), RecordingError> {
        let node = self.node();
        self.frame_id
            .store_chunk(&[shard], self.ids.as_slice())
            .map_err(zarr(node.join("frame_id"), "chunk"))?;
        self.timestamp
            .store_chunk(&[shard], self.stamps.as_slice())
            .map_err(zarr(node.join("timestamp_ns"), "chunk"))?;
        self.shape
            .store_chunk(&[shard, 0], self.shapes.as_slice())
            .map_err(zarr(node.join("shape"), "chunk"))
    }

    /// Makes everything recorded so far readable: shard data and index, per-frame chunks, then
    /// the metadata with the new lengths.
    fn flush(&mut self) -> Result<(), RecordingError> {
        if let Some(shard) = &mut self.shard {
            shard.flush()?;
            let index = self.recorded.saturating_sub(1) / self.per_shard;
            self.store_per_frame(index)?;
        }
        let (missed, dropped) = self.losses();
        let losses = missed + dropped + self.gaps + self.unreadable;
        self.progress.losses.store(losses, Ordering::Relaxed);
        self.attrs.insert("frames".into(), json!(self.recorded));
        self.attrs
            .insert("first_frame_id".into(), json!(self.first_id));
        self.attrs
            .insert("last_frame_id".into(), json!(self.last_id));
        self.attrs.insert(
            "losses".into(),
            json!({
                "missed": missed,
                "producer_dropped": dropped,
                "frame_id_gaps": self.gaps,
                "unreadable": self.unreadable,
                "state_changes_not_kept": self.state_changes_lost,
            }),
        );
        self.attrs.insert(
            "state_changes".into(),
            Value::Array(self.state_changes.clone()),
        );
        self.store_metadata()
    }

    fn store_metadata(&mut self) -> Result<(), RecordingError> {
        let node = self.node();
        let n = self.recorded;
        let ndim = self.max_shape.len() as u64;
        let mut frames_shape = vec![n];
        frames_shape.extend(&self.max_shape);
        for (array, shape, name) in [
            (&mut self.frame_id, vec![n], "frame_id"),
            (&mut self.timestamp, vec![n], "timestamp_ns"),
            (&mut self.shape, vec![n, ndim], "shape"),
            (&mut self.frames, frames_shape, "frames"),
        ] {
            array
                .set_shape(shape)
                .map_err(zarr(node.join(name), "shape"))?;
            array
                .store_metadata()
                .map_err(zarr(node.join(name), "metadata"))?;
        }
        GroupBuilder::new()
            .attributes(self.attrs.clone())
            .build(self.store.clone(), &format!("/{}", self.channel))
            .map_err(zarr(&node, "group"))?
            .store_metadata()
            .map_err(zarr(&node, "group metadata"))
    }
}

/// Appends one frame's chunk, opening shard `recorded / per_shard` first if needed.
fn append(
    shard: &mut Option<ShardWriter>,
    frames: &Array<AtomicStore>,
    per_shard: u64,
    recorded: u64,
    bytes: &[u8],
) -> Result<(), RecordingError> {
    if shard.is_none() {
        let ndim = frames.shape().len();
        let mut indices = vec![0u64; ndim];
        indices[0] = recorded / per_shard;
        let key = frames.chunk_key(&indices);
        *shard = Some(ShardWriter::create(
            frames_store_path(frames, &key),
            per_shard,
        )?);
    }
    shard.as_mut().map_or(Ok(()), |s| s.append(bytes))
}

fn frames_store_path(frames: &Array<AtomicStore>, key: &zarrs::storage::StoreKey) -> PathBuf {
    frames.storage().path_of(key)
}

/// Copies a frame of `shape` (C order) into `dst`, a zeroed frame of `max` (C order), each
/// row at its place; bool elements become 0 or 1.
fn pad_into(dst: &mut [u8], src: &[u8], shape: &[u64], max: &[u64], element: ElementType) {
    super::for_each_row(
        shape,
        max,
        element.size() as usize,
        |compact, padded, len| {
            if let (Some(s), Some(d)) = (
                src.get(compact..compact + len),
                dst.get_mut(padded..padded + len),
            ) {
                d.copy_from_slice(s);
            }
        },
    );
    if element == ElementType::Bool {
        for b in dst.iter_mut() {
            *b = u8::from(*b != 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_smaller_frame_lands_at_its_place_in_the_padded_one() {
        let mut dst = vec![0u8; 12];
        // A 2 x 2 frame of u8 inside 3 x 4.
        pad_into(&mut dst, &[1, 2, 3, 4], &[2, 2], &[3, 4], ElementType::U8);
        assert_eq!(dst, [1, 2, 0, 0, 3, 4, 0, 0, 0, 0, 0, 0]);
        let mut dst = vec![0u8; 4];
        pad_into(&mut dst, &[0, 7, 1], &[3], &[4], ElementType::Bool);
        assert_eq!(dst, [0, 1, 1, 0]);
    }
}
