//! `labhub pub CHANNEL`: publish messages on a pub/sub channel this command creates.

use std::io::BufRead as _;
use std::time::Duration;

use anyhow::Context as _;

use crate::args;
use crate::common::{self, ConnectArgs, out_json};

/// Publish messages on a pub/sub channel: binds a CurveZMQ XPUB socket with a fresh key pair
/// on a free loopback port (the Hub client's `hub.publisher(CHANNEL).create()`), registers
/// CHANNEL with the broker with its endpoint and public key (found by `labhub sub` and other
/// subscribers), sends MESSAGE, or every line of standard input with `-`, then withdraws the
/// channel. Only subscribers whose keys the broker admits can connect.
///
/// PUB/SUB delivers only to subscribers already subscribed: use --wait-subscribers N to wait
/// until N subscriptions have reached the publisher (one per `labhub sub` without --topic, one
/// per --topic otherwise; a subscriber attaches at the broker before it subscribes).
/// Reports what was sent on stderr ({"channel", "endpoint", "sent"} on stdout with --json).
#[derive(Debug, clap::Args)]
pub struct PubArgs {
    /// The channel name.
    #[arg(value_name = "CHANNEL", value_parser = args::channel_name)]
    channel: String,
    /// The message, or `-` for one message per line of standard input.
    #[arg(value_name = "MESSAGE|-")]
    message: String,
    /// The topic of the messages.
    #[arg(long, default_value = "")]
    topic: String,
    /// Wait until this many subscribers have attached at the broker and this many
    /// subscriptions have reached the publisher before sending (a subscriber's subscriptions
    /// count once per topic prefix).
    #[arg(long, value_name = "N", default_value_t = 0,
          value_parser = args::integer(0..=args::MAX_SUBSCRIBERS_WAITED))]
    wait_subscribers: usize,
    /// How long to wait for them, 1ms to 1day.
    #[arg(long, value_name = "DURATION", default_value = "30s",
          value_parser = args::duration(args::MILLISECOND..=args::DAY))]
    wait_timeout: Duration,
    /// Print a JSON report on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// Publishes.
pub fn run(args: PubArgs, verbose: u8) -> anyhow::Result<()> {
    let config = args.connect.resolve()?;
    let (_guard, hub) = common::connect(verbose, config)?;
    // Registered as the pub/sub channel; dropping it withdraws the channel.
    let publisher = hub.publisher(&args.channel).create()?;
    let endpoint = publisher.endpoint().to_owned();
    if args.wait_subscribers > 0 {
        // Scripts (and the tests) wait for this line before starting subscribers.
        eprintln!(
            "waiting for {} subscriber(s) on {} ({endpoint})",
            args.wait_subscribers, args.channel
        );
        // A subscriber attaches at the broker before it subscribes (the Hub client's
        // `hub.subscriber(..).open()`), so once its subscription reaches the socket (an event, not a
        // settling sleep) it is attached too, and nothing sent after this is lost to it.
        publisher.wait_for_subscribers(args.wait_subscribers, args.wait_timeout)?;
    }
    let mut sent = 0u64;
    if args.message == "-" {
        for line in std::io::stdin().lock().lines() {
            publisher.send(&args.topic, line.context("reading standard input")?)?;
            sent += 1;
        }
    } else {
        publisher.send(&args.topic, &args.message)?;
        sent = 1;
    }
    drop(publisher);
    if args.json {
        out_json(
            &serde_json::json!({"channel": args.channel, "endpoint": endpoint, "sent": sent}),
        )?;
    } else {
        eprintln!("sent {sent} message(s) on {} ({endpoint})", args.channel);
    }
    Ok(())
}
