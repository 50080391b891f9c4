//! Every numeric, duration, size, endpoint, name and path argument of every command, fed extreme
//! values through the real binary: each bad value is a usage error (exit code 2) naming the
//! argument, never a panic (exit code 101), a hang or a runtime failure.

use std::path::Path;

use proptest::prelude::*;

use super::{Broker, Channel, USAGE, labhub, run};

/// What an argument accepts.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// A whole number from `.0` to `.1`.
    Int(i128, i128),
    /// A decimal number of seconds from `.0` to `.1`.
    Seconds(f64, f64),
    /// `0`, or a decimal number from `.0` to `.1`.
    ZeroOr(f64, f64),
    /// A duration from `.0` to `.1` milliseconds.
    Duration(u128, u128),
    /// A byte count from `.0` to `.1`.
    Size(u128, u128),
    /// An endpoint to connect to.
    Connect,
    /// An endpoint to bind.
    Bind,
    /// A channel name (or a prefix of one).
    Name,
    /// A file or directory path.
    Path,
    /// An IP address and port.
    Address,
}

/// One argument: the command line before it, how it is spelt (`--flag=` or a positional), and
/// what follows it.
#[derive(Debug, Clone, Copy)]
struct Arg {
    before: &'static [&'static str],
    flag: &'static str,
    after: &'static [&'static str],
    kind: Kind,
}

const fn flag(before: &'static [&'static str], flag: &'static str, kind: Kind) -> Arg {
    Arg {
        before,
        flag,
        after: &[],
        kind,
    }
}

const DAY_MS: u128 = 86_400_000;
const YEAR_S: f64 = 365.0 * 86_400.0;

/// Every argument that takes a number, a duration, a size, an endpoint, a name or a path.
const ARGS: &[Arg] = &[
    // The connection flags, through each command that has them.
    flag(&["ls"], "--broker", Kind::Connect),
    flag(&["info", "cam0"], "--broker", Kind::Connect),
    flag(&["call", "cam0", "x"], "--broker", Kind::Connect),
    flag(&["ls"], "--timeout", Kind::Duration(1, DAY_MS)),
    flag(&["watch", "cam0"], "--timeout", Kind::Duration(1, DAY_MS)),
    flag(
        &["call", "cam0", "x"],
        "--timeout",
        Kind::Duration(1, DAY_MS),
    ),
    flag(&["ls"], "--home", Kind::Path),
    flag(&["sub", "cam0"], "--home", Kind::Path),
    // ls, info
    flag(&["ls"], "--sample", Kind::Duration(0, 3_600_000)),
    flag(&["info", "cam0"], "--sample", Kind::Duration(0, 3_600_000)),
    Arg {
        before: &["ls"],
        flag: "",
        after: &[],
        kind: Kind::Name,
    },
    Arg {
        before: &["info"],
        flag: "",
        after: &[],
        kind: Kind::Name,
    },
    // watch
    Arg {
        before: &["watch"],
        flag: "",
        after: &[],
        kind: Kind::Name,
    },
    flag(
        &["watch", "cam0"],
        "--seconds",
        Kind::Seconds(0.001, YEAR_S),
    ),
    flag(
        &["watch", "cam0"],
        "--count",
        Kind::Int(1, u64::MAX as i128),
    ),
    flag(&["watch", "cam0"], "--interval", Kind::Duration(10, DAY_MS)),
    // pub, sub, call
    Arg {
        before: &["pub"],
        flag: "",
        after: &["message"],
        kind: Kind::Name,
    },
    flag(
        &["pub", "cam0", "message"],
        "--wait-subscribers",
        Kind::Int(0, 100_000),
    ),
    flag(
        &["pub", "cam0", "message"],
        "--wait-timeout",
        Kind::Duration(1, DAY_MS),
    ),
    Arg {
        before: &["sub"],
        flag: "",
        after: &[],
        kind: Kind::Name,
    },
    flag(&["sub", "cam0"], "--count", Kind::Int(1, u64::MAX as i128)),
    flag(&["sub", "cam0"], "--seconds", Kind::Seconds(0.001, YEAR_S)),
    flag(
        &["sub", "cam0"],
        "--max-message-size",
        Kind::Size(1, 1 << 40),
    ),
    flag(
        &["call", "cam0", "x"],
        "--max-message-size",
        Kind::Size(1, 1 << 40),
    ),
    Arg {
        before: &["call"],
        flag: "",
        after: &["request"],
        kind: Kind::Name,
    },
    // demo
    flag(&["demo"], "--seconds", Kind::Seconds(0.001, 86_400.0)),
    flag(&["demo"], "--frame-size", Kind::Size(8, 256 << 20)),
    flag(&["demo"], "--rate", Kind::ZeroOr(0.01, 1e6)),
    flag(&["demo"], "--consumers", Kind::Int(1, 8)),
    flag(&["demo"], "--slots", Kind::Int(2, 1024)),
    flag(&["demo"], "--interval", Kind::Duration(10, DAY_MS)),
    // hub
    flag(&["hub"], "--home", Kind::Path),
    flag(&["hub"], "--config", Kind::Path),
    flag(&["hub"], "--endpoint", Kind::Bind),
    flag(&["hub"], "--notify-endpoint", Kind::Bind),
    flag(
        &["hub"],
        "--heartbeat-interval-ms",
        Kind::Int(10, 3_600_000),
    ),
    flag(&["hub"], "--max-missed-heartbeats", Kind::Int(1, 1000)),
    flag(&["hub"], "--allow-list", Kind::Path),
    flag(&["hub"], "--secret-file", Kind::Path),
    flag(&["hub"], "--audit-log", Kind::Path),
    flag(&["hub"], "--metrics", Kind::Address),
    flag(&["hub", "--metrics"], "--metrics-token-file", Kind::Path),
    // top
    flag(&["top"], "--metrics", Kind::Address),
    flag(&["top"], "--token-file", Kind::Path),
    flag(&["top"], "--home", Kind::Path),
    flag(&["top"], "--interval", Kind::Duration(100, 3_600_000)),
    flag(&["top"], "--count", Kind::Int(1, u64::MAX as i128)),
    flag(&["top"], "--timeout", Kind::Duration(1, DAY_MS)),
    // keygen
    flag(&["keygen", "--client", "--plain"], "--out", Kind::Path),
    flag(&["keygen"], "--home", Kind::Path),
    flag(&["keygen"], "--secret-file", Kind::Path),
];

/// Values bad for every number and duration: not finite, overflowing, malformed.
const NOT_NUMBERS: &[&str] = &[
    "NaN", "nan", "inf", "-inf", "infinity", "1e400", "-1e400", "", " ", "x", "1,5", "0x10",
];

/// The values the issue names, bad for the arguments they are given to.
const HEADLINE: &[&str] = &["1e19", "2e19", "1e-300", "-1", "18446744073709551616"];

/// Runs `labhub` with `value` for `arg` and checks it is refused as a usage error naming it.
fn assert_refused(arg: &Arg, value: &str, scratch: &Path) -> Result<(), TestCaseError> {
    let mut cmd = labhub(scratch);
    cmd.args(arg.before);
    if arg.flag.is_empty() {
        // A positional: `--` so that a value starting with `-` is still taken as the value.
        cmd.arg("--").arg(value);
    } else {
        cmd.arg(format!("{}={value}", arg.flag));
    }
    cmd.args(arg.after);
    let r = run(cmd);
    let shown = format!("{:?} {} {value:?}", arg.before, arg.flag);
    prop_assert!(
        !r.stderr.contains("panicked"),
        "{shown}: a panic: {}",
        r.stderr
    );
    prop_assert_eq!(
        r.code,
        USAGE,
        "{}: exit code {}: {}",
        shown,
        r.code,
        r.stderr
    );
    let named = if arg.flag.is_empty() {
        r.stderr.contains("CHANNEL") || r.stderr.contains("PREFIX")
    } else {
        r.stderr.contains(arg.flag)
    };
    prop_assert!(named, "{shown}: the error does not name it: {}", r.stderr);
    prop_assert!(r.stdout.is_empty(), "{shown}: printed {}", r.stdout);
    Ok(())
}

#[test]
fn the_headline_values_are_usage_errors_for_every_numeric_argument() {
    let scratch = tempfile::tempdir().unwrap();
    for arg in ARGS {
        for value in NOT_NUMBERS.iter().chain(HEADLINE) {
            // None of these values is a whole number in range, a duration, a size or a
            // number of seconds any argument accepts.
            let numeric = !matches!(
                arg.kind,
                Kind::Connect | Kind::Bind | Kind::Name | Kind::Path | Kind::Address
            );
            if !numeric {
                continue;
            }
            assert_refused(arg, value, scratch.path()).unwrap();
        }
    }
    // Nothing was created in the home: the values were refused before any side effect.
    assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);
}

#[test]
fn a_300_character_ipc_endpoint_is_a_usage_error() {
    let scratch = tempfile::tempdir().unwrap();
    let endpoint = format!("ipc:///tmp/{}", "e".repeat(300));
    for arg in ARGS
        .iter()
        .filter(|a| matches!(a.kind, Kind::Connect | Kind::Bind))
    {
        assert_refused(arg, &endpoint, scratch.path()).unwrap();
    }
}

/// A number of seconds as text, in plain or exponent notation.
fn float_text(v: f64, exponent: bool) -> String {
    if exponent {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

/// Values out of `kind`'s range, or malformed for it.
fn bad_value(kind: Kind) -> BoxedStrategy<String> {
    let not_numbers = proptest::sample::select(NOT_NUMBERS).prop_map(str::to_owned);
    match kind {
        Kind::Int(lo, hi) => prop_oneof![
            (i128::MIN..lo).prop_map(|v| v.to_string()),
            (hi + 1..=i128::MAX).prop_map(|v| v.to_string()),
            any::<f64>()
                .prop_filter("not a whole number", |v| v.fract() != 0.0 || !v.is_finite())
                .prop_map(|v| v.to_string()),
            "[0-9]{40,80}".prop_map(|s| format!("9{s}")),
            not_numbers,
        ]
        .boxed(),
        Kind::Seconds(lo, hi) => (any::<f64>(), any::<bool>())
            .prop_filter("out of range", move |(v, _)| !(lo..=hi).contains(v))
            .prop_map(|(v, e)| float_text(v, e))
            .boxed(),
        Kind::ZeroOr(lo, hi) => prop_oneof![
            (any::<f64>(), any::<bool>())
                .prop_filter("out of range", move |(v, _)| *v != 0.0
                    && !(lo..=hi).contains(v))
                .prop_map(|(v, e)| float_text(v, e)),
            (1e-320f64..lo).prop_map(|v| v.to_string()),
            Just("1e-300".to_owned()),
        ]
        .boxed(),
        Kind::Duration(lo, hi) => {
            let units: &[(&str, u128)] = &[
                ("ms", 1),
                ("s", 1000),
                ("m", 60_000),
                ("h", 3_600_000),
                ("d", 86_400_000),
            ];
            prop_oneof![
                (any::<u64>(), proptest::sample::select(units))
                    .prop_filter("out of range", move |(n, (_, ms))| {
                        !(lo..=hi).contains(&(u128::from(*n) * ms))
                    })
                    .prop_map(|(n, (unit, _))| format!("{n}{unit}")),
                // Clear of the bounds by more than a rounding of seconds to nanoseconds.
                (any::<f64>(), any::<bool>())
                    .prop_filter("out of range", move |(v, _)| {
                        let ms = v * 1000.0;
                        !v.is_finite()
                            || *v < 0.0
                            || ms < lo as f64 - 1e-3
                            || ms > hi as f64 * (1.0 + 1e-12) + 1e-3
                    })
                    .prop_map(|(v, e)| float_text(v, e)),
                "[0-9]{25,60}[smhd]".prop_map(|s| format!("9{s}")),
                not_numbers,
            ]
            .boxed()
        }
        Kind::Size(lo, hi) => {
            let units: &[(&str, u128)] = &[
                ("", 1),
                ("k", 1 << 10),
                ("KiB", 1 << 10),
                ("kB", 1000),
                ("M", 1 << 20),
                ("MiB", 1 << 20),
                ("MB", 1_000_000),
                ("GiB", 1 << 30),
                ("GB", 1_000_000_000),
            ];
            prop_oneof![
                (any::<u64>(), proptest::sample::select(units))
                    .prop_filter("out of range", move |(n, (_, unit))| {
                        !(lo..=hi).contains(&(u128::from(*n) * unit))
                    })
                    .prop_map(|(n, (unit, _))| format!("{n}{unit}")),
                Just("-1".to_owned()),
                Just("1.5MiB".to_owned()),
                Just("12 parsecs".to_owned()),
                Just("1e6".to_owned()),
                not_numbers,
            ]
            .boxed()
        }
        Kind::Connect | Kind::Bind => prop_oneof![
            (108usize..4000).prop_map(|n| format!("ipc:///{}", "p".repeat(n))),
            (65_536u64..=u64::MAX).prop_map(|p| format!("tcp://127.0.0.1:{p}")),
            "[a-z0-9.:/]{0,300}".prop_filter("no transport", |s| {
                !s.starts_with("tcp://") && !s.starts_with("ipc://")
            }),
            Just("ipc://".to_owned()),
            Just("tcp://:5570".to_owned()),
            Just("tcp://127.0.0.1:5570 ; rm".to_owned()),
        ]
        .boxed(),
        Kind::Address => prop_oneof![
            (65_536u64..=u64::MAX).prop_map(|p| format!("127.0.0.1:{p}")),
            "[a-z]{1,20}:[0-9]{1,5}",
            "[0-9.]{0,20}",
            Just("tcp://127.0.0.1:5572".to_owned()),
            Just("[::1]".to_owned()),
            Just("256.0.0.1:80".to_owned()),
        ]
        .boxed(),
        Kind::Name => prop_oneof![
            (129usize..5000).prop_map(|n| "n".repeat(n)),
            "[a-z]{0,10}[/ *?\\\\\u{e9}\u{1}][a-z]{0,10}",
        ]
        .boxed(),
        Kind::Path => prop_oneof![
            (256usize..3000).prop_map(|n| format!("/tmp/{}", "c".repeat(n))),
            (2100usize..4000).prop_map(|n| "d/".repeat(n)),
        ]
        .boxed(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Any argument, any value outside what it accepts: exit code 2, the argument named.
    #[test]
    fn every_bad_value_of_every_argument_is_a_usage_error(
        (index, value) in (0..ARGS.len()).prop_flat_map(|i| (Just(i), bad_value(ARGS[i].kind)))
    ) {
        let scratch = tempfile::tempdir().unwrap();
        assert_refused(&ARGS[index], &value, scratch.path())?;
    }
}

#[test]
fn a_server_key_file_that_never_ends_is_refused_after_a_bounded_read() {
    let scratch = tempfile::tempdir().unwrap();
    let big = scratch.path().join("big.pub");
    std::fs::write(&big, vec![b'#'; 1 << 20]).unwrap();
    for file in [Path::new("/dev/zero"), big.as_path()] {
        let mut c = labhub(scratch.path());
        c.args(["ls", "--server-key"]).arg(file);
        // `run` fails the test if the command does not end within its watchdog.
        let r = run(c);
        assert_eq!(r.code, USAGE, "{}", r.stderr);
        assert!(r.stderr.contains("--server-key"), "{}", r.stderr);
        assert!(r.stderr.contains("longer than 4096 bytes"), "{}", r.stderr);
        assert!(
            r.stderr.contains(&file.display().to_string()),
            "{}",
            r.stderr
        );
    }
}

#[test]
fn frame_sizes_take_binary_units_and_spelt_out_decimal_ones() {
    let scratch = tempfile::tempdir().unwrap();
    for (text, bytes) in [
        ("64k", 65_536),
        ("64KiB", 65_536),
        ("64kB", 64_000),
        ("1MiB", 1 << 20),
    ] {
        let lines = super::demo::short_demo(scratch.path(), &["--frame-size", text]);
        let summary = lines.last().unwrap();
        assert_eq!(summary["frame_size"], bytes, "{text}");
    }
}

#[test]
fn help_states_what_the_size_units_mean() {
    let scratch = tempfile::tempdir().unwrap();
    let mut c = labhub(scratch.path());
    c.args(["demo", "--help"]);
    let r = run(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("KiB = 1024"), "{}", r.stdout);
    assert!(r.stdout.contains("powers of 1000"), "{}", r.stdout);
}

/// The values reported to crash a command that had reached a live broker and channel: the
/// arguments are refused before the command connects, so the broker never matters.
#[test]
fn the_reported_values_are_usage_errors_against_a_live_broker() {
    let broker = Broker::start();
    let channel = Channel::new(&broker);
    let long_ipc = format!("ipc:///tmp/{}", "e".repeat(300));
    for args in [
        vec!["watch", &channel.name, "--seconds", "1e19"],
        vec!["watch", &channel.name, "--seconds", "2e19"],
        vec!["watch", &channel.name, "--interval", "1e19"],
        vec!["info", &channel.name, "--sample", "1e19"],
        vec!["ls", "--timeout", "2e19"],
        vec!["sub", &channel.name, "--seconds", "1e19"],
    ] {
        let r = run(broker.labhub(&args));
        assert!(!r.stderr.contains("panicked"), "{args:?}: {}", r.stderr);
        assert_eq!(r.code, USAGE, "{args:?}: {}", r.stderr);
    }
    // The endpoint replaces the broker's: refused before any socket is made.
    let mut c = labhub(broker.home());
    c.args(["ls", "--broker", &long_ipc]);
    let r = run(c);
    assert_eq!(r.code, USAGE, "{}", r.stderr);
    assert!(r.stderr.contains("--broker"), "{}", r.stderr);
}
