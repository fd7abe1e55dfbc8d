//! Maintenance (pure): the `StorageMaintained` condition and `status.database.maintenance`
//! from what the database step read of the tenant's TimescaleDB jobs and their effect
//! (`database::provision::ensure_maintenance`), and the partitioned tenants' equivalent.
//!
//! Judged by the effect first: a job that TimescaleDB records as failed while its work
//! is done is said to be so, once, in a condition whose message does not change from
//! run to run; work that is overdue is what makes the condition False.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::conditions::truncate;
use super::status::{ConditionType, Observed, Reason};
use crate::crd::{JobStatus, MaintenanceStatus};
use crate::database::provision::{FOREGROUND_RUN_TIMEOUT, Maintenance};
use crate::database::timescale::{self, JobHealth, Verdict};

pub const STORAGE_MAINTAINED: ConditionType = ConditionType::StorageMaintained;

/// The condition and status of a hypertable tenant's maintenance. `previous_run`: when
/// the operator last ran a policy itself, as status recorded it.
pub fn hypertable(
    maintenance: &Maintenance,
    previous_run: Option<&Time>,
    now: Timestamp,
) -> (Observed, MaintenanceStatus) {
    let operator_run_at = if maintenance.ran.is_empty() {
        previous_run.cloned()
    } else {
        Some(Time(now))
    };
    let verdict = timescale::judge(
        &maintenance.jobs,
        maintenance.overdue,
        operator_error(maintenance).as_deref(),
        covering(&maintenance.jobs, operator_run_at.as_ref(), now),
    );
    let status = MaintenanceStatus {
        jobs: maintenance.jobs.iter().map(job_status).collect(),
        overdue_compression_chunks: maintenance.overdue.compression,
        overdue_retention_chunks: maintenance.overdue.retention,
        operator_run_at: operator_run_at.clone(),
    };
    (observed(verdict, operator_run_at.as_ref()), status)
}

/// What the operator's own run of a due policy failed with, if it did.
fn operator_error(maintenance: &Maintenance) -> Option<String> {
    maintenance
        .ran
        .iter()
        .find_map(|(policy, error)| {
            error
                .as_ref()
                .map(|error| format!("{}: {error}", timescale::policy_name(*policy)))
        })
        .map(|error| {
            if error.contains("statement timeout") {
                format!(
                    "{error} (stopped after {} s; what it did is kept, and the next reconcile \
                     goes on)",
                    FOREGROUND_RUN_TIMEOUT.as_secs()
                )
            } else {
                error
            }
        })
}

/// The condition a verdict comes to.
fn observed(verdict: Verdict, operator_run_at: Option<&Time>) -> Observed {
    let ran = match operator_run_at {
        Some(at) => format!(
            "; the operator last ran the due policies itself at {}",
            at.0
        ),
        None => String::new(),
    };
    match verdict {
        Verdict::Current => Observed::ok(
            STORAGE_MAINTAINED,
            Reason::MaintenanceCurrent,
            "the retention and compression jobs succeed and nothing is overdue",
        ),
        Verdict::Misreported { error } => Observed::ok(
            STORAGE_MAINTAINED,
            Reason::JobsMisreportFailure,
            format!(
                "TimescaleDB records the runs of the retention and compression jobs as failed \
                 ({error}), yet their work is done: no chunk is overdue. This is how \
                 TimescaleDB 2.28 behaves on PostgreSQL 15.19 and later; the operator checks \
                 the chunks at every reconcile and runs a due policy itself if the work stops \
                 (docs/database.md, \"Job health\")"
            ),
        ),
        Verdict::ByOperator { why } => Observed::ok(
            STORAGE_MAINTAINED,
            Reason::MaintainedByOperator,
            format!("{why}{ran}; nothing is overdue now"),
        ),
        Verdict::Failing { why } => Observed::not_ok(
            STORAGE_MAINTAINED,
            Reason::JobsFailing,
            format!("{why}{ran}"),
        ),
        Verdict::Overdue { why } => Observed::not_ok(
            STORAGE_MAINTAINED,
            Reason::MaintenanceOverdue,
            format!("{why}{ran}"),
        ),
    }
}

/// A partitioned tenant: the operator itself creates partitions ahead and drops those
/// past retention at every reconcile (a failure there fails the database step).
pub fn partitions() -> Observed {
    Observed::ok(
        STORAGE_MAINTAINED,
        Reason::PartitionsMaintained,
        "the operator creates partitions ahead and drops those past retention at every \
         reconcile",
    )
}

/// The operator covers for the jobs while its last own run is recent: within the
/// longest grace of the jobs (after that, the chunks alone tell again).
fn covering(jobs: &[JobHealth], operator_run_at: Option<&Time>, now: Timestamp) -> bool {
    let Some(at) = operator_run_at else {
        return false;
    };
    let grace = jobs
        .iter()
        .map(JobHealth::grace_seconds)
        .fold(0.0, f64::max);
    let since = now.duration_since(at.0).as_secs_f64();
    since < grace
}

fn job_status(job: &JobHealth) -> JobStatus {
    // Whole seconds, as status stores a time: with the milliseconds the status read back
    // never equals the one computed, and every reconcile wrote it again.
    let time = |seconds: Option<f64>| {
        seconds
            .and_then(|seconds| Timestamp::from_second(seconds.floor() as i64).ok())
            .map(Time)
    };
    JobStatus {
        policy: job.policy,
        job_id: job.id,
        last_run_started_at: time(job.last_start),
        last_run_status: job.last_status.clone(),
        last_success_at: time(job.last_success),
        consecutive_failures: job.consecutive_failures,
        last_error: job
            .failing()
            .then(|| job.last_error.as_deref().map(|error| truncate(error, 300)))
            .flatten(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::MaintenancePolicy;
    use crate::database::timescale::Overdue;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn a_job_status_reads_back_as_written_so_idle_reconciles_write_nothing() {
        let mut health = job(MaintenancePolicy::Retention, 1, Some("boom"));
        health.last_start = Some(NOW as f64 + 0.734);
        let status = job_status(&health);
        let back: JobStatus =
            serde_json::from_value(serde_json::to_value(&status).unwrap()).unwrap();
        assert_eq!(back, status);
    }

    fn job(policy: MaintenancePolicy, failures: i32, error: Option<&str>) -> JobHealth {
        JobHealth {
            id: match policy {
                MaintenancePolicy::Retention => 1000,
                MaintenancePolicy::Compression => 1001,
            },
            policy,
            schedule_seconds: 43_200.0,
            last_start: Some((NOW - 60) as f64),
            last_success: (failures == 0).then_some((NOW - 59) as f64),
            last_status: Some(if failures == 0 { "Success" } else { "Failed" }.into()),
            consecutive_failures: failures,
            last_error: error.map(str::to_string),
        }
    }

    fn maintenance(jobs: Vec<JobHealth>, overdue: Overdue) -> Maintenance {
        Maintenance {
            jobs,
            overdue,
            ran: Vec::new(),
        }
    }

    fn now() -> Timestamp {
        Timestamp::from_second(NOW).unwrap()
    }

    const PORTAL: &str = "cannot drop portal \"\" while it is being set up";

    #[test]
    fn healthy_jobs_with_nothing_overdue_are_current() {
        let found = maintenance(
            vec![
                job(MaintenancePolicy::Retention, 0, None),
                job(MaintenancePolicy::Compression, 0, None),
            ],
            Overdue::default(),
        );
        let (observed, status) = hypertable(&found, None, now());
        assert!(observed.ok);
        assert_eq!(observed.reason, Reason::MaintenanceCurrent);
        assert_eq!(status.jobs.len(), 2);
        assert_eq!(status.jobs[0].last_error, None);
    }

    #[test]
    fn runs_recorded_failed_whose_work_is_done_are_said_so_with_a_steady_message() {
        let found = |failures| {
            maintenance(
                vec![
                    job(MaintenancePolicy::Retention, failures, Some(PORTAL)),
                    job(MaintenancePolicy::Compression, failures, Some(PORTAL)),
                ],
                Overdue::default(),
            )
        };
        let (first, status) = hypertable(&found(1), None, now());
        let (later, _) = hypertable(&found(7), None, now());
        assert!(first.ok, "the work is done: {}", first.message);
        assert_eq!(first.reason, Reason::JobsMisreportFailure);
        assert!(first.message.contains(PORTAL), "{}", first.message);
        assert_eq!(first, later, "more failed runs do not change the condition");
        assert_eq!(status.jobs[1].last_error.as_deref(), Some(PORTAL));
        assert_eq!(status.jobs[1].consecutive_failures, 1);
    }

    #[test]
    fn real_failures_make_the_condition_false_even_before_anything_is_overdue() {
        let found = maintenance(
            vec![
                job(MaintenancePolicy::Retention, 0, None),
                job(
                    MaintenancePolicy::Compression,
                    3,
                    Some("could not obtain lock on relation"),
                ),
            ],
            Overdue::default(),
        );
        let (observed, _) = hypertable(&found, None, now());
        assert!(!observed.ok);
        assert_eq!(observed.reason, Reason::JobsFailing);
        assert!(
            observed
                .message
                .contains("compression job 1001 failed 3 time(s) in a row: could not obtain lock"),
            "{}",
            observed.message
        );
    }

    #[test]
    fn work_the_operator_did_itself_is_said_and_work_still_overdue_is_a_failure() {
        let mut found = maintenance(
            vec![
                job(MaintenancePolicy::Retention, 0, None),
                job(MaintenancePolicy::Compression, 0, None),
            ],
            Overdue::default(),
        );
        found.ran = vec![(MaintenancePolicy::Compression, None)];
        let (observed, status) = hypertable(&found, None, now());
        assert!(observed.ok);
        assert_eq!(observed.reason, Reason::MaintainedByOperator);
        assert_eq!(status.operator_run_at, Some(Time(now())));

        found.overdue = Overdue {
            compression: 4,
            retention: 0,
        };
        found.ran = vec![(
            MaintenancePolicy::Compression,
            Some("canceling statement due to statement timeout".into()),
        )];
        let (observed, status) = hypertable(&found, None, now());
        assert!(!observed.ok);
        assert_eq!(observed.reason, Reason::MaintenanceOverdue);
        assert!(
            observed
                .message
                .contains("4 chunk(s) past compressAfterDays"),
            "{}",
            observed.message
        );
        assert!(
            observed.message.contains("stopped after 60 s"),
            "{}",
            observed.message
        );
        assert_eq!(status.overdue_compression_chunks, 4);
    }

    #[test]
    fn the_operator_covers_only_while_its_run_is_recent() {
        let found = maintenance(
            vec![job(MaintenancePolicy::Compression, 0, None)],
            Overdue::default(),
        );
        let recent = Time(Timestamp::from_second(NOW - 3_600).unwrap());
        let (observed, _) = hypertable(&found, Some(&recent), now());
        assert_eq!(observed.reason, Reason::MaintainedByOperator);
        let long_ago = Time(Timestamp::from_second(NOW - 3 * 86_400).unwrap());
        let (observed, status) = hypertable(&found, Some(&long_ago), now());
        assert_eq!(observed.reason, Reason::MaintenanceCurrent);
        assert_eq!(status.operator_run_at, Some(long_ago), "kept in status");
    }
}
