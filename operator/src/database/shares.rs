//! Sharing in the database (pure): the names, view text and plans by which one tenant's
//! measurements are readable by another's `db-reader` — exactly the rows a
//! `SmartRegionShare` declares, through a view, never a copy.
//!
//! The shape: a schema `s_<provider>` per providing tenant, owned by its NOLOGIN-or-jobs
//! owner role, holding one `security_barrier` view per share over its `measurements`
//! (and one over its sensor catalogue), `SELECT` granted to the consumers' readers only.
//! A view runs with its owner's privileges, so the consumer needs nothing on the
//! provider's own schema, tables, partitions or chunks; `security_barrier` keeps the
//! filter first, so no function of the consumer's sees a row it filters out. No
//! row-level security: TimescaleDB refuses compression under it, and chunks bypass it.
//!
//! Values from a share (metrics, sensors, a time) cannot be bound parameters of a view's
//! definition: they are written as literals, escaped by `postgres-protocol`, and the CRD
//! allows them no control characters.

use postgres_protocol::escape::escape_literal;

use super::names::{TenantDb, quote};

/// A share as the database needs it, from a validated `SmartRegionShare`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Share {
    /// The share's `metadata.name` (a DNS label).
    pub name: String,
    pub metrics: Vec<String>,
    pub metric_prefixes: Vec<String>,
    pub sensors: Vec<String>,
    pub sensor_prefixes: Vec<String>,
    /// RFC 3339, as the API server wrote it.
    pub since: Option<String>,
}

/// The schema that holds a provider's shares: `s_<provider>` beside its `t_<provider>`.
pub fn schema(provider: &TenantDb) -> String {
    format!("s_{}", &provider.schema[2..])
}

pub use smartregion_contract::tenant::{share_sensors_view as sensors_view, share_view as view};

/// `s_<provider>.<view>`, as a consumer reads it (and as status says).
pub fn read_as(provider: &TenantDb, view: &str) -> String {
    format!("{}.{view}", schema(provider))
}

/// `column` is one of `exact` or starts with one of `prefixes`; TRUE when both are empty.
pub(crate) fn one_of(column: &str, exact: &[String], prefixes: &[String]) -> String {
    if exact.is_empty() && prefixes.is_empty() {
        return "TRUE".into();
    }
    let mut parts = Vec::new();
    if !exact.is_empty() {
        let values: Vec<String> = exact.iter().map(|value| escape_literal(value)).collect();
        parts.push(format!(
            "{column} = ANY (ARRAY[{}]::text[])",
            values.join(", ")
        ));
    }
    for prefix in prefixes {
        parts.push(format!("starts_with({column}, {})", escape_literal(prefix)));
    }
    format!("({})", parts.join(" OR "))
}

/// The rows of `measurements` a share declares.
pub(crate) fn rows(share: &Share, measurement: &str) -> String {
    let mut filter = vec![
        one_of(
            &format!("{measurement}.metric"),
            &share.metrics,
            &share.metric_prefixes,
        ),
        one_of(
            &format!("{measurement}.sensor"),
            &share.sensors,
            &share.sensor_prefixes,
        ),
    ];
    if let Some(since) = &share.since {
        filter.push(format!(
            "{measurement}.time >= {}::timestamptz",
            escape_literal(since)
        ));
    }
    filter.join(" AND ")
}

/// The statements that make a share's two views as declared, as the provider's owner
/// (the caller sets the role): dropped and made anew, so no column or filter of an
/// earlier definition survives.
pub fn view_statements(provider: &TenantDb, share: &Share) -> Vec<String> {
    let (schema, tables) = (quote(&schema(provider)), quote(&provider.schema));
    let measurements = format!("{schema}.{}", quote(&view(&share.name)));
    let sensors = format!("{schema}.{}", quote(&sensors_view(&share.name)));
    // The catalogue: the shared sensors that have shared measurements.
    let catalogue = format!(
        "SELECT s.id, s.name, s.metadata, s.created_at FROM {tables}.sensors s \
         WHERE {} AND EXISTS (SELECT 1 FROM {tables}.measurements m WHERE m.sensor = s.id AND {})",
        one_of("s.id", &share.sensors, &share.sensor_prefixes),
        rows(share, "m")
    );
    vec![
        format!("DROP VIEW IF EXISTS {measurements}"),
        format!("DROP VIEW IF EXISTS {sensors}"),
        format!(
            "CREATE VIEW {measurements} WITH (security_barrier) AS \
             SELECT m.sensor, m.metric, m.time, m.value FROM {tables}.measurements m WHERE {}",
            rows(share, "m")
        ),
        format!("CREATE VIEW {sensors} WITH (security_barrier) AS {catalogue}"),
        format!("REVOKE ALL ON {measurements}, {sensors} FROM PUBLIC"),
    ]
}

/// A digest of what a share's views are to be, kept as the view's comment: a changed
/// share (or a view someone replaced by hand) no longer matches.
pub fn digest(provider: &TenantDb, share: &Share) -> String {
    use sha2::{Digest, Sha256};
    let text = view_statements(provider, share).join(";");
    Sha256::digest(text.as_bytes())
        .iter()
        .take(12)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The comment that records `digest` and the definition the server stored for it.
pub fn comment(digest: &str, stored_definition_digest: &str) -> String {
    format!("smartregion share {digest} {stored_definition_digest}")
}

/// A digest of the definition as `pg_get_viewdef` gives it.
pub fn definition_digest(definition: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(definition.as_bytes())
        .iter()
        .take(12)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// A view of the provider's schema as the catalog has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundView {
    pub name: String,
    /// Its comment, if any.
    pub comment: Option<String>,
    /// The digest of its definition now.
    pub definition: String,
    /// Roles that hold any privilege on it, but its owner (`PUBLIC` as `public`), each
    /// with whether it is exactly `SELECT`.
    pub grantees: Vec<(String, bool)>,
}

/// What to do to a provider's shares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Shares whose views are (re)made.
    pub make: Vec<Share>,
    /// Views no share wants any more.
    pub drop: Vec<String>,
    /// (view, role) to take every privilege from.
    pub revoke: Vec<(String, String)>,
    /// (view, role) to give SELECT.
    pub grant: Vec<(String, String)>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.make.is_empty()
            && self.drop.is_empty()
            && self.revoke.is_empty()
            && self.grant.is_empty()
    }
}

/// The changes that bring the found views to the declared shares, each readable by the
/// readers in `readers` (per share; only consumers whose reader exists). Empty when they
/// are so: an idle reconcile changes nothing.
pub fn plan(provider: &TenantDb, shares: &[(Share, Vec<String>)], found: &[FoundView]) -> Plan {
    let mut plan = Plan::default();
    let wanted: Vec<String> = shares
        .iter()
        .flat_map(|(share, _)| [view(&share.name), sensors_view(&share.name)])
        .collect();
    for view in found {
        if !wanted.contains(&view.name) {
            plan.drop.push(view.name.clone());
        }
    }
    for (share, readers) in shares {
        let digest = digest(provider, share);
        let current = |name: &str| found.iter().find(|view| view.name == name);
        let as_made = [view(&share.name), sensors_view(&share.name)]
            .iter()
            .all(|name| {
                current(name).is_some_and(|view| {
                    view.comment.as_deref() == Some(&comment(&digest, &view.definition))
                })
            });
        if !as_made {
            plan.make.push(share.clone());
        }
        for name in [view(&share.name), sensors_view(&share.name)] {
            let grantees = match current(&name) {
                Some(view) if as_made => view.grantees.clone(),
                // Made anew: no one holds anything on it yet.
                _ => Vec::new(),
            };
            for (role, only_select) in &grantees {
                if !readers.contains(role) || !only_select {
                    plan.revoke.push((name.clone(), role.clone()));
                }
            }
            for reader in readers {
                let holds_select = grantees
                    .iter()
                    .any(|(role, only_select)| role == reader && *only_select);
                if !holds_select {
                    plan.grant.push((name.clone(), reader.clone()));
                }
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share() -> Share {
        Share {
            name: "river-levels".into(),
            metrics: vec!["river_level".into(), "o'brien".into()],
            metric_prefixes: Vec::new(),
            sensors: Vec::new(),
            sensor_prefixes: vec!["arno-".into()],
            since: Some("2026-01-01T00:00:00Z".into()),
        }
    }

    #[test]
    fn names_are_predictable_and_apart_from_the_tenants_own() {
        let provider = TenantDb::test("publiacqua");
        assert_eq!(schema(&provider), "s_publiacqua");
        assert_eq!(view("river-levels"), "river_levels");
        assert_eq!(sensors_view("river-levels"), "river_levels__sensors");
        assert_eq!(
            read_as(&provider, &view("river-levels")),
            "s_publiacqua.river_levels"
        );
        assert_eq!(
            schema(&TenantDb::test("unione-mugello")),
            "s_unione_mugello"
        );
    }

    #[test]
    fn the_filter_is_the_declaration_with_every_value_escaped() {
        let text = view_statements(&TenantDb::test("publiacqua"), &share()).join("\n");
        assert!(
            text.contains("m.metric = ANY (ARRAY['river_level', 'o''brien']::text[])"),
            "{text}"
        );
        assert!(text.contains("starts_with(m.sensor, 'arno-')"), "{text}");
        assert!(
            text.contains("m.time >= '2026-01-01T00:00:00Z'::timestamptz"),
            "{text}"
        );
        assert!(text.contains("WITH (security_barrier)"), "{text}");
        assert!(text.contains("REVOKE ALL ON"), "{text}");
        let everything = Share {
            metrics: Vec::new(),
            sensor_prefixes: Vec::new(),
            since: None,
            ..share()
        };
        let text = view_statements(&TenantDb::test("publiacqua"), &everything).join("\n");
        assert!(text.contains("WHERE TRUE AND TRUE"), "{text}");
    }

    fn made(share: &Share, grantees: Vec<(String, bool)>) -> Vec<FoundView> {
        let provider = TenantDb::test("publiacqua");
        let digest = digest(&provider, share);
        [view(&share.name), sensors_view(&share.name)]
            .into_iter()
            .map(|name| FoundView {
                name,
                comment: Some(comment(&digest, "abc")),
                definition: "abc".into(),
                grantees: grantees.clone(),
            })
            .collect()
    }

    #[test]
    fn a_share_as_made_and_granted_needs_nothing() {
        let provider = TenantDb::test("publiacqua");
        let readers = vec!["t_firenze_reader".to_string()];
        let found = made(&share(), vec![("t_firenze_reader".into(), true)]);
        assert!(plan(&provider, &[(share(), readers)], &found).is_empty());
    }

    #[test]
    fn a_changed_share_is_made_anew_and_granted_again() {
        let provider = TenantDb::test("publiacqua");
        let readers = vec!["t_firenze_reader".to_string()];
        let found = made(&share(), vec![("t_firenze_reader".into(), true)]);
        let narrower = Share {
            metrics: vec!["river_level".into()],
            ..share()
        };
        let plan = plan(&provider, &[(narrower.clone(), readers)], &found);
        assert_eq!(plan.make, vec![narrower]);
        assert_eq!(plan.grant.len(), 2, "{plan:?}");
        assert!(plan.revoke.is_empty() && plan.drop.is_empty());
    }

    #[test]
    fn a_grant_made_by_hand_or_wider_than_select_is_taken_back() {
        let provider = TenantDb::test("publiacqua");
        let readers = vec!["t_firenze_reader".to_string()];
        let found = made(
            &share(),
            vec![
                ("t_firenze_reader".into(), false),
                ("t_pisa_reader".into(), true),
                ("public".into(), true),
            ],
        );
        let plan = plan(&provider, &[(share(), readers)], &found);
        assert!(plan.make.is_empty());
        for role in ["t_firenze_reader", "t_pisa_reader", "public"] {
            assert!(
                plan.revoke.iter().any(|(_, r)| r == role),
                "{role} loses what it holds: {plan:?}"
            );
        }
        assert_eq!(plan.grant.len(), 2, "firenze gets SELECT only, again");
    }

    #[test]
    fn a_removed_share_loses_its_views() {
        let provider = TenantDb::test("publiacqua");
        let found = made(&share(), Vec::new());
        let plan = plan(&provider, &[], &found);
        assert_eq!(
            plan.drop,
            vec![
                "river_levels".to_string(),
                "river_levels__sensors".to_string()
            ]
        );
    }
}
