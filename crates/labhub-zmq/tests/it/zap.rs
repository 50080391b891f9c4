//! ZAP: an allow-list of CURVE client keys, enforced by a handler closure.

use std::collections::HashSet;
use std::sync::mpsc;

use labhub_zmq::{
    Context, CurveKeyPair, CurvePublicKey, Flags, Socket, SocketType, ZapDecision, ZapRequest,
};

use crate::common::{NOTHING_ARRIVES, WATCHDOG, within_watchdog};

struct Setup {
    context: Context,
    server_keys: CurveKeyPair,
    server: Socket,
    endpoint: String,
}

fn curve_router(context: Context) -> Setup {
    let server_keys = CurveKeyPair::generate().unwrap();
    let server = context.socket(SocketType::Router).unwrap();
    server.set_curve_server_keys(&server_keys.secret).unwrap();
    server.set_zap_domain("labhub").unwrap();
    server.set_rcvtimeo(Some(WATCHDOG)).unwrap();
    server.bind("tcp://127.0.0.1:0").unwrap();
    let endpoint = server.last_endpoint().unwrap();
    Setup {
        context,
        server_keys,
        server,
        endpoint,
    }
}

fn client(setup: &Setup, keys: &CurveKeyPair) -> Socket {
    let client = setup.context.socket(SocketType::Dealer).unwrap();
    client
        .set_curve_client_keys(&setup.server_keys.public, &keys.public, &keys.secret)
        .unwrap();
    client.set_rcvtimeo(Some(WATCHDOG)).unwrap();
    client.connect(&setup.endpoint).unwrap();
    client
}

/// An allow-list handler reporting every request it decides on.
fn allow_list(
    allowed: HashSet<CurvePublicKey>,
) -> (
    impl Fn(&ZapRequest) -> ZapDecision + Send + 'static,
    mpsc::Receiver<(ZapRequest, ZapDecision)>,
) {
    let (tx, rx) = mpsc::channel();
    let decide = move |request: &ZapRequest| {
        let decision = match request.curve_public_key() {
            Some(key) if allowed.contains(&key) => ZapDecision::allow(key.to_z85()),
            Some(_) => ZapDecision::deny("key not on the allow-list"),
            None => ZapDecision::deny("curve required"),
        };
        let _ = tx.send((request.clone(), decision.clone()));
        decision
    };
    (decide, rx)
}

#[test]
fn zap_admits_a_listed_client_key_and_tags_its_messages_with_the_user_id() {
    within_watchdog("zap allow", || {
        let setup = curve_router(Context::new().unwrap());
        let listed = CurveKeyPair::generate().unwrap();
        let (decide, decisions) = allow_list(HashSet::from([listed.public]));
        let _zap = setup.context.start_zap_handler(decide).unwrap();

        let client = client(&setup, &listed);
        client.send(b"hello", Flags::NONE).unwrap();
        let frames = setup.server.recv_multipart(Flags::NONE).unwrap();
        assert_eq!(&*frames[1], b"hello");
        assert_eq!(frames[1].user_id(), Some(listed.public.to_z85()));

        let (request, decision) = decisions.recv_timeout(WATCHDOG).unwrap();
        assert_eq!(request.domain, "labhub");
        assert_eq!(request.mechanism, "CURVE");
        assert_eq!(request.address, "127.0.0.1");
        assert_eq!(request.curve_public_key(), Some(listed.public));
        assert_eq!(decision, ZapDecision::allow(listed.public.to_z85()));

        // The reply reaches the admitted client.
        setup
            .server
            .send_multipart([frames[0].as_bytes(), b"welcome"], Flags::NONE)
            .unwrap();
        assert_eq!(&*client.recv(Flags::NONE).unwrap(), b"welcome");
    });
}

#[test]
fn zap_refuses_an_unlisted_client_key() {
    within_watchdog("zap deny", || {
        let setup = curve_router(Context::new().unwrap());
        let listed = CurveKeyPair::generate().unwrap();
        let unlisted = CurveKeyPair::generate().unwrap();
        let (decide, decisions) = allow_list(HashSet::from([listed.public]));
        let _zap = setup.context.start_zap_handler(decide).unwrap();

        let intruder = client(&setup, &unlisted);
        intruder.send(b"let me in", Flags::NONE).unwrap();
        // Wait for the handler's verdict on this very key, then check nothing got through.
        let (request, decision) = decisions.recv_timeout(WATCHDOG).unwrap();
        assert_eq!(request.curve_public_key(), Some(unlisted.public));
        assert!(matches!(decision, ZapDecision::Deny { .. }));
        setup.server.set_rcvtimeo(Some(NOTHING_ARRIVES)).unwrap();
        let error = setup.server.recv(Flags::NONE).unwrap_err();
        assert!(
            error.is_timeout(),
            "the server received from a refused client: {error}"
        );

        // A listed client on the same server still gets through afterwards.
        setup.server.set_rcvtimeo(Some(WATCHDOG)).unwrap();
        let member = client(&setup, &listed);
        member.send(b"hello", Flags::NONE).unwrap();
        let frames = setup.server.recv_multipart(Flags::NONE).unwrap();
        assert_eq!(&*frames[1], b"hello");
        assert_eq!(frames[1].user_id(), Some(listed.public.to_z85()));
    });
}

#[test]
fn a_second_zap_handler_on_one_context_is_refused() {
    let context = Context::new().unwrap();
    let _first = context
        .start_zap_handler(|_| ZapDecision::allow(""))
        .unwrap();
    let error = context
        .start_zap_handler(|_| ZapDecision::allow(""))
        .unwrap_err();
    assert!(
        error.to_string().contains("inproc://zeromq.zap.01"),
        "{error}"
    );
}

#[test]
fn dropping_a_zap_handler_stops_its_thread_and_frees_the_endpoint() {
    within_watchdog("zap handler drop", || {
        let context = Context::new().unwrap();
        let first = context
            .start_zap_handler(|_| ZapDecision::allow(""))
            .unwrap();
        drop(first);
        let _second = context
            .start_zap_handler(|_| ZapDecision::allow(""))
            .unwrap();
    });
}
