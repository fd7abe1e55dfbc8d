//! The generated and the hand-written documents agree with the code; no cluster needed.
//!
//! - `docs/api-reference.md` is what `api-reference` generates from the CRD, and names
//!   every field, enum value and rule of the committed CRD YAML (checked independently of
//!   the generator).
//! - `docs/troubleshooting.md` explains every condition type, reason, phase and errors
//!   metric label the operator can write — the operator's enums, iterated — and lists no
//!   reason that no longer exists.

use smartregion_e2e::{api_reference, paths};
use smartregion_operator::crd::Phase;
use smartregion_operator::surface::ErrorLabel;
use smartregion_operator::surface::{ConditionType, Reason};
use strum::IntoEnumIterator;

fn read(relative: &str) -> String {
    let path = paths::workspace_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("cannot read {relative}: {error}"))
}

// ---------------------------------------------------------------------------------------
// API reference

#[test]
fn api_reference_is_current() {
    let committed = read(api_reference::PATH);
    let generated = api_reference::document();
    assert!(
        committed == generated,
        "{} is stale: the CRD types or the generator changed. Regenerate it \
         with\n  {}\nand commit the result.",
        api_reference::PATH,
        api_reference::REGENERATE
    );
}

/// Every field of the committed CRD YAML with its enum values and rule messages, read
/// without the generator's code, so a field the generator skips is noticed.
#[test]
fn api_reference_covers_every_field_value_and_rule_of_the_crds() {
    let document = api_reference::document();
    for (file, kind, facts) in [
        (
            "crds/smartregiontenants.smartregion.toscana.it.yaml",
            "SmartRegionTenant",
            ["`srt`", "`Cluster`", "`smartregion.toscana.it/v1alpha1`"],
        ),
        (
            "crds/smartregionshares.smartregion.toscana.it.yaml",
            "SmartRegionShare",
            ["`srs`", "`Namespaced`", "`smartregion.toscana.it/v1alpha1`"],
        ),
        (
            "crds/smartregiondatasets.smartregion.toscana.it.yaml",
            "SmartRegionDataset",
            ["`srd`", "`Namespaced`", "`smartregion.toscana.it/v1alpha1`"],
        ),
    ] {
        covers(api_reference::section(&document, kind), file, &facts);
    }
}

fn covers(reference: &str, file: &str, facts: &[&str]) {
    let crd: serde_yaml::Value =
        serde_yaml::from_str(&read(file)).expect("the committed CRD is YAML");
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
        headings.len() > 10,
        "the walk of {file} found only {} fields: {headings:?}",
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
    for fact in facts {
        if !reference.contains(fact) {
            missing.push(fact.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "docs/api-reference.md misses, of {file}: {missing:#?}"
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

// ---------------------------------------------------------------------------------------
// Troubleshooting

const TROUBLESHOOTING: &str = "docs/troubleshooting.md";
/// The section of the troubleshooting guide whose table rows are condition reasons.
const REASONS_SECTION: &str = "## Conditions and reasons";

#[test]
fn troubleshooting_explains_every_reason_the_operator_writes() {
    let guide = read(TROUBLESHOOTING);
    let missing: Vec<&str> = Reason::iter()
        .map(Reason::as_str)
        .filter(|reason| !has_row(&guide, reason))
        .collect();
    assert!(
        missing.is_empty(),
        "{TROUBLESHOOTING} does not explain the condition reason(s) {missing:?}: add a \
         table row starting with | `Reason` | under the condition that uses it"
    );
}

#[test]
fn troubleshooting_lists_no_reason_the_operator_no_longer_writes() {
    let guide = read(TROUBLESHOOTING);
    let listed = first_cells(section(&guide, REASONS_SECTION));
    let known: Vec<&str> = Reason::iter().map(Reason::as_str).collect();
    assert!(listed.len() >= known.len(), "{listed:?}");
    let unknown: Vec<&String> = listed
        .iter()
        .filter(|reason| !known.contains(&reason.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "{TROUBLESHOOTING} explains reason(s) {unknown:?} that the operator does not write \
         (not in reconcile::conditions::Reason); remove them or fix the name"
    );
}

#[test]
fn troubleshooting_has_a_section_per_condition_type_and_a_row_per_phase() {
    let guide = read(TROUBLESHOOTING);
    for condition in ConditionType::iter().map(ConditionType::as_str) {
        assert!(
            guide
                .lines()
                .any(|line| line.starts_with("### ") && line.contains(&format!("`{condition}`"))),
            "{TROUBLESHOOTING} has no section `### \\`{condition}\\`` for that condition type"
        );
    }
    let missing: Vec<String> = Phase::iter()
        .map(|phase| format!("{phase:?}"))
        .filter(|phase| !has_row(section(&guide, "## Phases"), phase))
        .collect();
    assert!(
        missing.is_empty(),
        "{TROUBLESHOOTING} has no row for phase(s) {missing:?} under ## Phases"
    );
}

#[test]
fn troubleshooting_explains_every_errors_metric_label() {
    let guide = read(TROUBLESHOOTING);
    let missing: Vec<&str> = ErrorLabel::iter()
        .map(ErrorLabel::as_str)
        .filter(|label| !has_row(&guide, label))
        .collect();
    assert!(
        missing.is_empty(),
        "{TROUBLESHOOTING} does not explain the smartregion_reconcile_errors_total reason \
         label(s) {missing:?}: add a row starting with | `label` |"
    );
}

/// The phases in the CRD are the operator's Phase enum, so iterating the enum covers
/// the API.
#[test]
fn the_phases_of_the_api_are_the_phase_enum() {
    let crd: serde_yaml::Value =
        serde_yaml::from_str(&read("crds/smartregiontenants.smartregion.toscana.it.yaml")).unwrap();
    let phases: Vec<String> = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
        ["status"]["properties"]["phase"]["enum"]
        .as_sequence()
        .expect("status.phase is an enum")
        .iter()
        .map(|phase| phase.as_str().unwrap().to_string())
        .collect();
    let ours: Vec<String> = Phase::iter().map(|phase| format!("{phase:?}")).collect();
    assert_eq!(phases, ours);
}

/// `| `word` |` at the start of a line: a table row about `word`.
fn has_row(text: &str, word: &str) -> bool {
    let start = format!("| `{word}` |");
    text.lines()
        .any(|line| line.trim_start().starts_with(&start))
}

/// The backticked first cells of the table rows in `text`.
fn first_cells(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.trim_start().strip_prefix("| `"))
        .filter_map(|rest| rest.split_once("` |").map(|(word, _)| word.to_string()))
        .collect()
}

/// From the line `heading` to the next heading of the same or a higher level.
fn section<'a>(text: &'a str, heading: &str) -> &'a str {
    let start = text
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("{TROUBLESHOOTING} has no {heading:?}"))
        + 1;
    let level = heading.chars().take_while(|c| *c == '#').count();
    let rest = &text[start + heading.len()..];
    let end = rest
        .match_indices('\n')
        .map(|(index, _)| index + 1)
        .find(|&index| {
            let hashes = rest[index..].chars().take_while(|c| *c == '#').count();
            hashes > 0 && hashes <= level && rest[index + hashes..].starts_with(' ')
        })
        .unwrap_or(rest.len());
    &text[start..start + heading.len() + end]
}

#[test]
fn first_cells_and_sections_read_the_guide_as_intended() {
    let text = "# T\n\n## A\n\n| reason | x |\n|---|---|\n| `One` | y |\n  | `Two` | z |\n\n### Sub\n\n| `Three` | w |\n\n## B\n\n| `Four` | v |\n";
    let a = section(text, "## A");
    assert_eq!(first_cells(a), ["One", "Two", "Three"]);
    assert!(!a.contains("Four"));
    assert!(has_row(text, "Four") && !has_row(text, "reason"));
}

/// The minimum Rust the README names is the workspace's `rust-version` (which cargo and
/// clippy's incompatible_msrv lint enforce).
#[test]
fn the_readme_names_the_workspaces_minimum_rust() {
    let manifest = read("Cargo.toml");
    let msrv = manifest
        .lines()
        .find_map(|line| line.strip_prefix("rust-version = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("Cargo.toml's [workspace.package] has rust-version");
    let readme = read("README.md");
    assert!(
        readme.contains(&format!("**Rust** {msrv} or newer")),
        "README.md must name Rust {msrv} (workspace.package.rust-version) as the minimum"
    );
}

/// The operator guide shows every statement the operator's database checks name as a
/// fix, as a DBA runs it (the local cluster's database is set up with the same list).
#[test]
fn the_operator_guide_shows_every_fix_of_the_database_checks() {
    let guide = read("docs/operator-guide.md");
    for check in smartregion_operator::surface::checks::CHECKS {
        for statement in check.fix {
            let shown = statement
                .replace("{admin}", "smartregion_admin")
                .replace("{database}", "smartregion");
            assert!(
                guide
                    .lines()
                    .any(|line| line.trim().trim_end_matches(';') == shown
                        || line.contains(&format!("`{shown}`"))),
                "docs/operator-guide.md does not show the fix of the check {}: {shown}",
                check.name
            );
        }
    }
}

/// Every test `docs/security.md` names exists: a `fn` of that name, or a test module file.
#[test]
fn the_threat_model_names_only_tests_that_exist() {
    let model = read("docs/security.md");
    let root = paths::workspace_root();
    let mut sources = String::new();
    let mut modules = Vec::new();
    let mut stack = vec![
        root.join("e2e/tests"),
        root.join("operator/src"),
        root.join("ingest/src"),
    ];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                modules.push(path.file_stem().unwrap().to_string_lossy().to_string());
                sources.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut named = 0;
    for cell in model.split('`').skip(1).step_by(2) {
        let is_path = cell.contains("::")
            && cell
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == ':');
        if !is_path {
            continue;
        }
        named += 1;
        let last = cell.rsplit("::").next().unwrap();
        assert!(
            sources.contains(&format!("fn {last}(")) || modules.iter().any(|m| m == last),
            "docs/security.md names {cell}, which is neither a test nor a test module"
        );
    }
    assert!(named >= 15, "the threat model names its tests: {named}");
}

/// Every source file of the workspace as text (Rust, scripts, manifests, the chart), for
/// the checks that a document names only what exists.
fn workspace_sources() -> String {
    let root = paths::workspace_root();
    let mut text = String::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" && name != "node_modules" {
                    stack.push(path);
                }
            } else if path.extension().is_none_or(|e| e != "md") {
                text.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
                text.push('\n');
            }
        }
    }
    text
}

/// Whether `word` stands in `text` as a whole word.
fn has_word(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        let part = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        !part(before) && !part(after)
    })
}

/// The documents name only files, modules, items and constants that exist: a document
/// that outlives a rename fails here, not in a reader's hands.
#[test]
fn documents_name_only_files_modules_and_constants_that_exist() {
    let root = paths::workspace_root();
    let sources = workspace_sources();
    // Not the changelog: it records what was, removed files among it.
    let mut documents = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap().flatten() {
        documents.push(entry.path());
    }
    let mut missing = Vec::new();
    for document in &documents {
        let text = std::fs::read_to_string(document).unwrap();
        let name = document.strip_prefix(&root).unwrap().display().to_string();
        // The walkthroughs of "Adding ..." name the files a reader is to create.
        let text: String = text
            .split("\n## ")
            .filter(|section| !section.starts_with("Adding "))
            .collect::<Vec<_>>()
            .join("\n## ");
        for cell in text.split('`').skip(1).step_by(2) {
            let cell = cell.trim();
            let file_like = cell.contains('/')
                && !cell.contains(' ')
                && !cell.starts_with('/')
                && !cell.starts_with('~')
                && !cell.starts_with("http")
                && !cell.contains("://")
                && !cell.contains('*')
                && !cell.contains('<')
                && !cell.contains('{')
                && [
                    "operator/",
                    "ingest/",
                    "e2e/",
                    "contract/",
                    "charts/",
                    "crds/",
                    "docs/",
                    "examples/",
                    ".ci/",
                ]
                .iter()
                .any(|top| cell.starts_with(top));
            if file_like {
                let path = cell.split(['#', ':']).next().unwrap();
                if !root.join(path.trim_end_matches('/')).exists() {
                    missing.push(format!("{name}: file {cell}"));
                }
                continue;
            }
            let path_like = cell.contains("::")
                && cell
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
            if path_like {
                let last = cell.rsplit("::").next().unwrap();
                let exists = [
                    "fn ", "mod ", "struct ", "enum ", "const ", "static ", "type ", "trait ",
                ]
                .iter()
                .any(|item| sources.contains(&format!("{item}{last}")))
                    || has_word(&sources, last);
                if !exists {
                    missing.push(format!("{name}: item {cell}"));
                }
                continue;
            }
            let constant_like = cell.len() > 3
                && cell.contains('_')
                && cell
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            // Settings of the peers the benchmark runs (QuantumLeap's), not ours.
            let peers = cell.starts_with("POSTGRES_") || cell.starts_with("QL_");
            if constant_like && !peers && !has_word(&sources, cell) {
                missing.push(format!("{name}: constant {cell}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "documents name what does not exist (renamed or removed?):\n  {}",
        missing.join("\n  ")
    );
}
