//! The sender's local side: a thread that reads the local channel into a bounded queue, so
//! the network side never makes the local ring wait on a connection. Lossless: frames queue
//! up to a byte budget, which covers a gateway restart or a short cut (the local producer
//! would otherwise evict a consumer that holds its ring back that long); once the budget is
//! spent the reader stops and the local ring's backpressure holds the producer back. Lossy:
//! the queue holds only the newest frame; every frame it replaces is counted skipped.
#![deny(unsafe_code)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use super::wire::{Delivery, FrameHead};
use crate::client::{ConsumeError, ShmConsumer};
use crate::shm::Dynamic;

/// What the reader took from the local channel, in order.
#[derive(Debug)]
pub(super) enum Pending {
    /// A new flexible-zone state (version, bytes), before the frames that follow it.
    State(u64, Vec<u8>),
    /// A frame (its head's `seq` is set when it is sent) and its payload.
    Frame(FrameHead, Vec<u8>),
    /// The source channel's frame ids start afresh with the next frame (it was made again).
    Renumber,
}

impl Pending {
    fn bytes(&self) -> usize {
        match self {
            Self::State(_, b) | Self::Frame(_, b) => b.len(),
            Self::Renumber => 0,
        }
    }
}

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Pending>,
    bytes: usize,
    /// Frames the reader skipped, not yet taken into the stats.
    skipped: u64,
    /// The reader ended with this error.
    failed: Option<String>,
}

/// The queue between the reader thread and the network side.
#[derive(Debug, Default)]
pub(super) struct Spool {
    queue: Mutex<Queue>,
    /// Signalled when an item is queued, and when one is taken (room for the reader).
    changed: Condvar,
    stop: AtomicBool,
    /// The reader has returned.
    done: AtomicBool,
}

impl Spool {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the oldest item, waiting up to `timeout` for one.
    pub(super) fn take(&self, timeout: Duration) -> Option<Pending> {
        let mut q = self.lock();
        if q.items.is_empty() {
            q = self
                .changed
                .wait_timeout(q, timeout)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let item = q.items.pop_front()?;
        q.bytes -= item.bytes();
        self.changed.notify_all();
        Some(item)
    }

    /// Frames skipped since the last call, and the reader's failure if it ended.
    pub(super) fn take_counts(&self) -> (u64, Option<String>) {
        let mut q = self.lock();
        (std::mem::take(&mut q.skipped), q.failed.clone())
    }

    /// Stops the reader.
    pub(super) fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.changed.notify_all();
    }

    /// Whether the reader has stopped and everything it queued was taken.
    pub(super) fn is_drained(&self) -> bool {
        self.done.load(Ordering::SeqCst) && self.lock().items.is_empty()
    }
}

/// Starts the thread that reads `consumer` into `spool`.
pub(super) fn start(
    mut consumer: ShmConsumer<Dynamic>,
    delivery: Delivery,
    budget: usize,
    spool: Arc<Spool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("labhub-bridge-read-{}", consumer.channel()))
        .spawn(move || {
            read(&mut consumer, delivery, budget, &spool);
            spool.done.store(true, Ordering::SeqCst);
            spool.changed.notify_all();
        })
}

fn read(consumer: &mut ShmConsumer<Dynamic>, delivery: Delivery, budget: usize, spool: &Spool) {
    let mut state_version = 0;
    // The source id of the last frame queued: ids going back mean the channel was made again.
    let mut last_origin: Option<u64> = None;
    // Frames skipped since the last frame queued, which that next frame carries.
    let mut since = 0;
    let mut dropped_seen = consumer.consumer().dropped();
    let mut missed_seen = consumer.consumer().missed();
    while !spool.stop.load(Ordering::SeqCst) {
        // Lossless: wait for room before taking the frame, so a full budget holds the local
        // ring back (its backpressure), never drops.
        if delivery == Delivery::Lossless {
            let mut q = spool.lock();
            while q.bytes >= budget && !spool.stop.load(Ordering::SeqCst) {
                q = spool
                    .changed
                    .wait_timeout(q, Duration::from_millis(50))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        let read = match consumer.next(Some(Duration::from_millis(50))) {
            Ok(frame) => {
                let payload = match frame.held() {
                    Some(bytes) => Some(bytes.to_vec()),
                    None => frame.to_vec().ok(),
                };
                // Read after the payload: `None` if the slot was overwritten meanwhile.
                let origin = frame.origin_id();
                let head = FrameHead {
                    seq: 0,
                    origin: origin.unwrap_or(0),
                    timestamp_ns: frame.timestamp_ns(),
                    state_version: frame.state_version(),
                    skipped: 0,
                    shape: frame.shape().to_vec(),
                };
                Ok(payload.filter(|_| origin.is_some()).map(|p| (head, p)))
            }
            Err(e) => Err(e),
        };
        let mut skipped = 0;
        let c = consumer.consumer();
        let (dropped, missed) = (c.dropped(), c.missed());
        skipped += dropped.saturating_sub(dropped_seen) + missed.saturating_sub(missed_seen);
        (dropped_seen, missed_seen) = (dropped, missed);
        let (mut head, payload) = match read {
            Ok(Some(frame)) => frame,
            // Overwritten while it was copied (a lossy policy).
            Ok(None) => {
                since += skipped.max(1);
                spool.lock().skipped += skipped.max(1);
                continue;
            }
            Err(ConsumeError::Timeout { .. }) => {
                since += skipped;
                spool.lock().skipped += skipped;
                continue;
            }
            Err(ConsumeError::Read { source, .. }) => {
                tracing::debug!(error = %source, "a local frame could not be read");
                since += skipped.max(1);
                spool.lock().skipped += skipped.max(1);
                continue;
            }
            Err(e @ ConsumeError::Resume { .. }) => {
                tracing::warn!(error = %e, "the local channel could not be resumed");
                spool.lock().failed = Some(e.to_string());
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        // A source channel made again numbers its frames and its states afresh.
        let renumbered = last_origin.is_some_and(|last| head.origin <= last);
        last_origin = Some(head.origin);
        if renumbered {
            state_version = 0;
        }
        // The state the frame follows goes before it.
        let state = if head.state_version > state_version {
            match consumer.consumer().read_state_bytes() {
                Ok(Some((version, bytes))) => {
                    state_version = version;
                    Some(Pending::State(version, bytes))
                }
                _ => None,
            }
        } else {
            None
        };
        let mut q = spool.lock();
        q.failed = None;
        q.skipped += skipped;
        since += skipped;
        if delivery == Delivery::Lossy {
            // Only the newest frame waits (it carries the skips of those it replaces); a
            // state is kept (it is small and later frames follow it).
            let (mut replaced, mut carried) = (0, 0);
            // Only the newest state waits too (it replaces the older ones).
            let newest_state = q
                .items
                .iter()
                .rposition(|i| matches!(i, Pending::State(..)));
            let mut at = 0;
            q.items.retain(|i| {
                at += 1;
                match i {
                    Pending::State(..) => Some(at - 1) == newest_state && state.is_none(),
                    Pending::Renumber => true,
                    Pending::Frame(h, _) => {
                        replaced += 1;
                        carried += h.skipped;
                        false
                    }
                }
            });
            q.skipped += replaced;
            since += replaced + carried;
            q.bytes = q.items.iter().map(Pending::bytes).sum();
        }
        head.skipped = std::mem::take(&mut since);
        let renumber = renumbered.then_some(Pending::Renumber);
        for item in renumber
            .into_iter()
            .chain(state)
            .chain([Pending::Frame(head, payload)])
        {
            q.bytes += item.bytes();
            q.items.push_back(item);
        }
        drop(q);
        spool.changed.notify_all();
    }
}
