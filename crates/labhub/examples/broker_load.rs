//! Load: 1,000 shared-memory channels and 200 clients heartbeating every 500 ms against one
//! broker process, with and without metrics (`--metrics`: the monitor's event stream open and a
//! Prometheus-style scrape every second); reports the broker's CPU use and memory, the
//! heartbeat round trips and the scrape times.
//!
//! `cargo run --profile bench -p labhub --example broker_load -- [SECONDS] [ROUNDS]`
//! (defaults 20 and 2; the bench profile reuses what `cargo bench` built)
//!
//! Each round runs three configurations in turn, so they are measured alternately in one
//! sitting: `classic` (heartbeats as before metrics existed: 5 producer channels with two
//! counters each, no consumers), `full` (the heartbeats below, without metrics) and `metrics`
//! (the same with metrics served and watched). The example re-runs itself as the broker process
//! (`broker_load --broker HOME [--metrics]`), so the broker's CPU time and resident memory are
//! read from `/proc/<pid>` alone. The 200 clients are DEALER sockets with CURVE, owned by 4
//! client threads (50 each); each client registers 5 channels whose segments this process
//! created (so the metrics read 1,000 real segment headers), attaches to one channel of
//! another client, and heartbeats with producer counters for its 5 channels, consumer counters
//! and a latency summary for the one it consumes, its version and pid. Traffic stays on
//! 127.0.0.1 and the run is bounded in time.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use labhub::broker::metrics::MetricsConfig;
use labhub::broker::{BrokerConfig, run_foreground};
use labhub::keys::{self, KeyPair, PublicKey};
use labhub::latency::Histogram;
use labhub::log::{LogConfig, Sink};
use labhub::name::ChannelName;
use labhub::shm::{Channel, Policy};
use labhub_zmq::{
    Context, CurvePublicKey, CurveSecretKey, Flags, PollEvents, Socket, SocketType, poll,
};

const CLIENTS: usize = 200;
const CHANNELS_PER_CLIENT: usize = 5;
const THREADS: usize = 4;
const INTERVAL: Duration = Duration::from_millis(500);
const SCRAPE_EVERY: Duration = Duration::from_secs(1);

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--broker") {
        return broker(
            &args[2],
            args.get(3).map(String::as_str) == Some("--metrics"),
        );
    }
    let seconds: u64 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(20);
    let rounds: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(2);
    let tag = std::process::id();
    let channel = move |t: usize, i: usize, c: usize| format!("load{tag}-{t}-{i}-ch{c}");
    // The segments live for the whole run; each broker registers them afresh.
    let mut segments = Vec::new();
    for t in 0..THREADS {
        for i in 0..CLIENTS / THREADS {
            for c in 0..CHANNELS_PER_CLIENT {
                segments.push(
                    Channel::new(channel(t, i, c))
                        .policy(Policy::Latest)
                        .bytes(64)
                        .create()?,
                );
            }
        }
    }
    let segment_size = std::fs::metadata(format!(
        "/dev/shm{}",
        ChannelName::new(channel(0, 0, 0))?.segment_name()
    ))
    .map_or(0, |m| m.len());
    println!(
        "clients: {CLIENTS}, shm channels: {} ({segment_size}-byte segments), heartbeat interval: {INTERVAL:?}, {seconds} s per run",
        segments.len()
    );
    let mut results = Vec::new();
    for round in 0..rounds {
        for mode in [Mode::Classic, Mode::Full, Mode::Metrics] {
            let r = run_once(seconds, mode, &channel)?;
            r.print(round + 1);
            results.push(r);
        }
    }
    let mean = |mode: Mode| {
        let runs: Vec<&RunResult> = results.iter().filter(|r| r.mode == mode).collect();
        runs.iter().map(|r| r.cpu_percent).sum::<f64>() / runs.len().max(1) as f64
    };
    let (classic, full, metrics) = (mean(Mode::Classic), mean(Mode::Full), mean(Mode::Metrics));
    println!(
        "mean broker CPU: classic {classic:.1} %, full {full:.1} % ({:.2}×), metrics {metrics:.1} % ({:.2}× classic, {:.2}× full)",
        full / classic,
        metrics / classic,
        metrics / full
    );
    drop(segments);
    for t in 0..THREADS {
        for i in 0..CLIENTS / THREADS {
            for c in 0..CHANNELS_PER_CLIENT {
                let _ = labhub::shm::remove_channel(&channel(t, i, c));
            }
        }
    }
    Ok(())
}

/// What a run measures (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Classic,
    Full,
    Metrics,
}

struct RunResult {
    mode: Mode,
    wall_s: f64,
    cpu_percent: f64,
    rss_start: u64,
    rss_end: u64,
    heartbeats: usize,
    errors: usize,
    round_trips: Vec<Duration>,
    scrapes: Vec<Duration>,
    scrape_bytes: usize,
    stream_bytes: u64,
    stream_events: u64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

impl RunResult {
    fn print(&self, round: usize) {
        let label = match self.mode {
            Mode::Classic => "classic heartbeats",
            Mode::Full => "full heartbeats, no metrics",
            Mode::Metrics => "full heartbeats, metrics",
        };
        println!(
            "round {round}, {label}: broker CPU {:.1} % of one core over {:.1} s, RSS {} KiB after registration, {} KiB at the end",
            self.cpu_percent, self.wall_s, self.rss_start, self.rss_end
        );
        println!(
            "  heartbeats answered: {} ({:.0}/s), error replies: {}; round trip p50 {:?}, p99 {:?}, max {:?}",
            self.heartbeats,
            self.heartbeats as f64 / self.wall_s,
            self.errors,
            percentile(&self.round_trips, 0.5),
            percentile(&self.round_trips, 0.99),
            self.round_trips.last().copied().unwrap_or_default()
        );
        if self.mode == Mode::Metrics {
            println!(
                "  /metrics of a fresh sample ({} bytes): {} scrapes, p50 {:?}, max {:?}; event stream: {} samples, {} bytes",
                self.scrape_bytes,
                self.scrapes.len(),
                percentile(&self.scrapes, 0.5),
                self.scrapes.last().copied().unwrap_or_default(),
                self.stream_events,
                self.stream_bytes
            );
        }
    }
}

fn run_once(
    seconds: u64,
    mode: Mode,
    channel: &(dyn Fn(usize, usize, usize) -> String + Sync),
) -> Result<RunResult, Error> {
    let home = std::env::temp_dir().join(format!(
        "labhub-broker-load-{}-{mode:?}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&home);
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("--broker").arg(&home).stdout(Stdio::piped());
    if mode == Mode::Metrics {
        cmd.arg("--metrics");
    }
    let mut child = cmd.spawn()?;
    let mut ready = String::new();
    BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut ready)?;
    let parts: Vec<&str> = ready.split_whitespace().collect();
    let (endpoint, key, metrics_addr) = match parts[..] {
        [_, endpoint, key] => (endpoint, key, None),
        [_, endpoint, key, addr] => (endpoint, key, Some(addr.to_owned())),
        _ => return Err(format!("unexpected ready line {ready:?}").into()),
    };
    let server = PublicKey::from_z85(key)?;
    let client_key = keys::local_client_key(&home.join("keys"))?;
    let pid = child.id();

    let ctx = Context::new()?;
    let stop = Arc::new(AtomicBool::new(false));
    let registered = Arc::new(std::sync::Barrier::new(THREADS + 1));
    let results = std::thread::scope(|scope| -> Result<RunResult, Error> {
        let mut threads = Vec::new();
        for t in 0..THREADS {
            let (ctx, stop, registered) = (&ctx, &stop, &registered);
            let (client_key, server) = (&client_key, &server);
            threads.push(scope.spawn(move || {
                let classic = mode == Mode::Classic;
                client_thread(
                    t, ctx, endpoint, server, client_key, stop, registered, channel, classic,
                )
            }));
        }
        registered.wait();
        let stream = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        let (monitor, scraper) = match &metrics_addr {
            Some(addr) => {
                let (addr, stop, stream) = (addr.clone(), &stop, Arc::clone(&stream));
                let monitor = scope.spawn(move || read_event_stream(&addr, stop, &stream));
                let addr = metrics_addr.clone().unwrap_or_default();
                let scraper = scope.spawn(move || scrape(&addr, stop));
                (Some(monitor), Some(scraper))
            }
            None => (None, None),
        };
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
        if let Some(m) = monitor {
            m.join().map_err(|_| "monitor thread panicked")??;
        }
        let (mut scrapes, scrape_bytes) = match scraper {
            Some(s) => s.join().map_err(|_| "scrape thread panicked")??,
            None => (Vec::new(), 0),
        };
        scrapes.sort();
        let wall_s = (wall1 - wall0).as_secs_f64();
        let cpu_s = (cpu1 - cpu0) as f64 / clock_ticks_per_second();
        let mut round_trips: Vec<Duration> =
            stats.iter().flat_map(|s| s.latencies.clone()).collect();
        round_trips.sort();
        Ok(RunResult {
            mode,
            wall_s,
            cpu_percent: 100.0 * cpu_s / wall_s,
            rss_start,
            rss_end,
            heartbeats: stats.iter().map(|s| s.heartbeats).sum(),
            errors: stats.iter().map(|s| s.errors).sum(),
            round_trips,
            scrapes,
            scrape_bytes,
            stream_bytes: stream.0.load(Ordering::Relaxed),
            stream_events: stream.1.load(Ordering::Relaxed),
        })
    })?;
    // SIGTERM via the process API is SIGKILL-only; the broker's audit log is irrelevant here.
    child.kill()?;
    child.wait()?;
    let _ = std::fs::remove_dir_all(&home);
    Ok(results)
}

/// Reads `/api/events` as the monitor page does, counting bytes and samples.
fn read_event_stream(
    addr: &str,
    stop: &AtomicBool,
    counts: &(AtomicU64, AtomicU64),
) -> Result<(), Error> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    write!(s, "GET /api/events HTTP/1.1\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = vec![0u8; 1 << 16];
    while !stop.load(Ordering::Relaxed) {
        match s.read(&mut buf) {
            Ok(0) => return Err("the event stream ended".into()),
            Ok(n) => {
                counts.0.fetch_add(n as u64, Ordering::Relaxed);
                let events = buf[..n]
                    .windows(13)
                    .filter(|w| *w == b"event: sample")
                    .count();
                counts.1.fetch_add(events as u64, Ordering::Relaxed);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// GETs `/metrics` every second; returns the times of the scrapes that found a new sample
/// (so the exposition was encoded for them), and the size of the last one.
fn scrape(addr: &str, stop: &AtomicBool) -> Result<(Vec<Duration>, usize), Error> {
    let mut times = Vec::new();
    let mut last_uptime = String::new();
    let mut size = 0;
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        let mut s = TcpStream::connect(addr)?;
        write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n")?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        let took = t0.elapsed();
        let uptime = body
            .lines()
            .find(|l| l.starts_with("labhub_broker_uptime_seconds "))
            .unwrap_or_default()
            .to_owned();
        if !body.starts_with("HTTP/1.1 200") {
            return Err(format!("scrape failed: {}", body.lines().next().unwrap_or("")).into());
        }
        if uptime != last_uptime {
            times.push(took);
            last_uptime = uptime;
        }
        size = body.len();
        std::thread::sleep(SCRAPE_EVERY.saturating_sub(t0.elapsed()));
    }
    Ok((times, size))
}

struct ThreadStats {
    heartbeats: usize,
    errors: usize,
    latencies: Vec<Duration>,
}

#[allow(clippy::too_many_arguments)]
fn client_thread(
    t: usize,
    ctx: &Context,
    endpoint: &str,
    server: &PublicKey,
    key: &KeyPair,
    stop: &AtomicBool,
    registered: &std::sync::Barrier,
    channel: &(dyn Fn(usize, usize, usize) -> String + Sync),
    classic: bool,
) -> Result<ThreadStats, Error> {
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
        .collect::<Result<_, _>>()?;
    let client_id = |i: usize| format!("load-{t}-{i}");
    // Each client consumes the first channel of the next client of its thread.
    let consumed = |i: usize| channel(t, (i + 1) % per_thread, 0);
    let mut id = 0u64;
    let mut call =
        |s: &Socket, kind: &str, body: serde_json::Value| -> Result<serde_json::Value, Error> {
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
            )?;
            let frames = s.recv_multipart_bytes(Flags::NONE)?;
            Ok(serde_json::from_slice(&frames[3])?)
        };
    for (i, s) in sockets.iter().enumerate() {
        for c in 0..CHANNELS_PER_CLIENT {
            let name = channel(t, i, c);
            let reply = call(
                s,
                "register",
                serde_json::json!({"client": client_id(i), "pid": std::process::id(), "channel": {
                    "name": name, "kind": "shm", "shm_name": ChannelName::new(name.as_str())?.segment_name(),
                    "size": 16384, "policy": "latest"}}),
            )?;
            if reply["status"] != "ok" {
                return Err(format!("register refused: {reply}").into());
            }
        }
    }
    registered.wait();
    for (i, s) in sockets.iter().enumerate().filter(|_| !classic) {
        let reply = call(
            s,
            "attach",
            serde_json::json!({"client": client_id(i), "name": consumed(i)}),
        )?;
        if reply["status"] != "ok" {
            return Err(format!("attach refused: {reply}").into());
        }
    }
    // A consumer's latencies in one interval: 50 frames from 40 µs to 2 ms.
    let mut window = Histogram::new();
    for k in 0..50u64 {
        window.record(40_000 + k * k * 800);
    }
    let latency = serde_json::to_value(window.since(&Histogram::new()))?;
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
                frame += 50;
                id += 1;
                let body = if classic {
                    let channels: serde_json::Map<String, serde_json::Value> = (0
                        ..CHANNELS_PER_CLIENT)
                        .map(|c| {
                            (
                                channel(t, i, c),
                                serde_json::json!({"frames": frame, "dropped": 0}),
                            )
                        })
                        .collect();
                    serde_json::json!({"request_id": id, "client": client_id(i), "channels": channels})
                } else {
                    let mut channels = serde_json::Map::new();
                    for c in 0..CHANNELS_PER_CLIENT {
                        channels.insert(
                            channel(t, i, c),
                            serde_json::json!({"frames_published": frame, "bytes_published": frame * 64, "publish_failures": 0}),
                        );
                    }
                    channels.insert(
                        consumed(i),
                        serde_json::json!({"frames_consumed": frame, "bytes_consumed": frame * 64, "frames_missed": 0, "reattached": 0}),
                    );
                    serde_json::json!({"request_id": id, "client": client_id(i),
                        "client_version": "labhub-rs/0.1.0", "pid": std::process::id(),
                        "channels": channels, "latency": {consumed(i): latency}})
                };
                sockets[i].send_multipart(
                    [
                        &b"labhub"[..],
                        b"1",
                        b"heartbeat",
                        body.to_string().as_bytes(),
                    ],
                    Flags::NONE,
                )?;
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
        )?;
        let readable: Vec<usize> = items
            .iter()
            .enumerate()
            .filter(|(_, it)| it.is_readable())
            .map(|(i, _)| i)
            .collect();
        drop(items);
        for i in readable {
            while let Ok(frames) = sockets[i].recv_multipart_bytes(Flags::DONTWAIT) {
                let reply: serde_json::Value = serde_json::from_slice(&frames[3])?;
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

fn broker(home: &str, metrics: bool) -> Result<(), Error> {
    let mut config = BrokerConfig::for_home(home);
    config.endpoint = "tcp://127.0.0.1:*".into();
    config.notify_endpoint = "tcp://127.0.0.1:*".into();
    config.reap_stale_segments = false;
    config.registry.heartbeat_interval = INTERVAL;
    if metrics {
        config.metrics = Some(MetricsConfig::new("127.0.0.1:0".parse()?));
    }
    let mut log = LogConfig::new(Sink::Console);
    log.level = tracing::level_filters::LevelFilter::WARN;
    run_foreground(config, log, |info| {
        let metrics = info
            .metrics
            .as_ref()
            .map(|m| format!(" {}", m.address))
            .unwrap_or_default();
        println!("ready {} {}{metrics}", info.endpoint, info.public_key);
    })?;
    Ok(())
}

/// utime + stime of `pid`, in clock ticks (`/proc/<pid>/stat` fields 14 and 15).
fn cpu_ticks(pid: u32) -> Result<u64, Error> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may contain spaces; fields are counted after its closing parenthesis.
    let rest = &stat[stat.rfind(')').ok_or("bad stat")? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

/// Resident memory of `pid` in KiB (`VmRSS`).
fn rss_kib(pid: u32) -> Result<u64, Error> {
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
