//! `labhub._Hub` (wrapped by `labhub.Hub`) and the functions that make channel ends, through
//! a Hub or brokerless.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use labhub::client::{ClientConfig, Notice, OnHub};
use labhub::msg::{BindBuilder, ConnectBuilder};
use labhub::shm::{self, Backend, Channel, Dynamic, ElementType, Policy, StateFormat, WaitMode};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::cells::{AnyConsumer, AnyProducer, LoanCell};
use crate::consumer::{Consumer, ConsumerCore};
use crate::errors::{bad_value, channel_error, client_error, guard, raise};
use crate::msg::{PyPublisher, PyReqClient, PyReqServer, PySubscriber};
use crate::producer::{Producer, ProducerCore};
use crate::{Fork, SLICE, interruptible, lock, notice_dict};

/// A connection to the labhub broker (`labhub hub`). Use `labhub.Hub`, its Python face.
#[pyclass(module = "labhub", frozen, name = "_Hub")]
pub struct Hub {
    hub: Mutex<Option<labhub::client::Hub>>,
    notices: Mutex<Receiver<Notice>>,
    fork: Fork,
    endpoint: String,
    client_id: String,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let hub = self.hub.get_mut().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(hub) = hub {
            if self.fork.forked() {
                // The worker thread and the ZeroMQ context belong to the parent.
                std::mem::forget(hub);
            } else {
                hub.shutdown();
            }
        }
    }
}

impl Hub {
    pub(crate) fn client(&self) -> PyResult<labhub::client::Hub> {
        self.fork.check()?;
        lock(&self.hub)
            .clone()
            .ok_or_else(|| raise("ClosedError", "the hub is closed", &[]))
    }
}

fn seconds(arg: &str, s: f64) -> PyResult<Duration> {
    if !(s >= 0.0 && s.is_finite() && s < 1e9) {
        return Err(bad_value(
            arg,
            format!("{s} is not a number of seconds ≥ 0"),
        ));
    }
    Ok(Duration::from_secs_f64(s))
}

#[pymethods]
impl Hub {
    /// Connects to the broker whose home is `home` (default: `LABHUB_HOME`, else the
    /// platform's data directory): its public key, the local user's client key, and the
    /// endpoints as the CLI finds them. `endpoint`, `notify_endpoint` and `server_key` (Z85)
    /// override what the home says. No broker running is not an error here: requests then
    /// time out after `request_timeout` seconds (`labhub.TimeoutError`).
    #[new]
    #[pyo3(signature = (home=None, endpoint=None, notify_endpoint=None, server_key=None, request_timeout=5.0))]
    fn new(
        py: Python<'_>,
        home: Option<PathBuf>,
        endpoint: Option<String>,
        notify_endpoint: Option<String>,
        server_key: Option<String>,
        request_timeout: f64,
    ) -> PyResult<Self> {
        guard(|| {
            let timeout = seconds("request_timeout", request_timeout)?;
            let home = match home {
                Some(h) => h,
                None => labhub::home::default_home(&|k| std::env::var(k).ok())
                    .map_err(|e| raise("ConfigError", format!("the labhub home: {e}"), &[]))?,
            };
            let mut config = match server_key {
                Some(key) => {
                    let key = labhub::keys::PublicKey::from_z85(&key)
                        .map_err(|e| bad_value("server_key", e))?;
                    let endpoint = endpoint.clone().ok_or_else(|| {
                        bad_value(
                            "endpoint",
                            "an endpoint is needed with an explicit server_key",
                        )
                    })?;
                    let keys = labhub::keys::local_client_key(&home.join("keys"))
                        .map_err(|e| client_error(e.into()))?;
                    ClientConfig::new(endpoint, key, keys)
                }
                None => ClientConfig::from_home(&home).map_err(client_error)?,
            };
            if let Some(e) = endpoint {
                config.endpoint = e;
            }
            if let Some(n) = notify_endpoint {
                config.notify_endpoint = Some(n);
            }
            config = config.request_timeout(timeout);
            let (endpoint, client_id) = (config.endpoint.clone(), config.client_id.clone());
            let hub = py
                .detach(|| labhub::client::Hub::connect(config))
                .map_err(client_error)?;
            let notices = hub.notices().map_err(client_error)?;
            let client_id =
                client_id.map_or_else(|| hub.client_id().to_string(), |c| c.to_string());
            Ok(Self {
                hub: Mutex::new(Some(hub)),
                notices: Mutex::new(notices),
                fork: Fork::now(),
                endpoint,
                client_id,
            })
        })
    }

    /// The broker endpoint.
    #[getter]
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// This client's id at the broker.
    #[getter]
    fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The next notice from the broker about any channel (`channel_up`, `channel_down`,
    /// `consumer_dropped`, `reregistered`), as a dict, waiting up to `timeout` seconds
    /// (`None`: forever); `None` if none came.
    #[pyo3(signature = (timeout=0.0))]
    fn notice<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        guard(|| {
            self.fork.check()?;
            let deadline = timeout
                .map(|t| seconds("timeout", t).map(|t| Instant::now() + t))
                .transpose()?;
            loop {
                let slice = deadline.map_or(SLICE, |d| {
                    d.saturating_duration_since(Instant::now()).min(SLICE)
                });
                let got = py.detach(|| lock(&self.notices).recv_timeout(slice));
                match got {
                    Ok(n) => return notice_dict(py, &n).map(Some),
                    Err(RecvTimeoutError::Disconnected) => return Ok(None),
                    Err(RecvTimeoutError::Timeout) => {}
                }
                py.check_signals()?;
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(None);
                }
            }
        })
    }

    /// Creates and registers pub/sub channel `name` (see `labhub.Hub.create_publisher`).
    #[pyo3(signature = (name, bind=None, advertise_host=None, hwm=None, max_message_size=None))]
    fn create_publisher(
        &self,
        py: Python<'_>,
        name: String,
        bind: Option<String>,
        advertise_host: Option<String>,
        hwm: Option<u32>,
        max_message_size: Option<usize>,
    ) -> PyResult<PyPublisher> {
        guard(|| {
            let client = self.client()?;
            let made = interruptible(py, move || {
                bound(
                    client.publisher(&name),
                    bind,
                    advertise_host,
                    hwm,
                    max_message_size,
                )
                .create()
            })?;
            made.map(PyPublisher::new).map_err(client_error)
        })
    }

    /// Discovers pub/sub channel `name` and subscribes to `topics` (see
    /// `labhub.Hub.open_subscriber`).
    #[pyo3(signature = (name, topics, hwm=None, max_message_size=None))]
    fn open_subscriber(
        &self,
        py: Python<'_>,
        name: String,
        topics: Vec<Vec<u8>>,
        hwm: Option<u32>,
        max_message_size: Option<usize>,
    ) -> PyResult<PySubscriber> {
        guard(|| {
            let client = self.client()?;
            let made = interruptible(py, move || {
                let b = topics
                    .into_iter()
                    .fold(client.subscriber(&name), |b, t| b.topic(t));
                connected(b, hwm, max_message_size).open()
            })?;
            made.map(PySubscriber::new).map_err(client_error)
        })
    }

    /// Creates and registers req/rep channel `name` (see `labhub.Hub.create_server`).
    #[pyo3(signature = (name, bind=None, advertise_host=None, hwm=None, max_message_size=None))]
    fn create_server(
        &self,
        py: Python<'_>,
        name: String,
        bind: Option<String>,
        advertise_host: Option<String>,
        hwm: Option<u32>,
        max_message_size: Option<usize>,
    ) -> PyResult<PyReqServer> {
        guard(|| {
            let client = self.client()?;
            let made = interruptible(py, move || {
                bound(
                    client.req_server(&name),
                    bind,
                    advertise_host,
                    hwm,
                    max_message_size,
                )
                .create()
            })?;
            made.map(PyReqServer::new).map_err(client_error)
        })
    }

    /// Discovers req/rep channel `name` and connects to its server (see
    /// `labhub.Hub.open_client`).
    #[pyo3(signature = (name, hwm=None, max_message_size=None))]
    fn open_client(
        &self,
        py: Python<'_>,
        name: String,
        hwm: Option<u32>,
        max_message_size: Option<usize>,
    ) -> PyResult<PyReqClient> {
        guard(|| {
            let client = self.client()?;
            let made = interruptible(py, move || {
                connected(client.req_client(&name), hwm, max_message_size).open()
            })?;
            made.map(PyReqClient::new).map_err(client_error)
        })
    }

    /// Unregisters this client's channels and closes the connection (bounded even without a
    /// broker). Channel ends made through it stop reporting to the broker.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        guard(|| {
            self.fork.check()?;
            let hub = lock(&self.hub).take();
            if let Some(hub) = hub {
                py.detach(|| hub.shutdown());
            }
            Ok(())
        })
    }
}

/// A message-channel server builder with the options Python gave.
fn bound<T>(
    mut b: BindBuilder<T, OnHub>,
    bind: Option<String>,
    advertise_host: Option<String>,
    hwm: Option<u32>,
    max_message_size: Option<usize>,
) -> BindBuilder<T, OnHub> {
    if let Some(e) = bind {
        b = b.bind(e);
    }
    if let Some(h) = advertise_host {
        b = b.advertise_host(h);
    }
    if let Some(n) = hwm {
        b = b.hwm(n);
    }
    if let Some(n) = max_message_size {
        b = b.max_message_size(n);
    }
    b
}

/// A message-channel client builder with the options Python gave.
fn connected<T>(
    mut b: ConnectBuilder<T, OnHub>,
    hwm: Option<u32>,
    max_message_size: Option<usize>,
) -> ConnectBuilder<T, OnHub> {
    if let Some(n) = hwm {
        b = b.hwm(n);
    }
    if let Some(n) = max_message_size {
        b = b.max_message_size(n);
    }
    b
}

/// The settings the Python layer checked and passes on.
struct Opts {
    name: String,
    element: Option<ElementType>,
    shape: Option<Vec<u64>>,
    policy: Option<Policy>,
    flex_size: u64,
    checksum: bool,
    state_format: StateFormat,
    secret: Option<Vec<u8>>,
    consumer_timeout: Option<Option<Duration>>,
    schema: Option<(String, u32)>,
    spin: Option<Duration>,
}

fn configure<B: Backend>(ch: Channel<B>, o: &Opts) -> Channel<B, Dynamic> {
    let mut ch = match (o.element, &o.shape) {
        (Some(e), Some(s)) => ch.dynamic(e, s),
        _ => ch,
    };
    if let Some(p) = o.policy {
        ch = ch.policy(p);
    }
    ch = ch
        .flex_size(o.flex_size)
        .checksum(o.checksum)
        .state_format(o.state_format);
    if let Some(s) = &o.secret {
        ch = ch.secret(shm::Secret::from_bytes(s.clone()));
    }
    if let Some(t) = o.consumer_timeout {
        ch = ch.consumer_timeout(t);
    }
    if let Some((n, v)) = &o.schema {
        ch = ch.schema(n.clone(), *v);
    }
    if let Some(spin_for) = o.spin {
        ch = ch.wait_mode(WaitMode::Spin { spin_for });
    }
    ch
}

#[allow(clippy::too_many_arguments)]
fn opts(
    name: String,
    element: Option<&str>,
    shape: Option<Vec<u64>>,
    policy: Option<&str>,
    flex_size: u64,
    checksum: bool,
    state_format: &str,
    secret: Option<Vec<u8>>,
    consumer_timeout: Option<f64>,
    schema: Option<(String, u32)>,
    spin: Option<f64>,
) -> PyResult<Opts> {
    let element = element
        .map(|e| {
            e.parse::<ElementType>()
                .map_err(|err| bad_value("dtype", err))
        })
        .transpose()?;
    let policy = policy
        .map(|p| p.parse::<Policy>().map_err(|err| bad_value("policy", err)))
        .transpose()?;
    let state_format = match state_format {
        "json" => StateFormat::Json,
        "msgpack" => StateFormat::MessagePack,
        other => {
            return Err(bad_value(
                "state_format",
                format!("{other:?} is neither \"json\" nor \"msgpack\""),
            ));
        }
    };
    // A negative consumer timeout stands for the default.
    let consumer_timeout = match consumer_timeout {
        Some(t) if t < 0.0 => None,
        Some(t) => Some(Some(seconds("consumer_timeout", t)?)),
        None => Some(None),
    };
    let spin = spin.map(|s| seconds("spin", s)).transpose()?;
    Ok(Opts {
        name,
        element,
        shape,
        policy,
        flex_size,
        checksum,
        state_format,
        secret,
        consumer_timeout,
        schema,
        spin,
    })
}

/// Creates (or takes over) a channel and returns its producer; through `hub` if given, else
/// brokerless. The Python layer (`Hub.create_producer`, `labhub.shm.create_producer`) checks
/// and documents the arguments.
#[pyfunction]
#[pyo3(signature = (hub, name, element, shape, policy, flex_size=0, checksum=false, state_format="json", secret=None, consumer_timeout=-1.0, schema=None))]
#[allow(clippy::too_many_arguments)]
pub fn create_producer(
    py: Python<'_>,
    hub: Option<&Bound<'_, Hub>>,
    name: String,
    element: &str,
    shape: Vec<u64>,
    policy: &str,
    flex_size: u64,
    checksum: bool,
    state_format: &str,
    secret: Option<Vec<u8>>,
    consumer_timeout: Option<f64>,
    schema: Option<(String, u32)>,
) -> PyResult<Producer> {
    guard(|| {
        let o = opts(
            name,
            Some(element),
            Some(shape),
            Some(policy),
            flex_size,
            checksum,
            state_format,
            secret,
            consumer_timeout,
            schema,
            None,
        )?;
        let made = match hub {
            Some(hub) => {
                let client = hub.get().client()?;
                interruptible(py, move || {
                    configure(client.channel(&o.name), &o)
                        .create()
                        .map(AnyProducer::Hub)
                        .map_err(|e| e.into())
                })?
            }
            None => interruptible(py, move || {
                configure(Channel::new(&o.name), &o)
                    .create()
                    .map(AnyProducer::Local)
                    .map_err(crate::AnyError::Channel)
            })?,
        }
        .map_err(crate::AnyError::into_py)?;
        Producer::new(py, ProducerCore::new(LoanCell::new(made)))
    })
}

/// Opens a channel and returns a consumer; through `hub` if given, else brokerless. With
/// `create`, a channel that does not exist yet is created without a producer (element,
/// shape and policy are then needed).
#[pyfunction]
#[pyo3(signature = (hub, name, element=None, shape=None, policy=None, create=false, flex_size=0, checksum=false, state_format="json", secret=None, schema=None, spin=None))]
#[allow(clippy::too_many_arguments)]
pub fn open_consumer(
    py: Python<'_>,
    hub: Option<&Bound<'_, Hub>>,
    name: String,
    element: Option<&str>,
    shape: Option<Vec<u64>>,
    policy: Option<&str>,
    create: bool,
    flex_size: u64,
    checksum: bool,
    state_format: &str,
    secret: Option<Vec<u8>>,
    schema: Option<(String, u32)>,
    spin: Option<f64>,
) -> PyResult<Consumer> {
    guard(|| {
        let o = opts(
            name,
            element,
            shape,
            policy,
            flex_size,
            checksum,
            state_format,
            secret,
            None,
            schema,
            spin,
        )?;
        let (want_element, want_shape) = (o.element, o.shape.clone());
        let made = match hub {
            Some(hub) => {
                let client = hub.get().client()?;
                interruptible(py, move || {
                    let ch = configure(client.channel(&o.name), &o);
                    if create {
                        ch.open_or_create()
                    } else {
                        ch.open()
                    }
                    .map(AnyConsumer::Hub)
                    .map_err(|e| e.into())
                })?
            }
            None => interruptible(py, move || {
                let ch = configure(Channel::new(&o.name), &o);
                if create {
                    ch.open_or_create()
                } else {
                    ch.open()
                }
                .map(AnyConsumer::Local)
                .map_err(crate::AnyError::Channel)
            })?,
        }
        .map_err(crate::AnyError::into_py)?;
        let core = ConsumerCore::new(made);
        // A dtype or shape given alone is checked here (the builder checks them together).
        let mismatch = |field: &str, expected: String, found: String| {
            raise(
                "SchemaMismatch",
                format!(
                    "channel {:?} has {field} {found}, expected {expected}",
                    core.name
                ),
                &[
                    ("channel", core.name.clone()),
                    ("field", field.to_owned()),
                    ("expected", expected),
                    ("found", found),
                ],
            )
        };
        if let Some(e) = want_element
            && e != core.element
        {
            return Err(mismatch("element", e.to_string(), core.element.to_string()));
        }
        if let Some(s) = want_shape
            && s != core.max_shape
        {
            return Err(mismatch(
                "shape",
                format!("{s:?}"),
                format!("{:?}", core.max_shape),
            ));
        }
        Consumer::new(py, core)
    })
}

/// Removes a brokerless channel's segment (processes that have it mapped keep working on it).
#[pyfunction]
pub fn remove_channel(py: Python<'_>, name: &str) -> PyResult<()> {
    guard(|| {
        py.detach(|| shm::remove_channel(name))
            .map_err(channel_error)
    })
}
