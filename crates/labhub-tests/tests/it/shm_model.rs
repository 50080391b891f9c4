//! The ring against a naive model: a `VecDeque` of the last N frames and a cursor per consumer,
//! each consumer with its own delivery mode (only lossless ones hold the producer back).

use std::collections::VecDeque;
use std::time::Duration;

use labhub::shm::{Backpressure, Channel, Consumer, DeliveryMode, PublishError, ReadError};
use proptest::prelude::*;

use super::{TestChannel, pattern, producer, ring, send};

#[derive(Debug, Clone)]
enum Op {
    Publish(usize),
    Read(usize),
    Abandon,
}

fn op(consumers: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1usize..64).prop_map(Op::Publish),
        3 => (0..consumers).prop_map(Op::Read),
        1 => Just(Op::Abandon),
    ]
}

/// One consumer of the model.
#[derive(Debug, Clone)]
struct Reader {
    mode: DeliveryMode,
    cursor: u64,
    /// `every:K`: frames below this are skipped.
    skip_until: u64,
    dropped: u64,
    missed: u64,
}

struct Model {
    slots: usize,
    drop_oldest: bool,
    ring: VecDeque<(u64, Vec<u8>)>,
    next_id: u64,
    readers: Vec<Reader>,
    dropped: u64,
    /// DropOldest: the frame id below which the drop for a claim was already counted (a claim
    /// that is abandoned and retried at the same id drops nothing more).
    decided: u64,
}

impl Model {
    /// The slowest consumer that holds the producer back (lossless), if any.
    fn slowest(&self) -> u64 {
        self.readers
            .iter()
            .filter(|r| r.mode.holds_producer())
            .map(|r| r.cursor)
            .min()
            .unwrap_or(self.next_id)
    }

    fn publish(&mut self, data: Vec<u8>) -> Result<u64, ()> {
        if !self.claim(self.slowest()) {
            return Err(());
        }
        if self.ring.len() == self.slots {
            self.ring.pop_front();
        }
        let id = self.next_id;
        self.ring.push_back((id, data));
        self.next_id += 1;
        Ok(id)
    }

    /// A claimed slot dropped unpublished: empties the slot (the oldest frame, if the ring is
    /// full of frames). Returns whether the claim succeeded.
    fn abandon(&mut self) -> bool {
        if !self.claim(self.slowest()) {
            return false;
        }
        if self.ring.len() == self.slots {
            self.ring.pop_front();
        }
        true
    }

    /// The backpressure decision for claiming `next_id`: false if refused (Fail, full).
    fn claim(&mut self, slowest: u64) -> bool {
        if self.next_id - slowest < self.slots as u64 {
            return true;
        }
        if !self.drop_oldest {
            self.dropped += 1;
            return false;
        }
        if self.next_id >= self.decided {
            self.dropped += 1;
            self.decided = self.next_id + 1;
        }
        true
    }

    fn read(&mut self, who: usize) -> Option<(u64, Vec<u8>)> {
        let commit = self.next_id;
        let oldest = self.ring.front().map_or(commit, |f| f.0);
        let r = &mut self.readers[who];
        // The delivery mode first moves the cursor where its next frame is (skips = dropped).
        if r.cursor < commit {
            let target = match r.mode {
                DeliveryMode::Latest | DeliveryMode::MaxRate(_) => commit - 1,
                DeliveryMode::Queue(n) => commit.saturating_sub(u64::from(n)),
                DeliveryMode::Every(_) => r.skip_until.min(commit),
                _ => r.cursor,
            };
            if target > r.cursor {
                r.dropped += target - r.cursor;
                r.cursor = target;
            }
        }
        // Frames no longer in the ring are skipped (missed).
        if r.cursor < oldest {
            r.missed += oldest - r.cursor;
            r.cursor = oldest;
        }
        let want = r.cursor;
        let frame = self.ring.iter().find(|(id, _)| *id == want).cloned()?;
        r.cursor = want + 1;
        if let DeliveryMode::Every(k) = r.mode {
            r.skip_until = want + u64::from(k);
        }
        Some(frame)
    }
}

fn run(slots: u32, when_full: Backpressure, modes: &[DeliveryMode], ops: &[Op]) {
    let ch = TestChannel::new("model");
    let mut p = producer(&ch.name, ring(slots, when_full), 64);
    let mut consumers: Vec<Consumer<u8>> = modes
        .iter()
        .map(|&m| {
            Channel::new(&ch.name)
                .element::<u8>()
                .delivery(m)
                .open()
                .unwrap()
        })
        .collect();
    let mut m = Model {
        slots: slots as usize,
        drop_oldest: when_full == Backpressure::DropOldest,
        ring: VecDeque::new(),
        next_id: 0,
        readers: modes
            .iter()
            .map(|&mode| Reader {
                mode,
                cursor: 0,
                skip_until: 0,
                dropped: 0,
                missed: 0,
            })
            .collect(),
        dropped: 0,
        decided: 0,
    };
    for op in ops {
        match *op {
            Op::Publish(len) => {
                let data = pattern(m.next_id, len);
                let got = send(&mut p, &data);
                match m.publish(data) {
                    Ok(id) => assert_eq!(got, Ok(id)),
                    Err(()) => assert!(matches!(got, Err(PublishError::Full { .. })), "{got:?}"),
                }
            }
            Op::Read(who) => {
                let c = &mut consumers[who];
                let got = match c.next(Some(Duration::ZERO)) {
                    Ok(f) => {
                        // Only a lossless consumer of a lossless ring is handed frames in place.
                        assert_eq!(
                            f.is_held(),
                            modes[who].holds_producer() && when_full != Backpressure::DropOldest
                        );
                        Some((f.frame_id(), f.to_vec().unwrap()))
                    }
                    Err(ReadError::Timeout) => None,
                    Err(e) => panic!("{e}"),
                };
                assert_eq!(got, m.read(who), "consumer {who} ({})", modes[who]);
                let r = &m.readers[who];
                assert_eq!(c.dropped(), r.dropped, "dropped of {}", modes[who]);
                assert_eq!(c.missed(), r.missed, "missed of {}", modes[who]);
            }
            Op::Abandon => {
                let claimed = match p.loan() {
                    Ok(mut w) => {
                        w[0] = 0xAB;
                        true
                    }
                    Err(_) => false,
                };
                assert_eq!(claimed, m.abandon());
            }
        }
        assert_eq!(p.next_frame_id(), m.next_id);
        assert_eq!(p.stats().dropped, m.dropped);
    }
}

const LOSSLESS_PAIR: [DeliveryMode; 2] = [DeliveryMode::Lossless, DeliveryMode::Lossless];
const MIXED: [DeliveryMode; 4] = [
    DeliveryMode::Lossless,
    DeliveryMode::Latest,
    DeliveryMode::Queue(2),
    DeliveryMode::Every(3),
];
/// No lossless consumer: nothing ever holds the producer back.
const NONE_HOLDING: [DeliveryMode; 3] = [
    DeliveryMode::Latest,
    DeliveryMode::Queue(3),
    DeliveryMode::Every(2),
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn a_fail_ring_behaves_like_the_vecdeque_model(slots in 1u32..5, ops in proptest::collection::vec(op(2), 1..80)) {
        run(slots, Backpressure::Fail, &LOSSLESS_PAIR, &ops);
    }

    #[test]
    fn a_drop_oldest_ring_behaves_like_the_vecdeque_model(slots in 1u32..5, ops in proptest::collection::vec(op(2), 1..80)) {
        run(slots, Backpressure::DropOldest, &LOSSLESS_PAIR, &ops);
    }

    #[test]
    fn mixed_delivery_modes_on_a_fail_ring_behave_like_the_model(slots in 1u32..5, ops in proptest::collection::vec(op(4), 1..100)) {
        run(slots, Backpressure::Fail, &MIXED, &ops);
    }

    #[test]
    fn mixed_delivery_modes_on_a_drop_oldest_ring_behave_like_the_model(slots in 1u32..5, ops in proptest::collection::vec(op(4), 1..100)) {
        run(slots, Backpressure::DropOldest, &MIXED, &ops);
    }

    #[test]
    fn consumers_that_hold_nothing_never_block_a_fail_ring(slots in 1u32..5, ops in proptest::collection::vec(op(3), 1..100)) {
        run(slots, Backpressure::Fail, &NONE_HOLDING, &ops);
    }
}

/// `max-rate:HZ` depends on time, so it is checked here rather than in the model: frames come
/// at least 1/HZ apart, each the newest committed, and the frames in between count as dropped.
#[test]
fn a_max_rate_consumer_takes_the_newest_frame_at_most_hz_times_a_second() {
    let ch = TestChannel::new("max-rate");
    let mut p = producer(&ch.name, ring(4, Backpressure::Fail), 8);
    let mut viewer = Channel::new(&ch.name)
        .element::<u8>()
        .delivery(DeliveryMode::MaxRate(20))
        .open()
        .unwrap();
    // The consumer reads its clock inside `next`, somewhere between these two instants; bracketing
    // it keeps a preemption of this thread from shortening the interval the test sees.
    let mut called = Vec::new();
    let mut returned = Vec::new();
    for round in 0..3u64 {
        // Several frames arrive before the viewer may take the next one.
        for _ in 0..5 {
            let data = pattern(p.next_frame_id(), 8);
            send(&mut p, &data).unwrap();
        }
        called.push(std::time::Instant::now());
        let f = viewer.next(Some(super::WATCHDOG)).unwrap();
        returned.push(std::time::Instant::now());
        assert_eq!(f.frame_id(), 5 * round + 4, "the newest frame");
        assert!(!f.is_held(), "never in place");
        assert_eq!(f.to_vec().unwrap(), pattern(5 * round + 4, 8));
    }
    for k in 1..returned.len() {
        // A minimum interval, never a maximum: hand-out k comes 1/HZ after hand-out k-1 at the
        // earliest, so no earlier than 50 ms after the call that made it.
        let interval = returned[k] - called[k - 1];
        assert!(interval >= Duration::from_millis(50), "{interval:?}");
    }
    assert_eq!(viewer.dropped(), 12, "4 frames skipped per hand-out");
    assert_eq!(viewer.missed(), 0);
}
