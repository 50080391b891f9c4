//! Child roles for the lifecycle tests: things that need a fresh process, because only the first
//! `LifecycleGuard` of a process owns the global lifecycle.
//!
//! Every role prints one fact per line on stdout; the tests compare the lines.

use std::time::Duration;

use anyhow::bail;
use labhub::lifecycle::{Lifecycle, LifecycleGuard, ModuleDef};

/// Runs the lifecycle role `role`.
pub fn run(role: &str, args: &[String]) -> anyhow::Result<()> {
    match role {
        "lifecycle-two-guards" => two_guards(),
        "lifecycle-guard-drop-finalizes" => guard_drop_finalizes(),
        "lifecycle-guard-cycle" => guard_cycle(),
        other => bail!("unknown lifecycle role {other:?} (args {args:?})"),
    }
}

/// A module that prints `start NAME` and `stop NAME`.
fn printing(name: &'static str) -> ModuleDef {
    ModuleDef::new(name)
        .on_startup(move || {
            println!("start {name}");
            Ok(())
        })
        .on_shutdown(Duration::from_secs(10), move || println!("stop {name}"))
}

/// Two guards: the first owns the lifecycle, the second is inert, warns, and starts nothing.
fn two_guards() -> anyhow::Result<()> {
    tracing::subscriber::set_global_default(warnings::PrintWarnings)?;
    let first = LifecycleGuard::new([printing("first-module")])?;
    println!("first owner={}", first.is_owner());
    let second = LifecycleGuard::new([printing("second-module")])?;
    println!("second owner={}", second.is_owner());
    println!(
        "second-module registered={}",
        Lifecycle::global().state("second-module").is_some()
    );
    drop(second);
    println!(
        "after second drop initialized={}",
        Lifecycle::global().is_initialized()
    );
    drop(first);
    println!(
        "after first drop initialized={}",
        Lifecycle::global().is_initialized()
    );
    Ok(())
}

/// A chain log <- store <- app started by a guard; dropping the guard stops it in reverse.
fn guard_drop_finalizes() -> anyhow::Result<()> {
    let guard = LifecycleGuard::new([
        printing("app").depends_on("store"),
        printing("store").depends_on("log"),
        printing("log"),
    ])?;
    println!("owner={}", guard.is_owner());
    drop(guard);
    println!(
        "after drop state(log)={:?}",
        Lifecycle::global().state("log")
    );
    Ok(())
}

/// A guard over a cycle: creation fails with the cycle named; main reports it and exits 1.
fn guard_cycle() -> anyhow::Result<()> {
    let _guard =
        LifecycleGuard::new([printing("a").depends_on("b"), printing("b").depends_on("a")])?;
    println!("unreachable: the guard started");
    Ok(())
}

/// The smallest `tracing` subscriber that prints warnings: `warn: MESSAGE` on stdout.
mod warnings {
    use std::fmt::Write as _;

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Level, Metadata, Subscriber};

    pub struct PrintWarnings;

    struct Message(String);

    impl Visit for Message {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                let _ = write!(self.0, "{value:?}");
            }
        }
    }

    impl Subscriber for PrintWarnings {
        fn enabled(&self, metadata: &Metadata<'_>) -> bool {
            *metadata.level() <= Level::WARN
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut message = Message(String::new());
            event.record(&mut message);
            println!("warn: {}", message.0);
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }
}
