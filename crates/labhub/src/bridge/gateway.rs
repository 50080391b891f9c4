//! The receiving end of bridges: a CurveZMQ ROUTER registered with this host's hub as
//! req/rep channel [`GATEWAY_CHANNEL`], admitting exactly the client keys the hub admits.
//! Each bridge that connects gets a session, and each session a worker thread that owns the
//! shared-memory producer of the bridged channel, puts the items of the session back in order
//! (several connections deliver them interleaved), writes them into the ring and returns
//! credit once they are committed. The socket thread never waits on a ring, so a slow
//! channel holds back only its own bridge.
#![deny(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use labhub_zmq::{Context, Flags, Message as ZmqFrame, PollEvents, Socket, SocketType, poll};

use super::wire::{self, ChannelSettings, FromSender, Hello, Refusal, Welcome, tag};
use super::{Background, BridgeError, GATEWAY_CHANNEL};
use crate::client::{Hub, Registered, ShmProducer};
use crate::msg::{BindBuilder, BindOptions, MsgError};
use crate::protocol::{BRIDGED_FROM, ChannelKind, ChannelName};
use crate::shm::{Dynamic, ElementType, Policy, PublishError, StateFormat};

/// How often the gateway tells every connection where its session stands (its keep-alive).
const KEEPALIVE: Duration = Duration::from_millis(500);
/// A session whose sender has been silent this long may be taken over by another bridge.
const SILENT_AFTER: Duration = Duration::from_secs(3);

/// How a [`Gateway`] listens and what it allows.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// The endpoint to bind (`tcp://0.0.0.0:5580`; port 0 picks one). Default
    /// `tcp://127.0.0.1:0`.
    pub bind: String,
    /// The host to advertise when binding a wildcard address.
    pub advertise_host: Option<String>,
    /// Items a sender may have in flight per connection (at least 1; default 16).
    pub window: u32,
    /// How long a session whose sender went away keeps its channel, waiting for the sender
    /// to come back (default 30 s); then the channel is closed.
    pub orphan_timeout: Duration,
    /// The largest message accepted, header and payload (default 256 MiB): a larger one
    /// closes the connection before it is read, and a bridge of larger frames is refused.
    pub max_message_size: usize,
    /// The most bridged channels at once (default 64).
    pub max_sessions: usize,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            bind: crate::msg::DEFAULT_BIND.to_owned(),
            advertise_host: None,
            window: 16,
            orphan_timeout: Duration::from_secs(30),
            max_message_size: 256 << 20,
            max_sessions: 64,
        }
    }
}

/// What a gateway's session has done, as [`Gateway::sessions`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct SessionReport {
    /// The channel on this hub.
    pub channel: String,
    /// Where its frames come from, `CHANNEL@HUB`.
    pub from: String,
    /// How frames are delivered.
    pub delivery: wire::Delivery,
    /// Frames written into the channel.
    pub frames: u64,
    /// Source frames that never arrived or could not be written (gaps in the source ids,
    /// a full ring in lossy delivery).
    pub lost: u64,
    /// Frames that arrived twice (sent again after a reconnection) and were written once.
    pub duplicates: u64,
    /// Senders that opened or resumed this session.
    pub opens: u64,
    /// The session's connections now.
    pub connections: usize,
}

/// The receiving end of bridges on this host; see the module documentation. Stops (closing
/// every bridged channel) when dropped or [`Gateway::stop`]ped.
pub struct Gateway {
    endpoint: String,
    reports: Arc<Mutex<Vec<SessionReport>>>,
    thread: Background,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// The gateway's ROUTER socket and its dialable endpoint.
pub(crate) struct RouterSocket {
    socket: Socket,
    endpoint: String,
}

impl RouterSocket {
    fn bind_with(context: &Context, options: &BindOptions) -> Result<Self, MsgError> {
        let (socket, endpoint) = options.bind(context, SocketType::Router)?;
        // A credit to a sender that has gone fails instead of queueing.
        socket
            .set_router_mandatory(true)
            .map_err(|e| MsgError::zmq("set router mandatory", &endpoint, e))?;
        Ok(Self { socket, endpoint })
    }

    fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

impl Gateway {
    /// Binds the gateway and registers it with `hub` as [`GATEWAY_CHANNEL`]; bridges from
    /// other hosts whose client keys the hub admits can then connect.
    ///
    /// ```no_run
    /// use labhub::bridge::{Gateway, GatewayOptions};
    /// use labhub::client::{ClientConfig, Hub};
    /// let hub = Hub::connect(ClientConfig::from_env()?)?;
    /// let options = GatewayOptions { bind: "tcp://0.0.0.0:5580".into(), ..Default::default() };
    /// let gateway = Gateway::start(&hub, options)?;
    /// println!("bridges arrive at {}", gateway.endpoint());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`BridgeError::Option`] for a zero window; [`BridgeError::Hub`] if binding or
    /// registering fails (another gateway of this hub: `already_exists`).
    pub fn start(hub: &Hub, options: GatewayOptions) -> Result<Self, BridgeError> {
        if options.window == 0 {
            return Err(BridgeError::Option {
                option: "window",
                problem: "at least one item must be allowed in flight".into(),
            });
        }
        // A gateway of this hub that died stays registered until the broker notices (its
        // heartbeat times out): a restarted one waits for that, as a restarted producer does.
        let give_up = Instant::now() + hub.takeover_wait();
        let router: Registered<RouterSocket> = loop {
            let mut builder = BindBuilder::<RouterSocket, _>::new(hub.via(GATEWAY_CHANNEL))
                .bind(options.bind.clone())
                .max_message_size(options.max_message_size)
                // Enough for every item a window allows on a few connections, and their pings.
                .hwm(options.window.saturating_mul(4).max(64));
            if let Some(host) = &options.advertise_host {
                builder = builder.advertise_host(host.clone());
            }
            match crate::client::create_registered(
                builder,
                ChannelKind::Reqrep,
                RouterSocket::bind_with,
                RouterSocket::endpoint,
            ) {
                Ok(router) => break router,
                Err(e)
                    if e.code() == Some(crate::protocol::ErrorCode::AlreadyExists)
                        && Instant::now() < give_up =>
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e.into()),
            }
        };
        let endpoint = router.endpoint.clone();
        let acks_endpoint = format!("inproc://labhub-gateway-{:016x}", super::rand_u64());
        let acks = hub
            .context()
            .socket(SocketType::Pull)
            .and_then(|s| s.bind(&acks_endpoint).map(|()| s))
            .map_err(|source| BridgeError::Zmq {
                what: "binding the gateway's internal socket",
                source,
            })?;
        let reports = Arc::new(Mutex::new(Vec::new()));
        let hub = hub.clone();
        let shared = Arc::clone(&reports);
        let thread = Background::spawn("labhub-gateway".into(), "gateway thread", move |stop| {
            Router {
                hub,
                router,
                acks,
                acks_endpoint,
                options,
                sessions: HashMap::new(),
                by_peer: HashMap::new(),
                stop,
                reports: shared,
                ending: Vec::new(),
            }
            .run()
        })?;
        tracing::info!(%endpoint, "bridge gateway listening");
        Ok(Self {
            endpoint,
            reports,
            thread,
        })
    }

    /// The endpoint bridges dial (also registered with the hub).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// What every session has done so far (refreshed about twice a second).
    pub fn sessions(&self) -> Vec<SessionReport> {
        self.reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether the gateway stopped by itself (its socket failed); [`Gateway::stop`] tells why.
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Stops the gateway: every session ends, every bridged channel is closed, the gateway
    /// is unregistered.
    ///
    /// # Errors
    /// What made the gateway stop by itself, if it did.
    pub fn stop(mut self) -> Result<(), BridgeError> {
        self.thread.finish()
    }
}

/// What the socket thread tells a session's worker.
enum Command {
    /// An item of epoch `epoch`: its frames (type frame first, routing id removed).
    Item {
        epoch: u64,
        seq: u64,
        frames: Vec<ZmqFrame>,
    },
    /// Items start afresh at `next_seq` (a sender that gave items up, or, `new_sender`, a new
    /// sender that adopted the session).
    Reset {
        epoch: u64,
        next_seq: u64,
        new_sender: bool,
    },
}

/// What a worker tells the socket thread (over the inproc PUSH/PULL pair).
mod note {
    /// `[READY, channel]`: the channel exists; the session can start.
    pub const READY: u8 = 1;
    /// `[FAILED, channel, message]`: the channel could not be created.
    pub const FAILED: u8 = 2;
    /// `[ACK, channel, epoch, applied, lost, frames, duplicates]`.
    pub const ACK: u8 = 3;
}

/// One bridged channel.
struct Session {
    hello: Hello,
    /// Connections (routing ids) of the current sender.
    peers: Vec<Vec<u8>>,
    /// Connections that said hello before the channel was ready.
    waiting: Vec<Vec<u8>>,
    ready: bool,
    /// Items the sender may have in flight: the gateway's window per connection.
    window: u32,
    /// The largest item payload the channel can take: its largest frame, or its state zone.
    largest_item: usize,
    /// Items of this epoch handed to the worker and not yet applied.
    forwarded: std::collections::BTreeSet<u64>,
    epoch: u64,
    /// The first item of the current epoch.
    base: u64,
    /// Items applied (from the worker), of the current epoch.
    applied: u64,
    lost: u64,
    frames: u64,
    duplicates: u64,
    opens: u64,
    heard: Instant,
    commands: Sender<Command>,
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<()>>,
}

struct Router {
    hub: Hub,
    router: Registered<RouterSocket>,
    acks: Socket,
    acks_endpoint: String,
    options: GatewayOptions,
    /// By channel name.
    sessions: HashMap<String, Session>,
    /// Routing id → channel name.
    by_peer: HashMap<Vec<u8>, String>,
    stop: Arc<AtomicBool>,
    reports: Arc<Mutex<Vec<SessionReport>>>,
    /// Workers of ended sessions, until they have finished.
    ending: Vec<JoinHandle<()>>,
}

impl Router {
    fn run(&mut self) -> Result<(), BridgeError> {
        let mut last_keepalive = Instant::now();
        let result = loop {
            if self.stop.load(Ordering::SeqCst) {
                break Ok(());
            }
            let (router_in, acks_in) = {
                let mut items = [
                    self.router.socket.poll_item(PollEvents::IN),
                    self.acks.poll_item(PollEvents::IN),
                ];
                if let Err(source) = poll(&mut items, Some(Duration::from_millis(100))) {
                    break Err(BridgeError::Zmq {
                        what: "polling the gateway socket",
                        source,
                    });
                }
                (items[0].is_readable(), items[1].is_readable())
            };
            if router_in {
                self.drain_router();
            }
            if acks_in {
                self.drain_notes();
            }
            if last_keepalive.elapsed() >= KEEPALIVE {
                last_keepalive = Instant::now();
                self.keepalive();
            }
        };
        let sessions: Vec<Session> = self.sessions.drain().map(|(_, s)| s).collect();
        for s in sessions {
            self.ending.extend(end_session(s));
        }
        for w in self.ending.drain(..) {
            let _ = w.join();
        }
        result
    }

    fn drain_router(&mut self) {
        for _ in 0..1024 {
            let frames = match self.router.socket.recv_multipart(Flags::DONTWAIT) {
                Ok(f) => f,
                Err(e) if e.is_again() => return,
                Err(e) => {
                    tracing::warn!(error = %e, "gateway receive failed");
                    return;
                }
            };
            let mut frames = frames.into_iter();
            let Some(peer) = frames.next().map(|f| f.to_vec()) else {
                continue;
            };
            let rest: Vec<ZmqFrame> = frames.collect();
            self.handle(peer, rest);
        }
    }

    fn send(&self, peer: &[u8], frames: &[&[u8]]) {
        let all: Vec<&[u8]> = std::iter::once(peer)
            .chain(frames.iter().copied())
            .collect();
        if let Err(e) = self.router.socket.send_multipart(all, Flags::DONTWAIT) {
            tracing::debug!(error = %e, "a message to a bridge could not be sent");
        }
    }

    fn refuse(&self, peer: &[u8], code: &str, message: String) {
        // A connection the gateway no longer knows (cut and reconnected by ZeroMQ) sends
        // until its sender opens a new session: routine, not worth a warning each time.
        if code == "no_session" {
            tracing::debug!(code, %message, "bridge request refused");
        } else {
            tracing::warn!(code, %message, "bridge request refused");
        }
        let [a, b] = wire::encode_json(
            tag::REFUSED,
            &Refusal {
                code: code.into(),
                message,
            },
        );
        self.send(peer, &[&a, &b]);
    }

    fn welcome(&self, peer: &[u8], acked: u64, window: u32) {
        let [a, b] = wire::encode_json(tag::WELCOME, &Welcome { acked, window });
        self.send(peer, &[&a, &b]);
    }

    fn handle(&mut self, peer: Vec<u8>, frames: Vec<ZmqFrame>) {
        let bytes: Vec<&[u8]> = frames.iter().map(|f| f.as_bytes()).collect();
        let message = match wire::decode_from_sender(&bytes) {
            Ok(m) => m,
            Err(e) => {
                self.refuse(&peer, "bad_request", e.to_string());
                return;
            }
        };
        let seq = match message {
            FromSender::Hello(hello) => return self.hello(peer, hello),
            FromSender::Frame(ref head, _) => head.seq,
            FromSender::State { seq, .. } | FromSender::Renumber { seq } => seq,
            FromSender::Ping => {
                if let Some(s) = self.session_of(&peer) {
                    s.heard = Instant::now();
                }
                return;
            }
            FromSender::Bye => {
                if let Some(name) = self.by_peer.get(&peer).cloned()
                    && let Some(s) = self.sessions.remove(&name)
                {
                    tracing::info!(channel = %name, "bridge said goodbye; channel closed");
                    self.by_peer.retain(|_, n| *n != name);
                    self.ending.extend(end_session(s));
                    self.publish_reports();
                }
                return;
            }
        };
        drop(bytes);
        let Some(s) = self.session_of(&peer) else {
            self.refuse(&peer, "no_session", "say hello first".into());
            return;
        };
        s.heard = Instant::now();
        let floor = s.applied.max(s.base);
        if seq >= floor.saturating_add(u64::from(s.window)) {
            // Past the credit given: a sender that ignores the protocol. Dropped, so what a
            // peer can make the gateway hold stays bounded by the window.
            tracing::warn!(seq, floor, "a bridge sent past its credit; item dropped");
            return;
        }
        let payload = frames.get(1).map_or(0, |f| f.len());
        if payload > s.largest_item {
            tracing::warn!(
                seq,
                payload,
                largest = s.largest_item,
                "a bridge item is larger than its channel allows; dropped"
            );
            return;
        }
        // An item already handed to the worker (sent again after a reconnection) is not
        // queued twice: the worker's queue holds at most a window of items per epoch.
        s.forwarded.retain(|&f| f >= floor);
        if seq < floor || !s.forwarded.insert(seq) {
            return;
        }
        let epoch = s.epoch;
        let _ = s.commands.send(Command::Item { epoch, seq, frames });
    }

    fn session_of(&mut self, peer: &[u8]) -> Option<&mut Session> {
        let name = self.by_peer.get(peer)?;
        self.sessions.get_mut(name)
    }

    fn hello(&mut self, peer: Vec<u8>, hello: Hello) {
        if hello.version != wire::VERSION {
            return self.refuse(
                &peer,
                "version",
                format!(
                    "bridge protocol {} is not this gateway's {}",
                    hello.version,
                    wire::VERSION
                ),
            );
        }
        if let Err(e) = ChannelName::new(hello.channel.as_str()) {
            return self.refuse(&peer, "bad_request", e.to_string());
        }
        if let Err(problem) = check_settings(&hello.settings) {
            return self.refuse(&peer, "bad_request", problem);
        }
        let largest = largest_item(&hello.settings);
        if largest.saturating_add(MAX_HEAD) > self.options.max_message_size {
            return self.refuse(
                &peer,
                "mismatch",
                format!(
                    "frames of up to {largest} bytes do not fit this gateway's largest message of {} bytes",
                    self.options.max_message_size
                ),
            );
        }
        if !self.sessions.contains_key(&hello.channel)
            && self.sessions.len() >= self.options.max_sessions
        {
            return self.refuse(
                &peer,
                "busy",
                format!(
                    "this gateway serves its most bridges, {}",
                    self.options.max_sessions
                ),
            );
        }
        let from = format!("{}@{}", hello.from_channel, hello.from_hub);
        let name = hello.channel.clone();
        if let Some(s) = self.sessions.get_mut(&name) {
            let ours = s.hello.bridge == hello.bridge;
            if !ours && s.heard.elapsed() < SILENT_AFTER {
                let busy = format!(
                    "channel {name} is being bridged from {}@{} by another bridge",
                    s.hello.from_channel, s.hello.from_hub
                );
                return self.refuse(&peer, "busy", busy);
            }
            if ours && hello.attempt < s.hello.attempt {
                // A HELLO of connections the sender has already replaced.
                return;
            }
            if s.hello.settings != hello.settings
                || s.hello.from_channel != hello.from_channel
                || s.hello.from_hub != hello.from_hub
                || s.hello.delivery != hello.delivery
            {
                if ours {
                    return self.refuse(
                        &peer,
                        "mismatch",
                        format!("a connection of this bridge to {name} disagrees with the first"),
                    );
                }
                // Another source or other settings: a new channel, not a continuation.
                if let Some(old) = self.sessions.remove(&name) {
                    self.by_peer.retain(|_, n| *n != name);
                    self.ending.extend(end_session(old));
                }
                return self.hello(peer, hello);
            }
            s.heard = Instant::now();
            // A restarted sender of the same source adopts the channel; a sender that gave up
            // items (lossy, after a reconnection) skips past them. Either way its items start
            // afresh, and source frames that never arrive show up as gaps in the source ids.
            if !ours || hello.next_seq > s.applied.max(s.base) {
                s.epoch += 1;
                s.base = hello.next_seq;
                s.applied = hello.next_seq;
                s.forwarded.clear();
                let _ = s.commands.send(Command::Reset {
                    epoch: s.epoch,
                    next_seq: hello.next_seq,
                    new_sender: !ours,
                });
            }
            if hello.attempt != s.hello.attempt || !ours {
                // A new set of connections (a reconnection or a new sender): the old ones are
                // gone.
                s.peers.clear();
                s.waiting.clear();
                self.by_peer.retain(|_, n| *n != name);
            }
            if !ours {
                s.window = session_window(self.options.window, hello.connections);
                s.opens += 1;
                tracing::info!(channel = %name, %from, "a new bridge resumed the channel");
            }
            s.hello = hello;
            let Some(s) = self.sessions.get_mut(&name) else {
                return;
            };
            if s.peers.len() + s.waiting.len()
                >= s.hello.connections.clamp(1, super::MAX_CONNECTIONS) as usize
                && !s.peers.contains(&peer)
                && !s.waiting.contains(&peer)
            {
                return self.refuse(
                    &peer,
                    "bad_request",
                    "more connections than the bridge announced".into(),
                );
            }
            self.by_peer.insert(peer.clone(), name.clone());
            if s.ready {
                if !s.peers.contains(&peer) {
                    s.peers.push(peer.clone());
                }
                let (acked, window) = (s.applied.max(s.base), s.window);
                self.welcome(&peer, acked, window);
            } else if !s.waiting.contains(&peer) {
                s.waiting.push(peer);
            }
            return;
        }
        // A new session: its worker creates the channel and says when it is ready.
        let (commands, inbox) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let worker = {
            let hub = self.hub.clone();
            let hello = hello.clone();
            let stop = Arc::clone(&stop);
            let acks = self.acks_endpoint.clone();
            std::thread::Builder::new()
                .name(format!("labhub-bridge-{name}"))
                .spawn(move || Worker::run(hub, hello, inbox, &acks, stop))
        };
        let worker = match worker {
            Ok(w) => w,
            Err(e) => return self.refuse(&peer, "channel", e.to_string()),
        };
        tracing::info!(channel = %name, %from, delivery = %hello.delivery, "bridge session opened");
        self.by_peer.insert(peer.clone(), name.clone());
        self.sessions.insert(
            name,
            Session {
                window: session_window(self.options.window, hello.connections),
                largest_item: largest_item(&hello.settings),
                forwarded: Default::default(),
                base: hello.next_seq,
                applied: hello.next_seq,
                hello,
                peers: Vec::new(),
                waiting: vec![peer],
                ready: false,
                epoch: 0,
                lost: 0,
                frames: 0,
                duplicates: 0,
                opens: 1,
                heard: Instant::now(),
                commands,
                stop,
                worker: Some(worker),
            },
        );
    }

    fn drain_notes(&mut self) {
        loop {
            let frames = match self.acks.recv_multipart_bytes(Flags::DONTWAIT) {
                Ok(f) => f,
                Err(_) => return,
            };
            let (Some(kind), Some(name)) = (frames.first(), frames.get(1)) else {
                continue;
            };
            let name = String::from_utf8_lossy(name).into_owned();
            match kind.first().copied() {
                Some(note::READY) => {
                    let Some(s) = self.sessions.get_mut(&name) else {
                        continue;
                    };
                    s.ready = true;
                    let waiting = std::mem::take(&mut s.waiting);
                    let (acked, window) = (s.applied.max(s.base), s.window);
                    for p in &waiting {
                        if !s.peers.contains(p) {
                            s.peers.push(p.clone());
                        }
                    }
                    for p in waiting {
                        self.welcome(&p, acked, window);
                    }
                }
                Some(note::FAILED) => {
                    let problem = frames
                        .get(2)
                        .map(|m| String::from_utf8_lossy(m).into_owned())
                        .unwrap_or_default();
                    if let Some(s) = self.sessions.remove(&name) {
                        self.by_peer.retain(|_, n| *n != name);
                        for p in s.waiting.iter().chain(&s.peers) {
                            self.refuse(p, "channel", problem.clone());
                        }
                        self.ending.extend(end_session(s));
                    }
                }
                Some(note::ACK) => {
                    let nums: Vec<u64> = frames[2..]
                        .iter()
                        .map(|b| b.as_slice().try_into().map_or(0, u64::from_le_bytes))
                        .collect();
                    let [epoch, applied, lost, written, duplicates] = nums[..] else {
                        continue;
                    };
                    let Some(s) = self.sessions.get_mut(&name) else {
                        continue;
                    };
                    s.lost = lost;
                    s.frames = written;
                    s.duplicates = duplicates;
                    if epoch != s.epoch {
                        continue;
                    }
                    s.applied = applied;
                    let credit = wire::encode_credit(applied, lost);
                    // Credit goes to every connection: any of them may be the one that
                    // still works.
                    let peers = s.peers.clone();
                    for p in &peers {
                        self.send(p, &[&credit]);
                    }
                }
                _ => {}
            }
        }
    }

    fn keepalive(&mut self) {
        self.ending.retain(|w| !w.is_finished());
        let orphaned: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                s.heard.elapsed() > self.options.orphan_timeout
                    || s.worker.as_ref().is_some_and(|w| w.is_finished())
            })
            .map(|(n, _)| n.clone())
            .collect();
        for name in orphaned {
            if let Some(s) = self.sessions.remove(&name) {
                tracing::warn!(channel = %name, "bridge session ended: its sender is gone");
                self.by_peer.retain(|_, n| *n != name);
                self.ending.extend(end_session(s));
            }
        }
        for s in self.sessions.values() {
            if !s.ready {
                continue;
            }
            let credit = wire::encode_credit(s.applied.max(s.base), s.lost);
            for p in &s.peers {
                self.send(p, &[&credit]);
            }
        }
        self.publish_reports();
    }

    fn publish_reports(&self) {
        let mut reports: Vec<SessionReport> = self
            .sessions
            .iter()
            .map(|(name, s)| SessionReport {
                channel: name.clone(),
                from: format!("{}@{}", s.hello.from_channel, s.hello.from_hub),
                delivery: s.hello.delivery,
                frames: s.frames,
                lost: s.lost,
                duplicates: s.duplicates,
                opens: s.opens,
                connections: s.peers.len(),
            })
            .collect();
        reports.sort_by(|a, b| a.channel.cmp(&b.channel));
        *self.reports.lock().unwrap_or_else(|e| e.into_inner()) = reports;
    }
}

/// Ends a session: its worker stops (a loan it waits in gives up) and closes the channel. The
/// worker is not waited for here (it may be creating the channel, which can take seconds), so
/// the socket thread keeps serving the other bridges; its handle is reaped later.
fn end_session(mut s: Session) -> Option<JoinHandle<()>> {
    s.stop.store(true, Ordering::SeqCst);
    drop(s.commands);
    s.worker.take()
}

/// A session's window: `per_connection` items on each of its connections.
fn session_window(per_connection: u32, connections: u32) -> u32 {
    per_connection.saturating_mul(connections.clamp(1, super::MAX_CONNECTIONS))
}

/// The largest frame header (four dimensions).
const MAX_HEAD: usize = 42 + 8 * crate::shm::MAX_DIMS;

/// The largest item payload a channel of `s` takes: its largest frame or its state zone.
fn largest_item(s: &ChannelSettings) -> usize {
    let element = s.element.parse::<ElementType>().map_or(8, |e| e.size());
    let frame = s
        .max_shape
        .iter()
        .try_fold(element, |n, &d| n.checked_mul(d))
        .unwrap_or(u64::MAX);
    usize::try_from(frame.max(s.flex_size)).unwrap_or(usize::MAX)
}

/// Checks settings a sender announced before anything is created from them.
fn check_settings(s: &ChannelSettings) -> Result<(), String> {
    s.policy
        .parse::<Policy>()
        .map_err(|e| format!("settings.policy: {e}"))?;
    s.element
        .parse::<ElementType>()
        .map_err(|e| format!("settings.element: {e}"))?;
    if StateFormat::from_code(s.state_format).is_none() {
        return Err(format!(
            "settings.state_format: code {} is not a format this gateway knows",
            s.state_format
        ));
    }
    Ok(())
}

/// The thread that owns one bridged channel's producer.
struct Worker {
    name: String,
    producer: ShmProducer<Dynamic>,
    acks: Socket,
    delivery: wire::Delivery,
    stop: Arc<AtomicBool>,
    epoch: u64,
    applied: u64,
    pending: BTreeMap<u64, Vec<ZmqFrame>>,
    /// The newest source frame id written.
    last_origin: Option<u64>,
    /// A new sender adopted the session and has not sent a frame yet: a first frame whose id
    /// is not above the newest written comes from a source channel that numbers afresh (it
    /// was made again), not from a resend, which a new sender cannot have.
    fresh_sender: bool,
    last_state: u64,
    lost: u64,
    written: u64,
    duplicates: u64,
}

impl Worker {
    fn run(hub: Hub, hello: Hello, inbox: Receiver<Command>, acks: &str, stop: Arc<AtomicBool>) {
        let name = hello.channel.clone();
        let socket = match hub
            .context()
            .socket(SocketType::Push)
            .and_then(|s| s.connect(acks).map(|()| s))
        {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "a bridge worker could not reach the gateway");
                return;
            }
        };
        let mut producer = match create_channel(&hub, &hello) {
            Ok(p) => p,
            Err(problem) => {
                let _ = socket.send_multipart(
                    [&[note::FAILED][..], name.as_bytes(), problem.as_bytes()],
                    Flags::NONE,
                );
                return;
            }
        };
        let flag = Arc::clone(&stop);
        producer
            .producer()
            .set_interrupt(Some(Box::new(move || flag.load(Ordering::SeqCst))));
        let last_origin = producer.producer().newest_origin_id();
        if last_origin.is_some() {
            // Taken over from a gateway that died: the channel's consumers attach again to
            // this new segment, and until they do, nothing holds the ring back for them.
            wait_for_consumers(&hub, &mut producer, &stop);
        }
        let _ = socket.send_multipart([&[note::READY][..], name.as_bytes()], Flags::NONE);
        let mut w = Worker {
            name,
            producer,
            acks: socket,
            delivery: hello.delivery,
            stop,
            epoch: 0,
            applied: hello.next_seq,
            pending: BTreeMap::new(),
            last_origin,
            fresh_sender: false,
            last_state: 0,
            lost: 0,
            written: 0,
            duplicates: 0,
        };
        while let Ok(command) = inbox.recv() {
            if w.stop.load(Ordering::SeqCst) {
                break;
            }
            match command {
                Command::Reset {
                    epoch,
                    next_seq,
                    new_sender,
                } => {
                    w.epoch = epoch;
                    w.applied = next_seq;
                    w.pending.clear();
                    w.fresh_sender |= new_sender;
                    if new_sender {
                        // Its first state is the source's current one, whatever its version.
                        w.last_state = 0;
                    }
                }
                Command::Item { epoch, seq, frames } => {
                    if epoch != w.epoch {
                        continue;
                    }
                    if seq >= w.applied {
                        w.pending.insert(seq, frames);
                    }
                    while let Some(frames) = w.pending.remove(&w.applied) {
                        w.apply(&frames);
                        w.applied += 1;
                    }
                    w.ack();
                }
            }
        }
    }

    fn ack(&self) {
        let nums = [
            self.epoch,
            self.applied,
            self.lost,
            self.written,
            self.duplicates,
        ]
        .map(u64::to_le_bytes);
        let mut frames: Vec<&[u8]> = vec![&[note::ACK], self.name.as_bytes()];
        frames.extend(nums.iter().map(|n| &n[..]));
        let _ = self.acks.send_multipart(frames, Flags::NONE);
    }

    fn apply(&mut self, frames: &[ZmqFrame]) {
        let bytes: Vec<&[u8]> = frames.iter().map(|f| f.as_bytes()).collect();
        match wire::decode_from_sender(&bytes) {
            Ok(FromSender::Frame(head, payload)) => self.write_frame(&head, payload),
            Ok(FromSender::Renumber { .. }) => {
                tracing::info!(channel = %self.name, "the source channel numbers its frames afresh");
                // Its state versions too.
                self.last_origin = None;
                self.last_state = 0;
            }
            Ok(FromSender::State { version, bytes, .. }) if version > self.last_state => {
                self.last_state = version;
                if let Err(e) = self.producer.producer().write_state_bytes(bytes) {
                    tracing::warn!(channel = %self.name, error = %e, "a bridged state could not be written");
                }
            }
            _ => {}
        }
    }

    fn write_frame(&mut self, head: &wire::FrameHead, payload: &[u8]) {
        if std::mem::take(&mut self.fresh_sender)
            && self.last_origin.is_some_and(|last| head.origin <= last)
        {
            tracing::info!(channel = %self.name, origin = head.origin, "the source channel numbers its frames afresh");
            self.last_origin = None;
        }
        if let Some(last) = self.last_origin {
            if head.origin <= last {
                // Sent again after a reconnection, already written.
                self.duplicates += 1;
                return;
            }
            // Frames the sender skipped on purpose (lossy) are its count, not a loss here.
            self.lost += (head.origin - last - 1).saturating_sub(head.skipped);
        }
        let lossy = self.delivery == wire::Delivery::Lossy;
        let producer = self.producer.producer();
        let mut slot = loop {
            // Blocked on a full lossless ring, the loan gives up when the session ends.
            match producer.loan_shape(&head.shape) {
                Ok(slot) => break slot,
                Err(PublishError::Timeout { .. } | PublishError::Full { .. })
                    if !lossy && !self.stop.load(Ordering::SeqCst) =>
                {
                    // The ring's backpressure: credit stays out until the consumers make room.
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => {
                    tracing::debug!(channel = %self.name, error = %e, "a bridged frame was not written");
                    self.lost += 1;
                    self.last_origin = Some(head.origin);
                    return;
                }
            }
        };
        if slot.len() != payload.len() {
            tracing::warn!(
                channel = %self.name,
                expected = slot.len(),
                got = payload.len(),
                "a bridged frame's payload disagrees with its shape; dropped"
            );
            drop(slot);
            self.lost += 1;
            self.last_origin = Some(head.origin);
            return;
        }
        slot.copy_from_slice(payload);
        slot.set_timestamp_ns(head.timestamp_ns);
        slot.set_origin_id(head.origin);
        slot.commit();
        self.written += 1;
        self.last_origin = Some(head.origin);
    }
}

/// How long a gateway that took a channel over waits for its consumers to come back.
const REATTACH_WAIT: Duration = Duration::from_secs(5);

/// Waits (at most [`REATTACH_WAIT`]) until as many consumers are attached to the segment as
/// the broker counts attached to the channel.
fn wait_for_consumers(hub: &Hub, producer: &mut ShmProducer<Dynamic>, stop: &AtomicBool) {
    let name = producer.channel().to_string();
    let give_up = Instant::now() + REATTACH_WAIT;
    while Instant::now() < give_up && !stop.load(Ordering::SeqCst) {
        let expected = hub.discover(&name).map_or(0, |i| i.consumers as usize);
        let attached = producer
            .producer()
            .report()
            .consumers
            .iter()
            .filter(|c| c.alive)
            .count();
        if attached >= expected {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    tracing::warn!(channel = %name, "not every consumer came back to the taken-over channel in time");
}

/// Creates (or takes over) the bridged channel with the source's settings.
fn create_channel(hub: &Hub, hello: &Hello) -> Result<ShmProducer<Dynamic>, String> {
    let s = &hello.settings;
    let policy: Policy = s.policy.parse().map_err(|e| format!("{e}"))?;
    let element: ElementType = s.element.parse().map_err(|e| format!("{e}"))?;
    let format = StateFormat::from_code(s.state_format).unwrap_or_default();
    let mut builder = hub
        .channel(&hello.channel)
        .policy(policy)
        .dynamic(element, &s.max_shape)
        .flex_size(s.flex_size)
        .checksum(s.checksum)
        .state_format(format)
        .annotate(
            BRIDGED_FROM,
            format!("{}@{}", hello.from_channel, hello.from_hub),
        );
    if let Some(schema) = &s.schema_name {
        builder = builder.schema(schema.clone(), s.schema_version);
    }
    builder.create().map_err(|e| {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    })
}
