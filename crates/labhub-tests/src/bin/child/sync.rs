//! Child roles for the `sync` tests: processes that lock, wait, notify, and get killed.
//!
//! Every role maps the test's shared file (see [`Shared`] for its layout), prints a line on
//! stdout at each point the test synchronises on, and exits when stdin closes if it blocks.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use labhub::sync::{LockError, ProcessEvent, ProcessMutex};
use memmap2::MmapMut;

/// Offsets in the shared file.
pub mod at {
    /// The mutex most tests use.
    pub const MUTEX: usize = 0;
    /// Events of the ping-pong test: parent → child, child → parent.
    pub const PING: usize = 64;
    /// See [`PING`].
    pub const PONG: usize = 72;
    /// A u64 counter guarded by [`MUTEX`].
    pub const COUNTER: usize = 128;
    /// The ping-pong turn (u64).
    pub const TURN: usize = 136;
    /// Second and third mutex, around a glibc robust mutex.
    pub const MUTEX_B: usize = 192;
    /// A glibc `pthread_mutex_t` (robust, process-shared).
    pub const PTHREAD: usize = 256;
    /// See [`MUTEX_B`].
    pub const MUTEX_C: usize = 320;
    /// Size of the file.
    pub const SIZE: usize = 4096;
}

/// A shared file in /dev/shm mapped read-write.
pub struct Shared {
    map: MmapMut,
}

impl Shared {
    /// Creates (zero-filled) and maps `path`.
    #[allow(dead_code)] // used by the tests, which include this file
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .with_context(|| format!("creating {}", path.display()))?;
        file.set_len(at::SIZE as u64)?;
        Self::map(&file)
    }

    /// Maps the existing `path`.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Self::map(&file)
    }

    fn map(file: &std::fs::File) -> anyhow::Result<Self> {
        // SAFETY: the file is shared only with cooperating test processes, which access it
        // through atomics and the sync types.
        let map = unsafe { MmapMut::map_mut(file)? };
        Ok(Self { map })
    }

    fn at(&self, offset: usize) -> *const u8 {
        assert!(offset < at::SIZE && offset.is_multiple_of(8));
        // SAFETY: in bounds of the mapping (checked above).
        unsafe { self.map.as_ptr().add(offset) }
    }

    /// The mutex at `offset` (a multiple of 64).
    pub fn mutex(&self, offset: usize) -> &ProcessMutex {
        assert!(offset.is_multiple_of(64));
        // SAFETY: page-aligned mapping + 64-aligned offset; the mapping lives as long as `self`,
        // and the tests never leak guards.
        unsafe { ProcessMutex::from_ptr(self.at(offset).cast()) }
    }

    /// The event at `offset`.
    pub fn event(&self, offset: usize) -> &ProcessEvent {
        // SAFETY: aligned, in bounds, mapped as long as `self`.
        unsafe { ProcessEvent::from_ptr(self.at(offset).cast()) }
    }

    /// The u64 at `offset`.
    pub fn u64_at(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: aligned, in bounds, mapped as long as `self`.
        unsafe { &*self.at(offset).cast::<AtomicU64>() }
    }

    /// The raw u32 at `offset` (a lock word, as the kernel sees it).
    #[allow(dead_code)] // used by the tests, which include this file
    pub fn word(&self, offset: usize) -> u32 {
        // SAFETY: aligned, in bounds, mapped as long as `self`.
        unsafe { &*self.at(offset).cast::<AtomicU32>() }.load(Ordering::SeqCst)
    }

    /// The glibc mutex at [`at::PTHREAD`].
    fn pthread_mutex(&self) -> *mut libc::pthread_mutex_t {
        self.at(at::PTHREAD).cast_mut().cast()
    }
}

/// Runs the role `role` with `args`.
pub fn run(role: &str, args: &[String]) -> anyhow::Result<()> {
    let path = Path::new(args.first().context("missing shared file path")?);
    let shared = Shared::open(path)?;
    let number = |i: usize| -> anyhow::Result<u64> {
        args.get(i)
            .with_context(|| format!("missing argument {i}"))?
            .parse()
            .with_context(|| format!("argument {i} is not a number"))
    };
    match role {
        "sync-increment" => increment(&shared, number(1)?),
        "sync-hold" => {
            if args.get(1).map(String::as_str) == Some("--no-robust-list") {
                labhub::sys::disable_robust_list_for_current_thread();
            }
            let _guard = lock_reporting(shared.mutex(at::MUTEX))?;
            say("locked");
            block_until_stdin_closes();
            Ok(())
        }
        "sync-wait-lock" => {
            say("waiting");
            let outcome = match shared.mutex(at::MUTEX).lock() {
                Ok(_) => "locked",
                Err(LockError::OwnerDied(_)) => "owner-died",
                Err(other) => bail!("lock failed: {other}"),
            };
            say(outcome);
            Ok(())
        }
        "sync-hold-with-glibc" => hold_with_glibc(&shared),
        "sync-pong" => pong(&shared, number(1)?),
        "sync-wait-timeout" => {
            let timeout = Duration::from_millis(number(1)?);
            let event = shared.event(at::PING);
            let start = Instant::now();
            let notified = event.wait_changed(event.sequence(), Some(timeout));
            say(&format!(
                "returned notified={notified} after_us={}",
                start.elapsed().as_micros()
            ));
            Ok(())
        }
        other => bail!("unknown sync role {other:?}"),
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn block_until_stdin_closes() {
    let mut sink = String::new();
    while std::io::stdin()
        .lock()
        .read_line(&mut sink)
        .is_ok_and(|n| n > 0)
    {}
}

fn lock_reporting(mutex: &ProcessMutex) -> anyhow::Result<labhub::sync::ProcessMutexGuard<'_>> {
    match mutex.lock() {
        Ok(guard) | Err(LockError::OwnerDied(guard)) => Ok(guard),
        Err(other) => bail!("lock failed: {other}"),
    }
}

/// `rounds` non-atomic increments of the counter under the mutex.
fn increment(shared: &Shared, rounds: u64) -> anyhow::Result<()> {
    let counter = shared.u64_at(at::COUNTER);
    for _ in 0..rounds {
        let _guard = lock_reporting(shared.mutex(at::MUTEX))?;
        let value = counter.load(Ordering::Relaxed);
        counter.store(value + 1, Ordering::Relaxed);
    }
    say("done");
    Ok(())
}

/// Locks MUTEX, a glibc robust mutex, MUTEX_B and MUTEX_C, unlocks MUTEX (the oldest entry),
/// and waits to be killed with three entries of two kinds in one robust list.
fn hold_with_glibc(shared: &Shared) -> anyhow::Result<()> {
    let first = lock_reporting(shared.mutex(at::MUTEX))?;
    let glibc = shared.pthread_mutex();
    // SAFETY: the zeroed bytes at PTHREAD are reserved for this mutex, 8-aligned and large
    // enough; standard robust, process-shared initialisation.
    unsafe {
        let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        libc::pthread_mutexattr_init(attr.as_mut_ptr());
        libc::pthread_mutexattr_setrobust(attr.as_mut_ptr(), libc::PTHREAD_MUTEX_ROBUST);
        libc::pthread_mutexattr_setpshared(attr.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED);
        if libc::pthread_mutex_init(glibc, attr.as_ptr()) != 0
            || libc::pthread_mutex_lock(glibc) != 0
        {
            bail!("cannot lock the glibc mutex");
        }
    }
    let _b = lock_reporting(shared.mutex(at::MUTEX_B))?;
    let _c = lock_reporting(shared.mutex(at::MUTEX_C))?;
    drop(first);
    say("locked");
    block_until_stdin_closes();
    Ok(())
}

/// Answers `rounds` pings: waits for turn 2i-1, counts it, sets turn 2i and notifies.
fn pong(shared: &Shared, rounds: u64) -> anyhow::Result<()> {
    let (ping, pong, turn) = (
        shared.event(at::PING),
        shared.event(at::PONG),
        shared.u64_at(at::TURN),
    );
    say("ready");
    let mut counted = 0u64;
    for i in 1..=rounds {
        // No timeout: a lost wake-up hangs here and the test's watchdog reports it.
        ping.wait_until(None, || turn.load(Ordering::Acquire) == 2 * i - 1);
        counted += 1;
        turn.store(2 * i, Ordering::Release);
        pong.notify_one();
    }
    say(&format!("counted {counted}"));
    Ok(())
}
