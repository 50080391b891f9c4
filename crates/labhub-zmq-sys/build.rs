//! Builds libzmq 4.3.5 from the `zeromq-src` crate with CURVE enabled, linked against the static
//! libsodium that `libsodium-sys-stable` builds from its bundled source. No system package needed.

use std::env;
use std::path::PathBuf;

fn main() {
    // `libsodium-sys-stable` declares `links = "sodium"`, so its `cargo:lib=` / `cargo:include=`
    // metadata reaches this script as DEP_SODIUM_LIB / DEP_SODIUM_INCLUDE.
    let lib_dir = sodium_dir("DEP_SODIUM_LIB");
    let include_dir = sodium_dir("DEP_SODIUM_INCLUDE");
    println!("cargo:rerun-if-env-changed=DEP_SODIUM_LIB");
    println!("cargo:rerun-if-env-changed=DEP_SODIUM_INCLUDE");
    println!("cargo:rerun-if-changed=build.rs");

    // With a libsodium location zeromq-src defines ZMQ_HAVE_CURVE and ZMQ_USE_LIBSODIUM; without
    // one libzmq has no CURVE at all (that is why the published `zmq` crate lacks it).
    zeromq_src::Build::new()
        .with_libsodium(Some(zeromq_src::LibLocation::new(lib_dir, include_dir)))
        .build();
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
