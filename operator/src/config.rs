//! Operator configuration: naming conventions, tier presets and network settings.
//!
//! Pure data, loaded once at start-up from flags, env and the tiers file. Nothing here
//! talks to a cluster. Tier presets are what regional IT tunes (a ConfigMap mounted as
//! the tiers file), so conventions change without a release.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use k8s_openapi::api::core::v1::Toleration;
use serde::{Deserialize, Serialize};

use crate::crd::Tier;
use crate::quantity::Amount;
use smartregion_contract::tenant::MAX_NAME_LEN;

/// Tenant `n` gets the namespace `srt-n` unless configured otherwise.
pub const DEFAULT_NAMESPACE_PREFIX: &str = "srt-";

/// Longest namespace prefix: a prefix plus the longest tenant name must stay a
/// 63-character DNS label.
pub const MAX_NAMESPACE_PREFIX_LEN: usize = 63 - MAX_NAME_LEN;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read the tiers file {path}")]
    ReadTiers {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the tiers file {path} is not valid at {field}")]
    ParseTiers {
        path: String,
        field: String,
        #[source]
        source: serde_yaml::Error,
    },
    #[error(
        "namespace prefix {0:?} must be at most {MAX_NAMESPACE_PREFIX_LEN} characters of \
         lower-case letters, digits and '-', starting with a letter"
    )]
    NamespacePrefix(String),
    #[error("ingest image {0:?} is not an image reference such as registry.example/ingest:1.0")]
    IngestImage(String),
    #[error("tier {tier}: {problem}")]
    Tier { tier: &'static str, problem: String },
    #[error("ingest exposure: {0}")]
    Exposure(String),
}

/// Limits and settings one tier gives a tenant (a preset of the tiers file), and the
/// limits in force for a tenant: its tier's preset with `spec.quotas` on top.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    /// ResourceQuota `requests.cpu` and `limits.cpu` of the namespace.
    pub cpu: Amount,
    /// ResourceQuota `requests.memory` and `limits.memory` of the namespace.
    pub memory: Amount,
    /// Most pods in the namespace.
    pub pods: i32,
    /// Total persistent volume storage requested in the namespace.
    pub storage: Amount,
    /// Largest size of the tenant's database schema.
    pub database_storage: Amount,
    /// Rows per second the tenant's ingest accepts.
    pub ingest_rate: i32,
    /// Ingest pods.
    pub ingest_replicas: i32,
    /// Days measurements are kept.
    pub retention_days: i32,
    /// Days after which measurements are compressed (TimescaleDB only).
    pub compress_after_days: i32,
    /// Width of one time partition in hours.
    pub chunk_interval_hours: i32,
    /// Default CPU request and limit of a container without its own (LimitRange).
    pub container_cpu: Amount,
    /// Default memory request and limit of a container without its own (LimitRange).
    pub container_memory: Amount,
    /// Most Secrets, ConfigMaps, Services and PersistentVolumeClaims in the namespace
    /// (each): objects are stored in the cluster's etcd, which no other quota counts.
    #[serde(default = "default_object_count")]
    pub object_count: i32,
    /// ResourceQuota `requests.ephemeral-storage` and `limits.ephemeral-storage`: the
    /// nodes' disk the namespace's containers may fill (logs, writable layers, emptyDirs).
    #[serde(default = "default_ephemeral_storage")]
    pub ephemeral_storage: Amount,
    /// Default ephemeral-storage request and limit of a container without its own.
    #[serde(default = "default_container_ephemeral_storage")]
    pub container_ephemeral_storage: Amount,
    /// Tenants of this tier may share their data with others (`SmartRegionShare`).
    #[serde(default = "default_sharing")]
    pub sharing: bool,
}

fn default_sharing() -> bool {
    true
}

/// Tiers files written before these settings existed keep working: the small tier's
/// values.
fn default_object_count() -> i32 {
    50
}

fn default_ephemeral_storage() -> Amount {
    amount("10Gi")
}

fn default_container_ephemeral_storage() -> Amount {
    amount("1Gi")
}

/// A preset written in this file; valid by construction (the presets' test).
fn amount(text: &str) -> Amount {
    Amount::parse(text).expect("the built-in presets are positive quantities")
}

/// Where tenants' clients connect to the shared database (from `--database-url` and
/// `--database-public-host`), as their Secrets say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseEndpoint {
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub sslmode: String,
    /// PEM bundle of the CAs that sign the server's certificate (from
    /// `--database-ca-file`), written into the Secrets as `ca.crt` so that clients, and
    /// the ingest pods, can use `sslmode=verify-full`.
    pub ca_bundle: Option<String>,
}

/// The presets of the three tiers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Tiers {
    pub small: Limits,
    pub medium: Limits,
    pub large: Limits,
}

impl Tiers {
    pub fn preset(&self, tier: Tier) -> &Limits {
        match tier {
            Tier::Small => &self.small,
            Tier::Medium => &self.medium,
            Tier::Large => &self.large,
        }
    }

    /// Reads presets from a YAML file with `small`, `medium` and `large` keys.
    pub fn from_file(path: &Path) -> Result<Tiers, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadTiers {
            path: path.display().to_string(),
            source,
        })?;
        // With the path of a bad value ("medium.memory"), not only its line.
        let tiers: Tiers = serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(
            &text,
        ))
        .map_err(|error| Error::ParseTiers {
            path: path.display().to_string(),
            field: error.path().to_string(),
            source: error.into_inner(),
        })?;
        tiers.check()?;
        Ok(tiers)
    }

    fn check(&self) -> Result<(), Error> {
        for (tier, preset) in [
            ("small", &self.small),
            ("medium", &self.medium),
            ("large", &self.large),
        ] {
            // Quantities were checked as they were read (`Amount`).
            let problem = |problem: String| Error::Tier { tier, problem };
            for (field, value) in [
                ("pods", preset.pods),
                ("ingestRate", preset.ingest_rate),
                ("ingestReplicas", preset.ingest_replicas),
                ("retentionDays", preset.retention_days),
                ("compressAfterDays", preset.compress_after_days),
                ("chunkIntervalHours", preset.chunk_interval_hours),
            ] {
                if value < 1 {
                    return Err(problem(format!("{field} must be at least 1, not {value}")));
                }
            }
        }
        Ok(())
    }
}

impl Default for Tiers {
    /// Built-in presets, used when no tiers file is configured.
    fn default() -> Self {
        let preset = |cpu: &str,
                      memory: &str,
                      pods,
                      storage: &str,
                      db: &str,
                      rate,
                      replicas,
                      (object_count, ephemeral): (i32, &str)| Limits {
            cpu: amount(cpu),
            memory: amount(memory),
            pods,
            storage: amount(storage),
            database_storage: amount(db),
            ingest_rate: rate,
            ingest_replicas: replicas,
            retention_days: 365,
            compress_after_days: 7,
            chunk_interval_hours: 24,
            container_cpu: amount("250m"),
            container_memory: amount("256Mi"),
            object_count,
            ephemeral_storage: amount(ephemeral),
            container_ephemeral_storage: amount("1Gi"),
            sharing: true,
        };
        Tiers {
            small: preset("2", "4Gi", 20, "20Gi", "10Gi", 500, 1, (50, "10Gi")),
            medium: preset("8", "16Gi", 60, "100Gi", "50Gi", 5_000, 2, (150, "40Gi")),
            large: preset(
                "32",
                "64Gi",
                200,
                "500Gi",
                "250Gi",
                50_000,
                3,
                (500, "200Gi"),
            ),
        }
    }
}

/// The ingest image of the same release as this operator.
pub const DEFAULT_INGEST_IMAGE: &str = concat!(
    "ghcr.io/regione-toscana/smartregion-ingest:",
    env!("CARGO_PKG_VERSION")
);

/// When the kubelet pulls the ingest image, with Kubernetes' spelling of each value.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ImagePullPolicy {
    #[value(name = "Always")]
    Always,
    #[default]
    #[value(name = "IfNotPresent")]
    IfNotPresent,
    #[value(name = "Never")]
    Never,
}

impl ImagePullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ImagePullPolicy::Always => "Always",
            ImagePullPolicy::IfNotPresent => "IfNotPresent",
            ImagePullPolicy::Never => "Never",
        }
    }
}

/// Where the tenants' ingest pods may run, for a platform with dedicated (tainted) nodes:
/// a node selector and the taints the pods tolerate. Empty: wherever the scheduler likes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Placement {
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
}

/// A node label `KEY=VALUE` (the `--ingest-node-selector` syntax).
pub fn parse_node_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() && !key.contains(char::is_whitespace) => {
            Ok((key.to_string(), value.to_string()))
        }
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

/// A toleration in `kubectl taint`'s syntax: `KEY[=VALUE][:EFFECT]`. With a value it
/// matches that value only, without one any value; without an effect every effect.
pub fn parse_toleration(text: &str) -> Result<Toleration, String> {
    let (taint, effect) = match text.rsplit_once(':') {
        Some((taint, effect)) => (taint, Some(effect)),
        None => (text, None),
    };
    if let Some(effect) = effect
        && !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect)
    {
        return Err(format!(
            "{text:?}: the effect must be NoSchedule, PreferNoSchedule or NoExecute"
        ));
    }
    let (key, value) = match taint.split_once('=') {
        Some((key, value)) => (key, Some(value)),
        None => (taint, None),
    };
    if key.is_empty() || key.contains(char::is_whitespace) {
        return Err(format!("{text:?} is not KEY[=VALUE][:EFFECT]"));
    }
    Ok(Toleration {
        key: Some(key.to_string()),
        operator: Some(if value.is_some() { "Equal" } else { "Exists" }.to_string()),
        value: value.map(str::to_string),
        effect: effect.map(str::to_string),
        toleration_seconds: None,
    })
}

/// Everything the reconcile pipeline needs to know about the platform.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Tenant `n` gets the namespace `<prefix>n`.
    pub namespace_prefix: String,
    pub tiers: Tiers,
    /// Where tenants' pods may connect to the shared database (NetworkPolicy egress).
    pub database_address: Option<IpAddr>,
    pub database_port: u16,
    /// Port the ingest pods listen on (container port and NetworkPolicy ingress).
    pub ingest_port: u16,
    /// Image of the tenants' ingest pods.
    pub ingest_image: String,
    pub ingest_image_pull_policy: ImagePullPolicy,
    pub ingest_placement: Placement,
    /// How tenants' ingest is reachable from outside the cluster; not at all when unset.
    pub exposure: Option<Exposure>,
    /// The namespace of the platform's Grafana, where tenants' data sources and
    /// dashboards are placed for its sidecar; none when unset.
    pub grafana_namespace: Option<String>,
}

/// The platform Gateway that tenants' HTTPRoutes attach to (`--ingest-gateway`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayRef {
    pub namespace: String,
    pub name: String,
    /// The listener of the Gateway (`parentRefs[].sectionName`); every listener that
    /// admits the route when unset.
    pub section_name: Option<String>,
}

/// Which kind of object exposes a tenant's ingest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExposureVia {
    /// An HTTPRoute (Gateway API) attached to a platform Gateway, which terminates TLS.
    Gateway(GatewayRef),
    /// An Ingress of this class; TLS from the platform's certificate set-up (e.g.
    /// cert-manager's ingress-shim, asked for by the annotations).
    Ingress {
        class: String,
        annotations: BTreeMap<String, String>,
    },
}

/// Exposure of every tenant's ingest at `https://<tenant>.<domain>/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exposure {
    pub via: ExposureVia,
    /// Tenant `n` is reached at the host `n.<domain>`.
    pub domain: String,
    /// Namespace of the pods that forward to ingest (the gateway's or the ingress
    /// controller's): the only namespace the ingest NetworkPolicy admits then.
    pub from_namespace: String,
}

/// The exposure flags as given, before they are checked together ([`Exposure::from_flags`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExposureFlags {
    pub gateway: Option<String>,
    pub gateway_section: Option<String>,
    pub ingress_class: Option<String>,
    pub ingress_annotations: Vec<(String, String)>,
    pub domain: Option<String>,
    pub from_namespace: Option<String>,
}

/// A DNS label: what namespaces, object names and section names must be.
fn is_dns_label(text: &str) -> bool {
    (1..=63).contains(&text.len())
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

/// Longest `--ingest-domain`: `<tenant>.<domain>` must stay a 253-character DNS name.
pub const MAX_INGEST_DOMAIN_LEN: usize = 253 - MAX_NAME_LEN - 1;

impl Exposure {
    /// Checks the exposure flags together: off when none is given; exactly one of
    /// `--ingest-gateway` and `--ingress-class`, with a domain, and every other flag only
    /// with the mode it belongs to. (Long: one check per flag, each with its own message.)
    pub fn from_flags(flags: &ExposureFlags) -> Result<Option<Exposure>, Error> {
        let fail = |message: String| Err(Error::Exposure(message));
        let via = match (&flags.gateway, &flags.ingress_class) {
            (Some(_), Some(_)) => {
                return fail(
                    "--ingest-gateway and --ingress-class are set; expose ingest through \
                     one of them, not both"
                        .into(),
                );
            }
            (None, None) => {
                let stray = [
                    ("--ingest-domain", flags.domain.is_some()),
                    ("--ingest-gateway-section", flags.gateway_section.is_some()),
                    (
                        "--ingress-annotation",
                        !flags.ingress_annotations.is_empty(),
                    ),
                    ("--ingress-from-namespace", flags.from_namespace.is_some()),
                ];
                if let Some((flag, _)) = stray.iter().find(|(_, set)| *set) {
                    return fail(format!(
                        "{flag} is set but exposure is off; add --ingest-gateway or \
                         --ingress-class"
                    ));
                }
                return Ok(None);
            }
            (Some(gateway), None) => {
                if !flags.ingress_annotations.is_empty() {
                    return fail(
                        "--ingress-annotation applies to --ingress-class, not to \
                         --ingest-gateway"
                            .into(),
                    );
                }
                let Some((namespace, name)) = gateway
                    .split_once('/')
                    .filter(|(ns, name)| is_dns_label(ns) && is_dns_label(name))
                else {
                    return fail(format!(
                        "--ingest-gateway {gateway:?} is not NAMESPACE/NAME of a Gateway"
                    ));
                };
                if let Some(section) = &flags.gateway_section
                    && !is_dns_label(section)
                {
                    return fail(format!(
                        "--ingest-gateway-section {section:?} is not a listener name"
                    ));
                }
                ExposureVia::Gateway(GatewayRef {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                    section_name: flags.gateway_section.clone(),
                })
            }
            (None, Some(class)) => {
                if flags.gateway_section.is_some() {
                    return fail(
                        "--ingest-gateway-section applies to --ingest-gateway, not to \
                         --ingress-class"
                            .into(),
                    );
                }
                if !is_dns_subdomain(class) {
                    return fail(format!(
                        "--ingress-class {class:?} is not an IngressClass name"
                    ));
                }
                ExposureVia::Ingress {
                    class: class.clone(),
                    annotations: flags.ingress_annotations.iter().cloned().collect(),
                }
            }
        };
        let Some(domain) = &flags.domain else {
            return fail(
                "--ingest-domain is required to expose ingest: tenant n is reached at \
                 https://n.<domain>/"
                    .into(),
            );
        };
        if domain.len() > MAX_INGEST_DOMAIN_LEN || !is_dns_subdomain(domain) {
            return fail(format!(
                "--ingest-domain {domain:?} must be a lower-case DNS name of at most \
                 {MAX_INGEST_DOMAIN_LEN} characters, such as ingest.smartregion.toscana.it"
            ));
        }
        let from_namespace = match (&flags.from_namespace, &via) {
            (Some(namespace), _) => namespace.clone(),
            (None, ExposureVia::Gateway(gateway)) => gateway.namespace.clone(),
            (None, ExposureVia::Ingress { .. }) => {
                return fail(
                    "--ingress-from-namespace is required with --ingress-class: the \
                     namespace of the ingress controller's pods, which the ingest \
                     NetworkPolicy admits"
                        .into(),
                );
            }
        };
        if !is_dns_label(&from_namespace) {
            return fail(format!(
                "--ingress-from-namespace {from_namespace:?} is not a namespace name"
            ));
        }
        Ok(Some(Exposure {
            via,
            domain: domain.clone(),
            from_namespace,
        }))
    }
}

/// A DNS subdomain (RFC 1123): dot-separated DNS labels.
fn is_dns_subdomain(text: &str) -> bool {
    text.len() <= 253 && text.split('.').all(is_dns_label)
}

/// An annotation `KEY=VALUE` (the `--ingress-annotation` syntax).
pub fn parse_annotation(text: &str) -> Result<(String, String), String> {
    parse_node_label(text)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            namespace_prefix: DEFAULT_NAMESPACE_PREFIX.into(),
            tiers: Tiers::default(),
            database_address: None,
            database_port: 5432,
            ingest_port: smartregion_contract::env::INGEST_PORT,
            ingest_image: DEFAULT_INGEST_IMAGE.into(),
            ingest_image_pull_policy: ImagePullPolicy::IfNotPresent,
            ingest_placement: Placement::default(),
            exposure: None,
            grafana_namespace: None,
        }
    }
}

impl Config {
    /// Checks what the CRD cannot: settings whose combination with a tenant name matters.
    pub fn check(&self) -> Result<(), Error> {
        let prefix = &self.namespace_prefix;
        let valid = prefix.len() <= MAX_NAMESPACE_PREFIX_LEN
            && prefix.starts_with(|c: char| c.is_ascii_lowercase())
            && prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid {
            return Err(Error::NamespacePrefix(prefix.clone()));
        }
        let image = &self.ingest_image;
        if image.is_empty() || image.contains(char::is_whitespace) {
            return Err(Error::IngestImage(image.clone()));
        }
        self.tiers.check()
    }

    pub fn namespace_for(&self, tenant: &str) -> String {
        format!("{}{tenant}", self.namespace_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerations_parse_as_kubectl_taint_writes_taints() {
        let exact = parse_toleration("dedicated=ingest:NoSchedule").unwrap();
        assert_eq!(exact.key.as_deref(), Some("dedicated"));
        assert_eq!(exact.operator.as_deref(), Some("Equal"));
        assert_eq!(exact.value.as_deref(), Some("ingest"));
        assert_eq!(exact.effect.as_deref(), Some("NoSchedule"));
        let any = parse_toleration("example.org/real-node").unwrap();
        assert_eq!(any.operator.as_deref(), Some("Exists"));
        assert_eq!((any.value, any.effect), (None, None));
        assert!(parse_toleration("dedicated:NoSchedul").is_err());
        assert!(parse_toleration("=x:NoSchedule").is_err());
        assert_eq!(
            parse_node_label("pool=ingest").unwrap(),
            ("pool".to_string(), "ingest".to_string())
        );
        assert!(parse_node_label("pool").is_err());
    }

    fn flags(edit: impl FnOnce(&mut ExposureFlags)) -> Result<Option<Exposure>, Error> {
        let mut flags = ExposureFlags {
            domain: Some("ingest.example.it".into()),
            ..ExposureFlags::default()
        };
        edit(&mut flags);
        Exposure::from_flags(&flags)
    }

    fn refusal(edit: impl FnOnce(&mut ExposureFlags)) -> String {
        flags(edit).unwrap_err().to_string()
    }

    #[test]
    fn exposure_is_off_unless_a_mode_is_given_and_then_exactly_one() {
        assert_eq!(
            Exposure::from_flags(&ExposureFlags::default()).unwrap(),
            None
        );
        let both = refusal(|f| {
            f.gateway = Some("gw/public".into());
            f.ingress_class = Some("nginx".into());
        });
        assert!(both.contains("not both"), "{both}");
        // A flag of a mode that is not on is a mistake, not something to ignore.
        assert!(refusal(|_| {}).contains("--ingest-domain is set but exposure is off"));
        let stray = refusal(|f| {
            f.gateway = Some("gw/public".into());
            f.ingress_annotations = vec![("a".into(), "b".into())];
        });
        assert!(stray.contains("--ingress-annotation"), "{stray}");
        let stray = refusal(|f| {
            f.ingress_class = Some("nginx".into());
            f.from_namespace = Some("ingress-nginx".into());
            f.gateway_section = Some("https".into());
        });
        assert!(stray.contains("--ingest-gateway-section"), "{stray}");
    }

    #[test]
    fn a_gateway_is_namespace_slash_name_and_lends_its_namespace() {
        let exposure = flags(|f| {
            f.gateway = Some("gateway-system/public".into());
            f.gateway_section = Some("https".into());
        })
        .unwrap()
        .unwrap();
        assert_eq!(
            exposure.via,
            ExposureVia::Gateway(GatewayRef {
                namespace: "gateway-system".into(),
                name: "public".into(),
                section_name: Some("https".into()),
            })
        );
        assert_eq!(exposure.from_namespace, "gateway-system");
        let own = flags(|f| {
            f.gateway = Some("gateway-system/public".into());
            f.from_namespace = Some("envoy-gateway-system".into());
        })
        .unwrap()
        .unwrap();
        assert_eq!(own.from_namespace, "envoy-gateway-system");
        for bad in ["public", "a/b/c", "Gw/public", "/public", "gw/"] {
            let message = refusal(|f| f.gateway = Some(bad.into()));
            assert!(message.contains("NAMESPACE/NAME"), "{bad}: {message}");
        }
    }

    #[test]
    fn an_ingress_needs_its_controllers_namespace_and_a_valid_domain() {
        let missing = refusal(|f| f.ingress_class = Some("nginx".into()));
        assert!(
            missing.contains("--ingress-from-namespace is required"),
            "{missing}"
        );
        let exposure = flags(|f| {
            f.ingress_class = Some("nginx".into());
            f.from_namespace = Some("ingress-nginx".into());
            f.ingress_annotations = vec![(
                "cert-manager.io/cluster-issuer".into(),
                "letsencrypt".into(),
            )];
        })
        .unwrap()
        .unwrap();
        assert!(matches!(
            &exposure.via,
            ExposureVia::Ingress { class, annotations }
                if class == "nginx" && annotations["cert-manager.io/cluster-issuer"] == "letsencrypt"
        ));
        for domain in [
            "Ingest.example.it",
            "ingest..it",
            "-x.it",
            &"a.".repeat(110),
        ] {
            let message = refusal(|f| {
                f.gateway = Some("gw/public".into());
                f.domain = Some(domain.to_string());
            });
            assert!(message.contains("--ingest-domain"), "{domain}: {message}");
        }
        let message = refusal(|f| {
            f.gateway = Some("gw/public".into());
            f.domain = None;
        });
        assert!(message.contains("--ingest-domain is required"), "{message}");
    }

    #[test]
    fn built_in_tiers_are_valid_and_grow() {
        let tiers = Tiers::default();
        tiers.check().unwrap();
        assert!(tiers.small.pods < tiers.medium.pods && tiers.medium.pods < tiers.large.pods);
    }

    #[test]
    fn the_example_tiers_file_is_the_built_in_default() {
        let path = crate::test_support::crate_dir().join("../examples/config/tiers.yaml");
        assert_eq!(Tiers::from_file(&path).unwrap(), Tiers::default());
    }

    #[test]
    fn tiers_file_round_trips_and_rejects_unknown_keys() {
        let yaml = serde_yaml::to_string(&Tiers::default()).unwrap();
        assert_eq!(
            serde_yaml::from_str::<Tiers>(&yaml).unwrap(),
            Tiers::default()
        );
        let typo = yaml.replacen("pods:", "podz:", 1);
        assert!(serde_yaml::from_str::<Tiers>(&typo).is_err());
    }

    #[test]
    fn bad_presets_and_prefixes_are_refused_with_the_field_named() {
        let yaml = serde_yaml::to_string(&Tiers::default()).unwrap();
        let bad = yaml.replacen("memory: 16Gi", "memory: lots", 1);
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), bad).unwrap();
        let message = format!(
            "{:#}",
            anyhow::Error::from(Tiers::from_file(file.path()).unwrap_err())
        );
        assert!(
            message.contains("medium") && message.contains("memory") && message.contains("lots"),
            "{message}"
        );

        for prefix in ["Srt-", "srt_", "1srt-", &"a".repeat(24)] {
            let config = Config {
                namespace_prefix: prefix.to_string(),
                ..Config::default()
            };
            assert!(config.check().is_err(), "{prefix:?} accepted");
        }
        for image in ["", "ghcr.io/x y:1"] {
            let config = Config {
                ingest_image: image.to_string(),
                ..Config::default()
            };
            assert!(config.check().is_err(), "{image:?} accepted");
        }
        let longest = Config {
            namespace_prefix: "a".repeat(MAX_NAMESPACE_PREFIX_LEN),
            ..Config::default()
        };
        longest.check().unwrap();
    }
}
