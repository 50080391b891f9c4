//! The broker's metrics: per-channel and per-consumer figures, served as Prometheus text
//! (`/metrics`), as JSON (`/api/sample`), as a live event stream (`/api/events`) and as a
//! monitor page (`/`), from `labhub hub --metrics ADDR`.
//!
//! Three parts, three threads:
//!
//! - the **feed** runs on the broker's ZeroMQ thread: it takes in the figures of every heartbeat
//!   the registry accepted (counters, latency summaries, version, pid) and, at most once per
//!   sample interval, hands a copy of them and of the registry to the metrics thread (a pointer
//!   swap under a mutex nobody holds for longer). The broker thread never waits for the HTTP
//!   side and never touches a segment or a socket for the metrics;
//! - the **sampler** (thread `labhub-metrics`) turns each copy into a [`Sample`]: rates from
//!   successive heartbeats, latency mean and p99 from the consumers' histograms, sizes, losses
//!   and consumer lag from the segment headers; it keeps a short rate history per channel;
//! - the **HTTP server** (thread `labhub-metrics-http` and one thread per connection, bounded)
//!   serves the latest sample; see [`http`] for its limits.
//!
//! A listener on a loopback address is open to local users without a token; any other address
//! requires one (generated at start and stored in `<home>/metrics.token`, or read from
//! [`MetricsConfig::token_file`]), sent as `Authorization: Bearer <token>`.
#![deny(unsafe_code)]

mod exposition;
mod feed;
pub mod http;
pub mod sample;
mod sampler;
mod segment;
pub mod token;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use http::HttpLimits;
pub use sample::*;
pub use token::Token;

use crate::broker::registry::Registry;
use crate::broker::server::BrokerStats;
use crate::protocol::{ChannelName, Reply, Request};
use crate::shm::MemfdPair;

use feed::{Feed, Snapshot};
use http::Wait;
use sampler::{History, LatencyTotals, Sampler};

/// The default address of `labhub hub --metrics` and `labhub top`.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:5572";

/// Where and how the metrics are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    address: SocketAddr,
    token_file: Option<PathBuf>,
    interval: Duration,
    limits: HttpLimits,
}

impl MetricsConfig {
    /// Serve on `address` (port 0: a free port), with a new sample every second.
    pub fn new(address: SocketAddr) -> Self {
        Self {
            address,
            token_file: None,
            interval: Duration::from_secs(1),
            limits: HttpLimits::default(),
        }
    }

    /// Read the token from this file (mode 0600) instead of generating one; a token read from
    /// a file is required on loopback addresses too.
    #[must_use]
    pub fn token_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.token_file = Some(path.into());
        self
    }

    /// How often a sample is taken (clamped to 10 ms … 1 min).
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval.clamp(Duration::from_millis(10), Duration::from_secs(60));
        self
    }

    /// The HTTP server's bounds (each at least 1; timeouts at least 1 ms).
    #[must_use]
    pub fn limits(mut self, limits: HttpLimits) -> Self {
        let ms = Duration::from_millis(1);
        self.limits = HttpLimits {
            max_connections: limits.max_connections.max(1),
            max_streams: limits.max_streams.max(1),
            head_timeout: limits.head_timeout.max(ms),
            write_timeout: limits.write_timeout.max(ms),
            keepalive: limits.keepalive.max(ms),
        };
        self
    }

    /// The address to listen on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

/// Why the metrics could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// The listener could not be bound.
    #[error("cannot listen for metrics on {address}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The token file is refused.
    #[error("metrics token file {path}: {problem}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The random source failed.
    #[error("cannot generate the metrics token: {0}")]
    Random(String),
    /// A thread could not be started.
    #[error("cannot start the metrics thread")]
    Thread(#[source] std::io::Error),
}

/// What a running metrics endpoint tells the world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsInfo {
    /// The address bound (a port 0 resolved).
    pub address: SocketAddr,
    /// The token required, if any.
    pub token: Option<Token>,
    /// Where the generated token was stored, if one was generated.
    pub token_file: Option<PathBuf>,
}

impl MetricsInfo {
    /// The monitor's address, with the token in the fragment (which browsers never send to
    /// servers) when one is required.
    pub fn monitor_url(&self) -> String {
        match &self.token {
            Some(t) => format!("http://{}/#token={}", self.address, t.as_str()),
            None => format!("http://{}/", self.address),
        }
    }
}

/// The latest published sample and its encodings.
#[derive(Debug, Clone)]
struct Published {
    generation: u64,
    sample: Arc<Sample>,
    json: Arc<String>,
    latency: Arc<LatencyTotals>,
}

/// State shared by the broker thread, the sampler and the HTTP threads.
#[derive(Debug)]
struct Shared {
    snapshot: Mutex<Option<Arc<Snapshot>>>,
    snapshot_ready: Condvar,
    published: Mutex<Published>,
    published_ready: Condvar,
    history: Arc<Mutex<History>>,
    history_json: Mutex<Option<(u64, Arc<String>)>>,
    exposition: Mutex<Option<(u64, Arc<String>)>>,
    stop: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn new() -> Self {
        let empty = Sample::default();
        Self {
            snapshot: Mutex::new(None),
            snapshot_ready: Condvar::new(),
            published: Mutex::new(Published {
                generation: 0,
                json: Arc::new(serde_json::to_string(&empty).unwrap_or_default()),
                sample: Arc::new(empty),
                latency: Arc::new(Vec::new()),
            }),
            published_ready: Condvar::new(),
            history: Arc::new(Mutex::new(History::new())),
            history_json: Mutex::new(None),
            exposition: Mutex::new(None),
            stop: AtomicBool::new(false),
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Broker thread: replaces the pending snapshot (an unread one is simply dropped).
    fn offer(&self, snapshot: Snapshot) {
        *lock(&self.snapshot) = Some(Arc::new(snapshot));
        self.snapshot_ready.notify_one();
    }

    /// Sampler: the next snapshot, or `None` once stopping.
    fn next_snapshot(&self) -> Option<Arc<Snapshot>> {
        let mut slot = lock(&self.snapshot);
        loop {
            if self.stopping() {
                return None;
            }
            if let Some(s) = slot.take() {
                return Some(s);
            }
            slot = self
                .snapshot_ready
                .wait_timeout(slot, Duration::from_millis(500))
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    fn publish(&self, sample: Arc<Sample>, latency: LatencyTotals) {
        let json = Arc::new(serde_json::to_string(&*sample).unwrap_or_default());
        let mut p = lock(&self.published);
        p.generation += 1;
        p.sample = sample;
        p.json = json;
        p.latency = Arc::new(latency);
        drop(p);
        self.published_ready.notify_all();
    }

    fn latest_json(&self) -> Arc<String> {
        Arc::clone(&lock(&self.published).json)
    }

    /// The rate history as JSON, encoded at most once per sample however many streams open.
    fn history_json(&self) -> Arc<String> {
        let generation = lock(&self.published).generation;
        let mut cache = lock(&self.history_json);
        if let Some((g, text)) = &*cache
            && *g == generation
        {
            return Arc::clone(text);
        }
        let text =
            Arc::new(serde_json::to_string(&*lock(&self.history)).unwrap_or_else(|_| "{}".into()));
        *cache = Some((generation, Arc::clone(&text)));
        text
    }

    /// The Prometheus text of the latest sample, encoded once per sample whoever asks.
    fn exposition(&self) -> Arc<String> {
        let (generation, sample, latency) = {
            let p = lock(&self.published);
            (p.generation, Arc::clone(&p.sample), Arc::clone(&p.latency))
        };
        let mut cache = lock(&self.exposition);
        if let Some((g, text)) = &*cache
            && *g == generation
        {
            return Arc::clone(text);
        }
        let text = Arc::new(exposition::render(sample, latency));
        *cache = Some((generation, Arc::clone(&text)));
        text
    }

    /// Waits up to `idle` for a sample newer than generation `seen`.
    fn wait_newer(&self, seen: u64, idle: Duration) -> Wait {
        let deadline = Instant::now() + idle;
        let mut p = lock(&self.published);
        loop {
            if self.stopping() {
                return Wait::Stop;
            }
            if p.generation > seen {
                return Wait::New(p.generation, Arc::clone(&p.json));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Wait::Idle;
            }
            p = self
                .published_ready
                .wait_timeout(p, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }
}

/// A running metrics endpoint, owned by the broker. Dropping it stops its threads.
#[derive(Debug)]
#[must_use = "the metrics stop when this is dropped"]
pub struct Metrics {
    feed: Feed,
    shared: Arc<Shared>,
    info: MetricsInfo,
    wake: SocketAddr,
    threads: Vec<JoinHandle<()>>,
}

impl Metrics {
    /// Binds the listener and starts the sampler and the server. A generated token is stored in
    /// `<home>/metrics.token`.
    ///
    /// # Errors
    ///
    /// The address cannot be bound, the token file is refused, or a thread cannot start.
    pub fn start(config: &MetricsConfig, home: &Path) -> Result<Self, MetricsError> {
        let listener = TcpListener::bind(config.address).map_err(|source| MetricsError::Bind {
            address: config.address,
            source,
        })?;
        let address = listener.local_addr().map_err(|source| MetricsError::Bind {
            address: config.address,
            source,
        })?;
        let loopback = address.ip().is_loopback();
        let (token, token_file) = match &config.token_file {
            Some(path) => (Some(Token::from_file(path)?), None),
            None if loopback => (None, None),
            None => {
                let token = Token::generate()?;
                let path = token::default_token_file(home);
                crate::keys::ensure_private_dir(home).map_err(|e| MetricsError::TokenFile {
                    path: path.clone(),
                    problem: e.to_string(),
                })?;
                token.store(&path)?;
                (Some(token), Some(path))
            }
        };
        let shared = Arc::new(Shared::new());
        let ctx = Arc::new(http::Context {
            shared: Arc::clone(&shared),
            token: token.clone(),
            hosts: loopback.then(|| http::loopback_hosts(address)),
            limits: config.limits,
            connections: AtomicUsize::new(0),
            streams: AtomicUsize::new(0),
        });
        let mut threads = Vec::new();
        let sampler_shared = Arc::clone(&shared);
        threads.push(
            std::thread::Builder::new()
                .name("labhub-metrics".into())
                .spawn(move || run_sampler(&sampler_shared))
                .map_err(MetricsError::Thread)?,
        );
        let started = std::thread::Builder::new()
            .name("labhub-metrics-http".into())
            .spawn(move || http::accept_loop(listener, ctx));
        match started {
            Ok(t) => threads.push(t),
            Err(e) => {
                stop_threads(&shared, None, threads);
                return Err(MetricsError::Thread(e));
            }
        }
        let wake = if address.ip().is_unspecified() {
            match address {
                SocketAddr::V4(a) => SocketAddr::from(([127, 0, 0, 1], a.port())),
                SocketAddr::V6(a) => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port())),
            }
        } else {
            address
        };
        tracing::info!(%address, token_required = token.is_some(), "metrics served");
        Ok(Self {
            feed: Feed::new(Arc::clone(&shared), config.interval),
            shared,
            info: MetricsInfo {
                address,
                token,
                token_file,
            },
            wake,
            threads,
        })
    }

    /// Address, token and token file.
    pub fn info(&self) -> &MetricsInfo {
        &self.info
    }

    /// Broker thread: takes in a request the registry answered with `reply`.
    pub(crate) fn observe(&mut self, now: Instant, request: &Request, reply: &Reply) {
        if let Request::Heartbeat(h) = request
            && reply.is_ok()
        {
            self.feed.heartbeat(now, h);
        }
    }

    /// Broker thread: hands the metrics thread a snapshot if one is due.
    pub(crate) fn tick(
        &mut self,
        now: Instant,
        registry: &Registry,
        stats: BrokerStats,
        memfds: impl FnOnce() -> HashMap<ChannelName, Arc<MemfdPair>>,
    ) {
        self.feed.publish_if_due(now, registry, stats, memfds);
    }
}

fn run_sampler(shared: &Shared) {
    let mut sampler = Sampler::with_history(Arc::clone(&shared.history));
    while let Some(snapshot) = shared.next_snapshot() {
        let (sample, latency) = sampler.sample(&snapshot);
        shared.publish(sample, latency);
    }
}

fn stop_threads(shared: &Shared, wake: Option<SocketAddr>, threads: Vec<JoinHandle<()>>) {
    shared.stop.store(true, Ordering::Release);
    shared.snapshot_ready.notify_all();
    shared.published_ready.notify_all();
    if let Some(addr) = wake {
        // Unblocks the accept loop, which then sees the stop flag.
        let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
    }
    for t in threads {
        let _ = t.join();
    }
}

impl Drop for Metrics {
    fn drop(&mut self) {
        stop_threads(
            &self.shared,
            Some(self.wake),
            std::mem::take(&mut self.threads),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::registry::{Origin, RegistryConfig};
    use crate::latency::{Histogram, bucket_of};
    use crate::protocol::{self, ChannelName, ClientId};

    fn request(kind: &str, body: serde_json::Value) -> Request {
        let body = body.to_string();
        let frames: Vec<&[u8]> = vec![b"labhub", b"1", kind.as_bytes(), body.as_bytes()];
        protocol::decode_request(&frames).outcome.unwrap()
    }

    /// A registry and a feed driven by hand, and the sample the sampler makes of them.
    struct Rig {
        registry: Registry,
        feed: Feed,
        shared: Arc<Shared>,
        sampler: Sampler,
        now: Instant,
        id: u64,
    }

    impl Rig {
        fn new() -> Self {
            let shared = Arc::new(Shared::new());
            Self {
                registry: Registry::new(RegistryConfig::default()),
                feed: Feed::new(Arc::clone(&shared), Duration::from_secs(1)),
                sampler: Sampler::with_history(Arc::clone(&shared.history)),
                shared,
                now: Instant::now(),
                id: 0,
            }
        }

        fn send(&mut self, kind: &str, mut body: serde_json::Value) -> Reply {
            self.id += 1;
            body["request_id"] = self.id.into();
            let req = request(kind, body);
            let mut effects = Vec::new();
            let reply = self
                .registry
                .handle(self.now, Origin::default(), &req, &mut effects);
            if let Request::Heartbeat(h) = &req
                && reply.is_ok()
            {
                self.feed.heartbeat(self.now, h);
            }
            reply
        }

        fn sample(&mut self) -> (Arc<Sample>, LatencyTotals) {
            self.feed.publish_if_due(
                self.now,
                &self.registry,
                BrokerStats::default(),
                HashMap::new,
            );
            let snap = self.shared.next_snapshot().expect("a snapshot");
            let (sample, totals) = self.sampler.sample(&snap);
            self.shared.publish(Arc::clone(&sample), totals.clone());
            (sample, totals)
        }
    }

    fn latency_of(values_ns: &[u64]) -> serde_json::Value {
        let mut h = Histogram::new();
        for &v in values_ns {
            h.record(v);
        }
        serde_json::to_value(h.since(&Histogram::new())).unwrap()
    }

    #[test]
    fn heartbeats_become_rates_latency_and_consumers_and_a_removed_channel_shows_gone() {
        let mut rig = Rig::new();
        let reply = rig.send(
            "register",
            serde_json::json!({"client": "cam", "pid": 42, "channel": {
                "name": "frames", "kind": "pubsub", "endpoint": "tcp://127.0.0.1:9"}}),
        );
        assert!(reply.is_ok(), "{reply:?}");
        assert!(
            rig.send(
                "attach",
                serde_json::json!({"client": "viewer", "name": "frames"})
            )
            .is_ok()
        );
        let beat = |rig: &mut Rig, frames: u64, latency: &[u64]| {
            let p = rig.send("heartbeat", serde_json::json!({"client": "cam", "client_version": "labhub-rs/9.9",
                "channels": {"frames": {"frames_published": frames, "bytes_published": frames * 1000}}}));
            assert!(p.is_ok(), "{p:?}");
            let c = rig.send("heartbeat", serde_json::json!({"client": "viewer", "pid": 7,
                "channels": {"frames": {"frames_consumed": frames, "bytes_consumed": frames * 1000, "frames_missed": 1}},
                "latency": {"frames": latency_of(latency)}}));
            assert!(c.is_ok(), "{c:?}");
        };
        beat(&mut rig, 100, &[1_000_000; 10]);
        rig.now += Duration::from_secs(1);
        beat(
            &mut rig,
            300,
            &[2_000_000, 2_000_000, 2_000_000, 50_000_000],
        );
        let (sample, totals) = rig.sample();
        let ch = &sample.channels[0];
        assert_eq!(ch.name, "frames");
        assert_eq!(ch.state, ChannelStatus::Up);
        assert_eq!(ch.frames_total, Some(300));
        assert_eq!(ch.frames_per_s, Some(200.0));
        assert_eq!(ch.mb_per_s, Some(0.2));
        assert_eq!(ch.producer_version.as_deref(), Some("labhub-rs/9.9"));
        let mean = ch.latency_mean_us.unwrap();
        assert!((mean - 14_000.0).abs() < 1.0, "{mean}");
        let p99 = ch.latency_p99_us.unwrap();
        assert!((40_000.0..=65_000.0).contains(&p99), "{p99}");
        let viewer = &ch.consumers[0];
        assert_eq!(viewer.client.as_deref(), Some("viewer"));
        assert_eq!(viewer.pid, Some(7));
        assert_eq!(viewer.frames_per_s, Some(200.0));
        assert_eq!(viewer.missed, Some(1));
        // The channel's latency total holds every report.
        assert_eq!(totals[0].1.count(), 14);
        assert_eq!(totals[0].1.bucket(bucket_of(1_000_000)), 10);
        let clients: Vec<&str> = sample.clients.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(clients, ["cam", "viewer"]);
        assert_eq!(sample.clients[0].produces, ["frames"]);
        assert_eq!(sample.clients[1].consumes, ["frames"]);

        // The Prometheus text carries the same figures.
        let text = exposition::render(sample, Arc::new(totals));
        for line in [
            "labhub_channel_frames_total{channel=\"frames\"} 300",
            "labhub_channel_up{channel=\"frames\",kind=\"pubsub\"} 1",
            "labhub_channel_latency_seconds_count{channel=\"frames\"} 14",
            "labhub_channel_latency_seconds_bucket{channel=\"frames\",le=\"+Inf\"} 14",
            "labhub_consumer_frames_total{channel=\"frames\",consumer=\"viewer\"} 300",
            "labhub_client_info{client=\"cam\",version=\"labhub-rs/9.9\"} 1",
            "# TYPE labhub_channel_latency_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }

        // The producer unregisters; with its consumer detached the channel is removed, and the
        // next samples show it gone.
        assert!(
            rig.send(
                "unregister",
                serde_json::json!({"client": "cam", "name": "frames"})
            )
            .is_ok()
        );
        rig.now += Duration::from_secs(1);
        let (sample, _) = rig.sample();
        assert_eq!(sample.channels[0].state, ChannelStatus::Down);
        assert_eq!(sample.channels[0].frames_per_s, None);
        assert!(
            rig.send(
                "detach",
                serde_json::json!({"client": "viewer", "name": "frames"})
            )
            .is_ok()
        );
        rig.now += Duration::from_secs(1);
        let (sample, totals) = rig.sample();
        assert_eq!(sample.channels.len(), 1);
        assert_eq!(sample.channels[0].state, ChannelStatus::Gone);
        assert!(totals.is_empty());
        let text = exposition::render(sample, Arc::new(totals));
        assert!(!text.contains("channel=\"frames\""), "{text}");
        assert!(
            rig.shared.history_json().contains("\"frames\""),
            "a gone channel keeps its history"
        );
        rig.now += Duration::from_secs(61);
        let (sample, _) = rig.sample();
        assert!(
            sample.channels.is_empty(),
            "gone channels are forgotten after a minute"
        );
        let _ = (ChannelName::new("x"), ClientId::new("y"));
    }

    #[test]
    fn a_silent_producer_has_no_current_rate() {
        let mut rig = Rig::new();
        rig.send(
            "register",
            serde_json::json!({"client": "cam", "channel": {
                "name": "c", "kind": "pubsub", "endpoint": "tcp://127.0.0.1:9"}}),
        );
        rig.send(
            "heartbeat",
            serde_json::json!({"client": "cam", "channels": {"c": {"frames_published": 1}}}),
        );
        rig.now += Duration::from_millis(500);
        rig.send(
            "heartbeat",
            serde_json::json!({"client": "cam", "channels": {"c": {"frames_published": 51}}}),
        );
        assert_eq!(rig.sample().0.channels[0].frames_per_s, Some(100.0));
        rig.now += Duration::from_secs(3);
        assert_eq!(rig.sample().0.channels[0].frames_per_s, None);
    }

    #[test]
    fn segment_headers_are_read_in_turn_within_a_bound_per_sample() {
        let mut rig = Rig::new();
        let n = sampler::SEGMENT_READS_PER_SAMPLE * 2 + 50;
        for i in 0..n {
            let name = format!("bound-{}-{i}", std::process::id());
            let reply = rig.send(
                "register",
                serde_json::json!({"client": "cam", "channel": {"name": name, "kind": "shm",
                    "shm_name": ChannelName::new(&name).unwrap().segment_name(), "size": 4096}}),
            );
            assert!(reply.is_ok(), "{reply:?}");
        }
        for round in 1..=3 {
            rig.now += Duration::from_secs(1);
            rig.sample();
            let read = rig.sampler.segments_read();
            assert_eq!(
                read,
                (round * sampler::SEGMENT_READS_PER_SAMPLE).min(n),
                "round {round}"
            );
        }
    }

    #[test]
    fn the_monitor_url_carries_the_token_in_its_fragment_only() {
        let token = Token::generate().unwrap();
        let info = MetricsInfo {
            address: "10.0.0.1:5572".parse().unwrap(),
            token: Some(token.clone()),
            token_file: None,
        };
        assert_eq!(
            info.monitor_url(),
            format!("http://10.0.0.1:5572/#token={}", token.as_str())
        );
        let open = MetricsInfo {
            token: None,
            ..info
        };
        assert_eq!(open.monitor_url(), "http://10.0.0.1:5572/");
    }
}
