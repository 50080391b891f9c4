//! The ring against a naive model: a `VecDeque` of the last N frames and a cursor per consumer.

use std::collections::VecDeque;
use std::time::Duration;

use labhub::shm::{Backpressure, PublishError, ReadError};
use proptest::prelude::*;

use super::{TestChannel, consumer, pattern, producer, ring, send};

#[derive(Debug, Clone)]
enum Op {
    Publish(usize),
    Read(usize),
    Abandon,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1usize..64).prop_map(Op::Publish),
        3 => (0usize..2).prop_map(Op::Read),
        1 => Just(Op::Abandon),
    ]
}

struct Model {
    slots: usize,
    drop_oldest: bool,
    ring: VecDeque<(u64, Vec<u8>)>,
    next_id: u64,
    cursors: [u64; 2],
    dropped: u64,
    /// DropOldest: the frame id below which the drop for a claim was already counted (a claim
    /// that is abandoned and retried at the same id drops nothing more).
    decided: u64,
}

impl Model {
    fn publish(&mut self, data: Vec<u8>) -> Result<u64, ()> {
        let slowest = self.cursors.iter().copied().min().unwrap();
        if !self.claim(slowest) {
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
        let slowest = self.cursors.iter().copied().min().unwrap();
        if !self.claim(slowest) {
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
        // Frames no longer in the ring are skipped.
        let oldest = self.ring.front().map_or(self.next_id, |f| f.0);
        let want = self.cursors[who].max(oldest);
        self.cursors[who] = want;
        let frame = self.ring.iter().find(|(id, _)| *id == want).cloned()?;
        self.cursors[who] = want + 1;
        Some(frame)
    }
}

fn run(slots: u32, when_full: Backpressure, ops: &[Op]) {
    let ch = TestChannel::new("model");
    let mut p = producer(&ch.name, ring(slots, when_full), 64);
    let mut consumers = [consumer(&ch.name), consumer(&ch.name)];
    let mut m = Model {
        slots: slots as usize,
        drop_oldest: when_full == Backpressure::DropOldest,
        ring: VecDeque::new(),
        next_id: 0,
        cursors: [0, 0],
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
                    Ok(f) => Some((f.frame_id(), f.to_vec().unwrap())),
                    Err(ReadError::Timeout) => None,
                    Err(e) => panic!("{e}"),
                };
                assert_eq!(got, m.read(who));
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn a_fail_ring_behaves_like_the_vecdeque_model(slots in 1u32..5, ops in proptest::collection::vec(op(), 1..80)) {
        run(slots, Backpressure::Fail, &ops);
    }

    #[test]
    fn a_drop_oldest_ring_behaves_like_the_vecdeque_model(slots in 1u32..5, ops in proptest::collection::vec(op(), 1..80)) {
        run(slots, Backpressure::DropOldest, &ops);
    }
}
