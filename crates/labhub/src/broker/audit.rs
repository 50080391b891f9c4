//! The audit trail: one JSON object per line, appended to `<labhub home>/audit.jsonl`.
//!
//! Each line is `{"time_unix_ms": …, "event": "<kind>", …fields}`. Lines are buffered and
//! flushed after each batch of messages the broker handles, and on shutdown.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::protocol::{ChannelKind, ChannelName, ClientId, DownReason, DropReason, ShmName};

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
    /// A connection was refused by ZAP.
    AuthRefused {
        /// The peer address.
        address: String,
        /// The mechanism the peer used.
        mechanism: String,
        /// The client key, when it offered one.
        #[serde(skip_serializing_if = "Option::is_none")]
        key: Option<String>,
    },
}

/// Why the audit log could not be written.
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
    /// Writing or flushing failed.
    #[error("cannot write audit log {path}")]
    Write {
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

/// An append-only JSON-lines audit file.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    out: BufWriter<File>,
}

impl AuditLog {
    /// Opens (creating, mode 0600) `path` for appending.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| AuditError::Open {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self {
            path: path.to_owned(),
            out: BufWriter::with_capacity(64 * 1024, file),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event (buffered; see [`AuditLog::flush`]).
    pub fn record(&mut self, event: &AuditEvent) -> Result<(), AuditError> {
        let time_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut line = serde_json::to_vec(&Line {
            time_unix_ms,
            event,
        })
        .map_err(|e| AuditError::Write {
            path: self.path.clone(),
            source: e.into(),
        })?;
        line.push(b'\n');
        self.out
            .write_all(&line)
            .map_err(|source| AuditError::Write {
                path: self.path.clone(),
                source,
            })
    }

    /// Writes buffered lines to the file.
    pub fn flush(&mut self) -> Result<(), AuditError> {
        self.out.flush().map_err(|source| AuditError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::warn!(error = %e, "audit log lost its last lines");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_appended_as_json_lines() {
        let dir = std::env::temp_dir().join(format!("labhub-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.jsonl");
        let _ = std::fs::remove_file(&path);
        let channel = ChannelName::new("cam0").unwrap();
        for _ in 0..2 {
            let mut log = AuditLog::open(&path).unwrap();
            log.record(&AuditEvent::ChannelRemoved {
                channel: channel.clone(),
            })
            .unwrap();
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
}
