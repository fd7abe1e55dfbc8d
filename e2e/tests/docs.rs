//! The generated and the hand-written documents agree with the code; no cluster needed.
//!
//! - `docs/api-reference.md` is what `api-reference` generates from the CRD, and names
//!   every field, enum value and rule of the committed CRD YAML (checked independently of
//!   the generator).

use smartregion_e2e::{api_reference, paths};

fn read(relative: &str) -> String {
    let path = paths::workspace_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("cannot read {relative}: {error}"))
}

// ---------------------------------------------------------------------------------------
// API reference

#[test]
fn api_reference_is_current() {
    let committed = read(api_reference::PATH);
    let generated = api_reference::smartregion_tenant();
    assert!(
        committed == generated,
        "{} is stale: the SmartRegionTenant types or the generator changed. Regenerate it \
         with\n  {}\nand commit the result.",
        api_reference::PATH,
        api_reference::REGENERATE
    );
}

/// Every field of the committed CRD YAML with its enum values and rule messages, read
/// without the generator's code, so a field the generator skips is noticed.
#[test]
fn api_reference_covers_every_field_value_and_rule_of_the_crd() {
    let reference = api_reference::smartregion_tenant();
    let crd: serde_yaml::Value =
        serde_yaml::from_str(&read("crds/smartregiontenants.smartregion.toscana.it.yaml"))
            .expect("the committed CRD is YAML");
    let version = &crd["spec"]["versions"][0];
    let root = &version["schema"]["openAPIV3Schema"];

    let mut expected = Vec::new();
    walk("", root, &mut expected);
    let headings: Vec<String> = expected
        .iter()
        .filter_map(|item| item.strip_prefix("field "))
        .map(|path| format!("## `{path}`"))
        .collect();
    assert!(
        headings.len() > 40,
        "the walk found only {} fields: {headings:?}",
        headings.len()
    );
    let mut missing: Vec<String> = headings
        .iter()
        .filter(|heading| {
            !reference
                .lines()
                .any(|line| line.trim_start_matches('#') == heading.trim_start_matches('#'))
        })
        .cloned()
        .collect();
    missing.extend(
        expected
            .iter()
            .filter(|item| !item.starts_with("field "))
            .filter(|item| {
                let text = item.split_once(' ').map(|(_, text)| text).unwrap_or(item);
                !reference.contains(text)
            })
            .cloned(),
    );
    for column in version["additionalPrinterColumns"].as_sequence().unwrap() {
        let row = format!(
            "| {} | {} |",
            column["name"].as_str().unwrap(),
            column["type"].as_str().unwrap()
        );
        if !reference.contains(&row) {
            missing.push(format!("printer column {row}"));
        }
    }
    for fact in ["`srt`", "`Cluster`", "`smartregion.toscana.it/v1alpha1`"] {
        if !reference.contains(fact) {
            missing.push(fact.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "docs/api-reference.md misses: {missing:#?}"
    );
}

/// "field <path>", "value `<enum value>`", "rule <CEL>", "message <rule message>" and
/// "pattern <regex>" for `schema` and everything below it.
fn walk(path: &str, schema: &serde_yaml::Value, out: &mut Vec<String>) {
    if !path.is_empty() {
        out.push(format!("field {path}"));
    }
    for value in schema["enum"].as_sequence().into_iter().flatten() {
        out.push(format!("value `{}`", value.as_str().unwrap()));
    }
    if let Some(pattern) = schema["pattern"].as_str() {
        out.push(format!("pattern `{pattern}`"));
    }
    for rule in schema["x-kubernetes-validations"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        out.push(format!("rule `{}`", rule["rule"].as_str().unwrap()));
        out.push(format!("message \"{}\"", rule["message"].as_str().unwrap()));
    }
    let join = |name: &str| {
        if path.is_empty() {
            name.to_string()
        } else {
            format!("{path}.{name}")
        }
    };
    for (name, child) in schema["properties"].as_mapping().into_iter().flatten() {
        walk(&join(name.as_str().unwrap()), child, out);
    }
    let items = &schema["items"];
    if items.is_mapping() {
        // Fields of objects in a list get `[]`; constraints of scalar items stay with the list.
        let mut below = Vec::new();
        walk(&format!("{path}[]"), items, &mut below);
        out.extend(
            below
                .into_iter()
                .filter(|item| item != &format!("field {path}[]")),
        );
    }
}
