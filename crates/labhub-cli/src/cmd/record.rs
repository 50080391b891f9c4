//! `labhub record CHANNEL... -o run.zarr`: record channels with their metadata to Zarr v3.

use std::path::PathBuf;
use std::time::Duration;

use labhub::record::{ChannelProgress, RecordOptions, Recorder};
use labhub::shm;

use crate::args;
use crate::common::{self, ConnectArgs, mb_per_s, out, out_json};
use crate::meter::LiveLine;
use crate::stop::StopSignal;

/// Record shared-memory channels into a Zarr v3 directory (through the broker, or by segment
/// name with --no-hub): every frame
/// (the recorder is a lossless consumer: if storage cannot keep up, the channel's backpressure
/// decides, and every loss is counted and stored), its id, timestamp and shape, the channel's
/// settings and schema, flexible-zone state changes, start and stop time, host, a run id and
/// the --attr pairs. zarr-python reads it: `zarr.open_group(PATH)["CHANNEL/frames"][i]`.
///
/// A progress line (frames, MB/s, lag, losses) refreshes on a terminal. Stops on Ctrl-C
/// (SIGINT) or SIGTERM, --seconds or --frames; a recorder killed otherwise leaves a recording
/// readable up to its last flush (every --flush-interval).
///
/// JSON (--json): {"path", "run_id", "elapsed_s", "channels": [{"channel", "frames",
/// "bytes", "lag", "losses"}]}.
#[derive(Debug, clap::Args)]
pub struct RecordArgs {
    /// The channels to record.
    #[arg(value_name = "CHANNEL", required = true, value_parser = args::channel_name)]
    channels: Vec<String>,
    /// The recording to create (a directory; it must not exist).
    #[arg(short, long, value_name = "PATH", value_parser = args::path)]
    output: PathBuf,
    /// An attribute stored with the run (repeatable): KEY=VALUE.
    #[arg(long = "attr", value_name = "KEY=VALUE", value_parser = args::attribute)]
    attributes: Vec<(String, String)>,
    /// Stop after this many seconds, 0.001 to 31536000 (365 days).
    #[arg(long, value_name = "SECONDS", value_parser = args::seconds(0.001..=args::YEAR_SECONDS))]
    seconds: Option<f64>,
    /// Stop each channel after this many frames (at least 1).
    #[arg(long, value_name = "N", value_parser = args::integer(1..=u64::MAX))]
    frames: Option<u64>,
    /// Longest time between flushes (what a killed recorder can lose), 10ms to 1h.
    #[arg(long, value_name = "DURATION", default_value = "1s",
          value_parser = args::duration(args::TEN_MS..=args::HOUR))]
    flush_interval: Duration,
    /// About how large one shard file grows (at most 255 frames each), 4KiB to 4GiB.
    #[arg(long, value_name = "SIZE", default_value = "64MiB",
          value_parser = args::size(4 << 10..=4 << 30))]
    shard_size: u64,
    /// Open the channels by segment name on this machine, without a broker (channels made
    /// with `shm::Channel` or `labhub.shm`); by default they are found through the broker,
    /// which hands out the segments of the channels made through it.
    #[arg(long)]
    no_hub: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// Records.
pub fn run(args: RecordArgs, verbose: u8) -> anyhow::Result<()> {
    let mut attributes = serde_json::Map::new();
    for (k, v) in &args.attributes {
        attributes.insert(k.clone(), serde_json::Value::String(v.clone()));
    }
    let options = RecordOptions {
        flush_interval: args.flush_interval,
        shard_bytes: args.shard_size,
        max_frames: args.frames,
        duration: args.seconds.map(Duration::from_secs_f64),
        attributes,
    };
    // Caught before anything is created, so Ctrl-C always ends through the final flush.
    let signal = StopSignal::install()?;
    let hub = if !args.no_hub {
        let config = args.connect.resolve()?;
        Some(common::connect(verbose, config)?)
    } else {
        None
    };
    let _log = match &hub {
        Some(_) => None,
        None => Some(common::start(verbose, Vec::new())?),
    };
    let mut recorder = Recorder::create(&args.output, options)?;
    for name in &args.channels {
        match &hub {
            Some((_, hub)) => recorder.add(hub.channel(name).open()?)?,
            None => recorder.add(shm::Channel::new(name).open()?)?,
        }
    }
    let run_id = recorder.run_id().to_owned();
    let stop = recorder.stop_handle();
    let json = args.json;
    let worker = std::thread::spawn(move || {
        let mut live = LiveLine::new();
        let started = std::time::Instant::now();
        let result = recorder.run(|progress| {
            if !json && live.is_terminal() {
                let _ = live.show(&progress_line(progress, started.elapsed()));
            }
        });
        let _ = live.finish();
        result
    });
    while !worker.is_finished() {
        if let Some(name) = signal.wait(Duration::from_millis(100)) {
            tracing::info!(signal = name, "stopping the recording");
            stop.stop();
        }
    }
    let summary = worker
        .join()
        .map_err(|_| anyhow::anyhow!("the recorder thread panicked"))??;
    let seconds = summary.elapsed.as_secs_f64();
    if args.json {
        return out_json(&serde_json::json!({
            "path": args.output,
            "run_id": run_id,
            "elapsed_s": seconds,
            "channels": summary.channels.iter().map(|c| serde_json::json!({
                "channel": c.channel, "frames": c.frames, "bytes": c.bytes,
                "lag": c.lag, "losses": c.losses,
            })).collect::<Vec<_>>(),
        }));
    }
    for c in &summary.channels {
        out(format!(
            "{}: {} frames, {:.2} MB/s, {} lost, in {:.1} s",
            c.channel,
            c.frames,
            mb_per_s(c.bytes, seconds),
            c.losses,
            seconds
        ))?;
    }
    out(format!("run {run_id} in {}", args.output.display()))?;
    Ok(())
}

fn progress_line(progress: &[ChannelProgress], elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64();
    progress
        .iter()
        .map(|c| {
            format!(
                "{}: {} frames  {:.1} MB/s  lag {}  lost {}",
                c.channel,
                c.frames,
                mb_per_s(c.bytes, seconds),
                c.lag,
                c.losses
            )
        })
        .collect::<Vec<_>>()
        .join("   ")
}
