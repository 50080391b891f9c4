//! The broker as a lifecycle module, and the foreground runner `labhub hub` uses.
//!
//! [`module`] is the lifecycle module [`MODULE_NAME`], depending on the log module: its start
//! does everything that can fail ([`Broker::start`]) and then serves on a thread of its own;
//! its stop sets the stop flag and joins that thread, so the audit log is flushed and the
//! sockets closed before the logger stops. [`run_foreground`] wraps this with SIGINT/SIGTERM
//! handling; the CLI and the integration tests' child process both call it.
#![deny(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::config::BrokerConfig;
use super::metrics::MetricsInfo;
use super::server::{Broker, BrokerError, BrokerStats};
use crate::keys::PublicKey;
use crate::lifecycle::{Lifecycle, LifecycleError, LifecycleGuard, ModuleDef};
use crate::log::LogConfig;

/// The lifecycle name of the broker module.
pub const MODULE_NAME: &str = "labhub::broker";

/// How long stopping waits for the broker thread (it checks its stop flag every 100 ms at most).
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// What a started broker tells the world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    /// The ROUTER endpoint bound.
    pub endpoint: String,
    /// The PUB endpoint bound.
    pub notify_endpoint: String,
    /// The broker's public key.
    pub public_key: PublicKey,
    /// The metrics endpoint, if the broker serves one.
    pub metrics: Option<MetricsInfo>,
    /// The grant socket (broker-granted shared memory).
    pub grant_socket: std::path::PathBuf,
}

type Outcome = Result<BrokerStats, BrokerError>;

/// The running broker, as the lifecycle service object.
#[derive(Debug)]
pub struct BrokerService {
    info: BrokerInfo,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<Outcome>>>,
    outcome: Mutex<Option<Outcome>>,
}

impl BrokerService {
    /// Endpoints and key.
    pub fn info(&self) -> &BrokerInfo {
        &self.info
    }

    /// Whether the serving thread ended (normally only after [`BrokerService::stop`]).
    pub fn is_finished(&self) -> bool {
        self.thread
            .lock()
            .map(|t| t.as_ref().is_none_or(JoinHandle::is_finished))
            .unwrap_or(true)
    }

    /// Stops serving and waits for the thread; the outcome is kept for [`BrokerService::take_outcome`].
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(handle) = handle {
            let outcome = handle.join().unwrap_or_else(|_| {
                tracing::error!("the broker thread panicked");
                Ok(BrokerStats::default())
            });
            if let Ok(mut slot) = self.outcome.lock() {
                *slot = Some(outcome);
            }
        }
    }

    /// How serving ended, once stopped.
    pub fn take_outcome(&self) -> Option<Outcome> {
        self.outcome.lock().ok().and_then(|mut o| o.take())
    }
}

/// The broker lifecycle module (depends on [`crate::log::MODULE_NAME`]).
pub fn module(config: BrokerConfig) -> ModuleDef {
    ModuleDef::service(
        MODULE_NAME,
        move || {
            let mut broker = Broker::start(config)?;
            let info = BrokerInfo {
                endpoint: broker.endpoint().to_owned(),
                notify_endpoint: broker.notify_endpoint().to_owned(),
                public_key: broker.public_key(),
                metrics: broker.metrics().cloned(),
                grant_socket: broker.grant_socket().to_owned(),
            };
            let stop = Arc::new(AtomicBool::new(false));
            let flag = Arc::clone(&stop);
            let thread = std::thread::Builder::new()
                .name("labhub-broker".into())
                .spawn(move || broker.run(&flag).map(|()| broker.stats()))?;
            Ok(Arc::new(BrokerService {
                info,
                stop,
                thread: Mutex::new(Some(thread)),
                outcome: Mutex::new(None),
            }))
        },
        SHUTDOWN_TIMEOUT,
        |service: Arc<BrokerService>| service.stop(),
    )
    .depends_on(crate::log::MODULE_NAME)
}

/// Why [`run_foreground`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForegroundError {
    /// Installing the signal handlers failed.
    #[error("cannot install the SIGINT/SIGTERM handlers")]
    Signals(#[source] std::io::Error),
    /// The lifecycle could not start (the broker's or the logger's startup failed; the source
    /// chain says why).
    #[error("the broker did not start")]
    Start(#[source] LifecycleError),
    /// Another lifecycle guard owns this process's lifecycle.
    #[error("the process's lifecycle is already owned by another guard")]
    NotOwner,
    /// The broker stopped with an error.
    #[error("the broker stopped with an error")]
    Serve(#[source] BrokerError),
}

/// Runs the broker in the foreground until SIGINT or SIGTERM: starts the log and broker modules,
/// calls `ready` with the endpoints and key, waits, and stops them in reverse order.
pub fn run_foreground(
    config: BrokerConfig,
    log: LogConfig,
    ready: impl FnOnce(&BrokerInfo),
) -> Result<BrokerStats, ForegroundError> {
    let term = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&term)).map_err(ForegroundError::Signals)?;
    }
    let guard = LifecycleGuard::new([crate::log::module(log), module(config)])
        .map_err(ForegroundError::Start)?;
    if !guard.is_owner() {
        return Err(ForegroundError::NotOwner);
    }
    let Some(service) = Lifecycle::global().service::<BrokerService>() else {
        return Err(ForegroundError::NotOwner);
    };
    ready(service.info());
    // The broker serves on its own thread; this one only waits for a signal (or an early end).
    while !term.load(Ordering::Relaxed) && !service.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
    }
    tracing::info!("stopping the broker");
    let report = guard.finalize();
    if !report.is_clean() {
        tracing::warn!(?report, "the lifecycle did not stop cleanly");
    }
    match service.take_outcome() {
        Some(Ok(stats)) => Ok(stats),
        Some(Err(e)) => Err(ForegroundError::Serve(e)),
        None => Ok(BrokerStats::default()),
    }
}
