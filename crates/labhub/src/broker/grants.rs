//! Broker-granted shared memory: one-time tickets issued over the CURVE socket, redeemed on a
//! Unix socket for a memfd channel's descriptors, and the segments the broker holds.
//!
//! - A client sends `grant` (channel, role) over its CURVE connection; the broker knows its key
//!   from ZAP's User-Id, checks the [access list](super::access) and the channel's state, and
//!   answers with a ticket: 32 random bytes, valid once, for [`BrokerConfig::grant_ticket`]
//!   (5 s by default), bound to that key, client id, channel and role. Only a hash of it is
//!   kept.
//! - The client presents it on the grant socket (`SOCK_SEQPACKET`, in the labhub home by
//!   default). The broker removes the ticket whatever happens next (a replayed or stolen
//!   ticket is worthless once presented), reads the peer's credentials from the kernel
//!   (`SO_PEERCRED`: pid, uid, gid), checks the access list again with the peer's uid, and
//!   answers: a consumer gets the channel's control and data memfds, each freshly opened for it
//!   (its own open file description: its liveness lock is its own, see docs/SHM_LAYOUT.md); a
//!   producer gets the segment the broker held for the channel (a restarted producer continues
//!   it) and then hands over its own, which the broker checks (memfds, sealed, the right sizes)
//!   and holds once the producer's `register` arrives.
//! - The broker holds a channel's descriptors while the channel is registered, closes them when
//!   it is removed, and never maps them: it stays off the data path. When the last process
//!   holding a memfd closes it, the kernel frees it.
//!
//! What the grant socket may cost is bounded: at most [`MAX_CONNECTIONS`] connections at once
//! (the oldest is closed when another arrives), each closed [`CONNECTION_DEADLINE`] after it
//! was accepted, messages of at most [`MAX_GRANT_MESSAGE`] bytes, at most two descriptors per
//! message (others are closed), [`MAX_TICKETS`] tickets outstanding ([`MAX_TICKETS_PER_CLIENT`]
//! per client).
#![deny(unsafe_code)]

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use labhub_zmq::{PollEvents, PollItem};

use super::access::AccessList;
use super::audit::AuditEvent;
use super::config::BrokerConfig;
use super::registry::{Effect, Registry};
use crate::keys::PublicKey;
use crate::protocol::{
    ChannelName, ClientId, ErrorCode, GrantAnswer, GrantMessage, GrantRecord, GrantRequest,
    GrantTicket, MAX_GRANT_MESSAGE, MAX_SEGMENT_SIZE, Role, TICKET_HEX_LEN,
};
use crate::shm::MemfdPair;
use crate::sys;

/// Most connections to the grant socket at once.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a connection to the grant socket may stay open.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(2);
/// Most tickets outstanding.
pub const MAX_TICKETS: usize = 4096;
/// Most tickets outstanding for one client.
pub const MAX_TICKETS_PER_CLIENT: usize = 16;
/// How long a producer's handed-over segment waits for its `register`.
pub const STAGED_LIFETIME: Duration = Duration::from_secs(30);

/// Why the grant socket could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GrantSocketError {
    /// Its directory is not one the broker may trust (owner, mode).
    #[error(transparent)]
    Untrusted(#[from] crate::keys::KeyError),
    /// Another process serves the socket.
    #[error("grant socket {path} is served by another process (another broker on this home?)")]
    InUse {
        /// The socket.
        path: PathBuf,
    },
    /// The path holds something that is not a socket of the broker's user.
    #[error("grant socket {path} exists and is not a socket of the broker's user")]
    Foreign {
        /// The path.
        path: PathBuf,
    },
    /// Binding failed.
    #[error("cannot bind the grant socket {path}")]
    Bind {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug)]
struct Ticket {
    key: String,
    client: ClientId,
    channel: ChannelName,
    role: Role,
    expires: Instant,
}

#[derive(Debug)]
enum Stage {
    /// Waiting for the `redeem` message.
    Redeem,
    /// A producer's ticket was redeemed: waiting for its `provide`.
    Provide(Ticket),
}

#[derive(Debug)]
struct Connection {
    fd: OwnedFd,
    accepted: Instant,
    peer: (u32, u32, u32),
    stage: Stage,
}

/// A segment a producer handed over, waiting for its `register`.
#[derive(Debug)]
struct Staged {
    pair: MemfdPair,
    data_size: u64,
    record: GrantRecord,
    /// The process that handed the segment over, as the kernel names it (`SO_PEERCRED`).
    process: Option<sys::ProcessId>,
    expires: Instant,
}

/// Counters of the grant service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GrantStats {
    /// Tickets issued.
    pub issued: u64,
    /// Tickets redeemed.
    pub redeemed: u64,
    /// Messages or tickets refused on the grant socket.
    pub refused: u64,
    /// Connections closed to make room for newer ones, or at their deadline.
    pub closed: u64,
}

/// The grant socket and what it hands out (see the module documentation).
#[derive(Debug)]
pub struct GrantService {
    listener: OwnedFd,
    path: PathBuf,
    lifetime: Duration,
    access: AccessList,
    tickets: HashMap<[u8; 32], Ticket>,
    connections: Vec<Connection>,
    held: HashMap<ChannelName, Arc<MemfdPair>>,
    staged: HashMap<(ClientId, ChannelName), Staged>,
    /// The process of each client that registered a segment it handed over: a client's
    /// heartbeats come from the process its producers run in, so when that process is gone the
    /// client is too, whatever its heartbeat timeout says.
    processes: HashMap<ClientId, sys::ProcessId>,
    stats: GrantStats,
}

fn ticket_hash(ticket: &str) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"labhub grant ticket v1");
    h.update(ticket.as_bytes());
    *h.finalize().as_bytes()
}

fn new_ticket() -> String {
    use chacha20poly1305::aead::OsRng;
    use chacha20poly1305::aead::rand_core::RngCore;
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(&mut bytes[..]);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Removes a stale socket file at `path` (a dead broker's), refusing one another process
/// serves or that is not a socket of ours.
fn clear_stale(path: &Path) -> Result<(), GrantSocketError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() || meta.uid() != crate::keys::trust::current_uid() {
        return Err(GrantSocketError::Foreign {
            path: path.to_owned(),
        });
    }
    if sys::seqpacket_connect(path, Duration::from_millis(200)).is_ok() {
        return Err(GrantSocketError::InUse {
            path: path.to_owned(),
        });
    }
    std::fs::remove_file(path).map_err(|source| GrantSocketError::Bind {
        path: path.to_owned(),
        source,
    })
}

impl GrantService {
    /// Binds the grant socket of `config` (its directory trust-checked, a dead broker's socket
    /// file replaced) with `owner`, the broker's user's own client key, allowed everything.
    ///
    /// # Errors
    /// [`GrantSocketError`].
    pub fn bind(config: &BrokerConfig, owner: PublicKey) -> Result<Self, GrantSocketError> {
        let path = config.grant_socket.clone();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::keys::trust::check(dir, crate::keys::trust::Trust::Directory)?;
        }
        clear_stale(&path)?;
        // Reaching the socket grants nothing without a ticket: its directory decides who may
        // connect (the 0700 home by default: the broker's user alone).
        let listener =
            sys::seqpacket_listen(&path, 0o666, MAX_CONNECTIONS as i32).map_err(|source| {
                GrantSocketError::Bind {
                    path: path.clone(),
                    source,
                }
            })?;
        Ok(Self {
            listener,
            path,
            lifetime: config.grant_ticket,
            access: config.access.clone().with_owner(owner),
            tickets: HashMap::new(),
            connections: Vec::new(),
            held: HashMap::new(),
            staged: HashMap::new(),
            processes: HashMap::new(),
            stats: GrantStats::default(),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Counters so far.
    pub fn stats(&self) -> GrantStats {
        self.stats
    }

    /// Channels whose segment the broker holds now.
    pub fn held_channels(&self) -> usize {
        self.held.len()
    }

    /// A duplicate of the descriptors the broker holds for `channel` (for reading its header:
    /// the broker's own open file descriptions hold no lock).
    pub fn held(&self, channel: &ChannelName) -> Option<MemfdPair> {
        self.held.get(channel)?.try_clone().ok()
    }

    /// The segments held now, shared (no descriptor is duplicated): what the metrics thread
    /// reads channel figures from.
    pub fn held_segments(&self) -> HashMap<ChannelName, Arc<MemfdPair>> {
        self.held.clone()
    }

    /// The poll items of the listening socket and every connection, in that order.
    pub fn poll_items(&self) -> Vec<PollItem<'_>> {
        std::iter::once(self.listener.as_fd())
            .chain(self.connections.iter().map(|c| c.fd.as_fd()))
            .map(|fd| PollItem::from_fd(fd, PollEvents::IN))
            .collect()
    }

    /// Whether `key` may take `role` on `channel` (before the Unix peer is known).
    pub fn allows_key(&self, key: Option<&str>, channel: &ChannelName, role: Role) -> bool {
        key.and_then(|k| PublicKey::from_z85(k).ok())
            .is_some_and(|k| self.access.allows_key(&k, channel, role))
    }

    /// Mints a ticket for `g` from `key` (the registry has accepted the request).
    ///
    /// # Errors
    /// `(LimitReached, why)` when too many tickets are outstanding.
    pub fn issue(
        &mut self,
        now: Instant,
        key: &str,
        g: &GrantRequest,
    ) -> Result<GrantTicket, (ErrorCode, String)> {
        self.tickets.retain(|_, t| t.expires > now);
        let of_client = self
            .tickets
            .values()
            .filter(|t| t.client == g.client)
            .count();
        if self.tickets.len() >= MAX_TICKETS || of_client >= MAX_TICKETS_PER_CLIENT {
            return Err((
                ErrorCode::LimitReached,
                format!(
                    "too many grant tickets outstanding (at most {MAX_TICKETS_PER_CLIENT} per client, {MAX_TICKETS} in all)"
                ),
            ));
        }
        let ticket = new_ticket();
        self.tickets.insert(
            ticket_hash(&ticket),
            Ticket {
                key: key.to_owned(),
                client: g.client.clone(),
                channel: g.name.clone(),
                role: g.role,
                expires: now + self.lifetime,
            },
        );
        self.stats.issued += 1;
        Ok(GrantTicket {
            ticket,
            socket: self.path.display().to_string(),
            expires_ms: u64::try_from(self.lifetime.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// Whether `client` handed over a segment for `channel` whose data region is `size` bytes.
    pub fn has_staged(&self, client: &ClientId, channel: &ChannelName, size: Option<u64>) -> bool {
        self.staged
            .get(&(client.clone(), channel.clone()))
            .is_some_and(|s| Some(s.data_size) == size)
    }

    /// `client` registered `channel`: the segment it handed over becomes the one the broker
    /// holds (the previous one is closed).
    pub fn commit(
        &mut self,
        client: &ClientId,
        channel: &ChannelName,
        registry: &mut Registry,
        effects: &mut Vec<Effect>,
    ) {
        let Some(staged) = self.staged.remove(&(client.clone(), channel.clone())) else {
            return;
        };
        if self
            .held
            .insert(channel.clone(), Arc::new(staged.pair))
            .is_some()
        {
            effects.push(Effect::Audit(AuditEvent::SegmentReleased {
                channel: channel.clone(),
            }));
        }
        registry.record_grant(channel, staged.record);
        if let Some(process) = staged.process {
            if self.processes.len() >= registry.config().max_clients {
                // Bounded by the clients the registry tracks.
                self.processes
                    .retain(|c, _| registry.knows_client(c.as_str()));
            }
            self.processes.insert(client.clone(), process);
        }
    }

    /// Whether `client`'s process is known to have ended: the process that handed over a
    /// segment `client` registered is gone (a pid reused since is not it). `false` when no
    /// such process is known (the client shared no segment through this broker).
    pub fn client_process_gone(&self, client: &ClientId) -> bool {
        self.processes.get(client).is_some_and(|p| !p.is_alive())
    }

    /// Forgets `client`'s process (the registry no longer tracks the client).
    pub fn forget_client(&mut self, client: &ClientId) {
        self.processes.remove(client);
    }

    /// Closes the broker's descriptors of `channel`'s segment.
    pub fn release(&mut self, channel: &ChannelName, effects: &mut Vec<Effect>) {
        if self.held.remove(channel).is_some() {
            effects.push(Effect::Audit(AuditEvent::SegmentReleased {
                channel: channel.clone(),
            }));
        }
        self.staged.retain(|(_, c), _| c != channel);
    }

    /// Drops expired tickets and staged segments, and closes connections past their deadline.
    pub fn sweep(&mut self, now: Instant) {
        self.tickets.retain(|_, t| t.expires > now);
        self.staged.retain(|_, s| s.expires > now);
        let before = self.connections.len();
        self.connections
            .retain(|c| now.saturating_duration_since(c.accepted) < CONNECTION_DEADLINE);
        self.stats.closed += (before - self.connections.len()) as u64;
    }

    /// Serves what the last poll found readable: `ready[0]` the listener, `ready[1..]` the
    /// connections (as [`GrantService::poll_items`] listed them).
    pub fn serve(
        &mut self,
        now: Instant,
        ready: &[bool],
        registry: &mut Registry,
        effects: &mut Vec<Effect>,
    ) {
        // Connections first (their indices are the poll's), then new ones.
        let mut i = self.connections.len();
        while i > 0 {
            i -= 1;
            if ready.get(i + 1).copied().unwrap_or(false)
                && !self.on_readable(i, now, registry, effects)
            {
                self.connections.swap_remove(i);
            }
        }
        if ready.first().copied().unwrap_or(false) {
            self.accept_all(now);
        }
    }

    fn accept_all(&mut self, now: Instant) {
        for _ in 0..4 * MAX_CONNECTIONS {
            let fd = match sys::seqpacket_accept(self.listener.as_fd()) {
                Ok(Some(fd)) => fd,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting on the grant socket failed");
                    return;
                }
            };
            let Ok(peer) = sys::peer_credentials(fd.as_fd()) else {
                continue;
            };
            if self.connections.len() >= MAX_CONNECTIONS {
                // The oldest goes: an honest exchange takes well under a millisecond.
                self.connections.remove(0);
                self.stats.closed += 1;
            }
            self.connections.push(Connection {
                fd,
                accepted: now,
                peer,
                stage: Stage::Redeem,
            });
        }
    }

    /// Handles a readable connection; false when it is to be closed.
    fn on_readable(
        &mut self,
        i: usize,
        now: Instant,
        registry: &mut Registry,
        effects: &mut Vec<Effect>,
    ) -> bool {
        let mut buf = [0u8; MAX_GRANT_MESSAGE];
        let received = match sys::recv_with_fds(self.connections[i].fd.as_fd(), &mut buf) {
            Ok(Some(r)) => r,
            Ok(None) => return true,
            Err(_) => return false,
        };
        if received.len == 0 && received.fds.is_empty() {
            return false;
        }
        let peer = self.connections[i].peer;
        let refuse = |this: &mut Self,
                      effects: &mut Vec<Effect>,
                      channel: Option<ChannelName>,
                      code: ErrorCode,
                      problem: String| {
            this.stats.refused += 1;
            effects.push(Effect::Audit(AuditEvent::GrantSocketRefused {
                channel,
                pid: peer.0,
                uid: peer.1,
                gid: peer.2,
                code: code.as_str(),
                problem: problem.clone(),
            }));
            let _ = this.answer(i, &GrantAnswer::error(code, problem), &[]);
            false
        };
        if received.truncated || received.fds_truncated {
            let problem =
                format!("a message holds at most {MAX_GRANT_MESSAGE} bytes and 2 descriptors");
            return refuse(self, effects, None, ErrorCode::TooLarge, problem);
        }
        let message: GrantMessage = match serde_json::from_slice(&buf[..received.len]) {
            Ok(m) => m,
            Err(e) => {
                return refuse(self, effects, None, ErrorCode::MalformedBody, e.to_string());
            }
        };
        let stage = std::mem::replace(&mut self.connections[i].stage, Stage::Redeem);
        match (stage, message) {
            (Stage::Redeem, GrantMessage::Redeem { ticket, name, role }) => {
                if !received.fds.is_empty() {
                    let problem = "a redeem message carries no descriptor".to_owned();
                    return refuse(self, effects, Some(name), ErrorCode::InvalidField, problem);
                }
                let t = match self.take_ticket(&ticket, &name, role, now) {
                    Ok(t) => t,
                    Err(problem) => {
                        return refuse(
                            self,
                            effects,
                            Some(name),
                            ErrorCode::InvalidTicket,
                            problem,
                        );
                    }
                };
                let key = PublicKey::from_z85(&t.key).ok();
                if !key.is_some_and(|k| self.access.allows(&k, peer.1, &name, role)) {
                    let problem = format!(
                        "the access list does not let this key {} channel {name} as uid {}",
                        role.as_str(),
                        peer.1
                    );
                    return refuse(self, effects, Some(name), ErrorCode::AccessDenied, problem);
                }
                self.stats.redeemed += 1;
                match role {
                    Role::Consume => self.hand_out(i, t, registry, effects),
                    Role::Produce => self.hand_back(i, t, effects),
                }
            }
            (Stage::Provide(t), GrantMessage::Provide { name }) if name == t.channel => {
                self.take_segment(i, t, received.fds, now, effects)
            }
            (_, other) => {
                let name = match other {
                    GrantMessage::Redeem { name, .. } | GrantMessage::Provide { name } => name,
                };
                let problem = "unexpected message: redeem a ticket first, provide only after a produce ticket".to_owned();
                refuse(self, effects, Some(name), ErrorCode::InvalidField, problem)
            }
        }
    }

    /// Removes the ticket (whatever the outcome: a ticket is presented once) and checks it.
    fn take_ticket(
        &mut self,
        ticket: &str,
        name: &ChannelName,
        role: Role,
        now: Instant,
    ) -> Result<Ticket, String> {
        if ticket.len() != TICKET_HEX_LEN || !ticket.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("a ticket is {TICKET_HEX_LEN} hexadecimal digits"));
        }
        let t = self
            .tickets
            .remove(&ticket_hash(&ticket.to_ascii_lowercase()))
            .ok_or_else(|| "unknown or already used ticket".to_owned())?;
        if t.expires <= now {
            return Err("the ticket expired".into());
        }
        if &t.channel != name || t.role != role {
            return Err(format!(
                "the ticket was issued for {} of channel {}",
                t.role.as_str(),
                t.channel
            ));
        }
        Ok(t)
    }

    fn answer(&self, i: usize, answer: &GrantAnswer, fds: &[&OwnedFd]) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(answer).unwrap_or_default();
        let borrowed: Vec<_> = fds.iter().map(|fd| fd.as_fd()).collect();
        sys::send_with_fds(self.connections[i].fd.as_fd(), &bytes, &borrowed)
    }

    fn record(&self, i: usize, t: &Ticket) -> GrantRecord {
        let (pid, uid, gid) = self.connections[i].peer;
        GrantRecord {
            role: t.role,
            client: t.client.clone(),
            key: t.key.clone(),
            pid,
            uid,
            gid,
        }
    }

    fn audit_granted(&self, i: usize, t: &Ticket, descriptors: bool, effects: &mut Vec<Effect>) {
        let (pid, uid, gid) = self.connections[i].peer;
        effects.push(Effect::Audit(AuditEvent::Granted {
            channel: t.channel.clone(),
            client: t.client.clone(),
            key: t.key.clone(),
            role: t.role,
            pid,
            uid,
            gid,
            descriptors,
        }));
    }

    /// New open file descriptions of a held segment: each holder's liveness lock is its own.
    fn reopened(pair: &MemfdPair) -> std::io::Result<MemfdPair> {
        Ok(MemfdPair {
            control: sys::reopen(pair.control.as_fd(), true)?,
            data: sys::reopen(pair.data.as_fd(), false)?,
        })
    }

    /// A consumer's ticket: the channel's descriptors. Always closes the connection.
    fn hand_out(
        &mut self,
        i: usize,
        t: Ticket,
        registry: &mut Registry,
        effects: &mut Vec<Effect>,
    ) -> bool {
        let pair = match self.held.get(&t.channel) {
            Some(pair) if registry.memfd_channel_up(&t.channel) => Self::reopened(pair),
            _ => {
                let problem = format!("channel {} has no segment here now", t.channel);
                let _ = self.answer(i, &GrantAnswer::error(ErrorCode::ChannelDown, problem), &[]);
                return false;
            }
        };
        match pair {
            Ok(pair) => {
                if self
                    .answer(i, &GrantAnswer::ok(2), &[&pair.control, &pair.data])
                    .is_ok()
                {
                    self.audit_granted(i, &t, true, effects);
                    registry.record_grant(&t.channel, self.record(i, &t));
                }
            }
            Err(e) => {
                tracing::warn!(channel = %t.channel, error = %e, "cannot reopen a held segment");
                let _ = self.answer(
                    i,
                    &GrantAnswer::error(ErrorCode::Internal, e.to_string()),
                    &[],
                );
            }
        }
        false
    }

    /// A producer's ticket: the segment held for the channel, if any; then wait for its own.
    fn hand_back(&mut self, i: usize, t: Ticket, effects: &mut Vec<Effect>) -> bool {
        let held = self.held.get(&t.channel).map(|p| Self::reopened(p));
        let sent = match &held {
            Some(Ok(pair)) => self.answer(i, &GrantAnswer::ok(2), &[&pair.control, &pair.data]),
            Some(Err(e)) => {
                tracing::warn!(channel = %t.channel, error = %e, "cannot reopen a held segment");
                self.answer(i, &GrantAnswer::ok(0), &[])
            }
            None => self.answer(i, &GrantAnswer::ok(0), &[]),
        };
        if sent.is_err() {
            return false;
        }
        self.audit_granted(i, &t, matches!(held, Some(Ok(_))), effects);
        self.connections[i].stage = Stage::Provide(t);
        true
    }

    /// A producer's segment: checked, reopened and staged until its `register`. Always closes
    /// the connection.
    fn take_segment(
        &mut self,
        i: usize,
        t: Ticket,
        fds: Vec<OwnedFd>,
        now: Instant,
        effects: &mut Vec<Effect>,
    ) -> bool {
        let checked = check_segment(&fds).and_then(|data_size| {
            let pair = MemfdPair {
                control: sys::reopen(fds[0].as_fd(), true).map_err(|e| e.to_string())?,
                data: sys::reopen(fds[1].as_fd(), false).map_err(|e| e.to_string())?,
            };
            Ok((pair, data_size))
        });
        // The descriptors received share the producer's open file descriptions (and with them
        // its liveness lock): the broker keeps only its own.
        drop(fds);
        let (pair, data_size) = match checked {
            Ok(ok) => ok,
            Err(problem) => {
                let peer = self.connections[i].peer;
                self.stats.refused += 1;
                effects.push(Effect::Audit(AuditEvent::GrantSocketRefused {
                    channel: Some(t.channel.clone()),
                    pid: peer.0,
                    uid: peer.1,
                    gid: peer.2,
                    code: ErrorCode::InvalidField.as_str(),
                    problem: problem.clone(),
                }));
                let _ = self.answer(
                    i,
                    &GrantAnswer::error(ErrorCode::InvalidField, problem),
                    &[],
                );
                return false;
            }
        };
        if self.staged.len() >= MAX_TICKETS {
            self.staged.retain(|_, s| s.expires > now);
        }
        let record = self.record(i, &t);
        let (pid, uid, _) = self.connections[i].peer;
        effects.push(Effect::Audit(AuditEvent::SegmentProvided {
            channel: t.channel.clone(),
            client: t.client.clone(),
            pid,
            uid,
            data_size,
        }));
        if self.staged.len() < MAX_TICKETS {
            self.staged.insert(
                (t.client.clone(), t.channel.clone()),
                Staged {
                    pair,
                    data_size,
                    record,
                    process: sys::ProcessId::of(pid).ok(),
                    expires: now + STAGED_LIFETIME,
                },
            );
        }
        let _ = self.answer(i, &GrantAnswer::ok(0), &[]);
        false
    }
}

impl Drop for GrantService {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Checks a producer's two descriptors (control, data): memfds, sealed as docs/SHM_LAYOUT.md
/// says, the control one of the layout's size and still writable, the data one of a
/// plausible size. Returns the data size.
fn check_segment(fds: &[OwnedFd]) -> Result<u64, String> {
    let [control, data] = fds else {
        return Err(format!(
            "a provide message carries 2 descriptors (control, data), not {}",
            fds.len()
        ));
    };
    for (what, fd) in [("control", control), ("data", data)] {
        if !sys::is_memfd(fd.as_fd()) {
            return Err(format!("the {what} descriptor is not a memfd"));
        }
    }
    let seals = |fd: &OwnedFd| sys::seals(fd.as_fd()).map_err(|e| e.to_string());
    let (control_seals, data_seals) = (seals(control)?, seals(data)?);
    if data_seals & sys::DATA_SEALS != sys::DATA_SEALS {
        return Err(format!(
            "the data memfd must be sealed with F_SEAL_FUTURE_WRITE, SHRINK, GROW and SEAL (seals {data_seals:#x})"
        ));
    }
    if control_seals & sys::CONTROL_SEALS != sys::CONTROL_SEALS
        || control_seals & !sys::CONTROL_SEALS != 0
    {
        return Err(format!(
            "the control memfd must be sealed with F_SEAL_SHRINK, GROW and SEAL and nothing else (seals {control_seals:#x})"
        ));
    }
    let size = |fd: &OwnedFd| sys::file_size(fd.as_fd()).map_err(|e| e.to_string());
    let (control_size, data_size) = (size(control)?, size(data)?);
    if control_size != crate::shm::CONTROL_SIZE {
        return Err(format!(
            "the control memfd is {control_size} bytes, the layout's is {}",
            crate::shm::CONTROL_SIZE
        ));
    }
    if data_size == 0 || data_size > MAX_SEGMENT_SIZE || !data_size.is_multiple_of(4096) {
        return Err(format!(
            "the data memfd is {data_size} bytes: a multiple of 4096 from 4096 to {MAX_SEGMENT_SIZE}"
        ));
    }
    Ok(data_size)
}
