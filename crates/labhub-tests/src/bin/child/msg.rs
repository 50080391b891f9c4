//! Child roles for the message channel tests (`tests/it/msg.rs`, `tests/it/msg_hub.rs`).
//!
//! * `msg-req-server BIND`: binds a `ReqServer` to BIND, prints `endpoint <ENDPOINT>`, then
//!   answers every request with `<pid>:<payload>` until it is killed or a request `exit`
//!   arrives (answered `<pid>:exit`, then the process exits).
//!
//! The Hub roles connect to the broker of HOME at ENDPOINT / NOTIFY (as `client-broker`
//! serves it) and work on channel NAME; MAX is the maximum message size of a receiver. Each
//! prints one line per event:
//!
//! * `msg-hub-pub HOME ENDPOINT NOTIFY NAME`: `hub.publisher(NAME).create()`, prints
//!   `endpoint <E>` and `key <Z85>`, then per stdin line: `send TEXT` publishes TEXT under
//!   topic `t` (prints `sent`), `huge N` publishes N bytes (prints `sent`), `wait N` waits
//!   for N subscriptions (prints `subscribers <n>`). Prints `notice <kind>` per Hub notice.
//! * `msg-hub-sub HOME ENDPOINT NOTIFY NAME MAX`: `hub.subscriber(NAME).topic("").open()`,
//!   prints `subscribed`, then `message <payload>` per message (at most 64 bytes of it) and
//!   `error <error>` per error, until killed.
//! * `msg-hub-server HOME ENDPOINT NOTIFY NAME MAX`: `hub.req_server(NAME).create()`, prints
//!   `endpoint <E>` and `key <Z85>`, then answers `huge N` with N bytes and anything else
//!   with `ok:<payload>`, printing `served` or `rejected <error>` per request, until killed.
//! * `msg-hub-call HOME ENDPOINT NOTIFY NAME MAX`: `hub.req_client(NAME).open()`, prints
//!   `connected`, then per stdin line sends a request (`send-huge N`: N bytes; else the
//!   line, so `huge N` asks the server for N bytes) and prints `reply <reply>` (at most 64
//!   bytes of it) or `error <error>`.
//! * `msg-idle HOME ENDPOINT NOTIFY NAME SECONDS`: creates publisher NAME (so the Hub
//!   heartbeats), prints `ready`, sleeps SECONDS and prints `switches <n>`: the context
//!   switches of all its threads meanwhile (voluntary and involuntary, from /proc).

use std::io::{BufRead, Write};
use std::time::Duration;

use anyhow::{Context as _, bail};
use labhub::client::Hub;
use labhub::msg::{Context, ReqServer, Served};

use crate::client::connect;

/// How long one receive waits before looking again.
const TICK: Duration = Duration::from_millis(200);
/// How long a request waits for its reply.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the message channel role `role` with its arguments.
pub fn run(role: &str, args: &[String]) -> anyhow::Result<()> {
    match (role, args) {
        ("msg-req-server", [bind]) => req_server(bind),
        ("msg-hub-pub", [home, endpoint, notify, name]) => {
            hub_pub(&connect(home, endpoint, notify)?, name)
        }
        ("msg-hub-sub", [home, endpoint, notify, name, max]) => {
            hub_sub(&connect(home, endpoint, notify)?, name, max.parse()?)
        }
        ("msg-hub-server", [home, endpoint, notify, name, max]) => {
            hub_server(&connect(home, endpoint, notify)?, name, max.parse()?)
        }
        ("msg-hub-call", [home, endpoint, notify, name, max]) => {
            hub_call(&connect(home, endpoint, notify)?, name, max.parse()?)
        }
        ("msg-idle", [home, endpoint, notify, name, seconds]) => idle(
            &connect(home, endpoint, notify)?,
            name,
            Duration::from_secs_f64(seconds.parse()?),
        ),
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

/// The payload of a `huge N` command, if `line` is one: N zero bytes (untouched pages, so
/// the sender's own memory grows only where ZeroMQ copies them).
fn huge(line: &str) -> anyhow::Result<Option<Vec<u8>>> {
    match line.strip_prefix("huge ") {
        Some(n) => Ok(Some(vec![0u8; n.parse().context("huge N")?])),
        None => Ok(None),
    }
}

/// At most 64 bytes of `bytes`, as text.
fn shown(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(64)]).into_owned()
}

fn print_notices(hub: &Hub) -> anyhow::Result<()> {
    let notices = hub.notices()?;
    std::thread::spawn(move || {
        for notice in notices {
            let _ = say(&format!("notice {}", notice.kind()));
        }
    });
    Ok(())
}

fn hub_pub(hub: &Hub, name: &str) -> anyhow::Result<()> {
    print_notices(hub)?;
    let publisher = hub.publisher(name).create()?;
    say(&format!("endpoint {}", publisher.endpoint()))?;
    let key = publisher
        .curve_public_key()
        .context("a hub publisher has a key")?;
    say(&format!("key {}", key.to_z85()))?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if let Some(payload) = huge(&line)? {
            publisher.send("t", payload)?;
            say("sent")?;
        } else if let Some(text) = line.strip_prefix("send ") {
            publisher.send("t", text)?;
            say("sent")?;
        } else if let Some(n) = line.strip_prefix("wait ") {
            let seen = publisher.wait_for_subscribers(n.parse()?, REQUEST_TIMEOUT)?;
            say(&format!("subscribers {seen}"))?;
        } else {
            bail!("unknown command {line:?}");
        }
    }
    Ok(())
}

fn hub_sub(hub: &Hub, name: &str, max: usize) -> anyhow::Result<()> {
    let subscriber = hub
        .subscriber(name)
        .topic("")
        .max_message_size(max)
        .open()?;
    say("subscribed")?;
    loop {
        match subscriber.recv(TICK) {
            Ok(Some(message)) => say(&format!("message {}", shown(message.payload())))?,
            Ok(None) => {}
            Err(e) => say(&format!("error {e}"))?,
        }
    }
}

fn hub_server(hub: &Hub, name: &str, max: usize) -> anyhow::Result<()> {
    let server = hub.req_server(name).max_message_size(max).create()?;
    say(&format!("endpoint {}", server.endpoint()))?;
    let key = server
        .curve_public_key()
        .context("a hub server has a key")?;
    say(&format!("key {}", key.to_z85()))?;
    loop {
        let served = server.serve_one(TICK, |request| {
            let text = String::from_utf8_lossy(request);
            match huge(&text) {
                Ok(Some(payload)) => payload,
                _ => [b"ok:", request].concat(),
            }
        })?;
        match served {
            Served::Idle => {}
            Served::Rejected(e) => say(&format!("rejected {e}"))?,
            _ => say("served")?,
        }
    }
}

fn hub_call(hub: &Hub, name: &str, max: usize) -> anyhow::Result<()> {
    let mut client = hub.req_client(name).max_message_size(max).open()?;
    say("connected")?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let payload = match line.strip_prefix("send-") {
            Some(command) => huge(command)?.context("send-huge N")?,
            None => line.into_bytes(),
        };
        match client.request(payload, REQUEST_TIMEOUT) {
            Ok(reply) => say(&format!("reply {}", shown(&reply)))?,
            Err(e) => say(&format!("error {e}"))?,
        }
    }
    Ok(())
}

/// Context switches of every thread of this process so far.
fn context_switches() -> anyhow::Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task")? {
        let status = std::fs::read_to_string(task?.path().join("status"))?;
        for line in status.lines() {
            if let Some(rest) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total += rest.trim().parse::<u64>()?;
            }
        }
    }
    Ok(total)
}

fn idle(hub: &Hub, name: &str, seconds: Duration) -> anyhow::Result<()> {
    let _publisher = hub.publisher(name).create()?;
    say("ready")?;
    let before = context_switches()?;
    std::thread::sleep(seconds);
    let after = context_switches()?;
    say(&format!("switches {}", after.saturating_sub(before)))?;
    Ok(())
}

fn say(line: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}
