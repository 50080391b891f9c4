//! CURVE handshakes: the right key works, a wrong or missing key gets nothing.

use labhub_zmq::{
    Context, CurveKeyPair, Flags, Mechanism, PollEvents, Socket, SocketType, has, poll, version,
};

use crate::common::{NOTHING_ARRIVES, WATCHDOG, bound, within_watchdog};

fn curve_server(
    context: &Context,
    kind: SocketType,
    keys: &CurveKeyPair,
    endpoint: &str,
) -> Socket {
    let server = context.socket(kind).unwrap();
    server.set_curve_server_keys(&keys.secret).unwrap();
    server.bind(endpoint).unwrap();
    server
}

fn curve_client(
    context: &Context,
    kind: SocketType,
    server: &CurveKeyPair,
    endpoint: &str,
) -> Socket {
    let mine = CurveKeyPair::generate().unwrap();
    let client = context.socket(kind).unwrap();
    client
        .set_curve_client_keys(&server.public, &mine.public, &mine.secret)
        .unwrap();
    client.set_rcvtimeo(Some(WATCHDOG)).unwrap();
    client.connect(endpoint).unwrap();
    client
}

fn req_rep_round_trip(endpoint: &str) {
    let context = Context::new().unwrap();
    let keys = CurveKeyPair::generate().unwrap();
    let server = curve_server(&context, SocketType::Rep, &keys, endpoint);
    let endpoint = server.last_endpoint().unwrap();
    let client = curve_client(&context, SocketType::Req, &keys, &endpoint);
    server.set_rcvtimeo(Some(WATCHDOG)).unwrap();

    client.send(b"ping", Flags::NONE).unwrap();
    assert_eq!(&*server.recv(Flags::NONE).unwrap(), b"ping");
    server.send(b"pong", Flags::NONE).unwrap();
    assert_eq!(&*client.recv(Flags::NONE).unwrap(), b"pong");
    assert_eq!(server.mechanism().unwrap(), Mechanism::Curve);
    assert_eq!(client.mechanism().unwrap(), Mechanism::Curve);
}

#[test]
fn the_linked_libzmq_is_4_3_5_with_curve() {
    assert!(has("curve"));
    assert!(has("ipc"));
    assert!(!has("no-such-capability"));
    assert_eq!(version(), (4, 3, 5));
}

#[test]
fn curve_req_rep_works_with_the_right_server_key_over_tcp() {
    within_watchdog("curve req/rep over tcp", || {
        req_rep_round_trip("tcp://127.0.0.1:0")
    });
}

#[test]
fn curve_req_rep_works_with_the_right_server_key_over_ipc() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("ipc://{}/curve.sock", dir.path().display());
    within_watchdog("curve req/rep over ipc", move || {
        req_rep_round_trip(&endpoint)
    });
}

#[test]
fn curve_dealer_router_round_trips_a_multipart_message() {
    within_watchdog("curve dealer/router", || {
        let context = Context::new().unwrap();
        let keys = CurveKeyPair::generate().unwrap();
        let router = curve_server(&context, SocketType::Router, &keys, "tcp://127.0.0.1:0");
        router.set_rcvtimeo(Some(WATCHDOG)).unwrap();
        let endpoint = router.last_endpoint().unwrap();
        let mine = CurveKeyPair::generate().unwrap();
        let dealer = context.socket(SocketType::Dealer).unwrap();
        dealer.set_routing_id(b"dealer-1").unwrap();
        dealer
            .set_curve_client_keys(&keys.public, &mine.public, &mine.secret)
            .unwrap();
        dealer.set_rcvtimeo(Some(WATCHDOG)).unwrap();
        dealer.connect(&endpoint).unwrap();

        dealer
            .send_multipart([&b"C"[..], b"REG_REQ", b"{}"], Flags::NONE)
            .unwrap();
        let request = router.recv_multipart_bytes(Flags::NONE).unwrap();
        assert_eq!(request, [&b"dealer-1"[..], b"C", b"REG_REQ", b"{}"]);

        router
            .send_multipart(
                [
                    &b"dealer-1"[..],
                    b"C",
                    b"REG_ACK",
                    b"{\"status\":\"success\"}",
                ],
                Flags::NONE,
            )
            .unwrap();
        let reply = dealer.recv_multipart_bytes(Flags::NONE).unwrap();
        assert_eq!(reply, [&b"C"[..], b"REG_ACK", b"{\"status\":\"success\"}"]);
    });
}

/// Sends a request from `client` and checks that neither side receives anything.
fn assert_nothing_gets_through(server: &Socket, client: &Socket) {
    client.set_rcvtimeo(Some(NOTHING_ARRIVES)).unwrap();
    // The connection is asynchronous, so the request is queued and the send succeeds.
    client.send(b"hello?", Flags::NONE).unwrap();
    let mut items = [server.poll_item(PollEvents::IN)];
    assert_eq!(
        poll(&mut items, Some(NOTHING_ARRIVES)).unwrap(),
        0,
        "server got a request"
    );
    let error = client.recv(Flags::NONE).unwrap_err();
    assert!(error.is_timeout(), "expected a timeout, got {error}");
}

#[test]
fn a_client_with_the_wrong_server_key_gets_nothing() {
    within_watchdog("wrong server key", || {
        let context = Context::new().unwrap();
        let keys = CurveKeyPair::generate().unwrap();
        let server = curve_server(&context, SocketType::Rep, &keys, "tcp://127.0.0.1:0");
        let endpoint = server.last_endpoint().unwrap();
        let impostor = CurveKeyPair::generate().unwrap();
        let client = curve_client(&context, SocketType::Req, &impostor, &endpoint);
        assert_nothing_gets_through(&server, &client);
    });
}

#[test]
fn a_client_without_curve_gets_nothing_from_a_curve_server() {
    within_watchdog("client without curve", || {
        let context = Context::new().unwrap();
        let keys = CurveKeyPair::generate().unwrap();
        let server = curve_server(&context, SocketType::Rep, &keys, "tcp://127.0.0.1:0");
        let endpoint = server.last_endpoint().unwrap();
        let client = context.socket(SocketType::Req).unwrap();
        client.connect(&endpoint).unwrap();
        assert_eq!(client.mechanism().unwrap(), Mechanism::Null);
        assert_nothing_gets_through(&server, &client);
    });
}

#[test]
fn a_plain_server_and_client_still_talk_without_curve() {
    // Control for the two tests above: the same exchange without CURVE on either side works,
    // so "nothing gets through" there is the handshake failing, not the test setup.
    within_watchdog("plain req/rep", || {
        let context = Context::new().unwrap();
        let (server, endpoint) = bound(&context, SocketType::Rep);
        server.set_rcvtimeo(Some(WATCHDOG)).unwrap();
        let client = context.socket(SocketType::Req).unwrap();
        client.set_rcvtimeo(Some(WATCHDOG)).unwrap();
        client.connect(&endpoint).unwrap();
        client.send(b"hello?", Flags::NONE).unwrap();
        assert_eq!(&*server.recv(Flags::NONE).unwrap(), b"hello?");
        server.send(b"yes", Flags::NONE).unwrap();
        assert_eq!(&*client.recv(Flags::NONE).unwrap(), b"yes");
    });
}

#[test]
fn z85_keys_given_as_text_configure_the_same_handshake() {
    within_watchdog("keys from z85", || {
        let context = Context::new().unwrap();
        let keys = CurveKeyPair::generate().unwrap();
        let server_public_text = keys.public.to_z85();
        let server = curve_server(&context, SocketType::Rep, &keys, "tcp://127.0.0.1:0");
        server.set_rcvtimeo(Some(WATCHDOG)).unwrap();
        let endpoint = server.last_endpoint().unwrap();
        let server_public: labhub_zmq::CurvePublicKey = server_public_text.parse().unwrap();
        let client = curve_client(
            &context,
            SocketType::Req,
            &CurveKeyPair {
                public: server_public,
                secret: CurveKeyPair::generate().unwrap().secret, // unused by the client
            },
            &endpoint,
        );
        client.send(b"x", Flags::NONE).unwrap();
        assert_eq!(&*server.recv(Flags::NONE).unwrap(), b"x");
    });
}
