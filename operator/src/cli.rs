//! Command line of the `smartregion-operator` binary. Every setting has a flag and an
//! environment variable, so the Helm chart configures the operator through env.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{DEFAULT_INGEST_IMAGE, ExposureFlags, ImagePullPolicy};
use crate::crd::{EntityType, Tier};
use crate::database::connect::{ChannelBinding, SslMode};
use crate::database::storage::StorageMode;
pub use smartregion_contract::logging::LogFormat;

/// Kubernetes operator for Smart Region Toscana tenants.
#[derive(Parser, Debug)]
#[command(
    name = "smartregion-operator",
    version,
    about,
    long_about = None,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Settings of `run`, the default subcommand.
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controller (the default).
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions (SmartRegionTenant, SmartRegionShare) as YAML,
    /// or write one file per CRD into a directory.
    Crd {
        /// Write `<plural>.<group>.yaml` files into this directory instead, as committed
        /// under `crds/` and in the chart.
        #[arg(long, value_name = "DIR")]
        write: Option<PathBuf>,
    },
    /// Write SmartRegionTenant manifests for enti, checked as the API server would: one
    /// from flags to stdout, or one per row of a CSV into a directory (docs/onboarding.md).
    Onboard(Box<OnboardArgs>),
}

/// Settings of `onboard`. Unlike `run`'s, they have no environment variables: they
/// describe one ente or one file, typed by a person, not the configuration of a Pod.
#[derive(Args, Debug, Clone)]
#[command(after_help = "One ente, printed to stdout:\n  \
    smartregion-operator onboard --name pistoia --display-name 'Comune di Pistoia' \\\n    \
    --entity-type Comune --istat-code 047014 --tier medium --admin-group pistoia-admins\n\
    Many enti, one <name>.yaml per row:\n  \
    smartregion-operator onboard --csv enti.csv --out-dir tenants/")]
pub struct OnboardArgs {
    /// Tenant name (metadata.name): a DNS label of at most 40 characters that starts with
    /// a letter, e.g. `pistoia` or `unione-valdera`. Namespace, schema and roles derive
    /// from it.
    #[arg(long, required_unless_present = "csv", conflicts_with = "csv")]
    pub name: Option<String>,

    /// Human-readable name of the ente, e.g. "Comune di Pistoia".
    #[arg(long, required_unless_present = "csv", conflicts_with = "csv")]
    pub display_name: Option<String>,

    /// Kind of public body (immutable once applied).
    #[arg(
        long,
        value_enum,
        ignore_case = true,
        required_unless_present = "csv",
        conflicts_with = "csv"
    )]
    pub entity_type: Option<EntityType>,

    /// ISTAT code of the territory: six digits with the leading zeros, e.g. 047014
    /// (immutable once applied).
    #[arg(long, conflicts_with = "csv")]
    pub istat_code: Option<String>,

    /// Code of the ente in the Indice della Pubblica Amministrazione, e.g. c_g713.
    #[arg(long, conflicts_with = "csv")]
    pub ipa_code: Option<String>,

    /// Quota preset.
    #[arg(
        long,
        value_enum,
        ignore_case = true,
        default_value_t = Tier::Small,
        conflicts_with = "csv"
    )]
    pub tier: Tier,

    /// Group that administers the tenant's namespace; repeat for several.
    #[arg(long = "admin-group", value_name = "GROUP", conflicts_with = "csv")]
    pub admin_groups: Vec<String>,

    /// User that administers the tenant's namespace; repeat for several.
    #[arg(long = "admin-user", value_name = "USER", conflicts_with = "csv")]
    pub admin_users: Vec<String>,

    /// CSV of enti, one per row, with a header row naming the columns: name, displayName,
    /// entityType, and optionally istatCode, ipaCode, tier, adminGroups, adminUsers
    /// (several admins separated by `;`).
    #[arg(long, value_name = "FILE", requires = "out_dir")]
    pub csv: Option<PathBuf>,

    /// Directory that receives one `<name>.yaml` per CSV row (created if missing). Other
    /// files in it are left alone.
    #[arg(long, value_name = "DIR", requires = "csv")]
    pub out_dir: Option<PathBuf>,

    /// Overwrite manifests in --out-dir whose content differs from the new one (without
    /// it they are refused, and nothing is written).
    #[arg(long, requires = "csv")]
    pub force: bool,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Tenant `n` gets the namespace `<prefix>n`.
    #[arg(long, env = "SMARTREGION_NAMESPACE_PREFIX", default_value = crate::config::DEFAULT_NAMESPACE_PREFIX)]
    pub namespace_prefix: String,

    /// YAML file with the small, medium and large tier presets (e.g. a mounted
    /// ConfigMap); the built-in presets when unset.
    #[arg(long, env = "SMARTREGION_TIERS_FILE")]
    pub tiers_file: Option<PathBuf>,

    /// Only reconcile tenants with these labels (a label selector such as
    /// `smartregion.toscana.it/shard=a`), e.g. to run a canary operator next to the main
    /// one. Every tenant when unset.
    #[arg(long, env = "SMARTREGION_TENANT_SELECTOR")]
    pub tenant_selector: Option<String>,

    /// Tenants reconciled at the same time.
    #[arg(long, env = "SMARTREGION_CONCURRENCY", default_value_t = 8)]
    pub concurrency: u16,

    /// Seconds between periodic re-checks of a tenant that is fine.
    #[arg(long, env = "SMARTREGION_REQUEUE_SECONDS", default_value_t = 300)]
    pub requeue_seconds: u64,

    /// Address of the HTTP server for /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "SMARTREGION_METRICS_ADDRESS",
        default_value = "0.0.0.0:8080"
    )]
    pub metrics_address: SocketAddr,

    /// Run only while holding the leader Lease, so several replicas can run for
    /// availability.
    #[arg(long, env = "SMARTREGION_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Namespace of the leader Lease (the operator's own namespace in a cluster).
    #[arg(long, env = "SMARTREGION_LEASE_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,

    /// Name of the leader Lease.
    #[arg(
        long,
        env = "SMARTREGION_LEASE_NAME",
        default_value = "smartregion-operator"
    )]
    pub lease_name: String,

    /// Seconds a leader's Lease lasts without renewal; a standby takes over after it.
    #[arg(long, env = "SMARTREGION_LEASE_SECONDS", default_value_t = 15)]
    pub lease_seconds: u64,

    /// Admin connection to the shared PostgreSQL/TimescaleDB, e.g.
    /// `postgres://admin:...@db.example:5432/smartregion` (usually from a Secret). Without
    /// it the operator manages only the Kubernetes side of tenants.
    #[arg(long, env = "SMARTREGION_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// How the connection to the database is protected: `verify-full` (encrypted, server
    /// certificate checked against --database-ca-file and the host name), `require`
    /// (encrypted, server not authenticated) or `disable`. The last two need
    /// --database-insecure: a server that is not authenticated can be impersonated and
    /// handed the admin's password. Also written into tenants' Secrets.
    #[arg(long, env = "SMARTREGION_DATABASE_SSLMODE", value_enum, default_value_t = SslMode::VerifyFull)]
    pub database_sslmode: SslMode,

    /// Accept --database-sslmode `require` or `disable` (a test database, a connection
    /// protected some other way). Logged as a warning at start.
    #[arg(long, env = "SMARTREGION_DATABASE_INSECURE")]
    pub database_insecure: bool,

    /// SCRAM channel binding on the admin connection: `require` (the default; also
    /// refuses a server that asks for the password in clear text or as MD5), `prefer` or
    /// `disable` (for a server that does not authenticate the admin with SCRAM over TLS).
    /// Without TLS there is nothing to bind to, and it is off.
    #[arg(long, env = "SMARTREGION_DATABASE_CHANNEL_BINDING", value_enum, default_value_t = ChannelBinding::Require)]
    pub database_channel_binding: ChannelBinding,

    /// PEM file with the CA certificates that sign the database server's certificate
    /// (needed by `--database-sslmode=verify-full`).
    #[arg(long, env = "SMARTREGION_DATABASE_CA_FILE")]
    pub database_ca_file: Option<PathBuf>,

    /// Most admin connections to the database at once.
    #[arg(long, env = "SMARTREGION_DATABASE_POOL_SIZE", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=100))]
    pub database_pool_size: u16,

    /// Storage for new tenants' measurements: `auto` (TimescaleDB hypertables when the
    /// database has TimescaleDB, native partitions otherwise), `hypertable` (fail without
    /// TimescaleDB) or `partitions`. A tenant keeps the storage it was created with.
    #[arg(long, env = "SMARTREGION_DATABASE_STORAGE", value_enum, default_value_t = StorageMode::Auto)]
    pub database_storage: StorageMode,

    /// Host that tenants' pods use to reach the database, written into their Secrets;
    /// the host of --database-url when unset.
    #[arg(long, env = "SMARTREGION_DATABASE_PUBLIC_HOST")]
    pub database_public_host: Option<String>,

    /// IP address of the shared database, opened for egress by the tenants'
    /// NetworkPolicy.
    #[arg(long, env = "SMARTREGION_DATABASE_ADDRESS")]
    pub database_address: Option<IpAddr>,

    /// Port of the shared database.
    #[arg(long, env = "SMARTREGION_DATABASE_PORT", default_value_t = 5432)]
    pub database_port: u16,

    /// Port the tenants' ingest pods listen on (their NetworkPolicy opens it; their
    /// Service always answers on 8080).
    #[arg(long, env = "SMARTREGION_INGEST_PORT", default_value_t = smartregion_contract::env::INGEST_PORT)]
    pub ingest_port: u16,

    /// Image of the tenants' ingest pods; by default the ingest release that matches this
    /// operator.
    #[arg(long, env = "SMARTREGION_INGEST_IMAGE", default_value = DEFAULT_INGEST_IMAGE)]
    pub ingest_image: String,

    /// When the kubelet pulls the ingest image.
    #[arg(long, env = "SMARTREGION_INGEST_IMAGE_PULL_POLICY", value_enum, default_value_t = ImagePullPolicy::IfNotPresent)]
    pub ingest_image_pull_policy: ImagePullPolicy,

    /// Node label (KEY=VALUE) the tenants' ingest pods must run on; repeat for more
    /// (comma-separated in the environment variable).
    #[arg(long = "ingest-node-selector", env = "SMARTREGION_INGEST_NODE_SELECTOR", value_name = "KEY=VALUE", value_delimiter = ',', value_parser = crate::config::parse_node_label)]
    pub ingest_node_selector: Vec<(String, String)>,

    /// Taint the ingest pods tolerate, as `kubectl taint` writes it: `KEY[=VALUE][:EFFECT]`;
    /// repeat for more (comma-separated in the environment variable).
    #[arg(long = "ingest-toleration", env = "SMARTREGION_INGEST_TOLERATIONS", value_name = "KEY[=VALUE][:EFFECT]", value_delimiter = ',', value_parser = crate::config::parse_toleration)]
    pub ingest_tolerations: Vec<k8s_openapi::api::core::v1::Toleration>,

    /// Expose every tenant's ingest through this platform Gateway (Gateway API),
    /// `NAMESPACE/NAME`: an HTTPRoute in each tenant namespace attaches to it
    /// (docs/exposure.md). Off when neither this nor --ingress-class is set.
    #[arg(
        long,
        env = "SMARTREGION_INGEST_GATEWAY",
        value_name = "NAMESPACE/NAME",
        conflicts_with = "ingress_class"
    )]
    pub ingest_gateway: Option<String>,

    /// The listener of --ingest-gateway the routes attach to (`sectionName`); every
    /// listener that admits them when unset.
    #[arg(
        long,
        env = "SMARTREGION_INGEST_GATEWAY_SECTION",
        value_name = "LISTENER"
    )]
    pub ingest_gateway_section: Option<String>,

    /// Expose every tenant's ingest through an Ingress of this class, for clusters
    /// without Gateway API. Exclusive with --ingest-gateway.
    #[arg(long, env = "SMARTREGION_INGRESS_CLASS", value_name = "CLASS")]
    pub ingress_class: Option<String>,

    /// Annotation (KEY=VALUE) on every tenant's Ingress, e.g.
    /// `cert-manager.io/cluster-issuer=letsencrypt` so that cert-manager issues the
    /// `ingest-tls` certificate; repeat for more (comma-separated in the environment
    /// variable).
    #[arg(long = "ingress-annotation", env = "SMARTREGION_INGRESS_ANNOTATIONS", value_name = "KEY=VALUE", value_delimiter = ',', value_parser = crate::config::parse_annotation)]
    pub ingress_annotations: Vec<(String, String)>,

    /// Tenant `n` is reached at `https://n.<domain>/` (needed by both exposure modes).
    #[arg(long, env = "SMARTREGION_INGEST_DOMAIN", value_name = "DOMAIN")]
    pub ingest_domain: Option<String>,

    /// Namespace of the gateway's or ingress controller's pods, the only namespace the
    /// ingest NetworkPolicy admits while ingest is exposed; the Gateway's namespace when
    /// unset (required with --ingress-class).
    #[arg(
        long,
        env = "SMARTREGION_INGRESS_FROM_NAMESPACE",
        value_name = "NAMESPACE"
    )]
    pub ingress_from_namespace: Option<String>,

    /// Namespace of the platform's Grafana: tenants with `spec.grafana.enabled` get their
    /// data source (a Secret labelled `grafana_datasource: "1"`) and starter dashboard
    /// (a ConfigMap labelled `grafana_dashboard: "1"`) there, for Grafana's sidecar.
    #[arg(long, env = "SMARTREGION_GRAFANA_NAMESPACE", value_name = "NAMESPACE")]
    pub grafana_namespace: Option<String>,

    /// Log format: json in clusters, text for people.
    #[arg(long, env = smartregion_contract::env::LOG_FORMAT, value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
}

impl RunArgs {
    /// The exposure flags, which the operator's exposure settings are read from.
    pub fn exposure_flags(&self) -> ExposureFlags {
        ExposureFlags {
            gateway: self.ingest_gateway.clone(),
            gateway_section: self.ingest_gateway_section.clone(),
            ingress_class: self.ingress_class.clone(),
            ingress_annotations: self.ingress_annotations.clone(),
            domain: self.ingest_domain.clone(),
            from_namespace: self.ingress_from_namespace.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_is_the_default_and_flags_parse() {
        let cli = Cli::try_parse_from([
            "smartregion-operator",
            "--namespace-prefix=tenant-",
            "--leader-election=false",
            "--database-address=10.0.0.5",
            "--database-sslmode=verify-full",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.run.namespace_prefix, "tenant-");
        let explicit =
            Cli::try_parse_from(["smartregion-operator", "run", "--concurrency=2"]).unwrap();
        assert!(matches!(explicit.command, Some(Command::Run(args)) if args.concurrency == 2));
        assert!(!cli.run.leader_election);
        assert_eq!(cli.run.database_address, Some("10.0.0.5".parse().unwrap()));
        assert_eq!(cli.run.database_sslmode, SslMode::VerifyFull);
    }

    #[test]
    fn the_ingest_image_defaults_to_this_release_and_can_be_set() {
        let default = Cli::try_parse_from(["smartregion-operator"]).unwrap();
        assert_eq!(
            default.run.ingest_image,
            format!(
                "ghcr.io/regione-toscana/smartregion-ingest:{}",
                env!("CARGO_PKG_VERSION")
            )
        );
        assert_eq!(
            default.run.ingest_image_pull_policy,
            ImagePullPolicy::IfNotPresent
        );
        let set = Cli::try_parse_from([
            "smartregion-operator",
            "--ingest-image=registry.example.it/ingest:1.2.3",
            "--ingest-image-pull-policy=Always",
        ])
        .unwrap();
        assert_eq!(set.run.ingest_image, "registry.example.it/ingest:1.2.3");
        assert_eq!(set.run.ingest_image_pull_policy, ImagePullPolicy::Always);
    }

    #[test]
    fn both_exposure_modes_at_once_are_refused() {
        let both = Cli::try_parse_from([
            "smartregion-operator",
            "--ingest-gateway=gateway-system/public",
            "--ingress-class=nginx",
            "--ingest-domain=ingest.example.it",
        ]);
        let message = both.unwrap_err().to_string();
        assert!(message.contains("cannot be used with"), "{message}");
        let cli = Cli::try_parse_from([
            "smartregion-operator",
            "--ingress-class=nginx",
            "--ingress-annotation=cert-manager.io/cluster-issuer=letsencrypt",
            "--ingress-annotation=a=b",
            "--ingest-domain=ingest.example.it",
            "--ingress-from-namespace=ingress-nginx",
        ])
        .unwrap();
        let flags = cli.run.exposure_flags();
        assert_eq!(
            flags.ingress_annotations,
            vec![
                (
                    "cert-manager.io/cluster-issuer".into(),
                    "letsencrypt".into()
                ),
                ("a".into(), "b".into())
            ]
        );
        assert!(
            crate::config::Exposure::from_flags(&flags)
                .unwrap()
                .is_some()
        );
    }
}
