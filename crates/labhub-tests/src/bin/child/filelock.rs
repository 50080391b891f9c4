//! Child roles for the FileLock tests (`tests/it/filelock.rs`).
//!
//! * `filelock-append TARGET LOG ROUNDS`: prints `ready`, waits for a line on stdin, then
//!   ROUNDS times locks TARGET and, while holding it, appends `ACQUIRE <pid> <ns>` and
//!   `RELEASE <pid> <ns>` (CLOCK_MONOTONIC nanoseconds) to LOG, one `write` per line.
//! * `filelock-hold TARGET`: locks TARGET, prints `locked`, and holds it until a line or
//!   end-of-file arrives on stdin; then unlocks and prints `released`.
//! * `filelock-try TARGET`: prints `some` if `try_lock` got the lock, `none` if not.

use std::fs::OpenOptions;
use std::io::{BufRead, Write};

use anyhow::{Context, bail};
use labhub::filelock::FileLock;

/// Runs the FileLock role `role` with its arguments.
pub fn run(role: &str, args: &[String]) -> anyhow::Result<()> {
    match (role, args) {
        ("filelock-append", [target, log, rounds]) => append(target, log, rounds.parse()?),
        ("filelock-hold", [target]) => hold(target),
        ("filelock-try", [target]) => {
            let guard = FileLock::try_lock(target)?;
            say(if guard.is_some() { "some" } else { "none" })
        }
        _ => bail!("usage: {role} with arguments {args:?} is not a filelock role"),
    }
}

fn append(target: &str, log: &str, rounds: u32) -> anyhow::Result<()> {
    let mut log = OpenOptions::new()
        .append(true)
        .create(true)
        .open(log)
        .with_context(|| format!("open {log}"))?;
    let pid = std::process::id();
    say("ready")?;
    read_line()?;
    for _ in 0..rounds {
        let guard = FileLock::lock(target)?;
        log.write_all(format!("ACQUIRE {pid} {}\n", monotonic_ns()).as_bytes())?;
        // Give another process a chance to run (and to misbehave) while the lock is held.
        std::thread::yield_now();
        log.write_all(format!("RELEASE {pid} {}\n", monotonic_ns()).as_bytes())?;
        drop(guard);
    }
    Ok(())
}

fn hold(target: &str) -> anyhow::Result<()> {
    let guard = FileLock::lock(target)?;
    say("locked")?;
    read_line()?;
    drop(guard);
    say("released")
}

fn say(line: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

fn read_line() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line)
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process of the machine, so the
/// parent can order the lines of all children.
fn monotonic_ns() -> u128 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    assert_eq!(rc, 0, "CLOCK_MONOTONIC is always available on Linux");
    now.tv_sec as u128 * 1_000_000_000 + now.tv_nsec as u128
}
