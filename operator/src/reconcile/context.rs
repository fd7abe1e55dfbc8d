//! What every reconcile shares: clients, configuration, metrics, the database, and the
//! backoff and rate state per tenant. Pure data and bookkeeping; no step's logic.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use kube::runtime::events::Recorder;

use crate::config::Config;
use crate::database::connect::Database;
use crate::metrics::Metrics;

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub config: Config,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// The shared database; `None`: Kubernetes side only.
    pub database: Option<Database>,
    /// Periodic re-check of a tenant that is fine (catches what no watch reports).
    pub requeue: Duration,
    /// Consecutive failures per tenant, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// The last insert count seen per tenant, for `status.usage.rowsPerSecond`.
    pub rates: crate::database::rate::RateSampler,
}

impl Context {
    pub fn new(
        client: Client,
        config: Config,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        database: Option<Database>,
        requeue: Duration,
    ) -> Self {
        Context {
            client,
            config,
            recorder,
            metrics,
            database,
            requeue,
            failures: Mutex::default(),
            rates: Default::default(),
        }
    }

    /// 1 s, 2 s, 4 s ... up to 5 minutes after consecutive failures of `tenant`.
    pub(super) fn backoff(&self, tenant: &str) -> Duration {
        let mut failures = self.failures.lock().expect("backoff lock");
        let count = failures.entry(tenant.to_string()).or_insert(0);
        *count = count.saturating_add(1);
        Duration::from_secs(1u64 << (*count - 1).min(8)).min(Duration::from_secs(300))
    }

    pub(super) fn succeeded(&self, tenant: &str) {
        self.failures.lock().expect("backoff lock").remove(tenant);
    }
}
