//! End to end with real processes: a broker, a producer and two consumers as child processes,
//! SIGKILLed and restarted while frames flow.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use labhub::client::{ClientConfig, Hub};
use labhub::protocol::{ChannelKind, ChannelState};

use super::client::{WATCHDOG, ipc_endpoint, unique};

/// A child process whose stdout lines arrive on a channel; SIGKILLed when dropped.
struct Proc {
    child: Child,
    lines: Receiver<String>,
    label: String,
}

impl Proc {
    fn spawn(label: &str, role: &str, args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_labhub-test-child"))
            .arg(role)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn labhub-test-child");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            label: label.into(),
        }
    }

    /// Skips lines until one satisfies `want`; returns it. Fails after [`WATCHDOG`].
    fn wait_for(&mut self, what: &str, mut want: impl FnMut(&str) -> bool) -> String {
        let deadline = Instant::now() + WATCHDOG;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if want(&line) => return line,
                Ok(line) => {
                    assert!(!line.starts_with("error"), "{}: {line}", self.label);
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("{} did not say {what} within {WATCHDOG:?}", self.label)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().unwrap();
                    panic!("{} exited ({status}) before saying {what}", self.label)
                }
            }
        }
    }

    /// The id of the next `frame <id>` line.
    fn next_frame(&mut self) -> u64 {
        let line = self.wait_for("a frame", |l| l.starts_with("frame "));
        line["frame ".len()..].parse().unwrap()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Home(PathBuf);

impl Drop for Home {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn consumers_hear_their_producer_die_resume_after_its_restart_and_outlive_a_broker_restart() {
    let home = Home(std::env::temp_dir().join(unique("e2e-home")));
    let home_s = home.0.to_str().unwrap().to_owned();
    let endpoint = ipc_endpoint("e2e-broker");
    let notify = ipc_endpoint("e2e-notify");
    let name = unique("e2e");
    let args = [home_s.as_str(), endpoint.as_str(), notify.as_str()];
    let with_name = [args[0], args[1], args[2], name.as_str()];

    let mut broker = Proc::spawn("broker", "client-broker", &args);
    broker.wait_for("ready", |l| l == "ready");
    let mut producer = Proc::spawn("producer", "client-producer", &with_name);
    producer.wait_for("ready", |l| l.starts_with("ready"));
    let mut consumers = [
        Proc::spawn("consumer 1", "client-consumer", &with_name),
        Proc::spawn("consumer 2", "client-consumer", &with_name),
    ];
    for c in &mut consumers {
        c.wait_for("attached", |l| l == "attached");
        c.next_frame();
    }

    // SIGKILL the producer: the broker's watchdog declares the channel down and tells them.
    producer.kill();
    let mut last_seen = [0u64; 2];
    for (c, last) in consumers.iter_mut().zip(&mut last_seen) {
        c.wait_for("notice channel_down", |l| {
            if let Some(id) = l.strip_prefix("frame ") {
                *last = (*last).max(id.parse().unwrap());
            }
            l == "notice channel_down"
        });
    }

    // Restart it: it re-attaches to the segment, frame ids continue, consumers resume.
    let mut producer = Proc::spawn("producer 2", "client-producer", &with_name);
    let ready = producer.wait_for("ready", |l| l.starts_with("ready"));
    let resumed_at: u64 = ready["ready ".len()..].parse().unwrap();
    assert!(resumed_at > last_seen[0].max(last_seen[1]), "frame ids continue");
    for c in &mut consumers {
        let id = c.next_frame();
        assert!(id >= resumed_at, "frame {id} came before the restart at {resumed_at}");
        assert!(c.next_frame() > id);
    }

    // SIGKILL the broker: frames keep flowing through shared memory.
    broker.kill();
    for c in &mut consumers {
        let first = c.next_frame();
        let mut id = first;
        for _ in 0..5 {
            let next = c.next_frame();
            assert!(next > id);
            id = next;
        }
    }

    // Restart it: the producer registers again, the consumers attach again, LIST shows it.
    let mut broker = Proc::spawn("broker 2", "client-broker", &args);
    broker.wait_for("ready", |l| l == "ready");
    let mut config = ClientConfig::from_home(&home.0)
        .unwrap()
        .request_timeout(Duration::from_secs(2));
    config.endpoint = endpoint.clone();
    let hub = Hub::connect(config).unwrap();
    let deadline = Instant::now() + WATCHDOG;
    loop {
        let listed = hub.list(Some(&name), Some(ChannelKind::Shm)).unwrap();
        if let [ch] = listed.as_slice()
            && ch.state == ChannelState::Up
            && ch.consumers == 2
        {
            assert_eq!(ch.spec.name.as_str(), name);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the clients did not register again within {WATCHDOG:?}: {listed:?}"
        );
        // Polling the broker is the event here: the list is what the test observes.
        std::thread::sleep(Duration::from_millis(50));
    }
    for c in &mut consumers {
        c.next_frame();
    }
    hub.shutdown();
    drop(consumers);
    drop(producer);
    drop(broker);
    let _ = labhub::shm::remove_channel(&name);
}
