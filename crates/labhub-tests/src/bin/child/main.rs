//! `labhub-test-child ROLE [ARGS…]`: the child processes that integration tests spawn and kill.
//!
//! Each role lives in its own module; the first argument picks it.

mod broker;
mod client;
mod filelock;
mod grant;
mod interop;
mod lifecycle;
mod log;
mod msg;
mod shm;
mod sync;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let role = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    #[allow(clippy::match_single_binding)] // each concept's module adds its roles here
    match role.as_str() {
        r if r.starts_with("broker-") => broker::run(r, &rest),
        r if r.starts_with("client-") => client::run(r, &rest),
        r if r.starts_with("filelock-") => filelock::run(r, &rest),
        r if r.starts_with("interop-") => interop::run(r, &rest),
        r if r.starts_with("grant-") => grant::run(r, &rest),
        r if r.starts_with("lifecycle-") => lifecycle::run(r, &rest),
        "log-append" => log::append(&rest),
        "log-spam" => log::spam(&rest),
        r if r.starts_with("msg-") => msg::run(r, &rest),
        r if r.starts_with("shm-") => shm::run(r, &rest),
        r if r.starts_with("sync-") => sync::run(r, &rest),
        other => anyhow::bail!("unknown child role {other:?} (args {rest:?})"),
    }
}
