//! Which storage a tenant's measurements have (pure, unit-tested).
//!
//! A tenant keeps the storage it was created with: the table in the database decides,
//! then what the tenant's status recorded, and only for a tenant that has neither, the
//! server and `--database-storage`. So TimescaleDB appearing later changes nothing for
//! existing tenants (their partitions keep being maintained), and TimescaleDB missing
//! for a hypertable tenant is an error that says so, never a silent switch.

use crate::crd::Storage;

/// `--database-storage`: what new tenants get.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum StorageMode {
    /// Hypertables when the database has TimescaleDB (installed, or installable because
    /// the server preloads it), native partitions otherwise.
    #[default]
    Auto,
    /// Hypertables; without TimescaleDB new tenants fail with a condition that says so.
    Hypertable,
    /// Native partitions, even where TimescaleDB is installed.
    Partitions,
}

/// The `measurements` table of a tenant, as the database has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    /// Declaratively partitioned (`relkind` `p`).
    Partitioned,
    /// A TimescaleDB hypertable.
    Hypertable,
    /// An ordinary table: a hypertable whose extension is gone, or made by hand.
    Ordinary,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error(
        "the tenant's measurements are a TimescaleDB hypertable, but the database has no \
         TimescaleDB now: install it and preload it (shared_preload_libraries = \
         'timescaledb'), then the tenant continues; see docs/database.md, \"When TimescaleDB \
         appears or disappears\""
    )]
    TimescaleDbMissing,
    #[error(
        "the database has the timescaledb extension {0} but the server does not preload it: \
         PostgreSQL refuses every DDL statement in this database until it does (TimescaleDB's \
         event triggers need its library), so nothing can be provisioned or maintained; add \
         timescaledb to shared_preload_libraries and restart the server (or, to remove \
         TimescaleDB, move the hypertable tenants away and drop the extension)"
    )]
    TimescaleDbNotLoaded(String),
    #[error(
        "new tenants get hypertables (--database-storage=hypertable), but the database has \
         no TimescaleDB: install and preload it, or set --database-storage=auto"
    )]
    HypertableRequired,
    #[error(
        "the tenant's measurements table is neither partitioned nor a hypertable (made or \
         changed by hand?): restore it or migrate it as docs/database.md describes"
    )]
    UnknownTable,
}

/// A tenant's storage with what acting on it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    Partitions,
    /// With the schema TimescaleDB's functions are in.
    Hypertable {
        timescaledb: String,
    },
}

impl Layout {
    pub fn storage(&self) -> Storage {
        match self {
            Layout::Partitions => Storage::Partitions,
            Layout::Hypertable { .. } => Storage::Hypertable,
        }
    }
}

/// The storage of a tenant: `table` as found, `recorded` in its status, `timescaledb`
/// the schema of TimescaleDB's extension if the database has it now.
pub fn decide(
    table: Option<Table>,
    recorded: Option<Storage>,
    timescaledb: Option<&str>,
    mode: StorageMode,
) -> Result<Layout, Error> {
    let storage = decide_storage(table, recorded, timescaledb.is_some(), mode)?;
    Ok(match (storage, timescaledb) {
        (Storage::Hypertable, Some(schema)) => Layout::Hypertable {
            timescaledb: schema.to_string(),
        },
        // decide_storage gives a hypertable only where TimescaleDB is.
        (Storage::Hypertable, None) => return Err(Error::TimescaleDbMissing),
        (Storage::Partitions, _) => Layout::Partitions,
    })
}

fn decide_storage(
    table: Option<Table>,
    recorded: Option<Storage>,
    timescaledb: bool,
    mode: StorageMode,
) -> Result<Storage, Error> {
    match table {
        Some(Table::Partitioned) => Ok(Storage::Partitions),
        Some(Table::Hypertable) => Ok(Storage::Hypertable),
        // Without the extension a hypertable's root table looks ordinary.
        Some(Table::Ordinary) if !timescaledb => Err(Error::TimescaleDbMissing),
        Some(Table::Ordinary) => Err(Error::UnknownTable),
        None => match (recorded, mode) {
            (Some(Storage::Hypertable), _) if !timescaledb => Err(Error::TimescaleDbMissing),
            (Some(storage), _) => Ok(storage),
            (None, StorageMode::Partitions) => Ok(Storage::Partitions),
            (None, StorageMode::Hypertable) if !timescaledb => Err(Error::HypertableRequired),
            (None, StorageMode::Hypertable) => Ok(Storage::Hypertable),
            (None, StorageMode::Auto) if timescaledb => Ok(Storage::Hypertable),
            (None, StorageMode::Auto) => Ok(Storage::Partitions),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_existing_table_decides_whatever_the_server_offers() {
        for timescaledb in [false, true] {
            for mode in [
                StorageMode::Auto,
                StorageMode::Hypertable,
                StorageMode::Partitions,
            ] {
                assert_eq!(
                    decide_storage(Some(Table::Partitioned), None, timescaledb, mode),
                    Ok(Storage::Partitions),
                    "partitions stay partitions when TimescaleDB appears ({mode:?})"
                );
            }
        }
        assert_eq!(
            decide_storage(Some(Table::Hypertable), None, true, StorageMode::Partitions),
            Ok(Storage::Hypertable)
        );
    }

    #[test]
    fn a_hypertable_tenant_without_timescaledb_fails_and_never_switches() {
        assert_eq!(
            decide_storage(Some(Table::Ordinary), None, false, StorageMode::Auto),
            Err(Error::TimescaleDbMissing)
        );
        assert_eq!(
            decide_storage(None, Some(Storage::Hypertable), false, StorageMode::Auto),
            Err(Error::TimescaleDbMissing),
            "a recorded hypertable whose table is gone is not re-created as partitions"
        );
        assert_eq!(
            decide_storage(Some(Table::Ordinary), None, true, StorageMode::Auto),
            Err(Error::UnknownTable)
        );
    }

    #[test]
    fn new_tenants_follow_the_mode() {
        let new = |timescaledb, mode| decide_storage(None, None, timescaledb, mode);
        assert_eq!(new(true, StorageMode::Auto), Ok(Storage::Hypertable));
        assert_eq!(new(false, StorageMode::Auto), Ok(Storage::Partitions));
        assert_eq!(new(true, StorageMode::Partitions), Ok(Storage::Partitions));
        assert_eq!(new(true, StorageMode::Hypertable), Ok(Storage::Hypertable));
        assert_eq!(
            new(false, StorageMode::Hypertable),
            Err(Error::HypertableRequired)
        );
        assert_eq!(
            decide_storage(None, Some(Storage::Partitions), true, StorageMode::Auto),
            Ok(Storage::Partitions),
            "a recorded storage wins over the mode"
        );
    }

    #[test]
    fn a_hypertable_layout_knows_where_timescaledb_is() {
        assert_eq!(
            decide(None, None, Some("public"), StorageMode::Auto),
            Ok(Layout::Hypertable {
                timescaledb: "public".into()
            })
        );
        assert_eq!(
            decide(None, None, None, StorageMode::Auto),
            Ok(Layout::Partitions)
        );
    }
}
