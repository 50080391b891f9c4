//! The `labhub` command run as a process: exit codes, help, JSON output, and the channel
//! commands against a real broker (`labhub hub` in a child process, on free ports and a
//! temporary LABHUB_HOME).

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use labhub::client::{ClientConfig, Hub, ShmProducer};
use labhub::keys::{self, KeyPair, PublicKey};
use labhub::shm::Policy;
use serde_json::Value;
use wait_timeout::ChildExt as _;

#[path = "cli/bridge.rs"]
mod bridge;
#[path = "cli/demo.rs"]
mod demo;
#[path = "cli/flags.rs"]
mod flags;
#[path = "cli/record.rs"]
mod record;
#[path = "cli/top.rs"]
mod top;

/// Longest any `labhub` run may take before the test fails instead of hanging.
const WATCHDOG: Duration = Duration::from_secs(60);

const FAILURE: i32 = 1;
const USAGE: i32 = 2;
const UNREACHABLE: i32 = 3;
const NOT_FOUND: i32 = 4;

fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// `labhub` with a private home, so no test reads the user's real one.
fn labhub(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_labhub"));
    c.env("LABHUB_HOME", home)
        .env_remove("LABHUB_BROKER_ENDPOINT")
        .env_remove("LABHUB_BROKER_NOTIFY_ENDPOINT");
    c
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` to the end (killed after the watchdog, which fails the test).
fn run(mut cmd: Command) -> Run {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn labhub");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_thread = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        s
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).unwrap();
        s
    });
    let status = match child.wait_timeout(WATCHDOG).unwrap() {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("labhub {cmd:?} did not end within {WATCHDOG:?}");
        }
    };
    Run {
        code: status.code().expect("labhub ended by a signal"),
        stdout: out_thread.join().unwrap(),
        stderr: err_thread.join().unwrap(),
    }
}

/// A `labhub hub` child process on free ports with its own home; killed on drop.
struct Broker {
    child: Child,
    home: tempfile::TempDir,
    endpoint: String,
    notify_endpoint: String,
    public_key: PublicKey,
    /// The metrics address, when started with metrics.
    metrics: Option<String>,
}

impl Broker {
    fn start() -> Self {
        Self::start_in(None)
    }

    /// A broker that also serves metrics, on a free loopback port.
    fn start_with_metrics() -> Self {
        Self::start_with(None, &["--metrics", "127.0.0.1:0"])
    }

    /// A broker whose temporary directory (TMPDIR) is `tmp`.
    fn start_with_tmpdir(tmp: &Path) -> Self {
        Self::start_in(Some(tmp))
    }

    fn start_in(tmp: Option<&Path>) -> Self {
        Self::start_with(tmp, &[])
    }

    fn start_with(tmp: Option<&Path>, extra: &[&str]) -> Self {
        Self::start_in_home(tempfile::tempdir().unwrap(), tmp, extra)
    }

    /// A broker in `home`, which the caller may have prepared (keys, allow list, broker.toml).
    fn start_in_home(home: tempfile::TempDir, tmp: Option<&Path>, extra: &[&str]) -> Self {
        let any = "tcp://127.0.0.1:*";
        let (child, ready) = spawn_hub(home.path(), tmp, any, any, extra);
        Self {
            child,
            endpoint: ready["endpoint"].as_str().unwrap().to_owned(),
            notify_endpoint: ready["notify_endpoint"].as_str().unwrap().to_owned(),
            public_key: PublicKey::from_z85(ready["public_key"].as_str().unwrap()).unwrap(),
            metrics: ready["metrics"].as_str().map(str::to_owned),
            home,
        }
    }

    fn home(&self) -> &Path {
        self.home.path()
    }

    /// `labhub ARGS --broker <this broker>` with this broker's home.
    fn labhub(&self, args: &[&str]) -> Command {
        let mut c = labhub(self.home());
        c.args(args).args(["--broker", &self.endpoint]);
        c
    }

    fn hub(&self) -> Hub {
        let keys: KeyPair = keys::local_client_key(&self.home().join("keys")).unwrap();
        Hub::connect(
            ClientConfig::new(&self.endpoint, self.public_key, keys)
                .notify_endpoint(&self.notify_endpoint),
        )
        .unwrap()
    }
}

/// Starts `labhub hub` in `home` on these endpoints; returns it and its ready line.
fn spawn_hub(
    home: &Path,
    tmp: Option<&Path>,
    endpoint: &str,
    notify: &str,
    extra: &[&str],
) -> (Child, Value) {
    let mut hub = labhub(home);
    if let Some(tmp) = tmp {
        hub.env("TMPDIR", tmp);
    }
    let mut child = hub
        .args([
            "hub",
            "--endpoint",
            endpoint,
            "--notify-endpoint",
            notify,
            "--log-level",
            "warn",
            "--json",
        ])
        .args(extra)
        .env("LABHUB_BROKER_SECRET", "cli-test-password")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn labhub hub");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = match rx.recv_timeout(WATCHDOG) {
        Ok(line) if !line.is_empty() => line,
        _ => {
            let _ = child.kill();
            panic!("labhub hub printed no ready line");
        }
    };
    (
        child,
        serde_json::from_str(&line).expect("the ready line is JSON"),
    )
}

impl Broker {
    /// Kills the broker (SIGKILL) and starts it again in the same home on the same ports.
    fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, _) = spawn_hub(
            self.home.path(),
            None,
            &self.endpoint,
            &self.notify_endpoint,
            &[],
        );
        self.child = child;
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A registered shared-memory channel with a few frames, removed on drop.
struct Channel {
    name: String,
    producer: Option<ShmProducer<u16>>,
    hub: Hub,
}

impl Channel {
    fn new(broker: &Broker) -> Self {
        let hub = broker.hub();
        let name = unique("cli-test");
        // Frames of 32 x 64 u16 elements: 4096 bytes.
        let mut producer = hub
            .channel(&name)
            .policy(Policy::DoubleBuffer)
            .frames::<u16>(&[32, 64])
            .create()
            .unwrap();
        for _ in 0..3 {
            producer.publish(&[7u16; 2048], &[32, 64]).unwrap();
        }
        Self {
            name,
            producer: Some(producer),
            hub,
        }
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        drop(self.producer.take());
        self.hub.shutdown();
        let _ = labhub::shm::remove_channel(&self.name);
    }
}

/// A channel whose producer publishes a 4 KiB frame (32 × 64 u16) every 2 ms until dropped.
struct Camera {
    channel: Channel,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<labhub::client::ShmProducer<u16>>>,
}

impl Camera {
    fn start(broker: &Broker) -> Self {
        let mut channel = Channel::new(broker);
        let mut producer = channel.producer.take().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    producer.publish(&[1u16; 2048], &[32, 64]).unwrap();
                    std::thread::sleep(Duration::from_millis(2));
                }
                producer
            })
        };
        Self {
            channel,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take()
            && let Ok(p) = t.join()
        {
            self.channel.producer = Some(p);
        }
    }
}

fn json(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn version_prints_the_package_version() {
    let home = tempfile::tempdir().unwrap();
    let mut c = labhub(home.path());
    c.arg("--version");
    let r = run(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains(env!("CARGO_PKG_VERSION")), "{}", r.stdout);
}

#[test]
fn help_lists_the_commands_and_the_exit_codes() {
    let home = tempfile::tempdir().unwrap();
    let mut c = labhub(home.path());
    c.arg("--help");
    let r = run(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for word in ["hub", "keygen", "ls", "info", "watch", "demo", "Exit codes"] {
        assert!(r.stdout.contains(word), "no {word:?} in {}", r.stdout);
    }
}

#[test]
fn an_unknown_flag_is_a_usage_error_naming_the_flag() {
    let home = tempfile::tempdir().unwrap();
    let mut c = labhub(home.path());
    c.args(["ls", "--no-such-flag"]);
    let r = run(c);
    assert_eq!(r.code, USAGE);
    assert!(r.stderr.contains("--no-such-flag"), "{}", r.stderr);
    assert!(r.stdout.is_empty());
}

#[test]
fn a_bad_broker_endpoint_is_a_usage_error_before_anything_is_sent() {
    let home = tempfile::tempdir().unwrap();
    let mut c = labhub(home.path());
    c.args(["ls", "--broker", "localhost:5570"]);
    let r = run(c);
    assert_eq!(r.code, USAGE, "{}", r.stderr);
    assert!(r.stderr.contains("--broker"), "{}", r.stderr);
    // Validation comes before side effects: no client key was created in the home.
    assert!(!home.path().join("keys").exists());
}

#[test]
fn a_bad_frame_size_is_a_usage_error() {
    let home = tempfile::tempdir().unwrap();
    let mut c = labhub(home.path());
    c.args(["demo", "--frame-size", "12 parsecs"]);
    let r = run(c);
    assert_eq!(r.code, USAGE, "{}", r.stderr);
    assert!(r.stderr.contains("--frame-size"), "{}", r.stderr);
}

#[test]
fn demo_in_json_reports_a_positive_throughput_and_exits_0() {
    let home = tempfile::tempdir().unwrap();
    let mut c = labhub(home.path());
    c.args(["demo", "--seconds", "2", "--json"]);
    let r = run(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<Value> = r.stdout.lines().map(json).collect();
    let summary = lines.last().expect("a summary line");
    assert_eq!(summary["type"], "summary");
    assert!(
        summary["throughput_mb_s"].as_f64().unwrap() > 0.0,
        "{summary}"
    );
    assert!(
        summary["frames_received"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert_eq!(summary["frame_size"], 1 << 20);
    assert_eq!(summary["consumers"].as_array().unwrap().len(), 2);
    for c in summary["consumers"].as_array().unwrap() {
        assert_eq!(c["bad_frames"], 0, "{c}");
        assert!(c["latency_us_mean"].as_f64().is_some(), "{c}");
    }
    // First where it runs, then the samples.
    let start = &lines[0];
    assert_eq!(start["type"], "start", "{start}");
    assert!(
        start["channel"]
            .as_str()
            .unwrap()
            .starts_with("labhub-demo-")
    );
    assert!(
        lines[1..lines.len() - 1]
            .iter()
            .all(|l| l["type"] == "sample")
    );
    // The demo used a temporary home, never this one.
    assert!(!home.path().join("keys").exists());
}

#[test]
fn demo_prints_a_human_summary_line() {
    let home = tempfile::tempdir().unwrap();
    let mut c = labhub(home.path());
    c.args([
        "demo",
        "--seconds",
        "1",
        "--frame-size",
        "64k",
        "--consumers",
        "1",
    ]);
    let r = run(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let last = r.stdout.lines().last().unwrap();
    assert!(last.starts_with("demo: "), "{last}");
    assert!(last.contains("MB/s in all"), "{last}");
}

#[test]
fn a_closed_stdout_is_success() {
    let home = tempfile::tempdir().unwrap();
    let mut child = labhub(home.path())
        .args([
            "demo",
            "--seconds",
            "2",
            "--interval",
            "100ms",
            "--frame-size",
            "4k",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait_timeout(WATCHDOG).unwrap().expect("demo ended");
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn ls_shows_a_registered_channel_as_a_table_and_as_json() {
    let broker = Broker::start();
    let channel = Channel::new(&broker);

    let r = run(broker.labhub(&["ls"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let header = r.stdout.lines().next().unwrap();
    assert!(header.starts_with("NAME"), "{}", r.stdout);
    let row = r
        .stdout
        .lines()
        .find(|l| l.starts_with(&channel.name))
        .unwrap_or_else(|| panic!("{} not listed: {}", channel.name, r.stdout));
    assert!(row.contains("shm") && row.contains("up"), "{row}");
    assert!(row.contains("u16[32x64]"), "the frame type is shown: {row}");

    let r = run(broker.labhub(&["ls", "--json"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = json(&r.stdout);
    let found = v["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == channel.name.as_str())
        .expect("the channel in ls --json");
    assert_eq!(found["kind"], "shm");
    assert_eq!(found["state"], "up");
    assert_eq!(found["policy"], "double");
    assert_eq!(found["schema"]["element"], "u16");
    assert_eq!(found["schema"]["shape"], serde_json::json!([32, 64]));
    assert_eq!(found["consumers"], 0);
    assert_eq!(found["producer"], channel.hub.client_id().as_str());
    // The segment is on this machine, so its frame rate was measured (idle: 0).
    assert_eq!(found["frame_rate"].as_f64(), Some(0.0));
}

#[test]
fn info_shows_a_channel_and_its_segment_header() {
    let broker = Broker::start();
    let channel = Channel::new(&broker);
    // A reader holding the newest frame in place shows in the consumer table.
    let reader_hub = broker.hub();
    let mut reader = reader_hub.channel(&channel.name).open().unwrap();
    let held = reader.consumer().latest().unwrap().expect("a frame");
    assert_eq!(held.frame_id(), 2);

    let r = run(broker.labhub(&["info", &channel.name, "--sample", "0"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains(&format!("channel    {}", channel.name)),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("policy     double"), "{}", r.stdout);
    assert!(r.stdout.contains("published 3"), "{}", r.stdout);
    assert!(r.stdout.contains("holding frame 2"), "{}", r.stdout);
    assert!(r.stdout.contains("frames     u16[32x64]"), "{}", r.stdout);
    assert!(
        r.stdout.contains("shared     memfd via the broker"),
        "{}",
        r.stdout
    );
    // With whom: the producer's and the reader's grants, their keys and processes.
    let me = std::process::id();
    for (role, hub) in [("produce", &channel.hub), ("consume", &reader_hub)] {
        let line = format!("granted    {role} to {} (key ", hub.client_id());
        assert!(r.stdout.contains(&line), "{line}: {}", r.stdout);
    }
    assert!(r.stdout.contains(&format!("pid {me} uid ")), "{}", r.stdout);
    assert!(
        r.stdout.contains("frames of u16 [32 x 64] (numpy <u2)"),
        "{}",
        r.stdout
    );
    let consumers = run(broker.labhub(&["info", &channel.name, "--json"]));
    let v = json(&consumers.stdout);
    assert_eq!(
        v["segment"]["consumers"][0]["held"], 2,
        "{}",
        consumers.stdout
    );
    drop(held);
    drop(reader);
    reader_hub.shutdown();

    let r = run(broker.labhub(&["info", &channel.name, "--json"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = json(&r.stdout);
    assert_eq!(v["channel"]["name"], channel.name.as_str());
    assert_eq!(v["segment"]["slots"], 2);
    assert_eq!(v["segment"]["slot_size"], 4096);
    assert_eq!(v["segment"]["published"], 3);
    assert_eq!(
        v["segment"]["producer"]["pid"],
        u64::from(std::process::id())
    );
    assert_eq!(v["segment"]["producer"]["alive"], true);
    assert_eq!(v["segment"]["element"], "u16");
    assert_eq!(v["segment"]["numpy_dtype"], "<u2");
    assert_eq!(v["segment"]["max_shape"], serde_json::json!([32, 64]));
    assert_eq!(v["segment"]["consumers"].as_array().unwrap().len(), 0);
    assert_eq!(v["segment"]["sharing"], "memfd");
    assert_eq!(v["channel"]["sharing"], "memfd");
    assert_eq!(v["channel"]["grants"][0]["role"], "produce");
}

#[test]
fn info_of_a_missing_channel_exits_with_the_not_found_code() {
    let broker = Broker::start();
    let r = run(broker.labhub(&["info", "no-such-channel"]));
    assert_eq!(r.code, NOT_FOUND, "{}", r.stderr);
    assert!(r.stderr.contains("no-such-channel"), "{}", r.stderr);
    assert!(r.stdout.is_empty());
}

#[test]
fn watch_counts_the_frames_of_a_live_channel() {
    let broker = Broker::start();
    let camera = Camera::start(&broker);
    let r = run(broker.labhub(&[
        "watch",
        &camera.channel.name,
        "--count",
        "3",
        "--interval",
        "200ms",
        "--json",
    ]));
    drop(camera);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<Value> = r.stdout.lines().map(json).collect();
    assert_eq!(lines.len(), 4, "{}", r.stdout);
    assert!(lines[..3].iter().all(|l| l["type"] == "sample"));
    assert_eq!(lines[0]["element"], "u16");
    assert_eq!(lines[0]["max_shape"], serde_json::json!([32, 64]));
    let summary = &lines[3];
    assert_eq!(summary["type"], "summary");
    assert!(summary["frames"].as_u64().unwrap() > 0, "{summary}");
    assert_eq!(
        summary["bytes"].as_u64().unwrap(),
        4096 * summary["frames"].as_u64().unwrap()
    );
    assert!(summary["latency_us_max"].as_f64().is_some(), "{summary}");
}

#[test]
fn ls_with_no_broker_fails_with_the_unreachable_code() {
    let home = tempfile::tempdir().unwrap();
    // A port nobody listens on: bound and released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // A key that starts with `-` (Z85 allows it) must still be taken as the value.
    let key = loop {
        let k = KeyPair::generate().public.to_z85();
        if k.starts_with('-') {
            break k;
        }
    };
    let mut c = labhub(home.path());
    c.args([
        "ls",
        "--broker",
        &format!("tcp://127.0.0.1:{port}"),
        "--server-key",
        &key,
        "--timeout",
        "300ms",
    ]);
    let r = run(c);
    assert_eq!(r.code, UNREACHABLE, "{}", r.stderr);
    assert!(r.stderr.contains("no reply"), "{}", r.stderr);
}

#[test]
fn call_sends_a_request_and_prints_the_reply() {
    let broker = Broker::start();
    let hub = broker.hub();
    let name = unique("cli-call");
    let server = hub.req_server(&name).create().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let serving = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut served = 0;
            while !stop.load(Ordering::Relaxed) {
                server
                    .serve_one(Duration::from_millis(50), |req| {
                        served += 1;
                        req.to_ascii_uppercase()
                    })
                    .unwrap();
            }
            served
        })
    };
    let r = run(broker.labhub(&["call", &name, "hello labhub"]));
    let r_json = run(broker.labhub(&["call", &name, "again", "--json"]));
    stop.store(true, Ordering::Relaxed);
    let served = serving.join().unwrap();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "HELLO LABHUB\n");
    assert_eq!(r_json.code, 0, "{}", r_json.stderr);
    let v = json(&r_json.stdout);
    assert_eq!(v["reply"], "AGAIN");
    assert_eq!(v["utf8"], true);
    assert!(served >= 2);
    hub.shutdown();
}

#[test]
fn call_to_a_silent_server_exits_with_the_timeout_code() {
    let broker = Broker::start();
    let hub = broker.hub();
    let name = unique("cli-silent");
    // Bound and registered, never serving.
    let server = hub.req_server(&name).create().unwrap();
    let r = run(broker.labhub(&["call", &name, "anyone?", "--timeout", "300ms"]));
    assert_eq!(r.code, UNREACHABLE, "{}", r.stderr);
    assert!(r.stderr.contains("no reply"), "{}", r.stderr);
    drop(server);
    hub.shutdown();
}

#[test]
fn call_of_a_missing_channel_exits_with_the_not_found_code() {
    let broker = Broker::start();
    let r = run(broker.labhub(&["call", "nobody-serves-this", "x"]));
    assert_eq!(r.code, NOT_FOUND, "{}", r.stderr);
}

#[test]
fn pub_waiting_for_a_subscriber_that_never_comes_fails_after_the_wait_timeout() {
    let broker = Broker::start();
    let name = unique("cli-pub-alone");
    let r = run(broker.labhub(&[
        "pub",
        &name,
        "hello",
        "--wait-subscribers",
        "1",
        "--wait-timeout",
        "300ms",
    ]));
    assert_eq!(r.code, FAILURE, "{}", r.stderr);
    assert!(
        r.stderr.contains("only 0 of 1 subscriptions"),
        "{}",
        r.stderr
    );
}

#[test]
fn pub_and_sub_round_trip_messages_through_a_registered_channel() {
    use std::io::Write as _;
    let broker = Broker::start();
    let name = unique("cli-pubsub");
    let mut publisher = broker
        .labhub(&[
            "pub",
            &name,
            "-",
            "--topic",
            "temps",
            "--wait-subscribers",
            "1",
            "--json",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The stdin lines wait in the pipe until the subscriber is there.
    let mut stdin = publisher.stdin.take().unwrap();
    stdin.write_all(b"21.5\n22.0\n").unwrap();
    drop(stdin);
    // Synchronise on the publisher's "waiting for 1 subscriber(s)" line: registered by then.
    let stderr = publisher.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let _ = tx.send(line.unwrap_or_default());
        }
    });
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(WATCHDOG) {
            Ok(line) if line.starts_with("waiting for 1 subscriber") => break,
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = publisher.kill();
                panic!("labhub pub never waited for subscribers: {seen:?}");
            }
        }
    }
    // No sleep anywhere: pub sends once this subscriber's subscription has reached it, so
    // both lines arrive.
    let sub = run(broker.labhub(&["sub", &name, "--count", "2", "--json"]));
    let status = publisher
        .wait_timeout(WATCHDOG)
        .unwrap()
        .expect("pub ended");
    let mut pub_out = String::new();
    publisher
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut pub_out)
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(json(&pub_out)["sent"], 2);
    assert_eq!(sub.code, 0, "{}", sub.stderr);
    let messages: Vec<Value> = sub.stdout.lines().map(json).collect();
    assert_eq!(messages.len(), 2, "{}", sub.stdout);
    assert_eq!(messages[0]["topic"], "temps");
    assert_eq!(messages[0]["payload"], "21.5");
    assert_eq!(messages[1]["payload"], "22.0");
}

// ---- message channels against hostile peers ---------------------------------------------

/// A `labhub pub NAME -` waiting for one subscriber, its stdin open, and the endpoint it
/// reported.
fn pub_waiting(broker: &Broker, name: &str) -> (Child, String) {
    let mut publisher = broker
        .labhub(&["pub", name, "-", "--topic", "t", "--wait-subscribers", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = publisher.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let _ = tx.send(line.unwrap_or_default());
        }
    });
    loop {
        match rx.recv_timeout(WATCHDOG) {
            Ok(line) if line.starts_with("waiting for 1 subscriber") => {
                let endpoint = line
                    .rsplit_once('(')
                    .and_then(|(_, e)| e.strip_suffix(')'))
                    .unwrap()
                    .to_owned();
                return (publisher, endpoint);
            }
            Ok(_) => {}
            Err(_) => {
                let _ = publisher.kill();
                panic!("labhub pub never waited for subscribers");
            }
        }
    }
}

/// A socket with its monitor on; true once a handshake succeeded, false once one failed.
fn handshake_succeeds(socket: &labhub_zmq::Socket) -> bool {
    use labhub_zmq::SocketEvent::*;
    let monitor = socket.monitor_socket().unwrap();
    loop {
        let mut items = [monitor.poll_item(labhub_zmq::PollEvents::IN)];
        let ready = labhub_zmq::poll(&mut items, Some(WATCHDOG)).unwrap();
        assert!(ready > 0, "watchdog: no handshake within {WATCHDOG:?}");
        while let Ok(e) = socket.recv_monitor_event(labhub_zmq::Flags::DONTWAIT) {
            match e.event {
                HandshakeSucceeded => return true,
                HandshakeFailedProtocol | HandshakeFailedAuth | HandshakeFailedNoDetail => {
                    return false;
                }
                _ => {}
            }
        }
    }
}

#[test]
fn pub_messages_are_unreadable_by_a_subscriber_without_a_key_at_the_listed_endpoint() {
    use std::io::Write as _;
    let broker = Broker::start();
    let name = unique("cli-wiretap");
    let (mut publisher, _) = pub_waiting(&broker, &name);
    let mut stdin = publisher.stdin.take().unwrap();
    stdin.write_all(b"secret\n").unwrap();
    drop(stdin);
    // The endpoint and key as anyone who may list channels sees them.
    let listed = run(broker.labhub(&["ls", "--json"]));
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    let channels = json(&listed.stdout)["channels"].clone();
    let channel = channels
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name.as_str())
        .unwrap()
        .clone();
    let endpoint = channel["endpoint"].as_str().unwrap();

    let context = labhub_zmq::Context::new().unwrap();
    let mut tap = context.socket(labhub_zmq::SocketType::Sub).unwrap();
    tap.enable_monitor().unwrap();
    tap.subscribe(b"").unwrap();
    tap.connect(endpoint).unwrap();
    let mut items = [tap.poll_item(labhub_zmq::PollEvents::IN)];
    if handshake_succeeds(&tap) {
        // Its subscription is the one pub waits for: pub then sends to it.
        labhub_zmq::poll(&mut items, Some(WATCHDOG)).unwrap();
        let frames = tap.recv_multipart_bytes(labhub_zmq::Flags::DONTWAIT);
        let _ = publisher.kill();
        panic!("a subscriber without a key read the channel: {frames:?}");
    }
    // The subscriber with the local key gets the message; the tap's connection is closed.
    let sub = run(broker.labhub(&["sub", &name, "--count", "1"]));
    assert_eq!(sub.code, 0, "{}", sub.stderr);
    assert_eq!(sub.stdout, "t\tsecret\n");
    let status = publisher
        .wait_timeout(WATCHDOG)
        .unwrap()
        .expect("pub ended");
    assert!(status.success());
    assert_eq!(
        labhub_zmq::poll(&mut items, Some(Duration::ZERO)).unwrap(),
        0
    );
    // What the admitted subscriber connected with: the key the listing shows.
    assert_eq!(channel["server_key"].as_str().map(str::len), Some(40));
}

#[test]
fn sub_ends_with_an_error_when_its_publisher_dies_and_prints_nothing_an_impostor_sends() {
    use std::io::Write as _;
    let broker = Broker::start();
    let name = unique("cli-impostor");
    let (mut publisher, endpoint) = pub_waiting(&broker, &name);
    let mut sub = broker
        .labhub(&["sub", &name])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel();
    let stdout = sub.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap_or_default());
        }
    });
    let mut stdin = publisher.stdin.take().unwrap();
    stdin.write_all(b"real\n").unwrap();
    stdin.flush().unwrap();
    assert_eq!(lines.recv_timeout(WATCHDOG).unwrap(), "t\treal");

    // The publisher dies; an impostor binds its endpoint and publishes.
    let _ = publisher.kill();
    let _ = publisher.wait();
    drop(stdin);
    let context = labhub_zmq::Context::new().unwrap();
    let impostor = context.socket(labhub_zmq::SocketType::Pub).unwrap();
    impostor.bind(&endpoint).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let forging = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ =
                    impostor.send_multipart([&b"t"[..], b"forged"], labhub_zmq::Flags::DONTWAIT);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    // sub ends by itself (the connection closed); it must print no forged line meanwhile.
    let deadline = std::time::Instant::now() + WATCHDOG;
    let status = loop {
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(20)) {
            let _ = sub.kill();
            panic!("sub printed {line:?} after its publisher died");
        }
        if let Some(status) = sub.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = sub.kill();
            panic!("sub neither ended nor printed within {WATCHDOG:?}");
        }
    };
    stop.store(true, Ordering::Relaxed);
    forging.join().unwrap();
    let mut stderr = String::new();
    sub.stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(FAILURE), "{stderr}");
    assert!(stderr.contains("closed"), "{stderr}");
    while let Ok(line) = lines.recv_timeout(Duration::ZERO) {
        assert_ne!(line, "t\tforged");
    }
}

#[test]
fn sub_refuses_a_huge_message_with_an_error_without_reading_it_into_memory() {
    let broker = Broker::start();
    let hub = broker.hub();
    let name = unique("cli-huge");
    // The rogue is the registered publisher itself: an admitted, hostile client.
    let publisher = hub.publisher(&name).create().unwrap();
    #[expect(
        clippy::zombie_processes,
        reason = "reaped by wait4 below, which also reports its peak RSS"
    )]
    // One message is all it may read: a sub that takes the huge one ends after it.
    let mut sub = broker
        .labhub(&["sub", &name, "--count", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    publisher.wait_for_subscribers(1, WATCHDOG).unwrap();
    // Zero pages, untouched until ZeroMQ copies them.
    publisher.send("t", vec![0u8; 1 << 30]).unwrap();
    let pid = sub.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; both pointers are valid for the call.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid);
    let mut stderr = String::new();
    sub.stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let peak = usage.ru_maxrss as u64 * 1024;
    eprintln!("labhub sub peak RSS after a 1 GiB message: {peak} bytes");
    assert!(peak < 256 << 20, "sub's peak RSS is {peak} bytes");
    assert!(libc::WIFEXITED(status), "sub ended by a signal: {stderr}");
    assert_eq!(libc::WEXITSTATUS(status), FAILURE, "{stderr}");
    assert!(stderr.contains("limit of 33554432 bytes"), "{stderr}");
    drop(publisher);
    hub.shutdown();
}
