//! One module per subcommand.

pub mod bridge;
pub mod call;
pub mod demo;
pub mod gateway;
pub mod hub;
pub mod info;
pub mod keygen;
pub mod ls;
pub mod publish;
pub mod record;
pub mod replay;
pub mod subscribe;
pub mod top;
pub mod watch;
