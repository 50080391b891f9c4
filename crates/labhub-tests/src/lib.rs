//! Helpers shared by labhub's integration tests: spawning the child binary, unique names,
//! and a watchdog so a deadlocked test fails instead of hanging CI.
