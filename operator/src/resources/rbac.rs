//! The tenant-admin Role and one RoleBinding per admin group or user, so removing an
//! admin removes exactly its binding.
//!
//! Admins run workloads and read everything in their namespace, but cannot change the
//! quota, the limits, the network isolation or the RBAC that the operator manages.

use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use sha2::{Digest, Sha256};

use super::exposure::GATEWAY_GROUP;
use super::object_meta;
use crate::config::{Config, ExposureVia};
use crate::tenant::Validated;

pub const ADMIN_ROLE: &str = "tenant-admin";
/// Annotation on a binding with the group or user it binds, as written in the spec
/// (binding names are derived and may be shortened).
pub const SUBJECT_ANNOTATION: &str = "smartregion.toscana.it/subject";

const ALL: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];
const READ: &[&str] = &["get", "list", "watch"];

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let strings = |items: &[&str]| items.iter().map(|item| item.to_string()).collect();
    PolicyRule {
        api_groups: Some(strings(groups)),
        resources: Some(strings(resources)),
        verbs: strings(verbs),
        ..PolicyRule::default()
    }
}

/// The tenant admins' Role: the ente's own workloads and its shares. Ingresses are the platform's: admins may read them, never
/// write them (an Ingress of theirs could claim another tenant's host on a shared
/// controller); the chart's admission policy refuses them too, with `externalIPs` and
/// `ExternalName` Services and budgets that forbid every disruption.
pub fn admin_role(tenant: &Validated, config: &Config) -> Role {
    let ingresses = READ;
    let mut rules = vec![
        rule(
            &[""],
            &[
                "pods",
                "services",
                "configmaps",
                "secrets",
                "persistentvolumeclaims",
            ],
            ALL,
        ),
        rule(
            &[""],
            &["pods/log", "events", "endpoints", "serviceaccounts"],
            READ,
        ),
        rule(&["", "events.k8s.io"], &["events"], READ),
        rule(
            &["apps"],
            &["deployments", "statefulsets", "replicasets", "daemonsets"],
            ALL,
        ),
        rule(&["batch"], &["jobs", "cronjobs"], ALL),
        rule(&["autoscaling"], &["horizontalpodautoscalers"], ALL),
        rule(&["policy"], &["poddisruptionbudgets"], ALL),
        // The ente decides what of its data others read (docs/sharing.md); the shares'
        // status is the operator's.
        rule(&["smartregion.toscana.it"], &["smartregionshares"], ALL),
        // And what it publishes as open data (docs/open-data.md).
        rule(&["smartregion.toscana.it"], &["smartregiondatasets"], ALL),
        rule(&["networking.k8s.io"], &["ingresses"], ingresses),
        // What the operator manages is visible but not editable.
        rule(&[""], &["resourcequotas", "limitranges"], READ),
        rule(&["networking.k8s.io"], &["networkpolicies"], READ),
        rule(
            &["rbac.authorization.k8s.io"],
            &["roles", "rolebindings"],
            READ,
        ),
    ];
    if let Some(ExposureVia::Gateway(_)) = config.exposure.as_ref().map(|exposure| &exposure.via) {
        rules.push(rule(&[GATEWAY_GROUP], &["httproutes"], READ));
    }
    Role {
        metadata: object_meta(tenant, ADMIN_ROLE, true),
        rules: Some(rules),
    }
}

/// Kind of an admin subject, as in RBAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubjectKind {
    Group,
    User,
}

pub fn admin_bindings(tenant: &Validated) -> Vec<RoleBinding> {
    let groups = tenant.admins.groups.iter().map(|g| (SubjectKind::Group, g));
    let users = tenant.admins.users.iter().map(|u| (SubjectKind::User, u));
    groups
        .chain(users)
        .map(|(kind, subject)| admin_binding(tenant, kind, subject))
        .collect()
}

fn admin_binding(tenant: &Validated, kind: SubjectKind, subject: &str) -> RoleBinding {
    let kind_name = match kind {
        SubjectKind::Group => "Group",
        SubjectKind::User => "User",
    };
    let mut metadata = object_meta(tenant, &binding_name(kind, subject), true);
    metadata.annotations = Some([(SUBJECT_ANNOTATION.to_string(), subject.to_string())].into());
    RoleBinding {
        metadata,
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: ADMIN_ROLE.into(),
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: kind_name.into(),
            name: subject.to_string(),
            namespace: None,
        }]),
    }
}

/// `admin-group-<readable part>-<hash>`: readable for people, unique for any subject
/// (group and user names may hold characters that object names cannot).
pub fn binding_name(kind: SubjectKind, subject: &str) -> String {
    let prefix = match kind {
        SubjectKind::Group => "admin-group",
        SubjectKind::User => "admin-user",
    };
    let readable: String = subject
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    let readable = readable.trim_matches('-');
    let hash = Sha256::digest(subject.as_bytes());
    let hash: String = hash[..4].iter().map(|byte| format!("{byte:02x}")).collect();
    if readable.is_empty() {
        format!("{prefix}-{hash}")
    } else {
        format!("{prefix}-{readable}-{hash}")
    }
}
