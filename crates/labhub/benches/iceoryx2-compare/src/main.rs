//! Round-trip latency: labhub channels against iceoryx2 publish-subscribe and against ZeroMQ
//! PAIR sockets over `ipc://` (the `labhub-zmq` wrapper), in one run.
//!
//! `cargo bench --manifest-path crates/labhub/benches/iceoryx2-compare/Cargo.toml`
//!
//! Both sides do the same work per hop: copy the whole frame (8 B or 1 MiB) into a loaned slot,
//! stamp the round number in its first 8 bytes, send; the receiver reads the round number in
//! place and answers. Blocking mode: labhub sleeps on its `ProcessEvent`; iceoryx2 pairs the
//! publish-subscribe service with an event service (notify after send, `blocking_wait` when
//! nothing was received), as its examples do; ZeroMQ blocks in `recv`. Spin mode: all three poll
//! for the next message (ZeroMQ: `recv` with `DONTWAIT`). ZeroMQ copies each message into and out
//! of the kernel socket; the receiver gets it as a `Message`.
#![allow(missing_docs)]

#[path = "../../shm_latency.rs"]
mod labhub_side;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use iceoryx2::prelude::*;

type PubSub =
    iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, [u8], ()>;

struct Iox {
    _node: Node<ipc::Service>,
    publisher: iceoryx2::port::publisher::Publisher<ipc::Service, [u8], ()>,
    subscriber: iceoryx2::port::subscriber::Subscriber<ipc::Service, [u8], ()>,
    notifier: iceoryx2::port::notifier::Notifier<ipc::Service>,
    listener: iceoryx2::port::listener::Listener<ipc::Service>,
    spin: bool,
}

fn pubsub(node: &Node<ipc::Service>, name: &str, size: usize) -> PubSub {
    node.service_builder(&name.try_into().unwrap())
        .publish_subscribe::<[u8]>()
        .subscriber_max_buffer_size(4)
        .history_size(0)
        .max_publishers(1)
        .max_subscribers(1)
        .open_or_create()
        .unwrap_or_else(|e| panic!("service {name} ({size} B): {e:?}"))
}

impl Iox {
    /// `out`/`inp`: the names of the channel this side sends on / receives from.
    fn new(out: &str, inp: &str, size: usize, spin: bool) -> Self {
        let node = NodeBuilder::new().create::<ipc::Service>().unwrap();
        let out_svc = pubsub(&node, out, size);
        let in_svc = pubsub(&node, inp, size);
        let publisher = out_svc
            .publisher_builder()
            .initial_max_slice_len(size)
            .create()
            .unwrap();
        let subscriber = in_svc.subscriber_builder().create().unwrap();
        let out_ev = node
            .service_builder(&format!("{out}-ev").as_str().try_into().unwrap())
            .event()
            .open_or_create()
            .unwrap();
        let in_ev = node
            .service_builder(&format!("{inp}-ev").as_str().try_into().unwrap())
            .event()
            .open_or_create()
            .unwrap();
        let notifier = out_ev.notifier_builder().create().unwrap();
        let listener = in_ev.listener_builder().create().unwrap();
        Self {
            _node: node,
            publisher,
            subscriber,
            notifier,
            listener,
            spin,
        }
    }

    fn send(&self, payload: &mut [u8], round: u64) {
        payload[..8].copy_from_slice(&round.to_le_bytes());
        let sample = self.publisher.loan_slice_uninit(payload.len()).unwrap();
        let sample = sample.write_from_slice(payload);
        sample.send().unwrap();
        if !self.spin {
            self.notifier.notify().unwrap();
        }
    }

    fn recv(&self) -> u64 {
        loop {
            if let Some(sample) = self.subscriber.receive().unwrap() {
                return u64::from_le_bytes(sample.payload()[..8].try_into().unwrap());
            }
            if self.spin {
                std::hint::spin_loop();
            } else {
                self.listener
                    .timed_wait(|_| {}, Duration::from_secs(60))
                    .unwrap();
            }
        }
    }
}

fn iox_pong_main() {
    let ping = std::env::var("IOX_PING").unwrap();
    let pong = std::env::var("IOX_PONG").unwrap();
    let size: usize = std::env::var("IOX_SIZE").unwrap().parse().unwrap();
    let spin = std::env::var("IOX_SPIN").unwrap() == "1";
    let total: u64 = std::env::var("IOX_ROUNDS").unwrap().parse().unwrap();
    let io = Iox::new(&pong, &ping, size, spin);
    let mut out = std::io::stdout();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    let mut payload = vec![0x5au8; size];
    for _ in 0..total {
        let r = io.recv();
        io.send(&mut payload, r);
    }
    // Let the peer read the last answer before our ports go away.
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

fn iox_round_trip(size: usize, spin: bool) -> Duration {
    let id = format!("{}-{size}-{}", std::process::id(), u8::from(spin));
    let (ping, pong) = (
        format!("labhub-bench/ping-{id}"),
        format!("labhub-bench/pong-{id}"),
    );
    let rounds = labhub_side::rounds_for(size);
    let warmup = rounds / 10;
    let io = Iox::new(&ping, &pong, size, spin);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("LABHUB_BENCH_ROLE", "iox-pong")
        .env("IOX_PING", &ping)
        .env("IOX_PONG", &pong)
        .env("IOX_SIZE", size.to_string())
        .env("IOX_SPIN", if spin { "1" } else { "0" })
        .env("IOX_ROUNDS", (rounds + warmup).to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    let mut payload = vec![0x5au8; size];
    let mut start = Instant::now();
    for r in 0..rounds + warmup {
        if r == warmup {
            start = Instant::now();
        }
        io.send(&mut payload, r);
        assert_eq!(io.recv(), r);
    }
    let elapsed = start.elapsed();
    drop(child.stdin.take());
    child.wait().unwrap();
    elapsed / rounds as u32
}

// ---- ZeroMQ: one PAIR socket pair over ipc:// ---------------------------------------------------

fn zmq_send(s: &labhub_zmq::Socket, payload: &mut [u8], round: u64) {
    payload[..8].copy_from_slice(&round.to_le_bytes());
    s.send(&*payload, labhub_zmq::Flags::NONE).unwrap();
}

fn zmq_recv(s: &labhub_zmq::Socket, spin: bool) -> u64 {
    let flags = if spin {
        labhub_zmq::Flags::DONTWAIT
    } else {
        labhub_zmq::Flags::NONE
    };
    loop {
        match s.recv(flags) {
            Ok(m) => return u64::from_le_bytes(m.as_bytes()[..8].try_into().unwrap()),
            Err(_) if spin => std::hint::spin_loop(),
            Err(e) => panic!("zmq recv: {e}"),
        }
    }
}

fn zmq_pong_main() {
    let endpoint = std::env::var("ZMQ_ENDPOINT").unwrap();
    let size: usize = std::env::var("ZMQ_SIZE").unwrap().parse().unwrap();
    let spin = std::env::var("ZMQ_SPIN").unwrap() == "1";
    let total: u64 = std::env::var("ZMQ_ROUNDS").unwrap().parse().unwrap();
    let ctx = labhub_zmq::Context::new().unwrap();
    let s = ctx.socket(labhub_zmq::SocketType::Pair).unwrap();
    s.set_linger(Some(Duration::from_secs(5))).unwrap();
    s.connect(&endpoint).unwrap();
    let mut payload = vec![0x5au8; size];
    for _ in 0..total {
        let r = zmq_recv(&s, spin);
        zmq_send(&s, &mut payload, r);
    }
}

fn zmq_round_trip(size: usize, spin: bool) -> Duration {
    let endpoint = format!(
        "ipc:///tmp/labhub-bench-{}-{size}-{}.ipc",
        std::process::id(),
        u8::from(spin)
    );
    let rounds = labhub_side::rounds_for(size);
    let warmup = rounds / 10;
    let ctx = labhub_zmq::Context::new().unwrap();
    let s = ctx.socket(labhub_zmq::SocketType::Pair).unwrap();
    s.set_linger(Some(Duration::ZERO)).unwrap();
    s.bind(&endpoint).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("LABHUB_BENCH_ROLE", "zmq-pong")
        .env("ZMQ_ENDPOINT", &endpoint)
        .env("ZMQ_SIZE", size.to_string())
        .env("ZMQ_SPIN", if spin { "1" } else { "0" })
        .env("ZMQ_ROUNDS", (rounds + warmup).to_string())
        .spawn()
        .unwrap();
    let mut payload = vec![0x5au8; size];
    let mut start = Instant::now();
    for r in 0..rounds + warmup {
        if r == warmup {
            start = Instant::now();
        }
        zmq_send(&s, &mut payload, r);
        assert_eq!(zmq_recv(&s, spin), r);
    }
    let elapsed = start.elapsed();
    child.wait().unwrap();
    let _ = std::fs::remove_file(endpoint.trim_start_matches("ipc://"));
    elapsed / rounds as u32
}

fn main() {
    match std::env::var("LABHUB_BENCH_ROLE").as_deref() {
        Ok("labhub-pong") => return labhub_side::labhub_pong_main(),
        Ok("iox-pong") => return iox_pong_main(),
        Ok("zmq-pong") => return zmq_pong_main(),
        _ => {}
    }
    if !std::env::args().any(|a| a == "--bench") {
        println!("run with `cargo bench` to measure");
        return;
    }
    set_log_level(LogLevel::Error);
    println!(
        "| frame | mode | labhub round trip | iceoryx2 round trip | labhub / iceoryx2 | ZeroMQ ipc round trip | labhub / ZeroMQ |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (label, size) in labhub_side::SIZES {
        for spin in [false, true] {
            let (mut l, mut i, mut z) = (vec![], vec![], vec![]);
            for _ in 0..3 {
                l.push(labhub_side::labhub_round_trip(size, spin));
                i.push(iox_round_trip(size, spin));
                z.push(zmq_round_trip(size, spin));
            }
            l.sort();
            i.sort();
            z.sort();
            let (l, i, z) = (l[1], i[1], z[1]);
            println!(
                "| {label} | {} | {:.2} µs | {:.2} µs | {:.2}× | {:.2} µs | {:.2}× |",
                if spin { "spin" } else { "blocking" },
                l.as_secs_f64() * 1e6,
                i.as_secs_f64() * 1e6,
                l.as_secs_f64() / i.as_secs_f64(),
                z.as_secs_f64() * 1e6,
                l.as_secs_f64() / z.as_secs_f64()
            );
        }
    }
}
