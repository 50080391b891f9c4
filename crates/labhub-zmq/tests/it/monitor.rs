//! Socket monitor: handshake outcomes are observable as events.

use labhub_zmq::{Context, CurveKeyPair, Flags, SocketEvent, SocketType, ZapDecision};

use crate::common::{wait_for_event, within_watchdog};

/// `ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC` from zmq.h.
const ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC: u64 = 0x1100_0001;

#[test]
fn a_monitor_reports_listening_and_a_successful_curve_handshake() {
    within_watchdog("monitor success", || {
        let context = Context::new().unwrap();
        let keys = CurveKeyPair::generate().unwrap();
        let mut server = context.socket(SocketType::Router).unwrap();
        server.enable_monitor().unwrap();
        server.set_curve_server_keys(&keys.secret).unwrap();
        server.bind("tcp://127.0.0.1:0").unwrap();
        let endpoint = server.last_endpoint().unwrap();
        let listening = wait_for_event(&server, |e| e.event == SocketEvent::Listening);
        assert_eq!(listening.local, endpoint);

        let mine = CurveKeyPair::generate().unwrap();
        let client = context.socket(SocketType::Dealer).unwrap();
        client
            .set_curve_client_keys(&keys.public, &mine.public, &mine.secret)
            .unwrap();
        client.connect(&endpoint).unwrap();
        wait_for_event(&server, |e| e.event == SocketEvent::HandshakeSucceeded);
    });
}

#[test]
fn a_monitor_reports_a_zap_refusal_with_status_400() {
    within_watchdog("monitor zap refusal", || {
        let context = Context::new().unwrap();
        let _zap = context
            .start_zap_handler(|_| ZapDecision::deny("nobody is welcome"))
            .unwrap();
        let keys = CurveKeyPair::generate().unwrap();
        let mut server = context.socket(SocketType::Router).unwrap();
        server.enable_monitor().unwrap();
        server.set_curve_server_keys(&keys.secret).unwrap();
        server.bind("tcp://127.0.0.1:0").unwrap();
        let endpoint = server.last_endpoint().unwrap();

        let mine = CurveKeyPair::generate().unwrap();
        let client = context.socket(SocketType::Dealer).unwrap();
        client
            .set_curve_client_keys(&keys.public, &mine.public, &mine.secret)
            .unwrap();
        client.connect(&endpoint).unwrap();
        client.send(b"hello", Flags::NONE).unwrap();
        let refused = wait_for_event(&server, |e| e.event == SocketEvent::HandshakeFailedAuth);
        assert_eq!(refused.value, 400);
    });
}

#[test]
fn a_monitor_reports_the_handshake_failure_of_a_wrong_server_key() {
    within_watchdog("monitor wrong key", || {
        let context = Context::new().unwrap();
        let keys = CurveKeyPair::generate().unwrap();
        let mut server = context.socket(SocketType::Router).unwrap();
        server.enable_monitor().unwrap();
        server.set_curve_server_keys(&keys.secret).unwrap();
        server.bind("tcp://127.0.0.1:0").unwrap();
        let endpoint = server.last_endpoint().unwrap();

        let impostor = CurveKeyPair::generate().unwrap();
        let mine = CurveKeyPair::generate().unwrap();
        let client = context.socket(SocketType::Dealer).unwrap();
        client
            .set_curve_client_keys(&impostor.public, &mine.public, &mine.secret)
            .unwrap();
        client.connect(&endpoint).unwrap();
        let outcome = wait_for_event(&server, |e| {
            matches!(
                e.event,
                SocketEvent::HandshakeFailedProtocol
                    | SocketEvent::HandshakeFailedNoDetail
                    | SocketEvent::HandshakeSucceeded
            )
        });
        // The server cannot open the client's HELLO box: a cryptographic protocol error.
        assert_eq!(
            outcome.event,
            SocketEvent::HandshakeFailedProtocol,
            "{outcome:?}"
        );
        assert_eq!(outcome.value, ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC);
    });
}

#[test]
fn dropping_a_monitored_socket_with_unread_events_returns_promptly() {
    within_watchdog("monitored socket drop", || {
        let context = Context::new().unwrap();
        let mut socket = context.socket(SocketType::Router).unwrap();
        socket.enable_monitor().unwrap();
        for _ in 0..20 {
            socket.bind("tcp://127.0.0.1:0").unwrap();
        }
        drop(socket);
        drop(context);
    });
}
