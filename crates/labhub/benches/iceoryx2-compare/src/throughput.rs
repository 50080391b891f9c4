//! One-way throughput: labhub channels against iceoryx2 publish-subscribe, both against
//! single-thread memcpy, in one run.
//!
//! `cargo bench --manifest-path crates/labhub/benches/iceoryx2-compare/Cargo.toml --bench throughput`
//!
//! The labhub half is `crates/labhub/benches/shm_throughput.rs` (a lossless ring of 8 slots, or
//! 256 for 4 KiB frames; the consumer touches each frame's first and last byte in place). The
//! iceoryx2 half does the same work: the producer loans a slice of the frame size, copies the
//! frame into it and sends it; the subscriber (another process, buffer of as many samples as the
//! labhub ring has slots, no safe overflow, the publisher retrying until delivered: lossless)
//! polls `receive()` and touches the first and last byte of each sample in place. Baseline: the
//! same memcpy as the labhub bench. Median of 5 interleaved runs of 1 GiB each.
#![allow(missing_docs)]

#[path = "../../shm_throughput.rs"]
#[allow(dead_code)]
mod labhub_side;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use iceoryx2::port::update_connections::UpdateConnections;
use iceoryx2::prelude::*;

fn service(node: &Node<ipc::Service>, name: &str, size: usize) -> PubSubFactory {
    node.service_builder(&name.try_into().unwrap())
        .publish_subscribe::<[u8]>()
        .subscriber_max_buffer_size(labhub_side::slots(size) as usize)
        .subscriber_max_borrowed_samples(2)
        .enable_safe_overflow(false)
        .history_size(0)
        .max_publishers(1)
        .max_subscribers(1)
        .open_or_create()
        .unwrap_or_else(|e| panic!("service {name} ({size} B): {e:?}"))
}

type PubSubFactory =
    iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, [u8], ()>;

fn iox_consumer_main() {
    let name = std::env::var("IOX_SERVICE").unwrap();
    let size: usize = std::env::var("IOX_SIZE").unwrap().parse().unwrap();
    let frames: u64 = std::env::var("IOX_FRAMES").unwrap().parse().unwrap();
    let node = NodeBuilder::new().create::<ipc::Service>().unwrap();
    let svc = service(&node, &name, size);
    let subscriber = svc.subscriber_builder().create().unwrap();
    let mut out = std::io::stdout();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    let mut acc = 0u64;
    let mut got = 0u64;
    while got < frames {
        match subscriber.receive().unwrap() {
            Some(sample) => {
                let d = sample.payload();
                acc ^= u64::from(d[0]) ^ u64::from(d[d.len() - 1]);
                got += 1;
            }
            None => std::hint::spin_loop(),
        }
    }
    writeln!(out, "done {acc}").unwrap();
    out.flush().unwrap();
}

fn iox_rate(size: usize) -> f64 {
    let name = format!("labhub-bench/tp-{}-{size}", std::process::id());
    let frames = (labhub_side::BYTES_PER_RUN / size).max(1) as u64;
    let node = NodeBuilder::new().create::<ipc::Service>().unwrap();
    let svc = service(&node, &name, size);
    let publisher = svc
        .publisher_builder()
        .initial_max_slice_len(size)
        .max_loaned_samples(1)
        .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
        .create()
        .unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("LABHUB_BENCH_ROLE", "iox-consumer")
        .env("IOX_SERVICE", &name)
        .env("IOX_SIZE", size.to_string())
        .env("IOX_FRAMES", frames.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    // The subscriber exists; make sure the publisher is connected to it before timing.
    while publisher.update_connections().is_err() {}
    let src = vec![0x5au8; size];
    let start = Instant::now();
    for _ in 0..frames {
        let sample = publisher.loan_slice_uninit(size).unwrap();
        let sample = sample.write_from_slice(std::hint::black_box(&src));
        sample.send().unwrap();
    }
    let done = lines.next().unwrap().unwrap();
    let elapsed = start.elapsed();
    assert!(done.starts_with("done"));
    child.wait().unwrap();
    (frames as usize * size) as f64 / elapsed.as_secs_f64()
}

fn main() {
    match std::env::var("LABHUB_BENCH_ROLE").as_deref() {
        Ok("consumer") => return labhub_side::consumer_main(),
        Ok("iox-consumer") => return iox_consumer_main(),
        _ => {}
    }
    if !std::env::args().any(|a| a == "--bench") {
        println!("run with `cargo bench` to measure");
        return;
    }
    set_log_level(LogLevel::Error);
    println!(
        "| frame | memcpy GB/s | labhub GB/s | labhub / memcpy | labhub spin GB/s | / memcpy | iceoryx2 GB/s | iceoryx2 / memcpy | labhub / iceoryx2 (best mode) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let only = std::env::var("LABHUB_BENCH_ONLY").ok();
    for (label, size) in [("4 KiB", 4 << 10), ("1 MiB", 1 << 20), ("4 MiB", 4 << 20)] {
        if only.as_deref().is_some_and(|o| o != label) {
            continue;
        }
        let (mut base, mut lab, mut spin, mut iox) = (vec![], vec![], vec![], vec![]);
        for _ in 0..5 {
            base.push(labhub_side::memcpy_rate(size));
            lab.push(labhub_side::channel_rate(size, "touch"));
            spin.push(labhub_side::channel_rate(size, "spin"));
            iox.push(iox_rate(size));
        }
        let (b, l, s, i) = (
            labhub_side::median(base),
            labhub_side::median(lab),
            labhub_side::median(spin),
            labhub_side::median(iox),
        );
        println!(
            "| {label} | {:.2} | {:.2} | {:.2}× | {:.2} | {:.2}× | {:.2} | {:.2}× | {:.2}× |",
            b / 1e9,
            l / 1e9,
            l / b,
            s / 1e9,
            s / b,
            i / 1e9,
            i / b,
            l.max(s) / i
        );
    }
}
