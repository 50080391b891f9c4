//! Helpers shared by labhub's integration tests: spawning the child binary, unique names,
//! scratch directories and a watchdog so a deadlocked test fails instead of hanging CI.
//!
//! The path of the child binary is only known to integration tests
//! (`env!("CARGO_BIN_EXE_labhub-test-child")`), so [`ChildProc::spawn`] takes it as an argument.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest any single wait in a test may take before the test fails (a watchdog, not a
/// performance assertion); whole-test limits are multiples of it.
pub const WATCHDOG: Duration = Duration::from_secs(30);

/// A name unique to this process and call (`<tag>-<pid>-<counter>`), so parallel tests never
/// share a channel, socket or directory.
pub fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `body` on its own thread and fails the test if it has not finished within `limit`, so
/// a deadlock fails instead of hanging the run. A panic in `body` is passed on.
pub fn within_watchdog<T: Send + 'static>(
    what: &str,
    limit: Duration,
    body: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (done_tx, done_rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let out = body();
        let _ = done_tx.send(());
        out
    });
    match done_rx.recv_timeout(limit) {
        Ok(()) | Err(RecvTimeoutError::Disconnected) => match worker.join() {
            Ok(out) => out,
            Err(panic) => std::panic::resume_unwind(panic),
        },
        Err(RecvTimeoutError::Timeout) => {
            panic!("watchdog: {what} still running after {limit:?} (deadlock?)")
        }
    }
}

/// Aborts the whole test binary if still alive after its limit: for tests whose body must run
/// on the test's own thread. Dropping it (at the end of the test) disarms it.
#[must_use = "the watchdog is disarmed when dropped"]
pub struct AbortWatchdog(#[allow(dead_code)] mpsc::Sender<()>);

impl AbortWatchdog {
    /// Arms a watchdog that aborts the process if `what` still runs after `limit`.
    pub fn arm(what: &'static str, limit: Duration) -> Self {
        let (cancel, cancelled) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(RecvTimeoutError::Timeout) = cancelled.recv_timeout(limit) {
                eprintln!("watchdog: {what} still running after {limit:?}; aborting");
                std::process::abort();
            }
        });
        Self(cancel)
    }
}

/// Waits until `cond` holds, failing the test after [`WATCHDOG`]. For states only observable
/// by looking (a file appearing, a bit set by another process); it polls every millisecond.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WATCHDOG;
    while !cond() {
        assert!(Instant::now() < deadline, "watchdog: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A fresh directory unique to one test, removed with its contents when dropped.
///
/// When dropped while its thread panics (a failing test) the directory is kept for inspection
/// and its path printed.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// A new empty directory `labhub-it-<tag>-<pid>-<n>` under the system temporary directory.
    pub fn new(tag: &str) -> Self {
        Self::new_in(&std::env::temp_dir(), tag)
    }

    /// A new empty directory `labhub-it-<tag>-<pid>-<n>` under `base` (created if missing); the
    /// path is canonical.
    pub fn new_in(base: &Path, tag: &str) -> Self {
        let path = base.join(unique(&format!("labhub-it-{tag}")));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("create scratch dir {}: {e}", path.display()));
        let path = std::fs::canonicalize(&path).expect("canonical scratch dir");
        Self { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `name` inside the directory.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    /// An `ipc://` endpoint for a socket file `name` inside the directory.
    pub fn ipc(&self, name: &str) -> String {
        format!("ipc://{}", self.join(name).display())
    }
}

impl AsRef<Path> for ScratchDir {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept scratch dir {} of a failed test", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A child process talking line by line: stdout lines arrive on a channel read with a
/// [`WATCHDOG`] timeout, stdin takes lines, stderr is collected (and echoed into the test's
/// output). SIGKILLed and reaped when dropped.
pub struct ChildProc {
    child: Child,
    label: String,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Stderr>,
}

/// A child's stderr as collected so far, and whether the pipe reached its end.
#[derive(Default)]
struct Stderr {
    text: Mutex<(String, bool)>,
    ended: std::sync::Condvar,
}

impl ChildProc {
    /// Spawns `exe role args…` (`exe` is the `labhub-test-child` binary).
    pub fn spawn(exe: &str, role: &str, args: &[&str]) -> Self {
        let mut cmd = Command::new(exe);
        cmd.arg(role).args(args);
        Self::from_command(role, cmd)
    }

    /// Spawns `cmd` with piped stdin, stdout and stderr; `label` names it in failures.
    pub fn from_command(label: &str, mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {label}: {e}"));
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Stderr::default());
        let err = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("{line}");
                let mut s = sink.text.lock().unwrap();
                s.0.push_str(&line);
                s.0.push('\n');
            }
            sink.text.lock().unwrap().1 = true;
            sink.ended.notify_all();
        });
        Self {
            stdin: child.stdin.take(),
            child,
            label: label.to_owned(),
            lines,
            stderr,
        }
    }

    /// Renames the process in failure messages (e.g. "consumer 2").
    pub fn labelled(mut self, label: &str) -> Self {
        label.clone_into(&mut self.label);
        self
    }

    /// The name failure messages use.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the process has written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.text.lock().unwrap().0.clone()
    }

    /// Waits (at most 5 s: a process it started may hold the pipe open) until everything the
    /// exited process wrote to stderr is collected.
    fn drain_stderr(&self) {
        let text = self.stderr.text.lock().unwrap();
        let _ = self
            .stderr
            .ended
            .wait_timeout_while(text, Duration::from_secs(5), |t| !t.1)
            .unwrap();
    }

    /// The next stdout line; fails the test after [`WATCHDOG`] or if the process ends first.
    pub fn next_line(&mut self) -> String {
        self.recv(WATCHDOG, "another line")
    }

    /// The next stdout line, which must start with `prefix`; returns it.
    pub fn expect(&mut self, prefix: &str) -> String {
        let line = self.next_line();
        assert!(
            line.starts_with(prefix),
            "{} said {line:?}, expected {prefix:?}…",
            self.label
        );
        line
    }

    /// The next stdout line, which must be exactly `expected`.
    pub fn expect_exact(&mut self, expected: &str) {
        let line = self.next_line();
        assert_eq!(line, expected, "{} (pid {})", self.label, self.pid());
    }

    /// Skips stdout lines until one satisfies `want`; returns it. Fails after [`WATCHDOG`].
    pub fn wait_for(&mut self, what: &str, mut want: impl FnMut(&str) -> bool) -> String {
        let deadline = Instant::now() + WATCHDOG;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.recv(left, what);
            if want(&line) {
                return line;
            }
        }
    }

    /// Skips stdout lines until one starts with `prefix`; returns it. Fails after [`WATCHDOG`].
    pub fn skip_to(&mut self, prefix: &str) -> String {
        self.wait_for(prefix, |l| l.starts_with(prefix))
    }

    fn recv(&mut self, timeout: Duration, what: &str) -> String {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => panic!(
                "watchdog: {} did not say {what} within {WATCHDOG:?}; stderr:\n{}",
                self.label,
                self.stderr()
            ),
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.wait();
                panic!(
                    "{} exited ({status}) before saying {what}; stderr:\n{}",
                    self.label,
                    self.stderr()
                )
            }
        }
    }

    /// Writes `line` and a newline to the process's stdin.
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}").expect("write to child stdin");
        stdin.flush().expect("flush child stdin");
    }

    /// Closes the process's stdin (end of file for it).
    pub fn close_stdin(&mut self) {
        drop(self.stdin.take());
    }

    /// SIGKILL and reap (a zombie still counts as existing for `kill(pid, 0)`).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM.
    pub fn terminate(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: sending a signal to our own child process id has no memory effects.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }

    /// Sends SIGSTOP: the process stops (all its threads) until [`ChildProc::resume`].
    pub fn stop(&mut self) {
        self.signal(libc::SIGSTOP);
    }

    /// Sends SIGCONT to a stopped process.
    pub fn resume(&mut self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: sending a signal to our own child process id has no memory effects.
        unsafe { libc::kill(pid, signal) };
    }

    /// Waits until the process is stopped (state `T` in `/proc/<pid>/stat`), failing the test
    /// after [`WATCHDOG`].
    pub fn wait_stopped(&self) {
        let path = format!("/proc/{}/stat", self.child.id());
        wait_until("the child to stop", || {
            std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('T')))
                .unwrap_or(false)
        });
    }

    /// Waits for the process to exit, failing the test after [`WATCHDOG`]; returns its status.
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WATCHDOG;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.drain_stderr();
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "watchdog: {} did not exit within {WATCHDOG:?}",
                self.label
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits (bounded) for the process to exit and fails the test unless it succeeded.
    pub fn wait_success(&mut self) {
        let status = self.wait();
        assert!(
            status.success(),
            "{} (pid {}) failed: {status}; stderr:\n{}",
            self.label,
            self.pid(),
            self.stderr()
        );
    }

    /// Closes stdin, then waits (bounded) for a successful exit.
    pub fn finish(mut self) {
        self.close_stdin();
        self.wait_success();
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the broker perimeter tests and the `perimeter_figures` example do to a broker: the
/// attacks of docs/SECURITY.md, and reading a process's memory use.
pub mod attack {
    use std::net::TcpStream;
    use std::time::Duration;

    use labhub::keys::{KeyPair, PublicKey};
    use labhub_zmq::{Context, CurvePublicKey, CurveSecretKey, Flags, Message, Socket, SocketType};

    /// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
    pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Resets the peak resident size (`VmHWM`) of `pid` to its current size, so a later
    /// reading is the peak of what happened in between.
    pub fn reset_peak_rss(pid: u32) -> std::io::Result<()> {
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
    }

    /// `host:port` of a `tcp://host:port` endpoint.
    pub fn tcp_address(endpoint: &str) -> &str {
        endpoint.strip_prefix("tcp://").unwrap_or(endpoint)
    }

    /// Opens up to `count` plain TCP connections that never send a byte, from 32 threads at
    /// once so that all are open within a fraction of the broker's handshake time limit
    /// (connections the kernel refuses or that time out are skipped). They stay open while
    /// the vector lives.
    pub fn idle_connections(endpoint: &str, count: usize) -> Vec<TcpStream> {
        const THREADS: usize = 32;
        let address: std::net::SocketAddr = tcp_address(endpoint)
            .parse()
            .expect("a tcp://ip:port endpoint");
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let n = count / THREADS + usize::from(t < count % THREADS);
                std::thread::spawn(move || {
                    (0..n)
                        .filter_map(|_| {
                            TcpStream::connect_timeout(&address, Duration::from_millis(200)).ok()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().expect("connecting thread"))
            .collect()
    }

    fn curve_socket(
        context: &Context,
        kind: SocketType,
        server: &PublicKey,
        client: &KeyPair,
    ) -> Socket {
        let s = context.socket(kind).expect("socket");
        s.set_curve_client_keys(
            &CurvePublicKey::from_bytes(server.as_bytes()).expect("server key"),
            &CurvePublicKey::from_bytes(client.public.as_bytes()).expect("client key"),
            &CurveSecretKey::from_bytes(client.secret_bytes()).expect("client key"),
        )
        .expect("curve keys");
        s
    }

    /// CURVE clients whose keys the broker does not admit, made anew in rounds of `batch`
    /// (fresh keys each) on a thread of their own, each making one refused handshake, until
    /// dropped.
    pub struct RefusedClients {
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl RefusedClients {
        /// Starts the rounds against `endpoint`.
        pub fn start(endpoint: &str, server: &PublicKey, batch: usize) -> Self {
            use std::sync::atomic::Ordering;
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flag = std::sync::Arc::clone(&stop);
            let endpoint = endpoint.to_owned();
            let server = *server;
            let thread = std::thread::spawn(move || {
                let context = Context::new().expect("context");
                while !flag.load(Ordering::Relaxed) {
                    let sockets: Vec<Socket> = (0..batch)
                        .map(|_| {
                            let s = curve_socket(
                                &context,
                                SocketType::Dealer,
                                &server,
                                &KeyPair::generate(),
                            );
                            s.set_linger(Some(Duration::ZERO)).expect("linger");
                            s.connect(&endpoint).expect("connect");
                            s
                        })
                        .collect();
                    std::thread::sleep(Duration::from_millis(50));
                    drop(sockets);
                }
            });
            Self {
                stop,
                thread: Some(thread),
            }
        }
    }

    impl Drop for RefusedClients {
        fn drop(&mut self) {
            self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    /// The bytes every frame of [`send_huge_multipart`] points to.
    static FRAME: [u8; 60_000] = [b'x'; 60_000];

    /// Sends, as the admitted `client`, one multipart message of `frames` frames of 60,000
    /// bytes (1.5 GB for 25,000 frames) to the broker's request socket. The frames share one
    /// static buffer, so the sender itself stays small. Returns the socket (dropping it ends
    /// the connection) once libzmq has queued the whole message.
    pub fn send_huge_multipart(
        endpoint: &str,
        server: &PublicKey,
        client: &KeyPair,
        frames: usize,
    ) -> (Socket, Context) {
        let context = Context::new().expect("context");
        let s = curve_socket(&context, SocketType::Dealer, server, client);
        s.set_sndhwm(0).expect("sndhwm");
        s.connect(endpoint).expect("connect");
        for i in 0..frames {
            let more = if i + 1 < frames {
                Flags::SNDMORE
            } else {
                Flags::NONE
            };
            s.send_msg(Message::from_static(&FRAME).expect("frame"), more)
                .expect("send");
        }
        (s, context)
    }

    /// Admitted subscribers of the notification socket that never read: each keeps at most
    /// one message in its own queue, so what piles up piles up in the broker.
    pub struct SilentSubscribers {
        _sockets: Vec<Socket>,
        _context: Context,
    }

    impl SilentSubscribers {
        /// `count` subscribers to everything on `notify_endpoint`.
        pub fn start(
            notify_endpoint: &str,
            server: &PublicKey,
            client: &KeyPair,
            count: usize,
        ) -> Self {
            let context = Context::new().expect("context");
            let sockets = (0..count)
                .map(|_| {
                    let s = curve_socket(&context, SocketType::Sub, server, client);
                    s.set_rcvhwm(1).expect("rcvhwm");
                    s.subscribe(b"").expect("subscribe");
                    s.connect(notify_endpoint).expect("connect");
                    s
                })
                .collect();
            Self {
                _sockets: sockets,
                _context: context,
            }
        }
    }
}

/// The Python interpreter of labhub's one test venv (`target/pyenv`, the pinned packages of
/// `tests/python/requirements.txt`), made by `tests/pyenv.py` on first use and reused; `None`
/// if `python3` is not installed. Fails the test if the venv cannot be made.
pub fn python_env() -> Option<PathBuf> {
    static ENV: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/pyenv.py");
        let out = Command::new("python3").arg(script).output().ok()?;
        assert!(
            out.status.success(),
            "tests/pyenv.py could not make the test venv:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    })
    .clone()
}

/// An HTTP response read to its end (the server closes the connection after it).
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl HttpResponse {
    /// The first header called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` from `addr` with `headers` (a `Host` header naming `addr` unless one is given),
/// read until the server closes; fails the test after [`WATCHDOG`].
pub fn http_get(addr: &str, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    use std::io::Read as _;
    let mut stream =
        std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_read_timeout(Some(WATCHDOG)).unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        request += &format!("Host: {addr}\r\n");
    }
    for (name, value) in headers {
        request += &format!("{name}: {value}\r\n");
    }
    request += "\r\n";
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("read the answer to GET {path}: {e}"));
    parse_http_response(&raw)
}

/// Parses a whole HTTP/1.1 response (head and body).
pub fn parse_http_response(raw: &[u8]) -> HttpResponse {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// The memfds of broker-granted channels as other processes see them: `/proc/<pid>/fd` links
/// and `/proc/<pid>/maps` lines naming `/memfd:labhub:<channel>:<region>`.
pub mod memfd {
    use std::path::PathBuf;

    /// Offset of the consumer table in the control region (docs/SHM_LAYOUT.md).
    pub const CONSUMER_TABLE: usize = 384;

    fn name(channel: &str, region: &str) -> String {
        format!("/memfd:labhub:{channel}:{region}")
    }

    /// The `/proc/<pid>/fd/N` paths of `pid`'s descriptors of channel `channel`'s memfd
    /// `region` (`control` or `data`).
    pub fn fds_of(pid: u32, channel: &str, region: &str) -> Vec<PathBuf> {
        let want = name(channel, region);
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            return Vec::new();
        };
        dir.filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                std::fs::read_link(p).is_ok_and(|t| {
                    let t = t.to_string_lossy();
                    t == want || t.strip_suffix(" (deleted)") == Some(want.as_str())
                })
            })
            .collect()
    }

    /// Opens `pid`'s memfd `region` of `channel` read-write through `/proc` (as any process of
    /// the user can), if it has one.
    pub fn open(pid: u32, channel: &str, region: &str) -> Option<std::fs::File> {
        let path = fds_of(pid, channel, region).into_iter().next()?;
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .ok()
    }

    /// Every process that holds a descriptor or a mapping of any memfd of `channel`, with what
    /// it holds (`fd control`, `map data`, …).
    pub fn holders(channel: &str) -> Vec<(u32, String)> {
        let mut found = Vec::new();
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return found;
        };
        for entry in procs.filter_map(Result::ok) {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            for region in ["control", "data"] {
                if !fds_of(pid, channel, region).is_empty() {
                    found.push((pid, format!("fd {region}")));
                }
                let want = name(channel, region);
                if std::fs::read_to_string(format!("/proc/{pid}/maps"))
                    .is_ok_and(|maps| maps.lines().any(|l| l.contains(&want)))
                {
                    found.push((pid, format!("map {region}")));
                }
            }
        }
        found
    }

    /// Number of open descriptors of `pid` (`/proc/<pid>/fd` entries).
    pub fn fd_count(pid: u32) -> usize {
        std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
    }
}
