//! `labhub bridge`: republish a local channel into a channel of a peer hub.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use labhub::bridge::{Bridge, BridgeOptions, Delivery, MAX_CONNECTIONS};
use labhub::client::ClientConfig;

use crate::args;
use crate::common::{self, ConnectArgs, out_json};
use crate::exit::UsageError;
use crate::stop::StopSignal;

/// Republish shared-memory channel CHANNEL into a channel of the same name (or --as NAME) on
/// peer hub --to, over CurveZMQ. Frames keep their source ids, timestamps, shapes, schema and
/// flexible-zone state.
///
/// The peer is a `[[peer]]` table of this hub's broker.toml (name, endpoint, public_key), and
/// runs `labhub gateway`; it must admit this host's client key (its allow list). The bridge
/// reconnects by itself after either side restarts or the connection breaks, and runs until
/// Ctrl-C (or SIGTERM), then prints what it did.
///
/// Lossless (default): every frame, in order; the peer's ring holds back this host's producer.
/// Lossy: the newest frame whenever the link has room, for monitors; skipped frames are
/// counted. A status line on stderr shows frames, rate and losses at both ends.
///
/// JSON (--json): at the end one object {"channel", "to", "frames", "bytes", "acked",
/// "resent", "skipped", "remote_lost", "sessions", "connected", "last_problem"}.
#[derive(Debug, clap::Args)]
pub struct BridgeArgs {
    /// The local shared-memory channel.
    #[arg(value_name = "CHANNEL", value_parser = args::channel_name)]
    channel: String,
    /// The peer hub (a name from the `[[peer]]` tables of broker.toml).
    #[arg(long, value_name = "HUB")]
    to: String,
    /// The channel's name on the peer hub [default: CHANNEL].
    #[arg(long = "as", value_name = "NAME", value_parser = args::channel_name)]
    target: Option<String>,
    /// How frames are delivered: lossless or lossy.
    #[arg(long, value_name = "DELIVERY", default_value = "lossless", value_parser = delivery)]
    delivery: Delivery,
    /// Lossy delivery (the same as --delivery lossy).
    #[arg(long, conflicts_with = "delivery")]
    lossy: bool,
    /// CurveZMQ connections to the gateway, 1 to 16: one stream is encrypted on one core.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_CONNECTIONS)))]
    connections: u32,
    /// Lossless: how much the bridge holds while the link is down or slow (a gateway restart
    /// takes a few seconds), e.g. 64MiB; beyond it the local producer is held back.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = args::size(1 << 10..=1 << 40))]
    buffer: u64,
    /// Stop after this many seconds, 0.001 to 31536000 (365 days) [default: until Ctrl-C].
    #[arg(long, value_name = "SECONDS", value_parser = args::seconds(0.001..=args::YEAR_SECONDS))]
    seconds: Option<f64>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

fn delivery(s: &str) -> Result<Delivery, String> {
    s.parse()
}

/// Runs the bridge until stopped.
pub fn run(args: BridgeArgs, verbose: u8) -> anyhow::Result<()> {
    let local = args.connect.resolve()?;
    let home = common::home(args.connect.home.as_deref())?;
    let peers = labhub::home::peers(&home)?;
    let peer = peers.get(&args.to).ok_or_else(|| {
        let known: Vec<&str> = peers.peers.iter().map(|p| p.name.as_str()).collect();
        UsageError(format!(
            "--to {}: no such peer in {} (known: {})",
            args.to,
            home.join("broker.toml").display(),
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        ))
    })?;
    let remote = ClientConfig::new(peer.endpoint.clone(), peer.public_key, local.keys.clone())
        .request_timeout(args.connect.timeout);
    let signal = StopSignal::install()?;
    let (_guard, hub) = common::connect(verbose, local)?;
    let options = BridgeOptions {
        delivery: if args.lossy {
            Delivery::Lossy
        } else {
            args.delivery
        },
        connections: args.connections,
        target: args.target.clone(),
        from_hub: peers.own_name.clone(),
        buffer: usize::try_from(args.buffer).unwrap_or(usize::MAX),
        ..Default::default()
    };
    let bridge = Bridge::start(&hub, &args.channel, remote, options)
        .with_context(|| format!("bridging {} to {}", args.channel, args.to))?;
    let started = Instant::now();
    let deadline = args.seconds.map(|s| started + Duration::from_secs_f64(s));
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut last = (Instant::now(), 0u64);
    loop {
        if signal.wait(Duration::from_millis(500)).is_some()
            || deadline.is_some_and(|d| Instant::now() >= d)
            || bridge.is_finished()
        {
            break;
        }
        if tty {
            let s = bridge.stats();
            let dt = last.0.elapsed().as_secs_f64();
            let rate = (s.frames - last.1) as f64 / dt.max(1e-9);
            last = (Instant::now(), s.frames);
            eprint!(
                "\r{} -> {}: {} frames, {rate:.1}/s, skipped {}, lost at peer {}, {}   ",
                args.channel,
                args.to,
                s.frames,
                s.skipped,
                s.remote_lost,
                if s.connected {
                    "connected"
                } else {
                    "reconnecting"
                }
            );
        }
    }
    if tty {
        eprintln!();
    }
    let stats = bridge
        .stop()
        .with_context(|| format!("bridging {} to {}", args.channel, args.to))?;
    if args.json {
        let mut value = serde_json::to_value(&stats)?;
        value["channel"] = args.channel.clone().into();
        value["to"] = args.to.clone().into();
        out_json(&value)?;
    } else {
        common::out(format!(
            "{}: {} frames ({:.1} MB) to {}; skipped here {}, lost at the peer {}, resent {}, sessions {}",
            args.channel,
            stats.frames,
            stats.bytes as f64 / 1e6,
            args.to,
            stats.skipped,
            stats.remote_lost,
            stats.resent,
            stats.sessions
        ))?;
    }
    Ok(())
}
