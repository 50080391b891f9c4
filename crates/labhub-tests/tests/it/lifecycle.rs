//! The lifecycle manager with real threads, and real processes for the global guard.
//!
//! Every test makes its own `Lifecycle`, so tests run in parallel without sharing modules; the
//! global one is exercised in child processes. Order is recorded in a shared log of
//! `start X` / `stop X` lines. Each test body runs under a watchdog, so a deadlock fails it.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

use labhub::lifecycle::{
    FinalizeOutcome, Lifecycle, LifecycleError, ModuleDef, ModuleState, ShutdownResult,
};

use crate::common::{CHILD_EXE, WATCHDOG, within_watchdog};

/// A shutdown timeout that is never reached by the actions of these tests.
const AMPLE: Duration = Duration::from_secs(30);

/// The order in which actions ran.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    /// A module that logs `start NAME` and `stop NAME`.
    fn module(&self, name: &str) -> ModuleDef {
        let (on_start, on_stop) = (self.clone(), self.clone());
        let (start_name, stop_name) = (name.to_owned(), name.to_owned());
        ModuleDef::new(name)
            .on_startup(move || {
                on_start.push(format!("start {start_name}"));
                Ok(())
            })
            .on_shutdown(AMPLE, move || on_stop.push(format!("stop {stop_name}")))
    }
}

fn lines(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

// ---------------------------------------------------------------- static order

#[test]
fn a_chain_starts_in_dependency_order_and_stops_in_exact_reverse() {
    within_watchdog("the test", 2 * WATCHDOG, || {
        let log = Log::default();
        let lc = Lifecycle::new();
        // Registered top first: the order comes from the dependencies, not from registration.
        lc.register(log.module("app").depends_on("store")).unwrap();
        lc.register(log.module("store").depends_on("log")).unwrap();
        lc.register(log.module("log")).unwrap();
        lc.initialize().unwrap();
        assert!(lc.is_initialized());
        assert_eq!(
            log.take(),
            lines(&["start log", "start store", "start app"])
        );
        assert_eq!(lc.state("store"), Some(ModuleState::Started));

        let report = lc.finalize();
        assert_eq!(report.outcome, FinalizeOutcome::Finalized);
        assert!(report.is_clean());
        assert_eq!(report.stop_order(), ["app", "store", "log"]);
        assert_eq!(log.take(), lines(&["stop app", "stop store", "stop log"]));
        assert_eq!(lc.state("log"), Some(ModuleState::Stopped));
        assert!(!lc.is_initialized());
    });
}

#[test]
fn a_diamond_starts_its_base_first_and_its_top_last_and_stops_in_exact_reverse() {
    within_watchdog("the test", 2 * WATCHDOG, || {
        let log = Log::default();
        let lc = Lifecycle::new();
        lc.register(log.module("top").depends_on("left").depends_on("right"))
            .unwrap();
        lc.register(log.module("right").depends_on("base")).unwrap();
        lc.register(log.module("left").depends_on("base")).unwrap();
        lc.register(log.module("base")).unwrap();
        lc.initialize().unwrap();
        // right was registered before left, so it wins the tie.
        let started = log.take();
        assert_eq!(
            started,
            lines(&["start base", "start right", "start left", "start top"])
        );
        lc.finalize();
        let expected: Vec<String> = started
            .iter()
            .rev()
            .map(|l| l.replace("start", "stop"))
            .collect();
        assert_eq!(log.take(), expected);
    });
}

#[test]
fn module_names_are_case_sensitive() {
    within_watchdog("the test", 2 * WATCHDOG, || {
        let log = Log::default();
        let lc = Lifecycle::new();
        lc.register(log.module("Log")).unwrap();
        lc.register(log.module("log")).unwrap();
        lc.register(log.module("app").depends_on("LOG")).unwrap();
        match lc.initialize() {
            Err(LifecycleError::UnknownDependency { module, dependency }) => {
                assert_eq!((module.as_str(), dependency.as_str()), ("app", "LOG"));
            }
            other => panic!("expected UnknownDependency, got {other:?}"),
        }
        assert!(
            log.take().is_empty(),
            "nothing starts when the graph is invalid"
        );
    });
}

#[test]
fn initialize_is_idempotent_and_concurrent_callers_start_each_module_once() {
    within_watchdog("the test", 2 * WATCHDOG, || {
        let lc = Arc::new(Lifecycle::new());
        let starts = Arc::new(AtomicUsize::new(0));
        for i in 0..5 {
            let starts = Arc::clone(&starts);
            lc.register(ModuleDef::new(format!("m{i}")).on_startup(move || {
                starts.fetch_add(1, Ordering::SeqCst);
                thread::yield_now();
                Ok(())
            }))
            .unwrap();
        }
        let barrier = Arc::new(Barrier::new(4));
        let callers: Vec<_> = (0..4)
            .map(|_| {
                let (lc, barrier) = (Arc::clone(&lc), Arc::clone(&barrier));
                thread::spawn(move || {
                    barrier.wait();
                    lc.initialize()
                })
            })
            .collect();
        for caller in callers {
            caller.join().unwrap().unwrap();
        }
        lc.initialize().unwrap();
        assert_eq!(starts.load(Ordering::SeqCst), 5);
    });
}

// ---------------------------------------------------------------- static errors

#[test]
fn a_duplicate_module_name_is_refused_and_named() {
    let lc = Lifecycle::new();
    lc.register(ModuleDef::new("log")).unwrap();
    match lc.register(ModuleDef::new("log")) {
        Err(e @ LifecycleError::DuplicateModule { .. }) => {
            assert_eq!(e.to_string(), "module \"log\" is already registered");
        }
        other => panic!("expected DuplicateModule, got {other:?}"),
    }
}

#[test]
fn an_unknown_dependency_is_refused_naming_module_and_dependency() {
    let lc = Lifecycle::new();
    lc.register(ModuleDef::new("app").depends_on("ghost"))
        .unwrap();
    let err = lc.initialize().unwrap_err();
    assert!(
        matches!(&err, LifecycleError::UnknownDependency { module, dependency } if module == "app" && dependency == "ghost"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "module \"app\" depends on \"ghost\", which is not registered"
    );
    assert_eq!(lc.state("app"), Some(ModuleState::Registered));
}

#[test]
fn a_three_module_cycle_is_named_as_the_cycle() {
    let lc = Lifecycle::new();
    lc.register(ModuleDef::new("a").depends_on("b")).unwrap();
    lc.register(ModuleDef::new("b").depends_on("c")).unwrap();
    lc.register(ModuleDef::new("c").depends_on("a")).unwrap();
    lc.register(ModuleDef::new("free")).unwrap();
    let err = lc.initialize().unwrap_err();
    assert!(
        matches!(&err, LifecycleError::Cycle { cycle } if *cycle == lines(&["a", "b", "c", "a"])),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "dependency cycle: a -> b -> c -> a");
    assert_eq!(
        lc.state("free"),
        Some(ModuleState::Registered),
        "nothing started"
    );
}

#[test]
fn a_module_depending_on_itself_is_a_cycle() {
    let lc = Lifecycle::new();
    lc.register(ModuleDef::new("selfish").depends_on("selfish"))
        .unwrap();
    let err = lc.initialize().unwrap_err();
    assert_eq!(err.to_string(), "dependency cycle: selfish -> selfish");
}

#[test]
fn a_thirteen_module_cycle_is_named_in_full_without_the_modules_hanging_off_it() {
    let lc = Lifecycle::new();
    // n0 -> n1 -> ... -> n12 -> n0, registered in a scrambled order, plus a module depending
    // on the cycle (blocked by it, but not part of it) and an independent one.
    lc.register(ModuleDef::new("downstream").depends_on("n7"))
        .unwrap();
    for i in [5, 0, 12, 3, 8, 1, 10, 6, 2, 11, 4, 9, 7] {
        lc.register(ModuleDef::new(format!("n{i}")).depends_on(format!("n{}", (i + 1) % 13)))
            .unwrap();
    }
    lc.register(ModuleDef::new("independent")).unwrap();
    match lc.initialize() {
        Err(LifecycleError::Cycle { cycle }) => {
            assert_eq!(cycle.len(), 14, "{cycle:?}");
            assert_eq!(cycle.first(), cycle.last());
            // Starts at the earliest-registered member (n5) and follows the dependencies.
            let expected: Vec<String> = (0..=13).map(|k| format!("n{}", (5 + k) % 13)).collect();
            assert_eq!(cycle, expected);
        }
        other => panic!("expected Cycle, got {other:?}"),
    }
}

#[test]
fn registering_a_static_module_after_initialisation_is_refused() {
    let lc = Lifecycle::new();
    lc.register(ModuleDef::new("early")).unwrap();
    lc.initialize().unwrap();
    match lc.register(ModuleDef::new("late")) {
        Err(LifecycleError::RegisteredAfterInit { module }) => assert_eq!(module, "late"),
        other => panic!("expected RegisteredAfterInit, got {other:?}"),
    }
    assert_eq!(lc.state("late"), None);
}

#[test]
fn a_failing_startup_stops_the_started_modules_in_reverse_and_returns_the_error() {
    within_watchdog("the test", 2 * WATCHDOG, || {
        let log = Log::default();
        let lc = Lifecycle::new();
        lc.register(log.module("a")).unwrap();
        lc.register(log.module("b").depends_on("a")).unwrap();
        lc.register(
            ModuleDef::new("bad")
                .depends_on("b")
                .on_startup(|| Err("disk full".into()))
                .on_shutdown(AMPLE, || panic!("a failed module is not stopped")),
        )
        .unwrap();
        lc.register(log.module("after").depends_on("bad")).unwrap();
        let err = lc.initialize().unwrap_err();
        match &err {
            LifecycleError::StartupFailed { module, source } => {
                assert_eq!(module, "bad");
                assert_eq!(source.to_string(), "disk full");
            }
            other => panic!("expected StartupFailed, got {other:?}"),
        }
        assert_eq!(
            std::error::Error::source(&err).unwrap().to_string(),
            "disk full"
        );
        assert_eq!(
            log.take(),
            lines(&["start a", "start b", "stop b", "stop a"])
        );
        assert_eq!(lc.state("bad"), Some(ModuleState::Failed));
        assert_eq!(lc.state("after"), Some(ModuleState::Registered));
        assert_eq!(lc.state("a"), Some(ModuleState::Stopped));
        assert!(!lc.is_initialized());
        assert!(matches!(
            lc.initialize(),
            Err(LifecycleError::FailedEarlier { module }) if module == "bad"
        ));
        assert_eq!(lc.finalize().outcome, FinalizeOutcome::NotInitialized);
        assert!(log.take().is_empty(), "nothing is stopped twice");
    });
}

#[test]
fn a_panicking_startup_is_caught_and_rolls_back_in_reverse() {
    within_watchdog("the test", 2 * WATCHDOG, || {
        let log = Log::default();
        let lc = Lifecycle::new();
        lc.register(log.module("a")).unwrap();
        lc.register(log.module("b").depends_on("a")).unwrap();
        lc.register(log.module("c").depends_on("b")).unwrap();
        lc.register(
            ModuleDef::new("boom")
                .depends_on("c")
                .on_startup(|| panic!("startup exploded")),
        )
        .unwrap();
        match lc.initialize() {
            Err(LifecycleError::StartupPanicked { module, message }) => {
                assert_eq!(module, "boom");
                assert_eq!(message, "startup exploded");
            }
            other => panic!("expected StartupPanicked, got {other:?}"),
        }
        assert_eq!(
            log.take(),
            lines(&[
                "start a", "start b", "start c", "stop c", "stop b", "stop a"
            ])
        );
    });
}

// ---------------------------------------------------------------- finalisation

#[test]
fn a_hung_shutdown_is_reported_as_timed_out_and_finalize_does_not_wait_for_it() {
    within_watchdog("the test", 2 * WATCHDOG, || {
        let log = Log::default();
        let lc = Lifecycle::new();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (finished_tx, finished_rx) = mpsc::channel::<()>();
        let finished = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&finished);
        lc.register(log.module("base")).unwrap();
        lc.register(ModuleDef::new("hung").depends_on("base").on_shutdown(
            Duration::from_millis(50),
            move || {
                // Stands for a 300 ms shutdown; it ends only when the test says so.
                let _ = release_rx.recv_timeout(WATCHDOG);
                flag.store(true, Ordering::SeqCst);
                let _ = finished_tx.send(());
            },
        ))
        .unwrap();
        lc.register(log.module("top").depends_on("hung")).unwrap();
        lc.initialize().unwrap();
        log.take();

        let report = lc.finalize();
        assert!(
            !finished.load(Ordering::SeqCst),
            "finalize returned before the hung shutdown finished"
        );
        assert_eq!(report.outcome, FinalizeOutcome::Finalized);
        assert_eq!(report.stop_order(), ["top", "hung", "base"]);
        assert_eq!(report.timed_out(), ["hung"]);
        assert!(!report.is_clean());
        let hung = &report.modules[1];
        assert_eq!(
            hung.result,
            ShutdownResult::TimedOut {
                timeout: Duration::from_millis(50)
            }
        );
        assert!(
            hung.elapsed >= Duration::from_millis(50),
            "{:?}",
            hung.elapsed
        );
        assert_eq!(lc.state("hung"), Some(ModuleState::ShutdownTimedOut));
        // Finalisation went on past the hung module.
        assert_eq!(log.take(), lines(&["stop top", "stop base"]));

        // The detached shutdown is still alive and completes once released.
        release_tx.send(()).unwrap();
        finished_rx.recv().unwrap();
        assert!(finished.load(Ordering::SeqCst));
    });
}

#[test]
fn a_panicking_shutdown_is_reported_and_the_others_still_stop() {
    within_watchdog("the test", 2 * WATCHDOG, || {
        let log = Log::default();
        let lc = Lifecycle::new();
        lc.register(log.module("base")).unwrap();
        lc.register(
            ModuleDef::new("fragile")
                .depends_on("base")
                .on_shutdown(AMPLE, || panic!("shutdown exploded")),
        )
        .unwrap();
        lc.initialize().unwrap();
        let report = lc.finalize();
        assert_eq!(
            report.modules[0].result,
            ShutdownResult::Panicked {
                message: "shutdown exploded".into()
            }
        );
        assert_eq!(lc.state("fragile"), Some(ModuleState::ShutdownFailed));
        assert_eq!(log.take(), lines(&["start base", "stop base"]));
    });
}

#[test]
fn concurrent_finalize_from_eight_threads_runs_each_shutdown_exactly_once() {
    within_watchdog("the test", 2 * WATCHDOG, || {
        let lc = Arc::new(Lifecycle::new());
        let counters: Arc<Vec<AtomicUsize>> =
            Arc::new((0..6).map(|_| AtomicUsize::new(0)).collect());
        for i in 0..6 {
            let counters = Arc::clone(&counters);
            let mut def = ModuleDef::new(format!("m{i}")).on_shutdown(AMPLE, move || {
                counters[i].fetch_add(1, Ordering::SeqCst);
                // Long enough for the other callers to arrive while this one finalises.
                thread::sleep(Duration::from_millis(5));
            });
            if i > 0 {
                def = def.depends_on(format!("m{}", i - 1));
            }
            lc.register(def).unwrap();
        }
        lc.initialize().unwrap();
        let barrier = Arc::new(Barrier::new(8));
        let callers: Vec<_> = (0..8)
            .map(|_| {
                let (lc, barrier, counters) =
                    (Arc::clone(&lc), Arc::clone(&barrier), Arc::clone(&counters));
                thread::spawn(move || {
                    barrier.wait();
                    let report = lc.finalize();
                    // Whoever returns, returns after finalisation is complete.
                    let seen: Vec<usize> =
                        counters.iter().map(|c| c.load(Ordering::SeqCst)).collect();
                    (report, seen)
                })
            })
            .collect();
        let mut finalized = 0;
        for caller in callers {
            let (report, seen) = caller.join().unwrap();
            assert_eq!(
                seen,
                vec![1; 6],
                "a caller returned before finalisation ended"
            );
            match report.outcome {
                FinalizeOutcome::Finalized => {
                    finalized += 1;
                    assert_eq!(report.stop_order(), ["m5", "m4", "m3", "m2", "m1", "m0"]);
                }
                FinalizeOutcome::AlreadyFinalized => assert!(report.modules.is_empty()),
                other => panic!("unexpected outcome {other:?}"),
            }
        }
        assert_eq!(finalized, 1);
        for c in counters.iter() {
            assert_eq!(c.load(Ordering::SeqCst), 1);
        }
    });
}

#[test]
fn finalize_before_initialize_does_nothing_and_initialisation_still_works() {
    let lc = Lifecycle::new();
    lc.register(ModuleDef::new("m")).unwrap();
    assert_eq!(lc.finalize().outcome, FinalizeOutcome::NotInitialized);
    lc.initialize().unwrap();
    assert_eq!(lc.finalize().outcome, FinalizeOutcome::Finalized);
}

#[test]
fn dropping_a_running_lifecycle_stops_its_modules_in_reverse() {
    within_watchdog("the test", 2 * WATCHDOG, || {
        let log = Log::default();
        let lc = Lifecycle::new();
        lc.register(log.module("a")).unwrap();
        lc.register(log.module("b").depends_on("a")).unwrap();
        lc.initialize().unwrap();
        lc.register_dynamic(log.module("d").depends_on("b"))
            .unwrap();
        lc.load("d").unwrap();
        drop(lc);
        assert_eq!(
            log.take(),
            lines(&[
                "start a", "start b", "start d", "stop d", "stop b", "stop a"
            ])
        );
    });
}

#[test]
fn nothing_starts_again_after_finalisation() {
    let lc = Lifecycle::new();
    lc.register(ModuleDef::new("m")).unwrap();
    lc.initialize().unwrap();
    lc.register_dynamic(ModuleDef::new("d")).unwrap();
    lc.finalize();
    assert!(matches!(
        lc.initialize(),
        Err(LifecycleError::AlreadyFinalized)
    ));
    assert!(matches!(
        lc.load("d"),
        Err(LifecycleError::AlreadyFinalized)
    ));
    assert!(matches!(
        lc.register_dynamic(ModuleDef::new("e")),
        Err(LifecycleError::AlreadyFinalized)
    ));
    assert_eq!(lc.finalize().outcome, FinalizeOutcome::AlreadyFinalized);
}

// ---------------------------------------------------------------- re-entrancy

#[test]
fn a_load_from_inside_a_startup_action_is_refused_not_deadlocked() {
    within_watchdog("the test", 2 * WATCHDOG, || {
        let lc = Arc::new(Lifecycle::new());
        let (tx, rx) = mpsc::channel();
        let inner = Arc::clone(&lc);
        lc.register(ModuleDef::new("eager").on_startup(move || {
            tx.send(inner.load("anything")).unwrap();
            tx.send(inner.initialize()).unwrap();
            Ok(())
        }))
        .unwrap();
        lc.initialize().unwrap();
        for op in ["load", "initialize"] {
            match rx.recv().unwrap() {
                Err(LifecycleError::Reentrant { operation, inside }) => {
                    assert_eq!((operation, inside.as_str()), (op, "eager"));
                }
                other => panic!("expected Reentrant, got {other:?}"),
            }
        }
    });
}

#[test]
fn load_unload_and_finalize_from_inside_a_dynamic_module_are_refused() {
    within_watchdog("the test", 2 * WATCHDOG, || {
        let lc = Arc::new(Lifecycle::new());
        lc.initialize().unwrap();
        let (tx, rx) = mpsc::channel();
        let inner = Arc::clone(&lc);
        let stop_inner = Arc::clone(&lc);
        let stop_tx = tx.clone();
        lc.register_dynamic(ModuleDef::new("other")).unwrap();
        lc.register_dynamic(
            ModuleDef::new("plugin")
                .on_startup(move || {
                    tx.send(format!("{:?}", inner.load("other"))).unwrap();
                    tx.send(format!("{:?}", inner.finalize().outcome)).unwrap();
                    // Reading is fine from inside an action.
                    tx.send(format!("{:?}", inner.state("plugin"))).unwrap();
                    Ok(())
                })
                .on_shutdown(AMPLE, move || {
                    stop_tx
                        .send(format!("{:?}", stop_inner.unload("other")))
                        .unwrap();
                }),
        )
        .unwrap();
        lc.load("plugin").unwrap();
        assert!(rx.recv().unwrap().contains("Reentrant"));
        assert_eq!(rx.recv().unwrap(), "Reentrant");
        assert_eq!(rx.recv().unwrap(), "Some(Starting)");
        assert_eq!(lc.state("other"), Some(ModuleState::Registered));
        lc.unload("plugin").unwrap();
        let refused = rx.recv().unwrap();
        assert!(
            refused.contains("Reentrant") && refused.contains("\"unload\""),
            "{refused}"
        );
    });
}

#[test]
fn a_load_a_startup_action_hands_to_another_thread_fails_after_the_wait_limit() {
    within_watchdog("the test", 2 * WATCHDOG, || {
        let lc = Arc::new(Lifecycle::with_wait_limit(Duration::from_millis(200)));
        lc.initialize().unwrap();
        lc.register_dynamic(ModuleDef::new("other")).unwrap();
        let inner = Arc::clone(&lc);
        let (tx, rx) = mpsc::channel();
        lc.register_dynamic(ModuleDef::new("delegating").on_startup(move || {
            // The classic deadlock: wait for a thread that waits for us.
            let helper = thread::spawn(move || inner.load("other"));
            tx.send(helper.join().unwrap()).unwrap();
            Ok(())
        }))
        .unwrap();
        lc.load("delegating").unwrap();
        match rx.recv().unwrap() {
            Err(LifecycleError::Busy {
                operation,
                running,
                waited,
            }) => {
                assert_eq!((operation, running), ("load", "load"));
                assert!(waited >= Duration::from_millis(200));
            }
            other => panic!("expected Busy, got {other:?}"),
        }
        // The lifecycle is usable afterwards.
        lc.load("other").unwrap();
    });
}

#[test]
fn concurrent_loads_of_one_module_start_it_once() {
    within_watchdog("the test", 2 * WATCHDOG, || {
        let lc = Arc::new(Lifecycle::new());
        lc.initialize().unwrap();
        let starts = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&starts);
        lc.register_dynamic(ModuleDef::new("shared").on_startup(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }))
        .unwrap();
        let barrier = Arc::new(Barrier::new(6));
        let loaders: Vec<_> = (0..6)
            .map(|_| {
                let (lc, barrier) = (Arc::clone(&lc), Arc::clone(&barrier));
                thread::spawn(move || {
                    barrier.wait();
                    lc.load("shared")
                })
            })
            .collect();
        for loader in loaders {
            loader.join().unwrap().unwrap();
        }
        assert_eq!(starts.load(Ordering::SeqCst), 1);
    });
}

// ---------------------------------------------------------------- dynamic modules

/// An initialised lifecycle with one static module, `core`.
fn running(log: &Log) -> Lifecycle {
    let lc = Lifecycle::new();
    lc.register(log.module("core")).unwrap();
    lc.initialize().unwrap();
    log.take();
    lc
}

#[test]
fn dynamic_registration_needs_an_initialised_lifecycle_and_known_dependencies() {
    let lc = Lifecycle::new();
    assert!(matches!(
        lc.register_dynamic(ModuleDef::new("early")),
        Err(LifecycleError::NotInitialized)
    ));
    lc.register(ModuleDef::new("core")).unwrap();
    lc.initialize().unwrap();
    lc.register_dynamic(ModuleDef::new("plugin").depends_on("core"))
        .unwrap();
    assert!(matches!(
        lc.register_dynamic(ModuleDef::new("plugin")),
        Err(LifecycleError::DuplicateModule { module }) if module == "plugin"
    ));
    assert!(matches!(
        lc.register_dynamic(ModuleDef::new("core")),
        Err(LifecycleError::DuplicateModule { .. })
    ));
    assert!(matches!(
        lc.register_dynamic(ModuleDef::new("x").depends_on("missing")),
        Err(LifecycleError::UnknownDependency { module, dependency }) if module == "x" && dependency == "missing"
    ));
    assert!(matches!(
        lc.register_dynamic(ModuleDef::new("me").depends_on("me")),
        Err(LifecycleError::Cycle { cycle }) if cycle == ["me", "me"]
    ));
    assert!(
        matches!(lc.load("nope"), Err(LifecycleError::UnknownModule { module }) if module == "nope")
    );
    assert!(
        matches!(lc.load("core"), Err(LifecycleError::NotDynamic { module }) if module == "core")
    );
    assert!(matches!(
        lc.unload("core"),
        Err(LifecycleError::NotDynamic { .. })
    ));
}

#[test]
fn loading_a_chain_loads_its_dependencies_first_and_unloading_cascades_in_reverse() {
    within_watchdog("the test", 2 * WATCHDOG, || {
        let log = Log::default();
        let lc = running(&log);
        lc.register_dynamic(log.module("driver").depends_on("core"))
            .unwrap();
        lc.register_dynamic(log.module("camera").depends_on("driver"))
            .unwrap();
        lc.register_dynamic(log.module("viewer").depends_on("camera"))
            .unwrap();
        lc.load("viewer").unwrap();
        assert_eq!(
            log.take(),
            lines(&["start driver", "start camera", "start viewer"])
        );
        assert_eq!(lc.state("camera"), Some(ModuleState::Started));
        lc.unload("viewer").unwrap();
        assert_eq!(
            log.take(),
            lines(&["stop viewer", "stop camera", "stop driver"])
        );
        for gone in ["viewer", "camera", "driver"] {
            assert_eq!(lc.state(gone), None, "{gone} is removed once stopped");
        }
        assert_eq!(lc.state("core"), Some(ModuleState::Started));
    });
}

#[test]
fn a_diamond_of_dynamic_modules_is_refcounted() {
    within_watchdog("the test", 2 * WATCHDOG, || {
        let log = Log::default();
        let lc = running(&log);
        lc.register_dynamic(log.module("base")).unwrap();
        lc.register_dynamic(log.module("left").depends_on("base"))
            .unwrap();
        lc.register_dynamic(log.module("right").depends_on("base"))
            .unwrap();
        lc.register_dynamic(log.module("top").depends_on("left").depends_on("right"))
            .unwrap();
        lc.load("top").unwrap();
        assert_eq!(
            log.take(),
            lines(&["start base", "start left", "start right", "start top"])
        );
        match lc.unload("base") {
            Err(e @ LifecycleError::StillNeeded { .. }) => {
                assert_eq!(
                    e.to_string(),
                    "module \"base\" is still needed by left, right"
                );
            }
            other => panic!("expected StillNeeded, got {other:?}"),
        }
        match lc.unload("left") {
            Err(LifecycleError::StillNeeded { module, dependents }) => {
                assert_eq!((module.as_str(), dependents), ("left", lines(&["top"])));
            }
            other => panic!("expected StillNeeded, got {other:?}"),
        }
        assert!(log.take().is_empty(), "a refused unload stops nothing");
        lc.unload("top").unwrap();
        assert_eq!(
            log.take(),
            lines(&["stop top", "stop right", "stop left", "stop base"])
        );
    });
}

#[test]
fn an_explicitly_loaded_dependency_survives_the_unload_of_its_dependent() {
    within_watchdog("the test", 2 * WATCHDOG, || {
        let log = Log::default();
        let lc = running(&log);
        lc.register_dynamic(log.module("codec")).unwrap();
        lc.register_dynamic(log.module("player").depends_on("codec"))
            .unwrap();
        lc.load("codec").unwrap();
        lc.load("player").unwrap();
        lc.unload("player").unwrap();
        assert_eq!(
            log.take(),
            lines(&["start codec", "start player", "stop player"])
        );
        assert_eq!(lc.state("codec"), Some(ModuleState::Started));
        lc.unload("codec").unwrap();
        assert_eq!(log.take(), lines(&["stop codec"]));
    });
}

#[test]
fn a_persistent_dynamic_module_is_not_unloaded_and_stops_at_finalisation() {
    within_watchdog("the test", 2 * WATCHDOG, || {
        let log = Log::default();
        let lc = running(&log);
        lc.register_dynamic(log.module("cache").persistent(true))
            .unwrap();
        lc.register_dynamic(log.module("user").depends_on("cache"))
            .unwrap();
        lc.register_dynamic(log.module("pinned").persistent(true))
            .unwrap();
        lc.load("user").unwrap();
        lc.load("pinned").unwrap();
        // The cascade from user does not reach the persistent cache.
        lc.unload("user").unwrap();
        // Unloading a persistent module succeeds and does nothing.
        lc.unload("pinned").unwrap();
        assert_eq!(
            log.take(),
            lines(&["start cache", "start user", "start pinned", "stop user"])
        );
        assert_eq!(lc.state("cache"), Some(ModuleState::Started));
        assert_eq!(lc.state("pinned"), Some(ModuleState::Started));
        let report = lc.finalize();
        // Dynamic modules first (reverse load order), then the static ones.
        assert_eq!(report.stop_order(), ["pinned", "cache", "core"]);
        assert_eq!(
            log.take(),
            lines(&["stop pinned", "stop cache", "stop core"])
        );
    });
}

#[test]
fn finalize_stops_loaded_dynamic_modules_before_the_static_ones_they_use() {
    within_watchdog("the test", 2 * WATCHDOG, || {
        let log = Log::default();
        let lc = Lifecycle::new();
        lc.register(log.module("log")).unwrap();
        lc.register(log.module("hub").depends_on("log")).unwrap();
        lc.initialize().unwrap();
        lc.register_dynamic(log.module("driver").depends_on("log"))
            .unwrap();
        lc.register_dynamic(log.module("camera").depends_on("driver").depends_on("hub"))
            .unwrap();
        lc.load("camera").unwrap();
        lc.finalize();
        assert_eq!(
            log.take(),
            lines(&[
                "start log",
                "start hub",
                "start driver",
                "start camera",
                "stop camera",
                "stop driver",
                "stop hub",
                "stop log",
            ])
        );
    });
}

#[test]
fn an_unloaded_module_can_be_registered_and_loaded_again() {
    within_watchdog("the test", 2 * WATCHDOG, || {
        let log = Log::default();
        let lc = running(&log);
        lc.register_dynamic(log.module("plugin")).unwrap();
        lc.unload("plugin").unwrap(); // not loaded: nothing to do
        assert_eq!(lc.state("plugin"), Some(ModuleState::Registered));
        lc.load("plugin").unwrap();
        lc.load("plugin").unwrap(); // already loaded: nothing to do
        lc.unload("plugin").unwrap();
        assert_eq!(lc.state("plugin"), None);
        lc.register_dynamic(log.module("plugin")).unwrap();
        lc.load("plugin").unwrap();
        assert_eq!(
            log.take(),
            lines(&["start plugin", "stop plugin", "start plugin"])
        );
    });
}

#[test]
fn a_failed_load_stops_what_it_started_and_keeps_what_was_loaded_before() {
    within_watchdog("the test", 2 * WATCHDOG, || {
        let log = Log::default();
        let lc = running(&log);
        lc.register_dynamic(log.module("old")).unwrap();
        lc.register_dynamic(log.module("fresh").depends_on("old"))
            .unwrap();
        lc.register_dynamic(
            ModuleDef::new("broken")
                .depends_on("fresh")
                .on_startup(|| Err("no device".into())),
        )
        .unwrap();
        lc.load("old").unwrap();
        match lc.load("broken") {
            Err(LifecycleError::StartupFailed { module, source }) => {
                assert_eq!(module, "broken");
                assert_eq!(source.to_string(), "no device");
            }
            other => panic!("expected StartupFailed, got {other:?}"),
        }
        assert_eq!(
            log.take(),
            lines(&["start old", "start fresh", "stop fresh"])
        );
        assert_eq!(lc.state("broken"), None);
        assert_eq!(lc.state("fresh"), None);
        assert_eq!(lc.state("old"), Some(ModuleState::Started));
    });
}

/// Reads the lifecycle when dropped: deadlocks if dropped under the lifecycle's lock.
struct ReadsOnDrop {
    lc: Arc<Lifecycle>,
    tx: mpsc::Sender<Option<ModuleState>>,
}

impl Drop for ReadsOnDrop {
    fn drop(&mut self) {
        let _ = self.tx.send(self.lc.state("core"));
    }
}

#[test]
fn values_captured_by_discarded_modules_are_dropped_outside_the_lifecycle_lock() {
    within_watchdog("the test", 2 * WATCHDOG, || {
        let lc = Arc::new(Lifecycle::new());
        let (tx, rx) = mpsc::channel();
        let probe = |lc: &Arc<Lifecycle>| ReadsOnDrop {
            lc: Arc::clone(lc),
            tx: tx.clone(),
        };
        lc.register(ModuleDef::new("core")).unwrap();
        // A duplicate registration discards its definition.
        let held = probe(&lc);
        let duplicate = ModuleDef::new("core").on_startup(move || {
            drop(held);
            Ok(())
        });
        assert!(lc.register(duplicate).is_err());
        assert_eq!(rx.recv().unwrap(), Some(ModuleState::Registered));
        lc.initialize().unwrap();
        // A failed load removes the module whose shutdown never ran.
        let held = probe(&lc);
        lc.register_dynamic(
            ModuleDef::new("broken")
                .on_startup(|| Err("no".into()))
                .on_shutdown(AMPLE, move || drop(held)),
        )
        .unwrap();
        assert!(lc.load("broken").is_err());
        assert_eq!(rx.recv().unwrap(), Some(ModuleState::Started));
    });
}

/// A subscriber that reads the lifecycle on every event, as a logger layer reaching its service
/// through the lifecycle would: deadlocks if the lifecycle logs under its lock.
struct ReadsOnEvent {
    lc: Arc<Lifecycle>,
    events: Arc<AtomicUsize>,
}

impl tracing::Subscriber for ReadsOnEvent {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {
        let _ = self.lc.state("core");
        let _ = self.lc.service::<String>();
        self.events.fetch_add(1, Ordering::SeqCst);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn a_subscriber_that_reads_the_lifecycle_on_every_event_does_not_deadlock_it() {
    within_watchdog("the test", 2 * WATCHDOG, || {
        let lc = Arc::new(Lifecycle::with_wait_limit(Duration::from_millis(100)));
        let events = Arc::new(AtomicUsize::new(0));
        let subscriber = ReadsOnEvent {
            lc: Arc::clone(&lc),
            events: Arc::clone(&events),
        };
        tracing::subscriber::with_default(subscriber, || {
            lc.register(ModuleDef::new("core")).unwrap();
            assert!(lc.register(ModuleDef::new("core")).is_err());
            lc.initialize().unwrap();
            lc.register_dynamic(ModuleDef::new("pinned").persistent(true))
                .unwrap();
            lc.register_dynamic(ModuleDef::new("plain")).unwrap();
            lc.register_dynamic(ModuleDef::new("broken").on_startup(|| Err("no".into())))
                .unwrap();
            lc.load("pinned").unwrap();
            lc.load("plain").unwrap();
            lc.unload("pinned").unwrap();
            lc.unload("plain").unwrap();
            assert!(lc.load("broken").is_err());
            // A finalize that gives up waiting for a load blocked in its startup.
            let (entered_tx, entered_rx) = mpsc::channel();
            let (release_tx, release_rx) = mpsc::channel::<()>();
            lc.register_dynamic(ModuleDef::new("slow").on_startup(move || {
                entered_tx.send(()).unwrap();
                let _ = release_rx.recv_timeout(WATCHDOG);
                Ok(())
            }))
            .unwrap();
            let loader = {
                let lc = Arc::clone(&lc);
                thread::spawn(move || lc.load("slow"))
            };
            entered_rx.recv().unwrap();
            assert_eq!(lc.finalize().outcome, FinalizeOutcome::Busy);
            release_tx.send(()).unwrap();
            loader.join().unwrap().unwrap();
            assert!(lc.finalize().is_clean());
        });
        assert!(
            events.load(Ordering::SeqCst) > 10,
            "the subscriber saw the lifecycle's events"
        );
    });
}

#[test]
fn a_cycle_among_dynamic_modules_is_refused_at_load() {
    within_watchdog("the test", 2 * WATCHDOG, || {
        let log = Log::default();
        let lc = running(&log);
        // b is registered, a points at it, b is then replaced by one that points back at a.
        lc.register_dynamic(log.module("b")).unwrap();
        lc.register_dynamic(log.module("a").depends_on("b"))
            .unwrap();
        lc.load("b").unwrap();
        lc.unload("b").unwrap();
        lc.register_dynamic(log.module("b").depends_on("a"))
            .unwrap();
        match lc.load("a") {
            Err(LifecycleError::Cycle { cycle }) => assert_eq!(cycle, lines(&["a", "b", "a"])),
            other => panic!("expected Cycle, got {other:?}"),
        }
        assert_eq!(log.take(), lines(&["start b", "stop b"]));
    });
}

// ---------------------------------------------------------------- services

struct Counter {
    stopped: AtomicBool,
}

#[test]
fn a_service_is_reached_through_the_lifecycle_while_its_module_runs() {
    within_watchdog("the test", 2 * WATCHDOG, || {
        let lc = Arc::new(Lifecycle::new());
        let (stopped_tx, stopped_rx) = mpsc::channel();
        lc.register(ModuleDef::service(
            "counter",
            || {
                Ok(Arc::new(Counter {
                    stopped: AtomicBool::new(false),
                }))
            },
            AMPLE,
            move |counter: Arc<Counter>| {
                counter.stopped.store(true, Ordering::SeqCst);
                stopped_tx.send(counter).unwrap();
            },
        ))
        .unwrap();
        // A dependent module finds the service from its own startup.
        let inner = Arc::clone(&lc);
        let (seen_tx, seen_rx) = mpsc::channel();
        lc.register(
            ModuleDef::new("user")
                .depends_on("counter")
                .on_startup(move || {
                    seen_tx.send(inner.service::<Counter>().is_some()).unwrap();
                    Ok(())
                }),
        )
        .unwrap();
        assert!(lc.service::<Counter>().is_none(), "not before start");
        lc.initialize().unwrap();
        assert!(seen_rx.recv().unwrap());
        let service = lc.service::<Counter>().expect("started service");
        assert!(
            lc.service::<String>().is_none(),
            "no service of another type"
        );
        let report = lc.finalize();
        assert_eq!(report.stop_order(), ["user", "counter"]);
        let stopped = stopped_rx.recv().unwrap();
        assert!(
            Arc::ptr_eq(&stopped, &service),
            "stop gets the lifecycle's object"
        );
        assert!(service.stopped.load(Ordering::SeqCst));
        assert!(lc.service::<Counter>().is_none(), "not after stop");
        drop(stopped);
        assert_eq!(
            Arc::strong_count(&service),
            1,
            "the lifecycle dropped its Arc"
        );
    });
}

#[test]
fn a_service_whose_start_fails_is_not_reachable() {
    let lc = Lifecycle::new();
    lc.register(ModuleDef::service::<Counter>(
        "counter",
        || Err("cannot open".into()),
        AMPLE,
        |_| {},
    ))
    .unwrap();
    assert!(matches!(
        lc.initialize(),
        Err(LifecycleError::StartupFailed { module, .. }) if module == "counter"
    ));
    assert!(lc.service::<Counter>().is_none());
}

// ---------------------------------------------------------------- the global guard (child processes)

/// Runs the child role and returns (exit code, stdout lines, stderr).
fn child(role: &str) -> (Option<i32>, Vec<String>, String) {
    let role = role.to_owned();
    within_watchdog(&role.clone(), 2 * WATCHDOG, move || {
        let out = Command::new(CHILD_EXE)
            .arg(&role)
            .output()
            .expect("spawn labhub-test-child");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_owned)
                .collect(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
}

#[test]
fn only_the_first_guard_owns_the_lifecycle_and_a_second_one_is_inert_and_warns() {
    let (code, stdout, stderr) = child("lifecycle-two-guards");
    assert_eq!(code, Some(0), "stderr: {stderr}");
    let warning = stdout
        .iter()
        .find(|l| l.starts_with("warn: "))
        .unwrap_or_else(|| panic!("no warning in {stdout:?}"));
    assert!(warning.contains("inert"), "{warning}");
    let facts: Vec<&str> = stdout
        .iter()
        .filter(|l| !l.starts_with("warn: "))
        .map(String::as_str)
        .collect();
    assert_eq!(
        facts,
        [
            "start first-module",
            "first owner=true",
            "second owner=false",
            "second-module registered=false",
            "after second drop initialized=true",
            "stop first-module",
            "after first drop initialized=false",
        ]
    );
}

#[test]
fn dropping_the_guard_finalises_in_reverse_order() {
    let (code, stdout, stderr) = child("lifecycle-guard-drop-finalizes");
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert_eq!(
        stdout,
        lines(&[
            "start log",
            "start store",
            "start app",
            "owner=true",
            "stop app",
            "stop store",
            "stop log",
            "after drop state(log)=Some(Stopped)",
        ])
    );
}

#[test]
fn a_guard_over_a_cycle_fails_with_the_cycle_named_and_starts_nothing() {
    let (code, stdout, stderr) = child("lifecycle-guard-cycle");
    assert_eq!(code, Some(1));
    assert!(stdout.is_empty(), "{stdout:?}");
    assert!(stderr.contains("dependency cycle: a -> b -> a"), "{stderr}");
}
