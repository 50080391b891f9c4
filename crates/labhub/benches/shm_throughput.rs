//! One-way throughput of a labhub channel, producer and consumer in separate processes, against
//! single-thread memcpy of the same frames measured in the same run.
//!
//! `cargo bench -p labhub --bench shm_throughput`
//!
//! The producer copies each frame into a loaned slot (`loan`, `copy_from_slice`, `commit`) on a
//! lossless ring (Block) of 8 slots, or 1 MiB worth of small frames (256 × 4 KiB), so it can
//! never outrun the consumer. The consumer is this executable re-spawned
//! (`LABHUB_BENCH_ROLE=consumer`); it reads each frame held in place (`next`, `held`, drop),
//! either touching only its first and last byte (`touch`; also with the consumer in
//! `WaitMode::Spin` for 50 µs before sleeping: `touch, spin`) or reading every 8-byte word
//! (`read`). The baseline copies the same frame into as many rotating destination buffers as the
//! ring has slots (the same memory footprint as the ring) on one thread. Each figure is the
//! median of 5 runs.
//!
//! A second table prices the lossy read path: a frame of a Latest channel copied out with
//! `Frame::copy_to` (per-byte atomic loads through `atomic-memcpy`, then the seq re-check)
//! against a plain `copy_from_slice` of the same bytes, one process, in the same run.
#![allow(missing_docs)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use labhub::shm::{self, Backpressure, Channel, Policy, WaitMode};

/// Ring slots for a frame size: 8, or enough for 1 MiB of small frames.
pub fn slots(size: usize) -> u32 {
    ((1usize << 20) / size).max(8) as u32
}
const RUNS: usize = 5;
/// Bytes moved per run.
pub const BYTES_PER_RUN: usize = 1 << 30;

pub fn consumer_main() {
    let name = std::env::var("LABHUB_BENCH_CHANNEL").unwrap();
    let frames: u64 = std::env::var("LABHUB_BENCH_FRAMES")
        .unwrap()
        .parse()
        .unwrap();
    let mode = std::env::var("LABHUB_BENCH_READ").unwrap();
    let read_all = mode == "read";
    let wait = if mode == "spin" {
        WaitMode::Spin {
            spin_for: Duration::from_micros(50),
        }
    } else {
        WaitMode::Blocking
    };
    let mut c = Channel::new(&name)
        .element::<u8>()
        .wait_mode(wait)
        .open()
        .unwrap();
    let mut out = std::io::stdout();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    let mut acc = 0u64;
    for _ in 0..frames {
        let f = c.next(Some(Duration::from_secs(60))).unwrap();
        let d = f.held().expect("a lossless ring holds its frames");
        if read_all {
            for w in d.chunks_exact(8) {
                acc ^= u64::from_le_bytes(w.try_into().unwrap());
            }
        } else {
            acc ^= u64::from(d[0]) ^ u64::from(d[d.len() - 1]);
        }
        drop(f);
    }
    writeln!(out, "done {acc}").unwrap();
    out.flush().unwrap();
}

pub fn memcpy_rate(size: usize) -> f64 {
    let src = vec![0x5au8; size];
    let mut dst: Vec<Vec<u8>> = (0..slots(size)).map(|_| vec![0u8; size]).collect();
    let frames = (BYTES_PER_RUN / size).max(1);
    let start = Instant::now();
    for i in 0..frames {
        let n = dst.len();
        let d = &mut dst[i % n];
        d.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(d);
    }
    (frames * size) as f64 / start.elapsed().as_secs_f64()
}

pub fn channel_rate(size: usize, mode: &str) -> f64 {
    let name = format!("bench-tp-{}-{size}-{mode}", std::process::id());
    let _ = shm::remove_channel(&name);
    let frames = (BYTES_PER_RUN / size).max(1) as u64;
    let mut p = Channel::new(&name)
        .policy(Policy::Ring {
            slots: slots(size),
            when_full: Backpressure::Block {
                timeout: Duration::from_secs(60),
            },
        })
        .bytes(size as u64)
        .create()
        .unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("LABHUB_BENCH_ROLE", "consumer")
        .env("LABHUB_BENCH_CHANNEL", &name)
        .env("LABHUB_BENCH_FRAMES", frames.to_string())
        .env("LABHUB_BENCH_READ", mode)
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
    drop(p);
    shm::remove_channel(&name).unwrap();
    (frames as usize * size) as f64 / elapsed.as_secs_f64()
}

/// Context for the small-frame figures: the round trip of one cache line between two threads
/// (each waits for the other's store, then stores), in ns. Every frame handed to a consumer on
/// another core moves a few lines that way; on a host where this costs more than copying a
/// frame, small frames cannot reach memcpy speed through any shared-memory channel.
pub fn line_round_trip_ns() -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    #[repr(align(128))]
    struct Line(AtomicU64);
    const ROUNDS: u64 = 200_000;
    let (a, b) = (Line(AtomicU64::new(0)), Line(AtomicU64::new(0)));
    let start = std::thread::scope(|s| {
        s.spawn(|| {
            for i in 1..=ROUNDS {
                while a.0.load(Ordering::Acquire) != i {
                    std::hint::spin_loop();
                }
                b.0.store(i, Ordering::Release);
            }
        });
        let start = Instant::now();
        for i in 1..=ROUNDS {
            a.0.store(i, Ordering::Release);
            while b.0.load(Ordering::Acquire) != i {
                std::hint::spin_loop();
            }
        }
        start
    });
    start.elapsed().as_nanos() as f64 / ROUNDS as f64
}

/// Bytes per second of copying one frame of a Latest channel out with `Frame::copy_to` (atomic
/// loads, then the seq check), and of a plain copy of a buffer of the same size, alternated.
pub fn lossy_copy_rates(size: usize) -> (f64, f64) {
    let name = format!("bench-copy-{}-{size}", std::process::id());
    let _ = shm::remove_channel(&name);
    let mut p = Channel::new(&name)
        .policy(Policy::Latest)
        .bytes(size as u64)
        .create()
        .unwrap();
    let mut c = Channel::new(&name).element::<u8>().open().unwrap();
    p.publish(&vec![0x5au8; size], &[size as u64]).unwrap();
    let frame = c.next(Some(Duration::from_secs(5))).unwrap();
    let src = vec![0x5au8; size];
    let mut dst = vec![0u8; size];
    let rounds = ((256usize << 20) / size).max(1);
    let start = Instant::now();
    for _ in 0..rounds {
        frame.copy_to(std::hint::black_box(&mut dst)).unwrap();
    }
    let atomic = (rounds * size) as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    for _ in 0..rounds {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
    }
    let plain = (rounds * size) as f64 / start.elapsed().as_secs_f64();
    drop(frame);
    drop((c, p));
    shm::remove_channel(&name).unwrap();
    (atomic, plain)
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    if std::env::var("LABHUB_BENCH_ROLE").as_deref() == Ok("consumer") {
        consumer_main();
        return;
    }
    // `cargo test --benches` runs benches with `--test`-like flags; only measure under `--bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("shm_throughput: run with `cargo bench` to measure");
        return;
    }
    println!(
        "cache-line round trip between two threads: {:.0} ns",
        line_round_trip_ns()
    );
    println!(
        "| frame | memcpy GB/s | touch GB/s | ratio | touch, spin GB/s | ratio | read GB/s | ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let only = std::env::var("LABHUB_BENCH_ONLY").ok();
    for (label, size) in [
        ("4 KiB", 4 << 10),
        ("64 KiB", 64 << 10),
        ("1 MiB", 1 << 20),
        ("4 MiB", 4 << 20),
    ] {
        if only.as_deref().is_some_and(|o| o != label) {
            continue;
        }
        let (mut base, mut touch, mut spin, mut read) = (vec![], vec![], vec![], vec![]);
        // Interleave the measurements so machine noise hits all of them alike.
        for _ in 0..RUNS {
            base.push(memcpy_rate(size));
            touch.push(channel_rate(size, "touch"));
            spin.push(channel_rate(size, "spin"));
            read.push(channel_rate(size, "read"));
        }
        let (b, t, sp, r) = (median(base), median(touch), median(spin), median(read));
        println!(
            "| {label} | {:.2} | {:.2} | {:.2}× | {:.2} | {:.2}× | {:.2} | {:.2}× |",
            b / 1e9,
            t / 1e9,
            t / b,
            sp / 1e9,
            sp / b,
            r / 1e9,
            r / b
        );
    }
    println!();
    println!("| frame | memcpy GB/s | lossy copy_to (atomic) GB/s | ratio |");
    println!("|---|---|---|---|");
    for (label, size) in [("4 KiB", 4 << 10), ("64 KiB", 64 << 10), ("1 MiB", 1 << 20)] {
        if only.as_deref().is_some_and(|o| o != label) {
            continue;
        }
        let (mut atomic, mut plain) = (vec![], vec![]);
        for _ in 0..RUNS {
            let (a, p) = lossy_copy_rates(size);
            atomic.push(a);
            plain.push(p);
        }
        let (a, p) = (median(atomic), median(plain));
        println!(
            "| {label} | {:.2} | {:.2} | {:.2}× |",
            p / 1e9,
            a / 1e9,
            a / p
        );
    }
}
