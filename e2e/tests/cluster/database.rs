//! Tenant schemas on the real PostgreSQL: created idempotently, usable with the tenant's
//! own credentials exactly as a client would use them, and isolated from each other.

use crate::support::denied;
use anyhow::{Result, bail, ensure};
use smartregion_e2e::{shared, unique_name};
use smartregion_operator::surface::TenantName;
use smartregion_operator::surface::provisioning::HypertableSettings;
use smartregion_operator::surface::provisioning::RoleLimits;
use smartregion_operator::surface::provisioning::WriterLogins;
use smartregion_operator::surface::provisioning::new_password;
use smartregion_operator::surface::provisioning::{
    Credentials, Desired, Passwords, Provisioning, Writes, ensure_schema_exists,
};
use smartregion_operator::surface::provisioning::{Layout, Table};
use smartregion_operator::surface::provisioning::{TenantDb, quote};
use tokio_postgres::{Client, NoTls};

fn desired() -> Desired {
    Desired {
        limits: RoleLimits {
            connection_limit: 5,
            statement_timeout_ms: 30_000,
        },
        layout: Layout::Partitions,
        timescaledb_schema: None,
        hypertable: HypertableSettings {
            chunk_interval_hours: 24,
            retention_days: 365,
            compress_after_days: 7,
        },
    }
}

async fn connect(config: &tokio_postgres::Config) -> Result<Client> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn admin() -> Result<(tokio_postgres::Config, Client)> {
    // As the operator logs in: the least-privileged admin of the operator guide.
    let config: tokio_postgres::Config = shared().operator_database_url.parse()?;
    let client = connect(&config).await?;
    Ok((config, client))
}

async fn login(admin: &tokio_postgres::Config, user: &str, password: &str) -> Result<Client> {
    let mut config = admin.clone();
    config.user(user).password(password);
    connect(&config).await
}

struct Tenant {
    db: TenantDb,
    writer_password: String,
    reader_password: String,
}

async fn provision(admin: &mut Client, prefix: &str) -> Result<Tenant> {
    let db = TenantDb::for_tenant(&TenantName::parse(&unique_name(prefix))?);
    let (writer_password, reader_password) = (new_password(), new_password());
    let passwords = Passwords {
        writer: &writer_password,
        reader: &reader_password,
    };
    let first = ensure_schema_exists(
        admin,
        &db,
        &Provisioning {
            desired: &desired(),
            table: None,
            logins: &WriterLogins::first(&db),
            passwords: Passwords {
                writer: passwords.writer,
                reader: passwords.reader,
            },
            credentials: Credentials::Keep,
            writes: Writes::Allowed,
        },
    )
    .await?;
    assert!(first.changed && first.passwords_set);
    Ok(Tenant {
        db,
        writer_password,
        reader_password,
    })
}

async fn drop_tenant(admin: &Client, db: &TenantDb) -> Result<()> {
    admin
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE; DROP OWNED BY {l1}, {l2}, {w}, {r}, {o}; \
             DROP ROLE {l1}, {l2}, {w}, {r}, {o}",
            quote(&db.schema),
            l1 = quote(&db.writer_logins[0]),
            l2 = quote(&db.writer_logins[1]),
            w = quote(&db.writer),
            r = quote(&db.reader),
            o = quote(&db.owner),
        ))
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_tenant_writes_and_reads_its_own_data_only() -> Result<()> {
    let (config, mut admin) = admin().await?;
    // A name that spells an SQL keyword, to prove quoting.
    let a = provision(&mut admin, "select").await?;
    let b = provision(&mut admin, "mugello").await?;
    // Idempotent: a second run finds everything in place (reads only) and keeps the
    // passwords.
    let again = ensure_schema_exists(
        &mut admin,
        &a.db,
        &Provisioning {
            desired: &desired(),
            table: Some(Table::Partitioned),
            logins: &WriterLogins::first(&a.db),
            passwords: Passwords {
                writer: "unused-unused-unused-unused-unused",
                reader: "unused-unused-unused-unused-unused",
            },
            credentials: Credentials::Keep,
            writes: Writes::Allowed,
        },
    )
    .await?;
    assert_eq!(
        (again.changed, again.passwords_set),
        (false, false),
        "the steady state is recognised from the catalogs"
    );
    // A changed setting (the connection limit) is noticed and applied.
    let mut more = desired();
    more.limits.connection_limit = 9;
    let changed = ensure_schema_exists(
        &mut admin,
        &a.db,
        &Provisioning {
            desired: &more,
            table: Some(Table::Partitioned),
            logins: &WriterLogins::first(&a.db),
            passwords: Passwords {
                writer: "unused-unused-unused-unused-unused",
                reader: "unused-unused-unused-unused-unused",
            },
            credentials: Credentials::Keep,
            writes: Writes::Allowed,
        },
    )
    .await?;
    assert!(changed.changed && !changed.passwords_set);
    let limit: i32 = admin
        .query_one(
            "SELECT rolconnlimit FROM pg_roles WHERE rolname = $1",
            &[&a.db.writer_logins[0]],
        )
        .await?
        .get(0);
    assert_eq!(limit, 9);

    let writer = login(&config, &a.db.writer_logins[0], &a.writer_password).await?;
    let insert = "INSERT INTO measurements (sensor, metric, time, value) VALUES ($1, $2, $3::text::timestamptz, $4) ON CONFLICT DO NOTHING";
    let stored = writer
        .execute(
            insert,
            &[
                &"pm10-via-roma",
                &"pm10",
                &"2026-11-23T10:00:00+01:00",
                &21.5f64,
            ],
        )
        .await?;
    let again = writer
        .execute(
            insert,
            &[
                &"pm10-via-roma",
                &"pm10",
                &"2026-11-23T10:00:00+01:00",
                &21.5f64,
            ],
        )
        .await?;
    assert_eq!(
        (stored, again),
        (1, 0),
        "the same measurement is stored once"
    );
    // Far outside any range: the default partition takes it.
    writer
        .execute(
            insert,
            &[&"pm10-via-roma", &"pm10", &"1970-01-01T00:00:00Z", &1.0f64],
        )
        .await?;

    let reader = login(&config, &a.db.reader, &a.reader_password).await?;
    let count: i64 = reader
        .query_one("SELECT count(*) FROM measurements", &[])
        .await?
        .get(0);
    assert_eq!(count, 2);
    denied(
        "reader INSERT",
        reader
            .execute(insert, &[&"s", &"m", &"2026-01-01T00:00:00Z", &1.0f64])
            .await,
    )?;

    let other = format!("{}.measurements", quote(&b.db.schema));
    denied(
        "writer reads another tenant",
        writer.query(&format!("SELECT * FROM {other}"), &[]).await,
    )?;
    denied(
        "writer writes another tenant",
        writer
            .execute(
                &format!(
                    "INSERT INTO {other} (sensor, metric, time, value) VALUES ('s', 'm', now(), 1)"
                ),
                &[],
            )
            .await,
    )?;
    denied(
        "writer creates in public",
        writer
            .batch_execute("CREATE TABLE public.intruder (x int)")
            .await,
    )?;
    denied(
        "writer creates in its schema",
        writer.batch_execute("CREATE TABLE intruder (x int)").await,
    )?;
    let other_reader = login(&config, &b.db.reader, &b.reader_password).await?;
    denied(
        "another tenant's reader",
        other_reader
            .query(
                &format!("SELECT * FROM {}.measurements", quote(&a.db.schema)),
                &[],
            )
            .await,
    )?;
    // Wrong password: refused.
    assert!(
        login(&config, &a.db.writer_logins[0], &b.writer_password)
            .await
            .is_err()
    );

    drop(writer);
    drop(reader);
    drop(other_reader);
    drop_tenant(&admin, &a.db).await?;
    drop_tenant(&admin, &b.db).await?;
    Ok(())
}

/// `ensure_schema_exists` as the database step calls it: with the table it finds.
async fn provision_with(
    admin: &mut Client,
    db: &TenantDb,
    logins: &WriterLogins,
    writer: &str,
    reader: &str,
    rotate: bool,
) -> Result<smartregion_operator::surface::provisioning::Provisioned> {
    let table =
        smartregion_operator::surface::provisioning::inspect_table(admin, db, false).await?;
    let passwords = Passwords { writer, reader };
    Ok(ensure_schema_exists(
        admin,
        db,
        &Provisioning {
            desired: &desired(),
            table,
            logins,
            passwords: Passwords {
                writer: passwords.writer,
                reader: passwords.reader,
            },
            credentials: if rotate {
                Credentials::Issue
            } else {
                Credentials::Keep
            },
            writes: Writes::Allowed,
        },
    )
    .await?)
}

/// What a rotation does to the roles, on the real PostgreSQL, from a tenant of an earlier
/// release (its writer role logs in itself): the migration is a rotation like any other.
/// Each step is recognised as current afterwards (no re-provisioning loop), both logins
/// write while the previous one waits, and a retired login is refused.
#[tokio::test]
async fn a_rotation_hands_over_between_logins_and_migrates_an_old_writer() -> Result<()> {
    use smartregion_operator::surface::provisioning::ensure_logins_retired;
    use smartregion_operator::surface::provisioning::{Plan, SecretLogin, plan};
    let (config, mut admin) = admin().await?;
    let db = TenantDb::for_tenant(&TenantName::parse(&unique_name("migrate"))?);
    // An earlier release's writer: a login role holding the privileges itself.
    let old_password = new_password();
    admin
        .batch_execute(
            &smartregion_operator::surface::provisioning::create_login_role(
                &db.writer,
                &smartregion_operator::surface::provisioning::scram_verifier(&old_password),
            ),
        )
        .await?;
    let reader_password = new_password();
    let legacy = WriterLogins {
        active: db.writer.clone(),
        retiring: Vec::new(),
    };
    provision_with(
        &mut admin,
        &db,
        &legacy,
        &old_password,
        &reader_password,
        false,
    )
    .await?;
    let settled = provision_with(
        &mut admin,
        &db,
        &legacy,
        &old_password,
        &reader_password,
        false,
    )
    .await?;
    assert!(
        !settled.changed,
        "the old shape with the new roles is current"
    );
    let insert =
        "INSERT INTO measurements (sensor, metric, time, value) VALUES ($1, 'pm10', now(), 1)";
    login(&config, &db.writer, &old_password)
        .await?
        .execute(insert, &[&"before"])
        .await?;

    // The first rotation: to the first login, the old writer still logging in.
    let secret = SecretLogin {
        user: db.writer.clone(),
        retiring: Vec::new(),
    };
    let Plan::Issue(rotated) = plan(&db, Some(&secret), true, &[]) else {
        bail!("a rotation issues a login");
    };
    assert_eq!(rotated.active, db.writer_logins[0]);
    let new_password = new_password();
    let issued = provision_with(
        &mut admin,
        &db,
        &rotated,
        &new_password,
        &reader_password,
        true,
    )
    .await?;
    assert!(issued.passwords_set);
    let settled = provision_with(
        &mut admin,
        &db,
        &rotated,
        &new_password,
        &reader_password,
        false,
    )
    .await?;
    assert!(!settled.changed, "the handover state is current");
    let old = login(&config, &db.writer, &old_password).await?;
    let new = login(&config, &db.writer_logins[0], &new_password).await?;
    old.execute(insert, &[&"old-during"]).await?;
    // The privileges and the settings reach the login role.
    new.execute(insert, &[&"new-during"]).await?;
    let timeout: String = new.query_one("SHOW statement_timeout", &[]).await?.get(0);
    assert_eq!(timeout, "30s");

    ensure_logins_retired(&mut admin, &db, &rotated.retiring).await?;
    ensure!(
        old.is_closed() || old.execute(insert, &[&"old-after"]).await.is_err(),
        "the old session ended"
    );
    ensure!(
        login(&config, &db.writer, &old_password).await.is_err(),
        "the retired login is refused"
    );
    let current = WriterLogins {
        active: rotated.active.clone(),
        retiring: Vec::new(),
    };
    let settled = provision_with(
        &mut admin,
        &db,
        &current,
        &new_password,
        &reader_password,
        false,
    )
    .await?;
    assert!(
        !settled.changed,
        "after the retirement the new shape is current"
    );
    login(&config, &db.writer_logins[0], &new_password)
        .await?
        .execute(insert, &[&"new-after"])
        .await?;

    // The next rotation goes to the second login and back.
    let secret = SecretLogin {
        user: current.active.clone(),
        retiring: Vec::new(),
    };
    let Plan::Issue(next) = plan(&db, Some(&secret), true, &[]) else {
        bail!("a rotation issues a login");
    };
    assert_eq!(
        (next.active.as_str(), next.retiring.as_slice()),
        (
            db.writer_logins[1].as_str(),
            [db.writer_logins[0].clone()].as_slice()
        )
    );
    drop(new);
    admin
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE; DROP OWNED BY {l1}, {l2}, {w}, {r}, {o}; \
             DROP ROLE {l1}, {l2}, {w}, {r}, {o}",
            quote(&db.schema),
            l1 = quote(&db.writer_logins[0]),
            l2 = quote(&db.writer_logins[1]),
            w = quote(&db.writer),
            r = quote(&db.reader),
            o = quote(&db.owner),
        ))
        .await?;
    Ok(())
}
