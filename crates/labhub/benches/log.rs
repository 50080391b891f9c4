//! Cost of one log call on the caller's thread, against baselines measured in the same run.
//!
//! `cargo bench -p labhub --bench log`
#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::fs::OpenOptions;
use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use labhub::log::{LogConfig, Logger, Sink};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;

fn log_call(c: &mut Criterion) {
    let mut group = c.benchmark_group("log_call");

    // Baseline 1: the macro with no subscriber at all.
    group.bench_function("tracing_without_subscriber", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            tracing::info!(frame = black_box(i), channel = "cam0", "frame published");
        })
    });

    // Baseline 2: format a line of the same shape into a Vec (what any logger must do).
    group.bench_function("format_line_into_vec", |b| {
        let mut buf = Vec::with_capacity(256);
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            buf.clear();
            let _ = writeln!(
                buf,
                "{} INFO  {}:{} bench: frame published frame={} channel={:?}",
                humantime::format_rfc3339_micros(SystemTime::now()),
                std::process::id(),
                7,
                black_box(i),
                "cam0"
            );
            black_box(&buf);
        })
    });

    // Baseline 3: a synchronous logger: format, then one write(2) per line on the caller's
    // thread (to /dev/null, so the device costs nothing).
    group.bench_function("format_and_write_syscall", |b| {
        let mut null = OpenOptions::new().append(true).open("/dev/null").unwrap();
        let mut buf = Vec::with_capacity(256);
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            buf.clear();
            let _ = writeln!(
                buf,
                "{} INFO  {}:{} bench: frame published frame={} channel={:?}",
                humantime::format_rfc3339_micros(SystemTime::now()),
                std::process::id(),
                7,
                black_box(i),
                "cam0"
            );
            null.write_all(&buf).unwrap();
        })
    });

    // Baseline 4: tracing's own dispatch cost: a registry with a layer that does nothing.
    struct Noop;
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Noop {}
    let noop = tracing::Dispatch::new(tracing_subscriber::registry().with(Noop));
    tracing::dispatcher::with_default(&noop, || {
        group.bench_function("tracing_registry_noop_layer", |b| {
            let mut i = 0u64;
            b.iter(|| {
                i += 1;
                tracing::info!(frame = black_box(i), channel = "cam0", "frame published");
            })
        });
    });
    // Gone before labhub's runs: a live subscriber without a level hint would keep every
    // callsite enabled and hide what a disabled level costs.
    drop(noop);

    // labhub: format on the caller's thread, hand the line to the writer thread.
    let logger =
        Logger::start(LogConfig::new(Sink::File("/dev/null".into())).queue_capacity(1 << 16))
            .unwrap();
    let dispatch = logger.dispatch();
    tracing::dispatcher::with_default(&dispatch, || {
        group.bench_function("labhub_enabled", |b| {
            let mut i = 0u64;
            b.iter(|| {
                i += 1;
                tracing::info!(frame = black_box(i), channel = "cam0", "frame published");
            })
        });
        group.bench_function("labhub_disabled_level", |b| {
            let mut i = 0u64;
            b.iter(|| {
                i += 1;
                tracing::debug!(frame = black_box(i), channel = "cam0", "frame published");
            })
        });
    });
    logger.flush().unwrap();
    eprintln!(
        "labhub_enabled: {} lines dropped (queue full) during the run",
        logger.dropped_count()
    );
    logger.set_level(LevelFilter::INFO);
    logger.shutdown();
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = log_call
}
criterion_main!(benches);
