//! `labhub info CHANNEL`: one channel in detail.

use std::time::Duration;

use labhub::protocol::{ChannelKind, Sharing};

use crate::args;
use crate::common::{self, ConnectArgs, out, out_json};
use crate::exit::NotFound;

/// Show one channel: what the broker knows (producer, consumers, counters; for a
/// shared-memory channel how its segment is shared, and for one the broker shares by memfd to
/// whom it granted it: keys, client ids, pids and uids) and, for a shared-memory channel this
/// process can read (through a grant of the broker, or by its name on this machine), its
/// segment header (element type, shape, slots, policy, counters, producer and consumer table
/// with liveness).
///
/// JSON (--json): {"channel": CHANNEL, "frame_rate": number|null, "segment": SEGMENT|null},
/// CHANNEL as in `ls --json` (with "sharing" and "grants": [{"role", "client", "key", "pid",
/// "uid", "gid"}] for memfd channels), SEGMENT `labhub::shm::SegmentReport`: {"channel",
/// "sharing" ("named" or "memfd"), "shm_name" (null for memfd), "layout_version",
/// "total_size", "control_size", "instance", "policy", "slots", "slot_size", "element", "numpy_dtype",
/// "max_shape", "schema_name", "schema_version", "flex_size", "checksum", "has_secret",
/// "pooled", "published", "dropped", "overwritten", "evicted", "state_version",
/// "producer": {"pid", "alive", "attaches", "heartbeat_age_ms"}|null,
/// "consumers": [{"index", "pid", "state", "alive", "delivery", "position", "cursor", "lag",
/// "received", "missed", "dropped", "held", "heartbeat_age_ms"}]} ("delivery": the consumer's
/// delivery mode, `lossless`, `latest`, `queue:N`, `every:K` or `max-rate:HZ`, null when
/// unknown; "lag": frames committed it has not looked at; "dropped": frames its mode
/// skipped; "held": the frame id the consumer holds now, or null).
/// A channel the broker does not know exits with code 4.
#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    /// The channel name.
    #[arg(value_name = "CHANNEL", value_parser = args::channel_name)]
    channel: String,
    /// How long to watch the segment's counter to measure the frame rate, 0 (do not) to 1h.
    #[arg(long, value_name = "DURATION", default_value = "500ms",
          value_parser = args::duration(Duration::ZERO..=args::HOUR))]
    sample: Duration,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// Shows the channel.
pub fn run(args: InfoArgs, verbose: u8) -> anyhow::Result<()> {
    let config = args.connect.resolve()?;
    let (_guard, hub) = common::connect(verbose, config)?;
    // `list` rather than `discover`: it also shows a channel whose producer is gone.
    let channel = hub
        .list(Some(&args.channel), None)?
        .into_iter()
        .find(|c| c.spec.name.as_str() == args.channel)
        .ok_or_else(|| NotFound {
            channel: args.channel.clone(),
        })?;
    let rate = super::ls::frame_rates(&hub, std::slice::from_ref(&channel), args.sample)[0];
    let seg = super::ls::segment_report(&hub, &channel);
    if args.json {
        return out_json(&serde_json::json!({
            "channel": channel,
            "frame_rate": rate,
            "segment": seg,
        }));
    }
    let c = &channel;
    out(format!("channel    {}", c.spec.name))?;
    out(format!("kind       {}", c.spec.kind.as_str()))?;
    out(format!("state      {}", super::ls::state_name(c.state)))?;
    let mut producer = c.producer.to_string();
    if let Some(pid) = c.producer_pid {
        producer += &format!(" (pid {pid})");
    }
    if let Some(host) = &c.producer_host {
        producer += &format!(" on {host}");
    }
    out(format!("producer   {producer}"))?;
    out(format!("consumers  {}", c.consumers))?;
    if let Some(e) = &c.spec.endpoint {
        out(format!("endpoint   {e}"))?;
    }
    if c.spec.kind == ChannelKind::Shm {
        match (c.spec.sharing, &c.spec.shm_name) {
            (Some(Sharing::Memfd), _) => {
                out("shared     memfd via the broker (data sealed read-only)")?
            }
            (_, Some(s)) => out(format!("shared     named segment {s}"))?,
            (_, None) => {}
        }
    }
    for g in &c.grants {
        out(format!(
            "granted    {} to {} (key {}) pid {} uid {} gid {}",
            g.role.as_str(),
            g.client,
            g.key,
            g.pid,
            g.uid,
            g.gid
        ))?;
    }
    if let Some(s) = c.spec.size {
        out(format!("size       {s} bytes"))?;
    }
    if let Some(p) = &c.spec.policy {
        out(format!("policy     {p}"))?;
    }
    if c.spec.kind == ChannelKind::Shm {
        out(format!("frames     {}", super::ls::frames_text(c)))?;
    }
    out(format!("frames/s   {}", super::ls::rate_text(rate)))?;
    if !c.counters.is_empty() {
        let counters: Vec<String> = c.counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out(format!(
            "counters   {} (producer's last heartbeat)",
            counters.join(" ")
        ))?;
    }
    if !c.spec.metadata.is_empty() {
        out(format!(
            "metadata   {}",
            serde_json::Value::Object(c.spec.metadata.clone())
        ))?;
    }
    if let Some(s) = seg {
        out("segment (read from its header)")?;
        let shape: Vec<String> = s.max_shape.iter().map(u64::to_string).collect();
        let schema = match &s.schema_name {
            Some(name) => format!(", schema {name} v{}", s.schema_version),
            None => String::new(),
        };
        out(format!(
            "  frames of {} [{}] (numpy {}), at most {} bytes{schema}",
            s.element,
            shape.join(" x "),
            s.numpy_dtype,
            s.slot_size
        ))?;
        out(format!(
            "  {} slots, policy {}, flexible zone {} bytes, {} bytes in all{}{}",
            s.slots,
            s.policy,
            s.flex_size,
            s.total_size,
            if s.checksum { ", checksums" } else { "" },
            if s.has_secret { ", secret" } else { "" },
        ))?;
        let producer = match &s.producer {
            Some(p) if p.alive => format!("pid {} (alive)", p.pid),
            Some(p) => format!("pid {} (dead)", p.pid),
            None => "none".into(),
        };
        out(format!(
            "  published {}, dropped {}, overwritten {}, consumers evicted {}, producer {producer}",
            s.published, s.dropped, s.overwritten, s.evicted
        ))?;
        for k in &s.consumers {
            let held = k
                .held
                .map_or_else(|| "nothing".to_owned(), |f| format!("frame {f}"));
            let mode = k
                .delivery
                .map_or_else(|| "unknown mode".to_owned(), |m| m.to_string());
            out(format!(
                "  consumer {}: pid {} {}{}, {mode}, lag {}, received {}, missed {}, dropped {}, holding {held}",
                k.index,
                k.pid,
                k.state,
                if k.alive { "" } else { " (dead)" },
                k.lag,
                k.received,
                k.missed,
                k.dropped
            ))?;
        }
    }
    Ok(())
}
