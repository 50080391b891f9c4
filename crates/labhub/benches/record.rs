//! Recording and replay throughput against their baselines, measured in one run (ratios in
//! docs/PERFORMANCE.md):
//!
//! - record: a producer committing 1 MiB frames (512 x 1024 u16) into a lossless ring of 8
//!   slots, stamping only each frame's first element (as a camera that fills its buffers by
//!   DMA: the recorder's cost is measured, not a CPU copy on the producer's side), the recorder
//!   writing them to a recording, against a plain sequential write of as many bytes (1 MiB
//!   `write` calls from buffers in memory) to a file on the same file system: tmpfs
//!   (`/dev/shm`) and the disk (`target/`).
//! - replay at `max` into a channel a consumer drains, against a plain producer publishing
//!   the same frames (all of them held in memory, so both read from memory, not cache) to the
//!   same kind of consumer; from the shard files, and preloaded (`ReplayOptions::preload`:
//!   its publishing timed by the consumer from its first frame to its last, and with the load).
//!
//! `cargo bench -p labhub --features record --bench record` (optional argument: frames per
//! run, default 512; rounds alternate baseline and subject).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use labhub::record::{RecordOptions, Recorder, ReplayOptions, Replayer};
use labhub::shm::{self, Channel, Policy};

const SHAPE: [u64; 2] = [512, 1024];
const FRAME: usize = 512 * 1024 * 2;
const ROUNDS: usize = 5;

/// Distinct frames (64 MiB) cycled through, so the source is not one cached buffer.
fn frames() -> Vec<Vec<u16>> {
    (0..64u16)
        .map(|i| (0..FRAME as u32 / 2).map(|x| (x as u16) ^ i).collect())
        .collect()
}

fn gbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

fn plain_write(dir: &Path, frames: &[Vec<u16>], n: usize) -> Duration {
    let path = dir.join("plain.bin");
    let start = Instant::now();
    let mut f = std::fs::File::create(&path).unwrap();
    for i in 0..n {
        f.write_all(bytemuck::cast_slice(&frames[i % frames.len()]))
            .unwrap();
    }
    drop(f);
    let d = start.elapsed();
    std::fs::remove_file(path).unwrap();
    d
}

/// Records `n` frames a producer publishes into `path`; the time from the first publish to
/// the recording's end.
fn record(path: &Path, n: usize, name: &str) -> Duration {
    let mut camera = Channel::new(name)
        .policy(Policy::ring(8))
        .frames::<u16>(&SHAPE)
        .create()
        .unwrap();
    let options = RecordOptions {
        max_frames: Some(n as u64),
        ..RecordOptions::default()
    };
    let mut recorder = Recorder::create(path, options).unwrap();
    recorder.add(Channel::new(name).open().unwrap()).unwrap();
    let start = Instant::now();
    let worker = std::thread::spawn(move || recorder.run(|_| {}).unwrap());
    for i in 0..n {
        let mut slot = camera.loan().unwrap();
        slot[0] = i as u16;
        slot.commit();
    }
    worker.join().unwrap();
    let d = start.elapsed();
    drop(camera);
    shm::remove_channel(name).unwrap();
    d
}

/// A consumer thread that reads `n` frames of channel `name` (touching one element of each);
/// it returns the time from its first frame to its last.
fn drain(name: &str, n: usize) -> std::thread::JoinHandle<Duration> {
    let mut c = Channel::new(name).element::<u16>().open().unwrap();
    std::thread::spawn(move || {
        let mut sum = 0u64;
        let mut first = None;
        for _ in 0..n {
            let f = c.next(Some(Duration::from_secs(60))).unwrap();
            first.get_or_insert_with(Instant::now);
            sum = sum.wrapping_add(u64::from(f.held().map_or(0, |h| h[0])));
        }
        std::hint::black_box(sum);
        first.map_or(Duration::ZERO, |t| t.elapsed())
    })
}

/// Start to end, and the consumer's first-to-last frame.
fn plain_producer(frames: &[Vec<u16>], n: usize, name: &str) -> (Duration, Duration) {
    let mut p = Channel::new(name)
        .policy(Policy::ring(8))
        .frames::<u16>(&SHAPE)
        .create()
        .unwrap();
    let consumer = drain(name, n);
    let start = Instant::now();
    for i in 0..n {
        p.publish(&frames[i % frames.len()], &SHAPE).unwrap();
    }
    let steady = consumer.join().unwrap();
    let d = start.elapsed();
    drop(p);
    shm::remove_channel(name).unwrap();
    (d, steady)
}

/// Start to end (a preload included), and the consumer's first-to-last frame.
fn replay(path: &Path, n: usize, name: &str, preload: bool) -> (Duration, Duration) {
    let r = Replayer::open(path).unwrap();
    let p = r.configure(0, Channel::new(name)).create().unwrap();
    let consumer = drain(name, n);
    let start = Instant::now();
    let options = ReplayOptions {
        preload: preload.then_some(4 << 30),
        ..ReplayOptions::default()
    };
    let summary = r.play(vec![p], &options).unwrap();
    let steady = consumer.join().unwrap();
    let d = start.elapsed();
    assert_eq!(summary.frames, [n as u64]);
    shm::remove_channel(name).unwrap();
    (d, steady)
}

fn rounds(r: &[f64]) -> Vec<f64> {
    r.iter().map(|r| (r * 100.0).round() / 100.0).collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn scratch(base: &Path, tag: &str) -> PathBuf {
    let d = base.join(format!("labhub-bench-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(512);
    let frames = frames();
    let bytes = n * FRAME;
    let name = format!("bench-record-{}", std::process::id());
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    println!("{n} frames of 1 MiB per run, {ROUNDS} rounds alternated; GB/s = 1e9 bytes/s");
    for (fs, base) in [("tmpfs", PathBuf::from("/dev/shm")), ("disk", target)] {
        let dir = scratch(&base, fs);
        let (mut plain, mut rec, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let p = gbps(bytes, plain_write(&dir, &frames, n));
            let path = dir.join("run.zarr");
            let r = gbps(bytes, record(&path, n, &name));
            std::fs::remove_dir_all(path).unwrap();
            plain.push(p);
            rec.push(r);
            ratio.push(r / p);
        }
        println!(
            "record   {fs:5}: plain write {:.2} GB/s, recording {:.2} GB/s, ratio {:.2} (rounds {:?})",
            median(plain),
            median(rec),
            median(ratio.clone()),
            ratio
                .iter()
                .map(|r| (r * 100.0).round() / 100.0)
                .collect::<Vec<_>>()
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
    // A recording to replay, on tmpfs.
    let dir = scratch(Path::new("/dev/shm"), "replay");
    let path = dir.join("run.zarr");
    record(&path, n, &name);
    // The recording's frames, all in memory, for the plain producer.
    let all: Vec<Vec<u16>> = {
        let r = Replayer::open(&path).unwrap();
        assert_eq!(r.channels()[0].frames, n as u64);
        (0..n).map(|i| frames[i % frames.len()].clone()).collect()
    };
    let mut plain = Vec::new();
    let mut rep = Vec::new();
    let (mut ratio, mut pre_total, mut pre_steady) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let (p, p_steady) = plain_producer(&all, n, &name);
        let (r, _) = replay(&path, n, &name, false);
        let (pre, pre_s) = replay(&path, n, &name, true);
        let p = gbps(bytes, p);
        plain.push(p);
        rep.push(gbps(bytes, r));
        ratio.push(gbps(bytes, r) / p);
        pre_total.push(gbps(bytes, pre) / p);
        // First-to-last frame on both sides: n - 1 frame intervals.
        pre_steady.push(p_steady.as_secs_f64() / pre_s.as_secs_f64());
    }
    println!(
        "replay   max  : plain producer {:.2} GB/s, replay {:.2} GB/s, ratio {:.2} (rounds {:?})",
        median(plain),
        median(rep),
        median(ratio.clone()),
        rounds(&ratio)
    );
    println!(
        "replay   max, preloaded: publishing {:.2}x the plain producer (rounds {:?}), \
         {:.2}x with the load (rounds {:?})",
        median(pre_steady.clone()),
        rounds(&pre_steady),
        median(pre_total.clone()),
        rounds(&pre_total)
    );
    std::fs::remove_dir_all(dir).unwrap();
}
