//! Benchmarks of `labhub::msg` and of the Hub's CurveZMQ message channels against bare
//! `labhub_zmq` sockets speaking the same frames, measured in the same run, over tcp on
//! 127.0.0.1.
//!
//! - `req_rep_round_trip`: one 64-byte request and its reply; the server echoes on a thread.
//!   Baseline: a bare DEALER and ROUTER exchanging the same four-frame messages.
//! - `pub_sub_batch`: 1000 messages of 64 bytes published, then all received by one
//!   subscriber on the same thread. Baseline: bare PUB and SUB sockets.
//! - `req_rep_round_trip_curve`, `pub_sub_batch_curve`: the same with CurveZMQ: bare sockets
//!   with CURVE keys (no ZAP handler) against the Hub's channels (`hub.req_server` /
//!   `hub.req_client`, `hub.publisher` / `hub.subscriber`: fresh server keys registered with
//!   a broker running in this process, ZAP admitting the broker's keys).
//!
//! `cargo bench -p labhub --bench msg`; figures in docs/PERFORMANCE.md.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use criterion::{BenchmarkGroup, Criterion, Throughput, measurement::WallTime};
use labhub::broker::{Broker, BrokerConfig};
use labhub::client::{ClientConfig, Hub};
use labhub::keys;
use labhub::msg::{Context, Publisher, ReqClient, ReqServer, Subscriber};
use labhub_zmq::{CurveKeyPair, Flags, PollEvents, Socket, SocketType, poll};

const PAYLOAD: [u8; 64] = [0x5a; 64];
const BATCH: u64 = 1000;
const HWM: u32 = 10_000;
const RAW_HWM: i32 = 10_000;
const WAIT: Duration = Duration::from_secs(10);
const TICK: Duration = Duration::from_millis(50);

/// A server thread that runs until dropped.
struct Running {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    fn spawn(serve: impl FnOnce(&AtomicBool) + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || serve(&flag));
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("server thread");
        }
    }
}

/// A broker in this process on a temporary home, and a Hub connected to it.
struct InProcessBroker {
    home: std::path::PathBuf,
    hub: Hub,
    _broker: Running,
}

impl InProcessBroker {
    fn start() -> Self {
        let home = std::env::temp_dir().join(format!("labhub-bench-msg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        let mut config = BrokerConfig::for_home(&home);
        config.endpoint = "tcp://127.0.0.1:*".into();
        config.notify_endpoint = "tcp://127.0.0.1:*".into();
        config.reap_stale_segments = false;
        let mut broker = Broker::start(config).expect("broker");
        let endpoint = broker.endpoint().to_owned();
        let public = broker.public_key();
        let running = Running::spawn(move |stop| broker.run(stop).expect("broker run"));
        let client = keys::local_client_key(&home.join("keys")).expect("client key");
        let hub = Hub::connect(ClientConfig::new(endpoint, public, client)).expect("hub");
        Self {
            home,
            hub,
            _broker: running,
        }
    }
}

impl Drop for InProcessBroker {
    fn drop(&mut self) {
        self.hub.shutdown();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// A bare ROUTER echoing each request as an ok reply, on a thread.
fn echo_router(router: Socket) -> Running {
    Running::spawn(move |stop| {
        while !stop.load(Ordering::Relaxed) {
            let mut items = [router.poll_item(PollEvents::IN)];
            if poll(&mut items, Some(TICK)).expect("poll") == 0 {
                continue;
            }
            let frames = router.recv_multipart(Flags::NONE).expect("recv");
            let reply: [&[u8]; 5] = [&frames[0], &[], &frames[2], &[0], &frames[3]];
            router.send_multipart(reply, Flags::NONE).expect("send");
        }
    })
}

/// A server echoing with `serve_one`, on a thread.
fn echo_server<S>(server: S) -> Running
where
    S: std::ops::Deref<Target = ReqServer> + Send + 'static,
{
    Running::spawn(move |stop| {
        while !stop.load(Ordering::Relaxed) {
            server
                .serve_one(TICK, |request| request.to_vec())
                .expect("serve");
        }
    })
}

fn bench_bare_round_trip(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, dealer: &Socket) {
    let mut id = 0u64;
    group.bench_function(name, |b| {
        b.iter(|| {
            id += 1;
            let request: [&[u8]; 3] = [&[], &id.to_le_bytes(), &PAYLOAD];
            dealer.send_multipart(request, Flags::NONE).expect("send");
            black_box(dealer.recv_multipart(Flags::NONE).expect("recv"));
        })
    });
}

fn bench_round_trip(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, client: &mut ReqClient) {
    group.bench_function(name, |b| {
        b.iter(|| black_box(client.request(PAYLOAD, WAIT).expect("request")))
    });
}

fn req_rep(c: &mut Criterion) {
    let context = Context::new().expect("context");
    let mut group = c.benchmark_group("req_rep_round_trip");

    // Baseline: bare sockets, same frames.
    let router = context.socket(SocketType::Router).expect("router");
    router.bind("tcp://127.0.0.1:0").expect("bind");
    let endpoint = router.last_endpoint().expect("endpoint");
    let server = echo_router(router);
    let dealer = context.socket(SocketType::Dealer).expect("dealer");
    dealer.connect(&endpoint).expect("connect");
    bench_bare_round_trip(&mut group, "bare_dealer_router", &dealer);
    drop(server);

    let server = ReqServer::builder(&context).create().expect("server");
    let mut client = ReqClient::builder(&context, server.endpoint())
        .open()
        .expect("client");
    let server = echo_server(Box::new(server));
    bench_round_trip(&mut group, "msg_req_client_server", &mut client);
    drop(server);
    group.finish();
}

fn req_rep_curve(c: &mut Criterion, broker: &InProcessBroker) {
    let context = Context::new().expect("context");
    let mut group = c.benchmark_group("req_rep_round_trip_curve");

    let server_keys = CurveKeyPair::generate().expect("keys");
    let client_keys = CurveKeyPair::generate().expect("keys");
    let router = context.socket(SocketType::Router).expect("router");
    router
        .set_curve_server_keys(&server_keys.secret)
        .expect("curve");
    router.bind("tcp://127.0.0.1:0").expect("bind");
    let endpoint = router.last_endpoint().expect("endpoint");
    let server = echo_router(router);
    let dealer = context.socket(SocketType::Dealer).expect("dealer");
    dealer
        .set_curve_client_keys(
            &server_keys.public,
            &client_keys.public,
            &client_keys.secret,
        )
        .expect("curve");
    dealer.connect(&endpoint).expect("connect");
    bench_bare_round_trip(&mut group, "bare_curve_dealer_router", &dealer);
    drop(server);

    let name = format!("bench-rpc-{}", std::process::id());
    let server = broker.hub.req_server(&name).create().expect("hub server");
    let mut client = broker.hub.req_client(&name).open().expect("hub client");
    let server = echo_server(server);
    bench_round_trip(&mut group, "hub_req_client_server", &mut client);
    drop(server);
    group.finish();
}

/// Publishes until one probe arrives, then drains what came.
fn join_bare(publisher: &Socket, subscriber: &Socket) {
    loop {
        publisher
            .send_multipart([&b"t"[..], b"probe"], Flags::NONE)
            .expect("probe");
        let mut items = [subscriber.poll_item(PollEvents::IN)];
        if poll(&mut items, Some(TICK)).expect("poll") > 0 {
            break;
        }
    }
    while subscriber.recv_multipart(Flags::DONTWAIT).is_ok() {}
}

fn join(publisher: &Publisher, subscriber: &Subscriber) {
    loop {
        publisher.send("t", "probe").expect("probe");
        if subscriber.recv(TICK).expect("recv").is_some() {
            break;
        }
    }
    while subscriber.recv(Duration::ZERO).expect("drain").is_some() {}
}

fn bench_bare_batch(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    publisher: &Socket,
    subscriber: &Socket,
) {
    join_bare(publisher, subscriber);
    group.bench_function(name, |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                publisher
                    .send_multipart([&b"t"[..], &PAYLOAD], Flags::DONTWAIT)
                    .expect("send");
            }
            for _ in 0..BATCH {
                black_box(
                    subscriber
                        .recv_multipart(Flags::NONE)
                        .expect("recv (lost?)"),
                );
            }
        })
    });
}

fn bench_batch(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    publisher: &Publisher,
    subscriber: &Subscriber,
) {
    join(publisher, subscriber);
    group.bench_function(name, |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                publisher.send("t", PAYLOAD).expect("send");
            }
            for _ in 0..BATCH {
                black_box(subscriber.recv(WAIT).expect("recv").expect("lost"));
            }
        })
    });
}

/// Bare PUB and SUB sockets, CURVE if `curve` is given (server keys, client keys).
fn bare_pub_sub(
    context: &Context,
    curve: Option<(&CurveKeyPair, &CurveKeyPair)>,
) -> (Socket, Socket) {
    let raw_pub = context.socket(SocketType::Pub).expect("pub");
    raw_pub.set_sndhwm(RAW_HWM).expect("hwm");
    let raw_sub = context.socket(SocketType::Sub).expect("sub");
    raw_sub.set_rcvhwm(RAW_HWM).expect("hwm");
    raw_sub.set_rcvtimeo(Some(WAIT)).expect("rcvtimeo");
    if let Some((server, client)) = curve {
        raw_pub
            .set_curve_server_keys(&server.secret)
            .expect("curve");
        raw_sub
            .set_curve_client_keys(&server.public, &client.public, &client.secret)
            .expect("curve");
    }
    raw_pub.bind("tcp://127.0.0.1:0").expect("bind");
    raw_sub.subscribe(b"t").expect("subscribe");
    raw_sub
        .connect(&raw_pub.last_endpoint().expect("endpoint"))
        .expect("connect");
    (raw_pub, raw_sub)
}

fn pub_sub(c: &mut Criterion) {
    let context = Context::new().expect("context");
    let mut group = c.benchmark_group("pub_sub_batch");
    group.throughput(Throughput::Elements(BATCH));

    let (raw_pub, raw_sub) = bare_pub_sub(&context, None);
    bench_bare_batch(&mut group, "bare_pub_sub", &raw_pub, &raw_sub);

    let publisher = Publisher::builder(&context)
        .hwm(HWM)
        .create()
        .expect("publisher");
    let subscriber = Subscriber::builder(&context, publisher.endpoint())
        .topic("t")
        .hwm(HWM)
        .open()
        .expect("subscriber");
    bench_batch(
        &mut group,
        "msg_publisher_subscriber",
        &publisher,
        &subscriber,
    );
    group.finish();
}

fn pub_sub_curve(c: &mut Criterion, broker: &InProcessBroker) {
    let context = Context::new().expect("context");
    let mut group = c.benchmark_group("pub_sub_batch_curve");
    group.throughput(Throughput::Elements(BATCH));

    let server_keys = CurveKeyPair::generate().expect("keys");
    let client_keys = CurveKeyPair::generate().expect("keys");
    let (raw_pub, raw_sub) = bare_pub_sub(&context, Some((&server_keys, &client_keys)));
    bench_bare_batch(&mut group, "bare_curve_pub_sub", &raw_pub, &raw_sub);

    let name = format!("bench-status-{}", std::process::id());
    let publisher = broker
        .hub
        .publisher(&name)
        .hwm(HWM)
        .create()
        .expect("hub publisher");
    let subscriber = broker
        .hub
        .subscriber(&name)
        .topic("t")
        .hwm(HWM)
        .open()
        .expect("hub subscriber");
    bench_batch(
        &mut group,
        "hub_publisher_subscriber",
        &publisher,
        &subscriber,
    );
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    req_rep(&mut criterion);
    pub_sub(&mut criterion);
    let broker = InProcessBroker::start();
    req_rep_curve(&mut criterion, &broker);
    pub_sub_curve(&mut criterion, &broker);
    drop(broker);
    criterion.final_summary();
}
