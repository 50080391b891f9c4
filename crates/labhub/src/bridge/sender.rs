//! The sending end of a bridge: a consumer of a local channel whose frames go, with their
//! metadata and state, to the gateway of a peer hub over one or more CurveZMQ connections.
//!
//! Items (frames and states) are numbered; the gateway returns credit as it commits them, and
//! the sender never has more than the gateway's window in flight. Lossless: the consumer holds
//! the local producer back, and every item sent is kept until credited, so a reconnection sends
//! again what was in flight (the gateway writes each source frame once). Lossy: the consumer
//! takes the newest frame when there is credit, and nothing is sent again.
#![deny(unsafe_code)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use labhub_zmq::{Flags, Message as ZmqFrame, PollEvents, SocketType, poll};

use super::spool::{self, Pending, Spool};
use super::wire::{self, ChannelSettings, Delivery, FromGateway, Hello, tag};
use super::{Background, BridgeError, GATEWAY_CHANNEL};
use crate::client::{ClientConfig, ClientError, Hub, ShmConsumer};
use crate::msg::{ClientCurve, CloseReason, ConnectOptions, Link};
use crate::protocol::{ChannelKind, ChannelName, ErrorCode};
use crate::shm::{DeliveryMode, Dynamic};

/// The most connections one bridge opens.
pub const MAX_CONNECTIONS: u32 = 16;
/// How often the sender pings the gateway.
const PING_EVERY: Duration = Duration::from_millis(500);

/// How a [`Bridge`] runs.
#[derive(Debug, Clone)]
pub struct BridgeOptions {
    /// Lossless (default) or lossy.
    pub delivery: Delivery,
    /// CurveZMQ connections to the gateway, 1 to [`MAX_CONNECTIONS`] (default 1): one stream
    /// is encrypted by one core, so more connections move more bytes on more cores.
    pub connections: u32,
    /// The channel's name on the peer hub (default: the source channel's).
    pub target: Option<String>,
    /// This hub's name, as the peer will list the source (`CHANNEL@HUB`).
    pub from_hub: String,
    /// Lossless: bytes of frames the sender holds while the link is down or slow (default
    /// 64 MiB); once they are spent the local producer is held back (and may evict the bridge
    /// after its consumer timeout). A gateway restart takes a few seconds.
    pub buffer: usize,
    /// How long the gateway may stay silent before the sender reconnects (default 3 s); a
    /// connection that closes makes it reconnect at once.
    pub dead_after: Duration,
}

impl Default for BridgeOptions {
    fn default() -> Self {
        Self {
            delivery: Delivery::Lossless,
            connections: 1,
            target: None,
            from_hub: "localhost".into(),
            buffer: 64 << 20,
            dead_after: Duration::from_secs(3),
        }
    }
}

/// What a bridge has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct BridgeStats {
    /// Source frames sent (each once, however often it was sent again).
    pub frames: u64,
    /// Bytes of those frames' payloads.
    pub bytes: u64,
    /// Items (frames and states) the gateway committed.
    pub acked: u64,
    /// Items sent again after a reconnection.
    pub resent: u64,
    /// Source frames this end skipped: the lossy consumer's skips, frames overwritten before
    /// they were read, frames missed while re-attaching.
    pub skipped: u64,
    /// Source frames the gateway counted lost (gaps in the source ids, a full ring in lossy
    /// delivery), as it last reported.
    pub remote_lost: u64,
    /// Sessions opened with the gateway (1 + reconnections).
    pub sessions: u64,
    /// Whether a session is open now.
    pub connected: bool,
    /// The last reason the bridge was not connected, if any.
    pub last_problem: Option<String>,
}

/// A running bridge; see the module documentation. Stops when dropped or
/// [`Bridge::stop`]ped.
pub struct Bridge {
    stats: Arc<Mutex<BridgeStats>>,
    thread: Background,
    channel: String,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl Bridge {
    /// Opens `channel` on `local` and bridges it to the hub `remote` describes (its broker's
    /// endpoint and key, and the key pair this host authenticates with; the peer hub must
    /// admit it). The consumer is opened before this returns, so a missing channel is an
    /// error here; the peer is reached in the background and reached again whenever the
    /// connection breaks.
    ///
    /// ```no_run
    /// use labhub::bridge::{Bridge, BridgeOptions};
    /// use labhub::client::{ClientConfig, Hub};
    /// use labhub::keys::PublicKey;
    /// let local = Hub::connect(ClientConfig::from_env()?)?;
    /// let peer_key = PublicKey::from_z85("rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7")?;
    /// let keys = ClientConfig::from_env()?.keys;
    /// let remote = ClientConfig::new("tcp://10.0.0.2:5570", peer_key, keys);
    /// let options = BridgeOptions { from_hub: "acq-pc".into(), ..Default::default() };
    /// let bridge = Bridge::start(&local, "cam0", remote, options)?;
    /// # drop(bridge);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`BridgeError::Option`] for a bad option; [`BridgeError::Hub`] if the channel cannot be
    /// opened or the peer's client cannot be made.
    pub fn start(
        local: &Hub,
        channel: &str,
        remote: ClientConfig,
        options: BridgeOptions,
    ) -> Result<Self, BridgeError> {
        if !(1..=MAX_CONNECTIONS).contains(&options.connections) {
            return Err(BridgeError::Option {
                option: "connections",
                problem: format!(
                    "{} connections asked; 1 to {MAX_CONNECTIONS} allowed",
                    options.connections
                ),
            });
        }
        let target = options.target.clone().unwrap_or_else(|| channel.to_owned());
        ChannelName::new(target.as_str()).map_err(ClientError::from)?;
        crate::home::check_hub_name(&options.from_hub).map_err(|problem| BridgeError::Option {
            option: "from_hub",
            problem,
        })?;
        let mode = match options.delivery {
            Delivery::Lossless => DeliveryMode::Lossless,
            Delivery::Lossy => DeliveryMode::Latest,
        };
        let mut consumer: ShmConsumer<Dynamic> = local.channel(channel).delivery(mode).open()?;
        let settings = settings_of(&mut consumer);
        let remote = Hub::connect(remote.io_threads(options.connections))?;
        let stats = Arc::new(Mutex::new(BridgeStats::default()));
        let hello = Hello {
            version: wire::VERSION,
            bridge: super::rand_u64(),
            attempt: 0,
            connection: 0,
            connections: options.connections,
            from_hub: options.from_hub.clone(),
            from_channel: consumer.channel().to_string(),
            channel: target,
            delivery: options.delivery,
            next_seq: 0,
            settings,
        };
        let spool = Arc::new(Spool::default());
        let reader = spool::start(
            consumer,
            options.delivery,
            options.buffer,
            Arc::clone(&spool),
        )
        .map_err(|e| BridgeError::Option {
            option: "thread",
            problem: e.to_string(),
        })?;
        let thread = Background::spawn(format!("labhub-bridge-{channel}"), "bridge thread", {
            let (stats, spool) = (Arc::clone(&stats), Arc::clone(&spool));
            move |stop| {
                let mut sender = Sender {
                    spool,
                    remote,
                    options,
                    hello,
                    stop,
                    stats,
                    next_seq: 0,
                    acked: 0,
                    window: 1,
                    in_flight: VecDeque::new(),
                    sent_upto: 0,
                    attempts: 0,
                    refusals: 0,
                };
                let result = sender.run();
                sender.spool.stop();
                let _ = reader.join();
                result
            }
        })
        .inspect_err(|_| spool.stop())?;
        Ok(Self {
            stats,
            thread,
            channel: channel.to_owned(),
        })
    }

    /// What the bridge has done so far.
    pub fn stats(&self) -> BridgeStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether the bridge ended by itself (a fatal refusal); [`Bridge::stop`] says why.
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Stops the bridge and returns what it did: a lossless bridge first delivers the frames
    /// it took from the channel (waiting at most `dead_after` for their credit), then tells
    /// the gateway, which closes the remote channel. Dropping the bridge does the same.
    ///
    /// # Errors
    /// What ended the bridge by itself, if something did: a refused key
    /// ([`BridgeError::KeyRefused`]), the gateway's refusal ([`BridgeError::Refused`]), the
    /// local channel's failure.
    pub fn stop(mut self) -> Result<BridgeStats, BridgeError> {
        self.thread.finish()?;
        Ok(self.stats())
    }
}

/// The source channel's settings, for the remote channel.
fn settings_of(consumer: &mut ShmConsumer<Dynamic>) -> ChannelSettings {
    let c = consumer.consumer();
    let report = c.report();
    ChannelSettings {
        policy: report.policy.to_string(),
        element: c.element_type().name().to_owned(),
        max_shape: c.max_shape().to_vec(),
        flex_size: report.flex_size,
        state_format: c.state_format().unwrap_or_default().code(),
        checksum: report.checksum,
        schema_name: report.schema_name.clone(),
        schema_version: report.schema_version,
    }
}

/// One item sent and not yet credited (kept, in lossless delivery, to be sent again).
struct Item {
    seq: u64,
    head: Vec<u8>,
    body: Arc<Vec<u8>>,
}

/// The connections of one session.
struct Session {
    links: Vec<Link>,
}

/// Why a session ended.
enum Ended {
    /// Stopped by the caller.
    Stopped,
    /// Broken: reconnect.
    Broken(String),
}

struct Sender {
    spool: Arc<Spool>,
    remote: Hub,
    options: BridgeOptions,
    hello: Hello,
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<BridgeStats>>,
    /// The next item's number.
    next_seq: u64,
    /// Every item below this one is committed by the gateway.
    acked: u64,
    window: u64,
    /// Lossless: the items sent and not yet credited, oldest first.
    in_flight: VecDeque<Item>,
    /// Every item below this one has been sent in the current session.
    sent_upto: u64,
    /// Connection attempts so far (each HELLO names its attempt).
    attempts: u64,
    /// Handshakes the peer hub ended in a row (see `probe_key`).
    refusals: u32,
}

impl Sender {
    fn stats(&self) -> std::sync::MutexGuard<'_, BridgeStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run(&mut self) -> Result<(), BridgeError> {
        let mut backoff = Duration::from_millis(100);
        let result = loop {
            if self.stop.load(Ordering::SeqCst) {
                break Ok(());
            }
            let problem = match self.open_session() {
                Ok(session) => {
                    backoff = Duration::from_millis(100);
                    {
                        let mut s = self.stats();
                        s.sessions += 1;
                        s.connected = true;
                    }
                    let ended = self.stream(&session);
                    self.stats().connected = false;
                    match ended {
                        Ok(Ended::Stopped) => {
                            for link in &session.links {
                                let _ = link
                                    .socket()
                                    .send(wire::encode_bare(tag::BYE), Flags::DONTWAIT);
                            }
                            break Ok(());
                        }
                        Ok(Ended::Broken(problem)) => problem,
                        Err(fatal) => break Err(fatal),
                    }
                }
                Err(e) if e.is_fatal() => break Err(e),
                Err(e) => e.to_string(),
            };
            tracing::warn!(channel = %self.hello.from_channel, problem = %problem, "bridge not connected; retrying");
            self.stats().last_problem = Some(problem);
            let until = Instant::now() + backoff;
            while Instant::now() < until && !self.stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        };
        if let Err(e) = &result {
            self.stats().last_problem = Some(e.to_string());
        }
        result
    }

    /// Finds the gateway through the peer hub, connects, and says hello on every connection.
    fn open_session(&mut self) -> Result<Session, BridgeError> {
        let name = ChannelName::new(GATEWAY_CHANNEL).map_err(ClientError::from)?;
        let (endpoint, server) = match self.remote.find_server(&name, ChannelKind::Reqrep) {
            Ok(found) => found,
            Err(e) if e.code() == Some(ErrorCode::NotFound) => {
                return Err(BridgeError::NoGateway {
                    hub: self.remote.endpoint().to_owned(),
                });
            }
            Err(e @ ClientError::Timeout { .. }) => {
                // Silence from the peer hub: down, cut off, or refusing this host's key. Only
                // the last is for good, and only a handshake tells.
                self.probe_key()?;
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        let endpoint = reachable(&endpoint, self.remote.endpoint());
        let options = ConnectOptions {
            topics: Vec::new(),
            curve: Some(ClientCurve {
                server,
                keys: self.remote.curve_keys().clone(),
            }),
            hwm: u32::try_from(self.window.max(64) * 4).unwrap_or(u32::MAX),
            max_message_size: 1 << 20,
        };
        let mut links = Vec::new();
        for _ in 0..self.options.connections {
            let socket = options
                .connect(self.remote.context(), SocketType::Dealer, &endpoint)
                .map_err(|e| BridgeError::Msg(Box::new(e)))?;
            socket
                .set_linger(Some(Duration::from_millis(200)))
                .map_err(|source| BridgeError::Zmq {
                    what: "setting linger",
                    source,
                })?;
            links.push(Link::new(socket, endpoint.clone(), 1 << 20));
        }
        let first = self
            .in_flight
            .front()
            .map_or(self.next_seq, |item| item.seq);
        // Increasing, so the gateway can tell a late HELLO of connections already replaced.
        self.attempts += 1;
        let attempt = self.attempts;
        for (i, link) in links.iter().enumerate() {
            let hello = Hello {
                attempt,
                connection: i as u32,
                next_seq: first,
                ..self.hello.clone()
            };
            let [a, b] = wire::encode_json(tag::HELLO, &hello);
            link.socket()
                .send_multipart([a, b], Flags::NONE)
                .map_err(|source| BridgeError::Zmq {
                    what: "sending hello",
                    source,
                })?;
        }
        let deadline = Instant::now() + self.options.dead_after.max(Duration::from_secs(5));
        let mut acked = None;
        for link in &links {
            let left = deadline.saturating_duration_since(Instant::now());
            let frames = match link.recv("welcome", left) {
                Ok(Some(frames)) => frames,
                Ok(None) => {
                    return Err(BridgeError::Silent {
                        endpoint: endpoint.clone(),
                    });
                }
                Err(e) => return Err(link_error(e)),
            };
            let bytes: Vec<&[u8]> = frames.iter().map(|f| f.as_bytes()).collect();
            match wire::decode_from_gateway(&bytes) {
                Ok(FromGateway::Welcome(w)) => {
                    self.window = u64::from(w.window.max(1));
                    acked = Some(acked.map_or(w.acked, |a: u64| a.max(w.acked)));
                }
                Ok(FromGateway::Refused(r)) => {
                    return Err(BridgeError::Refused {
                        code: r.code,
                        message: r.message,
                    });
                }
                Ok(FromGateway::Credit { .. }) => {}
                Err(e) => return Err(BridgeError::Wire(e)),
            }
        }
        // Never past what this sender has numbered (a gateway cannot have more).
        let acked = acked.unwrap_or(first).min(self.next_seq.max(first));
        self.credit(acked);
        // Items the gateway gave up on (a new session after lossy items were lost).
        self.next_seq = self.next_seq.max(acked);
        // What is still in flight goes again, as the window allows (the rest as credit comes).
        self.sent_upto = acked;
        let session = Session { links };
        let resent = self.in_flight.len();
        while self.sent_upto < self.next_seq && self.sent_upto < self.acked + self.window {
            self.send_unsent(&session)?;
        }
        tracing::info!(channel = %self.hello.from_channel, %endpoint, acked, resent, "bridge connected");
        Ok(session)
    }

    /// Handshakes with the peer hub's broker once, after it left a request unanswered:
    /// [`BridgeError::KeyRefused`] if it refuses this host's key (a ZAP refusal, or a
    /// connection it accepts and closes before the handshake completes, twice running), `Ok`
    /// if it admits the key or cannot be reached.
    fn probe_key(&mut self) -> Result<(), BridgeError> {
        let endpoint = self.remote.endpoint().to_owned();
        let zmq_err = |what| move |source| BridgeError::Zmq { what, source };
        let mut socket = self
            .remote
            .context()
            .socket(SocketType::Dealer)
            .map_err(zmq_err("creating a probe"))?;
        let keys = self.remote.curve_keys();
        socket
            .set_curve_client_keys(&self.remote.server_key(), &keys.public, &keys.secret)
            .map_err(zmq_err("setting CURVE keys"))?;
        socket
            .set_linger(Some(Duration::ZERO))
            .map_err(zmq_err("setting linger"))?;
        socket
            .enable_monitor()
            .map_err(zmq_err("monitoring a probe"))?;
        socket
            .connect(&endpoint)
            .map_err(zmq_err("connecting a probe"))?;
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut connected = false;
        // Some(true): refused for certain (ZAP); Some(false): closed during the handshake.
        let refused = 'wait: loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(monitor) = socket.monitor_socket() else {
                break None;
            };
            let mut items = [monitor.poll_item(PollEvents::IN)];
            if left.is_zero() || poll(&mut items, Some(left)).map_err(zmq("polling"))? == 0 {
                break None;
            }
            while let Ok(event) = socket.recv_monitor_event(Flags::DONTWAIT) {
                use labhub_zmq::SocketEvent as E;
                match event.event {
                    E::Connected => connected = true,
                    E::HandshakeSucceeded => {
                        self.refusals = 0;
                        return Ok(());
                    }
                    E::HandshakeFailedAuth | E::HandshakeFailedProtocol => break 'wait Some(true),
                    E::Disconnected if connected => break 'wait Some(false),
                    _ => {}
                }
            }
        };
        match refused {
            Some(certain) => self.refusals += if certain { 2 } else { 1 },
            None => self.refusals = 0,
        }
        if self.refusals >= 2 {
            return Err(BridgeError::KeyRefused {
                endpoint,
                detail: "the peer hub ends this host's connections in the CURVE handshake: it \
                         does not admit this host's client key, or the public key configured \
                         for it is not its own"
                    .into(),
            });
        }
        Ok(())
    }

    /// Takes credit up to `acked`.
    fn credit(&mut self, acked: u64) {
        // Never past what was sent (a gateway cannot credit items it never had).
        let acked = acked.min(self.next_seq.max(self.acked));
        let gained = acked.saturating_sub(self.acked);
        if gained == 0 {
            return;
        }
        self.acked = acked;
        while self.in_flight.front().is_some_and(|i| i.seq < self.acked) {
            self.in_flight.pop_front();
        }
        self.stats().acked += gained;
    }

    fn send_item(
        &self,
        session: &Session,
        seq: u64,
        head: Vec<u8>,
        body: Arc<Vec<u8>>,
    ) -> Result<(), BridgeError> {
        let link = &session.links[(seq % session.links.len() as u64) as usize];
        let frames = vec![
            ZmqFrame::from_vec(head).map_err(zmq("framing an item"))?,
            ZmqFrame::from_shared(body).map_err(zmq("framing an item"))?,
        ];
        link.socket()
            .send_multipart_msgs(frames, Flags::DONTWAIT)
            .map_err(|e| {
                if e.is_again() {
                    BridgeError::Silent {
                        endpoint: link.endpoint().to_owned(),
                    }
                } else {
                    BridgeError::Zmq {
                        what: "sending an item",
                        source: e,
                    }
                }
            })
    }

    /// Sends the in-flight item `sent_upto` (kept from an earlier session).
    fn send_unsent(&mut self, session: &Session) -> Result<(), BridgeError> {
        let Some(item) = self.in_flight.iter().find(|i| i.seq == self.sent_upto) else {
            self.sent_upto = self.next_seq;
            return Ok(());
        };
        let (seq, head, body) = (item.seq, item.head.clone(), Arc::clone(&item.body));
        self.send_item(session, seq, head, body)?;
        self.sent_upto = seq + 1;
        self.stats().resent += 1;
        Ok(())
    }

    /// Sends item `head`/`body` as the next one, keeping it if lossless.
    fn push(
        &mut self,
        session: &Session,
        head: impl FnOnce(u64) -> Vec<u8>,
        body: Vec<u8>,
    ) -> Result<(), BridgeError> {
        let seq = self.next_seq;
        let head = head(seq);
        let body = Arc::new(body);
        if self.options.delivery == Delivery::Lossless {
            self.in_flight.push_back(Item {
                seq,
                head: head.clone(),
                body: Arc::clone(&body),
            });
        }
        self.next_seq += 1;
        self.sent_upto = self.next_seq;
        self.send_item(session, seq, head, body)
    }

    /// Streams until stopped or broken.
    fn stream(&mut self, session: &Session) -> Result<Ended, BridgeError> {
        let mut heard = Instant::now();
        let mut pinged = Instant::now();
        let mut checked = Instant::now();
        let mut stopping: Option<Instant> = None;
        loop {
            if self.stop.load(Ordering::SeqCst) && stopping.is_none() {
                // Lossless: what the reader took from the local ring is delivered before the
                // bridge says goodbye (bounded by `dead_after`); lossy: nothing is owed.
                self.spool.stop();
                stopping = Some(Instant::now());
            }
            if let Some(since) = stopping {
                let delivered = self.spool.is_drained() && self.acked == self.next_seq;
                let lossless = self.options.delivery == Delivery::Lossless;
                if !lossless || delivered || since.elapsed() > self.options.dead_after {
                    if lossless && !delivered {
                        tracing::warn!(
                            channel = %self.hello.from_channel,
                            in_flight = self.next_seq - self.acked,
                            "stopped before every frame taken from the channel was delivered"
                        );
                    }
                    return Ok(Ended::Stopped);
                }
            }
            match self.drain(session)? {
                Ok(true) => heard = Instant::now(),
                Ok(false) => {}
                Err(problem) => return Ok(Ended::Broken(problem)),
            }
            if heard.elapsed() > self.options.dead_after {
                return Ok(Ended::Broken("the gateway went silent".into()));
            }
            if checked.elapsed() > Duration::from_millis(50) {
                checked = Instant::now();
                for link in &session.links {
                    // A connection that closed lost what was queued on it: a new session
                    // sends again what is in flight.
                    match link
                        .take_close()
                        .map_err(|e| BridgeError::Msg(Box::new(e)))?
                    {
                        Some(reason @ CloseReason::HandshakeFailed { .. }) => {
                            return Err(BridgeError::KeyRefused {
                                endpoint: link.endpoint().to_owned(),
                                detail: reason.to_string(),
                            });
                        }
                        Some(reason) => {
                            return Ok(Ended::Broken(format!("a connection closed: {reason}")));
                        }
                        None => {}
                    }
                }
            }
            if pinged.elapsed() > PING_EVERY {
                pinged = Instant::now();
                for link in &session.links {
                    let _ = link
                        .socket()
                        .send(wire::encode_bare(tag::PING), Flags::DONTWAIT);
                }
            }
            let room = self.sent_upto < self.acked + self.window;
            if room && self.sent_upto < self.next_seq {
                // An item in flight not sent in this session yet (the window was smaller).
                if let Err(e) = self.send_unsent(session) {
                    return match e {
                        BridgeError::Silent { .. } => Ok(Ended::Broken(e.to_string())),
                        other => Err(other),
                    };
                }
            } else if room {
                if let Err(e) = self.forward_one(session) {
                    match e {
                        BridgeError::Silent { .. } => {
                            return Ok(Ended::Broken(e.to_string()));
                        }
                        other => return Err(other),
                    }
                }
            } else {
                let mut items: Vec<_> = session
                    .links
                    .iter()
                    .map(|l| l.socket().poll_item(PollEvents::IN))
                    .collect();
                poll(&mut items, Some(Duration::from_millis(20))).map_err(zmq("polling"))?;
            }
        }
    }

    /// Reads every message waiting on the connections: whether any came, or why the session
    /// is broken.
    fn drain(&mut self, session: &Session) -> Result<Result<bool, String>, BridgeError> {
        let mut heard = false;
        for link in &session.links {
            loop {
                let frames = match link.socket().recv_multipart(Flags::DONTWAIT) {
                    Ok(f) => f,
                    Err(e) if e.is_again() => break,
                    Err(source) => {
                        return Err(BridgeError::Zmq {
                            what: "receiving credit",
                            source,
                        });
                    }
                };
                heard = true;
                let bytes: Vec<&[u8]> = frames.iter().map(|f| f.as_bytes()).collect();
                match wire::decode_from_gateway(&bytes) {
                    Ok(FromGateway::Credit { acked, lost }) => {
                        self.credit(acked);
                        self.stats().remote_lost = lost;
                    }
                    Ok(FromGateway::Welcome(_)) => {}
                    // The gateway restarted or gave the session up: open a new one.
                    Ok(FromGateway::Refused(r)) if r.code == "no_session" || r.code == "busy" => {
                        return Ok(Err(format!(
                            "the gateway refused: {}: {}",
                            r.code, r.message
                        )));
                    }
                    Ok(FromGateway::Refused(r)) => {
                        return Err(BridgeError::Refused {
                            code: r.code,
                            message: r.message,
                        });
                    }
                    Err(e) => tracing::warn!(error = %e, "a malformed message from the gateway"),
                }
            }
        }
        Ok(Ok(heard))
    }

    /// Waits briefly for the next item the reader queued and sends it.
    fn forward_one(&mut self, session: &Session) -> Result<(), BridgeError> {
        let (skipped, failed) = self.spool.take_counts();
        if skipped > 0 || failed.is_some() {
            let mut s = self.stats();
            s.skipped += skipped;
            if failed.is_some() {
                s.last_problem = failed;
            }
        }
        match self.spool.take(Duration::from_millis(20)) {
            None => Ok(()),
            Some(Pending::State(version, bytes)) => {
                self.push(session, |seq| wire::encode_state_head(seq, version), bytes)
            }
            Some(Pending::Renumber) => self.push(session, wire::encode_renumber, Vec::new()),
            Some(Pending::Frame(head, payload)) => {
                let len = payload.len() as u64;
                self.push(
                    session,
                    |seq| wire::encode_frame_head(&wire::FrameHead { seq, ..head }),
                    payload,
                )?;
                let mut s = self.stats();
                s.frames += 1;
                s.bytes += len;
                Ok(())
            }
        }
    }
}

/// The gateway's endpoint as this host reaches it: a gateway that advertises a loopback
/// address (bound to a wildcard without `--advertise`) runs on its hub's host, so that host is
/// dialled instead when the hub is not on loopback itself.
fn reachable(gateway: &str, hub: &str) -> String {
    fn host_port(endpoint: &str) -> Option<(&str, &str)> {
        endpoint.strip_prefix("tcp://")?.rsplit_once(':')
    }
    let loopback = |host: &str| host.starts_with("127.") || host == "localhost" || host == "[::1]";
    match (host_port(gateway), host_port(hub)) {
        (Some((g, port)), Some((h, _))) if loopback(g) && !loopback(h) => {
            format!("tcp://{h}:{port}")
        }
        _ => gateway.to_owned(),
    }
}

fn zmq(what: &'static str) -> impl FnOnce(labhub_zmq::ZmqError) -> BridgeError {
    move |source| BridgeError::Zmq { what, source }
}

fn link_error(e: crate::msg::MsgError) -> BridgeError {
    match e {
        crate::msg::MsgError::ConnectionClosed {
            endpoint,
            reason: reason @ crate::msg::CloseReason::HandshakeFailed { .. },
        } => BridgeError::KeyRefused {
            endpoint,
            detail: reason.to_string(),
        },
        other => BridgeError::Msg(Box::new(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::reachable;

    #[test]
    fn a_gateway_advertising_loopback_is_reached_on_its_hubs_host() {
        assert_eq!(
            reachable("tcp://127.0.0.1:5580", "tcp://10.0.0.7:5570"),
            "tcp://10.0.0.7:5580"
        );
        assert_eq!(
            reachable("tcp://127.0.0.1:5580", "tcp://127.0.0.2:5570"),
            "tcp://127.0.0.1:5580",
            "both on loopback: as advertised"
        );
        assert_eq!(
            reachable("tcp://10.0.0.8:5580", "tcp://10.0.0.7:5570"),
            "tcp://10.0.0.8:5580",
            "an advertised address is used as it is"
        );
        assert_eq!(reachable("ipc:///x", "tcp://h:1"), "ipc:///x");
    }
}
