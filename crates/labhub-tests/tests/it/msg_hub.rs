//! Message channels made through the Hub against hostile peers, with real processes: a broker,
//! Hub publishers, subscribers, servers and clients as child processes, and the attacker (a
//! plain or wrong-key ZeroMQ socket) in the test process.
//!
//! Each attack waits for a handshake event on the attacker's socket monitor, not for a time:
//! a refused handshake closes that connection, so nothing can pass through it afterwards.

use std::time::{Duration, Instant};

use labhub::keys::{KeyPair, PublicKey};
use labhub::msg::CurveSecretKey;
use labhub_zmq::{
    Context, CurveKeyPair, CurvePublicKey, Flags, MonitorEvent, PollEvents, Socket, SocketEvent,
    SocketType, poll,
};

use crate::common::{AbortWatchdog, ChildProc, ScratchDir, WATCHDOG, spawn_child, unique};

/// The receivers' maximum message size in these tests (the default, 32 MiB).
const MAX: usize = labhub::msg::DEFAULT_MAX_MESSAGE_SIZE;
/// The rogue message: 512 MiB, twice the RSS a receiver that refused it stays below (a receiver
/// that read it would hold it at least once, encrypted and decrypted). Larger only costs the
/// sender's encryption time.
const HUGE: usize = 512 << 20;
/// A receiver that refused the rogue message stays far below its size.
const PEAK_RSS_LIMIT: u64 = 256 << 20;

/// A broker child (`client-broker`: heartbeat 100 ms) in a fresh home.
struct World {
    home: ScratchDir,
    endpoint: String,
    notify: String,
    broker: Option<ChildProc>,
}

impl World {
    /// A broker admitting the local client key and `extra`.
    fn start(extra: &[PublicKey]) -> Self {
        let home = ScratchDir::new("msg-hub");
        let mut world = Self {
            endpoint: home.ipc("broker.sock"),
            notify: home.ipc("notify.sock"),
            home,
            broker: None,
        };
        world.start_broker(extra);
        world
    }

    fn start_broker(&mut self, extra: &[PublicKey]) {
        let list: String = extra.iter().map(|k| format!("{k}\n")).collect();
        let path = self.home.join("allowed_clients");
        std::fs::write(&path, list).unwrap();
        let private = std::os::unix::fs::PermissionsExt::from_mode(0o600);
        std::fs::set_permissions(&path, private).unwrap();
        let home = self.home.path().to_str().unwrap();
        let mut broker =
            spawn_child("client-broker", &[home, &self.endpoint, &self.notify]).labelled("broker");
        broker.skip_to("ready");
        self.broker = Some(broker);
    }

    /// Kills the broker and starts a new one admitting `extra`.
    fn restart_broker(&mut self, extra: &[PublicKey]) {
        drop(self.broker.take());
        self.start_broker(extra);
    }

    /// A Hub child `role` on channel `name`.
    fn spawn(&self, label: &str, role: &str, name: &str, extra: &[&str]) -> ChildProc {
        let home = self.home.path().to_str().unwrap();
        let mut args = vec![home, &self.endpoint, &self.notify, name];
        args.extend_from_slice(extra);
        spawn_child(role, &args).labelled(label)
    }
}

/// The value of the next line starting with `prefix`.
fn field(proc: &mut ChildProc, prefix: &str) -> String {
    proc.skip_to(prefix)[prefix.len()..].to_owned()
}

/// A publisher child and its endpoint and server key.
fn publisher(world: &World, name: &str) -> (ChildProc, String, CurvePublicKey) {
    let mut publisher = world.spawn("publisher", "msg-hub-pub", name, &[]);
    let endpoint = field(&mut publisher, "endpoint ");
    let key = CurvePublicKey::from_z85(&field(&mut publisher, "key ")).unwrap();
    (publisher, endpoint, key)
}

/// A server child (maximum message size `MAX`) and its endpoint and server key.
fn server(world: &World, name: &str) -> (ChildProc, String, CurvePublicKey) {
    let max = MAX.to_string();
    let mut server = world.spawn("server", "msg-hub-server", name, &[&max]);
    let endpoint = field(&mut server, "endpoint ");
    let key = CurvePublicKey::from_z85(&field(&mut server, "key ")).unwrap();
    (server, endpoint, key)
}

/// A subscriber child (maximum message size `MAX`) that has heard `publisher`.
fn subscriber(world: &World, name: &str, publisher: &mut ChildProc) -> ChildProc {
    let max = MAX.to_string();
    let mut subscriber = world.spawn("subscriber", "msg-hub-sub", name, &[&max]);
    subscriber.expect_exact("subscribed");
    publisher.send_line("wait 1");
    publisher.skip_to("subscribers ");
    publisher.send_line("send real");
    subscriber.expect_exact("message real");
    subscriber
}

fn curve_keys(pair: &KeyPair) -> CurveKeyPair {
    CurveKeyPair::from_secret(CurveSecretKey::from_bytes(pair.secret_bytes()).unwrap()).unwrap()
}

/// A socket of `kind` with its monitor on, CURVE client keys if given, connected to
/// `endpoint` (a SUB subscribes to everything).
fn attacker(
    context: &Context,
    kind: SocketType,
    endpoint: &str,
    curve: Option<(&CurvePublicKey, &CurveKeyPair)>,
) -> Socket {
    let mut socket = context.socket(kind).unwrap();
    socket.enable_monitor().unwrap();
    if let Some((server, own)) = curve {
        socket
            .set_curve_client_keys(server, &own.public, &own.secret)
            .unwrap();
    }
    if kind == SocketType::Sub {
        socket.subscribe(b"").unwrap();
    }
    socket.connect(endpoint).unwrap();
    socket
}

/// How a handshake seen on a socket's monitor ended.
#[derive(Debug)]
enum Handshake {
    Succeeded,
    Failed(MonitorEvent),
}

/// Waits for the next handshake outcome on `socket`'s monitor.
fn handshake(socket: &Socket) -> Handshake {
    let deadline = Instant::now() + WATCHDOG;
    loop {
        let monitor = socket.monitor_socket().expect("monitor enabled");
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "watchdog: no handshake within {WATCHDOG:?}"
        );
        let mut items = [monitor.poll_item(PollEvents::IN)];
        poll(&mut items, Some(left)).unwrap();
        while let Ok(event) = socket.recv_monitor_event(Flags::DONTWAIT) {
            match event.event {
                SocketEvent::HandshakeSucceeded => return Handshake::Succeeded,
                SocketEvent::HandshakeFailedProtocol
                | SocketEvent::HandshakeFailedAuth
                | SocketEvent::HandshakeFailedNoDetail => return Handshake::Failed(event),
                _ => {}
            }
        }
    }
}

/// The next message `socket` receives within `timeout`.
fn receive(socket: &Socket, timeout: Duration) -> Option<Vec<Vec<u8>>> {
    let mut items = [socket.poll_item(PollEvents::IN)];
    poll(&mut items, Some(timeout)).unwrap();
    socket.recv_multipart_bytes(Flags::DONTWAIT).ok()
}

/// The peak resident set of process `pid` so far (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/<pid>/status");
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib * 1024
}

// ---- eavesdropping ------------------------------------------------------------------------

#[test]
fn a_subscriber_without_a_key_reads_nothing_of_a_hub_channel() {
    let _watchdog = AbortWatchdog::arm("keyless subscriber", 3 * WATCHDOG);
    let world = World::start(&[]);
    let name = unique("wiretap");
    let (mut publisher, endpoint, _) = publisher(&world, &name);
    let mut subscriber = subscriber(&world, &name, &mut publisher);

    let context = Context::new().unwrap();
    let tap = attacker(&context, SocketType::Sub, &endpoint, None);
    // Refused: which side notices the mechanism mismatch first decides the event it sees.
    match handshake(&tap) {
        Handshake::Failed(_) => {}
        Handshake::Succeeded => {
            // Connected: it reads what the publisher sends once its subscription is there.
            let deadline = Instant::now() + WATCHDOG;
            while Instant::now() < deadline {
                publisher.send_line("send secret");
                publisher.expect_exact("sent");
                if let Some(frames) = receive(&tap, Duration::from_millis(20)) {
                    panic!("a subscriber without a key read the channel: {frames:?}");
                }
            }
            panic!("a subscriber without a key completed the handshake");
        }
    }
    // Its connection is closed: the channel goes on for the subscriber the broker admits.
    publisher.send_line("send secret");
    subscriber.expect_exact("message secret");
    assert!(tap.recv_multipart_bytes(Flags::DONTWAIT).is_err());
}

#[test]
fn only_keys_the_broker_admits_may_subscribe_and_a_broker_restart_brings_the_new_list() {
    let _watchdog = AbortWatchdog::arm("admitted keys", 4 * WATCHDOG);
    let colleague = KeyPair::generate();
    let mut world = World::start(&[colleague.public]);
    let name = unique("admitted");
    let (mut publisher, endpoint, server_key) = publisher(&world, &name);
    let context = Context::new().unwrap();

    // A key on the broker's allow list is admitted and hears the channel.
    let colleague_keys = curve_keys(&colleague);
    let admitted = attacker(
        &context,
        SocketType::Sub,
        &endpoint,
        Some((&server_key, &colleague_keys)),
    );
    assert!(matches!(handshake(&admitted), Handshake::Succeeded));
    publisher.send_line("wait 1");
    publisher.skip_to("subscribers ");
    publisher.send_line("send hello");
    let frames = receive(&admitted, WATCHDOG).expect("the admitted key hears the channel");
    assert_eq!(frames, [b"t".to_vec(), b"hello".to_vec()]);

    // A stranger who knows the server key is refused by the publisher's ZAP handler.
    let stranger_keys = CurveKeyPair::generate().unwrap();
    let stranger = attacker(
        &context,
        SocketType::Sub,
        &endpoint,
        Some((&server_key, &stranger_keys)),
    );
    match handshake(&stranger) {
        Handshake::Failed(event) => {
            assert_eq!(
                (event.event, event.value),
                (SocketEvent::HandshakeFailedAuth, 400)
            )
        }
        Handshake::Succeeded => panic!("a key the broker does not admit was admitted"),
    }

    // The broker restarts without the colleague's key; the publisher registers again and
    // learns the new list with the reply.
    world.restart_broker(&[]);
    publisher.skip_to("notice reregistered");
    let again = attacker(
        &context,
        SocketType::Sub,
        &endpoint,
        Some((&server_key, &colleague_keys)),
    );
    match handshake(&again) {
        Handshake::Failed(event) => assert_eq!(event.event, SocketEvent::HandshakeFailedAuth),
        Handshake::Succeeded => panic!("a key the restarted broker no longer admits was admitted"),
    }
}

// ---- injection ----------------------------------------------------------------------------

/// The publisher dies; an impostor binds its endpoint (plain, or CURVE with its own key) and
/// publishes. The subscriber reconnects, fails the handshake, and prints nothing forged.
fn an_impostor_on_the_dead_publishers_endpoint_injects_nothing(
    impostor_keys: Option<CurveKeyPair>,
) {
    let world = World::start(&[]);
    let name = unique("impostor");
    let (mut publisher, endpoint, _) = publisher(&world, &name);
    let mut subscriber = subscriber(&world, &name, &mut publisher);
    publisher.kill();

    let context = Context::new().unwrap();
    let mut impostor = context.socket(SocketType::Pub).unwrap();
    impostor.enable_monitor().unwrap();
    if let Some(keys) = &impostor_keys {
        impostor.set_curve_server_keys(&keys.secret).unwrap();
    }
    impostor.bind(&endpoint).unwrap();
    if let Handshake::Succeeded = handshake(&impostor) {
        // The subscriber took the impostor for its publisher: it prints what it is sent.
        std::thread::spawn(move || {
            loop {
                let _ = impostor.send_multipart([&b"t"[..], b"forged"], Flags::DONTWAIT);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        subscriber.wait_for("a forged message", |l| l == "message forged");
        panic!("the subscriber took a message from the impostor");
    }
    let forge = || {
        impostor
            .send_multipart([&b"t"[..], b"forged"], Flags::DONTWAIT)
            .unwrap()
    };
    for _ in 0..10 {
        forge();
    }
    // The subscriber says why it hears nothing (after the publisher's departure), and has
    // printed nothing forged; a refused handshake closes the connection, so nothing can pass
    // it later. A CURVE impostor is retried, and refused again.
    subscriber.wait_for("the handshake failure", |line| {
        assert_ne!(
            line, "message forged",
            "the subscriber took a forged message"
        );
        line.starts_with("error ") && line.contains("handshake failed")
    });
    if impostor_keys.is_some() {
        assert!(matches!(handshake(&impostor), Handshake::Failed(_)));
        forge();
    }
}

#[test]
fn a_plain_impostor_on_the_dead_publishers_endpoint_injects_nothing() {
    let _watchdog = AbortWatchdog::arm("plain impostor", 3 * WATCHDOG);
    an_impostor_on_the_dead_publishers_endpoint_injects_nothing(None);
}

#[test]
fn an_impostor_with_its_own_curve_key_on_the_dead_publishers_endpoint_injects_nothing() {
    let _watchdog = AbortWatchdog::arm("curve impostor", 3 * WATCHDOG);
    an_impostor_on_the_dead_publishers_endpoint_injects_nothing(Some(
        CurveKeyPair::generate().unwrap(),
    ));
}

// ---- calls --------------------------------------------------------------------------------

#[test]
fn a_client_without_an_admitted_key_cannot_call_a_hub_server() {
    let _watchdog = AbortWatchdog::arm("keyless call", 3 * WATCHDOG);
    let world = World::start(&[]);
    let name = unique("keyless-call");
    let (_server, endpoint, server_key) = server(&world, &name);
    let context = Context::new().unwrap();

    let plain = attacker(&context, SocketType::Dealer, &endpoint, None);
    if let Handshake::Succeeded = handshake(&plain) {
        plain
            .send_multipart([&b""[..], &1u64.to_le_bytes(), b"hello"], Flags::NONE)
            .unwrap();
        let reply = receive(&plain, WATCHDOG);
        panic!("a client without a key called the server: {reply:?}");
    }
    let stranger_keys = CurveKeyPair::generate().unwrap();
    let stranger = attacker(
        &context,
        SocketType::Dealer,
        &endpoint,
        Some((&server_key, &stranger_keys)),
    );
    match handshake(&stranger) {
        Handshake::Failed(event) => assert_eq!(event.event, SocketEvent::HandshakeFailedAuth),
        Handshake::Succeeded => panic!("a key the broker does not admit was admitted"),
    }

    // The Hub's own client is admitted.
    let max = MAX.to_string();
    let mut caller = world.spawn("caller", "msg-hub-call", &name, &[&max]);
    caller.expect_exact("connected");
    caller.send_line("hello");
    caller.expect_exact("reply ok:hello");
}

#[test]
fn an_impostor_on_the_dead_servers_endpoint_answers_nothing() {
    let _watchdog = AbortWatchdog::arm("impostor server", 3 * WATCHDOG);
    let world = World::start(&[]);
    let name = unique("impostor-server");
    let (mut server, endpoint, _) = server(&world, &name);
    let max = MAX.to_string();
    let mut caller = world.spawn("caller", "msg-hub-call", &name, &[&max]);
    caller.expect_exact("connected");
    caller.send_line("hello");
    caller.expect_exact("reply ok:hello");
    server.kill();

    // A plain ROUTER on the endpoint answers every request it gets.
    let context = Context::new().unwrap();
    let mut impostor = context.socket(SocketType::Router).unwrap();
    impostor.enable_monitor().unwrap();
    impostor.bind(&endpoint).unwrap();
    let connected = matches!(handshake(&impostor), Handshake::Succeeded);
    caller.send_line("again");
    if connected {
        let request = receive(&impostor, WATCHDOG).expect("the request reaches the impostor");
        let reply: [&[u8]; 5] = [&request[0], b"", &request[2], &[0], b"forged"];
        impostor.send_multipart(reply, Flags::NONE).unwrap();
    }
    let line = caller.next_line();
    assert!(!line.starts_with("reply"), "the impostor answered: {line}");
    assert!(
        line.starts_with("error ") && line.contains("handshake failed"),
        "{line}"
    );
}

// ---- huge messages ------------------------------------------------------------------------

#[test]
fn a_huge_publication_is_refused_before_the_subscriber_reads_it_into_memory() {
    let _watchdog = AbortWatchdog::arm("huge publication", 4 * WATCHDOG);
    let world = World::start(&[]);
    let name = unique("huge-pub");
    let (mut publisher, _, _) = publisher(&world, &name);
    let mut subscriber = subscriber(&world, &name, &mut publisher);
    publisher.send_line(&format!("huge {HUGE}"));
    publisher.expect_exact("sent");
    let line = subscriber.wait_for("the huge message or an error", |l| {
        l.starts_with("error ") || l.starts_with("message ")
    });
    let peak = peak_rss(subscriber.pid());
    eprintln!("subscriber peak RSS after a {HUGE}-byte publication: {peak} bytes");
    assert!(
        line.starts_with("error ") && line.contains(&format!("limit of {MAX} bytes")),
        "{line} (peak RSS {peak} bytes)"
    );
    assert!(
        peak < PEAK_RSS_LIMIT,
        "the subscriber's peak RSS is {peak} bytes"
    );
}

#[test]
fn a_huge_request_or_reply_is_refused_before_it_is_read_into_memory() {
    let _watchdog = AbortWatchdog::arm("huge request", 4 * WATCHDOG);
    let world = World::start(&[]);
    let name = unique("huge-call");
    let (server, _, _) = server(&world, &name);
    let max = MAX.to_string();

    // A rogue client sends 1 GiB: the server drops that connection, stays small, goes on.
    let mut rogue = world.spawn("rogue client", "msg-hub-call", &name, &[&max]);
    rogue.expect_exact("connected");
    rogue.send_line(&format!("send-huge {HUGE}"));
    let line = rogue.next_line();
    let peak = peak_rss(server.pid());
    eprintln!("server peak RSS after a {HUGE}-byte request: {peak} bytes");
    assert!(
        line.starts_with("error "),
        "{line} (server peak RSS {peak} bytes)"
    );
    assert!(
        peak < PEAK_RSS_LIMIT,
        "the server's peak RSS is {peak} bytes"
    );
    let mut caller = world.spawn("caller", "msg-hub-call", &name, &[&max]);
    caller.expect_exact("connected");
    caller.send_line("hello");
    caller.expect_exact("reply ok:hello");

    // The server, now rogue, answers with 1 GiB: the client refuses it and stays small.
    caller.send_line(&format!("huge {HUGE}"));
    let line = caller.next_line();
    let peak = peak_rss(caller.pid());
    eprintln!("client peak RSS after a {HUGE}-byte reply: {peak} bytes");
    assert!(
        line.starts_with("error ") && line.contains(&format!("limit of {MAX} bytes")),
        "{line} (client peak RSS {peak} bytes)"
    );
    assert!(
        peak < PEAK_RSS_LIMIT,
        "the client's peak RSS is {peak} bytes"
    );
}

// ---- an idle Hub ----------------------------------------------------------------------------

#[test]
fn an_idle_hub_wakes_only_for_its_heartbeats() {
    let _watchdog = AbortWatchdog::arm("idle hub", 3 * WATCHDOG);
    let world = World::start(&[]);
    let name = unique("idle");
    let mut idle = world.spawn("idle client", "msg-idle", &name, &["2"]);
    idle.expect_exact("ready");
    let switches: u64 = field(&mut idle, "switches ").parse().unwrap();
    eprintln!("idle client: {switches} context switches in 2 s");
    // 2 s at the test broker's 100 ms heartbeat: 20 heartbeats, each a few wake-ups of the
    // worker and of ZeroMQ's I/O thread. A worker polling its queue every 2 ms alone makes
    // a thousand.
    assert!(
        switches < 400,
        "{switches} context switches in 2 s of an idle client"
    );
}
