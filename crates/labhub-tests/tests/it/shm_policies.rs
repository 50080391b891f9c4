//! Policies: Latest, DoubleBuffer, and the Ring's backpressure rules, in one process and across
//! processes.

use std::time::Duration;

use labhub::shm::{Backpressure, Policy, PublishError, ReadError};

use super::{TestChannel, WATCHDOG, consumer, next, pattern, producer, ring, send, spawn_child};

#[test]
fn latest_reports_a_frame_overwritten_while_it_was_read() {
    let ch = TestChannel::new("latest");
    let mut p = producer(&ch.name, Policy::Latest, 64);
    let mut c = consumer(&ch.name);
    send(&mut p, b"first").unwrap();
    let f = c.next(Some(WATCHDOG)).unwrap();
    assert!(
        f.held().is_none(),
        "a lossy frame is never handed out as a slice"
    );
    assert_eq!(f.read(|s| s.get(0)), Ok(Some(b'f')));
    send(&mut p, b"secnd").unwrap();
    // Whatever is read now is reported, in the type, as not this frame.
    assert_eq!(
        f.read(|s| s.get(0)).unwrap_err(),
        labhub::shm::Overwritten { frame_id: 0 }
    );
    assert!(matches!(
        f.to_vec(),
        Err(ReadError::Overwritten { frame_id: 0 })
    ));
    assert_eq!(f.finish(), Err(ReadError::Overwritten { frame_id: 0 }));
    assert_eq!(next(&mut c), (1, b"secnd".to_vec()));
    // The first read got the frame whole, so it is not counted as lost.
    assert_eq!((c.missed(), p.stats().overwritten), (0, 0));
}

#[test]
fn a_frame_dropped_unread_after_it_was_overwritten_counts_as_missed() {
    let ch = TestChannel::new("latest-missed");
    let mut p = producer(&ch.name, Policy::Latest, 64);
    let mut c = consumer(&ch.name);
    send(&mut p, b"first").unwrap();
    let f = c.next(Some(WATCHDOG)).unwrap();
    send(&mut p, b"secnd").unwrap();
    drop(f);
    assert_eq!(c.missed(), 1);
    assert_eq!(p.stats().overwritten, 1);
}

#[test]
fn latest_gives_the_newest_frame_and_a_slow_reader_skips_the_rest() {
    let ch = TestChannel::new("latest2");
    let mut p = producer(&ch.name, Policy::Latest, 64);
    let mut c = consumer(&ch.name);
    assert!(c.latest().unwrap().is_none());
    for i in 0..5u64 {
        send(&mut p, &pattern(i, 16)).unwrap();
    }
    let f = c.latest().unwrap().unwrap();
    assert_eq!((f.frame_id(), f.to_vec().unwrap()), (4, pattern(4, 16)));
    drop(f);
    send(&mut p, &pattern(5, 16)).unwrap();
    assert_eq!(next(&mut c).0, 5);
}

#[test]
fn double_buffer_keeps_a_frame_whole_for_one_more_frame() {
    let ch = TestChannel::new("double");
    let mut p = producer(&ch.name, Policy::DoubleBuffer, 64);
    let mut c = consumer(&ch.name);
    send(&mut p, b"zero").unwrap();
    let f = c.next(Some(WATCHDOG)).unwrap();
    send(&mut p, b"one").unwrap();
    assert_eq!(f.to_vec().unwrap(), b"zero", "the other buffer was written");
    send(&mut p, b"two").unwrap();
    assert_eq!(f.finish(), Err(ReadError::Overwritten { frame_id: 0 }));
    // Frame 1 is still there; frame 2 follows.
    assert_eq!(next(&mut c), (1, b"one".to_vec()));
    assert_eq!(next(&mut c), (2, b"two".to_vec()));
}

#[test]
fn a_fail_ring_is_full_when_the_slowest_consumer_is_n_frames_behind() {
    let ch = TestChannel::new("fail");
    let mut p = producer(&ch.name, ring(3, Backpressure::Fail), 64);
    let mut fast = consumer(&ch.name);
    let mut slow = consumer(&ch.name);
    for i in 0..3u64 {
        send(&mut p, &pattern(i, 8)).unwrap();
        assert_eq!(next(&mut fast).0, i);
    }
    assert!(matches!(
        send(&mut p, b"x"),
        Err(PublishError::Full { slots: 3, .. })
    ));
    assert_eq!(p.stats().dropped, 1);
    assert_eq!(p.next_frame_id(), 3, "a refused frame uses no id");
    assert_eq!(next(&mut slow).0, 0);
    send(&mut p, &pattern(3, 8)).unwrap();
    // Nobody missed anything.
    for i in 1..4 {
        assert_eq!(next(&mut slow), (i, pattern(i, 8)));
    }
    assert_eq!(next(&mut fast), (3, pattern(3, 8)));
    assert_eq!((fast.missed(), slow.missed()), (0, 0));
}

#[test]
fn a_frame_held_by_a_reader_is_never_overwritten_in_a_lossless_ring() {
    let ch = TestChannel::new("hold");
    let mut p = producer(&ch.name, ring(1, Backpressure::Fail), 64);
    let mut c = consumer(&ch.name);
    send(&mut p, b"held").unwrap();
    let f = c.next(Some(WATCHDOG)).unwrap();
    assert_eq!(f.held(), Some(&b"held"[..]));
    assert!(matches!(
        send(&mut p, b"new"),
        Err(PublishError::Full { .. })
    ));
    assert_eq!(f.held(), Some(&b"held"[..]));
    f.finish().unwrap();
    send(&mut p, b"new").unwrap();
}

#[test]
fn a_blocking_ring_times_out_when_nobody_reads_and_proceeds_when_a_reader_frees_a_slot() {
    let ch = TestChannel::new("block");
    let mut p = producer(
        &ch.name,
        ring(
            2,
            Backpressure::Block {
                timeout: Duration::from_millis(50),
            },
        ),
        64,
    );
    let mut c = consumer(&ch.name);
    send(&mut p, b"0").unwrap();
    send(&mut p, b"1").unwrap();
    assert!(matches!(
        send(&mut p, b"2"),
        Err(PublishError::Timeout { .. })
    ));
    drop(p);
    // A producer with a long timeout blocks until the consumer reads.
    let mut p = producer(
        &ch.name,
        ring(2, Backpressure::Block { timeout: WATCHDOG }),
        64,
    );
    let t = std::thread::spawn(move || {
        send(&mut p, b"2").unwrap();
        p
    });
    assert_eq!(next(&mut c), (0, b"0".to_vec()));
    let _p = t.join().unwrap();
    assert_eq!(next(&mut c), (1, b"1".to_vec()));
    assert_eq!(next(&mut c), (2, b"2".to_vec()));
}

#[test]
fn drop_oldest_never_blocks_counts_drops_and_the_slow_reader_skips_ahead() {
    let ch = TestChannel::new("dropold");
    let mut p = producer(&ch.name, ring(4, Backpressure::DropOldest), 64);
    let mut c = consumer(&ch.name);
    for i in 0..10u64 {
        send(&mut p, &pattern(i, 8)).unwrap();
    }
    assert_eq!(p.stats().dropped, 6);
    for i in 6..10 {
        assert_eq!(next(&mut c), (i, pattern(i, 8)));
    }
    assert_eq!(c.missed(), 6);
}

#[test]
fn a_lossless_ring_delivers_every_frame_to_a_consumer_in_another_process() {
    let ch = TestChannel::new("lossless");
    let mut p = producer(
        &ch.name,
        ring(4, Backpressure::Block { timeout: WATCHDOG }),
        256,
    );
    let frames = 10_000u64;
    let mut child = spawn_child("shm-consumer-verify", &[&ch.name, &frames.to_string()]);
    child.expect("attached");
    for _ in 0..frames {
        let mut w = p.loan().unwrap();
        let id = w.frame_id();
        w.copy_from_slice(&pattern(id, 256));
        w.commit();
    }
    let last = frames - 1;
    assert_eq!(
        child.expect("done"),
        format!("done valid={frames} overwritten=0 missed=0 last={last}")
    );
    child.wait_success();
    assert_eq!(p.stats().dropped, 0);
}

#[test]
fn a_lossy_reader_in_another_process_never_accepts_a_torn_frame() {
    for policy in [
        Policy::Latest,
        Policy::DoubleBuffer,
        ring(2, Backpressure::DropOldest),
    ] {
        let ch = TestChannel::new("torn");
        let mut p = producer(&ch.name, policy, 16 * 1024);
        let frames = 5_000u64;
        let mut child = spawn_child("shm-consumer-verify", &[&ch.name, &frames.to_string()]);
        child.expect("attached");
        for _ in 0..frames {
            let mut w = p.loan().unwrap();
            let id = w.frame_id();
            w.copy_from_slice(&pattern(id, 16 * 1024));
            w.commit();
        }
        // The child checks each whole frame's bytes and fails otherwise.
        let done = child.expect("done");
        child.wait_success();
        assert!(done.ends_with(&format!("last={}", frames - 1)), "{done}");
    }
}

#[test]
fn latest_after_an_abandoned_loan_counts_the_frame_it_destroyed_and_reads_on() {
    let ch = TestChannel::new("latest-abandon");
    let mut p = producer(&ch.name, Policy::Latest, 64);
    let mut c = consumer(&ch.name);
    send(&mut p, b"zero").unwrap();
    // The one slot is emptied by the abandoned loan: frame 0 is gone, not corrupt.
    drop(p.loan().unwrap());
    assert!(matches!(
        c.next(Some(Duration::from_millis(20))),
        Err(ReadError::Timeout)
    ));
    assert_eq!(c.missed(), 1);
    send(&mut p, b"one").unwrap();
    assert_eq!(next(&mut c), (1, b"one".to_vec()));
}
