//! `labhub._Publisher`, `_Subscriber`, `_ReqServer` and `_ReqClient`: the message channels
//! made through a Hub (CurveZMQ end to end), wrapped by `labhub._msg`.
//!
//! A ZeroMQ socket may be used by one thread at a time, so each end sits behind a mutex. A
//! waiting call takes that mutex only after releasing the GIL and waits in slices of
//! [`SLICE`], looking for signals between them; a request/reply server holds it while it
//! calls its Python handler (taking the GIL for that), which cannot deadlock because nobody
//! takes the mutex with the GIL held.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::{Duration, Instant};

use labhub::client::Registered;
use labhub::msg::{MsgError, Publisher, ReqClient, ReqServer, Subscriber};
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::{guard, msg_error, raise};
use crate::{Fork, SLICE, interruptible, lock};

/// One message-channel end: the channel behind a mutex (`None` once closed), the process it
/// was made in, and what it reports without taking the mutex.
struct End<T> {
    cell: Arc<Mutex<Option<Registered<T>>>>,
    /// Set by `close`, read without the mutex (a getter holding the GIL must never wait for
    /// it: a server's handler holds it while it waits for the GIL).
    closed: AtomicBool,
    fork: Fork,
    name: String,
    endpoint: String,
}

impl<T: Send + 'static> End<T> {
    fn new(channel: Registered<T>, endpoint: String) -> Self {
        Self {
            name: channel.channel_name().to_owned(),
            cell: Arc::new(Mutex::new(Some(channel))),
            closed: AtomicBool::new(false),
            fork: Fork::now(),
            endpoint,
        }
    }

    fn closed(&self) -> PyErr {
        raise(
            "ClosedError",
            format!("message channel {} is closed", self.name),
            &[("channel", self.name.clone())],
        )
    }

    /// Runs `f` on the channel with the GIL released; `Ok(None)` if it is closed.
    fn with<R: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut T) -> R + Send,
    ) -> PyResult<Option<R>> {
        self.fork.check()?;
        if self.closed.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let (cell, closed) = (&self.cell, &self.closed);
        Ok(py.detach(move || {
            let mut channel = lock(cell);
            let result = channel.as_mut().map(|c| f(c));
            // Closed meanwhile, by another thread or by a handler on this one: ended here.
            if closed.load(Ordering::SeqCst) {
                drop(channel.take());
            }
            result
        }))
    }

    /// Waits in slices until `f` (given the slice) yields `Some`, `timeout` passes (`Ok(None)`)
    /// or a signal handler raises.
    fn wait<R: Send>(
        &self,
        py: Python<'_>,
        timeout: Option<Duration>,
        mut f: impl FnMut(&mut T, Duration) -> Result<Option<R>, MsgError> + Send,
    ) -> PyResult<Option<R>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let slice = deadline.map_or(SLICE, |d| {
                d.saturating_duration_since(Instant::now()).min(SLICE)
            });
            match self.with(py, |c| f(c, slice))? {
                None => return Err(self.closed()),
                Some(Ok(Some(r))) => return Ok(Some(r)),
                Some(Ok(None)) => {}
                Some(Err(e)) => return Err(msg_error(e, &self.name)),
            }
            py.check_signals()?;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
        }
    }

    /// Ends the channel now, or, while a call holds it (a wait in another thread, or the
    /// handler of this server calling `close`), as soon as that call returns. Never waits.
    fn close(&self) -> PyResult<()> {
        self.fork.check()?;
        self.closed.store(true, Ordering::SeqCst);
        let taken = match self.cell.try_lock() {
            Ok(mut channel) => channel.take(),
            Err(TryLockError::Poisoned(p)) => p.into_inner().take(),
            Err(TryLockError::WouldBlock) => None,
        };
        drop(taken);
        Ok(())
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

impl<T> Drop for End<T> {
    fn drop(&mut self) {
        if self.fork.forked() {
            // The socket and the Hub's worker belong to the parent: dropping them here would
            // unregister the parent's channel (and its mutex may have been held at the fork).
            std::mem::forget(Arc::clone(&self.cell));
        }
    }
}

fn seconds(arg: &str, t: Option<f64>) -> PyResult<Option<Duration>> {
    t.map(|s| {
        if s >= 0.0 && s.is_finite() && s < 1e9 {
            Ok(Duration::from_secs_f64(s))
        } else {
            Err(crate::errors::bad_value(
                arg,
                format!("{s} is not a number of seconds ≥ 0"),
            ))
        }
    })
    .transpose()
}

fn timed_out(name: &str, what: &str, timeout: Option<Duration>) -> PyErr {
    raise(
        "TimeoutError",
        format!(
            "{what} on message channel {name} within {:?}",
            timeout.unwrap_or_default()
        ),
        &[("channel", name.to_owned())],
    )
}

/// The publisher of a pub/sub channel. Use `labhub.Publisher`, its Python face.
#[pyclass(module = "labhub", frozen, name = "_Publisher")]
pub struct PyPublisher(End<Publisher>);

impl PyPublisher {
    pub fn new(p: Registered<Publisher>) -> Self {
        let endpoint = p.endpoint().to_owned();
        Self(End::new(p, endpoint))
    }
}

#[pymethods]
impl PyPublisher {
    #[getter]
    fn name(&self) -> &str {
        &self.0.name
    }

    #[getter]
    fn endpoint(&self) -> &str {
        &self.0.endpoint
    }

    #[getter]
    fn closed(&self) -> bool {
        self.0.is_closed()
    }

    /// Sends `[topic, payload]` to every subscriber whose prefix matches `topic`. Never
    /// blocks: a subscriber whose queue is full loses the message.
    fn send(&self, py: Python<'_>, topic: &[u8], payload: &[u8]) -> PyResult<()> {
        guard(|| match self.0.with(py, |p| p.send(topic, payload))? {
            None => Err(self.0.closed()),
            Some(r) => r.map_err(|e| msg_error(e, &self.0.name)),
        })
    }

    /// The subscriptions that have reached this publisher.
    fn subscriptions(&self, py: Python<'_>) -> PyResult<usize> {
        guard(|| {
            self.0
                .with(py, |p| p.subscriptions())?
                .ok_or_else(|| self.0.closed())
        })
    }

    /// Waits until `count` subscriptions have reached the publisher; returns how many have.
    #[pyo3(signature = (count, timeout=None))]
    fn wait_for_subscribers(
        &self,
        py: Python<'_>,
        count: usize,
        timeout: Option<f64>,
    ) -> PyResult<usize> {
        guard(|| {
            let timeout = seconds("timeout", timeout)?;
            let got = self.0.wait(py, timeout, |p, slice| {
                match p.wait_for_subscribers(count, slice) {
                    Ok(n) => Ok(Some(n)),
                    Err(MsgError::SubscriberTimeout { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })?;
            got.ok_or_else(|| {
                timed_out(
                    &self.0.name,
                    &format!("fewer than {count} subscriptions arrived"),
                    timeout,
                )
            })
        })
    }

    /// Unregisters the channel and closes its socket.
    fn close(&self) -> PyResult<()> {
        guard(|| self.0.close())
    }
}

/// A subscriber of a pub/sub channel. Use `labhub.Subscriber`, its Python face.
#[pyclass(module = "labhub", frozen, name = "_Subscriber")]
pub struct PySubscriber(End<Subscriber>);

impl PySubscriber {
    pub fn new(s: Registered<Subscriber>) -> Self {
        let endpoint = s.endpoint().to_owned();
        Self(End::new(s, endpoint))
    }
}

#[pymethods]
impl PySubscriber {
    #[getter]
    fn name(&self) -> &str {
        &self.0.name
    }

    #[getter]
    fn endpoint(&self) -> &str {
        &self.0.endpoint
    }

    #[getter]
    fn closed(&self) -> bool {
        self.0.is_closed()
    }

    /// The next message as `(topic, payload)`, waiting up to `timeout` seconds (`None`:
    /// forever); `labhub.TimeoutError` if none came.
    #[pyo3(signature = (timeout=None))]
    fn recv<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
        guard(|| {
            let timeout = seconds("timeout", timeout)?;
            let got = self.0.wait(py, timeout, |s, slice| {
                s.recv(slice)
                    .map(|m| m.map(|m| (m.topic().to_vec(), m.payload().to_vec())))
            })?;
            let (topic, payload) =
                got.ok_or_else(|| timed_out(&self.0.name, "no message arrived", timeout))?;
            Ok((PyBytes::new(py, &topic), PyBytes::new(py, &payload)))
        })
    }

    /// Adds a topic prefix.
    fn subscribe(&self, py: Python<'_>, prefix: &[u8]) -> PyResult<()> {
        guard(|| match self.0.with(py, |s| s.subscribe(prefix))? {
            None => Err(self.0.closed()),
            Some(r) => r.map_err(|e| msg_error(e, &self.0.name)),
        })
    }

    /// Detaches from the channel and closes the socket.
    fn close(&self) -> PyResult<()> {
        guard(|| self.0.close())
    }
}

/// What a server's Python handler made of one request.
enum Handled {
    Reply(Vec<u8>),
    /// An `Exception`: the client gets its text as an error reply, serving goes on.
    Failed(String),
    /// Not an `Exception` (KeyboardInterrupt, SystemExit): an error reply, then it propagates.
    Fatal(PyErr),
}

fn call_handler(handler: &Py<PyAny>, payload: &[u8]) -> Handled {
    Python::attach(|py| {
        let outcome = handler
            .bind(py)
            .call1((PyBytes::new(py, payload),))
            .and_then(|r| r.extract::<Vec<u8>>());
        match outcome {
            Ok(body) => Handled::Reply(body),
            Err(e) => {
                let text = format!(
                    "{}: {}",
                    e.get_type(py)
                        .name()
                        .map_or_else(|_| "Exception".to_owned(), |n| n.to_string()),
                    e.value(py)
                );
                if e.is_instance_of::<PyException>(py) {
                    Handled::Failed(text)
                } else {
                    Handled::Fatal(e)
                }
            }
        }
    })
}

/// The request server of a req/rep channel. Use `labhub.ReqServer`, its Python face.
#[pyclass(module = "labhub", frozen, name = "_ReqServer")]
pub struct PyReqServer(End<ReqServer>);

impl PyReqServer {
    pub fn new(s: Registered<ReqServer>) -> Self {
        let endpoint = s.endpoint().to_owned();
        Self(End::new(s, endpoint))
    }
}

#[pymethods]
impl PyReqServer {
    #[getter]
    fn name(&self) -> &str {
        &self.0.name
    }

    #[getter]
    fn endpoint(&self) -> &str {
        &self.0.endpoint
    }

    #[getter]
    fn closed(&self) -> bool {
        self.0.is_closed()
    }

    /// Waits up to `timeout` seconds (`None`: forever) for one request and answers it with
    /// `handler(payload: bytes) -> bytes`; `False` if none came. An `Exception` raised by the
    /// handler becomes an error reply (`"TypeName: message"`) and this returns `True`; any
    /// other exception (KeyboardInterrupt) is answered with an error reply and propagates. A
    /// malformed or oversized request gets an error reply and is not handed to the handler.
    #[pyo3(signature = (handler, timeout=None))]
    fn serve_one(
        &self,
        py: Python<'_>,
        handler: Py<PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<bool> {
        guard(|| {
            let timeout = seconds("timeout", timeout)?;
            let got = self.0.wait(py, timeout, |server, slice| {
                let request = match server.recv_request(slice) {
                    Ok(Some(r)) => r,
                    Ok(None) => return Ok(None),
                    // Answered with an error reply by the server already; not the handler's.
                    Err(MsgError::Malformed { .. } | MsgError::TooLarge { .. }) => {
                        return Ok(Some(None));
                    }
                    Err(e) => return Err(e),
                };
                let handled = call_handler(&handler, request.payload());
                let (sent, fatal) = match handled {
                    Handled::Reply(body) => (request.reply(body), None),
                    Handled::Failed(text) => (request.reply_error(text), None),
                    Handled::Fatal(e) => {
                        (request.reply_error("the server was interrupted"), Some(e))
                    }
                };
                match sent {
                    Ok(()) | Err(MsgError::ClientGone { .. }) => Ok(Some(fatal)),
                    Err(e) => Err(e),
                }
            })?;
            match got {
                None => Ok(false),
                Some(Some(fatal)) => Err(fatal),
                Some(None) => Ok(true),
            }
        })
    }

    /// Unregisters the channel and closes its socket.
    fn close(&self) -> PyResult<()> {
        guard(|| self.0.close())
    }
}

/// A request client of a req/rep channel. Use `labhub.ReqClient`, its Python face.
#[pyclass(module = "labhub", frozen, name = "_ReqClient")]
pub struct PyReqClient(End<ReqClient>);

impl PyReqClient {
    pub fn new(c: Registered<ReqClient>) -> Self {
        let endpoint = c.endpoint().to_owned();
        Self(End::new(c, endpoint))
    }
}

#[pymethods]
impl PyReqClient {
    #[getter]
    fn name(&self) -> &str {
        &self.0.name
    }

    #[getter]
    fn endpoint(&self) -> &str {
        &self.0.endpoint
    }

    #[getter]
    fn closed(&self) -> bool {
        self.0.is_closed()
    }

    /// Sends `payload` and waits up to `timeout` seconds for the reply.
    #[pyo3(signature = (payload, timeout=5.0))]
    fn request<'py>(
        &self,
        py: Python<'py>,
        payload: &[u8],
        timeout: f64,
    ) -> PyResult<Bound<'py, PyBytes>> {
        guard(|| {
            self.0.fork.check()?;
            let timeout = seconds("timeout", Some(timeout))?.unwrap_or_default();
            let cell = Arc::clone(&self.0.cell);
            let payload = payload.to_vec();
            // A request cannot be split into slices (each would be a new request), so it runs
            // on a thread of its own while this one answers signals.
            let got = interruptible(py, move || {
                lock(&cell).as_mut().map(|c| c.request(payload, timeout))
            })?;
            match got {
                None => Err(self.0.closed()),
                Some(Ok(body)) => Ok(PyBytes::new(py, &body)),
                Some(Err(e)) => Err(msg_error(e, &self.0.name)),
            }
        })
    }

    /// Detaches from the channel and closes the socket.
    fn close(&self) -> PyResult<()> {
        guard(|| self.0.close())
    }
}
