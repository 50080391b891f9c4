//! `labhub._Run`: a recording or a replay running on a thread of its own, started by
//! [`start_recording`] or [`start_replay`] and wrapped by `labhub.Recording` / `labhub.Replay`.
//!
//! The work runs without the GIL on its own thread; `wait` waits for it in slices, answering
//! signals, and `stop` asks it to end (a recording then flushes and completes its metadata).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use labhub::record::{
    ChannelProgress, Rate, RecordOptions, Recorder, RecordingError, ReplayOptions, Replayer,
    StopHandle,
};
use labhub::shm::Channel;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::errors::{bad_value, guard, raise};
use crate::hub::Hub;
use crate::{Fork, SLICE, interruptible, lock};

/// What a finished run hands back.
enum Outcome {
    Recorded(labhub::record::RecordSummary),
    Replayed(Vec<(String, u64)>),
}

type Work = JoinHandle<Result<Outcome, RecordingError>>;

/// Where a run is: its thread running, being joined by one `wait`, or its result kept for
/// every later `wait`.
enum RunState {
    Running(Work),
    Joining,
    Done(Result<Py<PyDict>, PyErr>),
}

/// What starting a run fails with: the recording's error, or the Hub's while it opened or
/// made the channels.
enum StartError {
    Recording(RecordingError),
    Client(labhub::client::ClientError),
}

impl From<RecordingError> for StartError {
    fn from(e: RecordingError) -> Self {
        Self::Recording(e)
    }
}

impl From<labhub::client::ClientError> for StartError {
    fn from(e: labhub::client::ClientError) -> Self {
        Self::Client(e)
    }
}

impl StartError {
    fn into_py(self) -> PyErr {
        match self {
            Self::Recording(e) => recording_error(e),
            Self::Client(e) => crate::errors::client_error(e),
        }
    }
}

/// A recording or replay in progress (or finished). Use `labhub.Recording` or `labhub.Replay`.
#[pyclass(module = "labhub", frozen, name = "_Run")]
pub struct Run {
    stop: StopHandle,
    progress: Arc<Mutex<Vec<ChannelProgress>>>,
    /// Locked only briefly and never while waiting: `wait` joins with it released.
    state: Mutex<RunState>,
    fork: Fork,
    path: PathBuf,
    run_id: Option<String>,
}

/// A recording error as the typed exception it stands for.
pub fn recording_error(e: RecordingError) -> PyErr {
    let text = crate::errors::chain_text(&e);
    match e {
        RecordingError::Channel { source, .. } => crate::errors::channel_error(source),
        RecordingError::Option {
            option: "recorder thread" | "replay thread",
            ..
        } => raise("InternalError", text, &[]),
        RecordingError::Option { option, .. } => bad_value(option, text),
        RecordingError::Exists { path } => raise(
            "RecordingError",
            text,
            &[("path", path.display().to_string())],
        ),
        _ => raise("RecordingError", text, &[]),
    }
}

fn summary_dict(py: Python<'_>, outcome: Outcome) -> PyResult<Py<PyDict>> {
    let d = PyDict::new(py);
    match outcome {
        Outcome::Recorded(s) => {
            d.set_item("run_id", &s.run_id)?;
            d.set_item("elapsed_s", s.elapsed.as_secs_f64())?;
            let channels = PyList::empty(py);
            for c in &s.channels {
                channels.append(progress_dict(py, c)?)?;
            }
            d.set_item("channels", channels)?;
        }
        Outcome::Replayed(frames) => {
            let channels = PyList::empty(py);
            for (name, n) in frames {
                let c = PyDict::new(py);
                c.set_item("channel", name)?;
                c.set_item("frames", n)?;
                channels.append(c)?;
            }
            d.set_item("channels", channels)?;
        }
    }
    Ok(d.unbind())
}

fn progress_dict<'py>(py: Python<'py>, c: &ChannelProgress) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("channel", &c.channel)?;
    d.set_item("frames", c.frames)?;
    d.set_item("bytes", c.bytes)?;
    d.set_item("lag", c.lag)?;
    d.set_item("losses", c.losses)?;
    Ok(d)
}

#[pymethods]
impl Run {
    /// The recording's directory.
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// The run id stored in the recording.
    #[getter]
    fn run_id(&self) -> Option<String> {
        self.run_id.clone()
    }

    /// Whether the run has ended (stopped, its limit reached, or failed).
    #[getter]
    fn done(&self) -> bool {
        match &*lock(&self.state) {
            RunState::Running(w) => w.is_finished(),
            RunState::Joining | RunState::Done(_) => true,
        }
    }

    /// Each channel's progress so far: dicts of `channel`, `frames`, `bytes`, `lag`,
    /// `losses` (a recording; a replay reports none).
    fn progress<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for c in lock(&self.progress).iter() {
            list.append(progress_dict(py, c)?)?;
        }
        Ok(list)
    }

    /// Asks the run to end; a recording flushes and completes its metadata. Does not wait.
    fn stop(&self) {
        self.stop.stop();
    }

    /// Waits up to `timeout` seconds (`None`: until it ends) and returns the summary, or
    /// `None` if it is still running. Raises the run's error if it failed.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Py<PyDict>>> {
        guard(|| {
            self.fork.check()?;
            let deadline = timeout
                .map(|t| {
                    if t >= 0.0 && t.is_finite() && t < 1e9 {
                        Ok(Instant::now() + Duration::from_secs_f64(t))
                    } else {
                        Err(bad_value(
                            "timeout",
                            format!("{t} is not a number of seconds ≥ 0"),
                        ))
                    }
                })
                .transpose()?;
            loop {
                let work = {
                    let mut state = lock(&self.state);
                    match &*state {
                        RunState::Done(Ok(d)) => return Ok(Some(d.clone_ref(py))),
                        RunState::Done(Err(e)) => return Err(e.clone_ref(py)),
                        RunState::Running(w) if w.is_finished() => {
                            match std::mem::replace(&mut *state, RunState::Joining) {
                                RunState::Running(w) => Some(w),
                                _ => None,
                            }
                        }
                        // Still running, or another thread's `wait` is joining it.
                        RunState::Running(_) | RunState::Joining => None,
                    }
                };
                if let Some(work) = work {
                    let result = match py.detach(|| work.join()) {
                        Ok(Ok(outcome)) => summary_dict(py, outcome),
                        Ok(Err(e)) => Err(recording_error(e)),
                        Err(_) => Err(raise("InternalError", "the run's thread panicked", &[])),
                    };
                    let kept = match &result {
                        Ok(d) => Ok(d.clone_ref(py)),
                        Err(e) => Err(e.clone_ref(py)),
                    };
                    *lock(&self.state) = RunState::Done(kept);
                    return result.map(Some);
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(None);
                }
                let slice = deadline.map_or(SLICE, |d| {
                    d.saturating_duration_since(Instant::now()).min(SLICE)
                });
                py.detach(|| std::thread::sleep(slice));
                py.check_signals()?;
            }
        })
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        // A run nobody holds stops (a recording still completes its files on its thread).
        self.stop.stop();
    }
}

/// Starts recording `channels` into the new directory `path` (see `labhub.record`).
#[pyfunction]
#[pyo3(signature = (hub, channels, path, attributes_json, flush_interval, shard_size, frames=None, seconds=None))]
#[allow(clippy::too_many_arguments)]
pub fn start_recording(
    py: Python<'_>,
    hub: Option<&Bound<'_, Hub>>,
    channels: Vec<String>,
    path: PathBuf,
    attributes_json: &str,
    flush_interval: f64,
    shard_size: u64,
    frames: Option<u64>,
    seconds: Option<f64>,
) -> PyResult<Run> {
    guard(|| {
        let attributes = match serde_json::from_str(attributes_json) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => return Err(bad_value("attributes", "not a JSON object")),
        };
        let options = RecordOptions {
            flush_interval: Duration::from_secs_f64(flush_interval),
            shard_bytes: shard_size,
            max_frames: frames,
            duration: seconds.map(Duration::from_secs_f64),
            attributes,
        };
        let client = hub.map(|h| h.get().client()).transpose()?;
        let existed = std::fs::symlink_metadata(&path).is_ok();
        let target = path.clone();
        // Opening through a Hub waits on the broker: interruptible, off the GIL.
        let recorder = interruptible(py, move || -> Result<Recorder, StartError> {
            let mut recorder = Recorder::create(&target, options)?;
            for name in &channels {
                match &client {
                    Some(hub) => {
                        let consumer = hub.channel(name).open()?;
                        recorder.add(consumer)?;
                    }
                    None => {
                        let consumer = Channel::new(name).open().map_err(|source| {
                            RecordingError::Channel {
                                channel: name.clone(),
                                source,
                            }
                        })?;
                        recorder.add(consumer)?;
                    }
                }
            }
            Ok(recorder)
        })?
        .map_err(|e| {
            // A half-made recording of a failed start is removed (nothing was recorded in it),
            // but never a path that was there before: `Exists` names one.
            if !matches!(e, StartError::Recording(RecordingError::Exists { .. })) && !existed {
                let _ = std::fs::remove_dir_all(&path);
            }
            e.into_py()
        })?;
        let run_id = recorder.run_id().to_owned();
        let stop = recorder.stop_handle();
        let progress = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&progress);
        let work = std::thread::Builder::new()
            .name("labhub-record".into())
            .spawn(move || {
                recorder
                    .run(|p| *lock(&seen) = p.to_vec())
                    .map(Outcome::Recorded)
            })
            .map_err(|e| raise("Error", format!("starting a thread: {e}"), &[]))?;
        Ok(Run {
            stop,
            progress,
            state: Mutex::new(RunState::Running(work)),
            fork: Fork::now(),
            path,
            run_id: Some(run_id),
        })
    })
}

/// Starts replaying recording `path` into live channels (see `labhub.replay`).
#[pyfunction]
#[pyo3(signature = (hub, path, rename, rate, repeat, keep_timestamps, max_frame_size, preload=None))]
#[allow(clippy::too_many_arguments)]
pub fn start_replay(
    py: Python<'_>,
    hub: Option<&Bound<'_, Hub>>,
    path: PathBuf,
    rename: HashMap<String, String>,
    rate: &str,
    repeat: bool,
    keep_timestamps: bool,
    max_frame_size: u64,
    preload: Option<u64>,
) -> PyResult<Run> {
    guard(|| {
        let rate: Rate = rate.parse().map_err(|e| bad_value("rate", e))?;
        let client = hub.map(|h| h.get().client()).transpose()?;
        let replay = Replayer::open_with_limit(&path, max_frame_size).map_err(recording_error)?;
        let recorded: Vec<String> = replay.channels().into_iter().map(|c| c.name).collect();
        for from in rename.keys() {
            if !recorded.contains(from) {
                return Err(bad_value(
                    "rename",
                    format!("the recording has no channel {from:?} (it has {recorded:?})"),
                ));
            }
        }
        let names: Vec<String> = recorded
            .iter()
            .map(|n| rename.get(n).cloned().unwrap_or_else(|| n.clone()))
            .collect();
        let run_id = replay.run_id().map(str::to_owned);
        let stop = StopHandle::new();
        let options = ReplayOptions {
            rate,
            repeat,
            keep_timestamps,
            stop: Some(stop.clone()),
            preload,
        };
        let publish = |e: labhub::shm::ChannelError, name: &str| RecordingError::Channel {
            channel: name.to_owned(),
            source: e,
        };
        // The channels are made before this returns, so a consumer may open them at once.
        let replay = Arc::new(replay);
        let work: Work = match client {
            Some(hub) => {
                let r = Arc::clone(&replay);
                let sinks = interruptible(py, move || {
                    names
                        .iter()
                        .enumerate()
                        .map(|(i, n)| r.configure(i, hub.channel(n)).create())
                        .collect::<Result<Vec<_>, _>>()
                        .map(|s| (s, names))
                })?
                .map_err(crate::errors::client_error)?;
                spawn_replay(replay, sinks, options)?
            }
            None => {
                let sinks = names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| {
                        replay
                            .configure(i, Channel::new(n))
                            .create()
                            .map_err(|e| publish(e, n))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(recording_error)?;
                spawn_replay(replay, (sinks, names), options)?
            }
        };
        Ok(Run {
            stop,
            progress: Arc::new(Mutex::new(Vec::new())),
            state: Mutex::new(RunState::Running(work)),
            fork: Fork::now(),
            path,
            run_id,
        })
    })
}

fn spawn_replay<S: labhub::record::Sink + 'static>(
    replay: Arc<Replayer>,
    (sinks, names): (Vec<S>, Vec<String>),
    options: ReplayOptions,
) -> PyResult<Work> {
    std::thread::Builder::new()
        .name("labhub-replay".into())
        .spawn(move || {
            replay
                .play(sinks, &options)
                .map(|s| Outcome::Replayed(names.into_iter().zip(s.frames).collect()))
        })
        .map_err(|e| raise("Error", format!("starting a thread: {e}"), &[]))
}
