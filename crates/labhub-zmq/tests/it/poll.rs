//! poll: waits for its timeout when idle, reports a readable socket at once.

use std::time::{Duration, Instant};

use labhub_zmq::{Context, Flags, PollEvents, SocketType, poll};

use crate::common::within_watchdog;

#[test]
fn poll_returns_after_its_timeout_with_no_events() {
    let context = Context::new().unwrap();
    let a = context.socket(SocketType::Pull).unwrap();
    a.bind("inproc://idle-a").unwrap();
    let b = context.socket(SocketType::Pull).unwrap();
    b.bind("inproc://idle-b").unwrap();
    let timeout = Duration::from_millis(50);
    let start = Instant::now();
    let mut items = [a.poll_item(PollEvents::IN), b.poll_item(PollEvents::IN)];
    assert_eq!(poll(&mut items, Some(timeout)).unwrap(), 0);
    assert!(
        start.elapsed() >= timeout,
        "returned early: {:?}",
        start.elapsed()
    );
    assert!(items.iter().all(|item| item.revents().is_empty()));
    assert_eq!(poll(&mut items, Some(Duration::ZERO)).unwrap(), 0);
}

#[test]
fn poll_reports_the_readable_socket_among_several() {
    within_watchdog("poll readable", || {
        let context = Context::new().unwrap();
        let idle = context.socket(SocketType::Pull).unwrap();
        idle.bind("inproc://poll-idle").unwrap();
        let busy = context.socket(SocketType::Pull).unwrap();
        busy.bind("inproc://poll-busy").unwrap();
        let push = context.socket(SocketType::Push).unwrap();
        push.connect("inproc://poll-busy").unwrap();
        push.send(b"wake", Flags::NONE).unwrap();

        // No timeout: only the message can end this wait (the watchdog catches a hang).
        let mut items = [
            idle.poll_item(PollEvents::IN),
            busy.poll_item(PollEvents::IN),
        ];
        assert_eq!(poll(&mut items, None).unwrap(), 1);
        assert!(!items[0].is_readable());
        assert!(items[1].is_readable());
        assert_eq!(&*busy.recv(Flags::DONTWAIT).unwrap(), b"wake");

        // Once drained, the socket is no longer readable.
        let mut items = [busy.poll_item(PollEvents::IN)];
        assert_eq!(poll(&mut items, Some(Duration::ZERO)).unwrap(), 0);
    });
}

#[test]
fn poll_reports_a_writable_socket() {
    let context = Context::new().unwrap();
    let pull = context.socket(SocketType::Pull).unwrap();
    pull.bind("inproc://poll-out").unwrap();
    let push = context.socket(SocketType::Push).unwrap();
    push.connect("inproc://poll-out").unwrap();
    let mut items = [push.poll_item(PollEvents::IN_OUT)];
    assert_eq!(poll(&mut items, Some(Duration::ZERO)).unwrap(), 1);
    assert!(items[0].is_writable());
    assert!(!items[0].is_readable());
}
