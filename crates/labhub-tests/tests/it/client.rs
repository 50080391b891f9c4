//! The Hub client against no broker and against a fake broker we control (a CURVE ROUTER
//! in this process that answers with whatever the test scripts).

use std::collections::VecDeque;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use labhub::client::{ClientConfig, ClientError, Hub};
use labhub::keys::{KeyPair, PublicKey};
use labhub::protocol::ErrorCode;
use labhub_zmq::{Context, CurveSecretKey, Flags, PollEvents, Socket, SocketType};

use crate::common::{ScratchDir, WATCHDOG, unique, within_watchdog};

type Responder = Box<dyn FnOnce(u64) -> Vec<Vec<u8>> + Send>;
type BodyMaker = Box<dyn Fn(u64) -> String + Send>;

/// A fake broker: a CURVE ROUTER on its own thread answering each request with the next
/// scripted responder (given the request id read from the body), in order.
struct FakeBroker {
    _sockets: ScratchDir,
    endpoint: String,
    server_key: PublicKey,
    script: Option<Sender<Responder>>,
    seen: Receiver<(String, u64)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeBroker {
    fn start() -> Self {
        let sockets = ScratchDir::new("fake-broker");
        let endpoint = sockets.ipc("fake");
        let server = KeyPair::generate();
        let server_key = server.public;
        let (script_tx, script_rx) = mpsc::channel::<Responder>();
        let (seen_tx, seen) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let bind = endpoint.clone();
        let thread = std::thread::spawn(move || {
            let context = Context::new().unwrap();
            let router = context.socket(SocketType::Router).unwrap();
            let secret = CurveSecretKey::from_bytes(server.secret_bytes()).unwrap();
            router.set_curve_server_keys(&secret).unwrap();
            router.bind(&bind).unwrap();
            ready_tx.send(()).unwrap();
            serve(&router, &script_rx, &seen_tx);
        });
        ready_rx.recv_timeout(WATCHDOG).unwrap();
        Self {
            _sockets: sockets,
            endpoint,
            server_key,
            script: Some(script_tx),
            seen,
            thread: Some(thread),
        }
    }

    fn answer(&self, f: impl FnOnce(u64) -> Vec<Vec<u8>> + Send + 'static) {
        self.script.as_ref().unwrap().send(Box::new(f)).unwrap();
    }

    fn client(&self, timeout: Duration) -> Hub {
        let config = ClientConfig::new(&self.endpoint, self.server_key, KeyPair::generate())
            .request_timeout(timeout);
        Hub::connect(config).unwrap()
    }
}

impl Drop for FakeBroker {
    fn drop(&mut self) {
        self.script.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(router: &Socket, script: &Receiver<Responder>, seen: &Sender<(String, u64)>) {
    let mut requests: VecDeque<(Vec<u8>, u64)> = VecDeque::new();
    let mut responders: VecDeque<Responder> = VecDeque::new();
    loop {
        let mut items = [router.poll_item(PollEvents::IN)];
        labhub_zmq::poll(&mut items, Some(Duration::from_millis(5))).unwrap();
        while let Ok(frames) = router.recv_multipart_bytes(Flags::DONTWAIT) {
            let kind = String::from_utf8_lossy(&frames[3]).into_owned();
            let body: serde_json::Value = serde_json::from_slice(&frames[4]).unwrap();
            let id = body["request_id"].as_u64().unwrap();
            let _ = seen.send((kind, id));
            requests.push_back((frames[0].clone(), id));
        }
        let closed = loop {
            match script.try_recv() {
                Ok(r) => responders.push_back(r),
                Err(mpsc::TryRecvError::Empty) => break false,
                Err(mpsc::TryRecvError::Disconnected) => break true,
            }
        };
        // Answer requests in order as responders become available.
        while !requests.is_empty() && !responders.is_empty() {
            let (identity, id) = requests.pop_front().unwrap();
            let respond = responders.pop_front().unwrap();
            let mut out = vec![identity];
            out.extend(respond(id));
            router.send_multipart(out, Flags::NONE).unwrap();
        }
        if closed {
            return;
        }
    }
}

fn reply(body: &str) -> Vec<Vec<u8>> {
    vec![
        b"labhub".to_vec(),
        b"1".to_vec(),
        b"reply".to_vec(),
        body.as_bytes().to_vec(),
    ]
}

fn ok_discover(id: u64, name: &str) -> String {
    format!(
        r#"{{"request_id":{id},"status":"ok","error_code":"none","message":"","channel":{{"name":"{name}","kind":"pubsub","endpoint":"tcp://127.0.0.1:9","producer":"p","state":"up","consumers":0}}}}"#
    )
}

#[test]
fn a_call_without_a_broker_times_out_and_the_client_stays_usable_and_shuts_down() {
    within_watchdog("client without broker", WATCHDOG, || {
        let sockets = ScratchDir::new("nobroker");
        let keys = KeyPair::generate();
        let config = ClientConfig::new(sockets.ipc("nobroker"), KeyPair::generate().public, keys)
            .notify_endpoint(sockets.ipc("nobroker-pub"))
            .request_timeout(Duration::from_millis(200));
        let hub = Hub::connect(config).unwrap();
        for _ in 0..2 {
            match hub.discover("cam0") {
                Err(ClientError::Timeout {
                    request: "discover",
                    waited,
                    ..
                }) => assert!(waited >= Duration::from_millis(200)),
                other => panic!("expected a timeout, got {other:?}"),
            }
        }
        hub.shutdown();
        assert!(matches!(hub.discover("cam0"), Err(ClientError::Stopped)));
        // Dropping after shutdown, and dropping a second client without shutdown, returns.
        drop(hub);
        let config = ClientConfig::new(
            sockets.ipc("nobroker2"),
            KeyPair::generate().public,
            KeyPair::generate(),
        )
        .request_timeout(Duration::from_millis(100));
        let hub = Hub::connect(config).unwrap();
        assert!(matches!(
            hub.list(None, None),
            Err(ClientError::Timeout { .. })
        ));
        drop(hub);
    });
}

fn expect_bad_reply(hub: &Hub, fake: &FakeBroker, frames: Vec<Vec<u8>>, needle: &str) {
    fake.answer(move |_| frames);
    match hub.discover("cam0") {
        Err(ClientError::BadReply { request, problem }) => {
            assert_eq!(request, "discover");
            assert!(
                problem.contains(needle),
                "{problem:?} should mention {needle:?}"
            );
        }
        other => panic!("expected BadReply mentioning {needle:?}, got {other:?}"),
    }
}

#[test]
fn malformed_replies_from_a_fake_broker_are_typed_errors_and_the_client_stays_usable() {
    within_watchdog("malformed replies", WATCHDOG, || {
        let fake = FakeBroker::start();
        let hub = fake.client(Duration::from_secs(10));
        // Not JSON, not an object, a field missing, a field of the wrong type.
        expect_bad_reply(&hub, &fake, reply("not json"), "expected");
        expect_bad_reply(&hub, &fake, reply("[1, 2]"), "");
        expect_bad_reply(&hub, &fake, reply(r#"{"status":"ok"}"#), "");
        // Each case that carries the request id is routed to its request.
        let cases: Vec<(BodyMaker, &str)> = vec![
            (
                Box::new(|id| {
                    format!(r#"{{"request_id":{id},"status":"ok","error_code":"none"}}"#)
                }),
                "message",
            ),
            (
                Box::new(|id| {
                    format!(r#"{{"request_id":{id},"status":7,"error_code":"none","message":""}}"#)
                }),
                "status",
            ),
            (
                Box::new(|id| {
                    format!(
                        r#"{{"request_id":{id},"status":"ok","error_code":"none","message":""}}"#
                    )
                }),
                "channel",
            ),
            (Box::new(|id| ok_discover(id, "other")), "channel.name"),
            (
                Box::new(|id| {
                    format!(
                        r#"{{"request_id":{id},"status":"ok","error_code":"none","message":"","channel":{{"name":"cam0","kind":"pubsub","producer":"p","state":"up","consumers":"many"}}}}"#
                    )
                }),
                "channel.consumers",
            ),
        ];
        for (make, needle) in cases {
            fake.answer(move |id| reply(&make(id)));
            match hub.discover("cam0") {
                Err(ClientError::BadReply { request, problem }) => {
                    assert_eq!(request, "discover");
                    assert!(
                        problem.contains(needle),
                        "{problem:?} should mention {needle:?}"
                    );
                }
                other => panic!("expected BadReply mentioning {needle:?}, got {other:?}"),
            }
        }
        // Wrong envelopes: a bad tag, a missing frame, an unknown version.
        expect_bad_reply(
            &hub,
            &fake,
            vec![
                b"nothub".to_vec(),
                b"1".to_vec(),
                b"reply".to_vec(),
                b"{}".to_vec(),
            ],
            "tag",
        );
        expect_bad_reply(
            &hub,
            &fake,
            vec![b"labhub".to_vec(), b"1".to_vec()],
            "frames",
        );
        expect_bad_reply(
            &hub,
            &fake,
            vec![
                b"labhub".to_vec(),
                b"9".to_vec(),
                b"reply".to_vec(),
                b"{}".to_vec(),
            ],
            "version",
        );
        // A refusal is a typed refusal, and a good reply still works afterwards.
        fake.answer(|id| {
            reply(&format!(
                r#"{{"request_id":{id},"status":"error","error_code":"not_found","message":"no channel named cam0"}}"#
            ))
        });
        match hub.discover("cam0") {
            Err(e @ ClientError::Refused { .. }) => {
                assert_eq!(e.code(), Some(ErrorCode::NotFound));
                assert!(e.to_string().contains("cam0"), "{e}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        fake.answer(|id| reply(&ok_discover(id, "cam0")));
        let info = hub.discover("cam0").unwrap();
        assert_eq!(info.producer.as_str(), "p");
        hub.shutdown();
    });
}

#[test]
fn a_reply_arriving_after_its_timeout_is_dropped_and_the_next_call_gets_its_own() {
    within_watchdog("late reply", WATCHDOG, || {
        let fake = FakeBroker::start();
        let hub = fake.client(Duration::from_millis(300));
        // No responder yet: the first discover times out.
        assert!(matches!(
            hub.discover("first"),
            Err(ClientError::Timeout { .. })
        ));
        let (kind, first_id) = fake.seen.recv_timeout(WATCHDOG).unwrap();
        assert_eq!(kind, "discover");
        // The late answer to the first request, then the answer to the second.
        fake.answer(|id| reply(&ok_discover(id, "first")));
        fake.answer(|id| reply(&ok_discover(id, "second")));
        let info = hub.discover("second").unwrap();
        assert_eq!(info.spec.name.as_str(), "second");
        let (_, second_id) = fake.seen.recv_timeout(WATCHDOG).unwrap();
        assert!(second_id > first_id);
        hub.shutdown();
    });
}

fn shm_discover(id: u64, name: &str, shm_name: &str, size: u64) -> String {
    shm_discover_with(
        id,
        name,
        shm_name,
        size,
        r#"{"element":"u8","shape":[256]}"#,
    )
}

fn shm_discover_with(id: u64, name: &str, shm_name: &str, size: u64, schema: &str) -> String {
    format!(
        r#"{{"request_id":{id},"status":"ok","error_code":"none","message":"","channel":{{"name":"{name}","kind":"shm","shm_name":"{shm_name}","size":{size},"schema":{schema},"producer":"p","state":"up","consumers":0}}}}"#
    )
}

#[test]
fn a_consumer_refuses_a_segment_whose_size_name_or_frame_type_differs_from_what_the_broker_announces()
 {
    within_watchdog("layout mismatch", WATCHDOG, || {
        let name = unique("mismatch");
        let producer = labhub::shm::Channel::new(&name)
            .policy(labhub::shm::Policy::DoubleBuffer)
            .bytes(256)
            .create()
            .unwrap();
        let real_size = labhub::shm::inspect(&name).unwrap().total_size;
        let shm_name = labhub::name::ChannelName::new(name.as_str())
            .unwrap()
            .segment_name();
        let fake = FakeBroker::start();
        let hub = fake.client(Duration::from_secs(10));
        let find = || hub.channel(&name).open();

        let (n, s) = (name.clone(), shm_name.clone());
        fake.answer(move |id| reply(&shm_discover(id, &n, &s, real_size + 4096)));
        match find() {
            Err(ClientError::LayoutMismatch {
                field: "size",
                broker,
                segment,
                ..
            }) => {
                assert_eq!(broker, (real_size + 4096).to_string());
                assert_eq!(segment, real_size.to_string());
            }
            other => panic!("expected a size mismatch, got {other:?}"),
        }

        let n = name.clone();
        fake.answer(move |id| reply(&shm_discover(id, &n, "/labhub.1.other", real_size)));
        match find() {
            Err(
                e @ ClientError::LayoutMismatch {
                    field: "shm_name", ..
                },
            ) => assert!(e.to_string().contains("shm_name"), "{e}"),
            other => panic!("expected a segment name mismatch, got {other:?}"),
        }

        for (schema, field) in [
            (r#"{"element":"u16","shape":[128]}"#, "element"),
            (r#"{"element":"u8","shape":[16,16]}"#, "shape"),
        ] {
            let (n, s) = (name.clone(), shm_name.clone());
            fake.answer(move |id| reply(&shm_discover_with(id, &n, &s, real_size, schema)));
            match find() {
                Err(ClientError::LayoutMismatch { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected a {field} mismatch, got {other:?}"),
            }
        }

        let n = name.clone();
        fake.answer(move |id| reply(&ok_discover(id, &n)));
        assert!(matches!(find(), Err(ClientError::WrongKind { .. })));

        // With the right announcement, the consumer attaches and tells the broker.
        let (n, s) = (name.clone(), shm_name.clone());
        fake.answer(move |id| reply(&shm_discover(id, &n, &s, real_size)));
        let (n, s) = (name.clone(), shm_name.clone());
        fake.answer(move |id| reply(&shm_discover(id, &n, &s, real_size)));
        let consumer = find().unwrap();
        assert_eq!(consumer.info().unwrap().spec.size, Some(real_size));
        let kinds: Vec<String> = fake.seen.try_iter().map(|(k, _)| k).collect();
        assert_eq!(kinds.last().map(String::as_str), Some("attach"));
        drop(consumer);
        hub.shutdown();
        drop(producer);
        labhub::shm::remove_channel(&name).unwrap();
    });
}

#[test]
fn the_client_module_starts_a_hub_as_a_lifecycle_service_and_stops_it_at_finalize() {
    use labhub::lifecycle::Lifecycle;
    let sockets = ScratchDir::new("lc");
    let def = labhub::client::module(ClientConfig::new(
        sockets.ipc("lc"),
        KeyPair::generate().public,
        KeyPair::generate(),
    ));
    assert_eq!(def.dependencies(), [labhub::log::MODULE_NAME]);
    let endpoint = sockets.ipc("lc");
    within_watchdog("lifecycle", WATCHDOG, move || {
        let lifecycle = Lifecycle::new();
        let config = ClientConfig::new(endpoint, KeyPair::generate().public, KeyPair::generate())
            .request_timeout(Duration::from_millis(100));
        lifecycle
            .register(labhub::client::module_without_log(config))
            .unwrap();
        lifecycle.initialize().unwrap();
        let hub = lifecycle.service::<Hub>().expect("the hub runs");
        assert!(!hub.is_stopped());
        let report = lifecycle.finalize();
        assert_eq!(report.stop_order(), [labhub::client::MODULE_NAME]);
        assert!(report.is_clean(), "{report:?}");
        assert!(hub.is_stopped());
        assert!(matches!(hub.discover("x"), Err(ClientError::Stopped)));
    });
}
