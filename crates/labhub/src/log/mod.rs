//! Asynchronous logging on [`tracing`], run as a lifecycle service.
//!
//! Code everywhere logs with the ordinary `tracing` macros. The [`Logger`] formats each enabled
//! event into one line **on the caller's thread** and offers it to a bounded queue; a writer
//! thread owns the sink and writes the lines in batches. When the queue is full the line is
//! dropped and counted, and the writer later logs `labhub log dropped N lines (queue full)`.
//! [`Logger::flush`] returns once everything accepted before it is written and `fsync`ed;
//! shutdown drains the queue, so every accepted line reaches the sink.
//!
//! # Sinks
//!
//! One [`Sink`] at a time, chosen by [`LogConfig`] and changeable with [`Logger::set_sink`]:
//! the console (stderr, the level coloured on a terminal), a file (appended), a size-rotating
//! file, or syslog. Choosing a sink opens it at once, creating missing parent directories, so
//! a sink that cannot be used is a [`LogError`] then, not a silent loss later.
//!
//! Several processes may append to one file: each batch of whole lines is one `write(2)` on
//! an `O_APPEND` descriptor, so lines never interleave inside a line. Processes sharing a
//! rotating file coordinate through an exclusive `flock` on `<path>.lock` held for each batch.
//!
//! # Line format
//!
//! One line per event, fields separated by single spaces, stable for `grep`, `cut` and `awk`:
//!
//! ```text
//! 2026-11-27T12:50:53.123456Z INFO  4242:4250 labhub::shm: open{channel="cam0"}: created slots=8
//! └ timestamp (UTC, RFC 3339, µs)  │     │    │            │                     │       └ fields
//!                                  │     │    │            │                     └ message
//!                                  │     │    │            └ spans, outermost first (if any)
//!                                  │     │    └ target, then ": "
//!                                  │     └ process id:kernel thread id
//!                                  └ level, padded to 5 (ERROR, WARN, INFO, DEBUG, TRACE)
//! ```
//!
//! String field values are written with Rust's `{:?}` quoting; control characters in the
//! message are escaped (`\n`), so an event never spans two lines. The logger's own lines use
//! the target `labhub::log`. Syslog gets the line from the target on (it adds its own time and
//! pid); levels map to `LOG_ERR`, `LOG_WARNING`, `LOG_INFO` and `LOG_DEBUG`.
//!
//! # Lifecycle
//!
//! [`module`] is the lifecycle module named [`MODULE_NAME`]: its start creates the logger and
//! routes the process's `tracing` events to it; its stop drains the queue. Other code reaches
//! the running logger through [`logger`]. Logging before the module starts or after it stops
//! is a silent no-op. [`Logger::start`] creates a logger outside any lifecycle (tests,
//! embedding); give it events with [`Logger::dispatch`], [`Logger::layer`] or
//! [`Logger::route_global_events`].
//!
//! ```
//! use labhub::log::{LogConfig, Logger, Sink};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("labhub-log-doc-{}", std::process::id()));
//! let logger = Logger::start(LogConfig::new(Sink::File(dir.join("app.log"))))?;
//! tracing::dispatcher::with_default(&logger.dispatch(), || {
//!     tracing::info!(frames = 3, "camera started");
//! });
//! logger.flush()?; // written and fsynced
//! logger.shutdown();
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```
#![deny(unsafe_code)]

mod format;
mod layer;
pub(crate) mod sink;
mod writer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use tracing::Level;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;

pub use layer::LoggerLayer;

use format::Line;
use sink::OpenSink;
use writer::{Control, Counters, Msg, Writer};

/// Where log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Sink {
    /// Standard error; the level is coloured when stderr is a terminal.
    Console,
    /// A file, appended to (created with mode 0644, parent directories too).
    File(PathBuf),
    /// A file that is rotated before it would grow past `max_bytes`: `<path>.1` … `<path>.N`
    /// keep the older lines, newest first, for `backups` = N. With zero backups the file is
    /// truncated and restarted instead. Processes sharing the file must all use this sink
    /// for it: they coordinate through `<path>.lock` (never deleted).
    RotatingFile {
        /// The current log file.
        path: PathBuf,
        /// Size a file may reach (a single longer line still gets a file of its own).
        max_bytes: u64,
        /// How many older files to keep.
        backups: u32,
    },
    /// The system log (`syslog(3)`, facility `LOG_USER`), under `ident`.
    Syslog {
        /// The program name syslog shows.
        ident: String,
    },
}

/// How a [`Logger`] starts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogConfig {
    /// Where lines go.
    pub sink: Sink,
    /// The most verbose level written; changeable later with [`Logger::set_level`].
    pub level: LevelFilter,
    /// How many lines may wait for the writer before new ones are dropped (at least 1). The
    /// queue is allocated up front, about 256 bytes per line.
    pub queue_capacity: usize,
}

impl LogConfig {
    /// Default queue capacity, in lines.
    pub const DEFAULT_QUEUE_CAPACITY: usize = 10_000;

    /// `sink` at level INFO with the default queue capacity.
    pub fn new(sink: Sink) -> Self {
        LogConfig {
            sink,
            level: LevelFilter::INFO,
            queue_capacity: Self::DEFAULT_QUEUE_CAPACITY,
        }
    }

    /// Sets the level.
    pub fn level(mut self, level: LevelFilter) -> Self {
        self.level = level;
        self
    }

    /// Sets the queue capacity, in lines.
    pub fn queue_capacity(mut self, lines: usize) -> Self {
        self.queue_capacity = lines;
        self
    }
}

impl Default for LogConfig {
    /// The console at level INFO.
    fn default() -> Self {
        LogConfig::new(Sink::Console)
    }
}

/// Why a logging operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// A missing parent directory of a log file could not be created.
    #[error("cannot create log directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A log file (or the rotation lock beside it) could not be opened for appending.
    #[error("cannot open log file {path}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A rotating sink was configured with values it cannot work with.
    #[error("invalid rotating log file {path}: {reason}")]
    InvalidRotation {
        /// The log file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// A syslog ident contains a NUL byte.
    #[error("invalid syslog ident {ident:?}: contains a NUL byte")]
    InvalidSyslogIdent {
        /// The ident given.
        ident: String,
    },
    /// Syslog cannot be used on this platform.
    #[error("cannot open syslog")]
    Syslog {
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The queue capacity is zero.
    #[error("log queue capacity must be at least 1 line")]
    ZeroQueueCapacity,
    /// The writer thread could not be started.
    #[error("cannot start the log writer thread")]
    SpawnWriter {
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Writing to or syncing the sink failed since the last flush.
    #[error("cannot write to log sink {sink}")]
    Write {
        /// The sink, e.g. `file /var/log/app.log`.
        sink: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The logger has been shut down.
    #[error("the logger has been shut down")]
    Stopped,
    /// Another `tracing` subscriber was installed as the process-wide default before the
    /// logger could install its own.
    #[error("another tracing subscriber is already the global default")]
    GlobalSubscriberTaken,
}

/// The asynchronous logger: a bounded queue and the writer thread that owns the sink.
///
/// Usually one per process, started and stopped by the [`module`] and reached with
/// [`logger`]. All methods take `&self` and may be called from any thread.
pub struct Logger {
    /// 0 = off, 1 = error … 5 = trace.
    level: AtomicU8,
    /// `None` once shut down. Callers hold the read lock while offering a line, so once
    /// shutdown has taken the sender no line can be accepted that the writer will not see.
    sender: RwLock<Option<SyncSender<Msg>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    counters: Arc<Counters>,
    pid: u32,
    /// Dispatchers made by [`Logger::dispatch`], to rebuild callsite interest in (see
    /// [`Logger::set_level`]).
    dispatches: Mutex<Vec<tracing::dispatcher::WeakDispatch>>,
}

impl std::fmt::Debug for Logger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logger")
            .field("level", &self.level())
            .field("running", &self.is_running())
            .field("dropped", &self.dropped_count())
            .finish()
    }
}

impl Logger {
    /// Opens the sink and starts the writer thread. Events reach the logger only through
    /// [`Logger::dispatch`], [`Logger::layer`] or [`Logger::route_global_events`] (which
    /// the lifecycle [`module`] calls).
    pub fn start(config: LogConfig) -> Result<Arc<Logger>, LogError> {
        if config.queue_capacity == 0 {
            return Err(LogError::ZeroQueueCapacity);
        }
        let sink = OpenSink::open(&config.sink)?;
        let (tx, rx) = mpsc::sync_channel(config.queue_capacity);
        let counters = Arc::new(Counters::default());
        let pid = std::process::id();
        let writer = Writer {
            rx,
            sink,
            counters: Arc::clone(&counters),
            pid,
        };
        let handle = std::thread::Builder::new()
            .name("labhub-log".to_owned())
            .spawn(move || writer.run())
            .map_err(|source| LogError::SpawnWriter { source })?;
        Ok(Arc::new(Logger {
            level: AtomicU8::new(filter_to_u8(config.level)),
            sender: RwLock::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
            counters,
            pid,
            dispatches: Mutex::new(Vec::new()),
        }))
    }

    /// A `tracing` layer writing to this logger, to compose into a subscriber of your own.
    pub fn layer(self: &Arc<Self>) -> LoggerLayer {
        LoggerLayer {
            logger: Arc::clone(self),
        }
    }

    /// A subscriber that writes to this logger, for [`tracing::dispatcher::with_default`]
    /// (scoped to a thread) or [`tracing::dispatcher::set_global_default`].
    pub fn dispatch(self: &Arc<Self>) -> tracing::Dispatch {
        let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(self.layer()));
        let mut dispatches = self.dispatches.lock().unwrap_or_else(|p| p.into_inner());
        dispatches.retain(|d| d.upgrade().is_some());
        dispatches.push(dispatch.downgrade());
        dispatch
    }

    /// Sends the process's `tracing` events (the global default subscriber) to this logger
    /// instead of the current one. The first call installs labhub's subscriber as the global
    /// default; that fails with [`LogError::GlobalSubscriberTaken`] if another one was set.
    pub fn route_global_events(self: &Arc<Self>) -> Result<(), LogError> {
        if !self.is_running() {
            return Err(LogError::Stopped);
        }
        layer::route_to(self)
    }

    /// Whether the process-wide `tracing` events currently go to this logger.
    pub fn is_global(&self) -> bool {
        layer::is_current(self)
    }

    /// The most verbose level written.
    pub fn level(&self) -> LevelFilter {
        filter_from_u8(self.level_u8())
    }

    /// Changes the level; takes effect for events emitted after the call returns.
    pub fn set_level(&self, level: LevelFilter) {
        self.level.store(filter_to_u8(level), Ordering::Relaxed);
        layer::level_changed(self);
        // Callsites cache whether they are enabled: recompute, and the global max level. While
        // only one dispatcher exists in the process, tracing asks the calling thread's default
        // dispatcher rather than the registered one, so rebuild inside one of ours (a thread
        // with no default would otherwise disable every callsite).
        let ours = self
            .dispatches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find_map(|d| d.upgrade());
        match ours {
            Some(dispatch) => tracing::dispatcher::with_default(
                &dispatch,
                tracing::callsite::rebuild_interest_cache,
            ),
            None => tracing::callsite::rebuild_interest_cache(),
        }
    }

    /// Switches to another sink. The new sink is opened here, so a bad one is an error now
    /// and the old sink stays in use; lines logged before the call go to the old sink, lines
    /// logged after it returns to the new one.
    pub fn set_sink(&self, sink: Sink) -> Result<(), LogError> {
        let open = OpenSink::open(&sink)?;
        let (reply, done) = mpsc::sync_channel(1);
        self.send_control(Control::SetSink(Box::new(open), reply))?;
        done.recv().map_err(|_| LogError::Stopped)
    }

    /// Waits until every line accepted before this call is written, then makes the sink
    /// durable (`fsync` for files). Reports the first write error since the previous flush.
    pub fn flush(&self) -> Result<(), LogError> {
        let (reply, done) = mpsc::sync_channel(1);
        self.send_control(Control::Flush(reply))?;
        done.recv().map_err(|_| LogError::Stopped)?
    }

    /// Lines dropped because the queue was full, since start.
    pub fn dropped_count(&self) -> u64 {
        self.counters.total.load(Ordering::Relaxed)
    }

    /// Whether the logger still accepts lines (it has not been shut down).
    pub fn is_running(&self) -> bool {
        self.sender
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Stops accepting lines, lets the writer write everything already queued, flushes the
    /// sink and joins the writer. Idempotent; later log calls are silent no-ops and control
    /// calls return [`LogError::Stopped`].
    pub fn shutdown(&self) {
        layer::unroute(self);
        let sender = self
            .sender
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        // The writer's recv fails once this last sender is gone and the queue is empty.
        drop(sender);
        let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }

    /// Parks the writer thread until the returned guard is dropped, after it has written
    /// everything queued before this call. While parked, lines fill the queue and then are
    /// dropped: a test aid that makes a full queue deterministic.
    #[doc(hidden)]
    pub fn hold_writer(&self) -> Result<WriterHold, LogError> {
        let (parked, is_parked) = mpsc::sync_channel(1);
        let (release, wait) = mpsc::sync_channel(0);
        self.send_control(Control::Hold {
            parked,
            release: wait,
        })?;
        is_parked.recv().map_err(|_| LogError::Stopped)?;
        Ok(WriterHold { _release: release })
    }

    fn level_u8(&self) -> u8 {
        self.level.load(Ordering::Relaxed)
    }

    /// Offers a line to the queue; drops and counts it when the queue is full.
    fn submit(&self, line: Line) {
        let sender = self.sender.read().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = sender.as_ref()
            && let Err(TrySendError::Full(_)) = tx.try_send(Msg::Line(line))
        {
            self.counters.unreported.fetch_add(1, Ordering::Relaxed);
            self.counters.total.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Queues a control message, waiting for room: control messages are never dropped.
    fn send_control(&self, control: Control) -> Result<(), LogError> {
        // Clone so that waiting for room does not hold the lock shutdown needs.
        let sender = self
            .sender
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(LogError::Stopped)?;
        sender
            .send(Msg::Control(control))
            .map_err(|_| LogError::Stopped)
    }
}

impl Drop for Logger {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Keeps the writer parked (see [`Logger::hold_writer`]) until dropped.
#[doc(hidden)]
#[derive(Debug)]
pub struct WriterHold {
    _release: SyncSender<()>,
}

fn filter_to_u8(filter: LevelFilter) -> u8 {
    match filter.into_level() {
        None => 0,
        Some(level) => level_to_u8(level),
    }
}

fn level_to_u8(level: Level) -> u8 {
    match level {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

fn filter_from_u8(v: u8) -> LevelFilter {
    match v {
        0 => LevelFilter::OFF,
        1 => LevelFilter::ERROR,
        2 => LevelFilter::WARN,
        3 => LevelFilter::INFO,
        4 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

fn level_enabled(filter: u8, level: &Level) -> bool {
    level_to_u8(*level) <= filter
}

/// The name of the log module in the lifecycle; modules that log depend on it.
pub const MODULE_NAME: &str = "labhub::log";

/// How long the lifecycle waits for the log module to drain its queue at shutdown.
pub const SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The log module: a lifecycle service whose startup starts a [`Logger`] with `config` and
/// routes the process's `tracing` events to it, and whose shutdown drains the queue, flushes
/// and stops it (bounded by [`SHUTDOWN_TIMEOUT`]).
///
/// Startup fails with the sink's [`LogError`], or with [`LogError::GlobalSubscriberTaken`] if
/// the program installed a global `tracing` subscriber of its own; such a program adds
/// [`Logger::layer`] to its subscriber instead of using this module.
///
/// ```no_run
/// use labhub::lifecycle::LifecycleGuard;
/// use labhub::log::{self, LogConfig, Sink};
///
/// let _guard = LifecycleGuard::new([log::module(LogConfig::new(Sink::File("app.log".into())))])?;
/// tracing::info!("running");
/// log::logger().expect("the log module is started").flush()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn module(config: LogConfig) -> crate::lifecycle::ModuleDef {
    crate::lifecycle::ModuleDef::service(
        MODULE_NAME,
        move || {
            let logger = Logger::start(config)?;
            if let Err(e) = logger.route_global_events() {
                logger.shutdown();
                return Err(e.into());
            }
            Ok(logger)
        },
        SHUTDOWN_TIMEOUT,
        |logger: Arc<Logger>| logger.shutdown(),
    )
}

/// The logger of the global lifecycle's log module, if it is started.
pub fn logger() -> Option<Arc<Logger>> {
    crate::lifecycle::Lifecycle::global().service::<Logger>()
}
