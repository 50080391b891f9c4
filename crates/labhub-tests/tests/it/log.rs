//! `labhub::log`: real threads, real processes, real files.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;

use labhub::log::{LogConfig, LogError, Logger, Sink};
use tracing::level_filters::LevelFilter;

use crate::common::{ChildProc, ScratchDir, WATCHDOG, spawn_child, within_watchdog};

/// The target of the `log-append` child's lines.
const CHILD_TARGET: &str = "labhub_test_child::log";

/// One parsed log line; parsing checks every part of the documented format.
#[derive(Debug)]
struct Parsed {
    level: String,
    pid: u32,
    target: String,
    /// Message and fields.
    rest: String,
}

fn parse(line: &str) -> Parsed {
    let b = line.as_bytes();
    assert!(b.len() > 40, "short line {line:?}");
    // 2026-11-27T12:50:53.123456Z
    for (i, c) in b[..27].iter().enumerate() {
        let ok = match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            26 => *c == b'Z',
            _ => c.is_ascii_digit(),
        };
        assert!(ok, "bad timestamp in {line:?}");
    }
    assert_eq!(b[27], b' ', "{line:?}");
    let level = line[28..33].trim_end().to_owned();
    assert!(
        ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&level.as_str()),
        "bad level in {line:?}"
    );
    assert_eq!(b[33], b' ', "{line:?}");
    let after = &line[34..];
    let (ids, after) = after.split_once(' ').expect("ids");
    let (pid, tid) = ids.split_once(':').expect("pid:tid");
    let pid: u32 = pid.parse().unwrap_or_else(|_| panic!("pid in {line:?}"));
    let _tid: u32 = tid.parse().unwrap_or_else(|_| panic!("tid in {line:?}"));
    let (target, rest) = after.split_once(": ").expect("target");
    Parsed {
        level,
        pid,
        target: target.to_owned(),
        rest: rest.to_owned(),
    }
}

fn read_lines(path: &Path) -> Vec<String> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path:?}: {e}"));
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{path:?} ends inside a line"
    );
    text.lines().map(str::to_owned).collect()
}

/// The value of ` name=value` in a parsed line's rest.
fn field<'a>(rest: &'a str, name: &str) -> Option<&'a str> {
    rest.split(' ')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

fn numbered(rest: &str, name: &str) -> Option<u64> {
    field(rest, name)?.parse().ok()
}

#[test]
fn sixteen_threads_writing_500_lines_each_give_8000_intact_lines() {
    within_watchdog("the test", 4 * WATCHDOG, || {
        let dir = ScratchDir::new("log-threads");
        let path = dir.join("threads.log");
        let logger =
            Logger::start(LogConfig::new(Sink::File(path.clone())).queue_capacity(9000)).unwrap();
        let dispatch = logger.dispatch();
        let barrier = Arc::new(std::sync::Barrier::new(16));
        let threads: Vec<_> = (0..16u32)
            .map(|t| {
                let dispatch = dispatch.clone();
                let barrier = Arc::clone(&barrier);
                thread::spawn(move || {
                    tracing::dispatcher::with_default(&dispatch, || {
                        barrier.wait();
                        for i in 0..500u32 {
                            tracing::info!(thread = t, i, "thread line");
                        }
                    })
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        logger.shutdown();
        assert_eq!(logger.dropped_count(), 0);

        let lines = read_lines(&path);
        assert_eq!(lines.len(), 8000);
        let mut seen = HashSet::new();
        for line in &lines {
            let p = parse(line);
            assert_eq!(p.level, "INFO");
            assert_eq!(p.pid, std::process::id());
            assert_eq!(p.target, "it::log", "{line}");
            assert!(p.rest.starts_with("thread line "), "{line}");
            let key = (
                numbered(&p.rest, "thread").unwrap(),
                numbered(&p.rest, "i").unwrap(),
            );
            assert!(key.0 < 16 && key.1 < 500, "{line}");
            assert!(seen.insert(key), "duplicate {key:?}");
        }
        assert_eq!(seen.len(), 8000);
    });
}

/// Spawns `n` `log-append` children with `args(k)`, waits until all are ready, lets them
/// write at once, and waits for each to finish cleanly. Returns their pids.
fn run_appenders(n: u32, args: impl Fn(u32) -> Vec<String>) -> Vec<u32> {
    let mut children: Vec<ChildProc> = (0..n)
        .map(|k| {
            let args = args(k);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            spawn_child("log-append", &args)
        })
        .collect();
    for child in &mut children {
        child.expect_exact("ready");
    }
    for child in &mut children {
        child.send_line("go");
    }
    let mut pids = Vec::new();
    for mut child in children {
        child.expect_exact("done");
        child.wait_success();
        pids.push(child.pid());
    }
    pids
}

#[test]
fn eight_processes_appending_to_one_file_give_1600_intact_lines() {
    within_watchdog("the test", 4 * WATCHDOG, || {
        let dir = ScratchDir::new("log-procs");
        let path = dir.join("procs.log");
        let p = path.to_str().unwrap().to_owned();
        let pids = run_appenders(8, |k| {
            vec!["file".into(), p.clone(), k.to_string(), "200".into()]
        });

        // Every line parses; besides the children's 1600 there are only the lifecycle's own.
        let lines = read_lines(&path);
        let mut seen = HashSet::new();
        for line in &lines {
            let parsed = parse(line);
            assert_eq!(parsed.level, "INFO");
            if parsed.target != CHILD_TARGET {
                assert_eq!(parsed.target, "labhub::lifecycle", "{line}");
                continue;
            }
            assert!(parsed.rest.starts_with("child line "), "{line}");
            let k = numbered(&parsed.rest, "proc").unwrap();
            let i = numbered(&parsed.rest, "i").unwrap();
            assert_eq!(parsed.pid, pids[k as usize], "{line}");
            assert!(i < 200);
            assert!(seen.insert((k, i)), "duplicate {line}");
        }
        assert_eq!(seen.len(), 1600);
        assert_eq!(lines.len(), 1600 + 8, "one lifecycle line per child");
    });
}

/// Reads `<path>.backups … <path>.1, <path>` in age order, checks sizes and that no older
/// backup survives, and returns the numbered lines' numbers (marker lines checked and skipped).
fn rotated_numbers(path: &Path, max_bytes: u64, backups: u32, field_name: &str) -> Vec<u64> {
    let mut files: Vec<PathBuf> = (1..=backups)
        .rev()
        .map(|i| PathBuf::from(format!("{}.{i}", path.display())))
        .collect();
    files.push(path.to_path_buf());
    let too_old = PathBuf::from(format!("{}.{}", path.display(), backups + 1));
    assert!(!too_old.exists(), "{too_old:?} should have been deleted");
    let mut numbers = Vec::new();
    for file in files {
        let size = fs::metadata(&file)
            .unwrap_or_else(|e| panic!("{file:?}: {e}"))
            .len();
        assert!(size <= max_bytes, "{file:?} has {size} bytes > {max_bytes}");
        for line in read_lines(&file) {
            let p = parse(&line);
            if p.target == "labhub::log" {
                assert!(
                    p.rest.starts_with("log file rotated")
                        || p.rest.starts_with("log file restarted"),
                    "{line}"
                );
                continue;
            }
            numbers.push(numbered(&p.rest, field_name).unwrap_or_else(|| panic!("{line}")));
        }
    }
    numbers
}

fn write_numbered(sink: Sink, count: u64) -> Arc<Logger> {
    let logger = Logger::start(LogConfig::new(sink).queue_capacity(count as usize + 16)).unwrap();
    tracing::dispatcher::with_default(&logger.dispatch(), || {
        for n in 0..count {
            tracing::info!(n, "numbered line with some padding to fill the file");
        }
    });
    logger.shutdown();
    assert_eq!(logger.dropped_count(), 0);
    logger
}

#[test]
fn rotation_keeps_n_backups_and_a_gap_free_tail() {
    within_watchdog("the test", 2 * WATCHDOG, || {
        let dir = ScratchDir::new("log-rotate");
        let path = dir.join("nested/rot.log");
        let (max_bytes, backups, count) = (1024, 3, 600);
        write_numbered(
            Sink::RotatingFile {
                path: path.clone(),
                max_bytes,
                backups,
            },
            count,
        );
        let numbers = rotated_numbers(&path, max_bytes, backups, "n");
        assert_eq!(
            *numbers.last().unwrap(),
            count - 1,
            "the tail ends at the last line"
        );
        for w in numbers.windows(2) {
            assert_eq!(w[1], w[0] + 1, "gap in the tail");
        }
        // 600 lines of ~110 bytes do not fit into 4 KiB: rotation happened and dropped the
        // oldest lines, and the backups are full enough that nothing was rotated needlessly.
        assert!(numbers[0] > 0);
        assert!(numbers.len() >= 3 * 8, "only {} lines kept", numbers.len());
    });
}

#[test]
fn rotation_with_zero_backups_restarts_the_file() {
    within_watchdog("the test", 2 * WATCHDOG, || {
        let dir = ScratchDir::new("log-rotate0");
        let path = dir.join("rot0.log");
        let (max_bytes, count) = (1024, 300);
        write_numbered(
            Sink::RotatingFile {
                path: path.clone(),
                max_bytes,
                backups: 0,
            },
            count,
        );
        let numbers = rotated_numbers(&path, max_bytes, 0, "n");
        assert!(!numbers.is_empty());
        assert_eq!(*numbers.last().unwrap(), count - 1);
        for w in numbers.windows(2) {
            assert_eq!(w[1], w[0] + 1, "gap in the tail");
        }
        let first = parse(&read_lines(&path)[0]);
        assert!(first.rest.starts_with("log file restarted"), "{first:?}");
    });
}

/// `n` children log `count` lines each into one rotating file; returns, oldest file first,
/// the files that exist and, per child, the line numbers found, in file order.
fn rotate_from_processes(
    name: &str,
    n: u32,
    count: u32,
    max_bytes: u64,
    backups: u32,
) -> (ScratchDir, Vec<PathBuf>, Vec<Vec<u64>>) {
    let dir = ScratchDir::new(&format!("log-{name}"));
    let path = dir.join("shared.log");
    let p = path.to_str().unwrap().to_owned();
    run_appenders(n, |k| {
        vec![
            "rotating".into(),
            p.clone(),
            k.to_string(),
            count.to_string(),
            max_bytes.to_string(),
            backups.to_string(),
        ]
    });
    let mut files: Vec<PathBuf> = (1..=backups)
        .rev()
        .map(|i| PathBuf::from(format!("{}.{i}", path.display())))
        .filter(|f| f.exists())
        .collect();
    files.push(path.clone());
    assert!(!PathBuf::from(format!("{}.{}", path.display(), backups + 1)).exists());
    let mut found = vec![Vec::new(); n as usize];
    for file in &files {
        let size = fs::metadata(file).unwrap().len();
        assert!(size <= max_bytes, "{file:?} has {size} bytes");
        for line in read_lines(file) {
            let parsed = parse(&line);
            if parsed.target != CHILD_TARGET {
                continue;
            }
            let k = numbered(&parsed.rest, "proc").unwrap() as usize;
            found[k].push(numbered(&parsed.rest, "i").unwrap());
        }
    }
    (dir, files, found)
}

#[test]
fn a_line_longer_than_max_bytes_gets_a_file_of_its_own() {
    let dir = ScratchDir::new("log-longline");
    let path = dir.join("long.log");
    let logger = Logger::start(LogConfig::new(Sink::RotatingFile {
        path: path.clone(),
        max_bytes: 200,
        backups: 2,
    }))
    .unwrap();
    let long = "x".repeat(500);
    tracing::dispatcher::with_default(&logger.dispatch(), || {
        tracing::info!("short before");
        tracing::info!(long = long.as_str(), "long");
        tracing::info!("short after");
    });
    logger.shutdown();
    let backup = |i: u32| read_lines(Path::new(&format!("{}.{i}", path.display())));
    assert!(backup(2)[0].ends_with(": short before"));
    assert_eq!(backup(1).len(), 1, "the long line alone, no marker");
    assert!(backup(1)[0].contains(&long));
    let current = read_lines(&path);
    assert!(current.last().unwrap().ends_with(": short after"));
}

#[test]
fn processes_sharing_a_rotating_file_lose_no_line() {
    within_watchdog("the test", 4 * WATCHDOG, || {
        // Enough backups to keep every line, so the check is exact: 4 × 300 lines of about
        // 95 bytes over files of 4 KiB is about 30 files.
        let (_dir, files, found) = rotate_from_processes("procrot", 4, 300, 4096, 80);
        assert!(
            files.len() > 10,
            "expected many rotations, got {}",
            files.len()
        );
        assert!(files.len() <= 80, "backups exhausted: not exact");
        for (k, lines) in found.iter().enumerate() {
            assert_eq!(*lines, (0..300).collect::<Vec<_>>(), "process {k}");
        }
    });
}

#[test]
fn processes_sharing_a_rotating_file_keep_a_gap_free_tail() {
    within_watchdog("the test", 4 * WATCHDOG, || {
        // Few backups: most lines are rotated away. What is left of each process must be the
        // end of what it wrote, in order, with no hole (a line written to a stale, renamed
        // file would be deleted early and leave one).
        let (_dir, files, found) = rotate_from_processes("procrot-tail", 4, 1000, 4096, 4);
        assert_eq!(files.len(), 5);
        let mut kept = 0;
        for (k, lines) in found.iter().enumerate() {
            if let Some(first) = lines.first() {
                assert_eq!(*lines, (*first..1000).collect::<Vec<_>>(), "process {k}");
            }
            kept += lines.len();
        }
        assert!(kept >= 4 * 30, "only {kept} lines kept");
    });
}

#[test]
fn writers_killed_mid_rotation_do_not_block_or_lose_a_survivors_lines() {
    within_watchdog("the test", 4 * WATCHDOG, || {
        let dir = ScratchDir::new("log-killed");
        let path = dir.join("shared.log");
        let p = path.to_str().unwrap().to_owned();
        // Three processes rotate a small file as fast as they can; each is SIGKILLed while
        // writing, possibly holding the rotation lock or between two renames.
        let mut spammers: Vec<ChildProc> = (0..3)
            .map(|k| {
                let k = k.to_string();
                spawn_child("log-spam", &["rotating", &p, &k, "4096", "2"])
            })
            .collect();
        for child in &mut spammers {
            child.expect_exact("writing");
        }
        for child in &mut spammers {
            child.kill(); // SIGKILL
        }

        // The kernel released the dead processes' locks: a new writer finishes, and keeps
        // every line it wrote (enough backups for all of them), intact and in order.
        let backups = 50u32;
        run_appenders(1, |_| {
            vec![
                "rotating".into(),
                p.clone(),
                "9".into(),
                "300".into(),
                "4096".into(),
                backups.to_string(),
            ]
        });
        let mut text = String::new();
        for i in (1..=backups).rev() {
            if let Ok(t) = fs::read_to_string(format!("{p}.{i}")) {
                text.push_str(&t);
            }
        }
        text.push_str(&fs::read_to_string(&path).unwrap());
        // A killed writer may leave a torn last line (the kernel stops a write at a page
        // boundary for a fatal signal), so look for the survivor's lines as substrings.
        let mut from = 0;
        for i in 0..300 {
            let needle = format!(" {CHILD_TARGET}: child line proc=9 i={i}\n");
            assert_eq!(text.matches(&needle).count(), 1, "line {i}");
            let at = text[from..]
                .find(&needle)
                .unwrap_or_else(|| panic!("line {i} out of order"));
            from += at + needle.len();
        }
    });
}

#[test]
fn a_full_queue_drops_lines_and_reports_the_count_later() {
    within_watchdog("the test", 2 * WATCHDOG, || {
        let dir = ScratchDir::new("log-drop");
        let path = dir.join("drop.log");
        let logger =
            Logger::start(LogConfig::new(Sink::File(path.clone())).queue_capacity(16)).unwrap();
        let dispatch = logger.dispatch();
        let hold = logger.hold_writer().unwrap();
        // The writer is parked with an empty queue: exactly 16 lines fit, the rest drop.
        tracing::dispatcher::with_default(&dispatch, || {
            for i in 0..26 {
                tracing::info!(i, "fill");
            }
        });
        assert_eq!(logger.dropped_count(), 10);
        drop(hold);
        // Control calls still complete after drops.
        logger.flush().unwrap();

        let lines = read_lines(&path);
        let fills: Vec<u64> = lines
            .iter()
            .filter_map(|l| numbered(&parse(l).rest, "i"))
            .collect();
        assert_eq!(fills, (0..16).collect::<Vec<_>>());
        let reports: Vec<Parsed> = lines
            .iter()
            .map(|l| parse(l))
            .filter(|p| p.target == "labhub::log")
            .collect();
        assert_eq!(reports.len(), 1, "{lines:?}");
        assert_eq!(reports[0].level, "WARN");
        assert_eq!(reports[0].rest, "labhub log dropped 10 lines (queue full)");
        // The report comes after the lines that were accepted.
        assert!(lines.last().unwrap().contains("dropped 10 lines"));
        logger.shutdown();
    });
}

#[test]
fn a_log_directory_under_a_regular_file_is_a_typed_error() {
    let dir = ScratchDir::new("log-badpath");
    let regular = dir.join("regular");
    fs::write(&regular, b"not a directory").unwrap();
    let bad = regular.join("sub/app.log");

    let err = Logger::start(LogConfig::new(Sink::File(bad.clone()))).unwrap_err();
    match &err {
        LogError::CreateDir { path, .. } => assert_eq!(path, &regular.join("sub")),
        other => panic!("expected CreateDir, got {other:?}"),
    }
    assert!(
        err.to_string().contains("cannot create log directory"),
        "{err}"
    );

    let rotating = Sink::RotatingFile {
        path: bad.clone(),
        max_bytes: 100,
        backups: 1,
    };
    assert!(matches!(
        Logger::start(LogConfig::new(rotating)),
        Err(LogError::CreateDir { .. })
    ));

    // On a running logger the bad sink is refused and the old one stays in use.
    let good = dir.join("good.log");
    let logger = Logger::start(LogConfig::new(Sink::File(good.clone()))).unwrap();
    assert!(matches!(
        logger.set_sink(Sink::File(bad)),
        Err(LogError::CreateDir { .. })
    ));
    tracing::dispatcher::with_default(&logger.dispatch(), || tracing::info!("still here"));
    logger.flush().unwrap();
    assert!(read_lines(&good)[0].ends_with("still here"));
    logger.shutdown();
}

#[test]
fn the_log_module_with_a_bad_sink_fails_lifecycle_startup_with_the_typed_error() {
    use labhub::lifecycle::{Lifecycle, LifecycleError};
    let dir = ScratchDir::new("log-badmodule");
    let regular = dir.join("regular");
    fs::write(&regular, b"x").unwrap();
    // A private lifecycle: the failing startup never reaches the process-wide subscriber.
    let lifecycle = Lifecycle::new();
    let config = LogConfig::new(Sink::File(regular.join("app.log")));
    lifecycle.register(labhub::log::module(config)).unwrap();
    match lifecycle.initialize() {
        Err(LifecycleError::StartupFailed { module, source }) => {
            assert_eq!(module, labhub::log::MODULE_NAME);
            let log_error = source.downcast_ref::<LogError>().expect("a LogError");
            assert!(matches!(log_error, LogError::CreateDir { path, .. } if *path == regular));
        }
        other => panic!("expected StartupFailed, got {other:?}"),
    }
    assert!(lifecycle.service::<Logger>().is_none());
}

#[test]
fn unusable_sink_settings_are_typed_errors() {
    let dir = ScratchDir::new("log-badcfg");
    // A directory where the file should be.
    let err = Logger::start(LogConfig::new(Sink::File(dir.path().to_owned()))).unwrap_err();
    assert!(
        matches!(&err, LogError::Open { path, .. } if *path == dir.path()),
        "{err:?}"
    );
    let zero_size = Sink::RotatingFile {
        path: dir.join("r.log"),
        max_bytes: 0,
        backups: 2,
    };
    assert!(matches!(
        Logger::start(LogConfig::new(zero_size)),
        Err(LogError::InvalidRotation { .. })
    ));
    assert!(matches!(
        Logger::start(LogConfig::new(Sink::File(dir.join("q.log"))).queue_capacity(0)),
        Err(LogError::ZeroQueueCapacity)
    ));
    let nul = Sink::Syslog {
        ident: "bad\0ident".into(),
    };
    assert!(matches!(
        Logger::start(LogConfig::new(nul)),
        Err(LogError::InvalidSyslogIdent { .. })
    ));
}

#[test]
fn a_failing_sink_reports_its_error_at_the_next_flush() {
    // /dev/full opens fine and fails every write with ENOSPC.
    let full = Path::new("/dev/full");
    let logger = Logger::start(LogConfig::new(Sink::File(full.to_path_buf()))).unwrap();
    tracing::dispatcher::with_default(&logger.dispatch(), || tracing::info!("into the void"));
    match logger.flush() {
        Err(LogError::Write { sink, source }) => {
            assert_eq!(sink, "file /dev/full");
            assert_eq!(source.raw_os_error(), Some(28), "{source}"); // ENOSPC
        }
        other => panic!("expected a write error, got {other:?}"),
    }
    // Reported once; nothing failed since.
    logger.flush().unwrap();
    logger.shutdown();
}

#[test]
fn shutdown_drains_every_accepted_line() {
    within_watchdog("the test", 2 * WATCHDOG, || {
        let dir = ScratchDir::new("log-drain");
        let path = dir.join("drain.log");
        let logger =
            Logger::start(LogConfig::new(Sink::File(path.clone())).queue_capacity(2000)).unwrap();
        let hold = logger.hold_writer().unwrap();
        tracing::dispatcher::with_default(&logger.dispatch(), || {
            for i in 0..1000 {
                tracing::info!(i, "queued");
            }
        });
        // Shut down while all 1000 lines still wait in the queue behind the parked writer.
        let stopper = {
            let logger = Arc::clone(&logger);
            thread::spawn(move || logger.shutdown())
        };
        while logger.is_running() {
            thread::yield_now();
        }
        drop(hold);
        stopper.join().unwrap();

        let lines = read_lines(&path);
        let got: Vec<u64> = lines
            .iter()
            .map(|l| numbered(&parse(l).rest, "i").unwrap())
            .collect();
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
    });
}

#[test]
fn logging_after_shutdown_is_a_silent_no_op() {
    let dir = ScratchDir::new("log-after");
    let path = dir.join("after.log");
    let logger = Logger::start(LogConfig::new(Sink::File(path.clone()))).unwrap();
    let dispatch = logger.dispatch();
    tracing::dispatcher::with_default(&dispatch, || tracing::info!("before"));
    logger.shutdown();
    logger.shutdown(); // idempotent
    tracing::dispatcher::with_default(&dispatch, || tracing::info!("after"));
    assert_eq!(logger.dropped_count(), 0);
    assert!(matches!(logger.flush(), Err(LogError::Stopped)));
    assert!(matches!(
        logger.set_sink(Sink::File(dir.join("other.log"))),
        Err(LogError::Stopped)
    ));
    let lines = read_lines(&path);
    assert_eq!(lines.len(), 1);
    assert!(lines[0].ends_with(": before"));
}

#[test]
fn flush_returns_after_every_earlier_line_is_written() {
    within_watchdog("the test", 2 * WATCHDOG, || {
        let dir = ScratchDir::new("log-flush");
        let path = dir.join("flush.log");
        let logger = Logger::start(LogConfig::new(Sink::File(path.clone()))).unwrap();
        let dispatch = logger.dispatch();
        for round in 0..5u64 {
            tracing::dispatcher::with_default(&dispatch, || {
                for i in 0..100u64 {
                    tracing::info!(round, i, "before flush");
                }
            });
            logger.flush().unwrap();
            // Read while the logger runs: all lines are in the file.
            assert_eq!(read_lines(&path).len() as u64, (round + 1) * 100);
        }
        logger.shutdown();
    });
}

#[test]
fn level_changes_take_effect_at_run_time() {
    let dir = ScratchDir::new("log-level");
    let path = dir.join("level.log");
    let logger = Logger::start(LogConfig::new(Sink::File(path.clone()))).unwrap();
    assert_eq!(logger.level(), LevelFilter::INFO);
    let dispatch = logger.dispatch();
    let emit = |tag: &str| {
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::trace!(tag, "trace");
            tracing::debug!(tag, "debug");
            tracing::info!(tag, "info");
            tracing::warn!(tag, "warn");
            tracing::error!(tag, "error");
        })
    };
    emit("a");
    logger.set_level(LevelFilter::TRACE);
    emit("b");
    logger.set_level(LevelFilter::ERROR);
    emit("c");
    logger.set_level(LevelFilter::OFF);
    emit("d");
    logger.set_level(LevelFilter::DEBUG);
    emit("e");
    logger.flush().unwrap();
    let got: Vec<String> = read_lines(&path)
        .iter()
        .map(|l| {
            let p = parse(l);
            format!(
                "{}:{}",
                field(&p.rest, "tag").unwrap().trim_matches('"'),
                p.level
            )
        })
        .collect();
    let want = [
        "a:INFO", "a:WARN", "a:ERROR", //
        "b:TRACE", "b:DEBUG", "b:INFO", "b:WARN", "b:ERROR", //
        "c:ERROR", //
        "e:DEBUG", "e:INFO", "e:WARN", "e:ERROR",
    ];
    assert_eq!(got, want);
    logger.shutdown();
}

#[test]
fn set_sink_moves_later_lines_to_the_new_sink() {
    let dir = ScratchDir::new("log-switch");
    let (first, second) = (dir.join("first.log"), dir.join("deeper/second.log"));
    let logger = Logger::start(LogConfig::new(Sink::File(first.clone()))).unwrap();
    let dispatch = logger.dispatch();
    tracing::dispatcher::with_default(&dispatch, || tracing::info!("one"));
    logger.set_sink(Sink::File(second.clone())).unwrap();
    tracing::dispatcher::with_default(&dispatch, || tracing::info!("two"));
    logger.shutdown();
    assert_eq!(read_lines(&first).len(), 1);
    assert!(read_lines(&first)[0].ends_with(": one"));
    assert_eq!(read_lines(&second).len(), 1);
    assert!(read_lines(&second)[0].ends_with(": two"));
}

#[test]
fn spans_fields_and_multiline_messages_stay_on_one_line() {
    let dir = ScratchDir::new("log-shape");
    let path = dir.join("shape.log");
    let logger = Logger::start(LogConfig::new(Sink::File(path.clone()))).unwrap();
    tracing::dispatcher::with_default(&logger.dispatch(), || {
        let span = tracing::info_span!("open", channel = "cam0");
        let _in = span.enter();
        let inner = tracing::info_span!("slot", n = 3);
        let _in2 = inner.enter();
        tracing::warn!(
            text = "quoted \"x\"\nsecond",
            ok = true,
            ratio = 0.5,
            "first\nsecond"
        );
    });
    logger.shutdown();
    let lines = read_lines(&path);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let p = parse(&lines[0]);
    assert_eq!(p.level, "WARN");
    assert_eq!(p.target, "it::log");
    assert_eq!(
        p.rest,
        r#"open{channel="cam0"}:slot{n=3}: first\nsecond text="quoted \"x\"\nsecond" ok=true ratio=0.5"#
    );
}

#[test]
fn events_without_message_and_fields_before_the_message_keep_the_format() {
    let dir = ScratchDir::new("log-order");
    let path = dir.join("order.log");
    let logger = Logger::start(LogConfig::new(Sink::File(path.clone()))).unwrap();
    tracing::dispatcher::with_default(&logger.dispatch(), || {
        tracing::info!(a = 1, b = "x");
        tracing::event!(
            tracing::Level::INFO,
            a = 2,
            message = "late message",
            b = "y"
        );
    });
    logger.shutdown();
    let rests: Vec<String> = read_lines(&path).iter().map(|l| parse(l).rest).collect();
    assert_eq!(rests, [r#"a=1 b="x""#, r#"late message a=2 b="y""#]);
}

#[test]
fn syslog_sink_can_be_chosen_and_written() {
    // No syslog daemon may be running here: choosing the sink and writing must still work.
    let logger = Logger::start(LogConfig::new(Sink::Syslog {
        ident: "labhub-it".into(),
    }))
    .unwrap();
    tracing::dispatcher::with_default(&logger.dispatch(), || {
        tracing::info!(test = "syslog", "labhub integration test line");
        tracing::error!("labhub integration test error line");
    });
    logger.flush().unwrap();
    logger.shutdown();
}

#[test]
fn console_sink_can_be_chosen_and_written() {
    let logger = Logger::start(LogConfig::default()).unwrap();
    tracing::dispatcher::with_default(&logger.dispatch(), || {
        tracing::info!("labhub integration test console line")
    });
    logger.flush().unwrap();
    logger.shutdown();
}
