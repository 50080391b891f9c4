//! What several commands share: how to reach the broker, output, logging, durations.
//!
//! Each command follows parse → validate → act: clap fills its `Args`, [`ConnectArgs::resolve`]
//! turns flags, environment and files into a checked [`labhub::client::ClientConfig`] (keys
//! read, endpoint chosen) before anything is sent, and only then does the command act.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use labhub::client::ClientConfig;
use labhub::home::default_home;
use labhub::keys::{self, PublicKey};
use labhub::lifecycle::{LifecycleGuard, ModuleDef};
use labhub::log::{LogConfig, Sink};
use tracing::level_filters::LevelFilter;

use crate::args;
use crate::exit::UsageError;

/// How to reach the broker (shared by every command that talks to it).
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// The broker's request endpoint, tcp://HOST:PORT or ipc:///PATH [env: LABHUB_BROKER_ENDPOINT] [default: from <home>/broker.toml, else tcp://127.0.0.1:5570].
    #[arg(long, value_name = "ENDPOINT", value_parser = args::connect_endpoint)]
    pub broker: Option<String>,
    /// The broker's public key: 40 Z85 characters, or a file holding them (at most 4 KiB) [default: <home>/keys/broker.pub].
    // Z85 keys may start with `-`.
    #[arg(long, value_name = "KEY|FILE", allow_hyphen_values = true, value_parser = args::public_key)]
    pub server_key: Option<PublicKey>,
    /// The labhub home (the broker's public key, this user's client key) [env: LABHUB_HOME] [default: <data dir>/labhub].
    #[arg(long, value_name = "DIR", value_parser = args::path)]
    pub home: Option<PathBuf>,
    /// How long to wait for each broker reply, 1ms to 1day (e.g. 500ms, 2s).
    #[arg(long, value_name = "DURATION", default_value = "5s",
          value_parser = args::duration(args::MILLISECOND..=args::DAY))]
    pub timeout: Duration,
}

/// The labhub home: the flag, else `LABHUB_HOME`, else the platform's data directory.
pub fn home(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    match flag {
        Some(h) => Ok(h.to_owned()),
        None => Ok(default_home(&|k| std::env::var(k).ok())?),
    }
}

impl ConnectArgs {
    /// Validates the flags and reads the keys: everything that can be wrong with the input
    /// fails here, before any request.
    pub fn resolve(&self) -> anyhow::Result<ClientConfig> {
        let home = home(self.home.as_deref())?;
        let server_key = match self.server_key {
            Some(key) => key,
            None => {
                let path = home.join("keys").join("broker.pub");
                keys::read_public(&path).with_context(|| {
                    format!(
                        "no broker key at {}: pass --server-key, or --home/LABHUB_HOME of the hub",
                        path.display()
                    )
                })?
            }
        };
        let client_keys =
            keys::local_client_key(&home.join("keys")).context("reading this user's client key")?;
        let env = std::env::var("LABHUB_BROKER_ENDPOINT")
            .ok()
            .filter(|v| !v.is_empty());
        let endpoint = match (&self.broker, env) {
            (Some(e), _) => e.clone(),
            (None, Some(e)) => args::connect_endpoint(&e)
                .map_err(|why| UsageError(format!("LABHUB_BROKER_ENDPOINT {e:?}: {why}")))?,
            (None, None) => {
                let file = home.join("broker.toml");
                // The environment was handled above.
                let e = labhub::home::broker_endpoints(&home, &|_| None)?.endpoint;
                args::connect_endpoint(&e).map_err(|why| {
                    anyhow::anyhow!("the endpoint {e:?} of {}: {why}", file.display())
                })?
            }
        };
        Ok(ClientConfig::new(endpoint, server_key, client_keys).request_timeout(self.timeout))
    }
}

/// The log level for `-v` given `count` times: warn, info, debug, trace.
pub fn level(verbose: u8) -> LevelFilter {
    match verbose {
        0 => LevelFilter::WARN,
        1 => LevelFilter::INFO,
        2 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

/// Starts the log module (console sink, on stderr) plus `more`, through the lifecycle guard.
pub fn start(verbose: u8, more: Vec<ModuleDef>) -> anyhow::Result<LifecycleGuard> {
    let mut log = LogConfig::new(Sink::Console);
    log.level = level(verbose);
    let mut modules = vec![labhub::log::module(log)];
    modules.extend(more);
    let guard = LifecycleGuard::new(modules).context("starting labhub's modules")?;
    Ok(guard)
}

/// Writes one line to stdout; a closed stdout comes back as a `BrokenPipe` error.
pub fn out(line: impl std::fmt::Display) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()
}

/// Prints `value` as one line of JSON on stdout.
pub fn out_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string(value)?;
    out(text)?;
    Ok(())
}

/// Nanoseconds since the Unix epoch (the clock frame timestamps use).
pub fn now_unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Bytes per second as MB/s (10^6 bytes).
pub fn mb_per_s(bytes: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        bytes as f64 / 1e6 / seconds
    } else {
        0.0
    }
}

/// Starts logging and the Hub client module with `config`; the client runs until the guard drops.
pub fn connect(
    verbose: u8,
    config: ClientConfig,
) -> anyhow::Result<(LifecycleGuard, std::sync::Arc<labhub::client::Hub>)> {
    let guard = start(verbose, vec![labhub::client::module(config)])?;
    let hub = labhub::client::hub().context("the hub client module is not running")?;
    Ok((guard, hub))
}
