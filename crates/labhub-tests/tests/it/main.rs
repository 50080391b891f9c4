//! labhub's integration tests: one binary, one module per concept (one link on a 2-core CI).
<<<<<<< HEAD
mod shm;

mod sync;
=======
>>>>>>> broker

mod broker;
mod filelock;
mod lifecycle;
mod log;
<<<<<<< HEAD
mod client;
mod e2e;
=======
mod shm;
mod sync;
>>>>>>> broker
