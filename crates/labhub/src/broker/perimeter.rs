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
//! - **receive budget**: an authenticated connection may send at most
//!   [`PerimeterLimits::receive_burst`] bytes beyond a sustained
//!   [`PerimeterLimits::receive_rate`] (a token bucket on the kernel's count of bytes received,
//!   `TCP_INFO`). A connection over budget is shut down, and libzmq frees whatever it held for
//!   it, a partly received message included. Arrivals wake the broker (an edge-triggered
//!   epoll set in its poll loop), so a connection is cut soon after it passes the budget.
//!
//! Both apply to TCP connections, whose peers have addresses; an `ipc://` peer has none to
//! tell connections apart, and its socket file's permissions decide who can connect.
#![deny(unsafe_code)]

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use labhub_zmq::peer::{self, ActivityWatch};
use labhub_zmq::{MonitorEvent, PollItem, SocketEvent};

/// The bounds the perimeter enforces on each bound socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerimeterLimits {
    /// Most connections in their handshake at once, per socket.
    pub max_pending: usize,
    /// How long a handshake may take before libzmq closes the connection (`ZMQ_HANDSHAKE_IVL`).
    pub handshake_timeout: Duration,
    /// Bytes an authenticated connection may send in a burst above the sustained rate.
    pub receive_burst: u64,
    /// Bytes per second an authenticated connection may send, sustained.
    pub receive_rate: u64,
}

impl Default for PerimeterLimits {
    fn default() -> Self {
        Self {
            max_pending: 256,
            handshake_timeout: Duration::from_secs(5),
            receive_burst: 8 * 1024 * 1024,
            receive_rate: 4 * 1024 * 1024,
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
    /// Authenticated connections shut down for sending more than their budget.
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
    /// Budget left, in bytes (negative: over budget).
    credit: i64,
    bytes_seen: u64,
    refilled: Instant,
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
    pub(crate) fn on_event(&mut self, event: &MonitorEvent, now: Instant) {
        match event.event {
            SocketEvent::Accepted => self.accepted(event.value, &event.remote),
            SocketEvent::HandshakeSucceeded => self.authenticated(&event.remote, now),
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
                credit: 0,
                bytes_seen: 0,
                refilled: Instant::now(),
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

    fn authenticated(&mut self, remote: &str, now: Instant) {
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
        c.credit = i64::try_from(self.limits.receive_burst).unwrap_or(i64::MAX);
        c.bytes_seen = peer::bytes_received(fd, remote).unwrap_or(0);
        c.refilled = now;
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

    /// Charges what the connections that received data since the last call have sent.
    pub(crate) fn on_activity(&mut self, now: Instant) {
        let mut ready = std::mem::take(&mut self.ready);
        ready.clear();
        self.watch.ready(&mut ready);
        for &fd in &ready {
            self.charge(fd, now);
        }
        self.ready = ready;
    }

    /// Charges every authenticated connection (catches what an activity wake-up missed and
    /// refills budgets).
    pub(crate) fn sweep(&mut self, now: Instant) {
        let fds: Vec<u64> = self
            .connections
            .iter()
            .filter(|(_, c)| c.state == State::Authenticated)
            .map(|(fd, _)| *fd)
            .collect();
        for fd in fds {
            self.charge(fd, now);
        }
    }

    fn charge(&mut self, fd: u64, now: Instant) {
        let Some(c) = self.connections.get_mut(&fd) else {
            return;
        };
        if c.state != State::Authenticated {
            return;
        }
        let Some(bytes) = peer::bytes_received(fd, &c.remote) else {
            return;
        };
        let burst = i64::try_from(self.limits.receive_burst).unwrap_or(i64::MAX);
        let elapsed = now.saturating_duration_since(c.refilled);
        let refill = (elapsed.as_secs_f64() * self.limits.receive_rate as f64) as i64;
        if refill > 0 {
            c.credit = c.credit.saturating_add(refill).min(burst);
            c.refilled = now;
        }
        let sent = i64::try_from(bytes.saturating_sub(c.bytes_seen)).unwrap_or(i64::MAX);
        c.bytes_seen = bytes;
        c.credit = c.credit.saturating_sub(sent);
        if c.credit < 0 {
            tracing::warn!(
                socket = self.label,
                remote = %c.remote,
                burst = self.limits.receive_burst,
                rate = self.limits.receive_rate,
                "connection sent more than its budget: shut down"
            );
            if peer::shut_down(fd, &c.remote) {
                c.state = State::Closing;
                self.stats.authenticated -= 1;
                self.stats.cut += 1;
            }
        }
    }
}
