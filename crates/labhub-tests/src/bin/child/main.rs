//! `labhub-test-child ROLE [ARGS…]`: the child processes that integration tests spawn and kill.
//!
//! Each role lives in its own module; the first argument picks it.

<<<<<<< HEAD
mod shm;
mod sync;
mod lifecycle;
mod log;
mod client;
=======
mod broker;
mod filelock;
mod lifecycle;
mod log;
mod shm;
mod sync;
>>>>>>> broker

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let role = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    #[allow(clippy::match_single_binding)] // each concept's module adds its roles here
    match role.as_str() {
<<<<<<< HEAD
        r if r.starts_with("shm-") => shm::run(r, &rest),
        sync_role if sync_role.starts_with("sync-") => sync::run(sync_role, &rest),
        r if r.starts_with("lifecycle-") => lifecycle::run(r, &rest),
        "log-append" => log::append(&rest),
        "log-spam" => log::spam(&rest),
        r if r.starts_with("client-") => client::run(r, &rest),
=======
        r if r.starts_with("broker-") => broker::run(r, &rest),
        r if r.starts_with("filelock-") => filelock::run(r, &rest),
        r if r.starts_with("lifecycle-") => lifecycle::run(r, &rest),
        "log-append" => log::append(&rest),
        "log-spam" => log::spam(&rest),
        r if r.starts_with("shm-") => shm::run(r, &rest),
        r if r.starts_with("sync-") => sync::run(r, &rest),
>>>>>>> broker
        other => anyhow::bail!("unknown child role {other:?} (args {rest:?})"),
    }
}
