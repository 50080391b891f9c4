//! TEMPORARY stand-ins for `labhub::sync::{ProcessMutex, ProcessEvent}` and
//! `labhub::sys::ProcessId` until the `sync` branch lands. Same names and shapes; polling instead
//! of futexes. Removed when sync is merged.
#![allow(dead_code, missing_docs)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

#[repr(C)]
pub struct ProcessEvent {
    seq: AtomicU32,
    waiters: AtomicU32,
}

impl ProcessEvent {
    pub const fn new() -> Self {
        Self {
            seq: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
        }
    }
    pub fn notify_one(&self) {
        self.seq.fetch_add(1, Ordering::SeqCst);
    }
    pub fn notify_all(&self) {
        self.seq.fetch_add(1, Ordering::SeqCst);
    }
    pub fn sequence(&self) -> u32 {
        self.seq.load(Ordering::SeqCst)
    }
    pub fn wait_changed(&self, seen: u32, timeout: Option<Duration>) -> bool {
        let start = Instant::now();
        loop {
            if self.seq.load(Ordering::SeqCst) != seen {
                return true;
            }
            if timeout.is_some_and(|t| start.elapsed() >= t) {
                return false;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

#[repr(C, align(64))]
pub struct ProcessMutex {
    word: AtomicU32,
    _pad: [u8; 60],
}

pub struct ProcessMutexGuard<'a>(&'a ProcessMutex);

impl Drop for ProcessMutexGuard<'_> {
    fn drop(&mut self) {
        self.0.word.store(0, Ordering::Release);
    }
}

pub enum LockError<'a> {
    OwnerDied(ProcessMutexGuard<'a>),
    Timeout,
}

impl ProcessMutex {
    pub const fn new() -> Self {
        Self {
            word: AtomicU32::new(0),
            _pad: [0; 60],
        }
    }
    pub fn lock(&self) -> Result<ProcessMutexGuard<'_>, LockError<'_>> {
        let me = std::process::id();
        loop {
            match self
                .word
                .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return Ok(ProcessMutexGuard(self)),
                Err(owner) => {
                    if !std::path::Path::new(&format!("/proc/{owner}")).exists()
                        && self
                            .word
                            .compare_exchange(owner, me, Ordering::Acquire, Ordering::Relaxed)
                            .is_ok()
                    {
                        return Err(LockError::OwnerDied(ProcessMutexGuard(self)));
                    }
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessId {
    pub pid: u32,
    pub start_time: u64,
}

fn start_time_of(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(19)?.parse().ok()
}

impl ProcessId {
    pub fn current() -> Self {
        let pid = std::process::id();
        Self {
            pid,
            start_time: start_time_of(pid).unwrap_or(0),
        }
    }
    pub fn is_alive(&self) -> bool {
        match start_time_of(self.pid) {
            Some(t) => t == self.start_time,
            None => false,
        }
    }
}
