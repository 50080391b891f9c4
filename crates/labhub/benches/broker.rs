//! Discovery requests per second through the broker (CURVE + ZAP, 1,000 channels registered,
//! audit log on) against a bare libzmq ROUTER echo with CURVE measured in the same run.
//!
//! Each iteration sends a window of requests from one DEALER and reads all the replies, so the
//! figure is the server's throughput with requests in flight, not one round trip's latency.
//!
//! `cargo bench -p labhub --bench broker`
#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use labhub::broker::probe::Probe;
use labhub::broker::{Broker, BrokerConfig};
use labhub::keys::{self, KeyPair};
use labhub_zmq::{
    Context, CurvePublicKey, CurveSecretKey, Flags, PollEvents, Socket, SocketType, poll,
};

const WINDOW: usize = 100;

fn curve_dealer(ctx: &Context, server: &KeyPair, client: &KeyPair, endpoint: &str) -> Socket {
    let s = ctx.socket(SocketType::Dealer).unwrap();
    s.set_curve_client_keys(
        &CurvePublicKey::from_bytes(server.public.as_bytes()).unwrap(),
        &CurvePublicKey::from_bytes(client.public.as_bytes()).unwrap(),
        &CurveSecretKey::from_bytes(client.secret_bytes()).unwrap(),
    )
    .unwrap();
    s.set_sndhwm(100_000).unwrap();
    s.set_rcvhwm(100_000).unwrap();
    s.connect(endpoint).unwrap();
    s
}

fn request_frames(i: usize) -> Vec<Vec<u8>> {
    vec![
        b"labhub".to_vec(),
        b"1".to_vec(),
        b"discover".to_vec(),
        format!(r#"{{"request_id": {i}, "name": "bench-{:04}"}}"#, i % 1000).into_bytes(),
    ]
}

/// Sends WINDOW requests, then reads WINDOW replies.
fn window(dealer: &Socket) {
    for i in 0..WINDOW {
        dealer
            .send_multipart(request_frames(i), Flags::NONE)
            .unwrap();
    }
    for _ in 0..WINDOW {
        let mut items = [dealer.poll_item(PollEvents::IN)];
        poll(&mut items, Some(Duration::from_secs(30))).unwrap();
        assert!(items[0].is_readable(), "no reply within 30 s");
        let frames = dealer.recv_multipart_bytes(Flags::NONE).unwrap();
        assert_eq!(frames.len(), 4);
    }
}

fn bench(c: &mut Criterion) {
    let home = std::env::temp_dir().join(format!("labhub-bench-broker-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);

    // The broker, in this process on its own thread.
    let mut config = BrokerConfig::for_home(&home);
    config.endpoint = "tcp://127.0.0.1:*".into();
    config.notify_endpoint = "tcp://127.0.0.1:*".into();
    config.reap_stale_segments = false;
    config.registry.heartbeat_interval = Duration::from_secs(3600);
    let mut broker = Broker::start(config).unwrap();
    let endpoint = broker.endpoint().to_owned();
    let broker_public = broker.public_key();
    let stop = Arc::new(AtomicBool::new(false));
    let broker_thread = {
        let stop = stop.clone();
        std::thread::spawn(move || broker.run(&stop).unwrap())
    };
    let client = keys::local_client_key(&home.join("keys")).unwrap();
    let mut probe =
        Probe::connect(&endpoint, &broker_public, &client, Duration::from_secs(30)).unwrap();
    for i in 0..1000 {
        let reply = probe
            .request(
                "register",
                serde_json::json!({"client": format!("p{}", i % 200), "channel": {
                    "name": format!("bench-{i:04}"), "kind": "pubsub",
                    "endpoint": format!("tcp://127.0.0.1:{}", 10_000 + i)}}),
            )
            .unwrap();
        assert!(reply.is_ok());
    }

    // The baseline: a bare CURVE ROUTER that echoes every message, also on its own thread.
    let echo_keys = KeyPair::generate();
    let echo_ctx = Context::new().unwrap();
    let router = echo_ctx.socket(SocketType::Router).unwrap();
    router
        .set_curve_server_keys(&CurveSecretKey::from_bytes(echo_keys.secret_bytes()).unwrap())
        .unwrap();
    router.set_sndhwm(100_000).unwrap();
    router.set_rcvhwm(100_000).unwrap();
    router.bind("tcp://127.0.0.1:*").unwrap();
    let echo_endpoint = router.last_endpoint().unwrap();
    let echo_stop = Arc::new(AtomicBool::new(false));
    let echo_thread = {
        let stop = echo_stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let mut items = [router.poll_item(PollEvents::IN)];
                poll(&mut items, Some(Duration::from_millis(100))).unwrap();
                if items[0].is_readable() {
                    while let Ok(frames) = router.recv_multipart(Flags::DONTWAIT) {
                        router.send_multipart_msgs(frames, Flags::NONE).unwrap();
                    }
                }
            }
        })
    };

    let ctx = Context::new().unwrap();
    // The broker's key pair is only known by its public half; build a KeyPair-shaped server
    // argument for the broker from the public key alone.
    let broker_dealer = {
        let s = ctx.socket(SocketType::Dealer).unwrap();
        s.set_curve_client_keys(
            &CurvePublicKey::from_bytes(broker_public.as_bytes()).unwrap(),
            &CurvePublicKey::from_bytes(client.public.as_bytes()).unwrap(),
            &CurveSecretKey::from_bytes(client.secret_bytes()).unwrap(),
        )
        .unwrap();
        s.set_sndhwm(100_000).unwrap();
        s.set_rcvhwm(100_000).unwrap();
        s.connect(&endpoint).unwrap();
        s
    };
    let echo_dealer = curve_dealer(&ctx, &echo_keys, &client, &echo_endpoint);
    window(&broker_dealer);
    window(&echo_dealer);

    let mut group = c.benchmark_group("discover_window_100");
    group.throughput(Throughput::Elements(WINDOW as u64));
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("bare_curve_router_echo", |b| {
        b.iter(|| window(&echo_dealer))
    });
    group.bench_function("broker_discover", |b| b.iter(|| window(&broker_dealer)));
    group.finish();

    drop(broker_dealer);
    drop(echo_dealer);
    stop.store(true, Ordering::Relaxed);
    echo_stop.store(true, Ordering::Relaxed);
    broker_thread.join().unwrap();
    echo_thread.join().unwrap();
    let _ = std::fs::remove_dir_all(&home);
}

criterion_group!(benches, bench);
criterion_main!(benches);
