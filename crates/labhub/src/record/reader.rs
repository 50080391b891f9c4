//! The replayer: reads a recording (checking everything it declares before it allocates or
//! reads by it) and publishes it into live channels with the original timing or faster.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use zarrs::array::{Array, ArrayMetadata};
use zarrs::filesystem::FilesystemStore;

use super::writer::StopHandle;
use super::{MAX_FRAMES_PER_SHARD, MAX_METADATA_BYTES, RecordingError, io, shard, zarr};
use crate::shm::{self, Backend, Dynamic, ElementType, Policy, Producer, PublishError};

/// The largest channel a replay creates holds this many of the largest frames it accepts.
const RING_FRAMES_LIMIT: u64 = 16;

/// How fast a recording is replayed: `1x` (the original timing), `2x`, `0.5x` (any factor
/// above 0 up to 1000), or `max` (as fast as the channel takes frames).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub enum Rate {
    /// The original timing divided by this factor.
    Speed(f64),
    /// No waiting.
    #[default]
    Max,
}

/// A string that is not a rate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid rate {0:?}: expected max or a factor such as 1x, 2x, 0.5x (above 0, at most 1000)"
)]
pub struct RateParseError(pub String);

impl std::str::FromStr for Rate {
    type Err = RateParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "max" {
            return Ok(Self::Max);
        }
        s.strip_suffix('x')
            .and_then(|f| f.parse::<f64>().ok())
            .filter(|f| f.is_finite() && *f > 0.0 && *f <= 1000.0)
            .map(Self::Speed)
            .ok_or_else(|| RateParseError(s.chars().take(64).collect()))
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Speed(x) => write!(f, "{x}x"),
            Self::Max => f.write_str("max"),
        }
    }
}

/// How a [`Replayer`] replays.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// How fast.
    pub rate: Rate,
    /// Start again at the end, until stopped.
    pub repeat: bool,
    /// Stamp frames with their recorded timestamps instead of the time they are published.
    pub keep_timestamps: bool,
    /// Stops the replay early.
    pub stop: Option<StopHandle>,
    /// Reads every channel's frames into memory before the replay starts, refusing a recording
    /// whose frames (padded to the largest shape) exceed this many bytes in all: frames are
    /// then published from memory at `memcpy` speed instead of the file system's read speed
    /// (and a looped replay reads its files once). `None`: frames are read from their files
    /// as they are published.
    pub preload: Option<u64>,
}

/// One channel of a recording, as its metadata describes it (checked).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RecordedChannel {
    /// The channel's name when it was recorded.
    pub name: String,
    /// Its element type.
    pub element: ElementType,
    /// Its largest frame shape.
    pub max_shape: Vec<u64>,
    /// Its policy.
    pub policy: Policy,
    /// Its flexible-zone capacity.
    pub flex_size: u64,
    /// Whether it had checksums.
    pub checksum: bool,
    /// Its application schema name and version, if any.
    pub schema: Option<(String, u32)>,
    /// Frames recorded (readable).
    pub frames: u64,
}

/// What a replay published.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplaySummary {
    /// Frames published per channel (in the recording's order).
    pub frames: Vec<u64>,
}

/// The frame ids, timestamps and shapes (flattened rows) of one shard's frames.
type PerFrame = (Vec<u64>, Vec<u64>, Vec<u64>);

struct ChannelReader {
    info: RecordedChannel,
    node: PathBuf,
    frames: Array<FilesystemStore>,
    frame_id: Array<FilesystemStore>,
    timestamp: Array<FilesystemStore>,
    shape: Array<FilesystemStore>,
    per_shard: u64,
    frame_bytes: u64,
    states: Vec<(u64, Value)>,
}

/// Replays a recording into live channels.
///
/// ```
/// use labhub::record::{RecordOptions, Recorder, ReplayOptions, Replayer};
/// use labhub::shm::{self, Channel, Policy};
/// # let name = format!("doc-replay-{}", std::process::id());
/// # let dir = std::env::temp_dir().join(format!("doc-replay-{}.zarr", std::process::id()));
/// # {
/// # let mut camera = Channel::new(&name).policy(Policy::ring(8)).frames::<u8>(&[4]).create()?;
/// # let mut recorder = Recorder::create(&dir, RecordOptions { max_frames: Some(2), ..RecordOptions::default() })?;
/// # recorder.add(Channel::new(&name).open()?)?;
/// # camera.publish(&[1, 2, 3, 4], &[4])?; camera.publish(&[5, 6], &[2])?;
/// # recorder.run(|_| {})?;
/// # }
/// # shm::remove_channel(&name)?;
/// let replay = Replayer::open(&dir)?;
/// let recorded = &replay.channels()[0];
/// // A channel with the recorded settings, under a new name, and a consumer of it.
/// let producer = replay.configure(0, Channel::new(format!("{name}-again"))).create()?;
/// let mut viewer = Channel::new(format!("{name}-again")).open()?;
/// let summary = replay.play(vec![producer], &ReplayOptions::default())?;
/// assert_eq!(summary.frames, [2]);
/// let frame = viewer.next(None)?;
/// assert_eq!((frame.shape(), frame.to_vec()?), (&[4u64][..], vec![1, 2, 3, 4]));
/// # drop(frame); drop(viewer); shm::remove_channel(&format!("{name}-again"))?; std::fs::remove_dir_all(&dir)?;
/// # let _ = recorded;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "a replayer publishes only when played"]
pub struct Replayer {
    path: PathBuf,
    root: Map<String, Value>,
    channels: Vec<ChannelReader>,
}

impl std::fmt::Debug for Replayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replayer")
            .field("path", &self.path)
            .field("channels", &self.channels.len())
            .finish_non_exhaustive()
    }
}

/// What a replayer publishes through: a [`Producer`] of runtime-typed frames, alone or inside
/// a Hub producer.
pub trait Sink: Send {
    /// The producer.
    fn producer(&mut self) -> &mut Producer<Dynamic>;
}

impl Sink for Producer<Dynamic> {
    fn producer(&mut self) -> &mut Producer<Dynamic> {
        self
    }
}

#[cfg(feature = "zmq")]
impl Sink for crate::client::ShmProducer<Dynamic> {
    fn producer(&mut self) -> &mut Producer<Dynamic> {
        crate::client::ShmProducer::producer(self)
    }
}

fn invalid(path: &Path, field: &'static str, problem: impl Into<String>) -> RecordingError {
    RecordingError::Invalid {
        path: path.to_owned(),
        field,
        problem: problem.into(),
    }
}

/// Reads a node's `zarr.json`, at most [`MAX_METADATA_BYTES`], as JSON.
fn read_json(node: &Path) -> Result<Value, RecordingError> {
    use std::io::Read as _;
    let path = node.join("zarr.json");
    let file = File::open(&path).map_err(io(&path, "open"))?;
    let mut text = Vec::new();
    file.take(MAX_METADATA_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(io(&path, "read"))?;
    if text.len() as u64 > MAX_METADATA_BYTES {
        return Err(RecordingError::TooLarge {
            path,
            what: "zarr.json",
            size: text.len() as u64,
            limit: MAX_METADATA_BYTES,
        });
    }
    serde_json::from_slice(&text).map_err(|e| invalid(&path, "zarr.json", e.to_string()))
}

fn attributes(node: &Path, doc: &Value, kind: &str) -> Result<Map<String, Value>, RecordingError> {
    let path = node.join("zarr.json");
    if doc.get("zarr_format") != Some(&Value::from(3)) {
        return Err(invalid(&path, "zarr_format", "not a Zarr v3 node"));
    }
    if doc.get("node_type").and_then(Value::as_str) != Some(kind) {
        return Err(invalid(&path, "node_type", format!("expected a {kind}")));
    }
    match doc.get("attributes") {
        None => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(_) => Err(invalid(&path, "attributes", "not an object")),
    }
}

fn u64_list(v: Option<&Value>) -> Option<Vec<u64>> {
    v?.as_array()?.iter().map(Value::as_u64).collect()
}

/// Opens array `name` of `node` through zarrs from its checked JSON, requiring `dtype` and
/// `ndim` dimensions; returns it with its shape and chunk shape.
fn open_array(
    store: &Arc<FilesystemStore>,
    root: &Path,
    node: &Path,
    group: &str,
    name: &str,
    dtype: &str,
    ndim: usize,
) -> Result<(Array<FilesystemStore>, Value), RecordingError> {
    let dir = node.join(name);
    let doc = read_json(&dir)?;
    attributes(&dir, &doc, "array")?;
    let path = dir.join("zarr.json");
    if doc.get("data_type").and_then(Value::as_str) != Some(dtype) {
        return Err(invalid(
            &path,
            "data_type",
            format!(
                "{} (expected {dtype})",
                doc.get("data_type").unwrap_or(&Value::Null)
            ),
        ));
    }
    let shape = u64_list(doc.get("shape"))
        .ok_or_else(|| invalid(&path, "shape", "not a list of whole numbers"))?;
    if shape.len() != ndim {
        return Err(invalid(
            &path,
            "shape",
            format!("{} dimensions, expected {ndim}", shape.len()),
        ));
    }
    let metadata: ArrayMetadata = serde_json::from_value(doc.clone())
        .map_err(|e| invalid(&path, "zarr.json", e.to_string()))?;
    let _ = root;
    let array = Array::new_with_metadata(store.clone(), &format!("{group}/{name}"), metadata)
        .map_err(zarr(&dir, "array"))?;
    Ok((array, doc))
}

/// The chunk (shard) shape of a regular chunk grid.
fn chunk_shape(doc: &Value) -> Option<Vec<u64>> {
    let grid = doc.get("chunk_grid")?;
    if grid.get("name")?.as_str()? != "regular" {
        return None;
    }
    u64_list(grid.get("configuration")?.get("chunk_shape"))
}

/// Whether a codec list is exactly `[bytes (little endian or none)]`.
fn plain_bytes(codecs: Option<&Value>) -> bool {
    let Some([c]) = codecs.and_then(Value::as_array).map(Vec::as_slice) else {
        return false;
    };
    c.get("name").and_then(Value::as_str) == Some("bytes")
        && c.get("configuration")
            .and_then(|x| x.get("endian"))
            .is_none_or(|e| e.as_str() == Some("little"))
}

impl Replayer {
    /// Opens a recording and checks every channel's metadata against what the recorder
    /// writes; frames of at most [`super::DEFAULT_MAX_FRAME_BYTES`].
    ///
    /// # Errors
    /// See [`Replayer::open_with_limit`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, RecordingError> {
        Self::open_with_limit(path, super::DEFAULT_MAX_FRAME_BYTES)
    }

    /// Opens a recording whose frames are at most `max_frame_bytes` (padded to the largest
    /// shape): no declared size is used before it is checked, so a hostile or truncated
    /// recording is a typed error, never a panic or an allocation of what it declares.
    ///
    /// # Errors
    /// `Io` (a file missing), `Invalid` naming the field that is not what a labhub recording
    /// holds, `TooLarge`, `Zarr`.
    pub fn open_with_limit(
        path: impl AsRef<Path>,
        max_frame_bytes: u64,
    ) -> Result<Self, RecordingError> {
        let path = path.as_ref().to_owned();
        let root_doc = read_json(&path)?;
        let root = attributes(&path, &root_doc, "group")?;
        let here = path.join("zarr.json");
        if root.get("labhub_recording").and_then(Value::as_u64) != Some(super::FORMAT_VERSION) {
            return Err(invalid(
                &here,
                "labhub_recording",
                "not a labhub recording of format 1",
            ));
        }
        let names: Vec<String> = root
            .get("channels")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(|v| v.as_str().map(str::to_owned)).collect())
            .ok_or_else(|| invalid(&here, "channels", "not a list of names"))?;
        if names.len() > crate::shm::CONSUMER_CAPACITY as usize * 64 {
            return Err(invalid(&here, "channels", "too many"));
        }
        let store = Arc::new(FilesystemStore::new(&path).map_err(zarr(&path, "store"))?);
        let channels = names
            .iter()
            .map(|name| ChannelReader::open(&store, &path, name, max_frame_bytes))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            path,
            root,
            channels,
        })
    }

    /// The recorded channels, in the recording's order.
    pub fn channels(&self) -> Vec<RecordedChannel> {
        self.channels.iter().map(|c| c.info.clone()).collect()
    }

    /// The run id, if the recording has one.
    pub fn run_id(&self) -> Option<&str> {
        self.root.get("run_id").and_then(Value::as_str)
    }

    /// The root group's attributes (run id, host, times, the user's attributes, …).
    pub fn attributes(&self) -> &Map<String, Value> {
        &self.root
    }

    /// Gives `builder` the recorded settings of channel `index`: policy, element type and
    /// largest shape, flexible zone, checksums, schema. Its name is the builder's.
    ///
    /// # Panics
    /// If `index` is not below the number of channels.
    pub fn configure<B: Backend>(
        &self,
        index: usize,
        builder: shm::Channel<B, Dynamic>,
    ) -> shm::Channel<B, Dynamic> {
        let c = &self.channels[index].info;
        let mut b = builder
            .policy(c.policy)
            .dynamic(c.element, &c.max_shape)
            .flex_size(c.flex_size)
            .checksum(c.checksum);
        if let Some((name, version)) = &c.schema {
            b = b.schema(name.clone(), *version);
        }
        b
    }

    /// Publishes every channel's frames through `sinks` (one per channel, in order), each on
    /// its own thread, with the recorded timing scaled by the rate, and the flexible-zone
    /// states at the frames they preceded.
    ///
    /// # Errors
    /// `Option` if the sinks do not match the channels; the first channel's error.
    pub fn play<S: Sink>(
        &self,
        mut sinks: Vec<S>,
        options: &ReplayOptions,
    ) -> Result<ReplaySummary, RecordingError> {
        if sinks.len() != self.channels.len() {
            return Err(RecordingError::Option {
                option: "sinks",
                problem: format!(
                    "{} producers for {} channels",
                    sinks.len(),
                    self.channels.len()
                ),
            });
        }
        for (s, c) in sinks.iter_mut().zip(&self.channels) {
            let p = s.producer();
            if p.element_type() != c.info.element || p.max_shape() != c.info.max_shape {
                return Err(RecordingError::Option {
                    option: "sinks",
                    problem: format!(
                        "channel {} takes {}{:?}, the recording holds {}{:?}",
                        p.channel(),
                        p.element_type(),
                        p.max_shape(),
                        c.info.element,
                        c.info.max_shape
                    ),
                });
            }
        }
        let mut t0 = u64::MAX;
        for c in &self.channels {
            if c.info.frames > 0 {
                t0 = t0.min(c.per_frame(0)?.1.first().copied().unwrap_or(u64::MAX));
            }
        }
        let preloaded = match options.preload {
            Some(limit) => Some(self.preload(limit)?),
            None => None,
        };
        let start = Instant::now();
        // A channel that fails ends the others too, or a looped replay would hide its error.
        let failed = AtomicBool::new(false);
        let failed = &failed;
        let results: Vec<Result<u64, RecordingError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = sinks
                .iter_mut()
                .zip(&self.channels)
                .enumerate()
                .map(|(i, (sink, c))| {
                    let held = preloaded.as_ref().map(|p| p[i].as_slice());
                    scope.spawn(move || {
                        let played = c.play(sink.producer(), options, start, t0, held, failed);
                        if played.is_err() {
                            failed.store(true, Ordering::SeqCst);
                        }
                        played
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(RecordingError::Option {
                            option: "replay thread",
                            problem: "panicked".into(),
                        })
                    })
                })
                .collect()
        });
        let frames = results.into_iter().collect::<Result<_, _>>()?;
        Ok(ReplaySummary { frames })
    }
}

/// One frame read into memory by a preloading replay.
struct HeldFrame {
    timestamp_ns: u64,
    shape: Vec<u64>,
    /// The frame padded to the largest shape; `None` for an empty chunk (zeros).
    bytes: Option<Vec<u8>>,
}

impl Replayer {
    /// Reads every channel's frames into memory, after checking that they fit in `limit`
    /// bytes (padded to each channel's largest shape) before allocating any.
    fn preload(&self, limit: u64) -> Result<Vec<Vec<HeldFrame>>, RecordingError> {
        let total = self.channels.iter().try_fold(0u64, |sum, c| {
            c.info
                .frames
                .checked_mul(c.frame_bytes)
                .and_then(|b| sum.checked_add(b))
        });
        match total {
            Some(t) if t <= limit => {}
            size => {
                return Err(RecordingError::TooLarge {
                    path: self.path.clone(),
                    what: "the preloaded frames",
                    size: size.unwrap_or(u64::MAX),
                    limit,
                });
            }
        }
        self.channels.iter().map(ChannelReader::load).collect()
    }
}

impl ChannelReader {
    /// Every frame of this channel, in memory (see [`Replayer::preload`]).
    fn load(&self) -> Result<Vec<HeldFrame>, RecordingError> {
        let ndim = self.info.max_shape.len();
        let mut held = Vec::with_capacity(usize::try_from(self.info.frames).unwrap_or(0));
        for s in 0..self.info.frames.div_ceil(self.per_shard) {
            let (_, stamps, shapes) = self.per_frame(s)?;
            let (file, path, index) = self.open_shard(s)?;
            let shard = ShardFile {
                file: &file,
                path: &path,
            };
            for (j, (&ts, shape)) in stamps.iter().zip(shapes.chunks_exact(ndim)).enumerate() {
                self.check_shape(s * self.per_shard + j as u64, shape)?;
                let bytes = match index.get(j).copied().flatten() {
                    Some(at) => {
                        let mut frame = vec![0u8; self.frame_bytes as usize];
                        shard.read(at, &mut frame)?;
                        Some(frame)
                    }
                    None => None,
                };
                held.push(HeldFrame {
                    timestamp_ns: ts,
                    shape: shape.to_vec(),
                    bytes,
                });
            }
        }
        Ok(held)
    }

    /// Opens shard `s` of the frames array and reads its (checked) index.
    #[allow(clippy::type_complexity)]
    fn open_shard(&self, s: u64) -> Result<(File, PathBuf, Vec<Option<u64>>), RecordingError> {
        let ndim = self.info.max_shape.len();
        let key = self.frames.chunk_key(&{
            let mut i = vec![0u64; ndim + 1];
            i[0] = s;
            i
        });
        let path = self.frames.storage().key_to_fspath(&key);
        let file = File::open(&path).map_err(io(&path, "open"))?;
        let len = file.metadata().map_err(io(&path, "stat"))?.len();
        let index = shard::read_index(&file, &path, len, self.per_shard, self.frame_bytes)?;
        Ok((file, path, index))
    }

    /// Refuses a frame shape beyond the largest shape.
    fn check_shape(&self, frame_index: u64, shape: &[u64]) -> Result<(), RecordingError> {
        if shape.iter().zip(&self.info.max_shape).any(|(d, m)| d > m) {
            return Err(invalid(
                &self.node.join("shape"),
                "shape",
                format!(
                    "frame {frame_index} has shape {shape:?}, beyond {:?}",
                    self.info.max_shape
                ),
            ));
        }
        Ok(())
    }
    fn open(
        store: &Arc<FilesystemStore>,
        root: &Path,
        name: &str,
        max_frame_bytes: u64,
    ) -> Result<Self, RecordingError> {
        let here = root.join("zarr.json");
        crate::name::ChannelName::new(name)
            .map_err(|e| invalid(&here, "channels", format!("{name:?}: {e}")))?;
        if !super::node_name_allowed(name) {
            return Err(invalid(
                &here,
                "channels",
                format!("{name:?} is not a node name"),
            ));
        }
        let node = root.join(name);
        let group_doc = read_json(&node)?;
        let attrs = attributes(&node, &group_doc, "group")?;
        let gpath = node.join("zarr.json");
        let element = attrs
            .get("element")
            .and_then(Value::as_str)
            .and_then(|e| e.parse::<ElementType>().ok())
            .ok_or_else(|| invalid(&gpath, "element", "not an element type"))?;
        let max_shape = u64_list(attrs.get("max_shape"))
            .filter(|s| (1..=shm::MAX_DIMS).contains(&s.len()) && !s.contains(&0))
            .ok_or_else(|| invalid(&gpath, "max_shape", "not 1 to 4 dimensions of at least 1"))?;
        let frame_bytes = max_shape
            .iter()
            .try_fold(element.size(), |acc, &d| acc.checked_mul(d))
            .unwrap_or(u64::MAX);
        if frame_bytes > max_frame_bytes {
            return Err(RecordingError::TooLarge {
                path: gpath,
                what: "a frame",
                size: frame_bytes,
                limit: max_frame_bytes,
            });
        }
        let policy = attrs
            .get("policy")
            .and_then(Value::as_str)
            .and_then(|p| p.parse::<Policy>().ok())
            .ok_or_else(|| invalid(&gpath, "policy", "not a policy"))?;
        // The channel replay creates holds `slots` frames: bounded like the frame itself.
        let ring = u64::from(policy.slots()).saturating_mul(frame_bytes);
        let ring_limit = max_frame_bytes.saturating_mul(RING_FRAMES_LIMIT);
        if ring > ring_limit {
            return Err(RecordingError::TooLarge {
                path: gpath,
                what: "the channel's slots",
                size: ring,
                limit: ring_limit,
            });
        }
        let flex_size = attrs.get("flex_size").and_then(Value::as_u64).unwrap_or(0);
        if flex_size > 1 << 30 {
            return Err(RecordingError::TooLarge {
                path: gpath,
                what: "flex_size",
                size: flex_size,
                limit: 1 << 30,
            });
        }
        let checksum = attrs
            .get("checksum")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let schema = attrs.get("schema_name").and_then(Value::as_str).map(|n| {
            let v = attrs
                .get("schema_version")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            (n.to_owned(), u32::try_from(v).unwrap_or(0))
        });
        let group = format!("/{name}");
        let ndim = max_shape.len();
        let dtype = super::zarr_dtype(element);
        let (frames, fdoc) = open_array(store, root, &node, &group, "frames", dtype, ndim + 1)?;
        let fpath = node.join("frames").join("zarr.json");
        let fshape = u64_list(fdoc.get("shape")).unwrap_or_default();
        if fshape[1..] != max_shape[..] {
            return Err(invalid(
                &fpath,
                "shape",
                format!("{fshape:?} does not hold frames of {max_shape:?}"),
            ));
        }
        let shard_shape = chunk_shape(&fdoc)
            .ok_or_else(|| invalid(&fpath, "chunk_grid", "not a regular grid"))?;
        if shard_shape.len() != ndim + 1 || shard_shape[1..] != max_shape[..] {
            return Err(invalid(
                &fpath,
                "chunk_grid",
                format!("{shard_shape:?} is not whole frames"),
            ));
        }
        let per_shard = shard_shape[0];
        if !(1..=MAX_FRAMES_PER_SHARD).contains(&per_shard) {
            return Err(invalid(
                &fpath,
                "chunk_grid",
                format!("{per_shard} frames per shard (1 to {MAX_FRAMES_PER_SHARD})"),
            ));
        }
        check_sharding(&fpath, &fdoc, &max_shape)?;
        let (frame_id, idoc) = open_array(store, root, &node, &group, "frame_id", "uint64", 1)?;
        let (timestamp, tdoc) =
            open_array(store, root, &node, &group, "timestamp_ns", "uint64", 1)?;
        let (shape, sdoc) = open_array(store, root, &node, &group, "shape", "uint64", 2)?;
        for (doc, name, want) in [
            (&idoc, "frame_id", vec![per_shard]),
            (&tdoc, "timestamp_ns", vec![per_shard]),
            (&sdoc, "shape", vec![per_shard, ndim as u64]),
        ] {
            let p = node.join(name).join("zarr.json");
            if chunk_shape(doc) != Some(want.clone()) {
                return Err(invalid(
                    &p,
                    "chunk_grid",
                    format!("expected chunks of {want:?}"),
                ));
            }
            if !plain_bytes(doc.get("codecs")) {
                return Err(invalid(&p, "codecs", "expected the bytes codec alone"));
            }
        }
        if u64_list(sdoc.get("shape")).and_then(|s| s.get(1).copied()) != Some(ndim as u64) {
            return Err(invalid(
                &node.join("shape"),
                "shape",
                "not one row of the frame's dimensions per frame",
            ));
        }
        // A recorder killed between two metadata writes may leave arrays one flush apart.
        let frames_n = [&fdoc, &idoc, &tdoc, &sdoc]
            .iter()
            .filter_map(|d| u64_list(d.get("shape")).and_then(|s| s.first().copied()))
            .min()
            .unwrap_or(0);
        let states = state_changes(&gpath, &attrs, frames_n)?;
        Ok(Self {
            info: RecordedChannel {
                name: name.to_owned(),
                element,
                max_shape,
                policy,
                flex_size,
                checksum,
                schema,
                frames: frames_n,
            },
            node,
            frames,
            frame_id,
            timestamp,
            shape,
            per_shard,
            frame_bytes,
            states,
        })
    }

    /// Frame ids, timestamps and shapes of shard `s`.
    fn per_frame(&self, s: u64) -> Result<PerFrame, RecordingError> {
        let from = s * self.per_shard;
        let to = (from + self.per_shard).min(self.info.frames);
        let ndim = self.info.max_shape.len() as u64;
        let frames = zarrs::array::ArraySubset::new_with_start_shape(vec![from], vec![to - from])
            .map_err(zarr(&self.node, "subset"))?;
        let rows =
            zarrs::array::ArraySubset::new_with_start_shape(vec![from, 0], vec![to - from, ndim])
                .map_err(zarr(&self.node, "subset"))?;
        let ids: Vec<u64> = self
            .frame_id
            .retrieve_array_subset(&frames)
            .map_err(zarr(self.node.join("frame_id"), "read"))?;
        let stamps: Vec<u64> = self
            .timestamp
            .retrieve_array_subset(&frames)
            .map_err(zarr(self.node.join("timestamp_ns"), "read"))?;
        let shapes: Vec<u64> = self
            .shape
            .retrieve_array_subset(&rows)
            .map_err(zarr(self.node.join("shape"), "read"))?;
        Ok((ids, stamps, shapes))
    }

    fn play(
        &self,
        producer: &mut Producer<Dynamic>,
        options: &ReplayOptions,
        start: Instant,
        t0: u64,
        held: Option<&[HeldFrame]>,
        failed: &AtomicBool,
    ) -> Result<u64, RecordingError> {
        let stopped = || {
            options.stop.as_ref().is_some_and(StopHandle::is_stopped)
                || failed.load(Ordering::SeqCst)
        };
        let mut published = 0u64;
        let mut pad = Vec::new();
        let ndim = self.info.max_shape.len();
        let shards = self.info.frames.div_ceil(self.per_shard);
        let mut epoch = start;
        loop {
            let mut states = self.states.iter().peekable();
            let mut last_ts = t0;
            // Publishes frame `frame_index`; false once the replay is stopped.
            let mut emit = |frame_index: u64,
                            ts: u64,
                            shape: &[u64],
                            bytes: FrameBytes<'_>|
             -> Result<bool, RecordingError> {
                if stopped() {
                    return Ok(false);
                }
                while let Some((_, state)) = states.next_if(|(at, _)| *at <= frame_index) {
                    producer.write_state(state).map_err(|e| {
                        invalid(&self.node.join("zarr.json"), "state_changes", e.to_string())
                    })?;
                }
                if let Rate::Speed(x) = options.rate {
                    let at =
                        epoch + Duration::from_secs_f64(ts.saturating_sub(t0) as f64 / 1e9 / x);
                    wait_until(at, &stopped);
                }
                last_ts = last_ts.max(ts);
                let keep = options.keep_timestamps.then_some(ts);
                if !self.publish(producer, bytes, shape, keep, &stopped, &mut pad)? {
                    return Ok(false);
                }
                published += 1;
                Ok(true)
            };
            match held {
                Some(frames) => {
                    for (i, f) in frames.iter().enumerate() {
                        let bytes = FrameBytes::Memory(f.bytes.as_deref());
                        if !emit(i as u64, f.timestamp_ns, &f.shape, bytes)? {
                            return Ok(published);
                        }
                    }
                }
                None => {
                    for s in 0..shards {
                        let (_, stamps, shapes) = self.per_frame(s)?;
                        let (file, path, index) = self.open_shard(s)?;
                        let shard = ShardFile {
                            file: &file,
                            path: &path,
                        };
                        for (j, (&ts, shape)) in
                            stamps.iter().zip(shapes.chunks_exact(ndim)).enumerate()
                        {
                            let frame_index = s * self.per_shard + j as u64;
                            self.check_shape(frame_index, shape)?;
                            let bytes = FrameBytes::File(&shard, index.get(j).copied().flatten());
                            if !emit(frame_index, ts, shape, bytes)? {
                                return Ok(published);
                            }
                        }
                    }
                }
            }
            if !options.repeat || stopped() || self.info.frames == 0 {
                return Ok(published);
            }
            // The next round starts one frame period after this one's last frame.
            if let Rate::Speed(x) = options.rate {
                epoch += Duration::from_secs_f64(last_ts.saturating_sub(t0) as f64 / 1e9 / x);
            }
        }
    }

    fn publish(
        &self,
        producer: &mut Producer<Dynamic>,
        bytes: FrameBytes<'_>,
        shape: &[u64],
        timestamp_ns: Option<u64>,
        stopped: &dyn Fn() -> bool,
        pad: &mut Vec<u8>,
    ) -> Result<bool, RecordingError> {
        let channel = producer.channel().to_string();
        let full = shape == self.info.max_shape.as_slice();
        loop {
            let mut slot = match producer.loan_shape(shape) {
                Ok(slot) => slot,
                // The channel's backpressure: wait for the consumers, unless stopped.
                Err(PublishError::Timeout { .. } | PublishError::Full { .. }) => {
                    // Stopped while the consumers held the ring full: not an error.
                    if stopped() {
                        return Ok(false);
                    }
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                Err(source) => return Err(RecordingError::Publish { channel, source }),
            };
            if let Some(ts) = timestamp_ns {
                slot.set_timestamp_ns(ts);
            }
            // The frame padded to the largest shape, when it must be cut to its own shape.
            let padded: Option<&[u8]> = match bytes {
                // An empty chunk is a frame of zeros (the fill value).
                FrameBytes::File(_, None) | FrameBytes::Memory(None) => {
                    slot.fill(0);
                    None
                }
                FrameBytes::File(shard, Some(at)) if full => {
                    shard.read(at, &mut slot)?;
                    None
                }
                FrameBytes::Memory(Some(frame)) if full => {
                    slot.copy_from_slice(frame);
                    None
                }
                FrameBytes::File(shard, Some(at)) => {
                    pad.resize(self.frame_bytes as usize, 0);
                    shard.read(at, pad)?;
                    Some(pad.as_slice())
                }
                FrameBytes::Memory(Some(frame)) => Some(frame),
            };
            if let Some(src) = padded {
                let esize = self.info.element.size() as usize;
                super::for_each_row(shape, &self.info.max_shape, esize, |compact, at, n| {
                    if let (Some(d), Some(s)) =
                        (slot.get_mut(compact..compact + n), src.get(at..at + n))
                    {
                        d.copy_from_slice(s);
                    }
                });
            }
            slot.commit();
            return Ok(true);
        }
    }
}

/// Where a replayed frame's bytes come from.
#[derive(Clone, Copy)]
enum FrameBytes<'a> {
    /// A chunk of an open shard file at this offset (`None`: an empty chunk, zeros).
    File(&'a ShardFile<'a>, Option<u64>),
    /// A preloaded frame padded to the largest shape (`None`: zeros).
    Memory(Option<&'a [u8]>),
}

/// An open shard file.
struct ShardFile<'a> {
    file: &'a File,
    path: &'a Path,
}

impl ShardFile<'_> {
    /// Reads `dst.len()` bytes at `offset` (checked against the file by the index reader)
    /// with one `pread`, straight into `dst` (the loaned slot, for a frame of the largest
    /// shape). Not a mapping of the file: its bytes may change under a reader (another user
    /// may own it), so a slice of it would be undefined behaviour, and atomic loads out of a
    /// mapping measured no faster than the kernel's copy.
    fn read(&self, offset: u64, dst: &mut [u8]) -> Result<(), RecordingError> {
        self.file
            .read_exact_at(dst, offset)
            .map_err(io(self.path, "read"))
    }
}

/// Checks that the frames array's codecs are the recorder's: sharding of one-frame chunks,
/// bytes inside, a bytes + crc32c index at the start.
fn check_sharding(path: &Path, doc: &Value, max_shape: &[u64]) -> Result<(), RecordingError> {
    let bad = |problem: &str| invalid(path, "codecs", problem.to_owned());
    let codecs = doc
        .get("codecs")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("missing"))?;
    let [sharding] = codecs.as_slice() else {
        return Err(bad("expected the sharding codec alone"));
    };
    if sharding.get("name").and_then(Value::as_str) != Some("sharding_indexed") {
        return Err(bad("expected sharding_indexed"));
    }
    let conf = sharding
        .get("configuration")
        .ok_or_else(|| bad("sharding without configuration"))?;
    let mut one = vec![1u64];
    one.extend(max_shape);
    if u64_list(conf.get("chunk_shape")) != Some(one) {
        return Err(bad("a shard's chunks must be one frame each"));
    }
    if !plain_bytes(conf.get("codecs")) {
        return Err(bad(
            "frames must be stored by the bytes codec alone (no compression)",
        ));
    }
    if conf.get("index_location").and_then(Value::as_str) != Some("start") {
        return Err(bad("the shard index must be at the start"));
    }
    let index = conf.get("index_codecs").and_then(Value::as_array);
    let ok = index.is_some_and(|c| {
        c.len() == 2
            && plain_bytes(Some(&Value::Array(vec![c[0].clone()])))
            && c[1].get("name").and_then(Value::as_str) == Some("crc32c")
    });
    if !ok {
        return Err(bad("the shard index must be bytes then crc32c"));
    }
    Ok(())
}

/// The recorded state changes, in order, each before a frame below `frames` (or at the end).
fn state_changes(
    path: &Path,
    attrs: &Map<String, Value>,
    frames: u64,
) -> Result<Vec<(u64, Value)>, RecordingError> {
    let Some(list) = attrs.get("state_changes") else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .ok_or_else(|| invalid(path, "state_changes", "not a list"))?;
    let mut out = Vec::with_capacity(list.len().min(super::MAX_STATE_CHANGES));
    for (i, c) in list.iter().enumerate() {
        let at = c
            .get("frame_index")
            .and_then(Value::as_u64)
            .filter(|&at| at <= frames)
            .ok_or_else(|| {
                invalid(
                    path,
                    "state_changes",
                    format!("entry {i} has no frame_index within the frames"),
                )
            })?;
        if out
            .last()
            .is_some_and(|(prev, _): &(u64, Value)| *prev > at)
        {
            return Err(invalid(path, "state_changes", "not in frame order"));
        }
        out.push((at, c.get("state").cloned().unwrap_or(Value::Null)));
    }
    Ok(out)
}

fn wait_until(at: Instant, stopped: &impl Fn() -> bool) {
    loop {
        let now = Instant::now();
        if now >= at || stopped() {
            return;
        }
        std::thread::sleep((at - now).min(Duration::from_millis(100)));
    }
}
