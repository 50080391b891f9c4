//! Heartbeat expiry, segment cleanup and broker restarts, with SIGKILLed processes.

use super::*;

#[test]
fn a_killed_producer_s_channel_goes_down_and_its_segment_is_removed() {
    let home = TestHome::new("prodkill");
    let broker = TestBroker::start(&home);
    let mut probe = broker.probe(&home);
    let listener = broker.listen(&home);
    sync_listener(&mut probe, &listener, &home);
    let name = home.channel("cam");
    let mut producer = broker.client(&home, "prod-1", "produce-shm", &name);
    producer.skip_to("registered");
    assert!(segment_exists(&name));
    let reply = probe.request("discover", json!({"name": name})).unwrap();
    assert!(reply.is_ok(), "{reply:?}");

    producer.kill();
    let n = expect_notification(
        &listener,
        "channel_down",
        |n| matches!(n, Notification::ChannelDown { name: c, .. } if c.as_str() == name),
    );
    assert!(matches!(
        n,
        Notification::ChannelDown {
            reason: labhub::protocol::DownReason::HeartbeatTimeout,
            ..
        }
    ));
    wait_until("the broker unlinks the dead producer's segment", || {
        !segment_exists(&name)
    });
    let reply = probe.request("discover", json!({"name": name})).unwrap();
    assert_eq!(reply.error_code, ErrorCode::NotFound);
    // "absent" when a broker of another test, starting meanwhile, reaped the dead producer's
    // segment first (every broker reaps this user's stale segments at start).
    wait_until("the audit log records the cleanup", || {
        home.audit().iter().any(|l| {
            l["event"] == "segment_removed"
                && (l["outcome"] == "removed" || l["outcome"] == "absent")
        })
    });
}

#[test]
fn a_killed_consumer_is_dropped_and_its_producer_told() {
    let home = TestHome::new("conskill");
    let broker = TestBroker::start(&home);
    let mut probe = broker.probe(&home);
    let listener = broker.listen(&home);
    sync_listener(&mut probe, &listener, &home);
    let name = home.channel("feed");
    let mut producer = broker.client(&home, "prod-2", "produce-pubsub", &name);
    producer.skip_to("registered");
    let mut consumer = broker.client(&home, "cons-2", "consume", &name);
    consumer.skip_to("attached");
    assert_eq!(
        probe
            .request("discover", json!({"name": name}))
            .unwrap()
            .channel
            .unwrap()
            .consumers,
        1
    );

    consumer.kill();
    let n = expect_notification(
        &listener,
        "consumer_dropped",
        |n| matches!(n, Notification::ConsumerDropped { name: c, .. } if c.as_str() == name),
    );
    let Notification::ConsumerDropped {
        producer: p,
        consumer: c,
        ..
    } = n
    else {
        unreachable!()
    };
    assert_eq!(p.as_str(), "prod-2");
    assert_eq!(c.as_str(), "cons-2");
    // The slot is released; the producer (still heartbeating) keeps its channel up.
    let ch = probe
        .request("discover", json!({"name": name}))
        .unwrap()
        .channel
        .unwrap();
    assert_eq!(ch.consumers, 0);
    drop(producer);
}

#[test]
fn a_segment_stays_while_a_consumer_holds_it_and_goes_when_the_consumer_dies() {
    let home = TestHome::new("held");
    let broker = TestBroker::start(&home);
    let mut probe = broker.probe(&home);
    let listener = broker.listen(&home);
    sync_listener(&mut probe, &listener, &home);
    let name = home.channel("held");
    let mut producer = broker.client(&home, "prod-3", "produce-shm", &name);
    producer.skip_to("registered");
    let mut consumer = broker.client(&home, "cons-3", "consume", &name);
    consumer.skip_to("attached");

    producer.kill();
    expect_notification(
        &listener,
        "channel_down",
        |n| matches!(n, Notification::ChannelDown { name: c, .. } if c.as_str() == name),
    );
    // The consumer still holds the segment: it must survive (only the broker removes segments,
    // and only once nobody holds them).
    assert!(segment_exists(&name));
    let reply = probe.request("discover", json!({"name": name})).unwrap();
    assert_eq!(reply.error_code, ErrorCode::ChannelDown);

    consumer.kill();
    expect_notification(
        &listener,
        "consumer_dropped",
        |n| matches!(n, Notification::ConsumerDropped { name: c, .. } if c.as_str() == name),
    );
    wait_until("the broker unlinks the segment nobody holds", || {
        !segment_exists(&name)
    });
}

#[test]
fn after_a_broker_sigkill_and_restart_clients_re_register_by_themselves() {
    let home = TestHome::new("restart");
    let mut broker = TestBroker::start(&home);
    let name = home.channel("cam");
    let mut producer = broker.client(&home, "prod-4", "produce-shm", &name);
    producer.skip_to("registered");
    let mut consumer = broker.client(&home, "cons-4", "consume", &name);
    consumer.skip_to("attached");
    let endpoint = broker.endpoint.clone();
    let notify = broker.notify_endpoint.clone();
    let key = broker.key;

    broker.proc.kill();
    // Same endpoints, same home (so the same key): a restarted broker.
    let broker = TestBroker::start_on(&home, &endpoint, &notify, &[]);
    assert_eq!(broker.key, key);
    producer.skip_to("re-registered");
    consumer.skip_to("re-attached");
    // The data plane never stopped: the segment survived the broker's death and its restart
    // (the restarted broker's reaper saw a live producer).
    assert!(segment_exists(&name));
    let probe = std::cell::RefCell::new(broker.probe(&home));
    wait_until("the registry converges", || {
        let r = probe
            .borrow_mut()
            .request("discover", json!({"name": name}))
            .unwrap();
        r.channel.is_some_and(|c| c.consumers == 1)
    });
    drop(consumer);
    drop(producer);
}

#[test]
fn sigterm_stops_the_broker_cleanly_and_the_audit_log_says_so() {
    let home = TestHome::new("term");
    let mut broker = TestBroker::start(&home);
    broker.proc.terminate();
    broker.proc.skip_to("stopped");
    let status = broker.proc.wait();
    assert!(status.success(), "{status:?}");
    let audit = home.audit();
    assert_eq!(audit.last().unwrap()["event"], "broker_stopped");
}
