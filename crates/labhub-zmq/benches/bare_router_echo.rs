//! DEALER → ROUTER echo over tcp on 127.0.0.1, with and without CURVE: the request rate a bare
//! libzmq ROUTER sustains, the baseline for the broker's own benchmark.
//!
//! Each iteration sends one 3-frame request shaped like a broker message (tag, type, ~100-byte
//! JSON body) and waits for its echo, so the figure is round trips per second (elements/s).
//!
//! ```sh
//! cargo bench -p labhub-zmq --bench bare_router_echo
//! ```
#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::hint::black_box;
use std::thread::JoinHandle;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use labhub_zmq::{Context, CurveKeyPair, Flags, Socket, SocketType};

const BODY: &[u8] = br#"{"channel_name":"cam0","uid":"producer-0001","role_type":"producer","producer_pid":4242,"seq":1}"#;

struct Echo {
    context: Context,
    dealer: Socket,
    server: Option<JoinHandle<()>>,
}

impl Echo {
    fn start(curve: bool) -> Self {
        let context = Context::new().expect("context");
        let router = context.socket(SocketType::Router).expect("router");
        let server_keys = CurveKeyPair::generate().expect("keys");
        if curve {
            router
                .set_curve_server_keys(&server_keys.secret)
                .expect("curve server");
        }
        router.bind("tcp://127.0.0.1:0").expect("bind");
        let endpoint = router.last_endpoint().expect("endpoint");
        let server = std::thread::spawn(move || {
            // Echo until the context is shut down (ETERM).
            while let Ok(frames) = router.recv_multipart(Flags::NONE) {
                if router.send_multipart_msgs(frames, Flags::NONE).is_err() {
                    break;
                }
            }
        });

        let dealer = context.socket(SocketType::Dealer).expect("dealer");
        if curve {
            let mine = CurveKeyPair::generate().expect("keys");
            dealer
                .set_curve_client_keys(&server_keys.public, &mine.public, &mine.secret)
                .expect("curve client");
        }
        dealer
            .set_rcvtimeo(Some(Duration::from_secs(10)))
            .expect("rcvtimeo");
        dealer.connect(&endpoint).expect("connect");
        let echo = Self {
            context,
            dealer,
            server: Some(server),
        };
        echo.round_trip(); // handshake done before measuring
        echo
    }

    fn round_trip(&self) {
        self.dealer
            .send_multipart([&b"C"[..], b"HEARTBEAT_NOTIFY", BODY], Flags::NONE)
            .expect("send");
        let reply = self.dealer.recv_multipart(Flags::NONE).expect("echo");
        black_box(reply);
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.context.shutdown();
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
    }
}

fn bare_router_echo(c: &mut Criterion) {
    let mut group = c.benchmark_group("bare_router_echo");
    group.throughput(Throughput::Elements(1));
    for (name, curve) in [("plain", false), ("curve", true)] {
        let echo = Echo::start(curve);
        group.bench_function(name, |b| b.iter(|| echo.round_trip()));
    }
    group.finish();
}

criterion_group!(benches, bare_router_echo);
criterion_main!(benches);
