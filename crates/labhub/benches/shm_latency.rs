//! Round-trip latency of labhub channels between two processes (ping-pong over two channels),
//! 8 B and 1 MiB frames, consumers in blocking and in spin mode.
//!
//! `cargo bench -p labhub --bench shm_latency`
//!
//! Each hop writes the whole frame into its slot (as a real producer would) and the receiver
//! reads it in place and validates it before answering. Channels are lossless rings of 4 slots
//! (Block). The comparison with iceoryx2 in the same run is
//! `crates/labhub/benches/iceoryx2-compare` (a separate workspace, so that iceoryx2 is not built
//! by `cargo test --workspace`); it includes this file.
#![allow(missing_docs, dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use labhub::shm::{self, Backpressure, Channel, Consumer, Policy, Producer, WaitMode};

pub const SIZES: [(&str, usize); 2] = [("8 B", 8), ("1 MiB", 1 << 20)];

pub fn rounds_for(size: usize) -> u64 {
    if size <= 4096 { 20_000 } else { 2_000 }
}

fn create(name: &str, size: usize) -> Producer<u8> {
    Channel::new(name)
        .policy(Policy::Ring {
            slots: 4,
            when_full: Backpressure::Block {
                timeout: Duration::from_secs(60),
            },
        })
        .bytes(size as u64)
        .create()
        .unwrap()
}

fn wait_mode(spin: bool) -> WaitMode {
    if spin {
        // Spin "forever" (the peer answers within microseconds); sleep only if it stalls.
        WaitMode::Spin {
            spin_for: Duration::from_millis(10),
        }
    } else {
        WaitMode::Blocking
    }
}

fn attach(name: &str, spin: bool) -> Consumer<u8> {
    let start = Instant::now();
    loop {
        let opened = Channel::new(name)
            .element::<u8>()
            .wait_mode(wait_mode(spin))
            .ready_timeout(Duration::from_secs(10))
            .open();
        match opened {
            Ok(c) => return c,
            Err(shm::ChannelError::NotFound { .. })
                if start.elapsed() < Duration::from_secs(10) =>
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("attach {name}: {e}"),
        }
    }
}

fn send(p: &mut Producer<u8>, payload: &[u8], round: u64) {
    let mut w = p.loan().unwrap();
    w.copy_from_slice(payload);
    w[..8].copy_from_slice(&round.to_le_bytes());
    w.commit();
}

fn recv(c: &mut Consumer<u8>) -> u64 {
    let f = c.next(Some(Duration::from_secs(60))).unwrap();
    let d = f.held().expect("a lossless ring holds its frames");
    u64::from_le_bytes(d[..8].try_into().unwrap())
}

/// The answering side (a child process).
pub fn labhub_pong_main() {
    let ping = std::env::var("LABHUB_BENCH_PING").unwrap();
    let pong = std::env::var("LABHUB_BENCH_PONG").unwrap();
    let size: usize = std::env::var("LABHUB_BENCH_SIZE").unwrap().parse().unwrap();
    let spin = std::env::var("LABHUB_BENCH_SPIN").unwrap() == "1";
    let total: u64 = std::env::var("LABHUB_BENCH_ROUNDS")
        .unwrap()
        .parse()
        .unwrap();
    let mut p = create(&pong, size);
    let mut c = attach(&ping, spin);
    let mut out = std::io::stdout();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    let payload = vec![0x5au8; size];
    for _ in 0..total {
        let r = recv(&mut c);
        send(&mut p, &payload, r);
    }
}

/// Mean round-trip time through labhub channels.
pub fn labhub_round_trip(size: usize, spin: bool) -> Duration {
    let id = format!("{}-{size}-{}", std::process::id(), u8::from(spin));
    let (ping, pong) = (
        format!("bench-lat-ping-{id}"),
        format!("bench-lat-pong-{id}"),
    );
    let rounds = rounds_for(size);
    let warmup = rounds / 10;
    let mut p = create(&ping, size);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("LABHUB_BENCH_ROLE", "labhub-pong")
        .env("LABHUB_BENCH_PING", &ping)
        .env("LABHUB_BENCH_PONG", &pong)
        .env("LABHUB_BENCH_SIZE", size.to_string())
        .env("LABHUB_BENCH_SPIN", if spin { "1" } else { "0" })
        .env("LABHUB_BENCH_ROUNDS", (rounds + warmup).to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    let mut c = attach(&pong, spin);
    let payload = vec![0x5au8; size];
    let mut start = Instant::now();
    for r in 0..rounds + warmup {
        if r == warmup {
            start = Instant::now();
        }
        send(&mut p, &payload, r);
        assert_eq!(recv(&mut c), r);
    }
    let elapsed = start.elapsed();
    child.wait().unwrap();
    drop((p, c));
    let _ = shm::remove_channel(&ping);
    let _ = shm::remove_channel(&pong);
    elapsed / rounds as u32
}

fn main() {
    if std::env::var("LABHUB_BENCH_ROLE").as_deref() == Ok("labhub-pong") {
        labhub_pong_main();
        return;
    }
    if !std::env::args().any(|a| a == "--bench") {
        println!("shm_latency: run with `cargo bench` to measure");
        return;
    }
    println!("| frame | mode | labhub round trip |");
    println!("|---|---|---|");
    // `LABHUB_BENCH_ONLY="1 MiB spin"` (frame and mode) restricts the run to one case.
    let only = std::env::var("LABHUB_BENCH_ONLY").ok();
    for (label, size) in SIZES {
        for spin in [false, true] {
            let case = format!("{label} {}", if spin { "spin" } else { "blocking" });
            if only.as_deref().is_some_and(|o| o != case) {
                continue;
            }
            let t = labhub_round_trip(size, spin);
            println!(
                "| {label} | {} | {:.2} µs |",
                if spin { "spin" } else { "blocking" },
                t.as_secs_f64() * 1e6
            );
        }
    }
}
