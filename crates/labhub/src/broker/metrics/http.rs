//! The HTTP side of the metrics: `/metrics` (Prometheus), `/api/sample` (JSON), `/api/events`
//! (server-sent events) and the monitor page, on a listener of its own.
//!
//! The server is written on `std::net` with `httparse` for the request head rather than on an
//! HTTP crate such as tiny_http, which starts a thread for every connection without bound and
//! sets no read timeout: one peer opening connections and sending nothing would hold threads
//! and memory forever. Here every resource an outsider can make the server hold is bounded:
//!
//! - at most [`HttpLimits::max_connections`] connections are served at once (one thread each,
//!   with a small stack); more are answered `503` at once and closed;
//! - a request head must arrive whole within [`HttpLimits::head_timeout`] and fit in
//!   [`MAX_HEAD_BYTES`] with at most [`MAX_HEADERS`] headers; no request body is read;
//! - at most [`HttpLimits::max_streams`] event streams run at once; each sends only the newest
//!   sample, so a slow reader skips samples instead of queueing them, and a write blocked for
//!   [`HttpLimits::write_timeout`] ends the stream;
//! - one response per connection (`Connection: close`).
//!
//! The data routes need the bearer token when one is set; on a loopback address the `Host`
//! header must name the loopback address, so that a web page a browser loads from elsewhere
//! cannot read the figures by rebinding its DNS name to 127.0.0.1. Request targets are never
//! logged with their query, and headers never, so a token cannot reach a log line.
#![deny(unsafe_code)]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::token::Token;
use super::{Shared, exposition};

/// Largest request head read, in bytes.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Most headers in a request head.
pub const MAX_HEADERS: usize = 32;
/// Stack of each connection thread: the handlers keep their data on the heap.
const STACK_BYTES: usize = 256 * 1024;

const INDEX_HTML: &str = include_str!("assets/index.html");
const MONITOR_JS: &str = include_str!("assets/monitor.js");
const MONITOR_CSS: &str = include_str!("assets/monitor.css");

/// The bounds of the HTTP server (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Event streams at once (each also counts as a connection).
    pub max_streams: usize,
    /// Time for a request head to arrive whole.
    pub head_timeout: Duration,
    /// Longest a write may block before the connection is dropped.
    pub write_timeout: Duration,
    /// How often an idle event stream sends a comment, to notice a reader gone.
    pub keepalive: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 32,
            max_streams: 8,
            head_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(15),
        }
    }
}

/// What every connection thread shares.
#[derive(Debug)]
pub(super) struct Context {
    pub shared: Arc<Shared>,
    pub token: Option<Token>,
    /// `Host` values accepted; `None`: any.
    pub hosts: Option<Vec<String>>,
    pub limits: HttpLimits,
    pub connections: AtomicUsize,
    pub streams: AtomicUsize,
}

/// The `Host` values a browser or scraper sends for a loopback listener on `addr`.
pub(super) fn loopback_hosts(addr: SocketAddr) -> Vec<String> {
    let port = addr.port();
    vec![
        addr.to_string(),
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ]
}

/// Decrements a counter when dropped.
struct Held<'a>(&'a AtomicUsize);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Takes one place of `counter` if fewer than `limit` are taken.
fn take_place(counter: &AtomicUsize, limit: usize) -> Option<Held<'_>> {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < limit).then_some(n + 1)
        })
        .ok()
        .map(|_| Held(counter))
}

/// Accepts connections until the shared stop flag is set (and a connection wakes the accept).
pub(super) fn accept_loop(listener: TcpListener, ctx: Arc<Context>) {
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) => {
                if ctx.shared.stopping() {
                    return;
                }
                // Out of descriptors or a connection reset before accept: pause, go on.
                tracing::debug!(error = %e, "metrics: accept failed");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if ctx.shared.stopping() {
            return;
        }
        if ctx.connections.load(Ordering::Acquire) >= ctx.limits.max_connections {
            refuse_busy(stream);
            continue;
        }
        ctx.connections.fetch_add(1, Ordering::AcqRel);
        let worker = Arc::clone(&ctx);
        let spawned = std::thread::Builder::new()
            .name("labhub-metrics-conn".into())
            .stack_size(STACK_BYTES)
            .spawn(move || {
                let _place = Held(&worker.connections);
                serve(stream, &worker);
            });
        if let Err(e) = spawned {
            ctx.connections.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!(error = %e, "metrics: cannot start a connection thread");
        }
    }
}

/// Answers `503` without blocking the accept loop, then closes.
fn refuse_busy(stream: TcpStream) {
    let _ = stream.set_nonblocking(true);
    let mut stream = stream;
    let _ = stream.write_all(
        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
}

/// One response.
struct Response {
    status: &'static str,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Body,
}

enum Body {
    Static(&'static str),
    Shared(Arc<String>),
    Text(String),
}

impl Body {
    fn bytes(&self) -> &[u8] {
        match self {
            Body::Static(s) => s.as_bytes(),
            Body::Shared(s) => s.as_bytes(),
            Body::Text(s) => s.as_bytes(),
        }
    }
}

impl Response {
    fn new(status: &'static str, content_type: &'static str, body: Body) -> Self {
        Self {
            status,
            content_type,
            headers: Vec::new(),
            body,
        }
    }

    fn error(status: &'static str, message: &str) -> Self {
        Self::new(
            status,
            "text/plain; charset=utf-8",
            Body::Text(format!("{message}\n")),
        )
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn write(&self, stream: &mut TcpStream) -> std::io::Result<()> {
        let body = self.body.bytes();
        let mut head = format!(
            "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\
             Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n",
            self.status,
            self.content_type,
            body.len()
        );
        for (name, value) in &self.headers {
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        stream.flush()
    }
}

/// Reads the request head within the head timeout, answers it, closes.
fn serve(mut stream: TcpStream, ctx: &Context) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(ctx.limits.write_timeout));
    let deadline = Instant::now() + ctx.limits.head_timeout;
    let mut buf = vec![0u8; MAX_HEAD_BYTES];
    let mut len = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let _ = Response::error("408 Request Timeout", "the request head took too long")
                .write(&mut stream);
            return;
        }
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut buf[len..]) {
            Ok(0) => return,
            Ok(n) => len += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        let response = match request.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => match route(&request, ctx) {
                Route::Respond(r) => r,
                Route::Stream => {
                    stream_events(stream, ctx);
                    return;
                }
            },
            Ok(httparse::Status::Partial) if len < buf.len() => continue,
            Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
                Response::error(
                    "431 Request Header Fields Too Large",
                    &format!(
                        "a request head is at most {MAX_HEAD_BYTES} bytes with at most {MAX_HEADERS} headers"
                    ),
                )
            }
            Err(_) => Response::error("400 Bad Request", "malformed request head"),
        };
        let _ = response.write(&mut stream);
        return;
    }
}

enum Route {
    Respond(Response),
    Stream,
}

fn header<'a>(request: &'a httparse::Request<'_, '_>, name: &str) -> Option<&'a [u8]> {
    request
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// Whether the request carries the token (`Authorization: Bearer <token>`), when one is set.
fn authorised(request: &httparse::Request<'_, '_>, token: Option<&Token>) -> bool {
    let Some(token) = token else {
        return true;
    };
    header(request, "authorization")
        .and_then(|v| {
            let (scheme, rest) = v.split_at(v.len().min(7));
            scheme.eq_ignore_ascii_case(b"bearer ").then_some(rest)
        })
        .is_some_and(|offered| token.matches(offered.trim_ascii()))
}

fn route(request: &httparse::Request<'_, '_>, ctx: &Context) -> Route {
    let path = request
        .path
        .unwrap_or("/")
        .split(['?', '#'])
        .next()
        .unwrap_or("/");
    let respond = |r: Response| {
        tracing::debug!(path, status = r.status, "metrics request");
        Route::Respond(r)
    };
    if request.method != Some("GET") {
        return respond(
            Response::error("405 Method Not Allowed", "only GET is served").header("Allow", "GET"),
        );
    }
    let has_body = header(request, "transfer-encoding").is_some()
        || header(request, "content-length").is_some_and(|v| v.trim_ascii() != b"0");
    if has_body {
        return respond(Response::error(
            "400 Bad Request",
            "a request body is not accepted",
        ));
    }
    if let Some(hosts) = &ctx.hosts {
        let host = header(request, "host").unwrap_or_default();
        if !hosts
            .iter()
            .any(|h| h.as_bytes().eq_ignore_ascii_case(host))
        {
            return respond(Response::error(
                "421 Misdirected Request",
                "the Host header must name the loopback address this server listens on",
            ));
        }
    }
    let page =
        |content_type, body| respond(Response::new("200 OK", content_type, Body::Static(body)));
    match path {
        "/" | "/index.html" => {
            return respond(
                Response::new("200 OK", "text/html; charset=utf-8", Body::Static(INDEX_HTML))
                    .header(
                        "Content-Security-Policy",
                        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
                    )
                    .header("X-Frame-Options", "DENY"),
            );
        }
        "/monitor.js" => return page("text/javascript; charset=utf-8", MONITOR_JS),
        "/monitor.css" => return page("text/css; charset=utf-8", MONITOR_CSS),
        "/metrics" | "/api/sample" | "/api/events" => {}
        _ => return respond(Response::error("404 Not Found", "no such page")),
    }
    if !authorised(request, ctx.token.as_ref()) {
        return respond(
            Response::error(
                "401 Unauthorized",
                "this endpoint needs its token: Authorization: Bearer <token>",
            )
            .header("WWW-Authenticate", "Bearer realm=\"labhub\""),
        );
    }
    match path {
        "/metrics" => {
            let body = ctx.shared.exposition();
            respond(Response::new(
                "200 OK",
                exposition::CONTENT_TYPE,
                Body::Shared(body),
            ))
        }
        "/api/sample" => respond(Response::new(
            "200 OK",
            "application/json",
            Body::Shared(ctx.shared.latest_json()),
        )),
        _ => Route::Stream,
    }
}

/// `/api/events`: the rate history once (`event: history`), then each new sample
/// (`event: sample`), as `text/event-stream`.
fn stream_events(mut stream: TcpStream, ctx: &Context) {
    let Some(_place) = take_place(&ctx.streams, ctx.limits.max_streams) else {
        let _ = Response::error(
            "503 Service Unavailable",
            &format!("at most {} event streams at once", ctx.limits.max_streams),
        )
        .header("Retry-After", "5")
        .write(&mut stream);
        return;
    };
    tracing::debug!("metrics: event stream opened");
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n\
                Connection: close\r\nX-Content-Type-Options: nosniff\r\n\r\nretry: 2000\n\n";
    let mut write = |parts: &[&[u8]]| -> bool {
        parts.iter().all(|p| stream.write_all(p).is_ok()) && stream.flush().is_ok()
    };
    if !write(&[head.as_bytes()]) {
        return;
    }
    let history = ctx.shared.history_json();
    if !write(&[b"event: history\ndata: ", history.as_bytes(), b"\n\n"]) {
        return;
    }
    let mut seen = 0;
    loop {
        match ctx.shared.wait_newer(seen, ctx.limits.keepalive) {
            Wait::Stop => return,
            Wait::Idle => {
                if !write(&[b": keepalive\n\n"]) {
                    return;
                }
            }
            Wait::New(generation, json) => {
                seen = generation;
                if !write(&[b"event: sample\ndata: ", json.as_bytes(), b"\n\n"]) {
                    return;
                }
            }
        }
    }
}

/// What waiting for a new sample gave.
pub(super) enum Wait {
    /// The server is stopping.
    Stop,
    /// Nothing new within the keepalive interval.
    Idle,
    /// A newer sample: its generation and JSON.
    New(u64, Arc<String>),
}
