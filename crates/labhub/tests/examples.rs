//! The shared-memory examples run as processes: `--help` does nothing but print help, and
//! SIGTERM stops the producer through its cleanup (it unregisters its channel).
//!
//! The examples are built by `cargo test` (every example of the package is).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use labhub::broker::BrokerConfig;
use labhub::client::{ClientConfig, Hub};
use labhub::name::ChannelName;

/// Longest any wait here may take before the test fails instead of hanging.
const WATCHDOG: Duration = Duration::from_secs(60);

fn example(name: &str) -> PathBuf {
    // target/<profile>/deps/examples-<hash> → target/<profile>/examples/<name>
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: `cargo test` builds the examples",
        path.display()
    );
    path
}

/// A fresh directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("labhub-example-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn segment_exists(channel: &str) -> bool {
    let name = ChannelName::new(channel).unwrap().segment_name();
    Path::new("/dev/shm").join(&name[1..]).exists()
}

#[test]
fn the_producer_example_answers_help_without_creating_a_channel() {
    let home = Scratch::new("help");
    let out = Command::new(example("shm_producer"))
        .arg("--help")
        .env("LABHUB_HOME", &home.0)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("Usage"), "{stdout}");
    assert!(
        !segment_exists("--help"),
        "a channel named --help was created"
    );
}

#[test]
fn the_producer_example_unregisters_its_channel_on_sigterm() {
    let home = Scratch::new("sigterm");
    let endpoint = format!("ipc://{}", home.0.join("broker.sock").display());
    let notify = format!("ipc://{}", home.0.join("notify.sock").display());
    let mut config = BrokerConfig::for_home(&home.0);
    config.endpoint = endpoint.clone();
    config.notify_endpoint = notify.clone();
    config.reap_stale_segments = false;
    // Long enough that only an unregistration takes the channel down within this test.
    config.registry.heartbeat_interval = Duration::from_secs(60);
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready) = mpsc::channel();
    let broker = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            labhub::broker::run(config, &stop, |_| {
                let _ = ready_tx.send(());
            })
        })
    };
    ready.recv_timeout(WATCHDOG).expect("the broker is ready");

    let channel = format!("example-sigterm-{}", std::process::id());
    let mut child = Command::new(example("shm_producer"))
        .arg(&channel)
        .env("LABHUB_HOME", &home.0)
        .env("LABHUB_BROKER_ENDPOINT", &endpoint)
        .env("LABHUB_BROKER_NOTIFY_ENDPOINT", &notify)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (line_tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = line_tx.send(line);
        }
    });
    let first = lines.recv_timeout(WATCHDOG).expect("the example starts");
    assert!(first.starts_with("producing on"), "{first}");

    let mut client = ClientConfig::from_home(&home.0)
        .unwrap()
        .request_timeout(Duration::from_secs(5));
    client.endpoint = endpoint.clone();
    let hub = Hub::connect(client).unwrap();
    assert!(hub.discover(&channel).is_ok(), "registered while it runs");

    // SAFETY: a signal to our own child process; no memory is touched.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "SIGTERM ends it through its cleanup: {status}"
    );
    assert!(
        hub.discover(&channel).is_err(),
        "the channel was unregistered"
    );
    hub.shutdown();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    broker.join().unwrap().unwrap();
    let _ = labhub::shm::remove_channel(&channel);
}
