//! Modules with dependencies, started in dependency order and stopped in exact reverse.
//!
//! The Rust form of pylabhub's `LifecycleManager`. A [`ModuleDef`] names a module, the modules it
//! depends on, a startup action, a shutdown action bounded by a timeout, and whether it is
//! persistent. A [`Lifecycle`] holds the modules; [`Lifecycle::global`] is the process-wide one and
//! a [`LifecycleGuard`] starts it on creation and stops it on drop.
//!
//! # Static modules
//!
//! Static modules are [registered](Lifecycle::register) before [`Lifecycle::initialize`]; a
//! registration afterwards is [`LifecycleError::RegisteredAfterInit`]. Initialisation checks the
//! whole graph (every dependency registered, no cycle) and then starts the modules one by one in
//! dependency order; among modules whose dependencies are all started, the one registered first
//! starts first, so the order is deterministic. If a startup action fails (returns `Err` or
//! panics), the modules already started are stopped in reverse order and the error is returned:
//! nothing is left half-started. Startup actions run on the calling thread and have no timeout.
//! A failed initialisation is final: the actions have been consumed, and every later
//! `initialize` returns [`LifecycleError::FailedEarlier`].
//!
//! Static modules may depend only on static modules (a dynamic module cannot be registered before
//! initialisation, so such a dependency is [`LifecycleError::UnknownDependency`]).
//!
//! # Finalisation
//!
//! [`Lifecycle::finalize`] runs once. It stops the loaded dynamic modules first, in reverse load
//! order (a reverse topological order), then the static modules in exact reverse startup order.
//! Each shutdown action runs on its own thread and is waited for at most its timeout; one that
//! overruns is left running on its detached thread, logged with `tracing::warn!` and marked
//! [`ShutdownResult::TimedOut`] in the returned [`FinalizeReport`], and finalisation goes on. A
//! shutdown that panics is marked [`ShutdownResult::Panicked`]. Threads that call `finalize` while
//! another thread finalises wait until it has finished and then return a report whose outcome is
//! [`FinalizeOutcome::AlreadyFinalized`].
//!
//! # Dynamic modules
//!
//! Dynamic modules are [registered](Lifecycle::register_dynamic) between initialisation and
//! finalisation, then [loaded](Lifecycle::load) and [unloaded](Lifecycle::unload) at run time.
//! Their dependencies must be registered when they are (so a new module can only point at
//! existing ones); they may be static modules (started by initialisation) or dynamic modules,
//! which `load` loads first, recursively. The rules:
//!
//! - A module is *needed* while a loaded dynamic module depends on it, or while it was loaded by
//!   an explicit [`load`](Lifecycle::load) call that no [`unload`](Lifecycle::unload) has undone.
//!   Loading an already-loaded module only marks it as explicitly loaded.
//! - `unload` of a module that loaded dynamic modules still depend on is refused with
//!   [`LifecycleError::StillNeeded`], which names them. Otherwise the module stops and its dynamic
//!   dependencies that nobody needs any more stop too (cascade), dependents before dependencies.
//! - A persistent dynamic module is never stopped by `unload` (the call succeeds and does
//!   nothing, also when the module is reached by a cascade); it stops at finalisation.
//! - A stopped dynamic module is removed: its actions ran and cannot run again. To load it again,
//!   register it again. The same holds for the modules of a failed `load`: the module whose
//!   startup failed and the dependencies that call had started (stopped again in reverse order)
//!   are removed; dependencies that were loaded before the call stay loaded.
//! - Unloading a module that is registered but not loaded does nothing and succeeds.
//!
//! # Re-entrancy and concurrency
//!
//! `initialize`, `finalize`, `load` and `unload` are serialised: one runs at a time per
//! `Lifecycle`. Called from inside a startup or shutdown action of the same `Lifecycle` (on the
//! thread running the action), they are refused at once with [`LifecycleError::Reentrant`] (or
//! [`FinalizeOutcome::Reentrant`]) instead of deadlocking. A call from another thread waits for the
//! running operation to end, but at most the lifecycle's wait limit ([`DEFAULT_WAIT_LIMIT`], or
//! [`Lifecycle::with_wait_limit`]); then it fails with [`LifecycleError::Busy`]. So a startup action
//! that hands a `load` to another thread and waits for it does not hang forever: the other
//! thread's `load` fails after the wait limit. [`Lifecycle::service`], [`Lifecycle::state`],
//! [`Lifecycle::is_initialized`] and [`Lifecycle::register_dynamic`] never wait for an operation
//! and may be called from anywhere, including actions.
//!
//! # Services
//!
//! Long-lived services (the logger, the Hub client) are modules built with
//! [`ModuleDef::service`]: the startup creates the service object and the lifecycle keeps it, so
//! it is reached through [`Lifecycle::service`] and its start and stop order is the lifecycle's.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use labhub::lifecycle::{Lifecycle, ModuleDef};
//!
//! struct Clock { started: std::time::Instant }
//!
//! let lifecycle = Lifecycle::new();
//! lifecycle.register(ModuleDef::service(
//!     "clock",
//!     || Ok(Arc::new(Clock { started: std::time::Instant::now() })),
//!     Duration::from_secs(1),
//!     |_clock: Arc<Clock>| {},
//! ))?;
//! lifecycle.register(ModuleDef::new("app").depends_on("clock").on_startup(|| Ok(())))?;
//! lifecycle.initialize()?;
//! let clock = lifecycle.service::<Clock>().expect("started");
//! assert!(clock.started.elapsed() >= Duration::ZERO);
//! let report = lifecycle.finalize();
//! assert_eq!(report.stop_order(), ["app", "clock"]);
//! assert!(lifecycle.service::<Clock>().is_none());
//! # Ok::<(), labhub::lifecycle::LifecycleError>(())
//! ```
#![deny(unsafe_code)]

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// The error a startup action returns.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// How long an operation waits for another one that is running before giving up with
/// [`LifecycleError::Busy`], unless the lifecycle was made with [`Lifecycle::with_wait_limit`].
pub const DEFAULT_WAIT_LIMIT: Duration = Duration::from_secs(30);

/// The longest module name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 256;

type StartupFn = Box<dyn FnOnce() -> Result<(), BoxError> + Send + 'static>;
type ShutdownFn = Box<dyn FnOnce() + Send + 'static>;
type ServiceObject = Arc<dyn Any + Send + Sync>;
type ServiceSlot = Arc<Mutex<Option<ServiceObject>>>;

/// The definition of one module: name, dependencies, actions, persistence.
///
/// Built with [`ModuleDef::new`] (or [`ModuleDef::service`]) and the chained setters, then handed
/// to [`Lifecycle::register`], [`Lifecycle::register_dynamic`] or [`LifecycleGuard::new`]. Names
/// are case-sensitive, non-empty and at most [`MAX_NAME_LEN`] bytes long.
pub struct ModuleDef {
    name: String,
    dependencies: Vec<String>,
    startup: Option<StartupFn>,
    shutdown: Option<(Duration, ShutdownFn)>,
    persistent: bool,
    service: Option<ServiceCell>,
}

/// Where a service module keeps its object; the lifecycle hands it out while the module runs.
struct ServiceCell {
    type_id: TypeId,
    slot: ServiceSlot,
}

impl ModuleDef {
    /// A module with no dependencies and no actions.
    pub fn new(name: impl Into<String>) -> Self {
        ModuleDef {
            name: name.into(),
            dependencies: Vec::new(),
            startup: None,
            shutdown: None,
            persistent: false,
            service: None,
        }
    }

    /// Adds a dependency: `dep` starts before this module and stops after it. Naming the same
    /// dependency twice has no further effect.
    pub fn depends_on(mut self, dep: impl Into<String>) -> Self {
        let dep = dep.into();
        if !self.dependencies.contains(&dep) {
            self.dependencies.push(dep);
        }
        self
    }

    /// Sets the startup action (replacing any earlier one, including a service's). It runs on the
    /// thread that initialises or loads, without a timeout; an `Err` or a panic fails the start.
    pub fn on_startup(mut self, f: impl FnOnce() -> Result<(), BoxError> + Send + 'static) -> Self {
        self.startup = Some(Box::new(f));
        self
    }

    /// Sets the shutdown action (replacing any earlier one, including a service's) and the
    /// longest time stopping waits for it. It runs on a thread of its own; if it overruns
    /// `timeout` it is left running there and reported as timed out.
    pub fn on_shutdown(mut self, timeout: Duration, f: impl FnOnce() + Send + 'static) -> Self {
        self.shutdown = Some((timeout, Box::new(f)));
        self
    }

    /// Whether the module is persistent: a persistent dynamic module is not stopped by
    /// [`Lifecycle::unload`], only by finalisation. Static modules always run until finalisation,
    /// so the flag changes nothing for them.
    pub fn persistent(mut self, yes: bool) -> Self {
        self.persistent = yes;
        self
    }

    /// A module whose startup creates a service object the lifecycle owns until shutdown; `stop`
    /// runs at shutdown (bounded by `timeout`), then the lifecycle drops its Arc.
    ///
    /// While the module is started, [`Lifecycle::service::<T>()`](Lifecycle::service) returns the
    /// object; from the moment it starts stopping, it returns `None`. If several started modules
    /// provide the same `T`, the first registered one is returned.
    pub fn service<T: Send + Sync + 'static>(
        name: impl Into<String>,
        start: impl FnOnce() -> Result<Arc<T>, BoxError> + Send + 'static,
        timeout: Duration,
        stop: impl FnOnce(Arc<T>) + Send + 'static,
    ) -> Self {
        let slot: ServiceSlot = Arc::new(Mutex::new(None));
        let start_slot = Arc::clone(&slot);
        let stop_slot = Arc::clone(&slot);
        let mut def = ModuleDef::new(name)
            .on_startup(move || {
                let object = start()?;
                *lock_ignoring_poison(&start_slot) = Some(object as ServiceObject);
                Ok(())
            })
            .on_shutdown(timeout, move || {
                let object = lock_ignoring_poison(&stop_slot).take();
                if let Some(object) = object.and_then(|o| o.downcast::<T>().ok()) {
                    stop(object);
                }
            });
        def.service = Some(ServiceCell {
            type_id: TypeId::of::<T>(),
            slot,
        });
        def
    }

    /// The module's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The names of the modules this one depends on, in the order they were added.
    pub fn dependencies(&self) -> &[String] {
        &self.dependencies
    }
}

impl fmt::Debug for ModuleDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModuleDef")
            .field("name", &self.name)
            .field("dependencies", &self.dependencies)
            .field("has_startup", &self.startup.is_some())
            .field("shutdown_timeout", &self.shutdown.as_ref().map(|(t, _)| *t))
            .field("persistent", &self.persistent)
            .field("is_service", &self.service.is_some())
            .finish()
    }
}

/// Where a module is in its life. Dynamic modules that were stopped are removed, so
/// [`Lifecycle::state`] returns `None` for them.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModuleState {
    /// Registered, not started.
    Registered,
    /// Its startup action is running.
    Starting,
    /// Started (a static module) or loaded (a dynamic one).
    Started,
    /// Its startup action failed or panicked.
    Failed,
    /// Its shutdown action is running.
    Stopping,
    /// Stopped; its shutdown action (if any) returned.
    Stopped,
    /// Its shutdown action overran its timeout and was left running on a detached thread.
    ShutdownTimedOut,
    /// Its shutdown action panicked or could not run.
    ShutdownFailed,
}

/// Why an operation on a [`Lifecycle`] failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// A module name is empty or too long.
    #[error("invalid module name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A module with this name is already registered.
    #[error("module {module:?} is already registered")]
    DuplicateModule {
        /// The name registered twice.
        module: String,
    },
    /// A module depends on a module that is not registered (for a static module: not a
    /// registered static module).
    #[error("module {module:?} depends on {dependency:?}, which is not registered")]
    UnknownDependency {
        /// The module whose dependency is missing.
        module: String,
        /// The missing dependency.
        dependency: String,
    },
    /// The dependencies form a cycle.
    #[error("dependency cycle: {}", .cycle.join(" -> "))]
    Cycle {
        /// The cycle in dependency direction, first module repeated at the end:
        /// `["a", "b", "a"]` means a depends on b, which depends on a.
        cycle: Vec<String>,
    },
    /// A startup action returned an error; the modules started before it were stopped again.
    #[error("startup of module {module:?} failed")]
    StartupFailed {
        /// The module whose startup failed.
        module: String,
        /// The error the startup action returned.
        #[source]
        source: BoxError,
    },
    /// A startup action panicked; the modules started before it were stopped again.
    #[error("startup of module {module:?} panicked: {message}")]
    StartupPanicked {
        /// The module whose startup panicked.
        module: String,
        /// The panic message, if it was a string.
        message: String,
    },
    /// A static module was registered after initialisation began.
    #[error("static module {module:?} registered after initialisation")]
    RegisteredAfterInit {
        /// The module that came too late.
        module: String,
    },
    /// The operation needs an initialised lifecycle.
    #[error("the lifecycle is not initialised")]
    NotInitialized,
    /// The lifecycle has been finalised (or is finalising).
    #[error("the lifecycle is already finalised")]
    AlreadyFinalized,
    /// An earlier initialisation failed, so the lifecycle cannot start.
    #[error("an earlier initialisation failed at module {module:?}; the lifecycle cannot start")]
    FailedEarlier {
        /// The module whose startup failed then.
        module: String,
    },
    /// No module of this name is registered.
    #[error("no module {module:?} is registered")]
    UnknownModule {
        /// The name asked for.
        module: String,
    },
    /// Only dynamic modules are loaded and unloaded.
    #[error("module {module:?} is static; only dynamic modules are loaded and unloaded")]
    NotDynamic {
        /// The static module.
        module: String,
    },
    /// Unloading was refused because loaded modules still depend on the module.
    #[error("module {module:?} is still needed by {}", .dependents.join(", "))]
    StillNeeded {
        /// The module that was to be unloaded.
        module: String,
        /// The loaded modules that depend on it.
        dependents: Vec<String>,
    },
    /// The operation was called from inside a startup or shutdown action of the same lifecycle.
    #[error("{operation} refused: called from inside an action of module {inside:?}")]
    Reentrant {
        /// The refused operation: `initialize`, `load` or `unload`.
        operation: &'static str,
        /// The module whose action made the call.
        inside: String,
    },
    /// Another operation kept running longer than the wait limit.
    #[error("{operation} gave up after waiting {waited:?} for a running {running}")]
    Busy {
        /// The operation that gave up.
        operation: &'static str,
        /// The operation that was running.
        running: &'static str,
        /// How long it waited.
        waited: Duration,
    },
}

/// How a finalize call ended.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalizeOutcome {
    /// This call stopped the modules.
    Finalized,
    /// Another call finalised (this one waited for it to end if it was running).
    AlreadyFinalized,
    /// The lifecycle was never initialised, or its initialisation failed (and was rolled back);
    /// nothing was stopped.
    NotInitialized,
    /// Called from inside an action of the same lifecycle; nothing was done.
    Reentrant,
    /// Another operation kept running longer than the wait limit; nothing was done.
    Busy,
}

/// How one module's shutdown went.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShutdownResult {
    /// The shutdown action returned in time (or the module had none).
    Stopped,
    /// The shutdown action overran its timeout; it is still running on a detached thread.
    TimedOut {
        /// The timeout it overran.
        timeout: Duration,
    },
    /// The shutdown action panicked.
    Panicked {
        /// The panic message, if it was a string.
        message: String,
    },
    /// The shutdown action could not run (no thread could be spawned for it).
    NotRun {
        /// Why.
        reason: String,
    },
}

/// One module stopped by finalisation.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownRecord {
    /// The module.
    pub module: String,
    /// How its shutdown went.
    pub result: ShutdownResult,
    /// How long finalisation waited for it.
    pub elapsed: Duration,
}

/// What [`Lifecycle::finalize`] did.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalizeReport {
    /// How the call ended.
    pub outcome: FinalizeOutcome,
    /// The modules stopped by this call, in stop order.
    pub modules: Vec<ShutdownRecord>,
}

impl FinalizeReport {
    fn empty(outcome: FinalizeOutcome) -> Self {
        FinalizeReport {
            outcome,
            modules: Vec::new(),
        }
    }

    /// The names of the stopped modules, in stop order.
    pub fn stop_order(&self) -> Vec<&str> {
        self.modules.iter().map(|r| r.module.as_str()).collect()
    }

    /// The modules whose shutdown overran its timeout.
    pub fn timed_out(&self) -> Vec<&str> {
        self.modules
            .iter()
            .filter(|r| matches!(r.result, ShutdownResult::TimedOut { .. }))
            .map(|r| r.module.as_str())
            .collect()
    }

    /// Whether every shutdown of this call returned in time without panicking.
    pub fn is_clean(&self) -> bool {
        self.modules
            .iter()
            .all(|r| r.result == ShutdownResult::Stopped)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Registering,
    Initializing,
    Running,
    /// Initialisation failed and was rolled back; `Graph::failed_module` says where.
    Failed,
    Finalizing,
    Finalized,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Static,
    Dynamic,
}

struct Node {
    def: ModuleDef,
    kind: Kind,
    state: ModuleState,
    /// Registration order; ties in the start order go to the lower one.
    seq: u64,
    /// For a loaded dynamic module: when it was loaded; it stops in reverse of this.
    loaded_seq: u64,
    /// For a dynamic module: loaded by an explicit `load` that no `unload` undid.
    explicit: bool,
}

struct Graph {
    phase: Phase,
    /// The operation in progress; user actions may be running, without the graph lock.
    busy: Option<&'static str>,
    nodes: HashMap<String, Node>,
    next_seq: u64,
    /// Static modules, in the order they started.
    started: Vec<String>,
    /// Set when initialisation failed: the module whose startup failed.
    failed_module: Option<String>,
}

impl Graph {
    fn node(&self, name: &str) -> &Node {
        &self.nodes[name]
    }

    fn node_mut(&mut self, name: &str) -> &mut Node {
        self.nodes.get_mut(name).expect("module in graph")
    }

    fn bump(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Loaded dynamic modules that depend directly on `name`, in load order.
    fn loaded_dependents(&self, name: &str) -> Vec<String> {
        let mut dependents: Vec<&Node> = self
            .nodes
            .values()
            .filter(|n| {
                n.kind == Kind::Dynamic
                    && n.state == ModuleState::Started
                    && n.def.dependencies.iter().any(|d| d == name)
            })
            .collect();
        dependents.sort_by_key(|n| n.loaded_seq);
        dependents.iter().map(|n| n.def.name.clone()).collect()
    }
}

/// A set of modules and their order of start and stop.
///
/// Tests make their own instances with [`Lifecycle::new`]; programs use [`Lifecycle::global`],
/// usually through a [`LifecycleGuard`]. See the [module documentation](self) for the rules.
///
/// Dropping an instance that is still initialised finalises it (the global one is never dropped).
pub struct Lifecycle {
    graph: Mutex<Graph>,
    /// Signalled whenever an operation ends.
    changed: Condvar,
    wait_limit: Duration,
    id: u64,
}

thread_local! {
    /// The actions running on this thread: (lifecycle id, module name), innermost last.
    static IN_ACTION: RefCell<Vec<(u64, String)>> = const { RefCell::new(Vec::new()) };
}

/// Marks the current thread as running an action of a lifecycle until dropped.
struct ActionScope {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl ActionScope {
    fn enter(lifecycle: u64, module: &str) -> Self {
        IN_ACTION.with(|a| a.borrow_mut().push((lifecycle, module.to_owned())));
        ActionScope {
            _not_send: std::marker::PhantomData,
        }
    }
}

impl Drop for ActionScope {
    fn drop(&mut self) {
        IN_ACTION.with(|a| a.borrow_mut().pop());
    }
}

/// The module whose action of lifecycle `id` is running on this thread, if any.
fn running_action(id: u64) -> Option<String> {
    IN_ACTION.with(|a| {
        a.borrow()
            .iter()
            .rev()
            .find(|(l, _)| *l == id)
            .map(|(_, m)| m.clone())
    })
}

/// Holds the right to run an operation; releases it and wakes waiters when dropped.
struct OperationToken<'a> {
    lifecycle: &'a Lifecycle,
}

impl Drop for OperationToken<'_> {
    fn drop(&mut self) {
        self.lifecycle.lock().busy = None;
        self.lifecycle.changed.notify_all();
    }
}

/// Locks the graph. Never emit `tracing` events or drop user values while holding it: the
/// logger's layer may itself reach the lifecycle (for its service).
fn lock_ignoring_poison<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The lifecycle never runs user code under its locks, so poisoning can only come from a
    // bug of ours; the data stays consistent between statements, so go on.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

fn validate_name(name: &str) -> Result<(), LifecycleError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.len() > MAX_NAME_LEN {
        "longer than 256 bytes"
    } else if name.chars().any(char::is_control) {
        "contains a control character"
    } else {
        return Ok(());
    };
    Err(LifecycleError::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = self.lock();
        f.debug_struct("Lifecycle")
            .field("phase", &g.phase)
            .field("busy", &g.busy)
            .field("modules", &g.nodes.len())
            .field("wait_limit", &self.wait_limit)
            .finish()
    }
}

impl Lifecycle {
    /// An empty lifecycle with the [`DEFAULT_WAIT_LIMIT`].
    pub fn new() -> Self {
        Self::with_wait_limit(DEFAULT_WAIT_LIMIT)
    }

    /// An empty lifecycle whose operations wait at most `limit` for another running operation
    /// before failing with [`LifecycleError::Busy`].
    pub fn with_wait_limit(limit: Duration) -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Lifecycle {
            graph: Mutex::new(Graph {
                phase: Phase::Registering,
                busy: None,
                nodes: HashMap::new(),
                next_seq: 0,
                started: Vec::new(),
                failed_module: None,
            }),
            changed: Condvar::new(),
            wait_limit: limit,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The process-wide lifecycle, the one [`LifecycleGuard`] drives.
    pub fn global() -> &'static Lifecycle {
        static GLOBAL: OnceLock<Lifecycle> = OnceLock::new();
        GLOBAL.get_or_init(Lifecycle::new)
    }

    fn lock(&self) -> MutexGuard<'_, Graph> {
        lock_ignoring_poison(&self.graph)
    }

    /// Registers a static module. Only before [`initialize`](Self::initialize) begins; its
    /// dependencies are checked by `initialize`, so they may be registered in any order.
    ///
    /// # Errors
    ///
    /// [`InvalidName`](LifecycleError::InvalidName), [`DuplicateModule`](LifecycleError::DuplicateModule),
    /// [`RegisteredAfterInit`](LifecycleError::RegisteredAfterInit).
    pub fn register(&self, def: ModuleDef) -> Result<(), LifecycleError> {
        validate_name(&def.name)?;
        let mut g = self.lock();
        if g.phase != Phase::Registering {
            return Err(LifecycleError::RegisteredAfterInit { module: def.name });
        }
        if g.nodes.contains_key(&def.name) {
            // `def` (user closures) is dropped after the guard: parameters outlive locals.
            return Err(LifecycleError::DuplicateModule { module: def.name });
        }
        let name = def.name.clone();
        Self::insert(&mut g, def, Kind::Static);
        drop(g);
        tracing::debug!(module = %name, "static module registered");
        Ok(())
    }

    /// Adds a module whose name is known to be free.
    fn insert(g: &mut Graph, def: ModuleDef, kind: Kind) {
        let seq = g.bump();
        g.nodes.insert(
            def.name.clone(),
            Node {
                def,
                kind,
                state: ModuleState::Registered,
                seq,
                loaded_seq: 0,
                explicit: false,
            },
        );
    }

    /// Waits (at most the wait limit) until no operation runs, then claims the right to run `op`.
    fn begin(&self, op: &'static str) -> Result<OperationToken<'_>, LifecycleError> {
        if let Some(inside) = running_action(self.id) {
            return Err(LifecycleError::Reentrant {
                operation: op,
                inside,
            });
        }
        let start = Instant::now();
        let mut g = self.lock();
        while let Some(running) = g.busy {
            if matches!(g.phase, Phase::Finalizing | Phase::Finalized) {
                return Err(LifecycleError::AlreadyFinalized);
            }
            let waited = start.elapsed();
            if waited >= self.wait_limit {
                return Err(LifecycleError::Busy {
                    operation: op,
                    running,
                    waited,
                });
            }
            g = self
                .changed
                .wait_timeout(g, self.wait_limit - waited)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        g.busy = Some(op);
        Ok(OperationToken { lifecycle: self })
    }

    /// Checks the static modules and starts them in dependency order. Returns at once if the
    /// lifecycle is already initialised; if another thread is initialising, waits for it.
    ///
    /// # Errors
    ///
    /// [`UnknownDependency`](LifecycleError::UnknownDependency) and
    /// [`Cycle`](LifecycleError::Cycle) (nothing started);
    /// [`StartupFailed`](LifecycleError::StartupFailed) and
    /// [`StartupPanicked`](LifecycleError::StartupPanicked) (the modules started before were stopped
    /// again, in reverse order); [`FailedEarlier`](LifecycleError::FailedEarlier),
    /// [`AlreadyFinalized`](LifecycleError::AlreadyFinalized), [`Reentrant`](LifecycleError::Reentrant),
    /// [`Busy`](LifecycleError::Busy).
    pub fn initialize(&self) -> Result<(), LifecycleError> {
        let _op = self.begin("initialize")?;
        let order = {
            let mut g = self.lock();
            match g.phase {
                Phase::Registering => {}
                Phase::Running => return Ok(()),
                Phase::Failed => {
                    return Err(LifecycleError::FailedEarlier {
                        module: g.failed_module.clone().unwrap_or_default(),
                    });
                }
                Phase::Finalizing | Phase::Finalized => {
                    return Err(LifecycleError::AlreadyFinalized);
                }
                Phase::Initializing => unreachable!("initialising holds the operation token"),
            }
            let order = static_start_order(&g)?;
            g.phase = Phase::Initializing;
            order
        };
        tracing::debug!(?order, "initialising");
        for name in &order {
            if let Err(err) = self.start_module(name) {
                let started = std::mem::take(&mut self.lock().started);
                tracing::error!(module = %name, error = %err, rolled_back = ?started, "initialisation failed; stopping the modules already started");
                for done in started.iter().rev() {
                    self.stop_module(done);
                }
                let mut g = self.lock();
                g.phase = Phase::Failed;
                g.failed_module = Some(name.clone());
                return Err(err);
            }
            self.lock().started.push(name.clone());
        }
        self.lock().phase = Phase::Running;
        tracing::info!(modules = order.len(), "lifecycle initialised");
        Ok(())
    }

    /// Runs one module's startup action; on failure marks it Failed and returns the error.
    /// Must be called with the operation token held.
    fn start_module(&self, name: &str) -> Result<(), LifecycleError> {
        let startup = {
            let mut g = self.lock();
            let node = g.node_mut(name);
            node.state = ModuleState::Starting;
            node.def.startup.take()
        };
        let result = match startup {
            None => Ok(()),
            Some(startup) => {
                let _scope = ActionScope::enter(self.id, name);
                match catch_unwind(AssertUnwindSafe(startup)) {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(source)) => Err(LifecycleError::StartupFailed {
                        module: name.to_owned(),
                        source,
                    }),
                    Err(payload) => Err(LifecycleError::StartupPanicked {
                        module: name.to_owned(),
                        message: panic_message(payload.as_ref()),
                    }),
                }
            }
        };
        self.lock().node_mut(name).state = if result.is_ok() {
            ModuleState::Started
        } else {
            ModuleState::Failed
        };
        if result.is_ok() {
            tracing::debug!(module = %name, "module started");
        }
        result
    }

    /// Runs one module's shutdown action bounded by its timeout and records the end state.
    /// Must be called with the operation token held.
    fn stop_module(&self, name: &str) -> ShutdownRecord {
        let shutdown = {
            let mut g = self.lock();
            let node = g.node_mut(name);
            node.state = ModuleState::Stopping;
            node.def.shutdown.take()
        };
        let start = Instant::now();
        let result = match shutdown {
            None => ShutdownResult::Stopped,
            Some((timeout, action)) => self.run_bounded(name, timeout, action),
        };
        let elapsed = start.elapsed();
        let state = match &result {
            ShutdownResult::Stopped => {
                tracing::debug!(module = %name, ?elapsed, "module stopped");
                ModuleState::Stopped
            }
            ShutdownResult::TimedOut { timeout } => {
                tracing::warn!(module = %name, ?timeout, "module shutdown timed out; left running on a detached thread");
                ModuleState::ShutdownTimedOut
            }
            ShutdownResult::Panicked { message } => {
                tracing::warn!(module = %name, %message, "module shutdown panicked");
                ModuleState::ShutdownFailed
            }
            ShutdownResult::NotRun { .. } => ModuleState::ShutdownFailed,
        };
        self.lock().node_mut(name).state = state;
        ShutdownRecord {
            module: name.to_owned(),
            result,
            elapsed,
        }
    }

    /// Runs `action` on a thread of its own and waits at most `timeout` for it. A thread that
    /// overruns is detached (leaked): Rust cannot stop a thread, and waiting would not be bounded.
    fn run_bounded(&self, name: &str, timeout: Duration, action: ShutdownFn) -> ShutdownResult {
        let (tx, rx) = mpsc::sync_channel(1);
        let id = self.id;
        let module = name.to_owned();
        let spawned = thread::Builder::new()
            .name(format!("stop {name}"))
            .spawn(move || {
                let _scope = ActionScope::enter(id, &module);
                let result = catch_unwind(AssertUnwindSafe(action));
                // The receiver is gone if finalisation stopped waiting; nothing to do then.
                let _ = tx.send(result.map_err(|p| panic_message(p.as_ref())));
            });
        if let Err(err) = spawned {
            // The failed spawn dropped the action, so it cannot run at all.
            tracing::error!(module = %name, error = %err, "cannot spawn a shutdown thread; shutdown skipped");
            return ShutdownResult::NotRun {
                reason: format!("cannot spawn a shutdown thread: {err}"),
            };
        }
        match rx.recv_timeout(timeout) {
            Ok(Ok(())) => ShutdownResult::Stopped,
            Ok(Err(message)) => ShutdownResult::Panicked { message },
            Err(RecvTimeoutError::Timeout) => ShutdownResult::TimedOut { timeout },
            Err(RecvTimeoutError::Disconnected) => ShutdownResult::Panicked {
                message: "shutdown thread ended without a result".to_owned(),
            },
        }
    }

    /// Stops every module, once: loaded dynamic modules in reverse load order, then static
    /// modules in exact reverse startup order, each shutdown bounded by its timeout.
    ///
    /// A thread that calls this while another finalises waits until that one has finished and
    /// returns [`FinalizeOutcome::AlreadyFinalized`]. If another operation (a `load`, say) is
    /// running, this waits for it, at most the wait limit ([`FinalizeOutcome::Busy`]).
    pub fn finalize(&self) -> FinalizeReport {
        if running_action(self.id).is_some() {
            tracing::warn!("finalize called from inside a lifecycle action; refused");
            return FinalizeReport::empty(FinalizeOutcome::Reentrant);
        }
        let start = Instant::now();
        let mut g = self.lock();
        loop {
            match g.phase {
                Phase::Finalized => {
                    return FinalizeReport::empty(FinalizeOutcome::AlreadyFinalized);
                }
                // Bounded by the shutdown timeouts, so wait without a limit of our own.
                Phase::Finalizing => {
                    g = self.changed.wait(g).unwrap_or_else(PoisonError::into_inner);
                }
                _ if g.busy.is_some() => {
                    let waited = start.elapsed();
                    if waited >= self.wait_limit {
                        let running = g.busy;
                        drop(g);
                        tracing::warn!(
                            running,
                            ?waited,
                            "finalize gave up waiting for a running operation"
                        );
                        return FinalizeReport::empty(FinalizeOutcome::Busy);
                    }
                    g = self
                        .changed
                        .wait_timeout(g, self.wait_limit - waited)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                Phase::Registering | Phase::Failed => {
                    return FinalizeReport::empty(FinalizeOutcome::NotInitialized);
                }
                Phase::Initializing => unreachable!("initialising holds the operation token"),
                Phase::Running => break,
            }
        }
        g.phase = Phase::Finalizing;
        g.busy = Some("finalize");
        let mut dynamic: Vec<(u64, String)> = g
            .nodes
            .values()
            .filter(|n| n.kind == Kind::Dynamic && n.state == ModuleState::Started)
            .map(|n| (n.loaded_seq, n.def.name.clone()))
            .collect();
        dynamic.sort_unstable_by_key(|d| std::cmp::Reverse(d.0));
        let statics: Vec<String> = g.started.iter().rev().cloned().collect();
        drop(g);
        let _op = OperationToken { lifecycle: self };

        tracing::debug!("finalising");
        let modules: Vec<ShutdownRecord> = dynamic
            .into_iter()
            .map(|(_, name)| name)
            .chain(statics)
            .map(|name| self.stop_module(&name))
            .collect();
        let report = FinalizeReport {
            outcome: FinalizeOutcome::Finalized,
            modules,
        };
        // Set the phase before the token's drop wakes the waiters, so they see Finalized.
        self.lock().phase = Phase::Finalized;
        tracing::info!(
            stopped = report.modules.len(),
            timed_out = ?report.timed_out(),
            "lifecycle finalised"
        );
        report
    }

    /// Registers a dynamic module, between initialisation and finalisation. Its dependencies
    /// (static or dynamic) must already be registered. May be called from inside an action.
    ///
    /// # Errors
    ///
    /// [`InvalidName`](LifecycleError::InvalidName), [`DuplicateModule`](LifecycleError::DuplicateModule),
    /// [`UnknownDependency`](LifecycleError::UnknownDependency),
    /// [`NotInitialized`](LifecycleError::NotInitialized) (also while initialising),
    /// [`AlreadyFinalized`](LifecycleError::AlreadyFinalized).
    pub fn register_dynamic(&self, def: ModuleDef) -> Result<(), LifecycleError> {
        validate_name(&def.name)?;
        let mut g = self.lock();
        match g.phase {
            Phase::Running => {}
            Phase::Finalizing | Phase::Finalized => return Err(LifecycleError::AlreadyFinalized),
            Phase::Registering | Phase::Initializing | Phase::Failed => {
                return Err(LifecycleError::NotInitialized);
            }
        }
        if g.nodes.contains_key(&def.name) {
            return Err(LifecycleError::DuplicateModule { module: def.name });
        }
        if def.dependencies.contains(&def.name) {
            return Err(LifecycleError::Cycle {
                cycle: vec![def.name.clone(), def.name.clone()],
            });
        }
        if let Some(dep) = def.dependencies.iter().find(|d| !g.nodes.contains_key(*d)) {
            return Err(LifecycleError::UnknownDependency {
                module: def.name.clone(),
                dependency: dep.clone(),
            });
        }
        let name = def.name.clone();
        Self::insert(&mut g, def, Kind::Dynamic);
        drop(g);
        tracing::debug!(module = %name, "dynamic module registered");
        Ok(())
    }

    /// The registered dynamic module `name`, or the error `load`/`unload` report.
    fn dynamic_node<'g>(g: &'g Graph, name: &str) -> Result<&'g Node, LifecycleError> {
        let node = g
            .nodes
            .get(name)
            .ok_or_else(|| LifecycleError::UnknownModule {
                module: name.to_owned(),
            })?;
        if node.kind != Kind::Dynamic {
            return Err(LifecycleError::NotDynamic {
                module: name.to_owned(),
            });
        }
        Ok(node)
    }

    fn check_running(g: &Graph) -> Result<(), LifecycleError> {
        match g.phase {
            Phase::Running => Ok(()),
            Phase::Finalizing | Phase::Finalized => Err(LifecycleError::AlreadyFinalized),
            Phase::Registering | Phase::Initializing | Phase::Failed => {
                Err(LifecycleError::NotInitialized)
            }
        }
    }

    /// Removes modules from the graph and hands them back, so that the caller drops them (and
    /// the user values their actions captured) without the graph lock.
    fn remove<'n>(&self, names: impl IntoIterator<Item = &'n str>) -> Vec<Node> {
        let mut g = self.lock();
        names
            .into_iter()
            .filter_map(|name| g.nodes.remove(name))
            .collect()
    }

    /// Loads a dynamic module: its dynamic dependencies that are not loaded first (recursively,
    /// in dependency order), then the module. Loading a loaded module only marks it explicitly
    /// loaded. If a startup fails, the modules this call started are stopped again in reverse
    /// order and removed together with the failed one.
    ///
    /// # Errors
    ///
    /// [`UnknownModule`](LifecycleError::UnknownModule), [`NotDynamic`](LifecycleError::NotDynamic),
    /// [`UnknownDependency`](LifecycleError::UnknownDependency) (a dependency removed since),
    /// [`Cycle`](LifecycleError::Cycle), [`StartupFailed`](LifecycleError::StartupFailed),
    /// [`StartupPanicked`](LifecycleError::StartupPanicked),
    /// [`NotInitialized`](LifecycleError::NotInitialized),
    /// [`AlreadyFinalized`](LifecycleError::AlreadyFinalized), [`Reentrant`](LifecycleError::Reentrant),
    /// [`Busy`](LifecycleError::Busy).
    pub fn load(&self, name: &str) -> Result<(), LifecycleError> {
        let _op = self.begin("load")?;
        let plan = {
            let g = self.lock();
            Self::check_running(&g)?;
            Self::dynamic_node(&g, name)?;
            load_plan(&g, name)?
        };
        let mut started: Vec<&str> = Vec::new();
        for module in &plan {
            if let Err(err) = self.start_module(module) {
                tracing::warn!(module = %module, error = %err, rolled_back = ?started, "load of {name:?} failed; stopping the modules it started");
                for done in started.iter().rev() {
                    self.stop_module(done);
                }
                drop(self.remove(started.iter().copied().chain([module.as_str()])));
                return Err(err);
            }
            let mut g = self.lock();
            let seq = g.bump();
            g.node_mut(module).loaded_seq = seq;
            started.push(module);
        }
        self.lock().node_mut(name).explicit = true;
        tracing::debug!(module = %name, loaded = ?started, "module loaded");
        Ok(())
    }

    /// Unloads a dynamic module loaded by [`load`](Self::load), then the dynamic dependencies
    /// nobody needs any more, dependents before dependencies. Stopped modules are removed from
    /// the lifecycle. Does nothing (and succeeds) for a module that is not loaded or persistent.
    /// Shutdowns are bounded by their timeouts as in [`finalize`](Self::finalize); an overrun is
    /// logged and the module removed all the same.
    ///
    /// # Errors
    ///
    /// [`StillNeeded`](LifecycleError::StillNeeded) (names the loaded dependents),
    /// [`UnknownModule`](LifecycleError::UnknownModule), [`NotDynamic`](LifecycleError::NotDynamic),
    /// [`NotInitialized`](LifecycleError::NotInitialized),
    /// [`AlreadyFinalized`](LifecycleError::AlreadyFinalized), [`Reentrant`](LifecycleError::Reentrant),
    /// [`Busy`](LifecycleError::Busy).
    pub fn unload(&self, name: &str) -> Result<(), LifecycleError> {
        let _op = self.begin("unload")?;
        let plan = {
            let mut g = self.lock();
            Self::check_running(&g)?;
            let node = Self::dynamic_node(&g, name)?;
            if node.state != ModuleState::Started {
                return Ok(());
            }
            if node.def.persistent {
                drop(g);
                tracing::debug!(module = %name, "persistent module not unloaded; it stops at finalisation");
                return Ok(());
            }
            let dependents = g.loaded_dependents(name);
            if !dependents.is_empty() {
                return Err(LifecycleError::StillNeeded {
                    module: name.to_owned(),
                    dependents,
                });
            }
            g.node_mut(name).explicit = false;
            unload_plan(&g, name)
        };
        for module in &plan {
            self.stop_module(module);
        }
        drop(self.remove(plan.iter().map(String::as_str)));
        tracing::debug!(module = %name, unloaded = ?plan, "module unloaded");
        Ok(())
    }

    /// The started service of type `T` (see [`ModuleDef::service`]); `None` before its module
    /// has started and from the moment it starts stopping.
    pub fn service<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        let g = self.lock();
        let mut providers: Vec<&Node> = g
            .nodes
            .values()
            .filter(|n| {
                n.state == ModuleState::Started
                    && n.def
                        .service
                        .as_ref()
                        .is_some_and(|s| s.type_id == TypeId::of::<T>())
            })
            .collect();
        providers.sort_by_key(|n| n.seq);
        providers.iter().find_map(|n| {
            let cell = n.def.service.as_ref()?;
            let object = lock_ignoring_poison(&cell.slot).clone()?;
            object.downcast::<T>().ok()
        })
    }

    /// The state of the module `name`, or `None` if no such module is registered (dynamic
    /// modules are removed when they stop).
    pub fn state(&self, name: &str) -> Option<ModuleState> {
        self.lock().nodes.get(name).map(|n| n.state)
    }

    /// Whether initialisation has completed and finalisation has not begun.
    pub fn is_initialized(&self) -> bool {
        self.lock().phase == Phase::Running
    }
}

impl Drop for Lifecycle {
    /// An instance dropped while running finalises first, so its modules are not left running.
    fn drop(&mut self) {
        let running = self.lock().phase == Phase::Running;
        if running {
            let report = self.finalize();
            tracing::debug!(outcome = ?report.outcome, "lifecycle dropped while running; finalised");
        }
    }
}

/// The static modules in start order (Kahn's algorithm, ties by registration order), or the
/// first unknown dependency or a cycle.
fn static_start_order(g: &Graph) -> Result<Vec<String>, LifecycleError> {
    let mut statics: Vec<&Node> = g
        .nodes
        .values()
        .filter(|n| n.kind == Kind::Static)
        .collect();
    statics.sort_by_key(|n| n.seq);
    let index: HashMap<&str, usize> = statics
        .iter()
        .enumerate()
        .map(|(i, n)| (n.def.name.as_str(), i))
        .collect();
    let mut deps: Vec<Vec<usize>> = Vec::with_capacity(statics.len());
    for node in &statics {
        let mut mine = Vec::with_capacity(node.def.dependencies.len());
        for dep in &node.def.dependencies {
            match index.get(dep.as_str()) {
                Some(&i) => mine.push(i),
                None => {
                    return Err(LifecycleError::UnknownDependency {
                        module: node.def.name.clone(),
                        dependency: dep.clone(),
                    });
                }
            }
        }
        deps.push(mine);
    }
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); statics.len()];
    let mut pending: Vec<usize> = deps.iter().map(Vec::len).collect();
    for (i, mine) in deps.iter().enumerate() {
        for &d in mine {
            dependents[d].push(i);
        }
    }
    let mut ready: BTreeSet<usize> = (0..statics.len()).filter(|&i| pending[i] == 0).collect();
    let mut order = Vec::with_capacity(statics.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &j in &dependents[i] {
            pending[j] -= 1;
            if pending[j] == 0 {
                ready.insert(j);
            }
        }
    }
    if order.len() < statics.len() {
        let names: Vec<&str> = statics.iter().map(|n| n.def.name.as_str()).collect();
        return Err(LifecycleError::Cycle {
            cycle: find_cycle(&names, &deps, &pending),
        });
    }
    Ok(order
        .into_iter()
        .map(|i| statics[i].def.name.clone())
        .collect())
}

/// One cycle among the nodes Kahn's algorithm could not order (`pending[i] > 0`). Every such node
/// has a dependency that is also unordered, so following those edges must revisit a node; the
/// revisited stretch is a cycle. It is rotated to start at its earliest-registered member.
fn find_cycle(names: &[&str], deps: &[Vec<usize>], pending: &[usize]) -> Vec<String> {
    let first = (0..names.len())
        .find(|&i| pending[i] > 0)
        .expect("an unordered node");
    let mut path = vec![first];
    let mut seen = HashMap::from([(first, 0usize)]);
    let mut at = first;
    let start = loop {
        at = *deps[at]
            .iter()
            .find(|&&d| pending[d] > 0)
            .expect("an unordered node has an unordered dependency");
        if let Some(&pos) = seen.get(&at) {
            break pos;
        }
        seen.insert(at, path.len());
        path.push(at);
    };
    let mut cycle = path.split_off(start);
    let lowest = (0..cycle.len()).min_by_key(|&k| cycle[k]).unwrap_or(0);
    cycle.rotate_left(lowest);
    cycle.push(cycle[0]);
    cycle.into_iter().map(|i| names[i].to_owned()).collect()
}

/// The modules `load(name)` must start, dependencies first, or why it cannot.
fn load_plan(g: &Graph, name: &str) -> Result<Vec<String>, LifecycleError> {
    fn visit(
        g: &Graph,
        name: &str,
        path: &mut Vec<String>,
        done: &mut HashSet<String>,
        plan: &mut Vec<String>,
    ) -> Result<(), LifecycleError> {
        if let Some(pos) = path.iter().position(|p| p == name) {
            let mut cycle = path[pos..].to_vec();
            cycle.push(name.to_owned());
            return Err(LifecycleError::Cycle { cycle });
        }
        let node = g.node(name);
        if done.contains(name) || node.state == ModuleState::Started {
            return Ok(());
        }
        path.push(name.to_owned());
        for dep in &node.def.dependencies {
            if !g.nodes.contains_key(dep) {
                return Err(LifecycleError::UnknownDependency {
                    module: name.to_owned(),
                    dependency: dep.clone(),
                });
            }
            visit(g, dep, path, done, plan)?;
        }
        path.pop();
        done.insert(name.to_owned());
        plan.push(name.to_owned());
        Ok(())
    }
    let mut plan = Vec::new();
    visit(g, name, &mut Vec::new(), &mut HashSet::new(), &mut plan)?;
    Ok(plan)
}

/// The modules `unload(name)` stops, in stop order: `name`, then each dynamic dependency that is
/// neither persistent nor explicitly loaded and whose loaded dependents all stop too.
fn unload_plan(g: &Graph, name: &str) -> Vec<String> {
    let mut going: HashSet<String> = HashSet::from([name.to_owned()]);
    let mut candidates: Vec<String> = g.node(name).def.dependencies.clone();
    while let Some(dep) = candidates.pop() {
        let Some(node) = g.nodes.get(&dep) else {
            continue;
        };
        if going.contains(&dep)
            || node.kind != Kind::Dynamic
            || node.state != ModuleState::Started
            || node.def.persistent
            || node.explicit
        {
            continue;
        }
        if g.loaded_dependents(&dep).iter().all(|d| going.contains(d)) {
            going.insert(dep.clone());
            candidates.extend(node.def.dependencies.iter().cloned());
        }
    }
    let mut plan: Vec<&Node> = going.iter().map(|n| g.node(n)).collect();
    // Reverse load order: dependents always loaded after their dependencies.
    plan.sort_by_key(|n| std::cmp::Reverse(n.loaded_seq));
    plan.iter().map(|n| n.def.name.clone()).collect()
}

/// Whether a guard already owns the global lifecycle; set by the first guard, never reset.
static GUARD_OWNER: AtomicBool = AtomicBool::new(false);

/// Starts the global lifecycle on creation and finalises it on drop.
///
/// Only the first guard created in a process owns the lifecycle; a later one is inert: it
/// registers nothing, starts nothing, stops nothing, logs a warning and says so through
/// [`is_owner`](Self::is_owner). Ownership is taken even if the first guard's creation fails, so
/// a failed start is never retried by a later guard.
///
/// ```no_run
/// use labhub::lifecycle::{LifecycleGuard, ModuleDef};
///
/// let _guard = LifecycleGuard::new([ModuleDef::new("app").on_startup(|| Ok(()))])?;
/// // ... the program runs; dropping the guard stops the modules in reverse order.
/// # Ok::<(), labhub::lifecycle::LifecycleError>(())
/// ```
#[must_use = "dropping the guard finalises the lifecycle at once"]
#[derive(Debug)]
pub struct LifecycleGuard {
    owner: bool,
}

impl LifecycleGuard {
    /// Registers `modules` as static modules of [`Lifecycle::global`] and initialises it, if this
    /// is the first guard of the process; otherwise returns an inert guard.
    ///
    /// # Errors
    ///
    /// Those of [`Lifecycle::register`] and [`Lifecycle::initialize`].
    pub fn new(modules: impl IntoIterator<Item = ModuleDef>) -> Result<Self, LifecycleError> {
        if GUARD_OWNER.swap(true, Ordering::AcqRel) {
            let ignored: Vec<String> = modules.into_iter().map(|m| m.name).collect();
            tracing::warn!(
                ?ignored,
                "a lifecycle guard already owns the lifecycle; this guard is inert and its modules are ignored"
            );
            return Ok(LifecycleGuard { owner: false });
        }
        let lifecycle = Lifecycle::global();
        for module in modules {
            lifecycle.register(module)?;
        }
        lifecycle.initialize()?;
        Ok(LifecycleGuard { owner: true })
    }

    /// Whether this guard owns the lifecycle (it was the first one in the process).
    pub fn is_owner(&self) -> bool {
        self.owner
    }

    /// Finalises now (if this guard owns the lifecycle) and returns the report; an inert guard
    /// returns an empty [`FinalizeOutcome::AlreadyFinalized`] report.
    pub fn finalize(mut self) -> FinalizeReport {
        self.finish()
    }

    fn finish(&mut self) -> FinalizeReport {
        if std::mem::take(&mut self.owner) {
            Lifecycle::global().finalize()
        } else {
            FinalizeReport::empty(FinalizeOutcome::AlreadyFinalized)
        }
    }
}

impl Drop for LifecycleGuard {
    fn drop(&mut self) {
        let report = self.finish();
        if !report.is_clean() {
            tracing::warn!(timed_out = ?report.timed_out(), "lifecycle finalised with failed shutdowns");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn cycle_error_message_spells_out_the_cycle() {
        let err = LifecycleError::Cycle {
            cycle: names(&["a", "b", "c", "a"]),
        };
        assert_eq!(err.to_string(), "dependency cycle: a -> b -> c -> a");
    }

    #[test]
    fn still_needed_message_lists_the_dependents() {
        let err = LifecycleError::StillNeeded {
            module: "db".into(),
            dependents: names(&["api", "ui"]),
        };
        assert_eq!(err.to_string(), "module \"db\" is still needed by api, ui");
    }

    #[test]
    fn find_cycle_skips_nodes_downstream_of_the_cycle_and_starts_at_the_earliest() {
        // 0 depends on 2 (downstream of the cycle), 1 -> 2 -> 3 -> 1.
        let names = ["tail", "x", "y", "z"];
        let deps = vec![vec![2], vec![2], vec![3], vec![1]];
        let pending = vec![1, 1, 1, 1];
        assert_eq!(
            find_cycle(&names, &deps, &pending),
            super::tests::names(&["x", "y", "z", "x"])
        );
    }

    #[test]
    fn ties_in_start_order_go_to_the_module_registered_first() {
        let lc = Lifecycle::new();
        for name in ["c", "a", "b"] {
            lc.register(ModuleDef::new(name)).unwrap();
        }
        lc.register(ModuleDef::new("top").depends_on("b").depends_on("a"))
            .unwrap();
        let g = lc.lock();
        assert_eq!(
            static_start_order(&g).unwrap(),
            names(&["c", "a", "b", "top"])
        );
    }

    #[test]
    fn empty_and_overlong_names_are_refused() {
        let lc = Lifecycle::new();
        assert!(matches!(
            lc.register(ModuleDef::new("")),
            Err(LifecycleError::InvalidName { .. })
        ));
        assert!(matches!(
            lc.register(ModuleDef::new("n".repeat(MAX_NAME_LEN + 1))),
            Err(LifecycleError::InvalidName { .. })
        ));
        lc.register(ModuleDef::new("n".repeat(MAX_NAME_LEN)))
            .unwrap();
    }

    #[test]
    fn depends_on_ignores_a_repeated_dependency() {
        let def = ModuleDef::new("a").depends_on("b").depends_on("b");
        assert_eq!(def.dependencies(), ["b"]);
    }

    #[test]
    fn a_shutdown_runs_on_a_thread_marked_as_inside_an_action() {
        let lc = Arc::new(Lifecycle::new());
        let (tx, rx) = mpsc::channel();
        let inner = Arc::clone(&lc);
        lc.register(
            ModuleDef::new("m").on_shutdown(Duration::from_secs(30), move || {
                tx.send(inner.unload("m")).unwrap();
            }),
        )
        .unwrap();
        lc.initialize().unwrap();
        assert!(lc.finalize().is_clean());
        assert!(matches!(
            rx.recv().unwrap(),
            Err(LifecycleError::Reentrant { operation: "unload", ref inside }) if inside == "m"
        ));
    }
}
