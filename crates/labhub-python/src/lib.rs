//! `labhub._native`, the native module of the labhub Python package (`python/`): shared-memory
//! channels with zero-copy numpy views, the Hub client, and the typed exceptions' mapping.
//!
//! Every Python-facing call goes through [`errors::guard`], so a Rust panic surfaces as
//! `labhub.InternalError` instead of unwinding into the interpreter. Blocking calls release
//! the GIL and wait in slices of [`SLICE`], checking for signals between them, so Ctrl-C
//! (KeyboardInterrupt) is answered within a slice. Locks that a blocking call holds are never
//! held while taking the GIL (and are taken with the GIL released), so threads cannot
//! deadlock on them.

mod array;
mod cells;
mod consumer;
mod errors;
mod hub;
mod msg;
mod producer;
mod record;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use labhub::client::{ClientError, Notice};
use labhub::protocol::Notification;
use labhub::shm::{ChannelError, ChannelStats, ElementType};
use numpy::PyArrayDescr;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The longest wait between two looks for a pending signal.
pub(crate) const SLICE: Duration = Duration::from_millis(20);

/// Locks `m`, also when a panic poisoned it (the data are plain state, valid either way).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Forks seen by this process: the child handler of `pthread_atfork` counts them.
static FORKS: AtomicU64 = AtomicU64::new(0);

extern "C" fn after_fork_in_child() {
    FORKS.fetch_add(1, Ordering::SeqCst);
}

/// The process an object was made in. After `fork()` the child's copy of a channel end is
/// inert: its calls raise `labhub.ForkedError`, and it is leaked rather than dropped, since
/// dropping it would give up the parent's channel, free the parent's consumer entry or join
/// the parent's threads.
#[derive(Debug)]
pub(crate) struct Fork(u64);

impl Fork {
    pub(crate) fn now() -> Self {
        Self(FORKS.load(Ordering::SeqCst))
    }

    pub(crate) fn forked(&self) -> bool {
        FORKS.load(Ordering::SeqCst) != self.0
    }

    pub(crate) fn check(&self) -> PyResult<()> {
        if self.forked() {
            return Err(errors::raise(
                "ForkedError",
                "this labhub object was made before fork(); a forked child must make its own (or use multiprocessing's spawn or forkserver start methods)",
                &[],
            ));
        }
        Ok(())
    }
}

/// The numpy dtype of `element` (explicit little-endian).
pub(crate) fn descr_of(py: Python<'_>, element: ElementType) -> PyResult<Bound<'_, PyArrayDescr>> {
    PyArrayDescr::new(py, element.numpy_dtype())
}

pub(crate) fn stats_dict<'py>(py: Python<'py>, s: &ChannelStats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("published", s.published)?;
    d.set_item("dropped", s.dropped)?;
    d.set_item("overwritten", s.overwritten)?;
    d.set_item("next_frame_id", s.next_frame_id)?;
    d.set_item("consumers", s.consumers)?;
    d.set_item("evicted", s.evicted)?;
    d.set_item("producer_pid", s.producer_pid)?;
    Ok(d)
}

/// A notice as a dict: `kind`, `channel`, and what the kind carries.
pub(crate) fn notice_dict<'py>(py: Python<'py>, n: &Notice) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("kind", n.kind())?;
    d.set_item("channel", n.channel().map(|c| c.to_string()))?;
    let text = |v: serde_json::Result<serde_json::Value>| match v {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(e) => e.to_string(),
    };
    match n {
        Notice::Broker(Notification::ChannelDown {
            producer, reason, ..
        }) => {
            d.set_item("producer", producer.to_string())?;
            d.set_item("reason", text(serde_json::to_value(reason)))?;
        }
        Notice::Broker(Notification::ConsumerDropped {
            producer,
            consumer,
            reason,
            ..
        }) => {
            d.set_item("producer", producer.to_string())?;
            d.set_item("consumer", consumer.to_string())?;
            d.set_item("reason", text(serde_json::to_value(reason)))?;
        }
        Notice::Broker(Notification::ChannelUp { channel }) => {
            let info = serde_json::to_string(&**channel).unwrap_or_default();
            d.set_item("info", py.import("json")?.call_method1("loads", (info,))?)?;
        }
        Notice::ReregisterFailed { problem, .. } => d.set_item("problem", problem)?,
        _ => {}
    }
    Ok(d)
}

/// What making a channel end fails with, brokerless or through a Hub.
pub(crate) enum AnyError {
    Channel(ChannelError),
    Client(ClientError),
}

impl From<ClientError> for AnyError {
    fn from(e: ClientError) -> Self {
        Self::Client(e)
    }
}

impl AnyError {
    pub(crate) fn into_py(self) -> PyErr {
        match self {
            Self::Channel(e) => errors::channel_error(e),
            Self::Client(e) => errors::client_error(e),
        }
    }
}

/// Runs `f` on a thread of its own and waits for it with the GIL released, looking for
/// signals every [`SLICE`]: for control calls that wait on the broker (up to its request
/// timeout). A call given up on (Ctrl-C) finishes in the background and its result is dropped.
pub(crate) fn interruptible<T: Send + 'static>(
    py: Python<'_>,
    f: impl FnOnce() -> T + Send + 'static,
) -> PyResult<T> {
    use std::sync::mpsc::{RecvTimeoutError, channel};
    let (tx, rx) = channel();
    std::thread::Builder::new()
        .name("labhub-call".into())
        .spawn(move || {
            let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
        })
        .map_err(|e| errors::raise("Error", format!("starting a thread: {e}"), &[]))?;
    let mut rx = rx;
    loop {
        let (got, back) = py.detach(move || (rx.recv_timeout(SLICE), rx));
        rx = back;
        match got {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(RecvTimeoutError::Timeout) => py.check_signals()?,
            Err(RecvTimeoutError::Disconnected) => {
                return Err(errors::raise(
                    "InternalError",
                    "a labhub call thread vanished",
                    &[],
                ));
            }
        }
    }
}

/// Panics inside the boundary, for the test that no panic crosses into Python.
#[pyfunction]
fn _panic_for_test() -> PyResult<()> {
    errors::guard(|| panic!("a deliberate panic for the boundary test"))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // SAFETY: registers a plain function with no state of its own as the child handler of
    // `fork()`; it only increments an atomic, which is async-signal-safe.
    let rc = unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    if rc != 0 {
        return Err(errors::raise(
            "Error",
            format!("pthread_atfork failed ({rc})"),
            &[],
        ));
    }
    m.add_class::<hub::Hub>()?;
    m.add_class::<producer::Producer>()?;
    m.add_class::<producer::Loan>()?;
    m.add_class::<consumer::Consumer>()?;
    m.add_class::<consumer::Frame>()?;
    m.add_class::<msg::PyPublisher>()?;
    m.add_class::<msg::PySubscriber>()?;
    m.add_class::<msg::PyReqServer>()?;
    m.add_class::<msg::PyReqClient>()?;
    m.add_function(wrap_pyfunction!(hub::create_producer, m)?)?;
    m.add_function(wrap_pyfunction!(hub::open_consumer, m)?)?;
    m.add_function(wrap_pyfunction!(hub::remove_channel, m)?)?;
    m.add_class::<record::Run>()?;
    m.add_function(wrap_pyfunction!(record::start_recording, m)?)?;
    m.add_function(wrap_pyfunction!(record::start_replay, m)?)?;
    m.add_function(wrap_pyfunction!(_panic_for_test, m)?)?;
    m.add("LAYOUT_VERSION", labhub::shm::LAYOUT_VERSION)?;
    m.add("MAX_DIMS", labhub::shm::MAX_DIMS)?;
    Ok(())
}
