//! The bridge's throughput and added latency against bare libzmq CURVE PUSH/PULL, in one run.
//!
//! Two brokers run in this process ("acq" and "ws", each its own home and ports), with a
//! gateway on ws. For 1, 2 and 4 connections it moves the same frames (1 MiB by default) from
//! a shared-memory channel on acq through a bridge into a channel on ws and reads them there,
//! and sends the same bytes over as many bare CURVE PUSH/PULL pairs, alternating the two; then
//! it measures the latency from the producer's timestamp to the remote consumer at 100
//! frames/s, and the same for bare CURVE.
//!
//! ```text
//! cargo run --release -p labhub --features bridge --example bridge_figures -- --rounds 3
//! ```
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use labhub::bridge::{Bridge, BridgeOptions, Gateway, GatewayOptions};
use labhub::broker::{Broker, BrokerConfig};
use labhub::client::{ClientConfig, Hub, ShmConsumer, ShmProducer};
use labhub::keys;
use labhub::shm::Dynamic;
use labhub_zmq::{Context, CurveKeyPair, Flags, Message, SocketType};

struct Args {
    frames: u64,
    size: usize,
    rounds: u32,
    connections: Vec<u32>,
    latency_frames: u64,
}

fn args() -> Args {
    let mut a = Args {
        frames: 400,
        size: 1 << 20,
        rounds: 3,
        connections: vec![1, 2, 4],
        latency_frames: 300,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--frames" => a.frames = value.parse().expect("--frames N"),
            "--size" => a.size = value.parse().expect("--size BYTES"),
            "--rounds" => a.rounds = value.parse().expect("--rounds N"),
            "--connections" => {
                a.connections = value
                    .split(',')
                    .map(|c| c.parse().expect("--connections 1,2,4"))
                    .collect()
            }
            "--latency-frames" => a.latency_frames = value.parse().expect("--latency-frames N"),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// A broker on its own thread, in a fresh home.
fn broker(tag: &str) -> (Hub, std::path::PathBuf, Arc<AtomicBool>) {
    let home = std::env::temp_dir().join(format!(
        "labhub-bridge-figures-{tag}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&home);
    let mut config = BrokerConfig::for_home(&home);
    config.endpoint = "tcp://127.0.0.1:*".into();
    config.notify_endpoint = "tcp://127.0.0.1:*".into();
    config.allow_any_client = true;
    let mut broker = Broker::start(config).expect("start a broker");
    let (endpoint, notify, public) = (
        broker.endpoint().to_owned(),
        broker.notify_endpoint().to_owned(),
        broker.public_key(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    std::thread::spawn(move || broker.run(&flag));
    let client = keys::local_client_key(&home.join("keys")).unwrap();
    let hub = Hub::connect(
        ClientConfig::new(endpoint, public, client)
            .notify_endpoint(notify)
            .io_threads(4),
    )
    .unwrap();
    (hub, home, stop)
}

fn remote_config(ws: &Hub, ws_home: &std::path::Path, acq_home: &std::path::Path) -> ClientConfig {
    let public = keys::read_public(&ws_home.join("keys").join("broker.pub")).unwrap();
    let client = keys::local_client_key(&acq_home.join("keys")).unwrap();
    ClientConfig::new(ws.endpoint(), public, client)
}

fn wait_up(hub: &Hub, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !hub
        .discover(name)
        .is_ok_and(|i| i.state == labhub::protocol::ChannelState::Up)
    {
        assert!(Instant::now() < deadline, "{name} never came up");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A source channel on acq, a bridge of `connections` to ws, and a lossless consumer there.
fn open(
    acq: &Hub,
    ws: &Hub,
    remote: &ClientConfig,
    name: &str,
    connections: u32,
    a: &Args,
) -> (ShmProducer<u8>, Bridge, ShmConsumer<Dynamic>) {
    let policy = "ring:32:block:60s".parse().unwrap();
    let producer: ShmProducer<u8> = acq
        .channel(name)
        .policy(policy)
        .bytes(a.size as u64)
        .create()
        .unwrap();
    let options = BridgeOptions {
        connections,
        from_hub: "acq".into(),
        ..Default::default()
    };
    let bridge = Bridge::start(acq, name, remote.clone(), options).unwrap();
    wait_up(ws, name);
    let consumer: ShmConsumer<Dynamic> = ws.channel(name).open().unwrap();
    (producer, bridge, consumer)
}

/// Frames through a bridge of `connections`: MB/s from the first publish to the last read.
fn bridged(
    acq: &Hub,
    ws: &Hub,
    remote: &ClientConfig,
    name: &str,
    connections: u32,
    a: &Args,
) -> f64 {
    let (mut producer, bridge, mut consumer) = open(acq, ws, remote, name, connections, a);
    let frames = a.frames;
    let reader = std::thread::spawn(move || {
        for _ in 0..frames {
            let _ = consumer
                .next(Some(Duration::from_secs(60)))
                .expect("a bridged frame");
        }
        Instant::now()
    });
    let start = Instant::now();
    for _ in 0..frames {
        producer.loan().unwrap().commit();
    }
    let end = reader.join().unwrap();
    bridge.stop().unwrap();
    (a.frames * a.size as u64) as f64 / 1e6 / (end - start).as_secs_f64()
}

/// The same bytes over `pairs` bare CURVE PUSH/PULL connections (each message copied once
/// into a ZeroMQ frame, as the bridge copies a frame out of the ring): MB/s.
fn bare(pairs: u32, a: &Args, latency: Option<&mut Vec<u64>>) -> f64 {
    let send_ctx = Context::new().unwrap();
    let recv_ctx = Context::new().unwrap();
    send_ctx.set_io_threads(pairs as i32).unwrap();
    recv_ctx.set_io_threads(pairs as i32).unwrap();
    let server = CurveKeyPair::generate().unwrap();
    let client = CurveKeyPair::generate().unwrap();
    let mut pulls = Vec::new();
    let mut pushes = Vec::new();
    for _ in 0..pairs {
        let pull = recv_ctx.socket(SocketType::Pull).unwrap();
        pull.set_curve_server_keys(&server.secret).unwrap();
        pull.set_rcvhwm(32).unwrap();
        pull.bind("tcp://127.0.0.1:*").unwrap();
        let push = send_ctx.socket(SocketType::Push).unwrap();
        push.set_curve_client_keys(&server.public, &client.public, &client.secret)
            .unwrap();
        push.set_sndhwm(32).unwrap();
        push.connect(&pull.last_endpoint().unwrap()).unwrap();
        pulls.push(pull);
        pushes.push(push);
    }
    let per = a.frames / u64::from(pairs);
    let size = a.size;
    let paced = latency.is_some();
    let count = if paced { a.latency_frames } else { per };
    let receivers: Vec<_> = pulls
        .into_iter()
        .map(|pull| {
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                for _ in 0..count {
                    let m = pull.recv(Flags::NONE).unwrap();
                    let sent = u64::from_le_bytes(m.as_bytes()[..8].try_into().unwrap());
                    lat.push(now_ns().saturating_sub(sent));
                }
                (Instant::now(), lat)
            })
        })
        .collect();
    let payload = vec![7u8; size];
    let start = Instant::now();
    let senders: Vec<_> = pushes
        .into_iter()
        .map(|push| {
            let mut payload = payload.clone();
            std::thread::spawn(move || {
                for _ in 0..count {
                    if paced {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    payload[..8].copy_from_slice(&now_ns().to_le_bytes());
                    push.send_msg(Message::copy_from(&payload).unwrap(), Flags::NONE)
                        .unwrap();
                }
                push
            })
        })
        .collect();
    let mut end = start;
    let mut all = Vec::new();
    for r in receivers {
        let (t, lat) = r.join().unwrap();
        end = end.max(t);
        all.extend(lat);
    }
    for s in senders {
        drop(s.join().unwrap());
    }
    if let Some(out) = latency {
        *out = all;
    }
    (count * u64::from(pairs) * size as u64) as f64 / 1e6 / (end - start).as_secs_f64()
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn percentile(v: &mut [u64], p: f64) -> f64 {
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i] as f64 / 1e3
}

/// Latency (µs) from the producer's timestamp to the remote consumer, at 100 frames/s.
fn bridged_latency(acq: &Hub, ws: &Hub, remote: &ClientConfig, name: &str, a: &Args) -> Vec<u64> {
    let (mut producer, bridge, mut consumer) = open(acq, ws, remote, name, 1, a);
    let frames = a.latency_frames;
    let reader = std::thread::spawn(move || {
        let mut lat = Vec::new();
        for _ in 0..frames {
            let f = consumer
                .next(Some(Duration::from_secs(60)))
                .expect("a bridged frame");
            lat.push(now_ns().saturating_sub(f.timestamp_ns()));
        }
        lat
    });
    for _ in 0..frames {
        std::thread::sleep(Duration::from_millis(10));
        producer.loan().unwrap().commit();
    }
    let lat = reader.join().unwrap();
    bridge.stop().unwrap();
    lat
}

fn main() {
    let a = args();
    let (acq, acq_home, acq_stop) = broker("acq");
    let (ws, ws_home, ws_stop) = broker("ws");
    let gateway = Gateway::start(&ws, GatewayOptions::default()).unwrap();
    let remote = remote_config(&ws, &ws_home, &acq_home);
    println!(
        "frames of {} bytes, {} per run, {} rounds (bridge and bare CURVE alternated)",
        a.size, a.frames, a.rounds
    );
    let mut n = 0;
    for round in 0..a.rounds {
        for &c in &a.connections {
            n += 1;
            let base = bare(c, &a, None);
            let bridge = bridged(&acq, &ws, &remote, &format!("bench{n}"), c, &a);
            println!(
                "round {round} connections {c}: bridge {bridge:.0} MB/s, bare CURVE PUSH/PULL {base:.0} MB/s, ratio {:.2}",
                bridge / base
            );
        }
    }
    for round in 0..a.rounds {
        n += 1;
        let mut b = bridged_latency(&acq, &ws, &remote, &format!("lat{n}"), &a);
        let mut z = Vec::new();
        bare(1, &a, Some(&mut z));
        println!(
            "round {round} latency at 100 frames/s: bridge p50 {:.0} µs p99 {:.0} µs; bare CURVE p50 {:.0} µs p99 {:.0} µs",
            percentile(&mut b, 0.5),
            percentile(&mut b, 0.99),
            percentile(&mut z, 0.5),
            percentile(&mut z, 0.99)
        );
    }
    drop(gateway);
    acq.shutdown();
    ws.shutdown();
    acq_stop.store(true, Ordering::SeqCst);
    ws_stop.store(true, Ordering::SeqCst);
    let _ = std::fs::remove_dir_all(acq_home);
    let _ = std::fs::remove_dir_all(ws_home);
}
