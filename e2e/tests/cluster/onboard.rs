//! `smartregion-operator onboard`, the real binary, against the real API server: every
//! manifest it writes for `examples/enti.csv` is accepted by server-side apply and reads
//! back as written, and what it refuses the API server refuses too, while values at the
//! edge of the rules pass both.
//!
//! No operator runs here: the API server's admission (schema and CEL rules) is the point.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, bail, ensure};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use smartregion_e2e::{apply, operator, paths, shared, unique_name};
use smartregion_operator::crd::SmartRegionTenant;

async fn client() -> Result<Client> {
    let client = shared().client().await?;
    apply::install_crds(&client).await?;
    Ok(client)
}

/// Runs `smartregion-operator onboard <args>`.
fn onboard(args: &[&str]) -> Result<Output> {
    Command::new(operator::binary()?)
        .arg("onboard")
        .args(args)
        .output()
        .context("failed to run smartregion-operator onboard")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A directory of its own inside the test cluster's state, removed with the cluster.
fn out_dir() -> PathBuf {
    shared().state_dir.join(unique_name("onboard"))
}

/// Runs onboard on examples/enti.csv into `dir`; its summary line.
fn onboard_example_csv(dir: &Path) -> Result<String> {
    let csv = paths::workspace_root().join("examples/enti.csv");
    let output = onboard(&[
        "--csv",
        &csv.to_string_lossy(),
        "--out-dir",
        &dir.to_string_lossy(),
    ])?;
    ensure!(
        output.status.success(),
        "onboard failed: {}",
        stderr(&output)
    );
    Ok(stderr(&output))
}

/// `(file name, content)` of every file in `dir`, sorted by name.
fn files(dir: &Path) -> Result<Vec<(String, String)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        files.push((name, std::fs::read_to_string(&path)?));
    }
    files.sort();
    Ok(files)
}

#[tokio::test]
async fn every_manifest_written_from_the_example_csv_is_accepted_by_the_api_server() -> Result<()> {
    let client = client().await?;
    let dir = out_dir();
    let summary = onboard_example_csv(&dir)?;
    assert!(
        summary.contains("3 enti") && summary.contains("3 created"),
        "{summary}"
    );
    let written = files(&dir)?;
    let names: Vec<&str> = written.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        ["livorno.yaml", "pistoia.yaml", "provincia-siena.yaml"]
    );

    let tenants: Api<SmartRegionTenant> = Api::all(client.clone());
    for (file, text) in &written {
        let documents = apply::documents(text)?;
        assert_eq!(documents.len(), 1, "{file} holds one tenant");
        // Server-side apply, as `kubectl apply --server-side -f` or Argo CD would.
        let applied = apply::apply(&client, &documents[0])
            .await
            .with_context(|| format!("the API server refused {file}"))?;
        let expected: SmartRegionTenant = serde_yaml::from_str(text)?;
        let stored = tenants.get(&applied.name_any()).await?;
        assert_eq!(
            stored.spec, expected.spec,
            "{file} reads back as it was written"
        );
    }

    // Deterministic: another run gives byte-identical files, and a run into the same
    // directory finds nothing to change.
    let again = out_dir();
    onboard_example_csv(&again)?;
    assert_eq!(files(&again)?, written);
    let rerun = onboard_example_csv(&dir)?;
    assert!(
        rerun.contains("0 created, 0 replaced, 3 unchanged"),
        "{rerun}"
    );

    for (file, _) in &written {
        let name = file.trim_end_matches(".yaml");
        tenants.delete(name, &DeleteParams::default()).await?;
    }
    Ok(())
}

/// The API server's message when it refuses `tenant` as invalid (422). Dry run: the
/// server validates exactly as for a real apply, and nothing is left behind.
async fn api_refusal(client: &Client, tenant: &Value) -> Result<String> {
    match dry_run_apply(client, tenant).await {
        Err(kube::Error::Api(response)) if response.code == 422 => Ok(response.message),
        other => bail!("expected the API server to refuse it as invalid (422), got {other:?}"),
    }
}

async fn dry_run_apply(client: &Client, tenant: &Value) -> Result<DynamicObject, kube::Error> {
    let api: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::erase::<SmartRegionTenant>(&()),
    );
    let name = tenant["metadata"]["name"].as_str().unwrap_or_default();
    api.patch(
        name,
        &PatchParams::apply(apply::FIELD_MANAGER).force().dry_run(),
        &Patch::Apply(tenant),
    )
    .await
}

/// Flags for onboard: a valid ente, with `flag` set to `value` when given.
fn flags(name: &str, flag: Option<(&str, &str)>) -> Vec<String> {
    let mut flags: Vec<(&str, &str)> = vec![
        ("--name", name),
        ("--display-name", "Comune di Pistoia"),
        ("--entity-type", "Comune"),
        ("--istat-code", "047014"),
        ("--ipa-code", "c_g713"),
        ("--tier", "medium"),
        ("--admin-group", "pistoia-admins"),
    ];
    if let Some((flag, value)) = flag {
        flags.iter_mut().find(|(f, _)| *f == flag).unwrap().1 = value;
    }
    flags
        .into_iter()
        .map(|(flag, value)| format!("{flag}={value}"))
        .collect()
}

fn onboard_flags(flags: &[String]) -> Result<Output> {
    onboard(&flags.iter().map(String::as_str).collect::<Vec<_>>())
}

#[tokio::test]
async fn what_onboard_refuses_the_api_server_refuses_too() -> Result<()> {
    let client = client().await?;
    let name = unique_name("onboard-refused");
    let valid = onboard_flags(&flags(&name, None))?;
    ensure!(valid.status.success(), "{}", stderr(&valid));
    let manifest: Value = serde_yaml::from_slice(&valid.stdout)?;

    let long_name = format!("p{}", "a".repeat(40));
    let long_display_name = "à".repeat(201);
    let long_group = "g".repeat(254);
    // (flag, value, where the value goes in the manifest, the field the API server names)
    let cases: Vec<(&str, &str, Vec<&str>, &str)> = vec![
        (
            "--name",
            "Pistoia",
            vec!["metadata", "name"],
            "metadata.name",
        ),
        (
            "--name",
            "1pistoia",
            vec!["metadata", "name"],
            "metadata.name",
        ),
        (
            "--name",
            "pistoia_centro",
            vec!["metadata", "name"],
            "metadata.name",
        ),
        (
            "--name",
            &long_name,
            vec!["metadata", "name"],
            "metadata.name",
        ),
        (
            "--display-name",
            &long_display_name,
            vec!["spec", "displayName"],
            "spec.displayName",
        ),
        (
            "--entity-type",
            "Frazione",
            vec!["spec", "entity", "type"],
            "spec.entity.type",
        ),
        (
            "--istat-code",
            "47014",
            vec!["spec", "entity", "istatCode"],
            "spec.entity.istatCode",
        ),
        (
            "--istat-code",
            "04701A",
            vec!["spec", "entity", "istatCode"],
            "spec.entity.istatCode",
        ),
        (
            "--ipa-code",
            "c-g713",
            vec!["spec", "entity", "ipaCode"],
            "spec.entity.ipaCode",
        ),
        ("--tier", "huge", vec!["spec", "tier"], "spec.tier"),
        (
            "--admin-group",
            &long_group,
            vec!["spec", "admins", "groups"],
            "spec.admins.groups",
        ),
    ];
    let mut failures = Vec::new();
    for (flag, value, path, field) in cases {
        let cli = onboard_flags(&flags(&name, Some((flag, value))))?;
        if cli.status.success() || !stderr(&cli).starts_with("error") {
            failures.push(format!(
                "onboard {flag}={value:.20}… was not refused: {}",
                stderr(&cli)
            ));
        }
        let mut tenant = manifest.clone();
        let target = path.iter().fold(&mut tenant, |value, key| &mut value[*key]);
        *target = match path.last() {
            Some(&"groups") => json!([value]),
            _ => json!(value),
        };
        match api_refusal(&client, &tenant).await {
            Ok(message) if message.contains(field) => {}
            Ok(message) => failures.push(format!(
                "{flag}: API message does not name {field}: {message}"
            )),
            Err(error) => failures.push(format!("{flag}={value:.20}…: {error:#}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // At the edges of the rules both accept: a name of 40 characters, a display name of
    // 200 characters (not bytes), an admin group of 253.
    let longest_name = format!("p{}", "a".repeat(39));
    let longest_display_name = "à".repeat(200);
    let longest_group = "g".repeat(253);
    for (flag, value) in [
        ("--name", longest_name.as_str()),
        ("--display-name", &longest_display_name),
        ("--admin-group", &longest_group),
    ] {
        let cli = onboard_flags(&flags(&name, Some((flag, value))))?;
        ensure!(cli.status.success(), "{flag}: {}", stderr(&cli));
        let tenant: Value = serde_yaml::from_slice(&cli.stdout)?;
        dry_run_apply(&client, &tenant)
            .await
            .with_context(|| format!("the API server refused the manifest for {flag}"))?;
    }
    Ok(())
}
