//! Broker-granted shared memory with real processes: a broker child (`broker-run`, the code
//! `labhub hub` runs) with an access list in its `broker.toml`, producers and consumers as
//! children (`grant-*` roles) of other keys, other users and other namespaces, an attacker that
//! speaks the grant protocol itself, and SIGKILL of every party.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use labhub::broker::probe::Probe;
use labhub::client::{ClientConfig, Hub, ShmProducer};
use labhub::keys::{self, KeyPair};
use labhub::protocol::ErrorCode;
use labhub::shm::{Backpressure, Policy};
use labhub_tests::memfd as proc_memfd;

use crate::broker::{TestBroker, TestHome};
use crate::common::{CHILD_EXE, ChildProc, ScratchDir, WATCHDOG, spawn_child, wait_until};

/// A broker for grant tests: its home (with `broker.toml` and the allow list), the secret key
/// files of named clients (admitted by the allow list), and the broker child.
struct Grants {
    home: TestHome,
    /// Where the clients' key files are (removed with it).
    _keys: ScratchDir,
    clients: HashMap<&'static str, (KeyPair, PathBuf)>,
    broker: TestBroker,
}

impl Grants {
    /// Starts a broker whose `broker.toml` holds `toml` (`{name}` replaced by client `name`'s
    /// public key, `{tag}` by the home's tag), admitting `clients`.
    fn start(tag: &str, clients: &[&'static str], toml: &str) -> Self {
        let home = TestHome::new(tag);
        let keys = ScratchDir::new(&format!("{tag}-keys"));
        let mut clients_map = HashMap::new();
        let mut allowed = String::new();
        let mut toml = toml.replace("{tag}", &home.tag);
        for name in clients {
            let pair = KeyPair::generate();
            let base = keys.join(name);
            keys::write_pair(&base, &pair, None).unwrap();
            allowed.push_str(&format!("{} {name}\n", pair.public.to_z85()));
            toml = toml.replace(&format!("{{{name}}}"), &pair.public.to_z85());
            clients_map.insert(*name, (pair, keys::with_suffix(&base, "secret")));
        }
        std::fs::write(home.path.join("allowed_clients"), allowed).unwrap();
        std::fs::write(
            home.path.join("broker.toml"),
            format!("reap_stale_segments = false\n{toml}"),
        )
        .unwrap();
        let broker = Self::broker(&home, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*");
        Self {
            home,
            _keys: keys,
            clients: clients_map,
            broker,
        }
    }

    fn broker(home: &TestHome, endpoint: &str, notify: &str) -> TestBroker {
        TestBroker::start_on(home, endpoint, notify, &["read-config"])
    }

    fn channel(&self, name: &str) -> String {
        self.home.channel(name)
    }

    /// The key file of client `name`; `owner`: the broker's user's own client key.
    fn key_file(&self, name: &str) -> PathBuf {
        if name == "owner" {
            let _ = self.home.local_key();
            return self.home.path.join("keys").join("client.secret");
        }
        self.clients[name].1.clone()
    }

    fn key(&self, name: &str) -> KeyPair {
        if name == "owner" {
            return self.home.local_key();
        }
        self.clients[name].0.clone()
    }

    /// The arguments every `grant-*` role takes, for client `name` and `channel`.
    fn args(&self, name: &str, channel: &str) -> Vec<String> {
        vec![
            self.broker.endpoint.clone(),
            self.broker.notify_endpoint.clone(),
            self.broker.key.to_z85(),
            self.key_file(name).display().to_string(),
            channel.to_owned(),
        ]
    }

    fn spawn(&self, role: &str, name: &str, channel: &str, extra: &[&str]) -> ChildProc {
        let mut args = self.args(name, channel);
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        spawn_child(role, &args).labelled(&format!("{role} as {name}"))
    }

    /// A Hub of client `name` in this process.
    fn hub(&self, name: &str) -> Hub {
        Hub::connect(
            ClientConfig::new(&self.broker.endpoint, self.broker.key, self.key(name))
                .notify_endpoint(&self.broker.notify_endpoint)
                .request_timeout(WATCHDOG),
        )
        .unwrap()
    }

    fn probe(&self, name: &str) -> Probe {
        Probe::connect(
            &self.broker.endpoint,
            &self.broker.key,
            &self.key(name),
            WATCHDOG,
        )
        .unwrap()
    }
}

/// The payload pattern of the `grant-producer` child.
fn pattern(id: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    v[..8].copy_from_slice(&id.to_le_bytes());
    for (i, b) in v.iter_mut().enumerate().skip(8) {
        *b = (id as usize).wrapping_add(i) as u8;
    }
    v
}

fn lossy_ring(hub: &Hub, name: &str, size: u64) -> ShmProducer<u8> {
    hub.channel(name)
        .policy(Policy::Ring {
            slots: 8,
            when_full: Backpressure::DropOldest,
        })
        .bytes(size)
        .create()
        .unwrap()
}

/// Reads `grant-consumer` lines until `n` frames arrived, each checked; returns the last id.
fn frames(child: &mut ChildProc, n: usize) -> u64 {
    let mut last = 0;
    for _ in 0..n {
        let line = child.wait_for("a frame", |l| {
            l.starts_with("frame ") || l.starts_with("error")
        });
        let (id, ok) = line["frame ".len()..].split_once(' ').unwrap();
        assert_eq!(ok, "ok", "{}: {line}", child.label());
        last = id.parse().unwrap();
    }
    last
}

/// Publishes pattern frames from `producer` until `child` has read `n` of them.
fn feed(producer: &mut ShmProducer<u8>, child: &mut ChildProc, n: usize) {
    let size = producer.producer().max_shape()[0] as usize;
    let (tx, rx) = std::sync::mpsc::channel();
    let mut seen = 0;
    let deadline = Instant::now() + WATCHDOG;
    std::thread::scope(|s| {
        s.spawn(|| {
            frames(child, n);
            let _ = tx.send(());
        });
        while rx.try_recv().is_err() {
            assert!(Instant::now() < deadline, "the consumer read no frames");
            let id = producer.next_frame_id();
            producer
                .publish(&pattern(id, size), &[size as u64])
                .unwrap();
            seen += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
    });
}

// ---- grants and refusals by key and access list ------------------------------------------------

#[test]
fn the_access_list_grants_channels_to_the_keys_it_names_and_refuses_every_other() {
    let g = Grants::start(
        "acl",
        &["alice", "bob", "carol"],
        r#"
[[access]]
channels = ["{tag}-cam*"]
produce = ["{alice}"]
consume = ["{bob}"]
"#,
    );
    let cam = g.channel("cam0");
    let mut producer = g.spawn("grant-producer", "alice", &cam, &["64"]);
    producer.expect("ready 0");
    let mut bob = g.spawn("grant-consumer", "bob", &cam, &[]);
    let attached = bob.expect("attached ");
    frames(&mut bob, 5);
    // Refused: a key the rule does not name, a producer as consumer, a consumer as producer,
    // a channel outside the rule's patterns.
    for (role, who, channel) in [
        ("grant-consumer", "carol", cam.clone()),
        ("grant-consumer", "alice", cam.clone()),
        ("grant-producer", "bob", g.channel("cam1")),
        ("grant-producer", "alice", g.channel("other")),
    ] {
        let mut child = g.spawn(role, who, &channel, &["64"]);
        let line = child.expect("refused ");
        assert_eq!(
            line, "refused access_denied",
            "{role} as {who} of {channel}"
        );
    }
    // Whoever is refused, the granted consumer reads on.
    frames(&mut bob, 5);

    // The broker shows with whom it shares the channel: keys, client ids, processes.
    let mut probe = g.probe("owner");
    let reply = probe
        .request("discover", serde_json::json!({"name": cam}))
        .unwrap();
    let info = reply.channel.unwrap();
    assert_eq!(info.spec.sharing, Some(labhub::protocol::Sharing::Memfd));
    assert!(info.spec.shm_name.is_none());
    let consume = info
        .grants
        .iter()
        .find(|r| r.role == labhub::protocol::Role::Consume)
        .expect("the consumer's grant");
    assert_eq!(consume.key, g.key("bob").public.to_z85());
    assert!(
        attached.starts_with(&format!("attached pid={} uid=0 ", consume.pid)),
        "{attached}"
    );
    let produce = info
        .grants
        .iter()
        .find(|r| r.role == labhub::protocol::Role::Produce)
        .expect("the producer's grant");
    assert_eq!(produce.pid, producer.pid());
    assert_eq!(produce.key, g.key("alice").public.to_z85());

    // The audit trail names every grant and refusal with its key.
    wait_until("the audit lines", || {
        let audit = g.home.audit();
        audit.iter().any(|e| {
            e["event"] == "granted"
                && e["role"] == "consume"
                && e["pid"] == u64::from(bob.pid())
                && e["key"] == g.key("bob").public.to_z85().as_str()
        }) && audit.iter().any(|e| {
            e["event"] == "grant_refused"
                && e["code"] == "access_denied"
                && e["key"] == g.key("carol").public.to_z85().as_str()
        })
    });
}

// ---- the ticket exchange ------------------------------------------------------------------------

/// A connection to the grant socket, speaking docs/PROTOCOL.md by hand.
struct GrantSocket(OwnedFd);

impl GrantSocket {
    fn connect(path: &Path) -> Self {
        let fd = rustix::net::socket_with(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::SEQPACKET,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        rustix::net::sockopt::set_socket_timeout(
            &fd,
            rustix::net::sockopt::Timeout::Recv,
            Some(WATCHDOG),
        )
        .unwrap();
        rustix::net::connect(&fd, &rustix::net::SocketAddrUnix::new(path).unwrap()).unwrap();
        Self(fd)
    }

    fn send(&self, bytes: &[u8], fds: &[&OwnedFd]) {
        use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
        if !borrowed.is_empty() {
            assert!(control.push(SendAncillaryMessage::ScmRights(&borrowed)));
        }
        rustix::net::sendmsg(
            &self.0,
            &[std::io::IoSlice::new(bytes)],
            &mut control,
            SendFlags::empty(),
        )
        .unwrap();
    }

    /// The broker's answer and the descriptors it carried.
    fn answer(&self) -> (serde_json::Value, Vec<OwnedFd>) {
        use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
        let mut buf = [0u8; 4096];
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got = rustix::net::recvmsg(
            &self.0,
            &mut [std::io::IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )
        .unwrap();
        let mut fds = Vec::new();
        for m in control.drain() {
            if let RecvAncillaryMessage::ScmRights(r) = m {
                fds.extend(r);
            }
        }
        let answer = serde_json::from_slice(&buf[..got.bytes])
            .unwrap_or_else(|e| panic!("not an answer ({e}): {:?}", &buf[..got.bytes]));
        (answer, fds)
    }

    /// Sends a redeem message and returns the answer.
    fn redeem(
        path: &Path,
        ticket: &str,
        name: &str,
        role: &str,
    ) -> (serde_json::Value, Vec<OwnedFd>) {
        let s = Self::connect(path);
        let m = serde_json::json!({"type": "redeem", "ticket": ticket, "name": name, "role": role});
        s.send(m.to_string().as_bytes(), &[]);
        s.answer()
    }
}

/// A `grant` request through `probe`; returns the ticket and the socket path.
fn ticket(probe: &mut Probe, client: &str, name: &str, role: &str) -> (String, PathBuf) {
    let reply = probe
        .request(
            "grant",
            serde_json::json!({"client": client, "name": name, "role": role}),
        )
        .unwrap();
    assert!(reply.is_ok(), "{reply:?}");
    let t = reply.grant.expect("a ticket");
    assert_eq!(t.ticket.len(), 64);
    (t.ticket, PathBuf::from(t.socket))
}

#[test]
fn a_ticket_is_good_once_for_its_channel_and_role_and_only_briefly() {
    let g = Grants::start("ticket", &[], "grant_ticket_ms = 300\n");
    let hub = g.hub("owner");
    let cam = g.channel("cam");
    let mut producer = lossy_ring(&hub, &cam, 64);
    producer.publish(b"frame", &[5]).unwrap();
    let other = g.channel("other");
    let _other = lossy_ring(&hub, &other, 64);
    let mut probe = g.probe("owner");

    // Redeemed once: the descriptors. Again: refused.
    let (t, socket) = ticket(&mut probe, "c1", &cam, "consume");
    let (a, fds) = GrantSocket::redeem(&socket, &t, &cam, "consume");
    assert_eq!(
        (a["status"].as_str(), fds.len(), a["descriptors"].as_u64()),
        (Some("ok"), 2, Some(2))
    );
    let (a, fds) = GrantSocket::redeem(&socket, &t, &cam, "consume");
    assert_eq!(a["error_code"], "invalid_ticket", "{a}");
    assert!(fds.is_empty());

    // Presented for another role or channel: refused, and burnt with it.
    for (name, role) in [(cam.as_str(), "produce"), (other.as_str(), "consume")] {
        let (t, socket) = ticket(&mut probe, "c1", &cam, "consume");
        let (a, _) = GrantSocket::redeem(&socket, &t, name, role);
        assert_eq!(a["error_code"], "invalid_ticket", "{name} {role}: {a}");
        let (a, _) = GrantSocket::redeem(&socket, &t, &cam, "consume");
        assert_eq!(
            a["error_code"], "invalid_ticket",
            "a refused ticket is burnt: {a}"
        );
    }

    // Past its lifetime (300 ms here): refused.
    let (t, socket) = ticket(&mut probe, "c1", &cam, "consume");
    std::thread::sleep(Duration::from_millis(400));
    let (a, _) = GrantSocket::redeem(&socket, &t, &cam, "consume");
    assert_eq!(a["error_code"], "invalid_ticket", "{a}");

    // Guessed tickets, garbage, descriptors where none belong, a message too long.
    let (a, _) = GrantSocket::redeem(&socket, &"0".repeat(64), &cam, "consume");
    assert_eq!(a["error_code"], "invalid_ticket", "{a}");
    let s = GrantSocket::connect(&socket);
    s.send(b"\x00not json", &[]);
    assert_eq!(s.answer().0["error_code"], "malformed_body");
    let (t, _) = ticket(&mut probe, "c1", &cam, "consume");
    let s = GrantSocket::connect(&socket);
    let m = serde_json::json!({"type": "redeem", "ticket": t, "name": cam, "role": "consume"});
    let stray = rustix::fs::open(
        "/dev/null",
        rustix::fs::OFlags::RDONLY,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    s.send(m.to_string().as_bytes(), &[&stray]);
    assert_eq!(s.answer().0["error_code"], "invalid_field");
    let s = GrantSocket::connect(&socket);
    s.send(&[b' '; 6000], &[]);
    assert_eq!(s.answer().0["error_code"], "too_large");

    // A producer must hand over a sealed memfd pair before it registers one.
    let register = serde_json::json!({"client": "p2", "channel": {"name": g.channel("raw"),
        "kind": "shm", "sharing": "memfd", "size": 8192}});
    let reply = probe.request("register", register.clone()).unwrap();
    assert_eq!(reply.error_code, ErrorCode::NoSegment, "{reply:?}");
    let (t, socket) = ticket(&mut probe, "p2", &g.channel("raw"), "produce");
    let s = GrantSocket::connect(&socket);
    let m = serde_json::json!({"type": "redeem", "ticket": t, "name": g.channel("raw"), "role": "produce"});
    s.send(m.to_string().as_bytes(), &[]);
    let (a, fds) = s.answer();
    assert_eq!(
        (a["status"].as_str(), fds.len()),
        (Some("ok"), 0),
        "nothing held yet: {a}"
    );
    let unsealed = |size| {
        let fd = rustix::fs::memfd_create("x", rustix::fs::MemfdFlags::ALLOW_SEALING).unwrap();
        rustix::fs::ftruncate(&fd, size).unwrap();
        fd
    };
    let (control, data) = (unsealed(4096), unsealed(8192));
    let m = serde_json::json!({"type": "provide", "name": g.channel("raw")});
    s.send(m.to_string().as_bytes(), &[&control, &data]);
    let (a, _) = s.answer();
    assert_eq!(a["error_code"], "invalid_field", "{a}");
    assert!(a["message"].as_str().unwrap().contains("sealed"), "{a}");
    let reply = probe.request("register", register).unwrap();
    assert_eq!(reply.error_code, ErrorCode::NoSegment, "{reply:?}");

    // After all that, a consumer through the Hub still gets the channel.
    let consumer_hub = g.hub("owner");
    let mut consumer = consumer_hub.channel(&cam).element::<u8>().open().unwrap();
    producer.publish(b"after", &[5]).unwrap();
    assert_eq!(consumer.next_copy(Some(WATCHDOG)).unwrap().data, b"after");
    let audit = g.home.audit();
    let refused = audit
        .iter()
        .filter(|e| e["event"] == "grant_socket_refused")
        .count();
    assert!(refused >= 8, "{refused} refusals audited");
    assert!(
        audit
            .iter()
            .any(|e| e["event"] == "grant_socket_refused"
                && e["pid"] == u64::from(std::process::id())),
        "refusals name the peer's pid"
    );
}

// ---- read-only consumers ------------------------------------------------------------------------

/// The attacks of a `grant-attacker` child, as it reported them (name → outcome).
fn attacks(child: &mut ChildProc) -> HashMap<String, String> {
    child.expect("granted");
    let mut found = HashMap::new();
    loop {
        let line = child.next_line();
        if line == "done" {
            return found;
        }
        if let Some(rest) = line.strip_prefix("attack ") {
            let (name, outcome) = rest.split_once(' ').unwrap();
            found.insert(name.to_owned(), outcome.to_owned());
        }
    }
}

#[test]
fn a_consumer_can_neither_write_nor_resize_nor_seal_a_granted_segment_though_it_could_a_named_one()
{
    let g = Grants::start("readonly", &[], "");
    let hub = g.hub("owner");
    let cam = g.channel("cam");
    let mut producer = lossy_ring(&hub, &cam, 4096);
    for id in 0..4 {
        producer.publish(&pattern(id, 4096), &[4096]).unwrap();
    }
    let mut attacker = g.spawn("grant-attacker", "owner", &cam, &[]);
    let found = attacks(&mut attacker);
    for (attack, expected) in [
        // Through the read-only descriptor it was given.
        ("mmap-rw", "refused EACCES"),
        ("mprotect-rw", "refused EACCES"),
        // Reopened read-write through /proc (which works: an O_RDONLY descriptor is no
        // boundary), the seals refuse every write and every size change.
        ("reopen-mmap-rw", "refused EPERM"),
        ("reopen-mprotect-rw", "refused EACCES"),
        ("reopen-write", "refused EPERM"),
        ("reopen-pwrite", "refused EPERM"),
        ("reopen-ftruncate-shrink", "refused EPERM"),
        ("reopen-ftruncate-grow", "refused EPERM"),
        ("reopen-fallocate-grow", "refused EPERM"),
        ("seal-data", "refused EPERM"),
        // The control memfd stays writable, but its size and seals are fixed.
        ("control-ftruncate", "refused EPERM"),
        ("control-seal", "refused EPERM"),
    ] {
        assert_eq!(
            found.get(attack).map(String::as_str),
            Some(expected),
            "{attack}: {found:?}"
        );
    }
    // The frames are intact and the channel works on, for the producer and a consumer.
    let mut consumer = g.hub("owner").channel(&cam).element::<u8>().open().unwrap();
    let held = consumer
        .consumer()
        .latest()
        .unwrap()
        .unwrap()
        .to_vec()
        .unwrap();
    assert_eq!(held, pattern(3, 4096));
    producer.publish(&pattern(4, 4096), &[4096]).unwrap();
    assert_eq!(
        consumer.next_copy(Some(WATCHDOG)).unwrap().data,
        pattern(4, 4096)
    );
    attacker.finish();

    // The same attacks on a named segment, as every process of the user may open it: they
    // work, which is what the memfd's seals stop.
    let named = g.channel("named");
    let mut victim = labhub::shm::Channel::new(&named)
        .policy(Policy::Latest)
        .bytes(64)
        .create()
        .unwrap();
    victim.publish(b"x", &[1]).unwrap();
    let mut attacker = g.spawn("grant-attacker", "owner", &named, &["named"]);
    let found = attacks(&mut attacker);
    for attack in [
        "reopen-mmap-rw",
        "reopen-mprotect-rw",
        "reopen-write",
        "reopen-pwrite",
    ] {
        assert_eq!(
            found.get(attack).map(String::as_str),
            Some("succeeded"),
            "{attack} on a named segment: {found:?}"
        );
    }
    attacker.finish();
    drop(victim);
    let _ = labhub::shm::remove_channel(&named);
}

// ---- lifecycle: SIGKILL of every party ----------------------------------------------------------

/// No `/dev/shm` file names `channel`: memfd segments have none.
fn assert_no_named_segment(channel: &str) {
    let os = labhub::name::ChannelName::new(channel)
        .unwrap()
        .segment_name();
    let left: Vec<_> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(os.trim_start_matches('/')))
        .collect();
    assert!(left.is_empty(), "/dev/shm holds {left:?}");
}

/// The pids holding a descriptor or mapping of `channel`'s memfds.
fn holder_pids(channel: &str) -> Vec<u32> {
    let mut pids: Vec<u32> = proc_memfd::holders(channel)
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

fn wait_holders(channel: &str, want: &[u32], what: &str) {
    let mut want = want.to_vec();
    want.sort_unstable();
    wait_until(what, || holder_pids(channel) == want);
    assert_no_named_segment(channel);
}

/// Waits until `pid` holds exactly `n` descriptors.
fn wait_fds(pid: u32, n: usize, what: &str) {
    let deadline = Instant::now() + WATCHDOG;
    loop {
        let now = proc_memfd::fd_count(pid);
        if now == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "watchdog: {what}: pid {pid} holds {now} descriptors, not {n}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn killing_the_consumer_the_producer_or_the_broker_leaves_nothing_behind() {
    let mut g = Grants::start("leak", &[], "");
    let broker = g.broker.proc.pid();
    let cam = g.channel("cam");
    // Baselines: the broker before any client, the producer once it serves.
    let idle = proc_memfd::fd_count(broker);
    let mut producer = g.spawn("grant-producer", "owner", &cam, &["4096"]);
    producer.expect("ready 0");
    let serving = proc_memfd::fd_count(broker);
    let producer_fds = proc_memfd::fd_count(producer.pid());
    wait_holders(
        &cam,
        &[broker, producer.pid()],
        "the producer and the broker hold it",
    );

    // A consumer, SIGKILLed: every descriptor of the others back to its baseline, nothing of
    // the segment left in it.
    let mut consumer = g.spawn("grant-consumer", "owner", &cam, &[]);
    consumer.expect("attached ");
    frames(&mut consumer, 3);
    wait_holders(
        &cam,
        &[broker, producer.pid(), consumer.pid()],
        "three hold it",
    );
    consumer.kill();
    wait_holders(
        &cam,
        &[broker, producer.pid()],
        "the killed consumer holds nothing",
    );
    wait_fds(broker, serving, "the broker after the consumer's death");
    wait_fds(
        producer.pid(),
        producer_fds,
        "the producer after the consumer's death",
    );

    // The producer, SIGKILLed with a consumer reading: the broker keeps the segment while the
    // consumer is attached; when it leaves too, nobody holds it and the kernel frees it.
    let mut consumer = g.spawn("grant-consumer", "owner", &cam, &[]);
    consumer.expect("attached ");
    frames(&mut consumer, 3);
    producer.kill();
    wait_holders(
        &cam,
        &[broker, consumer.pid()],
        "the broker and the consumer",
    );
    consumer.kill();
    wait_holders(&cam, &[], "nobody");
    wait_fds(broker, idle, "the broker once the channel is gone");

    // The broker, SIGKILLed mid-stream: producer and consumer keep their mappings and frames
    // flow; a restarted broker gets the segment from the producer, and a new consumer gets it
    // from the broker, frame ids continuing.
    g.broker.proc.kill();
    let ipc = ScratchDir::new("leak-ipc");
    let (endpoint, notify) = (ipc.ipc("b.sock"), ipc.ipc("n.sock"));
    let mut broker = Grants::broker(&g.home, &endpoint, &notify);
    let server_key = broker.key.to_z85();
    let args = |name: &str| {
        vec![
            endpoint.clone(),
            notify.clone(),
            server_key.clone(),
            g.key_file(name).display().to_string(),
            cam.clone(),
        ]
    };
    let spawn = |role: &str, extra: &[&str]| {
        let mut a = args("owner");
        a.extend(extra.iter().map(|s| (*s).to_owned()));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        spawn_child(role, &a).labelled(role)
    };
    let mut producer = spawn("grant-producer", &["4096"]);
    producer.expect("ready ");
    let mut consumer = spawn("grant-consumer", &[]);
    consumer.expect("attached ");
    frames(&mut consumer, 3);
    broker.proc.kill();
    let before = frames(&mut consumer, 1);
    assert!(
        frames(&mut consumer, 10) > before,
        "frames flow without a broker"
    );
    wait_holders(
        &cam,
        &[producer.pid(), consumer.pid()],
        "producer and consumer",
    );
    let broker = Grants::broker(&g.home, &endpoint, &notify);
    wait_holders(
        &cam,
        &[broker.proc.pid(), producer.pid(), consumer.pid()],
        "the producer hands its segment to the restarted broker",
    );
    let mut late = spawn("grant-consumer", &[]);
    late.expect("attached ");
    let id = frames(&mut late, 1);
    assert!(id > before, "frame ids continue: {id} after {before}");
    frames(&mut consumer, 3);
    for p in [&mut late, &mut consumer, &mut producer] {
        p.kill();
    }
    drop(broker);
    wait_holders(&cam, &[], "nobody once every process is gone");
}

// ---- other users and containers -----------------------------------------------------------------

#[test]
fn a_consumer_of_another_user_gets_the_channel_when_its_key_and_user_are_allowed() {
    let sockets = ScratchDir::new("uid-socket");
    let socket = sockets.join("grant.sock");
    let g = Grants::start(
        "uid",
        &["dave", "erin"],
        &format!(
            r#"
grant_socket = "{}"

[[access]]
channels = ["{{tag}}-*"]
consume = ["{{dave}}"]
uids = [65534]

[[access]]
channels = ["{{tag}}-*"]
consume = ["{{erin}}"]
uids = [1000]
"#,
            socket.display()
        ),
    );
    let hub = g.hub("owner");
    let cam = g.channel("cam");
    let mut producer = lossy_ring(&hub, &cam, 256);
    let mut dave = g.spawn("grant-consumer", "dave", &cam, &["setuid=65534"]);
    let attached = dave.expect("attached ");
    assert!(attached.contains(" uid=65534 "), "{attached}");
    feed(&mut producer, &mut dave, 5);
    let entry = producer
        .producer()
        .report()
        .consumers
        .into_iter()
        .find(|c| c.pid == dave.pid())
        .expect("the other user's entry");
    assert!(entry.alive);
    // The same key as another user, another key as this user: refused at the grant socket,
    // where the kernel says who the peer is.
    for (who, uid) in [("dave", None), ("erin", Some("setuid=65534"))] {
        let mut child = g.spawn("grant-consumer", who, &cam, uid.as_slice());
        assert_eq!(
            child.expect("refused "),
            "refused access_denied",
            "{who} {uid:?}"
        );
    }
    let audit = g.home.audit();
    assert!(
        audit.iter().any(|e| e["event"] == "granted"
            && e["uid"] == 65534
            && e["pid"] == u64::from(dave.pid())),
        "the grant names the peer's uid"
    );
    assert!(audit.iter().any(|e| {
        e["event"] == "grant_socket_refused" && e["code"] == "access_denied" && e["uid"] == 0
    }));
}

/// `unshare` into new IPC, PID and mount namespaces (with /proc and a 1 MiB /dev/shm of their
/// own), then `labhub-test-child role args…`: sharing only the filesystem path of the grant
/// socket (and the network, for CURVE) with the broker.
fn in_namespaces(label: &str, role: &str, args: &[String]) -> ChildProc {
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let script = format!(
        "mount -t tmpfs -o size=1m tmpfs /dev/shm && exec {CHILD_EXE} {role} {}",
        quoted.join(" ")
    );
    let mut cmd = std::process::Command::new("unshare");
    cmd.args([
        "--ipc",
        "--pid",
        "--mount",
        "--fork",
        "--mount-proc",
        "--kill-child=SIGKILL",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
    ]);
    ChildProc::from_command(label, cmd)
}

/// The start time (`/proc/<pid>/stat` field 22) of process `pid` in this pid namespace.
fn start_time_here(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.split(' ').nth(19)?.parse().ok()
}

#[test]
fn a_consumer_in_other_namespaces_reads_a_channel_larger_than_its_dev_shm_and_is_judged_by_its_lock()
 {
    let g = Grants::start(
        "netns",
        &["frank", "gina"],
        r#"
[[access]]
channels = ["{tag}-*"]
consume = ["{frank}"]
"#,
    );
    let hub = g.hub("owner");
    let cam = g.channel("cam");
    // 8 slots of 1 MiB: 8 MiB, where the consumer's /dev/shm holds 1 MiB.
    let mut producer = lossy_ring(&hub, &cam, 1 << 20);
    let mut frank = in_namespaces(
        "consumer in namespaces",
        "grant-consumer",
        &g.args("frank", &cam),
    );
    let attached = frank.expect("attached ");
    let start: u64 = attached
        .strip_prefix("attached pid=1 uid=0 start=")
        .unwrap_or_else(|| panic!("pid 1 of its own pid namespace: {attached}"))
        .parse()
        .unwrap();
    feed(&mut producer, &mut frank, 3);
    assert!(producer.producer().report().total_size >= 8 << 20);

    // Its entry records pid 1 — here another process (init), with another start time: by pid
    // and start time it would look dead, and be reclaimed while it reads. Its lock says alive.
    let report = producer.producer().report();
    let entry = report
        .consumers
        .iter()
        .find(|c| c.pid == 1)
        .expect("the namespace consumer's entry");
    assert!(entry.alive, "{report:?}");
    assert_ne!(
        start_time_here(1),
        Some(start),
        "pid 1 here is not the consumer: the pid rule would judge it dead"
    );

    // A key the access list does not name is refused there as here.
    let mut gina = in_namespaces(
        "refused in namespaces",
        "grant-consumer",
        &g.args("gina", &cam),
    );
    assert_eq!(gina.expect("refused "), "refused access_denied");

    // Dead (its namespace SIGKILLed): judged dead at once, and its entry reclaimed by the next
    // consumer that needs room.
    frank.kill();
    wait_until("the namespace consumer judged dead", || {
        producer
            .producer()
            .report()
            .consumers
            .iter()
            .all(|c| c.pid != 1 || !c.alive)
    });
    let evicted = producer.stats().evicted;
    let mut consumers: Vec<_> = (0..16)
        .map(|_| g.hub("owner").channel(&cam).element::<u8>().open().unwrap())
        .collect();
    assert_eq!(
        producer.stats().evicted,
        evicted + 1,
        "its entry was reclaimed"
    );
    consumers.clear();
    assert_no_named_segment(&cam);
}

#[test]
fn a_hub_consumer_that_starts_before_its_producer_reads_its_frames_once_it_registers() {
    let g = Grants::start("first", &[], "");
    let cam = g.channel("cam");
    let consumer_hub = g.hub("owner");
    let mut consumer = consumer_hub
        .channel(&cam)
        .policy(Policy::Ring {
            slots: 8,
            when_full: Backpressure::DropOldest,
        })
        .bytes(64)
        .open_or_create()
        .unwrap();
    assert!(consumer.info().is_none(), "no producer yet");
    assert!(matches!(
        consumer.next_copy(Some(Duration::from_millis(50))),
        Err(labhub::client::ConsumeError::Timeout { .. })
    ));
    let producer_hub = g.hub("owner");
    let mut producer = lossy_ring(&producer_hub, &cam, 64);
    let deadline = Instant::now() + WATCHDOG;
    let frame = loop {
        producer.publish(b"hello", &[5]).unwrap();
        match consumer.next_copy(Some(Duration::from_millis(20))) {
            Ok(f) => break f,
            Err(labhub::client::ConsumeError::Timeout { .. }) => {}
            Err(e) => panic!("{e}"),
        }
        assert!(Instant::now() < deadline, "the consumer never attached");
    };
    assert_eq!(frame.data, b"hello");
    assert!(consumer.info().is_some());
    assert_eq!(
        consumer.consumer().report().instance,
        producer.producer().report().instance,
        "the producer's segment"
    );
}
