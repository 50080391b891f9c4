//! The `labhub` command.
#![forbid(unsafe_code)]

use clap::Parser;

/// labhub: shared-memory data channels and a CurveZMQ broker for laboratory software.
#[derive(Debug, Parser)]
#[command(name = "labhub", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

/// The subcommands; each later issue adds its own.
#[derive(Debug, clap::Subcommand)]
enum Command {}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => {
            use clap::CommandFactory;
            // No subcommand: show what there is rather than doing nothing silently.
            let _ = Cli::command().print_help();
            std::process::ExitCode::from(2)
        }
        Some(command) => match command {},
    }
}
