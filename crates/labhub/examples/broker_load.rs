//! Load: 1,000 channels and 200 clients heartbeating every 500 ms against one broker process;
//! reports the broker's CPU use and memory, and the heartbeat round trips.
//!
//! `cargo run --profile bench -p labhub --example broker_load -- [SECONDS]` (default 20; the
//! bench profile reuses what `cargo bench` built)
//!
//! The example re-runs itself as the broker process (`broker_load --broker HOME`), so the
//! broker's CPU time and resident memory are read from `/proc/<pid>` alone. The 200 clients are
//! DEALER sockets with CURVE, owned by 4 client threads (50 each); each client registers 5
//! channels (with counters in every heartbeat). Traffic stays on 127.0.0.1 and the run is
//! bounded in time.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use labhub::broker::{BrokerConfig, run_foreground};
use labhub::keys::{self, KeyPair, PublicKey};
use labhub::log::{LogConfig, Sink};
use labhub_zmq::{
    Context, CurvePublicKey, CurveSecretKey, Flags, PollEvents, Socket, SocketType, poll,
};

const CLIENTS: usize = 200;
const CHANNELS_PER_CLIENT: usize = 5;
const THREADS: usize = 4;
const INTERVAL: Duration = Duration::from_millis(500);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--broker") {
        return broker(&args[2]);
    }
    let seconds: u64 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(20);
    let home = std::env::temp_dir().join(format!("labhub-broker-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--broker")
        .arg(&home)
        .stdout(Stdio::piped())
        .spawn()?;
    let mut ready = String::new();
    BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut ready)?;
    let parts: Vec<&str> = ready.split_whitespace().collect();
    let [_, endpoint, key] = parts[..] else {
        return Err(format!("unexpected ready line {ready:?}").into());
    };
    let server = PublicKey::from_z85(key)?;
    let client_key = keys::local_client_key(&home.join("keys"))?;
    let pid = child.id();

    let ctx = Context::new()?;
    let stop = Arc::new(AtomicBool::new(false));
    let registered = Arc::new(std::sync::Barrier::new(THREADS + 1));
    let mut threads = Vec::new();
    for t in 0..THREADS {
        let ctx = ctx.clone();
        let endpoint = endpoint.to_owned();
        let client_key = client_key.clone();
        let stop = stop.clone();
        let registered = registered.clone();
        threads.push(std::thread::spawn(move || {
            client_thread(t, &ctx, &endpoint, &server, &client_key, &stop, &registered)
        }));
    }
    registered.wait();
    let (cpu0, wall0) = (cpu_ticks(pid)?, Instant::now());
    let rss_start = rss_kib(pid)?;
    std::thread::sleep(Duration::from_secs(seconds));
    let (cpu1, wall1) = (cpu_ticks(pid)?, Instant::now());
    let rss_end = rss_kib(pid)?;
    stop.store(true, Ordering::Relaxed);
    let mut stats = Vec::new();
    for t in threads {
        stats.push(t.join().map_err(|_| "client thread panicked")??);
    }
    let hz = clock_ticks_per_second();
    let cpu_s = (cpu1 - cpu0) as f64 / hz;
    let wall_s = (wall1 - wall0).as_secs_f64();
    let mut latencies: Vec<Duration> = stats.iter().flat_map(|s| s.latencies.clone()).collect();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    let heartbeats: usize = stats.iter().map(|s| s.heartbeats).sum();
    let errors: usize = stats.iter().map(|s| s.errors).sum();
    println!(
        "clients: {CLIENTS}, channels: {}, heartbeat interval: {INTERVAL:?}",
        CLIENTS * CHANNELS_PER_CLIENT
    );
    println!("measured for {wall_s:.1} s (after registration)");
    println!(
        "broker CPU: {cpu_s:.2} s = {:.1} % of one core",
        100.0 * cpu_s / wall_s
    );
    println!("broker RSS: {rss_start} KiB after registration, {rss_end} KiB at the end");
    println!(
        "heartbeats answered: {heartbeats} ({:.0}/s), error replies: {errors}",
        heartbeats as f64 / wall_s
    );
    println!(
        "heartbeat round trip: p50 {:?}, p99 {:?}, max {:?}",
        pct(0.5),
        pct(0.99),
        latencies.last().copied().unwrap_or_default()
    );
    // SIGTERM via the process API is SIGKILL-only; the broker's audit log is irrelevant here.
    child.kill()?;
    child.wait()?;
    let _ = std::fs::remove_dir_all(&home);
    Ok(())
}

struct ThreadStats {
    heartbeats: usize,
    errors: usize,
    latencies: Vec<Duration>,
}

fn client_thread(
    t: usize,
    ctx: &Context,
    endpoint: &str,
    server: &PublicKey,
    key: &KeyPair,
    stop: &AtomicBool,
    registered: &std::sync::Barrier,
) -> Result<ThreadStats, String> {
    let per_thread = CLIENTS / THREADS;
    let sockets: Vec<Socket> = (0..per_thread)
        .map(|_| -> Result<Socket, labhub_zmq::ZmqError> {
            let s = ctx.socket(SocketType::Dealer)?;
            s.set_curve_client_keys(
                &CurvePublicKey::from_bytes(server.as_bytes())?,
                &CurvePublicKey::from_bytes(key.public.as_bytes())?,
                &CurveSecretKey::from_bytes(key.secret_bytes())?,
            )?;
            s.connect(endpoint)?;
            Ok(s)
        })
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let client_id = |i: usize| format!("load-{t}-{i}");
    let channel = |i: usize, c: usize| format!("load-{t}-{i}-ch{c}");
    let mut id = 0u64;
    let mut call =
        |s: &Socket, kind: &str, body: serde_json::Value| -> Result<serde_json::Value, String> {
            id += 1;
            let mut body = body;
            body["request_id"] = id.into();
            s.send_multipart(
                [
                    &b"labhub"[..],
                    b"1",
                    kind.as_bytes(),
                    body.to_string().as_bytes(),
                ],
                Flags::NONE,
            )
            .map_err(|e| e.to_string())?;
            let frames = s
                .recv_multipart_bytes(Flags::NONE)
                .map_err(|e| e.to_string())?;
            serde_json::from_slice(&frames[3]).map_err(|e| e.to_string())
        };
    for (i, s) in sockets.iter().enumerate() {
        for c in 0..CHANNELS_PER_CLIENT {
            let reply = call(
                s,
                "register",
                serde_json::json!({"client": client_id(i), "channel": {
                    "name": channel(i, c), "kind": "pubsub",
                    "endpoint": format!("tcp://127.0.0.1:{}", 20_000 + t * 1000 + i * 10 + c)}}),
            )?;
            if reply["status"] != "ok" {
                return Err(format!("register refused: {reply}"));
            }
        }
    }
    registered.wait();
    let mut stats = ThreadStats {
        heartbeats: 0,
        errors: 0,
        latencies: Vec::new(),
    };
    // Spread this thread's clients over the interval, as independent clients would be.
    let start = Instant::now();
    let mut due: Vec<Instant> = (0..per_thread)
        .map(|i| start + INTERVAL * i as u32 / per_thread as u32)
        .collect();
    let mut sent_at: Vec<Option<Instant>> = vec![None; per_thread];
    let mut frame = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        for i in 0..per_thread {
            if now >= due[i] {
                frame += 1;
                id += 1;
                let mut channels = serde_json::Map::new();
                for c in 0..CHANNELS_PER_CLIENT {
                    channels.insert(
                        channel(i, c),
                        serde_json::json!({"frames": frame, "dropped": 0}),
                    );
                }
                let body = serde_json::json!({"request_id": id, "client": client_id(i), "channels": channels});
                sockets[i]
                    .send_multipart(
                        [
                            &b"labhub"[..],
                            b"1",
                            b"heartbeat",
                            body.to_string().as_bytes(),
                        ],
                        Flags::NONE,
                    )
                    .map_err(|e| e.to_string())?;
                sent_at[i] = Some(now);
                due[i] += INTERVAL;
            }
        }
        let next = due.iter().min().copied().unwrap_or(now);
        let mut items: Vec<_> = sockets
            .iter()
            .map(|s| s.poll_item(PollEvents::IN))
            .collect();
        poll(
            &mut items,
            Some(
                next.saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            ),
        )
        .map_err(|e| e.to_string())?;
        let readable: Vec<usize> = items
            .iter()
            .enumerate()
            .filter(|(_, it)| it.is_readable())
            .map(|(i, _)| i)
            .collect();
        drop(items);
        for i in readable {
            while let Ok(frames) = sockets[i].recv_multipart_bytes(Flags::DONTWAIT) {
                let reply: serde_json::Value =
                    serde_json::from_slice(&frames[3]).map_err(|e| e.to_string())?;
                if reply["status"] == "ok" {
                    stats.heartbeats += 1;
                } else {
                    stats.errors += 1;
                }
                if let Some(t0) = sent_at[i].take() {
                    stats.latencies.push(t0.elapsed());
                }
            }
        }
    }
    Ok(stats)
}

fn broker(home: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = BrokerConfig::for_home(home);
    config.endpoint = "tcp://127.0.0.1:*".into();
    config.notify_endpoint = "tcp://127.0.0.1:*".into();
    config.reap_stale_segments = false;
    config.registry.heartbeat_interval = INTERVAL;
    let mut log = LogConfig::new(Sink::Console);
    log.level = tracing::level_filters::LevelFilter::WARN;
    run_foreground(config, log, |info| {
        println!("ready {} {}", info.endpoint, info.public_key);
    })?;
    Ok(())
}

/// utime + stime of `pid`, in clock ticks (`/proc/<pid>/stat` fields 14 and 15).
fn cpu_ticks(pid: u32) -> Result<u64, Box<dyn std::error::Error>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may contain spaces; fields are counted after its closing parenthesis.
    let rest = &stat[stat.rfind(')').ok_or("bad stat")? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

/// Resident memory of `pid` in KiB (`VmRSS`).
fn rss_kib(pid: u32) -> Result<u64, Box<dyn std::error::Error>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).ok_or("bad VmRSS")?.parse()?)
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}
