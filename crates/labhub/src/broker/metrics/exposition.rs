//! `/metrics`: a sample in the Prometheus text format (version 0.0.4), encoded by
//! prometheus-client.
//!
//! Names follow Prometheus conventions: the `labhub_` prefix, base units in the name
//! (`_seconds`, `_bytes`), `_total` on counters; rates are left to `rate()` and quantiles to
//! `histogram_quantile()`. The families are listed in `docs/PROTOCOL.md` §10.
#![deny(unsafe_code)]

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType::{self, Counter, Gauge, Histogram, Info};
use prometheus_client::registry::{Registry, Unit};

use super::sample::{ChannelSample, ChannelStatus, ConsumerSample, Sample};
use super::sampler::LatencyTotals;
use crate::latency::{BUCKETS, lower_bound_ns};

/// The `Content-Type` of the exposition.
pub(super) const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Powers of two (in ns) at which the fine latency buckets are summed into Prometheus
/// buckets: 2^10 ns (1 µs) to 2^34 ns (17 s), a factor of 4 apart.
const PROMETHEUS_EDGES: std::ops::RangeInclusive<u32> = 5..=17;

/// The latency buckets of the exposition: `(le in seconds, count in that bucket)`, the fine
/// buckets summed between consecutive edges (every edge is a fine bucket's lower bound).
fn prometheus_buckets(h: &crate::latency::Histogram) -> Vec<(f64, u64)> {
    let edges: Vec<u64> = PROMETHEUS_EDGES.map(|k| 1u64 << (2 * k)).collect();
    let mut out: Vec<(f64, u64)> = edges.iter().map(|&e| (e as f64 / 1e9, 0)).collect();
    out.push((f64::INFINITY, 0));
    for i in 0..BUCKETS {
        let lower = lower_bound_ns(i);
        let slot = edges.iter().position(|&e| lower < e).unwrap_or(edges.len());
        out[slot].1 += h.bucket(i);
    }
    out
}

#[derive(Debug)]
struct SampleCollector {
    sample: Arc<Sample>,
    latency: Arc<LatencyTotals>,
}

/// A metric's value.
enum Value {
    Counter(u64),
    Gauge(f64),
    GaugeInt(u64),
    Info,
}

/// One metric of a family: its labels and value.
type Metric<'a> = (Vec<(&'static str, &'a str)>, Value);

/// Encodes one family: its descriptor, then each metric.
fn family<'a>(
    encoder: &mut DescriptorEncoder,
    (name, help, unit, kind): (&str, &str, Option<Unit>, MetricType),
    metrics: impl IntoIterator<Item = Metric<'a>>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, unit.as_ref(), kind)?;
    for (labels, value) in metrics {
        let mut m = family.encode_family(&labels)?;
        match value {
            Value::Counter(v) => m.encode_counter::<NoLabelSet, _, u64>(&v, None)?,
            Value::Gauge(v) => m.encode_gauge(&v)?,
            Value::GaugeInt(v) => m.encode_gauge(&i64::try_from(v).unwrap_or(i64::MAX))?,
            Value::Info => m.encode_info(&[("", ""); 0])?,
        }
    }
    Ok(())
}

/// A channel figure for a family of per-channel metrics.
type ChannelFigure = fn(&ChannelSample) -> Option<Value>;
/// A consumer figure for a family of per-consumer metrics.
type ConsumerFigure = fn(&ConsumerSample) -> Option<Value>;

const CHANNEL_FAMILIES: [(&str, &str, Option<Unit>, MetricType, ChannelFigure); 7] = [
    (
        "channel_frames",
        "Frames published on the channel.",
        None,
        Counter,
        |c| c.frames_total.map(Value::Counter),
    ),
    (
        "channel_bytes",
        "Bytes of the frames published by copy.",
        None,
        Counter,
        |c| c.bytes_total.map(Value::Counter),
    ),
    (
        "channel_publish_failures",
        "Publish attempts that failed (ring full, timeout).",
        None,
        Counter,
        |c| c.publish_failures.map(Value::Counter),
    ),
    (
        "channel_dropped_frames",
        "Frames lost to backpressure (segment header).",
        None,
        Counter,
        |c| c.dropped.map(Value::Counter),
    ),
    (
        "channel_overwritten_frames",
        "Frames consumers lost to overwrites (segment header).",
        None,
        Counter,
        |c| c.overwritten.map(Value::Counter),
    ),
    (
        "channel_segment",
        "Size of the channel's shared-memory segment.",
        Some(Unit::Bytes),
        Gauge,
        |c| c.segment_bytes.map(Value::GaugeInt),
    ),
    (
        "channel_consumers",
        "Consumers of the channel.",
        None,
        Gauge,
        |c| Some(Value::GaugeInt(c.consumers.len() as u64)),
    ),
];

const CONSUMER_FAMILIES: [(&str, &str, Option<Unit>, MetricType, ConsumerFigure); 5] = [
    (
        "consumer_frames",
        "Frames the consumer read.",
        None,
        Counter,
        |k| k.frames_total.map(Value::Counter),
    ),
    (
        "consumer_missed_frames",
        "Frames the consumer lost to overwrites.",
        None,
        Counter,
        |k| k.missed.map(Value::Counter),
    ),
    (
        "consumer_reattached",
        "Times the consumer re-attached.",
        None,
        Counter,
        |k| k.reattached.map(Value::Counter),
    ),
    (
        "consumer_lag_frames",
        "Frames committed that the consumer has not read (segment consumer table).",
        None,
        Gauge,
        |k| k.lag_frames.map(Value::GaugeInt),
    ),
    (
        "consumer_heartbeat_age",
        "Time since the consumer's last heartbeat.",
        Some(Unit::Seconds),
        Gauge,
        |k| k.heartbeat_age_s.map(Value::Gauge),
    ),
];

/// How a consumer is named in labels: its client id, else `pid:N` for a segment reader.
fn consumer_id(k: &ConsumerSample) -> String {
    match (&k.client, k.pid) {
        (Some(id), _) => id.clone(),
        (None, Some(pid)) => format!("pid:{pid}"),
        (None, None) => String::new(),
    }
}

impl Collector for SampleCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.sample;
        let b = &s.broker;
        let single = |v| [(Vec::new(), v)];
        family(
            &mut e,
            (
                "broker_channels",
                "Channels the broker holds, up and down.",
                None,
                Gauge,
            ),
            single(Value::GaugeInt(b.channels)),
        )?;
        family(
            &mut e,
            ("broker_clients", "Live clients.", None, Gauge),
            single(Value::GaugeInt(b.clients)),
        )?;
        family(
            &mut e,
            ("broker_replies", "Requests answered.", None, Counter),
            single(Value::Counter(b.replies)),
        )?;
        family(
            &mut e,
            (
                "broker_refused_messages",
                "Messages refused by the decoder.",
                None,
                Counter,
            ),
            single(Value::Counter(b.refused_messages)),
        )?;
        family(
            &mut e,
            (
                "broker_notifications",
                "Notifications published.",
                None,
                Counter,
            ),
            single(Value::Counter(b.notifications)),
        )?;
        family(
            &mut e,
            (
                "broker_uptime",
                "Time since the broker started.",
                Some(Unit::Seconds),
                Gauge,
            ),
            single(Value::Gauge(b.uptime_s)),
        )?;

        let listed: Vec<&ChannelSample> = s
            .channels
            .iter()
            .filter(|c| c.state != ChannelStatus::Gone)
            .collect();
        family(
            &mut e,
            (
                "channel_up",
                "1 while the channel's producer is alive, 0 once it is gone.",
                None,
                Gauge,
            ),
            listed.iter().map(|c| {
                let up = u64::from(c.state == ChannelStatus::Up);
                (
                    vec![("channel", c.name.as_str()), ("kind", c.kind.as_str())],
                    Value::GaugeInt(up),
                )
            }),
        )?;
        family(
            &mut e,
            ("channel", "The channel's producer and policy.", None, Info),
            listed.iter().map(|c| {
                let labels = vec![
                    ("channel", c.name.as_str()),
                    ("kind", c.kind.as_str()),
                    ("producer", c.producer.as_str()),
                    ("policy", c.policy.as_deref().unwrap_or("")),
                ];
                (labels, Value::Info)
            }),
        )?;
        for (name, help, unit, kind, figure) in CHANNEL_FAMILIES {
            family(
                &mut e,
                (name, help, unit, kind),
                listed
                    .iter()
                    .filter_map(|c| Some((vec![("channel", c.name.as_str())], figure(c)?))),
            )?;
        }
        {
            let mut histograms = e.encode_descriptor(
                "channel_latency",
                "Frame timestamp to read, as the channel's consumers measured it.",
                Some(&Unit::Seconds),
                Histogram,
            )?;
            for (name, h) in self.latency.iter() {
                let labels = [("channel", name.as_str())];
                histograms
                    .encode_family(&labels)?
                    .encode_histogram::<NoLabelSet>(
                        h.sum_ns() as f64 / 1e9,
                        h.count(),
                        &prometheus_buckets(h),
                        None,
                    )?;
            }
        }

        let consumers: Vec<(&str, String, &ConsumerSample)> = listed
            .iter()
            .flat_map(|c| {
                c.consumers
                    .iter()
                    .map(|k| (c.name.as_str(), consumer_id(k), k))
            })
            .collect();
        for (name, help, unit, kind, figure) in CONSUMER_FAMILIES {
            family(
                &mut e,
                (name, help, unit, kind),
                consumers.iter().filter_map(|(channel, id, k)| {
                    Some((
                        vec![("channel", *channel), ("consumer", id.as_str())],
                        figure(k)?,
                    ))
                }),
            )?;
        }

        family(
            &mut e,
            (
                "client",
                "A live client and its library version.",
                None,
                Info,
            ),
            s.clients.iter().map(|c| {
                let labels = vec![
                    ("client", c.id.as_str()),
                    ("version", c.version.as_deref().unwrap_or("")),
                ];
                (labels, Value::Info)
            }),
        )?;
        family(
            &mut e,
            (
                "client_heartbeat_age",
                "Time since the client's last heartbeat.",
                Some(Unit::Seconds),
                Gauge,
            ),
            s.clients.iter().filter_map(|c| {
                Some((
                    vec![("client", c.id.as_str())],
                    Value::Gauge(c.heartbeat_age_s?),
                ))
            }),
        )?;
        Ok(())
    }
}

/// The exposition of `sample`.
pub(super) fn render(sample: Arc<Sample>, latency: Arc<LatencyTotals>) -> String {
    let mut registry = Registry::with_prefix("labhub");
    registry.register_collector(Box::new(SampleCollector { sample, latency }));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}
