//! `status.usage.rowsPerSecond`: rows written per second, from PostgreSQL's own count of
//! rows inserted into the tenant's measurements (`pg_stat_user_tables.n_tup_ins`, summed
//! over the partitions), sampled at each reconcile. Pure apart from the lock.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Samples closer together than this give no rate: too noisy to report.
pub const MIN_INTERVAL: Duration = Duration::from_secs(5);

/// The last count seen per tenant.
#[derive(Debug, Default)]
pub struct RateSampler {
    last: Mutex<HashMap<String, (i64, Instant)>>,
}

impl RateSampler {
    /// The rate since the previous sample of `tenant`, in rows per second rounded to
    /// one decimal, or `None` when there is nothing honest to say yet (keep what status
    /// says): no previous sample, one too recent, or a counter that went back (statistics
    /// reset). A tenant with no row ever inserted is at 0 from its first sample on.
    pub fn observe(&self, tenant: &str, inserted: i64, now: Instant) -> Option<f64> {
        let mut last = self.last.lock().expect("rate lock");
        match last.get(tenant).copied() {
            None => {
                last.insert(tenant.to_string(), (inserted, now));
                (inserted == 0).then_some(0.0)
            }
            Some((before, _)) if inserted < before => {
                last.insert(tenant.to_string(), (inserted, now));
                None
            }
            Some((before, at)) => {
                let elapsed = now.saturating_duration_since(at);
                if elapsed < MIN_INTERVAL {
                    // Keep the older sample: the next one measures over a longer span.
                    return None;
                }
                last.insert(tenant.to_string(), (inserted, now));
                let rate = (inserted - before) as f64 / elapsed.as_secs_f64();
                Some((rate * 10.0).round() / 10.0)
            }
        }
    }

    /// Forgets a tenant that is gone.
    pub fn forget(&self, tenant: &str) {
        self.last.lock().expect("rate lock").remove(tenant);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_tenant_is_at_zero_and_stays_there_while_idle() {
        let sampler = RateSampler::default();
        let start = Instant::now();
        assert_eq!(sampler.observe("prato", 0, start), Some(0.0));
        assert_eq!(
            sampler.observe("prato", 0, start + Duration::from_secs(300)),
            Some(0.0)
        );
    }

    #[test]
    fn the_rate_is_the_difference_over_the_time_between_samples() {
        let sampler = RateSampler::default();
        let start = Instant::now();
        assert_eq!(
            sampler.observe("prato", 1_000, start),
            None,
            "after a restart nothing is known about the past"
        );
        assert_eq!(
            sampler.observe("prato", 4_000, start + Duration::from_secs(20)),
            Some(150.0)
        );
        assert_eq!(
            sampler.observe("prato", 4_001, start + Duration::from_secs(50)),
            Some(0.0)
        );
        assert_eq!(
            sampler.observe("firenze", 0, start),
            Some(0.0),
            "per tenant"
        );
    }

    #[test]
    fn samples_too_close_together_wait_for_a_longer_span() {
        let sampler = RateSampler::default();
        let start = Instant::now();
        sampler.observe("prato", 0, start);
        assert_eq!(
            sampler.observe("prato", 10, start + Duration::from_secs(1)),
            None
        );
        assert_eq!(
            sampler.observe("prato", 100, start + Duration::from_secs(10)),
            Some(10.0),
            "measured from the older sample"
        );
    }

    #[test]
    fn a_counter_reset_gives_no_rate_and_starts_over() {
        let sampler = RateSampler::default();
        let start = Instant::now();
        sampler.observe("prato", 500, start);
        assert_eq!(
            sampler.observe("prato", 20, start + Duration::from_secs(30)),
            None
        );
        assert_eq!(
            sampler.observe("prato", 620, start + Duration::from_secs(90)),
            Some(10.0)
        );
        sampler.forget("prato");
        assert_eq!(
            sampler.observe("prato", 700, start + Duration::from_secs(100)),
            None
        );
    }
}
