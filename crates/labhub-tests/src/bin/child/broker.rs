//! Broker roles.
//!
//! - `broker-run HOME ENDPOINT NOTIFY_ENDPOINT INTERVAL_MS MISSES [OPTION…]`: the broker
//!   exactly as `labhub hub` runs it ([`labhub::broker::run_foreground`]); prints
//!   `ready <endpoint> <notify endpoint> <public key>` once serving, exits 0 on SIGTERM.
//!   Options: `allow-list=FILE`; `metrics=IP:PORT` (metrics sampled every INTERVAL_MS; prints
//!   `metrics <address>` before the ready line), then `metrics-token-file=FILE`,
//!   `metrics-head-timeout-ms=MS`; `read-config` (as `labhub hub`: `<home>/broker.toml` and the
//!   environment under the flags).
//! - `broker-client HOME ENDPOINT SERVER_KEY CLIENT_ID MODE CHANNEL INTERVAL_MS`: a minimal
//!   client over `labhub-zmq` (the broker's probe) using the local user's client key. MODE:
//!   - `produce-shm`: creates a real shm channel, registers it, prints `registered`;
//!   - `produce-pubsub`: registers a pubsub channel, prints `registered`;
//!   - `consume`: attaches (and for a shm channel maps the segment as a consumer), prints
//!     `attached`.
//!
//!   Then it heartbeats every INTERVAL_MS; answered `unknown_client` (the broker restarted), it
//!   registers or attaches again and prints `re-registered` / `re-attached`. It runs until
//!   killed.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use labhub::broker::probe::Probe;
use labhub::broker::{BrokerConfig, ConfigLayer, run_foreground};
use labhub::keys::{self, PublicKey};
use labhub::log::{LogConfig, Sink};
use labhub::protocol::ErrorCode;

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Dispatches `broker-*` roles.
pub fn run(role: &str, args: &[String]) -> anyhow::Result<()> {
    match role {
        "broker-run" => broker_run(args),
        "broker-client" => broker_client(args),
        other => bail!("unknown broker role {other:?}"),
    }
}

fn broker_run(args: &[String]) -> anyhow::Result<()> {
    let [home, endpoint, notify, interval, misses, rest @ ..] = args else {
        bail!("usage: broker-run HOME ENDPOINT NOTIFY INTERVAL_MS MISSES [allow-list=FILE]");
    };
    let mut config = BrokerConfig::for_home(PathBuf::from(home));
    config.endpoint = endpoint.clone();
    config.notify_endpoint = notify.clone();
    config.registry.heartbeat_interval = Duration::from_millis(interval.parse()?);
    config.registry.max_missed_heartbeats = misses.parse()?;
    for opt in rest {
        if let Some(path) = opt.strip_prefix("allow-list=") {
            config.allow_list = Some(PathBuf::from(path));
            config.allow_list_required = true;
        } else if let Some(addr) = opt.strip_prefix("metrics=") {
            config.metrics = Some(
                labhub::broker::metrics::MetricsConfig::new(addr.parse()?)
                    .interval(Duration::from_millis(interval.parse()?)),
            );
        } else if let Some(file) = opt.strip_prefix("metrics-token-file=") {
            let m = config.metrics.take().context("metrics= must come first")?;
            config.metrics = Some(m.token_file(file));
        } else if let Some(ms) = opt.strip_prefix("metrics-head-timeout-ms=") {
            let m = config.metrics.take().context("metrics= must come first")?;
            config.metrics = Some(m.limits(labhub::broker::metrics::HttpLimits {
                head_timeout: Duration::from_millis(ms.parse()?),
                ..labhub::broker::metrics::HttpLimits::default()
            }));
        } else if opt == "read-config" {
            // As `labhub hub` does: <home>/broker.toml and the environment under the flags.
            let flags = ConfigLayer {
                endpoint: Some(endpoint.clone()),
                notify_endpoint: Some(notify.clone()),
                heartbeat_interval_ms: Some(interval.parse()?),
                max_missed_heartbeats: Some(misses.parse()?),
                ..ConfigLayer::default()
            };
            config = BrokerConfig::resolve(flags, Some(PathBuf::from(home)), None, &|k| {
                std::env::var(k).ok()
            })?;
        } else {
            bail!("unknown option {opt:?}");
        }
    }
    let mut log = LogConfig::new(Sink::Console);
    log.level = tracing::level_filters::LevelFilter::WARN;
    run_foreground(config, log, |info| {
        if let Some(m) = &info.metrics {
            say(&format!("metrics {}", m.address));
        }
        say(&format!(
            "ready {} {} {}",
            info.endpoint, info.notify_endpoint, info.public_key
        ));
    })?;
    say("stopped");
    Ok(())
}

fn broker_client(args: &[String]) -> anyhow::Result<()> {
    let [home, endpoint, server_key, client, mode, channel, interval] = args else {
        bail!("usage: broker-client HOME ENDPOINT SERVER_KEY CLIENT_ID MODE CHANNEL INTERVAL_MS");
    };
    let server = PublicKey::from_z85(server_key).map_err(anyhow::Error::msg)?;
    let local = keys::local_client_key(&PathBuf::from(home).join("keys"))?;
    let interval = Duration::from_millis(interval.parse()?);
    let mut probe = Probe::connect(endpoint, &server, &local, Duration::from_secs(2))?;

    // Keep the shm objects alive for the life of the process.
    let mut _producer = None;
    let mut _consumer = None;
    let join = |probe: &mut Probe| -> anyhow::Result<()> {
        let reply = match mode.as_str() {
            "produce-shm" => probe.request(
                "register",
                serde_json::json!({"client": client, "pid": std::process::id(), "channel": {
                    "name": channel, "kind": "shm",
                    "shm_name": labhub::name::ChannelName::new(channel.as_str())?.segment_name(),
                    "size": 4096, "policy": "latest"}}),
            )?,
            "produce-pubsub" => probe.request(
                "register",
                serde_json::json!({"client": client, "channel": {
                    "name": channel, "kind": "pubsub", "endpoint": "tcp://127.0.0.1:9"}}),
            )?,
            "consume" => probe.request(
                "attach",
                serde_json::json!({"client": client, "name": channel}),
            )?,
            other => bail!("unknown mode {other:?}"),
        };
        if !reply.is_ok() {
            bail!("{}: {}", reply.error_code, reply.message);
        }
        Ok(())
    };
    if mode == "produce-shm" {
        _producer = Some(
            labhub::shm::Channel::new(channel.as_str())
                .policy(labhub::shm::Policy::Latest)
                .bytes(64)
                .create()
                .context("creating the shm channel")?,
        );
    }
    join(&mut probe)?;
    if mode == "consume"
        && let Ok(c) = labhub::shm::Channel::new(channel.as_str()).open()
    {
        _consumer = Some(c);
    }
    let (first, again) = if mode == "consume" {
        ("attached", "re-attached")
    } else {
        ("registered", "re-registered")
    };
    say(first);
    loop {
        std::thread::sleep(interval);
        match probe.request("heartbeat", serde_json::json!({"client": client})) {
            Ok(reply) if reply.error_code == ErrorCode::UnknownClient => {
                if join(&mut probe).is_ok() {
                    say(again);
                }
            }
            // No broker (it was killed) or a late reply: keep trying.
            Ok(_) | Err(_) => {}
        }
    }
}
