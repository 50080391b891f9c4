//! Dropping sockets and contexts never hangs on messages queued for a dead peer.

use std::sync::mpsc;
use std::time::Duration;

use labhub_zmq::{Context, DEFAULT_LINGER, Flags, SocketType};

use crate::common::{WATCHDOG, bound, within_watchdog};

/// An endpoint where nobody listens: bind a free port, then close the socket.
fn dead_endpoint() -> String {
    let context = Context::new().unwrap();
    let (socket, endpoint) = bound(&context, SocketType::Router);
    socket.unbind(&endpoint).unwrap();
    endpoint
}

#[test]
fn new_sockets_linger_for_the_default_bound() {
    let context = Context::new().unwrap();
    let socket = context.socket(SocketType::Dealer).unwrap();
    assert_eq!(socket.linger().unwrap(), Some(DEFAULT_LINGER));
    socket.set_linger(None).unwrap();
    assert_eq!(socket.linger().unwrap(), None);
}

#[test]
fn dropping_a_context_with_messages_queued_for_a_dead_peer_returns_promptly() {
    let endpoint = dead_endpoint();
    within_watchdog("context drop with queued messages", move || {
        let context = Context::new().unwrap();
        let dealer = context.socket(SocketType::Dealer).unwrap();
        dealer.connect(&endpoint).unwrap();
        for i in 0..10u8 {
            // Queued in the connection's pipe: the peer will never read them.
            dealer.send([i], Flags::DONTWAIT).unwrap();
        }
        drop(dealer);
        drop(context); // zmq_ctx_term runs here
    });
}

#[test]
fn with_linger_forever_the_same_drop_blocks_until_the_peer_takes_the_messages() {
    // Shows the previous test can fail: the same drop with LINGER forever does not return
    // while the peer is away, and returns once a peer appears at the endpoint and takes them.
    let endpoint = dead_endpoint();
    let (done_tx, done_rx) = mpsc::channel();
    let thread_endpoint = endpoint.clone();
    let dropper = std::thread::spawn(move || {
        let context = Context::new().unwrap();
        let dealer = context.socket(SocketType::Dealer).unwrap();
        dealer.set_linger(None).unwrap();
        dealer
            .set_reconnect_ivl(Some(Duration::from_millis(20)))
            .unwrap();
        dealer.connect(&thread_endpoint).unwrap();
        dealer.send(b"queued", Flags::DONTWAIT).unwrap();
        drop(dealer);
        drop(context);
        let _ = done_tx.send(());
    });
    assert_eq!(
        done_rx.recv_timeout(Duration::from_millis(500)),
        Err(mpsc::RecvTimeoutError::Timeout),
        "the context was terminated although a message was lingering forever"
    );

    let peer_context = Context::new().unwrap();
    let peer = peer_context.socket(SocketType::Router).unwrap();
    peer.bind(&endpoint).unwrap();
    peer.set_rcvtimeo(Some(WATCHDOG)).unwrap();
    let frames = peer.recv_multipart_bytes(Flags::NONE).unwrap();
    assert_eq!(frames[1], b"queued");
    done_rx
        .recv_timeout(WATCHDOG)
        .expect("context drop still blocked after the message was delivered");
    dropper.join().unwrap();
}

#[test]
fn shutting_down_the_context_wakes_a_blocked_receive_with_eterm() {
    let context = Context::new().unwrap();
    let socket = context.socket(SocketType::Pull).unwrap();
    socket.bind("inproc://shutdown-wakes").unwrap();
    let (started_tx, started_rx) = mpsc::channel();
    let receiver = std::thread::spawn(move || {
        started_tx.send(()).unwrap();
        socket.recv(Flags::NONE).unwrap_err() // no timeout: blocks until shutdown
    });
    started_rx.recv_timeout(WATCHDOG).unwrap();
    context.shutdown();
    let error = within_watchdog("blocked receive after shutdown", move || {
        receiver.join().unwrap()
    });
    assert!(error.is_term(), "expected ETERM, got {error}");
    assert!(context.socket(SocketType::Pull).unwrap_err().is_term());
}

#[test]
fn sockets_keep_their_context_alive_after_the_context_handle_is_dropped() {
    within_watchdog("socket outliving its context handle", || {
        let context = Context::new().unwrap();
        let pull = context.socket(SocketType::Pull).unwrap();
        pull.bind("inproc://outlive").unwrap();
        let push = context.socket(SocketType::Push).unwrap();
        push.connect("inproc://outlive").unwrap();
        drop(context);
        push.send(b"still here", Flags::NONE).unwrap();
        assert_eq!(&*pull.recv(Flags::NONE).unwrap(), b"still here");
    });
}
