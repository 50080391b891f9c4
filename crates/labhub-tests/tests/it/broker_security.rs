//! CURVE and ZAP: who gets answers and who gets nothing.

use super::*;

use std::os::unix::fs::PermissionsExt;

use labhub::broker::probe::ProbeError;

/// Long enough for a CURVE handshake on a loaded machine, short enough to keep tests quick.
/// A refused client never gets a reply, so this bounds how long the test waits for nothing.
const SILENCE: Duration = Duration::from_millis(1500);

#[test]
fn clients_without_an_admitted_key_or_with_the_wrong_server_key_get_nothing() {
    let home = TestHome::new("keys");
    let broker = TestBroker::start(&home);

    let stranger = KeyPair::generate();
    let mut p = Probe::connect(&broker.endpoint, &broker.key, &stranger, SILENCE).unwrap();
    assert!(matches!(
        p.request("list", json!({})),
        Err(ProbeError::Timeout(_))
    ));

    let wrong_server = KeyPair::generate().public;
    let mut p =
        Probe::connect(&broker.endpoint, &wrong_server, &home.local_key(), SILENCE).unwrap();
    assert!(matches!(
        p.request("list", json!({})),
        Err(ProbeError::Timeout(_))
    ));

    // No CURVE at all.
    let ctx = labhub_zmq::Context::new().unwrap();
    let plain = ctx.socket(labhub_zmq::SocketType::Dealer).unwrap();
    plain.connect(&broker.endpoint).unwrap();
    plain
        .send_multipart(
            [&b"labhub"[..], b"1", b"list", br#"{"request_id": 1}"#],
            labhub_zmq::Flags::NONE,
        )
        .unwrap();
    let mut items = [plain.poll_item(labhub_zmq::PollEvents::IN)];
    labhub_zmq::poll(&mut items, Some(SILENCE)).unwrap();
    assert!(!items[0].is_readable(), "a plain client got a reply");

    // The admitted local client is served meanwhile, and the refusal is audited.
    let mut probe = broker.probe(&home);
    assert!(probe.request("list", json!({})).unwrap().is_ok());
    wait_until("the ZAP refusal reaches the audit log", || {
        home.audit()
            .iter()
            .any(|l| l["event"] == "auth_refused" && l["key"] == stranger.public.to_z85().as_str())
    });
}

#[test]
fn a_key_on_the_allow_list_is_admitted() {
    let home = TestHome::new("allow");
    std::fs::create_dir_all(&home.path).unwrap();
    let friend = KeyPair::generate();
    let list = home.path.join("friends");
    std::fs::write(
        &list,
        format!("# lab members\n{}  alice's laptop\n", friend.public),
    )
    .unwrap();
    let allow = format!("allow-list={}", list.display());
    let broker = TestBroker::start_on(&home, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*", &[&allow]);
    let mut p = Probe::connect(&broker.endpoint, &broker.key, &friend, WATCHDOG).unwrap();
    assert!(p.request("list", json!({})).unwrap().is_ok());
}

#[test]
fn an_allow_list_writable_by_others_stops_the_broker_with_an_error_naming_it() {
    let home = TestHome::new("badallow");
    std::fs::create_dir_all(&home.path).unwrap();
    let list = home.path.join("friends");
    std::fs::write(&list, "").unwrap();
    std::fs::set_permissions(&list, std::fs::Permissions::from_mode(0o666)).unwrap();
    let allow = format!("allow-list={}", list.display());
    let stderr = refused_start(&home, &[&allow], list.to_str().unwrap());
    assert!(stderr.contains("writable by group or others"), "{stderr}");
}

#[test]
fn a_broker_secret_key_readable_by_others_is_refused() {
    let home = TestHome::new("badsecret");
    let mut broker = TestBroker::start(&home);
    broker.proc.kill();
    let secret = home.path.join("keys").join("broker.secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    refused_start(&home, &[], secret.to_str().unwrap());
}

/// Runs `broker-run` for `home` expecting it to refuse to start with an error containing
/// `expect`; returns its stderr.
fn refused_start(home: &TestHome, extra: &[&str], expect: &str) -> String {
    let mut args = vec![
        home.path.to_str().unwrap(),
        "tcp://127.0.0.1:*",
        "tcp://127.0.0.1:*",
        "100",
        "3",
    ];
    args.extend_from_slice(extra);
    let mut proc = spawn_child("broker-run", &args);
    let status = proc.wait();
    assert!(!status.success(), "the broker started");
    // The stderr reader may lag the exit by a moment.
    wait_until("the refusal reaches stderr", || {
        proc.stderr().contains(expect)
    });
    proc.stderr()
}

fn chown(path: &std::path::Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), None).expect("chown (the tests run as root)");
}

#[test]
fn an_allow_list_owned_by_another_user_is_refused_naming_path_owner_and_mode() {
    let home = TestHome::new("foreignallow");
    std::fs::create_dir_all(&home.path).unwrap();
    let list = home.path.join("friends");
    std::fs::write(&list, format!("{}\n", KeyPair::generate().public)).unwrap();
    std::fs::set_permissions(&list, std::fs::Permissions::from_mode(0o644)).unwrap();
    chown(&list, 65534);
    let allow = format!("allow-list={}", list.display());
    let stderr = refused_start(&home, &[&allow], "must");
    assert!(stderr.contains(list.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("uid 65534"), "{stderr}");
    assert!(stderr.contains("mode 0644"), "{stderr}");
}

#[test]
fn a_group_writable_home_is_refused_before_anything_in_it_is_believed() {
    let home = TestHome::new("openhome");
    // What an attacker with write access to the home would plant.
    std::fs::write(home.path.join("broker.toml"), "allow_any_client = true\n").unwrap();
    std::fs::set_permissions(
        home.path.join("broker.toml"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::set_permissions(&home.path, std::fs::Permissions::from_mode(0o775)).unwrap();
    let stderr = refused_start(&home, &["read-config"], "must");
    assert!(stderr.contains(home.path.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("mode 0775"), "{stderr}");
}

#[test]
fn a_broker_toml_owned_by_another_user_is_refused() {
    let home = TestHome::new("foreigntoml");
    let toml = home.path.join("broker.toml");
    std::fs::write(&toml, "allow_any_client = true\n").unwrap();
    std::fs::set_permissions(&toml, std::fs::Permissions::from_mode(0o644)).unwrap();
    chown(&toml, 65534);
    let stderr = refused_start(&home, &["read-config"], "must");
    assert!(stderr.contains(toml.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("uid 65534"), "{stderr}");
}

#[test]
fn an_audit_log_open_to_others_is_made_private_and_one_of_another_user_is_refused() {
    let home = TestHome::new("audit0666");
    let audit = home.path.join("audit.jsonl");
    std::fs::write(&audit, "").unwrap();
    std::fs::set_permissions(&audit, std::fs::Permissions::from_mode(0o666)).unwrap();
    let broker = TestBroker::start(&home);
    let mode = std::fs::metadata(&audit).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    wait_until("the fix is reported", || {
        broker
            .proc
            .stderr()
            .contains("the audit log was open to group or others")
    });
    drop(broker);

    chown(&audit, 65534);
    let stderr = refused_start(&home, &[], audit.to_str().unwrap());
    assert!(stderr.contains("uid 65534"), "{stderr}");
}
