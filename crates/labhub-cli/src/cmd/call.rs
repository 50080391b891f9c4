//! `labhub call CHANNEL REQUEST`: one request to a request/reply channel.

use std::io::Read as _;

use anyhow::Context as _;

use crate::args;
use crate::common::{self, ConnectArgs, out, out_json};

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
    #[arg(value_name = "CHANNEL", value_parser = args::channel_name)]
    channel: String,
    /// The request, or `-` for all of standard input.
    #[arg(value_name = "REQUEST|-")]
    request: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// The largest reply accepted (1 byte to 1TiB, e.g. 64KiB, 32MiB); a larger one is an error instead of
    /// being read into memory.
    #[arg(long, value_name = "BYTES", default_value = "32MiB", value_parser = args::size(1..=args::MAX_MESSAGE_SIZE))]
    max_message_size: u64,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// Calls.
pub fn run(args: CallArgs, verbose: u8) -> anyhow::Result<()> {
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
        .max_message_size(usize::try_from(args.max_message_size).unwrap_or(usize::MAX))
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
