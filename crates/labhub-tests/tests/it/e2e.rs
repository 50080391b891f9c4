//! End to end with real processes: a broker, a producer and two consumers as child processes,
//! SIGKILLed and restarted while frames flow.

use std::time::{Duration, Instant};

use std::sync::atomic::Ordering;

use labhub::client::ShmProducer;
use labhub::client::{ClientConfig, ClientError, ConsumeError, Hub, Notice, ShmConsumer};
use labhub::protocol::{ChannelKind, ChannelState, DownReason, ErrorCode, Notification};
use labhub::shm::{Backpressure, Policy};

use crate::common::{ChildProc, ScratchDir, WATCHDOG, spawn_child, unique};

/// Spawns a `labhub-test-child` named `label` in failure messages.
fn spawn(label: &str, role: &str, args: &[&str]) -> ChildProc {
    spawn_child(role, args).labelled(label)
}

/// Skips lines until one satisfies `want`; returns it. A line starting with `error` fails the
/// test. Fails after [`WATCHDOG`].
fn wait_for(proc: &mut ChildProc, what: &str, mut want: impl FnMut(&str) -> bool) -> String {
    let label = proc.label().to_owned();
    proc.wait_for(what, |line| {
        assert!(!line.starts_with("error"), "{label}: {line}");
        want(line)
    })
}

/// The id of the next `frame <id>` line.
fn next_frame(proc: &mut ChildProc) -> u64 {
    let line = wait_for(proc, "a frame", |l| l.starts_with("frame "));
    line["frame ".len()..].parse().unwrap()
}

#[test]
fn consumers_hear_their_producer_die_resume_after_its_restart_and_outlive_a_broker_restart() {
    let home = ScratchDir::new("e2e-home");
    let home_s = home.path().to_str().unwrap().to_owned();
    let endpoint = home.ipc("broker.sock");
    let notify = home.ipc("notify.sock");
    let name = unique("e2e");
    let args = [home_s.as_str(), endpoint.as_str(), notify.as_str()];
    let with_name = [args[0], args[1], args[2], name.as_str()];

    let mut broker = spawn("broker", "client-broker", &args);
    wait_for(&mut broker, "ready", |l| l == "ready");
    let mut producer = spawn("producer", "client-producer", &with_name);
    wait_for(&mut producer, "ready", |l| l.starts_with("ready"));
    let mut consumers = [
        spawn("consumer 1", "client-consumer", &with_name),
        spawn("consumer 2", "client-consumer", &with_name),
    ];
    for c in &mut consumers {
        wait_for(c, "attached", |l| l == "attached");
        next_frame(c);
    }

    // SIGKILL the producer: the broker's watchdog declares the channel down and tells them.
    producer.kill();
    let mut last_seen = [0u64; 2];
    for (c, last) in consumers.iter_mut().zip(&mut last_seen) {
        wait_for(c, "notice channel_down", |l| {
            if let Some(id) = l.strip_prefix("frame ") {
                *last = (*last).max(id.parse().unwrap());
            }
            l == "notice channel_down"
        });
    }

    // Restart it: it re-attaches to the segment, frame ids continue, consumers resume.
    let mut producer = spawn("producer 2", "client-producer", &with_name);
    let ready = wait_for(&mut producer, "ready", |l| l.starts_with("ready"));
    let resumed_at: u64 = ready["ready ".len()..].parse().unwrap();
    assert!(
        resumed_at > last_seen[0].max(last_seen[1]),
        "frame ids continue: resumed at {resumed_at}, the consumers had seen {last_seen:?}"
    );
    for c in &mut consumers {
        let id = next_frame(c);
        assert!(
            id >= resumed_at,
            "frame {id} came before the restart at {resumed_at}"
        );
        assert!(next_frame(c) > id);
    }

    // SIGKILL the broker: frames keep flowing through shared memory.
    broker.kill();
    for c in &mut consumers {
        let first = next_frame(c);
        let mut id = first;
        for _ in 0..5 {
            let next = next_frame(c);
            assert!(next > id);
            id = next;
        }
    }

    // Restart it: the producer registers again, the consumers attach again, LIST shows it.
    let mut broker = spawn("broker 2", "client-broker", &args);
    wait_for(&mut broker, "ready", |l| l == "ready");
    let mut config = ClientConfig::from_home(home.path())
        .unwrap()
        .request_timeout(Duration::from_secs(2));
    config.endpoint = endpoint.clone();
    let hub = Hub::connect(config).unwrap();
    let deadline = Instant::now() + WATCHDOG;
    loop {
        let listed = hub.list(Some(&name), Some(ChannelKind::Shm)).unwrap();
        if let [ch] = listed.as_slice()
            && ch.state == ChannelState::Up
            && ch.consumers == 2
        {
            assert_eq!(ch.spec.name.as_str(), name);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the clients did not register again within {WATCHDOG:?}: {listed:?}"
        );
        // Polling the broker is the event here: the list is what the test observes.
        std::thread::sleep(Duration::from_millis(50));
    }
    for c in &mut consumers {
        next_frame(c);
    }
    hub.shutdown();
    drop(consumers);
    drop(producer);
    drop(broker);
    let _ = labhub::shm::remove_channel(&name);
}

/// A broker child process in a fresh home, and a way to connect clients to it.
struct TestBroker {
    _proc: ChildProc,
    home: ScratchDir,
    endpoint: String,
    notify: String,
}

impl TestBroker {
    fn start() -> Self {
        let home = ScratchDir::new("broker-home");
        let endpoint = home.ipc("broker.sock");
        let notify = home.ipc("notify.sock");
        let mut proc = spawn(
            "broker",
            "client-broker",
            &[home.path().to_str().unwrap(), &endpoint, &notify],
        );
        wait_for(&mut proc, "ready", |l| l == "ready");
        Self {
            _proc: proc,
            home,
            endpoint,
            notify,
        }
    }

    fn client(&self) -> Hub {
        let mut config = ClientConfig::from_home(self.home.path())
            .unwrap()
            .notify_endpoint(&self.notify)
            .request_timeout(Duration::from_secs(5));
        config.endpoint = self.endpoint.clone();
        Hub::connect(config).unwrap()
    }
}

fn shm_ring(hub: &Hub, name: &str) -> ShmProducer<u8> {
    hub.channel(name)
        .policy(Policy::Ring {
            slots: 8,
            when_full: Backpressure::DropOldest,
        })
        .bytes(64)
        .create()
        .unwrap()
}

fn wait_notice(consumer: &mut ShmConsumer<u8>, kind: &str) {
    let deadline = Instant::now() + WATCHDOG;
    loop {
        if let Some(n) = consumer.try_notice()
            && n.kind() == kind
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {kind} notice within {WATCHDOG:?}"
        );
        // Waiting for a frame is the consumer's way to wait for anything; none is coming.
        let _ = consumer.next(Some(Duration::from_millis(20)));
    }
}

#[test]
fn a_consumer_reattaches_by_itself_when_its_producer_comes_back_with_a_new_segment() {
    let broker = TestBroker::start();
    let name = unique("recreate");
    let producer_hub = broker.client();
    let consumer_hub = broker.client();
    let mut producer = shm_ring(&producer_hub, &name);
    let mut consumer = consumer_hub.channel(&name).element::<u8>().open().unwrap();
    producer.publish(b"old", &[3]).unwrap();
    let frame = consumer.next_copy(Some(WATCHDOG)).unwrap();
    assert_eq!((frame.frame_id, frame.data.as_slice()), (0, &b"old"[..]));

    // The producer leaves (unregisters: the channel goes down, the broker keeps its segment
    // while a consumer is attached), and a new producer continues it in a new segment of its
    // own (a sealed data memfd takes no new writer): frame ids continue.
    let old = producer.producer().report();
    drop(producer);
    wait_notice(&mut consumer, "channel_down");
    let mut producer = shm_ring(&producer_hub, &name);
    assert_eq!(producer.next_frame_id(), 1);
    let new = producer.producer().report();
    assert_ne!(new.instance, old.instance, "a new incarnation");
    assert_eq!(new.sharing, labhub::shm::Sharing::Memfd);
    // A re-attached consumer reads the frames committed after it re-attached, so the producer
    // keeps publishing until one arrives.
    let deadline = Instant::now() + WATCHDOG;
    let frame = loop {
        producer.publish(b"new", &[3]).unwrap();
        match consumer.next_copy(Some(Duration::from_millis(20))) {
            Ok(frame) => break frame,
            Err(ConsumeError::Timeout { .. }) => {}
            Err(e) => panic!("{e}"),
        }
        assert!(Instant::now() < deadline, "the consumer never resumed");
    };
    assert_eq!(frame.data, b"new");
    assert!(
        (1..producer.next_frame_id()).contains(&frame.frame_id),
        "a frame of the new segment"
    );
    assert_eq!(consumer.counters().reattached.load(Ordering::Relaxed), 1);

    // The heartbeat carries the producer's counters to the broker.
    let published = producer.next_frame_id();
    let deadline = Instant::now() + WATCHDOG;
    loop {
        let info = consumer_hub.discover(&name).unwrap();
        if info.counters.get("frames_published") == Some(&published) {
            assert_eq!(info.consumers, 1);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "counters never reported: {info:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Shutting the producer's client down unregisters the channel at once.
    producer_hub.shutdown();
    match consumer_hub.discover(&name) {
        Err(e) => assert_eq!(e.code(), Some(ErrorCode::ChannelDown), "{e}"),
        Ok(info) => panic!("still up after the producer's shutdown: {info:?}"),
    }
    drop(producer);
    drop(consumer);
    consumer_hub.shutdown();
    let _ = labhub::shm::remove_channel(&name);
}

#[test]
fn a_producer_restarting_before_its_heartbeat_timeout_takes_the_channel_over_at_once() {
    let broker = TestBroker::start();
    let name = unique("takeover");
    let home = broker.home.path().to_str().unwrap().to_owned();
    let mut first = spawn(
        "producer",
        "client-producer",
        &[&home, &broker.endpoint, &broker.notify, &name],
    );
    wait_for(&mut first, "ready", |l| l.starts_with("ready"));
    let make = |hub: &Hub| -> Result<ShmProducer<u8>, labhub::client::ClientError> {
        hub.channel(&name)
            .policy(Policy::Ring {
                slots: 64,
                when_full: Backpressure::DropOldest,
            })
            .bytes(64)
            .create()
    };
    // A client that does not retry: the broker must hand the channel over on the first ask.
    let impatient = |broker: &TestBroker| {
        let mut config = ClientConfig::from_home(broker.home.path())
            .unwrap()
            .notify_endpoint(&broker.notify)
            .request_timeout(Duration::from_secs(5))
            .takeover_wait(Duration::ZERO);
        config.endpoint = broker.endpoint.clone();
        Hub::connect(config).unwrap()
    };
    let hub = impatient(&broker);
    // While the first producer lives, its channel is its own.
    match make(&hub) {
        Err(e) => assert_eq!(e.code(), Some(ErrorCode::AlreadyExists), "{e}"),
        Ok(_) => panic!("a live producer's channel was taken"),
    }
    // SIGKILLed: long before its heartbeat timeout (5 s) the broker, asked for the channel,
    // sees that the process which handed it the segment is gone, expires its client and lets
    // the new producer take over.
    let notices = hub.notices().unwrap();
    first.kill();
    let producer = make(&hub).expect("taken over at once");
    let info = hub.discover(&name).unwrap();
    assert_eq!(&info.producer, hub.client_id());
    let reason = loop {
        match notices.recv_timeout(WATCHDOG) {
            Ok(Notice::Broker(Notification::ChannelDown {
                name: down, reason, ..
            })) if down.as_str() == name => break reason,
            Ok(_) => {}
            Err(e) => panic!("no channel_down notice: {e}"),
        }
    };
    assert_eq!(reason, DownReason::ProcessEnded);
    drop(producer);
    hub.shutdown();
    let _ = labhub::shm::remove_channel(&name);
}

#[test]
fn message_channels_register_dialable_endpoints_and_are_found_through_the_broker() {
    let broker = TestBroker::start();
    let server_hub = broker.client();
    let client_hub = broker.client();
    let topic_name = unique("topic");
    let rpc_name = unique("rpc");

    let publisher = server_hub.publisher(&topic_name).create().unwrap();
    let server = server_hub.req_server(&rpc_name).create().unwrap();
    for name in [&topic_name, &rpc_name] {
        let endpoint = client_hub.discover(name).unwrap().spec.endpoint.unwrap();
        let endpoint = endpoint.as_str();
        assert!(
            endpoint.starts_with("tcp://127.0.0.1:") && !endpoint.ends_with(":0"),
            "{endpoint} must be dialable"
        );
    }

    // Pub/sub: the subscriber joins late (ZeroMQ's slow joiner), so publish until it hears.
    let subscriber = client_hub
        .subscriber(&topic_name)
        .topic("cam")
        .open()
        .unwrap();
    let deadline = Instant::now() + WATCHDOG;
    let got = loop {
        publisher
            .send_json("cam0", &serde_json::json!({"frame": 1}))
            .unwrap();
        publisher.send(b"other", b"ignored").unwrap();
        if let Some(m) = subscriber
            .recv_json::<serde_json::Value>(Duration::from_millis(20))
            .unwrap()
        {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "the subscriber never heard the publisher"
        );
    };
    assert_eq!(got.value["frame"], 1);

    // Request/reply: the server answers on a thread of its own.
    let mut client = client_hub.req_client(&rpc_name).open().unwrap();
    let serving = std::thread::spawn(move || {
        server
            .serve_one(WATCHDOG, |request| [request, b"/pong"].concat())
            .unwrap();
        server
    });
    assert_eq!(client.request(b"ping", WATCHDOG).unwrap(), b"ping/pong");
    let server = serving.join().unwrap();

    // A channel of the wrong kind is refused by name.
    assert!(matches!(
        client_hub.req_client(&topic_name).open(),
        Err(labhub::client::ClientError::WrongKind { .. })
    ));
    let listed = client_hub.list(None, None).unwrap();
    for (name, kind) in [
        (&topic_name, ChannelKind::Pubsub),
        (&rpc_name, ChannelKind::Reqrep),
    ] {
        let ch = listed
            .iter()
            .find(|c| c.spec.name.as_str() == name.as_str());
        let ch = ch.unwrap_or_else(|| panic!("{name} not listed"));
        assert_eq!((ch.spec.kind, ch.consumers), (kind, 1));
    }
    drop((publisher, server, subscriber, client));
    server_hub.shutdown();
    client_hub.shutdown();
}

/// A `client-consumer` child attached to `name`, which `producer` serves; frame 0 published and
/// read by it.
fn a_reading_child(broker: &TestBroker, name: &str, producer: &mut ShmProducer<u8>) -> ChildProc {
    let home = broker.home.path().to_str().unwrap().to_owned();
    let mut child = spawn(
        "consumer",
        "client-consumer",
        &[&home, &broker.endpoint, &broker.notify, name],
    );
    wait_for(&mut child, "attached", |l| l == "attached");
    producer.publish(b"0", &[1]).unwrap();
    wait_for(&mut child, "frame 0", |l| l == "frame 0");
    child
}

/// Publishes frames until the `client-consumer` child reads one (one that is not frame 0): a
/// consumer that attached again reads the frames committed after it did.
fn publish_until_the_child_reads_one(producer: &mut ShmProducer<u8>, child: &mut ChildProc) {
    let deadline = Instant::now() + WATCHDOG;
    loop {
        producer.publish(b"1", &[1]).unwrap();
        let line = wait_for(child, "a frame or a timeout", |l| {
            l.starts_with("frame") || l.starts_with("timeout")
        });
        if line.starts_with("frame") && line != "frame 0" {
            return;
        }
        assert!(Instant::now() < deadline, "the consumer never resumed");
    }
}

/// The consumer-table index of process `pid` in the channel `producer` produces.
fn entry_of(producer: &mut ShmProducer<u8>, pid: u32) -> usize {
    let report = producer.producer().report();
    report
        .consumers
        .iter()
        .find(|c| c.pid == pid)
        .unwrap_or_else(|| panic!("pid {pid} is not a consumer: {report:?}"))
        .index
}

#[test]
fn an_evicted_hub_consumer_whose_producer_is_gone_still_returns_by_its_deadline_and_resumes() {
    let broker = TestBroker::start();
    let name = unique("evicted-gone");
    let hub = broker.client();
    let mut producer = hub
        .channel(&name)
        .policy(Policy::Latest)
        .bytes(64)
        .create()
        .unwrap();
    let mut child = a_reading_child(&broker, &name, &mut producer);
    // The consumer's entry is freed behind its back, as a reaper that judged it dead would, and
    // its producer leaves. The control memfd is reached as any process of the user reaches
    // another's descriptors, through /proc.
    let index = entry_of(&mut producer, child.pid());
    let control = labhub_tests::memfd::open(std::process::id(), &name, "control")
        .expect("this process holds the control memfd");
    // SAFETY: a shared mapping of the control region of a segment this test created; the
    // write is one aligned word.
    let mut map = unsafe { memmap2::MmapMut::map_mut(&control).unwrap() };
    // The producer's client unregisters the channel in the background: evicted before the
    // broker took it down, the consumer could still be granted the old segment again.
    drop(producer);
    let deadline = Instant::now() + WATCHDOG;
    while hub.discover(&name).is_ok() {
        assert!(Instant::now() < deadline, "the channel never went down");
        std::thread::sleep(Duration::from_millis(10));
    }
    let entry = labhub_tests::memfd::CONSUMER_TABLE + 128 * index;
    map[entry..entry + 8].fill(0);
    drop(map);
    // Each read still ends by its 200 ms deadline (the child prints `timeout`) while no segment
    // can be attached, and says how many consumers its old segment has (none: it was evicted).
    wait_for(&mut child, "a timeout after the eviction", |l| {
        l == "timeout consumers=0"
    });
    // A producer again: the consumer attaches to its segment by itself and reads on.
    let mut producer = hub
        .channel(&name)
        .policy(Policy::Latest)
        .bytes(64)
        .create()
        .unwrap();
    publish_until_the_child_reads_one(&mut producer, &mut child);
    drop(producer);
    hub.shutdown();
}

#[test]
fn a_hub_producer_evicts_a_stopped_consumer_the_broker_dropped() {
    let broker = TestBroker::start();
    let name = unique("dropped");
    let hub = broker.client();
    // A lossless ring with no consumer timeout: only the broker's notice can free it.
    let mut producer = hub
        .channel(&name)
        .policy(Policy::Ring {
            slots: 2,
            when_full: Backpressure::Block { timeout: WATCHDOG },
        })
        .bytes(64)
        .consumer_timeout(None)
        .create()
        .unwrap();
    let mut child = a_reading_child(&broker, &name, &mut producer);
    child.stop();
    child.wait_stopped();
    // The stopped process sends no heartbeat: the broker drops it (300 ms here) and tells the
    // producer, which evicts it from the table while the full ring blocks it.
    for i in 1..=6u8 {
        producer.publish(&[i], &[1]).unwrap();
    }
    assert_eq!(producer.stats().evicted, 1);
    assert!(
        std::iter::from_fn(|| producer.try_notice()).any(|n| n.kind() == "consumer_dropped"),
        "the producer saw the broker's notice"
    );
    // Resumed, the consumer finds itself evicted, attaches again and reads new frames (those
    // committed after it attached again, so the producer keeps publishing).
    child.resume();
    publish_until_the_child_reads_one(&mut producer, &mut child);
    drop(producer);
    hub.shutdown();
    let _ = labhub::shm::remove_channel(&name);
}

#[test]
fn one_hub_serves_a_message_channel_once_at_a_time() {
    let broker = TestBroker::start();
    let hub = broker.client();
    let topic = unique("topic");
    let first = hub.publisher(&topic).create().unwrap();
    let endpoint = hub.discover(&topic).unwrap().spec.endpoint;
    // A second publisher of the same client would replace the first's registration.
    let second = hub.publisher(&topic).create();
    assert!(
        matches!(&second, Err(ClientError::AlreadyServing { channel }) if *channel == topic),
        "{second:?}"
    );
    assert_eq!(second.unwrap_err().code(), Some(ErrorCode::AlreadyExists));
    assert!(matches!(
        hub.req_server(&topic).create(),
        Err(ClientError::AlreadyServing { .. })
    ));
    assert_eq!(hub.discover(&topic).unwrap().spec.endpoint, endpoint);
    // Once the first is dropped the name is free again.
    drop(first);
    let again = hub.publisher(&topic).create().unwrap();
    let info = hub.discover(&topic).unwrap();
    assert_eq!(
        (&info.producer, info.state),
        (hub.client_id(), ChannelState::Up)
    );
    drop(again);
    hub.shutdown();
}
