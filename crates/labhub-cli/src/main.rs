//! The `labhub` command.
//!
//! Exit codes: 0 success, 1 an error (printed with its causes on stderr), 2 a usage error.
#![forbid(unsafe_code)]

use clap::Parser;

mod cmd;

/// labhub: shared-memory data channels and a CurveZMQ broker for laboratory software.
#[derive(Debug, Parser)]
#[command(name = "labhub", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

/// The subcommands; each later issue adds its own.
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run the broker in the foreground.
    Hub(cmd::hub::HubArgs),
    /// Make a CURVE key pair.
    Keygen(cmd::keygen::KeygenArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => {
            use clap::CommandFactory;
            // No subcommand: show what there is rather than doing nothing silently.
            let _ = Cli::command().print_help();
            return std::process::ExitCode::from(2);
        }
        Some(Command::Hub(args)) => cmd::hub::run(args),
        Some(Command::Keygen(args)) => cmd::keygen::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("labhub: error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
