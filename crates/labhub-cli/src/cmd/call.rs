//! `labhub call CHANNEL REQUEST`: one request to a request/reply channel.

use std::io::Read as _;

use anyhow::Context as _;
use labhub::protocol::ChannelName;

use crate::cmd::subscribe::parse_message_size;
use crate::common::{self, ConnectArgs, out, out_json};
use crate::exit::UsageError;

/// Send one request to a request/reply channel and print the reply: finds the server's
/// endpoint and CURVE key through the broker, sends REQUEST (or standard input with `-`) over
/// CurveZMQ, waits up to --timeout (which bounds the broker's replies too). The reply is
/// printed as is (UTF-8, lossy) on stdout; with --json as {"reply": string, "utf8": bool}. No
/// reply in time exits with code 3; an error reply, a reply over --max-message-size, or a
/// peer that fails the CURVE handshake (not the server the broker announced) with 1, the
/// error on stderr.
#[derive(Debug, clap::Args)]
pub struct CallArgs {
    /// The channel name.
    #[arg(value_name = "CHANNEL")]
    channel: String,
    /// The request, or `-` for all of standard input.
    #[arg(value_name = "REQUEST|-")]
    request: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// The largest reply accepted (e.g. 64Ki, 32Mi); a larger one is an error instead of
    /// being read into memory.
    #[arg(long, value_name = "BYTES", default_value = "32Mi", value_parser = parse_message_size)]
    max_message_size: usize,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// Calls.
pub fn run(args: CallArgs, verbose: u8) -> anyhow::Result<()> {
    ChannelName::new(args.channel.as_str())
        .map_err(|e| UsageError(format!("channel name {:?}: {e}", args.channel)))?;
    let request = if args.request == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading standard input")?;
        buf
    } else {
        args.request.clone().into_bytes()
    };
    let config = args.connect.resolve()?;
    let (_guard, hub) = common::connect(verbose, config)?;
    // Discovers the server's endpoint and key and connects (the Hub client's
    // `hub.req_client(CHANNEL).open()`).
    let mut client = hub
        .req_client(&args.channel)
        .max_message_size(args.max_message_size)
        .open()?;
    let reply = client.request(&request, args.connect.timeout)?;
    let utf8 = std::str::from_utf8(&reply).is_ok();
    let text = String::from_utf8_lossy(&reply);
    if args.json {
        out_json(&serde_json::json!({"reply": text, "utf8": utf8}))?;
    } else {
        out(text)?;
    }
    Ok(())
}
