//! One module per subcommand.

pub mod demo;
pub mod hub;
pub mod info;
pub mod keygen;
pub mod ls;
pub mod watch;
