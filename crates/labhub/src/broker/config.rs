//! Broker configuration: defaults, a TOML file, environment variables and command-line flags,
//! with the precedence flag > environment > file > default.
//!
//! | setting | flag | environment | file key | default |
//! |---|---|---|---|---|
//! | labhub home | `--home` | `LABHUB_HOME` | — | `<data dir>/labhub` |
//! | config file | `--config` | `LABHUB_BROKER_CONFIG` | — | `<home>/broker.toml` if present |
//! | ROUTER endpoint | `--endpoint` | `LABHUB_BROKER_ENDPOINT` | `endpoint` | `tcp://127.0.0.1:5570` |
//! | PUB endpoint | `--notify-endpoint` | `LABHUB_BROKER_NOTIFY_ENDPOINT` | `notify_endpoint` | `tcp://127.0.0.1:5571` |
//! | heartbeat interval | `--heartbeat-interval-ms` | `LABHUB_HEARTBEAT_INTERVAL_MS` | `heartbeat_interval_ms` | 1000 |
//! | misses allowed | `--max-missed-heartbeats` | `LABHUB_MAX_MISSED_HEARTBEATS` | `max_missed_heartbeats` | 5 |
//! | allow list | `--allow-list` | `LABHUB_ALLOW_LIST` | `allow_list` | `<home>/allowed_clients` if present |
//! | admit any CURVE client | `--allow-any-client` | `LABHUB_ALLOW_ANY_CLIENT` | `allow_any_client` | false |
//! | password file | `--secret-file` | `LABHUB_BROKER_SECRET_FILE` | `secret_file` | none |
//! | password | — | `LABHUB_BROKER_SECRET` | — | none |
//! | audit log | `--audit-log` | `LABHUB_AUDIT_LOG` | `audit_log` | `<home>/audit.jsonl` |
//! | limits | — | — | `max_channels`, `max_clients`, `max_consumers_per_channel` | 10000, 10000, 64 |
//! | reap stale segments at start | — | — | `reap_stale_segments` | true |
//! | audit log rotation | — | — | `audit_max_bytes`, `audit_backups` | 16 MiB, 4 |
//! | pending connections per socket | — | — | `max_pending_connections` | 256 |
//! | handshake time limit | — | — | `handshake_timeout_ms` | 5000 |
//! | unanswered bytes per connection | — | — | `max_unanswered_bytes` | 8 MiB |
//! | grant socket | — | — | `grant_socket` | `<home>/grant.sock` |
//! | grant ticket lifetime | — | — | `grant_ticket_ms` | 5000 |
//! | access list of memfd channels | — | — | `[[access]]` tables | the owner's key only |
//! | this hub's name, peer hubs | — | — | `name`, `[[peer]]` tables | the host name, none |
//!
//! The password is never read from the config file. The config file and the allow list must
//! be trusted files (see [`crate::keys::trust`]).
#![deny(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use zeroize::Zeroizing;

use super::access::{AccessList, AccessRuleText};
use super::perimeter::PerimeterLimits;
use super::registry::RegistryConfig;
use crate::keys::{self, KeyError};

pub use crate::home::{DEFAULT_ENDPOINT, DEFAULT_NOTIFY_ENDPOINT};

/// The grant socket's file name in the labhub home, by default.
pub const DEFAULT_GRANT_SOCKET: &str = "grant.sock";
/// How long a grant ticket stays valid, by default.
pub const DEFAULT_GRANT_TICKET: Duration = Duration::from_secs(5);

/// Why the configuration could not be assembled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No home directory was given and the platform has no data directory.
    #[error("no labhub home: set LABHUB_HOME (the platform reports no data directory)")]
    NoHome,
    /// The config file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML for the broker.
    #[error("config file {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's complaint (names the key and line).
        message: String,
    },
    /// A file's permissions or contents are refused.
    #[error(transparent)]
    File(#[from] KeyError),
    /// A value is out of range or malformed.
    #[error("{origin} {key} = {value:?} is invalid: {problem}")]
    InvalidValue {
        /// Where the value came from (`flag`, `environment`, the config file path).
        origin: String,
        /// The setting's name in that source.
        key: String,
        /// The value.
        value: String,
        /// What is wrong.
        problem: String,
    },
}

/// Asks a person for a password, showing the question; what the broker calls when it needs
/// the password of its secret key and has no other source.
pub type PasswordPrompt =
    std::sync::Arc<dyn Fn(&str) -> std::io::Result<Zeroizing<String>> + Send + Sync>;

/// One source's settings, each optional; later merged by precedence.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigLayer {
    /// ROUTER endpoint to bind.
    pub endpoint: Option<String>,
    /// PUB endpoint to bind.
    pub notify_endpoint: Option<String>,
    /// Heartbeat interval in milliseconds.
    pub heartbeat_interval_ms: Option<u64>,
    /// Intervals a client may miss.
    pub max_missed_heartbeats: Option<u32>,
    /// Allow-list file.
    pub allow_list: Option<PathBuf>,
    /// Admit any client that speaks CURVE with the right server key.
    pub allow_any_client: Option<bool>,
    /// File holding the password of the broker's secret key.
    pub secret_file: Option<PathBuf>,
    /// Audit log file.
    pub audit_log: Option<PathBuf>,
    /// Channel limit.
    pub max_channels: Option<usize>,
    /// Client limit.
    pub max_clients: Option<usize>,
    /// Consumers per channel.
    pub max_consumers_per_channel: Option<usize>,
    /// Unlink stale segments of dead producers at start.
    pub reap_stale_segments: Option<bool>,
    /// Size at which the audit log is rotated.
    pub audit_max_bytes: Option<u64>,
    /// Rotated audit files kept.
    pub audit_backups: Option<u32>,
    /// Most connections in their handshake at once, per socket.
    pub max_pending_connections: Option<usize>,
    /// How long a handshake may take, in milliseconds.
    pub handshake_timeout_ms: Option<u64>,
    /// Bytes an admitted connection may send without taking anything from the broker.
    pub max_unanswered_bytes: Option<u64>,
    /// The Unix socket on which grant tickets are redeemed for memfd segments.
    pub grant_socket: Option<PathBuf>,
    /// How long a grant ticket stays valid, in milliseconds.
    pub grant_ticket_ms: Option<u64>,
    /// Which keys may produce or consume which memfd channels.
    pub access: Option<Vec<AccessRuleText>>,
    /// This hub's name among its peers (default: the host name).
    pub name: Option<String>,
    /// The peer hubs bridges go to and `labhub ls --all` lists (see [`crate::home::peers`]).
    pub peer: Option<Vec<crate::home::PeerText>>,
}

impl ConfigLayer {
    /// `self` where set, else `lower`.
    pub fn over(self, lower: ConfigLayer) -> ConfigLayer {
        ConfigLayer {
            endpoint: self.endpoint.or(lower.endpoint),
            notify_endpoint: self.notify_endpoint.or(lower.notify_endpoint),
            heartbeat_interval_ms: self.heartbeat_interval_ms.or(lower.heartbeat_interval_ms),
            max_missed_heartbeats: self.max_missed_heartbeats.or(lower.max_missed_heartbeats),
            allow_list: self.allow_list.or(lower.allow_list),
            allow_any_client: self.allow_any_client.or(lower.allow_any_client),
            secret_file: self.secret_file.or(lower.secret_file),
            audit_log: self.audit_log.or(lower.audit_log),
            max_channels: self.max_channels.or(lower.max_channels),
            max_clients: self.max_clients.or(lower.max_clients),
            max_consumers_per_channel: self
                .max_consumers_per_channel
                .or(lower.max_consumers_per_channel),
            reap_stale_segments: self.reap_stale_segments.or(lower.reap_stale_segments),
            audit_max_bytes: self.audit_max_bytes.or(lower.audit_max_bytes),
            audit_backups: self.audit_backups.or(lower.audit_backups),
            max_pending_connections: self
                .max_pending_connections
                .or(lower.max_pending_connections),
            handshake_timeout_ms: self.handshake_timeout_ms.or(lower.handshake_timeout_ms),
            max_unanswered_bytes: self.max_unanswered_bytes.or(lower.max_unanswered_bytes),
            grant_socket: self.grant_socket.or(lower.grant_socket),
            grant_ticket_ms: self.grant_ticket_ms.or(lower.grant_ticket_ms),
            access: self.access.or(lower.access),
            name: self.name.or(lower.name),
            peer: self.peer.or(lower.peer),
        }
    }

    /// Reads the `LABHUB_*` variables through `var`.
    pub fn from_env(var: &dyn Fn(&str) -> Option<String>) -> Result<ConfigLayer, ConfigError> {
        fn parse<T: std::str::FromStr>(
            var: &dyn Fn(&str) -> Option<String>,
            key: &str,
        ) -> Result<Option<T>, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            match var(key) {
                None => Ok(None),
                Some(v) => {
                    v.trim()
                        .parse()
                        .map(Some)
                        .map_err(|e: T::Err| ConfigError::InvalidValue {
                            origin: "environment variable".into(),
                            key: key.into(),
                            value: v.clone(),
                            problem: e.to_string(),
                        })
                }
            }
        }
        Ok(ConfigLayer {
            endpoint: var("LABHUB_BROKER_ENDPOINT"),
            notify_endpoint: var("LABHUB_BROKER_NOTIFY_ENDPOINT"),
            heartbeat_interval_ms: parse(var, "LABHUB_HEARTBEAT_INTERVAL_MS")?,
            max_missed_heartbeats: parse(var, "LABHUB_MAX_MISSED_HEARTBEATS")?,
            allow_list: var("LABHUB_ALLOW_LIST").map(PathBuf::from),
            allow_any_client: parse(var, "LABHUB_ALLOW_ANY_CLIENT")?,
            secret_file: var("LABHUB_BROKER_SECRET_FILE").map(PathBuf::from),
            audit_log: var("LABHUB_AUDIT_LOG").map(PathBuf::from),
            max_channels: None,
            max_clients: None,
            max_consumers_per_channel: None,
            reap_stale_segments: None,
            audit_max_bytes: None,
            audit_backups: None,
            max_pending_connections: None,
            handshake_timeout_ms: None,
            max_unanswered_bytes: None,
            grant_socket: None,
            grant_ticket_ms: None,
            access: None,
            name: None,
            peer: None,
        })
    }

    /// Reads a TOML config file, refusing one writable by group or others.
    pub fn from_file(path: &Path) -> Result<ConfigLayer, ConfigError> {
        keys::check_trusted_permissions(path)?;
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })
    }
}

/// The resolved broker configuration.
#[derive(Clone)]
pub struct BrokerConfig {
    /// The labhub home: keys, audit log, allow list.
    pub home: PathBuf,
    /// ROUTER endpoint to bind.
    pub endpoint: String,
    /// PUB endpoint to bind.
    pub notify_endpoint: String,
    /// Registry timing and limits.
    pub registry: RegistryConfig,
    /// The allow list file, if any (a missing default file means "only the local client").
    pub allow_list: Option<PathBuf>,
    /// Whether the allow list must exist (it was named explicitly).
    pub allow_list_required: bool,
    /// Admit every CURVE client that knows the server key.
    pub allow_any_client: bool,
    /// The password of the broker's secret key, from `LABHUB_BROKER_SECRET`.
    pub password: Option<Zeroizing<String>>,
    /// A file holding that password.
    pub secret_file: Option<PathBuf>,
    /// How to ask for the broker key's password when no other source has it (the CLI asks on
    /// the terminal); `None` in programs that must never block on input.
    pub prompt: Option<PasswordPrompt>,
    /// The audit log.
    pub audit_log: PathBuf,
    /// Unlink stale segments of dead producers at start.
    pub reap_stale_segments: bool,
    /// Size at which the audit log is rotated.
    pub audit_max_bytes: u64,
    /// Rotated audit files kept.
    pub audit_backups: u32,
    /// What one network connection may cost.
    pub perimeter: PerimeterLimits,
    /// Serve metrics and the monitor (`--metrics`); none by default.
    pub metrics: Option<super::metrics::MetricsConfig>,
    /// The Unix socket (`SOCK_SEQPACKET`) on which grant tickets are redeemed for the
    /// descriptors of memfd channels; its directory must be trusted.
    pub grant_socket: PathBuf,
    /// How long a grant ticket stays valid.
    pub grant_ticket: Duration,
    /// Which keys may produce or consume which memfd channels (the owner's own key always
    /// may).
    pub access: AccessList,
    /// This hub's name and its peer hubs (checked at start; clients read them from the same
    /// file, see [`crate::home::peers`]).
    pub peers: crate::home::Peers,
}

impl std::fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConfig")
            .field("home", &self.home)
            .field("endpoint", &self.endpoint)
            .field("notify_endpoint", &self.notify_endpoint)
            .field("registry", &self.registry)
            .field("allow_list", &self.allow_list)
            .field("allow_any_client", &self.allow_any_client)
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .field("secret_file", &self.secret_file)
            .field("prompt", &self.prompt.as_ref().map(|_| "<set>"))
            .field("audit_log", &self.audit_log)
            .finish_non_exhaustive()
    }
}

fn check_bind_endpoint(origin: &str, key: &str, value: &str) -> Result<(), ConfigError> {
    let invalid = |problem: &str| ConfigError::InvalidValue {
        origin: origin.into(),
        key: key.into(),
        value: value.into(),
        problem: problem.into(),
    };
    if let Some(addr) = value.strip_prefix("tcp://") {
        let (_, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| invalid("a tcp endpoint needs host:port"))?;
        if port != "*" && port.parse::<u16>().is_err() {
            return Err(invalid("the port must be a number from 0 to 65535 or *"));
        }
        Ok(())
    } else if let Some(path) = value.strip_prefix("ipc://") {
        if path.is_empty() || path.len() > crate::protocol::MAX_IPC_PATH_LEN {
            return Err(invalid("the ipc path must be 1 to 107 bytes"));
        }
        Ok(())
    } else {
        Err(invalid("the broker binds tcp:// or ipc:// endpoints"))
    }
}

impl BrokerConfig {
    /// Defaults for a given home (what `labhub hub` does with no configuration).
    pub fn for_home(home: impl Into<PathBuf>) -> Self {
        let home = home.into();
        Self {
            endpoint: DEFAULT_ENDPOINT.into(),
            notify_endpoint: DEFAULT_NOTIFY_ENDPOINT.into(),
            registry: RegistryConfig::default(),
            allow_list: Some(home.join("allowed_clients")),
            allow_list_required: false,
            allow_any_client: false,
            password: None,
            secret_file: None,
            prompt: None,
            audit_log: home.join("audit.jsonl"),
            reap_stale_segments: true,
            audit_max_bytes: super::audit::DEFAULT_MAX_BYTES,
            audit_backups: super::audit::DEFAULT_BACKUPS,
            perimeter: PerimeterLimits::default(),
            metrics: None,
            grant_socket: home.join(DEFAULT_GRANT_SOCKET),
            grant_ticket: DEFAULT_GRANT_TICKET,
            access: AccessList::default(),
            peers: crate::home::check_peers(None, &[]).unwrap_or_else(|_| crate::home::Peers {
                own_name: "localhost".into(),
                peers: Vec::new(),
            }),
            home,
        }
    }

    /// Where the broker's and the local client's keys live.
    pub fn keys_dir(&self) -> PathBuf {
        self.home.join("keys")
    }

    /// Assembles the configuration: `flags` over the environment (read through `var`) over
    /// the config file over the defaults.
    pub fn resolve(
        flags: ConfigLayer,
        home_flag: Option<PathBuf>,
        config_flag: Option<PathBuf>,
        var: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let home = match home_flag {
            Some(h) => h,
            None => crate::home::default_home(var).map_err(|_| ConfigError::NoHome)?,
        };
        let env = ConfigLayer::from_env(var)?;
        let (file, file_origin) =
            match config_flag.or_else(|| var("LABHUB_BROKER_CONFIG").map(PathBuf::from)) {
                Some(path) => (ConfigLayer::from_file(&path)?, path.display().to_string()),
                None => {
                    let path = home.join("broker.toml");
                    if path.exists() {
                        (ConfigLayer::from_file(&path)?, path.display().to_string())
                    } else {
                        (ConfigLayer::default(), String::new())
                    }
                }
            };
        // Validate each layer's values under their own name, so an error says where the bad
        // value came from.
        for (layer, origin) in [
            (&flags, "flag".to_owned()),
            (&env, "environment".to_owned()),
            (&file, file_origin.clone()),
        ] {
            validate_layer(layer, &origin)?;
        }
        let allow_list_named = flags
            .allow_list
            .clone()
            .or(env.allow_list.clone())
            .or(file.allow_list.clone());
        let merged = flags.over(env).over(file);
        let mut config = Self::for_home(home);
        if let Some(v) = merged.endpoint {
            config.endpoint = v;
        }
        if let Some(v) = merged.notify_endpoint {
            config.notify_endpoint = v;
        }
        if let Some(v) = merged.heartbeat_interval_ms {
            config.registry.heartbeat_interval = Duration::from_millis(v);
        }
        if let Some(v) = merged.max_missed_heartbeats {
            config.registry.max_missed_heartbeats = v;
        }
        if let Some(v) = merged.max_channels {
            config.registry.max_channels = v;
        }
        if let Some(v) = merged.max_clients {
            config.registry.max_clients = v;
        }
        if let Some(v) = merged.max_consumers_per_channel {
            config.registry.max_consumers_per_channel = v;
        }
        if let Some(path) = allow_list_named {
            config.allow_list = Some(path);
            config.allow_list_required = true;
        }
        if let Some(v) = merged.allow_any_client {
            config.allow_any_client = v;
        }
        config.secret_file = merged.secret_file;
        if let Some(v) = merged.audit_log {
            config.audit_log = v;
        }
        if let Some(v) = merged.reap_stale_segments {
            config.reap_stale_segments = v;
        }
        if let Some(v) = merged.audit_max_bytes {
            config.audit_max_bytes = v;
        }
        if let Some(v) = merged.audit_backups {
            config.audit_backups = v;
        }
        if let Some(v) = merged.max_pending_connections {
            config.perimeter.max_pending = v;
        }
        if let Some(v) = merged.handshake_timeout_ms {
            config.perimeter.handshake_timeout = Duration::from_millis(v);
        }
        if let Some(v) = merged.max_unanswered_bytes {
            config.perimeter.max_unanswered = v;
        }
        if let Some(v) = merged.grant_socket {
            config.grant_socket = v;
        }
        if let Some(v) = merged.grant_ticket_ms {
            config.grant_ticket = Duration::from_millis(v);
        }
        if let Some(rules) = &merged.access {
            config.access =
                AccessList::from_rules(rules).map_err(|e| ConfigError::InvalidValue {
                    origin: file_origin.clone(),
                    key: e.key,
                    value: e.value,
                    problem: e.problem,
                })?;
        }
        config.peers = crate::home::check_peers(
            merged.name.as_deref(),
            merged.peer.as_deref().unwrap_or_default(),
        )
        .map_err(|problem| ConfigError::InvalidValue {
            origin: file_origin.clone(),
            key: "peer".into(),
            value: String::new(),
            problem,
        })?;
        config.password = var("LABHUB_BROKER_SECRET")
            .filter(|p| !p.is_empty())
            .map(Zeroizing::new);
        Ok(config)
    }
}

fn validate_layer(layer: &ConfigLayer, origin: &str) -> Result<(), ConfigError> {
    let invalid = |key: &str, value: String, problem: &str| ConfigError::InvalidValue {
        origin: origin.into(),
        key: key.into(),
        value,
        problem: problem.into(),
    };
    if let Some(e) = &layer.endpoint {
        check_bind_endpoint(origin, "endpoint", e)?;
    }
    if let Some(e) = &layer.notify_endpoint {
        check_bind_endpoint(origin, "notify_endpoint", e)?;
    }
    if let Some(path) = &layer.grant_socket
        && (path.as_os_str().is_empty()
            || path.as_os_str().len() > crate::protocol::MAX_IPC_PATH_LEN)
    {
        return Err(invalid(
            "grant_socket",
            path.display().to_string(),
            "a Unix socket path is 1 to 107 bytes",
        ));
    }
    if let Some(v) = layer.heartbeat_interval_ms
        && !(10..=3_600_000).contains(&v)
    {
        return Err(invalid(
            "heartbeat_interval_ms",
            v.to_string(),
            "must be from 10 ms to one hour",
        ));
    }
    if let Some(v) = layer.max_missed_heartbeats
        && !(1..=1000).contains(&v)
    {
        return Err(invalid(
            "max_missed_heartbeats",
            v.to_string(),
            "must be from 1 to 1000",
        ));
    }
    let ranges: [(&str, Option<u64>, u64, u64, &str); 6] = [
        (
            "audit_max_bytes",
            layer.audit_max_bytes,
            4096,
            1 << 40,
            "must be from 4096 bytes to 1 TiB",
        ),
        (
            "audit_backups",
            layer.audit_backups.map(u64::from),
            0,
            100,
            "must be from 0 to 100",
        ),
        (
            "max_pending_connections",
            layer.max_pending_connections.map(|v| v as u64),
            1,
            100_000,
            "must be from 1 to 100000",
        ),
        (
            "handshake_timeout_ms",
            layer.handshake_timeout_ms,
            100,
            600_000,
            "must be from 100 ms to 10 minutes",
        ),
        (
            "max_unanswered_bytes",
            layer.max_unanswered_bytes,
            crate::protocol::MAX_MESSAGE_BYTES as u64 * super::server::REQUEST_QUEUE as u64,
            1 << 34,
            "must be from 4 MiB (the request queue of 64 largest requests) to 16 GiB",
        ),
        (
            "grant_ticket_ms",
            layer.grant_ticket_ms,
            100,
            60_000,
            "must be from 100 ms to one minute",
        ),
    ];
    for (key, v, min, max, problem) in ranges {
        if let Some(v) = v
            && !(min..=max).contains(&v)
        {
            return Err(invalid(key, v.to_string(), problem));
        }
    }
    for (key, v) in [
        ("max_channels", layer.max_channels),
        ("max_clients", layer.max_clients),
        ("max_consumers_per_channel", layer.max_consumers_per_channel),
    ] {
        if let Some(v) = v
            && !(1..=1_000_000).contains(&v)
        {
            return Err(invalid(key, v.to_string(), "must be from 1 to 1000000"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::os::unix::fs::PermissionsExt;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn home(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("labhub-config-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn with_nothing_configured_the_defaults_apply() {
        let h = home("defaults");
        let c = BrokerConfig::resolve(
            ConfigLayer::default(),
            None,
            None,
            &env(&[("LABHUB_HOME", h.to_str().unwrap())]),
        )
        .unwrap();
        assert_eq!(c.home, h);
        assert_eq!(c.endpoint, DEFAULT_ENDPOINT);
        assert_eq!(c.registry, RegistryConfig::default());
        assert!(!c.allow_list_required);
        assert_eq!(c.audit_log, h.join("audit.jsonl"));
        std::fs::remove_dir_all(&h).unwrap();
    }

    #[test]
    fn flags_beat_environment_which_beats_the_file() {
        let h = home("precedence");
        std::fs::write(
            h.join("broker.toml"),
            "endpoint = \"tcp://127.0.0.1:1001\"\nnotify_endpoint = \"tcp://127.0.0.1:2001\"\nheartbeat_interval_ms = 300\nmax_missed_heartbeats = 7\n",
        )
        .unwrap();
        let e = env(&[
            ("LABHUB_HOME", h.to_str().unwrap()),
            ("LABHUB_BROKER_ENDPOINT", "tcp://127.0.0.1:1002"),
            ("LABHUB_HEARTBEAT_INTERVAL_MS", "200"),
        ]);
        let flags = ConfigLayer {
            endpoint: Some("tcp://127.0.0.1:1003".into()),
            ..ConfigLayer::default()
        };
        let c = BrokerConfig::resolve(flags, None, None, &e).unwrap();
        assert_eq!(c.endpoint, "tcp://127.0.0.1:1003");
        assert_eq!(c.notify_endpoint, "tcp://127.0.0.1:2001");
        assert_eq!(c.registry.heartbeat_interval, Duration::from_millis(200));
        assert_eq!(c.registry.max_missed_heartbeats, 7);
        std::fs::remove_dir_all(&h).unwrap();
    }

    #[test]
    fn a_bad_value_names_its_source() {
        let h = home("bad");
        let e = env(&[
            ("LABHUB_HOME", h.to_str().unwrap()),
            ("LABHUB_HEARTBEAT_INTERVAL_MS", "soon"),
        ]);
        let err = BrokerConfig::resolve(ConfigLayer::default(), None, None, &e).unwrap_err();
        assert!(
            err.to_string().contains("LABHUB_HEARTBEAT_INTERVAL_MS"),
            "{err}"
        );

        std::fs::write(h.join("broker.toml"), "heartbeat_interval_ms = 1\n").unwrap();
        let e = env(&[("LABHUB_HOME", h.to_str().unwrap())]);
        let err = BrokerConfig::resolve(ConfigLayer::default(), None, None, &e).unwrap_err();
        assert!(err.to_string().contains("broker.toml"), "{err}");
        assert!(err.to_string().contains("heartbeat_interval_ms"), "{err}");

        std::fs::write(h.join("broker.toml"), "hearbeat = 3\n").unwrap();
        let err = BrokerConfig::resolve(ConfigLayer::default(), None, None, &e).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
        assert!(err.to_string().contains("hearbeat"), "{err}");

        let flags = ConfigLayer {
            endpoint: Some("udp://x".into()),
            ..ConfigLayer::default()
        };
        std::fs::remove_file(h.join("broker.toml")).unwrap();
        let err = BrokerConfig::resolve(flags, None, None, &e).unwrap_err();
        assert!(err.to_string().starts_with("flag endpoint"), "{err}");
        std::fs::remove_dir_all(&h).unwrap();
    }

    #[test]
    fn the_hub_name_and_its_peers_come_from_the_file_and_a_bad_peer_is_named() {
        let h = home("peers");
        let key = crate::keys::KeyPair::generate().public.to_z85();
        let peer = |name: &str, endpoint: &str, key: &str| {
            format!(
                "name = \"acq\"\n\n[[peer]]\nname = \"{name}\"\nendpoint = \"{endpoint}\"\npublic_key = \"{key}\"\n"
            )
        };
        std::fs::write(
            h.join("broker.toml"),
            peer("ws", "tcp://10.0.0.7:5570", &key),
        )
        .unwrap();
        let e = env(&[("LABHUB_HOME", h.to_str().unwrap())]);
        let c = BrokerConfig::resolve(ConfigLayer::default(), None, None, &e).unwrap();
        assert_eq!(c.peers.own_name, "acq");
        assert_eq!(c.peers.get("ws").unwrap().endpoint, "tcp://10.0.0.7:5570");
        for (text, needle) in [
            (peer("acq", "tcp://h:1", &key), "own name"),
            (peer("ws", "udp://h:1", &key), "tcp://HOST:PORT"),
            (peer("ws", "tcp://h:1", "not a key"), "public_key"),
            ("[[peer]]\nname = \"ws\"\n".to_owned(), "missing field"),
        ] {
            std::fs::write(h.join("broker.toml"), text).unwrap();
            let err = BrokerConfig::resolve(ConfigLayer::default(), None, None, &e).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains(needle) && text.contains("broker.toml"),
                "{text}"
            );
        }
    }

    #[test]
    fn the_access_list_and_grant_settings_come_from_the_file_and_a_bad_key_is_named() {
        let h = home("access");
        let key = crate::keys::KeyPair::generate().public.to_z85();
        std::fs::write(
            h.join("broker.toml"),
            format!(
                "grant_ticket_ms = 250\ngrant_socket = \"/run/x/grant.sock\"\n\n[[access]]\nchannels = [\"cam*\"]\nconsume = [\"{key}\", \"*\"]\n"
            ),
        )
        .unwrap();
        let e = env(&[("LABHUB_HOME", h.to_str().unwrap())]);
        let c = BrokerConfig::resolve(ConfigLayer::default(), None, None, &e).unwrap();
        assert_eq!(c.grant_ticket, Duration::from_millis(250));
        assert_eq!(c.grant_socket, PathBuf::from("/run/x/grant.sock"));
        assert_eq!(c.access.len(), 1);
        let defaults = BrokerConfig::for_home(&h);
        assert_eq!(defaults.grant_socket, h.join("grant.sock"));
        assert!(defaults.access.is_empty());

        std::fs::write(
            h.join("broker.toml"),
            "[[access]]\nchannels = [\"cam*\"]\nconsume = [\"not a key\"]\n",
        )
        .unwrap();
        let err = BrokerConfig::resolve(ConfigLayer::default(), None, None, &e).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("access[0].consume[0]") && text.contains("broker.toml"),
            "{text}"
        );
        std::fs::write(h.join("broker.toml"), "grant_ticket_ms = 5\n").unwrap();
        let err = BrokerConfig::resolve(ConfigLayer::default(), None, None, &e).unwrap_err();
        assert!(err.to_string().contains("grant_ticket_ms"), "{err}");
        std::fs::remove_dir_all(&h).unwrap();
    }

    #[test]
    fn a_config_file_writable_by_others_is_refused() {
        let h = home("perm");
        let path = h.join("broker.toml");
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = env(&[("LABHUB_HOME", h.to_str().unwrap())]);
        let err = BrokerConfig::resolve(ConfigLayer::default(), None, None, &e).unwrap_err();
        assert!(matches!(err, ConfigError::File(KeyError::Untrusted { .. })));
        std::fs::remove_dir_all(&h).unwrap();
    }
}
