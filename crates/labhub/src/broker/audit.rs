//! The audit trail: one JSON object per line, appended to `<labhub home>/audit.jsonl`.
//!
//! Each line is `{"time_unix_ms": …, "event": "<kind>", …fields}`. Lines are buffered and
//! written after each batch of messages the broker handles, and on shutdown, through the log
//! module's size-rotating file (`audit.jsonl.1`, `.2`, … hold older lines).
//!
//! Writing never stops the broker: when a write fails (a full disk, a removed directory) the
//! lines are kept, up to [`MAX_PENDING_BYTES`], and written once writing works again; lines
//! beyond that are counted as lost. [`AuditLog::health`] tells which state the log is in, and
//! the broker reports it in its `status` reply.
//!
//! Refused handshakes are not written one by one (any network peer can cause them):
//! [`RefusalTally`] counts them per source address and writes one `auth_refused` line per
//! source per interval.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::protocol::{ChannelKind, ChannelName, ClientId, DownReason, DropReason, Role, ShmName};

/// One audited event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditEvent {
    /// The broker started serving.
    BrokerStarted {
        /// The ROUTER endpoint.
        endpoint: String,
        /// The notification PUB endpoint.
        notify_endpoint: String,
        /// The broker's public key (Z85).
        public_key: String,
    },
    /// The broker stopped.
    BrokerStopped,
    /// A channel was registered (or re-registered by its producer, or taken over after its
    /// producer went down).
    Registered {
        /// The channel.
        channel: ChannelName,
        /// Its kind.
        kind: ChannelKind,
        /// The producer.
        client: ClientId,
        /// The producer's CURVE public key, when authentication is on.
        #[serde(skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        /// `new`, `refresh` (same producer again) or `takeover` (a down channel's new producer).
        how: &'static str,
    },
    /// A registration was refused.
    RegisterRefused {
        /// The channel.
        channel: ChannelName,
        /// The client.
        client: ClientId,
        /// The error code.
        code: &'static str,
    },
    /// A producer unregistered its channel.
    Unregistered {
        /// The channel.
        channel: ChannelName,
        /// The producer.
        client: ClientId,
    },
    /// A channel was looked up.
    Discovered {
        /// The channel.
        channel: ChannelName,
        /// The asking client, if it gave an id.
        #[serde(skip_serializing_if = "Option::is_none")]
        client: Option<ClientId>,
        /// The error code of the reply (`none` when found).
        outcome: &'static str,
    },
    /// A consumer attached.
    Attached {
        /// The channel.
        channel: ChannelName,
        /// The consumer.
        client: ClientId,
    },
    /// A consumer detached.
    Detached {
        /// The channel.
        channel: ChannelName,
        /// The consumer.
        client: ClientId,
    },
    /// A channel went down.
    ChannelDown {
        /// The channel.
        channel: ChannelName,
        /// Its producer.
        producer: ClientId,
        /// Why.
        reason: DownReason,
    },
    /// A silent consumer was dropped from a channel.
    ConsumerDropped {
        /// The channel.
        channel: ChannelName,
        /// The consumer.
        consumer: ClientId,
        /// The producer told about it.
        producer: ClientId,
        /// Why.
        reason: DropReason,
    },
    /// A client went silent and was forgotten.
    ClientExpired {
        /// The client.
        client: ClientId,
    },
    /// A down channel was removed from the registry (no consumer holds it any more).
    ChannelRemoved {
        /// The channel.
        channel: ChannelName,
    },
    /// A channel's segment was unlinked (or the attempt failed).
    SegmentRemoved {
        /// The segment.
        shm_name: ShmName,
        /// `removed`, `absent`, `skipped: …` or `failed: …`.
        outcome: String,
    },
    /// A stale segment of a dead producer was found at start and unlinked.
    StaleSegmentReaped {
        /// The segment.
        shm_name: String,
        /// `removed` or `failed: …`.
        outcome: String,
    },
    /// Connections from one source refused by ZAP during one interval.
    AuthRefused {
        /// The peer address (`*` for sources beyond [`MAX_REFUSAL_SOURCES`] in the interval).
        address: String,
        /// The mechanism the peers used.
        mechanism: String,
        /// How many handshakes were refused.
        count: u64,
        /// The first client key offered, when one was.
        #[serde(skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        /// How many distinct keys were offered (counted up to [`MAX_KEYS_COUNTED`]).
        distinct_keys: usize,
        /// The interval the line covers, in milliseconds.
        interval_ms: u64,
    },
    /// A `grant` request was answered with a ticket.
    GrantIssued {
        /// The channel.
        channel: ChannelName,
        /// The client.
        client: ClientId,
        /// Its CURVE key (Z85).
        key: String,
        /// `produce` or `consume`.
        role: Role,
    },
    /// A `grant` request was refused (the access list, or the channel's state).
    GrantRefused {
        /// The channel.
        channel: ChannelName,
        /// The client.
        client: ClientId,
        /// Its CURVE key (Z85), when authentication is on.
        #[serde(skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        /// `produce` or `consume`.
        role: Role,
        /// The error code.
        code: &'static str,
    },
    /// A ticket was redeemed on the grant socket: the segment's descriptors went to the process
    /// named by the kernel's credentials of the socket peer.
    Granted {
        /// The channel.
        channel: ChannelName,
        /// The client the ticket was issued to.
        client: ClientId,
        /// Its CURVE key (Z85).
        key: String,
        /// `produce` or `consume`.
        role: Role,
        /// The peer's pid (`SO_PEERCRED`, in the broker's pid namespace).
        pid: u32,
        /// The peer's uid.
        uid: u32,
        /// The peer's gid.
        gid: u32,
        /// Whether descriptors were sent (a producer gets the segment the broker held, if any).
        descriptors: bool,
    },
    /// Something on the grant socket was refused: a bad, used or expired ticket, the access
    /// list, a malformed message, a segment that is not a sealed memfd.
    GrantSocketRefused {
        /// The channel named, if the message named one.
        #[serde(skip_serializing_if = "Option::is_none")]
        channel: Option<ChannelName>,
        /// The peer's pid (`SO_PEERCRED`).
        pid: u32,
        /// The peer's uid.
        uid: u32,
        /// The peer's gid.
        gid: u32,
        /// The error code sent back.
        code: &'static str,
        /// What was wrong.
        problem: String,
    },
    /// A producer handed the broker a channel's segment on the grant socket.
    SegmentProvided {
        /// The channel.
        channel: ChannelName,
        /// The producer's client id.
        client: ClientId,
        /// The peer's pid (`SO_PEERCRED`).
        pid: u32,
        /// The peer's uid.
        uid: u32,
        /// The data memfd's size.
        data_size: u64,
    },
    /// The broker closed its descriptors of a memfd channel's segment (the channel is gone,
    /// or its producer handed over another one).
    SegmentReleased {
        /// The channel.
        channel: ChannelName,
    },
    /// The audit log could not be written for a while; lines were lost.
    AuditLinesLost {
        /// How many lines were dropped.
        lines: u64,
        /// The first error.
        error: String,
    },
}

/// Most refusal sources counted separately in one interval; the rest share one line.
pub const MAX_REFUSAL_SOURCES: usize = 256;
/// Most distinct keys counted per source and interval.
pub const MAX_KEYS_COUNTED: usize = 16;
/// Unwritten lines kept while the audit log cannot be written, in bytes.
pub const MAX_PENDING_BYTES: usize = 1024 * 1024;
/// Size at which the audit log is rotated, by default.
pub const DEFAULT_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// Rotated audit files kept, by default.
pub const DEFAULT_BACKUPS: u32 = 4;

/// Why the audit log could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// Opening the file failed.
    #[error("cannot open audit log {path}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

#[derive(Serialize)]
struct Line<'a> {
    time_unix_ms: u64,
    #[serde(flatten)]
    event: &'a AuditEvent,
}

/// Whether the audit log is being written, as the broker's `status` reply shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct AuditHealth {
    /// The file.
    pub path: PathBuf,
    /// The error of the last failed write, while writes fail; `None` once a write succeeded.
    pub error: Option<String>,
    /// Writes that failed so far.
    pub write_errors: u64,
    /// Lines dropped because they could not be written and the backlog was full.
    pub lines_lost: u64,
    /// Lines waiting to be written.
    pub lines_pending: usize,
}

/// An append-only JSON-lines audit file, rotated by size. See the module documentation.
pub struct AuditLog {
    file: crate::log::sink::RotatingFile,
    pending: Vec<Vec<u8>>,
    pending_bytes: usize,
    scratch: Vec<u8>,
    health: AuditHealth,
    lost_since_ok: u64,
    first_error: Option<String>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("health", &self.health)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens (creating, mode 0600) `path` for appending; it is rotated to `path.1` when a
    /// line would take it past `max_bytes`, keeping `backups` older files.
    ///
    /// # Errors
    ///
    /// [`AuditError::Open`] when the file or its lock file cannot be opened.
    pub fn open(path: &Path, max_bytes: u64, backups: u32) -> Result<Self, AuditError> {
        let file = crate::log::sink::RotatingFile::open_plain(path, max_bytes, backups, 0o600)
            .map_err(|source| AuditError::Open {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self {
            file,
            pending: Vec::new(),
            pending_bytes: 0,
            scratch: Vec::new(),
            health: AuditHealth {
                path: path.to_owned(),
                ..AuditHealth::default()
            },
            lost_since_ok: 0,
            first_error: None,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.health.path
    }

    /// Whether writes succeed, and what was lost.
    pub fn health(&self) -> AuditHealth {
        AuditHealth {
            lines_pending: self.pending.len(),
            ..self.health.clone()
        }
    }

    /// Queues one event (written by [`AuditLog::flush`]). When the backlog of unwritten lines
    /// is full, the line is dropped and counted.
    pub fn record(&mut self, event: &AuditEvent) {
        let time_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        // Our events serialise infallibly (string keys, no floats).
        let Ok(mut line) = serde_json::to_vec(&Line {
            time_unix_ms,
            event,
        }) else {
            return;
        };
        line.push(b'\n');
        if self.pending_bytes + line.len() > MAX_PENDING_BYTES {
            self.health.lines_lost += 1;
            self.lost_since_ok += 1;
            return;
        }
        self.pending_bytes += line.len();
        self.pending.push(line);
    }

    /// Writes the queued lines. On failure they stay queued for the next call, the failure
    /// is counted and logged (once per run of failures), and `false` is returned.
    pub fn flush(&mut self) -> bool {
        if self.pending.is_empty() {
            return true;
        }
        match self
            .file
            .write_plain(&self.pending, &mut self.scratch)
            .and_then(|()| self.file.sync())
        {
            Ok(()) => {
                self.pending.clear();
                self.pending_bytes = 0;
                if let Some(error) = self.health.error.take() {
                    tracing::warn!(path = %self.health.path.display(), "the audit log is written again");
                    if self.lost_since_ok > 0 {
                        let lines = std::mem::take(&mut self.lost_since_ok);
                        let error = self.first_error.take().unwrap_or(error);
                        self.record(&AuditEvent::AuditLinesLost { lines, error });
                        return self.flush();
                    }
                }
                true
            }
            Err(e) => {
                // A partly written batch is written again whole: a line may appear twice,
                // none is lost while the backlog has room.
                self.health.write_errors += 1;
                let text = e.to_string();
                if self.health.error.is_none() {
                    tracing::error!(
                        path = %self.health.path.display(),
                        error = %text,
                        "cannot write the audit log; lines are kept and written when it works again"
                    );
                    self.first_error.get_or_insert_with(|| text.clone());
                }
                self.health.error = Some(text);
                false
            }
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        if !self.flush() {
            tracing::warn!(lines = self.pending.len(), "audit log lost its last lines");
        }
    }
}

/// One refused handshake, as the ZAP handler reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The peer address.
    pub address: String,
    /// The mechanism it used.
    pub mechanism: String,
    /// The client key it offered.
    pub key: Option<String>,
}

#[derive(Debug, Default)]
struct SourceTally {
    mechanism: String,
    count: u64,
    first_key: Option<String>,
    keys: Vec<String>,
}

/// Counts refused handshakes per source and turns each interval's counts into one
/// [`AuditEvent::AuthRefused`] per source. Memory is bounded: at most
/// [`MAX_REFUSAL_SOURCES`] sources and [`MAX_KEYS_COUNTED`] keys each are kept.
#[derive(Debug)]
pub struct RefusalTally {
    interval: Duration,
    started: Instant,
    sources: HashMap<String, SourceTally>,
    others: SourceTally,
    total: u64,
}

impl RefusalTally {
    /// A tally writing one line per source every `interval`.
    pub fn new(interval: Duration, now: Instant) -> Self {
        Self {
            interval,
            started: now,
            sources: HashMap::new(),
            others: SourceTally::default(),
            total: 0,
        }
    }

    /// Refusals counted since the start.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Counts one refusal.
    pub fn add(&mut self, refusal: Refusal) {
        self.total += 1;
        let full = self.sources.len() >= MAX_REFUSAL_SOURCES;
        let tally = match self.sources.get_mut(&refusal.address) {
            Some(t) => t,
            None if full => &mut self.others,
            None => self.sources.entry(refusal.address).or_default(),
        };
        tally.count += 1;
        if tally.mechanism.is_empty() {
            tally.mechanism = refusal.mechanism;
        }
        if let Some(key) = refusal.key {
            if tally.first_key.is_none() {
                tally.first_key = Some(key.clone());
            }
            if tally.keys.len() < MAX_KEYS_COUNTED && !tally.keys.contains(&key) {
                tally.keys.push(key);
            }
        }
    }

    /// Once the interval has passed (or with `force`), the lines to write, and a new interval.
    pub fn drain(&mut self, now: Instant, force: bool) -> Vec<AuditEvent> {
        if !force && now.saturating_duration_since(self.started) < self.interval {
            return Vec::new();
        }
        let interval_ms = u64::try_from(now.saturating_duration_since(self.started).as_millis())
            .unwrap_or(u64::MAX);
        self.started = now;
        let line = |address: String, t: SourceTally| AuditEvent::AuthRefused {
            address,
            mechanism: t.mechanism,
            count: t.count,
            key: t.first_key,
            distinct_keys: t.keys.len(),
            interval_ms,
        };
        let mut sources: Vec<_> = self.sources.drain().collect();
        sources.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<AuditEvent> = sources.into_iter().map(|(a, t)| line(a, t)).collect();
        let others = std::mem::take(&mut self.others);
        if others.count > 0 {
            out.push(line("*".into(), others));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("labhub-audit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn events_are_appended_as_json_lines() {
        let dir = scratch("append");
        let path = dir.join("audit.jsonl");
        let channel = ChannelName::new("cam0").unwrap();
        for _ in 0..2 {
            let mut log = AuditLog::open(&path, DEFAULT_MAX_BYTES, DEFAULT_BACKUPS).unwrap();
            log.record(&AuditEvent::ChannelRemoved {
                channel: channel.clone(),
            });
            assert!(log.flush());
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["event"], "channel_removed");
        assert_eq!(lines[1]["channel"], "cam0");
        assert!(lines[1]["time_unix_ms"].as_u64().unwrap() > 0);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_log_rotates_by_size_and_every_line_stays_json() {
        let dir = scratch("rotate");
        let path = dir.join("audit.jsonl");
        let mut log = AuditLog::open(&path, 2000, 2).unwrap();
        for _ in 0..100 {
            log.record(&AuditEvent::BrokerStopped);
            assert!(log.flush());
        }
        for file in [
            path.clone(),
            dir.join("audit.jsonl.1"),
            dir.join("audit.jsonl.2"),
        ] {
            let text = std::fs::read_to_string(&file).unwrap();
            assert!(text.len() <= 2000, "{}", file.display());
            for l in text.lines() {
                serde_json::from_str::<serde_json::Value>(l).unwrap();
            }
        }
        assert!(!dir.join("audit.jsonl.3").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refusals_are_counted_per_source_and_bounded() {
        let t0 = Instant::now();
        let mut tally = RefusalTally::new(Duration::from_secs(1), t0);
        for i in 0..1000 {
            tally.add(Refusal {
                address: format!("10.0.{}.{}", i % 300 / 250, i % 300),
                mechanism: "CURVE".into(),
                key: Some(format!("k{i}")),
            });
        }
        assert!(
            tally
                .drain(t0 + Duration::from_millis(10), false)
                .is_empty()
        );
        let lines = tally.drain(t0 + Duration::from_secs(1), false);
        assert_eq!(lines.len(), MAX_REFUSAL_SOURCES + 1);
        let counted: u64 = lines
            .iter()
            .map(|l| match l {
                AuditEvent::AuthRefused {
                    count,
                    distinct_keys,
                    ..
                } => {
                    assert!(*distinct_keys <= MAX_KEYS_COUNTED);
                    *count
                }
                _ => 0,
            })
            .sum();
        assert_eq!(counted, 1000);
        assert!(tally.drain(t0 + Duration::from_secs(3), false).is_empty());
    }
}
