//! Frame latency as a fixed log-bucket histogram: cheap to record, exact to merge, and small on
//! the wire.
//!
//! A consumer records, for every frame it reads, the time from the frame's timestamp to the
//! read ([`LatencyRecorder`]); its heartbeat carries the counts added since the previous
//! heartbeat as a sparse [`LatencySummary`]; the broker adds summaries together
//! ([`Histogram::add_summary`]) per consumer and per channel. Because every party uses the same
//! bucket edges, merging is addition and loses nothing beyond the buckets' resolution.
//!
//! The buckets (the same table is in `docs/PROTOCOL.md`): bucket 0 holds latencies below
//! 1,024 ns; buckets 1 to 104 split each power of two from 2^10 ns to 2^36 ns (about 68.7 s)
//! into four equal parts; bucket 105 holds 2^36 ns and more. A quantile read from the buckets is
//! within one bucket, at most 25 % of the value.
//!
//! ```
//! use labhub::latency::{Histogram, bucket_of, lower_bound_ns};
//!
//! assert_eq!(bucket_of(500), 0);
//! assert_eq!(lower_bound_ns(bucket_of(1_500)), 1_280);
//! let mut h = Histogram::new();
//! for us in 1..=100u64 {
//!     h.record(us * 1_000);
//! }
//! let p99 = h.quantile_ns(0.99).unwrap();
//! assert!((90_000.0..=125_000.0).contains(&p99), "{p99}");
//! assert_eq!(h.mean_ns(), Some(50_500.0));
//! ```
#![deny(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Sub-buckets per power of two, as a power of two.
const SUB_BITS: u32 = 2;
/// The first power of two split into buckets (2^10 ns = 1,024 ns).
const MIN_EXP: u32 = 10;
/// Latencies of 2^36 ns (about 68.7 s) and more share the last bucket.
const MAX_EXP: u32 = 36;
/// Number of buckets.
pub const BUCKETS: usize = 2 + (((MAX_EXP - MIN_EXP) as usize) << SUB_BITS);

const _: () = assert!(BUCKETS == 106);

/// The bucket a latency of `ns` nanoseconds falls in.
pub fn bucket_of(ns: u64) -> usize {
    if ns < 1 << MIN_EXP {
        return 0;
    }
    let exp = 63 - ns.leading_zeros();
    if exp >= MAX_EXP {
        return BUCKETS - 1;
    }
    let sub = (ns >> (exp - SUB_BITS)) & ((1 << SUB_BITS) - 1);
    1 + (((exp - MIN_EXP) << SUB_BITS) as usize) + sub as usize
}

/// The smallest latency, in ns, of bucket `index` (`index` < [`BUCKETS`]).
pub fn lower_bound_ns(index: usize) -> u64 {
    match index {
        0 => 0,
        i if i >= BUCKETS - 1 => 1 << MAX_EXP,
        i => {
            let exp = MIN_EXP + ((i as u32 - 1) >> SUB_BITS);
            let sub = (i as u64 - 1) & ((1 << SUB_BITS) - 1);
            (1 << exp) + (sub << (exp - SUB_BITS))
        }
    }
}

/// The end (exclusive), in ns, of bucket `index`; `None` for the last, unbounded bucket.
pub fn upper_bound_ns(index: usize) -> Option<u64> {
    (index + 1 < BUCKETS).then(|| lower_bound_ns(index + 1))
}

/// Latency counts on the wire: the buckets that counted something since the previous report,
/// as `[index, count]` pairs, and the sum of those latencies.
///
/// ```json
/// {"sum_ns": 3400000, "buckets": [[41, 100], [42, 20]]}
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencySummary {
    /// The sum of the latencies counted, in ns (saturating).
    pub sum_ns: u64,
    /// `[bucket index, count]` pairs, each index below [`BUCKETS`] at most once, counts ≥ 1.
    pub buckets: Vec<(u16, u64)>,
}

impl LatencySummary {
    /// How many latencies the summary counts.
    pub fn count(&self) -> u64 {
        self.buckets
            .iter()
            .fold(0u64, |n, &(_, c)| n.saturating_add(c))
    }

    /// Whether it counts nothing.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Checks the rules serde cannot express; the message says what is wrong.
    ///
    /// # Errors
    ///
    /// A bucket index out of range or given twice, or a count of 0.
    pub fn check(&self) -> Result<(), String> {
        let mut seen = [false; BUCKETS];
        for &(index, count) in &self.buckets {
            let Some(slot) = seen.get_mut(usize::from(index)) else {
                return Err(format!(
                    "bucket index {index} is out of range (0 to {})",
                    BUCKETS - 1
                ));
            };
            if std::mem::replace(slot, true) {
                return Err(format!("bucket index {index} is given twice"));
            }
            if count == 0 {
                return Err(format!("bucket {index} has a count of 0"));
            }
        }
        Ok(())
    }
}

/// A dense latency histogram: a count per bucket and the sum of the latencies.
#[derive(Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: [u64; BUCKETS],
    sum_ns: u64,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count())
            .field("sum_ns", &self.sum_ns)
            .finish_non_exhaustive()
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self {
            counts: [0; BUCKETS],
            sum_ns: 0,
        }
    }

    /// Counts one latency of `ns` nanoseconds.
    pub fn record(&mut self, ns: u64) {
        let c = &mut self.counts[bucket_of(ns)];
        *c = c.saturating_add(1);
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }

    /// Adds the counts of a summary (one that passed [`LatencySummary::check`]; indices out of
    /// range are ignored).
    pub fn add_summary(&mut self, summary: &LatencySummary) {
        for &(index, count) in &summary.buckets {
            if let Some(c) = self.counts.get_mut(usize::from(index)) {
                *c = c.saturating_add(count);
            }
        }
        self.sum_ns = self.sum_ns.saturating_add(summary.sum_ns);
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Histogram) {
        for (c, o) in self.counts.iter_mut().zip(other.counts) {
            *c = c.saturating_add(o);
        }
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
    }

    /// How many latencies it counts.
    pub fn count(&self) -> u64 {
        self.counts.iter().fold(0u64, |n, &c| n.saturating_add(c))
    }

    /// The sum of the latencies, in ns.
    pub fn sum_ns(&self) -> u64 {
        self.sum_ns
    }

    /// The count of bucket `index` (0 beyond the last bucket).
    pub fn bucket(&self, index: usize) -> u64 {
        self.counts.get(index).copied().unwrap_or(0)
    }

    /// The mean latency in ns; `None` when empty.
    pub fn mean_ns(&self) -> Option<f64> {
        let n = self.count();
        (n > 0).then(|| self.sum_ns as f64 / n as f64)
    }

    /// The `q` quantile (0 to 1) in ns, interpolated linearly inside its bucket (the last,
    /// unbounded bucket reads as its lower bound); `None` when empty.
    pub fn quantile_ns(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * n as f64).ceil().max(1.0);
        let mut below = 0u64;
        for (index, &c) in self.counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            if (below + c) as f64 >= rank {
                let lower = lower_bound_ns(index) as f64;
                let Some(upper) = upper_bound_ns(index) else {
                    return Some(lower);
                };
                let within = (rank - below as f64) / c as f64;
                return Some(lower + within * (upper as f64 - lower));
            }
            below += c;
        }
        Some(lower_bound_ns(BUCKETS - 1) as f64)
    }

    /// The counts added since `earlier` (an older copy of this histogram), as a summary.
    pub fn since(&self, earlier: &Histogram) -> LatencySummary {
        let buckets = self
            .counts
            .iter()
            .zip(earlier.counts)
            .enumerate()
            .filter(|(_, (now, then))| **now > *then)
            // BUCKETS < u16::MAX (asserted above), so the index fits.
            .map(|(i, (now, then))| (i as u16, now - then))
            .collect();
        LatencySummary {
            sum_ns: self.sum_ns.saturating_sub(earlier.sum_ns),
            buckets,
        }
    }
}

/// Latency counts updated by the thread that reads frames and read by another (the heartbeat):
/// one relaxed atomic add per count, no lock.
pub struct LatencyRecorder {
    counts: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

impl std::fmt::Debug for LatencyRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyRecorder")
            .field("count", &self.load().count())
            .finish_non_exhaustive()
    }
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        }
    }
}

impl LatencyRecorder {
    /// Counts one latency of `ns` nanoseconds.
    #[inline]
    pub fn record(&self, ns: u64) {
        self.counts[bucket_of(ns)].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// A copy of the counts so far (each count read on its own: a copy taken while frames are
    /// read may include a frame in a bucket but not yet in the sum).
    pub fn load(&self) -> Histogram {
        Histogram {
            counts: std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed)),
            sum_ns: self.sum_ns.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_tile_the_range_without_gaps() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1023), 0);
        assert_eq!(bucket_of(1024), 1);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        assert_eq!(bucket_of(1 << 36), BUCKETS - 1);
        assert_eq!(bucket_of((1 << 36) - 1), BUCKETS - 2);
        for i in 0..BUCKETS {
            let lower = lower_bound_ns(i);
            assert_eq!(bucket_of(lower), i, "bucket {i} starts at {lower}");
            if let Some(upper) = upper_bound_ns(i) {
                assert!(upper > lower);
                assert_eq!(bucket_of(upper - 1), i, "bucket {i} ends before {upper}");
                assert_eq!(bucket_of(upper), i + 1);
                if i > 0 {
                    // Each bucket is at most a quarter of its lower bound wide.
                    assert!((upper - lower) * 4 <= lower, "bucket {i}");
                }
            }
        }
    }

    #[test]
    fn a_summary_since_an_earlier_copy_merges_back_to_the_whole() {
        let mut h = Histogram::new();
        for ns in [10, 2_000, 2_100, 70_000, 1 << 40] {
            h.record(ns);
        }
        let earlier = h.clone();
        for ns in [2_050, 5_000_000] {
            h.record(ns);
        }
        let delta = h.since(&earlier);
        assert_eq!(delta.count(), 2);
        assert_eq!(delta.sum_ns, 2_050 + 5_000_000);
        delta.check().unwrap();
        let mut rebuilt = earlier.clone();
        rebuilt.add_summary(&delta);
        assert_eq!(rebuilt, h);
        let mut merged = earlier;
        let mut rest = Histogram::new();
        rest.add_summary(&delta);
        merged.merge(&rest);
        assert_eq!(merged, h);
    }

    #[test]
    fn quantiles_stay_within_a_bucket_of_the_truth() {
        let mut h = Histogram::new();
        let values: Vec<u64> = (1..=10_000u64).map(|i| i * 997).collect();
        for &v in &values {
            h.record(v);
        }
        for q in [0.5, 0.9, 0.99, 1.0] {
            let truth = values[((q * values.len() as f64).ceil() as usize).max(1) - 1] as f64;
            let est = h.quantile_ns(q).unwrap();
            assert!(
                (est - truth).abs() <= truth * 0.25,
                "q {q}: {est} vs {truth}"
            );
        }
        assert_eq!(Histogram::new().quantile_ns(0.99), None);
    }

    #[test]
    fn summaries_with_bad_buckets_are_refused() {
        let bad = |buckets: Vec<(u16, u64)>| LatencySummary { sum_ns: 0, buckets }.check();
        assert!(bad(vec![(106, 1)]).unwrap_err().contains("out of range"));
        assert!(bad(vec![(3, 1), (3, 2)]).unwrap_err().contains("twice"));
        assert!(bad(vec![(3, 0)]).unwrap_err().contains("count of 0"));
        bad(vec![(0, 1), (105, u64::MAX)]).unwrap();
    }

    #[test]
    fn the_recorder_counts_what_it_is_given() {
        let r = LatencyRecorder::default();
        r.record(5_000);
        r.record(5_100);
        let h = r.load();
        assert_eq!(h.count(), 2);
        assert_eq!(h.bucket(bucket_of(5_000)), 2);
        assert_eq!(h.sum_ns(), 10_100);
    }
}
