//! Benchmarks of `labhub::sync` against baselines measured in the same run.
//!
//! - `uncontended_lock_unlock`: `ProcessMutex` in a shared mapping (robust list in use) and
//!   as a `new()` value, against `std::sync::Mutex`.
//! - `cross_process_wake`: a ping-pong between this process and a child (this binary again,
//!   in child mode) through `ProcessEvent`, against a bare futex ping-pong (raw `FUTEX_WAIT` /
//!   `FUTEX_WAKE` system calls, below). One iteration is a round trip: two wake-ups.
//!
//! `cargo bench -p labhub --bench sync`; results and figures in docs/PERFORMANCE.md.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use criterion::Criterion;
use labhub::sync::{ProcessEvent, ProcessMutex};
use memmap2::MmapMut;

/// The baseline's system calls: a shared (not private) futex wait and wake, nothing else.
mod sys {
    use std::sync::atomic::AtomicU32;
    use std::time::Duration;

    pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> bool {
        let ts = timeout.map(|t| libc::timespec {
            tv_sec: t.as_secs() as libc::time_t,
            tv_nsec: t.subsec_nanos() as libc::c_long,
        });
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: FUTEX_WAIT on a valid, aligned u32 that lives in a mapping for the call's
        // duration; the timeout is null or a valid timespec.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT,
                expected,
                ts_ptr,
            ) == 0
        }
    }

    pub fn futex_wake(word: &AtomicU32, count: u32) {
        // SAFETY: FUTEX_WAKE on a valid, aligned u32; no memory is written.
        unsafe {
            libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, count);
        }
    }
}

/// Set in the child: `futex:<path>` or `event<spins>:<path>`.
const CHILD_ENV: &str = "LABHUB_SYNC_BENCH_CHILD";

const MUTEX: usize = 0;
const FUTEX_PING: usize = 64;
const FUTEX_PONG: usize = 68;
const EVENT_PING: usize = 128;
const EVENT_PONG: usize = 136;
const STOP: usize = 192;
const SIZE: usize = 4096;

struct Shared {
    map: MmapMut,
}

impl Shared {
    fn open(path: &Path, create: bool) -> Self {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(create)
            .open(path)
            .expect("open the shared file");
        if create {
            file.set_len(SIZE as u64).expect("size the shared file");
        }
        // SAFETY: shared only with the benchmark's child, through atomics and sync types.
        let map = unsafe { MmapMut::map_mut(&file).expect("map the shared file") };
        Self { map }
    }

    fn u32_at(&self, offset: usize) -> &AtomicU32 {
        assert!(offset + 4 <= SIZE && offset.is_multiple_of(4));
        // SAFETY: aligned and in bounds; the mapping lives as long as `self`.
        unsafe { &*self.map.as_ptr().add(offset).cast::<AtomicU32>() }
    }

    fn event(&self, offset: usize) -> &ProcessEvent {
        assert!(offset + 8 <= SIZE && offset.is_multiple_of(8));
        // SAFETY: aligned and in bounds; the mapping lives as long as `self`.
        unsafe { ProcessEvent::from_ptr(self.map.as_ptr().add(offset).cast()) }
    }

    fn mutex(&self, offset: usize) -> &ProcessMutex {
        assert!(offset + 64 <= SIZE && offset.is_multiple_of(64));
        // SAFETY: page-aligned mapping, 64-aligned offset; lives as long as `self`; the
        // benchmark never leaks a guard.
        unsafe { ProcessMutex::from_ptr(self.map.as_ptr().add(offset).cast()) }
    }
}

fn temp_path(what: &str) -> PathBuf {
    PathBuf::from(format!(
        "/dev/shm/labhub-sync-bench-{what}-{}",
        std::process::id()
    ))
}

fn uncontended(c: &mut Criterion) {
    let path = temp_path("mutex");
    let shared = Shared::open(&path, true);
    let _ = std::fs::remove_file(&path);
    let placed = shared.mutex(MUTEX);
    let local = ProcessMutex::new();
    let std_mutex = std::sync::Mutex::new(());

    let mut group = c.benchmark_group("uncontended_lock_unlock");
    group.bench_function("std_mutex", |b| {
        b.iter(|| drop(black_box(&std_mutex).lock()));
    });
    group.bench_function("process_mutex_shared", |b| {
        b.iter(|| drop(black_box(placed).lock()));
    });
    group.bench_function("process_mutex_local", |b| {
        b.iter(|| drop(black_box(&local).lock()));
    });
    group.finish();
}

/// A responder in another process, stopped and reaped on drop.
struct Responder {
    child: std::process::Child,
    shared: Shared,
    path: PathBuf,
}

impl Responder {
    fn start(mode: &str) -> Self {
        let path = temp_path(mode);
        let _ = std::fs::remove_file(&path);
        let shared = Shared::open(&path, true);
        let child = Command::new(std::env::current_exe().expect("own path"))
            .env(CHILD_ENV, format!("{mode}:{}", path.display()))
            .spawn()
            .expect("spawn the responder");
        Self {
            child,
            shared,
            path,
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.shared.u32_at(STOP).store(1, Ordering::SeqCst);
        sys::futex_wake(self.shared.u32_at(FUTEX_PING), 1);
        self.shared.event(EVENT_PING).notify_all();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.path);
    }
}

fn cross_process_wake(c: &mut Criterion) {
    let mut group = c.benchmark_group("cross_process_wake");
    group.measurement_time(Duration::from_secs(8));

    let futex = Responder::start("futex");
    let (ping, pong) = (
        futex.shared.u32_at(FUTEX_PING),
        futex.shared.u32_at(FUTEX_PONG),
    );
    let mut round = 0u32;
    group.bench_function("bare_futex_round_trip", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                round = round.wrapping_add(1);
                ping.store(round, Ordering::Release);
                sys::futex_wake(ping, 1);
                loop {
                    let seen = pong.load(Ordering::Acquire);
                    if seen == round {
                        break;
                    }
                    let _ = sys::futex_wait(pong, seen, None);
                }
            }
            start.elapsed()
        });
    });
    drop(futex);

    // The responder spins as much as the measuring side.
    for spins in [0, 100] {
        let event = Responder::start(&format!("event{spins}"));
        let (ping, pong) = (
            event.shared.event(EVENT_PING),
            event.shared.event(EVENT_PONG),
        );
        let name = format!("process_event_round_trip_spin{spins}");
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    let seen = pong.sequence();
                    ping.notify_one();
                    while !pong.wait_changed_spinning(seen, spins, None) {}
                }
                start.elapsed()
            });
        });
        drop(event);
    }
    group.finish();
}

/// The responder: answers every ping with a pong until told to stop (or orphaned).
fn child(spec: &str) {
    let (mode, path) = spec.split_once(':').expect("mode:path");
    let shared = Shared::open(Path::new(path), false);
    let stop = shared.u32_at(STOP);
    let orphaned = || std::os::unix::process::parent_id() == 1;
    match mode {
        "futex" => {
            let (ping, pong) = (shared.u32_at(FUTEX_PING), shared.u32_at(FUTEX_PONG));
            // The file starts zeroed; the first ping may land before we get here.
            let mut last = 0;
            while stop.load(Ordering::Acquire) == 0 && !orphaned() {
                let now = ping.load(Ordering::Acquire);
                if now == last {
                    let _ = sys::futex_wait(ping, last, Some(Duration::from_secs(1)));
                    continue;
                }
                last = now;
                pong.store(now, Ordering::Release);
                sys::futex_wake(pong, 1);
            }
        }
        event if event.starts_with("event") => {
            let spins: u32 = event["event".len()..].parse().expect("event<spins>");
            let (ping, pong) = (shared.event(EVENT_PING), shared.event(EVENT_PONG));
            let mut seen = 0; // as for the futex responder
            while stop.load(Ordering::Acquire) == 0 && !orphaned() {
                if !ping.wait_changed_spinning(seen, spins, Some(Duration::from_secs(1))) {
                    continue;
                }
                seen = ping.sequence();
                pong.notify_one();
            }
        }
        other => panic!("unknown responder mode {other:?}"),
    }
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child(&spec);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    uncontended(&mut c);
    cross_process_wake(&mut c);
    c.final_summary();
}
