//! The connection actor: one worker thread owns the DEALER and SUB sockets; [`Hub`] handles
//! send it commands.
#![deny(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use labhub_zmq::{
    Context, CurveKeyPair, CurvePublicKey, CurveSecretKey, Flags, PollEvents, Socket, SocketType,
    ZapHandler,
};

use super::admission::Admission;
use super::heartbeat::{self, ChannelCounters, Role, Tracked};
use super::{ClientConfig, ClientError, Notice};
use crate::protocol::{
    self, ChannelInfo, ChannelKind, ChannelName, ChannelRequest, ChannelSpec, ClientId, Discover,
    ErrorCode, List, Notification, Register, Reply, Request, Status,
};

/// Shortest heartbeat interval accepted from a broker.
const MIN_HEARTBEAT: Duration = Duration::from_millis(10);
/// Longest time shutdown waits for the broker to acknowledge unregistrations.
const FAREWELL_WAIT: Duration = Duration::from_secs(1);

type ReplySender = SyncSender<Result<Reply, ClientError>>;

enum Command {
    Request {
        request: Request,
        started: Instant,
        timeout: Duration,
        reply: ReplySender,
    },
    /// Forget a channel end: unregister (producer) or detach (consumer), no answer awaited.
    Forget {
        name: ChannelName,
        role: Role,
    },
    Track {
        id: u64,
        tracked: Tracked,
    },
    Untrack {
        id: u64,
    },
    Subscribe {
        channel: Option<ChannelName>,
        tx: Sender<Notice>,
    },
    /// The memfds of a channel this client produces, handed to the broker again after it
    /// restarts (dropped with the channel).
    Share {
        name: ChannelName,
        pair: crate::shm::MemfdPair,
    },
    Shutdown {
        done: SyncSender<()>,
    },
}

enum Waiter {
    Caller(ReplySender),
    Heartbeat,
    Reregister,
    /// A produce ticket for re-registering a memfd channel: redeem it, hand the segment over,
    /// then register.
    Reprovide(Box<ChannelSpec>),
    Farewell,
}

struct Pending {
    request: Request,
    deadline: Instant,
    sent: Instant,
    waiter: Waiter,
}

/// Where API calls leave commands for the worker: a std channel for the command, and an inproc
/// PAIR socket whose message wakes the worker's `zmq_poll` (which cannot wait on a std
/// channel), so an idle worker sleeps until a command, a reply, a notice or a heartbeat is due.
struct Mailbox {
    commands: Sender<Command>,
    wake: Socket,
}

struct Shared {
    context: Context,
    mailbox: Mutex<Option<Mailbox>>,
    worker: Mutex<Option<JoinHandle<()>>>,
    /// The keys the message-channel servers admit, learned from registration replies.
    admission: Arc<Admission>,
    /// The ZAP handler asking `admission`, started with the first message-channel server.
    zap: Mutex<Option<ZapHandler>>,
    /// This client's key pair as message-channel subscribers and clients present it.
    curve_keys: CurveKeyPair,
    /// The broker's CURVE public key.
    server_key: CurvePublicKey,
    next_id: Arc<AtomicU64>,
    stopped: AtomicBool,
    client_id: ClientId,
    endpoint: String,
    request_timeout: Duration,
    takeover_wait: Duration,
    grant_socket: Option<std::path::PathBuf>,
    /// The message channels this client serves (publishers and request servers): the broker
    /// takes a second registration of one from the same client for a refresh, so the client
    /// refuses it itself.
    serving: Mutex<std::collections::HashSet<ChannelName>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Shared {
    fn send(&self, command: Command) -> Result<(), ClientError> {
        let guard = self.mailbox.lock().unwrap_or_else(|e| e.into_inner());
        let mailbox = guard.as_ref().ok_or(ClientError::Stopped)?;
        mailbox
            .commands
            .send(command)
            .map_err(|_| ClientError::Stopped)?;
        // A full wake queue (EAGAIN) means the worker has wake-ups waiting: it will come.
        match mailbox.wake.send(b"", Flags::DONTWAIT) {
            Ok(()) => Ok(()),
            Err(e) if e.is_again() => Ok(()),
            Err(e) => Err(ClientError::Zmq {
                what: "waking the worker",
                endpoint: self.endpoint.clone(),
                source: e,
            }),
        }
    }

    fn stop(&self) {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        let sent = self.send(Command::Shutdown { done: done_tx }).is_ok();
        // No further command can be sent; the worker ends when the queue is drained.
        self.mailbox
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let handle = self.worker.lock().unwrap_or_else(|e| e.into_inner()).take();
        let bound = FAREWELL_WAIT + Duration::from_secs(2);
        if sent && done_rx.recv_timeout(bound).is_ok() {
            if let Some(h) = handle {
                let _ = h.join();
            }
        } else if handle.is_some() {
            tracing::warn!("hub client worker did not stop in time; leaving it detached");
        }
    }
}

/// A connection to the broker (see the [module documentation](super)). Cheap to clone; the
/// connection closes when [`Hub::shutdown`] is called or the last clone and the last channel
/// object made by it are dropped.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("client_id", &self.shared.client_id)
            .field("endpoint", &self.shared.endpoint)
            .finish_non_exhaustive()
    }
}

fn random_u64() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

fn zmq_err<'a>(
    what: &'static str,
    endpoint: &'a str,
) -> impl FnOnce(labhub_zmq::ZmqError) -> ClientError + 'a {
    move |source| ClientError::Zmq {
        what,
        endpoint: endpoint.to_owned(),
        source,
    }
}

/// The client's key pair and the broker's public key as ZeroMQ takes them.
fn curve_keys(config: &ClientConfig) -> Result<(CurvePublicKey, CurveKeyPair), ClientError> {
    let bad = |path: &str| {
        let path = path.into();
        move |e: labhub_zmq::Z85Error| ClientError::Config {
            path,
            problem: e.to_string(),
        }
    };
    let server =
        CurvePublicKey::from_bytes(config.server_key.as_bytes()).map_err(bad("server_key"))?;
    let secret =
        CurveSecretKey::from_bytes(config.keys.secret_bytes()).map_err(bad("client key"))?;
    let pair = CurveKeyPair::from_secret(secret).map_err(|e| ClientError::Config {
        path: "client key".into(),
        problem: e.to_string(),
    })?;
    Ok((server, pair))
}

fn curve_socket(
    context: &Context,
    kind: SocketType,
    (server, keys): (&CurvePublicKey, &CurveKeyPair),
    endpoint: &str,
) -> Result<Socket, ClientError> {
    let err = |what| zmq_err(what, endpoint);
    let socket = context.socket(kind).map_err(err("creating a socket"))?;
    socket
        .set_curve_client_keys(server, &keys.public, &keys.secret)
        .map_err(err("setting the CURVE keys"))?;
    // A broker (or an impostor holding its key) cannot make us allocate more than a message.
    socket
        .set_maxmsgsize(Some(protocol::MAX_MESSAGE_BYTES as u64))
        .map_err(err("setting the message size limit"))?;
    socket
        .set_reconnect_ivl(Some(Duration::from_millis(100)))
        .map_err(err("setting the reconnect interval"))?;
    socket
        .set_reconnect_ivl_max(Duration::from_secs(1))
        .map_err(err("setting the reconnect interval"))?;
    socket.connect(endpoint).map_err(err("connecting"))?;
    Ok(socket)
}

/// The two ends of the worker's wake-up socket pair: the sending end for the API side, the
/// receiving end for the worker's poll set.
fn wake_pair(context: &Context, client: &ClientId) -> Result<(Socket, Socket), ClientError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let endpoint = format!(
        "inproc://labhub-client-wake-{client}-{}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let err = |what| zmq_err(what, &endpoint);
    let woken = context
        .socket(SocketType::Pair)
        .map_err(err("creating the wake-up socket"))?;
    woken
        .bind(&endpoint)
        .map_err(err("binding the wake-up socket"))?;
    let wake = context
        .socket(SocketType::Pair)
        .map_err(err("creating the wake-up socket"))?;
    // The waker never waits for the worker, even when it is gone.
    wake.set_linger(Some(Duration::ZERO))
        .map_err(err("setting the wake-up linger"))?;
    wake.connect(&endpoint)
        .map_err(err("connecting the wake-up socket"))?;
    Ok((wake, woken))
}

impl Hub {
    /// Connects to the broker: creates the sockets and starts the worker thread. Succeeds even
    /// when no broker is running (ZeroMQ connects in the background); the first request then
    /// times out.
    pub fn connect(config: ClientConfig) -> Result<Self, ClientError> {
        let client_id = match &config.client_id {
            Some(id) => id.clone(),
            None => ClientId::new(format!(
                "client-{}-{:016x}",
                std::process::id(),
                random_u64()
            ))?,
        };
        let context = Context::new().map_err(zmq_err("creating the context", &config.endpoint))?;
        if config.io_threads != 1 {
            let threads = i32::try_from(config.io_threads).unwrap_or(i32::MAX);
            context
                .set_io_threads(threads)
                .map_err(zmq_err("setting the I/O threads", &config.endpoint))?;
        }
        let (server_key, curve_keys) = curve_keys(&config)?;
        let keys = (&server_key, &curve_keys);
        let dealer = curve_socket(&context, SocketType::Dealer, keys, &config.endpoint)?;
        let sub = match &config.notify_endpoint {
            Some(e) => {
                let s = curve_socket(&context, SocketType::Sub, keys, e)?;
                s.subscribe(b"").map_err(zmq_err("subscribing", e))?;
                Some(s)
            }
            None => None,
        };
        let (wake, woken) = wake_pair(&context, &client_id)?;
        let (tx, rx) = mpsc::channel();
        let next_id = Arc::new(AtomicU64::new(1));
        let admission = Arc::new(Admission::new(config.request_timeout));
        let worker = Worker {
            dealer,
            sub,
            woken,
            admission: Arc::clone(&admission),
            commands: rx,
            next_id: Arc::clone(&next_id),
            client_id: client_id.clone(),
            endpoint: config.endpoint.clone(),
            pid: std::process::id(),
            host: host_name(),
            pending: HashMap::new(),
            owned: BTreeMap::new(),
            attached: BTreeSet::new(),
            tracked: BTreeMap::new(),
            subscribers: Vec::new(),
            heartbeat_interval: config.heartbeat_interval.max(MIN_HEARTBEAT),
            next_heartbeat: Instant::now(),
            request_timeout: config.request_timeout,
            last_seq: None,
            segments: HashMap::new(),
            grant_socket: config.grant_socket.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("labhub-client".into())
            .spawn(move || worker.run())
            .map_err(|e| ClientError::Config {
                path: "worker thread".into(),
                problem: e.to_string(),
            })?;
        tracing::debug!(%client_id, endpoint = %config.endpoint, "hub client started");
        Ok(Self {
            shared: Arc::new(Shared {
                context,
                mailbox: Mutex::new(Some(Mailbox { commands: tx, wake })),
                worker: Mutex::new(Some(handle)),
                admission,
                zap: Mutex::new(None),
                curve_keys,
                server_key,
                next_id,
                stopped: AtomicBool::new(false),
                client_id,
                endpoint: config.endpoint,
                request_timeout: config.request_timeout,
                takeover_wait: config.takeover_wait,
                grant_socket: config.grant_socket,
                serving: Mutex::new(std::collections::HashSet::new()),
            }),
        })
    }

    /// This client's id.
    pub fn client_id(&self) -> &ClientId {
        &self.shared.client_id
    }

    /// The broker endpoint.
    pub fn endpoint(&self) -> &str {
        &self.shared.endpoint
    }

    pub(crate) fn context(&self) -> &Context {
        &self.shared.context
    }

    pub(crate) fn takeover_wait(&self) -> Duration {
        self.shared.takeover_wait
    }

    /// The broker's CURVE public key.
    #[cfg_attr(not(feature = "bridge"), allow(dead_code))]
    pub(crate) fn server_key(&self) -> CurvePublicKey {
        self.shared.server_key
    }

    /// This client's key pair, as message-channel subscribers and clients present it.
    pub(crate) fn curve_keys(&self) -> &CurveKeyPair {
        &self.shared.curve_keys
    }

    /// Claims `name` for a message-channel server or publisher of this client until the
    /// claim is dropped.
    ///
    /// # Errors
    /// [`ClientError::AlreadyServing`] while another of this client's ends serves `name`.
    pub(crate) fn claim_serving(&self, name: &ChannelName) -> Result<ServingClaim, ClientError> {
        let mut serving = self
            .shared
            .serving
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !serving.insert(name.clone()) {
            return Err(ClientError::AlreadyServing {
                channel: name.to_string(),
            });
        }
        Ok(ServingClaim {
            hub: self.clone(),
            name: name.clone(),
        })
    }

    /// Makes sure the ZAP handler that admits the broker's keys to this Hub's
    /// message-channel servers runs; call before creating such a server.
    pub(crate) fn guard_servers(&self) -> Result<(), ClientError> {
        let mut zap = self.shared.zap.lock().unwrap_or_else(|e| e.into_inner());
        if zap.is_none() {
            let admission = Arc::clone(&self.shared.admission);
            let handler = self
                .shared
                .context
                .start_zap_handler(move |request| admission.decide(request))
                .map_err(zmq_err("starting the ZAP handler", &self.shared.endpoint))?;
            *zap = Some(handler);
        }
        Ok(())
    }

    fn next_id(&self) -> u64 {
        self.shared.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn next_request_id(&self) -> u64 {
        self.next_id()
    }

    /// The grant socket this client's configuration names, instead of the broker's.
    pub(crate) fn grant_socket(&self) -> Option<&std::path::Path> {
        self.shared.grant_socket.as_deref()
    }

    /// Keeps (a duplicate of) the memfds of channel `name`, which this client produces, to hand
    /// them to the broker again if it restarts.
    pub(crate) fn share(&self, name: ChannelName, pair: crate::shm::MemfdPair) {
        let _ = self.shared.send(Command::Share { name, pair });
    }

    /// Sends `request` and waits for its validated reply.
    pub(crate) fn call(&self, request: Request) -> Result<Reply, ClientError> {
        let kind = request.type_name();
        let timeout = self.shared.request_timeout;
        let (tx, rx) = mpsc::sync_channel(1);
        self.shared.send(Command::Request {
            request,
            started: Instant::now(),
            timeout,
            reply: tx,
        })?;
        // The worker answers at the deadline at the latest; the margin covers a busy worker.
        match rx.recv_timeout(timeout + Duration::from_secs(1)) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => Err(ClientError::Timeout {
                request: kind,
                endpoint: self.shared.endpoint.clone(),
                waited: timeout,
            }),
            Err(RecvTimeoutError::Disconnected) => Err(ClientError::Stopped),
        }
    }

    /// Looks up channel `name`.
    pub fn discover(&self, name: &str) -> Result<ChannelInfo, ClientError> {
        let name = ChannelName::new(name)?;
        let reply = self.call(Request::Discover(Discover {
            request_id: self.next_id(),
            name,
            client: Some(self.shared.client_id.clone()),
        }))?;
        reply.channel.ok_or_else(|| unreachable_checked("discover"))
    }

    /// Every channel whose name starts with `prefix` (all with `None`), sorted by name.
    pub fn list(
        &self,
        prefix: Option<&str>,
        kind: Option<ChannelKind>,
    ) -> Result<Vec<ChannelInfo>, ClientError> {
        let reply = self.call(Request::List(List {
            request_id: self.next_id(),
            prefix: prefix.map(str::to_owned),
            kind,
        }))?;
        reply.channels.ok_or_else(|| unreachable_checked("list"))
    }

    /// Registers `spec` with this client as producer. The client registers it again by itself
    /// after a broker restart, until [`Hub::unregister`].
    pub fn register(&self, spec: ChannelSpec) -> Result<(), ClientError> {
        self.call(Request::Register(Box::new(Register {
            request_id: self.next_id(),
            client: self.shared.client_id.clone(),
            channel: spec,
            pid: None,
            host: None,
        })))
        .map(|_| ())
    }

    /// Withdraws a channel this client registered.
    pub fn unregister(&self, name: &str) -> Result<(), ClientError> {
        let name = ChannelName::new(name)?;
        self.call(Request::Unregister(self.channel_request(name)))
            .map(|_| ())
    }

    /// Becomes a consumer of channel `name` (the broker then tracks this client's liveness for
    /// it); attached again by itself after a broker restart, until [`Hub::detach`].
    pub fn attach(&self, name: &str) -> Result<ChannelInfo, ClientError> {
        let name = ChannelName::new(name)?;
        let reply = self.call(Request::Attach(self.channel_request(name)))?;
        reply.channel.ok_or_else(|| unreachable_checked("attach"))
    }

    /// Stops being a consumer of channel `name`.
    pub fn detach(&self, name: &str) -> Result<(), ClientError> {
        let name = ChannelName::new(name)?;
        self.call(Request::Detach(self.channel_request(name)))
            .map(|_| ())
    }

    fn channel_request(&self, name: ChannelName) -> ChannelRequest {
        ChannelRequest {
            request_id: self.next_id(),
            client: self.shared.client_id.clone(),
            name,
        }
    }

    /// Notices about every channel: the broker's notifications and the client's own
    /// re-registration reports. The receiver gets those that arrive after this call.
    pub fn notices(&self) -> Result<Receiver<Notice>, ClientError> {
        self.subscribe(None)
    }

    pub(crate) fn subscribe(
        &self,
        channel: Option<ChannelName>,
    ) -> Result<Receiver<Notice>, ClientError> {
        let (tx, rx) = mpsc::channel();
        self.shared.send(Command::Subscribe { channel, tx })?;
        Ok(rx)
    }

    pub(crate) fn track(
        &self,
        name: ChannelName,
        role: Role,
        counters: &Arc<ChannelCounters>,
    ) -> u64 {
        let id = self.next_id();
        let _ = self.shared.send(Command::Track {
            id,
            tracked: Tracked {
                name,
                role,
                counters: Arc::downgrade(counters),
            },
        });
        id
    }

    /// Forgets a channel end: untracks it and unregisters or detaches without waiting.
    pub(crate) fn forget(&self, track_id: u64, name: ChannelName, role: Role) {
        let _ = self.shared.send(Command::Untrack { id: track_id });
        let _ = self.shared.send(Command::Forget { name, role });
    }

    /// Unregisters this client's channels and detaches its consumers (waiting briefly for the
    /// broker), then closes the connection. Idempotent; later calls fail with
    /// [`ClientError::Stopped`]. Bounded even when the broker is gone.
    pub fn shutdown(&self) {
        self.shared.stop();
    }

    /// Whether [`Hub::shutdown`] was called.
    pub fn is_stopped(&self) -> bool {
        self.shared.stopped.load(Ordering::SeqCst)
    }
}

/// The worker checks the fields replies must carry, so their absence here is a bug; it still
/// surfaces as an error, not a panic.
fn unreachable_checked(request: &'static str) -> ClientError {
    ClientError::BadReply {
        request,
        problem: "the checked reply lost its payload".into(),
    }
}

fn host_name() -> Option<String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let h = h.trim();
    (!h.is_empty() && h.len() <= protocol::MAX_LABEL_LEN && !h.chars().any(char::is_control))
        .then(|| h.to_owned())
}

/// Checks a decoded reply against the request it answers.
pub(crate) fn check_reply(request: &Request, reply: Reply) -> Result<Reply, ClientError> {
    let kind = request.type_name();
    let bad = |problem: String| ClientError::BadReply {
        request: kind,
        problem,
    };
    let channel = match request {
        Request::Register(r) => Some(r.channel.name.to_string()),
        Request::Discover(d) => Some(d.name.to_string()),
        Request::Unregister(r) | Request::Attach(r) | Request::Detach(r) => {
            Some(r.name.to_string())
        }
        _ => None,
    };
    match reply.request_id {
        Some(id) if id == request.request_id() => {}
        // The broker could not read our request at all; its refusal still counts.
        None if reply.status == Status::Error => {}
        other => {
            return Err(bad(format!(
                "field request_id is {other:?}, the request was {}",
                request.request_id()
            )));
        }
    }
    if reply.status == Status::Error {
        return Err(ClientError::Refused {
            request: kind,
            channel,
            code: reply.error_code,
            message: reply.message,
        });
    }
    if reply.error_code != ErrorCode::None {
        return Err(bad(format!(
            "field error_code is {} although status is ok",
            reply.error_code
        )));
    }
    match request {
        Request::Discover(Discover { name, .. }) | Request::Attach(ChannelRequest { name, .. }) => {
            match &reply.channel {
                None => return Err(bad("field channel is missing".into())),
                Some(info) if &info.spec.name != name => {
                    return Err(bad(format!(
                        "field channel.name is {}, the request asked for {name}",
                        info.spec.name
                    )));
                }
                Some(_) => {}
            }
        }
        Request::List(_) if reply.channels.is_none() => {
            return Err(bad("field channels is missing".into()));
        }
        Request::Register(r)
            if r.channel.kind != ChannelKind::Shm
                && reply.admitted_keys.is_none()
                && !reply.any_key_admitted =>
        {
            return Err(bad(format!(
                "field admitted_keys is missing for {} channel {}: the channel's server \
                 cannot tell whom to admit",
                r.channel.kind.as_str(),
                r.channel.name
            )));
        }
        _ => {}
    }
    Ok(reply)
}

/// The request id of a reply body, read leniently (to route even a malformed reply).
fn reply_id_hint(frames: &[Vec<u8>]) -> Option<u64> {
    let frames = match frames.first() {
        Some(f) if f.is_empty() => &frames[1..],
        _ => frames,
    };
    let body = frames.get(3)?;
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value.get("request_id")?.as_u64()
}

struct Worker {
    dealer: Socket,
    sub: Option<Socket>,
    /// Receives a message per command sent (see [`Mailbox`]).
    woken: Socket,
    admission: Arc<Admission>,
    commands: Receiver<Command>,
    next_id: Arc<AtomicU64>,
    client_id: ClientId,
    endpoint: String,
    pid: u32,
    host: Option<String>,
    pending: HashMap<u64, Pending>,
    /// Channels this client produces, as registered (re-sent after a broker restart).
    owned: BTreeMap<ChannelName, ChannelSpec>,
    /// Channels this client consumes.
    attached: BTreeSet<ChannelName>,
    tracked: BTreeMap<u64, Tracked>,
    subscribers: Vec<(Option<ChannelName>, Sender<Notice>)>,
    heartbeat_interval: Duration,
    next_heartbeat: Instant,
    request_timeout: Duration,
    last_seq: Option<u64>,
    /// The memfds of the memfd channels this client produces.
    segments: HashMap<ChannelName, crate::shm::MemfdPair>,
    grant_socket: Option<std::path::PathBuf>,
}

impl Worker {
    fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn run(mut self) {
        let mut done: Option<SyncSender<()>> = None;
        loop {
            // Wake-ups first, then commands: a command sent after this drain leaves a wake-up
            // that ends the next poll at once.
            while self.woken.recv(Flags::DONTWAIT).is_ok() {}
            loop {
                match self.commands.try_recv() {
                    Ok(Command::Shutdown { done: d }) => {
                        done = Some(d);
                        break;
                    }
                    Ok(c) => self.handle_command(c),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.farewell();
                        return;
                    }
                }
            }
            if done.is_some() {
                break;
            }
            let now = Instant::now();
            if now >= self.next_heartbeat {
                self.send_heartbeat(now);
            }
            self.expire(now);
            let wait = self
                .next_timer()
                .map(|at| at.saturating_duration_since(Instant::now()));
            self.wait_and_receive(wait);
        }
        self.farewell();
        if let Some(d) = done {
            let _ = d.send(());
        }
    }

    /// When the worker must act without being woken: the next heartbeat (only while the
    /// client owns or consumes something) or the earliest request deadline. `None`: nothing
    /// is due until a command, a reply or a notice arrives.
    fn next_timer(&self) -> Option<Instant> {
        let heartbeat =
            (!self.owned.is_empty() || !self.attached.is_empty()).then_some(self.next_heartbeat);
        let deadline = self.pending.values().map(|p| p.deadline).min();
        heartbeat.into_iter().chain(deadline).min()
    }

    /// Polls the sockets (and the wake-up socket) for up to `wait` (`None`: until one is
    /// readable), then drains the replies and notices that arrived.
    fn wait_and_receive(&mut self, wait: Option<Duration>) {
        let (dealer_ready, sub_ready) = {
            let mut items = vec![
                self.woken.poll_item(PollEvents::IN),
                self.dealer.poll_item(PollEvents::IN),
            ];
            if let Some(s) = &self.sub {
                items.push(s.poll_item(PollEvents::IN));
            }
            match labhub_zmq::poll(&mut items, wait) {
                Ok(_) => (
                    items[1].is_readable(),
                    items.get(2).is_some_and(|i| i.is_readable()),
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "hub client poll failed");
                    // Bounded, so a poll that keeps failing does not spin.
                    std::thread::sleep(wait.unwrap_or(MIN_HEARTBEAT).min(MIN_HEARTBEAT));
                    (false, false)
                }
            }
        };
        if dealer_ready {
            while let Ok(frames) = self.dealer.recv_multipart_bytes(Flags::DONTWAIT) {
                self.on_reply(frames);
            }
        }
        if sub_ready {
            while let Some(sub) = &self.sub {
                let Ok(frames) = sub.recv_multipart_bytes(Flags::DONTWAIT) else {
                    break;
                };
                self.on_notification(&frames);
            }
        }
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::Request {
                request,
                started,
                timeout,
                reply,
            } => {
                let id = request.request_id();
                self.send(request, started + timeout, Waiter::Caller(reply));
                // Time the wait from the caller's call, not from the send.
                if let Some(p) = self.pending.get_mut(&id) {
                    p.sent = started;
                }
            }
            Command::Forget { name, role } => {
                let request = match role {
                    Role::Producer => {
                        self.segments.remove(&name);
                        if self.owned.remove(&name).is_none() {
                            return;
                        }
                        Request::Unregister(ChannelRequest {
                            request_id: self.id(),
                            client: self.client_id.clone(),
                            name,
                        })
                    }
                    Role::Consumer => {
                        // Another consumer object of this process may still read the channel.
                        let still = self
                            .tracked
                            .values()
                            .any(|t| t.role == Role::Consumer && t.name == name);
                        if still || !self.attached.remove(&name) {
                            return;
                        }
                        Request::Detach(ChannelRequest {
                            request_id: self.id(),
                            client: self.client_id.clone(),
                            name,
                        })
                    }
                };
                let deadline = Instant::now() + self.request_timeout;
                self.send(request, deadline, Waiter::Farewell);
            }
            Command::Track { id, tracked } => {
                self.tracked.insert(id, tracked);
            }
            Command::Untrack { id } => {
                self.tracked.remove(&id);
            }
            Command::Subscribe { channel, tx } => self.subscribers.push((channel, tx)),
            Command::Share { name, pair } => {
                self.segments.insert(name, pair);
            }
            Command::Shutdown { .. } => {}
        }
    }

    fn send(&mut self, mut request: Request, deadline: Instant, waiter: Waiter) {
        // Register with our pid and host, whoever built the request.
        if let Request::Register(r) = &mut request {
            r.pid = Some(self.pid);
            r.host.clone_from(&self.host);
        }
        let id = request.request_id();
        let frames = protocol::encode_request(&request);
        if let Err(e) = self.dealer.send_multipart(frames, Flags::DONTWAIT) {
            // Queue full (no broker for a long time) or closing: the caller hears of it as a
            // timeout at its deadline, like any unanswered request.
            tracing::debug!(error = %e, kind = request.type_name(), "request not sent");
        }
        self.pending.insert(
            id,
            Pending {
                request,
                deadline,
                sent: Instant::now(),
                waiter,
            },
        );
    }

    fn expire(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            let Some(p) = self.pending.remove(&id) else {
                continue;
            };
            let error = ClientError::Timeout {
                request: p.request.type_name(),
                endpoint: self.endpoint.clone(),
                waited: now.saturating_duration_since(p.sent),
            };
            self.complete(p, Err(error));
        }
    }

    fn on_reply(&mut self, frames: Vec<Vec<u8>>) {
        // Route by the body's request id; a reply too broken to carry one goes to the oldest
        // request waiting (the broker answers in order), which then fails with BadReply.
        let target = match reply_id_hint(&frames) {
            Some(id) if self.pending.contains_key(&id) => Some(id),
            Some(id) => {
                tracing::debug!(request_id = id, "late or unknown reply dropped");
                None
            }
            None => self
                .pending
                .iter()
                .min_by_key(|(_, p)| p.sent)
                .map(|(id, _)| *id),
        };
        let Some(p) = target.and_then(|id| self.pending.remove(&id)) else {
            return;
        };
        let kind = p.request.type_name();
        let result = protocol::decode_reply(&frames)
            .map_err(|e| ClientError::BadReply {
                request: kind,
                problem: describe_decode_error(&e, &frames),
            })
            .and_then(|reply| check_reply(&p.request, reply));
        self.complete(p, result);
    }

    /// Delivers a result and updates what the client owns.
    fn complete(&mut self, p: Pending, result: Result<Reply, ClientError>) {
        if let Ok(reply) = &result {
            if let Some(ms) = reply.heartbeat_interval_ms {
                let interval = Duration::from_millis(ms).max(MIN_HEARTBEAT);
                if interval != self.heartbeat_interval {
                    self.heartbeat_interval = interval;
                    self.next_heartbeat = self.next_heartbeat.min(Instant::now() + interval);
                }
            }
            match &p.request {
                Request::Register(r) if !matches!(p.waiter, Waiter::Farewell) => {
                    if r.channel.kind != ChannelKind::Shm {
                        // Before the caller hears of it: peers may already handshake.
                        self.admission.learn(reply);
                    }
                    self.owned.insert(r.channel.name.clone(), r.channel.clone());
                }
                Request::Attach(r) => {
                    self.attached.insert(r.name.clone());
                }
                Request::Unregister(r) => {
                    self.owned.remove(&r.name);
                }
                Request::Detach(r) => {
                    self.attached.remove(&r.name);
                }
                _ => {}
            }
        }
        match p.waiter {
            Waiter::Caller(tx) => {
                // The caller may have given up; then the result is dropped.
                let _ = tx.try_send(result);
            }
            Waiter::Heartbeat => match result {
                Err(e) if e.code() == Some(ErrorCode::UnknownClient) => self.reregister(),
                Err(e) => tracing::debug!(error = %e, "heartbeat failed"),
                Ok(_) => {}
            },
            Waiter::Reregister => {
                let channel = match &p.request {
                    Request::Register(r) => r.channel.name.clone(),
                    Request::Attach(r) => r.name.clone(),
                    _ => return,
                };
                let notice = match result {
                    Ok(_) => {
                        tracing::info!(%channel, "registered again with the broker");
                        Notice::Reregistered { channel }
                    }
                    Err(e) => {
                        tracing::warn!(%channel, error = %e, "registering again failed");
                        if matches!(
                            e.code(),
                            Some(ErrorCode::AlreadyExists | ErrorCode::NotOwner)
                        ) {
                            // Another client took the channel: stop claiming it. Other
                            // refusals (a consumer's channel not registered again yet) are
                            // retried at the next heartbeat, which the broker will refuse
                            // with unknown_client until then.
                            match &p.request {
                                Request::Register(r) => {
                                    self.owned.remove(&r.channel.name);
                                }
                                Request::Attach(r) => {
                                    self.attached.remove(&r.name);
                                }
                                _ => {}
                            }
                        }
                        Notice::ReregisterFailed {
                            channel,
                            problem: e.to_string(),
                        }
                    }
                };
                self.publish(&notice);
            }
            Waiter::Reprovide(spec) => self.reprovide(*spec, result),
            Waiter::Farewell => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, kind = p.request.type_name(), "farewell not acknowledged");
                }
            }
        }
    }

    fn send_heartbeat(&mut self, now: Instant) {
        self.next_heartbeat = now + self.heartbeat_interval;
        // The broker knows this client only once it registered or attached something.
        if self.owned.is_empty() && self.attached.is_empty() {
            return;
        }
        if self.pending.values().any(|p| {
            matches!(
                p.waiter,
                Waiter::Heartbeat | Waiter::Reregister | Waiter::Reprovide(_)
            )
        }) {
            return;
        }
        let request = Request::Heartbeat(heartbeat::build(
            self.id(),
            self.client_id.clone(),
            &mut self.tracked,
        ));
        let deadline = now + self.request_timeout.min(self.heartbeat_interval * 4);
        self.send(request, deadline, Waiter::Heartbeat);
    }

    /// The broker forgot this client: register and attach everything again.
    fn reregister(&mut self) {
        tracing::info!(
            channels = self.owned.len(),
            consumers = self.attached.len(),
            "broker does not know this client (restarted?): registering again"
        );
        let deadline = Instant::now() + self.request_timeout;
        let specs: Vec<ChannelSpec> = self.owned.values().cloned().collect();
        for spec in specs {
            if spec.sharing == Some(protocol::Sharing::Memfd) {
                // The new broker holds no segment: hand ours over first.
                let request = Request::Grant(protocol::GrantRequest {
                    request_id: self.id(),
                    client: self.client_id.clone(),
                    name: spec.name.clone(),
                    role: protocol::Role::Produce,
                });
                self.send(request, deadline, Waiter::Reprovide(Box::new(spec)));
                continue;
            }
            let request = self.register_request(spec);
            self.send(request, deadline, Waiter::Reregister);
        }
        let names: Vec<ChannelName> = self.attached.iter().cloned().collect();
        for name in names {
            let request = Request::Attach(ChannelRequest {
                request_id: self.id(),
                client: self.client_id.clone(),
                name,
            });
            self.send(request, deadline, Waiter::Reregister);
        }
    }

    /// `register` of `spec` by this client (`send` adds the pid and host).
    fn register_request(&self, spec: ChannelSpec) -> Request {
        Request::Register(Box::new(Register {
            request_id: self.id(),
            client: self.client_id.clone(),
            channel: spec,
            pid: None,
            host: None,
        }))
    }

    /// A produce ticket arrived for re-registering memfd channel `spec`: redeems it, hands the
    /// broker this client's segment, then registers the channel.
    fn reprovide(&mut self, spec: ChannelSpec, ticket: Result<Reply, ClientError>) {
        let name = spec.name.clone();
        let provided = ticket.and_then(|reply| {
            let ticket = reply.grant.ok_or_else(|| ClientError::BadReply {
                request: "grant",
                problem: "field grant is missing".into(),
            })?;
            let pair = self.segments.get(&name).ok_or_else(|| ClientError::Shm {
                channel: name.to_string(),
                source: crate::shm::ChannelError::NotFound {
                    channel: name.to_string(),
                },
            })?;
            let path = self
                .grant_socket
                .clone()
                .unwrap_or_else(|| std::path::PathBuf::from(&ticket.socket));
            super::grant::redeem_at(&path, &ticket.ticket, &name, protocol::Role::Produce)?
                .provide(pair)
        });
        match provided {
            Ok(()) => {
                let request = self.register_request(spec);
                let deadline = Instant::now() + self.request_timeout;
                self.send(request, deadline, Waiter::Reregister);
            }
            Err(e) => {
                tracing::warn!(channel = %name, error = %e, "handing the segment over again failed");
                self.publish(&Notice::ReregisterFailed {
                    channel: name,
                    problem: e.to_string(),
                });
            }
        }
    }

    fn on_notification(&mut self, frames: &[Vec<u8>]) {
        let (seq, notification) = match protocol::decode_notification(frames) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "malformed notification ignored");
                return;
            }
        };
        if let Some(last) = self.last_seq
            && seq <= last
        {
            // Sequence numbers restart with the broker.
            tracing::debug!(
                seq,
                last,
                "notification sequence restarted (broker restart?)"
            );
        }
        self.last_seq = Some(seq);
        // The broker dropped one of our consumers (we were silent too long): attach again.
        if let Notification::ConsumerDropped { name, consumer, .. } = &notification
            && consumer == &self.client_id
            && self.attached.contains(name)
        {
            let request = Request::Attach(ChannelRequest {
                request_id: self.id(),
                client: self.client_id.clone(),
                name: name.clone(),
            });
            self.send(
                request,
                Instant::now() + self.request_timeout,
                Waiter::Reregister,
            );
        }
        self.publish(&Notice::Broker(notification));
    }

    fn publish(&mut self, notice: &Notice) {
        let channel = notice.channel().cloned();
        self.subscribers.retain(|(filter, tx)| {
            if filter.is_some() && filter.as_ref() != channel.as_ref() {
                return true;
            }
            tx.send(notice.clone()).is_ok()
        });
    }

    /// Unregisters and detaches everything, waiting briefly for the broker's answers, so the
    /// broker need not wait for a heartbeat timeout to learn that this client is gone.
    fn farewell(&mut self) {
        // Callers still waiting get their answer now.
        let callers: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| matches!(p.waiter, Waiter::Caller(_)))
            .map(|(id, _)| *id)
            .collect();
        for id in callers {
            if let Some(p) = self.pending.remove(&id) {
                self.complete(p, Err(ClientError::Stopped));
            }
        }
        self.pending.clear();
        let deadline = Instant::now() + FAREWELL_WAIT.min(self.request_timeout);
        let owned: Vec<ChannelName> = self.owned.keys().cloned().collect();
        for name in owned {
            let r = Request::Unregister(ChannelRequest {
                request_id: self.id(),
                client: self.client_id.clone(),
                name,
            });
            self.send(r, deadline, Waiter::Farewell);
        }
        let attached: Vec<ChannelName> = self.attached.iter().cloned().collect();
        for name in attached {
            let r = Request::Detach(ChannelRequest {
                request_id: self.id(),
                client: self.client_id.clone(),
                name,
            });
            self.send(r, deadline, Waiter::Farewell);
        }
        while !self.pending.is_empty() && Instant::now() < deadline {
            self.wait_and_receive(Some(deadline.saturating_duration_since(Instant::now())));
            self.expire(Instant::now());
        }
        self.owned.clear();
        self.attached.clear();
        // Unsent messages are dropped when the sockets close (LINGER 0): the broker may be gone.
        let _ = self.dealer.set_linger(Some(Duration::ZERO));
        if let Some(s) = &self.sub {
            let _ = s.set_linger(Some(Duration::ZERO));
        }
        tracing::debug!(client = %self.client_id, "hub client stopped");
    }
}

/// The decoder's complaint, with the path of the offending field when the body is JSON of the
/// wrong shape (serde's own message names a missing field, not a mistyped one).
fn describe_decode_error(e: &protocol::DecodeError, frames: &[Vec<u8>]) -> String {
    if let protocol::DecodeError::InvalidBody { .. } = e {
        let body = match frames.first() {
            Some(f) if f.is_empty() => frames.get(4),
            _ => frames.get(3),
        };
        if let Some(body) = body {
            let mut de = serde_json::Deserializer::from_slice(body);
            if let Err(located) = serde_path_to_error::deserialize::<_, Reply>(&mut de) {
                let path = located.path().to_string();
                if path != "." {
                    return format!("field {path}: {}", located.inner());
                }
            }
        }
    }
    error_chain(e)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

const _: () = {
    const fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<Hub>();
};

/// A message channel this client serves; released when dropped.
pub(crate) struct ServingClaim {
    hub: Hub,
    name: ChannelName,
}

impl Drop for ServingClaim {
    fn drop(&mut self) {
        let mut serving = self
            .hub
            .shared
            .serving
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        serving.remove(&self.name);
    }
}
