//! Pooled payloads (lossless rings with slots of 256 KiB or more): frames land in the most
//! recently released buffer, never in one a consumer still needs, across processes and a
//! producer's SIGKILL.

use labhub::shm::{Backpressure, Producer};

use super::{TestChannel, WATCHDOG, consumer, pattern, producer, ring, send, spawn_child};

/// Smallest slot that is pooled.
const BIG: usize = labhub::shm::POOL_MIN_SLOT_SIZE as usize;

fn pooled(name: &str, slots: u32) -> Producer<u8> {
    producer(
        name,
        ring(slots, Backpressure::Block { timeout: WATCHDOG }),
        BIG as u64,
    )
}

fn publish_pattern(p: &mut Producer<u8>) -> u64 {
    let mut w = p.loan().unwrap();
    let id = w.frame_id();
    w.copy_from_slice(&pattern(id, BIG));
    w.commit()
}

#[test]
fn a_consumer_that_keeps_up_gets_frames_in_two_buffers() {
    let ch = TestChannel::new("pool-hot");
    let mut p = pooled(&ch.name, 8);
    let mut c = consumer(&ch.name);
    let mut buffers = Vec::new();
    for i in 0..20 {
        assert_eq!(publish_pattern(&mut p), i);
        let f = c.next(Some(WATCHDOG)).unwrap();
        assert_eq!(f.frame_id(), i);
        let d = f.held().unwrap();
        assert_eq!(d, pattern(i, BIG));
        buffers.push(d.as_ptr() as usize);
        f.finish().unwrap();
    }
    // Two, not eight: the newest frame's buffer is kept (see the crash test below), the other
    // one is reused at once.
    buffers.sort_unstable();
    buffers.dedup();
    assert_eq!(buffers.len(), 2, "two buffers alternate");
}

#[test]
fn a_producer_killed_mid_write_leaves_the_last_complete_frame_whole() {
    let ch = TestChannel::new("pool-midwrite");
    let big = BIG.to_string();
    let mut child = spawn_child(
        "shm-producer-midwrite",
        &[&ch.name, "ring:8:block:30s", &big, "3"],
    );
    assert_eq!(child.expect("mid-write"), "mid-write 3");
    let mut c = consumer(&ch.name);
    child.kill();
    let f = c.latest().unwrap().expect("the last complete frame");
    assert_eq!(f.frame_id(), 2);
    assert_eq!(f.to_vec().unwrap(), pattern(2, BIG));
    f.finish().unwrap();
    // The restarted producer carries on after it.
    let mut p = pooled(&ch.name, 8);
    assert_eq!(publish_pattern(&mut p), 3);
    let f = c.next(Some(WATCHDOG)).unwrap();
    assert_eq!((f.frame_id(), f.held()), (3, Some(&pattern(3, BIG)[..])));
}

#[test]
fn a_held_frame_keeps_its_buffer_while_the_others_are_reused() {
    let ch = TestChannel::new("pool-held");
    let mut p = pooled(&ch.name, 8);
    let mut slow = consumer(&ch.name);
    let mut fast = consumer(&ch.name);
    publish_pattern(&mut p);
    let held = slow.next(Some(WATCHDOG)).unwrap();
    assert_eq!(held.frame_id(), 0);
    for i in 0..8 {
        // The slow consumer holds frame 0, so the ring takes frames 0..=7.
        assert_eq!(i, fast.next(Some(WATCHDOG)).map(|f| f.frame_id()).unwrap());
        if i < 7 {
            publish_pattern(&mut p);
        }
    }
    assert_eq!(
        held.held().unwrap(),
        pattern(0, BIG),
        "frame 0's buffer was never reused"
    );
    held.finish().unwrap();
    // Released: the producer goes on.
    assert_eq!(publish_pattern(&mut p), 8);
}

#[test]
fn latest_holds_a_frame_the_consumer_had_passed_while_its_buffer_is_still_there() {
    let ch = TestChannel::new("pool-latest");
    let mut p = pooled(&ch.name, 8);
    let mut c = consumer(&ch.name);
    publish_pattern(&mut p);
    c.next(Some(WATCHDOG)).unwrap().finish().unwrap();
    // Frame 0 again, although this consumer has passed it: the consumer lowers its position
    // to hold it, and the producer, which must scan for every pooled frame, keeps off it.
    let again = c.latest().unwrap().expect("frame 0");
    assert_eq!(again.frame_id(), 0);
    assert!(again.is_held());
    for _ in 0..2 {
        send(&mut p, &[0xEE; BIG]).unwrap();
    }
    assert_eq!(
        again.held().unwrap(),
        pattern(0, BIG),
        "frame 0's buffer was kept"
    );
    again.finish().unwrap();
    // Released: the next frames may take its buffer, and the consumer goes on after frame 0.
    assert_eq!(c.cursor(), 1);
}

#[test]
fn large_frames_reach_a_consumer_in_another_process_whole_and_in_order() {
    let ch = TestChannel::new("pool-xproc");
    let mut p = pooled(&ch.name, 8);
    let frames = 500u64;
    let mut child = spawn_child("shm-consumer-verify", &[&ch.name, &frames.to_string()]);
    child.expect("attached");
    for _ in 0..frames {
        publish_pattern(&mut p);
    }
    assert_eq!(
        child.expect("done"),
        format!(
            "done valid={frames} overwritten=0 missed=0 last={}",
            frames - 1
        )
    );
}

#[test]
fn a_restarted_producer_keeps_the_buffers_of_frames_still_held() {
    let ch = TestChannel::new("pool-takeover");
    let mut p = pooled(&ch.name, 4);
    let mut holder = consumer(&ch.name);
    let mut reader = consumer(&ch.name);
    for _ in 0..3 {
        publish_pattern(&mut p);
    }
    let held = holder.next(Some(WATCHDOG)).unwrap();
    for _ in 0..3 {
        reader.next(Some(WATCHDOG)).unwrap().finish().unwrap();
    }
    drop(p);
    // Re-attached: it must learn from the descriptors which buffer holds frame 0.
    let mut p = pooled(&ch.name, 4);
    assert_eq!(publish_pattern(&mut p), 3);
    assert_eq!(reader.next(Some(WATCHDOG)).unwrap().frame_id(), 3);
    assert_eq!(held.frame_id(), 0);
    assert_eq!(
        held.held().unwrap(),
        pattern(0, BIG),
        "frame 0's buffer was not reused"
    );
    held.finish().unwrap();
}
