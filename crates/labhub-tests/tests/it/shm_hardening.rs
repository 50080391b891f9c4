//! Attacks on and failures around a channel, with real processes: a stopped consumer, a
//! hostile commit position, counters pushed to their limit, consumer-table churn, segment
//! names planted by another user, a shared-memory file system without room.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use labhub::shm::{self, Backpressure, Channel, ChannelError, Policy};

use super::{
    TestChannel, WATCHDOG, at, consumer, get_u64, put_u64, ring, scribble, send, spawn_child,
};
use crate::common::CHILD_EXE;

/// The `frame N missed M` lines of a `shm-consumer-read` child: the frame id and missed count.
fn frame_line(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("frame ")?;
    let (id, missed) = rest.split_once(" missed ")?;
    Some((id.parse().ok()?, missed.parse().ok()?))
}

/// The next `frame` line of `child` (skipping `idle`); fails on an `error` line.
fn next_frame(child: &mut crate::common::ChildProc) -> (u64, u64) {
    let line = child.wait_for("a frame", |l| {
        assert!(!l.starts_with("error"), "{l}");
        l.starts_with("frame ")
    });
    frame_line(&line).unwrap()
}

#[test]
fn a_stopped_consumer_of_a_lossless_ring_is_evicted_by_the_default_timeout_and_told_so() {
    let ch = TestChannel::new("sigstop");
    // No consumer timeout given: lossless rings have one by default.
    let mut p = Channel::new(&ch.name)
        .policy(ring(4, Backpressure::Block { timeout: WATCHDOG }))
        .bytes(64)
        .create()
        .unwrap();
    let mut stopped = spawn_child("shm-consumer-read", &[&ch.name]).labelled("stopped reader");
    let mut reader = spawn_child("shm-consumer-read", &[&ch.name]).labelled("live reader");
    stopped.expect("attached");
    reader.expect("attached");
    send(&mut p, b"0").unwrap();
    assert_eq!(next_frame(&mut stopped), (0, 0));
    assert_eq!(next_frame(&mut reader), (0, 0));
    stopped.stop();
    stopped.wait_stopped();
    // The stopped reader holds the ring at frame 1: the producer blocks at frame 5 until the
    // stopped reader's heartbeat is older than the timeout, evicts it, and goes on.
    for i in 1..=12u64 {
        assert_eq!(send(&mut p, &i.to_le_bytes()).unwrap(), i);
        assert_eq!(
            next_frame(&mut reader),
            (i, 0),
            "the live reader misses nothing"
        );
    }
    let stats = p.stats();
    assert_eq!((stats.consumers, stats.evicted), (1, 1));
    let report = shm::inspect(&ch.name).unwrap();
    assert_eq!(report.evicted, 1);
    assert_eq!(report.consumers.len(), 1);
    assert_eq!(report.consumers[0].pid, reader.pid());
    // Resumed, the evicted reader learns it at its next read.
    stopped.resume();
    stopped.skip_to("error evicted");
}

/// Waits until consumer entry `index`'s heartbeat (refreshed at every turn of its read loop,
/// at least every 100 ms for a `shm-consumer-read` child) has changed twice: the reader has
/// looked at the header at least once since this call.
fn wait_for_a_reader_turn(m: &memmap2::MmapMut, index: usize) {
    let beat = || get_u64(m, at::consumers(m.len()) + at::ENTRY * index + 16);
    for _ in 0..2 {
        let before = beat();
        crate::common::wait_until("the reader's next turn", || beat() != before);
    }
}

#[test]
fn a_hostile_commit_position_neither_wedges_a_reader_nor_makes_it_jump() {
    for policy in [Policy::Latest, ring(4, Backpressure::Fail)] {
        let ch = TestChannel::new("commitpos");
        let mut p = Channel::new(&ch.name)
            .policy(policy)
            .bytes(64)
            .create()
            .unwrap();
        let mut child = spawn_child("shm-consumer-read", &[&ch.name]);
        child.expect("attached");
        send(&mut p, b"0").unwrap();
        assert_eq!(next_frame(&mut child), (0, 0));
        let mut m = scribble(&ch);
        for hostile in [u64::MAX, u64::MAX - 1, 1 << 40, 7] {
            put_u64(&mut m, at::COMMIT_POS, hostile);
            // The reader sees the hostile value (and must neither jump to it nor spin on it).
            wait_for_a_reader_turn(&m, 0);
            // The producer's next commit replaces it; the reader resynchronises to it.
            let id = send(&mut p, b"next").unwrap();
            assert_eq!(next_frame(&mut child), (id, 0), "{policy} after {hostile}");
        }
        assert_eq!(get_u64(&m, at::COMMIT_POS), p.next_frame_id());
    }
}

#[test]
fn a_producer_taking_over_a_hostile_commit_position_resynchronises_to_its_frames() {
    let ch = TestChannel::new("commitpos-takeover");
    let policy = ring(4, Backpressure::Fail);
    let mut p = super::producer(&ch.name, policy, 64);
    let mut c = consumer(&ch.name);
    for _ in 0..3 {
        send(&mut p, b"x").unwrap();
    }
    drop(p);
    let mut m = scribble(&ch);
    put_u64(&mut m, at::COMMIT_POS, u64::MAX);
    let mut p = super::producer(&ch.name, policy, 64);
    assert_eq!(
        p.next_frame_id(),
        3,
        "the newest committed frame's successor"
    );
    for i in 0..3 {
        assert_eq!(c.next(Some(WATCHDOG)).unwrap().frame_id(), i);
    }
    assert_eq!(send(&mut p, b"y").unwrap(), 3);
    assert_eq!(c.next(Some(WATCHDOG)).unwrap().frame_id(), 3);
}

#[test]
fn loss_counters_saturate_instead_of_wrapping() {
    let ch = TestChannel::new("saturate");
    let mut p = super::producer(&ch.name, Policy::Latest, 64);
    let mut c = consumer(&ch.name);
    let mut m = scribble(&ch);
    // Entry 0's `missed` (+48) and the control header's `overwritten`, pushed near the top.
    let len = m.len();
    put_u64(&mut m, at::consumers(len) + 48, u64::MAX - 1);
    put_u64(&mut m, at::overwritten(len), u64::MAX - 1);
    for _ in 0..4 {
        send(&mut p, b"lost").unwrap();
    }
    // Frames 0..2 were overwritten before the reader got to them.
    assert_eq!(c.next(Some(WATCHDOG)).unwrap().frame_id(), 3);
    assert_eq!(c.missed(), u64::MAX);
    assert_eq!(p.stats().overwritten, u64::MAX);
}

#[test]
fn a_released_consumer_entry_carries_no_start_time() {
    let ch = TestChannel::new("starttime");
    let mut p = Channel::new(&ch.name)
        .policy(ring(1, Backpressure::Block { timeout: WATCHDOG }))
        .bytes(64)
        .consumer_timeout(Some(Duration::from_millis(50)))
        .create()
        .unwrap();
    let m = scribble(&ch);
    // Detached.
    let c = consumer(&ch.name);
    assert_ne!(get_u64(&m, at::entry_start_time(m.len(), 0)), 0);
    drop(c);
    assert_eq!(
        get_u64(&m, at::entry_start_time(m.len(), 0)),
        0,
        "after a detach"
    );
    // Evicted by the consumer timeout.
    let mut c = consumer(&ch.name);
    send(&mut p, b"0").unwrap();
    let held = c.next(Some(WATCHDOG)).unwrap();
    send(&mut p, b"1").unwrap();
    assert_eq!(
        get_u64(&m, at::entry_start_time(m.len(), 0)),
        0,
        "after an eviction"
    );
    drop(held);
    drop(c);
    // Reclaimed from a SIGKILLed process.
    let mut child = spawn_child("shm-consumer-attached", &[&ch.name]);
    child.expect("attached");
    assert_ne!(get_u64(&m, at::entry_start_time(m.len(), 0)), 0);
    child.kill();
    let _c = consumer(&ch.name);
    assert_eq!(
        get_u64(&m, at::entry_start_time(m.len(), 1)),
        0,
        "the dead entry was reclaimed and cleared"
    );
}

#[test]
fn consumers_of_many_processes_attaching_detaching_and_dying_never_share_an_entry() {
    let ch = TestChannel::new("churn");
    let _p = super::producer(&ch.name, Policy::Latest, 64);
    let rounds = "3000";
    let mut churners: Vec<_> = (0..3)
        .map(|i| spawn_child("shm-churn", &[&ch.name, rounds]).labelled(&format!("churner {i}")))
        .collect();
    for c in &mut churners {
        c.expect("started");
    }
    // Processes dying with entries claimed, in every state, while the others churn.
    for _ in 0..20 {
        let mut victim = spawn_child("shm-churn", &[&ch.name, "1000000"]);
        victim.expect("started");
        victim.kill();
    }
    for c in &mut churners {
        assert_eq!(c.next_line(), "done", "{}", c.label());
        c.wait_success();
    }
    // Every entry a dead churner left is free again once looked at.
    let c = consumer(&ch.name);
    assert_eq!(shm::inspect(&ch.name).unwrap().consumers.len(), 1);
    drop(c);
}

fn running_as_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Puts `what` at channel `ch`'s segment name, owned by another user (uid 65534, "nobody":
/// root can give files away). Without root the file stays ours, which only the kinds and
/// modes labhub refuses anyway can show.
fn plant(ch: &TestChannel, what: &str) -> u32 {
    let root = running_as_root();
    let owner = if root {
        65534
    } else {
        // SAFETY: getuid cannot fail.
        unsafe { libc::getuid() }
    };
    let path = ch.path();
    match what {
        "file" | "open file" => {
            std::fs::write(&path, vec![0u8; 8192]).unwrap();
            let mode = if what == "file" { 0o600 } else { 0o666 };
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        "symlink" => {
            std::os::unix::fs::symlink("/tmp/labhub-squatted-target", &path).unwrap();
        }
        other => panic!("{other}"),
    }
    if root {
        std::os::unix::fs::lchown(&path, Some(owner), Some(owner)).unwrap();
    }
    owner
}

#[test]
fn a_segment_name_another_user_planted_is_refused_naming_the_file_and_its_owner() {
    let planted: &[&str] = if running_as_root() {
        &["file", "open file", "symlink"]
    } else {
        &["open file", "symlink"]
    };
    for &what in planted {
        let ch = TestChannel::new("squat");
        let owner = plant(&ch, what);
        let create = Channel::new(&ch.name)
            .policy(Policy::Latest)
            .bytes(64)
            .create()
            .map(|_| ());
        let open = Channel::new(&ch.name).open().map(|_| ());
        let inspect = shm::inspect(&ch.name).map(|_| ());
        for (op, result) in [("create", create), ("open", open), ("inspect", inspect)] {
            match result {
                Err(e @ ChannelError::ForeignSegment { .. }) => {
                    let ChannelError::ForeignSegment {
                        path,
                        owner: o,
                        kind,
                        ..
                    } = &e
                    else {
                        unreachable!()
                    };
                    assert_eq!(path, &ch.path(), "{what} {op}");
                    assert_eq!(*o, owner, "{what} {op}");
                    let expected_kind = if what == "symlink" {
                        "symbolic link"
                    } else {
                        "regular file"
                    };
                    assert_eq!(*kind, expected_kind, "{what} {op}");
                    let text = e.to_string();
                    assert!(
                        text.contains(&ch.path()) && text.contains(&format!("uid {owner}")),
                        "{text}"
                    );
                }
                other => panic!("{what} {op}: expected ForeignSegment, got {other:?}"),
            }
        }
        std::fs::remove_file(ch.path()).unwrap();
    }
}

#[test]
fn a_shared_memory_file_system_without_room_is_no_space_at_creation_not_sigbus() {
    let ch = TestChannel::new("nospace");
    // A private mount namespace whose /dev/shm is a 1 MiB tmpfs; the child creates a channel
    // of 4 MiB frames in it.
    let script = format!(
        "mount -t tmpfs -o size=1m tmpfs /dev/shm && exec {CHILD_EXE} shm-create {} {}",
        ch.name,
        4 << 20
    );
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script]);
    let mut child = crate::common::ChildProc::from_command("shm-create in a small /dev/shm", cmd);
    let line = child.next_line();
    let rest = line.strip_prefix("nospace needed=").unwrap_or_else(|| {
        panic!(
            "expected NoSpace, got {line:?}; stderr:\n{}",
            child.stderr()
        )
    });
    let (needed, available) = rest.split_once(" available=").unwrap();
    assert!(needed.parse::<u64>().unwrap() > 4 << 20, "{line}");
    let available: u64 = available
        .strip_prefix("Some(")
        .and_then(|a| a.strip_suffix(')'))
        .unwrap()
        .parse()
        .unwrap();
    assert!(available <= 1 << 20, "{line}");
    child.wait_success();
}

#[test]
fn the_builtin_dev_shm_creates_what_fits() {
    // The same child with room: the reservation succeeds and the whole slot can be written.
    let ch = TestChannel::new("roomy");
    let mut child = spawn_child("shm-create", &[&ch.name, "65536"]);
    child.expect_exact("created");
    child.expect_exact("written");
    child.wait_success();
    let report = shm::inspect(&ch.name).unwrap();
    // The child exited normally, giving the channel up.
    assert_eq!((report.slot_size, report.producer), (65536, None));
}
