//! Builds libzmq 4.3.5 from the `zeromq-src` crate with CURVE enabled, linked against the static
//! libsodium that `libsodium-sys-stable` builds from its bundled source. No system package needed.

use std::env;
use std::path::PathBuf;

/// Platform features zeromq-src does not detect on Linux (libzmq's CMake would): without them
/// the TCP keepalive options are silently ignored, and the epoll/eventfd descriptors and
/// accepted sockets are not created close-on-exec (a child process spawned by another thread
/// could inherit them). All exist since Linux 2.6.27 / glibc 2.10.
const LINUX_DEFINES: &[&str] = &[
    "ZMQ_HAVE_SO_KEEPALIVE",
    "ZMQ_HAVE_TCP_KEEPCNT",
    "ZMQ_HAVE_TCP_KEEPIDLE",
    "ZMQ_HAVE_TCP_KEEPINTVL",
    "ZMQ_HAVE_SOCK_CLOEXEC",
    "HAVE_ACCEPT4",
    "ZMQ_IOTHREAD_POLLER_USE_EPOLL_CLOEXEC",
    "ZMQ_HAVE_EVENTFD",
    "ZMQ_HAVE_EVENTFD_CLOEXEC",
];

fn main() {
    // `libsodium-sys-stable` declares `links = "sodium"`, so its `cargo:lib=` / `cargo:include=`
    // metadata reaches this script as DEP_SODIUM_LIB / DEP_SODIUM_INCLUDE.
    let lib_dir = sodium_dir("DEP_SODIUM_LIB");
    let include_dir = sodium_dir("DEP_SODIUM_INCLUDE");
    println!("cargo:rerun-if-env-changed=DEP_SODIUM_LIB");
    println!("cargo:rerun-if-env-changed=DEP_SODIUM_INCLUDE");
    println!("cargo:rerun-if-changed=build.rs");

    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        add_cxx_defines(LINUX_DEFINES);
    }

    // With a libsodium location zeromq-src defines ZMQ_HAVE_CURVE and ZMQ_USE_LIBSODIUM; without
    // one libzmq has no CURVE at all (that is why the published `zmq` crate lacks it).
    // The DRAFT API gives zmq_socket_monitor_versioned C linkage (without it zmq.h does not
    // declare it and zmq.cpp defines it as a C++ function): its version 2 events name both
    // endpoints of a connection, which the broker's perimeter needs. Nothing else labhub uses
    // changes with it.
    zeromq_src::Build::new()
        .with_libsodium(Some(zeromq_src::LibLocation::new(lib_dir, include_dir)))
        .enable_draft(true)
        .build();
}

/// zeromq-src owns its `cc::Build`, so extra defines go through the flags variable `cc` reads
/// (it merges every `CXXFLAGS*` variant); any value the user set is kept.
fn add_cxx_defines(defines: &[&str]) {
    let target = env::var("TARGET").unwrap_or_default();
    let var = format!("CXXFLAGS_{target}");
    let mut flags = env::var(&var).unwrap_or_default();
    for define in defines {
        flags.push_str(" -D");
        flags.push_str(define);
    }
    // SAFETY: a build script is single-threaded here: no thread has been spawned yet (cc's
    // parallel compilation starts inside `build()` below), so nothing reads the environment
    // concurrently.
    unsafe { env::set_var(&var, flags.trim_start()) };
}

fn sodium_dir(var: &str) -> PathBuf {
    match env::var_os(var) {
        Some(dir) => PathBuf::from(dir),
        None => {
            // A build script reports failure by panicking; say exactly what is missing.
            panic!(
                "{var} is not set: libsodium-sys-stable did not report where it built libsodium \
                 (SODIUM_LIB_DIR or pkg-config overrides do not provide an include directory; \
                 unset them to build libsodium from source)"
            )
        }
    }
}
