//! The memory budget: every request reserves the bytes it can hold at its peak (its body,
//! what parsing it can take, its rows until they are committed) before it holds them, and
//! gives them back when it is answered. The budget is a share of the container's memory
//! limit, so whatever senders do within the documented limits, the process stays inside
//! it: a request that cannot get its share in time is answered 503 with `Retry-After`,
//! never killed with everyone else by the kernel.
//!
//! The limit comes from the operator (the Deployment passes the container's
//! `limits.memory` through the downward API), else from the cgroup the process runs in.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Budget units: the semaphore counts KiB, so a `u32` reservation spans 4 TiB.
const UNIT: usize = 1024;

/// The budget when no limit is known (a process outside any container).
pub const UNLIMITED_BUDGET: usize = 1024 * 1024 * 1024;

/// Reserved for the process itself whatever the load: code, the runtime, connections,
/// the writer's buffers, the allocator's slack.
pub const BASELINE: u64 = 48 * 1024 * 1024;

/// The budget for a container memory limit: what is left after [`BASELINE`], of which a
/// little over half, because freed memory does not always return to the system at once
/// (the allocator keeps it for reuse; the limit counts it).
pub fn budget_for(limit: Option<u64>) -> usize {
    match limit {
        None => UNLIMITED_BUDGET,
        Some(limit) => {
            let usable = limit.saturating_sub(BASELINE);
            usize::try_from(usable / 20 * 11)
                .unwrap_or(usize::MAX)
                .max(4 * 1024 * 1024)
        }
    }
}

/// The memory limit of the cgroup this process runs in (v2 `memory.max`, else v1
/// `memory.limit_in_bytes`), if it has one.
pub fn cgroup_limit() -> Option<u64> {
    read_limit(Path::new("/sys/fs/cgroup/memory.max"))
        .or_else(|| read_limit(Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes")))
}

fn read_limit(path: &Path) -> Option<u64> {
    parse_limit(&std::fs::read_to_string(path).ok()?)
}

/// `max` (v2) and the page-rounded `i64::MAX` (v1) mean no limit.
fn parse_limit(text: &str) -> Option<u64> {
    let limit: u64 = text.trim().parse().ok()?;
    (limit < 1 << 62).then_some(limit)
}

/// Why a reservation was not granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Shortage {
    /// More than the whole budget: it can never be granted.
    #[error("needs {needed} bytes, more than this pod's memory budget of {budget} bytes")]
    Never { needed: usize, budget: usize },
    /// Not available now (other requests hold it); retry shortly.
    #[error("the pod's memory budget is in use by other requests; retry shortly")]
    Busy,
}

#[derive(Clone)]
pub struct Budget {
    units: Arc<Semaphore>,
    total: usize,
}

/// Bytes held for one request, given back when dropped.
pub struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
}

impl Budget {
    pub fn new(bytes: usize) -> Budget {
        let units = (bytes / UNIT).clamp(1, Semaphore::MAX_PERMITS);
        Budget {
            units: Arc::new(Semaphore::new(units)),
            total: units * UNIT,
        }
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes not reserved now.
    pub fn available(&self) -> usize {
        self.units.available_permits() * UNIT
    }

    fn units(&self, bytes: usize) -> Result<u32, Shortage> {
        let units = bytes.div_ceil(UNIT).max(1);
        if units * UNIT > self.total {
            return Err(Shortage::Never {
                needed: bytes,
                budget: self.total,
            });
        }
        Ok(u32::try_from(units).expect("at most the total, which fits"))
    }

    /// Waits up to `wait` for `bytes`.
    pub async fn reserve(&self, bytes: usize, wait: Duration) -> Result<Reservation, Shortage> {
        let units = self.units(bytes)?;
        match tokio::time::timeout(wait, self.units.clone().acquire_many_owned(units)).await {
            Ok(Ok(permit)) => Ok(Reservation {
                permit: Some(permit),
            }),
            Ok(Err(_)) | Err(_) => Err(Shortage::Busy),
        }
    }

    /// Adds `bytes` to `reservation`, waiting up to `wait`. The request holds its earlier
    /// share meanwhile, so `wait` should be short: two requests each waiting for what the
    /// other holds would otherwise stall until both time out.
    pub async fn grow(
        &self,
        reservation: &mut Reservation,
        bytes: usize,
        wait: Duration,
    ) -> Result<(), Shortage> {
        let held = reservation.bytes();
        self.units(held + bytes)?;
        reservation.merge(self.reserve(bytes, wait).await?);
        Ok(())
    }
}

impl Reservation {
    /// Holds what `other` held too, until this one is dropped.
    pub fn merge(&mut self, other: Reservation) {
        match (&mut self.permit, other.permit) {
            (Some(permit), Some(more)) => permit.merge(more),
            (slot, more) => *slot = more,
        }
    }

    pub fn bytes(&self) -> usize {
        self.permit
            .as_ref()
            .map_or(0, |permit| permit.num_permits() * UNIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_read_as_cgroups_write_them() {
        assert_eq!(parse_limit("268435456\n"), Some(268_435_456));
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None);
    }

    #[test]
    fn the_budget_leaves_the_baseline_and_slack_to_the_process() {
        let mib = 1024 * 1024;
        // 256Mi, the tiers' container limit: 114.4 MiB for requests in flight.
        assert_eq!(budget_for(Some(256 * mib)), 119_957_090);
        assert_eq!(budget_for(Some(16 * mib)), 4 * mib as usize);
        assert_eq!(budget_for(None), UNLIMITED_BUDGET);
    }

    #[tokio::test]
    async fn reservations_come_back_when_dropped_and_never_exceed_the_budget() {
        let budget = Budget::new(10 * UNIT);
        let wait = Duration::from_millis(10);
        let mut first = budget.reserve(6 * UNIT, wait).await.unwrap();
        assert_eq!(budget.available(), 4 * UNIT);
        assert_eq!(
            budget.reserve(5 * UNIT, wait).await.err(),
            Some(Shortage::Busy)
        );
        budget.grow(&mut first, 4 * UNIT, wait).await.unwrap();
        assert_eq!(first.bytes(), 10 * UNIT);
        assert_eq!(budget.available(), 0);
        assert!(matches!(
            budget.grow(&mut first, 1, wait).await,
            Err(Shortage::Never { .. })
        ));
        drop(first);
        assert_eq!(budget.available(), 10 * UNIT);
        assert!(matches!(
            budget.reserve(11 * UNIT, wait).await,
            Err(Shortage::Never { .. })
        ));
    }
}
