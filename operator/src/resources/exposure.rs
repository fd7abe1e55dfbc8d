//! Exposure of the tenant's ingest outside the cluster (pure): an HTTPRoute attached to
//! the platform Gateway, or an Ingress of the platform's class, both at the host
//! `<tenant>.<ingest domain>` and both named `ingest`, like the Service they lead to.
//!
//! Only the ingest API's paths are routed (the formats the tenant accepts), and the read
//! API's ([`READ_PATHS`], to the Service `read`, while a read pod runs), never `/metrics`
//! or the health endpoints. TLS is the platform's: the Gateway's listener
//! terminates it, or, for an Ingress, the Secret [`TLS_SECRET`] that the platform's
//! certificate set-up (cert-manager's ingress-shim, asked for by the configured
//! annotations) issues. The operator never writes that Secret. docs/exposure.md says why.

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
use smartregion_contract::format::IngestFormat;

use super::gateway_api::{
    BackendRef, HTTPRoute, HttpPathMatch, HttpRouteMatch, HttpRouteRule, HttpRouteSpec,
    ParentReference,
};
use super::ingest::{INGEST, SERVICE_PORT};
use super::read::{READ, READ_PORT, read_replicas};
use super::{object_meta, with_desired_digest};
use crate::config::{Config, Exposure, ExposureVia, GatewayRef};
use crate::tenant::Validated;

/// Name of the HTTPRoute or Ingress (the Service's name).
pub const NAME: &str = INGEST;
/// The Secret in the tenant namespace that holds the Ingress's certificate, by
/// convention: cert-manager's ingress-shim creates a Certificate of this name for each
/// Ingress that carries its issuer annotation, and the Certificate fills the Secret.
pub const TLS_SECRET: &str = "ingest-tls";
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// The object that exposes a tenant's ingest.
#[derive(Clone, Debug, PartialEq)]
pub enum Exposed {
    Route(HTTPRoute),
    Ingress(Ingress),
}

/// The host a tenant is reached at: `<tenant>.<domain>`.
pub fn host(tenant: &Validated, exposure: &Exposure) -> String {
    format!("{}.{}", tenant.name, exposure.domain)
}

/// The URL a tenant's senders use, as status reports it.
pub fn url(tenant: &Validated, exposure: &Exposure) -> String {
    format!("https://{}/", host(tenant, exposure))
}

/// The exposure object of the tenant, if ingest is exposed and the tenant runs ingest.
pub fn exposure(tenant: &Validated, config: &Config) -> Option<Exposed> {
    let exposure = config.exposure.as_ref()?;
    if !tenant.ingest.enabled {
        return None;
    }
    Some(match &exposure.via {
        ExposureVia::Gateway(gateway) => {
            Exposed::Route(with_desired_digest(http_route(tenant, exposure, gateway)))
        }
        ExposureVia::Ingress { class, annotations } => {
            let mut ingress = ingress(tenant, exposure, class);
            if !annotations.is_empty() {
                ingress.metadata.annotations = Some(annotations.clone());
            }
            Exposed::Ingress(with_desired_digest(ingress))
        }
    })
}

/// The endpoints of the formats the tenant accepts (all when it names none).
fn paths(tenant: &Validated) -> Vec<&'static str> {
    let formats: &[IngestFormat] = if tenant.ingest.formats.is_empty() {
        &IngestFormat::ALL
    } else {
        &tenant.ingest.formats
    };
    formats.iter().map(|format| format.endpoint()).collect()
}

/// The read API's paths (docs/read-api.md), routed to the Service `read`.
pub const READ_PATHS: [&str; 5] = [
    "/v2/entities",
    "/v2/attrs",
    "/shared",
    "/open",
    "/openapi.json",
];

/// The read paths with their Service, while the tenant runs a read pod.
fn read_paths(tenant: &Validated) -> Option<(&'static str, u16)> {
    (read_replicas(tenant) > 0).then_some((READ, READ_PORT))
}

/// The Gateway this tenant's route names as its parent.
pub fn parent_ref(gateway: &GatewayRef) -> ParentReference {
    ParentReference {
        group: Some(GATEWAY_GROUP.into()),
        kind: Some("Gateway".into()),
        namespace: Some(gateway.namespace.clone()),
        name: gateway.name.clone(),
        section_name: gateway.section_name.clone(),
    }
}

pub fn http_route(tenant: &Validated, exposure: &Exposure, gateway: &GatewayRef) -> HTTPRoute {
    let rule = |paths: &[&str], service: &str, port: u16| HttpRouteRule {
        matches: paths
            .iter()
            .map(|path| HttpRouteMatch {
                path: Some(HttpPathMatch {
                    type_: Some("PathPrefix".into()),
                    value: Some(path.to_string()),
                }),
            })
            .collect(),
        backend_refs: vec![BackendRef {
            group: Some(String::new()),
            kind: Some("Service".into()),
            name: service.into(),
            port: Some(port.into()),
        }],
    };
    let mut rules = vec![rule(&paths(tenant), INGEST, SERVICE_PORT)];
    if let Some((service, port)) = read_paths(tenant) {
        rules.push(rule(&READ_PATHS, service, port));
    }
    HTTPRoute {
        metadata: object_meta(tenant, NAME, true),
        spec: HttpRouteSpec {
            parent_refs: vec![parent_ref(gateway)],
            hostnames: vec![host(tenant, exposure)],
            rules,
        },
        status: None,
    }
}

fn ingress(tenant: &Validated, exposure: &Exposure, class: &str) -> Ingress {
    let host = host(tenant, exposure);
    let backend = |service: &str, port: u16| IngressBackend {
        service: Some(IngressServiceBackend {
            name: service.into(),
            port: Some(ServiceBackendPort {
                number: Some(port.into()),
                name: None,
            }),
        }),
        resource: None,
    };
    let path = |path: &str, service: &str, port: u16| HTTPIngressPath {
        path: Some(path.into()),
        path_type: "Prefix".into(),
        backend: backend(service, port),
    };
    let mut paths: Vec<HTTPIngressPath> = paths(tenant)
        .into_iter()
        .map(|value| path(value, INGEST, SERVICE_PORT))
        .collect();
    if let Some((service, port)) = read_paths(tenant) {
        paths.extend(READ_PATHS.iter().map(|value| path(value, service, port)));
    }
    Ingress {
        metadata: object_meta(tenant, NAME, true),
        spec: Some(IngressSpec {
            ingress_class_name: Some(class.into()),
            rules: Some(vec![IngressRule {
                host: Some(host.clone()),
                http: Some(HTTPIngressRuleValue { paths }),
            }]),
            tls: Some(vec![IngressTLS {
                hosts: Some(vec![host]),
                secret_name: Some(TLS_SECRET.into()),
            }]),
            default_backend: None,
        }),
        status: None,
    }
}

/// What the route's Gateway said of it (from `status.parents`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteVerdict {
    /// The Gateway's controller accepted the route.
    Accepted,
    /// It refused it, with its reason and message.
    NotAccepted { reason: String, message: String },
    /// No controller has reported on this parent yet (or not on this generation).
    Unknown,
}

/// The verdict of the `Accepted` condition of the parent entry for `gateway`, if it is
/// about the route's current generation.
pub fn route_verdict(route: &HTTPRoute, gateway: &GatewayRef) -> RouteVerdict {
    let wanted = parent_ref(gateway);
    let generation = route.metadata.generation;
    let same_parent = |parent: &ParentReference| {
        parent.name == wanted.name
            && parent.namespace.as_deref().unwrap_or_default() == gateway.namespace
            && parent.section_name == wanted.section_name
            && parent.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP
            && parent.kind.as_deref().unwrap_or("Gateway") == "Gateway"
    };
    let accepted = route
        .status
        .iter()
        .flat_map(|status| &status.parents)
        .filter(|parent| same_parent(&parent.parent_ref))
        .flat_map(|parent| &parent.conditions)
        .find(|condition| {
            condition.type_ == "Accepted"
                && (condition.observed_generation.is_none()
                    || condition.observed_generation == generation)
        });
    match accepted {
        Some(condition) if condition.status == "True" => RouteVerdict::Accepted,
        Some(condition) if condition.status == "False" => RouteVerdict::NotAccepted {
            reason: condition.reason.clone(),
            message: condition.message.clone(),
        },
        _ => RouteVerdict::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ExposureFlags;
    use crate::resources::gateway_api::{HttpRouteStatus, RouteCondition, RouteParentStatus};
    use crate::test_support::{tenant, validate};

    fn config(flags: ExposureFlags) -> Config {
        Config {
            exposure: Exposure::from_flags(&flags).unwrap(),
            ..Config::default()
        }
    }

    fn gateway_config(section: Option<&str>) -> Config {
        config(ExposureFlags {
            gateway: Some("gateway-system/public".into()),
            gateway_section: section.map(str::to_string),
            domain: Some("ingest.smartregion.toscana.it".into()),
            ..ExposureFlags::default()
        })
    }

    fn ingress_config() -> Config {
        config(ExposureFlags {
            ingress_class: Some("nginx".into()),
            ingress_annotations: vec![(
                "cert-manager.io/cluster-issuer".into(),
                "letsencrypt".into(),
            )],
            domain: Some("ingest.smartregion.toscana.it".into()),
            from_namespace: Some("ingress-nginx".into()),
            ..ExposureFlags::default()
        })
    }

    fn prato(config: &Config) -> Validated {
        validate(&tenant("prato").build(), config).unwrap()
    }

    #[test]
    fn off_unless_configured_and_never_for_a_tenant_without_ingest() {
        let off = Config::default();
        assert_eq!(exposure(&prato(&off), &off), None);
        let on = gateway_config(None);
        let disabled = validate(
            &tenant("prato")
                .ingest(|ingest| ingest.enabled = false)
                .build(),
            &on,
        )
        .unwrap();
        assert_eq!(exposure(&disabled, &on), None);
    }

    #[test]
    fn the_route_attaches_to_the_platform_gateway_at_the_tenants_host() {
        let config = gateway_config(Some("https"));
        let tenant = prato(&config);
        let Some(Exposed::Route(route)) = exposure(&tenant, &config) else {
            panic!("no route");
        };
        assert_eq!(route.metadata.name.as_deref(), Some("ingest"));
        assert_eq!(route.metadata.namespace.as_deref(), Some("srt-prato"));
        assert_eq!(
            route.metadata.owner_references.as_ref().unwrap()[0].uid,
            "uid-prato"
        );
        let parent = &route.spec.parent_refs[0];
        assert_eq!(parent.namespace.as_deref(), Some("gateway-system"));
        assert_eq!(parent.name, "public");
        assert_eq!(parent.section_name.as_deref(), Some("https"));
        assert_eq!(
            route.spec.hostnames,
            vec!["prato.ingest.smartregion.toscana.it"]
        );
        let rule = &route.spec.rules[0];
        let backend = &rule.backend_refs[0];
        assert_eq!(
            (backend.name.as_str(), backend.port),
            ("ingest", Some(8080))
        );
        let paths: Vec<_> = rule
            .matches
            .iter()
            .map(|m| m.path.as_ref().unwrap().value.clone().unwrap())
            .collect();
        assert_eq!(paths, ["/v1/measurements", "/v2/notify", "/v1/senml"]);
        // The read API's paths go to the read Service, while a read pod runs.
        let read = &route.spec.rules[1];
        assert_eq!(
            (
                read.backend_refs[0].name.as_str(),
                read.backend_refs[0].port
            ),
            ("read", Some(8081))
        );
        assert_eq!(read.matches.len(), READ_PATHS.len());
        let mut suspended = tenant.clone();
        suspended.suspended = true;
        let Some(Exposed::Route(route)) = exposure(&suspended, &config) else {
            panic!("no route");
        };
        assert_eq!(route.spec.rules.len(), 1, "no read pod, no read route");
        assert_eq!(
            url(&tenant, config.exposure.as_ref().unwrap()),
            "https://prato.ingest.smartregion.toscana.it/"
        );
        // The route is written without a status, and its JSON names the real kind.
        let json = serde_json::to_value(&route).unwrap();
        assert_eq!(json["apiVersion"], "gateway.networking.k8s.io/v1");
        assert_eq!(json["kind"], "HTTPRoute");
        assert!(json.get("status").is_none());
    }

    #[test]
    fn a_changed_configuration_changes_the_digest_so_that_apply_sees_it() {
        let digest = |config: &Config| {
            let tenant = prato(config);
            let meta = match exposure(&tenant, config).unwrap() {
                Exposed::Route(route) => route.metadata,
                Exposed::Ingress(ingress) => ingress.metadata,
            };
            meta.annotations.unwrap()[crate::resources::DESIRED_DIGEST_ANNOTATION].clone()
        };
        // A listener no longer named, an annotation no longer wanted: fields that only
        // disappear.
        assert_ne!(
            digest(&gateway_config(Some("https"))),
            digest(&gateway_config(None))
        );
        let mut fewer = ingress_config();
        if let Some(Exposure {
            via: ExposureVia::Ingress { annotations, .. },
            ..
        }) = &mut fewer.exposure
        {
            annotations.clear();
        }
        assert_ne!(digest(&ingress_config()), digest(&fewer));
        assert_eq!(digest(&ingress_config()), digest(&ingress_config()));
    }

    #[test]
    fn only_the_formats_the_tenant_accepts_are_routed() {
        let config = gateway_config(None);
        let tenant = validate(
            &tenant("prato")
                .ingest(|ingest| ingest.formats = vec![IngestFormat::NgsiV2])
                .build(),
            &config,
        )
        .unwrap();
        let Some(Exposed::Route(route)) = exposure(&tenant, &config) else {
            panic!("no route");
        };
        assert_eq!(route.spec.rules[0].matches.len(), 1);
        assert_eq!(
            route.spec.rules[0].matches[0].path.as_ref().unwrap().value,
            Some("/v2/notify".into())
        );
    }

    #[test]
    fn the_ingress_has_the_class_the_annotations_and_the_conventional_tls_secret() {
        let config = ingress_config();
        let Some(Exposed::Ingress(ingress)) = exposure(&prato(&config), &config) else {
            panic!("no ingress");
        };
        let annotations = ingress.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations["cert-manager.io/cluster-issuer"], "letsencrypt");
        let spec = ingress.spec.unwrap();
        assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
        let tls = &spec.tls.unwrap()[0];
        assert_eq!(tls.secret_name.as_deref(), Some("ingest-tls"));
        assert_eq!(
            tls.hosts.as_deref(),
            Some(&["prato.ingest.smartregion.toscana.it".to_string()][..])
        );
        let rule = &spec.rules.unwrap()[0];
        assert_eq!(
            rule.host.as_deref(),
            Some("prato.ingest.smartregion.toscana.it")
        );
        let paths = &rule.http.as_ref().unwrap().paths;
        assert_eq!(paths.len(), 3 + READ_PATHS.len());
        for path in paths {
            assert_eq!(path.path_type, "Prefix");
            let service = path.backend.service.as_ref().unwrap();
            let value = path.path.as_deref().unwrap();
            let expected = if READ_PATHS.contains(&value) {
                ("read", 8081)
            } else {
                ("ingest", 8080)
            };
            assert_eq!(
                (service.name.as_str(), service.port.as_ref().unwrap().number),
                (expected.0, Some(expected.1)),
                "{value}"
            );
        }
    }

    fn with_parent(section: Option<&str>, status: &str, generation: Option<i64>) -> HTTPRoute {
        let config = gateway_config(None);
        let Some(Exposed::Route(mut route)) = exposure(&prato(&config), &config) else {
            panic!("no route");
        };
        route.metadata.generation = Some(2);
        route.status = Some(HttpRouteStatus {
            parents: vec![RouteParentStatus {
                parent_ref: ParentReference {
                    group: None,
                    kind: None,
                    namespace: Some("gateway-system".into()),
                    name: "public".into(),
                    section_name: section.map(str::to_string),
                },
                controller_name: "example.org/gateway".into(),
                conditions: vec![RouteCondition {
                    type_: "Accepted".into(),
                    status: status.into(),
                    reason: "NotAllowedByListeners".into(),
                    message: "namespace not allowed".into(),
                    observed_generation: generation,
                }],
            }],
        });
        route
    }

    #[test]
    fn the_verdict_is_the_accepted_condition_of_our_gateway_for_this_generation() {
        let gateway = match &gateway_config(None).exposure.unwrap().via {
            ExposureVia::Gateway(gateway) => gateway.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            route_verdict(&with_parent(None, "True", Some(2)), &gateway),
            RouteVerdict::Accepted
        );
        assert_eq!(
            route_verdict(&with_parent(None, "False", Some(2)), &gateway),
            RouteVerdict::NotAccepted {
                reason: "NotAllowedByListeners".into(),
                message: "namespace not allowed".into()
            }
        );
        // An older generation's verdict, another listener's, or none: not known yet.
        for route in [
            with_parent(None, "True", Some(1)),
            with_parent(Some("other"), "True", Some(2)),
        ] {
            assert_eq!(route_verdict(&route, &gateway), RouteVerdict::Unknown);
        }
        let mut bare = with_parent(None, "True", Some(2));
        bare.status = None;
        assert_eq!(route_verdict(&bare, &gateway), RouteVerdict::Unknown);
    }
}
