//! The broker with real processes: the `labhub-test-child broker-run` role runs the same
//! `broker::run_foreground` as `labhub hub`; `broker-client` roles are producers and consumers
//! that heartbeat; tests talk to the broker with the probe client and SIGKILL processes
//! mid-operation.

#[path = "broker_perimeter.rs"]
mod perimeter;
#[path = "broker_python.rs"]
mod python;
#[path = "broker_security.rs"]
mod security;
#[path = "broker_watchdog.rs"]
mod watchdog;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use labhub::broker::probe::{NotificationListener, Probe};
use labhub::keys::{self, KeyPair, PublicKey};
use labhub::protocol::{ErrorCode, Notification};
use serde_json::json;

pub use crate::common::{ChildProc, ScratchDir, WATCHDOG, spawn_child, unique, wait_until};

/// Heartbeat interval of test brokers.
pub const INTERVAL_MS: u64 = 100;
/// Misses allowed by test brokers.
pub const MISSES: u32 = 3;

/// A labhub home unique to this test, removed on drop.
pub struct TestHome {
    _dir: ScratchDir,
    pub path: PathBuf,
    pub tag: String,
}

impl TestHome {
    pub fn new(tag: &str) -> Self {
        let tag = unique(&format!("b-{tag}"));
        let dir = ScratchDir::new(&tag);
        Self {
            path: dir.path().to_owned(),
            _dir: dir,
            tag,
        }
    }

    /// A channel name unique to this test.
    pub fn channel(&self, name: &str) -> String {
        format!("{}-{name}", self.tag)
    }

    pub fn local_key(&self) -> KeyPair {
        keys::local_client_key(&self.path.join("keys")).expect("local client key")
    }

    pub fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.path.join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            // A line being written at this very moment may be incomplete: skip it.
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// A broker child process and what it printed when ready.
pub struct TestBroker {
    pub proc: ChildProc,
    pub endpoint: String,
    pub notify_endpoint: String,
    pub key: PublicKey,
}

impl TestBroker {
    /// Starts a broker on fresh ports.
    pub fn start(home: &TestHome) -> Self {
        Self::start_on(home, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*", &[])
    }

    /// Starts a broker on fresh ports whose clients expire after 10 s of silence, not 300 ms:
    /// for a test whose client sends raw requests without heartbeats and may stall under load.
    pub fn start_patient(home: &TestHome) -> Self {
        Self::start_with(
            "tcp://127.0.0.1:*",
            "tcp://127.0.0.1:*",
            home,
            (1000, 10),
            &[],
        )
    }

    pub fn start_on(home: &TestHome, endpoint: &str, notify: &str, extra: &[&str]) -> Self {
        Self::start_with(endpoint, notify, home, (INTERVAL_MS, MISSES), extra)
    }

    fn start_with(
        endpoint: &str,
        notify: &str,
        home: &TestHome,
        (interval_ms, misses): (u64, u32),
        extra: &[&str],
    ) -> Self {
        let interval = interval_ms.to_string();
        let misses = misses.to_string();
        let mut args = vec![
            home.path.to_str().unwrap(),
            endpoint,
            notify,
            &interval,
            &misses,
        ];
        args.extend_from_slice(extra);
        let mut proc = spawn_child("broker-run", &args);
        let line = proc.skip_to("ready ");
        let parts: Vec<&str> = line.split(' ').collect();
        assert_eq!(parts.len(), 4, "{line}");
        Self {
            endpoint: parts[1].to_owned(),
            notify_endpoint: parts[2].to_owned(),
            key: PublicKey::from_z85(parts[3]).unwrap(),
            proc,
        }
    }

    pub fn probe(&self, home: &TestHome) -> Probe {
        Probe::connect(&self.endpoint, &self.key, &home.local_key(), WATCHDOG).unwrap()
    }

    pub fn listen(&self, home: &TestHome) -> NotificationListener {
        NotificationListener::connect(&self.notify_endpoint, &self.key, &home.local_key()).unwrap()
    }

    /// Spawns a `broker-client` child.
    pub fn client(&self, home: &TestHome, id: &str, mode: &str, channel: &str) -> ChildProc {
        spawn_child(
            "broker-client",
            &[
                home.path.to_str().unwrap(),
                &self.endpoint,
                &self.key.to_z85(),
                id,
                mode,
                channel,
                &INTERVAL_MS.to_string(),
            ],
        )
    }
}

/// Waits for a notification matching `pred`, skipping others.
pub fn expect_notification(
    listener: &NotificationListener,
    what: &str,
    pred: impl Fn(&Notification) -> bool,
) -> Notification {
    let deadline = Instant::now() + WATCHDOG;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "watchdog: no notification {what}");
        if let Ok((_, n)) = listener.next(left)
            && pred(&n)
        {
            return n;
        }
    }
}

/// Whether channel `name`'s segment exists for this user.
pub fn segment_exists(name: &str) -> bool {
    let os = labhub::name::ChannelName::new(name).unwrap().segment_name();
    Path::new("/dev/shm").join(&os[1..]).exists()
}

/// Sends requests until the subscriber sees something: PUB/SUB drops messages published before
/// the subscription reached the publisher, so tests first make sure it has.
pub fn sync_listener(probe: &mut Probe, listener: &NotificationListener, home: &TestHome) {
    let name = home.channel("sync");
    let deadline = Instant::now() + WATCHDOG;
    let mut i = 0;
    loop {
        assert!(
            Instant::now() < deadline,
            "watchdog: subscriber never synced"
        );
        let reply = probe
            .request(
                "register",
                json!({"client": format!("sync-{i}"), "channel": {"name": format!("{name}{i}"), "kind": "pubsub", "endpoint": "tcp://127.0.0.1:9"}}),
            )
            .unwrap();
        assert!(reply.is_ok(), "{reply:?}");
        if listener.next(Duration::from_millis(200)).is_ok() {
            return;
        }
        i += 1;
    }
}

#[test]
fn register_discover_list_and_unregister_through_a_broker_process() {
    let home = TestHome::new("rdu");
    let broker = TestBroker::start(&home);
    let mut probe = broker.probe(&home);
    let name = home.channel("temps");
    let reply = probe
        .request(
            "register",
            json!({"client": "it-producer", "channel": {
                "name": name, "kind": "pubsub", "endpoint": "tcp://127.0.0.1:6000",
                "schema": {"name": "f64", "version": 1}, "metadata": {"unit": "K"}}}),
        )
        .unwrap();
    assert!(reply.is_ok(), "{reply:?}");
    assert_eq!(reply.heartbeat_interval_ms, Some(INTERVAL_MS));

    let reply = probe.request("discover", json!({"name": name})).unwrap();
    let channel = reply.channel.expect("a channel");
    assert_eq!(
        channel.spec.endpoint.unwrap().as_str(),
        "tcp://127.0.0.1:6000"
    );
    assert_eq!(channel.spec.metadata["unit"], "K");

    let reply = probe.request("list", json!({"prefix": home.tag})).unwrap();
    assert_eq!(reply.channels.unwrap().len(), 1);

    let reply = probe
        .request("unregister", json!({"client": "it-producer", "name": name}))
        .unwrap();
    assert!(reply.is_ok(), "{reply:?}");
    let reply = probe.request("discover", json!({"name": name})).unwrap();
    assert_eq!(reply.error_code, ErrorCode::NotFound);

    // The audit log is flushed after each batch, just after the replies are sent.
    wait_until("the audit log records every step", || {
        let audit = home.audit();
        [
            "registered",
            "discovered",
            "unregistered",
            "channel_removed",
        ]
        .iter()
        .all(|event| audit.iter().any(|l| l["event"] == *event))
    });
}

#[test]
fn a_req_client_gets_its_delimiter_back() {
    let home = TestHome::new("req");
    let broker = TestBroker::start(&home);
    let local = home.local_key();
    let ctx = labhub_zmq::Context::new().unwrap();
    let req = ctx.socket(labhub_zmq::SocketType::Req).unwrap();
    req.set_curve_client_keys(
        &labhub_zmq::CurvePublicKey::from_bytes(broker.key.as_bytes()).unwrap(),
        &labhub_zmq::CurvePublicKey::from_bytes(local.public.as_bytes()).unwrap(),
        &labhub_zmq::CurveSecretKey::from_bytes(local.secret_bytes()).unwrap(),
    )
    .unwrap();
    req.set_rcvtimeo(Some(WATCHDOG)).unwrap();
    req.connect(&broker.endpoint).unwrap();
    req.send_multipart(
        [&b"labhub"[..], b"1", b"list", br#"{"request_id": 77}"#],
        labhub_zmq::Flags::NONE,
    )
    .unwrap();
    // A REQ socket strips the delimiter; what remains is the four-frame reply.
    let frames = req.recv_multipart_bytes(labhub_zmq::Flags::NONE).unwrap();
    assert_eq!(frames.len(), 4);
    let reply = labhub::protocol::decode_reply(&frames).unwrap();
    assert_eq!(reply.request_id, Some(77));
    assert!(reply.is_ok());
}

#[test]
fn garbage_and_oversized_messages_get_errors_and_the_broker_keeps_serving() {
    let home = TestHome::new("garbage");
    let broker = TestBroker::start(&home);
    let probe = broker.probe(&home);
    let big = vec![b'x'; 60_000];
    let cases: Vec<(Vec<&[u8]>, ErrorCode)> = vec![
        (vec![b"hello"], ErrorCode::BadFrames),
        (vec![b"LABHUB", b"1", b"list", b"{}"], ErrorCode::BadTag),
        (
            vec![b"labhub", b"9", b"list", b"{}"],
            ErrorCode::UnsupportedVersion,
        ),
        (
            vec![b"labhub", b"1", b"format-disk", b"{}"],
            ErrorCode::UnknownType,
        ),
        (
            vec![b"labhub", b"1", b"list", b"\xff\xfe"],
            ErrorCode::MalformedBody,
        ),
        (
            vec![b"labhub", b"1", b"list", b"[]"],
            ErrorCode::MalformedBody,
        ),
        (
            vec![
                b"labhub",
                b"1",
                b"discover",
                br#"{"request_id": 3, "name": "../x"}"#,
            ],
            ErrorCode::InvalidField,
        ),
        (
            vec![
                b"labhub",
                b"1",
                b"list",
                br#"{"request_id": 4, "bogus": 1}"#,
            ],
            ErrorCode::InvalidField,
        ),
        (
            vec![b"labhub", b"1", b"list", &big, &big],
            ErrorCode::TooLarge,
        ),
        (vec![b"a"; 40], ErrorCode::BadFrames),
    ];
    for _round in 0..20 {
        for (frames, code) in &cases {
            probe.send_raw(frames).unwrap();
            let reply = probe.recv_reply().unwrap();
            assert_eq!(reply.error_code, *code, "{:?}", reply.message);
            assert!(!reply.is_ok());
        }
    }
    // A frame over the transport limit makes ZeroMQ drop that connection (no reply is
    // possible); other clients are unaffected.
    let mut victim = broker.probe(&home);
    victim.send_raw(&[&vec![0u8; 200_000]]).unwrap();
    let mut probe = broker.probe(&home);
    let reply = probe.request("list", json!({})).unwrap();
    assert!(reply.is_ok(), "{reply:?}");
    let _ = victim.request("list", json!({}));
}
