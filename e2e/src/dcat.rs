//! The open-data catalogue through the harvester's own code: `e2e/dcat/check.py` parses
//! it with ckanext-dcat's `RDFParser` (its default profile) into the dataset dictionaries
//! CKAN would store, and validates it with pyshacl against the project's DCAT-AP_IT shapes
//! (`e2e/dcat/dcat-ap-it-shapes.ttl`). Python and the packages come from the virtual
//! environment `e2e/lib/python-deps.sh` makes (`SMARTREGION_DCAT_PYTHON`).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// How the catalogue is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Turtle,
    JsonLd,
}

/// What the harvester made of a catalogue.
#[derive(Debug)]
pub struct Harvest {
    /// The dataset dictionaries CKAN would store.
    pub datasets: Vec<Value>,
    /// Whether the graph conforms to the DCAT-AP_IT shapes.
    pub conforms: bool,
    /// pyshacl's report.
    pub report: String,
}

/// The virtual environment's Python.
fn python() -> Result<PathBuf> {
    let python = match std::env::var_os("SMARTREGION_DCAT_PYTHON") {
        Some(path) => PathBuf::from(path),
        None => crate::paths::cache_dir().join("python/dcat/bin/python"),
    };
    if !python.exists() {
        bail!(
            "{} is missing: run e2e/lib/python-deps.sh (it installs ckanext-dcat, CKAN and pyshacl from PyPI into a virtual environment under ~/.cache/smartregion)",
            python.display()
        );
    }
    Ok(python)
}

/// Runs the harvester's parser and the shapes over `catalogue`.
pub fn harvest(catalogue: &str, format: Format) -> Result<Harvest> {
    let root = crate::paths::workspace_root();
    let file = tempfile::Builder::new()
        .suffix(match format {
            Format::Turtle => ".ttl",
            Format::JsonLd => ".jsonld",
        })
        .tempfile()?;
    std::fs::write(file.path(), catalogue)?;
    let output = Command::new(python()?)
        .arg(root.join("e2e/dcat/check.py"))
        .arg(file.path())
        .arg(match format {
            Format::Turtle => "turtle",
            Format::JsonLd => "json-ld",
        })
        .arg(root.join("e2e/dcat/dcat-ap-it-shapes.ttl"))
        .output()
        .context("failed to run e2e/dcat/check.py")?;
    if !output.status.success() {
        bail!(
            "ckanext-dcat could not parse the catalogue ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let answer: Value = serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "check.py's answer: {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })?;
    Ok(Harvest {
        datasets: answer["datasets"].as_array().cloned().unwrap_or_default(),
        conforms: answer["conforms"] == Value::Bool(true),
        report: answer["report"].as_str().unwrap_or_default().to_string(),
    })
}

/// The value of a CKAN dataset dictionary's extra `key` (where ckanext-dcat puts what
/// CKAN's core schema has no field for).
pub fn extra<'a>(dataset: &'a Value, key: &str) -> Option<&'a str> {
    dataset["extras"]
        .as_array()?
        .iter()
        .find(|extra| extra["key"] == key)
        .and_then(|extra| extra["value"].as_str())
}
