//! The metrics thread: turns each [`Snapshot`] the broker thread hands over into a [`Sample`]
//! (joining channels, heartbeat figures and segment headers), keeps a short rate history per
//! channel, and publishes the result for the HTTP side.
#![deny(unsafe_code)]

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::latency::Histogram;
use crate::protocol::{ChannelKind, ChannelState, Counters};

use super::feed::{ChannelSnap, ClientSnap, EndSnap, Snapshot};
use super::sample::{
    BrokerSample, ChannelSample, ChannelStatus, ClientSample, ConsumerSample, HistoryPoint, Sample,
};
use super::segment::{self, SegmentFigures};

/// Points of rate history kept per channel.
pub(super) const HISTORY_POINTS: usize = 120;
/// How long a removed channel stays in samples, shown as gone.
const GONE_RETENTION: Duration = Duration::from_secs(60);
/// Most removed channels kept at once.
const MAX_GONE: usize = 1024;
/// An end whose last heartbeat is older than this many heartbeat intervals has no current rate.
const STALE_INTERVALS: f64 = 2.5;

/// The cumulative latency histogram of each up or down channel, for the exposition.
pub(super) type LatencyTotals = Vec<(String, Box<Histogram>)>;

/// The rate history of each channel, oldest point first; shared with the HTTP side, which
/// serialises it only when an event stream opens.
pub(super) type History = HashMap<String, VecDeque<HistoryPoint>>;

/// What the sampler remembers between samples.
#[derive(Debug, Default)]
pub(super) struct Sampler {
    gone: BTreeMap<String, (Instant, ChannelSample)>,
    last: Option<Arc<Sample>>,
    history: Arc<Mutex<History>>,
    segments: HashMap<String, SegmentEntry>,
}

/// Most segment headers read per sample. With more shared-memory channels than this, they are
/// read in turn (the oldest reading first), so the metrics thread's work stays bounded however
/// many channels there are, and each channel's segment figures are at most
/// `channels / SEGMENT_READS_PER_SAMPLE` samples old.
pub(super) const SEGMENT_READS_PER_SAMPLE: usize = 200;

/// The last reading of a channel's segment.
#[derive(Debug)]
struct SegmentEntry {
    figures: Option<SegmentFigures>,
    read_at: Instant,
    /// Frames per second between this reading and the one before.
    rate: Option<f64>,
}

fn us(ns: Option<f64>) -> Option<f64> {
    ns.map(|v| v / 1e3)
}

fn counter(c: &Counters, name: &str) -> Option<u64> {
    c.get(name).copied()
}

impl Sampler {
    /// A sampler that keeps its history in `history`.
    pub fn with_history(history: Arc<Mutex<History>>) -> Self {
        Self {
            history,
            ..Self::default()
        }
    }

    /// The sample of `snap`, the channels' latency totals, and the history point of each
    /// channel sampled.
    pub fn sample(&mut self, snap: &Snapshot) -> (Arc<Sample>, LatencyTotals) {
        let stale = snap.heartbeat_interval.mul_f64(STALE_INTERVALS);
        let mut channels = Vec::with_capacity(snap.channels.len());
        let mut totals = Vec::new();
        self.read_segments(snap);
        for ch in &snap.channels {
            channels.push(self.channel(snap, ch, stale));
            if let Some(t) = &ch.latency_total {
                totals.push((ch.info.spec.name.to_string(), t.clone()));
            }
        }
        self.track_gone(snap.taken, &mut channels);
        self.record_history(snap.time_unix_ms, &channels);
        let clients = clients(snap, &channels);
        let sample = Arc::new(Sample {
            time_unix_ms: snap.time_unix_ms,
            broker: BrokerSample {
                channels: snap.channels.len() as u64,
                clients: snap.clients.len() as u64,
                replies: snap.stats.replies,
                refused_messages: snap.stats.refused,
                notifications: snap.stats.notifications,
                heartbeat_interval_ms: u64::try_from(snap.heartbeat_interval.as_millis())
                    .unwrap_or(u64::MAX),
                uptime_s: snap.uptime.as_secs_f64(),
            },
            channels,
            clients,
        });
        self.last = Some(Arc::clone(&sample));
        (sample, totals)
    }

    /// How many channels have a segment reading.
    #[cfg(test)]
    pub fn segments_read(&self) -> usize {
        self.segments.len()
    }

    /// Reads the segments whose readings are oldest, at most [`SEGMENT_READS_PER_SAMPLE`].
    fn read_segments(&mut self, snap: &Snapshot) {
        let shm: HashMap<&str, _> = snap
            .channels
            .iter()
            .filter(|c| c.info.spec.kind == ChannelKind::Shm)
            .filter_map(|c| {
                let name = &c.info.spec.name;
                let source = match snap.memfds.get(name) {
                    Some(pair) => segment::Source::Memfd(pair),
                    None => segment::Source::Named(c.info.spec.shm_name.as_ref()?),
                };
                Some((name.as_str(), (name, source)))
            })
            .collect();
        self.segments
            .retain(|name, _| shm.contains_key(name.as_str()));
        let mut due: Vec<(Option<Instant>, &str)> = shm
            .keys()
            .map(|name| (self.segments.get(*name).map(|e| e.read_at), *name))
            .collect();
        // Never read first, then the oldest readings.
        due.sort_unstable();
        for (_, name) in due.into_iter().take(SEGMENT_READS_PER_SAMPLE) {
            let (channel, source) = shm[name];
            let figures = segment::read(channel, source);
            let now = Instant::now();
            let rate = self.segments.get(name).and_then(|old| {
                let (then, before) = (old.read_at, old.figures.as_ref()?.published);
                let published = figures.as_ref()?.published;
                let seconds = now.saturating_duration_since(then).as_secs_f64();
                (seconds > 0.0)
                    .then(|| published.checked_sub(before).map(|d| d as f64 / seconds))
                    .flatten()
            });
            self.segments.insert(
                name.to_owned(),
                SegmentEntry {
                    figures,
                    read_at: now,
                    rate,
                },
            );
        }
    }

    fn channel(&self, snap: &Snapshot, ch: &ChannelSnap, stale: Duration) -> ChannelSample {
        let info = &ch.info;
        let name = info.spec.name.as_str();
        let producer = snap.clients.get(&info.producer);
        let producer_end = producer.and_then(|p| p.ends.get(&info.spec.name));
        let fresh = |end: &EndSnap| end.age <= stale;
        let up = info.state == ChannelState::Up;
        let reading = self.segments.get(name);
        let segment = reading.and_then(|r| r.figures.as_ref());

        let mut consumers: Vec<ConsumerSample> = ch
            .consumers
            .iter()
            .map(|id| consumer(id.as_str(), snap.clients.get(id), ch, segment, stale))
            .collect();
        // Segment readers that are not attached clients (a plain shm consumer, `labhub watch`
        // in another user's session …) still show, by pid.
        if let Some(seg) = segment {
            let known: Vec<u32> = consumers.iter().filter_map(|c| c.pid).collect();
            let mut strangers: BTreeMap<u32, u64> = BTreeMap::new();
            for &(pid, position) in &seg.consumers {
                if !known.contains(&pid) {
                    let lag = seg.published.saturating_sub(position);
                    let e = strangers.entry(pid).or_default();
                    *e = (*e).max(lag);
                }
            }
            consumers.extend(strangers.into_iter().map(|(pid, lag)| ConsumerSample {
                pid: Some(pid),
                lag_frames: Some(lag),
                ..ConsumerSample::default()
            }));
        }

        let mut window = Histogram::new();
        for id in &ch.consumers {
            if let Some(end) = snap
                .clients
                .get(id)
                .and_then(|c| c.ends.get(&info.spec.name))
                && fresh(end)
                && let Some(w) = &end.window
            {
                window.merge(w);
            }
        }

        let frames_total = producer_end
            .and_then(|e| counter(&e.counters, "frames_published"))
            .or(segment.map(|s| s.published));
        let segment_rate = reading.and_then(|r| r.rate);
        let frames_per_s = if !up {
            None
        } else {
            match producer_end {
                Some(e) if counter(&e.counters, "frames_published").is_some() => {
                    e.frames_per_s.filter(|_| fresh(e))
                }
                _ => segment_rate,
            }
        };
        let producer_bytes = producer_end
            .filter(|e| fresh(e))
            .and_then(|e| e.bytes_per_s)
            .filter(|b| *b > 0.0);
        let consumer_bytes = consumers
            .iter()
            .filter_map(|c| c.mb_per_s)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
        let mb_per_s = if up {
            producer_bytes.map(|b| b / 1e6).or(consumer_bytes)
        } else {
            None
        };
        ChannelSample {
            name: name.to_owned(),
            kind: info.spec.kind.as_str().to_owned(),
            state: if up {
                ChannelStatus::Up
            } else {
                ChannelStatus::Down
            },
            producer: info.producer.to_string(),
            producer_pid: info.producer_pid,
            producer_host: info.producer_host.clone(),
            producer_version: producer.and_then(|p| p.version.clone()),
            producer_heartbeat_age_s: producer
                .and_then(|p| p.heartbeat_age)
                .map(|a| a.as_secs_f64()),
            policy: info.spec.policy.clone(),
            segment_bytes: segment.map(|s| s.size),
            frames_total,
            bytes_total: producer_end.and_then(|e| counter(&e.counters, "bytes_published")),
            frames_per_s,
            mb_per_s,
            publish_failures: producer_end.and_then(|e| counter(&e.counters, "publish_failures")),
            dropped: segment.map(|s| s.dropped),
            overwritten: segment.map(|s| s.overwritten),
            latency_mean_us: us(window.mean_ns()),
            latency_p99_us: us(window.quantile_ns(0.99)),
            max_lag_frames: consumers.iter().filter_map(|c| c.lag_frames).max(),
            consumers,
        }
    }

    /// Channels of the last sample that the registry dropped stay a minute, as gone.
    fn track_gone(&mut self, now: Instant, channels: &mut Vec<ChannelSample>) {
        let current: HashSet<String> = channels.iter().map(|c| c.name.clone()).collect();
        if let Some(last) = &self.last {
            let removed = last
                .channels
                .iter()
                .filter(|c| c.state != ChannelStatus::Gone && !current.contains(&c.name));
            for c in removed {
                let gone = ChannelSample {
                    state: ChannelStatus::Gone,
                    frames_per_s: None,
                    mb_per_s: None,
                    latency_mean_us: None,
                    latency_p99_us: None,
                    consumers: Vec::new(),
                    max_lag_frames: None,
                    ..c.clone()
                };
                self.gone.insert(c.name.clone(), (now, gone));
            }
        }
        self.gone.retain(|name, (since, _)| {
            !current.contains(name) && now.saturating_duration_since(*since) < GONE_RETENTION
        });
        while self.gone.len() > MAX_GONE {
            let oldest = self
                .gone
                .iter()
                .min_by_key(|(_, (since, _))| *since)
                .map(|(name, _)| name.clone());
            if let Some(name) = oldest {
                self.gone.remove(&name);
            }
        }
        channels.extend(self.gone.values().map(|(_, c)| c.clone()));
        channels.sort_by(|a, b| a.name.cmp(&b.name));
        let shown: HashSet<&str> = channels.iter().map(|c| c.name.as_str()).collect();
        super::lock(&self.history).retain(|name, _| shown.contains(name.as_str()));
    }

    fn record_history(&mut self, t: u64, channels: &[ChannelSample]) {
        let mut history = super::lock(&self.history);
        for c in channels {
            let points = match history.get_mut(&c.name) {
                Some(p) => p,
                None => history.entry(c.name.clone()).or_default(),
            };
            if points.len() >= HISTORY_POINTS {
                points.pop_front();
            }
            points.push_back(HistoryPoint {
                t,
                fps: c.frames_per_s,
                mbps: c.mb_per_s,
            });
        }
    }
}

fn consumer(
    id: &str,
    client: Option<&ClientSnap>,
    ch: &ChannelSnap,
    segment: Option<&SegmentFigures>,
    stale: Duration,
) -> ConsumerSample {
    let end = client.and_then(|c| c.ends.get(&ch.info.spec.name));
    let fresh_end = end.filter(|e| e.age <= stale);
    let pid = client.and_then(|c| c.pid);
    let lag = segment.and_then(|s| {
        let pid = pid?;
        s.consumers
            .iter()
            .filter(|(p, _)| *p == pid)
            .map(|(_, position)| s.published.saturating_sub(*position))
            .max()
    });
    let window = fresh_end.and_then(|e| e.window.as_deref());
    ConsumerSample {
        client: Some(id.to_owned()),
        pid,
        version: client.and_then(|c| c.version.clone()),
        heartbeat_age_s: client
            .and_then(|c| c.heartbeat_age)
            .map(|a| a.as_secs_f64()),
        frames_total: end.and_then(|e| counter(&e.counters, "frames_consumed")),
        frames_per_s: fresh_end.and_then(|e| e.frames_per_s),
        mb_per_s: fresh_end.and_then(|e| e.bytes_per_s).map(|b| b / 1e6),
        missed: end.and_then(|e| counter(&e.counters, "frames_missed")),
        reattached: end.and_then(|e| counter(&e.counters, "reattached")),
        lag_frames: lag,
        latency_mean_us: us(window.and_then(Histogram::mean_ns)),
        latency_p99_us: us(window.and_then(|w| w.quantile_ns(0.99))),
    }
}

fn clients(snap: &Snapshot, channels: &[ChannelSample]) -> Vec<ClientSample> {
    let mut out: Vec<ClientSample> = snap
        .clients
        .iter()
        .map(|(id, c)| ClientSample {
            id: id.to_string(),
            version: c.version.clone(),
            pid: c.pid,
            heartbeat_age_s: c.heartbeat_age.map(|a| a.as_secs_f64()),
            produces: Vec::new(),
            consumes: Vec::new(),
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    let index: HashMap<String, usize> = out
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id.clone(), i))
        .collect();
    for ch in channels.iter().filter(|c| c.state != ChannelStatus::Gone) {
        if ch.state == ChannelStatus::Up
            && let Some(&i) = index.get(&ch.producer)
        {
            out[i].produces.push(ch.name.clone());
        }
        for c in &ch.consumers {
            if let Some(&i) = c.client.as_ref().and_then(|id| index.get(id)) {
                out[i].consumes.push(ch.name.clone());
            }
        }
    }
    out
}
