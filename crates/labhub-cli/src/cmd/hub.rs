//! `labhub hub`: run the broker in the foreground.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use labhub::broker::metrics::{self, MetricsConfig, MetricsInfo};
use labhub::broker::{self, BrokerConfig, ConfigLayer};
use labhub::log::{LogConfig, Sink};
use tracing::level_filters::LevelFilter;

use crate::args;

/// Run the broker in the foreground until SIGINT or SIGTERM.
///
/// With no options it binds tcp://127.0.0.1:5570 (requests) and tcp://127.0.0.1:5571
/// (notifications), keeps its state under the labhub home, creates its keys on first run and
/// prints its public key. Settings: flag > environment > config file > default. At start it
/// also removes the temporary homes and segments that killed `labhub demo` runs left.
#[derive(Debug, clap::Args)]
pub struct HubArgs {
    /// The labhub home (keys, audit log, allow list) [env: LABHUB_HOME] [default: <data dir>/labhub].
    #[arg(long, value_name = "DIR", value_parser = args::path)]
    home: Option<PathBuf>,
    /// A TOML config file [env: LABHUB_BROKER_CONFIG] [default: <home>/broker.toml if present].
    #[arg(long, value_name = "FILE", value_parser = args::path)]
    config: Option<PathBuf>,
    /// The ROUTER endpoint to bind, tcp://HOST:PORT (PORT may be *) or ipc://PATH [env: LABHUB_BROKER_ENDPOINT].
    #[arg(long, value_name = "ENDPOINT", value_parser = args::bind_endpoint)]
    endpoint: Option<String>,
    /// The notification PUB endpoint to bind, as --endpoint [env: LABHUB_BROKER_NOTIFY_ENDPOINT].
    #[arg(long, value_name = "ENDPOINT", value_parser = args::bind_endpoint)]
    notify_endpoint: Option<String>,
    /// How often clients must send heartbeats, in ms, 10 to 3600000 (an hour) [env: LABHUB_HEARTBEAT_INTERVAL_MS].
    #[arg(long, value_name = "MS", value_parser = args::integer(10u64..=3_600_000))]
    heartbeat_interval_ms: Option<u64>,
    /// Heartbeat intervals a client may miss before it is declared gone, 1 to 1000 [env: LABHUB_MAX_MISSED_HEARTBEATS].
    #[arg(long, value_name = "N", value_parser = args::integer(1u32..=1000))]
    max_missed_heartbeats: Option<u32>,
    /// The allow list of client public keys [env: LABHUB_ALLOW_LIST] [default: <home>/allowed_clients if present].
    #[arg(long, value_name = "FILE", value_parser = args::path)]
    allow_list: Option<PathBuf>,
    /// Admit any CURVE client that knows the broker's public key [env: LABHUB_ALLOW_ANY_CLIENT].
    #[arg(long)]
    allow_any_client: bool,
    /// A file (mode 0600) holding the password of the broker's secret key [env: LABHUB_BROKER_SECRET_FILE].
    /// The password may also come from LABHUB_BROKER_SECRET, or a prompt on a terminal.
    #[arg(long, value_name = "FILE", value_parser = args::path)]
    secret_file: Option<PathBuf>,
    /// The JSON-lines audit log [env: LABHUB_AUDIT_LOG] [default: <home>/audit.jsonl].
    #[arg(long, value_name = "FILE", value_parser = args::path)]
    audit_log: Option<PathBuf>,
    /// Log level on stderr: off, error, warn, info, debug, trace.
    #[arg(long, value_name = "LEVEL", default_value = "info", value_parser = args::log_level)]
    log_level: LevelFilter,
    /// Serve metrics on IP:PORT: Prometheus text at /metrics, the live monitor at /, JSON at
    /// /api/sample (for `labhub top`). Without a value: 127.0.0.1:5572. Any address but a
    /// loopback one needs a token: generated and stored in <home>/metrics.token, or --metrics-token-file.
    #[arg(long, value_name = "IP:PORT", num_args = 0..=1,
          default_missing_value = metrics::DEFAULT_ADDRESS,
          value_parser = args::socket_address(0..=65535))]
    metrics: Option<SocketAddr>,
    /// A file (mode 0600) holding the metrics token to require (at least 16 characters), on any address.
    #[arg(long, value_name = "FILE", value_parser = args::path, requires = "metrics")]
    metrics_token_file: Option<PathBuf>,
    /// Print the ready line as JSON ({"endpoint", "notify_endpoint", "public_key", "grant_socket", and with
    /// --metrics "metrics" and "metrics_token_file"}).
    #[arg(long)]
    json: bool,
}

/// Resolves the configuration, then runs the broker.
pub fn run(args: HubArgs) -> anyhow::Result<ExitCode> {
    let flags = ConfigLayer {
        endpoint: args.endpoint,
        notify_endpoint: args.notify_endpoint,
        heartbeat_interval_ms: args.heartbeat_interval_ms,
        max_missed_heartbeats: args.max_missed_heartbeats,
        allow_list: args.allow_list,
        allow_any_client: args.allow_any_client.then_some(true),
        secret_file: args.secret_file,
        audit_log: args.audit_log,
        ..ConfigLayer::default()
    };
    let env = |k: &str| std::env::var(k).ok();
    let mut config = BrokerConfig::resolve(flags, args.home, args.config, &env)?;
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        config.prompt = Some(std::sync::Arc::new(|question: &str| {
            rpassword::prompt_password(question).map(zeroize::Zeroizing::new)
        }));
    }
    config.metrics = args.metrics.map(|address| {
        let m = MetricsConfig::new(address);
        match args.metrics_token_file {
            Some(file) => m.token_file(file),
            None => m,
        }
    });
    let mut log = LogConfig::new(Sink::Console);
    log.level = args.log_level;
    let json = args.json;
    let home = config.home.clone();
    broker::run_foreground(config, log, |info| {
        // Before the ready line, so whoever waits for it finds the leftovers gone.
        crate::demo_home::reap_dead_demos();
        // The broker keeps serving even if nobody reads its start banner (`labhub hub | head`),
        // so a closed stdout is ignored here rather than a panic or an exit.
        if json {
            let mut ready = serde_json::json!({
                "endpoint": info.endpoint,
                "notify_endpoint": info.notify_endpoint,
                "public_key": info.public_key.to_z85(),
                "grant_socket": info.grant_socket,
            });
            if let Some(m) = &info.metrics {
                // Never the token itself: stdout may go to a log.
                ready["metrics"] = m.address.to_string().into();
                ready["metrics_token_file"] = m
                    .token_file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .into();
            }
            let _ = crate::common::out(ready);
        } else {
            let _ = crate::common::out(format_args!(
                "labhub broker listening on {}\nnotifications on {}\ngrants on {}\npublic key: {}\nhome: {}",
                info.endpoint,
                info.notify_endpoint,
                info.grant_socket.display(),
                info.public_key,
                home.display()
            ));
            if let Some(m) = &info.metrics {
                let _ = crate::common::out(metrics_banner(m));
            }
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The lines that tell where the metrics are. The token is shown only on a terminal, in the
/// monitor's address (its fragment, which browsers never send on); otherwise only its file.
fn metrics_banner(m: &MetricsInfo) -> String {
    let mut text = format!("metrics on http://{}/metrics", m.address);
    match (&m.token, &m.token_file) {
        (None, _) => text += &format!("\nmonitor on {}", m.monitor_url()),
        (Some(_), file) if std::io::stdout().is_terminal() => {
            text += &format!("\nmonitor on {}", m.monitor_url());
            if let Some(file) = file {
                text += &format!(
                    "\ntoken (Authorization: Bearer) stored in {}",
                    file.display()
                );
            }
        }
        (Some(_), Some(file)) => {
            text += &format!(
                "\nmonitor on http://{}/#token=<the token in {}>",
                m.address,
                file.display()
            );
        }
        (Some(_), None) => {
            text += &format!(
                "\nmonitor on http://{}/#token=<the token of --metrics-token-file>",
                m.address
            );
        }
    }
    text
}
