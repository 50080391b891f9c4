//! Bad segments: wrong magic or version, inconsistent or truncated sizes, garbage headers and
//! descriptors, foreign permissions. Every one is a typed error; none panics.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use labhub::shm::{
    Backpressure, Channel, ChannelError, Consumer, LayoutError, Policy, ReadError, StateError,
};
use proptest::prelude::*;

use super::{TestChannel, at, consumer, producer, put_u32, put_u64, ring, scribble, send};

/// The bytes of a freshly created, valid channel segment (Ring of 4 × 4 KiB).
fn valid_segment_bytes() -> Vec<u8> {
    let ch = TestChannel::new("template");
    drop(
        Channel::new(&ch.name)
            .policy(ring(4, Backpressure::Fail))
            .bytes(4096)
            .flex_size(64)
            .create()
            .unwrap(),
    );
    std::fs::read(ch.path()).unwrap()
}

fn write_segment(ch: &TestChannel, bytes: &[u8], mode: u32) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(ch.path())
        .unwrap();
    f.write_all(bytes).unwrap();
    // create_new applies the umask; set the exact mode.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(ch.path(), std::fs::Permissions::from_mode(mode)).unwrap();
}

fn attach_quick(name: &str) -> Result<Consumer<u8>, ChannelError> {
    Channel::new(name)
        .element::<u8>()
        .ready_timeout(Duration::from_millis(20))
        .open()
}

fn layout_error(r: Result<Consumer<u8>, ChannelError>) -> LayoutError {
    match r {
        Err(ChannelError::Layout { source, .. }) => source,
        Err(other) => panic!("expected a layout error, got {other}"),
        Ok(_) => panic!("expected a layout error, attach succeeded"),
    }
}

#[test]
fn a_segment_with_the_wrong_magic_is_refused() {
    let ch = TestChannel::new("magic");
    let mut b = valid_segment_bytes();
    put_u64(&mut b, 0, 0x1234);
    write_segment(&ch, &b, 0o600);
    assert!(matches!(
        layout_error(attach_quick(&ch.name)),
        LayoutError::BadMagic { found: 0x1234, .. }
    ));
}

#[test]
fn a_segment_with_another_layout_version_is_refused() {
    let ch = TestChannel::new("version");
    let mut b = valid_segment_bytes();
    put_u32(&mut b, 8, 99);
    write_segment(&ch, &b, 0o600);
    assert_eq!(
        layout_error(attach_quick(&ch.name)),
        LayoutError::VersionMismatch {
            expected: labhub::shm::LAYOUT_VERSION,
            found: 99
        }
    );
}

#[test]
fn a_segment_whose_magic_never_appears_is_not_initialized_after_a_bounded_wait() {
    let ch = TestChannel::new("zero");
    write_segment(&ch, &vec![0u8; 16384], 0o600);
    assert_eq!(
        layout_error(attach_quick(&ch.name)),
        LayoutError::NotInitialized
    );
}

#[test]
fn attach_waits_for_the_magic_to_be_published() {
    let ch = TestChannel::new("latemagic");
    let b = valid_segment_bytes();
    let mut hidden = b.clone();
    put_u64(&mut hidden, 0, 0);
    write_segment(&ch, &hidden, 0o600);
    let path = ch.path();
    let publisher = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        // SAFETY: a test-only mapping of our own file; the attacher reads the magic atomically.
        let mut m = unsafe { memmap2::MmapMut::map_mut(&f) }.unwrap();
        m[..8].copy_from_slice(&b[..8]);
    });
    let _c = Channel::new(&ch.name)
        .ready_timeout(super::WATCHDOG)
        .open()
        .unwrap();
    publisher.join().unwrap();
}

#[test]
fn a_truncated_segment_is_refused() {
    let ch = TestChannel::new("trunc");
    let b = valid_segment_bytes();
    write_segment(&ch, &b[..b.len() - 4096], 0o600);
    assert!(matches!(
        layout_error(attach_quick(&ch.name)),
        LayoutError::Truncated { .. }
    ));
    let ch2 = TestChannel::new("tiny");
    write_segment(&ch2, &b[..100], 0o600);
    assert!(matches!(
        layout_error(attach_quick(&ch2.name)),
        LayoutError::Truncated { actual: 100, .. }
    ));
}

#[test]
fn a_header_size_that_disagrees_with_its_parameters_is_refused() {
    let ch = TestChannel::new("size");
    let mut b = valid_segment_bytes();
    let real = u64::from_le_bytes(b[16..24].try_into().unwrap());
    put_u64(&mut b, 16, real - 4096);
    write_segment(&ch, &b, 0o600);
    match layout_error(attach_quick(&ch.name)) {
        LayoutError::Inconsistent {
            field,
            expected,
            found,
        } => {
            assert_eq!((field, expected, found), ("total_size", real, real - 4096));
        }
        other => panic!("{other}"),
    }
    // A slot count of zero, an unknown policy, an unknown element type, five dimensions.
    for (off, v, field) in [
        (32usize, 0u32, "slot_count"),
        (24, 77, "policy"),
        (160, 0, "element_type"),
        (160, 99, "element_type"),
        (164, 5, "ndim"),
    ] {
        let ch = TestChannel::new("field");
        let mut b = valid_segment_bytes();
        put_u32(&mut b, off, v);
        write_segment(&ch, &b, 0o600);
        match layout_error(attach_quick(&ch.name)) {
            LayoutError::InvalidField { field: f, .. } => assert_eq!(f, field),
            other => panic!("{other}"),
        }
    }
}

#[test]
fn a_segment_others_can_access_is_refused_naming_the_file() {
    let ch = TestChannel::new("mode");
    write_segment(&ch, &valid_segment_bytes(), 0o644);
    match attach_quick(&ch.name) {
        Err(ChannelError::ForeignSegment { mode, path, .. }) => {
            assert_eq!(mode, 0o644);
            assert_eq!(path, ch.path());
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        Channel::new(&ch.name)
            .policy(Policy::Latest)
            .bytes(64)
            .create(),
        Err(ChannelError::ForeignSegment { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random header bytes (with a valid magic and version half the time, so validation goes
    /// deep) over a segment of random size: attach returns an error or a usable consumer, and
    /// never panics.
    #[test]
    fn attaching_to_random_headers_never_panics(
        header in proptest::collection::vec(any::<u8>(), 704),
        keep_magic in any::<bool>(),
        keep_params in any::<bool>(),
        pages in 1usize..6,
    ) {
        let ch = TestChannel::new("fuzz");
        let valid = valid_segment_bytes();
        let mut b = vec![0u8; pages * 4096];
        b[..704].copy_from_slice(&header);
        if keep_magic {
            b[..12].copy_from_slice(&valid[..12]);
        }
        if keep_params {
            // The valid parameters and schema with random offsets, or the reverse, reach the
            // offset checks.
            b[12..64].copy_from_slice(&valid[12..64]);
            b[160..176].copy_from_slice(&valid[160..176]);
            b[576..608].copy_from_slice(&valid[576..608]);
        }
        write_segment(&ch, &b, 0o600);
        if let Ok(mut c) = attach_quick(&ch.name) {
            if let Ok(f) = c.next(Some(Duration::ZERO)) {
                let _ = f.to_vec();
            }
            let _ = c.latest();
            let _ = c.read_state::<serde_json::Value>();
        }
        let _ = labhub::shm::inspect(&ch.name);
    }
}

#[test]
fn an_unknown_payload_mode_is_refused() {
    let ch = TestChannel::new("payload-mode");
    let mut b = valid_segment_bytes();
    put_u32(&mut b, 108, 2);
    write_segment(&ch, &b, 0o600);
    assert!(matches!(
        layout_error(attach_quick(&ch.name)),
        LayoutError::InvalidField {
            field: "payload_mode",
            value: 2
        }
    ));
}

#[test]
fn garbage_in_a_pooled_descriptors_buffer_index_stays_inside_the_segment() {
    let ch = TestChannel::new("chunk");
    let size = labhub::shm::POOL_MIN_SLOT_SIZE;
    let mut p = producer(&ch.name, ring(4, Backpressure::Fail), size);
    let mut c = consumer(&ch.name);
    send(&mut p, b"frame").unwrap();
    // Descriptor 0's `chunk` word is at +80.
    let mut m = scribble(&ch);
    put_u64(&mut m, at::DESCRIPTORS + 80, u64::MAX);
    let f = c.next(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(f.frame_id(), 0);
    assert_eq!(f.len(), 5);
    // Some buffer of the segment, read without fault; which one is the writer's business.
    let _ = f.held().unwrap().iter().fold(0u8, |a, &b| a ^ b);
    drop(f);
}

#[test]
fn an_unknown_commit_fence_code_still_wakes_the_consumer() {
    let ch = TestChannel::new("fence");
    let mut p = producer(&ch.name, Policy::Latest, 64);
    let mut c = consumer(&ch.name);
    let mut m = scribble(&ch);
    put_u32(&mut m, at::COMMIT_FENCE, 7);
    let t = std::thread::spawn(move || {
        // Late enough that the consumer is asleep (not for synchronisation: the frame arrives
        // either way).
        std::thread::sleep(Duration::from_millis(20));
        send(&mut p, b"late").unwrap();
        p
    });
    let f = c.next(Some(super::WATCHDOG)).unwrap();
    assert_eq!(f.to_vec().unwrap(), b"late");
    drop(f);
    drop(t.join().unwrap());
}

#[test]
fn a_descriptor_whose_shape_or_size_no_producer_writes_is_a_corrupt_frame_and_skipped() {
    // Descriptor words: data_size +24, ndim +32, dims +40.
    for (off, value) in [(24usize, 5u64), (32, 2), (40, 65), (24, u64::MAX)] {
        let ch = TestChannel::new("descriptor");
        let mut p = producer(&ch.name, ring(4, Backpressure::Fail), 64);
        let mut c = consumer(&ch.name);
        send(&mut p, b"frame zero").unwrap();
        send(&mut p, b"frame one").unwrap();
        let mut m = scribble(&ch);
        put_u64(&mut m, at::DESCRIPTORS + off, value);
        match c.next(Some(super::WATCHDOG)) {
            Err(ReadError::Corrupt { problem, .. }) => {
                assert!(problem.contains("frame 0"), "{problem}")
            }
            other => panic!("offset {off}: {other:?}"),
        }
        // The next frame is read as usual.
        let f = c.next(Some(super::WATCHDOG)).unwrap();
        assert_eq!((f.frame_id(), f.held()), (1, Some(&b"frame one"[..])));
    }
}

#[test]
fn a_hostile_state_version_is_a_typed_error_not_an_overflow() {
    let ch = TestChannel::new("flexver");
    let mut p = Channel::new(&ch.name)
        .policy(Policy::Latest)
        .bytes(64)
        .flex_size(64)
        .create()
        .unwrap();
    let c = consumer(&ch.name);
    p.write_state(&1u32).unwrap();
    for version in [u64::MAX, u64::MAX / 2, u64::MAX / 2 + 1] {
        let mut m = scribble(&ch);
        put_u64(&mut m, at::FLEX_VERSION, version);
        assert!(
            matches!(p.write_state(&2u32), Err(StateError::CorruptVersion { .. })),
            "{version}"
        );
        if version > u64::MAX / 2 {
            assert!(matches!(
                c.read_state::<u32>(),
                Err(StateError::CorruptVersion { .. })
            ));
        }
    }
}
