//! The API reference (`docs/api-reference.md`), rendered from the CRD the operator
//! generates, so the document cannot disagree with what the API server enforces.
//!
//! Pure: [`render`] turns a CustomResourceDefinition (plus the meanings of enum values,
//! which the CRD schema drops) into Markdown. `src/bin/api-reference.rs` prints it, and
//! `tests/docs.rs` fails when the committed file differs.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionVersion, JSONSchemaProps,
    JSONSchemaPropsOrArray, ValidationRule,
};
use serde_json::Value;

/// The committed document, relative to the workspace root.
pub const PATH: &str = "docs/api-reference.md";

/// The command that rewrites [`PATH`].
pub const REGENERATE: &str =
    "cargo run -q -p smartregion-e2e --bin api-reference > docs/api-reference.md";

/// Meanings of enum values, keyed by the sorted set of values of one enum.
pub type EnumDocs = BTreeMap<Vec<String>, Vec<(String, String)>>;

/// The whole document: the header, then one section per CRD (SmartRegionTenant,
/// SmartRegionShare, SmartRegionDataset), as this build of the operator generates them.
pub fn document() -> String {
    use smartregion_operator::crd::*;
    format!(
        "<!-- Generated from the CRD types in operator/src/crd.rs; do not edit by hand.\n     \
         Regenerate with: {REGENERATE}\n     \
         (e2e/tests/offline/docs.rs fails when this file is stale.) -->\n{}\n{}\n{}",
        reference::<SmartRegionTenant, SmartRegionTenantSpec, SmartRegionTenantStatus>(),
        reference::<SmartRegionShare, SmartRegionShareSpec, SmartRegionShareStatus>(),
        reference::<SmartRegionDataset, SmartRegionDatasetSpec, SmartRegionDatasetStatus>()
    )
}

/// The section of one kind in [`document`]: from its heading to the next kind's.
pub fn section<'a>(document: &'a str, kind: &str) -> &'a str {
    let heading = format!("# API reference: {kind}\n");
    let start = document.find(&heading).unwrap_or(document.len());
    let rest = &document[start..];
    let end = rest[heading.len()..]
        .find("\n# API reference: ")
        .map(|end| end + heading.len())
        .unwrap_or(rest.len());
    &rest[..end]
}

/// The reference for one CRD, from its kind and the types of its spec and status.
pub fn reference<K, Spec, Status>() -> String
where
    K: kube::CustomResourceExt,
    Spec: schemars::JsonSchema,
    Status: schemars::JsonSchema,
{
    let mut generator = schemars::SchemaGenerator::default();
    let spec = generator.subschema_for::<Spec>();
    let status = generator.subschema_for::<Status>();
    let mut schemas = vec![spec.to_value(), status.to_value()];
    schemas.extend(generator.definitions().values().cloned());
    render(&K::crd(), &enum_docs(&schemas))
}

/// Documented enum values found anywhere in `schemas` (schemars output, before kube turns
/// each `oneOf` of documented constants into a bare `enum`).
pub fn enum_docs(schemas: &[Value]) -> EnumDocs {
    fn visit(value: &Value, docs: &mut EnumDocs) {
        match value {
            Value::Object(map) => {
                if let Some(Value::Array(variants)) = map.get("oneOf") {
                    let values: Option<Vec<(String, String)>> = variants
                        .iter()
                        .map(|variant| {
                            let constant = variant.get("const").or_else(|| {
                                variant
                                    .get("enum")
                                    .and_then(Value::as_array)
                                    .filter(|values| values.len() == 1)
                                    .map(|values| &values[0])
                            })?;
                            let description = variant
                                .get("description")
                                .and_then(Value::as_str)
                                .unwrap_or_default();
                            Some((constant.as_str()?.to_string(), one_line(description)))
                        })
                        .collect();
                    if let Some(values) = values.filter(|values| !values.is_empty()) {
                        let mut key: Vec<String> = values.iter().map(|(v, _)| v.clone()).collect();
                        key.sort();
                        docs.insert(key, values);
                    }
                }
                map.values().for_each(|value| visit(value, docs));
            }
            Value::Array(items) => items.iter().for_each(|item| visit(item, docs)),
            _ => {}
        }
    }
    let mut docs = EnumDocs::new();
    schemas.iter().for_each(|schema| visit(schema, &mut docs));
    docs
}

/// The Markdown reference of `crd`.
pub fn render(crd: &CustomResourceDefinition, enums: &EnumDocs) -> String {
    let spec = &crd.spec;
    let names = &spec.names;
    let mut out = String::new();
    let _ = writeln!(out, "# API reference: {}\n", names.kind);
    let _ = writeln!(
        out,
        "Every field of the `{}` custom resource, with the checks the API server applies \
         when one is created or changed. An object that breaks one of them is refused \
         at `kubectl apply` with the field and the message shown here; why the rules are \
         where they are is in [api-types.md](api-types.md) and [sharing.md](sharing.md). \
         What the operator writes into `status.conditions`, and what to do about each \
         reason, is in [troubleshooting.md](troubleshooting.md).\n",
        names.kind
    );
    let _ = writeln!(out, "| | |\n|---|---|");
    let versions: Vec<&str> = spec.versions.iter().map(|v| v.name.as_str()).collect();
    let _ = writeln!(
        out,
        "| API version | {} |",
        versions
            .iter()
            .map(|v| format!("`{}/{v}`", spec.group))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(out, "| kind | `{}` |", names.kind);
    let _ = writeln!(
        out,
        "| scope | {} |",
        if spec.scope == "Cluster" {
            "`Cluster`: tenants have no namespace"
        } else {
            "`Namespaced`"
        }
    );
    let _ = writeln!(
        out,
        "| plural, singular | `{}`, `{}` |",
        names.plural,
        names.singular.as_deref().unwrap_or_default()
    );
    if let Some(short) = names.short_names.as_ref().filter(|s| !s.is_empty()) {
        let _ = writeln!(
            out,
            "| short names | {} (`kubectl get {}`) |",
            code_list(short),
            short[0]
        );
    }
    if let Some(categories) = names.categories.as_ref().filter(|c| !c.is_empty()) {
        let _ = writeln!(
            out,
            "| categories | {} (`kubectl get {}` lists tenants too) |",
            code_list(categories),
            categories[0]
        );
    }
    for version in &spec.versions {
        render_version(&mut out, version, enums);
    }
    out
}

fn render_version(out: &mut String, version: &CustomResourceDefinitionVersion, enums: &EnumDocs) {
    let subresources = version
        .subresources
        .as_ref()
        .map(|s| {
            let mut names = Vec::new();
            if s.status.is_some() {
                names.push("status".to_string());
            }
            if s.scale.is_some() {
                names.push("scale".to_string());
            }
            names
        })
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "| `{}` | served: {}, storage version: {}, subresources: {} |",
        version.name,
        yes_no(version.served),
        yes_no(version.storage),
        if subresources.is_empty() {
            "none".to_string()
        } else {
            code_list(&subresources)
        }
    );
    if subresources.iter().any(|s| s == "status") {
        let _ = writeln!(
            out,
            "\nWith the status subresource, `status` is written only by the operator \
             (through `/status`); changes to it in a manifest are ignored."
        );
    }

    if let Some(columns) = version
        .additional_printer_columns
        .as_ref()
        .filter(|c| !c.is_empty())
    {
        let _ = writeln!(out, "\n## Printer columns\n");
        let _ = writeln!(out, "What `kubectl get` shows for each tenant:\n");
        let _ = writeln!(out, "| column | type | JSON path |\n|---|---|---|");
        for column in columns {
            let _ = writeln!(
                out,
                "| {} | {} | `{}` |",
                column.name,
                column.type_,
                column.json_path.replace('|', "\\|")
            );
        }
    }

    let Some(root) = version
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
    else {
        return;
    };
    let mut fields = Vec::new();
    for (name, schema) in root.properties.iter().flatten() {
        collect(name, schema, is_required(root, name), &mut fields);
    }

    let _ = writeln!(out, "\n## Fields at a glance\n");
    let _ = writeln!(
        out,
        "| field | type | required | default |\n|---|---|---|---|"
    );
    for field in &fields {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} |",
            field.path,
            type_name(field.schema),
            yes_no(field.required),
            field
                .schema
                .default
                .as_ref()
                .map(|d| format!("`{}`", json_text(&d.0)))
                .unwrap_or_default()
        );
    }

    if let Some(rules) = root.x_kubernetes_validations.as_ref() {
        let _ = writeln!(out, "\n## Rules on the whole object\n");
        let _ = writeln!(
            out,
            "CEL rules evaluated on the whole tenant (`self` is the object):\n"
        );
        for rule in rules {
            let _ = writeln!(out, "- {}", rule_text(rule));
        }
    }

    // A top-level field (`spec`, `status`) opens a section; the others are inside it.
    for field in &fields {
        let level = if field.path.contains(['.', '[']) {
            "###"
        } else {
            "##"
        };
        let _ = writeln!(out, "\n{level} `{}`\n", field.path);
        render_field(out, field, enums);
    }
}

/// One field of the schema, depth first.
struct Field<'a> {
    path: String,
    schema: &'a JSONSchemaProps,
    required: bool,
}

fn collect<'a>(path: &str, schema: &'a JSONSchemaProps, required: bool, out: &mut Vec<Field<'a>>) {
    out.push(Field {
        path: path.to_string(),
        schema,
        required,
    });
    for (name, child) in schema.properties.iter().flatten() {
        collect(
            &format!("{path}.{name}"),
            child,
            is_required(schema, name),
            out,
        );
    }
    // The fields of objects in a list, e.g. `status.conditions[].reason`.
    if let Some(item) = item_schema(schema).filter(|item| item.properties.is_some()) {
        for (name, child) in item.properties.iter().flatten() {
            collect(
                &format!("{path}[].{name}"),
                child,
                is_required(item, name),
                out,
            );
        }
    }
}

fn render_field(out: &mut String, field: &Field, enums: &EnumDocs) {
    let schema = field.schema;
    if let Some(description) = schema.description.as_deref() {
        let _ = writeln!(out, "{}\n", one_line(description));
    }
    let mut facts = vec![format!(
        "Type: {}, {}.",
        type_name(schema),
        if field.required {
            "required"
        } else {
            "optional"
        }
    )];
    if let Some(default) = &schema.default {
        facts.push(format!("Default: `{}`.", json_text(&default.0)));
    }
    let mut meanings = enum_meanings(schema, enums);
    let documented = !meanings.is_empty();
    facts.extend(
        constraints(schema)
            .into_iter()
            // Documented values get the list below instead, under the same words.
            .filter(|fact| !(documented && fact.starts_with(ONE_OF))),
    );
    if let Some(item) = item_schema(schema).filter(|item| item.properties.is_none()) {
        let of_item = constraints(item);
        if !of_item.is_empty() {
            facts.push(format!(
                "Each item: {}",
                of_item
                    .iter()
                    .map(|fact| lower_first(fact.trim_end_matches('.')))
                    .collect::<Vec<_>>()
                    .join("; ")
                    + "."
            ));
        }
        meanings.extend(enum_meanings(item, enums));
    }
    for fact in facts {
        let _ = writeln!(out, "- {fact}");
    }
    if !meanings.is_empty() {
        let _ = writeln!(out, "- {}", if documented { ONE_OF } else { "Values:" });
        for meaning in meanings {
            let _ = writeln!(out, "  - {meaning}");
        }
    }
}

const ONE_OF: &str = "One of:";

/// Everything the API server checks on a value of `schema` itself (not its children).
fn constraints(schema: &JSONSchemaProps) -> Vec<String> {
    let mut facts = Vec::new();
    if let Some(values) = schema.enum_.as_ref() {
        facts.push(format!(
            "{ONE_OF} {}.",
            values
                .iter()
                .map(|v| format!("`{}`", json_text(&v.0)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(pattern) = &schema.pattern {
        facts.push(format!("Pattern: `{pattern}`."));
    }
    if let Some(text) = bounds(schema.min_length, schema.max_length, "characters") {
        facts.push(format!("Length: {text}."));
    }
    // A quantity is an integer or a string; the string branch carries the length bound.
    for branch in schema.any_of.iter().flatten() {
        if let Some(text) = bounds(branch.min_length, branch.max_length, "characters") {
            facts.push(format!("As a string: {text}."));
        }
    }
    if let Some(text) = range(schema) {
        facts.push(format!("Range: {text}."));
    }
    if let Some(text) = bounds(schema.min_items, schema.max_items, "items") {
        facts.push(format!("Items: {text}."));
    }
    match schema.x_kubernetes_list_type.as_deref() {
        Some("set") => facts
            .push("A set: no duplicates; server-side apply merges it item by item.".to_string()),
        Some("map") => facts.push(format!(
            "A map keyed by {}: server-side apply merges it entry by entry.",
            code_list(schema.x_kubernetes_list_map_keys.as_deref().unwrap_or(&[]))
        )),
        _ => {}
    }
    for rule in schema.x_kubernetes_validations.iter().flatten() {
        facts.push(format!("Rule: {}", rule_text(rule)));
    }
    facts
}

/// Lines that say what each enum value means, when the Rust types documented them.
fn enum_meanings(schema: &JSONSchemaProps, enums: &EnumDocs) -> Vec<String> {
    let Some(values) = schema.enum_.as_ref() else {
        return Vec::new();
    };
    let mut key: Vec<String> = values.iter().map(|v| json_text(&v.0)).collect();
    key.sort();
    let Some(documented) = enums.get(&key) else {
        return Vec::new();
    };
    documented
        .iter()
        .map(|(value, meaning)| match meaning.as_str() {
            "" => format!("`{value}`"),
            meaning => format!("`{value}`: {meaning}"),
        })
        .collect()
}

fn rule_text(rule: &ValidationRule) -> String {
    let mut text = format!("`{}`", rule.rule);
    if rule.rule.contains("oldSelf") {
        text.push_str(" (checked on updates)");
    }
    if let Some(message) = &rule.message {
        let _ = write!(text, " — refused with \"{message}\"");
    }
    if let Some(expression) = &rule.message_expression {
        let _ = write!(text, " — message expression `{expression}`");
    }
    if let Some(reason) = &rule.reason {
        let _ = write!(text, " (reason `{reason}`)");
    }
    if let Some(path) = &rule.field_path {
        let _ = write!(text, " (reported at `{path}`)");
    }
    text.push('.');
    text
}

fn type_name(schema: &JSONSchemaProps) -> String {
    if schema.x_kubernetes_int_or_string == Some(true) {
        return "integer or string".to_string();
    }
    let base = schema.type_.as_deref().unwrap_or("any");
    match (base, schema.format.as_deref()) {
        ("array", _) => match item_schema(schema) {
            Some(item) => format!("array of {}", type_name(item)),
            None => "array".to_string(),
        },
        (base, Some(format)) => format!("{base} ({format})"),
        (base, None) => base.to_string(),
    }
}

fn item_schema(schema: &JSONSchemaProps) -> Option<&JSONSchemaProps> {
    match schema.items.as_ref()? {
        JSONSchemaPropsOrArray::Schema(item) => Some(item),
        JSONSchemaPropsOrArray::Schemas(items) => items.first(),
    }
}

fn is_required(parent: &JSONSchemaProps, name: &str) -> bool {
    parent.required.iter().flatten().any(|r| r == name)
}

fn bounds(min: Option<i64>, max: Option<i64>, unit: &str) -> Option<String> {
    match (min, max) {
        (Some(min), Some(max)) if min == max => Some(format!("exactly {min} {unit}")),
        (Some(min), Some(max)) => Some(format!("{min} to {max} {unit}")),
        (Some(min), None) => Some(format!("at least {min} {unit}")),
        (None, Some(max)) => Some(format!("at most {max} {unit}")),
        (None, None) => None,
    }
}

fn range(schema: &JSONSchemaProps) -> Option<String> {
    let low = |v: f64| {
        if schema.exclusive_minimum == Some(true) {
            format!("more than {}", number(v))
        } else {
            format!("at least {}", number(v))
        }
    };
    let high = |v: f64| {
        if schema.exclusive_maximum == Some(true) {
            format!("less than {}", number(v))
        } else {
            format!("at most {}", number(v))
        }
    };
    match (schema.minimum, schema.maximum) {
        (Some(min), Some(max))
            if schema.exclusive_minimum != Some(true) && schema.exclusive_maximum != Some(true) =>
        {
            Some(format!("{} to {}", number(min), number(max)))
        }
        (Some(min), Some(max)) => Some(format!("{}, {}", low(min), high(max))),
        (Some(min), None) => Some(low(min)),
        (None, Some(max)) => Some(high(max)),
        (None, None) => None,
    }
}

/// `1` rather than `1.0`: schema bounds are floats even for integer fields.
fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        value.to_string()
    }
}

/// A JSON value as a user writes it in YAML: strings without quotes.
fn json_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn code_list(items: &[String]) -> String {
    items
        .iter()
        .map(|item| format!("`{item}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

/// Doc comments arrive wrapped at the source's line width; Markdown wants paragraphs.
fn one_line(text: &str) -> String {
    text.split("\n\n")
        .map(|paragraph| paragraph.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n\n")
}

fn lower_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}
