//! Policies: Latest, DoubleBuffer, and the Ring's backpressure rules, in one process and across
//! processes.

use std::time::Duration;

use labhub::shm::{
    AttachOptions, Backpressure, ChannelConfig, Consumer, FrameMeta, Policy, Producer,
    PublishError, ReadError,
};

use super::{TestChannel, WATCHDOG, next, pattern, ring, spawn_child};

#[test]
fn latest_reports_a_frame_overwritten_while_it_was_held() {
    let ch = TestChannel::new("latest");
    let mut p = Producer::create(&ch.name, ChannelConfig::new(Policy::Latest, 64)).unwrap();
    let mut c = Consumer::attach(&ch.name, AttachOptions::default()).unwrap();
    p.publish_bytes(b"first", &FrameMeta::default()).unwrap();
    let f = c.next(Some(WATCHDOG)).unwrap();
    assert_eq!(f.data(), b"first");
    p.publish_bytes(b"secnd", &FrameMeta::default()).unwrap();
    assert_eq!(f.finish(), Err(ReadError::Overwritten { frame_id: 0 }));
    assert_eq!(next(&mut c), (1, b"secnd".to_vec()));
    assert_eq!(c.missed(), 1);
    assert_eq!(p.stats().overwritten, 1);
}

#[test]
fn latest_gives_the_newest_frame_and_a_slow_reader_skips_the_rest() {
    let ch = TestChannel::new("latest2");
    let mut p = Producer::create(&ch.name, ChannelConfig::new(Policy::Latest, 64)).unwrap();
    let mut c = Consumer::attach(&ch.name, AttachOptions::default()).unwrap();
    assert!(c.latest().unwrap().is_none());
    for i in 0..5u64 {
        p.publish_bytes(&pattern(i, 16), &FrameMeta::default())
            .unwrap();
    }
    let f = c.latest().unwrap().unwrap();
    assert_eq!(
        (f.frame_id(), f.copy_to_vec().unwrap()),
        (4, pattern(4, 16))
    );
    drop(f);
    p.publish_bytes(&pattern(5, 16), &FrameMeta::default())
        .unwrap();
    assert_eq!(next(&mut c).0, 5);
}

#[test]
fn double_buffer_keeps_a_held_frame_whole_for_one_more_frame() {
    let ch = TestChannel::new("double");
    let mut p = Producer::create(&ch.name, ChannelConfig::new(Policy::DoubleBuffer, 64)).unwrap();
    let mut c = Consumer::attach(&ch.name, AttachOptions::default()).unwrap();
    p.publish_bytes(b"zero", &FrameMeta::default()).unwrap();
    let f = c.next(Some(WATCHDOG)).unwrap();
    p.publish_bytes(b"one", &FrameMeta::default()).unwrap();
    assert_eq!(
        f.copy_to_vec().unwrap(),
        b"zero",
        "the other buffer was written"
    );
    p.publish_bytes(b"two", &FrameMeta::default()).unwrap();
    assert_eq!(f.finish(), Err(ReadError::Overwritten { frame_id: 0 }));
    // Frame 1 is still there; frame 2 follows.
    assert_eq!(next(&mut c), (1, b"one".to_vec()));
    assert_eq!(next(&mut c), (2, b"two".to_vec()));
}

#[test]
fn a_fail_ring_is_full_when_the_slowest_consumer_is_n_frames_behind() {
    let ch = TestChannel::new("fail");
    let mut p = Producer::create(
        &ch.name,
        ChannelConfig::new(ring(3, Backpressure::Fail), 64),
    )
    .unwrap();
    let mut fast = Consumer::attach(&ch.name, AttachOptions::default()).unwrap();
    let mut slow = Consumer::attach(&ch.name, AttachOptions::default()).unwrap();
    for i in 0..3u64 {
        p.publish_bytes(&pattern(i, 8), &FrameMeta::default())
            .unwrap();
        assert_eq!(next(&mut fast).0, i);
    }
    assert!(matches!(
        p.publish_bytes(b"x", &FrameMeta::default()),
        Err(PublishError::Full { slots: 3, .. })
    ));
    assert_eq!(p.stats().dropped, 1);
    assert_eq!(p.next_frame_id(), 3, "a refused frame uses no id");
    assert_eq!(next(&mut slow).0, 0);
    p.publish_bytes(&pattern(3, 8), &FrameMeta::default())
        .unwrap();
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
    let mut p = Producer::create(
        &ch.name,
        ChannelConfig::new(ring(1, Backpressure::Fail), 64),
    )
    .unwrap();
    let mut c = Consumer::attach(&ch.name, AttachOptions::default()).unwrap();
    p.publish_bytes(b"held", &FrameMeta::default()).unwrap();
    let f = c.next(Some(WATCHDOG)).unwrap();
    assert!(matches!(
        p.publish_bytes(b"new", &FrameMeta::default()),
        Err(PublishError::Full { .. })
    ));
    f.finish().unwrap();
    p.publish_bytes(b"new", &FrameMeta::default()).unwrap();
}

#[test]
fn a_blocking_ring_times_out_when_nobody_reads_and_proceeds_when_a_reader_frees_a_slot() {
    let ch = TestChannel::new("block");
    let cfg = ChannelConfig::new(
        ring(
            2,
            Backpressure::Block {
                timeout: Duration::from_millis(50),
            },
        ),
        64,
    );
    let mut p = Producer::create(&ch.name, cfg).unwrap();
    let mut c = Consumer::attach(&ch.name, AttachOptions::default()).unwrap();
    p.publish_bytes(b"0", &FrameMeta::default()).unwrap();
    p.publish_bytes(b"1", &FrameMeta::default()).unwrap();
    assert!(matches!(
        p.publish_bytes(b"2", &FrameMeta::default()),
        Err(PublishError::Timeout { .. })
    ));
    drop(p);
    // A producer with a long timeout blocks until the consumer reads.
    let cfg = ChannelConfig::new(ring(2, Backpressure::Block { timeout: WATCHDOG }), 64);
    let mut p = Producer::create(&ch.name, cfg).unwrap();
    let t = std::thread::spawn(move || {
        p.publish_bytes(b"2", &FrameMeta::default()).unwrap();
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
    let mut p = Producer::create(
        &ch.name,
        ChannelConfig::new(ring(4, Backpressure::DropOldest), 64),
    )
    .unwrap();
    let mut c = Consumer::attach(&ch.name, AttachOptions::default()).unwrap();
    for i in 0..10u64 {
        p.publish_bytes(&pattern(i, 8), &FrameMeta::default())
            .unwrap();
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
    let cfg = ChannelConfig::new(ring(4, Backpressure::Block { timeout: WATCHDOG }), 256);
    let mut p = Producer::create(&ch.name, cfg).unwrap();
    let frames = 10_000u64;
    let mut child = spawn_child("shm-consumer-verify", &[&ch.name, &frames.to_string()]);
    child.expect("attached");
    for _ in 0..frames {
        let mut w = p.begin_publish().unwrap();
        let id = w.frame_id();
        w.data_mut().copy_from_slice(&pattern(id, 256));
        w.publish().unwrap();
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
    for policy in [Policy::Latest, Policy::DoubleBuffer] {
        let ch = TestChannel::new("torn");
        let mut p = Producer::create(&ch.name, ChannelConfig::new(policy, 16 * 1024)).unwrap();
        let frames = 5_000u64;
        let mut child = spawn_child("shm-consumer-verify", &[&ch.name, &frames.to_string()]);
        child.expect("attached");
        for _ in 0..frames {
            let mut w = p.begin_publish().unwrap();
            let id = w.frame_id();
            w.data_mut().copy_from_slice(&pattern(id, 16 * 1024));
            w.publish().unwrap();
        }
        // The child checks each validated frame's bytes and fails otherwise.
        let done = child.expect("done");
        child.wait_success();
        assert!(done.ends_with(&format!("last={}", frames - 1)), "{done}");
    }
}
