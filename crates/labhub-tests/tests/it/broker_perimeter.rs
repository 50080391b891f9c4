//! The broker's perimeter under attack, with a real broker process: idle keyless connections,
//! floods of refused handshakes on a full disk, a huge multipart message from an admitted
//! client, and subscribers that never read. Each attack stopped the broker or made it grow
//! without bound before the perimeter existed.

use super::*;

use std::path::Path;
use std::process::Command;

use labhub::keys;
use labhub::protocol::BrokerStatus;
use labhub_tests::attack;

/// The broker's own state, from a `status` request.
fn status(probe: &mut Probe) -> BrokerStatus {
    let reply = probe.request("status", json!({})).unwrap();
    assert!(reply.is_ok(), "{reply:?}");
    reply
        .broker
        .expect("a status reply carries the broker's state")
}

/// Starts `labhub-test-child broker-run` for `home` through `wrapper` (a command line that
/// ends by running its arguments: prlimit, unshare).
fn start_wrapped(home: &Path, wrapper: &[&str]) -> TestBroker {
    let interval = INTERVAL_MS.to_string();
    let misses = MISSES.to_string();
    let (program, wrapper_args) = wrapper.split_first().expect("a wrapper command");
    let mut cmd = Command::new(program);
    cmd.args(wrapper_args).arg(crate::common::CHILD_EXE).args([
        "broker-run",
        home.to_str().unwrap(),
        "tcp://127.0.0.1:*",
        "tcp://127.0.0.1:*",
        &interval,
        &misses,
    ]);
    let mut proc = ChildProc::from_command("broker", cmd);
    let line = proc.skip_to("ready ");
    let parts: Vec<&str> = line.split(' ').collect();
    TestBroker {
        endpoint: parts[1].to_owned(),
        notify_endpoint: parts[2].to_owned(),
        key: PublicKey::from_z85(parts[3]).unwrap(),
        proc,
    }
}

/// Lets this test process open thousands of sockets.
fn raise_own_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the plain struct passed; no other effect
    // than this process's own limit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

#[test]
fn two_thousand_idle_keyless_connections_do_not_lock_admitted_clients_out() {
    raise_own_open_file_limit();
    let home = TestHome::new("idle");
    // Soft and hard limit 1024: raising the limit cannot help, only the pending bound can.
    let broker = start_wrapped(&home.path, &["prlimit", "--nofile=1024:1024", "--"]);
    let idle = attack::idle_connections(&broker.endpoint, 2000);
    let idle_notify = attack::idle_connections(&broker.notify_endpoint, 200);
    assert!(idle.len() >= 1500, "only {} connections opened", idle.len());

    // A new admitted client is still served, on a connection made after the flood.
    let mut probe = Probe::connect(
        &broker.endpoint,
        &broker.key,
        &home.local_key(),
        Duration::from_secs(10),
    )
    .unwrap();
    let reply = probe.request("list", json!({})).unwrap();
    assert!(reply.is_ok(), "{reply:?}");
    let reply = probe
        .request("discover", json!({"name": home.channel("none")}))
        .unwrap();
    assert_eq!(reply.error_code, ErrorCode::NotFound);
    // The kernel completes TCP handshakes before libzmq accepts them, so under load the
    // broker may still be working through its accept queue: wait until it has taken them all.
    let mut s = status(&mut probe);
    let deadline = Instant::now() + WATCHDOG;
    while s.requests.accepted < idle.len() as u64 {
        assert!(
            Instant::now() < deadline,
            "watchdog: accepting the flood, {s:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
        s = status(&mut probe);
    }
    assert!(s.requests.evicted > 0, "{s:?}");
    assert!(s.requests.pending <= 256, "{s:?}");
    assert_eq!(s.open_files_limit, 1024);
    drop((idle, idle_notify));
}

#[test]
fn the_broker_raises_its_open_file_limit_to_the_hard_limit() {
    let home = TestHome::new("nofile");
    let broker = start_wrapped(&home.path, &["prlimit", "--nofile=1024:4096", "--"]);
    let mut probe = broker.probe(&home);
    assert_eq!(status(&mut probe).open_files_limit, 4096);
}

/// Runs the broker with its home on a private 1 MiB tmpfs (a mount namespace of its own, so
/// nothing outlives the broker process).
fn start_on_small_tmpfs(home: &TestHome) -> TestBroker {
    // Root mounts in a new mount namespace; anyone else in a new user namespace as well.
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let unshare = if root { "-m" } else { "-Urm" };
    let script = "mount -t tmpfs -o size=1m,mode=0700 tmpfs \"$0\" && exec \"$@\"";
    start_wrapped(
        &home.path,
        &[
            "unshare",
            unshare,
            "sh",
            "-c",
            script,
            home.path.to_str().unwrap(),
        ],
    )
}

#[test]
fn seven_thousand_refused_handshakes_on_a_full_disk_neither_flood_the_audit_nor_stop_the_broker() {
    let home = TestHome::new("tmpfs");
    let broker = start_on_small_tmpfs(&home);
    // The home as the broker sees it, inside its mount namespace.
    let inside = Path::new(&format!("/proc/{}/root", broker.proc.pid())).join(
        home.path
            .strip_prefix("/")
            .expect("the scratch directory is absolute"),
    );
    let local = keys::read_secret(&inside.join("keys").join("client.secret"), None).unwrap();
    let mut probe = Probe::connect(&broker.endpoint, &broker.key, &local, WATCHDOG).unwrap();

    let refused = attack::RefusedClients::start(&broker.endpoint, &broker.key, 64);
    let deadline = Instant::now() + 4 * WATCHDOG;
    while status(&mut probe).refused_handshakes < 7000 {
        assert!(Instant::now() < deadline, "watchdog: 7000 refusals");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(refused);
    let reply = probe.request("list", json!({})).unwrap();
    assert!(reply.is_ok(), "{reply:?}");
    let audit_len = std::fs::metadata(inside.join("audit.jsonl")).unwrap().len();
    assert!(
        audit_len < 64 * 1024,
        "refusals took {audit_len} bytes of audit log"
    );

    // Fill the disk: audit writes fail, the broker serves on and says so.
    let filler = inside.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        while f.write_all(&[0u8; 4096]).is_ok() {}
    }
    // The audit file's last page may still have room for a few lines: register until a
    // write fails.
    let name = home.channel("full");
    let mut i = 0;
    let s = loop {
        let reply = probe
            .request(
                "register",
                json!({"client": "full-disk", "channel": {"name": format!("{name}{i}"),
                       "kind": "pubsub", "endpoint": "tcp://127.0.0.1:9"}}),
            )
            .unwrap();
        assert!(reply.is_ok(), "{reply:?}");
        let s = status(&mut probe);
        if !s.audit.ok {
            break s;
        }
        i += 1;
        assert!(
            i < 10_000,
            "audit writes never failed on a full disk: {s:?}"
        );
    };
    assert!(s.audit.write_errors > 0, "{s:?}");
    assert!(s.audit.error.is_some(), "{s:?}");
    assert!(probe.request("list", json!({})).unwrap().is_ok());

    // Room again: the kept lines are written.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + WATCHDOG;
    while !status(&mut probe).audit.ok {
        assert!(
            Instant::now() < deadline,
            "watchdog: the audit log recovers"
        );
        probe.request("list", json!({})).unwrap();
    }
    let read_audit = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(inside.join("audit.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).expect("every audit line is whole JSON"))
            .collect()
    };
    let registered = format!("{name}{i}");
    // Refusals are written once per interval, one line per source with its count.
    wait_until("every refusal and the registration are audited", || {
        let lines = read_audit();
        let refusals: u64 = lines
            .iter()
            .filter(|l| l["event"] == "auth_refused")
            .map(|l| l["count"].as_u64().unwrap())
            .sum();
        refusals >= 7000
            && lines
                .iter()
                .any(|l| l["event"] == "registered" && l["channel"] == registered.as_str())
    });
}

/// The broker's peak resident size since the last reset, in MiB.
fn peak_mib(pid: u32) -> f64 {
    attack::proc_status_kib(pid, "VmHWM").expect("VmHWM") as f64 / 1024.0
}

#[test]
fn a_huge_multipart_message_from_an_admitted_client_is_cut_off_and_the_broker_stays_small() {
    let home = TestHome::new("multipart");
    let broker = TestBroker::start(&home);
    let pid = broker.proc.pid();
    let mut probe = broker.probe(&home);
    assert!(probe.request("list", json!({})).unwrap().is_ok());
    attack::reset_peak_rss(pid).unwrap();

    // 25,000 frames of 60,000 bytes: 1.5 GB in one message.
    let (attacker, _ctx) =
        attack::send_huge_multipart(&broker.endpoint, &broker.key, &home.local_key(), 25_000);
    let deadline = Instant::now() + 2 * WATCHDOG;
    while status(&mut probe).requests.cut == 0 {
        assert!(Instant::now() < deadline, "watchdog: the sender is cut off");
        std::thread::sleep(Duration::from_millis(20));
    }
    // libzmq reconnects the sender and resends; it is cut again each time. Let it try a while.
    std::thread::sleep(Duration::from_secs(2));
    assert!(probe.request("list", json!({})).unwrap().is_ok());
    let peak = peak_mib(pid);
    eprintln!("broker peak RSS under a 1.5 GB multipart message: {peak:.1} MiB");
    drop(attacker);
    assert!(peak < 64.0, "broker peak RSS {peak:.1} MiB");
}

#[test]
fn subscribers_that_never_read_do_not_pin_the_broker_s_memory() {
    let home = TestHome::new("silent");
    // 12,000 requests of a client that sends no heartbeat: one stall of the test thread past
    // the test broker's 300 ms would expire it mid-storm.
    let broker = TestBroker::start_patient(&home);
    let pid = broker.proc.pid();
    let mut probe = broker.probe(&home);
    let listener = broker.listen(&home);
    sync_listener(&mut probe, &listener, &home);
    let _silent = attack::SilentSubscribers::start(
        &broker.notify_endpoint,
        &broker.key,
        &home.local_key(),
        20,
    );
    // Let them all subscribe: the listener above subscribed the same way and is synced.
    sync_listener(&mut probe, &listener, &home);
    attack::reset_peak_rss(pid).unwrap();
    let metadata = json!({"blob": "m".repeat(4000)});
    for i in 0..6000 {
        let name = format!("{}{i}", home.channel("n"));
        let reply = probe
            .request(
                "register",
                json!({"client": "storm", "channel": {"name": name, "kind": "pubsub",
                       "endpoint": "tcp://127.0.0.1:9", "metadata": metadata}}),
            )
            .unwrap();
        assert!(reply.is_ok(), "{reply:?}");
        let reply = probe
            .request("unregister", json!({"client": "storm", "name": name}))
            .unwrap();
        assert!(reply.is_ok(), "{reply:?}");
    }
    // A reply can go out before the notice of the same request is counted published: wait
    // for the count (bounded) rather than read it once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let s = loop {
        let s = status(&mut probe);
        if s.notifications_published >= 12_000 || std::time::Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(s.notifications_published >= 12_000, "{s:?}");
    assert_eq!(
        s.requests.cut, 0,
        "a busy admitted client is not cut off: {s:?}"
    );
    let peak = peak_mib(pid);
    eprintln!("broker peak RSS with 20 silent subscribers: {peak:.1} MiB");
    assert!(peak < 64.0, "broker peak RSS {peak:.1} MiB");
}

#[test]
fn the_largest_frame_under_curve_is_65503_bytes() {
    let home = TestHome::new("frame");
    let broker = TestBroker::start(&home);
    let probe = broker.probe(&home);
    // 65,503 bytes of body: the encrypted frame is 65,536 bytes, libzmq's limit. The body is
    // not JSON, so the reply is an error, but there is one.
    let body = vec![b'x'; 65_503];
    probe
        .send_raw(&[labhub::protocol::TAG, b"1", b"list", &body])
        .unwrap();
    let reply = probe.recv_reply().unwrap();
    assert_eq!(reply.error_code, ErrorCode::MalformedBody);
    // One byte more and libzmq drops the connection: no reply at all.
    let refused = Probe::connect(
        &broker.endpoint,
        &broker.key,
        &home.local_key(),
        Duration::from_millis(1500),
    )
    .unwrap();
    let body = vec![b'x'; 65_504];
    refused
        .send_raw(&[labhub::protocol::TAG, b"1", b"list", &body])
        .unwrap();
    assert!(matches!(
        refused.recv_reply(),
        Err(labhub::broker::probe::ProbeError::Timeout(_))
    ));
    let mut probe = broker.probe(&home);
    assert!(probe.request("list", json!({})).unwrap().is_ok());
}
