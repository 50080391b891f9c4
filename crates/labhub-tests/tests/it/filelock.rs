//! FileLock across real processes (the `labhub-test-child` `filelock-*` roles) and threads.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use labhub::filelock::{FileLock, FileLockError, LockHolder};

use crate::common::{ChildProc, ScratchDir, WATCHDOG, spawn_child, within_watchdog};

/// A scratch directory for one test under the target's temporary folder.
fn scratch_dir(test: &str) -> ScratchDir {
    ScratchDir::new_in(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        &format!("filelock-{test}"),
    )
}

/// Spawns `labhub-test-child role paths…`.
fn spawn(role: &str, paths: &[&Path]) -> ChildProc {
    let args: Vec<&str> = paths.iter().map(|p| p.to_str().unwrap()).collect();
    spawn_child(role, &args)
}

#[test]
fn processes_appending_under_the_lock_never_overlap() {
    const PROCESSES: usize = 8;
    const ROUNDS: usize = 100;
    within_watchdog("the test", 4 * WATCHDOG, || {
        let dir = scratch_dir("append");
        let target = dir.join("shared.dat");
        let log = dir.join("log.txt");
        let rounds = PathBuf::from(ROUNDS.to_string());
        let mut children: Vec<_> = (0..PROCESSES)
            .map(|_| spawn("filelock-append", &[&target, &log, &rounds]))
            .collect();
        // Start them together, so they contend from the first round.
        for child in &mut children {
            child.expect_exact("ready");
        }
        for child in &mut children {
            child.send_line("go");
        }
        for child in &mut children {
            child.wait_success();
        }

        let text = fs::read_to_string(&log).unwrap();
        let mut events: Vec<(u128, bool, u32)> = text
            .lines()
            .map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                let [kind, pid, ns] = fields[..] else {
                    panic!("malformed line {line:?}");
                };
                let acquire = match kind {
                    "ACQUIRE" => true,
                    "RELEASE" => false,
                    _ => panic!("malformed line {line:?}"),
                };
                (ns.parse().unwrap(), acquire, pid.parse().unwrap())
            })
            .collect();
        // At an equal timestamp a release sorts first, so ties are never read as overlap.
        events.sort();

        let mut per_process: HashMap<u32, usize> = HashMap::new();
        let mut holder: Option<(u32, u128)> = None;
        for &(ns, acquire, pid) in &events {
            match (acquire, holder) {
                (true, None) => holder = Some((pid, ns)),
                (true, Some((other, since))) => {
                    panic!("{pid} acquired at {ns} while {other} held it since {since}")
                }
                (false, Some((owner, _))) if owner == pid => {
                    holder = None;
                    *per_process.entry(pid).or_default() += 1;
                }
                (false, _) => panic!("{pid} released at {ns} without holding (holder {holder:?})"),
            }
        }
        assert_eq!(holder, None);
        assert_eq!(events.len(), 2 * PROCESSES * ROUNDS);
        assert_eq!(per_process.len(), PROCESSES);
        assert!(
            per_process.values().all(|&n| n == ROUNDS),
            "{per_process:?}"
        );
    });
}

#[test]
fn try_lock_has_exactly_one_winner_per_round_among_32_threads() {
    const THREADS: usize = 32;
    const ROUNDS: usize = 1000;
    within_watchdog("the test", 4 * WATCHDOG, || {
        let scratch = scratch_dir("rounds");
        let target = scratch.join("contended");
        let barrier = Arc::new(Barrier::new(THREADS));
        let wins: Arc<Vec<AtomicUsize>> =
            Arc::new((0..ROUNDS).map(|_| AtomicUsize::new(0)).collect());
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let (barrier, wins, target) = (barrier.clone(), wins.clone(), target.clone());
                thread::spawn(move || {
                    for round in wins.iter() {
                        barrier.wait();
                        let guard = FileLock::try_lock(&target).unwrap();
                        if guard.is_some() {
                            round.fetch_add(1, Ordering::Relaxed);
                        }
                        // The winner holds on until every thread has tried.
                        barrier.wait();
                        drop(guard);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        for (round, wins) in wins.iter().enumerate() {
            assert_eq!(wins.load(Ordering::Relaxed), 1, "winners in round {round}");
        }
    });
}

#[test]
fn a_timed_lock_held_by_another_process_fails_no_earlier_than_its_timeout() {
    within_watchdog("the test", 4 * WATCHDOG, || {
        let dir = scratch_dir("timed-process");
        let target = dir.join("x");
        let mut holder = spawn("filelock-hold", &[&target]);
        holder.expect_exact("locked");

        let timeout = Duration::from_millis(200);
        let start = Instant::now();
        let err = FileLock::lock_timeout(&target, timeout).unwrap_err();
        let elapsed = start.elapsed();
        let FileLockError::Timeout { path, waited } = err else {
            panic!("expected a timeout, got {err:?}");
        };
        assert_eq!(path, dir.join("x.lock"));
        assert!(waited >= timeout, "waited {waited:?} < {timeout:?}");
        assert!(
            elapsed >= timeout,
            "returned after {elapsed:?} < {timeout:?}"
        );

        // Once the holder lets go, a timed lock succeeds.
        holder.send_line("release");
        holder.expect_exact("released");
        let guard = FileLock::lock_timeout(&target, Duration::from_secs(60)).unwrap();
        assert_eq!(guard.lock_path(), dir.join("x.lock"));
        holder.wait_success();
    });
}

#[test]
fn a_timed_lock_held_by_another_thread_fails_no_earlier_than_its_timeout() {
    within_watchdog("the test", 4 * WATCHDOG, || {
        let scratch = scratch_dir("timed-thread");
        let target = scratch.join("x");
        let guard = FileLock::lock(&target).unwrap();
        let timeout = Duration::from_millis(150);
        let waiter = thread::spawn({
            let target = target.clone();
            move || {
                let start = Instant::now();
                let result = FileLock::lock_timeout(&target, timeout);
                (result, start.elapsed())
            }
        });
        let (result, elapsed) = waiter.join().unwrap();
        match result {
            Err(FileLockError::Timeout { waited, .. }) => {
                assert!(waited >= timeout, "waited {waited:?} < {timeout:?}");
                assert!(
                    elapsed >= timeout,
                    "returned after {elapsed:?} < {timeout:?}"
                );
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        drop(guard);
    });
}

#[test]
fn a_timed_waiter_in_the_same_process_gets_the_lock_when_it_is_released() {
    within_watchdog("the test", 4 * WATCHDOG, || {
        let scratch = scratch_dir("timed-release");
        let target = scratch.join("x");
        let guard = FileLock::lock(&target).unwrap();
        let waiter = thread::spawn({
            let target = target.clone();
            move || FileLock::lock_timeout(&target, Duration::from_secs(60)).map(|_| ())
        });
        drop(guard);
        waiter.join().unwrap().unwrap();
    });
}

#[test]
fn a_blocked_thread_gets_the_lock_when_the_holding_thread_releases_it() {
    within_watchdog("the test", 4 * WATCHDOG, || {
        let scratch = scratch_dir("blocking-thread");
        let target = scratch.join("x");
        let guard = FileLock::lock(&target).unwrap();
        let waiter = thread::spawn({
            let target = target.clone();
            move || FileLock::lock(&target).map(|_| ())
        });
        drop(guard);
        waiter.join().unwrap().unwrap();
    });
}

#[test]
fn a_holder_killed_with_sigkill_frees_the_lock_at_once() {
    within_watchdog("the test", 4 * WATCHDOG, || {
        let dir = scratch_dir("sigkill");
        let target = dir.join("token");
        let mut holder = spawn("filelock-hold", &[&target]);
        holder.expect_exact("locked");
        assert_eq!(FileLock::probe(&target).unwrap(), LockHolder::OtherProcess);
        assert!(FileLock::is_held_elsewhere(&target).unwrap());
        assert!(FileLock::try_lock(&target).unwrap().is_none());

        // A thread already blocked in the kernel must be woken by the holder's death.
        let waiter = thread::spawn({
            let target = target.clone();
            move || FileLock::lock(&target).map(|guard| guard.lock_path().to_path_buf())
        });
        holder.kill(); // SIGKILL: the holder runs no cleanup at all
        let lock_path = waiter.join().unwrap().unwrap();
        assert_eq!(lock_path, dir.join("token.lock"));

        // The liveness probe now reports the death.
        assert!(!FileLock::is_held_elsewhere(&target).unwrap());
        assert_eq!(FileLock::probe(&target).unwrap(), LockHolder::Nobody);
        let guard = FileLock::lock(&target).unwrap();
        assert_eq!(FileLock::probe(&target).unwrap(), LockHolder::ThisProcess);
        drop(guard);
    });
}

#[test]
fn a_parents_lock_blocks_its_child() {
    within_watchdog("the test", 4 * WATCHDOG, || {
        let scratch = scratch_dir("parent");
        let target = scratch.join("x");
        let guard = FileLock::lock(&target).unwrap();
        let mut child = spawn("filelock-try", &[&target]);
        child.expect_exact("none");
        child.wait_success();

        drop(guard);
        let mut child = spawn("filelock-try", &[&target]);
        child.expect_exact("some");
        child.wait_success();
    });
}

#[test]
fn a_directory_lock_lives_beside_the_directory_and_every_spelling_shares_it() {
    within_watchdog("the test", 4 * WATCHDOG, || {
        let dir = scratch_dir("directory");
        let sub = dir.join("sub");
        fs::create_dir(&sub).unwrap();
        let guard = FileLock::lock(&sub).unwrap();
        assert_eq!(guard.lock_path(), dir.join("sub.dir.lock"));
        assert!(dir.join("sub.dir.lock").is_file());

        let spellings = [
            sub.join("."),
            sub.join(""), // a trailing slash
            sub.join("missing").join(".."),
            dir.join(".").join("sub"),
        ];
        for spelling in &spellings {
            assert!(
                FileLock::try_lock(spelling).unwrap().is_none(),
                "{spelling:?} is the same lock"
            );
        }
        let mut child = spawn("filelock-try", &[&sub.join(".")]);
        child.expect_exact("none");
        child.wait_success();

        // The directory's name, not `.`, names the lock of `dir/sub/.`.
        drop(guard);
        let guard = FileLock::lock(sub.join(".")).unwrap();
        assert_eq!(guard.lock_path(), dir.join("sub.dir.lock"));
    });
}

#[test]
fn missing_parent_directories_are_created_and_the_target_is_not() {
    let dir = scratch_dir("parents");
    let target = dir.join("a").join("b").join("c").join("data.bin");
    let guard = FileLock::lock(&target).unwrap();
    assert_eq!(guard.lock_path(), dir.join("a/b/c/data.bin.lock"));
    assert!(dir.join("a/b/c").is_dir());
    assert!(!target.exists());
}

#[test]
fn lock_files_are_not_deleted_after_unlock() {
    let scratch = scratch_dir("kept");
    let target = scratch.join("x");
    let guard = FileLock::lock(&target).unwrap();
    let lock_path = guard.lock_path().to_path_buf();
    drop(guard);
    assert!(lock_path.is_file());
    let again = FileLock::try_lock(&target)
        .unwrap()
        .expect("free after unlock");
    assert_eq!(again.lock_path(), lock_path);
    drop(again);
    assert!(lock_path.is_file());
}

#[test]
fn a_path_with_a_control_character_is_an_invalid_path() {
    let dir = scratch_dir("control");
    for bad in ["a\nb", "tab\there", "bell\u{7}", "del\u{7f}"] {
        let err = FileLock::lock(dir.join(bad)).unwrap_err();
        assert!(
            matches!(&err, FileLockError::InvalidPath { path, reason }
                if path == &dir.join(bad) && reason.contains("control character")),
            "{bad:?}: {err:?}"
        );
        assert!(matches!(
            FileLock::try_lock(dir.join(bad)),
            Err(FileLockError::InvalidPath { .. })
        ));
        assert!(matches!(
            FileLock::is_held_elsewhere(dir.join(bad)),
            Err(FileLockError::InvalidPath { .. })
        ));
    }
    assert!(
        fs::read_dir(&dir).unwrap().next().is_none(),
        "nothing created"
    );
    assert!(matches!(
        FileLock::lock(""),
        Err(FileLockError::InvalidPath { .. })
    ));
}

#[test]
fn a_path_through_a_regular_file_is_an_invalid_path() {
    let dir = scratch_dir("through-file");
    let file = dir.join("plain");
    fs::write(&file, b"not a directory").unwrap();
    for target in [file.join("x"), file.join("deeper").join("x")] {
        let err = FileLock::lock_timeout(&target, Duration::from_secs(1)).unwrap_err();
        assert!(
            matches!(&err, FileLockError::InvalidPath { path, reason }
                if path == &target && reason.contains("not a directory")),
            "{target:?}: {err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains("plain"),
            "the message names the file: {message}"
        );
    }
}

#[test]
fn a_symlink_in_place_of_the_lock_file_is_refused() {
    let dir = scratch_dir("symlink");
    let elsewhere = dir.join("elsewhere");
    std::os::unix::fs::symlink(&elsewhere, dir.join("x.lock")).unwrap();
    let err = FileLock::lock(dir.join("x")).unwrap_err();
    let FileLockError::Io {
        operation,
        path,
        source,
    } = &err
    else {
        panic!("expected an io error, got {err:?}");
    };
    assert_eq!((*operation, path), ("open", &dir.join("x.lock")));
    assert_eq!(source.raw_os_error(), Some(libc::ELOOP));
    assert!(!elsewhere.exists());
}

#[test]
fn probing_a_path_never_locked_finds_nobody_and_creates_nothing() {
    let dir = scratch_dir("probe");
    let target = dir.join("no").join("such").join("token");
    assert_eq!(FileLock::probe(&target).unwrap(), LockHolder::Nobody);
    assert!(!FileLock::is_held_elsewhere(dir.join("token")).unwrap());
    assert!(
        fs::read_dir(&dir).unwrap().next().is_none(),
        "nothing created"
    );
}
