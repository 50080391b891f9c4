//! `labhub demo`: an embedded broker, a synthetic camera and two consumers, measured live.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use labhub::broker::service::BrokerService;
use labhub::broker::{self, BrokerConfig};
use labhub::client::{ClientConfig, ConsumeError, Hub};
use labhub::keys;
use labhub::lifecycle::Lifecycle;
use labhub::shm::{Backpressure, Policy};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::args;
use crate::common::{self, out_json};
use crate::demo_home::{self, DemoHome};
use crate::meter::{LiveLine, Meter, Rates, micros};
use crate::stop::StopSignal;

/// Run a self-contained demonstration: a broker in this process (on free ports, with a
/// temporary LABHUB_HOME, so it never meets a running hub), a synthetic camera publishing
/// frames into a shared-memory channel, and consumers reading them. Prints live throughput
/// and latency (frame timestamp → read), then a summary, and exits by itself.
///
/// JSON (--json): JSON Lines, one {"type": "sample", ...} per interval and a final
/// {"type": "summary", ...} (see the README for the fields).
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// How long to run, in seconds, 0.001 to 86400 (a day).
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0,
          value_parser = args::seconds(0.001..=args::DAY_SECONDS))]
    seconds: f64,
    /// Bytes per frame, 8 bytes to 256MiB. Units are binary: k, K, Ki, KiB = 1024 bytes;
    /// M, Mi, MiB = 1048576; G, Gi, GiB = 1073741824; only kB, MB, GB are powers of 1000.
    #[arg(long, value_name = "BYTES", default_value = "1MiB",
          value_parser = args::size(MIN_FRAME..=MAX_FRAME))]
    frame_size: u64,
    /// Frames per second the camera publishes: 0 (as fast as the consumers keep up), or 0.01 to
    /// 1000000.
    #[arg(long, value_name = "FPS", default_value_t = 100.0,
          value_parser = args::zero_or_number(0.01..=1e6))]
    rate: f64,
    /// Number of consumers, 1 to 8.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = args::integer(1u32..=8))]
    consumers: u32,
    /// Slots of the channel's lossless ring, 2 to 1024.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = args::integer(2u32..=1024))]
    slots: u32,
    /// How often to print a sample, 10ms to 1day (e.g. 500ms).
    #[arg(long, value_name = "DURATION", default_value = "1s",
          value_parser = args::duration(args::TEN_MS..=args::DAY))]
    interval: Duration,
    /// Print JSON Lines.
    #[arg(long)]
    json: bool,
}

/// Smallest --frame-size: the frame id takes the first 8 bytes.
const MIN_FRAME: u64 = 8;
/// Largest --frame-size: the ring must fit in memory comfortably.
const MAX_FRAME: u64 = 256 << 20;

/// The first line of `demo --json`: where the demo runs, so another program can look at it.
#[derive(Debug, Serialize)]
struct Start<'a> {
    r#type: &'static str,
    channel: &'a str,
    /// How the channel's segment is shared: `memfd` (the broker hands it out).
    sharing: &'static str,
    home: &'a Path,
    endpoint: &'a str,
    notify_endpoint: &'a str,
    frame_size: u64,
    slots: u32,
    consumers: u32,
}

/// One consumer's share of a sample or the summary.
#[derive(Debug, Serialize)]
struct ConsumerReport {
    id: u32,
    #[serde(flatten)]
    rates: Rates,
    /// Frames whose content did not match what the camera wrote.
    bad_frames: u64,
}

#[derive(Debug, Serialize)]
struct Sample {
    r#type: &'static str,
    elapsed_s: f64,
    published_per_s: f64,
    throughput_mb_s: f64,
    consumers: Vec<ConsumerReport>,
}

#[derive(Debug, Serialize)]
struct Summary {
    r#type: &'static str,
    seconds: f64,
    frame_size: u64,
    frames_published: u64,
    published_per_s: f64,
    /// Bytes delivered to all consumers per second, MB/s.
    throughput_mb_s: f64,
    frames_received: u64,
    latency_us_mean: Option<f64>,
    latency_us_max: Option<f64>,
    consumers: Vec<ConsumerReport>,
}

struct ConsumerShare {
    interval: Mutex<Meter>,
    total: Mutex<Meter>,
    bad: AtomicU64,
}

fn lock(m: &Mutex<Meter>) -> std::sync::MutexGuard<'_, Meter> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs the demo.
pub fn run(args: DemoArgs, verbose: u8) -> anyhow::Result<()> {
    // Caught before anything exists outside this process, so SIGINT and SIGTERM always end the
    // demo through the cleanup below.
    let signals = StopSignal::install().context("catching SIGINT and SIGTERM")?;
    let home = DemoHome::create()?;
    let mut config = BrokerConfig::for_home(home.path());
    config.endpoint = "tcp://127.0.0.1:*".into();
    config.notify_endpoint = "tcp://127.0.0.1:*".into();
    config.password = Some(Zeroizing::new(keys::random_password().to_string()));
    config.reap_stale_segments = false;
    let guard = common::start(verbose, vec![broker::module(config)])?;
    demo_home::reap_dead_demos();
    let broker = Lifecycle::global()
        .service::<BrokerService>()
        .context("the embedded broker is not running")?;
    let info = broker.info().clone();
    let channel = home.channel();
    if args.json {
        out_json(&Start {
            r#type: "start",
            channel,
            sharing: labhub::protocol::Sharing::Memfd.as_str(),
            home: home.path(),
            endpoint: &info.endpoint,
            notify_endpoint: &info.notify_endpoint,
            frame_size: args.frame_size,
            slots: args.slots,
            consumers: args.consumers,
        })?;
    } else {
        eprintln!(
            "demo broker on {} (home {}); channel {channel} of {} byte frames, {} consumers",
            info.endpoint,
            home.path().display(),
            args.frame_size,
            args.consumers
        );
    }
    let client_keys = keys::local_client_key(&home.path().join("keys"))?;
    let client_config = ClientConfig::new(&info.endpoint, info.public_key, client_keys)
        .notify_endpoint(&info.notify_endpoint);
    // The channel's segment is memfds: the kernel frees it with the last process holding it.
    let result = run_with_broker(&args, &client_config, channel, &signals);
    // The broker stops before its home is removed (`home` drops last).
    drop(guard);
    result
}

fn run_with_broker(
    args: &DemoArgs,
    config: &ClientConfig,
    channel: &str,
    signals: &StopSignal,
) -> anyhow::Result<()> {
    let camera_hub = Hub::connect(config.clone())?;
    let policy = Policy::Ring {
        slots: args.slots,
        when_full: Backpressure::Block {
            timeout: Duration::from_secs(1),
        },
    };
    let mut producer = camera_hub
        .channel(channel)
        .policy(policy)
        .bytes(args.frame_size)
        .create()
        .context("creating the camera's channel")?;
    // The camera stops first, then the consumers, so a camera waiting for ring space is never
    // left without readers.
    let stop = Arc::new(AtomicBool::new(false));
    let consumers_stop = Arc::new(AtomicBool::new(false));
    let mut consumer_threads = Vec::new();
    let mut shares = Vec::new();
    let mut hubs = vec![camera_hub];
    for id in 1..=args.consumers {
        let hub = Hub::connect(config.clone())?;
        let mut consumer = hub
            .channel(channel)
            .bytes(args.frame_size)
            .open()
            .with_context(|| format!("attaching consumer {id}"))?;
        hubs.push(hub);
        let share = Arc::new(ConsumerShare {
            interval: Mutex::new(Meter::default()),
            total: Mutex::new(Meter::default()),
            bad: AtomicU64::new(0),
        });
        shares.push(Arc::clone(&share));
        let stop = Arc::clone(&consumers_stop);
        let thread = std::thread::Builder::new()
            .name(format!("demo-consumer-{id}"))
            .spawn(move || -> anyhow::Result<()> {
                while !stop.load(Ordering::Relaxed) {
                    // A lossless ring: every frame is held in place until it is dropped.
                    match consumer.next(Some(Duration::from_millis(100))).map(|f| {
                        let id = f.frame_id().to_le_bytes();
                        let ok = f.held().is_some_and(|d| d.get(..8) == Some(&id[..]));
                        (f.len(), f.timestamp_ns(), ok)
                    }) {
                        Ok((len, ts, ok)) => {
                            lock(&share.interval).record(len, ts);
                            lock(&share.total).record(len, ts);
                            if !ok {
                                share.bad.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(ConsumeError::Timeout { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(())
            })?;
        consumer_threads.push(thread);
    }

    let published = Arc::new(AtomicU64::new(0));
    let camera = {
        let stop = Arc::clone(&stop);
        let published = Arc::clone(&published);
        let frame_size = usize::try_from(args.frame_size)?;
        let rate = args.rate;
        std::thread::Builder::new()
            .name("demo-camera".into())
            .spawn(move || -> anyhow::Result<()> {
                // A recognisable pattern; the first 8 bytes carry the frame id.
                let frame: Vec<u8> = (0..frame_size).map(|i| (i % 251) as u8).collect();
                let start = Instant::now();
                let mut n: u64 = 0;
                while !stop.load(Ordering::Relaxed) {
                    if rate > 0.0 {
                        let due = start + Duration::from_secs_f64(n as f64 / rate);
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep((due - now).min(Duration::from_millis(50)));
                            continue;
                        }
                    }
                    let mut slot = producer.loan().context("publishing a frame")?;
                    let id = slot.frame_id().to_le_bytes();
                    slot.copy_from_slice(&frame);
                    slot[..8].copy_from_slice(&id);
                    slot.commit();
                    n += 1;
                    published.store(n, Ordering::Relaxed);
                }
                Ok(())
            })?
    };

    let start = Instant::now();
    let end = start + Duration::from_secs_f64(args.seconds);
    let mut live = LiveLine::new();
    let mut last = start;
    let mut last_published = 0;
    let mut failed = None;
    while Instant::now() < end {
        let wait = args
            .interval
            .min(end.saturating_duration_since(Instant::now()));
        if let Some(signal) = signals.wait(wait) {
            live.finish()?;
            eprintln!("demo: {signal} received, stopping");
            break;
        }
        if camera.is_finished() || consumer_threads.iter().any(|t| t.is_finished()) {
            failed = Some(());
            break;
        }
        let now = Instant::now();
        let seconds = (now - last).as_secs_f64();
        last = now;
        let p = published.load(Ordering::Relaxed);
        let reports: Vec<ConsumerReport> = shares
            .iter()
            .zip(1..)
            .map(|(s, id)| ConsumerReport {
                id,
                rates: std::mem::take(&mut *lock(&s.interval)).rates(seconds),
                bad_frames: s.bad.load(Ordering::Relaxed),
            })
            .collect();
        let sample = Sample {
            r#type: "sample",
            elapsed_s: (now - start).as_secs_f64(),
            published_per_s: (p - last_published) as f64 / seconds,
            throughput_mb_s: reports.iter().map(|r| r.rates.mb_per_s).sum(),
            consumers: reports,
        };
        last_published = p;
        if args.json {
            out_json(&sample)?;
        } else {
            let per: Vec<String> = sample
                .consumers
                .iter()
                .map(|c| {
                    format!(
                        "#{} {:.0} f/s {}",
                        c.id,
                        c.rates.frames_per_s,
                        micros(c.rates.latency_us_mean)
                    )
                })
                .collect();
            live.show(&format!(
                "{:5.1} s  camera {:.0} frames/s  consumers {:.1} MB/s in all  [{}]",
                sample.elapsed_s,
                sample.published_per_s,
                sample.throughput_mb_s,
                per.join(", ")
            ))?;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    live.finish()?;
    let camera_result = camera
        .join()
        .map_err(|_| anyhow::anyhow!("the camera thread panicked"))?;
    consumers_stop.store(true, Ordering::Relaxed);
    let mut consumer_error = None;
    for (t, id) in consumer_threads.into_iter().zip(1..) {
        let r = t
            .join()
            .map_err(|_| anyhow::anyhow!("consumer {id}'s thread panicked"))?;
        if let Err(e) = r {
            consumer_error.get_or_insert(e.context(format!("consumer {id}")));
        }
    }
    camera_result.context("the camera failed")?;
    if let Some(e) = consumer_error {
        return Err(e);
    }
    if failed.is_some() {
        anyhow::bail!("a demo thread ended early");
    }
    for hub in &hubs {
        hub.shutdown();
    }

    let mut all = Meter::default();
    let consumers: Vec<ConsumerReport> = shares
        .iter()
        .zip(1..)
        .map(|(s, id)| {
            let total = lock(&s.total).clone();
            all.merge(&total);
            ConsumerReport {
                id,
                rates: total.rates(elapsed),
                bad_frames: s.bad.load(Ordering::Relaxed),
            }
        })
        .collect();
    let all_rates = all.rates(elapsed);
    let frames_published = published.load(Ordering::Relaxed);
    let summary = Summary {
        r#type: "summary",
        seconds: elapsed,
        frame_size: args.frame_size,
        frames_published,
        published_per_s: frames_published as f64 / elapsed,
        throughput_mb_s: all_rates.mb_per_s,
        frames_received: all_rates.frames,
        latency_us_mean: all_rates.latency_us_mean,
        latency_us_max: all_rates.latency_us_max,
        consumers,
    };
    let bad: u64 = summary.consumers.iter().map(|c| c.bad_frames).sum();
    if args.json {
        out_json(&summary)?;
    } else {
        common::out(format!(
            "demo: {:.1} s, {} frames of {} bytes published ({:.1} frames/s); {} consumers received {} frames, {:.1} MB/s in all; latency mean {}, max {}",
            summary.seconds,
            summary.frames_published,
            summary.frame_size,
            summary.published_per_s,
            summary.consumers.len(),
            summary.frames_received,
            summary.throughput_mb_s,
            micros(summary.latency_us_mean),
            micros(summary.latency_us_max),
        ))?;
    }
    if bad > 0 {
        anyhow::bail!("{bad} frames arrived with other contents than the camera wrote");
    }
    Ok(())
}
