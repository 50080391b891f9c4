//! Broker-granted (memfd) channels against named segments, measured in the same run.
//!
//! `cargo bench -p labhub --bench shm_memfd`
//!
//! A broker runs in this process (a temporary home, `ipc://` endpoints). Two figures:
//!
//! - **Attach time**: a consumer opening a channel that exists, median of 200 opens (each
//!   dropped before the next): by name (`shm::Channel::new(name).open()`: `shm_open`, `mmap`,
//!   header checks, a table entry), and through the Hub (`hub.channel(name).open()`: `discover`
//!   and `grant` over CURVE, the ticket on the grant socket for two descriptors, two `mmap`s,
//!   the same checks and entry, `attach` over CURVE), and the grant exchange alone (`grant`
//!   over CURVE with the broker's synchronous probe client, the ticket redeemed on the grant
//!   socket for two descriptors).
//! - **Throughput**: the one-way throughput of `shm_throughput` ("touch": a lossless ring of 8
//!   slots, or 1 MiB of small frames; the consumer, another process, holds each frame and reads
//!   its first and last byte) over a named segment and over a memfd channel, alternated run by
//!   run, five runs each; the ratio is memfd over named. Both read through the same
//!   `shm::Consumer` code, and both consumer processes run a Hub client; only the mapping
//!   differs (one named file, or a sealed read-only data memfd and a control memfd).
#![allow(missing_docs)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use labhub::broker::probe::Probe;
use labhub::broker::{Broker, BrokerConfig};
use labhub::client::{ClientConfig, Hub};
use labhub::keys::{self, PublicKey};
use labhub::shm::{self, Backpressure, Channel, Policy, Producer};

const RUNS: usize = 5;
const ATTACHES: usize = 200;
/// Bytes moved per throughput run.
const BYTES_PER_RUN: usize = 1 << 30;

fn slots(size: usize) -> u32 {
    ((1usize << 20) / size).max(8) as u32
}

fn ring(size: usize) -> Policy {
    Policy::Ring {
        slots: slots(size),
        when_full: Backpressure::Block {
            timeout: Duration::from_secs(60),
        },
    }
}

/// The in-process broker and how to reach it.
struct TestBroker {
    home: PathBuf,
    endpoint: String,
    notify: String,
    key: PublicKey,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestBroker {
    fn start() -> Self {
        let home = std::env::temp_dir().join(format!("labhub-bench-memfd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        let mut config = BrokerConfig::for_home(&home);
        config.endpoint = format!("ipc://{}/b.sock", home.display());
        config.notify_endpoint = format!("ipc://{}/n.sock", home.display());
        config.reap_stale_segments = false;
        let mut broker = Broker::start(config).unwrap();
        let (endpoint, notify) = (
            broker.endpoint().to_owned(),
            broker.notify_endpoint().to_owned(),
        );
        let key = broker.public_key();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || broker.run(&flag).unwrap());
        Self {
            home,
            endpoint,
            notify,
            key,
            stop,
            thread: Some(thread),
        }
    }

    fn hub(&self) -> Hub {
        hub_of(&self.home, &self.endpoint, &self.notify, self.key)
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

fn hub_of(home: &Path, endpoint: &str, notify: &str, key: PublicKey) -> Hub {
    let client = keys::local_client_key(&home.join("keys")).unwrap();
    Hub::connect(ClientConfig::new(endpoint, key, client).notify_endpoint(notify)).unwrap()
}

fn consumer_main() {
    let var = |k: &str| std::env::var(k).unwrap();
    let name = var("LABHUB_BENCH_CHANNEL");
    let frames: u64 = var("LABHUB_BENCH_FRAMES").parse().unwrap();
    let mut hub_consumer;
    let mut local;
    // Both consumers run a Hub client (its worker thread polls every few milliseconds), so
    // the two differ only in how the segment is mapped.
    let hub = hub_of(
        Path::new(&var("LABHUB_BENCH_HOME")),
        &var("LABHUB_BENCH_ENDPOINT"),
        &var("LABHUB_BENCH_NOTIFY"),
        PublicKey::from_z85(&var("LABHUB_BENCH_KEY")).unwrap(),
    );
    let c = if var("LABHUB_BENCH_SHARING") == "memfd" {
        hub_consumer = hub.channel(&name).element::<u8>().open().unwrap();
        hub_consumer.consumer()
    } else {
        local = Channel::new(&name).element::<u8>().open().unwrap();
        &mut local
    };
    let mut out = std::io::stdout();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    let mut acc = 0u64;
    for _ in 0..frames {
        let f = c.next(Some(Duration::from_secs(60))).unwrap();
        let d = f.held().expect("a lossless ring holds its frames");
        acc ^= u64::from(d[0]) ^ u64::from(d[d.len() - 1]);
        drop(f);
    }
    writeln!(out, "done {acc}").unwrap();
    out.flush().unwrap();
}

/// Publishes `BYTES_PER_RUN` into `p` while a consumer child reads; bytes per second.
fn throughput(broker: &TestBroker, p: &mut Producer<u8>, sharing: &str) -> f64 {
    let size = p.max_shape()[0] as usize;
    let frames = (BYTES_PER_RUN / size).max(1) as u64;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("LABHUB_BENCH_ROLE", "consumer")
        .env("LABHUB_BENCH_CHANNEL", p.channel().as_str())
        .env("LABHUB_BENCH_FRAMES", frames.to_string())
        .env("LABHUB_BENCH_SHARING", sharing)
        .env("LABHUB_BENCH_HOME", &broker.home)
        .env("LABHUB_BENCH_ENDPOINT", &broker.endpoint)
        .env("LABHUB_BENCH_NOTIFY", &broker.notify)
        .env("LABHUB_BENCH_KEY", broker.key.to_z85())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    let src = vec![0x5au8; size];
    let start = Instant::now();
    for _ in 0..frames {
        let mut w = p.loan().unwrap();
        w.copy_from_slice(std::hint::black_box(&src));
        w.commit();
    }
    let done = lines.next().unwrap().unwrap();
    let elapsed = start.elapsed();
    assert!(done.starts_with("done"));
    child.wait().unwrap();
    (frames as usize * size) as f64 / elapsed.as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn range(v: &[f64]) -> (f64, f64) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(0.0, f64::max);
    (lo, hi)
}

/// One grant exchange by hand: `grant` over CURVE (the probe), the ticket on the grant socket,
/// two descriptors back (closed when dropped).
fn grant_exchange(probe: &mut Probe, channel: &str) {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let reply = probe
        .request(
            "grant",
            serde_json::json!({"client": "bench", "name": channel, "role": "consume"}),
        )
        .unwrap();
    let ticket = reply.grant.unwrap();
    let socket = rustix::net::socket(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        None,
    )
    .unwrap();
    rustix::net::connect(
        &socket,
        &rustix::net::SocketAddrUnix::new(&ticket.socket).unwrap(),
    )
    .unwrap();
    let m = serde_json::json!({"type": "redeem", "ticket": ticket.ticket, "name": channel,
        "role": "consume"});
    rustix::net::send(
        &socket,
        m.to_string().as_bytes(),
        rustix::net::SendFlags::empty(),
    )
    .unwrap();
    let mut buf = [0u8; 4096];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    rustix::net::recvmsg(
        &socket,
        &mut [std::io::IoSliceMut::new(&mut buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .unwrap();
    let fds: Vec<std::os::fd::OwnedFd> = control
        .drain()
        .filter_map(|m| match m {
            RecvAncillaryMessage::ScmRights(r) => Some(r.collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(fds.len(), 2);
}

fn attach_times(broker: &TestBroker) {
    let hub = broker.hub();
    let named = format!("bench-attach-named-{}", std::process::id());
    let granted = format!("bench-attach-memfd-{}", std::process::id());
    let _p = Channel::new(&named)
        .policy(ring(4096))
        .bytes(4096)
        .create()
        .unwrap();
    let _q = hub
        .channel(&granted)
        .policy(ring(4096))
        .bytes(4096)
        .create()
        .unwrap();
    let consumer_hub = broker.hub();
    let local = keys::local_client_key(&broker.home.join("keys")).unwrap();
    let mut probe = Probe::connect(
        &broker.endpoint,
        &broker.key,
        &local,
        Duration::from_secs(5),
    )
    .unwrap();
    let (mut by_name, mut by_grant, mut exchange) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ATTACHES {
        let start = Instant::now();
        grant_exchange(&mut probe, &granted);
        exchange.push(start.elapsed().as_secs_f64() * 1e6);
        let start = Instant::now();
        let c = Channel::new(&named).element::<u8>().open().unwrap();
        by_name.push(start.elapsed().as_secs_f64() * 1e6);
        drop(c);
        let start = Instant::now();
        let c = consumer_hub
            .channel(&granted)
            .element::<u8>()
            .open()
            .unwrap();
        by_grant.push(start.elapsed().as_secs_f64() * 1e6);
        drop(c);
    }
    let (n, g, x) = (
        median(by_name.clone()),
        median(by_grant.clone()),
        median(exchange.clone()),
    );
    let ((nl, nh), (gl, gh), (xl, xh)) = (range(&by_name), range(&by_grant), range(&exchange));
    println!("| attach | median µs | lowest–highest µs |");
    println!("|---|---|---|");
    println!("| by name (`shm::Channel::open`) | {n:.1} | {nl:.1}–{nh:.1} |");
    println!("| memfd grant (`hub.channel(..).open()`) | {g:.1} | {gl:.1}–{gh:.1} |");
    println!("| the grant exchange alone (`grant` + redeem) | {x:.1} | {xl:.1}–{xh:.1} |");
    println!();
    let _ = shm::remove_channel(&named);
}

fn main() {
    if std::env::var("LABHUB_BENCH_ROLE").as_deref() == Ok("consumer") {
        consumer_main();
        return;
    }
    if !std::env::args().any(|a| a == "--bench") {
        println!("shm_memfd: run with `cargo bench` to measure");
        return;
    }
    let broker = TestBroker::start();
    attach_times(&broker);
    let hub = broker.hub();
    println!("| frame | named GB/s | memfd GB/s | memfd / named, median [lowest–highest] |");
    println!("|---|---|---|---|");
    let only = std::env::var("LABHUB_BENCH_ONLY").ok();
    for (label, size) in [
        ("4 KiB", 4usize << 10),
        ("64 KiB", 64 << 10),
        ("1 MiB", 1 << 20),
        ("4 MiB", 4 << 20),
    ] {
        if only.as_deref().is_some_and(|o| o != label) {
            continue;
        }
        let named = format!("bench-tp-named-{}-{size}", std::process::id());
        let granted = format!("bench-tp-memfd-{}-{size}", std::process::id());
        let mut local = Channel::new(&named)
            .policy(ring(size))
            .bytes(size as u64)
            .create()
            .unwrap();
        let mut via_hub = hub
            .channel(&granted)
            .policy(ring(size))
            .bytes(size as u64)
            .create()
            .unwrap();
        let (mut n, mut m, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..RUNS {
            // Alternated, each first in turn, so machine noise hits both alike.
            let (a, b) = if run % 2 == 0 {
                let a = throughput(&broker, &mut local, "named");
                (a, throughput(&broker, via_hub.producer(), "memfd"))
            } else {
                let b = throughput(&broker, via_hub.producer(), "memfd");
                (throughput(&broker, &mut local, "named"), b)
            };
            n.push(a);
            m.push(b);
            ratios.push(b / a);
        }
        let (lo, hi) = range(&ratios);
        println!(
            "| {label} | {:.2} | {:.2} | {:.2}× [{lo:.2}–{hi:.2}] |",
            median(n) / 1e9,
            median(m) / 1e9,
            median(ratios)
        );
        drop(local);
        let _ = shm::remove_channel(&named);
    }
}
