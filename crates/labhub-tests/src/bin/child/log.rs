//! Log roles: processes that append to a shared log file through the lifecycle log module.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use labhub::lifecycle::LifecycleGuard;
use labhub::log::{self, LogConfig, Sink};

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
    let sink = match arg(0)? {
        "file" => Sink::File(path),
        "rotating" => Sink::RotatingFile {
            path,
            max_bytes: arg(4)?.parse()?,
            backups: arg(5)?.parse()?,
        },
        other => bail!("log-append: unknown sink kind {other:?}"),
    };
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
