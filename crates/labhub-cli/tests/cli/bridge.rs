//! Bridges between two hubs on this machine: two `labhub hub` processes with their own homes
//! and ports ("acq", the source, and "ws", the receiver), `labhub gateway` on ws and
//! `labhub bridge` on acq as child processes, the source producer and the remote consumer in
//! the test process. Kills are SIGKILL, mid-stream.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use labhub::client::{Hub, ShmConsumer, ShmProducer};
use labhub::keys::{self, KeyPair};
use labhub::shm::{Dynamic, ElementType, Policy};
use serde_json::{Value, json};

use super::{Broker, WATCHDOG, handshake_succeeds, run, unique};

/// Writes `text` to `path` as a trusted file (mode 0600).
fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    let private = std::os::unix::fs::PermissionsExt::from_mode(0o600);
    std::fs::set_permissions(path, private).unwrap();
}

/// The two hubs: ws admits acq's client key unless told not to; acq knows ws as its peer.
struct Pair {
    acq: Broker,
    ws: Broker,
}

impl Pair {
    fn start(ws_admits_acq: bool) -> Self {
        let acq_home = tempfile::tempdir().unwrap();
        let acq_key: KeyPair = keys::local_client_key(&acq_home.path().join("keys")).unwrap();
        let ws_home = tempfile::tempdir().unwrap();
        if ws_admits_acq {
            write_private(
                &ws_home.path().join("allowed_clients"),
                &format!("{}\n", acq_key.public),
            );
        }
        write_private(&ws_home.path().join("broker.toml"), "name = \"ws\"\n");
        let ws = Broker::start_in_home(ws_home, None, &[]);
        write_private(
            &acq_home.path().join("broker.toml"),
            &format!(
                "name = \"acq\"\n\n[[peer]]\nname = \"ws\"\nendpoint = \"{}\"\npublic_key = \"{}\"\n",
                ws.endpoint, ws.public_key
            ),
        );
        let acq = Broker::start_in_home(acq_home, None, &[]);
        Self { acq, ws }
    }
}

/// A long-running `labhub` child whose stdout lines are collected; killed on drop.
struct Running {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    fresh: mpsc::Receiver<String>,
}

impl Running {
    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn labhub");
        let stdout: ChildStdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, fresh) = mpsc::channel();
        let keep = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                keep.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        Self {
            child,
            lines,
            fresh,
        }
    }

    fn next_line(&self) -> String {
        self.fresh
            .recv_timeout(WATCHDOG)
            .expect("a line from labhub within the watchdog")
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then the exit code.
    fn terminate(&mut self) -> i32 {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::TERM,
        );
        let deadline = Instant::now() + WATCHDOG;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "labhub did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

fn gateway(ws: &Broker) -> (Running, String) {
    gateway_with(ws, &[])
}

fn gateway_with(ws: &Broker, extra: &[&str]) -> (Running, String) {
    let mut args = vec!["gateway", "--listen", "tcp://127.0.0.1:0", "--json"];
    args.extend_from_slice(extra);
    let g = Running::spawn(ws.labhub(&args));
    let first: Value = serde_json::from_str(&g.next_line()).unwrap();
    let endpoint = first["listening"].as_str().unwrap().to_owned();
    (g, endpoint)
}

fn bridge(acq: &Broker, channel: &str, extra: &[&str]) -> Running {
    let mut args = vec!["bridge", channel, "--to", "ws", "--json"];
    args.extend_from_slice(extra);
    Running::spawn(acq.labhub(&args))
}

/// The gateway's last report of `channel`, if it printed one.
fn gateway_report(g: &Running, channel: &str) -> Option<Value> {
    g.lines()
        .iter()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["channel"] == channel)
}

/// Waits until the gateway reports `frames` written for `channel`, none lost or duplicated.
fn expect_written_once(gateway: &Running, channel: &str, frames: u64) {
    let deadline = Instant::now() + WATCHDOG;
    loop {
        let report = gateway_report(gateway, channel);
        if let Some(r) = &report
            && r["frames"] == frames
        {
            assert_eq!(r["lost"], 0, "{r}");
            assert_eq!(r["duplicates"], 0, "{r}");
            return;
        }
        assert!(Instant::now() < deadline, "gateway report {report:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The flexible-zone state `consumer` reads now.
fn state_of(consumer: &mut ShmConsumer<Dynamic>) -> Value {
    let (_, state) = consumer
        .consumer()
        .read_state::<Value>()
        .unwrap()
        .expect("a state");
    state
}

/// Waits until `hub` lists `channel` as up.
fn wait_for_channel(hub: &Hub, channel: &str) {
    let deadline = Instant::now() + WATCHDOG;
    loop {
        if let Ok(info) = hub.discover(channel)
            && info.state == labhub::protocol::ChannelState::Up
        {
            return;
        }
        assert!(Instant::now() < deadline, "{channel} never came up");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn remote_hub(ws: &Broker) -> Hub {
    ws.hub()
}

/// Reads frames until one with origin id `last` arrived; returns the origin ids in order.
fn read_until(consumer: &mut ShmConsumer<Dynamic>, last: u64) -> Vec<u64> {
    let mut got = Vec::new();
    let deadline = Instant::now() + WATCHDOG;
    while got.last() != Some(&last) {
        assert!(
            Instant::now() < deadline,
            "the remote consumer got {} frames, last {:?}, never {last}",
            got.len(),
            got.last()
        );
        match consumer.next(Some(Duration::from_millis(100))) {
            Ok(frame) => got.push(frame.origin_id().expect("a held frame")),
            Err(labhub::client::ConsumeError::Timeout { .. }) => {}
            Err(e) => tracing::debug!(error = %e, "remote read"),
        }
    }
    got
}

#[test]
fn a_bridged_channel_carries_frames_metadata_schema_and_state_to_the_peer_hub() {
    let pair = Pair::start(true);
    // The smallest credit window: one item in flight at a time.
    let (_gateway, _) = gateway_with(&pair.ws, &["--window", "1"]);
    let name = unique("cam");
    let acq = pair.acq.hub();
    let mut producer: ShmProducer<u16> = acq
        .channel(&name)
        .policy("ring:16:block:30s".parse().unwrap())
        .frames::<u16>(&[4, 8])
        .flex_size(256)
        .schema("camera", 3)
        .create()
        .unwrap();
    producer.write_state(&json!({"exposure": 5})).unwrap();
    let mut sender = bridge(&pair.acq, &name, &[]);
    let ws = remote_hub(&pair.ws);
    wait_for_channel(&ws, &name);
    let mut remote: ShmConsumer<Dynamic> = ws
        .channel(format!("{name}@acq"))
        .open()
        .expect("open CHANNEL@HUB");
    {
        let c = remote.consumer();
        assert_eq!(c.element_type(), ElementType::U16);
        assert_eq!(c.max_shape(), &[4, 8]);
        assert_eq!(c.schema(), Some(("camera", 3)));
        assert_eq!(c.report().flex_size, 256);
    }
    // Each frame is read at the peer before the next is published.
    for i in 0..40u64 {
        if i == 20 {
            producer.write_state(&json!({"exposure": 6})).unwrap();
        }
        let shape: &[u64] = if i % 2 == 0 { &[4, 8] } else { &[2, 8] };
        let mut slot = producer.loan_shape(shape).unwrap();
        slot.fill(i as u16);
        slot.set_timestamp_ns(1_000_000 + i);
        slot.commit();
        let frame = remote.next(Some(WATCHDOG)).unwrap();
        assert_eq!(frame.origin_id(), Some(i), "source ids arrive in order");
        assert_eq!(frame.shape(), shape);
        assert_eq!(frame.timestamp_ns(), 1_000_000 + i);
        let bytes = frame.held().unwrap().to_vec();
        let expected: Vec<u8> = std::iter::repeat_n((i as u16).to_le_bytes(), bytes.len() / 2)
            .flatten()
            .collect();
        assert_eq!(bytes, expected, "frame {i}'s payload");
        // The state each frame followed: version 1 (exposure 5), then 2 (exposure 6).
        assert_eq!(
            frame.state_version(),
            if i < 20 { 1 } else { 2 },
            "frame {i}"
        );
    }
    let state = state_of(&mut remote);
    assert_eq!(state, json!({"exposure": 6}));

    // `ls` on the peer shows the channel as bridged, with its source; `ls --all` on the
    // source lists it at the peer.
    let ls = run(pair.ws.labhub(&["ls", "--sample", "0"]));
    assert_eq!(ls.code, 0, "{}", ls.stderr);
    let row = ls.stdout.lines().find(|l| l.starts_with(&name)).unwrap();
    assert!(row.contains(&format!("bridged from {name}@acq")), "{row}");
    let all = run(pair.acq.labhub(&["ls", "--all", "--json", "--sample", "0"]));
    assert_eq!(all.code, 0, "{}", all.stderr);
    let v: Value = serde_json::from_str(all.stdout.trim()).unwrap();
    let rows = v["channels"].as_array().unwrap();
    let at = |hub: &str| {
        rows.iter()
            .any(|r| r["hub"] == hub && r["name"] == name.as_str())
    };
    assert!(at("acq") && at("ws"), "{v}");
    let bridged = rows.iter().find(|r| r["hub"] == "ws").unwrap();
    assert_eq!(bridged["metadata"]["bridged_from"], format!("{name}@acq"));

    assert_eq!(sender.terminate(), 0);
    let summary: Value = serde_json::from_str(sender.lines().last().unwrap()).unwrap();
    assert_eq!(summary["frames"], 40, "{summary}");
    assert_eq!(summary["skipped"], 0, "{summary}");
    assert_eq!(summary["remote_lost"], 0, "{summary}");
}

#[test]
fn a_bridge_whose_key_the_peer_does_not_admit_fails_naming_the_refusal() {
    let pair = Pair::start(false);
    let name = unique("cam");
    let acq = pair.acq.hub();
    let _producer: ShmProducer<u8> = acq
        .channel(&name)
        .policy(Policy::Latest)
        .bytes(64)
        .create()
        .unwrap();
    let out = run(pair
        .acq
        .labhub(&["bridge", &name, "--to", "ws", "--seconds", "30"]));
    assert_ne!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("refused this host's key"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_gateway_admits_no_key_its_hub_does_not_admit() {
    let pair = Pair::start(true);
    let (_gateway, endpoint) = gateway(&pair.ws);
    let info = pair
        .ws
        .hub()
        .discover(labhub::bridge::GATEWAY_CHANNEL)
        .unwrap();
    let server = labhub_zmq::CurvePublicKey::from_bytes(
        info.spec.server_key.expect("a server key").as_bytes(),
    )
    .unwrap();
    let context = labhub_zmq::Context::new().unwrap();
    let stranger = labhub_zmq::CurveKeyPair::generate().unwrap();
    let mut socket = context.socket(labhub_zmq::SocketType::Dealer).unwrap();
    socket
        .set_curve_client_keys(&server, &stranger.public, &stranger.secret)
        .unwrap();
    socket.enable_monitor().unwrap();
    socket.connect(&endpoint).unwrap();
    assert!(
        !handshake_succeeds(&socket),
        "a key the hub does not admit must not handshake with its gateway"
    );
}

/// A source that publishes frames of 4 KiB (every 1 ms) until `total` are published.
fn start_source(
    hub: &Hub,
    name: &str,
    total: u64,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<ShmProducer<u8>>) {
    let mut producer: ShmProducer<u8> = hub
        .channel(name)
        .policy("ring:64:block:30s".parse().unwrap())
        .bytes(4096)
        .create()
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&done);
    let thread = std::thread::spawn(move || {
        for i in 0..total {
            let mut slot = producer.loan().unwrap();
            slot.fill((i % 251) as u8);
            slot.commit();
            std::thread::sleep(Duration::from_millis(1));
        }
        flag.store(true, Ordering::SeqCst);
        producer
    });
    (done, thread)
}

/// Two hubs, a gateway, a source channel of 64 KiB frames under `policy`, and a bridge of it
/// (`bridge_args`) whose channel is up at the peer.
struct Bridged {
    _pair: Pair,
    _gateway: Running,
    name: String,
    producer: ShmProducer<u8>,
    sender: Running,
    ws: Hub,
    _acq: Hub,
}

impl Bridged {
    fn start(policy: &str, bridge_args: &[&str]) -> Self {
        let pair = Pair::start(true);
        let (gateway, _) = gateway(&pair.ws);
        let name = unique("cam");
        let acq = pair.acq.hub();
        let ws = remote_hub(&pair.ws);
        let producer: ShmProducer<u8> = acq
            .channel(&name)
            .policy(policy.parse().unwrap())
            .bytes(1 << 16)
            .create()
            .unwrap();
        let sender = bridge(&pair.acq, &name, bridge_args);
        wait_for_channel(&ws, &name);
        Self {
            _pair: pair,
            _gateway: gateway,
            name,
            producer,
            sender,
            ws,
            _acq: acq,
        }
    }
}

/// Frames each streaming test publishes.
const TOTAL: u64 = 1500;

/// Two hubs, a gateway, a source publishing [`TOTAL`] frames (one a millisecond), a bridge,
/// and a lossless consumer at the peer that has read the first 200 frames it got.
struct Stream {
    gateway: Running,
    gateway_endpoint: String,
    sender: Running,
    name: String,
    remote: ShmConsumer<Dynamic>,
    got: Vec<u64>,
    source: Option<std::thread::JoinHandle<ShmProducer<u8>>>,
    // Dropped last: the hubs the channels were made through.
    _hubs: (Hub, Hub),
    pair: Pair,
}

impl Stream {
    fn start(bridge_args: &[&str]) -> Self {
        let pair = Pair::start(true);
        let (gateway, gateway_endpoint) = gateway(&pair.ws);
        let name = unique("cam");
        let acq = pair.acq.hub();
        let ws = remote_hub(&pair.ws);
        let (_, source) = start_source(&acq, &name, TOTAL);
        let sender = bridge(&pair.acq, &name, bridge_args);
        wait_for_channel(&ws, &name);
        let mut remote: ShmConsumer<Dynamic> = ws.channel(&name).open().unwrap();
        let mut got = Vec::new();
        while got.len() < 200 {
            if let Ok(f) = remote.next(Some(WATCHDOG)) {
                got.push(f.origin_id().unwrap());
            }
        }
        Self {
            gateway,
            gateway_endpoint,
            sender,
            name,
            remote,
            got,
            source: Some(source),
            _hubs: (acq, ws),
            pair,
        }
    }

    /// Reads to the last frame and waits for the source to finish.
    fn read_to_the_end(&mut self) {
        let rest = read_until(&mut self.remote, TOTAL - 1);
        self.got.extend(rest);
        if let Some(source) = self.source.take() {
            drop(source.join().unwrap());
        }
    }

    /// The gaps in the origin ids received.
    fn gaps(&self) -> Vec<(u64, u64)> {
        self.got
            .windows(2)
            .filter(|w| w[1] != w[0] + 1)
            .map(|w| (w[0], w[1]))
            .collect()
    }
}

/// Checks a lossless stream after a kill: ids strictly increasing, every source frame from
/// the first received on either received or counted lost by the gateway or missed by the
/// consumer.
fn check_accounting(got: &[u64], total: u64, lost: u64, missed: u64) {
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "origin ids strictly increasing, no duplicates"
    );
    let first = got[0];
    assert_eq!(
        got.len() as u64 + lost + missed,
        total - first,
        "received {} + lost at the gateway {lost} + missed by the consumer {missed}",
        got.len()
    );
}

#[test]
fn killing_the_bridge_mid_stream_loses_only_what_the_gateway_counts() {
    let mut stream = Stream::start(&[]);
    stream.sender.kill();
    // Frames go on while no bridge runs; then a new bridge takes the channel over.
    std::thread::sleep(Duration::from_millis(300));
    stream.sender = bridge(&stream.pair.acq, &stream.name, &[]);
    stream.read_to_the_end();
    let deadline = Instant::now() + WATCHDOG;
    let first = stream.got[0];
    let lost = loop {
        let report = gateway_report(&stream.gateway, &stream.name);
        if let Some(r) = &report
            && r["frames"].as_u64().unwrap() + r["lost"].as_u64().unwrap() >= TOTAL - first
        {
            break r["lost"].as_u64().unwrap();
        }
        assert!(Instant::now() < deadline, "gateway report {report:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        lost > 0,
        "frames published while no bridge ran are counted lost"
    );
    check_accounting(&stream.got, TOTAL, lost, stream.remote.missed());
}

#[test]
fn killing_the_gateway_mid_stream_loses_nothing_in_lossless_delivery() {
    let mut stream = Stream::start(&[]);
    stream.gateway.kill();
    stream.gateway = gateway(&stream.pair.ws).0;
    stream.read_to_the_end();
    expect_nothing_lost(&mut stream, true);
}

#[test]
fn a_cut_connection_is_restored_by_itself_and_nothing_is_lost_over_several_connections() {
    let mut stream = Stream::start(&["--connections", "3"]);
    // Cut every connection to the gateway (the kernel aborts the sockets, as a network cut
    // or a reset would).
    let address = stream
        .gateway_endpoint
        .trim_start_matches("tcp://")
        .to_owned();
    let cut = Command::new("ss")
        .args(["-K", "dst", &address])
        .output()
        .expect("run ss -K");
    assert!(
        cut.status.success(),
        "ss -K: {}",
        String::from_utf8_lossy(&cut.stderr)
    );
    stream.read_to_the_end();
    expect_nothing_lost(&mut stream, true);
}

/// Every frame from the first read arrived once, in order, nothing counted lost or missed,
/// and the bridge opened a second session.
fn expect_nothing_lost(stream: &mut Stream, reconnected: bool) {
    let lost =
        gateway_report(&stream.gateway, &stream.name).map_or(0, |r| r["lost"].as_u64().unwrap());
    let missed = stream.remote.missed();
    check_accounting(&stream.got, TOTAL, lost, missed);
    assert_eq!(
        (lost, missed, stream.got.len() as u64),
        (0, 0, TOTAL - stream.got[0]),
        "nothing lost; gaps {:?}",
        stream.gaps()
    );
    assert_eq!(stream.sender.terminate(), 0);
    let summary: Value = serde_json::from_str(stream.sender.lines().last().unwrap()).unwrap();
    let sessions = summary["sessions"].as_u64().unwrap();
    assert!(!reconnected || sessions >= 2, "reconnected: {summary}");
}

#[test]
fn lossy_bridges_never_hold_the_source_back_and_count_what_they_skip() {
    let mut bridged = Bridged::start("ring:4:block", &["--lossy"]);
    let (name, ws) = (bridged.name.clone(), bridged.ws.clone());
    let (producer, sender) = (&mut bridged.producer, &mut bridged.sender);
    // A viewer that reads only the newest frame: a lossless bridge would fill the remote
    // ring, then the local one, and hold the producer back; a lossy one never does.
    let mut viewer: ShmConsumer<Dynamic> = ws
        .channel(&name)
        .delivery(labhub::shm::DeliveryMode::Latest)
        .open()
        .unwrap();
    let started = Instant::now();
    for i in 0..2000 {
        let mut slot = producer.loan().unwrap();
        slot.fill(1);
        slot.commit();
        if i % 10 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    assert!(started.elapsed() < WATCHDOG);
    // The last frame reaches the peer: the bridge always takes the newest frame.
    let deadline = Instant::now() + WATCHDOG;
    loop {
        assert!(
            Instant::now() < deadline,
            "frame 1999 never reached the peer"
        );
        if let Ok(f) = viewer.next(Some(Duration::from_millis(100)))
            && f.origin_id() == Some(1999)
        {
            break;
        }
    }
    assert_eq!(sender.terminate(), 0);
    let summary: Value = serde_json::from_str(sender.lines().last().unwrap()).unwrap();
    let frames = summary["frames"].as_u64().unwrap();
    let skipped = summary["skipped"].as_u64().unwrap();
    assert!(frames > 0, "{summary}");
    assert!(
        skipped > 0,
        "a lossy bridge skips frames it has no room for: {summary}"
    );
    assert_eq!(
        frames + skipped,
        2000,
        "every frame sent or counted skipped: {summary}"
    );
    assert_eq!(
        summary["remote_lost"], 0,
        "the gateway lost none of those sent: {summary}"
    );
}

#[test]
fn stopping_a_lossless_bridge_delivers_every_frame_it_took_from_the_channel() {
    let mut bridged = Bridged::start("ring:256:block:30s", &[]);
    let (name, ws) = (bridged.name.clone(), bridged.ws.clone());
    let (producer, sender) = (&mut bridged.producer, &mut bridged.sender);
    let mut remote: ShmConsumer<Dynamic> = ws.channel(&name).open().unwrap();
    // Published at once: most are still in the local ring, the bridge's queue or in flight
    // when the bridge is told to stop.
    for _ in 0..200 {
        producer.loan().unwrap().commit();
    }
    assert_eq!(sender.terminate(), 0);
    let summary: Value = serde_json::from_str(sender.lines().last().unwrap()).unwrap();
    let sent = summary["frames"].as_u64().unwrap();
    assert!(sent > 0, "{summary}");
    let got = read_until(&mut remote, sent - 1);
    assert_eq!(
        got,
        (0..sent).collect::<Vec<_>>(),
        "every frame the bridge took arrived"
    );
    assert_eq!(
        summary["acked"], sent,
        "and was credited before the bridge said goodbye: {summary}"
    );
}

#[test]
fn a_bridge_of_frames_larger_than_the_gateway_takes_is_refused_naming_the_limit() {
    let pair = Pair::start(true);
    let (_gateway, _) = gateway_with(&pair.ws, &["--max-message-size", "1MiB"]);
    let name = unique("cam");
    let acq = pair.acq.hub();
    let _producer: ShmProducer<u8> = acq
        .channel(&name)
        .policy(Policy::Latest)
        .bytes(2 << 20)
        .create()
        .unwrap();
    let out = run(pair
        .acq
        .labhub(&["bridge", &name, "--to", "ws", "--seconds", "30"]));
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stderr
            .contains("do not fit this gateway's largest message"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_source_producer_that_restarts_is_bridged_on_from_the_next_frame() {
    let pair = Pair::start(true);
    let (gateway, _) = gateway(&pair.ws);
    let name = unique("cam");
    let acq = pair.acq.hub();
    let ws = remote_hub(&pair.ws);
    let make = |hub: &Hub| -> ShmProducer<u8> {
        hub.channel(&name)
            .policy("ring:16:block:30s".parse().unwrap())
            .bytes(64)
            .create()
            .unwrap()
    };
    let mut producer = make(&acq);
    let _sender = bridge(&pair.acq, &name, &[]);
    wait_for_channel(&ws, &name);
    let mut remote: ShmConsumer<Dynamic> = ws.channel(&name).open().unwrap();
    for i in 0..20u64 {
        producer.loan().unwrap().commit();
        let f = remote.next(Some(WATCHDOG)).unwrap();
        assert_eq!(f.origin_id(), Some(i));
    }
    // The producer goes and comes back (here in the same process, so only the segment's
    // producer lock tells it went): it takes the channel over, frame ids go on, and the
    // bridge's consumer follows it to its new segment.
    drop(producer);
    let acq2 = pair.acq.hub();
    let mut producer = make(&acq2);
    let first = producer.next_frame_id();
    assert_eq!(first, 20, "frame ids go on across the takeover");
    for i in 0..20u64 {
        producer.loan().unwrap().commit();
        let f = remote.next(Some(WATCHDOG)).unwrap();
        assert_eq!(
            f.origin_id(),
            Some(first + i),
            "frame {i} of the new channel"
        );
    }
    expect_written_once(&gateway, &name, 40);
}

#[test]
fn either_hub_restarting_mid_stream_loses_nothing() {
    let mut stream = Stream::start(&[]);
    // SIGKILL and restart on the same ports, the receiving hub then the source's: the gateway,
    // the bridged channel and the source register again by themselves, and frames never went
    // through a broker.
    stream.pair.ws.restart();
    stream.pair.acq.restart();
    stream.read_to_the_end();
    expect_nothing_lost(&mut stream, false);
}

#[test]
fn a_full_remote_ring_holds_the_source_back_through_the_credits() {
    let mut bridged = Bridged::start("ring:8:block:200ms", &["--buffer", "256KiB"]);
    let (name, ws) = (bridged.name.clone(), bridged.ws.clone());
    // A lossless consumer at the peer that does not read yet: its ring (8 slots, like the
    // source's) fills, the gateway withholds credit, the bridge's window (16) and queue
    // (256 KiB: 4 frames) fill, then the source ring: the producer's loan times out.
    let mut remote: ShmConsumer<Dynamic> = ws.channel(&name).open().unwrap();
    let mut published = 0u64;
    let held_back = loop {
        match bridged.producer.loan() {
            Ok(slot) => {
                slot.commit();
                published += 1;
            }
            Err(labhub::shm::PublishError::Timeout { .. }) => break published,
            Err(e) => panic!("{e}"),
        }
        assert!(published < 1000, "the source was never held back");
    };
    // Remote ring, credit window, the bridge's queue and the source ring: nothing else holds
    // frames, so the source stops after about 8 + 16 + 4 + 8 of them.
    assert!(
        (20..=60).contains(&held_back),
        "held back after {held_back} frames"
    );
    // The peer reads: credit flows again and every frame arrives, in order.
    let got = read_until(&mut remote, held_back - 1);
    assert_eq!(got, (0..held_back).collect::<Vec<_>>());
    bridged.producer.loan().unwrap().commit();
    let next = remote.next(Some(WATCHDOG)).unwrap();
    assert_eq!(next.origin_id(), Some(held_back), "the source goes on");
}

#[test]
fn a_source_channel_made_again_is_bridged_on_with_its_new_numbering_and_state() {
    let mut pair = Pair::start(true);
    let (gateway, _) = gateway(&pair.ws);
    let name = unique("cam");
    let ws = remote_hub(&pair.ws);
    let make = |hub: &Hub| -> ShmProducer<u8> {
        hub.channel(&name)
            .policy("ring:16:block:30s".parse().unwrap())
            .bytes(64)
            .flex_size(256)
            .create()
            .unwrap()
    };
    // The source's producer and its hub go (SIGKILL), the hub comes back knowing nothing of the
    // channel, and the producer makes it afresh with state `exposure`.
    let remake = |pair: &mut Pair, gone: (Hub, ShmProducer<u8>), exposure: u64| {
        drop(gone);
        pair.acq.restart();
        let acq = pair.acq.hub();
        let mut producer = make(&acq);
        assert_eq!(producer.next_frame_id(), 0, "a channel made afresh");
        producer
            .write_state(&json!({ "exposure": exposure }))
            .unwrap();
        (acq, producer)
    };
    let acq = pair.acq.hub();
    let mut producer = make(&acq);
    for exposure in 1..=3 {
        producer
            .write_state(&json!({ "exposure": exposure }))
            .unwrap();
    }
    let mut sender = bridge(&pair.acq, &name, &[]);
    wait_for_channel(&ws, &name);
    let mut remote: ShmConsumer<Dynamic> = ws.channel(&name).open().unwrap();
    // The peer numbers the states it writes itself: one state, the third, came over.
    let mut versions = Vec::new();
    for i in 0..20u64 {
        producer.loan().unwrap().commit();
        let f = remote.next(Some(WATCHDOG)).unwrap();
        assert_eq!(f.origin_id(), Some(i));
        versions.push(f.state_version());
    }
    let before = versions[0];
    assert!(
        before > 0 && versions.iter().all(|&v| v == before),
        "{versions:?}"
    );
    // The channel made afresh, its ids and state versions from the start: the bridge keeps
    // running and follows it.
    let (acq, mut producer) = remake(&mut pair, (acq, producer), 10);
    for i in 0..20u64 {
        producer.loan().unwrap().commit();
        let f = remote.next(Some(WATCHDOG)).unwrap();
        assert_eq!(
            f.origin_id(),
            Some(i),
            "frame {i} of the channel made again"
        );
        // Its first state, version 1 at the source, is a new version at the peer.
        assert_eq!(f.state_version(), before + 1, "frame {i}'s state");
    }
    let state = state_of(&mut remote);
    assert_eq!(
        state,
        json!({ "exposure": 10 }),
        "the state of the channel made again"
    );

    // Once more while no bridge runs: a new bridge's first frame, not above the newest the
    // gateway wrote, and its first state, version 1 again, start the channel afresh too.
    sender.kill();
    let (acq, mut producer) = remake(&mut pair, (acq, producer), 20);
    let _sender = bridge(&pair.acq, &name, &[]);
    // A new consumer reads from the frame after the newest when it attached.
    let deadline = Instant::now() + WATCHDOG;
    while acq.discover(&name).map_or(0, |info| info.consumers) == 0 {
        assert!(Instant::now() < deadline, "the new bridge never attached");
        std::thread::sleep(Duration::from_millis(20));
    }
    for i in 0..20u64 {
        producer.loan().unwrap().commit();
        let f = remote.next(Some(WATCHDOG)).unwrap();
        assert_eq!(f.origin_id(), Some(i), "frame {i} through the new bridge");
        assert_eq!(f.state_version(), before + 2, "frame {i}'s state");
    }
    let state = state_of(&mut remote);
    assert_eq!(
        state,
        json!({ "exposure": 20 }),
        "the state through the new bridge"
    );
    expect_written_once(&gateway, &name, 60);
}
