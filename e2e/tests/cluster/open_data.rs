//! Open data (`SmartRegionDataset`) on the real control plane and PostgreSQL (and
//! TimescaleDB in its suite): anyone reads, without a key, exactly the declared series at
//! the declared granularity or coarser, equal to SQL's; every other ask is refused, by the
//! service and, tried directly with the reader's own login taking the public role, by the
//! database (docs/open-data.md).

use std::time::Duration;

use crate::read::{DAYS, all_pages, read_service, same_rows, sql_rows, write_minutes};
use crate::support::*;
use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use smartregion_e2e::dcat::{self, Format};
use smartregion_e2e::ingest::{HttpClient, Ingest};
use smartregion_e2e::operator::Operator;
use smartregion_e2e::{shared, unique_name};

/// The anonymous answer's status and body text.
async fn anonymous(service: &Ingest, path_and_query: &str) -> Result<(u16, String)> {
    let answer = HttpClient::new().get(&service.url(path_and_query)).await?;
    Ok((
        answer.status,
        String::from_utf8_lossy(&answer.body).into_owned(),
    ))
}

/// Fails unless the anonymous request is refused with `status`, naming `words`.
async fn refused(service: &Ingest, path_and_query: &str, status: u16, words: &str) -> Result<()> {
    let (got, body) = anonymous(service, path_and_query).await?;
    ensure!(
        got == status && body.contains(words),
        "{path_and_query}: expected {status} saying {words:?}, got {got} {body}"
    );
    Ok(())
}

#[tokio::test]
async fn anyone_reads_exactly_the_declared_series_at_the_declared_granularity_and_nothing_else()
-> Result<()> {
    let client = client().await?;
    let shard = unique_name("open");
    let _operator = Operator::start(shared(), &shard, &[])?;
    let tenant = unique_name("open-a");
    let other = unique_name("open-b");
    apply_tenant(&client, &example("prato", &tenant, &shard)?).await?;
    apply_tenant(&client, &example("firenze", &other, &shard)?).await?;
    wait_ready(&client, &tenant).await?;
    wait_ready(&client, &other).await?;
    let (from, to) = write_minutes(&client, &tenant).await?;
    write_minutes(&client, &other).await?;
    apply_dataset(
        &client,
        &dataset(
            &tenant,
            "pm10-hourly",
            json!({ "metrics": ["pm10"], "sensors": ["s-01", "s-02"], "granularity": "PT1H" }),
        ),
    )
    .await?;
    apply_dataset(
        &client,
        &dataset(&other, "everything-daily", json!({ "granularity": "P1D" })),
    )
    .await?;
    let published = wait_dataset(&client, &tenant, "pm10-hourly", "True").await?;
    let status = published.status.context("a status")?;
    let read_as = status.read_as.context("status.readAs")?;
    ensure!(
        read_as == format!("o_{}.pm10_hourly", tenant.replace('-', "_")),
        "{read_as}"
    );
    ensure!(
        status
            .url
            .as_deref()
            .is_some_and(|url| url.ends_with("/open/pm10-hourly")),
        "{:?}",
        status.url
    );
    wait_dataset(&client, &other, "everything-daily", "True").await?;
    let (service, key) = read_service(&client, &tenant).await?;
    let reader = login(&client, &tenant, "db-reader").await?;
    let range = format!("fromDate={from}&toDate={to}");

    // Hourly aggregates of the published series, anonymously, paged: SQL's own buckets.
    let (served, pages) = all_pages(
        &service,
        None,
        &format!("/open/pm10-hourly/v2/attrs?{range}&aggrMethod=avg,min,max,sum,count&aggrPeriod=PT1H&limit=10"),
    )
    .await?;
    let hourly = "SELECT sensor AS \"entityId\", metric AS \"attrName\", date_trunc('hour', time) AS time, \
                avg(value) AS avg, min(value) AS min, max(value) AS max, sum(value) AS sum, \
                count(*) AS count \
         FROM measurements WHERE metric = 'pm10' AND sensor IN ('s-01', 's-02') \
           AND time >= $1::text::timestamptz AND time < $2::text::timestamptz \
         GROUP BY 1, 2, 3 ORDER BY 1, 2, 3";
    let expected = sql_rows(&reader, hourly, &[&from, &to]).await?;
    ensure!(expected.len() == 2 * DAYS as usize * 24 && pages > 1);
    same_rows("open hourly aggregates", &served, &expected)?;

    // A coarser multiple (daily) and the whole range: the same as SQL's.
    let (served, _) = all_pages(
        &service,
        None,
        &format!("/open/pm10-hourly/v2/entities/s-01/attrs/pm10?{range}&aggrMethod=avg,count&aggrPeriod=P1D"),
    )
    .await?;
    let expected = sql_rows(
        &reader,
        "SELECT sensor AS \"entityId\", metric AS \"attrName\", \
                date_trunc('day', time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS time, \
                avg(value) AS avg, count(*) AS count \
         FROM measurements WHERE metric = 'pm10' AND sensor = 's-01' \
           AND time >= $1::text::timestamptz AND time < $2::text::timestamptz \
         GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        &[&from, &to],
    )
    .await?;
    ensure!(!expected.is_empty());
    same_rows("open daily aggregates", &served, &expected)?;

    // A range that starts and ends inside an hour gets the whole hours that start in
    // it, never the part of an hour it names: each bucket holds its 60 minutes.
    let (served, _) = all_pages(
        &service,
        None,
        &format!(
            "/open/pm10-hourly/v2/entities/s-01/attrs/pm10?fromDate={}&toDate={}&aggrMethod=count&aggrPeriod=PT1H",
            from.replace(":00:00Z", ":30:00Z"),
            to.replace(":00:00Z", ":10:00Z")
        ),
    )
    .await?;
    ensure!(!served.is_empty());
    for row in &served {
        ensure!(row["count"] == json!(60), "a part of an hour: {row}");
        ensure!(
            row["time"].as_str().is_some_and(|t| t.ends_with(":00:00Z")),
            "{row}"
        );
    }

    // What is not published is not there: another metric, another sensor, the catalogue
    // of the sensors holds only the published ones.
    for path in [
        format!("/open/pm10-hourly/v2/attrs/no2?{range}&aggrMethod=avg&aggrPeriod=PT1H"),
        format!("/open/pm10-hourly/v2/entities/s-03?{range}&aggrMethod=avg&aggrPeriod=PT1H"),
    ] {
        let (rows, _) = all_pages(&service, None, &path).await?;
        ensure!(rows.is_empty(), "{path}: {rows:?}");
    }
    let (status, body) = anonymous(&service, "/open/pm10-hourly/v2/entities").await?;
    ensure!(status == 200, "{status} {body}");
    let catalogue: Value = serde_json::from_str(&body)?;
    let ids: Vec<&str> = catalogue["entities"]
        .as_array()
        .context("entities")?
        .iter()
        .filter_map(|entity| entity["id"].as_str())
        .collect();
    ensure!(ids == ["s-01", "s-02"], "the open catalogue lists {ids:?}");
    ensure!(
        catalogue["entities"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|entity| entity["attrs"].as_array().is_some_and(Vec::is_empty)),
        "the open catalogue tells raw last values: {body}"
    );

    // The catalogue lists the tenant's datasets and nothing of another tenant, and the
    // harvester's own code (ckanext-dcat) collects it; the DCAT-AP_IT shapes pass it.
    for (accept, format) in [
        ("text/turtle", Format::Turtle),
        ("application/ld+json", Format::JsonLd),
    ] {
        let answer = HttpClient::new()
            .get_with(&service.url("/open/catalog"), &[("accept", accept)])
            .await?;
        ensure!(answer.status == 200, "{accept}: {}", answer.status);
        let text = String::from_utf8(answer.body.to_vec())?;
        let harvest = dcat::harvest(&text, format)?;
        ensure!(harvest.conforms, "{accept}: {}", harvest.report);
        ensure!(
            harvest.datasets.len() == 1,
            "{accept}: {:?}",
            harvest.datasets
        );
        let harvested = &harvest.datasets[0];
        ensure!(dcat::extra(harvested, "identifier") == Some("c_g999:pm10-hourly"));
        ensure!(harvested["title"] == json!("Qualità dell'aria, medie orarie"));
        ensure!(
            harvested["resources"]
                .as_array()
                .is_some_and(|resources| resources.len() == 2
                    && resources.iter().all(|r| r["url"]
                        .as_str()
                        .is_some_and(|url| url.contains("/open/pm10-hourly/")))),
            "{harvested}"
        );
        ensure!(!text.contains("everything-daily"));
    }

    // Refused by the service, anonymously: raw rows, a finer or misaligned period, first
    // and last, a range of too many buckets, the tenant's own API, another tenant's
    // dataset (this service knows only this tenant's), a share.
    let dataset = "/open/pm10-hourly/v2/attrs";
    refused(&service, &format!("{dataset}?{range}"), 400, "not raw rows").await?;
    for period in ["PT5M", "PT90M", "PT30M"] {
        refused(
            &service,
            &format!("{dataset}?{range}&aggrMethod=avg&aggrPeriod={period}"),
            400,
            "PT1H",
        )
        .await?;
    }
    refused(
        &service,
        &format!("{dataset}?{range}&aggrMethod=last&aggrPeriod=PT1H"),
        400,
        "not published",
    )
    .await?;
    refused(
        &service,
        &format!("{dataset}?fromDate=2020-01-01T00:00:00Z&toDate=2026-01-01T00:00:00Z&aggrMethod=avg&aggrPeriod=PT1H"),
        400,
        "at most 8784",
    )
    .await?;
    refused(&service, &format!("/v2/attrs?{range}"), 401, "API key").await?;
    refused(&service, "/v2/entities", 401, "API key").await?;
    refused(
        &service,
        &format!("/open/everything-daily/v2/attrs?{range}&aggrMethod=avg&aggrPeriod=P1D"),
        404,
        "no open dataset",
    )
    .await?;
    refused(
        &service,
        &format!("/shared/{other}/everything-daily/v2/attrs?{range}"),
        401,
        "API key",
    )
    .await?;

    // Refused by the database: the reader's own login, as the public role the service
    // takes for anonymous requests, reads the dataset's buckets and nothing else.
    let own = schema_of(&tenant);
    let open = own.replacen("t_", "o_", 1);
    let other_open = schema_of(&other).replacen("t_", "o_", 1);
    reader
        .batch_execute(&format!("SET ROLE \"{own}_public\""))
        .await?;
    for (what, statement) in [
        (
            "the raw rows",
            format!("SELECT * FROM {own}.measurements LIMIT 1"),
        ),
        (
            "the sensors",
            format!("SELECT * FROM {own}.sensors LIMIT 1"),
        ),
        (
            "another tenant's open dataset",
            format!("SELECT * FROM {other_open}.everything_daily(now() - interval '1 day', now())"),
        ),
        (
            "another tenant's raw rows",
            format!("SELECT * FROM {}.measurements LIMIT 1", schema_of(&other)),
        ),
    ] {
        denied(what, reader.query(statement.as_str(), &[]).await)?;
    }
    let buckets = reader
        .query(
            &format!(
                "SELECT metric, time, count FROM {open}.pm10_hourly($1::text::timestamptz, $2::text::timestamptz)"
            ),
            &[&from, &to],
        )
        .await?;
    ensure!(buckets.len() == 2 * DAYS as usize * 24);
    for row in &buckets {
        let (metric, time, count): (String, jiff::Timestamp, i64) =
            (row.get(0), row.get(1), row.get(2));
        ensure!(
            metric == "pm10" && time.as_second() % 3600 == 0 && count == 60,
            "{metric} {time} {count}"
        );
    }
    reader.batch_execute("RESET ROLE").await?;

    // Anonymous requests are rate-limited per client; a keyed client is not.
    drop(service);
    let namespace = format!("srt-{tenant}");
    let mut env =
        smartregion_e2e::workload::container_env(&client, &namespace, "read", "read").await?;
    env.push((
        "SMARTREGION_READ_OPEN_REQUESTS_PER_MINUTE".into(),
        "3".into(),
    ));
    let mut limited = Ingest::start_read(shared(), env)?;
    limited.wait_ready(Duration::from_secs(30)).await?;
    let hour = format!("{dataset}?{range}&aggrMethod=avg&aggrPeriod=PT1H&limit=1");
    for _ in 0..3 {
        let (status, body) = anonymous(&limited, &hour).await?;
        ensure!(status == 200, "{status} {body}");
    }
    let answer = HttpClient::new().get(&limited.url(&hour)).await?;
    ensure!(answer.status == 429, "the 4th request: {}", answer.status);
    ensure!(answer.headers.contains_key("retry-after"));
    let keyed = HttpClient::new()
        .get_with(
            &limited.url(&format!("/v2/attrs?{range}&limit=1")),
            &[("authorization", &format!("Bearer {key}"))],
        )
        .await?;
    ensure!(keyed.status == 200, "a keyed client: {}", keyed.status);
    drop(limited);
    delete_all_and_wait(&client, &[tenant, other]).await
}

#[tokio::test]
async fn a_tenant_without_an_ipa_code_publishes_nothing_and_says_why() -> Result<()> {
    let client = client().await?;
    let shard = unique_name("open-ipa");
    let _operator = Operator::start(shared(), &shard, &[])?;
    let tenant = unique_name("open-noipa");
    apply_tenant(&client, &example("unione-mugello", &tenant, &shard)?).await?;
    wait_ready(&client, &tenant).await?;
    apply_dataset(&client, &dataset(&tenant, "traffic", json!({}))).await?;
    let dataset = wait_dataset(&client, &tenant, "traffic", "False").await?;
    let status = dataset.status.context("a status")?;
    let ready = &status.conditions[0];
    ensure!(
        ready.reason == "PublisherUnidentified" && ready.message.contains("ipaCode"),
        "{ready:?}"
    );
    ensure!(status.url.is_none() && status.read_as.is_none());
    let reader = login(&client, &tenant, "db-reader").await?;
    let open = schema_of(&tenant).replacen("t_", "o_", 1);
    let exists: bool = reader
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
            &[&open],
        )
        .await?
        .get(0);
    ensure!(!exists, "{open} exists");
    delete_all_and_wait(&client, &[tenant]).await
}
