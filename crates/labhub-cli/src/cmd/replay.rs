//! `labhub replay run.zarr`: publish a recording into live channels.

use std::path::PathBuf;
use std::time::Duration;

use labhub::record::{Rate, ReplayOptions, Replayer};
use labhub::shm;

use crate::args;
use crate::common::{self, ConnectArgs, out, out_json};
use crate::exit::UsageError;
use crate::stop::StopSignal;

/// Publish a recording into live channels, each under its recorded name (or --as), created
/// with the recorded settings and schema, with the original timing (--rate 1x), faster or
/// slower (2x, 0.5x) or as fast as consumers take frames (max); flexible-zone states are
/// written before the frames they preceded. A recording that is not what `labhub record`
/// writes (hostile, truncated, wrong dtype, shapes beyond the largest, huge declared sizes) is
/// refused with an error naming the field. Stops at the end, on Ctrl-C or SIGTERM.
///
/// JSON (--json): {"path", "run_id", "channels": [{"channel", "recorded_as", "frames"}]}.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The recording (a directory `labhub record` wrote).
    #[arg(value_name = "RECORDING", value_parser = args::path)]
    recording: PathBuf,
    /// Publish under another name: NAME (a recording of one channel) or RECORDED=NAME
    /// (repeatable).
    #[arg(long = "as", value_name = "NAME|RECORDED=NAME")]
    rename: Vec<String>,
    /// How fast: 1x (the recorded timing), 2x, 0.5x (above 0, at most 1000x) or max.
    #[arg(long, value_name = "RATE", default_value = "1x", value_parser = args::rate)]
    rate: Rate,
    /// Start again at the end, until stopped.
    #[arg(long = "loop")]
    repeat: bool,
    /// Stamp frames with their recorded timestamps (default: when they are published).
    #[arg(long)]
    keep_timestamps: bool,
    /// Read every frame into memory before publishing (refused if the frames exceed SIZE,
    /// default 4GiB): publishing then runs at memory speed, and --loop reads the files once.
    #[arg(long, value_name = "SIZE", num_args = 0..=1, default_missing_value = "4GiB",
          value_parser = args::size(1..=1 << 40))]
    preload: Option<u64>,
    /// Largest frame accepted (padded to its largest shape), 1 to 1TiB.
    #[arg(long, value_name = "SIZE", default_value = "1GiB",
          value_parser = args::size(1..=1 << 40))]
    max_frame_size: u64,
    /// Create the channels by segment name on this machine, without a broker; by default they
    /// are created through the broker (registered, their segments held by it).
    #[arg(long)]
    no_hub: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// The channel name each recorded channel is published under.
fn names(args: &ReplayArgs, recorded: &[String]) -> anyhow::Result<Vec<String>> {
    let mut out = recorded.to_vec();
    for r in &args.rename {
        let (from, to) = match r.split_once('=') {
            Some((from, to)) => (from.to_owned(), to),
            None if recorded.len() == 1 => (recorded[0].clone(), r.as_str()),
            None => {
                return Err(UsageError(format!(
                    "--as {r}: the recording has {} channels; use RECORDED=NAME",
                    recorded.len()
                ))
                .into());
            }
        };
        let to = args::channel_name(to).map_err(|e| UsageError(format!("--as {r}: {e}")))?;
        let i = recorded
            .iter()
            .position(|n| *n == from)
            .ok_or_else(|| UsageError(format!("--as {r}: the recording has no channel {from}")))?;
        out[i] = to;
    }
    Ok(out)
}

/// Replays.
pub fn run(args: ReplayArgs, verbose: u8) -> anyhow::Result<()> {
    let replay = Replayer::open_with_limit(&args.recording, args.max_frame_size)?;
    let recorded: Vec<String> = replay.channels().into_iter().map(|c| c.name).collect();
    let names = names(&args, &recorded)?;
    let signal = StopSignal::install()?;
    let stop = labhub::record::StopHandle::new();
    let options = ReplayOptions {
        rate: args.rate,
        repeat: args.repeat,
        keep_timestamps: args.keep_timestamps,
        stop: Some(stop.clone()),
        preload: args.preload,
    };
    let frames = if !args.no_hub {
        let config = args.connect.resolve()?;
        let (_guard, hub) = common::connect(verbose, config)?;
        let sinks = names
            .iter()
            .enumerate()
            .map(|(i, n)| replay.configure(i, hub.channel(n)).create())
            .collect::<Result<Vec<_>, _>>()?;
        play(&replay, sinks, &options, &signal, &stop)?
    } else {
        let _log = common::start(verbose, Vec::new())?;
        let sinks = names
            .iter()
            .enumerate()
            .map(|(i, n)| replay.configure(i, shm::Channel::new(n)).create())
            .collect::<Result<Vec<_>, _>>()?;
        play(&replay, sinks, &options, &signal, &stop)?
    };
    if args.json {
        return out_json(&serde_json::json!({
            "path": args.recording,
            "run_id": replay.run_id(),
            "channels": names.iter().zip(&recorded).zip(&frames).map(|((n, r), f)| serde_json::json!({
                "channel": n, "recorded_as": r, "frames": f,
            })).collect::<Vec<_>>(),
        }));
    }
    for (n, f) in names.iter().zip(&frames) {
        out(format!("{n}: {f} frames published"))?;
    }
    Ok(())
}

fn play<S: labhub::record::Sink>(
    replay: &Replayer,
    sinks: Vec<S>,
    options: &ReplayOptions,
    signal: &StopSignal,
    stop: &labhub::record::StopHandle,
) -> anyhow::Result<Vec<u64>> {
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| replay.play(sinks, options));
        while !worker.is_finished() {
            if signal.wait(Duration::from_millis(100)).is_some() {
                stop.stop();
            }
        }
        let summary = worker
            .join()
            .map_err(|_| anyhow::anyhow!("the replay thread panicked"))??;
        Ok(summary.frames)
    })
}
