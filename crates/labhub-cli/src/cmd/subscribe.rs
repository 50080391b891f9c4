//! `labhub sub CHANNEL`: print the messages of a pub/sub channel.

use std::time::{Duration, Instant};

use crate::args;
use crate::common::{self, ConnectArgs, out, out_json};

/// Print the messages of a pub/sub channel: finds its endpoint and CURVE key through the
/// broker, attaches there as a consumer, subscribes over CurveZMQ (the Hub client's
/// `hub.subscriber(CHANNEL).open()`), and prints one line per message: `TOPIC<TAB>PAYLOAD`
/// (payload as UTF-8, lossy), or with --json {"topic": string, "payload": string, "utf8": bool}
/// per line. Ends after --count messages or --seconds, else with Ctrl-C.
///
/// Ends with exit code 1 when the connection to the publisher closes: the publisher went away
/// (a publisher started again has a new endpoint: run sub again), sent a message larger than
/// --max-message-size, or the peer on the endpoint failed the CURVE handshake (it is not the
/// publisher the broker announced). Nothing more could arrive in those cases.
#[derive(Debug, clap::Args)]
pub struct SubArgs {
    /// The channel name.
    #[arg(value_name = "CHANNEL", value_parser = args::channel_name)]
    channel: String,
    /// Only messages whose topic starts with this prefix (repeatable; default: all).
    #[arg(long)]
    topic: Vec<String>,
    /// Stop after this many messages (at least 1).
    #[arg(long, value_name = "N", value_parser = args::integer(1..=u64::MAX))]
    count: Option<u64>,
    /// Stop after this many seconds, 0.001 to 31536000 (365 days).
    #[arg(long, value_name = "SECONDS", value_parser = args::seconds(0.001..=args::YEAR_SECONDS))]
    seconds: Option<f64>,
    /// Print JSON Lines.
    #[arg(long)]
    json: bool,
    /// The largest message accepted (1 byte to 1TiB, e.g. 64KiB, 32MiB); a larger one ends the command with an
    /// error instead of being read into memory.
    #[arg(long, value_name = "BYTES", default_value = "32MiB", value_parser = args::size(1..=args::MAX_MESSAGE_SIZE))]
    max_message_size: u64,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// Subscribes and prints.
pub fn run(args: SubArgs, verbose: u8) -> anyhow::Result<()> {
    let config = args.connect.resolve()?;
    let (_guard, hub) = common::connect(verbose, config)?;
    // Discovers the endpoint and key, attaches at the broker (detached on drop), connects.
    let mut builder = hub
        .subscriber(&args.channel)
        .max_message_size(usize::try_from(args.max_message_size).unwrap_or(usize::MAX));
    builder = if args.topic.is_empty() {
        builder.all_topics()
    } else {
        args.topic.iter().fold(builder, |b, t| b.topic(t))
    };
    let subscriber = builder.open()?;
    let end = args
        .seconds
        .map(|s| Instant::now() + Duration::from_secs_f64(s));
    let mut received = 0u64;
    while args.count.is_none_or(|n| received < n) {
        let wait = match end {
            Some(e) => {
                let left = e.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                left.min(Duration::from_millis(200))
            }
            None => Duration::from_millis(200),
        };
        let Some(message) = subscriber.recv(wait)? else {
            continue;
        };
        received += 1;
        let topic = String::from_utf8_lossy(message.topic());
        let utf8 = std::str::from_utf8(message.payload()).is_ok();
        let payload = String::from_utf8_lossy(message.payload());
        if args.json {
            out_json(&serde_json::json!({"topic": topic, "payload": payload, "utf8": utf8}))?;
        } else {
            out(format!("{topic}\t{payload}"))?;
        }
    }
    Ok(())
}
