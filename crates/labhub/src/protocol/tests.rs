use super::*;

use proptest::prelude::*;

fn frames(kind: &str, body: &str) -> Vec<Vec<u8>> {
    envelope(kind, body.as_bytes().to_vec())
}

fn decode(kind: &str, body: &str) -> Decoded {
    decode_request(&frames(kind, body))
}

fn code_of(d: Decoded) -> (Option<u64>, ErrorCode) {
    let r = d.outcome.expect_err("should be refused");
    (r.request_id, r.error.code())
}

const SHM_REGISTER: &str = r#"{"request_id": 1, "client": "host:42", "channel": {
    "name": "cam0", "kind": "shm", "shm_name": "/labhub.1000.cam0", "size": 4096,
    "policy": "ring:8:block", "schema": {"name": "cam.Frame", "version": 2, "hash": "ab01",
    "element": "u8", "shape": [64, 64]},
    "metadata": {"exposure_us": 300, "tags": ["a", "b"]}}, "pid": 42, "host": "lab-pc"}"#;

#[test]
fn a_full_shm_registration_decodes_into_typed_values() {
    let d = decode("register", SHM_REGISTER);
    let Request::Register(r) = d.outcome.unwrap() else {
        panic!()
    };
    assert_eq!(r.request_id, 1);
    assert_eq!(r.client.as_str(), "host:42");
    assert_eq!(r.channel.kind, ChannelKind::Shm);
    assert_eq!(r.channel.size, Some(4096));
    assert_eq!(r.channel.shm_name.unwrap().uid(), 1000);
    assert_eq!(r.channel.metadata["exposure_us"], 300);
    let schema = r.channel.schema.unwrap();
    assert_eq!(schema.element.as_deref(), Some("u8"));
    assert_eq!(schema.shape, Some(vec![64, 64]));
}

#[test]
fn a_req_delimiter_is_recognised_and_reported() {
    let mut f = vec![Vec::new()];
    f.extend(frames("list", r#"{"request_id": 3}"#));
    let d = decode_request(&f);
    assert!(d.delimiter);
    assert!(matches!(d.outcome, Ok(Request::List(_))));
}

#[test]
fn every_request_round_trips_through_the_encoder() {
    let d = decode("register", SHM_REGISTER);
    let req = d.outcome.unwrap();
    let again = decode_request(&encode_request(&req)).outcome.unwrap();
    assert_eq!(req, again);
    for (kind, body) in [
        ("discover", r#"{"request_id": 2, "name": "x"}"#),
        (
            "unregister",
            r#"{"request_id": 2, "client": "c", "name": "x"}"#,
        ),
        ("attach", r#"{"request_id": 2, "client": "c", "name": "x"}"#),
        ("detach", r#"{"request_id": 2, "client": "c", "name": "x"}"#),
        (
            "heartbeat",
            r#"{"request_id": 2, "client": "c", "channels": {"x": {"frames": 9}}}"#,
        ),
        (
            "list",
            r#"{"request_id": 2, "prefix": "ca", "kind": "pubsub"}"#,
        ),
    ] {
        let req = decode(kind, body).outcome.unwrap();
        assert_eq!(req.type_name(), kind);
        assert_eq!(decode_request(&encode_request(&req)).outcome.unwrap(), req);
    }
}

#[test]
fn envelope_errors_carry_their_codes() {
    assert_eq!(
        code_of(decode_request(&[b"labhub".to_vec()])).1,
        ErrorCode::BadFrames
    );
    let mut f = frames("list", r#"{"request_id": 1}"#);
    f[0] = b"LABHUB".to_vec();
    assert_eq!(code_of(decode_request(&f)).1, ErrorCode::BadTag);
    f[0] = TAG.to_vec();
    f[1] = b"2".to_vec();
    assert_eq!(code_of(decode_request(&f)).1, ErrorCode::UnsupportedVersion);
    assert_eq!(
        code_of(decode("explode", r#"{"request_id": 1}"#)).1,
        ErrorCode::UnknownType
    );
    assert_eq!(
        code_of(decode("list", "{not json")).1,
        ErrorCode::MalformedBody
    );
    assert_eq!(code_of(decode("list", "[1]")).1, ErrorCode::MalformedBody);
    let big = format!(r#"{{"request_id": 1, "prefix": "{}"}}"#, "a".repeat(70_000));
    assert_eq!(code_of(decode("list", &big)).1, ErrorCode::TooLarge);
}

#[test]
fn field_errors_keep_the_request_id_for_the_reply() {
    for body in [
        r#"{"request_id": 9}"#,
        r#"{"request_id": 9, "name": "a b"}"#,
        r#"{"request_id": 9, "name": "x", "extra": 1}"#,
        r#"{"request_id": 9, "name": 5}"#,
    ] {
        assert_eq!(
            code_of(decode("discover", body)),
            (Some(9), ErrorCode::InvalidField),
            "{body}"
        );
    }
    assert_eq!(
        code_of(decode("discover", r#"{"request_id": -1, "name": "x"}"#)),
        (None, ErrorCode::InvalidField)
    );
}

#[test]
fn registrations_must_fit_their_kind() {
    let bad = [
        // shm without a segment name, or with one of another channel
        r#"{"name": "c", "kind": "shm", "size": 1}"#,
        r#"{"name": "c", "kind": "shm", "shm_name": "/labhub.1.d", "size": 1}"#,
        r#"{"name": "c", "kind": "shm", "shm_name": "/labhub.1.c"}"#,
        r#"{"name": "c", "kind": "shm", "shm_name": "/labhub.1.c", "size": 0}"#,
        r#"{"name": "c", "kind": "shm", "shm_name": "/labhub.1.c", "size": 2199023255553}"#,
        r#"{"name": "c", "kind": "shm", "shm_name": "/labhub.1.c", "size": 1, "endpoint": "tcp://a:1"}"#,
        // network kinds need a dialable endpoint
        r#"{"name": "c", "kind": "pubsub"}"#,
        r#"{"name": "c", "kind": "pubsub", "endpoint": "tcp://0.0.0.0:5"}"#,
        r#"{"name": "c", "kind": "reqrep", "endpoint": "tcp://*:5"}"#,
        r#"{"name": "c", "kind": "reqrep", "endpoint": "tcp://h:5", "shm_name": "/labhub.1.c"}"#,
        r#"{"name": "c", "kind": "pipe", "endpoint": "tcp://h:5"}"#,
        r#"{"name": "c", "kind": "pubsub", "endpoint": "tcp://h:5", "policy": "has space"}"#,
        r#"{"name": "c", "kind": "pubsub", "endpoint": "tcp://h:5", "schema": {"hash": "xyz"}}"#,
        r#"{"name": "c", "kind": "pubsub", "endpoint": "tcp://h:5", "schema": {"nme": "x"}}"#,
        r#"{"name": "c", "kind": "pubsub", "endpoint": "tcp://h:5", "policy": "ring:8"}"#,
        r#"{"name": "c", "kind": "pubsub", "endpoint": "tcp://h:5", "policy": "ring:0:fail"}"#,
        r#"{"name": "c", "kind": "shm", "shm_name": "/labhub.1.c", "size": 1, "schema": {"element": "float"}}"#,
        r#"{"name": "c", "kind": "shm", "shm_name": "/labhub.1.c", "size": 1, "schema": {"shape": []}}"#,
        r#"{"name": "c", "kind": "shm", "shm_name": "/labhub.1.c", "size": 1, "schema": {"shape": [1, 2, 3, 4, 5]}}"#,
        r#"{"name": "c", "kind": "shm", "shm_name": "/labhub.1.c", "size": 1, "schema": {"shape": [0]}}"#,
        r#"{"name": "c", "kind": "pubsub", "endpoint": "tcp://h:5", "metadata": {"a": [[[[[[[[[1]]]]]]]]]}}"#,
    ];
    for spec in bad {
        let body = format!(r#"{{"request_id": 4, "client": "c", "channel": {spec}}}"#);
        assert_eq!(
            code_of(decode("register", &body)),
            (Some(4), ErrorCode::InvalidField),
            "{spec}"
        );
    }
    let big_meta = format!(
        r#"{{"request_id": 4, "client": "c", "channel": {{"name": "c", "kind": "pubsub", "endpoint": "tcp://h:5", "metadata": {{"a": "{}"}}}}}}"#,
        "x".repeat(5000)
    );
    assert_eq!(
        code_of(decode("register", &big_meta)).1,
        ErrorCode::InvalidField
    );
}

#[test]
fn heartbeat_counters_are_bounded() {
    let many: Vec<String> = (0..40).map(|i| format!(r#""c{i}": 1"#)).collect();
    let body = format!(
        r#"{{"request_id": 1, "client": "c", "channels": {{"x": {{{}}}}}}}"#,
        many.join(",")
    );
    assert_eq!(
        code_of(decode("heartbeat", &body)).1,
        ErrorCode::InvalidField
    );
    let body = r#"{"request_id": 1, "client": "c", "channels": {"x": {"bad name": 1}}}"#;
    assert_eq!(
        code_of(decode("heartbeat", body)).1,
        ErrorCode::InvalidField
    );
}

#[test]
fn replies_and_notifications_round_trip() {
    let mut reply = Reply::ok(5);
    reply.heartbeat_interval_ms = Some(500);
    for delimiter in [false, true] {
        let f = encode_reply(&reply, delimiter);
        assert_eq!(f[0].is_empty(), delimiter);
        assert_eq!(decode_reply(&f).unwrap(), reply);
    }
    let err = Reply::error(
        None,
        ErrorCode::BadTag,
        "first frame is not the protocol tag",
    );
    assert_eq!(decode_reply(&encode_reply(&err, false)).unwrap(), err);
    let json: serde_json::Value = serde_json::from_slice(&encode_reply(&err, false)[3]).unwrap();
    assert_eq!(json["status"], "error");
    assert_eq!(json["error_code"], "bad_tag");
    assert_eq!(json["request_id"], serde_json::Value::Null);

    let Request::Register(r) = decode("register", SHM_REGISTER).outcome.unwrap() else {
        panic!()
    };
    let info = ChannelInfo {
        spec: r.channel,
        producer: r.client.clone(),
        producer_pid: Some(42),
        producer_host: None,
        state: ChannelState::Up,
        consumers: 1,
        counters: Counters::from([("frames".into(), 3)]),
        grants: vec![GrantRecord {
            role: Role::Consume,
            client: ClientId::new("viewer").unwrap(),
            key: "k".repeat(40),
            pid: 7,
            uid: 1000,
            gid: 1000,
        }],
    };
    let notes = [
        Notification::ChannelUp {
            channel: Box::new(info),
        },
        Notification::ChannelDown {
            name: ChannelName::new("cam0").unwrap(),
            producer: r.client.clone(),
            reason: DownReason::HeartbeatTimeout,
        },
        Notification::ConsumerDropped {
            name: ChannelName::new("cam0").unwrap(),
            producer: r.client.clone(),
            consumer: ClientId::new("other").unwrap(),
            reason: DropReason::HeartbeatTimeout,
        },
    ];
    for (seq, n) in notes.into_iter().enumerate() {
        let f = encode_notification(seq as u64, &n);
        assert_eq!(f[2], n.type_name().as_bytes());
        assert_eq!(decode_notification(&f).unwrap(), (seq as u64, n));
    }
}

fn arb_frame() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(TAG.to_vec()),
        Just(VERSION_FRAME.to_vec()),
        Just(Vec::new()),
        proptest::sample::select(REQUEST_TYPES.to_vec()).prop_map(|t| t.as_bytes().to_vec()),
        proptest::collection::vec(any::<u8>(), 0..64),
        ".{0,80}".prop_map(String::into_bytes),
    ]
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        "[a-z0-9:/._*-]{0,24}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(
                proptest::sample::select(vec![
                    "request_id",
                    "client",
                    "name",
                    "channel",
                    "kind",
                    "endpoint",
                    "shm_name",
                    "size",
                    "policy",
                    "schema",
                    "metadata",
                    "channels",
                    "prefix",
                    "hash",
                    "x",
                ])
                .prop_map(String::from),
                inner,
                0..8
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Arbitrary frames never panic the decoder, and a refusal always has an error code.
    #[test]
    fn the_decoder_survives_arbitrary_frames(f in proptest::collection::vec(arb_frame(), 0..7)) {
        let d = decode_request(&f);
        if let Err(r) = d.outcome {
            prop_assert_ne!(r.error.code(), ErrorCode::None);
        }
    }

    /// Well-enveloped arbitrary JSON bodies never panic the decoder; anything accepted
    /// re-encodes to the same request.
    #[test]
    fn the_decoder_survives_arbitrary_bodies(
        kind in proptest::sample::select(REQUEST_TYPES.to_vec()),
        body in arb_json(),
    ) {
        let f = envelope(kind, serde_json::to_vec(&body).unwrap());
        if let Ok(req) = decode_request(&f).outcome {
            let again = decode_request(&encode_request(&req)).outcome;
            prop_assert_eq!(again.ok(), Some(req));
        }
    }
}

/// One body per request type with every field the type has, so that every field can be
/// broken in turn. `every_field_of_every_request_is_covered` proves none is missing.
fn full_requests() -> Vec<(&'static str, serde_json::Value)> {
    use serde_json::json;
    let register: serde_json::Value = serde_json::from_str(SHM_REGISTER).unwrap();
    vec![
        ("register", register),
        (
            "register",
            json!({"request_id": 1, "client": "c", "channel": {"name": "t", "kind": "pubsub",
                   "endpoint": "tcp://127.0.0.1:5", "size": 10,
                   "server_key": "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"}}),
        ),
        (
            "discover",
            json!({"request_id": 1, "name": "cam0", "client": "c"}),
        ),
        (
            "unregister",
            json!({"request_id": 1, "client": "c", "name": "cam0"}),
        ),
        (
            "attach",
            json!({"request_id": 1, "client": "c", "name": "cam0"}),
        ),
        (
            "detach",
            json!({"request_id": 1, "client": "c", "name": "cam0"}),
        ),
        (
            "heartbeat",
            json!({"request_id": 1, "client": "c", "channels": {"cam0": {"frames": 3}},
                   "client_version": "labhub-rs/0.1.0", "pid": 42,
                   "latency": {"cam0": {"sum_ns": 5000, "buckets": [[3, 2]]}}}),
        ),
        (
            "list",
            json!({"request_id": 1, "prefix": "ca", "kind": "shm"}),
        ),
        ("status", json!({"request_id": 1})),
        (
            "grant",
            json!({"request_id": 1, "client": "c", "name": "cam0", "role": "consume"}),
        ),
        (
            "register",
            json!({"request_id": 1, "client": "c", "channel": {"name": "cam0", "kind": "shm",
                   "sharing": "memfd", "size": 8192}}),
        ),
    ]
}

/// Paths of the objects in a request whose fields are fixed (deny unknown fields).
const FIXED_OBJECTS: [&str; 4] = ["", "channel", "channel.schema", "latency.cam0"];

fn at<'a>(v: &'a mut serde_json::Value, path: &str) -> &'a mut serde_json::Value {
    path.split('.')
        .filter(|p| !p.is_empty())
        .fold(v, |v, key| &mut v[key])
}

/// The leaf paths of `v` (`channel.schema.hash`), not descending into free-form metadata.
fn leaves(v: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) if prefix != "channel.metadata" => {
            for (k, child) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(child, &path, out);
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}

fn refusal(kind: &str, body: &serde_json::Value) -> Rejected {
    decode(kind, &body.to_string())
        .outcome
        .expect_err("should be refused")
}

#[test]
fn every_field_of_every_request_is_covered() {
    // An unknown field makes serde list the fields the type has: each must be in an example.
    let examples = full_requests();
    for kind in REQUEST_TYPES {
        let of_kind: Vec<&serde_json::Value> = examples
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, b)| b)
            .collect();
        assert!(!of_kind.is_empty(), "no example of {kind}");
        for body in &of_kind {
            assert!(decode(kind, &body.to_string()).outcome.is_ok(), "{kind}");
        }
        for object in FIXED_OBJECTS {
            let mut b = of_kind[0].clone();
            let Some(map) = at(&mut b, object).as_object_mut() else {
                continue;
            };
            map.insert("zz_unknown".into(), 1.into());
            let text = refusal(kind, &b).error.to_string();
            let expected = text
                .split("expected one of ")
                .nth(1)
                .or_else(|| text.split("expected ").nth(1))
                .unwrap_or_else(|| panic!("{kind} {object}: {text}"));
            // serde lists "`a`, `b`, `c`", or "`a` or `b`" for two.
            let names = expected.split(", ").flat_map(|n| n.split(" or "));
            for name in names.map(|n| n.trim_matches('`')) {
                assert!(
                    of_kind.iter().any(|body| {
                        let mut b = (*body).clone();
                        at(&mut b, object).get(name).is_some()
                    }),
                    "{kind}: no example has field {object}.{name}"
                );
            }
        }
    }
}

#[test]
fn every_decoding_error_names_its_field() {
    let broken: [(&str, serde_json::Value); 4] = [
        ("a wrong type", serde_json::json!({"wrong": ["type"]})),
        ("a string for a number", serde_json::json!("7")),
        ("a negative number", serde_json::json!(-1)),
        ("an unknown word", serde_json::json!("\u{1}no such value")),
    ];
    for (kind, body) in full_requests() {
        let mut paths = Vec::new();
        leaves(&body, "", &mut paths);
        for path in paths {
            for (what, value) in &broken {
                let mut b = body.clone();
                let original = std::mem::replace(at(&mut b, &path), value.clone());
                // Each break applies where it is one: a string or a negative number for a
                // number, an odd word for a string, an object for anything but metadata
                // (which is any JSON object).
                let applies = match *what {
                    "a wrong type" => path != "channel.metadata",
                    "a string for a number" | "a negative number" => original.is_number(),
                    _ => original.is_string(),
                };
                if !applies {
                    continue;
                }
                let outcome = decode(kind, &b.to_string()).outcome;
                let Err(r) = outcome else {
                    panic!("{kind}: {path} = {value} ({what}) was accepted");
                };
                assert_eq!(
                    r.error.code(),
                    ErrorCode::InvalidField,
                    "{kind} {path} {what}"
                );
                let field = r.error.field().unwrap_or_default().to_owned();
                match &r.error {
                    // A value of the wrong type or range: the error names that field.
                    DecodeError::InvalidBody { .. } => assert_eq!(
                        field, path,
                        "{kind}: breaking {path} with {what}: {}",
                        r.error
                    ),
                    // A well-typed value that breaks a rule (perhaps one spanning fields,
                    // like shm_name following name): the error names a field it checked.
                    _ => assert!(!field.is_empty(), "{kind} {path}: {}", r.error),
                }
                assert!(r.error.to_string().contains(&field), "{}", r.error);
                if path != "request_id" {
                    assert_eq!(r.request_id, Some(1), "{kind} {path}");
                }
            }
        }
    }
}

#[test]
fn a_missing_field_is_named() {
    let r = refusal("discover", &serde_json::json!({"request_id": 4}));
    assert_eq!(r.error.field(), Some("name"));
    let r = refusal(
        "register",
        &serde_json::json!({"request_id": 4, "client": "c", "channel": {"kind": "shm"}}),
    );
    assert_eq!(r.error.field(), Some("channel.name"), "{}", r.error);
}

#[test]
fn framing_errors_echo_a_readable_request_id() {
    let body = br#"{"request_id": 42}"#.to_vec();
    let cases: Vec<(Vec<Vec<u8>>, ErrorCode)> = vec![
        (
            vec![
                TAG.to_vec(),
                VERSION_FRAME.to_vec(),
                b"explode".to_vec(),
                body.clone(),
            ],
            ErrorCode::UnknownType,
        ),
        (
            vec![
                b"LABHUB".to_vec(),
                VERSION_FRAME.to_vec(),
                b"list".to_vec(),
                body.clone(),
            ],
            ErrorCode::BadTag,
        ),
        (
            vec![TAG.to_vec(), b"9".to_vec(), b"list".to_vec(), body.clone()],
            ErrorCode::UnsupportedVersion,
        ),
        (
            vec![
                TAG.to_vec(),
                VERSION_FRAME.to_vec(),
                b"list".to_vec(),
                body.clone(),
                b"x".to_vec(),
            ],
            ErrorCode::BadFrames,
        ),
        (
            vec![
                TAG.to_vec(),
                VERSION_FRAME.to_vec(),
                b"list".to_vec(),
                body.clone(),
                vec![b'x'; 70_000],
            ],
            ErrorCode::TooLarge,
        ),
    ];
    for (frames, code) in cases {
        for delimiter in [false, true] {
            let mut f = frames.clone();
            if delimiter {
                f.insert(0, Vec::new());
            }
            assert_eq!(
                code_of(decode_request(&f)),
                (Some(42), code),
                "{code} {delimiter}"
            );
        }
    }
    // No body frame, or none that parses: null.
    assert_eq!(code_of(decode_request(&[b"labhub".to_vec()])).0, None);
}

#[test]
fn sharing_decides_whether_a_shm_channel_has_a_name() {
    let register = |channel: serde_json::Value| {
        let body = serde_json::json!({"request_id": 1, "client": "c", "channel": channel});
        decode("register", &body.to_string()).outcome.map(|_| ())
    };
    let memfd =
        serde_json::json!({"name": "cam0", "kind": "shm", "sharing": "memfd", "size": 4096});
    assert!(register(memfd.clone()).is_ok());
    let mut named_memfd = memfd;
    named_memfd["shm_name"] = "/labhub.1000.cam0".into();
    let e = register(named_memfd).unwrap_err();
    assert_eq!(e.error.field(), Some("channel.shm_name"), "{}", e.error);
    let e = register(
        serde_json::json!({"name": "cam0", "kind": "shm", "sharing": "named", "size": 4096}),
    )
    .unwrap_err();
    assert_eq!(e.error.field(), Some("channel.shm_name"), "{}", e.error);
    let e = register(serde_json::json!({"name": "t", "kind": "pubsub",
        "endpoint": "tcp://127.0.0.1:5", "sharing": "memfd"}))
    .unwrap_err();
    assert_eq!(e.error.field(), Some("channel.sharing"), "{}", e.error);
    let e = decode(
        "grant",
        r#"{"request_id": 1, "client": "c", "name": "cam0", "role": "steal"}"#,
    )
    .outcome
    .unwrap_err();
    assert_eq!(e.error.field(), Some("role"), "{}", e.error);
}

#[test]
fn grant_socket_messages_are_tagged_and_closed() {
    let m: GrantMessage = serde_json::from_str(
        r#"{"type": "redeem", "ticket": "ab", "name": "cam0", "role": "consume"}"#,
    )
    .unwrap();
    assert!(matches!(
        m,
        GrantMessage::Redeem {
            role: Role::Consume,
            ..
        }
    ));
    for bad in [
        r#"{"type": "redeem", "ticket": "ab", "name": "cam0", "role": "consume", "extra": 1}"#,
        r#"{"type": "steal", "name": "cam0"}"#,
        r#"{"type": "provide", "name": "../x"}"#,
    ] {
        assert!(serde_json::from_str::<GrantMessage>(bad).is_err(), "{bad}");
    }
}
