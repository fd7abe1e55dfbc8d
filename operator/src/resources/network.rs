//! NetworkPolicies: no traffic from other namespaces except to the ingest and read ports; egress
//! only inside the namespace, to DNS, to the shared database, and from the ingest pods to
//! the tenant's MQTT broker when it has one.

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{object_meta, with_desired_digest};
use crate::config::Config;
use crate::tenant::Validated;

pub const DENY_FROM_OTHER_NAMESPACES: &str = "deny-from-other-namespaces";
pub const ALLOW_INGEST: &str = "allow-ingest";
pub const ALLOW_READ: &str = "allow-read";
pub const RESTRICT_EGRESS: &str = "restrict-egress";
pub const ALLOW_MQTT: &str = "allow-mqtt";
/// Label of the ingest pods (set by `ingest::ingest_deployment`), which [`ALLOW_INGEST`]
/// opens to the platform.
pub const INGEST_POD_LABEL: (&str, &str) = ("app.kubernetes.io/name", "ingest");
/// Label of the read pods (set by `read::read_deployment`), which [`ALLOW_READ`] opens.
pub const READ_POD_LABEL: (&str, &str) = ("app.kubernetes.io/name", "read");

pub fn network_policies(tenant: &Validated, config: &Config) -> Vec<NetworkPolicy> {
    let mut policies = vec![
        deny_from_other_namespaces(tenant),
        allow_ingest(tenant, config),
        allow_read(tenant, config),
        restrict_egress(tenant, config),
    ];
    policies.extend(allow_mqtt(tenant));
    policies
}

/// Exactly one address.
fn ip_peer(address: std::net::IpAddr) -> NetworkPolicyPeer {
    let cidr = match address {
        std::net::IpAddr::V4(_) => format!("{address}/32"),
        std::net::IpAddr::V6(_) => format!("{address}/128"),
    };
    NetworkPolicyPeer {
        ip_block: Some(IPBlock { cidr, except: None }),
        ..NetworkPolicyPeer::default()
    }
}

/// The tenant's ingest pods.
fn ingest_pods() -> LabelSelector {
    pods_labelled(INGEST_POD_LABEL)
}

fn pods_labelled((key, value): (&str, &str)) -> LabelSelector {
    LabelSelector {
        match_labels: Some([(key.to_string(), value.to_string())].into()),
        ..LabelSelector::default()
    }
}

/// Egress from the ingest pods to the broker's port. A NetworkPolicy cannot name a host,
/// so a broker given by name is reachable on that port at any address; one given as an
/// IP address only there.
fn allow_mqtt(tenant: &Validated) -> Option<NetworkPolicy> {
    let mqtt = tenant.ingest.mqtt.as_ref()?;
    let to = mqtt
        .host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
        .map(|address| vec![ip_peer(address)]);
    Some(policy(
        tenant,
        ALLOW_MQTT,
        NetworkPolicySpec {
            pod_selector: Some(ingest_pods()),
            policy_types: Some(vec!["Egress".into()]),
            egress: Some(vec![NetworkPolicyEgressRule {
                to,
                ports: Some(vec![port("TCP", mqtt.port)]),
            }]),
            ..NetworkPolicySpec::default()
        },
    ))
}

fn policy(tenant: &Validated, name: &str, spec: NetworkPolicySpec) -> NetworkPolicy {
    NetworkPolicy {
        metadata: object_meta(tenant, name, true),
        spec: Some(spec),
    }
}

fn same_namespace() -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(LabelSelector::default()),
        ..NetworkPolicyPeer::default()
    }
}

fn port(protocol: &str, number: u16) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.into()),
        port: Some(IntOrString::Int(number.into())),
        ..NetworkPolicyPort::default()
    }
}

fn deny_from_other_namespaces(tenant: &Validated) -> NetworkPolicy {
    policy(
        tenant,
        DENY_FROM_OTHER_NAMESPACES,
        NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![same_namespace()]),
                ..NetworkPolicyIngressRule::default()
            }]),
            ..NetworkPolicySpec::default()
        },
    )
}

/// The ingest port, open to the platform; while ingest is exposed (`config.exposure`),
/// open only to the namespace of the gateway or ingress controller that forwards to it.
fn allow_ingest(tenant: &Validated, config: &Config) -> NetworkPolicy {
    open_port(
        tenant,
        config,
        ALLOW_INGEST,
        INGEST_POD_LABEL,
        config.ingest_port,
    )
}

/// The read port, open as the ingest port is.
fn allow_read(tenant: &Validated, config: &Config) -> NetworkPolicy {
    open_port(
        tenant,
        config,
        ALLOW_READ,
        READ_POD_LABEL,
        super::read::READ_PORT,
    )
}

fn open_port(
    tenant: &Validated,
    config: &Config,
    name: &str,
    pods: (&str, &str),
    number: u16,
) -> NetworkPolicy {
    let from = config.exposure.as_ref().map(|exposure| {
        vec![NetworkPolicyPeer {
            namespace_selector: Some(namespace_named(&exposure.from_namespace)),
            ..NetworkPolicyPeer::default()
        }]
    });
    with_desired_digest(policy(
        tenant,
        name,
        NetworkPolicySpec {
            pod_selector: Some(pods_labelled(pods)),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from,
                ports: Some(vec![port("TCP", number)]),
            }]),
            ..NetworkPolicySpec::default()
        },
    ))
}

/// The namespace of this name (by the label the API server sets on every namespace).
fn namespace_named(name: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some([("kubernetes.io/metadata.name".to_string(), name.to_string())].into()),
        ..LabelSelector::default()
    }
}

fn restrict_egress(tenant: &Validated, config: &Config) -> NetworkPolicy {
    let dns = NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(namespace_named("kube-system")),
            ..NetworkPolicyPeer::default()
        }]),
        ports: Some(vec![port("UDP", 53), port("TCP", 53)]),
    };
    let mut egress = vec![
        NetworkPolicyEgressRule {
            to: Some(vec![same_namespace()]),
            ..NetworkPolicyEgressRule::default()
        },
        dns,
    ];
    if let Some(address) = config.database_address {
        egress.push(NetworkPolicyEgressRule {
            to: Some(vec![ip_peer(address)]),
            ports: Some(vec![port("TCP", config.database_port)]),
        });
    }
    policy(
        tenant,
        RESTRICT_EGRESS,
        NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Egress".into()]),
            egress: Some(egress),
            ..NetworkPolicySpec::default()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::MqttSource;
    use crate::test_support::tenant;
    use crate::test_support::validate;

    fn with_broker(url: &str) -> Validated {
        let tenant = tenant("prato").ingest(|ingest| {
            ingest.mqtt = Some(MqttSource {
                url: url.into(),
                topics: vec!["prato/#".into()],
                credentials_secret: None,
            });
        });
        validate(&tenant.build(), &Config::default()).expect("valid tenant")
    }

    fn mqtt_policy(tenant: &Validated) -> Option<NetworkPolicySpec> {
        network_policies(tenant, &Config::default())
            .into_iter()
            .find(|policy| policy.metadata.name.as_deref() == Some(ALLOW_MQTT))
            .and_then(|policy| policy.spec)
    }

    fn ingest_rule(config: &Config) -> NetworkPolicyIngressRule {
        let tenant = validate(&tenant("prato").build(), config).unwrap();
        network_policies(&tenant, config)
            .into_iter()
            .find(|policy| policy.metadata.name.as_deref() == Some(ALLOW_INGEST))
            .and_then(|policy| policy.spec?.ingress)
            .unwrap()
            .remove(0)
    }

    #[test]
    fn exposed_ingest_admits_the_controllers_namespace_and_nothing_more() {
        let open = ingest_rule(&Config::default());
        assert_eq!(open.from, None, "unexposed: open to the platform");
        let config = Config {
            exposure: crate::config::Exposure::from_flags(&crate::config::ExposureFlags {
                gateway: Some("gateway-system/public".into()),
                domain: Some("ingest.example.it".into()),
                ..Default::default()
            })
            .unwrap(),
            ..Config::default()
        };
        let digest = |config: &Config| {
            let tenant = validate(&tenant("prato").build(), config).unwrap();
            network_policies(&tenant, config)[1]
                .metadata
                .annotations
                .clone()
                .unwrap()[crate::resources::DESIRED_DIGEST_ANNOTATION]
                .clone()
        };
        // Turning exposure off removes `from`, which apply sees by the digest only.
        assert_ne!(digest(&config), digest(&Config::default()));
        assert_eq!(digest(&config), digest(&config.clone()));
        let exposed = ingest_rule(&config);
        let from = exposed.from.unwrap();
        assert_eq!(from.len(), 1);
        assert_eq!(from[0].pod_selector, None);
        assert_eq!(from[0].ip_block, None);
        let labels = from[0]
            .namespace_selector
            .as_ref()
            .unwrap()
            .match_labels
            .clone()
            .unwrap();
        assert_eq!(
            labels,
            [(
                "kubernetes.io/metadata.name".to_string(),
                "gateway-system".to_string()
            )]
            .into()
        );
        assert_eq!(
            exposed.ports.unwrap()[0].port,
            Some(IntOrString::Int(config.ingest_port.into()))
        );
    }

    #[test]
    fn no_broker_no_mqtt_egress() {
        let tenant = validate(&tenant("prato").build(), &Config::default()).unwrap();
        assert!(mqtt_policy(&tenant).is_none());
    }

    #[test]
    fn the_ingest_pods_reach_the_brokers_port_and_nothing_else() {
        let spec = mqtt_policy(&with_broker("mqtts://broker.example.it")).unwrap();
        let (key, value) = INGEST_POD_LABEL;
        let selected = spec.pod_selector.unwrap().match_labels.unwrap();
        assert_eq!(selected.get(key).map(String::as_str), Some(value));
        let rule = &spec.egress.unwrap()[0];
        assert_eq!(
            rule.ports.as_ref().unwrap()[0].port,
            Some(IntOrString::Int(8883))
        );
        assert!(
            rule.to.is_none(),
            "a host name cannot be pinned to an address"
        );

        let spec = mqtt_policy(&with_broker("mqtt://10.1.2.3:1884")).unwrap();
        let rule = &spec.egress.unwrap()[0];
        assert_eq!(
            rule.ports.as_ref().unwrap()[0].port,
            Some(IntOrString::Int(1884))
        );
        let peer = &rule.to.as_ref().unwrap()[0];
        assert_eq!(peer.ip_block.as_ref().unwrap().cidr, "10.1.2.3/32");
    }

    #[test]
    fn a_broker_address_that_does_not_parse_is_refused() {
        let tenant = tenant("prato").ingest(|ingest| {
            ingest.mqtt = Some(MqttSource {
                url: "mqtt://broker:99999".into(),
                topics: vec!["prato/#".into()],
                credentials_secret: None,
            });
        });
        let error = validate(&tenant.build(), &Config::default()).unwrap_err();
        assert!(error.to_string().contains("mqtt://host[:port]"), "{error}");
    }
}
