//! The TimescaleDB side of a tenant's storage (pure): statement text, the settings a
//! hypertable should have, and the plan that brings the observed hypertable and its
//! jobs to them.
//!
//! Verified against TimescaleDB 2.28.3 on PostgreSQL 15 (`e2e/test-timescaledb`) and, in
//! CI, against TimescaleDB 2.23 on PostgreSQL 17 in PGlite (`e2e/tests/offline/timescaledb_sql.rs`).
//!
//! Facts the design rests on, measured there:
//! - a policy job is owned by the hypertable's owner, whoever adds it, and TimescaleDB
//!   refuses to add one (and on PostgreSQL 15 cannot start one) for an owner without
//!   LOGIN. So the owner role of a hypertable tenant has LOGIN, but no password and a
//!   small connection limit: no client can authenticate as it with password
//!   authentication, and the jobs run with that tenant's rights only.
//! - `add_*_policy` with a changed setting does not change an existing job; a job's
//!   `config` is changed with `alter_job`, which keeps its id and schedule.
//! - dropping the hypertable drops its chunks, its compressed hypertable and its jobs.

use super::names::{TenantDb, quote};
use crate::crd::MaintenancePolicy;

/// Connection limit of a hypertable tenant's owner role: its background jobs (retention
/// and compression) connect as it, one session each.
pub const OWNER_CONNECTION_LIMIT: i32 = 4;

/// `proc_name` of TimescaleDB's retention and compression jobs.
pub const RETENTION_JOB: &str = "policy_retention";
pub const COMPRESSION_JOB: &str = "policy_compression";

/// Storage settings of one tenant's hypertable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HypertableSettings {
    pub chunk_interval_hours: i32,
    pub retention_days: i32,
    pub compress_after_days: i32,
}

/// The hypertable as the argument TimescaleDB's functions take (bound as text and cast to
/// `regclass` in the statement).
pub fn relation(db: &TenantDb) -> String {
    format!("{}.measurements", quote(&db.schema))
}

/// TimescaleDB's function `name`, qualified with the extension's schema: the admin's own
/// search path is not relied on.
fn function(timescaledb: &str, name: &str) -> String {
    format!("{}.{name}", quote(timescaledb))
}

/// Turns the new, empty `measurements` table into a hypertable. Run as the owner role in
/// the transaction that created the table. `$1` is [`relation`], `$2` the chunk interval
/// in hours.
pub fn create_hypertable(timescaledb: &str) -> String {
    format!(
        "SELECT {}($1::text::regclass, {}('time', make_interval(hours => $2)), \
         if_not_exists => TRUE)",
        function(timescaledb, "create_hypertable"),
        function(timescaledb, "by_range")
    )
}

/// Compression segmented by series: one sensor's metric stays together, which is how
/// dashboards read it, and similar values compress side by side.
pub fn enable_compression_statement(db: &TenantDb) -> String {
    format!(
        "ALTER TABLE {} SET (timescaledb.compress, \
         timescaledb.compress_segmentby = 'sensor, metric', \
         timescaledb.compress_orderby = 'time DESC')",
        relation(db)
    )
}

/// The hypertable's dimension and compression, read back; `$1` is the schema, `$2` the
/// wanted chunk interval in hours. No row: the hypertable does not exist.
pub const HYPERTABLE_QUERY: &str = "SELECT d.time_interval = make_interval(hours => $2), \
     h.compression_enabled \
     FROM timescaledb_information.hypertables h \
     JOIN timescaledb_information.dimensions d \
       ON d.hypertable_schema = h.hypertable_schema AND d.hypertable_name = h.hypertable_name \
     WHERE h.hypertable_schema = $1 AND h.hypertable_name = 'measurements' \
       AND d.column_name = 'time'";

/// The hypertable's retention and compression jobs, each with whether its interval is the
/// wanted one; `$1` is the schema, `$2` retention days, `$3` compress-after days.
pub const JOBS_QUERY: &str = "SELECT job_id, proc_name::text, scheduled, \
     CASE proc_name \
       WHEN 'policy_retention' THEN (config->>'drop_after')::interval = make_interval(days => $2) \
       WHEN 'policy_compression' THEN (config->>'compress_after')::interval = make_interval(days => $3) \
     END \
     FROM timescaledb_information.jobs \
     WHERE hypertable_schema = $1 AND hypertable_name = 'measurements' \
       AND proc_name IN ('policy_retention', 'policy_compression') \
     ORDER BY job_id";

/// One of the hypertable's jobs as [`JOBS_QUERY`] reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub id: i32,
    pub proc_name: String,
    pub scheduled: bool,
    /// Its interval setting is the wanted one.
    pub as_wanted: bool,
}

/// The hypertable as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub chunk_interval_as_wanted: bool,
    pub compression_enabled: bool,
    pub jobs: Vec<Job>,
}

/// One change that brings the hypertable to its settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// New chunks get the new interval; existing chunks keep theirs.
    SetChunkInterval,
    EnableCompression,
    AddRetentionPolicy,
    AddCompressionPolicy,
    /// A job whose interval is not the wanted one gets it (`alter_job`, same id).
    SetRetention(i32),
    SetCompressAfter(i32),
    /// A job paused by a Retain deletion runs again for the adopting tenant.
    Resume(i32),
}

impl Change {
    /// What the operator logs and reports.
    pub fn describe(&self) -> String {
        match self {
            Change::SetChunkInterval => "chunk interval set".into(),
            Change::EnableCompression => "compression enabled".into(),
            Change::AddRetentionPolicy => "retention policy added".into(),
            Change::AddCompressionPolicy => "compression policy added".into(),
            Change::SetRetention(id) => format!("retention of job {id} changed"),
            Change::SetCompressAfter(id) => format!("compress-after of job {id} changed"),
            Change::Resume(id) => format!("job {id} resumed"),
        }
    }
}

/// What to change so that the hypertable has `settings`. Empty when it has them: an
/// idle reconcile changes nothing, so job ids and schedules stay as they are.
pub fn plan(observed: &Observed) -> Vec<Change> {
    let mut changes = Vec::new();
    if !observed.chunk_interval_as_wanted {
        changes.push(Change::SetChunkInterval);
    }
    if !observed.compression_enabled {
        changes.push(Change::EnableCompression);
    }
    for (proc_name, add, set) in [
        (
            RETENTION_JOB,
            Change::AddRetentionPolicy,
            Change::SetRetention as fn(i32) -> Change,
        ),
        (
            COMPRESSION_JOB,
            Change::AddCompressionPolicy,
            Change::SetCompressAfter,
        ),
    ] {
        match observed.jobs.iter().find(|job| job.proc_name == proc_name) {
            None => changes.push(add),
            Some(job) => {
                if !job.as_wanted {
                    changes.push(set(job.id));
                }
                if !job.scheduled {
                    changes.push(Change::Resume(job.id));
                }
            }
        }
    }
    changes
}

/// The parameters a change's statement takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bind {
    None,
    /// `$1` the relation, `$2` a number of hours or days.
    Relation(String, i32),
    /// `$1` a job id, `$2` a number of days.
    JobSetting(i32, i32),
    /// `$1` a job id.
    Job(i32),
}

/// The statement of one change with its parameters. Run as the owner role.
pub fn statement(
    db: &TenantDb,
    change: &Change,
    settings: &HypertableSettings,
    timescaledb: &str,
) -> (String, Bind) {
    let relation = || relation(db);
    let call = |name: &str| function(timescaledb, name);
    let set = |key: &str| {
        format!(
            "SELECT {}(job_id, config => jsonb_set(config, '{{{key}}}', \
             to_jsonb(make_interval(days => $2)::text))) \
             FROM timescaledb_information.jobs WHERE job_id = $1",
            call("alter_job")
        )
    };
    match change {
        Change::SetChunkInterval => (
            format!(
                "SELECT {}($1::text::regclass, make_interval(hours => $2))",
                call("set_chunk_time_interval")
            ),
            Bind::Relation(relation(), settings.chunk_interval_hours),
        ),
        Change::EnableCompression => (enable_compression_statement(db), Bind::None),
        Change::AddRetentionPolicy => (
            format!(
                "SELECT {}($1::text::regclass, drop_after => make_interval(days => $2), \
                 if_not_exists => TRUE)",
                call("add_retention_policy")
            ),
            Bind::Relation(relation(), settings.retention_days),
        ),
        Change::AddCompressionPolicy => (
            format!(
                "SELECT {}($1::text::regclass, compress_after => make_interval(days => $2), \
                 if_not_exists => TRUE)",
                call("add_compression_policy")
            ),
            Bind::Relation(relation(), settings.compress_after_days),
        ),
        Change::SetRetention(id) => (
            set("drop_after"),
            Bind::JobSetting(*id, settings.retention_days),
        ),
        Change::SetCompressAfter(id) => (
            set("compress_after"),
            Bind::JobSetting(*id, settings.compress_after_days),
        ),
        Change::Resume(id) => (
            format!("SELECT {}($1, scheduled => TRUE)", call("alter_job")),
            Bind::Job(*id),
        ),
    }
}

/// The tenant's retention and compression jobs with what TimescaleDB recorded of their
/// runs (its own views and job statistics; times as seconds since the epoch, NULL when
/// never): id, proc_name, schedule interval, last start, last success, last result,
/// consecutive failures, the error of the latest failed run. `$1` is the schema.
pub const JOB_HEALTH_QUERY: &str = "SELECT j.job_id, j.proc_name::text, \
     extract(epoch FROM j.schedule_interval)::float8, \
     CASE WHEN isfinite(s.last_start) THEN extract(epoch FROM s.last_start)::float8 END, \
     CASE WHEN isfinite(s.last_successful_finish) \
          THEN extract(epoch FROM s.last_successful_finish)::float8 END, \
     CASE WHEN s.last_finish IS NULL OR NOT isfinite(s.last_finish) THEN NULL \
          WHEN s.last_run_success THEN 'Success' ELSE 'Failed' END, \
     coalesce(s.consecutive_failures, 0), \
     (SELECT e.err_message FROM timescaledb_information.job_errors e \
       WHERE e.job_id = j.job_id ORDER BY e.start_time DESC LIMIT 1) \
     FROM timescaledb_information.jobs j \
     LEFT JOIN _timescaledb_internal.bgw_job_stat s ON s.job_id = j.job_id \
     WHERE j.hypertable_schema = $1 AND j.hypertable_name = 'measurements' \
       AND j.proc_name IN ('policy_retention', 'policy_compression') \
     ORDER BY j.job_id";

/// The effect of the jobs, measured on the chunks: how many are past compress-after and
/// still uncompressed, and how many are wholly past retention and still there, counting
/// only chunks due for longer than their job's grace (a chunk is due from the later of
/// its end plus the setting and its creation: backfilled old data is not late the moment
/// it arrives). `$1` schema, `$2` compress-after days, `$3` retention days, `$4` and `$5`
/// the compression and retention grace in seconds.
pub const OVERDUE_QUERY: &str = "SELECT \
     count(*) FILTER (WHERE NOT c.is_compressed \
       AND greatest(c.range_end + make_interval(days => $2), \
                    coalesce(c.chunk_creation_time, '-infinity')) \
           < now() - make_interval(secs => $4)), \
     count(*) FILTER (WHERE greatest(c.range_end + make_interval(days => $3), \
                    coalesce(c.chunk_creation_time, '-infinity')) \
           < now() - make_interval(secs => $5)) \
     FROM timescaledb_information.chunks c \
     WHERE c.hypertable_schema = $1 AND c.hypertable_name = 'measurements'";

/// What TimescaleDB records of one job (a row of [`JOB_HEALTH_QUERY`]).
#[derive(Clone, Debug, PartialEq)]
pub struct JobHealth {
    pub id: i32,
    pub policy: MaintenancePolicy,
    pub schedule_seconds: f64,
    pub last_start: Option<f64>,
    pub last_success: Option<f64>,
    /// `Success` or `Failed`; `None` before its first run.
    pub last_status: Option<String>,
    pub consecutive_failures: i32,
    pub last_error: Option<String>,
}

impl JobHealth {
    /// TimescaleDB counts its latest runs as failed.
    pub fn failing(&self) -> bool {
        self.consecutive_failures > 0 || self.last_status.as_deref() == Some("Failed")
    }

    /// A job is late once twice its schedule interval has passed since a chunk became
    /// due: it has had one run and one retry's worth of time to do the work.
    pub fn grace_seconds(&self) -> f64 {
        2.0 * self.schedule_seconds
    }

    /// The failure is the one TimescaleDB 2.28 records on PostgreSQL 15.19 and later for
    /// every background run, after the run did its work (the job's portal is dropped in
    /// a state those releases refuse).
    pub fn misreported(&self) -> bool {
        self.last_error
            .as_deref()
            .is_some_and(|error| error.starts_with(MISREPORTED_FAILURE))
    }
}

/// Runs in a row a job must have failed (with a real error) before the tenant's
/// maintenance counts as failing.
pub const FAILURES_BEFORE_ALARM: i32 = 2;

/// The start of the error TimescaleDB 2.28's background jobs end with on PostgreSQL
/// 15.19 and later, after their work is committed (docs/database.md, "Job health").
pub const MISREPORTED_FAILURE: &str = "cannot drop portal";

/// The policy a job's `proc_name` runs.
pub fn policy_of(proc_name: &str) -> Option<MaintenancePolicy> {
    match proc_name {
        RETENTION_JOB => Some(MaintenancePolicy::Retention),
        COMPRESSION_JOB => Some(MaintenancePolicy::Compression),
        _ => None,
    }
}

/// Chunks whose policy is late ([`OVERDUE_QUERY`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Overdue {
    pub compression: i64,
    pub retention: i64,
}

impl Overdue {
    /// The policies with work overdue, in the order the operator runs them: retention
    /// first, so nothing is compressed that is about to be dropped.
    pub fn policies(&self) -> Vec<MaintenancePolicy> {
        let mut due = Vec::new();
        if self.retention > 0 {
            due.push(MaintenancePolicy::Retention);
        }
        if self.compression > 0 {
            due.push(MaintenancePolicy::Compression);
        }
        due
    }

    pub fn is_empty(&self) -> bool {
        self.compression == 0 && self.retention == 0
    }
}

/// How the tenant's maintenance stands, judged by its effect first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing overdue and the jobs succeed.
    Current,
    /// Nothing overdue, but TimescaleDB records the runs as failed with the known
    /// misreport: the work is done.
    Misreported { error: String },
    /// Nothing overdue (any more) because the operator ran the due policies itself: the
    /// jobs did not do the work.
    ByOperator { why: String },
    /// The jobs fail for real (another error): said even while nothing is overdue yet.
    Failing { why: String },
    /// Work overdue that the operator's own run did not finish either.
    Overdue { why: String },
}

/// The verdict from the jobs as recorded, what is overdue after the operator's own run
/// (if any), that run's error, and whether the operator covered for the jobs since
/// their last success (`covering`).
pub fn judge(
    jobs: &[JobHealth],
    overdue: Overdue,
    operator_error: Option<&str>,
    covering: bool,
) -> Verdict {
    let describe = |job: &JobHealth| {
        format!(
            "the {} job {} failed {} time(s) in a row: {}",
            policy_name(job.policy),
            job.id,
            job.consecutive_failures.max(1),
            job.last_error.as_deref().unwrap_or("no error recorded")
        )
    };
    let real_failures = jobs
        .iter()
        .filter(|job| job.failing() && !job.misreported());
    // A single failed run may be a race (the tenant's own retention dropping a chunk the
    // compression was about to take): TimescaleDB retries, and only a failure that
    // repeats is an alarm. Any failure is named while work is overdue.
    let alarms: Vec<String> = real_failures
        .clone()
        .filter(|job| job.consecutive_failures >= FAILURES_BEFORE_ALARM)
        .map(describe)
        .collect();
    let failures: Vec<String> = real_failures.map(describe).collect();

    if !overdue.is_empty() {
        let mut why = vec![describe_overdue(overdue)];
        why.extend(failures);
        if let Some(error) = operator_error {
            why.push(format!("the operator's own run did not finish it: {error}"));
        }
        return Verdict::Overdue {
            why: why.join("; "),
        };
    }
    if !alarms.is_empty() {
        return Verdict::Failing {
            why: alarms.join("; "),
        };
    }
    if covering {
        return Verdict::ByOperator {
            why: "the jobs did not do the due work in time (status.database.maintenance.jobs \
                  says what TimescaleDB recorded of them)"
                .into(),
        };
    }
    match jobs.iter().find(|job| job.failing() && job.misreported()) {
        Some(job) => Verdict::Misreported {
            error: job.last_error.clone().unwrap_or_default(),
        },
        None => Verdict::Current,
    }
}

pub fn policy_name(policy: MaintenancePolicy) -> &'static str {
    match policy {
        MaintenancePolicy::Retention => "retention",
        MaintenancePolicy::Compression => "compression",
    }
}

fn describe_overdue(overdue: Overdue) -> String {
    let mut parts = Vec::new();
    if overdue.compression > 0 {
        parts.push(format!(
            "{} chunk(s) past compressAfterDays are not compressed",
            overdue.compression
        ));
    }
    if overdue.retention > 0 {
        parts.push(format!(
            "{} chunk(s) past retentionDays are not dropped",
            overdue.retention
        ));
    }
    parts.join(" and ")
}

/// Runs the job now in this session, as `CALL run_job` does for a user (not through the
/// background worker): the policy commits as it goes, so work done before a timeout
/// stays done.
pub fn run_job_statement(timescaledb: &str, job: i32) -> String {
    format!("CALL {}({job})", function(timescaledb, "run_job"))
}

/// Delete: what TimescaleDB keeps of the tenant's jobs' runs after the jobs are gone.
/// `$1` the job ids.
pub const DELETE_JOB_HISTORY: &str =
    "DELETE FROM _timescaledb_internal.bgw_job_stat_history WHERE job_id = ANY($1)";

/// The ids of the tenant's jobs; `$1` the schema.
pub const JOB_IDS_QUERY: &str = "SELECT job_id FROM timescaledb_information.jobs \
     WHERE hypertable_schema = $1 AND hypertable_name = 'measurements'";

/// Retain: the data stays as it is, so its jobs stop (retention would keep dropping it).
/// `$1` is the schema. Adoption resumes them ([`Change::Resume`]).
pub fn pause_jobs(timescaledb: &str) -> String {
    format!(
        "SELECT {}(job_id, scheduled => FALSE) FROM timescaledb_information.jobs \
         WHERE hypertable_schema = $1 AND hypertable_name = 'measurements' AND scheduled",
        function(timescaledb, "alter_job")
    )
}

/// Bytes used by the tenant: the hypertable with its chunks, compressed ones included
/// (they live in TimescaleDB's internal schema, not the tenant's), plus every other
/// table of the schema. `$1` is the schema, `$2` [`relation`].
pub fn usage_query(timescaledb: &str) -> String {
    format!(
        "SELECT (coalesce({}($2::text::regclass), 0) + \
         coalesce((SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c \
           JOIN pg_namespace n ON n.oid = c.relnamespace \
           WHERE n.nspname = $1 AND c.relkind IN ('r', 'm') AND c.relname <> 'measurements'), 0))::bigint",
        function(timescaledb, "hypertable_size")
    )
}

/// Rows ever inserted into the hypertable's chunks, as PostgreSQL counts them. Dropped
/// chunks take their count with them, which the rate sampler takes for a reset. `$1` is
/// [`relation`].
pub fn rows_inserted_query(timescaledb: &str) -> String {
    format!(
        "SELECT coalesce(sum(s.n_tup_ins), 0)::bigint \
         FROM {}($1::text::regclass) AS chunk \
         JOIN pg_stat_user_tables s ON s.relid = chunk",
        function(timescaledb, "show_chunks")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: i32, proc_name: &str, scheduled: bool, as_wanted: bool) -> Job {
        Job {
            id,
            proc_name: proc_name.into(),
            scheduled,
            as_wanted,
        }
    }

    fn as_wanted() -> Observed {
        Observed {
            chunk_interval_as_wanted: true,
            compression_enabled: true,
            jobs: vec![
                job(1000, RETENTION_JOB, true, true),
                job(1001, COMPRESSION_JOB, true, true),
            ],
        }
    }

    #[test]
    fn a_hypertable_as_wanted_needs_nothing() {
        assert_eq!(plan(&as_wanted()), []);
    }

    #[test]
    fn a_new_hypertable_gets_compression_and_both_policies() {
        let new = Observed {
            chunk_interval_as_wanted: true,
            ..Observed::default()
        };
        assert_eq!(
            plan(&new),
            [
                Change::EnableCompression,
                Change::AddRetentionPolicy,
                Change::AddCompressionPolicy
            ]
        );
    }

    #[test]
    fn changed_settings_alter_the_existing_jobs_and_paused_jobs_resume() {
        let mut observed = as_wanted();
        observed.chunk_interval_as_wanted = false;
        observed.jobs[0].as_wanted = false;
        observed.jobs[1].as_wanted = false;
        observed.jobs[1].scheduled = false;
        assert_eq!(
            plan(&observed),
            [
                Change::SetChunkInterval,
                Change::SetRetention(1000),
                Change::SetCompressAfter(1001),
                Change::Resume(1001)
            ]
        );
    }

    #[test]
    fn statements_bind_their_values_and_quote_the_relation() {
        let db = TenantDb::test("select");
        assert_eq!(relation(&db), "\"t_select\".measurements");
        assert!(
            enable_compression_statement(&db)
                .starts_with("ALTER TABLE \"t_select\".measurements SET")
        );
        let settings = HypertableSettings {
            chunk_interval_hours: 24,
            retention_days: 365,
            compress_after_days: 7,
        };
        for change in [
            Change::SetChunkInterval,
            Change::AddRetentionPolicy,
            Change::AddCompressionPolicy,
            Change::SetRetention(1),
            Change::SetCompressAfter(1),
        ] {
            let (text, bind) = statement(&db, &change, &settings, "public");
            assert!(text.contains("$1") && text.contains("$2"), "{text}");
            assert!(!matches!(bind, Bind::None | Bind::Job(_)), "{change:?}");
        }
        let (text, bind) = statement(&db, &Change::SetRetention(1000), &settings, "public");
        assert!(text.contains("'{drop_after}'"), "{text}");
        assert!(text.starts_with("SELECT \"public\".alter_job("), "{text}");
        assert_eq!(bind, Bind::JobSetting(1000, 365));
        assert_eq!(
            create_hypertable("public"),
            "SELECT \"public\".create_hypertable($1::text::regclass, \"public\".by_range('time', \
             make_interval(hours => $2)), if_not_exists => TRUE)"
        );
    }
}
