//! Integration tests of labhub-zmq over real sockets (tcp on 127.0.0.1, ipc in a temp dir).

mod common;
mod curve;
mod linger;
mod messaging;
mod monitor;
mod platform;
mod poll;
mod timeouts;
mod zap;
