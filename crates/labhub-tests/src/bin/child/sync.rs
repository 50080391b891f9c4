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
                labhub::sync::testing::disable_robust_list_for_current_thread();
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
        "sync-lock-without-fds" => {
            // A waiter that can open no file (so cannot read /proc) must still never take the
            // lock from a live holder, nor call a live process dead.
            let timeout = Duration::from_millis(number(1)?);
            let holder = labhub::sync::ProcessId {
                pid: u32::try_from(number(2)?)?,
                start_time: number(3)?,
            };
            let _spent = exhaust_file_descriptors()?;
            let alive = holder.is_alive();
            let outcome = match shared.mutex(at::MUTEX).lock_timeout(timeout) {
                Ok(_) => "locked",
                Err(LockError::OwnerDied(_)) => "owner-died",
                Err(LockError::Timeout) => "timeout",
                Err(other) => bail!("lock failed: {other}"),
            };
            say(&format!("holder-alive={alive} lock={outcome}"));
            Ok(())
        }
        "sync-fork-while-holding" => fork_while_holding(&shared),
        "sync-wait-lock-under-signals" => {
            interrupt_every(Duration::from_millis(20))?;
            say("waiting");
            let outcome = match shared.mutex(at::MUTEX).lock() {
                Ok(_) => "locked",
                Err(LockError::OwnerDied(_)) => "owner-died",
                Err(other) => bail!("lock failed: {other}"),
            };
            say(outcome);
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

/// Lowers the soft descriptor limit and opens /dev/null until no descriptor is left; the
/// returned files hold them.
fn exhaust_file_descriptors() -> anyhow::Result<Vec<std::fs::File>> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit to the valid local passed by address.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        bail!("getrlimit: {}", std::io::Error::last_os_error());
    }
    limit.rlim_cur = limit.rlim_cur.min(32);
    // SAFETY: setrlimit reads one rlimit from the valid local passed by address.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        bail!("setrlimit: {}", std::io::Error::last_os_error());
    }
    let mut files = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(file) => files.push(file),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => break,
            Err(e) => return Err(e).context("opening /dev/null"),
        }
    }
    if std::fs::read_to_string("/proc/self/stat").is_ok() {
        bail!("/proc is still readable");
    }
    Ok(files)
}

extern "C" fn ignore_signal(_: libc::c_int) {}

/// Sends this process SIGALRM every `period`, caught by a handler installed without
/// `SA_RESTART`, so that every blocking call returns `EINTR` that often.
fn interrupt_every(period: Duration) -> anyhow::Result<()> {
    // SAFETY: all-zero is a valid `sigaction` (empty mask, no flags), completed below.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = ignore_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: installs a handler that does nothing, from a valid `sigaction`.
    if unsafe { libc::sigaction(libc::SIGALRM, &action, std::ptr::null_mut()) } != 0 {
        bail!("sigaction: {}", std::io::Error::last_os_error());
    }
    let every = libc::timeval {
        tv_sec: 0,
        tv_usec: libc::suseconds_t::try_from(period.as_micros())?,
    };
    let timer = libc::itimerval {
        it_interval: every,
        it_value: every,
    };
    // SAFETY: reads the valid `itimerval` above; the old value is not wanted.
    if unsafe { libc::setitimer(libc::ITIMER_REAL, &timer, std::ptr::null_mut()) } != 0 {
        bail!("setitimer: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Locks MUTEX, forks, lets the forked copy drop its copy of the guard (as unwinding would),
/// and reports whether this process still holds the lock.
fn fork_while_holding(shared: &Shared) -> anyhow::Result<()> {
    let mutex = shared.mutex(at::MUTEX);
    let guard = lock_reporting(mutex)?;
    // SAFETY: this process is single-threaded; the forked copy only drops the guard and ends
    // with `_exit`, running no destructor of ours.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        drop(guard);
        // SAFETY: ends the forked copy at once.
        unsafe { libc::_exit(0) };
    }
    if pid < 0 {
        bail!("fork: {}", std::io::Error::last_os_error());
    }
    let mut status = 0;
    // SAFETY: waits for our own child, writing its status to a local.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        bail!("waitpid: {}", std::io::Error::last_os_error());
    }
    let held = mutex.owner() == Some(labhub::sync::current_thread_id());
    say(&format!("held-after-the-fork-dropped-its-copy={held}"));
    drop(guard);
    Ok(())
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
