//! The writer thread: owns the sink, drains the queue in batches, reports drops.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::time::Duration;

use tracing::Level;

use super::LogError;
use super::format::{self, Line};
use super::sink::{MAX_WRITE, OpenSink};

/// How long the writer sleeps between polls after a batch.
const LINGER_POLL: Duration = Duration::from_micros(500);
/// Polls before the writer blocks in `recv` again.
const LINGER_POLLS: u32 = 4;

/// What travels through the queue. Lines are offered with `try_send` and dropped when the
/// queue is full; control messages wait for room, so they are never lost and keep their
/// place in the order.
// Lines are large on purpose (see `format::INLINE_LINE`); control messages are rare.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Msg {
    Line(Line),
    Control(Control),
}

/// Messages that change or query the writer; each waits for the lines queued before it.
pub(crate) enum Control {
    Flush(SyncSender<Result<(), LogError>>),
    SetSink(Box<OpenSink>, SyncSender<()>),
    /// Park the writer until `release` disconnects; `parked` is signalled first.
    Hold {
        parked: SyncSender<()>,
        release: Receiver<()>,
    },
}

/// Counters shared by callers (who drop) and the writer (who reports).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Dropped and not yet reported in the log.
    pub(crate) unreported: AtomicU64,
    /// Dropped since start.
    pub(crate) total: AtomicU64,
}

pub(crate) struct Writer {
    pub(crate) rx: Receiver<Msg>,
    pub(crate) sink: OpenSink,
    pub(crate) counters: Arc<Counters>,
    pub(crate) pid: u32,
}

impl Writer {
    /// Runs until every sender is gone and the queue is empty, then flushes.
    pub(crate) fn run(mut self) {
        let mut batch: Vec<Line> = Vec::with_capacity(256);
        let mut batch_bytes = 0usize;
        let mut buf: Vec<u8> = Vec::with_capacity(MAX_WRITE);
        // The first write error since the last flush, reported by the next flush.
        let mut pending_error: Option<io::Error> = None;

        while let Ok(first) = self.rx.recv() {
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Line(line) => {
                        batch_bytes += line.len();
                        batch.push(line);
                        if batch_bytes >= MAX_WRITE {
                            self.write_out(&mut batch, &mut buf, &mut pending_error);
                            batch_bytes = 0;
                        }
                    }
                    Msg::Control(control) => {
                        self.write_out(&mut batch, &mut buf, &mut pending_error);
                        batch_bytes = 0;
                        self.control(control, &mut pending_error);
                    }
                }
                next = self.rx.try_recv().ok();
                if next.is_none() {
                    self.write_out(&mut batch, &mut buf, &mut pending_error);
                    batch_bytes = 0;
                    next = self.linger();
                }
            }
        }
        // Every sender is gone and the queue is drained: make it durable.
        self.write_out(&mut batch, &mut buf, &mut pending_error);
        let _ = self.sink.flush();
    }

    /// Waits a little for more messages without blocking in `recv`.
    ///
    /// A sender wakes the receiver (a futex call, about a microsecond) only when it is blocked
    /// in `recv`. Polling for a moment after each batch keeps the writer out of `recv` while
    /// lines keep coming, so a busy caller pays no wake-up per line; an idle writer soon goes
    /// back to blocking and costs nothing.
    fn linger(&mut self) -> Option<Msg> {
        for _ in 0..LINGER_POLLS {
            std::thread::sleep(LINGER_POLL);
            match self.rx.try_recv() {
                Ok(msg) => return Some(msg),
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) => {}
            }
        }
        None
    }

    fn control(&mut self, control: Control, pending_error: &mut Option<io::Error>) {
        match control {
            Control::Flush(reply) => {
                let flushed = self.sink.flush();
                let result = match pending_error.take().map_or(flushed, Err) {
                    Ok(()) => Ok(()),
                    Err(source) => Err(LogError::Write {
                        sink: self.sink.describe(),
                        source,
                    }),
                };
                let _ = reply.send(result);
            }
            Control::SetSink(new, reply) => {
                // What the old sink could not write is reported by the next flush.
                if let Err(e) = self.sink.flush() {
                    pending_error.get_or_insert(e);
                }
                self.sink = *new;
                let _ = reply.send(());
            }
            Control::Hold { parked, release } => {
                let _ = parked.send(());
                // Returns when the holder drops its sender.
                let _ = release.recv();
            }
        }
    }

    /// Writes the batch, then the number of lines dropped meanwhile, if any.
    fn write_out(
        &mut self,
        batch: &mut Vec<Line>,
        buf: &mut Vec<u8>,
        pending_error: &mut Option<io::Error>,
    ) {
        let dropped = self.counters.unreported.swap(0, Ordering::AcqRel);
        if dropped > 0 {
            batch.push(format::internal_line(
                Level::WARN,
                self.pid,
                format_args!("labhub log dropped {dropped} lines (queue full)"),
            ));
        }
        if batch.is_empty() {
            return;
        }
        if let Err(e) = self.sink.write_lines(batch, buf, self.pid) {
            if pending_error.is_none() {
                // The sink cannot say so itself; stderr is the last resort, once per failure
                // streak (the next flush returns the error and ends the streak).
                eprintln!(
                    "labhub log: cannot write to {}: {e} (a batch of {} lines)",
                    self.sink.describe(),
                    batch.len()
                );
            }
            pending_error.get_or_insert(e);
        }
        batch.clear();
    }
}
