//! `labhub::msg` channels over real sockets: tcp on 127.0.0.1, ipc in a temp directory, and
//! a request/reply server in another process.

use std::time::Duration;

use labhub::msg::{
    CloseReason, Context, CurveKeyPair, FrameError, MsgError, Publisher, ReqClient, ReqServer,
    Served, Subscriber,
};
use labhub_zmq::{Flags, SocketType};
use serde::{Deserialize, Serialize};

use crate::common::{AbortWatchdog, ChildProc, ScratchDir, WATCHDOG, spawn_child};

/// How long a test waits to see that nothing arrives.
const SHORT: Duration = Duration::from_millis(200);

/// Waits out the slow-joiner window: publishes probes on `topic` until the subscriber gets
/// one, then a marker, and consumes everything up to the marker, so the next message the
/// subscriber reads is the next one published.
fn join(publish: impl Fn(&[u8], &[u8]), subscriber: &Subscriber, topic: &[u8]) {
    loop {
        publish(topic, b"probe");
        if let Some(message) = subscriber.recv(Duration::from_millis(20)).expect("probe") {
            assert_eq!(message.payload(), b"probe");
            break;
        }
    }
    publish(topic, b"joined");
    loop {
        let message = subscriber
            .recv(WATCHDOG)
            .expect("marker")
            .expect("marker in time");
        if message.payload() == b"joined" {
            return;
        }
        assert_eq!(message.payload(), b"probe");
    }
}

fn join_publisher(publisher: &Publisher, subscriber: &Subscriber, topic: &[u8]) {
    join(
        |topic, payload| publisher.send(topic, payload).expect("send"),
        subscriber,
        topic,
    );
}

fn received(subscriber: &Subscriber) -> (Vec<u8>, Vec<u8>) {
    let message = subscriber
        .recv(WATCHDOG)
        .expect("receive")
        .expect("a message in time");
    (message.topic().to_vec(), message.payload().to_vec())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Reading {
    channel: String,
    values: Vec<f64>,
    sequence: u64,
}

fn reading(sequence: u64) -> Reading {
    Reading {
        channel: "cam0".to_owned(),
        values: vec![1.5, -2.25, 1e-9],
        sequence,
    }
}

// ---- publish/subscribe ----------------------------------------------------------------------

#[test]
fn a_subscriber_receives_exactly_the_topics_matching_its_prefixes() {
    let _watchdog = AbortWatchdog::arm("topics", 2 * WATCHDOG);
    let context = Context::new().unwrap();
    let publisher = Publisher::builder(&context).create().unwrap();
    let subscriber = Subscriber::builder(&context, publisher.endpoint())
        .topic("cam")
        .topic("log/")
        .open()
        .unwrap();
    join_publisher(&publisher, &subscriber, b"cam");

    for topic in ["cam0", "other", "camera", "", "log", "log/x", "ca"] {
        publisher.send(topic, topic.to_uppercase()).unwrap();
    }
    publisher.send("cam-end", "").unwrap();
    let mut got = Vec::new();
    loop {
        let (topic, payload) = received(&subscriber);
        if topic == b"cam-end" {
            break;
        }
        got.push((String::from_utf8(topic).unwrap(), payload));
    }
    assert_eq!(
        got,
        [
            ("cam0".to_owned(), b"CAM0".to_vec()),
            ("camera".to_owned(), b"CAMERA".to_vec()),
            ("log/x".to_owned(), b"LOG/X".to_vec()),
        ]
    );
}

#[test]
fn an_empty_topic_is_still_sent_as_the_first_frame() {
    let _watchdog = AbortWatchdog::arm("empty topic", 2 * WATCHDOG);
    let context = Context::new().unwrap();
    let publisher = Publisher::builder(&context).create().unwrap();
    // A raw SUB socket shows the frames as they are on the wire.
    let raw = context.socket(SocketType::Sub).unwrap();
    raw.subscribe(b"").unwrap();
    raw.connect(publisher.endpoint()).unwrap();
    let frames = loop {
        publisher.send("", "payload").unwrap();
        let mut items = [raw.poll_item(labhub_zmq::PollEvents::IN)];
        if labhub_zmq::poll(&mut items, Some(Duration::from_millis(20))).unwrap() > 0 {
            break raw.recv_multipart_bytes(Flags::NONE).unwrap();
        }
    };
    assert_eq!(frames, [b"".to_vec(), b"payload".to_vec()]);

    let subscriber = Subscriber::builder(&context, publisher.endpoint())
        .all_topics()
        .open()
        .unwrap();
    join_publisher(&publisher, &subscriber, b"");
    publisher.send("", "x").unwrap();
    assert_eq!(received(&subscriber), (b"".to_vec(), b"x".to_vec()));
}

#[test]
fn a_subscriber_without_a_topic_is_refused_rather_than_silently_deaf() {
    let context = Context::new().unwrap();
    let error = Subscriber::builder(&context, "tcp://127.0.0.1:5999")
        .open()
        .unwrap_err();
    assert!(
        matches!(&error, MsgError::NoTopics { endpoint } if endpoint == "tcp://127.0.0.1:5999"),
        "{error}"
    );
}

#[test]
fn publish_subscribe_works_over_ipc() {
    let _watchdog = AbortWatchdog::arm("ipc", 2 * WATCHDOG);
    let dir = ScratchDir::new("msg");
    let context = Context::new().unwrap();
    let endpoint = dir.ipc("pub.sock");
    let publisher = Publisher::builder(&context)
        .bind(&endpoint)
        .create()
        .unwrap();
    assert_eq!(publisher.endpoint(), endpoint);
    let subscriber = Subscriber::builder(&context, publisher.endpoint())
        .topic("t")
        .open()
        .unwrap();
    join_publisher(&publisher, &subscriber, b"t");
    publisher.send("t1", [0u8, 1, 2, 255]).unwrap();
    assert_eq!(received(&subscriber), (b"t1".to_vec(), vec![0, 1, 2, 255]));
}

#[test]
fn json_messages_round_trip() {
    let _watchdog = AbortWatchdog::arm("json pubsub", 2 * WATCHDOG);
    let context = Context::new().unwrap();
    let publisher = Publisher::builder(&context).create().unwrap();
    let subscriber = Subscriber::builder(&context, publisher.endpoint())
        .topic("readings")
        .open()
        .unwrap();
    join_publisher(&publisher, &subscriber, b"readings");
    for sequence in 0..3 {
        publisher
            .send_json("readings/cam0", &reading(sequence))
            .unwrap();
    }
    for sequence in 0..3 {
        let message = subscriber.recv_json::<Reading>(WATCHDOG).unwrap().unwrap();
        assert_eq!(message.topic, b"readings/cam0");
        assert_eq!(message.value, reading(sequence));
    }
    assert!(subscriber.recv_json::<Reading>(SHORT).unwrap().is_none());
}

#[test]
fn malformed_messages_are_typed_errors_and_the_subscriber_keeps_working() {
    let _watchdog = AbortWatchdog::arm("malformed pubsub", 2 * WATCHDOG);
    let context = Context::new().unwrap();
    // A raw PUB socket can send what a Publisher never would.
    let raw = context.socket(SocketType::Pub).unwrap();
    raw.bind("tcp://127.0.0.1:0").unwrap();
    let endpoint = raw.last_endpoint().unwrap();
    let subscriber = Subscriber::builder(&context, &endpoint)
        .topic("cam")
        .open()
        .unwrap();
    join(
        |topic, payload| raw.send_multipart([topic, payload], Flags::NONE).unwrap(),
        &subscriber,
        b"cam",
    );

    raw.send(b"cam", Flags::NONE).unwrap();
    raw.send_multipart([&b"cam"[..], b"a", b"b"], Flags::NONE)
        .unwrap();
    raw.send_multipart([&b"cam"[..], b"{not json"], Flags::NONE)
        .unwrap();
    raw.send_multipart([&b"cam"[..], br#"{"channel":"c"}"#], Flags::NONE)
        .unwrap();
    raw.send_multipart(
        [b"cam".to_vec(), serde_json::to_vec(&reading(7)).unwrap()],
        Flags::NONE,
    )
    .unwrap();

    for found in [1, 3] {
        match subscriber.recv(WATCHDOG) {
            Err(MsgError::Malformed {
                endpoint: at,
                what: "message",
                problem,
            }) => {
                assert_eq!(at, endpoint);
                assert_eq!(problem, FrameError::FrameCount { expected: 2, found });
            }
            other => panic!("expected a frame count error, got {other:?}"),
        }
    }
    for _ in 0..2 {
        match subscriber.recv_json::<Reading>(WATCHDOG) {
            Err(error @ MsgError::Decode { .. }) => {
                assert!(error.to_string().contains(r#"topic "cam""#), "{error}");
            }
            other => panic!("expected a decode error, got {other:?}"),
        }
    }
    let message = subscriber.recv_json::<Reading>(WATCHDOG).unwrap().unwrap();
    assert_eq!(message.value, reading(7));
}

#[test]
fn a_slow_subscriber_never_blocks_the_publisher() {
    let _watchdog = AbortWatchdog::arm("slow subscriber", 2 * WATCHDOG);
    let context = Context::new().unwrap();
    let publisher = Publisher::builder(&context).hwm(10).create().unwrap();
    let subscriber = Subscriber::builder(&context, publisher.endpoint())
        .topic("t")
        .hwm(10)
        .open()
        .unwrap();
    join_publisher(&publisher, &subscriber, b"t");

    // The subscriber reads nothing while 20 000 messages of 4 KiB (80 MiB, more than the
    // queues and socket buffers hold) go out: every send returns at once.
    let sent = 20_000u32;
    let payload = vec![7u8; 4096];
    for _ in 0..sent {
        publisher.send("t", &payload).unwrap();
    }
    let mut got = 0u32;
    while let Some(message) = subscriber.recv(SHORT).unwrap() {
        assert_eq!(message.payload().len(), 4096);
        got += 1;
    }
    assert!(
        got < sent,
        "the subscriber got all {sent}: nothing was dropped"
    );
    // The connection is still alive: new messages arrive.
    join_publisher(&publisher, &subscriber, b"t");
}

#[test]
fn waiting_for_a_subscriber_makes_the_next_message_reach_it_without_probing() {
    let _watchdog = AbortWatchdog::arm("wait for subscriber", 2 * WATCHDOG);
    let context = Context::new().unwrap();
    let publisher = Publisher::builder(&context).create().unwrap();
    let subscriber = Subscriber::builder(&context, publisher.endpoint())
        .topic("cam")
        .open()
        .unwrap();
    assert_eq!(publisher.wait_for_subscribers(1, WATCHDOG).unwrap(), 1);
    // The very first message sent: no slow-joiner loss once the subscription is in.
    publisher.send("cam0", "first").unwrap();
    assert_eq!(received(&subscriber), (b"cam0".to_vec(), b"first".to_vec()));
}

#[test]
fn every_subscriber_counts_even_when_they_subscribe_to_the_same_topic() {
    let _watchdog = AbortWatchdog::arm("same topic", 2 * WATCHDOG);
    let context = Context::new().unwrap();
    let publisher = Publisher::builder(&context).create().unwrap();
    let subscribers: Vec<Subscriber> = (0..3)
        .map(|_| {
            Subscriber::builder(&context, publisher.endpoint())
                .all_topics()
                .open()
                .unwrap()
        })
        .collect();
    assert_eq!(publisher.wait_for_subscribers(3, WATCHDOG).unwrap(), 3);
    publisher.send("t", "to all").unwrap();
    for subscriber in &subscribers {
        assert_eq!(received(subscriber), (b"t".to_vec(), b"to all".to_vec()));
    }
}

#[test]
fn waiting_for_subscribers_that_never_come_times_out_and_the_publisher_stays_usable() {
    let _watchdog = AbortWatchdog::arm("subscriber timeout", 2 * WATCHDOG);
    let context = Context::new().unwrap();
    let publisher = Publisher::builder(&context).create().unwrap();
    let error = publisher.wait_for_subscribers(1, SHORT).unwrap_err();
    assert!(
        matches!(
            &error,
            MsgError::SubscriberTimeout { expected: 1, found: 0, timeout, endpoint }
                if *timeout == SHORT && endpoint == publisher.endpoint()
        ),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("only 0 of 1 subscriptions"),
        "{error}"
    );
    let subscriber = Subscriber::builder(&context, publisher.endpoint())
        .all_topics()
        .open()
        .unwrap();
    assert_eq!(publisher.wait_for_subscribers(1, WATCHDOG).unwrap(), 1);
    publisher.send("late", "still works").unwrap();
    assert_eq!(
        received(&subscriber),
        (b"late".to_vec(), b"still works".to_vec())
    );
}

#[test]
fn send_never_blocks_and_counts_the_subscriptions_that_arrive_meanwhile() {
    let _watchdog = AbortWatchdog::arm("pending subscriptions", 2 * WATCHDOG);
    let context = Context::new().unwrap();
    let publisher = Publisher::builder(&context).create().unwrap();
    // 3 subscribers with 200 prefixes each: 600 subscription messages, none of them read
    // by anything but send().
    let prefixes = 200;
    let subscribers: Vec<Subscriber> = (0..3)
        .map(|_| {
            (0..prefixes)
                .fold(
                    Subscriber::builder(&context, publisher.endpoint()),
                    |builder, i| builder.topic(format!("t{i}")),
                )
                .open()
                .unwrap()
        })
        .collect();
    let expected = subscribers.len() * prefixes;
    // Nobody reads: the subscribers' queues fill while send() takes the subscriptions in.
    let payload = vec![7u8; 4096];
    let mut sent = 0u32;
    while publisher.subscriptions() < expected {
        publisher.send("t0", &payload).unwrap();
        sent += 1;
    }
    for _ in 0..20_000 {
        publisher.send("t0", &payload).unwrap();
    }
    assert!(sent > 0);
    // Nothing was left behind or counted twice.
    assert_eq!(
        publisher.wait_for_subscribers(expected, SHORT).unwrap(),
        expected
    );
    assert_eq!(publisher.subscriptions(), expected);
}

// ---- request/reply --------------------------------------------------------------------------

/// Runs `server` on a thread until it has answered `requests` requests; returns it with the
/// outcomes.
fn serve(
    server: ReqServer,
    requests: usize,
    mut handler: impl FnMut(&[u8]) -> Vec<u8> + Send + 'static,
) -> std::thread::JoinHandle<(ReqServer, Vec<Served>)> {
    std::thread::spawn(move || {
        let mut outcomes = Vec::new();
        while outcomes.len() < requests {
            match server.serve_one(WATCHDOG, &mut handler).expect("serve") {
                Served::Idle => {}
                served => outcomes.push(served),
            }
        }
        (server, outcomes)
    })
}

#[test]
fn a_request_gets_the_reply_computed_from_it() {
    let _watchdog = AbortWatchdog::arm("round trip", 2 * WATCHDOG);
    let context = Context::new().unwrap();
    let server = ReqServer::builder(&context).create().unwrap();
    let mut client = ReqClient::builder(&context, server.endpoint())
        .open()
        .unwrap();
    let serving = serve(server, 3, |request| request.iter().rev().copied().collect());
    assert_eq!(client.request(b"abc", WATCHDOG).unwrap(), b"cba");
    assert_eq!(client.request(b"", WATCHDOG).unwrap(), b"");
    let big: Vec<u8> = (0..1_000_000u32).map(|i| i as u8).collect();
    let mut reversed = big.clone();
    reversed.reverse();
    assert_eq!(client.request(&big, WATCHDOG).unwrap(), reversed);
    let (_, outcomes) = serving.join().unwrap();
    let ids: Vec<u64> = outcomes
        .iter()
        .map(|served| match served {
            Served::Replied { request_id } => *request_id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids, [1, 2, 3]);
}

#[test]
fn request_reply_works_over_ipc() {
    let _watchdog = AbortWatchdog::arm("ipc reqrep", 2 * WATCHDOG);
    let dir = ScratchDir::new("msg");
    let context = Context::new().unwrap();
    let server = ReqServer::builder(&context)
        .bind(dir.ipc("server.sock"))
        .create()
        .unwrap();
    let mut client = ReqClient::builder(&context, server.endpoint())
        .open()
        .unwrap();
    let serving = serve(server, 1, |request| [request, b"!"].concat());
    assert_eq!(client.request(b"hi", WATCHDOG).unwrap(), b"hi!");
    serving.join().unwrap();
}

#[derive(Debug, Serialize, Deserialize)]
struct Sum {
    terms: Vec<i64>,
}

#[test]
fn json_requests_and_replies_round_trip_and_bad_json_is_an_error_reply() {
    let _watchdog = AbortWatchdog::arm("json reqrep", 2 * WATCHDOG);
    let context = Context::new().unwrap();
    let server = ReqServer::builder(&context).create().unwrap();
    let mut client = ReqClient::builder(&context, server.endpoint())
        .open()
        .unwrap();
    let serving = std::thread::spawn(move || {
        let mut outcomes = Vec::new();
        for _ in 0..3 {
            outcomes.push(
                server
                    .serve_one_json(WATCHDOG, |sum: Sum| {
                        sum.terms
                            .iter()
                            .try_fold(0i64, |a, &b| a.checked_add(b))
                            .ok_or("overflow")
                    })
                    .unwrap(),
            );
        }
        outcomes
    });
    let total: i64 = client
        .request_json(
            &Sum {
                terms: vec![1, 2, 39],
            },
            WATCHDOG,
        )
        .unwrap();
    assert_eq!(total, 42);
    let error = client
        .request_json::<_, i64>(
            &Sum {
                terms: vec![i64::MAX, 1],
            },
            WATCHDOG,
        )
        .unwrap_err();
    assert!(
        matches!(&error, MsgError::Remote { request_id: 2, message, .. } if message == "overflow"),
        "{error}"
    );
    let error = client.request(b"[1, 2", WATCHDOG).unwrap_err();
    assert!(
        matches!(&error, MsgError::Remote { message, .. } if message.starts_with("invalid json request")),
        "{error}"
    );
    let outcomes = serving.join().unwrap();
    assert!(matches!(outcomes[0], Served::Replied { request_id: 1 }));
    assert!(
        matches!(&outcomes[1], Served::ErrorReplied { request_id: 2, message } if message == "overflow")
    );
    assert!(matches!(
        outcomes[2],
        Served::ErrorReplied { request_id: 3, .. }
    ));
}

#[test]
fn a_reply_that_is_not_the_expected_json_is_a_decode_error() {
    let _watchdog = AbortWatchdog::arm("json reply", 2 * WATCHDOG);
    let context = Context::new().unwrap();
    let server = ReqServer::builder(&context).create().unwrap();
    let mut client = ReqClient::builder(&context, server.endpoint())
        .open()
        .unwrap();
    let serving = serve(server, 2, |_| b"\"text\"".to_vec());
    let error = client.request_json::<_, u32>(&1, WATCHDOG).unwrap_err();
    assert!(
        matches!(&error, MsgError::Decode { what, .. } if what == "reply to request 1"),
        "{error}"
    );
    let text: String = client.request_json(&2, WATCHDOG).unwrap();
    assert_eq!(text, "text");
    serving.join().unwrap();
}

#[test]
fn a_failing_or_panicking_handler_becomes_an_error_reply_and_the_server_goes_on() {
    let _watchdog = AbortWatchdog::arm("handler failure", 2 * WATCHDOG);
    let context = Context::new().unwrap();
    let server = ReqServer::builder(&context).create().unwrap();
    let mut client = ReqClient::builder(&context, server.endpoint())
        .open()
        .unwrap();
    let serving = std::thread::spawn(move || {
        let failed = server
            .try_serve_one(WATCHDOG, |_| Err::<Vec<u8>, _>("no such channel"))
            .unwrap();
        let panicked = server
            .serve_one(WATCHDOG, |_| panic!("handler bug"))
            .unwrap();
        let fine = server.serve_one(WATCHDOG, |r| r.to_vec()).unwrap();
        (failed, panicked, fine)
    });
    let error = client.request(b"1", WATCHDOG).unwrap_err();
    assert!(
        matches!(&error, MsgError::Remote { request_id: 1, message, .. } if message == "no such channel"),
        "{error}"
    );
    let error = client.request(b"2", WATCHDOG).unwrap_err();
    assert!(
        matches!(&error, MsgError::Remote { message, .. } if message == "handler panicked: handler bug"),
        "{error}"
    );
    assert_eq!(client.request(b"3", WATCHDOG).unwrap(), b"3");
    let (failed, panicked, fine) = serving.join().unwrap();
    assert!(matches!(failed, Served::ErrorReplied { request_id: 1, .. }));
    assert!(matches!(
        panicked,
        Served::ErrorReplied { request_id: 2, .. }
    ));
    assert!(matches!(fine, Served::Replied { request_id: 3 }));
}

#[test]
fn a_timed_out_request_leaves_the_client_usable_and_its_late_reply_is_discarded() {
    let _watchdog = AbortWatchdog::arm("timeout", 2 * WATCHDOG);
    let context = Context::new().unwrap();
    let server = ReqServer::builder(&context).create().unwrap();
    let mut client = ReqClient::builder(&context, server.endpoint())
        .open()
        .unwrap();

    // The server does not answer in time.
    let error = client.request(b"first", SHORT).unwrap_err();
    assert!(
        matches!(&error, MsgError::Timeout { request_id: 1, timeout, .. } if *timeout == SHORT),
        "{error}"
    );
    // It answers late: the reply reaches the client before the next request is even sent.
    let first = server.recv_request(WATCHDOG).unwrap().unwrap();
    assert_eq!((first.id(), first.payload()), (1, &b"first"[..]));
    first.reply(b"late reply to first").unwrap();

    let asking = std::thread::spawn(move || {
        let reply = client.request(b"second", WATCHDOG);
        (client, reply)
    });
    let second = server.recv_request(WATCHDOG).unwrap().unwrap();
    assert_eq!((second.id(), second.payload()), (2, &b"second"[..]));
    second.reply(b"reply to second").unwrap();
    let (mut client, reply) = asking.join().unwrap();
    assert_eq!(reply.unwrap(), b"reply to second");

    // And the one after that works too.
    let asking = std::thread::spawn(move || client.request(b"third", WATCHDOG));
    server
        .recv_request(WATCHDOG)
        .unwrap()
        .unwrap()
        .reply(b"reply to third")
        .unwrap();
    assert_eq!(asking.join().unwrap().unwrap(), b"reply to third");
}

#[test]
fn replies_can_be_sent_in_another_order_than_the_requests_came() {
    let _watchdog = AbortWatchdog::arm("out of order", 2 * WATCHDOG);
    let context = Context::new().unwrap();
    let server = ReqServer::builder(&context).create().unwrap();
    let clients: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|name| {
            let mut client = ReqClient::builder(&context, server.endpoint())
                .open()
                .unwrap();
            std::thread::spawn(move || client.request(name, WATCHDOG).unwrap())
        })
        .collect();
    let first = server.recv_request(WATCHDOG).unwrap().unwrap();
    let second = server.recv_request(WATCHDOG).unwrap().unwrap();
    let (first_text, second_text) = (first.payload().to_vec(), second.payload().to_vec());
    second
        .reply([&second_text[..], b" answered first"].concat())
        .unwrap();
    first
        .reply([&first_text[..], b" answered second"].concat())
        .unwrap();
    let replies: Vec<Vec<u8>> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert_eq!(replies.len(), 2);
    let expected = |name: &[u8]| {
        if name == first_text.as_slice() {
            [name, b" answered second"].concat()
        } else {
            [name, b" answered first"].concat()
        }
    };
    assert_eq!(replies[0], expected(b"a"));
    assert_eq!(replies[1], expected(b"b"));
}

#[test]
fn dropping_an_unanswered_request_sends_an_error_reply() {
    let _watchdog = AbortWatchdog::arm("dropped request", 2 * WATCHDOG);
    let context = Context::new().unwrap();
    let server = ReqServer::builder(&context).create().unwrap();
    let mut client = ReqClient::builder(&context, server.endpoint())
        .open()
        .unwrap();
    let asking = std::thread::spawn(move || client.request(b"x", WATCHDOG));
    drop(server.recv_request(WATCHDOG).unwrap().unwrap());
    let error = asking.join().unwrap().unwrap_err();
    assert!(
        matches!(&error, MsgError::Remote { message, .. } if message.contains("dropped")),
        "{error}"
    );
}

#[test]
fn many_clients_on_threads_share_one_server() {
    let _watchdog = AbortWatchdog::arm("concurrent clients", 2 * WATCHDOG);
    let context = Context::new().unwrap();
    let server = ReqServer::builder(&context).create().unwrap();
    let (clients, per_client) = (4, 50);
    let endpoint = server.endpoint().to_owned();
    let serving = serve(server, clients * per_client, |request| {
        [b"re:", request].concat()
    });
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let mut client = ReqClient::builder(&context, &endpoint).open().unwrap();
            std::thread::spawn(move || {
                for i in 0..per_client {
                    let request = format!("client {c} request {i}");
                    let reply = client.request(&request, WATCHDOG).unwrap();
                    assert_eq!(reply, format!("re:{request}").into_bytes());
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let (_, outcomes) = serving.join().unwrap();
    assert_eq!(outcomes.len(), clients * per_client);
    assert!(outcomes.iter().all(|s| matches!(s, Served::Replied { .. })));
}

#[test]
fn malformed_requests_are_rejected_and_the_server_keeps_serving() {
    let _watchdog = AbortWatchdog::arm("malformed requests", 2 * WATCHDOG);
    let context = Context::new().unwrap();
    let server = ReqServer::builder(&context).create().unwrap();
    // A raw DEALER speaks the wire format by hand, as another language's binding would.
    let raw = context.socket(SocketType::Dealer).unwrap();
    raw.connect(server.endpoint()).unwrap();
    let id = 77u64.to_le_bytes();

    raw.send_multipart([&b""[..], b"short", b"payload"], Flags::NONE)
        .unwrap();
    match server.serve_one(WATCHDOG, |r| r.to_vec()).unwrap() {
        Served::Rejected(MsgError::Malformed { problem, .. }) => {
            assert_eq!(problem, FrameError::RequestId { found: 5 })
        }
        other => panic!("{other:?}"),
    }
    raw.send_multipart([&b"x"[..], &id, b"payload"], Flags::NONE)
        .unwrap();
    match server.serve_one(WATCHDOG, |r| r.to_vec()).unwrap() {
        Served::Rejected(MsgError::Malformed { problem, .. }) => {
            assert_eq!(problem, FrameError::Delimiter { found: 1 })
        }
        other => panic!("{other:?}"),
    }
    // Envelope and id intact but an extra frame: rejected with an error reply.
    raw.send_multipart([&b""[..], &id, b"a", b"b"], Flags::NONE)
        .unwrap();
    assert!(matches!(
        server.recv_request(WATCHDOG),
        Err(MsgError::Malformed {
            what: "request",
            problem: FrameError::FrameCount {
                expected: 4,
                found: 5
            },
            ..
        })
    ));
    let reply = raw.recv_multipart_bytes(Flags::NONE).unwrap();
    assert_eq!(reply.len(), 4);
    assert_eq!(
        (&reply[0][..], &reply[1][..], &reply[2][..]),
        (&b""[..], &id[..], &[1u8][..])
    );
    assert!(String::from_utf8_lossy(&reply[3]).starts_with("malformed request"));

    // A well-formed request by hand gets a well-formed reply.
    raw.send_multipart([&b""[..], &id, b"ping"], Flags::NONE)
        .unwrap();
    assert!(matches!(
        server
            .serve_one(WATCHDOG, |r| [r, b"/pong"].concat())
            .unwrap(),
        Served::Replied { request_id: 77 }
    ));
    let reply = raw.recv_multipart_bytes(Flags::NONE).unwrap();
    assert_eq!(
        reply,
        [b"".to_vec(), id.to_vec(), vec![0], b"ping/pong".to_vec()]
    );
}

#[test]
fn malformed_replies_are_typed_errors_and_the_client_keeps_working() {
    let _watchdog = AbortWatchdog::arm("malformed replies", 2 * WATCHDOG);
    let context = Context::new().unwrap();
    // A raw ROUTER answers by hand.
    let raw = context.socket(SocketType::Router).unwrap();
    raw.bind("tcp://127.0.0.1:0").unwrap();
    let endpoint = raw.last_endpoint().unwrap();
    let mut client = ReqClient::builder(&context, &endpoint).open().unwrap();
    let id = |n: u64| n.to_le_bytes().to_vec();
    let answers: [Vec<Vec<u8>>; 3] = [
        vec![vec![], id(1), b"body".to_vec()],
        vec![vec![], id(2), vec![9], b"body".to_vec()],
        vec![vec![], id(3), vec![0], b"good".to_vec()],
    ];
    let answering = std::thread::spawn(move || {
        for answer in answers {
            let request = raw.recv_multipart(Flags::NONE).unwrap();
            let peer = request[0].to_vec();
            let frames: Vec<&[u8]> = std::iter::once(&peer[..])
                .chain(answer.iter().map(Vec::as_slice))
                .collect();
            raw.send_multipart(frames, Flags::NONE).unwrap();
        }
    });
    assert!(matches!(
        client.request(b"1", WATCHDOG),
        Err(MsgError::Malformed {
            what: "reply",
            problem: FrameError::FrameCount {
                expected: 4,
                found: 3
            },
            ..
        })
    ));
    assert!(matches!(
        client.request(b"2", WATCHDOG),
        Err(MsgError::Malformed {
            problem: FrameError::Status { .. },
            ..
        })
    ));
    assert_eq!(client.request(b"3", WATCHDOG).unwrap(), b"good");
    answering.join().unwrap();
}

// ---- CURVE ----------------------------------------------------------------------------------

#[test]
fn curve_request_reply_works_and_a_wrong_server_key_gets_no_reply() {
    let _watchdog = AbortWatchdog::arm("curve reqrep", 2 * WATCHDOG);
    let context = Context::new().unwrap();
    let server_keys = CurveKeyPair::generate().unwrap();
    let server = ReqServer::builder(&context)
        .curve(&server_keys)
        .create()
        .unwrap();
    assert_eq!(server.curve_public_key(), Some(&server_keys.public));
    let endpoint = server.endpoint().to_owned();
    let serving = serve(server, 1, |request| [b"secret:", request].concat());

    let client_keys = CurveKeyPair::generate().unwrap();
    let mut client = ReqClient::builder(&context, &endpoint)
        .curve(&server_keys.public, &client_keys)
        .open()
        .unwrap();
    assert_eq!(client.request(b"x", WATCHDOG).unwrap(), b"secret:x");

    // Neither a client with the wrong server key nor one without CURVE gets through; each
    // hears that its handshake failed rather than just waiting.
    let impostor = CurveKeyPair::generate().unwrap();
    let mut wrong_key = ReqClient::builder(&context, &endpoint)
        .curve(&impostor.public, &client_keys)
        .open()
        .unwrap();
    let mut plain = ReqClient::builder(&context, &endpoint).open().unwrap();
    for (what, client) in [("wrong key", &mut wrong_key), ("plain", &mut plain)] {
        match client.request(b"y", WATCHDOG) {
            Err(MsgError::ConnectionClosed {
                reason: CloseReason::HandshakeFailed { .. },
                ..
            }) => {}
            other => panic!("{what}: {other:?}"),
        }
    }
    let (_, outcomes) = serving.join().unwrap();
    assert_eq!(outcomes.len(), 1);
}

#[test]
fn curve_publish_subscribe_works_and_a_wrong_server_key_receives_nothing() {
    let _watchdog = AbortWatchdog::arm("curve pubsub", 2 * WATCHDOG);
    let context = Context::new().unwrap();
    let server_keys = CurveKeyPair::generate().unwrap();
    let publisher = Publisher::builder(&context)
        .curve(&server_keys)
        .create()
        .unwrap();
    let own = CurveKeyPair::generate().unwrap();
    let subscriber = Subscriber::builder(&context, publisher.endpoint())
        .topic("")
        .curve(publisher.curve_public_key().unwrap(), &own)
        .open()
        .unwrap();
    let impostor = CurveKeyPair::generate().unwrap();
    let wrong_key = Subscriber::builder(&context, publisher.endpoint())
        .topic("")
        .curve(&impostor.public, &own)
        .open()
        .unwrap();
    join_publisher(&publisher, &subscriber, b"t");
    publisher.send("t", "secret").unwrap();
    assert_eq!(received(&subscriber), (b"t".to_vec(), b"secret".to_vec()));
    // The right key has been receiving for a while; the wrong one hears that its handshake
    // failed, and receives nothing.
    match wrong_key.recv(WATCHDOG) {
        Err(MsgError::ConnectionClosed {
            reason: CloseReason::HandshakeFailed { .. },
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    assert!(wrong_key.recv(SHORT).unwrap().is_none());
}

// ---- endpoints ------------------------------------------------------------------------------

#[test]
fn binding_to_a_wildcard_reports_a_dialable_endpoint() {
    let _watchdog = AbortWatchdog::arm("wildcard", 2 * WATCHDOG);
    let context = Context::new().unwrap();
    let publisher = Publisher::builder(&context)
        .bind("tcp://0.0.0.0:0")
        .create()
        .unwrap();
    assert!(
        publisher.endpoint().starts_with("tcp://127.0.0.1:"),
        "{}",
        publisher.endpoint()
    );
    let subscriber = Subscriber::builder(&context, publisher.endpoint())
        .topic("t")
        .open()
        .unwrap();
    join_publisher(&publisher, &subscriber, b"t");

    let server = ReqServer::builder(&context)
        .bind("tcp://*:0")
        .advertise_host("localhost")
        .create()
        .unwrap();
    let endpoint = server.endpoint().to_owned();
    assert!(endpoint.starts_with("tcp://localhost:"), "{endpoint}");
    let serving = serve(server, 1, |r| r.to_vec());
    let mut client = ReqClient::builder(&context, &endpoint).open().unwrap();
    assert_eq!(client.request(b"dial", WATCHDOG).unwrap(), b"dial");
    serving.join().unwrap();
}

#[test]
fn an_unusable_endpoint_or_advertised_host_is_a_typed_error() {
    let context = Context::new().unwrap();
    let error = Publisher::builder(&context)
        .bind("inproc://x")
        .create()
        .unwrap_err();
    assert!(matches!(error, MsgError::InvalidEndpoint { .. }), "{error}");
    let error = ReqServer::builder(&context)
        .bind("tcp://0.0.0.0:0")
        .advertise_host("0.0.0.0")
        .create()
        .unwrap_err();
    assert!(matches!(error, MsgError::Undialable { .. }), "{error}");
    let error = ReqClient::builder(&context, "127.0.0.1:80")
        .open()
        .unwrap_err();
    assert!(matches!(error, MsgError::InvalidEndpoint { .. }), "{error}");
    let error = Publisher::builder(&context)
        .bind("tcp://192.0.2.1:0") // TEST-NET-1: not an address of this host
        .create()
        .unwrap_err();
    assert!(
        matches!(&error, MsgError::Zmq { op: "bind", endpoint, .. } if endpoint == "tcp://192.0.2.1:0"),
        "{error}"
    );
}

#[test]
fn channels_can_move_to_another_thread() {
    fn send<T: Send>() {}
    send::<Publisher>();
    send::<Subscriber>();
    send::<ReqServer>();
    send::<ReqClient>();
}

// ---- across processes -----------------------------------------------------------------------

/// A `msg-req-server` child bound to `bind`, and the endpoint it reports.
fn spawn_server(bind: &str) -> (ChildProc, String) {
    let mut server = spawn_child("msg-req-server", &[bind]);
    let line = server.expect("endpoint ");
    let endpoint = line["endpoint ".len()..].to_owned();
    (server, endpoint)
}

#[test]
fn request_reply_works_across_processes_and_outlives_a_killed_server() {
    let _watchdog = AbortWatchdog::arm("across processes", 2 * WATCHDOG);
    let context = Context::new().unwrap();
    let (mut first, first_endpoint) = spawn_server("tcp://127.0.0.1:0");
    let mut client = ReqClient::builder(&context, &first_endpoint)
        .open()
        .unwrap();
    let reply = client.request(b"hello", WATCHDOG).unwrap();
    assert_eq!(reply, format!("{}:hello", first.pid()).into_bytes());

    // The request finds the connection closed (at once, or at its deadline).
    first.kill();
    assert!(matches!(
        client.request(b"nobody there", SHORT),
        Err(MsgError::ConnectionClosed {
            reason: CloseReason::Dropped { .. },
            ..
        })
    ));

    // A new server on the same endpoint: the client reconnects by itself, and the reply to
    // the request queued while nobody was there is discarded.
    let (second, second_endpoint) = spawn_server(&first_endpoint);
    assert_eq!(second_endpoint, first_endpoint);
    let reply = client.request(b"again", WATCHDOG).unwrap();
    assert_eq!(reply, format!("{}:again", second.pid()).into_bytes());
    let reply = client.request(b"exit", WATCHDOG).unwrap();
    assert_eq!(reply, format!("{}:exit", second.pid()).into_bytes());
}
