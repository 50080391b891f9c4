//! The figures of docs/SECURITY.md "Broker perimeter": broker memory and `labhub ls` latency
//! with no attack and under each attack the perimeter tests reproduce.
//!
//! ```text
//! cargo build --release -p labhub-cli -p labhub-tests --bins --examples
//! target/release/examples/perimeter_figures [--child PATH] [--labhub PATH] [--runs N]
//! ```
//!
//! The child (`labhub-test-child`) and `labhub` binaries default to the ones beside this
//! example's directory. For each scenario it starts a fresh broker, applies the attack, then
//! times `labhub ls --sample 0` (a new process each time: start, CURVE handshake, `list`) and
//! reads the broker's `VmRSS` and peak `VmHWM` (reset before the attack).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use labhub::broker::probe::Probe;
use labhub::keys::{self, PublicKey};
use labhub_tests::{ChildProc, ScratchDir, attack};
use serde_json::json;

struct Broker {
    proc: ChildProc,
    endpoint: String,
    notify: String,
    key: PublicKey,
}

fn start(child: &Path, home: &Path, nofile: Option<&str>) -> Broker {
    let mut cmd = match nofile {
        Some(limit) => {
            let mut c = Command::new("prlimit");
            c.arg(format!("--nofile={limit}")).arg("--").arg(child);
            c
        }
        None => Command::new(child),
    };
    cmd.args([
        "broker-run",
        home.to_str().expect("utf-8 home"),
        "tcp://127.0.0.1:*",
        "tcp://127.0.0.1:*",
        "1000",
        "5",
    ]);
    let mut proc = ChildProc::from_command("broker", cmd);
    let line = proc.skip_to("ready ");
    let parts: Vec<&str> = line.split(' ').collect();
    Broker {
        endpoint: parts[1].to_owned(),
        notify: parts[2].to_owned(),
        key: PublicKey::from_z85(parts[3]).expect("broker key"),
        proc,
    }
}

/// Median wall time of `runs` runs of `labhub ls`.
fn ls_latency(labhub: &Path, home: &Path, broker: &Broker, runs: usize) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            let out = Command::new(labhub)
                .args([
                    "ls",
                    "--sample",
                    "0",
                    "--broker",
                    &broker.endpoint,
                    "--home",
                ])
                .arg(home)
                .output()
                .expect("run labhub ls");
            let elapsed = t.elapsed();
            assert!(
                out.status.success(),
                "labhub ls failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            elapsed
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn mib(kib: Option<u64>) -> f64 {
    kib.unwrap_or(0) as f64 / 1024.0
}

fn report(name: &str, labhub: &Path, home: &Path, broker: &Broker, runs: usize) {
    let latency = ls_latency(labhub, home, broker, runs);
    let pid = broker.proc.pid();
    println!(
        "| {name} | {:.1} | {:.1} | {:.1} |",
        mib(attack::proc_status_kib(pid, "VmRSS")),
        mib(attack::proc_status_kib(pid, "VmHWM")),
        latency.as_secs_f64() * 1000.0
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let here = std::env::current_exe().expect("current exe");
    let bin_dir = here
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_owned();
    let mut child = bin_dir.join("labhub-test-child");
    let mut labhub = bin_dir.join("labhub");
    let mut runs = 5;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--child" => child = PathBuf::from(args.next().expect("--child PATH")),
            "--labhub" => labhub = PathBuf::from(args.next().expect("--labhub PATH")),
            "--runs" => runs = args.next().and_then(|n| n.parse().ok()).expect("--runs N"),
            other => panic!("unknown argument {other:?}"),
        }
    }
    println!(
        "| scenario | broker RSS after (MiB) | broker peak RSS (MiB) | `labhub ls` median (ms) |"
    );
    println!("|---|---|---|---|");

    let scenario = |name: &str,
                    nofile: Option<&str>,
                    attack: &dyn Fn(&Broker, &Path) -> Box<dyn std::any::Any>| {
        let dir = ScratchDir::new("figures");
        let broker = start(&child, dir.path(), nofile);
        // Let the broker settle, then measure its peak from here on.
        let local = keys::local_client_key(&dir.join("keys")).expect("client key");
        let mut probe = Probe::connect(
            &broker.endpoint,
            &broker.key,
            &local,
            Duration::from_secs(30),
        )
        .expect("probe");
        assert!(probe.request("list", json!({})).expect("list").is_ok());
        attack::reset_peak_rss(broker.proc.pid()).expect("reset peak");
        let held = attack(&broker, dir.path());
        report(name, &labhub, dir.path(), &broker, runs);
        drop(held);
    };

    scenario("no attack", None, &|_, _| Box::new(()));
    scenario(
        "2,000 idle keyless TCP connections (fd limit 1024:1024)",
        Some("1024:1024"),
        &|b, _| Box::new(attack::idle_connections(&b.endpoint, 2000)),
    );
    scenario(
        "refused CURVE handshakes, 64 new clients every 50 ms",
        None,
        &|b, _| {
            let clients = attack::RefusedClients::start(&b.endpoint, &b.key, 64);
            std::thread::sleep(Duration::from_secs(5));
            Box::new(clients)
        },
    );
    scenario(
        "one 1.5 GB multipart message from an admitted client",
        None,
        &|b, home| {
            let local = keys::local_client_key(&home.join("keys")).expect("client key");
            let sent = attack::send_huge_multipart(&b.endpoint, &b.key, &local, 25_000);
            std::thread::sleep(Duration::from_secs(3));
            Box::new(sent)
        },
    );
    scenario(
        "20 subscribers that never read, 12,000 notifications of ~4 KB",
        None,
        &|b, home| {
            let local = keys::local_client_key(&home.join("keys")).expect("client key");
            let silent = attack::SilentSubscribers::start(&b.notify, &b.key, &local, 20);
            std::thread::sleep(Duration::from_millis(500));
            let mut probe = Probe::connect(&b.endpoint, &b.key, &local, Duration::from_secs(30))
                .expect("probe");
            let metadata = json!({"blob": "m".repeat(4000)});
            for i in 0..6000 {
                let name = format!("storm{i}");
                probe
                    .request(
                        "register",
                        json!({"client": "storm", "channel": {"name": name, "kind": "pubsub",
                               "endpoint": "tcp://127.0.0.1:9", "metadata": metadata}}),
                    )
                    .expect("register");
                probe
                    .request("unregister", json!({"client": "storm", "name": name}))
                    .expect("unregister");
            }
            Box::new(silent)
        },
    );
}
