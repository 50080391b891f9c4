//! `labhub watch CHANNEL`: live frame rate, throughput, latency and losses of a channel.

use std::time::{Duration, Instant};

use labhub::client::{ConsumeError, Hub};
use labhub::protocol::{ChannelInfo, ChannelKind};
use serde::Serialize;

use crate::args;
use crate::common::{self, ConnectArgs, out_json};
use crate::meter::{LiveLine, Meter, Rates, micros};

/// Watch a channel live. A shared-memory channel is attached as a consumer (registered with
/// the broker) and every frame is counted: frames/s, MB/s, latency (the frame's timestamp to
/// the moment it is read) and frames lost; its element type and largest shape are shown
/// (`u16[480x640]`). Other channels show the producer's counters from its heartbeats.
/// Refreshes in place on a terminal; ends with Ctrl-C, --seconds or --count.
///
/// JSON (--json): JSON Lines, one {"type": "sample", ...} per interval and a final
/// {"type": "summary", ...} (fields in the README; "element" and "max_shape" are the frame
/// type, null when unknown).
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// The channel name.
    #[arg(value_name = "CHANNEL", value_parser = args::channel_name)]
    channel: String,
    /// Stop after this many seconds, 0.001 to 31536000 (365 days).
    #[arg(long, value_name = "SECONDS", value_parser = args::seconds(0.001..=args::YEAR_SECONDS))]
    seconds: Option<f64>,
    /// Stop after this many samples (at least 1).
    #[arg(long, value_name = "N", value_parser = args::integer(1..=u64::MAX))]
    count: Option<u64>,
    /// Time between samples, 10ms to 1day.
    #[arg(long, value_name = "DURATION", default_value = "1s",
          value_parser = args::duration(args::TEN_MS..=args::DAY))]
    interval: Duration,
    /// How this watcher takes frames of a shared-memory channel: lossless (holds the
    /// producer back like any lossless consumer), latest, queue:N, every:K or max-rate:HZ
    /// (these never hold anyone back; frames they skip are counted as skipped).
    #[arg(long, value_name = "MODE", default_value = "lossless", value_parser = args::delivery_mode)]
    mode: labhub::shm::DeliveryMode,
    /// Print JSON Lines.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// One line of `watch --json`.
#[derive(Debug, Serialize)]
struct Sample<'a> {
    r#type: &'static str,
    channel: &'a str,
    /// The element type of a shared-memory channel's frames (`u16`, …).
    element: Option<&'a str>,
    /// Their largest shape.
    max_shape: Option<&'a [u64]>,
    elapsed_s: f64,
    /// Frames the producer committed per second (from the segment or the heartbeat counters).
    published_per_s: Option<f64>,
    #[serde(flatten)]
    rates: Rates,
    /// Frames this watcher lost to overwrites (lossy policies), in the interval.
    missed: u64,
    /// Frames the channel dropped to backpressure, in the interval.
    dropped: u64,
    /// This watcher's delivery mode.
    mode: String,
    /// Frames this watcher's delivery mode skipped on purpose, in the interval.
    skipped: u64,
    /// Frames committed that this watcher had not looked at yet, at the sample.
    lag: u64,
}

/// Watches the channel.
pub fn run(args: WatchArgs, verbose: u8) -> anyhow::Result<()> {
    let config = args.connect.resolve()?;
    let (_guard, hub) = common::connect(verbose, config)?;
    let info = hub.discover(&args.channel)?;
    let end = args
        .seconds
        .map(|s| Instant::now() + Duration::from_secs_f64(s));
    let frames = FrameType::of(&info);
    if info.spec.kind == ChannelKind::Shm {
        watch_shm(&args, &hub, end)
    } else {
        watch_counters(&args, &hub, end, &frames)
    }
}

/// What a channel's frames are, as far as known.
#[derive(Debug, Default)]
struct FrameType {
    element: Option<String>,
    max_shape: Option<Vec<u64>>,
}

impl FrameType {
    fn of(info: &ChannelInfo) -> Self {
        let schema = info.spec.schema.as_ref();
        Self {
            element: schema.and_then(|s| s.element.clone()),
            max_shape: schema.and_then(|s| s.shape.clone()),
        }
    }

    fn text(&self) -> String {
        match (&self.element, &self.max_shape) {
            (Some(e), Some(shape)) => {
                let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
                format!("{e}[{}] ", dims.join("x"))
            }
            (Some(e), None) => format!("{e} "),
            _ => String::new(),
        }
    }
}

/// Sampling schedule shared by both modes.
struct Clock {
    start: Instant,
    next: Instant,
    last: Instant,
    samples: u64,
}

impl Clock {
    fn new(interval: Duration) -> Self {
        let now = Instant::now();
        Self {
            start: now,
            next: now + interval,
            last: now,
            samples: 0,
        }
    }
}

fn finished(args: &WatchArgs, clock: &Clock, end: Option<Instant>) -> bool {
    args.count.is_some_and(|n| clock.samples >= n) || end.is_some_and(|e| Instant::now() >= e)
}

fn emit(
    args: &WatchArgs,
    live: &mut LiveLine,
    frames: &FrameType,
    sample: &Sample<'_>,
) -> anyhow::Result<()> {
    if args.json {
        return out_json(sample);
    }
    let published = sample
        .published_per_s
        .map_or_else(|| "-".into(), |p| format!("{p:.1}"));
    live.show(&format!(
        "{} {}{:6.1} s  {:.1} frames/s  {:.2} MB/s  latency mean {} max {}  missed {}  dropped {}  {} skipped {} lag {}  (producer {} frames/s)",
        sample.channel,
        frames.text(),
        sample.elapsed_s,
        sample.rates.frames_per_s,
        sample.rates.mb_per_s,
        micros(sample.rates.latency_us_mean),
        micros(sample.rates.latency_us_max),
        sample.missed,
        sample.dropped,
        sample.mode,
        sample.skipped,
        sample.lag,
        published,
    ))?;
    Ok(())
}

fn watch_shm(args: &WatchArgs, hub: &Hub, end: Option<Instant>) -> anyhow::Result<()> {
    let mut consumer = hub.channel(&args.channel).delivery(args.mode).open()?;
    let frames = FrameType {
        element: Some(consumer.consumer().element_type().to_string()),
        max_shape: Some(consumer.consumer().max_shape().to_vec()),
    };
    let mut live = LiveLine::new();
    let mut clock = Clock::new(args.interval);
    let mut meter = Meter::default();
    let mut total = Meter::default();
    let mut stats = consumer.consumer().stats();
    let mut missed = consumer.consumer().missed();
    let mut skipped = consumer.consumer().dropped();
    let (mut all_missed, mut all_dropped, mut all_skipped) = (0, 0, 0);
    while !finished(args, &clock, end) {
        let mut wake = clock.next;
        if let Some(e) = end {
            wake = wake.min(e);
        }
        let wait = wake.saturating_duration_since(Instant::now());
        // Length and timestamp come from the frame's descriptor, read consistently; the
        // watcher never looks at the payload.
        match consumer
            .next(Some(wait))
            .map(|f| (f.len(), f.timestamp_ns()))
        {
            Ok((len, ts)) => {
                meter.record(len, ts);
                total.record(len, ts);
            }
            Err(ConsumeError::Timeout { .. }) => {}
            // An overwritten frame under a lossy policy: counted through `missed` below.
            Err(ConsumeError::Read { source, .. }) => {
                tracing::debug!(%source, "a frame could not be read whole");
            }
            Err(e) => return Err(e.into()),
        }
        let now = Instant::now();
        if now >= clock.next || end.is_some_and(|e| now >= e) {
            let seconds = (now - clock.last).as_secs_f64();
            let s = consumer.consumer().stats();
            let m = consumer.consumer().missed();
            let k = consumer.consumer().dropped();
            let sample = Sample {
                r#type: "sample",
                channel: &args.channel,
                element: frames.element.as_deref(),
                max_shape: frames.max_shape.as_deref(),
                elapsed_s: (now - clock.start).as_secs_f64(),
                published_per_s: Some(s.published.saturating_sub(stats.published) as f64 / seconds),
                rates: std::mem::take(&mut meter).rates(seconds),
                missed: m.saturating_sub(missed),
                dropped: s.dropped.saturating_sub(stats.dropped),
                mode: args.mode.to_string(),
                skipped: k.saturating_sub(skipped),
                lag: consumer.consumer().lag(),
            };
            all_missed += sample.missed;
            all_dropped += sample.dropped;
            all_skipped += sample.skipped;
            emit(args, &mut live, &frames, &sample)?;
            stats = s;
            missed = m;
            skipped = k;
            clock.last = now;
            clock.samples += 1;
            while clock.next <= now {
                clock.next += args.interval;
            }
        }
    }
    live.finish()?;
    summary(
        args,
        &clock,
        &frames,
        total,
        [all_missed, all_dropped, all_skipped],
    )
}

fn summary(
    args: &WatchArgs,
    clock: &Clock,
    frames: &FrameType,
    total: Meter,
    [missed, dropped, skipped]: [u64; 3],
) -> anyhow::Result<()> {
    let seconds = clock.start.elapsed().as_secs_f64();
    let rates = total.rates(seconds);
    if args.json {
        return out_json(&Sample {
            r#type: "summary",
            channel: &args.channel,
            element: frames.element.as_deref(),
            max_shape: frames.max_shape.as_deref(),
            elapsed_s: seconds,
            published_per_s: None,
            rates,
            missed,
            dropped,
            mode: args.mode.to_string(),
            skipped,
            lag: 0,
        });
    }
    common::out(format!(
        "{}: {}{} frames in {:.1} s, {:.1} frames/s, {:.2} MB/s, latency mean {} max {}, missed {}, dropped {}, {} skipped {}",
        args.channel,
        frames.text(),
        rates.frames,
        seconds,
        rates.frames_per_s,
        rates.mb_per_s,
        micros(rates.latency_us_mean),
        micros(rates.latency_us_max),
        missed,
        dropped,
        args.mode,
        skipped
    ))?;
    Ok(())
}

/// Non-shm channels: the producer's heartbeat counters, polled through the broker.
fn watch_counters(
    args: &WatchArgs,
    hub: &Hub,
    end: Option<Instant>,
    frames: &FrameType,
) -> anyhow::Result<()> {
    let published = |c: &labhub::protocol::Counters| {
        c.get("frames_published")
            .or_else(|| c.get("messages_published"))
            .or_else(|| c.get("frames"))
            .copied()
    };
    let mut live = LiveLine::new();
    let mut clock = Clock::new(args.interval);
    let mut before = published(&hub.discover(&args.channel)?.counters);
    while !finished(args, &clock, end) {
        let mut wake = clock.next;
        if let Some(e) = end {
            wake = wake.min(e);
        }
        std::thread::sleep(wake.saturating_duration_since(Instant::now()));
        let now = Instant::now();
        let seconds = (now - clock.last).as_secs_f64();
        let after = published(&hub.discover(&args.channel)?.counters);
        let sample = Sample {
            r#type: "sample",
            channel: &args.channel,
            element: frames.element.as_deref(),
            max_shape: frames.max_shape.as_deref(),
            elapsed_s: (now - clock.start).as_secs_f64(),
            published_per_s: before
                .zip(after)
                .map(|(b, a)| a.saturating_sub(b) as f64 / seconds),
            rates: Rates::default(),
            missed: 0,
            dropped: 0,
            mode: args.mode.to_string(),
            skipped: 0,
            lag: 0,
        };
        emit(args, &mut live, frames, &sample)?;
        before = after;
        clock.last = now;
        clock.samples += 1;
        clock.next += args.interval;
    }
    live.finish()?;
    summary(args, &clock, frames, Meter::default(), [0, 0, 0])
}
