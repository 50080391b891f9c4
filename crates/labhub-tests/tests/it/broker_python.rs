//! A Python client written from docs/PROTOCOL.md alone (`tests/python/client.py`, pyzmq from
//! PyPI) registers and discovers a channel on a real broker. pyzmq comes from the tests' one
//! venv under the target folder (`labhub_tests::python_env`), so the README's test command
//! needs no manual step.

use super::*;

use std::process::Command;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/client.py")
}

#[test]
fn a_pyzmq_client_following_the_protocol_document_registers_and_discovers() {
    let Some(python) = labhub_tests::python_env() else {
        eprintln!("SKIPPED: python3 is not installed, so the pyzmq protocol test cannot run");
        return;
    };
    let mut keygen = Command::new(&python);
    keygen.arg(script()).arg("keygen");
    let keygen = keygen.output().expect("run client.py keygen");
    assert!(
        keygen.status.success(),
        "client.py keygen failed:\n{}",
        String::from_utf8_lossy(&keygen.stderr)
    );
    let keys = String::from_utf8(keygen.stdout).unwrap();
    let (public, secret) = keys.trim().split_once(' ').expect("two keys");

    // The Python program's key is on the broker's allow list, like a lab member's laptop.
    let home = TestHome::new("py");
    std::fs::create_dir_all(&home.path).unwrap();
    let list = home.path.join("python_clients");
    std::fs::write(&list, format!("{public} python client\n")).unwrap();
    let allow = format!("allow-list={}", list.display());
    let broker = TestBroker::start_on(&home, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*", &[&allow]);

    let mut cmd = Command::new(&python);
    cmd.arg(script()).args([
        "run",
        &broker.endpoint,
        &broker.notify_endpoint,
        &broker.key.to_z85(),
        public,
        secret,
        &home.channel("py"),
    ]);
    let mut run = ChildProc::from_command("python client", cmd);
    for step in [
        "ok unknown_client",
        "ok register",
        "ok heartbeat terms",
        "ok channel_up notification",
        "ok heartbeat",
        "ok discover over DEALER",
        "ok discover over REQ",
        "ok not_found",
        "ok undialable endpoint refused",
        "ok list",
        "ok unregister",
        "ok gone after unregister",
        "done",
    ] {
        run.skip_to(step);
    }
    assert!(run.wait().success(), "{}", run.stderr());
}

#[test]
fn a_pyzmq_client_following_the_documents_gets_a_memfd_channel_read_only() {
    let Some(python) = labhub_tests::python_env() else {
        eprintln!("SKIPPED: python3 is not installed, so the pyzmq protocol test cannot run");
        return;
    };
    let mut keygen = Command::new(&python);
    keygen.arg(script()).arg("keygen");
    let keys = String::from_utf8(keygen.output().expect("run client.py keygen").stdout).unwrap();
    let (public, secret) = keys.trim().split_once(' ').expect("two keys");

    // Admitted, and allowed to consume the channel by the access list.
    let home = TestHome::new("pymemfd");
    std::fs::create_dir_all(&home.path).unwrap();
    std::fs::write(
        home.path.join("allowed_clients"),
        format!("{public} python\n"),
    )
    .unwrap();
    let channel = home.channel("cam");
    std::fs::write(
        home.path.join("broker.toml"),
        format!("reap_stale_segments = false\n[[access]]\nchannels = [\"{channel}\"]\nconsume = [\"{public}\"]\n"),
    )
    .unwrap();
    let broker = TestBroker::start_on(
        &home,
        "tcp://127.0.0.1:*",
        "tcp://127.0.0.1:*",
        &["read-config"],
    );
    let hub = labhub::client::Hub::connect(labhub::client::ClientConfig::new(
        &broker.endpoint,
        broker.key,
        home.local_key(),
    ))
    .unwrap();
    let mut producer = hub
        .channel(&channel)
        .policy(labhub::shm::Policy::ring(4))
        .bytes(64)
        .create()
        .unwrap();
    for _ in 0..3 {
        producer.publish(b"frame", &[5]).unwrap();
    }

    let mut cmd = Command::new(&python);
    cmd.arg(script()).args([
        "consume",
        &broker.endpoint,
        &broker.key.to_z85(),
        public,
        secret,
        &channel,
    ]);
    let mut run = ChildProc::from_command("python consumer", cmd);
    for step in [
        "ok grant",
        "ok two descriptors",
        "ok data header",
        "ok control header",
        "ok one incarnation",
        "ok total_size",
        "ok frames committed",
        "ok newest descriptor",
        "ok no writable mapping",
        "ok no write",
        "done",
    ] {
        run.skip_to(step);
    }
    assert!(run.wait().success(), "{}", run.stderr());
}
