//! `smartregion-operator onboard`: SmartRegionTenant manifests for enti, from flags or
//! from a CSV, checked against the rules the API server applies at admission.
//!
//! Owns turning what a person typed into a tenant ([`tenant`], pure), the CSV of enti
//! ([`table`], pure) and the directory the manifests go to ([`out_dir`], file I/O). It
//! never talks to a cluster: its output goes to git or `kubectl apply`, and the API
//! server keeps the last word. It must not restate the API's rules: the limits and
//! patterns are the constants in [`crate::crd`] that the schema is generated from, and
//! the name rule is the operator's own [`is_tenant_name`].

pub mod ente;
pub mod out_dir;
pub mod table;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use clap::ValueEnum;
use regex::Regex;

use crate::cli::OnboardArgs;
use crate::crd::{
    ADMIN_NAME_MAX_LEN, Admins, DISPLAY_NAME_MAX_LEN, DeletionPolicy, Entity, EntityType,
    IPA_CODE_PATTERN, ISTAT_CODE_PATTERN, MAX_ADMINS, MAX_NAME_LEN, SmartRegionTenant,
    SmartRegionTenantSpec, Tier,
};
use smartregion_contract::tenant::is_tenant_name;

pub use ente::Ente;

/// Why an ente cannot become a tenant: one value the API server would refuse, and what
/// to write instead.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Invalid {
    #[error(
        "name is empty: give the tenant a short name such as \"pistoia\" or \"unione-valdera\""
    )]
    NameEmpty,
    #[error(
        "name {0:?} is not usable: write a DNS label of at most {MAX_NAME_LEN} characters \
         that starts with a letter, with lower-case letters, digits and '-' only, e.g. \
         \"pistoia\" or \"unione-valdera\""
    )]
    Name(String),
    #[error(
        "displayName is empty: write the name people know the ente by, e.g. \"Comune di Pistoia\""
    )]
    DisplayNameEmpty,
    #[error("displayName has {0} characters: shorten it to at most {DISPLAY_NAME_MAX_LEN}")]
    DisplayNameTooLong(usize),
    #[error("entityType is empty: write one of {}", variants::<EntityType>())]
    EntityTypeEmpty,
    #[error("entityType {:?} is not one of {}", .0, variants::<EntityType>())]
    EntityType(String),
    #[error("tier {:?} is not one of {}", .0, variants::<Tier>())]
    Tier(String),
    #[error(
        "istatCode {0:?} is not six digits: write it with its leading zeros, e.g. \"047014\" \
         for Pistoia (spreadsheets drop them from number columns), or leave it empty"
    )]
    IstatCode(String),
    #[error(
        "ipaCode {0:?} is not an IPA code (2 to 20 letters, digits or '_', e.g. \"c_g713\"): \
         copy it from indicepa.gov.it, or leave it empty"
    )]
    IpaCode(String),
    #[error("admin {kind} {value:?} is longer than {ADMIN_NAME_MAX_LEN} characters")]
    AdminTooLong { kind: &'static str, value: String },
    #[error("{count} admin {kind}s are too many: at most {MAX_ADMINS}; use a group instead")]
    TooManyAdmins { kind: &'static str, count: usize },
}

/// The values of a `ValueEnum` as the API spells them: "Comune, UnioneDiComuni, ...".
fn variants<T: ValueEnum>() -> String {
    T::value_variants()
        .iter()
        .filter_map(|value| value.to_possible_value())
        .map(|value| value.get_name().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A `ValueEnum` as the API spells it, e.g. `EntityType::Comune` → "Comune".
pub fn api_name<T: ValueEnum>(value: &T) -> String {
    value
        .to_possible_value()
        .map(|value| value.get_name().to_string())
        .unwrap_or_default()
}

static ISTAT_CODE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(ISTAT_CODE_PATTERN).expect("the schema's pattern compiles"));
static IPA_CODE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(IPA_CODE_PATTERN).expect("the schema's pattern compiles"));

/// The tenant for `ente`, or every reason the API server would refuse it.
///
/// Values are trimmed; empty optional values count as unset; admin names are sorted and
/// deduplicated (the API keeps them as sets, and a canonical order keeps git diffs small).
pub fn tenant(ente: &Ente) -> Result<SmartRegionTenant, Vec<Invalid>> {
    let mut problems = Vec::new();
    let name = ente.name.trim();
    if name.is_empty() {
        problems.push(Invalid::NameEmpty);
    } else if !is_tenant_name(name) {
        problems.push(Invalid::Name(name.to_string()));
    }
    let display_name = ente.display_name.trim();
    // The API server counts characters, not bytes ("Attività" is 8).
    match display_name.chars().count() {
        0 => problems.push(Invalid::DisplayNameEmpty),
        n if n > DISPLAY_NAME_MAX_LEN => problems.push(Invalid::DisplayNameTooLong(n)),
        _ => {}
    }
    let entity_type = match ente.entity_type.trim() {
        "" => {
            problems.push(Invalid::EntityTypeEmpty);
            None
        }
        text => EntityType::from_str(text, true)
            .map_err(|_| problems.push(Invalid::EntityType(text.to_string())))
            .ok(),
    };
    let tier = match optional(&ente.tier) {
        None => Some(Tier::default()),
        Some(text) => Tier::from_str(text, true)
            .map_err(|_| problems.push(Invalid::Tier(text.to_string())))
            .ok(),
    };
    let istat_code = optional(&ente.istat_code);
    if let Some(code) = istat_code.filter(|code| !ISTAT_CODE.is_match(code)) {
        problems.push(Invalid::IstatCode(code.to_string()));
    }
    let ipa_code = optional(&ente.ipa_code);
    if let Some(code) = ipa_code.filter(|code| !IPA_CODE.is_match(code)) {
        problems.push(Invalid::IpaCode(code.to_string()));
    }
    let groups = admin_names("group", &ente.admin_groups, &mut problems);
    let users = admin_names("user", &ente.admin_users, &mut problems);

    match (entity_type, tier) {
        (Some(kind), Some(tier)) if problems.is_empty() => {
            let spec = SmartRegionTenantSpec {
                display_name: display_name.to_string(),
                entity: Entity {
                    kind,
                    istat_code: istat_code.map(str::to_string),
                    ipa_code: ipa_code.map(str::to_string),
                },
                tier,
                quotas: None,
                admins: (!groups.is_empty() || !users.is_empty())
                    .then_some(Admins { groups, users }),
                ingest: None,
                read: None,
                grafana: None,
                database: None,
                deletion_policy: DeletionPolicy::Retain,
                suspended: false,
                sharing: None,
            };
            Ok(SmartRegionTenant::new(name, spec))
        }
        _ => Err(problems),
    }
}

/// The trimmed value, `None` when unset or blank.
fn optional(value: &Option<String>) -> Option<&str> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|value| !value.is_empty())
}

fn admin_names(kind: &'static str, names: &[String], problems: &mut Vec<Invalid>) -> Vec<String> {
    let mut names: Vec<String> = names
        .iter()
        .map(|name| name.trim())
        .filter(|name| !name.is_empty())
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    for name in &names {
        if name.chars().count() > ADMIN_NAME_MAX_LEN {
            problems.push(Invalid::AdminTooLong {
                kind,
                value: name.clone(),
            });
        }
    }
    if names.len() > MAX_ADMINS {
        problems.push(Invalid::TooManyAdmins {
            kind,
            count: names.len(),
        });
    }
    names
}

/// The tenant as YAML. Fields come in the order of the Rust types and nothing depends on
/// the clock or the machine, so the same ente always gives the same bytes.
pub fn manifest(tenant: &SmartRegionTenant) -> String {
    serde_yaml::to_string(tenant).expect("a tenant always serialises to YAML")
}

/// An ente refused in a CSV: its line in the file and one reason.
#[derive(Clone, Debug, PartialEq)]
pub struct BadRow {
    pub line: u64,
    pub problem: RowProblem,
}

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RowProblem {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Table(#[from] table::RowError),
    #[error("name {name:?} is also on line {first_line}: every ente needs its own name")]
    Duplicate { name: String, first_line: u64 },
}

/// Every tenant of a CSV with the line it came from, or every bad row (all of them, not
/// only the first).
pub fn tenants_from_csv(input: &[u8]) -> Result<Vec<(u64, SmartRegionTenant)>, CsvError> {
    let mut tenants = Vec::new();
    let mut bad_rows = Vec::new();
    let mut first_line_of: BTreeMap<String, u64> = BTreeMap::new();
    for row in table::read(input)? {
        let (line, ente) = match row {
            Ok(row) => (row.line, row.ente),
            Err((line, problem)) => {
                bad_rows.push(BadRow {
                    line,
                    problem: problem.into(),
                });
                continue;
            }
        };
        let name = ente.name.trim().to_string();
        if !name.is_empty() {
            match first_line_of.get(&name) {
                Some(&first_line) => bad_rows.push(BadRow {
                    line,
                    problem: RowProblem::Duplicate { name, first_line },
                }),
                None => {
                    first_line_of.insert(name, line);
                }
            }
        }
        match tenant(&ente) {
            Ok(tenant) => tenants.push((line, tenant)),
            Err(problems) => bad_rows.extend(problems.into_iter().map(|problem| BadRow {
                line,
                problem: problem.into(),
            })),
        }
    }
    if !bad_rows.is_empty() {
        bad_rows.sort_by_key(|bad| bad.line);
        return Err(CsvError::BadRows(bad_rows));
    }
    if tenants.is_empty() {
        return Err(CsvError::Empty);
    }
    Ok(tenants)
}

#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error(transparent)]
    Table(#[from] table::Error),
    #[error("{} refused, nothing was written:\n{}", rows(.0), list(.0))]
    BadRows(Vec<BadRow>),
    #[error("no enti: the file has no rows under its header row")]
    Empty,
}

fn rows(bad_rows: &[BadRow]) -> String {
    let mut lines: Vec<u64> = bad_rows.iter().map(|bad| bad.line).collect();
    lines.dedup();
    match lines.len() {
        1 => "1 row is".to_string(),
        n => format!("{n} rows are"),
    }
}

fn list(bad_rows: &[BadRow]) -> String {
    bad_rows
        .iter()
        .map(|bad| format!("  line {}: {}", bad.line, bad.problem))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Why `onboard` wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the tenant is refused:\n{}", .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Refused(Vec<Invalid>),
    #[error("failed to read {}", .0.display())]
    ReadCsv(PathBuf, #[source] std::io::Error),
    #[error("{}", .0.display())]
    Csv(PathBuf, #[source] CsvError),
    #[error(transparent)]
    OutDir(#[from] out_dir::Error),
}

/// Runs `onboard`: the manifest on stdout, or the CSV's manifests into the directory with
/// a summary on stderr.
pub fn run(args: &OnboardArgs) -> Result<(), Error> {
    match (&args.csv, &args.out_dir) {
        (Some(csv), Some(dir)) => run_csv(csv, dir, args.force),
        // clap requires the one with the other, and the single-ente flags without them.
        _ => {
            let tenant = tenant(&ente_from_flags(args)).map_err(Error::Refused)?;
            print!("{}", manifest(&tenant));
            Ok(())
        }
    }
}

fn ente_from_flags(args: &OnboardArgs) -> Ente {
    Ente {
        name: args.name.clone().unwrap_or_default(),
        display_name: args.display_name.clone().unwrap_or_default(),
        entity_type: args.entity_type.map(|t| api_name(&t)).unwrap_or_default(),
        istat_code: args.istat_code.clone(),
        ipa_code: args.ipa_code.clone(),
        tier: Some(api_name(&args.tier)),
        admin_groups: args.admin_groups.clone(),
        admin_users: args.admin_users.clone(),
    }
}

fn run_csv(csv: &Path, dir: &Path, force: bool) -> Result<(), Error> {
    // Whole, because line numbers are worked out from the bytes (a CSV of enti is small).
    let input = std::fs::read(csv).map_err(|error| Error::ReadCsv(csv.to_path_buf(), error))?;
    let tenants = tenants_from_csv(&input).map_err(|error| Error::Csv(csv.to_path_buf(), error))?;
    let manifests = tenants
        .iter()
        .map(|(_, tenant)| {
            let name = tenant.metadata.name.as_deref().unwrap_or_default();
            (format!("{name}.yaml"), manifest(tenant))
        })
        .collect();
    let plan = out_dir::plan(dir, manifests, force)?;
    let summary = out_dir::write(&plan)?;
    eprintln!(
        "{}: {} enti → {}: {summary}",
        csv.display(),
        tenants.len(),
        dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests;
