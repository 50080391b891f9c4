//! The `labhub` command.
//!
//! Each subcommand is one module of [`cmd`], with a clap `Args` struct and a `run` function that
//! parses, validates (bad input fails before any side effect), then acts. Data goes to stdout,
//! logs and errors to stderr; `--json` prints the same data for scripts. Exit codes are one
//! table, in [`exit`].
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

mod args;
mod cmd;
mod common;
mod demo_home;
mod exit;
mod meter;
mod stop;

/// labhub: shared-memory data channels and a CurveZMQ broker for laboratory software.
#[derive(Debug, Parser)]
#[command(name = "labhub", version, about, long_about = None, after_help = exit::HELP)]
struct Cli {
    /// More log lines on stderr: -v info, -vv debug, -vvv trace (default: warnings). `hub` uses --log-level.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run the broker in the foreground.
    Hub(cmd::hub::HubArgs),
    /// Make a CURVE key pair.
    Keygen(cmd::keygen::KeygenArgs),
    /// List the channels the broker knows.
    #[command(after_help = exit::HELP)]
    Ls(cmd::ls::LsArgs),
    /// Show one channel in detail.
    #[command(after_help = exit::HELP)]
    Info(cmd::info::InfoArgs),
    /// Watch a channel's frame rate, throughput, latency and losses live.
    #[command(after_help = exit::HELP)]
    Watch(cmd::watch::WatchArgs),
    /// Publish messages on a pub/sub channel.
    #[command(after_help = exit::HELP)]
    Pub(cmd::publish::PubArgs),
    /// Print the messages of a pub/sub channel.
    #[command(after_help = exit::HELP)]
    Sub(cmd::subscribe::SubArgs),
    /// Send one request to a request/reply channel and print the reply.
    #[command(after_help = exit::HELP)]
    Call(cmd::call::CallArgs),
    /// Record shared-memory channels with their metadata into a Zarr v3 directory.
    #[command(after_help = exit::HELP)]
    Record(cmd::record::RecordArgs),
    /// Publish a recording into live channels with its timing (or faster).
    #[command(after_help = exit::HELP)]
    Replay(cmd::replay::ReplayArgs),
    /// Republish a local channel into a channel of a peer hub, over CurveZMQ.
    #[command(after_help = exit::HELP)]
    Bridge(cmd::bridge::BridgeArgs),
    /// Receive bridges from peer hubs into this hub's channels.
    #[command(after_help = exit::HELP)]
    Gateway(cmd::gateway::GatewayArgs),
    /// Show every channel's rates, latency, drops and lag live, sorted by rate (`hub --metrics`).
    #[command(after_help = exit::HELP)]
    Top(cmd::top::TopArgs),
    /// Run an embedded broker, a synthetic camera and consumers, and measure them.
    #[command(after_help = exit::HELP)]
    Demo(cmd::demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version come here too, with exit code 0; usage errors with 2.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(exit::USAGE));
        }
    };
    let verbose = cli.verbose;
    let result = match cli.command {
        None => {
            use clap::CommandFactory;
            // No subcommand: show what there is rather than doing nothing silently.
            let _ = Cli::command().print_help();
            return ExitCode::from(exit::USAGE);
        }
        Some(Command::Hub(args)) => cmd::hub::run(args).map(|_| ()),
        Some(Command::Keygen(args)) => cmd::keygen::run(args).map(|_| ()),
        Some(Command::Ls(args)) => cmd::ls::run(args, verbose),
        Some(Command::Info(args)) => cmd::info::run(args, verbose),
        Some(Command::Watch(args)) => cmd::watch::run(args, verbose),
        Some(Command::Pub(args)) => cmd::publish::run(args, verbose),
        Some(Command::Sub(args)) => cmd::subscribe::run(args, verbose),
        Some(Command::Call(args)) => cmd::call::run(args, verbose),
        Some(Command::Record(args)) => cmd::record::run(args, verbose),
        Some(Command::Replay(args)) => cmd::replay::run(args, verbose),
        Some(Command::Bridge(args)) => cmd::bridge::run(args, verbose),
        Some(Command::Gateway(args)) => cmd::gateway::run(args, verbose),
        Some(Command::Top(args)) => cmd::top::run(args),
        Some(Command::Demo(args)) => cmd::demo::run(args, verbose),
    };
    match result {
        Ok(()) => ExitCode::from(exit::OK),
        // The reader went away (`labhub ls | head -1`): not a failure.
        Err(e) if exit::is_broken_pipe(&e) => ExitCode::from(exit::OK),
        Err(e) => {
            let code = exit::code_for(&e);
            let mut text = format!("labhub: error: {e}");
            for cause in e.chain().skip(1) {
                text += &format!("\n  caused by: {cause}");
            }
            if code == exit::USAGE {
                text += "\n\nFor more information, try '--help'.";
            }
            eprintln!("{text}");
            ExitCode::from(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser as _};

    use super::Cli;

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Each value parser's type must be its field's, or clap panics when it fills the field:
    /// every flag of every command is given once here.
    #[test]
    fn every_flag_of_every_command_parses_into_its_field() {
        let key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
        let connect =
            format!("--broker tcp://127.0.0.1:5570 --server-key {key} --home /tmp/h --timeout 2s");
        for line in [
            "hub --home /tmp/h --config /tmp/c.toml --endpoint tcp://*:5570 \
             --notify-endpoint ipc:///tmp/n --heartbeat-interval-ms 500 \
             --max-missed-heartbeats 3 --allow-list /tmp/a --allow-any-client \
             --secret-file /tmp/s --audit-log /tmp/l --log-level debug --json \
             --metrics 127.0.0.1:0 --metrics-token-file /tmp/t"
                .to_owned(),
            "hub --metrics".to_owned(),
            "top --metrics 127.0.0.1:5572 --token-file /tmp/t --home /tmp/h --interval 500ms \
             --count 2 --timeout 1s --json"
                .to_owned(),
            "keygen --client --out /tmp/k --home /tmp/h --secret-file /tmp/s --plain".to_owned(),
            format!("-vvv ls cam --kind shm --sample 0 --json {connect}"),
            format!("info cam0 --sample 1s --json {connect}"),
            format!("watch cam0 --seconds 2.5 --count 3 --interval 100ms --json {connect}"),
            format!(
                "pub cam0 hello --topic t --wait-subscribers 2 --wait-timeout 1m --json {connect}"
            ),
            format!("sub cam0 --topic a --topic b --count 2 --seconds 1 --json {connect}"),
            format!("call cam0 ping --json {connect}"),
            format!(
                "record cam0 cam1 -o /tmp/r.zarr --attr a=b --attr c= --seconds 1.5 --frames 3 \
                 --flush-interval 250ms --shard-size 16MiB --no-hub --json {connect}"
            ),
            format!(
                "replay /tmp/r.zarr --as cam2 --as cam0=cam3 --rate 2x --loop --keep-timestamps \
                 --max-frame-size 1MiB --preload 1GiB --no-hub --json {connect}"
            ),
            format!("watch cam0 --mode queue:8 {connect}"),
            format!(
                "bridge cam0 --to ws --as cam1 --delivery lossy --connections 4 --seconds 2 \
                 --json {connect}"
            ),
            format!("bridge cam0 --to ws --lossy {connect}"),
            format!(
                "gateway --listen tcp://0.0.0.0:5580 --advertise 10.0.0.1 --window 16 \
                 --orphan-timeout 1m --max-message-size 64MiB --io-threads 4 --max-bridges 8 --json {connect}"
            ),
            format!("-v ls --all {connect}"),
            "demo --seconds 1 --frame-size 64KiB --rate 0 --consumers 3 --slots 16 \
             --interval 100ms --json"
                .to_owned(),
            "demo".to_owned(),
        ] {
            let argv = std::iter::once("labhub").chain(line.split_whitespace());
            if let Err(e) = Cli::try_parse_from(argv) {
                panic!("{line}: {e}");
            }
        }
    }
}
