use super::*;
use crate::protocol;

const HB: Duration = Duration::from_millis(100);

fn config() -> RegistryConfig {
    RegistryConfig {
        heartbeat_interval: HB,
        max_missed_heartbeats: 3,
        max_channels: 4,
        max_clients: 8,
        max_consumers_per_channel: 2,
    }
}

struct World {
    reg: Registry,
    t0: Instant,
    effects: Vec<Effect>,
    next_id: u64,
}

impl World {
    fn new() -> Self {
        Self {
            reg: Registry::new(config()),
            t0: Instant::now(),
            effects: Vec::new(),
            next_id: 1,
        }
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    fn send_as(
        &mut self,
        ms: u64,
        key: Option<&str>,
        kind: &str,
        body: serde_json::Value,
    ) -> Reply {
        let mut body = body;
        body["request_id"] = self.next_id.into();
        self.next_id += 1;
        let frames = vec![
            protocol::TAG.to_vec(),
            protocol::VERSION_FRAME.to_vec(),
            kind.as_bytes().to_vec(),
            serde_json::to_vec(&body).unwrap(),
        ];
        let req = protocol::decode_request(&frames)
            .outcome
            .unwrap_or_else(|r| panic!("test request refused: {}", r.error));
        let now = self.at(ms);
        let reply = self
            .reg
            .handle(now, Origin { key }, &req, &mut self.effects);
        assert_eq!(reply.request_id, Some(req.request_id()));
        reply
    }

    fn send(&mut self, ms: u64, kind: &str, body: serde_json::Value) -> Reply {
        self.send_as(ms, None, kind, body)
    }

    fn register_shm(&mut self, ms: u64, client: &str, name: &str) -> Reply {
        self.send(
            ms,
            "register",
            serde_json::json!({"client": client, "channel": {
                "name": name, "kind": "shm", "shm_name": format!("/labhub.1000.{name}"), "size": 4096}}),
        )
    }

    fn tick(&mut self, ms: u64) {
        let now = self.at(ms);
        self.reg.tick(now, &mut self.effects);
    }

    fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// Notifications and segment removals, ignoring audit events.
    fn actions(&mut self) -> Vec<Effect> {
        self.take_effects()
            .into_iter()
            .filter(|e| !matches!(e, Effect::Audit(_)))
            .collect()
    }
}

fn name(s: &str) -> ChannelName {
    ChannelName::new(s).unwrap()
}

fn client(s: &str) -> ClientId {
    ClientId::new(s).unwrap()
}

#[test]
fn register_then_discover_returns_the_channel_and_heartbeat_terms() {
    let mut w = World::new();
    let r = w.register_shm(0, "prod", "cam0");
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(r.heartbeat_interval_ms, Some(100));
    assert_eq!(r.max_missed_heartbeats, Some(3));
    let actions = w.actions();
    assert!(
        matches!(&actions[..], [Effect::Notify(Notification::ChannelUp { channel })] if channel.spec.name.as_str() == "cam0")
    );

    let r = w.send(1, "discover", serde_json::json!({"name": "cam0"}));
    let ch = r.channel.expect("discover returns the channel");
    assert_eq!(ch.producer.as_str(), "prod");
    assert_eq!(ch.state, ChannelState::Up);
    assert_eq!(ch.spec.shm_name.unwrap().as_str(), "/labhub.1000.cam0");

    let r = w.send(1, "discover", serde_json::json!({"name": "nope"}));
    assert_eq!(r.error_code, ErrorCode::NotFound);
}

#[test]
fn every_registration_and_discovery_is_audited() {
    let mut w = World::new();
    w.register_shm(0, "prod", "cam0");
    w.send(
        1,
        "discover",
        serde_json::json!({"name": "cam0", "client": "c"}),
    );
    w.send(1, "discover", serde_json::json!({"name": "nope"}));
    let audits: Vec<AuditEvent> = w
        .take_effects()
        .into_iter()
        .filter_map(|e| match e {
            Effect::Audit(a) => Some(a),
            _ => None,
        })
        .collect();
    assert!(matches!(
        &audits[0],
        AuditEvent::Registered { how: "new", .. }
    ));
    assert!(matches!(
        &audits[1],
        AuditEvent::Discovered {
            outcome: "none",
            client: Some(_),
            ..
        }
    ));
    assert!(matches!(
        &audits[2],
        AuditEvent::Discovered {
            outcome: "not_found",
            ..
        }
    ));
}

#[test]
fn a_second_producer_cannot_take_a_live_channel() {
    let mut w = World::new();
    w.register_shm(0, "a", "cam0");
    let r = w.register_shm(1, "b", "cam0");
    assert_eq!(r.error_code, ErrorCode::AlreadyExists);
    // The owner may register again (a refresh); nothing is re-announced when nothing changed.
    w.take_effects();
    assert!(w.register_shm(2, "a", "cam0").is_ok());
    assert!(w.actions().is_empty());
}

#[test]
fn unregister_is_only_for_the_producer_and_removes_the_segment() {
    let mut w = World::new();
    w.register_shm(0, "a", "cam0");
    w.take_effects();
    let r = w.send(
        1,
        "unregister",
        serde_json::json!({"client": "b", "name": "cam0"}),
    );
    assert_eq!(r.error_code, ErrorCode::NotOwner);
    let r = w.send(
        1,
        "unregister",
        serde_json::json!({"client": "a", "name": "cam0"}),
    );
    assert!(r.is_ok());
    let actions = w.actions();
    assert!(matches!(
        &actions[0],
        Effect::Notify(Notification::ChannelDown {
            reason: DownReason::Unregistered,
            ..
        })
    ));
    assert!(
        matches!(&actions[1], Effect::RemoveSegment { shm_name, .. } if shm_name.as_str() == "/labhub.1000.cam0")
    );
    assert_eq!(w.reg.channel_count(), 0);
    let r = w.send(
        2,
        "unregister",
        serde_json::json!({"client": "a", "name": "cam0"}),
    );
    assert_eq!(r.error_code, ErrorCode::NotFound);
}

#[test]
fn heartbeats_keep_a_producer_alive_and_silence_takes_its_channel_down() {
    let mut w = World::new();
    w.register_shm(0, "prod", "cam0");
    w.take_effects();
    // Heartbeats every interval for a while: nothing expires.
    for i in 1..=20 {
        let r = w.send(i * 100, "heartbeat", serde_json::json!({"client": "prod"}));
        assert!(r.is_ok());
        w.tick(i * 100 + 50);
    }
    assert!(w.actions().is_empty());
    // Silent for exactly the allowed 3 intervals: still alive.
    w.tick(2000 + 300);
    assert!(w.actions().is_empty());
    // Silent for longer: down, announced, segment removed since no consumer holds it.
    w.tick(2000 + 301);
    let actions = w.actions();
    assert!(
        matches!(&actions[0], Effect::Notify(Notification::ChannelDown { reason: DownReason::HeartbeatTimeout, producer, .. }) if producer.as_str() == "prod")
    );
    assert!(matches!(&actions[1], Effect::RemoveSegment { .. }));
    assert_eq!(w.reg.channel_count(), 0);
    assert!(!w.reg.knows_client("prod"));
    // Its next heartbeat tells it to register again.
    let r = w.send(2400, "heartbeat", serde_json::json!({"client": "prod"}));
    assert_eq!(r.error_code, ErrorCode::UnknownClient);
}

#[test]
fn a_down_channel_keeps_its_segment_until_the_last_consumer_leaves() {
    let mut w = World::new();
    w.register_shm(0, "prod", "cam0");
    let r = w.send(
        0,
        "attach",
        serde_json::json!({"client": "c1", "name": "cam0"}),
    );
    assert!(r.is_ok());
    assert_eq!(r.channel.unwrap().consumers, 1);
    w.send(
        0,
        "attach",
        serde_json::json!({"client": "c2", "name": "cam0"}),
    );
    w.take_effects();
    // The consumers keep heartbeating; the producer does not.
    for ms in [100, 200, 300, 400] {
        w.send(ms, "heartbeat", serde_json::json!({"client": "c1"}));
        w.send(ms, "heartbeat", serde_json::json!({"client": "c2"}));
        w.tick(ms);
    }
    let actions = w.actions();
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert!(matches!(
        &actions[0],
        Effect::Notify(Notification::ChannelDown { .. })
    ));
    assert_eq!(w.reg.channel("cam0").unwrap().state, ChannelState::Down);
    let r = w.send(400, "discover", serde_json::json!({"name": "cam0"}));
    assert_eq!(r.error_code, ErrorCode::ChannelDown);
    let r = w.send(
        400,
        "attach",
        serde_json::json!({"client": "c3", "name": "cam0"}),
    );
    assert_eq!(r.error_code, ErrorCode::ChannelDown);
    // c1 detaches: the segment is still held by c2.
    assert!(
        w.send(
            450,
            "detach",
            serde_json::json!({"client": "c1", "name": "cam0"})
        )
        .is_ok()
    );
    assert!(w.actions().is_empty());
    // c2 goes silent: its drop is announced to the producer, then the segment goes.
    w.tick(450 + 301);
    let actions = w.actions();
    assert!(
        matches!(&actions[0], Effect::Notify(Notification::ConsumerDropped { consumer, .. }) if consumer.as_str() == "c2")
    );
    assert!(matches!(&actions[1], Effect::RemoveSegment { .. }));
    assert_eq!(w.reg.channel_count(), 0);
}

#[test]
fn a_client_whose_process_ended_expires_at_once_with_that_reason() {
    let mut w = World::new();
    w.register_shm(0, "prod", "cam0");
    w.register_shm(0, "peer", "other");
    w.send(
        0,
        "attach",
        serde_json::json!({"client": "prod", "name": "other"}),
    );
    w.take_effects();
    assert_eq!(w.reg.live_producer_of(&name("cam0")), Some(&client("prod")));
    w.reg.expire_ended(&client("prod"), &mut w.effects);
    let actions = w.actions();
    assert!(
        matches!(&actions[0], Effect::Notify(Notification::ChannelDown { reason: DownReason::ProcessEnded, producer, .. }) if producer.as_str() == "prod"),
        "{actions:?}"
    );
    assert!(
        actions.contains(&Effect::Notify(Notification::ConsumerDropped {
            name: name("other"),
            producer: client("peer"),
            consumer: client("prod"),
            reason: DropReason::ProcessEnded,
        }))
    );
    assert_eq!(w.reg.live_producer_of(&name("cam0")), None);
    assert!(!w.reg.knows_client("prod"));
    assert_eq!(
        w.reg.live_producer_of(&name("other")),
        Some(&client("peer"))
    );
}

#[test]
fn a_silent_consumer_is_dropped_and_the_producer_told() {
    let mut w = World::new();
    w.register_shm(0, "prod", "cam0");
    w.send(
        0,
        "attach",
        serde_json::json!({"client": "cons", "name": "cam0"}),
    );
    w.take_effects();
    for ms in (100..=1000).step_by(100) {
        w.send(ms, "heartbeat", serde_json::json!({"client": "prod"}));
        w.tick(ms);
    }
    let actions = w.actions();
    assert_eq!(
        actions,
        vec![Effect::Notify(Notification::ConsumerDropped {
            name: name("cam0"),
            producer: client("prod"),
            consumer: client("cons"),
            reason: DropReason::HeartbeatTimeout,
        })]
    );
    let ch = w.reg.channel("cam0").unwrap();
    assert_eq!(ch.consumers, 0);
    assert_eq!(ch.state, ChannelState::Up);
    // The consumer's slot is free: it can attach again after being told to re-register.
    let r = w.send(1000, "heartbeat", serde_json::json!({"client": "cons"}));
    assert_eq!(r.error_code, ErrorCode::UnknownClient);
    assert!(
        w.send(
            1000,
            "attach",
            serde_json::json!({"client": "cons", "name": "cam0"})
        )
        .is_ok()
    );
}

#[test]
fn a_restarted_producer_takes_over_its_down_channel_and_keeps_its_consumers() {
    let mut w = World::new();
    w.register_shm(0, "prod-1", "cam0");
    w.send(
        0,
        "attach",
        serde_json::json!({"client": "cons", "name": "cam0"}),
    );
    w.send(300, "heartbeat", serde_json::json!({"client": "cons"}));
    w.tick(301);
    w.take_effects();
    // prod-1 went silent at 0 and expires at 301+; its replacement registers the same name.
    w.tick(302);
    assert_eq!(w.reg.channel("cam0").unwrap().state, ChannelState::Down);
    let r = w.register_shm(303, "prod-2", "cam0");
    assert!(r.is_ok(), "{r:?}");
    let ch = w.reg.channel("cam0").unwrap();
    assert_eq!(ch.state, ChannelState::Up);
    assert_eq!(ch.producer.as_str(), "prod-2");
    assert_eq!(ch.consumers, 1);
    let actions = w.actions();
    assert!(
        actions
            .iter()
            .any(|e| matches!(e, Effect::Notify(Notification::ChannelUp { .. })))
    );
    assert!(
        !actions
            .iter()
            .any(|e| matches!(e, Effect::RemoveSegment { .. }))
    );
}

#[test]
fn after_a_broker_restart_clients_converge_by_re_registering() {
    let mut w = World::new();
    // A fresh registry (the broker restarted) knows nobody.
    let r = w.send(0, "heartbeat", serde_json::json!({"client": "prod"}));
    assert_eq!(r.error_code, ErrorCode::UnknownClient);
    let r = w.send(0, "heartbeat", serde_json::json!({"client": "cons"}));
    assert_eq!(r.error_code, ErrorCode::UnknownClient);
    // Each does what the error code says.
    assert!(w.register_shm(1, "prod", "cam0").is_ok());
    assert!(
        w.send(
            2,
            "attach",
            serde_json::json!({"client": "cons", "name": "cam0"})
        )
        .is_ok()
    );
    assert!(
        w.send(3, "heartbeat", serde_json::json!({"client": "prod"}))
            .is_ok()
    );
    assert!(
        w.send(3, "heartbeat", serde_json::json!({"client": "cons"}))
            .is_ok()
    );
    assert_eq!(w.reg.channel("cam0").unwrap().consumers, 1);
}

#[test]
fn limits_are_reported_with_their_codes() {
    let mut w = World::new();
    for i in 0..4 {
        assert!(w.register_shm(0, "p", &format!("c{i}")).is_ok());
    }
    assert_eq!(
        w.register_shm(0, "p", "c4").error_code,
        ErrorCode::LimitReached
    );
    w.send(
        0,
        "attach",
        serde_json::json!({"client": "x1", "name": "c0"}),
    );
    w.send(
        0,
        "attach",
        serde_json::json!({"client": "x2", "name": "c0"}),
    );
    let r = w.send(
        0,
        "attach",
        serde_json::json!({"client": "x3", "name": "c0"}),
    );
    assert_eq!(r.error_code, ErrorCode::ChannelFull);
    // Attaching twice is idempotent and does not count twice.
    assert!(
        w.send(
            0,
            "attach",
            serde_json::json!({"client": "x1", "name": "c0"})
        )
        .is_ok()
    );
    assert_eq!(w.reg.channel("c0").unwrap().consumers, 2);
    let r = w.send(
        0,
        "detach",
        serde_json::json!({"client": "x3", "name": "c0"}),
    );
    assert_eq!(r.error_code, ErrorCode::NotAttached);
}

#[test]
fn a_client_id_is_bound_to_the_key_that_first_used_it() {
    let mut w = World::new();
    let r = w.send_as(
        0,
        Some("key-a"),
        "register",
        serde_json::json!({"client": "p", "channel": {"name": "x", "kind": "pubsub", "endpoint": "tcp://127.0.0.1:7000"}}),
    );
    assert!(r.is_ok());
    let r = w.send_as(
        1,
        Some("key-b"),
        "unregister",
        serde_json::json!({"client": "p", "name": "x"}),
    );
    assert_eq!(r.error_code, ErrorCode::NotOwner);
    let r = w.send_as(
        1,
        Some("key-a"),
        "unregister",
        serde_json::json!({"client": "p", "name": "x"}),
    );
    assert!(r.is_ok());
    // A network channel has no segment to remove.
    assert!(
        !w.take_effects()
            .iter()
            .any(|e| matches!(e, Effect::RemoveSegment { .. }))
    );
}

#[test]
fn heartbeat_counters_are_kept_for_the_producers_own_channels_only() {
    let mut w = World::new();
    w.register_shm(0, "p", "cam0");
    w.register_shm(0, "q", "cam1");
    w.send(
        1,
        "heartbeat",
        serde_json::json!({"client": "p", "channels": {"cam0": {"frames": 7}, "cam1": {"frames": 9}}}),
    );
    assert_eq!(w.reg.channel("cam0").unwrap().counters["frames"], 7);
    assert!(w.reg.channel("cam1").unwrap().counters.is_empty());
}

#[test]
fn list_filters_by_prefix_and_kind_in_name_order() {
    let mut w = World::new();
    w.register_shm(0, "p", "cam1");
    w.register_shm(0, "p", "cam0");
    w.send(
        0,
        "register",
        serde_json::json!({"client": "p", "channel": {"name": "camz", "kind": "reqrep", "endpoint": "ipc:///tmp/z"}}),
    );
    w.register_shm(0, "p", "other");
    let names = |r: Reply| -> Vec<String> {
        r.channels
            .unwrap()
            .into_iter()
            .map(|c| c.spec.name.to_string())
            .collect()
    };
    assert_eq!(
        names(w.send(0, "list", serde_json::json!({}))),
        ["cam0", "cam1", "camz", "other"]
    );
    assert_eq!(
        names(w.send(0, "list", serde_json::json!({"prefix": "cam"}))),
        ["cam0", "cam1", "camz"]
    );
    assert_eq!(
        names(w.send(
            0,
            "list",
            serde_json::json!({"prefix": "cam", "kind": "shm"})
        )),
        ["cam0", "cam1"]
    );
}

#[test]
fn next_expiry_follows_the_most_silent_client() {
    let mut w = World::new();
    assert_eq!(w.reg.next_expiry(), None);
    w.register_shm(0, "p", "cam0");
    w.send(
        50,
        "attach",
        serde_json::json!({"client": "c", "name": "cam0"}),
    );
    assert_eq!(w.reg.next_expiry(), Some(w.at(300)));
}

fn register_memfd(w: &mut World, ms: u64, client: &str, name: &str) -> Reply {
    w.send(
        ms,
        "register",
        serde_json::json!({"client": client, "channel": {
            "name": name, "kind": "shm", "sharing": "memfd", "size": 8192}}),
    )
}

fn grant(w: &mut World, ms: u64, client: &str, name: &str, role: &str) -> Reply {
    w.send(
        ms,
        "grant",
        serde_json::json!({"client": client, "name": name, "role": role}),
    )
}

fn record(client: &str, role: Role) -> GrantRecord {
    GrantRecord {
        role,
        client: ClientId::new(client).unwrap(),
        key: "k".repeat(40),
        pid: 1,
        uid: 2,
        gid: 3,
    }
}

#[test]
fn grants_follow_the_channel_state_and_role() {
    let mut w = World::new();
    assert_eq!(
        grant(&mut w, 0, "c", "cam", "consume").error_code,
        ErrorCode::NotFound
    );
    // A producer may ask before its channel exists.
    assert!(grant(&mut w, 0, "p", "cam", "produce").is_ok());
    assert!(register_memfd(&mut w, 1, "p", "cam").is_ok());
    assert!(grant(&mut w, 2, "c", "cam", "consume").is_ok());
    assert!(
        grant(&mut w, 2, "p", "cam", "produce").is_ok(),
        "its own again"
    );
    assert_eq!(
        grant(&mut w, 2, "q", "cam", "produce").error_code,
        ErrorCode::AlreadyExists
    );
    // A channel shared by name is not the broker's to grant.
    assert!(w.register_shm(3, "p", "named").is_ok());
    assert_eq!(
        grant(&mut w, 3, "c", "named", "consume").error_code,
        ErrorCode::InvalidField
    );
    // Down: no consumer grant; another producer may take it over.
    assert!(
        w.send(
            4,
            "unregister",
            serde_json::json!({"client": "p", "name": "cam"})
        )
        .is_ok()
    );
    let _ = w.send(
        4,
        "attach",
        serde_json::json!({"client": "c", "name": "named"}),
    );
    assert!(!w.reg.memfd_channel_up(&ChannelName::new("cam").unwrap()));
}

#[test]
fn grant_records_go_with_their_client_and_a_removed_memfd_channel_releases_its_segment() {
    let mut w = World::new();
    let cam = ChannelName::new("cam").unwrap();
    assert!(register_memfd(&mut w, 0, "p", "cam").is_ok());
    w.reg.record_grant(&cam, record("p", Role::Produce));
    assert!(
        w.send(
            1,
            "attach",
            serde_json::json!({"client": "c", "name": "cam"})
        )
        .is_ok()
    );
    w.reg.record_grant(&cam, record("c", Role::Consume));
    w.reg.record_grant(&cam, record("c", Role::Consume));
    let roles = |w: &World| {
        w.reg
            .channel("cam")
            .map(|c| {
                c.grants
                    .iter()
                    .map(|g| (g.client.to_string(), g.role))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        roles(&w),
        [("p".into(), Role::Produce), ("c".into(), Role::Consume)],
        "one record per client and role"
    );
    assert!(
        w.send(
            2,
            "detach",
            serde_json::json!({"client": "c", "name": "cam"})
        )
        .is_ok()
    );
    assert_eq!(roles(&w), [("p".into(), Role::Produce)]);
    // A new producer's registration replaces the previous one's record.
    assert!(
        w.send(
            3,
            "attach",
            serde_json::json!({"client": "c", "name": "cam"})
        )
        .is_ok()
    );
    assert!(
        w.send(
            3,
            "unregister",
            serde_json::json!({"client": "p", "name": "cam"})
        )
        .is_ok()
    );
    assert!(register_memfd(&mut w, 4, "p2", "cam").is_ok());
    assert!(roles(&w).is_empty(), "{:?}", roles(&w));
    // Removed (down, no consumer left): the segment is released, not unlinked.
    w.effects.clear();
    assert!(
        w.send(
            5,
            "unregister",
            serde_json::json!({"client": "p2", "name": "cam"})
        )
        .is_ok()
    );
    assert!(
        w.send(
            5,
            "detach",
            serde_json::json!({"client": "c", "name": "cam"})
        )
        .is_ok()
    );
    assert!(w.effects.contains(&Effect::ReleaseSegment { channel: cam }));
    assert!(
        !w.effects
            .iter()
            .any(|e| matches!(e, Effect::RemoveSegment { .. })),
        "{:?}",
        w.effects
    );
}
