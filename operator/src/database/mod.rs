//! The tenant's part of the shared PostgreSQL/TimescaleDB database: schema, roles,
//! tables and credentials (docs/database.md).
//!
//! [`names`], [`logins`], [`sql`], [`storage`], [`timescale`], [`partitions`], [`quota`] and [`rate`] are pure (identifiers,
//! statement text and decisions, unit-tested); [`connect`], [`provision`] and
//! [`checks`] (what the operator needs of the database and what is dangerous in it)
//! talk to the database. No user-typed text ever reaches SQL: identifiers come from the validated
//! tenant name and are quoted, values are bound parameters, and the only literals spliced
//! in are numbers from the validated configuration, partition bounds and SCRAM verifiers
//! that this code computed itself.

pub mod checks;
pub mod connect;
pub mod dataset_provision;
pub mod datasets;
pub mod logins;
pub mod names;
pub mod partitions;
pub mod provision;
pub mod quota;
pub mod rate;
pub mod share_provision;
pub mod shares;
pub mod sql;
pub mod storage;
pub mod timescale;

use rand::distr::{Alphanumeric, SampleString};

/// Length of generated passwords: 48 alphanumeric characters, about 285 bits.
pub const PASSWORD_LEN: usize = 48;

/// A new password from the thread-local CSPRNG (ChaCha, seeded by the OS).
pub fn new_password() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), PASSWORD_LEN)
}

/// A driver error as the server gave it: SQLSTATE, message, detail and hint, where
/// tokio-postgres's own text says only "db error".
pub fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => {
            let mut text = format!("SQLSTATE {}: {}", db.code().code(), db.message());
            if let Some(detail) = db.detail() {
                text.push_str(&format!(" (detail: {detail})"));
            }
            if let Some(hint) = db.hint() {
                text.push_str(&format!(" (hint: {hint})"));
            }
            text
        }
        None => error.to_string(),
    }
}

/// The SCRAM-SHA-256 verifier of `password`, computed here so the plaintext never
/// reaches the server (or its logs).
pub fn scram_verifier(password: &str) -> String {
    postgres_protocol::password::scram_sha_256(password.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_long_distinct_and_alphanumeric() {
        let (a, b) = (new_password(), new_password());
        assert!(a.len() >= 32 && a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }

    #[test]
    fn verifiers_hide_the_password() {
        let password = new_password();
        let verifier = scram_verifier(&password);
        assert!(verifier.starts_with("SCRAM-SHA-256$4096:"), "{verifier}");
        assert!(!verifier.contains(&password));
    }
}
