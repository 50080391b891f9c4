//! Child roles for the message channel tests (`tests/it/msg.rs`).
//!
//! * `msg-req-server BIND`: binds a `ReqServer` to BIND, prints `endpoint <ENDPOINT>`, then
//!   answers every request with `<pid>:<payload>` until it is killed or a request `exit`
//!   arrives (answered `<pid>:exit`, then the process exits).

use std::io::Write;
use std::time::Duration;

use anyhow::bail;
use labhub::msg::{Context, ReqServer, Served};

/// Runs the message channel role `role` with its arguments.
pub fn run(role: &str, args: &[String]) -> anyhow::Result<()> {
    match (role, args) {
        ("msg-req-server", [bind]) => req_server(bind),
        _ => bail!("usage: {role} with arguments {args:?} is not a msg role"),
    }
}

fn req_server(bind: &str) -> anyhow::Result<()> {
    let context = Context::new()?;
    let server = ReqServer::builder(&context).bind(bind).create()?;
    say(&format!("endpoint {}", server.endpoint()))?;
    let pid = std::process::id();
    loop {
        let mut exit = false;
        let served = server.serve_one(Duration::from_secs(1), |payload| {
            exit = payload == b"exit";
            [format!("{pid}:").as_bytes(), payload].concat()
        })?;
        if exit && matches!(served, Served::Replied { .. }) {
            // The reply is queued; dropping the server lingers long enough to send it.
            return Ok(());
        }
    }
}

fn say(line: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}
