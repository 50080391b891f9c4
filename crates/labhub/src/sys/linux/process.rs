//! Thread and process ids, liveness, and a process identity that survives pid reuse.

use std::io;

/// The calling thread's kernel thread id (a syscall; [`super::current_thread`] caches it).
pub fn gettid() -> u32 {
    // SAFETY: gettid has no arguments and cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    u32::try_from(tid).expect("gettid returns a positive pid_t")
}

/// The calling process's id.
pub fn getpid() -> u32 {
    std::process::id()
}

/// Whether a thread (of any process) with kernel id `tid` exists and has not exited.
///
/// A zombie (dead, not yet reaped) counts as exited when `/proc` can be read. The answer errs
/// towards "alive": callers take locks from threads reported dead. It can be wrong after tid
/// reuse (a new, unrelated thread with the same id counts as alive), and ids are those of the
/// caller's pid namespace.
pub fn thread_alive(tid: u32) -> bool {
    if !task_exists(tid) {
        return false;
    }
    // `kill` succeeds on zombies; their state in /proc is Z (or X while being reaped). If
    // /proc cannot be read (not mounted, no descriptor left), `kill` has the last word: a
    // zombie then counts as alive until reaped, which is slow but never takes a live lock.
    match read_stat(tid) {
        Ok(stat) => !matches!(stat.state, 'Z' | 'X'),
        Err(_) => true,
    }
}

/// Whether a task (thread or process) with id `id` exists, zombies included (`kill(id, 0)`).
fn task_exists(id: u32) -> bool {
    let Ok(id) = libc::pid_t::try_from(id) else {
        return false;
    };
    if id <= 0 {
        return false;
    }
    // SAFETY: signal 0 performs only the existence and permission checks.
    if unsafe { libc::kill(id, 0) } == 0 {
        return true;
    }
    // EPERM: it exists but belongs to someone else.
    io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// A process identity that survives pid reuse: the pid plus the process's start time
/// (clock ticks after boot, `/proc/<pid>/stat` field 22).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProcessId {
    /// The process id.
    pub pid: u32,
    /// When the process started, in clock ticks after boot.
    pub start_time: u64,
}

impl ProcessId {
    /// The calling process's identity.
    pub fn current() -> io::Result<Self> {
        Self::of(getpid())
    }

    /// The identity of the running process `pid`; `NotFound` if there is none.
    pub fn of(pid: u32) -> io::Result<Self> {
        let stat = read_stat(pid)?;
        Ok(Self {
            pid,
            start_time: stat.start_time,
        })
    }

    /// Whether this very process still runs: the pid exists, is not a zombie, and started
    /// at the same time (so it is not a later process that reused the pid).
    ///
    /// If `/proc` cannot be read (not mounted, no descriptor left) the answer is whether the
    /// pid exists: it errs towards "alive", since callers reclaim what dead processes held.
    pub fn is_alive(&self) -> bool {
        match read_stat(self.pid) {
            Ok(stat) => stat.start_time == self.start_time && !matches!(stat.state, 'Z' | 'X'),
            Err(_) => task_exists(self.pid),
        }
    }
}

struct Stat {
    state: char,
    start_time: u64,
}

/// Reads the state and start time of `/proc/<id>/stat` (works for thread ids too).
fn read_stat(id: u32) -> io::Result<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{id}/stat"))?;
    parse_stat(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected format of /proc/{id}/stat"),
        )
    })
}

/// `pid (comm) state ppid …`: comm may hold spaces and parentheses, so fields are counted
/// after the last `)`; state is field 3 and starttime field 22.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let start_time = fields.nth(18)?.parse().ok()?;
    Some(Stat { state, start_time })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let line = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 10";
        let stat = parse_stat(line).unwrap();
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.start_time, 123456);
    }

    #[test]
    fn the_current_process_and_thread_are_alive() {
        let me = ProcessId::current().unwrap();
        assert_eq!(me.pid, std::process::id());
        assert!(me.is_alive());
        assert!(thread_alive(gettid()));
        let later = ProcessId {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!later.is_alive(), "a reused pid is a different process");
    }

    #[test]
    fn a_reaped_child_is_dead() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!thread_alive(pid));
        assert!(ProcessId::of(pid).is_err() || !ProcessId::of(pid).unwrap().is_alive());
    }
}
