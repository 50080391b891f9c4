//! Shared-memory channels: real segments, real processes (the `labhub-test-child` `shm-*` roles),
//! SIGKILL and SIGSTOP mid-operation.

#[path = "shm_bad_input.rs"]
mod bad_input;
#[path = "shm_crash.rs"]
mod crash;
#[path = "shm_hardening.rs"]
mod hardening;
#[path = "shm_model.rs"]
mod model;
#[path = "shm_policies.rs"]
mod policies;
#[path = "shm_pool.rs"]
mod pool;
#[path = "shm_typed.rs"]
mod typed;

use std::time::Duration;

use labhub::name::ChannelName;
use labhub::shm::{
    self, Backpressure, Channel, ChannelError, Consumer, Policy, Producer, PublishError, ReadError,
    StateError, WaitMode,
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

    /// The segment's OS name.
    pub fn segment_name(&self) -> String {
        ChannelName::new(self.name.as_str()).unwrap().segment_name()
    }

    /// The segment's file under /dev/shm.
    pub fn path(&self) -> String {
        format!("/dev/shm{}", self.segment_name())
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

/// A producer of a byte channel with `policy` and frames of up to `size` bytes.
pub fn producer(name: &str, policy: Policy, size: u64) -> Producer<u8> {
    Channel::new(name)
        .policy(policy)
        .bytes(size)
        .create()
        .unwrap()
}

/// A consumer of the byte channel `name`, whatever its size.
pub fn consumer(name: &str) -> Consumer<u8> {
    Channel::new(name).element::<u8>().open().unwrap()
}

/// Publishes `data` as one byte frame.
pub fn send(p: &mut Producer<u8>, data: &[u8]) -> Result<u64, PublishError> {
    p.publish(data, &[data.len() as u64])
}

pub fn next(c: &mut Consumer<u8>) -> (u64, Vec<u8>) {
    let f = c.next(Some(WATCHDOG)).expect("a frame");
    let id = f.frame_id();
    let v = f.to_vec().expect("a whole frame");
    (id, v)
}

/// Opens the live segment of `ch` for writing, as a foreign (hostile or buggy) process would.
pub fn scribble(ch: &TestChannel) -> memmap2::MmapMut {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(ch.path())
        .unwrap();
    // SAFETY: a shared mapping of a file this test owns; other mappings see only atomic-sized
    // plain writes, which the library treats as untrusted.
    unsafe { memmap2::MmapMut::map_mut(&f).unwrap() }
}

pub fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

pub fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

pub fn get_u64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

/// Offsets of the layout (docs/SHM_LAYOUT.md), for tests that write into a live segment.
pub mod at {
    /// The control region's size: a named segment holds it last, after the data region.
    pub const CONTROL_SIZE: usize = 4096;
    /// The slot descriptors.
    pub const DESCRIPTORS: usize = 512;
    /// Header: the commit position.
    pub const COMMIT_POS: usize = 320;
    /// Header: the flexible-zone version.
    pub const FLEX_VERSION: usize = 232;
    /// Header: the commit fence code.
    pub const COMMIT_FENCE: usize = 240;
    /// Bytes of one consumer-table entry.
    pub const ENTRY: usize = 128;
    /// The control region of a named segment mapped whole (`len` bytes).
    pub const fn control(len: usize) -> usize {
        len - CONTROL_SIZE
    }
    /// Control header: the frames consumers lost to overwrites.
    pub const fn overwritten(len: usize) -> usize {
        control(len) + 144
    }
    /// The consumer table.
    pub const fn consumers(len: usize) -> usize {
        control(len) + 384
    }
    /// Consumer entry `i`'s start time.
    pub const fn entry_start_time(len: usize, i: usize) -> usize {
        consumers(len) + ENTRY * i + 8
    }
    /// Consumer entry `i`'s state word.
    pub const fn entry_state(len: usize, i: usize) -> usize {
        consumers(len) + ENTRY * i
    }
}

// ---- names, permissions, attach ----------------------------------------------------------------

#[test]
fn channel_names_are_validated_with_a_typed_error() {
    let long = "x".repeat(129);
    for bad in ["", "a/b", "a b", "..", "é", long.as_str(), "name\0"] {
        let err = Channel::new(bad)
            .policy(Policy::Latest)
            .bytes(64)
            .create()
            .unwrap_err();
        assert!(
            matches!(err, ChannelError::InvalidName { .. }),
            "{bad:?}: {err}"
        );
        let err = Channel::new(bad).open().unwrap_err();
        assert!(
            matches!(err, ChannelError::InvalidName { .. }),
            "{bad:?}: {err}"
        );
    }
    assert!(ChannelName::new("x".repeat(128)).is_ok());
    assert!(ChannelName::new("cam0.raw-1_A").is_ok());
}

#[test]
fn the_segment_is_owner_only_and_named_after_the_user_and_channel() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let ch = TestChannel::new("perm");
    // A permissive umask must not widen the mode.
    // SAFETY: umask only changes this process's creation mask.
    let old = unsafe { libc::umask(0) };
    let p = Channel::new(&ch.name)
        .policy(Policy::Latest)
        .bytes(64)
        .create();
    // SAFETY: restores the previous mask.
    unsafe { libc::umask(old) };
    let _p = p.unwrap();
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    assert_eq!(ch.segment_name(), format!("/labhub.{uid}.{}", ch.name));
    let md = std::fs::metadata(ch.path()).unwrap();
    assert_eq!(md.permissions().mode() & 0o777, 0o600);
    assert_eq!(md.uid(), uid);
    assert_eq!(md.len() % 4096, 0, "sizes are page-aligned");
}

#[test]
fn attaching_to_a_missing_channel_is_not_found() {
    let ch = TestChannel::new("missing");
    let err = Channel::new(&ch.name).open().unwrap_err();
    assert!(matches!(err, ChannelError::NotFound { .. }), "{err}");
}

#[test]
fn a_frame_published_in_one_process_reaches_a_consumer_in_another_with_its_shape() {
    let ch = TestChannel::new("xproc");
    let mut p = Channel::new(&ch.name)
        .policy(ring(4, Backpressure::Fail))
        .frames::<u16>(&[30, 100])
        .create()
        .unwrap();
    let mut child = spawn_child("shm-consumer-meta", &[&ch.name]);
    child.expect("attached");
    let data: Vec<u16> = (0..3000u16).map(|i| i % 251).collect();
    let mut slot = p.loan().unwrap();
    slot.copy_from_slice(&data);
    slot.set_timestamp_ns(1234);
    assert_eq!(slot.commit(), 0);
    let sum: u64 = data.iter().map(|&x| u64::from(x)).sum();
    assert_eq!(
        child.expect("frame"),
        format!("frame 0 element u16 shape [30, 100] len 3000 ts 1234 sum {sum}")
    );
    child.wait_success();
}

#[test]
fn frames_arrive_in_order_with_their_shape_and_timestamp_in_place() {
    let ch = TestChannel::new("order");
    let mut p = Channel::new(&ch.name)
        .policy(ring(8, Backpressure::Fail))
        .frames::<u8>(&[4, 64])
        .create()
        .unwrap();
    let mut c = Channel::new(&ch.name).element::<u8>().open().unwrap();
    for i in 0..5u64 {
        let mut w = p.loan_shape(&[4, 4]).unwrap();
        assert_eq!(w.frame_id(), i);
        assert_eq!(w.len(), 16, "the loan is as long as the frame");
        w.copy_from_slice(&pattern(i, 16));
        w.set_timestamp_ns(1000 + i);
        assert_eq!(w.commit(), i);
    }
    for i in 0..5u64 {
        let f = c.next(Some(WATCHDOG)).unwrap();
        assert_eq!(f.frame_id(), i);
        assert_eq!(f.held(), Some(pattern(i, 16).as_slice()));
        assert_eq!(f.timestamp_ns(), 1000 + i);
        assert_eq!(f.shape(), &[4, 4]);
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
        let mut p = producer(&ch.name, Policy::Latest, 64);
        let mut c = Channel::new(&ch.name)
            .element::<u8>()
            .wait_mode(mode)
            .open()
            .unwrap();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            send(&mut p, b"late").unwrap();
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
    let mut p = producer(&ping.name, ring, 64);
    let mut echo = spawn_child("shm-echo", &[&ping.name, &pong.name, &FRAMES.to_string()]);
    echo.expect("ready");
    let mut c = consumer(&pong.name);
    for i in 0..FRAMES {
        if i % 2 == 1 {
            // Not for synchronisation: leaves the echo time to fall asleep in its futex wait,
            // the path under test (without it most frames are caught while polling).
            std::thread::sleep(Duration::from_micros(200));
        }
        let start = std::time::Instant::now();
        send(&mut p, &i.to_le_bytes()).unwrap();
        let f = c.next(Some(LOST_WAKE_UP)).unwrap_or_else(|e| {
            panic!(
                "frame {i}: {e} after {:?}: a wake-up was lost",
                start.elapsed()
            )
        });
        assert_eq!(f.held(), Some(&i.to_le_bytes()[..]), "echo of frame {i}");
        f.finish().unwrap();
    }
    echo.wait_success();
}

#[test]
fn shapes_beyond_the_largest_and_wrong_lengths_are_typed_errors() {
    let ch = TestChannel::new("big");
    let mut p = Channel::new(&ch.name)
        .policy(Policy::Latest)
        .frames::<f32>(&[8, 8])
        .create()
        .unwrap();
    for shape in [&[9u64, 8][..], &[8, 9], &[64], &[8, 8, 1]] {
        assert_eq!(
            p.loan_shape(shape).unwrap_err(),
            PublishError::ShapeOutOfRange {
                shape: shape.to_vec(),
                max: vec![8, 8]
            }
        );
    }
    assert_eq!(
        p.publish(&[0.0; 65], &[8, 8]).unwrap_err(),
        PublishError::LengthMismatch {
            shape: vec![8, 8],
            expected: 64,
            found: 65
        }
    );
    assert_eq!(p.next_frame_id(), 0, "no frame id was used");
}

#[test]
fn dropping_a_loan_abandons_the_frame_without_using_a_frame_id() {
    let ch = TestChannel::new("abandon");
    let mut p = producer(&ch.name, ring(2, Backpressure::Fail), 64);
    let mut c = consumer(&ch.name);
    send(&mut p, b"zero").unwrap();
    {
        let mut w = p.loan_shape(&[4]).unwrap();
        w.copy_from_slice(b"junk");
    }
    assert_eq!(p.next_frame_id(), 1);
    send(&mut p, b"one").unwrap();
    assert_eq!(next(&mut c), (0, b"zero".to_vec()));
    assert_eq!(next(&mut c), (1, b"one".to_vec()));
    assert_eq!(p.stats().published, 2);
}

// ---- producer restart ------------------------------------------------------------------------

#[test]
fn dropping_the_producer_keeps_the_channel_and_a_new_producer_continues_the_frame_ids() {
    let ch = TestChannel::new("restart");
    let policy = ring(4, Backpressure::Fail);
    let mut p = producer(&ch.name, policy, 64);
    let mut c = consumer(&ch.name);
    send(&mut p, b"a").unwrap();
    send(&mut p, b"b").unwrap();
    drop(p);
    assert!(!c.producer_alive());
    assert_eq!(
        next(&mut c),
        (0, b"a".to_vec()),
        "frames survive the producer"
    );
    let mut p = producer(&ch.name, policy, 64);
    assert!(c.producer_alive());
    assert_eq!(p.next_frame_id(), 2);
    send(&mut p, b"c").unwrap();
    assert_eq!(next(&mut c), (1, b"b".to_vec()));
    assert_eq!(next(&mut c), (2, b"c".to_vec()));
}

#[test]
fn a_second_producer_is_refused_while_the_first_lives_in_another_process() {
    let ch = TestChannel::new("busy");
    let mut child = spawn_child("shm-producer", &[&ch.name, "double", "64", "3"]);
    child.expect("created");
    child.expect("published 3");
    let err = Channel::new(&ch.name)
        .policy(Policy::DoubleBuffer)
        .bytes(64)
        .create()
        .unwrap_err();
    match err {
        ChannelError::ChannelBusy { pid, .. } => assert_eq!(pid, child.pid()),
        other => panic!("expected ChannelBusy, got {other}"),
    }
    // Also within one process.
    let ch2 = TestChannel::new("busy2");
    let _p = producer(&ch2.name, Policy::Latest, 64);
    let err = Channel::new(&ch2.name)
        .policy(Policy::Latest)
        .bytes(64)
        .create()
        .unwrap_err();
    assert!(matches!(err, ChannelError::ChannelBusy { .. }), "{err}");
}

#[test]
fn taking_over_with_other_settings_names_the_differing_field() {
    let ch = TestChannel::new("mismatch");
    let base = || {
        Channel::new(&ch.name)
            .policy(ring(4, Backpressure::Fail))
            .bytes(64)
            .flex_size(128)
    };
    drop(base().create().unwrap());
    let config = [
        (
            base().policy(Policy::Latest).create().unwrap_err(),
            "policy",
        ),
        (
            base()
                .policy(ring(8, Backpressure::Fail))
                .create()
                .unwrap_err(),
            "policy",
        ),
        (
            base()
                .policy(ring(4, Backpressure::DropOldest))
                .create()
                .unwrap_err(),
            "policy",
        ),
        (base().flex_size(0).create().unwrap_err(), "flex_size"),
        (base().checksum(true).create().unwrap_err(), "checksum"),
        (base().secret(5u64).create().unwrap_err(), "secret"),
    ];
    for (err, field) in config {
        match err {
            ChannelError::ConfigMismatch { field: f, .. } => assert_eq!(f, field),
            other => panic!("expected ConfigMismatch on {field}, got {other}"),
        }
    }
    let schema = [
        (base().bytes(65).create().unwrap_err(), "shape"),
        (base().frames::<i8>(&[64]).create().unwrap_err(), "element"),
        (
            base().schema("cam.Frame", 1).create().unwrap_err(),
            "schema_name",
        ),
    ];
    for (err, field) in schema {
        match err {
            ChannelError::SchemaMismatch { field: f, .. } => assert_eq!(f, field),
            other => panic!("expected SchemaMismatch on {field}, got {other}"),
        }
    }
    // Block with another timeout is the same rule; Fail, as created, takes it over.
    assert!(base().create().is_ok());
}

#[test]
fn remove_channel_removes_it_and_a_second_removal_is_not_found() {
    let ch = TestChannel::new("remove");
    drop(producer(&ch.name, Policy::Latest, 64));
    shm::remove_channel(&ch.name).unwrap();
    assert!(!std::path::Path::new(&ch.path()).exists());
    assert!(matches!(
        shm::remove_channel(&ch.name),
        Err(ChannelError::NotFound { .. })
    ));
    assert!(matches!(
        Channel::new(&ch.name).open(),
        Err(ChannelError::NotFound { .. })
    ));
}

// ---- access -----------------------------------------------------------------------------------

#[test]
fn a_wrong_or_missing_secret_is_refused_and_the_plaintext_is_not_stored() {
    let ch = TestChannel::new("secret");
    let secret = b"correct horse battery staple";
    let _p = Channel::new(&ch.name)
        .policy(Policy::Latest)
        .bytes(64)
        .secret(&secret[..])
        .create()
        .unwrap();
    for opened in [
        Channel::new(&ch.name).open(),
        Channel::new(&ch.name).secret(&b"wrong"[..]).open(),
    ] {
        let err = opened.unwrap_err();
        assert!(matches!(err, ChannelError::WrongSecret { .. }), "{err}");
    }
    let _c = Channel::new(&ch.name).secret(&secret[..]).open().unwrap();
    let bytes = std::fs::read(ch.path()).unwrap();
    assert!(
        !bytes.windows(secret.len()).any(|w| w == secret),
        "plaintext secret in the segment"
    );
    // A u64 secret works the same way.
    let ch2 = TestChannel::new("secret64");
    let _p2 = Channel::new(&ch2.name)
        .policy(Policy::Latest)
        .bytes(64)
        .secret(42u64)
        .create()
        .unwrap();
    assert!(Channel::new(&ch2.name).secret(43u64).open().is_err());
    let _c2 = Channel::new(&ch2.name).secret(42u64).open().unwrap();
}

#[test]
fn a_full_consumer_table_refuses_the_next_consumer_with_a_clear_error() {
    let ch = TestChannel::new("table");
    let _p = producer(&ch.name, Policy::Latest, 64);
    let mut held: Vec<Consumer<u8>> = (0..16).map(|_| consumer(&ch.name)).collect();
    match Channel::new(&ch.name).open().unwrap_err() {
        ChannelError::ConsumerTableFull { capacity, .. } => assert_eq!(capacity, 16),
        other => panic!("{other}"),
    }
    held.pop();
    let _last = consumer(&ch.name);
}

#[test]
fn a_corrupted_frame_fails_its_checksum() {
    for policy in [ring(2, Backpressure::Fail), Policy::DoubleBuffer] {
        let ch = TestChannel::new("checksum");
        let mut p = Channel::new(&ch.name)
            .policy(policy)
            .bytes(4096)
            .checksum(true)
            .create()
            .unwrap();
        let mut c = consumer(&ch.name);
        send(&mut p, &[7u8; 1000]).unwrap();
        assert_eq!(next(&mut c).1, vec![7u8; 1000], "an intact frame passes");
        send(&mut p, &[9u8; 1000]).unwrap();
        // Flip a payload byte of frame 1 behind the library's back.
        let mut map = scribble(&ch);
        let pos = map
            .windows(1000)
            .rposition(|w| w.iter().all(|&b| b == 9))
            .unwrap();
        map[pos + 500] ^= 0xff;
        if policy.is_lossless() {
            // A held frame is verified before it is handed out.
            assert!(matches!(
                c.next(Some(WATCHDOG)),
                Err(ReadError::ChecksumMismatch { frame_id: 1, .. })
            ));
        } else {
            let f = c.next(Some(WATCHDOG)).unwrap();
            assert_eq!(f.frame_id(), 1);
            assert!(matches!(
                f.to_vec(),
                Err(ReadError::ChecksumMismatch { frame_id: 1, .. })
            ));
        }
    }
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
    let mut p = Channel::new(&ch.name)
        .policy(Policy::Latest)
        .bytes(64)
        .flex_size(256)
        .create()
        .unwrap();
    let c = consumer(&ch.name);
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
    let mut p = Channel::new(&ch.name)
        .policy(Policy::Latest)
        .bytes(64)
        .flex_size(256)
        .state_format(shm::StateFormat::MessagePack)
        .create()
        .unwrap();
    let c = consumer(&ch.name);
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
    let mut p = Channel::new(&ch.name)
        .policy(Policy::Latest)
        .bytes(64)
        .flex_size(8192)
        .create()
        .unwrap();
    p.write_state(&vec![0u64; 10]).unwrap();
    let name = ch.name.clone();
    let reader = std::thread::spawn(move || {
        let c = consumer(&name);
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
fn invalid_settings_are_typed_errors_naming_the_field() {
    let ch = TestChannel::new("badcfg");
    let b = || Channel::new(&ch.name);
    let cases = [
        (b().bytes(64).create().unwrap_err(), "policy"),
        (b().policy(Policy::Latest).create().unwrap_err(), "element"),
        (
            b().policy(Policy::Latest).bytes(0).create().unwrap_err(),
            "shape",
        ),
        (
            b().policy(Policy::Latest)
                .frames::<u8>(&[1, 1, 1, 1, 1])
                .create()
                .unwrap_err(),
            "shape",
        ),
        (
            b().policy(ring(0, Backpressure::Fail))
                .bytes(64)
                .create()
                .unwrap_err(),
            "slot_count",
        ),
        (
            b().policy(ring(100_000, Backpressure::Fail))
                .bytes(64)
                .create()
                .unwrap_err(),
            "slot_count",
        ),
        (
            b().policy(Policy::Latest)
                .bytes(u64::MAX)
                .create()
                .unwrap_err(),
            "slot_size",
        ),
        (
            b().policy(Policy::Latest)
                .frames::<u64>(&[u64::MAX / 4, 2])
                .create()
                .unwrap_err(),
            "slot_size",
        ),
        (
            b().policy(ring(65536, Backpressure::Fail))
                .bytes(1 << 30)
                .create()
                .unwrap_err(),
            "total_size",
        ),
        (
            b().policy(Policy::Latest)
                .bytes(8)
                .schema("a\nb", 1)
                .create()
                .unwrap_err(),
            "schema_name",
        ),
    ];
    for (err, field) in cases {
        match err {
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
    let mut p = producer(&ch.name, Policy::Latest, 64);
    let mut c = consumer(&ch.name);
    send(&mut p, b"x").unwrap();
    // Free entry 0 behind the library's back, as a reaper that judged it dead would.
    let mut map = scribble(&ch);
    let len = map.len();
    put_u64(&mut map, at::entry_state(len, 0), 0);
    assert!(matches!(
        c.next(Some(WATCHDOG)),
        Err(ReadError::Evicted { .. })
    ));
    assert!(matches!(c.latest(), Err(ReadError::Evicted { .. })));
    assert!(!c.is_attached());
}

#[test]
fn a_consumer_may_start_before_its_producer() {
    let ch = TestChannel::new("first");
    let open = || {
        Channel::new(&ch.name)
            .policy(Policy::ring(4))
            .frames::<u32>(&[16])
            .open_or_create()
    };
    let mut c = open().unwrap();
    assert!(!c.producer_alive());
    // A second one opens what the first created.
    let _c2 = open().unwrap();
    // The producer takes the channel over; frame ids start at 0.
    let mut p = Channel::new(&ch.name)
        .policy(Policy::ring(4))
        .frames::<u32>(&[16])
        .create()
        .unwrap();
    assert_eq!(p.publish(&[7; 16], &[16]).unwrap(), 0);
    let f = c.next(Some(WATCHDOG)).unwrap();
    assert_eq!(f.held(), Some(&[7u32; 16][..]));
    drop(f);
    // Settings that disagree with the channel's are refused, as for a producer.
    let err = Channel::new(&ch.name)
        .policy(Policy::ring(4))
        .frames::<u32>(&[17])
        .open_or_create()
        .unwrap_err();
    assert!(
        matches!(err, ChannelError::SchemaMismatch { field: "shape", .. }),
        "{err}"
    );
}
