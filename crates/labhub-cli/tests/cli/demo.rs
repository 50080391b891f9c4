//! `labhub demo` as a process: its temporary home is private, SIGINT and SIGTERM end it cleanly,
//! and what a killed demo leaves is reaped by the next demo or `labhub hub`, never what a live
//! demo holds. Each test gives its demos a private temporary directory (TMPDIR), so no other
//! test's demos are seen.

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;

use rustix::process::{Pid, Signal, kill_process};
use serde_json::Value;
use wait_timeout::ChildExt as _;

use super::{Broker, WATCHDOG, json, labhub, run};

/// A `labhub demo --json` child whose stdout lines are read as they come; killed on drop.
struct Demo {
    child: Child,
    lines: mpsc::Receiver<String>,
    home: PathBuf,
    channel: String,
}

/// Processes holding a descriptor of a memfd of channel `channel` (`/proc/*/fd` links to
/// `/memfd:labhub:<channel>:…`): none once every holder is gone, when the kernel frees it.
fn segment_holders(channel: &str) -> Vec<u32> {
    let want = format!("/memfd:labhub:{channel}:");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.filter_map(Result::ok).any(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|t| t.to_string_lossy().starts_with(&want))
                })
            })
        })
        .collect()
}

impl Demo {
    /// Whether the demo's channel segment exists: some process holds its memfds.
    fn segment_exists(&self) -> bool {
        !segment_holders(&self.channel).is_empty()
    }
}

impl Demo {
    /// Starts a demo that runs until stopped, and waits until its channel carries frames.
    fn start(tmp: &Path) -> Self {
        let mut child = labhub(tmp)
            .env("TMPDIR", tmp)
            .args([
                "demo",
                "--seconds",
                "3600",
                "--interval",
                "50ms",
                "--frame-size",
                "4KiB",
                "--consumers",
                "1",
                "--json",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn labhub demo");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if tx.send(line.unwrap_or_default()).is_err() {
                    break;
                }
            }
        });
        let mut demo = Self {
            child,
            lines,
            home: PathBuf::new(),
            channel: String::new(),
        };
        let start = demo.next_line();
        assert_eq!(start["type"], "start", "{start}");
        demo.home = PathBuf::from(start["home"].as_str().unwrap());
        assert_eq!(start["sharing"], "memfd", "{start}");
        demo.channel = start["channel"].as_str().unwrap().to_owned();
        assert_eq!(demo.home.parent(), Some(tmp), "{start}");
        // A sample with frames: the channel's segment exists and is in use.
        demo.next_sample_with_frames();
        demo
    }

    fn next_line(&mut self) -> Value {
        match self.lines.recv_timeout(WATCHDOG) {
            Ok(line) => json(&line),
            Err(_) => {
                let _ = self.child.kill();
                panic!("labhub demo printed nothing within {WATCHDOG:?}");
            }
        }
    }

    fn next_sample_with_frames(&mut self) {
        loop {
            let line = self.next_line();
            assert_eq!(line["type"], "sample", "{line}");
            if line["consumers"][0]["frames"].as_u64().unwrap() > 0 {
                return;
            }
        }
    }

    fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap()).unwrap();
        kill_process(pid, signal).unwrap();
    }

    /// Waits for the end; the exit code, or `None` when a signal ended it.
    fn wait(&mut self) -> Option<i32> {
        let status = self
            .child
            .wait_timeout(WATCHDOG)
            .unwrap()
            .expect("labhub demo did not end within the watchdog");
        status.code()
    }

    /// The remaining stdout lines, up to the end of the output (call after the end).
    fn rest(&mut self) -> Vec<Value> {
        let mut rest = Vec::new();
        loop {
            match self.lines.recv_timeout(WATCHDOG) {
                Ok(line) => rest.push(json(&line)),
                Err(mpsc::RecvTimeoutError::Disconnected) => return rest,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("stdout stayed open"),
            }
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_demo_home_is_private_to_its_user() {
    let tmp = tempfile::tempdir().unwrap();
    let mut demo = Demo::start(tmp.path());
    let meta = std::fs::symlink_metadata(&demo.home).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o700);
    assert_eq!(meta.uid(), rustix::process::geteuid().as_raw());
    // It holds the demo broker's secret key.
    assert!(demo.home.join("keys").join("broker.secret").exists());
    demo.signal(Signal::TERM);
    assert_eq!(demo.wait(), Some(0));
}

#[test]
fn sigterm_and_sigint_stop_the_demo_cleanly_and_remove_its_home_and_segment() {
    for signal in [Signal::TERM, Signal::INT] {
        let tmp = tempfile::tempdir().unwrap();
        let mut demo = Demo::start(tmp.path());
        assert!(demo.home.exists() && demo.segment_exists());
        demo.signal(signal);
        assert_eq!(demo.wait(), Some(0), "{signal:?}");
        let rest = demo.rest();
        let summary = rest.last().expect("a summary");
        assert_eq!(summary["type"], "summary", "{signal:?}: {summary}");
        assert!(
            !demo.home.exists(),
            "{signal:?}: {} left",
            demo.home.display()
        );
        assert!(
            !demo.segment_exists(),
            "{signal:?}: the memfds of {} are held by {:?}",
            demo.channel,
            segment_holders(&demo.channel)
        );
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }
}

/// Runs a 0.1 s demo with temporary directory `tmp` and `extra` arguments to a successful end;
/// returns its JSON lines.
pub(super) fn short_demo(tmp: &Path, extra: &[&str]) -> Vec<Value> {
    let mut demo = labhub(tmp);
    demo.env("TMPDIR", tmp)
        .args(["demo", "--seconds", "0.1", "--consumers", "1", "--json"])
        .args(extra);
    let r = run(demo);
    assert_eq!(r.code, 0, "{extra:?}: {}", r.stderr);
    r.stdout.lines().map(json).collect()
}

/// SIGKILLs a demo and checks it left its home (what the reapers must remove) and nothing of
/// its channel's segment (memfds: the kernel frees them with their last holder).
fn killed_demo(tmp: &Path) -> PathBuf {
    let mut demo = Demo::start(tmp);
    demo.signal(Signal::KILL);
    assert_eq!(demo.wait(), None);
    assert!(demo.home.exists(), "a SIGKILLed demo cannot clean up");
    assert!(
        !demo.segment_exists(),
        "the memfds of {} outlived the killed demo: held by {:?}",
        demo.channel,
        segment_holders(&demo.channel)
    );
    demo.home.clone()
}

#[test]
fn the_next_demo_reaps_what_a_killed_demo_left() {
    let tmp = tempfile::tempdir().unwrap();
    let home = killed_demo(tmp.path());
    short_demo(tmp.path(), &[]);
    assert!(!home.exists(), "{} left", home.display());
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn labhub_hub_reaps_what_a_killed_demo_left_before_it_is_ready() {
    let tmp = tempfile::tempdir().unwrap();
    let home = killed_demo(tmp.path());
    // The hub reaps before it prints its ready line, which `Broker::start` waits for.
    let broker = Broker::start_with_tmpdir(tmp.path());
    assert!(!home.exists(), "{} left", home.display());
    drop(broker);
}

#[test]
fn a_live_demo_is_never_reaped() {
    let tmp = tempfile::tempdir().unwrap();
    let mut live = Demo::start(tmp.path());
    short_demo(tmp.path(), &[]);
    let broker = Broker::start_with_tmpdir(tmp.path());
    assert!(live.home.exists() && live.segment_exists());
    // Still running and serving its consumer.
    live.next_sample_with_frames();
    drop(broker);
    live.signal(Signal::TERM);
    assert_eq!(live.wait(), Some(0));
    assert!(!live.home.exists() && !live.segment_exists());
}

#[test]
fn only_provably_dead_demo_homes_of_this_user_are_reaped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = |name: &str, marker: bool, lock: bool| {
        let d = tmp.path().join(name);
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("keep"), "x").unwrap();
        if marker {
            std::fs::write(d.join("demo.json"), "{}").unwrap();
        }
        if lock {
            std::fs::write(d.join("demo.lock"), "").unwrap();
        }
        d
    };
    // Marker and free lock: a dead demo's.
    let dead = dir("labhub-demo-dead01", true, true);
    // No marker: a demo that has not locked its home yet, or not a demo's at all.
    let unmarked = dir("labhub-demo-nomark", false, true);
    let unlocked = dir("labhub-demo-nolock", true, false);
    // A symlink with the demo prefix, to a directory that looks dead: neither is touched.
    let target = dir("elsewhere", true, true);
    let link = tmp.path().join("labhub-demo-link01");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    // Another user's (only root can make one).
    let foreign = rustix::process::geteuid().is_root().then(|| {
        let d = dir("labhub-demo-other1", true, true);
        for p in [
            d.join("keep"),
            d.join("demo.json"),
            d.join("demo.lock"),
            d.clone(),
        ] {
            std::os::unix::fs::lchown(&p, Some(65_534), Some(65_534)).unwrap();
        }
        d
    });
    short_demo(tmp.path(), &[]);
    assert!(!dead.exists());
    for kept in [&unmarked, &unlocked, &target] {
        assert!(kept.join("keep").exists(), "{} was removed", kept.display());
    }
    assert!(std::fs::symlink_metadata(&link).is_ok());
    if let Some(foreign) = foreign {
        assert!(
            foreign.join("keep").exists(),
            "another user's home was removed"
        );
    }
}
