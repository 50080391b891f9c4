//! Benchmarks of `labhub::msg` against bare `labhub_zmq` sockets speaking the same frames,
//! measured in the same run, over tcp on 127.0.0.1.
//!
//! - `req_rep_round_trip`: one 64-byte request and its reply; the server echoes on a thread.
//!   Baseline: a bare DEALER and ROUTER exchanging the same four-frame messages.
//! - `pub_sub_batch`: 1000 messages of 64 bytes published, then all received by one
//!   subscriber on the same thread. Baseline: bare PUB and SUB sockets.
//!
//! `cargo bench -p labhub --bench msg`; figures in docs/PERFORMANCE.md.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use labhub::msg::{Context, Publisher, ReqClient, ReqServer, Subscriber};
use labhub_zmq::{Flags, PollEvents, SocketType, poll};

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

fn req_rep(c: &mut Criterion) {
    let context = Context::new().expect("context");
    let mut group = c.benchmark_group("req_rep_round_trip");

    // Baseline: bare sockets, same frames.
    let router = context.socket(SocketType::Router).expect("router");
    router.bind("tcp://127.0.0.1:0").expect("bind");
    let endpoint = router.last_endpoint().expect("endpoint");
    let server = Running::spawn(move |stop| {
        while !stop.load(Ordering::Relaxed) {
            let mut items = [router.poll_item(PollEvents::IN)];
            if poll(&mut items, Some(TICK)).expect("poll") == 0 {
                continue;
            }
            let frames = router.recv_multipart(Flags::NONE).expect("recv");
            let reply: [&[u8]; 5] = [&frames[0], &[], &frames[2], &[0], &frames[3]];
            router.send_multipart(reply, Flags::NONE).expect("send");
        }
    });
    let dealer = context.socket(SocketType::Dealer).expect("dealer");
    dealer.connect(&endpoint).expect("connect");
    let mut id = 0u64;
    group.bench_function("bare_dealer_router", |b| {
        b.iter(|| {
            id += 1;
            let request: [&[u8]; 3] = [&[], &id.to_le_bytes(), &PAYLOAD];
            dealer.send_multipart(request, Flags::NONE).expect("send");
            black_box(dealer.recv_multipart(Flags::NONE).expect("recv"));
        })
    });
    drop(server);

    let server = ReqServer::builder(&context).create().expect("server");
    let mut client = ReqClient::builder(&context, server.endpoint())
        .open()
        .expect("client");
    let server = Running::spawn(move |stop| {
        while !stop.load(Ordering::Relaxed) {
            server
                .serve_one(TICK, |request| request.to_vec())
                .expect("serve");
        }
    });
    group.bench_function("msg_req_client_server", |b| {
        b.iter(|| black_box(client.request(PAYLOAD, WAIT).expect("request")))
    });
    drop(server);
    group.finish();
}

fn pub_sub(c: &mut Criterion) {
    let context = Context::new().expect("context");
    let mut group = c.benchmark_group("pub_sub_batch");
    group.throughput(Throughput::Elements(BATCH));

    let raw_pub = context.socket(SocketType::Pub).expect("pub");
    raw_pub.set_sndhwm(RAW_HWM).expect("hwm");
    raw_pub.bind("tcp://127.0.0.1:0").expect("bind");
    let raw_sub = context.socket(SocketType::Sub).expect("sub");
    raw_sub.set_rcvhwm(RAW_HWM).expect("hwm");
    raw_sub.set_rcvtimeo(Some(WAIT)).expect("rcvtimeo");
    raw_sub.subscribe(b"t").expect("subscribe");
    raw_sub
        .connect(&raw_pub.last_endpoint().expect("endpoint"))
        .expect("connect");
    // Slow joiner: probe until one arrives, then drain.
    loop {
        raw_pub
            .send_multipart([&b"t"[..], b"probe"], Flags::NONE)
            .expect("probe");
        let mut items = [raw_sub.poll_item(PollEvents::IN)];
        if poll(&mut items, Some(TICK)).expect("poll") > 0 {
            break;
        }
    }
    while raw_sub.recv_multipart(Flags::DONTWAIT).is_ok() {}
    group.bench_function("bare_pub_sub", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                raw_pub
                    .send_multipart([&b"t"[..], &PAYLOAD], Flags::DONTWAIT)
                    .expect("send");
            }
            for _ in 0..BATCH {
                black_box(raw_sub.recv_multipart(Flags::NONE).expect("recv (lost?)"));
            }
        })
    });

    let publisher = Publisher::builder(&context)
        .hwm(HWM)
        .create()
        .expect("publisher");
    let subscriber = Subscriber::builder(&context, publisher.endpoint())
        .topic("t")
        .hwm(HWM)
        .open()
        .expect("subscriber");
    loop {
        publisher.send("t", "probe").expect("probe");
        if subscriber.recv(TICK).expect("recv").is_some() {
            break;
        }
    }
    while subscriber.recv(Duration::ZERO).expect("drain").is_some() {}
    group.bench_function("msg_publisher_subscriber", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                publisher.send("t", PAYLOAD).expect("send");
            }
            for _ in 0..BATCH {
                black_box(subscriber.recv(WAIT).expect("recv").expect("lost"));
            }
        })
    });
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    req_rep(&mut criterion);
    pub_sub(&mut criterion);
    criterion.final_summary();
}
