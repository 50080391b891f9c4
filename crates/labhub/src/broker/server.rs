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
use std::io::IsTerminal;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use labhub_zmq::{
    Context, CurveSecretKey, Flags, Message, PollEvents, Socket, SocketType, ZapDecision,
    ZapHandler, ZmqError, poll,
};
use zeroize::Zeroizing;

use super::audit::{AuditError, AuditEvent, AuditLog};
use super::config::{BrokerConfig, ConfigError};
use super::keys::{self, KeyError, KeyPair, PublicKey};
use super::metrics::{Metrics, MetricsError, MetricsInfo};
use super::registry::{Effect, Origin, Registry};
use super::segments::{self, Removal};
use crate::protocol::{self, ChannelName, ErrorCode, Reply, ShmName};

/// The most frames kept of one message; the rest are read and discarded.
const MAX_FRAMES: usize = 8;
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
    /// The audit log failed.
    #[error(transparent)]
    Audit(#[from] AuditError),
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
    /// Reading the password from the terminal failed.
    #[error("cannot read the password from the terminal")]
    Prompt(#[source] std::io::Error),
    /// The metrics endpoint could not start.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
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
pub struct BrokerStats {
    /// Requests answered (including error replies).
    pub replies: u64,
    /// Messages refused by the decoder.
    pub refused: u64,
    /// Replies that could not be sent (peer gone or its queue full).
    pub unsent: u64,
    /// Notifications published.
    pub notifications: u64,
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
    zap_events: mpsc::Receiver<AuditEvent>,
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
/// password file of an earlier unattended first run, else a terminal prompt. On a first run with
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
        if config.interactive && std::io::stdin().is_terminal() {
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
            rpassword::prompt_password(format!(
                "password for the broker key {}: ",
                secret.display()
            ))
            .map(|p| Some(Zeroizing::new(p)))
            .map_err(BrokerError::Prompt)
        };
        let (password, origin) = given(&prompt)?.ok_or_else(|| KeyError::NoPassword {
            path: secret.clone(),
            hint: "set LABHUB_BROKER_SECRET, pass --secret-file, or run on a terminal",
        })?;
        return Ok((keys::load_pair(&base, Some(&password))?, origin));
    }
    // First run: create the pair.
    let prompt = || -> Result<Option<Zeroizing<String>>, BrokerError> {
        let first = Zeroizing::new(
            rpassword::prompt_password(format!(
                "new password for the broker key {} (empty: generate one): ",
                secret.display()
            ))
            .map_err(BrokerError::Prompt)?,
        );
        if first.is_empty() {
            return Ok(None);
        }
        let again = Zeroizing::new(
            rpassword::prompt_password("repeat the password: ").map_err(BrokerError::Prompt)?,
        );
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

impl Broker {
    /// Prepares everything and binds both sockets; fails before serving anything.
    pub fn start(config: BrokerConfig) -> Result<Self, BrokerError> {
        let (keys, origin) = load_or_create_broker_keys(&config)?;
        tracing::debug!(?origin, "broker key loaded");
        let allowed = allowed_keys(&config)?;
        let mut audit = AuditLog::open(&config.audit_log)?;

        if config.reap_stale_segments {
            for (name, outcome) in segments::reap_stale() {
                if outcome == Removal::Removed || matches!(outcome, Removal::Failed(_)) {
                    audit.record(&AuditEvent::StaleSegmentReaped {
                        shm_name: name,
                        outcome: outcome.describe(),
                    })?;
                }
            }
        }

        let context = Context::new().map_err(zmq_err("creating the ZeroMQ context", None))?;
        let (zap_tx, zap_events) = mpsc::channel();
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
                    let _ = zap_tx.send(AuditEvent::AuthRefused {
                        address: req.address.clone(),
                        mechanism: req.mechanism.clone(),
                        key: Some(public.to_z85()),
                    });
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
        let server_socket = |kind, what, endpoint: &str| -> Result<(Socket, String), BrokerError> {
            let s = context
                .socket(kind)
                .map_err(zmq_err("creating a socket", None))?;
            let setup = || -> Result<(), ZmqError> {
                s.set_curve_server_keys(&secret)?;
                s.set_zap_domain("labhub")?;
                s.set_maxmsgsize(Some(protocol::MAX_MESSAGE_BYTES as u64))?;
                s.set_sndhwm(100_000)?;
                s.set_rcvhwm(100_000)?;
                Ok(())
            };
            setup().map_err(zmq_err("setting socket options", Some(endpoint)))?;
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
        )?;
        let (publisher, notify_endpoint) = server_socket(
            SocketType::Pub,
            "binding the notification socket",
            &config.notify_endpoint,
        )?;
        let metrics = config
            .metrics
            .as_ref()
            .map(|m| Metrics::start(m, &config.home))
            .transpose()?;
        audit.record(&AuditEvent::BrokerStarted {
            endpoint: endpoint.clone(),
            notify_endpoint: notify_endpoint.clone(),
            public_key: keys.public.to_z85(),
        })?;
        audit.flush()?;
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

    /// Counters so far.
    pub fn stats(&self) -> BrokerStats {
        self.stats
    }

    /// Serves until `stop` is set, then flushes the audit log.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(), BrokerError> {
        let interval = self.registry.config().heartbeat_interval;
        let tick = (interval / 4).clamp(Duration::from_millis(5), Duration::from_millis(100));
        let mut next_tick = Instant::now() + tick;
        let mut next_cleanup = Instant::now() + CLEANUP_RETRY;
        while !stop.load(Ordering::Relaxed) {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let readable = {
                let mut items = [self.router.poll_item(PollEvents::IN)];
                match poll(&mut items, Some(wait)) {
                    Ok(_) => items[0].is_readable(),
                    Err(e) if e.is_term() => break,
                    Err(e) => return Err(zmq_err("polling", None)(e)),
                }
            };
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
            if now >= next_tick {
                self.registry.tick(now, &mut self.effects);
                next_tick = now + tick;
            }
            if self.metrics.is_some() {
                let stats = self.stats();
                if let Some(m) = &mut self.metrics {
                    m.tick(now, &self.registry, stats);
                }
            }
            if now >= next_cleanup {
                self.retry_cleanup();
                next_cleanup = now + CLEANUP_RETRY;
            }
            self.apply_effects()?;
            while let Ok(event) = self.zap_events.try_recv() {
                tracing::info!(?event, "connection refused by ZAP");
                self.audit.record(&event)?;
            }
            self.audit.flush()?;
        }
        self.finish()
    }

    fn finish(&mut self) -> Result<(), BrokerError> {
        self.apply_effects()?;
        self.audit.record(&AuditEvent::BrokerStopped)?;
        self.audit.flush()?;
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
            Reply::error(
                None,
                ErrorCode::BadFrames,
                format!(
                    "expected 4 frames (tag, version, type, body) after the envelope, found {}",
                    rest.len() + discarded
                ),
            )
        } else {
            match &decoded.outcome {
                Ok(request) => {
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
                    reply
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

    fn apply_effects(&mut self) -> Result<(), BrokerError> {
        let effects = std::mem::take(&mut self.effects);
        for effect in effects {
            match effect {
                Effect::Audit(event) => self.audit.record(&event)?,
                Effect::Notify(n) => {
                    let frames = protocol::encode_notification(self.seq, &n);
                    self.seq += 1;
                    self.stats.notifications += 1;
                    tracing::info!(kind = n.type_name(), ?n, "notification");
                    if let Err(e) = self.publisher.send_multipart(frames, Flags::DONTWAIT) {
                        tracing::warn!(error = %e, "notification not published");
                    }
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
                    })?;
                }
            }
        }
        Ok(())
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
