//! `labhub ls`: the channels the broker knows.

use std::time::{Duration, Instant};

use labhub::client::{ClientConfig, Hub};
use labhub::protocol::{BRIDGED_FROM, ChannelInfo, ChannelKind, ChannelState, Sharing};
use serde::Serialize;

use crate::args;
use crate::common::{self, ConnectArgs, out, out_json};

/// List the channels the broker knows: kind, state, producer, consumers, frame type, frame
/// rate, and the source of a channel a bridge brings from another hub.
///
/// The frame rate of a shared-memory channel on this machine is measured from its segment's
/// counter over --sample; other channels show "-". FRAMES is a shared-memory channel's element
/// type and largest shape (`u16[480x640]`), as its producer registered them.
///
/// JSON (--json): one object {"channels": [CHANNEL, ...]}, each CHANNEL the broker's channel
/// object (docs/PROTOCOL.md §3: name, kind, state, producer, consumers, counters, schema
/// {"element", "shape", ...}, metadata {"bridged_from": "CHANNEL@HUB"} for a bridged channel,
/// ...) plus "frame_rate" (frames/s, or null when not measured); with --all also "hub" on
/// each channel and "unreachable": [{"hub", "endpoint", "error"}].
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// Only channels whose name starts with PREFIX.
    #[arg(value_name = "PREFIX", value_parser = args::channel_prefix)]
    prefix: Option<String>,
    /// Only channels of this kind.
    #[arg(long, value_enum)]
    kind: Option<Kind>,
    /// How long to watch shared-memory counters to measure frame rates, 0 (do not) to 1h.
    #[arg(long, value_name = "DURATION", default_value = "500ms",
          value_parser = args::duration(Duration::ZERO..=args::HOUR))]
    sample: Duration,
    /// Also list the channels of every peer hub of broker.toml (a HUB column; a peer that
    /// cannot be reached is named on stderr).
    #[arg(long)]
    all: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// A channel kind on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Kind {
    /// Shared memory.
    Shm,
    /// ZeroMQ publish/subscribe.
    Pubsub,
    /// ZeroMQ request/reply.
    Reqrep,
}

impl From<Kind> for ChannelKind {
    fn from(k: Kind) -> Self {
        match k {
            Kind::Shm => ChannelKind::Shm,
            Kind::Pubsub => ChannelKind::Pubsub,
            Kind::Reqrep => ChannelKind::Reqrep,
        }
    }
}

/// One row of `ls --json`.
#[derive(Debug, Serialize)]
pub struct Row {
    /// The hub that listed it (with --all): this hub's name or a peer's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hub: Option<String>,
    /// The broker's channel object.
    #[serde(flatten)]
    pub channel: ChannelInfo,
    /// Frames per second, if measured.
    pub frame_rate: Option<f64>,
}

/// What a shared-memory channel's segment says about itself, if this process can read it: a
/// memfd channel's through a grant of the broker, a named one's by its name (on this machine).
pub fn segment_report(hub: &Hub, c: &ChannelInfo) -> Option<labhub::shm::SegmentReport> {
    if c.spec.kind != ChannelKind::Shm {
        return None;
    }
    let report = match c.spec.sharing {
        Some(Sharing::Memfd) if c.state == ChannelState::Up => {
            hub.inspect(c.spec.name.as_str()).map_err(|e| e.to_string())
        }
        Some(Sharing::Memfd) => return None,
        _ => labhub::shm::inspect(c.spec.name.as_str()).map_err(|e| e.to_string()),
    };
    match report {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::debug!(channel = %c.spec.name, error = %e, "the segment header cannot be read here");
            None
        }
    }
}

/// Measures the frame rate of each shared-memory channel this process can read over
/// `sample`.
pub fn frame_rates(hub: &Hub, channels: &[ChannelInfo], sample: Duration) -> Vec<Option<f64>> {
    let published = |c: &ChannelInfo| segment_report(hub, c).map(|s| s.published);
    if sample.is_zero() {
        return vec![None; channels.len()];
    }
    let start = Instant::now();
    let before: Vec<_> = channels.iter().map(published).collect();
    if before.iter().all(Option::is_none) {
        return before.iter().map(|_| None).collect();
    }
    std::thread::sleep(sample);
    let seconds = start.elapsed().as_secs_f64();
    channels
        .iter()
        .zip(before)
        .map(|(c, b)| Some((published(c)?.saturating_sub(b?)) as f64 / seconds))
        .collect()
}

pub(crate) fn state_name(state: ChannelState) -> &'static str {
    match state {
        ChannelState::Up => "up",
        ChannelState::Down => "down",
        _ => "unknown",
    }
}

/// A shared-memory channel's frame type as its producer registered it: `u16[480x640]`, or "-".
pub(crate) fn frames_text(c: &ChannelInfo) -> String {
    let Some(schema) = &c.spec.schema else {
        return "-".into();
    };
    match (&schema.element, &schema.shape) {
        (Some(e), Some(shape)) => {
            let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
            format!("{e}[{}]", dims.join("x"))
        }
        (Some(e), None) => e.clone(),
        _ => "-".into(),
    }
}

pub(crate) fn rate_text(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".into(), |r| format!("{r:.1}"))
}

/// The SOURCE cell: where a bridged channel's frames come from, else "-".
fn source_text(c: &ChannelInfo) -> String {
    match c.spec.metadata.get(BRIDGED_FROM) {
        Some(serde_json::Value::String(from)) => format!("bridged from {from}"),
        _ => "-".into(),
    }
}

/// Lists the channels.
pub fn run(args: LsArgs, verbose: u8) -> anyhow::Result<()> {
    let config = args.connect.resolve()?;
    // Peers are read before anything is sent, so a bad broker.toml fails first.
    let peers = if args.all {
        let home = common::home(args.connect.home.as_deref())?;
        Some(labhub::home::peers(&home)?)
    } else {
        None
    };
    let keys = config.keys.clone();
    let (_guard, hub) = common::connect(verbose, config)?;
    let channels = hub.list(args.prefix.as_deref(), args.kind.map(Into::into))?;
    let rates = frame_rates(&hub, &channels, args.sample);
    // (hub name, channel, frame rate) for every channel listed.
    let own = peers.as_ref().map(|p| p.own_name.clone());
    let mut rows: Vec<(Option<String>, ChannelInfo, Option<f64>)> = channels
        .into_iter()
        .zip(rates)
        .map(|(c, r)| (own.clone(), c, r))
        .collect();
    let mut unreachable = Vec::new();
    for peer in peers.iter().flat_map(|p| &p.peers) {
        let config = ClientConfig::new(peer.endpoint.clone(), peer.public_key, keys.clone())
            .request_timeout(args.connect.timeout);
        match Hub::connect(config)
            .and_then(|h| h.list(args.prefix.as_deref(), args.kind.map(Into::into)))
        {
            Ok(list) => rows.extend(list.into_iter().map(|c| (Some(peer.name.clone()), c, None))),
            Err(e) => {
                eprintln!("labhub: peer {} ({}): {e}", peer.name, peer.endpoint);
                unreachable.push(serde_json::json!({
                    "hub": peer.name, "endpoint": peer.endpoint, "error": e.to_string()
                }));
            }
        }
    }
    if args.json {
        let rows: Vec<Row> = rows
            .into_iter()
            .map(|(hub, channel, frame_rate)| Row {
                hub,
                channel,
                frame_rate,
            })
            .collect();
        let mut value = serde_json::json!({ "channels": rows });
        if args.all {
            value["unreachable"] = unreachable.into();
        }
        return out_json(&value);
    }
    if rows.is_empty() {
        eprintln!("no channels");
        return Ok(());
    }
    let mut header = vec![
        "NAME".to_owned(),
        "KIND".into(),
        "STATE".into(),
        "PRODUCER".into(),
        "CONSUMERS".into(),
        "FRAMES".into(),
        "FRAMES/S".into(),
        "SOURCE".into(),
    ];
    if args.all {
        header.insert(0, "HUB".into());
    }
    let mut table = vec![header];
    for (at, c, rate) in &rows {
        let mut row = vec![
            c.spec.name.to_string(),
            c.spec.kind.as_str().into(),
            state_name(c.state).into(),
            match c.producer_pid {
                Some(pid) => format!("{} (pid {pid})", c.producer),
                None => c.producer.to_string(),
            },
            c.consumers.to_string(),
            frames_text(c),
            rate_text(*rate),
            source_text(c),
        ];
        if args.all {
            row.insert(0, at.clone().unwrap_or_default());
        }
        table.push(row);
    }
    let columns = table[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            table
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in table {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out(line.join("  ").trim_end())?;
    }
    Ok(())
}
