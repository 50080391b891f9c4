//! Ending a command early and cleanly on SIGINT (Ctrl-C) or SIGTERM.
//!
//! A command that holds resources outside itself (the demo's temporary home and segment) installs
//! a [`StopSignal`] before it creates any, and waits on it instead of sleeping, so either signal
//! ends it through its normal cleanup. A second signal while it cleans up ends the process at once
//! with the signal's default action (whatever it leaves behind is then reaped as a dead process's
//! leftovers).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};

/// The signals that ask a command to stop.
const STOP_SIGNALS: [i32; 2] = [SIGINT, SIGTERM];

/// SIGINT and SIGTERM caught for this process while the value lives.
#[derive(Debug)]
#[must_use = "the signals are caught only while the StopSignal lives"]
pub struct StopSignal {
    received: mpsc::Receiver<i32>,
    handle: Handle,
    /// Set by the first signal; once set, every further one takes its default action. Set on
    /// drop too, so the signals end the process as usual again.
    armed: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StopSignal {
    /// Catches SIGINT and SIGTERM from now on.
    ///
    /// # Errors
    ///
    /// The OS error if the handlers cannot be installed.
    pub fn install() -> std::io::Result<Self> {
        let armed = Arc::new(AtomicBool::new(false));
        for signal in STOP_SIGNALS {
            // The default action is registered first, so it runs only from the second signal on:
            // the first one sets `armed`.
            signal_hook::flag::register_conditional_default(signal, Arc::clone(&armed))?;
            signal_hook::flag::register(signal, Arc::clone(&armed))?;
        }
        let mut signals = Signals::new(STOP_SIGNALS)?;
        let handle = signals.handle();
        let (tx, received) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("stop-signal".into())
            .spawn(move || {
                for signal in signals.forever() {
                    if tx.send(signal).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Self {
            received,
            handle,
            armed,
            thread: Some(thread),
        })
    }

    /// Waits up to `timeout` for a stop signal: its name if one came (now or earlier, not yet
    /// returned), `None` if the time ran out first.
    pub fn wait(&self, timeout: Duration) -> Option<&'static str> {
        match self.received.recv_timeout(timeout) {
            Ok(signal) => Some(name(signal)),
            Err(_) => None,
        }
    }
}

impl Drop for StopSignal {
    fn drop(&mut self) {
        self.armed.store(true, Ordering::SeqCst);
        self.handle.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}
