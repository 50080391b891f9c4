//! Shared-memory channels: real segments, real processes (the `labhub-test-child` `shm-*` roles),
//! SIGKILL mid-operation.

#[path = "shm_bad_input.rs"]
mod bad_input;
#[path = "shm_crash.rs"]
mod crash;
#[path = "shm_model.rs"]
mod model;
#[path = "shm_policies.rs"]
mod policies;
#[path = "shm_pool.rs"]
mod pool;

use std::time::Duration;

use labhub::shm::{
    self, AttachOptions, Backpressure, ChannelConfig, ChannelError, Consumer, FrameMeta, Policy,
    Producer, PublishError, ReadError, StateError, WaitMode,
};

use crate::common::unique;
pub use crate::common::{WATCHDOG, spawn_child};

/// A channel name unique to this test process and call, removed when dropped.
pub struct TestChannel {
    pub name: String,
}

impl TestChannel {
    pub fn new(tag: &str) -> Self {
        Self {
            name: unique(&format!("it-{tag}")),
        }
    }

    /// The segment's file under /dev/shm.
    pub fn path(&self) -> String {
        format!("/dev/shm{}", shm::os_name(&self.name).unwrap())
    }
}

impl Drop for TestChannel {
    fn drop(&mut self) {
        let _ = shm::remove_channel(&self.name);
    }
}

/// The payload pattern the child roles check: 8 bytes of id, then `(id + i) as u8`.
pub fn pattern(id: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    let n = len.min(8);
    v[..n].copy_from_slice(&id.to_le_bytes()[..n]);
    for (i, b) in v.iter_mut().enumerate().skip(8) {
        *b = (id as usize).wrapping_add(i) as u8;
    }
    v
}

pub fn ring(slots: u32, when_full: Backpressure) -> Policy {
    Policy::Ring { slots, when_full }
}

pub fn next(c: &mut Consumer) -> (u64, Vec<u8>) {
    let f = c.next(Some(WATCHDOG)).expect("a frame");
    let id = f.frame_id();
    let v = f.copy_to_vec().expect("a whole frame");
    (id, v)
}

// ---- names, permissions, attach ----------------------------------------------------------------

#[test]
fn channel_names_are_validated_with_a_typed_error() {
    let long = "x".repeat(129);
    for bad in ["", "a/b", "a b", "..", "é", long.as_str(), "name\0"] {
        let err = Producer::create(bad, ChannelConfig::new(Policy::Latest, 64)).unwrap_err();
        assert!(
            matches!(err, ChannelError::InvalidName { .. }),
            "{bad:?}: {err}"
        );
        let err = Consumer::attach(bad, AttachOptions::default()).unwrap_err();
        assert!(
            matches!(err, ChannelError::InvalidName { .. }),
            "{bad:?}: {err}"
        );
    }
    let ok = "x".repeat(128);
    assert!(shm::os_name(&ok).is_ok());
    assert!(shm::os_name("cam0.raw-1_A").is_ok());
}

#[test]
fn the_segment_is_owner_only_and_named_after_the_user_and_channel() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let ch = TestChannel::new("perm");
    // A permissive umask must not widen the mode.
    // SAFETY: umask only changes this process's creation mask.
    let old = unsafe { libc::umask(0) };
    let p = Producer::create(&ch.name, ChannelConfig::new(Policy::Latest, 64));
    // SAFETY: restores the previous mask.
    unsafe { libc::umask(old) };
    let _p = p.unwrap();
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    assert_eq!(
        shm::os_name(&ch.name).unwrap(),
        format!("/labhub.{uid}.{}", ch.name)
    );
    let md = std::fs::metadata(ch.path()).unwrap();
    assert_eq!(md.permissions().mode() & 0o777, 0o600);
    assert_eq!(md.uid(), uid);
    assert_eq!(md.len() % 4096, 0, "sizes are page-aligned");
}

#[test]
fn attaching_to_a_missing_channel_is_not_found() {
    let ch = TestChannel::new("missing");
    let err = Consumer::attach(&ch.name, AttachOptions::default()).unwrap_err();
    assert!(matches!(err, ChannelError::NotFound { .. }), "{err}");
}

#[test]
fn a_frame_published_in_one_process_reaches_a_consumer_in_another_with_its_metadata() {
    let ch = TestChannel::new("xproc");
    let mut p = Producer::create(
        &ch.name,
        ChannelConfig::new(ring(4, Backpressure::Fail), 4096),
    )
    .unwrap();
    let mut child = spawn_child("shm-consumer-meta", &[&ch.name]);
    child.expect("attached");
    let data: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let meta = FrameMeta::new(0xfeed, &[30, 100]).unwrap();
    assert_eq!(p.publish_bytes(&data, &meta).unwrap(), 0);
    let sum: u64 = data.iter().map(|&b| u64::from(b)).sum();
    assert_eq!(
        child.expect("frame"),
        format!("frame 0 len 3000 type 0xfeed dims [30, 100] sum {sum}")
    );
    child.wait_success();
}

#[test]
fn frames_arrive_in_order_with_their_metadata_in_place() {
    let ch = TestChannel::new("order");
    let mut p = Producer::create(
        &ch.name,
        ChannelConfig::new(ring(8, Backpressure::Fail), 256),
    )
    .unwrap();
    let mut c = Consumer::attach(&ch.name, AttachOptions::default()).unwrap();
    for i in 0..5u64 {
        let mut w = p.begin_publish().unwrap();
        assert_eq!(w.frame_id(), i);
        w.data_mut()[..16].copy_from_slice(&pattern(i, 16));
        w.set_len(16).unwrap();
        w.set_type_hash(7);
        w.set_timestamp_ns(1000 + i);
        w.set_dims(&[4, 4]).unwrap();
        assert_eq!(w.publish().unwrap(), i);
    }
    for i in 0..5u64 {
        let f = c.next(Some(WATCHDOG)).unwrap();
        assert_eq!(f.frame_id(), i);
        assert_eq!(f.data(), pattern(i, 16).as_slice());
        assert_eq!(f.meta().type_hash, 7);
        assert_eq!(f.meta().timestamp_ns, 1000 + i);
        assert_eq!(f.meta().dims(), &[4, 4]);
        f.finish().unwrap();
    }
    assert!(matches!(
        c.next(Some(Duration::from_millis(10))),
        Err(ReadError::Timeout)
    ));
    let s = p.stats();
    assert_eq!(
        (s.published, s.dropped, s.next_frame_id, s.consumers),
        (5, 0, 5, 1)
    );
}

#[test]
fn a_consumer_waits_for_a_frame_published_later_in_blocking_and_spin_modes() {
    for mode in [
        WaitMode::Blocking,
        WaitMode::Spin {
            spin_for: Duration::from_millis(1),
        },
    ] {
        let ch = TestChannel::new("wait");
        let mut p = Producer::create(&ch.name, ChannelConfig::new(Policy::Latest, 64)).unwrap();
        let mut c = Consumer::attach(&ch.name, AttachOptions::default().mode(mode)).unwrap();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            p.publish_bytes(b"late", &FrameMeta::default()).unwrap();
            p
        });
        let (id, data) = next(&mut c);
        assert_eq!((id, data.as_slice()), (0, &b"late"[..]));
        drop(t.join().unwrap());
    }
}

/// Every frame of a ping-pong between two processes must wake its sleeping reader promptly. A
/// lost wake-up (the commit / sleep handshake, see `commit_fence_code`) would leave the reader
/// asleep until its 500 ms heartbeat nap ends, far beyond the bound asserted here.
#[test]
fn a_sleeping_consumer_in_another_process_is_woken_by_every_frame() {
    const FRAMES: u64 = 2000;
    /// Below the 500 ms nap a sleeper takes without a wake-up; far above a scheduling delay.
    const LOST_WAKE_UP: Duration = Duration::from_millis(450);
    let ping = TestChannel::new("ping");
    let pong = TestChannel::new("pong");
    let ring = ring(
        4,
        Backpressure::Block {
            timeout: Duration::from_secs(2),
        },
    );
    let mut p = Producer::create(&ping.name, ChannelConfig::new(ring, 64)).unwrap();
    let mut echo = spawn_child("shm-echo", &[&ping.name, &pong.name, &FRAMES.to_string()]);
    echo.expect("ready");
    let mut c = Consumer::attach(&pong.name, AttachOptions::default()).unwrap();
    for i in 0..FRAMES {
        if i % 2 == 1 {
            // Not for synchronisation: leaves the echo time to fall asleep in its futex wait,
            // the path under test (without it most frames are caught while polling).
            std::thread::sleep(Duration::from_micros(200));
        }
        let start = std::time::Instant::now();
        p.publish_bytes(&i.to_le_bytes(), &FrameMeta::default())
            .unwrap();
        let f = c.next(Some(LOST_WAKE_UP)).unwrap_or_else(|e| {
            panic!(
                "frame {i}: {e} after {:?}: a wake-up was lost",
                start.elapsed()
            )
        });
        assert_eq!(f.data(), i.to_le_bytes(), "echo of frame {i}");
        f.finish().unwrap();
    }
    echo.wait_success();
}

#[test]
fn oversized_frames_and_too_many_dimensions_are_typed_errors() {
    let ch = TestChannel::new("big");
    let mut p = Producer::create(&ch.name, ChannelConfig::new(Policy::Latest, 64)).unwrap();
    let err = p
        .publish_bytes(&[0; 65], &FrameMeta::default())
        .unwrap_err();
    assert_eq!(
        err,
        PublishError::TooLarge {
            size: 65,
            capacity: 64
        }
    );
    assert!(matches!(
        FrameMeta::new(0, &[1, 2, 3, 4, 5]),
        Err(PublishError::TooManyDims { ndim: 5 })
    ));
    assert_eq!(p.next_frame_id(), 0, "no frame id was used");
}

#[test]
fn dropping_a_write_guard_abandons_the_frame_without_using_a_frame_id() {
    let ch = TestChannel::new("abandon");
    let mut p = Producer::create(
        &ch.name,
        ChannelConfig::new(ring(2, Backpressure::Fail), 64),
    )
    .unwrap();
    let mut c = Consumer::attach(&ch.name, AttachOptions::default()).unwrap();
    p.publish_bytes(b"zero", &FrameMeta::default()).unwrap();
    {
        let mut w = p.begin_publish().unwrap();
        w.data_mut()[..4].copy_from_slice(b"junk");
    }
    assert_eq!(p.next_frame_id(), 1);
    p.publish_bytes(b"one", &FrameMeta::default()).unwrap();
    assert_eq!(next(&mut c), (0, b"zero".to_vec()));
    assert_eq!(next(&mut c), (1, b"one".to_vec()));
    assert_eq!(p.stats().published, 2);
}

// ---- producer restart ------------------------------------------------------------------------

#[test]
fn dropping_the_producer_keeps_the_channel_and_a_new_producer_continues_the_frame_ids() {
    let ch = TestChannel::new("restart");
    let cfg = ChannelConfig::new(ring(4, Backpressure::Fail), 64);
    let mut p = Producer::create(&ch.name, cfg.clone()).unwrap();
    let mut c = Consumer::attach(&ch.name, AttachOptions::default()).unwrap();
    p.publish_bytes(b"a", &FrameMeta::default()).unwrap();
    p.publish_bytes(b"b", &FrameMeta::default()).unwrap();
    drop(p);
    assert!(!c.producer_alive());
    assert_eq!(
        next(&mut c),
        (0, b"a".to_vec()),
        "frames survive the producer"
    );
    let mut p = Producer::create(&ch.name, cfg).unwrap();
    assert!(c.producer_alive());
    assert_eq!(p.next_frame_id(), 2);
    p.publish_bytes(b"c", &FrameMeta::default()).unwrap();
    assert_eq!(next(&mut c), (1, b"b".to_vec()));
    assert_eq!(next(&mut c), (2, b"c".to_vec()));
}

#[test]
fn a_second_producer_is_refused_while_the_first_lives_in_another_process() {
    let ch = TestChannel::new("busy");
    let mut child = spawn_child("shm-producer", &[&ch.name, "double", "64", "3"]);
    child.expect("created");
    child.expect("published 3");
    let err = Producer::create(&ch.name, ChannelConfig::new(Policy::DoubleBuffer, 64)).unwrap_err();
    match err {
        ChannelError::ChannelBusy { pid, .. } => assert_eq!(pid, child.pid()),
        other => panic!("expected ChannelBusy, got {other}"),
    }
    // Also within one process.
    let ch2 = TestChannel::new("busy2");
    let _p = Producer::create(&ch2.name, ChannelConfig::new(Policy::Latest, 64)).unwrap();
    let err = Producer::create(&ch2.name, ChannelConfig::new(Policy::Latest, 64)).unwrap_err();
    assert!(matches!(err, ChannelError::ChannelBusy { .. }), "{err}");
}

#[test]
fn reattaching_with_another_configuration_names_the_differing_field() {
    let ch = TestChannel::new("mismatch");
    drop(
        Producer::create(
            &ch.name,
            ChannelConfig::new(ring(4, Backpressure::Fail), 64).flex_size(128),
        )
        .unwrap(),
    );
    let cases = [
        (ChannelConfig::new(Policy::Latest, 64), "policy"),
        (
            ChannelConfig::new(ring(8, Backpressure::Fail), 64),
            "slot_count",
        ),
        (
            ChannelConfig::new(ring(4, Backpressure::DropOldest), 64),
            "backpressure",
        ),
        (
            ChannelConfig::new(ring(4, Backpressure::Fail), 65).flex_size(128),
            "slot_size",
        ),
        (
            ChannelConfig::new(ring(4, Backpressure::Fail), 64),
            "flex_size",
        ),
        (
            ChannelConfig::new(ring(4, Backpressure::Fail), 64)
                .flex_size(128)
                .checksum(true),
            "checksum",
        ),
        (
            ChannelConfig::new(ring(4, Backpressure::Fail), 64)
                .flex_size(128)
                .secret(5u64),
            "secret",
        ),
    ];
    for (cfg, field) in cases {
        match Producer::create(&ch.name, cfg).unwrap_err() {
            ChannelError::ConfigMismatch { field: f, .. } => assert_eq!(f, field),
            other => panic!("expected ConfigMismatch on {field}, got {other}"),
        }
    }
    // Block with another timeout is the same rule.
    let p = Producer::create(
        &ch.name,
        ChannelConfig::new(ring(4, Backpressure::Fail), 64).flex_size(128),
    );
    assert!(p.is_ok());
}

#[test]
fn remove_channel_removes_it_and_a_second_removal_is_not_found() {
    let ch = TestChannel::new("remove");
    let p = Producer::create(&ch.name, ChannelConfig::new(Policy::Latest, 64)).unwrap();
    drop(p);
    shm::remove_channel(&ch.name).unwrap();
    assert!(!std::path::Path::new(&ch.path()).exists());
    assert!(matches!(
        shm::remove_channel(&ch.name),
        Err(ChannelError::NotFound { .. })
    ));
    assert!(matches!(
        Consumer::attach(&ch.name, AttachOptions::default()),
        Err(ChannelError::NotFound { .. })
    ));
}

// ---- access -----------------------------------------------------------------------------------

#[test]
fn a_wrong_or_missing_secret_is_refused_and_the_plaintext_is_not_stored() {
    let ch = TestChannel::new("secret");
    let secret = b"correct horse battery staple";
    let _p = Producer::create(
        &ch.name,
        ChannelConfig::new(Policy::Latest, 64).secret(&secret[..]),
    )
    .unwrap();
    for opts in [
        AttachOptions::default(),
        AttachOptions::default().secret(&b"wrong"[..]),
    ] {
        let err = Consumer::attach(&ch.name, opts).unwrap_err();
        assert!(matches!(err, ChannelError::WrongSecret { .. }), "{err}");
    }
    Consumer::attach(&ch.name, AttachOptions::default().secret(&secret[..])).unwrap();
    let bytes = std::fs::read(ch.path()).unwrap();
    assert!(
        !bytes.windows(secret.len()).any(|w| w == secret),
        "plaintext secret in the segment"
    );
    // A u64 secret works the same way.
    let ch2 = TestChannel::new("secret64");
    let _p2 = Producer::create(
        &ch2.name,
        ChannelConfig::new(Policy::Latest, 64).secret(42u64),
    )
    .unwrap();
    assert!(Consumer::attach(&ch2.name, AttachOptions::default().secret(43u64)).is_err());
    Consumer::attach(&ch2.name, AttachOptions::default().secret(42u64)).unwrap();
}

#[test]
fn an_expected_size_that_disagrees_with_the_header_is_refused() {
    let ch = TestChannel::new("expsize");
    let _p = Producer::create(&ch.name, ChannelConfig::new(Policy::Latest, 64)).unwrap();
    let c = Consumer::attach(&ch.name, AttachOptions::default()).unwrap();
    let size = c.segment_size();
    Consumer::attach(&ch.name, AttachOptions::default().expected_size(size)).unwrap();
    match Consumer::attach(
        &ch.name,
        AttachOptions::default().expected_size(size + 4096),
    )
    .unwrap_err()
    {
        ChannelError::SizeMismatch {
            expected, found, ..
        } => assert_eq!((expected, found), (size + 4096, size)),
        other => panic!("{other}"),
    }
}

#[test]
fn a_full_consumer_table_refuses_the_next_consumer_with_a_clear_error() {
    let ch = TestChannel::new("table");
    let _p = Producer::create(&ch.name, ChannelConfig::new(Policy::Latest, 64)).unwrap();
    let mut held: Vec<Consumer> = (0..16)
        .map(|_| Consumer::attach(&ch.name, AttachOptions::default()).unwrap())
        .collect();
    match Consumer::attach(&ch.name, AttachOptions::default()).unwrap_err() {
        ChannelError::ConsumerTableFull { capacity, .. } => assert_eq!(capacity, 16),
        other => panic!("{other}"),
    }
    held.pop();
    Consumer::attach(&ch.name, AttachOptions::default()).unwrap();
}

#[test]
fn a_corrupted_frame_fails_its_checksum() {
    let ch = TestChannel::new("checksum");
    let mut p = Producer::create(
        &ch.name,
        ChannelConfig::new(ring(2, Backpressure::Fail), 4096).checksum(true),
    )
    .unwrap();
    let mut c = Consumer::attach(&ch.name, AttachOptions::default()).unwrap();
    p.publish_bytes(&[7u8; 1000], &FrameMeta::default())
        .unwrap();
    assert_eq!(next(&mut c).1, vec![7u8; 1000], "an intact frame passes");
    p.publish_bytes(&[9u8; 1000], &FrameMeta::default())
        .unwrap();
    // Flip a payload byte of frame 1 behind the library's back.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(ch.path())
        .unwrap();
    // SAFETY: a test-only mapping of our own segment; nobody writes it concurrently.
    let mut map = unsafe { memmap2::MmapMut::map_mut(&file) }.unwrap();
    let pos = map
        .windows(1000)
        .rposition(|w| w.iter().all(|&b| b == 9))
        .unwrap();
    map[pos + 500] ^= 0xff;
    let f = c.next(Some(WATCHDOG)).unwrap();
    assert_eq!(f.frame_id(), 1);
    assert!(matches!(
        f.copy_to_vec(),
        Err(ReadError::ChecksumMismatch { frame_id: 1, .. })
    ));
}

// ---- flexible zone ------------------------------------------------------------------------------

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Clone)]
struct Settings {
    exposure_us: u64,
    label: String,
    gains: Vec<u32>,
}

#[test]
fn the_state_is_written_and_read_with_a_version() {
    let ch = TestChannel::new("state");
    let mut p = Producer::create(
        &ch.name,
        ChannelConfig::new(Policy::Latest, 64).flex_size(256),
    )
    .unwrap();
    let c = Consumer::attach(&ch.name, AttachOptions::default()).unwrap();
    assert!(c.read_state::<Settings>().unwrap().is_none());
    let s = Settings {
        exposure_us: 100,
        label: "cam0".into(),
        gains: vec![1, 2],
    };
    assert_eq!(p.write_state(&s).unwrap(), 1);
    assert_eq!(c.read_state::<Settings>().unwrap(), Some((1, s.clone())));
    let s2 = Settings {
        exposure_us: 200,
        ..s
    };
    assert_eq!(p.write_state(&s2).unwrap(), 2);
    assert_eq!(c.read_state::<Settings>().unwrap(), Some((2, s2)));
    let huge = Settings {
        exposure_us: 0,
        label: "x".repeat(300),
        gains: vec![],
    };
    assert!(matches!(
        p.write_state(&huge),
        Err(StateError::TooLarge { capacity: 256, .. })
    ));
    assert!(matches!(
        c.read_state::<Vec<String>>(),
        Err(StateError::Deserialize(_))
    ));
}

#[test]
fn the_state_can_be_messagepack() {
    let ch = TestChannel::new("msgpack");
    let cfg = ChannelConfig::new(Policy::Latest, 64)
        .flex_size(256)
        .state_format(shm::StateFormat::MessagePack);
    let mut p = Producer::create(&ch.name, cfg).unwrap();
    let c = Consumer::attach(&ch.name, AttachOptions::default()).unwrap();
    let s = Settings {
        exposure_us: 5,
        label: "mp".into(),
        gains: vec![3],
    };
    p.write_state(&s).unwrap();
    assert_eq!(c.read_state::<Settings>().unwrap(), Some((1, s)));
}

#[test]
fn a_reader_never_sees_a_half_written_state() {
    let ch = TestChannel::new("statetear");
    let mut p = Producer::create(
        &ch.name,
        ChannelConfig::new(Policy::Latest, 64).flex_size(8192),
    )
    .unwrap();
    p.write_state(&vec![0u64; 10]).unwrap();
    let name = ch.name.clone();
    let reader = std::thread::spawn(move || {
        let c = Consumer::attach(&name, AttachOptions::default()).unwrap();
        let mut reads = 0;
        let mut last = 0;
        while last < 2000 {
            let (v, s) = c.read_state::<Vec<u64>>().unwrap().unwrap();
            // Every element equals the version - 1 and the length is 10 + it modulo 50.
            let k = v - 1;
            assert_eq!(s.len() as u64, 10 + k % 50, "torn state at version {v}");
            assert!(s.iter().all(|&x| x == k), "torn state at version {v}");
            assert!(v >= last);
            last = v;
            reads += 1;
        }
        reads
    });
    for k in 1..=2000u64 {
        p.write_state(&vec![k; (10 + k % 50) as usize]).unwrap();
    }
    assert!(reader.join().unwrap() > 0);
}

#[test]
fn invalid_configurations_are_typed_errors_naming_the_field() {
    let ch = TestChannel::new("badcfg");
    let cases = [
        (ChannelConfig::new(Policy::Latest, 0), "slot_size"),
        (
            ChannelConfig::new(ring(0, Backpressure::Fail), 64),
            "slot_count",
        ),
        (
            ChannelConfig::new(ring(100_000, Backpressure::Fail), 64),
            "slot_count",
        ),
        (ChannelConfig::new(Policy::Latest, u64::MAX), "slot_size"),
        (
            ChannelConfig::new(ring(65536, Backpressure::Fail), 1 << 30),
            "total_size",
        ),
    ];
    for (cfg, field) in cases {
        match Producer::create(&ch.name, cfg).unwrap_err() {
            ChannelError::InvalidConfig { field: f, .. } => assert_eq!(f, field),
            other => panic!("expected InvalidConfig on {field}, got {other}"),
        }
    }
    assert!(
        !std::path::Path::new(&ch.path()).exists(),
        "nothing was created"
    );
}

#[test]
fn a_consumer_whose_table_entry_was_taken_away_is_told_it_was_evicted() {
    let ch = TestChannel::new("evicted");
    let mut p = Producer::create(&ch.name, ChannelConfig::new(Policy::Latest, 64)).unwrap();
    let mut c = Consumer::attach(&ch.name, AttachOptions::default()).unwrap();
    p.publish_bytes(b"x", &FrameMeta::default()).unwrap();
    // Free entry 0 behind the library's back, as a reaper that judged it dead would.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(ch.path())
        .unwrap();
    // SAFETY: a test-only mapping of our own segment.
    let mut map = unsafe { memmap2::MmapMut::map_mut(&file) }.unwrap();
    map[576..584].fill(0);
    assert!(matches!(
        c.next(Some(WATCHDOG)),
        Err(ReadError::Evicted { .. })
    ));
    assert!(matches!(c.latest(), Err(ReadError::Evicted { .. })));
}
