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

#[path = "cli/demo.rs"]
mod demo;
#[path = "cli/flags.rs"]
mod flags;
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
        let home = tempfile::tempdir().unwrap();
        let mut hub = labhub(home.path());
        if let Some(tmp) = tmp {
            hub.env("TMPDIR", tmp);
        }
        let mut child = hub
            .args([
                "hub",
                "--endpoint",
                "tcp://127.0.0.1:*",
                "--notify-endpoint",
                "tcp://127.0.0.1:*",
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
        let ready: Value = serde_json::from_str(&line).expect("the ready line is JSON");
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

/// Registers `server`'s endpoint as a request/reply channel through `hub`.
fn register_reqrep(hub: &Hub, name: &str, endpoint: &str) {
    use labhub::protocol::{ChannelKind, ChannelName, ChannelSpec, Endpoint, Metadata};
    hub.register(ChannelSpec {
        name: ChannelName::new(name).unwrap(),
        kind: ChannelKind::Reqrep,
        endpoint: Some(Endpoint::new(endpoint).unwrap()),
        shm_name: None,
        sharing: None,
        size: None,
        policy: None,
        schema: None,
        metadata: Metadata::new(),
    })
    .unwrap();
}

#[test]
fn call_sends_a_request_and_prints_the_reply() {
    let broker = Broker::start();
    let hub = broker.hub();
    let name = unique("cli-call");
    let context = labhub::msg::Context::new().unwrap();
    let server = labhub::msg::ReqServer::builder(&context).create().unwrap();
    register_reqrep(&hub, &name, server.endpoint());
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
    let context = labhub::msg::Context::new().unwrap();
    // Bound and registered, never serving.
    let server = labhub::msg::ReqServer::builder(&context).create().unwrap();
    register_reqrep(&hub, &name, server.endpoint());
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
