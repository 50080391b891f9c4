//! `labhub top` against a real `labhub hub --metrics` and a live producer: JSON Lines for
//! scripts, and the interactive table on a pseudo-terminal (util-linux `script`, part of every
//! Debian system), which `q` and SIGTERM leave with the terminal restored.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;
use wait_timeout::ChildExt as _;

use super::{Broker, Camera, UNREACHABLE, WATCHDOG, json, labhub, run};

/// Kills and reaps a child when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `labhub top ARGS --metrics METRICS` with the broker's home.
fn top(broker: &Broker, args: &[&str], metrics: &str) -> Command {
    let mut c = labhub(broker.home());
    c.arg("top").args(args).args(["--metrics", metrics]);
    c
}

#[test]
fn top_json_prints_a_sample_per_interval_with_the_live_channels_rate() {
    let broker = Broker::start_with_metrics();
    let metrics = broker
        .metrics
        .clone()
        .expect("the ready line names the metrics address");
    let camera = Camera::start(&broker);
    let name = camera.channel.name.clone();
    let mut live = top(&broker, &["--json", "--interval", "100ms"], &metrics);
    live.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = Reaped(live.spawn().unwrap());
    let (tx, lines) = mpsc::channel();
    let stdout = child.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // Samples keep coming until one shows the channel publishing (rates need two heartbeats).
    let deadline = Instant::now() + WATCHDOG;
    let sample = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .expect("watchdog: no sample with a positive rate");
        let sample: Value = json(&line);
        let ch = sample["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name.as_str())
            .cloned();
        if let Some(ch) = ch
            && ch["frames_per_s"].as_f64().is_some_and(|r| r > 0.0)
        {
            break ch;
        }
    };
    assert_eq!(sample["state"], "up");
    assert_eq!(sample["kind"], "shm");
    assert!(sample["mb_per_s"].as_f64().unwrap() > 0.0, "{sample}");
    assert!(sample["segment_bytes"].as_u64().unwrap() > 0, "{sample}");
    assert!(
        sample["producer_version"]
            .as_str()
            .unwrap()
            .starts_with("labhub-rs/")
    );
    drop(child);

    // --count ends it after that many samples.
    let r = run(top(
        &broker,
        &["--json", "--count", "2", "--interval", "100ms"],
        &metrics,
    ));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.lines().count(), 2, "{}", r.stdout);
    // Without a terminal the table is printed once per sample.
    let r = run(top(&broker, &["--count", "1"], &metrics));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.starts_with("CHANNEL"), "{}", r.stdout);
    assert!(r.stdout.contains(&name), "{}", r.stdout);
}

#[test]
fn top_without_a_metrics_endpoint_fails_with_the_unreachable_code() {
    let home = tempfile::tempdir().unwrap();
    // A port nobody listens on: bound and closed again.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = labhub(home.path());
    c.args(["top", "--json", "--metrics", &format!("127.0.0.1:{port}")]);
    let r = run(c);
    assert_eq!(r.code, UNREACHABLE, "{}", r.stderr);
    assert!(r.stderr.contains("labhub hub --metrics"), "{}", r.stderr);
}

/// `labhub top` on a pseudo-terminal made by `script`; everything it draws is collected.
struct Terminal {
    child: Reaped,
    screen: Arc<Mutex<Vec<u8>>>,
}

impl Terminal {
    /// With `exec`, the shell reports its pid and becomes `labhub top` (same pid), so the test
    /// can signal it; without, the shell prints the terminal settings after `top` ended.
    fn start(broker: &Broker, metrics: &str, exec: bool) -> Self {
        let exe = env!("CARGO_BIN_EXE_labhub");
        let top = format!("{exe} top --interval 200ms --metrics {metrics}");
        let inner = if exec {
            format!("echo TOP-PID $$; stty cols 160 rows 40; exec {top}")
        } else {
            format!("stty cols 160 rows 40; {top}; echo TOP-ENDED; stty -a")
        };
        let mut cmd = Command::new("script");
        cmd.args(["-q", "-f", "-e", "-c", &inner, "/dev/null"])
            .env("LABHUB_HOME", broker.home())
            .env("TERM", "xterm")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .expect("run `script` (util-linux, in every Debian system)");
        let mut stdout = child.stdout.take().unwrap();
        let screen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&screen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    return;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Self {
            child: Reaped(child),
            screen,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap()).into_owned()
    }

    /// Waits until the screen shows `what`; returns the output so far.
    fn wait_for(&self, what: &str) -> String {
        let deadline = Instant::now() + WATCHDOG;
        loop {
            let text = self.text();
            if text.contains(what) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "watchdog: no {what:?} on the screen:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> i32 {
        let text = self.wait_for("TOP-PID ");
        let rest = &text[text.find("TOP-PID ").unwrap() + 8..];
        rest.split_whitespace().next().unwrap().parse().unwrap()
    }

    fn press(&mut self, key: &[u8]) {
        let stdin = self.child.0.stdin.as_mut().unwrap();
        stdin.write_all(key).unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for `script` (and so `top`) to end; returns whether it succeeded.
    fn wait(&mut self) -> bool {
        let status = self
            .child
            .0
            .wait_timeout(WATCHDOG)
            .unwrap()
            .expect("watchdog: top did not end");
        status.success()
    }
}

/// What `top` must leave on the terminal after its last drawing: the main screen back and the
/// cursor shown.
fn assert_restored(text: &str) {
    let entered = text
        .rfind("\x1b[?1049h")
        .expect("top used the alternate screen");
    let left = text
        .rfind("\x1b[?1049l")
        .expect("top left the alternate screen");
    let shown = text
        .rfind("\x1b[?25h")
        .expect("top showed the cursor again");
    assert!(
        left > entered && shown > entered,
        "restored before it was entered:\n{text:?}"
    );
}

#[test]
fn top_on_a_terminal_shows_the_channel_and_q_restores_the_terminal() {
    let broker = Broker::start_with_metrics();
    let metrics = broker.metrics.clone().unwrap();
    let camera = Camera::start(&broker);
    let mut term = Terminal::start(&broker, &metrics, false);
    term.wait_for(&camera.channel.name);
    term.wait_for("q quits");
    term.press(b"q");
    assert!(term.wait(), "top failed:\n{}", term.text());
    let text = term.text();
    assert_restored(&text);
    // Raw mode is off again: the line discipline echoes and edits lines.
    let settings = &text[text
        .rfind("TOP-ENDED")
        .expect("the shell went on after top")..];
    let words: Vec<&str> = settings.split_whitespace().collect();
    for mode in ["icanon", "echo", "isig"] {
        assert!(
            words.contains(&mode),
            "{mode} is off after top:\n{settings}"
        );
    }
}

#[test]
fn top_on_a_terminal_restores_it_when_terminated() {
    let broker = Broker::start_with_metrics();
    let metrics = broker.metrics.clone().unwrap();
    let camera = Camera::start(&broker);
    let mut term = Terminal::start(&broker, &metrics, true);
    let pid = term.pid();
    term.wait_for(&camera.channel.name);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    assert!(term.wait(), "top failed on SIGTERM:\n{}", term.text());
    assert_restored(&term.text());
}
