//! `labhub.Consumer` and `labhub.Frame`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use labhub::client::ConsumeError;
use labhub::shm::{ElementType, ReadError};
use numpy::PyArrayDescr;
use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::cells::{AnyConsumer, FrameCell, NextError};
use crate::errors::{consume_error, guard, raise, read_error, state_error};
use crate::{Fork, SLICE, descr_of, lock, notice_dict, stats_dict};

/// The frame a consumer hands out now, as its Python object sees it.
struct Current {
    serial: u64,
    state: Arc<FrameState>,
}

/// What a frame object and its consumer share.
struct FrameState {
    /// numpy views of the frame (their base objects) alive now.
    exports: AtomicUsize,
    /// Released (its slot given back), or to be released when the last view goes.
    released: AtomicBool,
    release_requested: AtomicBool,
}

/// What a consumer's objects share.
pub struct ConsumerCore {
    cell: Mutex<Option<FrameCell>>,
    current: Mutex<Option<Current>>,
    fork: Fork,
    pub name: String,
    pub element: ElementType,
    pub max_shape: Vec<u64>,
    pub policy: String,
    pub lossless: bool,
    serials: std::sync::atomic::AtomicU64,
    /// Closed while views of its frame were alive: the consumer goes with the last of them.
    closing: AtomicBool,
}

impl Drop for ConsumerCore {
    fn drop(&mut self) {
        let cell = self
            .cell
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(cell) = cell
            && self.fork.forked()
        {
            cell.leak();
        }
    }
}

fn closed(name: &str) -> PyErr {
    raise(
        "ClosedError",
        format!("the consumer of channel {name:?} is closed"),
        &[("channel", name.to_owned())],
    )
}

/// Facts of a frame just read.
struct Read {
    frame_id: u64,
    origin_id: u64,
    timestamp_ns: u64,
    shape: Vec<u64>,
    /// Held in place: the address of its bytes; else a validated copy.
    held: Option<(usize, usize)>,
    copy: Option<Vec<u8>>,
}

enum Step {
    Got(Read),
    /// Nothing within the slice.
    Waiting,
    /// The frame was overwritten while copied (lossy): go on with the next.
    Lost,
}

impl ConsumerCore {
    pub fn new(consumer: AnyConsumer) -> Arc<Self> {
        let mut cell = FrameCell::new(consumer);
        let shm = cell.shm();
        let (name, element, max_shape, policy, lossless) = (
            shm.channel().to_string(),
            shm.element_type(),
            shm.max_shape().to_vec(),
            shm.policy()
                .map_or_else(|| "unknown".to_owned(), |p| p.to_string()),
            shm.is_lossless(),
        );
        Arc::new(Self {
            cell: Mutex::new(Some(cell)),
            current: Mutex::new(None),
            fork: Fork::now(),
            name,
            element,
            max_shape,
            policy,
            lossless,
            serials: std::sync::atomic::AtomicU64::new(1),
            closing: AtomicBool::new(false),
        })
    }

    fn with_cell<R: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut FrameCell) -> PyResult<R> + Send,
    ) -> PyResult<R> {
        self.fork.check()?;
        if self.closing.load(Ordering::Acquire) {
            return Err(closed(&self.name));
        }
        py.detach(|| {
            let mut cell = lock(&self.cell);
            match cell.as_mut() {
                Some(cell) => f(cell),
                None => Err(closed(&self.name)),
            }
        })
    }

    /// Releases the current frame before the consumer reads on: refused (`FramesHeld`) while
    /// views of it exist.
    fn release_current(&self, py: Python<'_>) -> PyResult<()> {
        if self.closing.load(Ordering::Acquire) {
            return Err(closed(&self.name));
        }
        let mut current = lock(&self.current);
        if let Some(cur) = current.as_ref()
            && !cur.state.released.load(Ordering::Acquire)
        {
            let views = cur.state.exports.load(Ordering::Acquire);
            if views > 0 {
                return Err(raise(
                    "FramesHeld",
                    format!(
                        "channel {:?}: the current frame still has {views} numpy view(s), which pin its slot; a consumer holds one frame at a time, so delete the views (`del arr`) or keep a copy (`frame.array.copy()`) before reading the next frame",
                        self.name
                    ),
                    &[("channel", self.name.clone())],
                ));
            }
            cur.state.released.store(true, Ordering::Release);
        }
        *current = None;
        drop(current);
        self.with_cell(py, |cell| {
            cell.release();
            Ok(())
        })
    }

    /// Releases frame `serial` if it is still the current one.
    fn release_frame(&self, serial: u64, state: &FrameState) {
        if state.released.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut current = lock(&self.current);
        if current.as_ref().is_some_and(|c| c.serial == serial) {
            *current = None;
            drop(current);
            let mut cell = lock(&self.cell);
            if let Some(c) = cell.as_mut() {
                c.release();
            }
            if self.closing.load(Ordering::Acquire) {
                drop(cell.take());
            }
        }
    }

    /// One wait of at most `slice` for the next frame (or the newest one, `latest`).
    fn step(cell: &mut FrameCell, slice: Duration, latest: bool) -> Result<Step, PyErr> {
        let got = if latest {
            match cell.latest() {
                Ok(true) => Ok(()),
                Ok(false) => return Ok(Step::Waiting),
                Err(e) => Err(e),
            }
        } else {
            cell.next(slice)
        };
        match got {
            Ok(()) => {}
            Err(NextError::Read(ReadError::Timeout))
            | Err(NextError::Consume(ConsumeError::Timeout { .. })) => return Ok(Step::Waiting),
            Err(NextError::Read(e)) => return Err(read_error(e)),
            Err(NextError::Consume(e)) => return Err(consume_error(e)),
        }
        let frame = cell.frame().expect("just read");
        let mut read = Read {
            frame_id: frame.frame_id(),
            origin_id: frame.origin_id().unwrap_or_else(|| frame.frame_id()),
            timestamp_ns: frame.timestamp_ns(),
            shape: frame.shape().to_vec(),
            held: frame.held().map(|b| (b.as_ptr() as usize, b.len())),
            copy: None,
        };
        if read.held.is_none() {
            match frame.to_vec() {
                Ok(bytes) => read.copy = Some(bytes),
                Err(ReadError::Overwritten { .. }) => {
                    cell.release();
                    return Ok(Step::Lost);
                }
                Err(e) => {
                    cell.release();
                    return Err(read_error(e));
                }
            }
            cell.release();
        }
        Ok(Step::Got(read))
    }

    /// Reads the next frame, waiting up to `timeout` (`None`: forever) in slices, checking for
    /// signals between them.
    fn read(&self, py: Python<'_>, timeout: Option<f64>, latest: bool) -> PyResult<Option<Read>> {
        let deadline = match timeout {
            Some(t) if !(t >= 0.0 && t.is_finite()) => {
                return Err(crate::errors::bad_value(
                    "timeout",
                    format!("{t} is not a number of seconds ≥ 0"),
                ));
            }
            Some(t) => Some(Instant::now() + Duration::from_secs_f64(t.min(1e9))),
            None => None,
        };
        self.release_current(py)?;
        loop {
            let slice = deadline.map_or(SLICE, |d| {
                d.saturating_duration_since(Instant::now()).min(SLICE)
            });
            match self.with_cell(py, |cell| Self::step(cell, slice, latest))? {
                Step::Got(read) => return Ok(Some(read)),
                Step::Lost => continue,
                Step::Waiting if latest => return Ok(None),
                Step::Waiting => {}
            }
            py.check_signals()?;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(raise(
                    "TimeoutError",
                    format!(
                        "no frame from channel {:?} within {}s",
                        self.name,
                        timeout.unwrap_or_default()
                    ),
                    &[("channel", self.name.clone())],
                ));
            }
        }
    }
}

/// A consumer of a shared-memory channel. Iterate it (`for frame in consumer:`) or call
/// `next(timeout)`; each `Frame` shows the frame in place (lossless rings) or as a validated
/// copy (lossy policies). Made by `Hub.open_consumer` or `labhub.shm.open_consumer`.
#[pyclass(module = "labhub", frozen)]
pub struct Consumer {
    core: Arc<ConsumerCore>,
    descr: Py<PyArrayDescr>,
}

impl Consumer {
    pub fn new(py: Python<'_>, core: Arc<ConsumerCore>) -> PyResult<Self> {
        let descr = descr_of(py, core.element)?.unbind();
        Ok(Self { core, descr })
    }

    fn frame(&self, py: Python<'_>, read: Read) -> PyResult<Frame> {
        let state = Arc::new(FrameState {
            exports: AtomicUsize::new(0),
            released: AtomicBool::new(read.held.is_none()),
            release_requested: AtomicBool::new(false),
        });
        let serial = self.core.serials.fetch_add(1, Ordering::Relaxed);
        let copy = match read.copy {
            Some(bytes) => {
                let flat = numpy::PyArray1::from_vec(py, bytes);
                let array = flat
                    .call_method1("view", (self.descr.bind(py),))?
                    .call_method1("reshape", (PyTuple::new(py, &read.shape)?,))?;
                array.getattr("flags")?.setattr("writeable", false)?;
                Some(array.unbind())
            }
            None => {
                *lock(&self.core.current) = Some(Current {
                    serial,
                    state: Arc::clone(&state),
                });
                None
            }
        };
        Ok(Frame {
            core: Arc::clone(&self.core),
            descr: self.descr.clone_ref(py),
            serial,
            state,
            frame_id: read.frame_id,
            origin_id: read.origin_id,
            timestamp_ns: read.timestamp_ns,
            shape: read.shape,
            held: read.held,
            copy,
        })
    }
}

#[pymethods]
impl Consumer {
    /// Waits up to `timeout` seconds (`None`: forever) for the next frame and returns it.
    /// Waits with the GIL released and answers Ctrl-C. Releases the previous frame first:
    /// `labhub.FramesHeld` (a `BufferError`) if numpy views of it still exist.
    #[pyo3(signature = (timeout=None))]
    fn next(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Frame> {
        guard(|| {
            let read = self
                .core
                .read(py, timeout, false)?
                .expect("waits for a frame");
            self.frame(py, read)
        })
    }

    /// The newest frame in the channel, or `None` if there is none (frames between are
    /// skipped); `next()` continues after it.
    fn latest(&self, py: Python<'_>) -> PyResult<Option<Frame>> {
        guard(|| match self.core.read(py, Some(0.0), true)? {
            Some(read) => self.frame(py, read).map(Some),
            None => Ok(None),
        })
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Frame> {
        match self.next(py, None) {
            // A closed consumer ends the iteration.
            Err(e) if crate::errors::is(py, &e, "ClosedError") => Err(PyStopIteration::new_err(())),
            other => other,
        }
    }

    /// The flexible-zone state the producer wrote last, as `(version, value)` (the value as
    /// `json.loads` gives it: a dict, say), or `None` before the producer wrote any. Never a
    /// half-written state.
    fn read_state<'py>(&self, py: Python<'py>) -> PyResult<Option<(u64, Bound<'py, PyAny>)>> {
        guard(|| {
            let state = self.core.with_cell(py, |cell| {
                let state = cell
                    .shm()
                    .read_state::<serde_json::Value>()
                    .map_err(state_error)?;
                Ok(state.map(|(v, value)| (v, value.to_string())))
            })?;
            state
                .map(|(v, json)| Ok((v, py.import("json")?.call_method1("loads", (json,))?)))
                .transpose()
        })
    }

    /// Counters of the channel (see `Producer.stats`), and this consumer's `missed`.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        guard(|| {
            let (stats, missed) = self
                .core
                .with_cell(py, |cell| Ok((cell.shm().stats(), cell.shm().missed())))?;
            let dict = stats_dict(py, &stats)?;
            dict.set_item("missed", missed)?;
            Ok(dict)
        })
    }

    /// Whether a live producer is attached now.
    #[getter]
    fn producer_alive(&self, py: Python<'_>) -> PyResult<bool> {
        guard(|| {
            self.core
                .with_cell(py, |cell| Ok(cell.shm().producer_alive()))
        })
    }

    /// The next notice about this channel (`channel_down`, `channel_up`, …) as a dict, or
    /// `None`; only for consumers made through a Hub. Releases the current frame, like `next`.
    fn notice<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        guard(|| {
            self.core.release_current(py)?;
            let notice = self.core.with_cell(py, |cell| {
                Ok(match cell.consumer() {
                    Some(AnyConsumer::Hub(c)) => c.try_notice(),
                    _ => None,
                })
            })?;
            notice.map(|n| notice_dict(py, &n)).transpose()
        })
    }

    /// The channel name.
    #[getter]
    fn name(&self) -> &str {
        &self.core.name
    }

    /// The numpy dtype of every frame.
    #[getter]
    fn dtype(&self, py: Python<'_>) -> Py<PyArrayDescr> {
        self.descr.clone_ref(py)
    }

    /// The channel's largest frame shape.
    #[getter]
    fn shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.core.max_shape)
    }

    /// The channel's policy.
    #[getter]
    fn policy(&self) -> &str {
        &self.core.policy
    }

    /// Whether frames are shown in place (a lossless ring) rather than as validated copies.
    #[getter]
    fn lossless(&self) -> bool {
        self.core.lossless
    }

    /// Detaches from the channel; later calls raise `labhub.ClosedError`. If views of the
    /// current frame are still alive, the consumer detaches when the last of them is gone.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        guard(|| {
            self.core.fork.check()?;
            if self.core.closing.swap(true, Ordering::AcqRel) {
                return Ok(());
            }
            let pinned = lock(&self.core.current).as_ref().is_some_and(|c| {
                c.state.release_requested.store(true, Ordering::Release);
                c.state.exports.load(Ordering::Acquire) > 0
            });
            if !pinned {
                let cell = py.detach(|| {
                    *lock(&self.core.current) = None;
                    lock(&self.core.cell).take()
                });
                py.detach(|| drop(cell));
            }
            Ok(())
        })
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "<labhub.Consumer {:?} {} {:?} {}>",
            self.core.name, self.core.element, self.core.max_shape, self.core.policy
        )
    }
}

/// One frame: metadata (`frame_id`, `timestamp_ns`, `shape`, `dtype`) and `array`, a
/// read-only numpy view of the frame in place (lossless rings) or a validated copy (lossy
/// policies). Use it in a with-block, or call `release()`; a frame whose views are alive
/// stays pinned (its slot held) until the last view is gone.
#[pyclass(module = "labhub", frozen)]
pub struct Frame {
    core: Arc<ConsumerCore>,
    descr: Py<PyArrayDescr>,
    serial: u64,
    state: Arc<FrameState>,
    frame_id: u64,
    origin_id: u64,
    timestamp_ns: u64,
    shape: Vec<u64>,
    held: Option<(usize, usize)>,
    copy: Option<Py<PyAny>>,
}

fn unpin_frame(owner: &Bound<'_, PyAny>) {
    let Ok(frame) = owner.cast::<Frame>() else {
        return;
    };
    let frame = frame.get();
    if frame.state.exports.fetch_sub(1, Ordering::AcqRel) == 1
        && frame.state.release_requested.load(Ordering::Acquire)
    {
        frame.core.release_frame(frame.serial, &frame.state);
    }
}

impl Frame {
    fn released_error(&self) -> PyErr {
        raise(
            "ReleasedError",
            format!(
                "frame {} of channel {:?} was released",
                self.frame_id, self.core.name
            ),
            &[],
        )
    }

    fn check_valid(&self) -> bool {
        if self.held.is_none() {
            return true;
        }
        if self.state.released.load(Ordering::Acquire) {
            return false;
        }
        let cell = lock(&self.core.cell);
        let current = lock(&self.core.current);
        if current.as_ref().is_none_or(|c| c.serial != self.serial) {
            return false;
        }
        cell.as_ref()
            .and_then(FrameCell::frame)
            .is_some_and(|f| f.read(|_| ()).is_ok())
    }
}

#[pymethods]
impl Frame {
    /// The frame as a numpy array: read-only, dtype and shape of the frame. In place (no copy)
    /// under lossless rings: the view pins the frame's slot until it is gone. A validated copy
    /// under lossy policies.
    #[getter]
    fn array<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        guard(|| {
            let py = slf.py();
            let this = slf.get();
            if let Some(copy) = &this.copy {
                return Ok(copy.bind(py).clone());
            }
            let (data, _) = this.held.expect("a frame without a copy is held");
            this.state.exports.fetch_add(1, Ordering::AcqRel);
            if this.state.released.load(Ordering::Acquire) {
                this.state.exports.fetch_sub(1, Ordering::AcqRel);
                return Err(this.released_error());
            }
            // SAFETY: the frame is held (its consumer's position covers it, so the producer does
            // not write its slot) and not released: it stays held while a view exists (release
            // waits for the last one, reading on is refused), and its consumer (and mapping)
            // lives as long as this object, which the view's base keeps alive. The view is
            // read-only, and numpy refuses to make it writable (its base has no writable buffer).
            let made = unsafe {
                crate::array::view(
                    py,
                    this.descr.bind(py),
                    &this.shape,
                    data as *mut u8,
                    false,
                    slf.clone().into_any(),
                    unpin_frame,
                )
            };
            if made.is_err() {
                this.state.exports.fetch_sub(1, Ordering::AcqRel);
            }
            made
        })
    }

    /// A writable copy of the frame, validated: `labhub.Overwritten` if the frame did not stay
    /// whole while it was copied.
    fn copy<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        guard(|| {
            let py = slf.py();
            let copied = Self::array(slf)?.call_method0("copy")?;
            if !slf.get().check_valid() {
                return Err(raise(
                    "Overwritten",
                    format!("frame {} changed while it was copied", slf.get().frame_id),
                    &[("frame_id", slf.get().frame_id.to_string())],
                ));
            }
            let _ = py;
            Ok(copied)
        })
    }

    /// Whether what `array` shows is still exactly this frame: true for a validated copy; for
    /// a frame in place, true while it is held and the producer has not rewritten its slot
    /// (which happens only if this consumer was evicted).
    fn valid(&self, py: Python<'_>) -> PyResult<bool> {
        guard(|| Ok(py.detach(|| self.check_valid())))
    }

    /// Releases the frame's slot to the producer. With views still alive, the slot stays
    /// pinned until the last one is gone.
    fn release(&self) -> PyResult<()> {
        guard(|| {
            self.state.release_requested.store(true, Ordering::Release);
            if self.state.exports.load(Ordering::Acquire) == 0 {
                self.core.release_frame(self.serial, &self.state);
            }
            Ok(())
        })
    }

    /// The frame id (0, 1, … in publish order; continues across producer restarts).
    #[getter]
    fn frame_id(&self) -> u64 {
        self.frame_id
    }

    /// The frame's id in the channel it came from: for a frame a bridge brought from another
    /// hub, the source channel's frame id; otherwise `frame_id`.
    #[getter]
    fn origin_id(&self) -> u64 {
        self.origin_id
    }

    /// The producer's timestamp in ns (CLOCK_REALTIME at commit unless it set one).
    #[getter]
    fn timestamp_ns(&self) -> u64 {
        self.timestamp_ns
    }

    /// The frame's shape.
    #[getter]
    fn shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.shape)
    }

    /// The frame's numpy dtype.
    #[getter]
    fn dtype(&self, py: Python<'_>) -> Py<PyArrayDescr> {
        self.descr.clone_ref(py)
    }

    /// Whether the frame is shown in place (held) rather than as a copy.
    #[getter]
    fn held(&self) -> bool {
        self.held.is_some()
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.release()?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "<labhub.Frame {} of {:?} {:?} {}>",
            self.frame_id,
            self.core.name,
            self.shape,
            if self.held.is_some() { "held" } else { "copy" }
        )
    }
}

impl Drop for Frame {
    fn drop(&mut self) {
        if self.held.is_some() && !self.core.fork.forked() {
            self.core.release_frame(self.serial, &self.state);
        }
    }
}
