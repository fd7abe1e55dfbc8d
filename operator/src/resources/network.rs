//! NetworkPolicies: no traffic from other namespaces except to the ingest port; egress
//! only inside the namespace, to DNS, and to the shared database.

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::object_meta;
use crate::config::Config;
use crate::reconcile::validate::Validated;

pub const DENY_FROM_OTHER_NAMESPACES: &str = "deny-from-other-namespaces";
pub const ALLOW_INGEST: &str = "allow-ingest";
pub const RESTRICT_EGRESS: &str = "restrict-egress";
/// Label of the ingest pods (set by `ingest::ingest_deployment`), which [`ALLOW_INGEST`]
/// opens to the platform.
pub const INGEST_POD_LABEL: (&str, &str) = ("app.kubernetes.io/name", "ingest");

pub fn network_policies(tenant: &Validated, config: &Config) -> Vec<NetworkPolicy> {
    vec![
        deny_from_other_namespaces(tenant),
        allow_ingest(tenant, config),
        restrict_egress(tenant, config),
    ]
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

fn allow_ingest(tenant: &Validated, config: &Config) -> NetworkPolicy {
    let (key, value) = INGEST_POD_LABEL;
    policy(
        tenant,
        ALLOW_INGEST,
        NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some([(key.to_string(), value.to_string())].into()),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                ports: Some(vec![port("TCP", config.ingest_port)]),
                ..NetworkPolicyIngressRule::default()
            }]),
            ..NetworkPolicySpec::default()
        },
    )
}

fn restrict_egress(tenant: &Validated, config: &Config) -> NetworkPolicy {
    let dns = NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(
                    [(
                        "kubernetes.io/metadata.name".to_string(),
                        "kube-system".to_string(),
                    )]
                    .into(),
                ),
                ..LabelSelector::default()
            }),
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
        let cidr = match address {
            std::net::IpAddr::V4(_) => format!("{address}/32"),
            std::net::IpAddr::V6(_) => format!("{address}/128"),
        };
        egress.push(NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                ip_block: Some(IPBlock { cidr, except: None }),
                ..NetworkPolicyPeer::default()
            }]),
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
