//! `labhub.Producer` and `labhub.Loan`.

use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use labhub::shm::{ElementType, PublishError};
use numpy::{PyArrayDescr, PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::cells::LoanCell;
use crate::errors::{bad_type, bad_value, guard, publish_error, raise, state_error};
use crate::{Fork, descr_of, lock, stats_dict};

/// What a producer's objects share: the cell and the channel's fixed facts.
pub struct ProducerCore {
    cell: Mutex<Option<LoanCell>>,
    fork: Fork,
    pub name: String,
    pub element: ElementType,
    pub max_shape: Vec<u64>,
    pub policy: String,
    /// The KeyboardInterrupt (or other error) a signal handler raised while a loan waited.
    interrupted: Arc<Mutex<Option<PyErr>>>,
    /// Closed while an abandoned loan still had views: the producer goes with the last one.
    closing: std::sync::atomic::AtomicBool,
}

impl Drop for ProducerCore {
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
        format!("the producer of channel {name:?} is closed"),
        &[("channel", name.to_owned())],
    )
}

fn loan_open(name: &str) -> PyErr {
    raise(
        "LoanOpen",
        format!(
            "a loan of channel {name:?} is still open: commit or abandon it (end its with-block) first"
        ),
        &[("channel", name.to_owned())],
    )
}

impl ProducerCore {
    pub fn new(cell: LoanCell) -> Arc<Self> {
        let mut cell = cell;
        let interrupted = Arc::new(Mutex::new(None::<PyErr>));
        let stash = Arc::clone(&interrupted);
        let shm = cell.producer().expect("no loan yet").shm();
        // A loan blocked on a full ring asks this after every wake-up (at least every 20 ms):
        // a pending signal (Ctrl-C) ends the wait with its exception.
        shm.set_interrupt(Some(Box::new(move || {
            Python::attach(|py| match py.check_signals() {
                Ok(()) => false,
                Err(e) => {
                    *stash.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    true
                }
            })
        })));
        let (name, element, max_shape, policy) = (
            shm.channel().to_string(),
            shm.element_type(),
            shm.max_shape().to_vec(),
            shm.policy().to_string(),
        );
        Arc::new(Self {
            cell: Mutex::new(Some(cell)),
            fork: Fork::now(),
            name,
            element,
            max_shape,
            policy,
            interrupted,
            closing: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Runs `f` on the cell (GIL released while waiting for the lock and while `f` runs).
    fn with_cell<R: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut LoanCell) -> PyResult<R> + Send,
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

    /// Abandons the open loan; returns the producer if it was closed meanwhile (to be dropped
    /// by the caller, outside the lock).
    fn end_loan(&self) -> Option<LoanCell> {
        let mut cell = lock(&self.cell);
        if let Some(c) = cell.as_mut() {
            c.abandon();
        }
        if self.closing.load(Ordering::Acquire) {
            cell.take()
        } else {
            None
        }
    }

    fn publish_err(&self, e: PublishError) -> PyErr {
        if matches!(e, PublishError::Interrupted { .. })
            && let Some(err) = lock(&self.interrupted).take()
        {
            return err;
        }
        publish_error(e)
    }
}

/// The producer of a shared-memory channel: `loan()` a slot and fill it in place, or
/// `publish(array)` a copy. Made by `Hub.create_producer` or `labhub.shm.create_producer`.
#[pyclass(module = "labhub", frozen)]
pub struct Producer {
    core: Arc<ProducerCore>,
    descr: Py<PyArrayDescr>,
}

impl Producer {
    pub fn new(py: Python<'_>, core: Arc<ProducerCore>) -> PyResult<Self> {
        let descr = descr_of(py, core.element)?.unbind();
        Ok(Self { core, descr })
    }
}

fn shape_arg(shape: Option<Vec<u64>>, max: &[u64]) -> PyResult<Option<Vec<u64>>> {
    let Some(shape) = shape else { return Ok(None) };
    if shape.len() != max.len() || shape.iter().zip(max).any(|(d, m)| d > m) {
        return Err(bad_value(
            "shape",
            format!("{shape:?} is not within the channel's largest shape {max:?}"),
        ));
    }
    Ok(Some(shape))
}

#[pymethods]
impl Producer {
    /// Loans the next slot for a frame of `shape` (the channel's largest shape if omitted):
    /// a `Loan`, whose `array` is a writable numpy view of exactly the frame. Commit it with
    /// `commit()` or a with-block that ends without an exception; an exception abandons it.
    /// On a full lossless ring it waits (policy `ring:N:block`, GIL released, Ctrl-C
    /// answered), or raises `labhub.ChannelFull` (`ring:N:fail`).
    #[pyo3(signature = (shape=None))]
    fn loan(slf: &Bound<'_, Self>, shape: Option<Vec<u64>>) -> PyResult<Loan> {
        guard(|| {
            let py = slf.py();
            let this = slf.get();
            let core = &this.core;
            let shape = shape_arg(shape, &core.max_shape)?;
            let started = core.with_cell(py, |cell| {
                if cell.is_loaned() {
                    return Err(loan_open(&core.name));
                }
                cell.begin(shape.as_deref())
                    .map_err(|e| core.publish_err(e))?;
                let slot = cell.loan().expect("just begun");
                let (frame_id, shape) = (slot.frame_id(), slot.shape().to_vec());
                let data = slot.as_mut_ptr() as usize;
                Ok((frame_id, shape, data, slot.len()))
            })?;
            let (frame_id, shape, data, len) = started;
            Ok(Loan {
                core: Arc::clone(core),
                descr: this.descr.clone_ref(py),
                frame_id,
                shape,
                data,
                len,
                exports: AtomicUsize::new(0),
                state: AtomicU8::new(OPEN),
                timestamp_ns: AtomicU64::new(0),
            })
        })
    }

    /// Publishes a copy of `array` (of the channel's dtype, a shape within its largest
    /// shape) as one frame; returns its frame id.
    fn publish(slf: &Bound<'_, Self>, array: &Bound<'_, PyAny>) -> PyResult<u64> {
        guard(|| {
            let py = slf.py();
            let this = slf.get();
            let core = &this.core;
            let array = array
                .cast::<PyUntypedArray>()
                .map_err(|_| bad_type("array", "a numpy array is needed"))?;
            if !array.dtype().is_equiv_to(this.descr.bind(py)) {
                return Err(bad_type(
                    "array",
                    format!(
                        "dtype {} differs from the channel's {}",
                        array.dtype(),
                        this.descr.bind(py)
                    ),
                ));
            }
            let contiguous = if array.is_c_contiguous() {
                array.clone()
            } else {
                py.import("numpy")?
                    .call_method1("ascontiguousarray", (array,))?
                    .cast_into::<PyUntypedArray>()?
            };
            let shape: Vec<u64> = contiguous.shape().iter().map(|&d| d as u64).collect();
            let shape = shape_arg(Some(shape), &core.max_shape)?.expect("given");
            let bytes = contiguous.len() * core.element.size() as usize;
            // SAFETY: a C-contiguous ndarray's data pointer covers `len × itemsize` bytes; the
            // array is kept alive (and not resized: that needs no other reference) until the
            // copy below is done.
            let src = unsafe { (*contiguous.as_array_ptr()).fields.data } as usize;
            core.with_cell(py, |cell| {
                if cell.is_loaned() {
                    return Err(loan_open(&core.name));
                }
                cell.begin(Some(&shape)).map_err(|e| core.publish_err(e))?;
                let slot = cell.loan().expect("just begun");
                // SAFETY: `src` points to `bytes` readable bytes (above), the slot to exactly
                // as many (the same shape and element type); they do not overlap.
                unsafe {
                    std::ptr::copy_nonoverlapping(src as *const u8, slot.as_mut_ptr(), bytes)
                };
                Ok(cell.commit().expect("loan open"))
            })
        })
    }

    /// Writes `state` (anything `json.dumps` takes: a dict, say) into the flexible zone as a
    /// new version, which consumers read whole or not at all; returns the version (1, 2, …).
    /// Stored as JSON or MessagePack, as the channel was created.
    fn write_state(&self, py: Python<'_>, state: &Bound<'_, PyAny>) -> PyResult<u64> {
        guard(|| {
            let json: String = py
                .import("json")?
                .call_method1("dumps", (state,))
                .map_err(|e| bad_value("state", e))?
                .extract()?;
            let value: serde_json::Value =
                serde_json::from_str(&json).map_err(|e| bad_value("state", e))?;
            let core = &self.core;
            core.with_cell(py, |cell| match cell.producer() {
                Some(p) => p.shm().write_state(&value).map_err(state_error),
                None => Err(loan_open(&core.name)),
            })
        })
    }

    /// Counters of the channel: published, dropped, overwritten, next_frame_id, consumers,
    /// evicted, producer_pid.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        guard(|| {
            let stats = self.core.with_cell(py, |cell| Ok(cell.shm().stats()))?;
            stats_dict(py, &stats)
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

    /// The largest frame shape (what `loan()` gives).
    #[getter]
    fn shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.core.max_shape)
    }

    /// The policy, in labhub's spelling (`ring:8:block`, `latest`, …).
    #[getter]
    fn policy(&self) -> &str {
        &self.core.policy
    }

    /// The id the next committed frame gets.
    #[getter]
    fn next_frame_id(&self, py: Python<'_>) -> PyResult<u64> {
        guard(|| {
            self.core
                .with_cell(py, |cell| Ok(cell.shm().next_frame_id()))
        })
    }

    /// Gives the channel up (the segment stays: consumers keep their frames, and a producer
    /// created later takes it over with the next frame id); later calls raise
    /// `labhub.ClosedError`. An open loan is abandoned: at once, or when the last of its views
    /// is gone.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        guard(|| {
            self.core.fork.check()?;
            self.core.closing.store(true, Ordering::Release);
            let cell = py.detach(|| {
                let mut cell = lock(&self.core.cell);
                match cell.as_ref() {
                    // The loan's views may still write the slot: it goes with them.
                    Some(c) if c.is_loaned() => None,
                    _ => cell.take(),
                }
            });
            py.detach(|| drop(cell));
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
            "<labhub.Producer {:?} {} {:?} {}>",
            self.core.name, self.core.element, self.core.max_shape, self.core.policy
        )
    }
}

const OPEN: u8 = 0;
const COMMITTED: u8 = 1;
const ABANDONED: u8 = 2;
/// Abandoned while views existed: the slot stays loaned until the last one is gone.
const ABANDON_PENDING: u8 = 3;

/// A loaned slot: `array` is a writable numpy view of exactly the frame. `commit()` (or the
/// end of a with-block without an exception) publishes it; `abandon()` (or an exception in
/// the with-block) drops it. Commit is refused (`labhub.ViewsExist`, a `BufferError`) while
/// a view of the loan still exists, so nothing writes a frame after its commit.
#[pyclass(module = "labhub", frozen)]
pub struct Loan {
    core: Arc<ProducerCore>,
    descr: Py<PyArrayDescr>,
    frame_id: u64,
    shape: Vec<u64>,
    data: usize,
    len: usize,
    exports: AtomicUsize,
    state: AtomicU8,
    timestamp_ns: AtomicU64,
}

impl Loan {
    fn finished(&self) -> PyErr {
        let what = match self.state.load(Ordering::Acquire) {
            COMMITTED => "committed",
            _ => "abandoned",
        };
        raise(
            "ReleasedError",
            format!(
                "the loan of frame {} of channel {:?} was {what}",
                self.frame_id, self.core.name
            ),
            &[],
        )
    }

    /// Abandons the slot now (the views are gone).
    fn abandon_now(&self, py: Python<'_>) -> PyResult<()> {
        self.state.store(ABANDONED, Ordering::Release);
        self.core.fork.check()?;
        let gone = py.detach(|| self.core.end_loan());
        py.detach(|| drop(gone));
        Ok(())
    }
}

fn unpin_loan(owner: &Bound<'_, PyAny>) {
    let Ok(loan) = owner.cast::<Loan>() else {
        return;
    };
    let loan = loan.get();
    if loan.exports.fetch_sub(1, Ordering::AcqRel) == 1
        && loan.state.load(Ordering::Acquire) == ABANDON_PENDING
    {
        let _ = loan.abandon_now(owner.py());
    }
}

#[pymethods]
impl Loan {
    /// A writable numpy view of the frame (dtype and shape of the loan). Do not keep it past
    /// the commit: commit is refused while a view exists.
    #[getter]
    fn array<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        guard(|| {
            let this = slf.get();
            if this.state.load(Ordering::Acquire) != OPEN {
                return Err(this.finished());
            }
            this.exports.fetch_add(1, Ordering::AcqRel);
            // SAFETY: the slot's `len` bytes at `data` stay mapped and loaned while the loan
            // object lives (the view's base keeps it alive), and the loan is neither committed
            // nor abandoned while a view exists; only views of this loan write the slot.
            let made = unsafe {
                crate::array::view(
                    slf.py(),
                    this.descr.bind(slf.py()),
                    &this.shape,
                    this.data as *mut u8,
                    true,
                    slf.clone().into_any(),
                    unpin_loan,
                )
            };
            if made.is_err() {
                this.exports.fetch_sub(1, Ordering::AcqRel);
            }
            made
        })
    }

    /// Commits the frame: consumers see all of it or none of it. Returns its frame id.
    /// Raises `labhub.ViewsExist` (a `BufferError`) while a view of the loan exists.
    fn commit(&self, py: Python<'_>) -> PyResult<u64> {
        guard(|| {
            if self.state.load(Ordering::Acquire) != OPEN {
                return Err(self.finished());
            }
            let views = self.exports.load(Ordering::Acquire);
            if views > 0 {
                return Err(raise(
                    "ViewsExist",
                    format!(
                        "frame {} of channel {:?} still has {views} numpy view(s) of its loan; delete them (`del arr`) before the commit, or write through `loan.array` without keeping it",
                        self.frame_id, self.core.name
                    ),
                    &[],
                ));
            }
            let ts = self.timestamp_ns.load(Ordering::Relaxed);
            let id = self.core.with_cell(py, |cell| {
                let slot = cell.loan().expect("an open loan object has its slot");
                if ts != 0 {
                    slot.set_timestamp_ns(ts);
                }
                Ok(cell.commit().expect("loan open"))
            })?;
            self.state.store(COMMITTED, Ordering::Release);
            Ok(id)
        })
    }

    /// Abandons the frame (no frame id is used). With views still alive the slot stays
    /// loaned until the last one is gone.
    fn abandon(&self, py: Python<'_>) -> PyResult<()> {
        guard(|| {
            if self.state.load(Ordering::Acquire) != OPEN {
                return Ok(());
            }
            if self.exports.load(Ordering::Acquire) > 0 {
                self.state.store(ABANDON_PENDING, Ordering::Release);
                if self.exports.load(Ordering::Acquire) > 0 {
                    return Ok(());
                }
            }
            self.abandon_now(py)
        })
    }

    /// The frame id this loan commits.
    #[getter]
    fn frame_id(&self) -> u64 {
        self.frame_id
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

    /// The frame's timestamp in ns (0: the commit stamps CLOCK_REALTIME).
    #[getter]
    fn get_timestamp_ns(&self) -> u64 {
        self.timestamp_ns.load(Ordering::Relaxed)
    }

    #[setter]
    fn set_timestamp_ns(&self, ns: u64) {
        self.timestamp_ns.store(ns, Ordering::Relaxed);
    }

    /// Size of the frame in bytes.
    #[getter]
    fn nbytes(&self) -> usize {
        self.len
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (exc_type, _exc=None, _tb=None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        match exc_type {
            Some(t) if !t.is_none() => self.abandon(py)?,
            _ => {
                if self.state.load(Ordering::Acquire) == OPEN {
                    self.commit(py)?;
                }
            }
        }
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "<labhub.Loan frame {} of {:?} {:?}>",
            self.frame_id, self.core.name, self.shape
        )
    }
}

impl Drop for Loan {
    fn drop(&mut self) {
        // The last reference is gone, so no view is left: an open loan is abandoned.
        let state = *self.state.get_mut();
        if (state == OPEN || state == ABANDON_PENDING) && !self.core.fork.forked() {
            drop(self.core.end_loan());
        }
    }
}
