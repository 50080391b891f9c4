//! `labhub gateway`: receive bridges from peer hubs into this hub's channels.

use std::time::Duration;

use anyhow::Context as _;
use labhub::bridge::{Gateway, GatewayOptions};

use crate::args;
use crate::common::{self, ConnectArgs, out, out_json};
use crate::stop::StopSignal;

/// Receive bridges (`labhub bridge CHANNEL --to THIS_HUB` on other hosts) into this hub's
/// channels, until Ctrl-C (or SIGTERM).
///
/// Binds --listen with CurveZMQ and registers it with this hub (as req/rep channel
/// `labhub.bridge`), so bridges find it through the hub; it admits exactly the client keys
/// the hub admits. Each bridged channel is created here with its source's settings and listed
/// by `labhub ls` as bridged from CHANNEL@HUB.
///
/// Prints one line per session whenever its counts change: channel, source, frames written,
/// frames lost, duplicates dropped, connections. JSON (--json): the same as one object per
/// line {"channel", "from", "delivery", "frames", "lost", "duplicates", "opens", "connections"}.
#[derive(Debug, clap::Args)]
pub struct GatewayArgs {
    /// The endpoint to listen on, tcp://HOST:PORT (port 0 picks one).
    #[arg(long, value_name = "ENDPOINT", default_value = "tcp://0.0.0.0:5580",
          value_parser = args::bind_endpoint)]
    listen: String,
    /// The host or address bridges dial when --listen has a wildcard host [default: loopback].
    #[arg(long, value_name = "HOST")]
    advertise: Option<String>,
    /// Items a bridge may have in flight per connection, 1 to 1024.
    #[arg(long, value_name = "N", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    window: u32,
    /// How long a bridged channel whose sender went away stays open for it to come back,
    /// 1ms to 1day.
    #[arg(long, value_name = "DURATION", default_value = "30s",
          value_parser = args::duration(args::MILLISECOND..=args::DAY))]
    orphan_timeout: Duration,
    /// The largest message accepted from a bridge (one frame and its header), e.g. 64MiB.
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = args::size(1024..=1 << 40))]
    max_message_size: u64,
    /// The most bridged channels at once, 1 to 10000.
    #[arg(long, value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    max_bridges: u32,
    /// libzmq I/O threads, which decrypt the bridges' connections (one connection on one
    /// thread), 1 to 16.
    #[arg(long, value_name = "N", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=16))]
    io_threads: u32,
    /// Print JSON lines.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// Runs the gateway until stopped.
pub fn run(args: GatewayArgs, verbose: u8) -> anyhow::Result<()> {
    let config = args.connect.resolve()?.io_threads(args.io_threads);
    let signal = StopSignal::install()?;
    let (_guard, hub) = common::connect(verbose, config)?;
    let options = GatewayOptions {
        bind: args.listen.clone(),
        advertise_host: args.advertise.clone(),
        window: args.window,
        orphan_timeout: args.orphan_timeout,
        max_message_size: usize::try_from(args.max_message_size).unwrap_or(usize::MAX),
        max_sessions: args.max_bridges as usize,
    };
    let gateway = Gateway::start(&hub, options).context("starting the gateway")?;
    if args.json {
        out_json(&serde_json::json!({ "listening": gateway.endpoint() }))?;
    } else {
        out(format!("gateway listening on {}", gateway.endpoint()))?;
    }
    let mut shown = Vec::new();
    while signal.wait(Duration::from_millis(250)).is_none() && !gateway.is_finished() {
        let now = gateway.sessions();
        for s in &now {
            if shown.contains(s) {
                continue;
            }
            if args.json {
                out_json(s)?;
            } else {
                out(format!(
                    "{} from {} ({}): {} frames, {} lost, {} duplicates dropped, {} connections",
                    s.channel, s.from, s.delivery, s.frames, s.lost, s.duplicates, s.connections
                ))?;
            }
        }
        shown = now;
    }
    gateway.stop().context("the gateway failed")?;
    Ok(())
}
