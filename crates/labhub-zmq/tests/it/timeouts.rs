//! Receive timeouts leave sockets usable (DEALER; REQ with REQ_RELAXED).

use std::time::Duration;

use labhub_zmq::{Context, Flags, SocketType};

use crate::common::{WATCHDOG, bound, within_watchdog};

const SHORT: Duration = Duration::from_millis(50);

#[test]
fn a_dealer_receive_timeout_is_a_timeout_error_and_the_socket_stays_usable() {
    within_watchdog("dealer timeout", || {
        let context = Context::new().unwrap();
        let (router, endpoint) = bound(&context, SocketType::Router);
        router.set_rcvtimeo(Some(WATCHDOG)).unwrap();
        let dealer = context.socket(SocketType::Dealer).unwrap();
        dealer.set_rcvtimeo(Some(SHORT)).unwrap();
        dealer.connect(&endpoint).unwrap();

        let error = dealer.recv(Flags::NONE).unwrap_err();
        assert!(error.is_timeout(), "{error}");
        assert!(!error.is_term());

        dealer.send(b"after timeout", Flags::NONE).unwrap();
        let frames = router.recv_multipart_bytes(Flags::NONE).unwrap();
        assert_eq!(frames[1], b"after timeout");
        router
            .send_multipart([frames[0].as_slice(), b"reply"], Flags::NONE)
            .unwrap();
        dealer.set_rcvtimeo(Some(WATCHDOG)).unwrap();
        assert_eq!(&*dealer.recv(Flags::NONE).unwrap(), b"reply");
    });
}

#[test]
fn a_strict_req_socket_cannot_send_again_after_a_timeout() {
    let context = Context::new().unwrap();
    let (_router, endpoint) = bound(&context, SocketType::Router);
    let req = context.socket(SocketType::Req).unwrap();
    req.set_rcvtimeo(Some(SHORT)).unwrap();
    req.connect(&endpoint).unwrap();
    req.send(b"1", Flags::NONE).unwrap();
    assert!(req.recv(Flags::NONE).unwrap_err().is_timeout());
    let error = req.send(b"2", Flags::NONE).unwrap_err();
    assert!(error.is_wrong_state(), "{error}");
}

#[test]
fn a_relaxed_req_socket_sends_again_after_a_timeout_and_ignores_the_late_reply() {
    within_watchdog("relaxed req", || {
        let context = Context::new().unwrap();
        let (router, endpoint) = bound(&context, SocketType::Router);
        router.set_rcvtimeo(Some(WATCHDOG)).unwrap();
        let req = context.socket(SocketType::Req).unwrap();
        req.set_req_relaxed(true).unwrap();
        req.set_req_correlate(true).unwrap();
        req.set_rcvtimeo(Some(SHORT)).unwrap();
        req.connect(&endpoint).unwrap();

        req.send(b"first", Flags::NONE).unwrap();
        // ROUTER sees [routing id, request id, empty delimiter, body] with REQ_CORRELATE.
        let first = router.recv_multipart_bytes(Flags::NONE).unwrap();
        assert_eq!(first.len(), 4);
        assert_eq!(first[3], b"first");
        assert!(req.recv(Flags::NONE).unwrap_err().is_timeout());

        req.send(b"second", Flags::NONE).unwrap();
        let second = router.recv_multipart_bytes(Flags::NONE).unwrap();
        assert_eq!(second[3], b"second");

        // The late reply to the first request arrives first and is discarded.
        let reply = |request: &[Vec<u8>], body: &[u8]| {
            let mut frames = request[..3].to_vec();
            frames.push(body.to_vec());
            router.send_multipart(&frames, Flags::NONE).unwrap();
        };
        reply(&first, b"late reply to first");
        reply(&second, b"reply to second");
        req.set_rcvtimeo(Some(WATCHDOG)).unwrap();
        assert_eq!(&*req.recv(Flags::NONE).unwrap(), b"reply to second");
    });
}
