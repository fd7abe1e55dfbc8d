//! Prometheus metrics of the operator, served on `/metrics`.

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::crd::Phase;

/// The `reason` of `smartregion_reconcile_errors_total`: one per kind of failure, named
/// after its variant in snake_case (docs/troubleshooting.md lists them all).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, strum::IntoStaticStr, strum::EnumIter)]
#[strum(serialize_all = "snake_case")]
pub enum ErrorLabel {
    Read,
    Apply,
    Prune,
    NamespaceTerminating,
    Status,
    AddFinalizer,
    RemoveFinalizer,
    DeleteNamespace,
    DatabaseUnreachable,
    DatabaseProvision,
    DatabaseStorage,
    ReadSecret,
    CreateIngestKeys,
}

impl ErrorLabel {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    pub tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
}

pub struct Metrics {
    registry: Registry,
    pub reconciles: Counter,
    pub errors: Family<ErrorLabels, Counter>,
    pub duration: Histogram,
    tenants: Family<PhaseLabels, Gauge>,
    phases: Mutex<HashMap<String, Phase>>,
    database_bytes: Family<TenantLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("smartregion");
        let reconciles = Counter::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
        let tenants = Family::<PhaseLabels, Gauge>::default();
        registry.register("reconciles", "Reconciles of tenants", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Failed reconciles, by reason",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile of a tenant took",
            duration.clone(),
        );
        registry.register("tenants", "Tenants, by phase", tenants.clone());
        let database_bytes = Family::<TenantLabels, Gauge>::default();
        registry.register(
            "tenant_database_bytes",
            "Size of each tenant's database schema, as last measured",
            database_bytes.clone(),
        );
        Metrics {
            registry,
            reconciles,
            errors,
            duration,
            tenants,
            phases: Mutex::default(),
            database_bytes,
        }
    }
}

impl Metrics {
    /// Records a tenant's phase (`None`: the tenant is gone) and updates the gauges.
    pub fn set_phase(&self, tenant: &str, phase: Option<Phase>) {
        let mut phases = self.phases.lock().expect("metrics lock");
        match phase {
            Some(phase) => phases.insert(tenant.to_string(), phase),
            None => phases.remove(tenant),
        };
        self.tenants.clear();
        for phase in phases.values() {
            self.tenants
                .get_or_create(&PhaseLabels {
                    phase: format!("{phase:?}"),
                })
                .inc();
        }
    }

    /// Records a tenant's measured schema size (`None`: the tenant is gone).
    pub fn set_database_bytes(&self, tenant: &str, bytes: Option<i64>) {
        let labels = TenantLabels {
            tenant: tenant.to_string(),
        };
        match bytes {
            Some(bytes) => {
                self.database_bytes.get_or_create(&labels).set(bytes);
            }
            None => {
                self.database_bytes.remove(&labels);
            }
        }
    }

    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}
