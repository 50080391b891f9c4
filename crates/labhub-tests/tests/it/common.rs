//! What every module of this test binary shares: the shared helpers of the `labhub_tests`
//! library, and spawning the `labhub-test-child` binary (whose path only integration tests know).

pub use labhub_tests::{
    AbortWatchdog, ChildProc, ScratchDir, WATCHDOG, unique, wait_until, within_watchdog,
};

/// The `labhub-test-child` binary.
pub const CHILD_EXE: &str = env!("CARGO_BIN_EXE_labhub-test-child");

/// Spawns `labhub-test-child role args…`.
pub fn spawn_child(role: &str, args: &[&str]) -> ChildProc {
    ChildProc::spawn(CHILD_EXE, role, args)
}
