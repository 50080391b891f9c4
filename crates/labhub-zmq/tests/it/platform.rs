//! Linux features the build enables (see labhub-zmq-sys/build.rs): close-on-exec descriptors
//! and working TCP keepalive. Observed through /proc, without calling the OS directly.
#![cfg(target_os = "linux")]

use std::fs;

use labhub_zmq::{Context, Flags, SocketType};

use crate::common::{WATCHDOG, bound, within_watchdog};

const O_CLOEXEC: u32 = 0o2_000_000;

/// (link target, flags) of every open descriptor of this process.
fn descriptors() -> Vec<(String, u32)> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let name = entry.file_name();
        // Descriptors may close between listing and reading: skip those.
        let Ok(target) = fs::read_link(entry.path()) else {
            continue;
        };
        let Ok(info) = fs::read_to_string(format!("/proc/self/fdinfo/{}", name.to_string_lossy()))
        else {
            continue;
        };
        let flags = info
            .lines()
            .find_map(|line| line.strip_prefix("flags:"))
            .and_then(|octal| u32::from_str_radix(octal.trim(), 8).ok())
            .unwrap_or(0);
        found.push((target.to_string_lossy().into_owned(), flags));
    }
    found
}

#[test]
fn libzmq_descriptors_are_close_on_exec_so_child_processes_do_not_inherit_them() {
    let context = Context::new().unwrap();
    let (_router, endpoint) = bound(&context, SocketType::Router);
    let dealer = context.socket(SocketType::Dealer).unwrap();
    dealer.connect(&endpoint).unwrap();

    let fds = descriptors();
    let libzmq_kinds = ["anon_inode:[eventpoll]", "anon_inode:[eventfd]"];
    for kind in libzmq_kinds {
        assert!(
            fds.iter().any(|(target, _)| target == kind),
            "no {kind} descriptor: the build did not enable it; open: {fds:?}"
        );
    }
    // Every descriptor of these kinds and every socket (Rust's own are close-on-exec too).
    for (target, flags) in &fds {
        if libzmq_kinds.contains(&target.as_str()) || target.starts_with("socket:") {
            assert_ne!(
                flags & O_CLOEXEC,
                0,
                "{target} is inherited by child processes"
            );
        }
    }
}

/// The keepalive timer state ("tr" column, 2 = keepalive) of established connections whose
/// local port is `port`, from /proc/net/tcp.
fn timer_states(port: u16) -> Vec<u8> {
    let table = fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = u16::from_str_radix(fields.get(1)?.rsplit(':').next()?, 16).ok()?;
            let established = *fields.get(3)? == "01";
            let timer = u8::from_str_radix(fields.get(5)?.split(':').next()?, 16).ok()?;
            (local_port == port && established).then_some(timer)
        })
        .collect()
}

#[test]
fn tcp_keepalive_makes_the_kernel_run_a_keepalive_timer_on_the_connection() {
    within_watchdog("keepalive timer", || {
        let context = Context::new().unwrap();
        let router = context.socket(SocketType::Router).unwrap();
        router.set_tcp_keepalive(Some(true)).unwrap();
        router.set_rcvtimeo(Some(WATCHDOG)).unwrap();
        router.bind("tcp://127.0.0.1:0").unwrap();
        let endpoint = router.last_endpoint().unwrap();
        let port: u16 = endpoint.rsplit(':').next().unwrap().parse().unwrap();
        let dealer = context.socket(SocketType::Dealer).unwrap();
        dealer.connect(&endpoint).unwrap();
        dealer.send(b"connected", Flags::NONE).unwrap();
        router.recv_multipart(Flags::NONE).unwrap();

        // The accepted connection is established; once its last segment is acknowledged the
        // only timer left is keepalive (the watchdog ends the wait if it never appears).
        loop {
            if timer_states(port).contains(&2) {
                break;
            }
            std::thread::yield_now();
        }
    });
}
