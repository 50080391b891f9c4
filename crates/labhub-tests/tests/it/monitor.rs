//! The broker's web monitor in a real headless browser: Debian's Chromium
//! (`/usr/bin/chromium`, which `.ci/run` installs when missing) driven by playwright-core from
//! npm (installed under the target folder at a pinned version when missing) through
//! `tests/browser/monitor.cjs`. The page loads, a channel appears when its producer starts, its
//! rate moves, and it shows down once the producer is SIGKILLed.
//!
//! docs/monitor.png is this test's screenshot:
//! `LABHUB_MONITOR_SCREENSHOT=$PWD/docs/monitor.png LABHUB_MONITOR_POINTS=110 cargo test -p
//! labhub-tests --test it monitor::the_monitor_shows`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::{ChildProc, unique};
use crate::metrics::MetricsBroker;

/// The playwright-core release the test drives Chromium with.
const PLAYWRIGHT_CORE: &str = "1.65.1";

/// Debian's Chromium.
fn chromium() -> PathBuf {
    let path =
        PathBuf::from(std::env::var_os("CHROMIUM").unwrap_or_else(|| "/usr/bin/chromium".into()));
    assert!(
        path.exists(),
        "{} is missing: install Debian's chromium (`apt-get install chromium`; .ci/run does)",
        path.display()
    );
    path
}

/// The playwright-core package directory, installed with npm under the target folder once.
fn playwright_core() -> PathBuf {
    let base =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("playwright-core-{PLAYWRIGHT_CORE}"));
    let module = |dir: &Path| dir.join("node_modules").join("playwright-core");
    if module(&base).join("package.json").exists() {
        return module(&base);
    }
    // Installed aside and renamed into place, so tests running at once never see half of it.
    let staging = base.with_extension(unique("staging"));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).unwrap();
    let out = Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            "--prefix",
        ])
        .arg(&staging)
        .arg(format!("playwright-core@{PLAYWRIGHT_CORE}"))
        .stdin(Stdio::null())
        .output()
        .expect("run npm (Node.js and npm are needed for the browser test)");
    assert!(
        out.status.success(),
        "npm install playwright-core@{PLAYWRIGHT_CORE} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if std::fs::rename(&staging, &base).is_err() {
        // Another test won the race; its copy is as good.
        let _ = std::fs::remove_dir_all(&staging);
    }
    assert!(module(&base).join("package.json").exists());
    module(&base)
}

/// The browser driver process.
struct Browser(ChildProc);

impl Browser {
    fn open(url: &str, screenshot: &Path) -> Self {
        let chromium = chromium();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/monitor.cjs");
        let mut cmd = Command::new("node");
        cmd.arg(script)
            .arg(url)
            .arg(screenshot)
            .env("PLAYWRIGHT_CORE", playwright_core())
            .env("CHROMIUM", chromium);
        Self(ChildProc::from_command("browser", cmd))
    }

    /// Sends `step`; returns the next line, which must start with `answer`.
    fn step(&mut self, step: &str, answer: &str) -> String {
        self.0.send_line(step);
        self.expect(answer)
    }

    fn expect(&mut self, answer: &str) -> String {
        let line = self.0.next_line();
        assert!(
            line.starts_with(answer),
            "the browser said {line:?}, expected {answer:?}; stderr:\n{}",
            self.0.stderr()
        );
        line
    }

    fn quit(mut self) {
        self.0.send_line("quit");
        self.0.wait_success();
    }
}

fn screenshot_path() -> PathBuf {
    std::env::var_os("LABHUB_MONITOR_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique("monitor") + ".png"))
}

#[test]
fn the_monitor_shows_a_channel_appear_move_and_go_down_when_its_producer_is_killed() {
    let broker = MetricsBroker::start("127.0.0.1:0", &[]);
    let shot = screenshot_path();
    let mut browser = Browser::open(&format!("http://{}/", broker.metrics), &shot);
    browser.step("start", "loaded");
    let name = unique("camera");
    let mut producer = broker.client("client-producer", &name);
    let _consumer = broker.client("client-consumer", &name);
    let _other = broker.client("client-producer", &unique("spectrometer"));
    browser.step(&format!("appear {name}"), "appeared");
    let rate: f64 = browser.expect("rate ")["rate ".len()..].parse().unwrap();
    assert!(rate > 0.0);
    browser.step(&format!("consumer {name}"), "consumer ");
    // A sample every heartbeat interval (100 ms here): the plot fills with history
    // (LABHUB_MONITOR_POINTS, default 30, of the 120 it shows).
    let points = std::env::var("LABHUB_MONITOR_POINTS").unwrap_or_else(|_| "30".into());
    browser.step(&format!("points {name} {points}"), "points");
    browser.step("screenshot", "screenshot");
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "not a PNG: {}",
        shot.display()
    );
    producer.kill();
    browser.step(&format!("down {name}"), "down");
    browser.quit();
}

#[test]
fn the_monitor_takes_its_token_from_the_address_fragment_and_hides_it() {
    let broker = MetricsBroker::start("0.0.0.0:0", &[]);
    let token = std::fs::read_to_string(broker.home.join("metrics.token")).unwrap();
    let base = format!("http://{}/", broker.loopback());
    let mut browser = Browser::open(&base, &screenshot_path());
    browser.step("unauthorised", "unauthorised");
    browser.step(&format!("start {base}#token={}", token.trim()), "loaded");
    // The token left the address bar (and so the history) once read.
    assert_eq!(browser.step("hash", "hash "), "hash ");
    browser.quit();
}
