//! The generated and the hand-written documents agree with the code; no cluster needed.
//!
//! - `docs/api-reference.md` is what `api-reference` generates from the CRD, and names
//!   every field, enum value and rule of the committed CRD YAML (checked independently of
//!   the generator).
//! - `docs/troubleshooting.md` explains every condition type, reason, phase and errors
//!   metric label the operator can write, found by scanning `operator/src` (see
//!   [`scan`] for the patterns it recognises), and lists no reason that no longer exists.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

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

// ---------------------------------------------------------------------------------------
// Troubleshooting

const TROUBLESHOOTING: &str = "docs/troubleshooting.md";
/// The section of the troubleshooting guide whose table rows are condition reasons.
const REASONS_SECTION: &str = "## Conditions and reasons";

#[test]
fn troubleshooting_explains_every_reason_the_operator_writes() {
    let found = scan_operator();
    assert!(
        found.problems.is_empty(),
        "reasons written in a way the scanner does not recognise; extend `scan` in \
         e2e/tests/docs.rs:\n{}",
        found.problems.join("\n")
    );
    // Each pattern still finds something, so a change in how reasons are written cannot
    // silently empty the list.
    for pattern in Pattern::ALL {
        assert!(
            found.reasons.values().any(|p| p.contains(&pattern)),
            "the scanner found no reason written as {pattern:?}; has the code changed? \
             found: {:?}",
            found.reasons
        );
    }
    let guide = read(TROUBLESHOOTING);
    let missing: Vec<&String> = found
        .reasons
        .keys()
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
    let found = scan_operator();
    let guide = read(TROUBLESHOOTING);
    let section = section(&guide, REASONS_SECTION);
    let listed = first_cells(section);
    assert!(listed.len() >= found.reasons.len(), "{listed:?}");
    let unknown: Vec<&String> = listed
        .iter()
        .filter(|reason| !found.reasons.contains_key(*reason))
        .collect();
    assert!(
        unknown.is_empty(),
        "{TROUBLESHOOTING} explains reason(s) {unknown:?} that the operator's source does \
         not write; remove them or fix the name"
    );
}

#[test]
fn troubleshooting_has_a_section_per_condition_type_and_a_row_per_phase() {
    let found = scan_operator();
    let guide = read(TROUBLESHOOTING);
    assert!(
        found.condition_types.len() >= 5,
        "{:?}",
        found.condition_types
    );
    for condition in &found.condition_types {
        assert!(
            guide
                .lines()
                .any(|line| line.starts_with("### ") && line.contains(&format!("`{condition}`"))),
            "{TROUBLESHOOTING} has no section `### \\`{condition}\\`` for that condition type"
        );
    }
    let crd: serde_yaml::Value =
        serde_yaml::from_str(&read("crds/smartregiontenants.smartregion.toscana.it.yaml")).unwrap();
    let phases = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
        ["properties"]["phase"]["enum"]
        .as_sequence()
        .expect("status.phase is an enum")
        .iter()
        .map(|phase| phase.as_str().unwrap().to_string())
        .collect::<Vec<_>>();
    assert!(phases.len() >= 6, "{phases:?}");
    let missing: Vec<&String> = phases
        .iter()
        .filter(|phase| !has_row(section(&guide, "## Phases"), phase))
        .collect();
    assert!(
        missing.is_empty(),
        "{TROUBLESHOOTING} has no row for phase(s) {missing:?} under ## Phases"
    );
}

#[test]
fn troubleshooting_explains_every_errors_metric_label() {
    let found = scan_operator();
    assert!(found.metric_labels.len() >= 10, "{:?}", found.metric_labels);
    let guide = read(TROUBLESHOOTING);
    let missing: Vec<&String> = found
        .metric_labels
        .iter()
        .filter(|label| !has_row(&guide, label))
        .collect();
    assert!(
        missing.is_empty(),
        "{TROUBLESHOOTING} does not explain the smartregion_reconcile_errors_total reason \
         label(s) {missing:?}: add a row starting with | `label` |"
    );
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

// ---------------------------------------------------------------------------------------
// Scanning the operator's source for reasons
//
// Reasons are written today in these ways, each recognised below:
// 1. `Observed::ok | failed | pending(TYPE, "Reason", message)`: the second argument is
//    a string literal (calls span several lines after rustfmt; all are parsed as tokens).
// 2. `fn reason(&self) -> &'static str { match self { ... => "Reason" } }` on the steps'
//    error types; call sites pass `error.reason()` as the second argument of (1).
// 3. A struct literal with a field `reason: "Reason"` (`.into()`, `.to_string()`,
//    `Some(...)` allowed): a Condition, an Event or an Observed written directly.
// Forwarding a reason that was written elsewhere (`failing.reason`, `error.reason()`,
// `observed.reason.to_string()`, a parameter named `reason`) is recognised and needs no
// entry. Anything else in a reason position is reported as a problem, so a new way of
// writing reasons makes the test fail until the scanner knows it.
// Metric labels come from the bodies of `fn metric_label`, and from struct literals of
// `ErrorLabels { reason: ... }`.
// Code under `#[cfg(test)]` (inline test modules and test-only module files) is skipped:
// tests may invent reasons.

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Pattern {
    ObservedCall,
    ReasonFn,
    StructField,
}

impl Pattern {
    /// The patterns the operator's source uses today; each must still find something.
    /// (`StructField` is recognised but currently unused outside tests.)
    const ALL: [Pattern; 2] = [Pattern::ObservedCall, Pattern::ReasonFn];
}

#[derive(Debug, Default)]
struct Found {
    /// Reason → the patterns it was found by.
    reasons: BTreeMap<String, BTreeSet<Pattern>>,
    condition_types: BTreeSet<String>,
    metric_labels: BTreeSet<String>,
    /// "file:line: what" for reason positions the scanner does not understand.
    problems: Vec<String>,
}

fn scan_operator() -> Found {
    let root = paths::workspace_root().join("operator/src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let sources: Vec<(PathBuf, String)> = files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            (path, text)
        })
        .collect();
    let mut test_only = BTreeSet::new();
    for (path, text) in &sources {
        for module in test_modules(&tokens(text)) {
            test_only.extend(module_files(path, &module));
        }
    }
    let mut found = Found::default();
    let constants = string_constants(sources.iter().map(|(_, text)| text.as_str()));
    for (path, text) in &sources {
        if test_only.iter().any(|excluded| path.starts_with(excluded)) {
            continue;
        }
        let name = path.strip_prefix(&root).unwrap().display().to_string();
        scan(&name, text, &constants, &mut found);
    }
    assert!(
        !found.reasons.is_empty(),
        "no reason found in operator/src: the scanner no longer matches the code"
    );
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// Where `mod name;` declared in `file` lives: `name.rs` or `name/` next to a `lib.rs`,
/// `main.rs` or `mod.rs`, else in the directory named after `file`.
fn module_files(file: &Path, module: &str) -> Vec<PathBuf> {
    let dir = file.parent().unwrap();
    let stem = file.file_stem().unwrap().to_str().unwrap();
    let base = if ["lib", "main", "mod"].contains(&stem) {
        dir.to_path_buf()
    } else {
        dir.join(stem)
    };
    vec![base.join(format!("{module}.rs")), base.join(module)]
}

/// `const NAME: &str = "value";` anywhere: condition types are written through them.
fn string_constants<'a>(texts: impl Iterator<Item = &'a str>) -> BTreeMap<String, String> {
    let mut constants = BTreeMap::new();
    for text in texts {
        let tokens: Vec<Tok> = tokens(text).into_iter().map(|(tok, _)| tok).collect();
        for window in tokens.windows(7) {
            if let [
                Tok::Ident(keyword),
                Tok::Ident(name),
                Tok::Punct(':'),
                Tok::Punct('&'),
                Tok::Ident(ty),
                Tok::Punct('='),
                Tok::Str(value),
            ] = window
                && keyword == "const"
                && ty == "str"
            {
                constants.insert(name.clone(), value.clone());
            }
        }
    }
    constants
}

fn scan(file: &str, text: &str, constants: &BTreeMap<String, String>, found: &mut Found) {
    let all = tokens(text);
    let tokens = without_test_code(&all);
    let at = |index: usize| format!("{file}:{}", tokens[index].1);
    let mut i = 0;
    while i < tokens.len() {
        let tok = |k: usize| tokens.get(i + k).map(|(tok, _)| tok);
        // 1. Observed::ok|failed|pending( TYPE , REASON , ... )
        if tok(0) == Some(&ident("Observed"))
            && tok(1) == Some(&Tok::Punct(':'))
            && tok(2) == Some(&Tok::Punct(':'))
            && matches!(tok(3), Some(Tok::Ident(f)) if ["ok", "failed", "pending"].contains(&f.as_str()))
            && tok(4) == Some(&Tok::Punct('('))
        {
            let args = split_args(&tokens[i + 5..], ')');
            match args.as_slice() {
                [condition, reason, ..] => {
                    match condition.as_slice() {
                        [Tok::Str(literal)] => {
                            found.condition_types.insert(literal.clone());
                        }
                        [Tok::Ident(name)] if constants.contains_key(name) => {
                            found.condition_types.insert(constants[name].clone());
                        }
                        [Tok::Ident(name)] if name == "type_" => {} // a parameter
                        other => found
                            .problems
                            .push(format!("{}: condition type {other:?}", at(i))),
                    }
                    reason_value(reason, Pattern::ObservedCall, &at(i), found, false);
                }
                other => found
                    .problems
                    .push(format!("{}: Observed call with arguments {other:?}", at(i))),
            }
        }
        // 2. fn reason / fn metric_label: the string literals of the body.
        if tok(0) == Some(&ident("fn"))
            && let Some(Tok::Ident(name)) = tok(1)
            && (name == "reason" || name == "metric_label")
        {
            let body_start = (i..tokens.len())
                .find(|&k| tokens[k].0 == Tok::Punct('{'))
                .expect("a function body");
            let body = balanced(&tokens[body_start + 1..], '{', '}');
            for token in body {
                if let Tok::Str(literal) = token {
                    if name == "reason" {
                        found
                            .reasons
                            .entry(literal.clone())
                            .or_default()
                            .insert(Pattern::ReasonFn);
                    } else {
                        found.metric_labels.insert(literal.clone());
                    }
                }
            }
        }
        // 3. A struct literal `Type { ..., reason: VALUE, ... }`.
        if let Some(Tok::Ident(name)) = tok(0)
            && name.starts_with(|c: char| c.is_ascii_uppercase())
            && tok(1) == Some(&Tok::Punct('{'))
            && !matches!(
                i.checked_sub(1).map(|k| &tokens[k].0),
                Some(Tok::Ident(word)) if ["struct", "enum", "union", "impl", "trait", "for"].contains(&word.as_str())
            )
            && !matches!(
                i.checked_sub(1).map(|k| &tokens[k].0),
                Some(Tok::Punct('>'))
            )
        {
            let fields = split_args(&tokens[i + 2..], '}');
            for field in fields {
                if let [Tok::Ident(key), Tok::Punct(':'), value @ ..] = field.as_slice()
                    && key == "reason"
                    && value.first() != Some(&Tok::Punct(':'))
                {
                    reason_value(
                        value,
                        Pattern::StructField,
                        &at(i),
                        found,
                        name == "ErrorLabels",
                    );
                }
            }
        }
        i += 1;
    }
}

/// Records the reason in `value` (tokens of one expression) or checks that it forwards a
/// reason written elsewhere; anything else is a problem.
fn reason_value(value: &[Tok], pattern: Pattern, at: &str, found: &mut Found, metric: bool) {
    // "Reason", "Reason".into(), "Reason".to_string(), Some("Reason"), String::from("Reason")
    let literal = value.iter().find_map(|tok| match tok {
        Tok::Str(text) => Some(text.clone()),
        _ => None,
    });
    let conversions_only = value.iter().all(|tok| match tok {
        Tok::Str(_) | Tok::Punct('.' | '(' | ')' | ':') => true,
        Tok::Ident(word) => {
            ["into", "to_string", "to_owned", "Some", "String", "from"].contains(&word.as_str())
        }
        _ => false,
    });
    let forwards = value == [ident("reason")] || value.windows(2).any(|pair| {
        pair[0] == Tok::Punct('.')
            && matches!(&pair[1], Tok::Ident(word) if word == "reason" || word == "metric_label")
    });
    match literal {
        Some(literal) if conversions_only => {
            if metric {
                found.metric_labels.insert(literal);
            } else {
                found.reasons.entry(literal).or_default().insert(pattern);
            }
        }
        None if forwards => {}
        _ => found
            .problems
            .push(format!("{at}: reason written as {value:?}")),
    }
}

// A small Rust lexer: enough to find calls, bodies and string literals, skipping comments,
// character literals and lifetimes.

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Str(String),
    Punct(char),
}

fn ident(name: &str) -> Tok {
    Tok::Ident(name.to_string())
}

/// The tokens of `text` with their line numbers.
fn tokens(text: &str) -> Vec<(Tok, usize)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let count_lines =
        |from: usize, to: usize| chars[from..to].iter().filter(|c| **c == '\n').count();
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let start = i;
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            line += count_lines(start, i);
        } else if c == '"' {
            let start = i;
            let (value, end) = string_literal(&chars, i + 1);
            out.push((Tok::Str(value), line));
            i = end;
            line += count_lines(start, i);
        } else if c == '\'' {
            // 'x', '\n', '\u{..}' are characters; 'a (no closing quote) is a lifetime.
            if next == Some('\\') {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            // r"..", r#".."#, br"..", b"..": a string literal with a prefix.
            let raw = (word == "r" || word == "br") && matches!(chars.get(i), Some('"' | '#'));
            if raw {
                let hashes = chars[i..].iter().take_while(|c| **c == '#').count();
                let open = i + hashes;
                if chars.get(open) == Some(&'"') {
                    let closing: String = std::iter::once('"')
                        .chain(std::iter::repeat_n('#', hashes))
                        .collect();
                    let rest: String = chars[open + 1..].iter().collect();
                    let length = rest.find(&closing).map(|b| rest[..b].chars().count());
                    let length = length.expect("a closed raw string");
                    let value: String = chars[open + 1..open + 1 + length].iter().collect();
                    out.push((Tok::Str(value), line));
                    let end = open + 1 + length + 1 + hashes;
                    line += count_lines(i, end);
                    i = end;
                    continue;
                }
            }
            if word == "b" && chars.get(i) == Some(&'"') {
                let start = i;
                let (value, end) = string_literal(&chars, i + 1);
                out.push((Tok::Str(value), line));
                i = end;
                line += count_lines(start, i);
                continue;
            }
            out.push((Tok::Ident(word), line));
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
        } else {
            out.push((Tok::Punct(c), line));
            i += 1;
        }
    }
    out
}

/// The value of a string literal whose content starts at `start`, and the index after it.
fn string_literal(chars: &[char], start: usize) -> (String, usize) {
    let mut value = String::new();
    let mut i = start;
    while i < chars.len() && chars[i] != '"' {
        if chars[i] == '\\' {
            i += 1;
            match chars.get(i) {
                Some('n') => value.push('\n'),
                Some('t') => value.push('\t'),
                // A line continuation: the newline and the next line's indentation go.
                Some('\n') => {
                    while chars.get(i + 1).is_some_and(|c| c.is_whitespace()) {
                        i += 1;
                    }
                }
                Some(other) => value.push(*other),
                None => {}
            }
        } else {
            value.push(chars[i]);
        }
        i += 1;
    }
    (value, i + 1)
}

/// The names of `#[cfg(test)] mod name;` declarations.
fn test_modules(tokens: &[(Tok, usize)]) -> Vec<String> {
    (0..tokens.len())
        .filter(|&i| is_cfg_test(tokens, i))
        .filter_map(|i| match &tokens[i + CFG_TEST.len()..] {
            [
                (Tok::Ident(keyword), _),
                (Tok::Ident(name), _),
                (Tok::Punct(';'), _),
                ..,
            ] if keyword == "mod" => Some(name.clone()),
            _ => None,
        })
        .collect()
}

const CFG_TEST: [&str; 7] = ["#", "[", "cfg", "(", "test", ")", "]"];

/// Whether `#[cfg(test)]` starts at `index`.
fn is_cfg_test(tokens: &[(Tok, usize)], index: usize) -> bool {
    tokens.len() >= index + CFG_TEST.len()
        && tokens[index..index + CFG_TEST.len()]
            .iter()
            .zip(CFG_TEST)
            .all(|((tok, _), text)| match tok {
                Tok::Ident(word) => word == text,
                Tok::Punct(c) => text.len() == 1 && text.starts_with(*c),
                Tok::Str(_) => false,
            })
}

/// `tokens` without the items that carry `#[cfg(test)]`.
fn without_test_code(tokens: &[(Tok, usize)]) -> Vec<(Tok, usize)> {
    let mut kept = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if !is_cfg_test(tokens, i) {
            kept.push(tokens[i].clone());
            i += 1;
            continue;
        }
        // The item ends at its first `;` outside braces, or with its `{ ... }`.
        let mut k = i + CFG_TEST.len();
        while k < tokens.len() {
            match tokens[k].0 {
                Tok::Punct(';') => break,
                Tok::Punct('{') => {
                    k += balanced(&tokens[k + 1..], '{', '}').len() + 1;
                    break;
                }
                _ => k += 1,
            }
        }
        i = k + 1;
    }
    kept
}

/// The tokens up to the `close` that matches an already opened `open`.
fn balanced<T: AsTok>(tokens: &[T], open: char, close: char) -> Vec<Tok> {
    let mut depth = 0;
    let mut inner = Vec::new();
    for token in tokens {
        let tok = token.tok();
        if *tok == Tok::Punct(open) {
            depth += 1;
        } else if *tok == Tok::Punct(close) {
            if depth == 0 {
                break;
            }
            depth -= 1;
        }
        inner.push(tok.clone());
    }
    inner
}

/// The comma-separated parts up to the `close` that ends the list (which is already
/// open), at the list's own nesting level.
fn split_args<T: AsTok>(tokens: &[T], close: char) -> Vec<Vec<Tok>> {
    let mut parts = vec![Vec::new()];
    let mut depth = 0;
    for token in tokens {
        let tok = token.tok();
        match tok {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(c) if *c == close && depth == 0 => break,
            Tok::Punct(')' | ']' | '}') => depth -= 1,
            Tok::Punct(',') if depth == 0 => {
                parts.push(Vec::new());
                continue;
            }
            _ => {}
        }
        parts.last_mut().unwrap().push(tok.clone());
    }
    parts.retain(|part| !part.is_empty());
    parts
}

trait AsTok {
    fn tok(&self) -> &Tok;
}

impl AsTok for Tok {
    fn tok(&self) -> &Tok {
        self
    }
}

impl AsTok for (Tok, usize) {
    fn tok(&self) -> &Tok {
        &self.0
    }
}

/// The scanner on the shapes of code it has to understand, independent of today's source.
#[test]
fn the_scanner_recognises_each_way_of_writing_a_reason() {
    let source = r##"
        pub const READY: &str = "Ready";
        pub const NAMESPACE_READY: &str = "NamespaceReady";
        const DATABASE_READY: &str = "DatabaseReady";
        // Observed::failed(READY, "InAComment", "...") is not code.
        fn live() {
            let a = Observed::ok(READY, "Literal", "fine");
            let b = Observed::failed(
                NAMESPACE_READY,
                "MultiLine",
                format!("namespace {ns} is \"quoted\", 'x' and {}", 'y'),
            );
            let c = Observed::failed(DATABASE_READY, error.reason(), error_chain(&error));
            let d = Observed::pending(READY, failing.reason, failing.message.clone());
            let e = Condition { type_: "Ready".into(), reason: "InALiteral".to_string(), ..x };
            let f = Event { reason: observed.reason.to_string(), note: None };
            let g = ErrorLabels { reason: "a_label".into() };
            let h = ErrorLabels { reason: error.metric_label().to_string() };
            let s = r#"Observed::ok(READY, "InARawString", "")"#;
        }
        pub struct Observed { pub reason: &'static str }
        impl Error {
            pub fn reason(&self) -> &'static str {
                match self { Error::A(_) => "FromReasonFn", _ => "Other" }
            }
            pub fn metric_label(&self) -> &'static str { "some_label" }
        }
        #[cfg(test)]
        mod tests {
            fn t() { Observed::ok(READY, "OnlyInTests", ""); }
        }
        #[cfg(test)]
        mod test_support;
    "##;
    let mut found = Found::default();
    let constants = string_constants(std::iter::once(source));
    scan("example.rs", source, &constants, &mut found);
    let reasons: Vec<&str> = found.reasons.keys().map(String::as_str).collect();
    assert_eq!(
        reasons,
        [
            "FromReasonFn",
            "InALiteral",
            "Literal",
            "MultiLine",
            "Other"
        ]
    );
    assert_eq!(
        found.reasons["MultiLine"],
        BTreeSet::from([Pattern::ObservedCall])
    );
    assert_eq!(
        found.reasons["FromReasonFn"],
        BTreeSet::from([Pattern::ReasonFn])
    );
    assert_eq!(
        found.reasons["InALiteral"],
        BTreeSet::from([Pattern::StructField])
    );
    assert_eq!(
        found.metric_labels,
        BTreeSet::from(["a_label".to_string(), "some_label".to_string()])
    );
    assert!(found.problems.is_empty(), "{:?}", found.problems);
    assert_eq!(
        found.condition_types,
        BTreeSet::from(["Ready", "NamespaceReady", "DatabaseReady"].map(String::from))
    );
    assert_eq!(test_modules(&tokens(source)), ["test_support"]);

    // A reason written some other way is a problem, not silently skipped.
    let mut found = Found::default();
    scan(
        "new.rs",
        "fn f() { Observed::ok(READY, REASON_CONSTANT, \"m\"); }",
        &constants,
        &mut found,
    );
    assert_eq!(found.problems.len(), 1, "{:?}", found.problems);
    assert!(
        found.problems[0].starts_with("new.rs:1:"),
        "{:?}",
        found.problems
    );
}

#[test]
fn first_cells_and_sections_read_the_guide_as_intended() {
    let text = "# T\n\n## A\n\n| reason | x |\n|---|---|\n| `One` | y |\n  | `Two` | z |\n\n### Sub\n\n| `Three` | w |\n\n## B\n\n| `Four` | v |\n";
    let a = section(text, "## A");
    assert_eq!(first_cells(a), ["One", "Two", "Three"]);
    assert!(!a.contains("Four"));
    assert!(has_row(text, "Four") && !has_row(text, "reason"));
}
