//! Multipart messages, PUB/SUB topics, endpoints, routing errors, option validation.

use std::time::Duration;

use labhub_zmq::{Context, Flags, Message, Socket, SocketType, ZmqError};

use crate::common::{WATCHDOG, bound, within_watchdog};

#[test]
fn multipart_round_trip_keeps_empty_frames_and_1_mib_frames() {
    within_watchdog("multipart round trip", || {
        let context = Context::new().unwrap();
        let (router, endpoint) = bound(&context, SocketType::Router);
        router.set_rcvtimeo(Some(WATCHDOG)).unwrap();
        let dealer = context.socket(SocketType::Dealer).unwrap();
        dealer.set_rcvtimeo(Some(WATCHDOG)).unwrap();
        dealer.connect(&endpoint).unwrap();

        let big: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
        let frames: Vec<Vec<u8>> = vec![vec![], big.clone(), vec![], b"end".to_vec()];
        dealer.send_multipart(&frames, Flags::NONE).unwrap();

        let received = router.recv_multipart(Flags::NONE).unwrap();
        assert_eq!(received.len(), 5);
        assert!(!received[0].is_empty(), "routing id frame");
        let payload: Vec<Vec<u8>> = received[1..].iter().map(Message::to_vec).collect();
        assert_eq!(payload, frames);

        // Echo back without copying: the received frames are sent as they are.
        router.send_multipart_msgs(received, Flags::NONE).unwrap();
        assert_eq!(dealer.recv_multipart_bytes(Flags::NONE).unwrap(), frames);

        // Frames built from owned buffers travel without a copy too.
        let owned = vec![Message::from_vec(big.clone()).unwrap(), Message::new()];
        dealer.send_multipart_msgs(owned, Flags::NONE).unwrap();
        let received = router.recv_multipart_bytes(Flags::NONE).unwrap();
        assert_eq!(&received[1..], [big, vec![]]);
    });
}

#[test]
fn receiving_with_dontwait_on_an_empty_socket_is_again_and_harmless() {
    let context = Context::new().unwrap();
    let (pull, endpoint) = bound(&context, SocketType::Pull);
    let error = pull.recv_multipart(Flags::DONTWAIT).unwrap_err();
    assert!(error.is_again(), "{error}");

    let push = context.socket(SocketType::Push).unwrap();
    push.connect(&endpoint).unwrap();
    push.send_multipart([b"a", b"b"], Flags::NONE).unwrap();
    pull.set_rcvtimeo(Some(WATCHDOG)).unwrap();
    assert_eq!(
        pull.recv_multipart_bytes(Flags::NONE).unwrap(),
        [b"a".to_vec(), b"b".to_vec()]
    );
}

#[test]
fn sending_a_message_without_frames_is_refused() {
    let context = Context::new().unwrap();
    let push = context.socket(SocketType::Push).unwrap();
    let error = push
        .send_multipart(Vec::<Vec<u8>>::new(), Flags::NONE)
        .unwrap_err();
    assert!(
        matches!(error, ZmqError::InvalidArgument { what: "frames", .. }),
        "{error}"
    );
}

/// Publishes `send` (probe last) until the subscriber receives the probe topic, polling with a
/// short timeout because subscriptions reach the publisher asynchronously; every other frame
/// received meanwhile must satisfy `allowed`.
fn probe_until_received(
    publisher: &Socket,
    subscriber: &Socket,
    send: &[&[u8]],
    allowed: impl Fn(&[u8]) -> bool,
) {
    let probe = send[send.len() - 1];
    subscriber
        .set_rcvtimeo(Some(Duration::from_millis(10)))
        .unwrap();
    loop {
        for topic in send {
            publisher
                .send_multipart([*topic, b""], Flags::NONE)
                .unwrap();
        }
        loop {
            match subscriber.recv_multipart_bytes(Flags::NONE) {
                Ok(frames) if frames[0] == probe => {
                    subscriber.set_rcvtimeo(Some(WATCHDOG)).unwrap();
                    return;
                }
                Ok(frames) => assert!(allowed(&frames[0]), "unexpected topic {:?}", frames[0]),
                Err(e) if e.is_timeout() => break,
                Err(e) => panic!("{e}"),
            }
        }
    }
}

/// Receives until `last` arrives; every topic received must satisfy `allowed`.
fn receive_until(subscriber: &Socket, last: &[u8], allowed: impl Fn(&[u8]) -> bool) {
    loop {
        let frames = subscriber.recv_multipart_bytes(Flags::NONE).unwrap();
        assert!(allowed(&frames[0]), "unexpected topic {:?}", frames[0]);
        if frames[0] == last {
            return;
        }
    }
}

#[test]
fn a_subscriber_receives_only_the_topics_matching_its_prefix() {
    within_watchdog("pub/sub topics", || {
        let context = Context::new().unwrap();
        let (publisher, endpoint) = bound(&context, SocketType::Pub);
        let subscriber = context.socket(SocketType::Sub).unwrap();
        subscriber.subscribe(b"sensor.").unwrap();
        subscriber.connect(&endpoint).unwrap();
        let sensor = |topic: &[u8]| topic.starts_with(b"sensor.");
        probe_until_received(&publisher, &subscriber, &[b"sensor.probe"], sensor);

        for topic in [&b"other.temp"[..], b"sensor", b"sensor.temp"] {
            publisher.send_multipart([topic, b""], Flags::NONE).unwrap();
        }
        receive_until(&subscriber, b"sensor.temp", sensor);

        subscriber.unsubscribe(b"sensor.").unwrap();
        subscriber.subscribe(b"other.").unwrap();
        // Until both changes reach the publisher, sensor topics may still arrive.
        probe_until_received(
            &publisher,
            &subscriber,
            &[b"sensor.temp", b"other.probe"],
            |topic| sensor(topic) || topic == b"other.probe",
        );
        for topic in [&b"sensor.late"[..], b"other.end"] {
            publisher.send_multipart([topic, b""], Flags::NONE).unwrap();
        }
        receive_until(&subscriber, b"other.end", |topic| {
            topic.starts_with(b"other.") || topic == b"sensor.temp"
        });
    });
}

#[test]
fn binding_port_zero_reports_the_port_the_system_chose() {
    let context = Context::new().unwrap();
    let (_socket, endpoint) = bound(&context, SocketType::Router);
    let port: u16 = endpoint
        .strip_prefix("tcp://127.0.0.1:")
        .expect("resolved endpoint")
        .parse()
        .unwrap();
    assert_ne!(port, 0);
}

#[test]
fn binding_a_busy_port_is_an_error_naming_the_endpoint() {
    let context = Context::new().unwrap();
    let (_first, endpoint) = bound(&context, SocketType::Router);
    let second = context.socket(SocketType::Router).unwrap();
    let error = second.bind(&endpoint).unwrap_err();
    assert!(error.errno().is_some());
    let text = error.to_string();
    assert!(
        text.contains("zmq_bind") && text.contains(&endpoint),
        "{text}"
    );
}

#[test]
fn malformed_endpoints_and_routing_ids_are_typed_errors() {
    let context = Context::new().unwrap();
    let socket = context.socket(SocketType::Dealer).unwrap();
    assert!(matches!(
        socket.connect("tcp://127.0.0.1:1\0"),
        Err(ZmqError::InvalidArgument {
            what: "endpoint",
            ..
        })
    ));
    assert!(socket.connect("nonsense").unwrap_err().errno().is_some());
    assert!(matches!(
        socket.set_routing_id(&[1; 256]),
        Err(ZmqError::InvalidArgument {
            what: "routing id",
            ..
        })
    ));
    assert!(matches!(
        socket.set_routing_id(b""),
        Err(ZmqError::InvalidArgument {
            what: "routing id",
            ..
        })
    ));
    socket.set_routing_id(b"worker-7").unwrap();
    assert_eq!(socket.routing_id().unwrap(), b"worker-7");
}

#[test]
fn a_mandatory_router_reports_an_unknown_peer_as_unreachable() {
    let context = Context::new().unwrap();
    let (router, _endpoint) = bound(&context, SocketType::Router);
    // Without ROUTER_MANDATORY the message is dropped silently.
    router
        .send_multipart([&b"nobody"[..], b"x"], Flags::NONE)
        .unwrap();
    router.set_router_mandatory(true).unwrap();
    let error = router
        .send_multipart([&b"nobody"[..], b"x"], Flags::NONE)
        .unwrap_err();
    assert!(error.is_host_unreachable(), "{error}");
}

#[test]
fn the_options_labhub_uses_are_accepted() {
    let context = Context::new().unwrap();
    let socket = context.socket(SocketType::Dealer).unwrap();
    socket.set_rcvhwm(1000).unwrap();
    socket.set_sndhwm(1000).unwrap();
    socket.set_maxmsgsize(Some(1 << 20)).unwrap();
    socket.set_maxmsgsize(None).unwrap();
    socket.set_immediate(true).unwrap();
    socket
        .set_heartbeat_ivl(Duration::from_millis(500))
        .unwrap();
    socket
        .set_heartbeat_timeout(Duration::from_secs(5))
        .unwrap();
    socket.set_heartbeat_ttl(Duration::from_secs(10)).unwrap();
    socket
        .set_reconnect_ivl(Some(Duration::from_millis(100)))
        .unwrap();
    socket
        .set_reconnect_ivl_max(Duration::from_secs(5))
        .unwrap();
    socket.set_handshake_ivl(Duration::from_secs(5)).unwrap();
    socket.set_tcp_keepalive(Some(true)).unwrap();
    socket
        .set_sndtimeo(Some(Duration::from_millis(100)))
        .unwrap();
    socket.set_rcvtimeo(Some(Duration::from_micros(1))).unwrap();
    // A positive timeout below one millisecond still waits, rather than becoming "no wait".
    assert_eq!(socket.rcvtimeo().unwrap(), Some(Duration::from_millis(1)));
    // TTL beyond libzmq's limit (6553.5 s) is refused by libzmq with EINVAL.
    assert!(socket.set_heartbeat_ttl(Duration::from_secs(7000)).is_err());
    assert!(matches!(
        socket.set_rcvtimeo(Some(Duration::from_secs(u64::MAX / 2))),
        Err(ZmqError::InvalidArgument { .. })
    ));
}
