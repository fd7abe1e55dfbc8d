//! Checks that need no cluster but both binaries' crates: what the operator writes for
//! the ingest service is what the ingest service reads.

use anyhow::{Context, Result, bail, ensure};
use clap::CommandFactory;
use clap::Parser;
use smartregion_e2e::paths::workspace_root;
use smartregion_ingest::config::Cli as IngestCli;
use smartregion_operator::crd::{IngestFormat, IngestSpec, MqttSource, SmartRegionTenant};
use smartregion_operator::surface::Config;
use smartregion_operator::surface::children::validate;
use smartregion_operator::surface::children::{ingest_deployment, read_deployment};

/// `examples/prato.yaml` as the API server would hold it (with a uid).
fn prato() -> Result<SmartRegionTenant> {
    let text = std::fs::read_to_string(workspace_root().join("examples/prato.yaml"))?;
    let mut tenant: SmartRegionTenant = serde_yaml::from_str(&text)?;
    tenant.metadata.uid = Some("00000000-0000-0000-0000-000000000001".into());
    Ok(tenant)
}

#[test]
fn the_ingest_deployments_environment_is_what_the_ingest_binary_reads() -> Result<()> {
    let mut tenant = prato()?;
    tenant.spec.ingest = Some(IngestSpec {
        enabled: true,
        replicas: None,
        formats: vec![IngestFormat::SenML, IngestFormat::Measurements],
        mqtt: Some(MqttSource {
            url: "mqtts://broker.example.it".into(),
            topics: vec!["prato/+/air".into(), "prato/traffic/#".into()],
            credentials_secret: Some("mqtt-login".into()),
        }),
    });
    let config = Config::default();
    let deployment = ingest_deployment(&validate(&tenant, &config)?, &config, "c");
    let container = deployment
        .spec
        .and_then(|spec| spec.template.spec)
        .context("no pod spec")?
        .containers
        .remove(0);
    let command = IngestCli::command();
    let mut args = vec!["smartregion-ingest".to_string()];
    for var in container.env.unwrap_or_default() {
        let Some(argument) = command.get_arguments().find(|argument| {
            argument
                .get_env()
                .is_some_and(|env| env.to_str() == Some(&var.name))
        }) else {
            bail!("the ingest binary does not read {}", var.name);
        };
        let value = match (var.value, var.value_from) {
            (Some(value), None) => value,
            // The downward API gives the container's limit in bytes.
            (None, Some(source)) if source.resource_field_ref.is_some() => {
                let resource = source.resource_field_ref.expect("checked");
                ensure!(resource.resource == "limits.memory", "{resource:?}");
                ensure!(resource.container_name.as_deref() == Some("ingest"));
                "268435456".into()
            }
            // What the Secrets hold, as the database step writes them.
            (None, Some(_)) => match var.name.as_str() {
                "PGPORT" => "5432".into(),
                "PGSSLMODE" => "require".into(),
                _ => "from-a-secret".into(),
            },
            other => bail!("{}: {other:?}", var.name),
        };
        args.push(format!(
            "--{}={value}",
            argument.get_long().context("no long flag")?
        ));
    }
    let cli = IngestCli::try_parse_from(&args)?;
    ensure!(cli.tenant == "prato");
    ensure!(
        cli.memory_limit_bytes == Some(268_435_456),
        "the Deployment passes the memory limit"
    );
    ensure!(cli.listen.port() == smartregion_contract::env::INGEST_PORT);
    ensure!(cli.formats == [IngestFormat::Measurements, IngestFormat::SenML]);
    ensure!(cli.mqtt_url.as_deref() == Some("mqtts://broker.example.it"));
    ensure!(cli.mqtt_topics == ["prato/+/air", "prato/traffic/#"]);
    ensure!(cli.mqtt_username.is_some() && cli.mqtt_password.is_some());
    Ok(())
}

#[test]
fn the_read_deployments_environment_and_arguments_are_what_the_read_mode_reads() -> Result<()> {
    use smartregion_ingest::read::Cli as ReadCli;
    let tenant = prato()?;
    let config = Config::default();
    let deployment = read_deployment(&validate(&tenant, &config)?, &config, "c");
    let container = deployment
        .spec
        .and_then(|spec| spec.template.spec)
        .context("no pod spec")?
        .containers
        .remove(0);
    ensure!(
        container.args.as_deref() == Some(&["read".to_string()][..]),
        "the container runs the read mode: {:?}",
        container.args
    );
    let command = ReadCli::command();
    let mut args = vec!["smartregion-ingest read".to_string()];
    for var in container.env.unwrap_or_default() {
        let Some(argument) = command.get_arguments().find(|argument| {
            argument
                .get_env()
                .is_some_and(|env| env.to_str() == Some(&var.name))
        }) else {
            bail!("the read mode does not read {}", var.name);
        };
        let value = match (var.value, var.value_from) {
            (Some(value), None) => value,
            (None, Some(source)) => {
                let secret = source.secret_key_ref.context("only Secrets")?;
                ensure!(
                    secret.name == "db-reader" || secret.name == "read-keys",
                    "{} comes from {}: the read pod holds the reader's login and its keys only",
                    var.name,
                    secret.name
                );
                match var.name.as_str() {
                    "PGPORT" => "5432".into(),
                    "PGSSLMODE" => "require".into(),
                    _ => "from-a-secret-0123456789".into(),
                }
            }
            other => bail!("{}: {other:?}", var.name),
        };
        args.push(format!(
            "--{}={value}",
            argument.get_long().context("no long flag")?
        ));
    }
    let cli = ReadCli::try_parse_from(&args)?;
    ensure!(cli.tenant == "prato" && cli.schema.as_deref() == Some("t_prato"));
    ensure!(cli.listen.port() == 8081);
    Ok(())
}
