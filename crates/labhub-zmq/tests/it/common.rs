//! Helpers: a watchdog so a deadlock fails the test instead of hanging it.

use std::sync::mpsc;
use std::time::Duration;

use labhub_zmq::{Context, Socket, SocketType};

/// Generous bound for anything that should be prompt; reached only on a hang.
pub const WATCHDOG: Duration = Duration::from_secs(30);

/// Short receive timeout for "nothing arrives" checks.
pub const NOTHING_ARRIVES: Duration = Duration::from_millis(300);

/// Runs `f` on a thread and returns its result, failing the test if it takes longer than
/// [`WATCHDOG`] (a hang), or propagating its panic.
pub fn within_watchdog<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let value = f();
        let _ = tx.send(());
        value
    });
    match rx.recv_timeout(WATCHDOG) {
        // Finished, or panicked (the sender was dropped): join returns either at once.
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => match thread.join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what} did not finish within {WATCHDOG:?}"),
    }
}

/// A socket bound to a free tcp port on 127.0.0.1, and its resolved endpoint.
pub fn bound(context: &Context, kind: SocketType) -> (Socket, String) {
    let socket = context.socket(kind).unwrap();
    socket.bind("tcp://127.0.0.1:0").unwrap();
    let endpoint = socket.last_endpoint().unwrap();
    (socket, endpoint)
}

/// Reads monitor events of `socket` until one satisfies `wanted` and returns it; fails after
/// [`WATCHDOG`] without one.
pub fn wait_for_event(
    socket: &Socket,
    wanted: impl Fn(&labhub_zmq::MonitorEvent) -> bool,
) -> labhub_zmq::MonitorEvent {
    let deadline = std::time::Instant::now() + WATCHDOG;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let monitor = socket.monitor_socket().expect("monitor enabled");
        let mut items = [monitor.poll_item(labhub_zmq::PollEvents::IN)];
        if labhub_zmq::poll(&mut items, Some(left)).unwrap() == 0 {
            panic!("no matching monitor event within {WATCHDOG:?}; saw {seen:?}");
        }
        let event = socket
            .recv_monitor_event(labhub_zmq::Flags::DONTWAIT)
            .unwrap();
        if wanted(&event) {
            return event;
        }
        seen.push(event);
    }
}
