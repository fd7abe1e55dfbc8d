//! The tenant's ingest rate quota: a token bucket of rows (GCRA, `governor`), shared by
//! every request of this pod.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};

pub struct RateQuota {
    limiter: RateLimiter<governor::state::NotKeyed, governor::state::InMemoryState, DefaultClock>,
    rows_per_second: NonZeroU32,
    burst: NonZeroU32,
}

impl RateQuota {
    /// `rows_per_second` sustained, with bursts of up to `burst` rows.
    pub fn new(rows_per_second: NonZeroU32, burst: NonZeroU32) -> RateQuota {
        let quota = Quota::per_second(rows_per_second).allow_burst(burst);
        RateQuota {
            limiter: RateLimiter::direct(quota),
            rows_per_second,
            burst,
        }
    }

    /// Takes `rows` from the bucket, or says how long to wait (`None`: never, the
    /// request alone is larger than a burst).
    pub fn check(&self, rows: usize) -> Result<(), Option<Duration>> {
        let Some(rows) = u32::try_from(rows).ok().and_then(NonZeroU32::new) else {
            return if rows == 0 { Ok(()) } else { Err(None) };
        };
        match self.limiter.check_n(rows) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(Some(
                not_until.wait_time_from(DefaultClock::default().now()),
            )),
            Err(_) => Err(None),
        }
    }

    pub fn rows_per_second(&self) -> u32 {
        self.rows_per_second.get()
    }

    pub fn burst(&self) -> u32 {
        self.burst.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(rate: u32, burst: u32) -> RateQuota {
        RateQuota::new(
            NonZeroU32::new(rate).unwrap(),
            NonZeroU32::new(burst).unwrap(),
        )
    }

    #[test]
    fn a_burst_passes_and_the_next_rows_wait() {
        let quota = quota(10, 100);
        assert_eq!(quota.check(100), Ok(()));
        let wait = quota.check(10).unwrap_err().unwrap();
        assert!(
            wait > Duration::from_millis(500) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
    }

    #[test]
    fn more_than_a_burst_at_once_can_never_pass_and_empty_always_does() {
        let quota = quota(10, 100);
        assert_eq!(quota.check(101), Err(None));
        assert_eq!(quota.check(0), Ok(()));
    }
}
