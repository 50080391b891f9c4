//! An idle Hub client: connects to the broker of the labhub home (`LABHUB_HOME`, the
//! endpoints from `LABHUB_BROKER_ENDPOINT` / `LABHUB_BROKER_NOTIFY_ENDPOINT`), registers a
//! pub/sub channel so that it heartbeats, then does nothing for SECONDS (default 10) and
//! prints the context switches of all its threads meanwhile (voluntary and involuntary,
//! summed over `/proc/self/task/*/status`), as one JSON line.
//!
//! ```text
//! cargo run --release -p labhub --example idle_hub -- 10
//! ```
//!
//! docs/PERFORMANCE.md has the figures and the commands that start the broker.

use std::time::{Duration, Instant};

use labhub::client::{ClientConfig, Hub};

/// Context switches of every thread of this process so far: (voluntary, involuntary).
fn context_switches() -> std::io::Result<(u64, u64)> {
    let (mut voluntary, mut involuntary) = (0, 0);
    for task in std::fs::read_dir("/proc/self/task")? {
        let status = std::fs::read_to_string(task?.path().join("status"))?;
        for line in status.lines() {
            let value = |rest: &str| rest.trim().parse::<u64>().unwrap_or(0);
            if let Some(rest) = line.strip_prefix("voluntary_ctxt_switches:") {
                voluntary += value(rest);
            } else if let Some(rest) = line.strip_prefix("nonvoluntary_ctxt_switches:") {
                involuntary += value(rest);
            }
        }
    }
    Ok((voluntary, involuntary))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds: f64 = match std::env::args().nth(1) {
        Some(s) => s
            .parse()
            .map_err(|_| format!("SECONDS {s:?} is not a number"))?,
        None => 10.0,
    };
    let idle = Duration::try_from_secs_f64(seconds).map_err(|e| format!("SECONDS: {e}"))?;
    let hub = Hub::connect(ClientConfig::from_env()?)?;
    let name = format!("idle-{}", std::process::id());
    let publisher = hub.publisher(&name).create()?;
    // Let the start-up settle: the first heartbeat is due at once.
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    let (v0, i0) = context_switches()?;
    std::thread::sleep(idle);
    let (v1, i1) = context_switches()?;
    let elapsed = start.elapsed().as_secs_f64();
    let threads = std::fs::read_dir("/proc/self/task")?.count();
    println!(
        "{{\"seconds\": {elapsed:.2}, \"threads\": {threads}, \"voluntary\": {}, \"involuntary\": {}, \"per_second\": {:.1}}}",
        v1 - v0,
        i1 - i0,
        (v1 - v0 + i1 - i0) as f64 / elapsed
    );
    drop(publisher);
    hub.shutdown();
    Ok(())
}
