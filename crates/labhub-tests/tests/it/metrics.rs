//! The broker's metrics endpoint (`labhub hub --metrics`) with real processes: a broker, a
//! producer and a consumer as child processes; the Prometheus text parsed by the reference
//! Python parser (prometheus_client from PyPI, installed under the target folder when missing);
//! and the endpoint's defences (token, Host check, bounded connections, streams and heads).

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use labhub::broker::probe::Probe;
use labhub::keys::{self, PublicKey};
use labhub_tests::{HttpResponse, http_get, parse_http_response};

use crate::common::{ChildProc, ScratchDir, WATCHDOG, spawn_child, unique};

/// A broker child with metrics, its endpoints and its metrics address.
pub struct MetricsBroker {
    pub proc: ChildProc,
    pub home: ScratchDir,
    pub endpoint: String,
    pub notify: String,
    pub key: PublicKey,
    pub metrics: String,
}

impl MetricsBroker {
    /// Heartbeats every 100 ms (3 may be missed), metrics on `listen` sampled as often, and
    /// `extra` broker-run options.
    pub fn start(listen: &str, extra: &[&str]) -> Self {
        let home = ScratchDir::new("metrics");
        let endpoint = home.ipc("broker.sock");
        let notify = home.ipc("notify.sock");
        let metrics_opt = format!("metrics={listen}");
        let home_s = home.path().to_str().unwrap().to_owned();
        let mut args = vec![
            home_s.as_str(),
            endpoint.as_str(),
            notify.as_str(),
            "100",
            "3",
            metrics_opt.as_str(),
        ];
        args.extend_from_slice(extra);
        let mut proc = spawn_child("broker-run", &args).labelled("broker");
        let metrics = proc.skip_to("metrics ")["metrics ".len()..].to_owned();
        let ready = proc.skip_to("ready ");
        let key = PublicKey::from_z85(ready.split_whitespace().nth(3).unwrap()).unwrap();
        Self {
            proc,
            home,
            endpoint,
            notify,
            key,
            metrics,
        }
    }

    /// The port as `127.0.0.1:PORT` (dialable also when listening on 0.0.0.0).
    pub fn loopback(&self) -> String {
        let port = self.metrics.rsplit(':').next().unwrap();
        format!("127.0.0.1:{port}")
    }

    /// Spawns a Hub producer (a frame every 10 ms) or consumer child on channel `name`.
    pub fn client(&self, role: &str, name: &str) -> ChildProc {
        let home = self.home.path().to_str().unwrap();
        let mut p = spawn_child(role, &[home, &self.endpoint, &self.notify, name]).labelled(role);
        let first = if role == "client-producer" {
            "ready"
        } else {
            "attached"
        };
        p.skip_to(first);
        p
    }

    /// A request-socket probe with the local client key.
    pub fn probe(&self) -> Probe {
        let local = keys::local_client_key(&self.home.join("keys")).unwrap();
        Probe::connect(&self.endpoint, &self.key, &local, Duration::from_secs(5)).unwrap()
    }
}

/// GETs `path` until `want` holds for the response; fails after [`WATCHDOG`].
pub fn poll_until(
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    what: &str,
    mut want: impl FnMut(&HttpResponse) -> bool,
) -> HttpResponse {
    let deadline = Instant::now() + WATCHDOG;
    loop {
        let r = http_get(addr, path, headers);
        if want(&r) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "watchdog: {what}; last answer: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of the sample line `name{labels}` in Prometheus text, if present.
fn value_of(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn parse_with_prometheus_client(text: &str) -> serde_json::Value {
    let Some(python) = labhub_tests::python_env() else {
        panic!("python3 is needed to parse the metrics with prometheus_client");
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/parse_metrics.py");
    let mut cmd = Command::new(&python);
    cmd.arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run parse_metrics.py");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the text:\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The samples of `family` named `sample` whose labels include `labels`.
fn samples<'a>(
    families: &'a serde_json::Value,
    family: &str,
    sample: &str,
    labels: &[(&str, &str)],
) -> Vec<&'a serde_json::Value> {
    families[family]["samples"]
        .as_array()
        .unwrap_or_else(|| panic!("no family {family} in {families}"))
        .iter()
        .filter(|s| s[0] == sample && labels.iter().all(|(k, v)| s[1][*k].as_str() == Some(*v)))
        .collect()
}

#[test]
fn the_prometheus_text_of_a_live_channel_parses_with_prometheus_client() {
    let broker = MetricsBroker::start("127.0.0.1:0", &[]);
    let name = unique("prom");
    let _producer = broker.client("client-producer", &name);
    let _consumer = broker.client("client-consumer", &name);
    let count = format!("labhub_channel_latency_seconds_count{{channel=\"{name}\"}}");
    let lag = format!("labhub_consumer_lag_frames{{channel=\"{name}\",");
    let r = poll_until(
        &broker.metrics,
        "/metrics",
        &[],
        "latency and lag of the channel",
        |r| value_of(&r.body, &count).is_some_and(|v| v > 0.0) && r.body.contains(&lag),
    );
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{r:?}"
    );
    let families = parse_with_prometheus_client(&r.body);
    let ch = [("channel", name.as_str())];
    assert_eq!(families["labhub_channel_frames"]["type"], "counter");
    let frames = samples(
        &families,
        "labhub_channel_frames",
        "labhub_channel_frames_total",
        &ch,
    );
    assert!(frames[0][2].as_f64().unwrap() > 0.0, "{frames:?}");
    assert_eq!(
        families["labhub_channel_latency_seconds"]["type"],
        "histogram"
    );
    let inf = samples(
        &families,
        "labhub_channel_latency_seconds",
        "labhub_channel_latency_seconds_bucket",
        &[("channel", &name), ("le", "+Inf")],
    );
    assert!(inf[0][2].as_f64().unwrap() > 0.0, "{inf:?}");
    assert_eq!(families["labhub_channel_up"]["samples"][0][2], 1.0);
    assert_eq!(families["labhub_consumer_lag_frames"]["type"], "gauge");
    assert_eq!(
        samples(
            &families,
            "labhub_channel_segment_bytes",
            "labhub_channel_segment_bytes",
            &ch
        )
        .len(),
        1
    );
    let clients = samples(&families, "labhub_client_info", "labhub_client_info", &[]);
    assert_eq!(clients.len(), 2, "{clients:?}");
    assert!(
        clients
            .iter()
            .all(|c| c[1]["version"].as_str().unwrap().starts_with("labhub-rs/")),
        "{clients:?}"
    );
    // The JSON sample says the same, with rates.
    let s = poll_until(&broker.metrics, "/api/sample", &[], "a rate", |r| {
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        v["channels"][0]["frames_per_s"]
            .as_f64()
            .is_some_and(|f| f > 0.0)
    });
    let v: serde_json::Value = serde_json::from_str(&s.body).unwrap();
    assert_eq!(v["channels"][0]["name"], name.as_str());
    assert_eq!(
        v["channels"][0]["consumers"][0]["version"],
        v["channels"][0]["producer_version"]
    );
}

/// Opens a connection and sends nothing.
fn idle(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WATCHDOG)).unwrap();
    s
}

/// Reads what the server sends until it closes.
fn read_all(mut s: TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // A reset after the server closed a connection with unread input: it is closed.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("read: {e}"),
        }
    }
}

#[test]
fn idle_and_slow_connections_cannot_hold_the_endpoint_or_the_broker() {
    let broker = MetricsBroker::start("127.0.0.1:0", &["metrics-head-timeout-ms=4000"]);
    let addr = broker.metrics.clone();
    // 32 connections that send nothing take every connection place …
    let held: Vec<TcpStream> = (0..32).map(|_| idle(&addr)).collect();
    // … so one more is answered 503 at once, not queued …
    let extra = parse_http_response(&read_all(idle(&addr)));
    assert_eq!(extra.status, 503, "{extra:?}");
    // … while the broker itself serves requests as before.
    let reply = broker
        .probe()
        .request("list", serde_json::json!({}))
        .unwrap();
    assert!(reply.is_ok(), "{reply:?}");
    // Each idle connection is answered 408 and closed at the head deadline.
    for s in held {
        let r = parse_http_response(&read_all(s));
        assert_eq!(r.status, 408, "{r:?}");
    }
    // A head trickling in a byte at a time is cut off at the same deadline.
    let mut slow = idle(&addr);
    let trickle = std::thread::spawn({
        let mut w = slow.try_clone().unwrap();
        move || {
            for b in b"GET /metrics HTTP/1.1\r\nX-Slow: "
                .iter()
                .chain(std::iter::repeat(&b'a'))
            {
                if w.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    });
    let mut answer = Vec::new();
    let _ = slow.read_to_end(&mut answer);
    assert_eq!(parse_http_response(&answer).status, 408);
    trickle.join().unwrap();
    // A head larger than 8 KiB is refused without reading the rest.
    let mut big = idle(&addr);
    let writer = std::thread::spawn({
        let mut w = big.try_clone().unwrap();
        move || {
            let _ = w.write_all(b"GET /metrics HTTP/1.1\r\n");
            let line = format!("X-Filler: {}\r\n", "a".repeat(1000));
            for _ in 0..1000 {
                if w.write_all(line.as_bytes()).is_err() {
                    return;
                }
            }
        }
    });
    let mut answer = Vec::new();
    let _ = big.read_to_end(&mut answer);
    assert_eq!(parse_http_response(&answer).status, 431);
    writer.join().unwrap();
    // And the endpoint serves again.
    assert_eq!(http_get(&addr, "/metrics", &[]).status, 200);
}

/// Opens `/api/events`; returns the stream once the head arrived, and the status.
fn open_stream(addr: &str, headers: &str) -> (TcpStream, u16) {
    let mut s = idle(addr);
    write!(
        s,
        "GET /api/events HTTP/1.1\r\nHost: {addr}\r\n{headers}\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut byte).unwrap(),
            1,
            "stream closed in its head: {head:?}"
        );
        head.push(byte[0]);
    }
    let status = parse_http_response(&head).status;
    (s, status)
}

#[test]
fn event_streams_are_bounded_and_send_samples() {
    let broker = MetricsBroker::start("127.0.0.1:0", &[]);
    let addr = broker.metrics.clone();
    let mut streams = Vec::new();
    for _ in 0..8 {
        let (s, status) = open_stream(&addr, "");
        assert_eq!(status, 200);
        streams.push(s);
    }
    let (_, status) = open_stream(&addr, "");
    assert_eq!(status, 503, "a ninth stream is refused");
    // Each stream starts with the history, then carries samples.
    let mut s = streams.pop().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("event: sample\ndata: {") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "stream ended: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&seen).contains("event: history\ndata: {"));
    // Closing one frees its place.
    drop(s);
    let deadline = Instant::now() + WATCHDOG;
    loop {
        let (_, status) = open_stream(&addr, "");
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "watchdog: the closed stream's place is never freed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_loopback_endpoint_answers_only_requests_for_its_own_host() {
    let broker = MetricsBroker::start("127.0.0.1:0", &[]);
    let port = broker.metrics.rsplit(':').next().unwrap().to_owned();
    let rebound = http_get(
        &broker.metrics,
        "/api/sample",
        &[("Host", &format!("attacker.example:{port}"))],
    );
    assert_eq!(rebound.status, 421, "{rebound:?}");
    let local = http_get(
        &broker.metrics,
        "/api/sample",
        &[("Host", &format!("localhost:{port}"))],
    );
    assert_eq!(local.status, 200, "{local:?}");
    let post = {
        let mut s = idle(&broker.metrics);
        write!(
            s,
            "POST /metrics HTTP/1.1\r\nHost: {}\r\nContent-Length: 3\r\n\r\nabc",
            broker.metrics
        )
        .unwrap();
        parse_http_response(&read_all(s))
    };
    assert_eq!(post.status, 405);
}

#[test]
fn any_other_address_needs_the_token_which_never_reaches_the_logs() {
    let broker = MetricsBroker::start("0.0.0.0:0", &[]);
    let addr = broker.loopback();
    let file = broker.home.join("metrics.token");
    let token = std::fs::read_to_string(&file).expect("the generated token is stored");
    let token = token.trim();
    assert_eq!(token.len(), 64);
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let bearer = format!("Bearer {token}");
    for path in ["/metrics", "/api/sample", "/api/events"] {
        let none = http_get(&addr, path, &[]);
        assert_eq!(none.status, 401, "{path}: {none:?}");
        assert!(none.header("www-authenticate").is_some());
        let wrong = http_get(
            &addr,
            path,
            &[("Authorization", &format!("Bearer {}", "0".repeat(64)))],
        );
        assert_eq!(wrong.status, 401, "{path}");
        // A token in the query is not accepted: query strings end up in logs and histories.
        let query = http_get(&addr, &format!("{path}?token={token}"), &[]);
        assert_eq!(query.status, 401, "{path}");
    }
    let ok = http_get(&addr, "/metrics", &[("Authorization", &bearer)]);
    assert_eq!(ok.status, 200, "{ok:?}");
    let (_, status) = open_stream(&addr, &format!("Authorization: {bearer}\r\n"));
    assert_eq!(status, 200);
    // The page itself holds no data and loads without the token.
    assert_eq!(http_get(&addr, "/", &[]).status, 200);
    // Nothing the broker logged or audited carries the token.
    let mut probe = broker.probe();
    assert!(
        probe
            .request("list", serde_json::json!({}))
            .unwrap()
            .is_ok()
    );
    let audit = std::fs::read_to_string(broker.home.join("audit.jsonl")).unwrap_or_default();
    assert!(!audit.contains(token));
    assert!(!broker.proc.stderr().contains(token));
}

#[test]
fn a_token_file_is_required_on_loopback_too_and_refused_when_open_to_others() {
    let dir = ScratchDir::new("metrics-token");
    let file = dir.join("token");
    std::fs::write(&file, "a-token-of-twenty-chars\n").unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    // Open to others: the broker refuses to start, naming the file.
    let home = ScratchDir::new("metrics-token-home");
    let home_s = home.path().to_str().unwrap();
    let token_opt = format!("metrics-token-file={}", file.display());
    let mut refused = spawn_child(
        "broker-run",
        &[
            home_s,
            &home.ipc("b.sock"),
            &home.ipc("n.sock"),
            "100",
            "3",
            "metrics=127.0.0.1:0",
            &token_opt,
        ],
    );
    assert!(!refused.wait().success());
    assert!(
        refused.stderr().contains("metrics token file"),
        "{}",
        refused.stderr()
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let broker = MetricsBroker::start("127.0.0.1:0", &[&token_opt]);
    assert_eq!(http_get(&broker.metrics, "/metrics", &[]).status, 401);
    let ok = http_get(
        &broker.metrics,
        "/metrics",
        &[("Authorization", "Bearer a-token-of-twenty-chars")],
    );
    assert_eq!(ok.status, 200);
}

#[test]
fn a_producer_counts_the_bytes_of_copies_and_of_committed_loans_only() {
    use std::sync::atomic::Ordering;
    let broker = MetricsBroker::start("127.0.0.1:0", &[]);
    let mut config = labhub::client::ClientConfig::from_home(broker.home.path())
        .unwrap()
        .notify_endpoint(&broker.notify);
    config.endpoint = broker.endpoint.clone();
    let hub = labhub::client::Hub::connect(config).unwrap();
    let name = unique("bytes");
    let mut producer = hub
        .channel(&name)
        .policy(labhub::shm::Policy::ring(8))
        .frames::<u16>(&[4])
        .create()
        .unwrap();
    producer.publish(&[1, 2, 3, 4], &[4]).unwrap(); // 8 bytes
    producer.loan_shape(&[2]).unwrap().commit(); // 4 bytes, counted at the next call
    drop(producer.loan().unwrap()); // abandoned: not counted
    producer.publish(&[5, 6, 7, 8], &[4]).unwrap(); // 8 bytes
    let counters = producer.counters();
    assert_eq!(counters.published.load(Ordering::Relaxed), 3);
    assert_eq!(counters.bytes_published.load(Ordering::Relaxed), 20);
    drop(producer);
    let _ = labhub::shm::remove_channel(&name);
}
