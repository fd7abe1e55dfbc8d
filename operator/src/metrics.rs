//! Prometheus metrics of the operator, served on `/metrics`.

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::crd::{MaintenancePolicy, Phase};
use crate::database::provision::Maintenance;

/// The `reason` of `smartregion_reconcile_errors_total`: one per kind of failure, named
/// after its variant in snake_case (docs/troubleshooting.md lists them all).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, strum::IntoStaticStr, strum::EnumIter)]
#[strum(serialize_all = "snake_case")]
pub enum ErrorLabel {
    Read,
    Apply,
    Prune,
    NamespaceTerminating,
    NotOurs,
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

/// One of `database::checks::CHECKS`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    pub check: String,
}

/// A tenant's TimescaleDB policy.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    pub tenant: String,
    pub policy: String,
}

/// A policy the operator ran itself, and how that went (`ok` or `failed`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub policy: String,
    pub result: String,
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
    job_last_run: Family<JobLabels, Gauge>,
    job_last_run_success: Family<JobLabels, Gauge>,
    job_consecutive_failures: Family<JobLabels, Gauge>,
    overdue_chunks: Family<JobLabels, Gauge>,
    maintenance_runs: Family<RunLabels, Counter>,
    database_checks: Family<CheckLabels, Gauge>,
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
        let job_last_run = Family::<JobLabels, Gauge>::default();
        registry.register(
            "tenant_job_last_run_timestamp_seconds",
            "When each tenant's TimescaleDB retention or compression job last started",
            job_last_run.clone(),
        );
        let job_last_run_success = Family::<JobLabels, Gauge>::default();
        registry.register(
            "tenant_job_last_run_success",
            "1 when TimescaleDB recorded the job's last run as a success, 0 as a failure",
            job_last_run_success.clone(),
        );
        let job_consecutive_failures = Family::<JobLabels, Gauge>::default();
        registry.register(
            "tenant_job_consecutive_failures",
            "Runs of the job TimescaleDB recorded as failed since its last success",
            job_consecutive_failures.clone(),
        );
        let overdue_chunks = Family::<JobLabels, Gauge>::default();
        registry.register(
            "tenant_maintenance_overdue_chunks",
            "Chunks whose retention or compression is overdue, after the operator's own run",
            overdue_chunks.clone(),
        );
        let maintenance_runs = Family::<RunLabels, Counter>::default();
        registry.register(
            "maintenance_runs",
            "Due policies the operator ran itself because the jobs did not do the work",
            maintenance_runs.clone(),
        );
        let database_checks = Family::<CheckLabels, Gauge>::default();
        registry.register(
            "database_check_ok",
            "1 when the database passed the check at the operator's start, 0 when not \
             (docs/security.md)",
            database_checks.clone(),
        );
        Metrics {
            registry,
            reconciles,
            errors,
            duration,
            tenants,
            phases: Mutex::default(),
            database_bytes,
            job_last_run,
            job_last_run_success,
            job_consecutive_failures,
            overdue_chunks,
            maintenance_runs,
            database_checks,
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

    /// Records a TimescaleDB tenant's jobs, overdue chunks and the operator's own runs
    /// (`None`: the tenant is gone or has no jobs).
    pub fn set_maintenance(&self, tenant: &str, maintenance: Option<&Maintenance>) {
        use strum::IntoEnumIterator;
        for policy in MaintenancePolicy::iter() {
            let labels = JobLabels {
                tenant: tenant.to_string(),
                policy: policy_label(policy).to_string(),
            };
            let job = maintenance.and_then(|m| m.jobs.iter().find(|job| job.policy == policy));
            match (maintenance, job) {
                (Some(maintenance), Some(job)) => {
                    if let Some(started) = job.last_start {
                        self.job_last_run.get_or_create(&labels).set(started as i64);
                    }
                    if let Some(status) = &job.last_status {
                        self.job_last_run_success
                            .get_or_create(&labels)
                            .set(i64::from(status == "Success"));
                    }
                    self.job_consecutive_failures
                        .get_or_create(&labels)
                        .set(i64::from(job.consecutive_failures));
                    let overdue = match policy {
                        MaintenancePolicy::Retention => maintenance.overdue.retention,
                        MaintenancePolicy::Compression => maintenance.overdue.compression,
                    };
                    self.overdue_chunks.get_or_create(&labels).set(overdue);
                }
                _ => {
                    self.job_last_run.remove(&labels);
                    self.job_last_run_success.remove(&labels);
                    self.job_consecutive_failures.remove(&labels);
                    self.overdue_chunks.remove(&labels);
                }
            }
        }
        for (policy, error) in maintenance.map(|m| m.ran.as_slice()).unwrap_or_default() {
            self.maintenance_runs
                .get_or_create(&RunLabels {
                    policy: policy_label(*policy).to_string(),
                    result: if error.is_none() { "ok" } else { "failed" }.to_string(),
                })
                .inc();
        }
    }

    pub fn set_database_check(&self, check: &str, ok: bool) {
        self.database_checks
            .get_or_create(&CheckLabels {
                check: check.to_string(),
            })
            .set(i64::from(ok));
    }

    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

fn policy_label(policy: MaintenancePolicy) -> &'static str {
    crate::database::timescale::policy_name(policy)
}
