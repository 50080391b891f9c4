//! `labhub sub CHANNEL`: print the messages of a pub/sub channel.

use std::time::{Duration, Instant};

use labhub::protocol::ChannelName;

use crate::cmd::demo::parse_size;
use crate::common::{self, ConnectArgs, out, out_json};
use crate::exit::UsageError;

/// Parses a message size limit: at least one byte.
pub fn parse_message_size(text: &str) -> Result<usize, String> {
    match parse_size(text)? {
        0 => Err(format!("{text:?}: the limit must be at least 1 byte")),
        n => usize::try_from(n).map_err(|_| format!("{text:?} is too large")),
    }
}

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
    #[arg(value_name = "CHANNEL")]
    channel: String,
    /// Only messages whose topic starts with this prefix (repeatable; default: all).
    #[arg(long)]
    topic: Vec<String>,
    /// Stop after this many messages.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    seconds: Option<f64>,
    /// Print JSON Lines.
    #[arg(long)]
    json: bool,
    /// The largest message accepted (e.g. 64Ki, 32Mi); a larger one ends the command with an
    /// error instead of being read into memory.
    #[arg(long, value_name = "BYTES", default_value = "32Mi", value_parser = parse_message_size)]
    max_message_size: usize,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// Subscribes and prints.
pub fn run(args: SubArgs, verbose: u8) -> anyhow::Result<()> {
    ChannelName::new(args.channel.as_str())
        .map_err(|e| UsageError(format!("channel name {:?}: {e}", args.channel)))?;
    if let Some(s) = args.seconds
        && !(s.is_finite() && s > 0.0)
    {
        return Err(UsageError(format!("--seconds {s} must be more than 0")).into());
    }
    let config = args.connect.resolve()?;
    let (_guard, hub) = common::connect(verbose, config)?;
    // Discovers the endpoint and key, attaches at the broker (detached on drop), connects.
    let mut builder = hub
        .subscriber(&args.channel)
        .max_message_size(args.max_message_size);
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
