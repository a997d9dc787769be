//! Summaries of measured samples, shared by the benches.

use std::time::Duration;

/// The `p` quantile (0.0–1.0) of `samples`, nearest rank; sorts them.
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}
