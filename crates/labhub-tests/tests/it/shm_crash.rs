//! SIGKILL mid-operation: a producer killed mid-write, a consumer killed holding a frame.

use std::time::Duration;

use labhub::shm::{Backpressure, Channel, Consumer, Policy, ReadError};

use super::{TestChannel, WATCHDOG, consumer, next, pattern, producer, ring, send, spawn_child};

fn producer_killed_mid_write(policy: &str, cfg: Policy) {
    let ch = TestChannel::new("midwrite");
    let mut child = spawn_child("shm-producer-midwrite", &[&ch.name, policy, "4096", "3"]);
    let line = child.expect("mid-write");
    assert_eq!(line, "mid-write 3");
    let mut c = consumer(&ch.name);
    child.kill();
    // The last complete frame is there and whole; the partial one never appears.
    let f = c.latest().unwrap().expect("the last complete frame");
    assert_eq!((f.frame_id(), f.to_vec().unwrap()), (2, pattern(2, 4096)));
    drop(f);
    assert!(matches!(
        c.next(Some(Duration::from_millis(20))),
        Err(ReadError::Timeout)
    ));
    // A restarted producer takes over and continues the frame ids.
    let mut p = producer(&ch.name, cfg, 4096);
    assert_eq!(p.next_frame_id(), 3);
    send(&mut p, &pattern(3, 4096)).unwrap();
    assert_eq!(next(&mut c), (3, pattern(3, 4096)));
    assert_eq!(c.stats().published, 4);
}

#[test]
fn a_producer_killed_mid_write_leaves_the_last_complete_frame_and_a_restart_continues_double_buffer()
 {
    producer_killed_mid_write("double", Policy::DoubleBuffer);
}

#[test]
fn a_producer_killed_mid_write_leaves_the_last_complete_frame_and_a_restart_continues_ring() {
    producer_killed_mid_write(
        "ring:4:block:30s",
        ring(4, Backpressure::Block { timeout: WATCHDOG }),
    );
}

#[test]
fn a_consumer_reading_when_the_producer_is_killed_mid_write_gets_no_partial_frame() {
    let ch = TestChannel::new("midwrite-latest");
    let mut child = spawn_child("shm-producer-midwrite", &[&ch.name, "latest", "4096", "1"]);
    child.expect("mid-write 1");
    let mut c = consumer(&ch.name);
    child.kill();
    // Latest has one slot: the frame being rewritten is gone, and nothing partial is returned.
    assert!(c.latest().unwrap().is_none());
    let mut p = producer(&ch.name, Policy::Latest, 4096);
    assert_eq!(p.next_frame_id(), 1);
    send(&mut p, &pattern(1, 4096)).unwrap();
    assert_eq!(next(&mut c), (1, pattern(1, 4096)));
}

#[test]
fn a_consumer_killed_while_holding_a_frame_does_not_block_the_producer_forever() {
    let ch = TestChannel::new("deadreader");
    let mut p = producer(
        &ch.name,
        ring(2, Backpressure::Block { timeout: WATCHDOG }),
        64,
    );
    let mut child = spawn_child("shm-consumer-hold", &[&ch.name]);
    child.expect("attached");
    send(&mut p, b"0").unwrap();
    assert_eq!(child.expect("holding"), "holding 0");
    send(&mut p, b"1").unwrap();
    assert_eq!(p.stats().consumers, 1);
    // The ring is full (the child holds frame 0): publishing blocks until the child dies.
    let t = std::thread::spawn(move || {
        let r = send(&mut p, b"2");
        (p, r)
    });
    // Whether the kill lands before or during the wait, the producer must get through; this
    // pause only makes the "while blocked" path the likely one.
    std::thread::sleep(Duration::from_millis(50));
    child.kill();
    let (p, r) = t.join().unwrap();
    assert_eq!(r.unwrap(), 2);
    assert_eq!(
        p.stats().consumers,
        0,
        "the dead consumer's entry was reclaimed"
    );
}

#[test]
fn a_consumer_killed_while_holding_a_frame_is_reclaimed_when_a_fail_ring_fills() {
    let ch = TestChannel::new("deadreader-fail");
    let mut p = producer(&ch.name, ring(1, Backpressure::Fail), 64);
    let mut child = spawn_child("shm-consumer-hold", &[&ch.name]);
    child.expect("attached");
    send(&mut p, b"0").unwrap();
    child.expect("holding 0");
    child.kill();
    send(&mut p, b"1").unwrap();
    let s = p.stats();
    assert_eq!((s.consumers, s.evicted), (0, 1));
}

#[test]
fn the_reader_count_of_a_slot_counts_live_holders_and_forgets_a_killed_one() {
    let ch = TestChannel::new("readers");
    let mut p = producer(
        &ch.name,
        ring(4, Backpressure::Block { timeout: WATCHDOG }),
        64,
    );
    let mut child = spawn_child("shm-consumer-hold", &[&ch.name]);
    child.expect("attached");
    let mut c = consumer(&ch.name);
    send(&mut p, b"0").unwrap();
    send(&mut p, b"1").unwrap();
    assert_eq!(child.expect("holding"), "holding 0");
    let f0 = c.next(Some(WATCHDOG)).unwrap();
    assert_eq!(p.slot_readers(), [2, 0, 0, 0], "both hold frame 0");
    drop(f0);
    let f1 = c.next(Some(WATCHDOG)).unwrap();
    assert_eq!(f1.frame_id(), 1);
    assert_eq!(p.slot_readers(), [1, 1, 0, 0]);
    child.kill();
    // No reclaim has run yet (nothing needed the entry): the count follows the dead process.
    assert_eq!(
        p.slot_readers(),
        [0, 1, 0, 0],
        "a killed holder stops counting"
    );
    drop(f1);
    assert_eq!(c.slot_readers(), [0, 0, 0, 0]);
}

#[test]
fn a_dead_consumers_table_entry_is_reused_by_a_new_consumer() {
    let ch = TestChannel::new("deadentry");
    let _p = producer(&ch.name, Policy::Latest, 64);
    let mut live: Vec<Consumer<u8>> = (0..15).map(|_| consumer(&ch.name)).collect();
    let mut child = spawn_child("shm-consumer-attached", &[&ch.name]);
    child.expect("attached");
    assert!(Channel::new(&ch.name).open().is_err(), "table full");
    child.kill();
    live.push(consumer(&ch.name));
    assert_eq!(live[0].stats().consumers, 16);
}

#[test]
fn a_producer_killed_while_publishing_is_replaced_by_a_new_one() {
    let ch = TestChannel::new("deadproducer");
    let mut child = spawn_child("shm-producer", &[&ch.name, "ring:8:fail", "64", "5"]);
    child.expect("created");
    child.expect("published 5");
    child.kill();
    let mut p = producer(&ch.name, ring(8, Backpressure::Fail), 64);
    assert_eq!(p.next_frame_id(), 5);
    assert_eq!(send(&mut p, b"x").unwrap(), 5);
}

#[test]
fn a_live_consumer_stuck_longer_than_the_consumer_timeout_is_evicted_and_told_so() {
    let ch = TestChannel::new("stuck");
    let mut p = Channel::new(&ch.name)
        .policy(ring(1, Backpressure::Block { timeout: WATCHDOG }))
        .bytes(64)
        .consumer_timeout(Some(Duration::from_millis(50)))
        .create()
        .unwrap();
    let mut c = consumer(&ch.name);
    send(&mut p, b"0").unwrap();
    let held = c.next(Some(WATCHDOG)).unwrap();
    // The ring is full and the reader does not move: after its heartbeat ages past 50 ms the
    // producer evicts it and goes on.
    assert_eq!(send(&mut p, b"1").unwrap(), 1);
    let s = p.stats();
    assert_eq!((s.consumers, s.evicted), (0, 1));
    // It lost its hold: the slot now holds frame 1, and the frame says so when finished.
    assert_eq!(held.held(), Some(&b"1"[..]));
    assert!(matches!(held.finish(), Err(ReadError::Evicted { .. })));
    assert!(matches!(
        c.next(Some(WATCHDOG)),
        Err(ReadError::Evicted { .. })
    ));
}

#[test]
fn without_a_consumer_timeout_a_slow_live_consumer_is_waited_for() {
    let ch = TestChannel::new("slow");
    let mut p = Channel::new(&ch.name)
        .policy(ring(
            1,
            Backpressure::Block {
                timeout: Duration::from_millis(100),
            },
        ))
        .bytes(64)
        .consumer_timeout(None)
        .create()
        .unwrap();
    let mut c = consumer(&ch.name);
    send(&mut p, b"0").unwrap();
    let held = c.next(Some(WATCHDOG)).unwrap();
    assert!(matches!(
        send(&mut p, b"1"),
        Err(labhub::shm::PublishError::Timeout { .. })
    ));
    held.finish().unwrap();
    assert_eq!(send(&mut p, b"1").unwrap(), 1);
    assert_eq!(next(&mut c), (1, b"1".to_vec()));
}
