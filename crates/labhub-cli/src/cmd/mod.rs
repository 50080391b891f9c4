//! One module per subcommand.

pub mod hub;
pub mod keygen;
