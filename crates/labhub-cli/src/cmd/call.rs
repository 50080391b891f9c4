//! `labhub call CHANNEL REQUEST`: one request to a request/reply channel.

use std::io::Read as _;

use anyhow::Context as _;

use crate::args;
use crate::common::{self, ConnectArgs, out, out_json};

/// Send one request to a request/reply channel and print the reply: finds the server's
/// endpoint through the broker, sends REQUEST (or standard input with `-`), waits up to
/// --timeout (which bounds the broker's replies too). The reply is printed as is (UTF-8, lossy) on stdout; with --json as
/// {"reply": string, "utf8": bool}. No reply in time exits with code 3, an error reply
/// with 1 (its text on stderr).
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
    // Discovers the server's endpoint and connects (the Hub client's `find_req_client`).
    let mut client = hub.find_req_client(&args.channel)?;
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
