//! The broker process: a CURVE ROUTER for requests, a CURVE PUB for notifications, a ZAP
//! handler admitting the allowed client keys, and one thread that owns both sockets and the
//! [`Registry`].
//!
//! [`Broker::start`] does everything that can fail (home directory, keys, allow list, audit
//! log, binding) before the first request is read; [`Broker::run`] then serves until the stop
//! flag is set. The loop never panics on input: every message is decoded by
//! [`protocol::decode_request`], answered, and the next one read.
#![deny(unsafe_code)]

use std::collections::HashSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use labhub_zmq::{
    Context, CurveSecretKey, Flags, Message, PollEvents, Socket, SocketType, ZapDecision,
    ZapHandler, ZmqError, poll,
};
use zeroize::Zeroizing;

use super::audit::{AuditError, AuditEvent, AuditLog, Refusal, RefusalTally};
use super::config::{BrokerConfig, ConfigError};
use super::grants::{GrantService, GrantSocketError};
use super::metrics::{Metrics, MetricsError, MetricsInfo};
use super::perimeter::{Perimeter, PerimeterStats};
use super::registry::{Effect, Origin, Registry};
use super::segments::{self, Removal};
use crate::keys::{self, KeyError, KeyPair, PublicKey};
use crate::protocol::{
    self, ChannelKind, ChannelName, ClientId, CurveKey, ErrorCode, MAX_ADMITTED_KEYS, Reply,
    Request, Role, ShmName,
};

/// The most frames kept of one message; the rest are read and discarded.
const MAX_FRAMES: usize = 8;
/// Complete requests libzmq queues per connection before it stops reading from it.
pub const REQUEST_QUEUE: i32 = 64;
/// Replies libzmq queues per connection whose peer does not read them; more are dropped.
pub const REPLY_QUEUE: i32 = 64;
/// Notifications libzmq queues per subscriber that does not read them; more are dropped for
/// that subscriber (its `seq` shows the gap). Every notification's body is shared by all
/// subscribers' queues; each queued message costs a subscriber four 64-byte frame slots.
pub const NOTIFICATION_QUEUE: i32 = 1000;
/// Refused handshakes queued between the ZAP thread and the broker thread; more are counted
/// but not kept.
const REFUSAL_QUEUE: usize = 4096;
/// How often refused handshakes are written to the audit log, one line per source.
pub const REFUSAL_INTERVAL: Duration = Duration::from_secs(2);
/// How often every admitted connection's unanswered bytes are checked (besides on arrival).
const SWEEP: Duration = Duration::from_millis(50);
/// Messages handled per wake-up before the watchdog and the effects get a turn.
const BATCH: usize = 512;
/// How often a deferred segment removal is retried.
const CLEANUP_RETRY: Duration = Duration::from_secs(1);

/// Why the broker could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A key, password or allow-list file was refused.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The audit log could not be opened.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The audit log is not a file the broker may write (another user's).
    #[error("audit log {path} is owned by uid {owner}, not by the broker's user")]
    AuditOwner {
        /// The file.
        path: std::path::PathBuf,
        /// Its owner.
        owner: u32,
    },
    /// A ZeroMQ call failed.
    #[error("{what} failed{}", endpoint.as_ref().map(|e| format!(" for {e}")).unwrap_or_default())]
    Zmq {
        /// What the broker was doing.
        what: &'static str,
        /// The endpoint involved, if any.
        endpoint: Option<String>,
        /// The libzmq error.
        #[source]
        source: ZmqError,
    },
    /// The connection watch (an epoll set) could not be created.
    #[error("cannot watch the broker's connections")]
    Perimeter(#[source] std::io::Error),
    /// Asking for the password failed.
    #[error("cannot read the password")]
    Prompt(#[source] std::io::Error),
    /// The metrics endpoint could not start.
    #[error(transparent)]
    Metrics(#[from] MetricsError),

    /// The grant socket (broker-granted shared memory) could not be set up.
    #[error(transparent)]
    Grant(#[from] GrantSocketError),
}

fn zmq_err(what: &'static str, endpoint: Option<&str>) -> impl FnOnce(ZmqError) -> BrokerError {
    let endpoint = endpoint.map(str::to_owned);
    move |source| BrokerError::Zmq {
        what,
        endpoint,
        source,
    }
}

/// Counters of a running broker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerStats {
    /// Requests answered (including error replies).
    pub replies: u64,
    /// Messages refused by the decoder.
    pub refused: u64,
    /// Replies that could not be sent (peer gone or its queue full).
    pub unsent: u64,
    /// Notifications published.
    pub notifications: u64,
    /// Handshakes refused by ZAP.
    pub refused_handshakes: u64,
    /// Connections of the request socket.
    pub requests: PerimeterStats,
    /// Connections of the notification socket.
    pub subscribers: PerimeterStats,
}

/// A started broker: sockets bound, keys loaded. See the module documentation.
pub struct Broker {
    // Field order is drop order: sockets, then the ZAP thread, then the context.
    router: Socket,
    publisher: Socket,
    _zap: Option<ZapHandler>,
    _context: Context,
    registry: Registry,
    audit: AuditLog,
    keys: KeyPair,
    endpoint: String,
    notify_endpoint: String,
    zap_events: mpsc::Receiver<Refusal>,
    /// The client keys ZAP admits, told to message-channel servers; `None`: any key.
    admitted: Option<Vec<CurveKey>>,
    refusals_dropped: Arc<AtomicU64>,
    refusals: RefusalTally,
    request_perimeter: Perimeter,
    notify_perimeter: Perimeter,
    grants: GrantService,
    open_files_limit: u64,
    seq: u64,
    pending_cleanup: Vec<(ChannelName, ShmName)>,
    effects: Vec<Effect>,
    stats: BrokerStats,
    last_refusal_log: Option<Instant>,
    refused_since_log: u64,
    metrics: Option<Metrics>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("endpoint", &self.endpoint)
            .field("notify_endpoint", &self.notify_endpoint)
            .field("public_key", &self.keys.public)
            .finish_non_exhaustive()
    }
}

/// Where the broker's secret-key password came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PasswordOrigin {
    /// `LABHUB_BROKER_SECRET`.
    Environment,
    /// `--secret-file`.
    SecretFile,
    /// The generated password file beside the key (`keys/broker.password`).
    GeneratedFile,
    /// Typed on the terminal.
    Prompt,
    /// The key file is not encrypted.
    None,
}

fn read_password_file(path: &std::path::Path) -> Result<Zeroizing<String>, KeyError> {
    let text = keys::read_secret_text(path)?;
    let password = Zeroizing::new(text.trim_end_matches(['\n', '\r']).to_owned());
    if password.is_empty() {
        return Err(KeyError::Malformed {
            path: path.to_owned(),
            problem: "the password file is empty".into(),
        });
    }
    Ok(password)
}

/// Loads the broker's key pair from `<home>/keys/broker.{pub,secret}`, creating it on first run.
///
/// The password comes from `LABHUB_BROKER_SECRET`, else the `--secret-file`, else the generated
/// password file of an earlier unattended first run, else the configuration's password prompt
/// (the CLI's terminal prompt). On a first run with
/// none of these and no terminal, a random password is generated and stored in
/// `<home>/keys/broker.password` (mode 0600) so that `labhub hub` works with no configuration;
/// a warning says so, since that file protects the key only as well as its mode does.
pub fn load_or_create_broker_keys(
    config: &BrokerConfig,
) -> Result<(KeyPair, PasswordOrigin), BrokerError> {
    let dir = config.keys_dir();
    keys::ensure_private_dir(&config.home)?;
    keys::ensure_private_dir(&dir)?;
    let base = dir.join("broker");
    let secret = keys::with_suffix(&base, "secret");
    let generated = dir.join("broker.password");
    let ask = |question: &str| -> Result<Zeroizing<String>, BrokerError> {
        match &config.prompt {
            Some(prompt) => prompt(question).map_err(BrokerError::Prompt),
            None => Err(BrokerError::Prompt(std::io::Error::other(
                "no password prompt",
            ))),
        }
    };
    let given = |interactive_prompt: &dyn Fn()
        -> Result<Option<Zeroizing<String>>, BrokerError>|
     -> Result<Option<(Zeroizing<String>, PasswordOrigin)>, BrokerError> {
        if let Some(p) = &config.password {
            return Ok(Some((p.clone(), PasswordOrigin::Environment)));
        }
        if let Some(f) = &config.secret_file {
            return Ok(Some((read_password_file(f)?, PasswordOrigin::SecretFile)));
        }
        if generated.exists() {
            return Ok(Some((
                read_password_file(&generated)?,
                PasswordOrigin::GeneratedFile,
            )));
        }
        if config.prompt.is_some() {
            return Ok(interactive_prompt()?.map(|p| (p, PasswordOrigin::Prompt)));
        }
        Ok(None)
    };
    if secret.exists() {
        if !keys::is_encrypted(&secret)? {
            tracing::warn!(path = %secret.display(), "the broker's secret key is not encrypted");
            return Ok((keys::load_pair(&base, None)?, PasswordOrigin::None));
        }
        let prompt = || {
            ask(&format!(
                "password for the broker key {}: ",
                secret.display()
            ))
            .map(Some)
        };
        let (password, origin) = given(&prompt)?.ok_or_else(|| KeyError::NoPassword {
            path: secret.clone(),
            hint: "set LABHUB_BROKER_SECRET, pass --secret-file, or run on a terminal",
        })?;
        return Ok((keys::load_pair(&base, Some(&password))?, origin));
    }
    // First run: create the pair.
    let prompt = || -> Result<Option<Zeroizing<String>>, BrokerError> {
        let first = ask(&format!(
            "new password for the broker key {} (empty: generate one): ",
            secret.display()
        ))?;
        if first.is_empty() {
            return Ok(None);
        }
        let again = ask("repeat the password: ")?;
        if *first != *again {
            return Err(BrokerError::Key(KeyError::Malformed {
                path: secret.clone(),
                problem: "the two passwords typed differ".into(),
            }));
        }
        Ok(Some(first))
    };
    let (password, origin) = match given(&prompt)? {
        Some(p) => p,
        None => {
            let password = keys::random_password();
            if !keys::write_new_file(&generated, password.as_bytes(), 0o600)? {
                // Another broker won the race; use its password.
                (
                    read_password_file(&generated)?,
                    PasswordOrigin::GeneratedFile,
                )
            } else {
                tracing::warn!(
                    password_file = %generated.display(),
                    "no password given for the broker's new secret key: generated one and stored it \
                     beside the key (mode 0600). Anyone who can read that file can use the key; set \
                     LABHUB_BROKER_SECRET or --secret-file and delete it to protect the key properly"
                );
                (password, PasswordOrigin::GeneratedFile)
            }
        }
    };
    let pair = KeyPair::generate();
    match keys::write_pair(&base, &pair, Some(&password)) {
        Ok(()) => Ok((pair, origin)),
        // Another broker created it meanwhile: load that one.
        Err(KeyError::Write { source, .. })
            if source.kind() == std::io::ErrorKind::AlreadyExists =>
        {
            Ok((keys::load_pair(&base, Some(&password))?, origin))
        }
        Err(e) => Err(e.into()),
    }
}

/// The keys ZAP admits: the local user's client key plus the allow list.
fn allowed_keys(config: &BrokerConfig) -> Result<HashSet<PublicKey>, BrokerError> {
    let mut allowed = HashSet::new();
    allowed.insert(keys::local_client_key(&config.keys_dir())?.public);
    if let Some(path) = &config.allow_list
        && (config.allow_list_required || path.exists())
    {
        allowed.extend(keys::read_allow_list(path)?);
    }
    Ok(allowed)
}

/// The admitted keys as `register` replies list them (sorted), or `None` when any key is
/// admitted; refuses more keys than one reply can carry.
fn admitted_list(
    config: &BrokerConfig,
    allowed: &HashSet<PublicKey>,
) -> Result<Option<Vec<CurveKey>>, BrokerError> {
    if config.allow_any_client {
        return Ok(None);
    }
    if allowed.len() > MAX_ADMITTED_KEYS {
        return Err(BrokerError::Key(KeyError::Malformed {
            path: config.allow_list.clone().unwrap_or_default(),
            problem: format!(
                "{} admitted keys, at most {MAX_ADMITTED_KEYS} fit the replies that tell \
                 message-channel servers whom to admit",
                allowed.len()
            ),
        }));
    }
    let mut keys: Vec<CurveKey> = allowed
        .iter()
        .map(|k| CurveKey::from_bytes(*k.as_bytes()))
        .collect();
    keys.sort_unstable();
    Ok(Some(keys))
}

/// Raises the soft open-file limit to the hard one: every connection, pending or admitted,
/// holds a descriptor, and the common default soft limit of 1024 is reached by a few
/// thousand idle connections. Returns the soft limit in force.
fn raise_open_file_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// The audit log holds who was admitted and refused: it must be the broker's own and private.
/// An existing log open to group or others is made private (mode 0600) with a warning, since
/// its lines since then may have been altered by others; one owned by another user is refused.
fn secure_audit_log(path: &std::path::Path) -> Result<(), BrokerError> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    let me = crate::keys::trust::current_uid();
    if meta.uid() != me {
        return Err(BrokerError::AuditOwner {
            path: path.to_owned(),
            owner: meta.uid(),
        });
    }
    if meta.mode() & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:04o}", meta.mode() & 0o7777),
            "the audit log was open to group or others: set to 0600; lines written before may \
             have been altered"
        );
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
            |source| {
                BrokerError::Audit(AuditError::Open {
                    path: path.to_owned(),
                    source,
                })
            },
        )?;
    }
    Ok(())
}

impl Broker {
    /// Prepares everything and binds both sockets; fails before serving anything.
    pub fn start(config: BrokerConfig) -> Result<Self, BrokerError> {
        let open_files_limit = raise_open_file_limit();
        let (keys, origin) = load_or_create_broker_keys(&config)?;
        tracing::debug!(?origin, "broker key loaded");
        let allowed = allowed_keys(&config)?;
        let admitted = admitted_list(&config, &allowed)?;
        let owner = keys::local_client_key(&config.keys_dir())?.public;
        secure_audit_log(&config.audit_log)?;
        let mut audit = AuditLog::open(
            &config.audit_log,
            config.audit_max_bytes,
            config.audit_backups,
        )?;

        if config.reap_stale_segments {
            for (name, outcome) in segments::reap_stale() {
                if outcome == Removal::Removed || matches!(outcome, Removal::Failed(_)) {
                    audit.record(&AuditEvent::StaleSegmentReaped {
                        shm_name: name,
                        outcome: outcome.describe(),
                    });
                }
            }
        }

        let context = Context::new().map_err(zmq_err("creating the ZeroMQ context", None))?;
        let (zap_tx, zap_events) = mpsc::sync_channel(REFUSAL_QUEUE);
        let refusals_dropped = Arc::new(AtomicU64::new(0));
        let dropped = Arc::clone(&refusals_dropped);
        let allow_any = config.allow_any_client;
        let zap = context
            .start_zap_handler(move |req| {
                let Some(key) = req.curve_public_key() else {
                    return ZapDecision::deny("CURVE is required");
                };
                let public = PublicKey::from_bytes(*key.as_bytes());
                if allow_any || allowed.contains(&public) {
                    ZapDecision::allow(public.to_z85())
                } else {
                    let refusal = Refusal {
                        address: req.address.clone(),
                        mechanism: req.mechanism.clone(),
                        key: Some(public.to_z85()),
                    };
                    if zap_tx.try_send(refusal).is_err() {
                        dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    ZapDecision::deny("client key not allowed")
                }
            })
            .map_err(zmq_err("starting the ZAP handler", None))?;

        let secret = CurveSecretKey::from_bytes(keys.secret_bytes()).map_err(|e| {
            BrokerError::Key(KeyError::Malformed {
                path: config.keys_dir().join("broker.secret"),
                problem: e.to_string(),
            })
        })?;
        let limits = config.perimeter;
        let server_socket = |kind,
                             what,
                             endpoint: &str,
                             (rcvhwm, sndhwm): (i32, i32)|
         -> Result<(Socket, String), BrokerError> {
            let mut s = context
                .socket(kind)
                .map_err(zmq_err("creating a socket", None))?;
            let setup = |s: &mut Socket| -> Result<(), ZmqError> {
                s.set_curve_server_keys(&secret)?;
                s.set_zap_domain("labhub")?;
                s.set_maxmsgsize(Some(protocol::MAX_MESSAGE_BYTES as u64))?;
                s.set_sndhwm(sndhwm)?;
                s.set_rcvhwm(rcvhwm)?;
                s.set_handshake_ivl(limits.handshake_timeout)?;
                s.enable_monitor()?;
                Ok(())
            };
            setup(&mut s).map_err(zmq_err("setting socket options", Some(endpoint)))?;
            s.bind(endpoint).map_err(zmq_err(what, Some(endpoint)))?;
            let bound = s
                .last_endpoint()
                .map_err(zmq_err("reading the bound endpoint", Some(endpoint)))?;
            Ok((s, bound))
        };
        let (router, endpoint) = server_socket(
            SocketType::Router,
            "binding the request socket",
            &config.endpoint,
            (REQUEST_QUEUE, REPLY_QUEUE),
        )?;
        let (publisher, notify_endpoint) = server_socket(
            SocketType::Pub,
            "binding the notification socket",
            &config.notify_endpoint,
            (REQUEST_QUEUE, NOTIFICATION_QUEUE),
        )?;
        let perimeter = |label| Perimeter::new(label, limits).map_err(BrokerError::Perimeter);
        let request_perimeter = perimeter("requests")?;
        let notify_perimeter = perimeter("notifications")?;
        let metrics = config
            .metrics
            .as_ref()
            .map(|m| Metrics::start(m, &config.home))
            .transpose()?;
        let grants = GrantService::bind(&config, owner)?;
        audit.record(&AuditEvent::BrokerStarted {
            endpoint: endpoint.clone(),
            notify_endpoint: notify_endpoint.clone(),
            public_key: keys.public.to_z85(),
        });
        audit.flush();
        Ok(Self {
            router,
            publisher,
            _zap: Some(zap),
            _context: context,
            registry: Registry::new(config.registry.clone()),
            audit,
            keys,
            endpoint,
            notify_endpoint,
            zap_events,
            admitted,
            refusals_dropped,
            refusals: RefusalTally::new(REFUSAL_INTERVAL, Instant::now()),
            request_perimeter,
            notify_perimeter,
            grants,
            open_files_limit,
            seq: 0,
            pending_cleanup: Vec::new(),
            effects: Vec::new(),
            stats: BrokerStats::default(),
            last_refusal_log: None,
            refused_since_log: 0,
            metrics,
        })
    }

    /// The broker's public key.
    pub fn public_key(&self) -> PublicKey {
        self.keys.public
    }

    /// The ROUTER endpoint actually bound (a `*` port resolved).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The PUB endpoint actually bound.
    pub fn notify_endpoint(&self) -> &str {
        &self.notify_endpoint
    }

    /// The registry (read-only).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The metrics endpoint, when the broker serves one.
    pub fn metrics(&self) -> Option<&MetricsInfo> {
        self.metrics.as_ref().map(Metrics::info)
    }

    /// The grant socket's path (broker-granted shared memory).
    pub fn grant_socket(&self) -> &std::path::Path {
        self.grants.path()
    }

    /// The grant service (read-only): counters, the segments held.
    pub fn grants(&self) -> &GrantService {
        &self.grants
    }

    /// Counters so far.
    pub fn stats(&self) -> BrokerStats {
        BrokerStats {
            refused_handshakes: self.refusals.total()
                + self.refusals_dropped.load(Ordering::Relaxed),
            requests: self.request_perimeter.stats(),
            subscribers: self.notify_perimeter.stats(),
            ..self.stats
        }
    }

    /// The broker's own state, as a `status` reply carries it.
    pub fn status(&self) -> protocol::BrokerStatus {
        let stats = self.stats();
        let audit = self.audit.health();
        let connections = |p: PerimeterStats| protocol::ConnectionStatus {
            pending: p.pending as u64,
            authenticated: p.authenticated as u64,
            accepted: p.accepted,
            evicted: p.evicted,
            cut: p.cut,
        };
        protocol::BrokerStatus {
            audit: protocol::AuditStatus {
                path: audit.path.display().to_string(),
                ok: audit.error.is_none(),
                error: audit.error,
                write_errors: audit.write_errors,
                lines_lost: audit.lines_lost,
                lines_pending: audit.lines_pending as u64,
            },
            requests: connections(stats.requests),
            notifications: connections(stats.subscribers),
            refused_handshakes: stats.refused_handshakes,
            replies: stats.replies,
            refused_messages: stats.refused,
            notifications_published: stats.notifications,
            open_files_limit: self.open_files_limit,
        }
    }

    /// Serves until `stop` is set, then flushes the audit log.
    ///
    /// Nothing a peer sends and no failure to write the audit log ends it; it returns an error
    /// only when ZeroMQ itself fails.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(), BrokerError> {
        let interval = self.registry.config().heartbeat_interval;
        let tick = (interval / 4).clamp(Duration::from_millis(5), Duration::from_millis(100));
        let mut next_tick = Instant::now() + tick;
        let mut next_cleanup = Instant::now() + CLEANUP_RETRY;
        let mut next_sweep = Instant::now() + SWEEP;
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let wake = next_tick.min(next_sweep);
            let wait = wake.saturating_duration_since(now);
            let (readable, monitors, activity, granting) = {
                let mut items = vec![self.router.poll_item(PollEvents::IN)];
                for s in [&self.router, &self.publisher] {
                    if let Some(m) = s.monitor_socket() {
                        items.push(m.poll_item(PollEvents::IN));
                    }
                }
                items.push(self.request_perimeter.poll_item());
                items.push(self.notify_perimeter.poll_item());
                let n = items.len();
                items.extend(self.grants.poll_items());
                match poll(&mut items, Some(wait)) {
                    Ok(_) => (
                        items[0].is_readable(),
                        items[1..n - 2].iter().any(|i| i.is_readable()),
                        items[n - 2..n].iter().any(|i| i.is_readable()),
                        items[n..]
                            .iter()
                            .map(|i| i.is_readable())
                            .collect::<Vec<_>>(),
                    ),
                    Err(e) if e.is_term() => break,
                    Err(e) => return Err(zmq_err("polling", None)(e)),
                }
            };
            if granting.iter().any(|&r| r) {
                self.grants.serve(
                    Instant::now(),
                    &granting,
                    &mut self.registry,
                    &mut self.effects,
                );
            }
            if monitors {
                self.read_monitor_events();
            }
            if activity {
                self.request_perimeter.on_activity();
                self.notify_perimeter.on_activity();
            }
            if readable {
                for _ in 0..BATCH {
                    match self.recv_bounded() {
                        Ok(Some(frames)) => self.handle_message(frames),
                        Ok(None) => break,
                        Err(e) if e.is_term() => return self.finish(),
                        Err(e) => {
                            tracing::warn!(error = %e, "receiving a request failed");
                            break;
                        }
                    }
                }
            }
            let now = Instant::now();
            if now >= next_sweep {
                self.request_perimeter.sweep();
                self.notify_perimeter.sweep();
                next_sweep = now + SWEEP;
            }
            if now >= next_tick {
                self.registry.tick(now, &mut self.effects);
                self.grants.sweep(now);
                next_tick = now + tick;
            }
            if self.metrics.is_some() {
                let stats = self.stats();
                if let Some(m) = &mut self.metrics {
                    m.tick(now, &self.registry, stats, || self.grants.held_segments());
                }
            }
            if now >= next_cleanup {
                self.retry_cleanup();
                next_cleanup = now + CLEANUP_RETRY;
            }
            self.apply_effects();
            self.audit_refusals(now, false);
            self.audit.flush();
        }
        self.finish()
    }

    fn read_monitor_events(&mut self) {
        for (socket, perimeter) in [
            (&self.router, &mut self.request_perimeter),
            (&self.publisher, &mut self.notify_perimeter),
        ] {
            // Bounded per wake-up, so a connection flood cannot starve the requests.
            for _ in 0..4 * BATCH {
                match socket.recv_monitor_event(Flags::DONTWAIT) {
                    Ok(event) => perimeter.on_event(&event),
                    Err(e) if e.is_again() => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading a monitor event failed");
                        break;
                    }
                }
            }
        }
    }

    /// Moves refusals from the ZAP thread into the tally, and writes the tally's lines once
    /// per interval (or now, with `force`).
    fn audit_refusals(&mut self, now: Instant, force: bool) {
        while let Ok(refusal) = self.zap_events.try_recv() {
            self.refusals.add(refusal);
        }
        for line in self.refusals.drain(now, force) {
            tracing::info!(?line, "connections refused by ZAP");
            self.audit.record(&line);
        }
    }

    fn finish(&mut self) -> Result<(), BrokerError> {
        self.apply_effects();
        self.audit_refusals(Instant::now(), true);
        self.audit.record(&AuditEvent::BrokerStopped);
        self.audit.flush();
        Ok(())
    }

    /// Reads one message without blocking, keeping at most [`MAX_FRAMES`] frames. Returns the
    /// kept frames and how many were discarded.
    fn recv_bounded(&mut self) -> Result<Option<(Vec<Message>, usize)>, ZmqError> {
        let first = match self.router.recv(Flags::DONTWAIT) {
            Ok(m) => m,
            Err(e) if e.is_again() => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut more = first.more();
        let mut frames = vec![first];
        let mut discarded = 0;
        while more {
            // The rest of a multipart message is already queued: this never blocks.
            let m = self.router.recv(Flags::NONE)?;
            more = m.more();
            if frames.len() < MAX_FRAMES {
                frames.push(m);
            } else {
                discarded += 1;
            }
        }
        Ok(Some((frames, discarded)))
    }

    fn handle_message(&mut self, (frames, discarded): (Vec<Message>, usize)) {
        let Some((identity, rest)) = frames.split_first() else {
            return;
        };
        let Some(first) = rest.first() else {
            // A ROUTER always delivers at least one frame after the identity.
            self.note_refused("empty message");
            return;
        };
        let key = first.user_id();
        let body: Vec<&[u8]> = rest.iter().map(Message::as_bytes).collect();
        let decoded = protocol::decode_request(&body);
        let reply = if discarded > 0 {
            self.note_refused("too many frames");
            let after_delimiter = if body.first().is_some_and(|f| f.is_empty()) {
                &body[1..]
            } else {
                &body[..]
            };
            Reply::error(
                protocol::request_id_hint(after_delimiter),
                ErrorCode::BadFrames,
                format!(
                    "expected 4 frames (tag, version, type, body) after the envelope, found {}",
                    rest.len() + discarded
                ),
            )
        } else {
            match &decoded.outcome {
                Ok(protocol::Request::Status(r)) => {
                    let mut reply = Reply::ok(r.request_id);
                    reply.broker = Some(self.status());
                    reply
                }
                Ok(protocol::Request::Grant(g)) => self.grant(key.as_deref(), g),
                Ok(protocol::Request::Register(r))
                    if r.channel.sharing == Some(protocol::Sharing::Memfd)
                        && !self
                            .grants
                            .has_staged(&r.client, &r.channel.name, r.channel.size) =>
                {
                    Reply::error(
                        Some(r.request_id),
                        ErrorCode::NoSegment,
                        format!(
                            "channel {} is shared by memfd: hand its segment to the broker on the grant socket first (produce ticket)",
                            r.channel.name
                        ),
                    )
                }
                Ok(request) => {
                    if let protocol::Request::Register(r) = request {
                        self.expire_if_ended(&r.channel.name, &r.client);
                    }
                    let now = Instant::now();
                    let reply = self.registry.handle(
                        now,
                        Origin {
                            key: key.as_deref(),
                        },
                        request,
                        &mut self.effects,
                    );
                    if let Some(m) = &mut self.metrics {
                        m.observe(now, request, &reply);
                    }
                    if let protocol::Request::Register(r) = request
                        && reply.is_ok()
                        && r.channel.sharing == Some(protocol::Sharing::Memfd)
                    {
                        self.grants.commit(
                            &r.client,
                            &r.channel.name,
                            &mut self.registry,
                            &mut self.effects,
                        );
                    }
                    self.with_admission(request, reply)
                }
                Err(rejected) => {
                    self.note_refused(&rejected.error.to_string());
                    Reply::error(
                        rejected.request_id,
                        rejected.error.code(),
                        rejected.error.to_string(),
                    )
                }
            }
        };
        let mut out: Vec<Vec<u8>> = Vec::with_capacity(6);
        out.push(identity.to_vec());
        out.extend(protocol::encode_reply(&reply, decoded.delimiter));
        self.stats.replies += 1;
        if let Err(e) = self.router.send_multipart(out, Flags::DONTWAIT) {
            // The peer is gone or not reading: drop the reply, keep serving everyone else.
            self.stats.unsent += 1;
            tracing::debug!(error = %e, "reply not sent");
        }
    }

    /// A message channel's server admits the keys the broker admits: its registration's reply
    /// says which.
    fn with_admission(&self, request: &Request, mut reply: Reply) -> Reply {
        if let Request::Register(r) = request
            && r.channel.kind != ChannelKind::Shm
            && reply.is_ok()
        {
            match &self.admitted {
                Some(keys) => reply.admitted_keys = Some(keys.clone()),
                None => reply.any_key_admitted = true,
            }
        }
        reply
    }

    /// Expires the client producing `name` now, rather than at its heartbeat timeout, if its
    /// process is known to have ended: another client asking for the channel is most often
    /// its producer restarted, which then takes it over at once.
    fn expire_if_ended(&mut self, name: &ChannelName, asking: &ClientId) {
        let Some(holder) = self
            .registry
            .live_producer_of(name)
            .filter(|p| *p != asking)
            .cloned()
        else {
            return;
        };
        if self.grants.client_process_gone(&holder) {
            tracing::info!(channel = %name, client = %holder, "the producer's process has ended: its client expires now");
            self.registry.expire_ended(&holder, &mut self.effects);
            self.grants.forget_client(&holder);
        }
    }

    /// `grant`: the access list, then the registry (channel state, client admission), then a
    /// ticket.
    fn grant(&mut self, key: Option<&str>, g: &protocol::GrantRequest) -> Reply {
        let refused = |effects: &mut Vec<Effect>, code: ErrorCode, message: String| {
            effects.push(Effect::Audit(AuditEvent::GrantRefused {
                channel: g.name.clone(),
                client: g.client.clone(),
                key: key.map(str::to_owned),
                role: g.role,
                code: code.as_str(),
            }));
            Reply::error(Some(g.request_id), code, message)
        };
        let Some(key) = key.filter(|_| self.grants.allows_key(key, &g.name, g.role)) else {
            let message = format!(
                "the access list does not let this key {} channel {}",
                g.role.as_str(),
                g.name
            );
            return refused(&mut self.effects, ErrorCode::AccessDenied, message);
        };
        if g.role == Role::Produce {
            self.expire_if_ended(&g.name, &g.client);
        }
        let now = Instant::now();
        let mut reply = self.registry.handle(
            now,
            Origin { key: Some(key) },
            &protocol::Request::Grant(g.clone()),
            &mut self.effects,
        );
        if !reply.is_ok() {
            return refused(&mut self.effects, reply.error_code, reply.message);
        }
        match self.grants.issue(now, key, g) {
            Ok(ticket) => {
                self.effects.push(Effect::Audit(AuditEvent::GrantIssued {
                    channel: g.name.clone(),
                    client: g.client.clone(),
                    key: key.to_owned(),
                    role: g.role,
                }));
                reply.grant = Some(ticket);
                reply
            }
            Err((code, message)) => refused(&mut self.effects, code, message),
        }
    }

    /// Counts a refused message; logs at most one summary per second so a stream of garbage
    /// cannot flood the log.
    fn note_refused(&mut self, why: &str) {
        self.stats.refused += 1;
        self.refused_since_log += 1;
        let now = Instant::now();
        if self
            .last_refusal_log
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            tracing::warn!(
                refused = self.refused_since_log,
                last_reason = why,
                "refused malformed messages"
            );
            self.last_refusal_log = Some(now);
            self.refused_since_log = 0;
        }
    }

    fn apply_effects(&mut self) {
        let effects = std::mem::take(&mut self.effects);
        for effect in effects {
            match effect {
                Effect::Audit(event) => self.audit.record(&event),
                Effect::Notify(n) => {
                    let frames = protocol::encode_notification(self.seq, &n);
                    self.seq += 1;
                    self.stats.notifications += 1;
                    tracing::info!(kind = n.type_name(), ?n, "notification");
                    if let Err(e) = self.publisher.send_multipart(frames, Flags::DONTWAIT) {
                        tracing::warn!(error = %e, "notification not published");
                    }
                }
                Effect::ReleaseSegment { channel } => {
                    tracing::info!(%channel, "memfd segment released");
                    self.grants.release(&channel, &mut self.effects);
                }
                Effect::RemoveSegment { channel, shm_name } => {
                    let outcome = segments::remove_if_unheld(&shm_name);
                    tracing::info!(%channel, %shm_name, outcome = %outcome.describe(), "segment cleanup");
                    if matches!(outcome, Removal::Held(_)) {
                        self.pending_cleanup.push((channel, shm_name.clone()));
                    }
                    self.audit.record(&AuditEvent::SegmentRemoved {
                        shm_name,
                        outcome: outcome.describe(),
                    });
                }
            }
        }
    }

    /// Retries deferred removals; a channel registered again meanwhile is no longer ours to
    /// remove.
    fn retry_cleanup(&mut self) {
        let pending = std::mem::take(&mut self.pending_cleanup);
        for (channel, shm_name) in pending {
            if self.registry.channel(channel.as_str()).is_some() {
                continue;
            }
            self.effects
                .push(Effect::RemoveSegment { channel, shm_name });
        }
    }
}

/// Starts a broker with `config`, calls `ready` once it serves, and serves until `stop` is
/// set. This is what `labhub hub` runs.
pub fn run(
    config: BrokerConfig,
    stop: &AtomicBool,
    ready: impl FnOnce(&Broker),
) -> Result<BrokerStats, BrokerError> {
    let mut broker = Broker::start(config)?;
    ready(&broker);
    broker.run(stop)?;
    Ok(broker.stats())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::probe::Probe;
    use std::sync::Arc;

    fn temp_home(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("labhub-server-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn an_in_process_broker_serves_the_local_client_and_ignores_strangers() {
        let home = temp_home("smoke");
        let mut config = BrokerConfig::for_home(&home);
        config.endpoint = "tcp://127.0.0.1:*".into();
        config.notify_endpoint = "tcp://127.0.0.1:*".into();
        config.reap_stale_segments = false;
        let mut broker = Broker::start(config).unwrap();
        let endpoint = broker.endpoint().to_owned();
        let server_key = broker.public_key();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || broker.run(&stop).map(|()| broker.stats()))
        };
        let local = keys::local_client_key(&home.join("keys")).unwrap();
        let mut probe =
            Probe::connect(&endpoint, &server_key, &local, Duration::from_secs(10)).unwrap();
        let reply = probe
            .request(
                "register",
                serde_json::json!({"client": "t", "channel": {"name": "x", "kind": "pubsub", "endpoint": "tcp://127.0.0.1:9"}}),
            )
            .unwrap();
        assert!(reply.is_ok(), "{reply:?}");
        // A message channel's server is told whom to admit: the keys ZAP admits.
        let local_key = protocol::CurveKey::from_bytes(*local.public.as_bytes());
        assert_eq!(reply.admitted_keys, Some(vec![local_key]));
        let reply = probe
            .request("discover", serde_json::json!({"name": "x"}))
            .unwrap();
        assert_eq!(reply.channel.unwrap().producer.as_str(), "t");

        let stranger = KeyPair::generate();
        let mut other = Probe::connect(
            &endpoint,
            &server_key,
            &stranger,
            Duration::from_millis(300),
        )
        .unwrap();
        assert!(matches!(
            other.request("list", serde_json::json!({})),
            Err(crate::broker::probe::ProbeError::Timeout(_))
        ));

        stop.store(true, Ordering::Relaxed);
        let stats = thread.join().unwrap().unwrap();
        assert_eq!(stats.replies, 2);
        let audit = std::fs::read_to_string(home.join("audit.jsonl")).unwrap();
        assert!(audit.contains("\"auth_refused\""), "{audit}");
        assert!(audit.contains("\"broker_stopped\""), "{audit}");
        std::fs::remove_dir_all(&home).unwrap();
    }
}
