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
