//! Build (pure): every desired child of a validated tenant, in the order `apply` writes
//! them (the namespace first, the Secrets before the Deployment that reads them).
//!
//! No client, no clock, no randomness: the same tenant, configuration and facts (what
//! the inputs read and the database step decided) always give the same objects, which is
//! what makes drift visible and unit tests exhaustive.

use super::database::SecretValues;
use super::inputs::{Inputs, MqttCredentials};
use super::kinds::{Desired, Write};
use super::validate::Validated;
use crate::config::{Config, DatabaseEndpoint};
use crate::resources::exposure::{self, Exposed};
use crate::resources::secrets::{READER_SECRET, WRITER_SECRET, database_secret};
use crate::resources::{ingest, namespace, network, quota, rbac, read, service_account};

/// The children to write, in order, and those to keep as they are (not written, not
/// pruned) because what they would hold is not known in this reconcile.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Children {
    pub desired: Vec<Desired>,
    pub unchanged: Vec<(&'static str, String)>,
}

/// What the steps before `build` found: the Secrets as read, and the credentials the
/// database now agrees with (when the database step got that far).
pub struct Facts<'a> {
    pub inputs: Option<&'a Inputs>,
    pub credentials: Option<(&'a SecretValues, &'a DatabaseEndpoint)>,
}

pub fn children(tenant: &Validated, config: &Config, facts: &Facts<'_>) -> Children {
    let mut children = Children::default();
    let mut apply = |child: Desired| children.desired.push(child);
    apply(Desired::apply(namespace::namespace(tenant)));
    apply(Desired::apply(service_account::ingest_service_account(
        tenant,
    )));
    apply(Desired::apply(ingest::ingest_service(tenant)));
    apply(Desired::apply(read::read_service(tenant)));
    // A budget exists only while several ingest pods run; otherwise the prune removes it.
    if let Some(budget) = ingest::ingest_pdb(tenant) {
        apply(Desired::apply(budget));
    }
    apply(Desired::apply(quota::resource_quota(tenant)));
    apply(Desired::apply(quota::limit_range(tenant)));
    for policy in network::network_policies(tenant, config) {
        apply(Desired::apply(policy));
    }
    apply(Desired::apply(rbac::admin_role(tenant, config)));
    for binding in rbac::admin_bindings(tenant) {
        apply(Desired::apply(binding));
    }
    // Turned off, or switched to the other mode: the prune removes the object no longer
    // desired.
    match exposure::exposure(tenant, config) {
        Some(Exposed::Route(route)) => apply(Desired::apply(route)),
        Some(Exposed::Ingress(ingress)) => apply(Desired::apply(ingress)),
        None => {}
    }
    credentials_and_ingest(tenant, config, facts, &mut children);
    children
}

/// The Secrets the pods read and the Deployment that reads them: written when their
/// values are known, kept as they are otherwise (a database outage neither deletes nor
/// rolls anything).
fn credentials_and_ingest(
    tenant: &Validated,
    config: &Config,
    facts: &Facts<'_>,
    children: &mut Children,
) {
    let Some(inputs) = facts.inputs else {
        for (kind, name) in [
            ("Secret", WRITER_SECRET),
            ("Secret", READER_SECRET),
            ("Secret", ingest::KEYS_SECRET),
            ("Secret", read::READ_KEYS_SECRET),
            ("Deployment", ingest::INGEST),
            ("Deployment", read::READ),
        ] {
            children.unchanged.push((kind, name.to_string()));
        }
        return;
    };
    let (writer, reader) = match facts.credentials {
        Some((values, endpoint)) => {
            let [writer, reader] = database_secrets(tenant, values, endpoint);
            children.desired.push(Desired {
                child: writer.clone().into(),
                write: Write::Over(values.writer_version.clone()),
            });
            children.desired.push(Desired {
                child: reader.clone().into(),
                write: Write::Over(values.reader_version.clone()),
            });
            (Some(writer), Some(reader))
        }
        None => {
            children.unchanged.push(("Secret", WRITER_SECRET.into()));
            children.unchanged.push(("Secret", READER_SECRET.into()));
            (inputs.writer.clone(), inputs.reader.clone())
        }
    };
    children.desired.push(Desired {
        child: inputs.keys.clone().into(),
        write: Write::CreateOnce,
    });
    children.desired.push(Desired {
        child: inputs.read_keys.clone().into(),
        write: Write::CreateOnce,
    });
    match reader {
        Some(reader) => children.desired.push(Desired::apply(read::read_deployment(
            tenant,
            config,
            &inputs.read_checksum_with(&reader),
        ))),
        None => children
            .unchanged
            .push(("Deployment", read::READ.to_string())),
    }
    let ready = writer
        .as_ref()
        .filter(|_| !matches!(inputs.mqtt, MqttCredentials::Missing(_)));
    match ready {
        Some(writer) => {
            let checksum = inputs.checksum_with(writer);
            children
                .desired
                .push(Desired::apply(ingest::ingest_deployment(
                    tenant, config, &checksum,
                )));
        }
        None => children
            .unchanged
            .push(("Deployment", ingest::INGEST.to_string())),
    }
}

/// `db-writer` and `db-reader` with the values the database agrees with.
pub fn database_secrets(
    tenant: &Validated,
    values: &SecretValues,
    endpoint: &DatabaseEndpoint,
) -> [k8s_openapi::api::core::v1::Secret; 2] {
    [
        database_secret(
            tenant,
            WRITER_SECRET,
            endpoint,
            &values.writer_user,
            &values.writer_password,
            &values.issued_for,
            Some(&values.retiring),
        ),
        database_secret(
            tenant,
            READER_SECRET,
            endpoint,
            &values.reader_user,
            &values.reader_password,
            &values.issued_for,
            None,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{MAX_NAME_LEN, Tier};
    use crate::reconcile::validate::{self, validate};
    use crate::resources::rbac::{SubjectKind, binding_name};
    use crate::test_support::{quantity, tenant};

    use super::super::kinds::Child;
    use k8s_openapi::api::core::v1::{
        LimitRange, Namespace, ResourceQuota, Service, ServiceAccount,
    };
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};

    /// The children by kind, as the tests read them.
    #[derive(Default)]
    struct View {
        namespace: Namespace,
        service_account: ServiceAccount,
        resource_quota: ResourceQuota,
        limit_range: LimitRange,
        network_policies: Vec<NetworkPolicy>,
        admin_role: Role,
        admin_bindings: Vec<RoleBinding>,
        ingest_service: Service,
    }

    fn view(children: &Children) -> View {
        let mut view = View::default();
        for desired in &children.desired {
            match desired.child.clone() {
                Child::Namespace(object) => view.namespace = object,
                Child::ServiceAccount(object) => view.service_account = object,
                Child::ResourceQuota(object) => view.resource_quota = object,
                Child::LimitRange(object) => view.limit_range = object,
                Child::NetworkPolicy(object) => view.network_policies.push(object),
                Child::Role(object) => view.admin_role = object,
                Child::RoleBinding(object) => view.admin_bindings.push(object),
                Child::Service(object) => view.ingest_service = object,
                _ => {}
            }
        }
        view
    }

    fn build(tenant: &crate::crd::SmartRegionTenant, config: &Config) -> (Validated, View) {
        let validated = validate(tenant, config).expect("valid tenant");
        let facts = Facts {
            inputs: None,
            credentials: None,
        };
        let children = children(&validated, config, &facts);
        (validated, view(&children))
    }

    #[test]
    fn without_inputs_the_credentials_and_ingest_are_kept_as_they_are() {
        let validated = validate(&tenant("prato").build(), &Config::default()).unwrap();
        let facts = Facts {
            inputs: None,
            credentials: None,
        };
        let children = children(&validated, &Config::default(), &facts);
        assert!(
            children
                .desired
                .iter()
                .all(|d| !matches!(d.child, Child::Secret(_) | Child::Deployment(_)))
        );
        assert_eq!(children.unchanged.len(), 6, "{:?}", children.unchanged);
        assert!(
            matches!(children.desired[0].child, Child::Namespace(_)),
            "namespace first"
        );
    }

    fn hard(children: &View, key: &str) -> String {
        children
            .resource_quota
            .spec
            .as_ref()
            .unwrap()
            .hard
            .as_ref()
            .unwrap()[key]
            .0
            .clone()
    }

    #[test]
    fn every_tier_gets_its_preset_quota() {
        let config = Config::default();
        for tier in [Tier::Small, Tier::Medium, Tier::Large] {
            let (_, children) = build(&tenant("prato").tier(tier).build(), &config);
            let preset = config.tiers.preset(tier);
            assert_eq!(
                hard(&children, "requests.cpu"),
                preset.cpu.as_str(),
                "{tier:?}"
            );
            assert_eq!(
                hard(&children, "limits.memory"),
                preset.memory.as_str(),
                "{tier:?}"
            );
            assert_eq!(hard(&children, "pods"), preset.pods.to_string(), "{tier:?}");
            assert_eq!(
                hard(&children, "requests.storage"),
                preset.storage.as_str(),
                "{tier:?}"
            );
            assert_eq!(hard(&children, "services.loadbalancers"), "0");
            let defaults = children.limit_range.spec.as_ref().unwrap().limits[0]
                .default
                .clone()
                .unwrap();
            assert_eq!(defaults["cpu"].0, preset.container_cpu.as_str());
        }
    }

    #[test]
    fn overrides_replace_only_the_values_they_set() {
        let config = Config::default();
        let tenant = tenant("prato")
            .tier(Tier::Medium)
            .quotas(|q| {
                q.cpu = quantity("3");
                q.pods = Some(7);
            })
            .build();
        let (validated, children) = build(&tenant, &config);
        assert_eq!(hard(&children, "requests.cpu"), "3");
        assert_eq!(hard(&children, "pods"), "7");
        assert_eq!(
            hard(&children, "requests.memory"),
            config.tiers.medium.memory.as_str()
        );
        assert_eq!(
            validated.limits.database_storage,
            config.tiers.medium.database_storage
        );
    }

    #[test]
    fn children_are_named_labelled_and_owned_by_convention() {
        let config = Config::default();
        let (_, children) = build(
            &tenant("prato").admin_groups(&["prato-admins"]).build(),
            &config,
        );
        let namespace = children.namespace.metadata.name.as_deref().unwrap();
        assert_eq!(namespace, "srt-prato");
        let labels = children.namespace.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
        assert_eq!(labels["smartregion.toscana.it/tenant"], "prato");
        let metas = [
            &children.service_account.metadata,
            &children.resource_quota.metadata,
            &children.limit_range.metadata,
            &children.admin_role.metadata,
            &children.admin_bindings[0].metadata,
            &children.network_policies[0].metadata,
            &children.ingest_service.metadata,
        ];
        for meta in metas {
            assert_eq!(meta.namespace.as_deref(), Some("srt-prato"));
            let owner = &meta.owner_references.as_ref().unwrap()[0];
            assert_eq!(owner.uid, "uid-prato");
            assert_eq!(owner.kind, "SmartRegionTenant");
            assert_eq!(owner.controller, Some(true));
        }
        assert_eq!(
            children.service_account.automount_service_account_token,
            Some(false)
        );
    }

    #[test]
    fn the_longest_name_fits_every_kubernetes_limit() {
        let config = Config {
            namespace_prefix: "a".repeat(crate::config::MAX_NAMESPACE_PREFIX_LEN),
            ..Config::default()
        };
        let name = format!("a{}", "b-9".repeat(13)); // 40 characters
        assert_eq!(name.len(), MAX_NAME_LEN);
        let (validated, children) = build(&tenant(&name).admin_groups(&["g"]).build(), &config);
        assert_eq!(validated.namespace.len(), 63);
        assert_eq!(
            children.namespace.metadata.name.as_deref().unwrap().len(),
            63
        );
        for binding in &children.admin_bindings {
            assert!(binding.metadata.name.as_ref().unwrap().len() <= 253);
        }
    }

    #[test]
    fn names_the_crd_refuses_are_refused_here_too() {
        let config = Config::default();
        for name in ["Prato", "1prato", "prato_1", "prato-", &"a".repeat(41)] {
            let error = validate(&tenant(name).build(), &config).unwrap_err();
            assert!(matches!(error, validate::Error::Name(_)), "{name}: {error}");
        }
        let error = validate(&tenant("prato").not_persisted().build(), &config).unwrap_err();
        assert!(matches!(error, validate::Error::NotPersisted));
    }

    #[test]
    fn a_bad_override_is_refused_with_the_field_named() {
        let tenant = tenant("prato").quotas(|q| q.memory = quantity("0")).build();
        let error = validate(&tenant, &Config::default()).unwrap_err();
        assert!(error.to_string().contains("quotas.memory"), "{error}");
    }

    #[test]
    fn no_admins_means_a_role_and_no_bindings() {
        let (_, children) = build(&tenant("prato").build(), &Config::default());
        assert!(children.admin_bindings.is_empty());
        assert!(
            children
                .admin_role
                .rules
                .as_ref()
                .is_some_and(|r| !r.is_empty())
        );
    }

    #[test]
    fn one_binding_per_admin_with_stable_distinct_names() {
        let tenant = tenant("prato")
            .admin_groups(&["prato-admins", "oidc:Prato Admins", "prato-admins"])
            .admin_users(&["mario.rossi@comune.prato.it"])
            .build();
        let (_, children) = build(&tenant, &Config::default());
        let names: Vec<&str> = children
            .admin_bindings
            .iter()
            .map(|b| b.metadata.name.as_deref().unwrap())
            .collect();
        assert_eq!(names.len(), 3, "duplicates collapse: {names:?}");
        assert!(names.iter().all(|n| {
            n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        }));
        assert_eq!(
            binding_name(SubjectKind::Group, "prato-admins"),
            binding_name(SubjectKind::Group, "prato-admins")
        );
        assert_ne!(
            binding_name(SubjectKind::Group, "a.b"),
            binding_name(SubjectKind::Group, "a-b"),
            "different subjects never share a binding"
        );
        assert_ne!(
            binding_name(SubjectKind::Group, "x"),
            binding_name(SubjectKind::User, "x")
        );
    }

    #[test]
    fn the_admin_role_cannot_touch_what_the_operator_manages() {
        let (_, children) = build(&tenant("prato").build(), &Config::default());
        for rule in children.admin_role.rules.as_ref().unwrap() {
            let resources = rule.resources.clone().unwrap_or_default();
            let writes = rule
                .verbs
                .iter()
                .any(|v| v != "get" && v != "list" && v != "watch");
            for managed in [
                "resourcequotas",
                "limitranges",
                "networkpolicies",
                "roles",
                "rolebindings",
            ] {
                assert!(
                    !(writes && resources.iter().any(|r| r == managed)),
                    "{managed} writable"
                );
            }
            assert!(!rule.verbs.iter().any(|v| v == "*"), "no wildcard verbs");
            assert!(!resources.iter().any(|r| r == "*"), "no wildcard resources");
        }
    }

    #[test]
    fn the_exposure_kind_is_the_operators_and_only_readable_by_admins() {
        let writable = |config: &Config, resource: &str| {
            let (_, children) = build(&tenant("prato").build(), config);
            let rules = children.admin_role.rules.unwrap();
            let rules: Vec<_> = rules
                .iter()
                .filter(|rule| rule.resources.iter().flatten().any(|r| r == resource))
                .collect();
            (
                !rules.is_empty(),
                rules
                    .iter()
                    .any(|rule| rule.verbs.iter().any(|v| v == "patch")),
            )
        };
        let with = |flags: crate::config::ExposureFlags| Config {
            exposure: crate::config::Exposure::from_flags(&flags).unwrap(),
            ..Config::default()
        };
        let ingress = with(crate::config::ExposureFlags {
            ingress_class: Some("nginx".into()),
            domain: Some("ingest.example.it".into()),
            from_namespace: Some("ingress-nginx".into()),
            ..Default::default()
        });
        let gateway = with(crate::config::ExposureFlags {
            gateway: Some("gw/public".into()),
            domain: Some("ingest.example.it".into()),
            ..Default::default()
        });
        // Ingresses are the platform's whether or not ingest is exposed (a tenant's could
        // claim another's host on a shared controller).
        assert_eq!(writable(&Config::default(), "ingresses"), (true, false));
        assert_eq!(writable(&Config::default(), "httproutes"), (false, false));
        assert_eq!(writable(&ingress, "ingresses"), (true, false));
        assert_eq!(writable(&gateway, "httproutes"), (true, false));
        assert_eq!(writable(&gateway, "ingresses"), (true, false));
    }

    #[test]
    fn database_egress_is_opened_only_when_configured() {
        let restrict = |config: &Config| {
            let (_, children) = build(&tenant("prato").build(), config);
            children
                .network_policies
                .iter()
                .find(|policy| policy.metadata.name.as_deref() == Some(network::RESTRICT_EGRESS))
                .unwrap()
                .spec
                .clone()
                .unwrap()
                .egress
                .unwrap()
                .len()
        };
        assert_eq!(restrict(&Config::default()), 2);
        let config = Config {
            database_address: Some("10.1.2.3".parse().unwrap()),
            ..Config::default()
        };
        assert_eq!(restrict(&config), 3);
    }
}
