//! The broker's perimeter: what one network connection may cost before it authenticates and
//! after.
//!
//! libzmq keeps every accepted connection until its handshake ends, whatever the peer sends,
//! and it delivers a multipart message to the broker only once every frame has arrived, with
//! no bound on the whole message (`ZMQ_MAXMSGSIZE` bounds each frame). Neither is configurable
//! inside libzmq, so the broker watches each bound socket's connections through the socket
//! monitor ([`labhub_zmq::MonitorEvent`] names each connection by descriptor and peer) and
//! enforces, per socket:
//!
//! - **pending connections**: at most [`PerimeterLimits::max_pending`] connections may be in
//!   their handshake at once; when another arrives, the oldest pending one is shut down. An
//!   admitted client that lost its place reconnects by itself (ZeroMQ reconnects), while a
//!   flood of idle connections never holds more than this many descriptors;
//! - **unanswered bytes**: the broker answers every request, so a connection that keeps
//!   sending while the broker sends it nothing is holding an unfinished message (or never
//!   reads its replies). From the kernel's byte counts (`TCP_INFO`), an authenticated
//!   connection may receive at most [`PerimeterLimits::max_unanswered`] bytes after the last
//!   time its peer acknowledged data from the broker; past that it is shut down, and libzmq
//!   frees whatever it held for it, a partly received message included. Arrivals wake the
//!   broker (an edge-triggered epoll set in its poll loop), so a connection is cut soon after
//!   it passes the limit, whatever its rate.
//!
//! Both apply to TCP connections, whose peers have addresses; an `ipc://` peer has none to
//! tell connections apart, and its socket file's permissions decide who can connect.
#![deny(unsafe_code)]

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use labhub_zmq::peer::{self, ActivityWatch};
use labhub_zmq::{MonitorEvent, PollItem, SocketEvent};

/// The bounds the perimeter enforces on each bound socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerimeterLimits {
    /// Most connections in their handshake at once, per socket.
    pub max_pending: usize,
    /// How long a handshake may take before libzmq closes the connection (`ZMQ_HANDSHAKE_IVL`).
    pub handshake_timeout: Duration,
    /// Bytes an authenticated connection may send after the last data from the broker it
    /// acknowledged. At least the request queue's worth of largest requests (64 × 64 KiB).
    pub max_unanswered: u64,
}

impl Default for PerimeterLimits {
    fn default() -> Self {
        Self {
            max_pending: 256,
            handshake_timeout: Duration::from_secs(5),
            max_unanswered: 8 * 1024 * 1024,
        }
    }
}

/// What the perimeter of one socket has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PerimeterStats {
    /// Connections in their handshake now.
    pub pending: usize,
    /// Authenticated connections now.
    pub authenticated: usize,
    /// Connections accepted so far.
    pub accepted: u64,
    /// Pending connections shut down to make room for newer ones.
    pub evicted: u64,
    /// Authenticated connections shut down for sending too much unanswered.
    pub cut: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Authenticated,
    /// Shut down by the perimeter; the disconnect event is on its way.
    Closing,
}

#[derive(Debug)]
struct Connection {
    remote: String,
    seq: u64,
    state: State,
    /// Bytes received when the peer last acknowledged something new from the broker.
    answered_at: u64,
    /// Bytes of the broker's the peer had acknowledged then.
    acked: u64,
}

/// The perimeter of one bound socket. See the module documentation.
#[derive(Debug)]
pub(crate) struct Perimeter {
    label: &'static str,
    limits: PerimeterLimits,
    watch: ActivityWatch,
    connections: HashMap<u64, Connection>,
    by_remote: HashMap<String, u64>,
    /// Pending connections in arrival order, as (seq, fd); entries whose connection moved on
    /// are skipped when reached.
    arrivals: VecDeque<(u64, u64)>,
    next_seq: u64,
    stats: PerimeterStats,
    ready: Vec<u64>,
}

impl Perimeter {
    /// A perimeter for the socket named `label` in logs.
    pub(crate) fn new(label: &'static str, limits: PerimeterLimits) -> std::io::Result<Self> {
        Ok(Self {
            label,
            limits,
            watch: ActivityWatch::new()?,
            connections: HashMap::new(),
            by_remote: HashMap::new(),
            arrivals: VecDeque::new(),
            next_seq: 0,
            stats: PerimeterStats::default(),
            ready: Vec::new(),
        })
    }

    /// The counters so far.
    pub(crate) fn stats(&self) -> PerimeterStats {
        self.stats
    }

    /// A poll item readable when an authenticated connection received data.
    pub(crate) fn poll_item(&self) -> PollItem<'_> {
        self.watch.poll_item()
    }

    /// Takes one monitor event of the socket into account.
    pub(crate) fn on_event(&mut self, event: &MonitorEvent) {
        match event.event {
            SocketEvent::Accepted => self.accepted(event.value, &event.remote),
            SocketEvent::HandshakeSucceeded => self.authenticated(&event.remote),
            SocketEvent::Disconnected | SocketEvent::Closed => {
                self.gone(event.value, &event.remote);
            }
            _ => {}
        }
    }

    fn accepted(&mut self, fd: u64, remote: &str) {
        // Only TCP peers can be told apart and shut down (see the module documentation).
        if !remote.starts_with("tcp://") {
            return;
        }
        // A descriptor number is reused only after its connection closed.
        if let Some(old) = self.connections.remove(&fd) {
            self.forget(fd, &old);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.connections.insert(
            fd,
            Connection {
                remote: remote.to_owned(),
                seq,
                state: State::Pending,
                answered_at: 0,
                acked: 0,
            },
        );
        self.by_remote.insert(remote.to_owned(), fd);
        self.arrivals.push_back((seq, fd));
        self.stats.accepted += 1;
        self.stats.pending += 1;
        while self.stats.pending > self.limits.max_pending {
            let Some((seq, fd)) = self.arrivals.pop_front() else {
                break;
            };
            let Some(c) = self.connections.get_mut(&fd) else {
                continue;
            };
            if c.seq != seq || c.state != State::Pending {
                continue;
            }
            c.state = State::Closing;
            self.stats.pending -= 1;
            self.stats.evicted += 1;
            if !peer::shut_down(fd, &c.remote) {
                // Not a TCP connection, or already gone: nothing to shut down.
                tracing::debug!(socket = self.label, fd, remote = %c.remote, "pending connection already gone");
            }
        }
        if self.arrivals.len() > 4 * self.limits.max_pending.max(1) {
            let connections = &self.connections;
            self.arrivals.retain(|(seq, fd)| {
                connections
                    .get(fd)
                    .is_some_and(|c| c.seq == *seq && c.state == State::Pending)
            });
        }
    }

    fn authenticated(&mut self, remote: &str) {
        let Some(&fd) = self.by_remote.get(remote) else {
            return;
        };
        let Some(c) = self.connections.get_mut(&fd) else {
            return;
        };
        if c.state != State::Pending {
            return;
        }
        c.state = State::Authenticated;
        self.stats.pending -= 1;
        self.stats.authenticated += 1;
        if let Some(counts) = peer::tcp_counts(fd, remote) {
            c.answered_at = counts.received;
            c.acked = counts.acked;
        }
        self.watch.watch(fd, remote);
    }

    fn gone(&mut self, fd: u64, remote: &str) {
        if let Some(c) = self.connections.get(&fd)
            && (remote.is_empty() || c.remote == remote)
            && let Some(c) = self.connections.remove(&fd)
        {
            self.forget(fd, &c);
        }
    }

    fn forget(&mut self, fd: u64, c: &Connection) {
        match c.state {
            State::Pending => self.stats.pending -= 1,
            State::Authenticated => self.stats.authenticated -= 1,
            State::Closing => {}
        }
        if self.by_remote.get(&c.remote) == Some(&fd) {
            self.by_remote.remove(&c.remote);
        }
        self.watch.unwatch(fd);
    }

    /// Checks the connections that received data since the last call.
    pub(crate) fn on_activity(&mut self) {
        let mut ready = std::mem::take(&mut self.ready);
        ready.clear();
        self.watch.ready(&mut ready);
        for &fd in &ready {
            self.charge(fd);
        }
        self.ready = ready;
    }

    /// Checks every authenticated connection (catches what an activity wake-up missed).
    pub(crate) fn sweep(&mut self) {
        let fds: Vec<u64> = self
            .connections
            .iter()
            .filter(|(_, c)| c.state == State::Authenticated)
            .map(|(fd, _)| *fd)
            .collect();
        for fd in fds {
            self.charge(fd);
        }
    }

    fn charge(&mut self, fd: u64) {
        let Some(c) = self.connections.get_mut(&fd) else {
            return;
        };
        if c.state != State::Authenticated {
            return;
        }
        let Some(counts) = peer::tcp_counts(fd, &c.remote) else {
            return;
        };
        if counts.acked > c.acked {
            // The peer took something new from the broker (a reply, a notification): what it
            // sent up to now is being answered.
            c.acked = counts.acked;
            c.answered_at = counts.received;
            return;
        }
        let unanswered = counts.received.saturating_sub(c.answered_at);
        if unanswered > self.limits.max_unanswered {
            tracing::warn!(
                socket = self.label,
                remote = %c.remote,
                unanswered,
                limit = self.limits.max_unanswered,
                "connection sent too much without taking anything from the broker: shut down"
            );
            if peer::shut_down(fd, &c.remote) {
                c.state = State::Closing;
                self.stats.authenticated -= 1;
                self.stats.cut += 1;
            }
        }
    }
}
