//! `ProcessMutex` and `ProcessEvent` between real processes, including SIGKILLed owners.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use labhub::sync::LockError;

#[allow(dead_code)] // the roles themselves run in the child binary
#[path = "../../src/bin/child/sync.rs"]
mod roles;

use roles::{Shared, at};

use crate::common::{AbortWatchdog, ChildProc, spawn_child, unique, wait_until};

const OWNER_DIED: u32 = 0x4000_0000;
const WAITERS: u32 = 0x8000_0000;
const TID_MASK: u32 = 0x3fff_ffff;

/// A shared file in /dev/shm, unique per test, removed on drop.
struct SharedFile {
    path: PathBuf,
    shared: Shared,
}

impl SharedFile {
    fn new() -> Self {
        let path = Path::new("/dev/shm").join(unique("labhub-sync-test"));
        let shared = Shared::create(&path).expect("shared file");
        Self { path, shared }
    }
}

impl Drop for SharedFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Spawns `labhub-test-child role FILE args…`.
fn spawn(role: &str, file: &SharedFile, args: &[&str]) -> ChildProc {
    let mut all = vec![file.path.to_str().unwrap()];
    all.extend_from_slice(args);
    spawn_child(role, &all)
}

#[test]
fn four_processes_incrementing_under_the_mutex_reach_the_exact_total() {
    let _watchdog = AbortWatchdog::arm("four_processes_incrementing", Duration::from_secs(120));
    let file = SharedFile::new();
    let children: Vec<ChildProc> = (0..4)
        .map(|_| spawn("sync-increment", &file, &["10000"]))
        .collect();
    for mut child in children {
        child.expect_exact("done");
        child.finish();
    }
    assert_eq!(
        file.shared.u64_at(at::COUNTER).load(Ordering::SeqCst),
        40_000
    );
    assert_eq!(file.shared.word(at::MUTEX), 0, "left unlocked");
}

#[test]
fn a_holder_killed_by_sigkill_is_reported_to_the_next_locker() {
    let _watchdog = AbortWatchdog::arm("a_holder_killed", Duration::from_secs(60));
    let file = SharedFile::new();
    let mut holder = spawn("sync-hold", &file, &[]);
    holder.expect_exact("locked");
    assert_eq!(
        file.shared.word(at::MUTEX),
        holder.pid(),
        "the word names the holder"
    );
    holder.kill();
    // The kernel walked the holder's robust list and released the word.
    assert_eq!(file.shared.word(at::MUTEX), OWNER_DIED);
    let mutex = file.shared.mutex(at::MUTEX);
    let guard = match mutex.lock() {
        Err(LockError::OwnerDied(guard)) => guard,
        other => panic!("expected OwnerDied, got {other:?}"),
    };
    drop(guard);
    assert!(mutex.lock().is_ok(), "the death is reported once");
}

#[test]
fn a_waiter_blocked_on_a_killed_holder_wakes_and_is_told() {
    let _watchdog = AbortWatchdog::arm("a_waiter_blocked", Duration::from_secs(60));
    let file = SharedFile::new();
    let mut holder = spawn("sync-hold", &file, &[]);
    holder.expect_exact("locked");
    let mut waiter = spawn("sync-wait-lock", &file, &[]);
    waiter.expect_exact("waiting");
    wait_until("a waiter sets WAITERS", || {
        file.shared.word(at::MUTEX) & WAITERS != 0
    });
    holder.kill();
    waiter.expect_exact("owner-died");
    waiter.finish();
    assert_eq!(file.shared.word(at::MUTEX), 0);
}

#[test]
fn without_the_robust_list_a_dead_holder_is_found_by_liveness_polling() {
    let _watchdog = AbortWatchdog::arm("liveness_polling", Duration::from_secs(60));
    let file = SharedFile::new();
    let mut holder = spawn("sync-hold", &file, &["--no-robust-list"]);
    holder.expect_exact("locked");
    let holder_tid = holder.pid();
    holder.kill();
    // Nobody told the kernel: the word still names the dead holder.
    assert_eq!(file.shared.word(at::MUTEX) & TID_MASK, holder_tid);
    let mutex = file.shared.mutex(at::MUTEX);
    assert!(
        matches!(mutex.try_lock(), Ok(None)),
        "try_lock does not probe"
    );
    match mutex.lock() {
        Err(LockError::OwnerDied(guard)) => drop(guard),
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    assert!(mutex.lock().is_ok());
}

#[test]
fn a_waiter_blocked_on_a_holder_without_robust_list_wakes_and_is_told() {
    let _watchdog = AbortWatchdog::arm("waiter_liveness_polling", Duration::from_secs(60));
    let file = SharedFile::new();
    let mut holder = spawn("sync-hold", &file, &["--no-robust-list"]);
    holder.expect_exact("locked");
    let mut waiter = spawn("sync-wait-lock", &file, &[]);
    waiter.expect_exact("waiting");
    wait_until("a waiter sets WAITERS", || {
        file.shared.word(at::MUTEX) & WAITERS != 0
    });
    holder.kill();
    waiter.expect_exact("owner-died");
    waiter.finish();
}

/// Two waiters block on a holder that is then killed: exactly one is told of the death.
fn two_waiters_on_a_killed_holder(holder_args: &[&str]) {
    let file = SharedFile::new();
    let mut holder = spawn("sync-hold", &file, holder_args);
    holder.expect_exact("locked");
    let mut waiters: Vec<ChildProc> = (0..2)
        .map(|_| spawn("sync-wait-lock", &file, &[]))
        .collect();
    for waiter in &mut waiters {
        waiter.expect_exact("waiting");
    }
    wait_until("a waiter sets WAITERS", || {
        file.shared.word(at::MUTEX) & WAITERS != 0
    });
    holder.kill();
    let mut outcomes: Vec<String> = waiters.iter_mut().map(ChildProc::next_line).collect();
    outcomes.sort();
    assert_eq!(outcomes, ["locked", "owner-died"]);
    for waiter in waiters {
        waiter.finish();
    }
    assert_eq!(file.shared.word(at::MUTEX) & TID_MASK, 0);
}

#[test]
fn of_two_waiters_on_a_killed_holder_exactly_one_is_told() {
    let _watchdog = AbortWatchdog::arm("two_waiters_robust_list", Duration::from_secs(60));
    two_waiters_on_a_killed_holder(&[]);
}

#[test]
fn of_two_waiters_polling_a_dead_holder_exactly_one_is_told() {
    let _watchdog = AbortWatchdog::arm("two_waiters_liveness", Duration::from_secs(60));
    two_waiters_on_a_killed_holder(&["--no-robust-list"]);
}

#[test]
fn our_mutexes_and_a_glibc_robust_mutex_share_one_robust_list_through_a_kill() {
    let _watchdog = AbortWatchdog::arm("glibc_coexistence", Duration::from_secs(60));
    let file = SharedFile::new();
    let mut holder = spawn("sync-hold-with-glibc", &file, &[]);
    holder.expect_exact("locked");
    let pid = holder.pid();
    assert_eq!(
        file.shared.word(at::MUTEX),
        0,
        "unlocked (unlinked) before the kill"
    );
    assert_eq!(file.shared.word(at::MUTEX_B), pid);
    assert_eq!(file.shared.word(at::MUTEX_C), pid);
    assert_eq!(file.shared.word(at::PTHREAD) & TID_MASK, pid);
    holder.kill();
    // The kernel found every entry, ours and glibc's, by walking one list.
    assert_eq!(file.shared.word(at::MUTEX_B), OWNER_DIED);
    assert_eq!(file.shared.word(at::MUTEX_C), OWNER_DIED);
    assert_eq!(file.shared.word(at::PTHREAD), OWNER_DIED);
    assert_eq!(file.shared.word(at::MUTEX), 0);
    let b = file.shared.mutex(at::MUTEX_B);
    assert!(matches!(b.lock(), Err(LockError::OwnerDied(_))));
}

#[test]
fn a_waiter_that_cannot_read_proc_never_takes_the_lock_from_a_live_holder() {
    let _watchdog = AbortWatchdog::arm("a_waiter_that_cannot_read_proc", Duration::from_secs(60));
    let file = SharedFile::new();
    let mut holder = spawn("sync-hold", &file, &[]);
    holder.expect_exact("locked");
    let id = labhub::sync::ProcessId::of(holder.pid()).expect("holder identity");
    // Long enough for several liveness probes (one per 100 ms slice).
    let mut waiter = spawn(
        "sync-lock-without-fds",
        &file,
        &["350", &id.pid.to_string(), &id.start_time.to_string()],
    );
    assert_eq!(waiter.next_line(), "holder-alive=true lock=timeout");
    waiter.finish();
    assert_eq!(
        file.shared.word(at::MUTEX) & TID_MASK,
        holder.pid(),
        "still the holder's"
    );
}

#[test]
fn a_waiter_interrupted_by_frequent_signals_still_finds_a_dead_holder() {
    let _watchdog = AbortWatchdog::arm("waiter_under_signals", Duration::from_secs(30));
    let file = SharedFile::new();
    let mut holder = spawn("sync-hold", &file, &["--no-robust-list"]);
    holder.expect_exact("locked");
    holder.kill();
    let mut waiter = spawn("sync-wait-lock-under-signals", &file, &[]);
    waiter.expect_exact("waiting");
    waiter.expect_exact("owner-died");
    waiter.finish();
}

#[test]
fn a_guard_dropped_by_a_forked_copy_leaves_the_parents_lock_held() {
    let _watchdog = AbortWatchdog::arm("a_guard_dropped_by_a_forked_copy", Duration::from_secs(60));
    let file = SharedFile::new();
    let mut child = spawn("sync-fork-while-holding", &file, &[]);
    child.expect_exact("held-after-the-fork-dropped-its-copy=true");
    child.finish();
    assert_eq!(file.shared.word(at::MUTEX), 0, "released by its owner");
}

#[test]
fn a_hundred_thousand_notifications_between_processes_are_all_counted() {
    const ROUNDS: u64 = 100_000;
    let _watchdog =
        AbortWatchdog::arm("a_hundred_thousand_notifications", Duration::from_secs(240));
    let file = SharedFile::new();
    let mut child = spawn("sync-pong", &file, &[&ROUNDS.to_string()]);
    child.expect_exact("ready");
    let (ping, pong, turn) = (
        file.shared.event(at::PING),
        file.shared.event(at::PONG),
        file.shared.u64_at(at::TURN),
    );
    for i in 1..=ROUNDS {
        turn.store(2 * i - 1, Ordering::Release);
        ping.notify_one();
        // No timeout: a lost wake-up hangs, and the watchdog fails the test.
        pong.wait_until(None, || turn.load(Ordering::Acquire) == 2 * i);
    }
    child.expect_exact(&format!("counted {ROUNDS}"));
    child.finish();
}

#[test]
fn a_waiter_in_another_process_returns_no_earlier_than_its_timeout() {
    let _watchdog = AbortWatchdog::arm("a_waiter_with_a_timeout", Duration::from_secs(60));
    let file = SharedFile::new();
    let mut child = spawn("sync-wait-timeout", &file, &["200"]);
    let line = child.next_line();
    let after_us: u128 = line
        .strip_prefix("returned notified=false after_us=")
        .unwrap_or_else(|| panic!("unexpected report {line:?}"))
        .parse()
        .unwrap();
    assert!(after_us >= 200_000, "returned after {after_us} µs");
    child.finish();
}
