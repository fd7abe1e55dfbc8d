//! The writer's login roles and how a rotation moves between them (pure, unit-tested).
//!
//! The privileges stay on the writer role `t_<n>_writer`; ingest logs in as one of its
//! members `t_<n>_writer_1` or `t_<n>_writer_2`. A rotation gives the login that is not in
//! use a new password and names it in the `db-writer` Secret; the login the pods used
//! before keeps working until every ingest pod has restarted with the new Secret, and is
//! retired then (no LOGIN, no password, sessions ended). A tenant provisioned before the
//! login roles existed logs in as the writer role itself, and its first rotation retires
//! that login the same way. Where a retirement is pending is recorded on the Secret (see
//! [`crate::resources::secrets::RETIRING_ANNOTATION`]), so an operator that restarts goes
//! on where the previous one stopped.

use super::names::TenantDb;

/// Which writer roles may log in: the one the `db-writer` Secret names, and the ones a
/// rotation replaced that pods may still be using.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriterLogins {
    pub active: String,
    /// Retired once no ingest pod runs with the previous Secret.
    pub retiring: Vec<String>,
}

impl WriterLogins {
    /// A tenant's first login (and the one a re-created tenant starts with).
    pub fn first(db: &TenantDb) -> WriterLogins {
        WriterLogins {
            active: db.writer_logins[0].clone(),
            retiring: Vec::new(),
        }
    }

    /// Whether `role` should be able to log in now.
    pub fn enabled(&self, role: &str) -> bool {
        self.active == role || self.retiring.iter().any(|retiring| retiring == role)
    }
}

/// What the `db-writer` Secret says about the writer's login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretLogin {
    /// Its `user`.
    pub user: String,
    /// Logins replaced by a rotation and not yet retired.
    pub retiring: Vec<String>,
}

/// What the database step does with the writer's login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// The Secret's credentials stay.
    Keep(WriterLogins),
    /// `logins.active` gets a new password, which the Secret then carries.
    Issue(WriterLogins),
    /// A rotation is asked for while the previous one still waits for the pods: it
    /// starts once that login is retired (giving its role a password now would fail the
    /// pods that still use it).
    Deferred(WriterLogins),
}

impl Plan {
    pub fn logins(&self) -> &WriterLogins {
        match self {
            Plan::Keep(logins) | Plan::Issue(logins) | Plan::Deferred(logins) => logins,
        }
    }
}

/// The login a rotation moves to from `current`: the other one of the pair (the writer
/// role itself, before the first rotation, hands over to the first).
pub fn next_login(db: &TenantDb, current: &str) -> String {
    let [first, second] = &db.writer_logins;
    if current == first { second } else { first }.clone()
}

/// Decides the writer's login. `secret`: what the `db-writer` Secret says, if it exists;
/// `due`: new credentials are due (a rotation was asked for, or a Secret is missing);
/// `can_login`: the writer roles that can log in now, as the database says.
pub fn plan(db: &TenantDb, secret: Option<&SecretLogin>, due: bool, can_login: &[String]) -> Plan {
    let known = |role: &String| db.writer_roles().contains(role);
    match secret.filter(|secret| known(&secret.user)) {
        Some(secret) => {
            let current = WriterLogins {
                active: secret.user.clone(),
                retiring: secret
                    .retiring
                    .iter()
                    .filter(|role| known(role) && **role != secret.user)
                    .cloned()
                    .collect(),
            };
            match (due, current.retiring.is_empty()) {
                (false, _) => Plan::Keep(current),
                (true, false) => Plan::Deferred(current),
                (true, true) => Plan::Issue(WriterLogins {
                    active: next_login(db, &secret.user),
                    retiring: vec![secret.user.clone()],
                }),
            }
        }
        // No Secret to say which login the pods use (or one naming a role that is not
        // the writer's): a login nobody can use now, and every other one that can log
        // in is retired as soon as no pod may still use it.
        None => {
            let active = db
                .writer_logins
                .iter()
                .find(|role| !can_login.contains(role))
                .unwrap_or(&db.writer_logins[0])
                .clone();
            let retiring = db
                .writer_roles()
                .into_iter()
                .filter(|role| *role != active && can_login.contains(role))
                .collect();
            Plan::Issue(WriterLogins { active, retiring })
        }
    }
}

/// Whether the logins a rotation replaced may be retired: no ingest pod is left that was
/// started from a pod template other than the current one (`checksums`: each pod's
/// Secrets checksum, terminating pods included). True when there are no pods at all.
pub fn retirement_due(current_checksum: &str, checksums: &[Option<&str>]) -> bool {
    checksums
        .iter()
        .all(|checksum| *checksum == Some(current_checksum))
}

/// The annotation value naming the logins being retired (comma-separated, empty when
/// none), and back.
pub fn format_retiring(retiring: &[String]) -> String {
    retiring.join(",")
}

pub fn parse_retiring(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|role| !role.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> TenantDb {
        TenantDb::test("prato")
    }

    fn secret(user: &str, retiring: &[&str]) -> SecretLogin {
        SecretLogin {
            user: user.into(),
            retiring: retiring.iter().map(|role| role.to_string()).collect(),
        }
    }

    fn logins(active: &str, retiring: &[&str]) -> WriterLogins {
        WriterLogins {
            active: active.into(),
            retiring: retiring.iter().map(|role| role.to_string()).collect(),
        }
    }

    #[test]
    fn rotations_alternate_between_the_two_logins_starting_from_the_writer_role() {
        let db = db();
        assert_eq!(next_login(&db, "t_prato_writer"), "t_prato_writer_1");
        assert_eq!(next_login(&db, "t_prato_writer_1"), "t_prato_writer_2");
        assert_eq!(next_login(&db, "t_prato_writer_2"), "t_prato_writer_1");
    }

    #[test]
    fn a_rotation_issues_the_other_login_and_keeps_the_previous_one_until_retired() {
        let db = db();
        for (user, next) in [
            ("t_prato_writer", "t_prato_writer_1"),
            ("t_prato_writer_1", "t_prato_writer_2"),
            ("t_prato_writer_2", "t_prato_writer_1"),
        ] {
            assert_eq!(
                plan(&db, Some(&secret(user, &[])), true, &[user.to_string()]),
                Plan::Issue(logins(next, &[user]))
            );
            assert_eq!(
                plan(&db, Some(&secret(user, &[])), false, &[]),
                Plan::Keep(logins(user, &[]))
            );
        }
    }

    #[test]
    fn a_rotation_waits_while_the_previous_one_is_still_rolling_out() {
        let db = db();
        let pending = secret("t_prato_writer_2", &["t_prato_writer_1"]);
        assert_eq!(
            plan(&db, Some(&pending), true, &[]),
            Plan::Deferred(logins("t_prato_writer_2", &["t_prato_writer_1"]))
        );
        assert_eq!(
            plan(&db, Some(&pending), false, &[]),
            Plan::Keep(logins("t_prato_writer_2", &["t_prato_writer_1"]))
        );
        // A hand-edited annotation cannot make the Secret's own user or a foreign role
        // retire.
        let edited = secret("t_prato_writer_2", &["t_prato_writer_2", "postgres"]);
        assert_eq!(
            plan(&db, Some(&edited), false, &[]),
            Plan::Keep(logins("t_prato_writer_2", &[]))
        );
    }

    #[test]
    fn without_a_secret_a_login_nobody_uses_is_issued_and_the_others_retire() {
        let db = db();
        assert_eq!(
            plan(&db, None, true, &[]),
            Plan::Issue(WriterLogins::first(&db)),
            "a new tenant, or one adopted after a Retain"
        );
        assert_eq!(
            plan(&db, None, true, &["t_prato_writer_1".into()]),
            Plan::Issue(logins("t_prato_writer_2", &["t_prato_writer_1"]))
        );
        assert_eq!(
            plan(&db, None, true, &["t_prato_writer".into()]),
            Plan::Issue(logins("t_prato_writer_1", &["t_prato_writer"]))
        );
        let foreign = secret("postgres", &[]);
        assert_eq!(
            plan(&db, Some(&foreign), false, &[]),
            Plan::Issue(WriterLogins::first(&db))
        );
    }

    #[test]
    fn retirement_waits_for_every_pod_of_an_older_template() {
        assert!(retirement_due("new", &[]), "no pods: at once");
        assert!(retirement_due("new", &[Some("new"), Some("new")]));
        assert!(!retirement_due("new", &[Some("new"), Some("old")]));
        assert!(
            !retirement_due("new", &[None]),
            "a pod without the annotation"
        );
    }

    #[test]
    fn the_annotation_round_trips() {
        let roles = vec!["t_prato_writer".to_string(), "t_prato_writer_1".to_string()];
        assert_eq!(parse_retiring(&format_retiring(&roles)), roles);
        assert_eq!(format_retiring(&[]), "");
        assert!(parse_retiring("").is_empty());
    }
}
