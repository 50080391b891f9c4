//! `labhub top`: the broker's figures in the terminal, refreshed every second.

use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use crossterm::{cursor, queue, style, terminal};
use labhub::broker::metrics::{self, ChannelSample, ChannelStatus, Sample, Token};

use crate::args;
use crate::exit::{Unreachable, UsageError};
use crate::meter::micros;

/// Show every channel live, sorted by frame rate: state, frames/s, MB/s, latency mean and p99,
/// drops, consumer lag, heartbeat age, and each consumer below its channel. Reads the broker's
/// metrics endpoint (`labhub hub --metrics`). `q`, Esc or Ctrl-C quits.
///
/// JSON (--json): JSON Lines, one sample per interval (the `/api/sample` document).
/// Without a terminal, prints the table once per interval.
#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// The broker's metrics address, IP:PORT (as given to `labhub hub --metrics`).
    #[arg(long, value_name = "IP:PORT", default_value = metrics::DEFAULT_ADDRESS,
          value_parser = args::socket_address(1..=65535))]
    metrics: SocketAddr,
    /// A file holding the metrics token [default: <home>/metrics.token if present].
    #[arg(long, value_name = "FILE", value_parser = args::path)]
    token_file: Option<PathBuf>,
    /// The labhub home, where the hub stores a generated token [env: LABHUB_HOME] [default: <data dir>/labhub].
    #[arg(long, value_name = "DIR", value_parser = args::path)]
    home: Option<PathBuf>,
    /// Time between samples, 100ms to 1h.
    #[arg(long, value_name = "DURATION", default_value = "1s",
          value_parser = args::duration(Duration::from_millis(100)..=args::HOUR))]
    interval: Duration,
    /// Stop after this many samples (at least 1).
    #[arg(long, value_name = "N", value_parser = args::integer(1..=u64::MAX))]
    count: Option<u64>,
    /// How long to wait for each answer of the endpoint, 1ms to 1day.
    #[arg(long, value_name = "DURATION", default_value = "5s",
          value_parser = args::duration(args::MILLISECOND..=args::DAY))]
    timeout: Duration,
    /// Print JSON Lines instead of the table.
    #[arg(long)]
    json: bool,
}

/// Reads samples from the metrics endpoint.
struct Source {
    agent: ureq::Agent,
    url: String,
    authorization: Option<String>,
    address: SocketAddr,
}

/// Largest sample accepted from the endpoint.
const MAX_SAMPLE_BYTES: u64 = 256 << 20;

impl Source {
    fn new(args: &TopArgs) -> anyhow::Result<Self> {
        let token = match &args.token_file {
            Some(file) => Some(Token::from_file(file)?),
            None => match crate::common::home(args.home.as_deref()) {
                Ok(home) => {
                    let file = metrics::token::default_token_file(&home);
                    file.exists().then(|| Token::from_file(&file)).transpose()?
                }
                Err(_) => None,
            },
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(args.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(Self {
            agent,
            url: format!("http://{}/api/sample", args.metrics),
            authorization: token.map(|t| format!("Bearer {}", t.as_str())),
            address: args.metrics,
        })
    }

    /// The JSON text of the current sample.
    fn fetch_text(&self) -> anyhow::Result<String> {
        let mut request = self.agent.get(&self.url);
        if let Some(a) = &self.authorization {
            request = request.header("Authorization", a);
        }
        let mut response = request.call().map_err(|e| {
            anyhow::Error::new(Unreachable(format!(
                "no metrics endpoint answers at {}: is `labhub hub --metrics {}` running? ({e})",
                self.address, self.address
            )))
        })?;
        let status = response.status();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_SAMPLE_BYTES)
            .read_to_string()
            .with_context(|| format!("reading the sample from {}", self.url))?;
        match status.as_u16() {
            200 => Ok(body),
            401 => Err(UsageError(format!(
                "the metrics endpoint at {} needs its token: pass --token-file (the hub stores a \
                 generated one in <home>/metrics.token)",
                self.address
            ))
            .into()),
            code => anyhow::bail!(
                "the metrics endpoint at {} answered {code}: {}",
                self.address,
                body.trim()
            ),
        }
    }

    fn fetch(&self) -> anyhow::Result<Sample> {
        let text = self.fetch_text()?;
        serde_json::from_str(&text)
            .with_context(|| format!("the sample from {} is not valid", self.url))
    }
}

/// Runs `top`.
pub fn run(args: TopArgs) -> anyhow::Result<()> {
    let source = Source::new(&args)?;
    if args.json {
        return every_interval(&args, |_| {
            let text = source.fetch_text()?;
            crate::common::out(text.trim())?;
            Ok(())
        });
    }
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return every_interval(&args, |first| {
            let sample = source.fetch()?;
            if !first {
                crate::common::out("")?;
            }
            for line in table(&sample, usize::MAX, 132) {
                crate::common::out(line)?;
            }
            Ok(())
        });
    }
    // Fail before touching the terminal if the endpoint cannot be read at all.
    let first = source.fetch()?;
    interactive(&args, source, first)
}

/// Calls `each` once per interval, at most `--count` times.
fn every_interval(
    args: &TopArgs,
    mut each: impl FnMut(bool) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut next = Instant::now();
    let mut n = 0u64;
    loop {
        each(n == 0)?;
        n += 1;
        if args.count.is_some_and(|c| n >= c) {
            return Ok(());
        }
        next += args.interval;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

// ---- the interactive table ------------------------------------------------------------------

/// Raw mode and the alternate screen, left again on drop (every return and unwinding panic) and
/// by the panic hook (before the panic message is printed).
struct Screen;

fn restore_terminal() {
    let mut out = std::io::stdout();
    let _ = crossterm::execute!(out, cursor::Show, terminal::LeaveAlternateScreen);
    let _ = terminal::disable_raw_mode();
}

impl Screen {
    fn enter() -> anyhow::Result<Self> {
        terminal::enable_raw_mode().context("switching the terminal to raw mode")?;
        let screen = Self;
        crossterm::execute!(
            std::io::stdout(),
            terminal::EnterAlternateScreen,
            cursor::Hide
        )
        .context("entering the alternate screen")?;
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            previous(info);
        }));
        Ok(screen)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore_terminal();
    }
}

enum Update {
    Sample(Box<Sample>),
    Failed(String),
}

fn interactive(args: &TopArgs, source: Source, first: Sample) -> anyhow::Result<()> {
    // SIGTERM, SIGHUP and a SIGINT sent by `kill` end the loop, so the terminal is restored.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
        signal_hook::consts::SIGINT,
    ] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing the signal handlers")?;
    }
    let (tx, updates) = mpsc::sync_channel::<Update>(1);
    let interval = args.interval;
    let fetcher_stop = Arc::clone(&stop);
    // The fetcher blocks on the network; the terminal loop stays responsive to keys.
    std::thread::spawn(move || {
        let mut next = Instant::now() + interval;
        while !fetcher_stop.load(Ordering::Relaxed) {
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            next += interval;
            let update = match source.fetch() {
                Ok(s) => Update::Sample(Box::new(s)),
                Err(e) => Update::Failed(format!("{e:#}")),
            };
            if tx.send(update).is_err() {
                return;
            }
        }
    });
    let screen = Screen::enter()?;
    let mut sample = first;
    let mut problem: Option<String> = None;
    let mut shown = 1u64;
    draw(&args.metrics, &sample, problem.as_deref())?;
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if event::poll(Duration::from_millis(100)).context("reading the terminal")? {
            match event::read().context("reading the terminal")? {
                Event::Key(k) if k.kind != KeyEventKind::Release => {
                    let ctrl_c =
                        k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                    if matches!(k.code, KeyCode::Char('q' | 'Q') | KeyCode::Esc) || ctrl_c {
                        break;
                    }
                }
                Event::Resize(..) => draw(&args.metrics, &sample, problem.as_deref())?,
                _ => {}
            }
        }
        match updates.try_recv() {
            Ok(Update::Sample(s)) => {
                sample = *s;
                problem = None;
                shown += 1;
            }
            Ok(Update::Failed(e)) => problem = Some(e),
            Err(_) => continue,
        }
        draw(&args.metrics, &sample, problem.as_deref())?;
        if args.count.is_some_and(|c| shown >= c) {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    drop(screen);
    Ok(())
}

fn draw(address: &SocketAddr, sample: &Sample, problem: Option<&str>) -> anyhow::Result<()> {
    // A terminal that reports no size (a pseudo-terminal nobody sized) gets the classic one.
    let (width, height) = match terminal::size() {
        Ok((w, h)) if w > 0 && h > 0 => (w, h),
        _ => (80, 24),
    };
    let (width, height) = (usize::from(width), usize::from(height));
    let mut out = std::io::stdout().lock();
    queue!(out, terminal::Clear(terminal::ClearType::All))?;
    let b = &sample.broker;
    let mut lines = vec![format!(
        "labhub top — {address} — {} channels, {} clients, up {:.0} s — q quits",
        b.channels, b.clients, b.uptime_s
    )];
    if let Some(p) = problem {
        lines.push(format!("(not updated: {p})"));
    } else {
        lines.push(String::new());
    }
    lines.extend(table(sample, height.saturating_sub(2), width));
    for (row, line) in lines.iter().take(height).enumerate() {
        let clipped: String = line.chars().take(width).collect();
        queue!(
            out,
            cursor::MoveTo(0, u16::try_from(row).unwrap_or(u16::MAX)),
            style::Print(clipped)
        )?;
    }
    out.flush()?;
    Ok(())
}

// ---- the table, shared by the terminal and plain output -------------------------------------

fn rate(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v < 10.0 => format!("{v:.2}"),
        Some(v) if v < 1000.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.0}"),
    }
}

fn number(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn age(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.1}s"))
}

fn sum(values: impl IntoIterator<Item = Option<u64>>) -> Option<u64> {
    values
        .into_iter()
        .flatten()
        .fold(None, |acc: Option<u64>, v| {
            Some(acc.unwrap_or(0).saturating_add(v))
        })
}

/// Channels sorted by frame rate (fastest first, unknown rates last, then by name).
fn by_rate(sample: &Sample) -> Vec<&ChannelSample> {
    let mut channels: Vec<&ChannelSample> = sample.channels.iter().collect();
    channels.sort_by(|a, b| {
        let key = |c: &ChannelSample| c.frames_per_s.unwrap_or(f64::NEG_INFINITY);
        key(b).total_cmp(&key(a)).then_with(|| a.name.cmp(&b.name))
    });
    channels
}

/// The table's lines: a header, then per channel a row and its consumers' rows, at most
/// `rows` lines of at most `width` characters.
fn table(sample: &Sample, rows: usize, width: usize) -> Vec<String> {
    let line = |name: &str, cells: [&str; 9], who: &str| {
        let text = format!(
            "{name:<28} {:<5} {:>10} {:>8} {:>10} {:>10} {:>8} {:>7} {:>4} {:>6}  {who}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            cells[6],
            cells[7],
            cells[8]
        );
        text.chars().take(width).collect::<String>()
    };
    let mut out = vec![line(
        "CHANNEL",
        [
            "STATE", "FRAMES/S", "MB/S", "LATENCY", "P99", "DROPS", "LAG", "CONS", "HB",
        ],
        "PRODUCER / CONSUMER",
    )];
    if sample.channels.is_empty() {
        out.push("(no channels)".into());
    }
    for ch in by_rate(sample) {
        if out.len() >= rows {
            break;
        }
        let state = match ch.state {
            ChannelStatus::Up => "up",
            ChannelStatus::Down => "down",
            _ => "gone",
        };
        let missed = sum(ch.consumers.iter().map(|k| k.missed));
        let drops = sum([ch.publish_failures, ch.dropped, ch.overwritten, missed]);
        let who = match (ch.producer_pid, &ch.producer_version) {
            (Some(pid), Some(v)) => format!("{} (pid {pid}, {v})", ch.producer),
            (Some(pid), None) => format!("{} (pid {pid})", ch.producer),
            (None, _) => ch.producer.clone(),
        };
        out.push(line(
            &clip(&ch.name, 28),
            [
                state,
                &rate(ch.frames_per_s),
                &rate(ch.mb_per_s),
                &micros(ch.latency_mean_us),
                &micros(ch.latency_p99_us),
                &number(drops),
                &number(ch.max_lag_frames),
                &ch.consumers.len().to_string(),
                &age(ch.producer_heartbeat_age_s),
            ],
            &who,
        ));
        for k in &ch.consumers {
            if out.len() >= rows {
                break;
            }
            let id = k
                .client
                .clone()
                .unwrap_or_else(|| k.pid.map_or_else(|| "?".into(), |p| format!("pid {p}")));
            let who = match (k.pid, &k.version) {
                (Some(pid), Some(v)) => format!("pid {pid}, {v}"),
                (Some(pid), None) => format!("pid {pid}"),
                _ => String::new(),
            };
            out.push(line(
                &clip(&format!("  └ {id}"), 28),
                [
                    "",
                    &rate(k.frames_per_s),
                    &rate(k.mb_per_s),
                    &micros(k.latency_mean_us),
                    &micros(k.latency_p99_us),
                    &number(k.missed),
                    &number(k.lag_frames),
                    "",
                    &age(k.heartbeat_age_s),
                ],
                &who,
            ));
        }
    }
    out
}

fn clip(text: &str, n: usize) -> String {
    if text.chars().count() <= n {
        text.to_owned()
    } else {
        let mut s: String = text.chars().take(n - 1).collect();
        s.push('…');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use labhub::broker::metrics::ConsumerSample;

    fn channel(name: &str, fps: Option<f64>) -> ChannelSample {
        ChannelSample {
            name: name.into(),
            kind: "shm".into(),
            producer: "cam".into(),
            frames_per_s: fps,
            ..ChannelSample::default()
        }
    }

    #[test]
    fn the_table_is_sorted_by_rate_with_consumers_under_their_channel() {
        let mut fast = channel("fast", Some(1000.0));
        fast.consumers.push(ConsumerSample {
            client: Some("viewer".into()),
            lag_frames: Some(4),
            ..ConsumerSample::default()
        });
        fast.overwritten = Some(2);
        fast.max_lag_frames = Some(4);
        fast.publish_failures = Some(1);
        let sample = Sample {
            channels: vec![channel("idle", None), fast, channel("slow", Some(5.0))],
            ..Sample::default()
        };
        let lines = table(&sample, 100, 200);
        assert!(lines[0].starts_with("CHANNEL"));
        let names: Vec<&str> = lines[1..]
            .iter()
            .map(|l| l.split_whitespace().next().unwrap())
            .collect();
        assert_eq!(names, ["fast", "└", "slow", "idle"], "{lines:#?}");
        assert!(lines[2].contains("viewer"), "{}", lines[2]);
        let fast: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(fast[2], "1000", "{fast:?}");
        assert_eq!(fast[6], "3", "drops: failures + overwritten: {fast:?}");
        assert_eq!(fast[7], "4", "lag: {fast:?}");
        assert_eq!(table(&sample, 2, 200).len(), 2, "rows are bounded");
        assert!(
            table(&sample, 100, 20)
                .iter()
                .all(|l| l.chars().count() <= 20)
        );
    }
}
