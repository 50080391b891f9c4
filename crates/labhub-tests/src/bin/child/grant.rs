//! Child roles of the broker-granted shared-memory tests. Each prints one line per event.
//!
//! Every role takes `ENDPOINT NOTIFY SERVER_KEY KEY_FILE CHANNEL` (the broker's endpoints and
//! public key in Z85, the path of this client's secret key file, the channel) and options:
//! `setuid=UID` (read the key, then drop to that user and group before anything else),
//! `grant-socket=PATH` (reach the grant socket there).
//!
//! - `grant-producer … SLOT_BYTES`: creates the channel through the Hub (a lossy ring of 8
//!   slots), prints `ready <next frame id>`, publishes a pattern frame every 5 ms; a refusal
//!   prints `refused <code>` and exits 0.
//! - `grant-consumer …`: opens the channel through the Hub (retrying while it is not
//!   registered), prints `attached pid=<pid> uid=<uid> start=<start time>` then `frame <id> ok` (or `bad`) per
//!   frame and `timeout` per 200 ms without one; a refusal prints `refused <code>` and exits 0.
//! - `grant-attacker …` (add `named` to attack the channel's named segment instead): gets a
//!   consumer's descriptors by speaking the protocol of docs/PROTOCOL.md itself (a `grant`
//!   over CURVE, the ticket on the grant socket), then tries to write the data region every
//!   way it knows and to resize or seal either memfd, printing `attack <name> refused <errno>`
//!   or `attack <name> succeeded` for each, then `done`.

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use labhub::client::{ClientConfig, ConsumeError, Hub};
use labhub::keys::{self, KeyPair, PublicKey};
use labhub::shm::{Backpressure, Policy};

fn say(line: impl AsRef<str>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line.as_ref());
    let _ = out.flush();
}

struct Common {
    endpoint: String,
    notify: String,
    server: PublicKey,
    keys: KeyPair,
    channel: String,
    grant_socket: Option<PathBuf>,
    rest: Vec<String>,
}

/// Becomes user (and group) `uid`, with no supplementary groups.
fn drop_privileges(uid: u32) -> anyhow::Result<()> {
    // SAFETY: plain system calls on this process's credentials, made before any other thread
    // exists (the Hub's worker starts later).
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0 {
            bail!("setgroups: {}", std::io::Error::last_os_error());
        }
        if libc::setgid(uid) != 0 || libc::setuid(uid) != 0 {
            bail!("setuid {uid}: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn common(args: &[String]) -> anyhow::Result<Common> {
    let [endpoint, notify, server, key_file, channel, rest @ ..] = args else {
        bail!("usage: ENDPOINT NOTIFY SERVER_KEY KEY_FILE CHANNEL [setuid=UID] [grant-socket=P]");
    };
    let server = PublicKey::from_z85(server).map_err(anyhow::Error::msg)?;
    let base = key_file.strip_suffix(".secret").unwrap_or(key_file);
    let keys = keys::load_pair(Path::new(base), None).context("the client key")?;
    let mut grant_socket = None;
    let mut others = Vec::new();
    for opt in rest {
        if let Some(uid) = opt.strip_prefix("setuid=") {
            drop_privileges(uid.parse()?)?;
        } else if let Some(path) = opt.strip_prefix("grant-socket=") {
            grant_socket = Some(PathBuf::from(path));
        } else {
            others.push(opt.clone());
        }
    }
    Ok(Common {
        endpoint: endpoint.clone(),
        notify: notify.clone(),
        server,
        keys,
        channel: channel.clone(),
        grant_socket,
        rest: others,
    })
}

fn hub(c: &Common) -> anyhow::Result<Hub> {
    let mut config = ClientConfig::new(&c.endpoint, c.server, c.keys.clone())
        .notify_endpoint(&c.notify)
        .request_timeout(Duration::from_secs(5));
    if let Some(p) = &c.grant_socket {
        config = config.grant_socket(p);
    }
    Ok(Hub::connect(config)?)
}

/// Frame `id`'s payload: its id, then `(id + i) as u8`.
fn pattern(id: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    v[..8].copy_from_slice(&id.to_le_bytes());
    for (i, b) in v.iter_mut().enumerate().skip(8) {
        *b = (id as usize).wrapping_add(i) as u8;
    }
    v
}

/// Dispatches `grant-*` roles.
pub fn run(role: &str, args: &[String]) -> anyhow::Result<()> {
    let c = common(args)?;
    match role {
        "grant-producer" => producer(&c),
        "grant-consumer" => consumer(&c),
        "grant-attacker" => attacker(&c),
        other => bail!("unknown grant role {other:?}"),
    }
}

fn producer(c: &Common) -> anyhow::Result<()> {
    let size: usize = c.rest.first().context("SLOT_BYTES")?.parse()?;
    let hub = hub(c)?;
    let created = hub
        .channel(&c.channel)
        .policy(Policy::Ring {
            slots: 8,
            when_full: Backpressure::DropOldest,
        })
        .bytes(size as u64)
        .create();
    let mut p = match created {
        Ok(p) => p,
        Err(e) => match e.code() {
            Some(code) => {
                say(format!("refused {code}"));
                return Ok(());
            }
            None => return Err(anyhow::Error::new(e).context("creating the channel")),
        },
    };
    say(format!("ready {}", p.next_frame_id()));
    loop {
        let id = p.next_frame_id();
        p.publish(&pattern(id, size), &[size as u64])?;
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn consumer(c: &Common) -> anyhow::Result<()> {
    let hub = hub(c)?;
    let give_up = Instant::now() + Duration::from_secs(20);
    let mut consumer = loop {
        match hub.channel(&c.channel).element::<u8>().open() {
            Ok(consumer) => break consumer,
            Err(e) => match e.code() {
                Some(
                    code @ (labhub::protocol::ErrorCode::NotFound
                    | labhub::protocol::ErrorCode::ChannelDown),
                ) if Instant::now() < give_up => {
                    let _ = code;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Some(code) => {
                    say(format!("refused {code}"));
                    return Ok(());
                }
                None => return Err(e.into()),
            },
        }
    };
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let start = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.split(' ').nth(19))
        .unwrap_or("?")
        .to_owned();
    say(format!(
        "attached pid={} uid={} start={start}",
        std::process::id(),
        rustix::process::getuid().as_raw()
    ));
    loop {
        match consumer.next_copy(Some(Duration::from_millis(200))) {
            Ok(f) => {
                let ok = f.data == pattern(f.frame_id, f.data.len());
                say(format!(
                    "frame {} {}",
                    f.frame_id,
                    if ok { "ok" } else { "bad" }
                ));
            }
            Err(ConsumeError::Timeout { .. }) => say("timeout"),
            Err(e) => say(format!("error {e}")),
        }
    }
}

/// The protocol of docs/PROTOCOL.md by hand: `grant` over CURVE, then the ticket on the
/// grant socket; returns the descriptors (control, data).
fn granted_by_hand(c: &Common) -> anyhow::Result<(OwnedFd, OwnedFd)> {
    use labhub::broker::probe::Probe;
    let mut probe = Probe::connect(&c.endpoint, &c.server, &c.keys, Duration::from_secs(5))?;
    let client = format!("attacker-{}", std::process::id());
    let reply = probe.request(
        "grant",
        serde_json::json!({"client": client, "name": c.channel, "role": "consume"}),
    )?;
    if !reply.is_ok() {
        bail!("grant refused: {}: {}", reply.error_code, reply.message);
    }
    let ticket = reply.grant.context("no grant in the reply")?;
    let socket = rustix::net::socket_with(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    let path = c
        .grant_socket
        .clone()
        .unwrap_or_else(|| PathBuf::from(&ticket.socket));
    rustix::net::connect(&socket, &rustix::net::SocketAddrUnix::new(&path)?)?;
    let message = serde_json::json!({"type": "redeem", "ticket": ticket.ticket,
        "name": c.channel, "role": "consume"});
    rustix::net::send(
        &socket,
        message.to_string().as_bytes(),
        rustix::net::SendFlags::empty(),
    )?;
    let mut buf = [0u8; 4096];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        &socket,
        &mut [std::io::IoSliceMut::new(&mut buf)],
        &mut control,
        rustix::net::RecvFlags::CMSG_CLOEXEC,
    )?;
    let answer: serde_json::Value = serde_json::from_slice(&buf[..got.bytes])?;
    if answer["status"] != "ok" {
        bail!("redeem refused: {answer}");
    }
    let mut fds: Vec<OwnedFd> = Vec::new();
    for m in control.drain() {
        if let rustix::net::RecvAncillaryMessage::ScmRights(r) = m {
            fds.extend(r);
        }
    }
    let [control, data]: [OwnedFd; 2] = fds
        .try_into()
        .map_err(|_| anyhow::anyhow!("expected 2 descriptors"))?;
    Ok((control, data))
}

fn errno_name(e: rustix::io::Errno) -> String {
    match e {
        rustix::io::Errno::PERM => "EPERM".into(),
        rustix::io::Errno::ACCESS => "EACCES".into(),
        rustix::io::Errno::INVAL => "EINVAL".into(),
        rustix::io::Errno::BADF => "EBADF".into(),
        rustix::io::Errno::BUSY => "EBUSY".into(),
        other => format!("errno {}", other.raw_os_error()),
    }
}

fn report(name: &str, outcome: Result<(), rustix::io::Errno>) {
    match outcome {
        Ok(()) => say(format!("attack {name} succeeded")),
        Err(e) => say(format!("attack {name} refused {}", errno_name(e))),
    }
}

/// `mmap` of the first page of `fd` with `prot`, shared; unmapped at once if it succeeds
/// (after writing a byte through it when writable: the write is what the attack wants).
fn try_map(fd: BorrowedFd<'_>, prot: rustix::mm::ProtFlags) -> Result<(), rustix::io::Errno> {
    // SAFETY: a fresh mapping chosen by the kernel, unmapped before return; the write goes to
    // its own (shared) page only when the kernel granted PROT_WRITE.
    unsafe {
        let p = rustix::mm::mmap(
            std::ptr::null_mut(),
            4096,
            prot,
            rustix::mm::MapFlags::SHARED,
            fd,
            0,
        )?;
        if prot.contains(rustix::mm::ProtFlags::WRITE) {
            p.cast::<u8>().add(4000).write_volatile(0xff);
        }
        rustix::mm::munmap(p, 4096)
    }
}

/// A read-only shared mapping of `fd`'s first page made writable with `mprotect`.
fn try_mprotect(fd: BorrowedFd<'_>) -> Result<(), rustix::io::Errno> {
    use rustix::mm::{MapFlags, MprotectFlags, ProtFlags};
    // SAFETY: a fresh read-only mapping chosen by the kernel, unmapped before return; nothing
    // is written through it.
    unsafe {
        let p = rustix::mm::mmap(
            std::ptr::null_mut(),
            4096,
            ProtFlags::READ,
            MapFlags::SHARED,
            fd,
            0,
        )?;
        let r = rustix::mm::mprotect(p, 4096, MprotectFlags::READ | MprotectFlags::WRITE);
        rustix::mm::munmap(p, 4096)?;
        r
    }
}

fn reopen(fd: BorrowedFd<'_>) -> Result<OwnedFd, rustix::io::Errno> {
    use std::os::fd::AsRawFd;
    rustix::fs::open(
        format!("/proc/self/fd/{}", fd.as_raw_fd()).as_str(),
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
}

fn attacker(c: &Common) -> anyhow::Result<()> {
    use rustix::mm::ProtFlags;
    let named = c.rest.iter().any(|a| a == "named");
    let (control, data) = if named {
        let path = format!(
            "/dev/shm{}",
            labhub::name::ChannelName::new(c.channel.as_str())?.segment_name()
        );
        let open = || -> anyhow::Result<OwnedFd> {
            Ok(rustix::fs::open(
                path.as_str(),
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )?)
        };
        (open()?, open()?)
    } else {
        granted_by_hand(c)?
    };
    say("granted");
    let size = rustix::fs::fstat(&data)?.st_size as u64;
    // The descriptor as handed over.
    report(
        "mmap-rw",
        try_map(data.as_fd(), ProtFlags::READ | ProtFlags::WRITE),
    );
    // Read-only, then made writable.
    report("mprotect-rw", try_mprotect(data.as_fd()));
    // Reopened read-write through /proc: the open itself succeeds (no boundary), the rest not.
    match reopen(data.as_fd()) {
        Err(e) => report("reopen-rw", Err(e)),
        Ok(rw) => {
            say("reopened read-write");
            report(
                "reopen-mmap-rw",
                try_map(rw.as_fd(), ProtFlags::READ | ProtFlags::WRITE),
            );
            report("reopen-mprotect-rw", try_mprotect(rw.as_fd()));
            report("reopen-write", rustix::io::write(&rw, b"x").map(|_| ()));
            report(
                "reopen-pwrite",
                rustix::io::pwrite(&rw, b"x", 100).map(|_| ()),
            );
            if named {
                // Growing and shrinking back leaves a named segment usable; shrinking it below
                // its size would kill its producer with SIGBUS.
                report(
                    "reopen-ftruncate-grow",
                    rustix::fs::ftruncate(&rw, size + 4096),
                );
                let _ = rustix::fs::ftruncate(&rw, size);
            } else {
                report("reopen-ftruncate-shrink", rustix::fs::ftruncate(&rw, 4096));
                report(
                    "reopen-ftruncate-grow",
                    rustix::fs::ftruncate(&rw, size + 4096),
                );
            }
            if !named {
                report(
                    "reopen-fallocate-grow",
                    rustix::fs::fallocate(&rw, rustix::fs::FallocateFlags::empty(), size, 4096),
                );
            }
        }
    }
    report(
        "seal-data",
        rustix::fs::fcntl_add_seals(&data, rustix::fs::SealFlags::WRITE),
    );
    match reopen(control.as_fd()) {
        Err(e) => report("control-reopen", Err(e)),
        Ok(_) if named => {}
        Ok(rw) => {
            report("control-ftruncate", rustix::fs::ftruncate(&rw, 0));
            report(
                "control-seal",
                rustix::fs::fcntl_add_seals(&rw, rustix::fs::SealFlags::FUTURE_WRITE),
            );
        }
    }
    say("done");
    // Hold the descriptors until the test has checked the frames are intact.
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    drop((control, data));
    Ok(())
}
