//! Log roles: processes that append to a shared log file through the lifecycle log module.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use labhub::lifecycle::LifecycleGuard;
use labhub::log::{self, LogConfig, Sink};

/// The sink named by `kind` (`file` or `rotating`, with `max_bytes` and `backups` in
/// `args[extra..]`).
fn sink_from(args: &[String], kind: &str, path: PathBuf, extra: usize) -> anyhow::Result<Sink> {
    let num = |i: usize| -> anyhow::Result<&String> {
        args.get(i)
            .with_context(|| format!("missing argument {i} in {args:?}"))
    };
    Ok(match kind {
        "file" => Sink::File(path),
        "rotating" => Sink::RotatingFile {
            path,
            max_bytes: num(extra)?.parse()?,
            backups: num(extra + 1)?.parse()?,
        },
        other => bail!("unknown sink kind {other:?}"),
    })
}

/// `log-spam KIND PATH PROC [MAX_BYTES BACKUPS]`: logs `spam line proc=PROC i=I` as fast as
/// it can (for at most 60 s); prints `writing` once the first lines are flushed, so the test
/// can SIGKILL it mid-write.
pub fn spam(args: &[String]) -> anyhow::Result<()> {
    let kind = args.first().context("log-spam: missing sink kind")?;
    let path = PathBuf::from(args.get(1).context("log-spam: missing path")?);
    let proc_index: u32 = args.get(2).context("log-spam: missing proc")?.parse()?;
    let sink = sink_from(args, kind, path, 3)?;
    let _guard = LifecycleGuard::new([log::module(LogConfig::new(sink))])?;
    let mut stdout = std::io::stdout();
    // Bounded, so a child the test failed to kill still ends by itself.
    let started = std::time::Instant::now();
    for i in 0u64..10_000_000 {
        if started.elapsed() > std::time::Duration::from_secs(60) {
            break;
        }
        tracing::info!(proc = proc_index, i, "spam line");
        if i == 1000 {
            log::logger().context("log-spam: no logger")?.flush()?;
            writeln!(stdout, "writing")?;
            stdout.flush()?;
        }
    }
    Ok(())
}

/// `log-append file PATH PROC COUNT` or `log-append rotating PATH PROC COUNT MAX_BYTES BACKUPS`:
/// starts the log module on that sink, prints `ready`, waits for a line on stdin, logs COUNT
/// lines `child line proc=PROC i=I` (flushing halfway), stops the lifecycle (which drains the
/// queue) and prints `done`. It also logs before the module starts and after it stops: those lines must
/// go nowhere.
pub fn append(args: &[String]) -> anyhow::Result<()> {
    let arg = |i: usize| -> anyhow::Result<&str> {
        args.get(i)
            .map(String::as_str)
            .with_context(|| format!("log-append: missing argument {i} in {args:?}"))
    };
    let path = PathBuf::from(arg(1)?);
    let proc_index: u32 = arg(2)?.parse()?;
    let count: u32 = arg(3)?.parse()?;
    let sink = sink_from(args, arg(0)?, path, 4)?;
    // Room for every line: this role tests interleaving, not dropping.
    let config = LogConfig::new(sink).queue_capacity(count as usize + 16);
    // Before the log module starts: a silent no-op (the tests check it never appears).
    tracing::info!(proc = proc_index, "before start");
    let guard = LifecycleGuard::new([log::module(config)])?;

    let mut stdout = std::io::stdout();
    writeln!(stdout, "ready")?;
    stdout.flush()?;
    let mut go = String::new();
    std::io::stdin().lock().read_line(&mut go)?;

    for i in 0..count / 2 {
        tracing::info!(proc = proc_index, i, "child line");
    }
    // Reached through the lifecycle; flush returns once the lines above are written.
    log::logger()
        .context("log-append: no logger service")?
        .flush()?;
    for i in count / 2..count {
        tracing::info!(proc = proc_index, i, "child line");
    }
    // These last lines reach the file only if stopping the log module drains the queue.
    let report = guard.finalize();
    if !report.is_clean() {
        bail!("log-append: lifecycle did not stop cleanly: {report:?}");
    }
    if log::logger().is_some() {
        bail!("log-append: logger service still reachable after finalize");
    }
    // After the log module stopped: a silent no-op again.
    tracing::info!(proc = proc_index, "after stop");
    writeln!(stdout, "done")?;
    stdout.flush()?;
    Ok(())
}
