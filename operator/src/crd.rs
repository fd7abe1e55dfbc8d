//! The `SmartRegionTenant` custom resource: its spec, status and admission rules.
//!
//! Owns the API shape and every name that is part of the public contract (group,
//! finalizer, field manager, label and annotation keys). It must not contain logic
//! that needs a client: validation that the API server can do lives here as schema
//! and CEL rules, so bad input is refused at admission and never reaches the controller.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize};
pub use smartregion_contract::open_data::{Frequency, Licence, Theme};

/// API group of every smartregion resource.
pub const GROUP: &str = "smartregion.toscana.it";
/// Finalizer that guards a tenant until its namespace and data are dealt with.
pub const FINALIZER: &str = "smartregion.toscana.it/cleanup";
/// The one field manager the operator uses for server-side apply.
pub const FIELD_MANAGER: &str = "smartregion-operator";
/// Label on every child object: the name of the tenant it belongs to.
pub const TENANT_LABEL: &str = "smartregion.toscana.it/tenant";
/// `app.kubernetes.io/managed-by` value on every child object.
pub const MANAGED_BY: &str = "smartregion-operator";
/// Annotation that confirms `deletionPolicy: Delete`; its value must be the tenant name.
pub const CONFIRM_DELETE_ANNOTATION: &str = "smartregion.toscana.it/confirm-delete";
/// Annotation whose change of value asks for new database credentials.
pub const ROTATE_CREDENTIALS_ANNOTATION: &str = "smartregion.toscana.it/rotate-credentials";
/// Longest tenant name: leaves room for prefixes and role suffixes within
/// PostgreSQL's 63-byte identifiers and Kubernetes' 63-character labels.
pub use smartregion_contract::tenant::MAX_NAME_LEN;

// Limits of the schema below, named so that `onboard` checks the same values the API
// server does instead of a copy of them.
/// Longest `spec.displayName`, in characters.
pub const DISPLAY_NAME_MAX_LEN: usize = 200;
/// `spec.entity.istatCode`: the six digits of an ISTAT territory code.
pub const ISTAT_CODE_PATTERN: &str = r"^[0-9]{6}$";
/// `spec.entity.ipaCode`: a code of the Indice della Pubblica Amministrazione.
pub const IPA_CODE_PATTERN: &str = r"^[A-Za-z0-9_]{2,20}$";
/// Most entries in `spec.admins.groups` and in `spec.admins.users`.
pub const MAX_ADMINS: usize = 50;
/// Longest admin group or user name, in characters.
pub const ADMIN_NAME_MAX_LEN: usize = 253;

/// One public body (ente) on the Smart Region Toscana platform and the space it owns:
/// a namespace with quotas, isolation and admin access, a database schema with
/// credentials, and dedicated ingest pods.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "smartregion.toscana.it",
    version = "v1alpha1",
    kind = "SmartRegionTenant",
    plural = "smartregiontenants",
    singular = "smartregiontenant",
    shortname = "srt",
    category = "smartregion",
    status = "SmartRegionTenantStatus",
    doc = "One public body (ente) on the Smart Region Toscana platform and the space it owns.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.entity.type"),
    printcolumn(name = "Tier", type_ = "string", json_path = ".spec.tier"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Namespace", type_ = "string", json_path = ".status.namespace"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message(
        "metadata.name must be a DNS label that starts with a letter: lower-case letters, digits and '-', e.g. 'prato' or 'unione-mugello'"
    ),
    validation = Rule::new("size(self.metadata.name) <= 40")
        .message("metadata.name must be at most 40 characters"),
)]
#[serde(rename_all = "camelCase")]
pub struct SmartRegionTenantSpec {
    /// Human-readable name of the ente, e.g. "Comune di Prato". Shown to people only;
    /// no Kubernetes or database name is ever derived from it.
    #[schemars(length(min = 1, max = DISPLAY_NAME_MAX_LEN))]
    pub display_name: String,

    /// What kind of public body this is and its official identifiers.
    pub entity: Entity,

    /// Named preset of quotas and database settings, defined in the operator's
    /// configuration (Helm values) so conventions change without a release.
    #[serde(default)]
    pub tier: Tier,

    /// Overrides of individual limits of the tier. Every value must be positive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quotas: Option<Quotas>,

    /// Groups and users that administer the tenant's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admins: Option<Admins>,

    /// The tenant's dedicated ingest service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest: Option<IngestSpec>,

    /// The tenant's read service: its data back over HTTP, read with its reader login
    /// (docs/read-api.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<ReadSpec>,

    /// A Grafana data source and starter dashboard for the platform's Grafana (off by
    /// default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grafana: Option<GrafanaSpec>,

    /// Time-series storage settings; unset values come from the tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseSpec>,

    /// What happens to the data when the tenant is deleted. `Retain` (default) keeps the
    /// schema and its data and disables the database logins; `Delete` drops them too, and
    /// only when the tenant also carries the annotation
    /// `smartregion.toscana.it/confirm-delete: <tenant name>`.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// Stops ingest and database writes while keeping everything in place. What the
    /// tenant shares stays readable by its consumers (docs/sharing.md).
    #[serde(default)]
    pub suspended: bool,

    /// Whether the ente may share its data with others (`SmartRegionShare`s in its
    /// namespace). Unset, its tier decides (the tiers' `sharing`, allowed unless the
    /// platform forbids it); set, it overrides the tier for this tenant. Set by the
    /// platform team, like the rest of the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharing: Option<bool>,
}

/// The kind of public body and its official identifiers.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(oldSelf.istatCode) || has(self.istatCode)")
    .message("entity.istatCode cannot be removed once set"))]
pub struct Entity {
    /// Kind of public body. Immutable: a different kind of ente is a different tenant.
    #[serde(rename = "type")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("entity.type is immutable; create a new tenant instead"))]
    pub kind: EntityType,

    /// ISTAT code of the territory (six digits, e.g. "100005" for Prato). Immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = ISTAT_CODE_PATTERN))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("entity.istatCode is immutable once set"))]
    pub istat_code: Option<String>,

    /// Code of the ente in the Indice della Pubblica Amministrazione (IPA), e.g. "c_g999".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = IPA_CODE_PATTERN))]
    pub ipa_code: Option<String>,
}

/// Kinds of public body on the platform.
///
/// Also a `clap::ValueEnum`, spelled as in the API, for `smartregion-operator onboard`.
#[derive(
    JsonSchema, Serialize, Deserialize, clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Hash,
)]
#[value(rename_all = "verbatim")]
pub enum EntityType {
    /// A municipality (comune), e.g. Comune di Prato.
    Comune,
    /// A union of municipalities, e.g. Unione dei Comuni del Mugello.
    UnioneDiComuni,
    /// A province, e.g. Provincia di Pisa.
    Provincia,
    /// The metropolitan city of Florence.
    CittaMetropolitana,
    /// The region itself.
    Regione,
    /// A directorate of the region, e.g. Direzione Attività Produttive.
    DirezioneRegionale,
    /// A publicly owned company or utility (società partecipata), e.g. Publiacqua.
    Partecipata,
    /// Any other public body.
    Altro,
}

/// Named presets of limits, defined in the operator's configuration.
#[derive(
    JsonSchema,
    Serialize,
    Deserialize,
    clap::ValueEnum,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
)]
#[serde(rename_all = "lowercase")]
#[value(rename_all = "lower")]
pub enum Tier {
    /// For a small comune or a pilot.
    #[default]
    Small,
    /// For a mid-sized comune or an unione.
    Medium,
    /// For a capoluogo, a provincia or the region.
    Large,
}

/// What happens to the tenant's data when the tenant is deleted.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Keep the schema and its data; disable the database logins. Re-creating a tenant
    /// of the same name adopts them again.
    #[default]
    Retain,
    /// Drop the schema, its data and the roles. Needs the confirm-delete annotation.
    Delete,
}

/// Overrides of the tier's limits. Unset fields keep the tier's value.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Quotas {
    /// Total CPU requests and limits of the namespace, e.g. "4" or "1500m".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(POSITIVE_QUANTITY).message("quotas.cpu must be a positive quantity such as 2 or 1500m"))]
    pub cpu: Option<Quantity>,

    /// Total memory requests and limits of the namespace, e.g. "8Gi".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(POSITIVE_QUANTITY).message("quotas.memory must be a positive quantity such as 8Gi"))]
    pub memory: Option<Quantity>,

    /// Maximum number of pods in the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub pods: Option<i32>,

    /// Total persistent volume storage the namespace may request, e.g. "50Gi".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(POSITIVE_QUANTITY).message("quotas.storage must be a positive quantity such as 50Gi"))]
    pub storage: Option<Quantity>,

    /// Size the tenant's database schema may reach, e.g. "20Gi". Above it, ingest can no
    /// longer insert (reads keep working) until usage falls below 95%.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(POSITIVE_QUANTITY).message("quotas.databaseStorage must be a positive quantity such as 20Gi"))]
    pub database_storage: Option<Quantity>,

    /// Rows per second the ingest service accepts before answering 429.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10_000_000))]
    pub ingest_rate: Option<i32>,
}

/// CEL: the value (int or string) is a valid, strictly positive quantity.
const POSITIVE_QUANTITY: &str =
    "isQuantity(string(self)) && quantity(string(self)).isGreaterThan(quantity('0'))";

/// Who administers the tenant's namespace (bound to an admin Role inside it).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Admins {
    /// Groups as the cluster's authentication reports them, e.g. "prato-admins".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_ADMINS), inner(length(min = 1, max = ADMIN_NAME_MAX_LEN)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub groups: Vec<String>,

    /// Individual users, e.g. "mario.rossi@comune.prato.it".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_ADMINS), inner(length(min = 1, max = ADMIN_NAME_MAX_LEN)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub users: Vec<String>,
}

/// Settings of the tenant's ingest service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IngestSpec {
    /// Run the ingest service. Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Number of ingest pods; unset takes the tier's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 20))]
    pub replicas: Option<i32>,

    /// Payload formats accepted over HTTP. Unset accepts all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 3))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub formats: Vec<IngestFormat>,

    /// Subscribe to an MQTT broker as well as serving HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<MqttSource>,
}

fn default_true() -> bool {
    true
}

/// Settings of the tenant's read service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReadSpec {
    /// Run the read service (one pod). Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

/// Dashboards the ecosystem's way: a Grafana data source for the tenant's reader and a
/// starter dashboard, placed where the platform's Grafana picks them up
/// (docs/grafana.md).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GrafanaSpec {
    /// Provide them. Default false.
    #[serde(default)]
    pub enabled: bool,
}

pub use smartregion_contract::format::IngestFormat;

/// An MQTT broker the ingest service subscribes to (QoS 1, acknowledged after commit).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MqttSource {
    /// Broker address, e.g. "mqtts://broker.example.it:8883".
    #[schemars(
        regex(pattern = r"^mqtts?://[^\s/]+(:[0-9]{1,5})?/?$"),
        length(max = 253)
    )]
    pub url: String,

    /// Topic filters to subscribe to, e.g. "prato/sensors/#" (no commas or spaces).
    #[schemars(
        length(min = 1, max = 20),
        inner(length(min = 1, max = 253), regex(pattern = r"^[^,\s]+$"))
    )]
    pub topics: Vec<String>,

    /// Secret in the tenant namespace with keys `username` and `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub credentials_secret: Option<String>,
}

/// Time-series storage settings. Unset values come from the tier.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    /// Days measurements are kept before they are dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 36500))]
    pub retention_days: Option<i32>,

    /// Days after which TimescaleDB compresses measurements (ignored on plain PostgreSQL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 36500))]
    pub compress_after_days: Option<i32>,

    /// Width of one time partition (chunk) in hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 8760))]
    pub chunk_interval_hours: Option<i32>,
}

/// A Kubernetes resource quantity ("2", "1500m", "8Gi") written as a string or a number.
///
/// k8s-openapi's `Quantity` only deserializes strings, but `cpu: 4` in YAML is a number;
/// this type accepts both and keeps the text as written.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(transparent)]
pub struct Quantity(pub String);

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum IntOrString {
            Int(i64),
            String(String),
        }
        Ok(match IntOrString::deserialize(deserializer)? {
            IntOrString::Int(n) => Quantity(n.to_string()),
            IntOrString::String(s) => Quantity(s),
        })
    }
}

impl JsonSchema for Quantity {
    fn schema_name() -> Cow<'static, str> {
        "Quantity".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // No description of its own: kube's schema rewrite of `Option<Quantity>` puts this
        // schema over the field's, and a description here replaced each field's doc
        // comment (what `kubectl explain` shows) with a generic one.
        json_schema!({
            "x-kubernetes-int-or-string": true,
            "anyOf": [{ "type": "integer" }, { "type": "string", "maxLength": 64 }],
        })
    }
}

/// Observed state of a tenant, written by the operator only.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SmartRegionTenantStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// One-word summary of the tenant's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// `Ready`, and one condition per part: `NamespaceReady`, `DatabaseReady`,
    /// `IngestReady`, `WithinQuota`, `StorageMaintained`, and `ExposureReady` while ingest
    /// is exposed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The tenant's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,

    /// Where the tenant's data lives and which Secrets hold its credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseStatus>,

    /// Address of the ingest service inside the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest_endpoint: Option<String>,

    /// Address of the read service inside the cluster (docs/read-api.md), while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_endpoint: Option<String>,

    /// How ingest is reached from outside the cluster, while the operator exposes it
    /// (docs/exposure.md); absent otherwise. `ExposureReady` says whether it works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposure: Option<ExposureStatus>,

    /// Measured usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,

    /// What other tenants share with this one (`SmartRegionShare`s that list it), and
    /// where its `db-reader` reads each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared_with_me: Vec<SharedWith>,
}

/// One-word summary of a tenant's state.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, strum::EnumIter,
)]
pub enum Phase {
    /// Seen, nothing created yet.
    Pending,
    /// Parts are being created or are not ready yet.
    Provisioning,
    /// Every part is ready.
    Ready,
    /// A part that was ready has failed; see the conditions.
    Degraded,
    /// `spec.suspended` is true: ingest and writes are stopped, everything is kept.
    Suspended,
    /// The tenant is being deleted.
    Terminating,
}

/// Where the tenant's data lives. Never contains credentials.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseStatus {
    /// PostgreSQL schema of the tenant.
    pub schema: String,
    /// Secret in the tenant namespace with the writer's connection values.
    pub writer_secret: String,
    /// Secret in the tenant namespace with the reader's connection values.
    pub reader_secret: String,
    /// How the tenant's measurements are stored, decided when the tenant was first
    /// provisioned and kept until an explicit migration (docs/database.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<Storage>,
    /// When the credentials were last issued or rotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_rotated_at: Option<Time>,
    /// TimescaleDB tenants: the retention and compression jobs and what they achieve
    /// (the `StorageMaintained` condition sums it up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<MaintenanceStatus>,
}

/// A hypertable tenant's maintenance: its TimescaleDB jobs as TimescaleDB records them,
/// and their effect, measured on the chunks.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceStatus {
    /// The retention and compression jobs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<JobStatus>,
    /// Chunks past `compressAfterDays` that are still uncompressed although their job
    /// has had its chance (a schedule interval and more) since they became due.
    pub overdue_compression_chunks: i64,
    /// Chunks wholly past `retentionDays` that still exist although their job has had
    /// its chance since they became due.
    pub overdue_retention_chunks: i64,
    /// When the operator last ran a due policy itself, because the jobs did not do the
    /// work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_run_at: Option<Time>,
}

/// One TimescaleDB job of the tenant, as TimescaleDB records it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    /// What the job does.
    pub policy: MaintenancePolicy,
    /// TimescaleDB's job id (`timescaledb_information.jobs`).
    pub job_id: i32,
    /// When its last run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_started_at: Option<Time>,
    /// How TimescaleDB recorded its last run: `Success` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_status: Option<String>,
    /// When a run last finished with success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_at: Option<Time>,
    /// Runs recorded as failed since the last success.
    pub consecutive_failures: i32,
    /// The error of its last failed run, while it is failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A TimescaleDB policy of a tenant's hypertable.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, strum::EnumIter,
)]
pub enum MaintenancePolicy {
    /// Drops chunks past `retentionDays`.
    Retention,
    /// Compresses chunks past `compressAfterDays`.
    Compression,
}

/// How the tenant's ingest is reached from outside the cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExposureStatus {
    /// Where senders outside the cluster post, e.g.
    /// `https://prato.ingest.smartregion.toscana.it/` (then `v1/measurements`,
    /// `v2/notify`, `v1/senml`).
    pub url: String,
    /// The object in the tenant namespace that exposes ingest, named `ingest`.
    pub kind: ExposureKind,
}

/// The kind of object that exposes a tenant's ingest.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExposureKind {
    /// A Gateway API HTTPRoute attached to the platform's Gateway.
    #[serde(rename = "HTTPRoute")]
    HttpRoute,
    /// A networking.k8s.io/v1 Ingress.
    Ingress,
}

/// How a tenant's `measurements` table is stored.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Storage {
    /// A TimescaleDB hypertable with TimescaleDB's own retention and compression jobs.
    Hypertable,
    /// PostgreSQL's native range partitions, created ahead and dropped past retention by
    /// the operator.
    Partitions,
}

/// Measured usage of the tenant.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Size of the tenant's database schema in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_bytes: Option<i64>,
    /// Rows per second stored into measurements, between the last two checks of the
    /// tenant (at least 5 s apart; PostgreSQL's own insert counter). Plain PostgreSQL
    /// path only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_per_second: Option<f64>,
}

/// Most consumers of one share.
pub const MAX_SHARE_CONSUMERS: usize = 20;
/// Most metrics, or metric prefixes, of one share or open dataset.
pub const MAX_FILTER_METRICS: usize = 50;
/// Most sensors, or sensor prefixes, of one share or open dataset.
pub const MAX_FILTER_SENSORS: usize = 200;
/// A tenant name as a share names it: what `metadata.name` of a tenant may be.
pub const TENANT_NAME_PATTERN: &str = r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$";
/// A metric name or sensor id (or prefix) as a share lists it: printable text, no
/// control characters.
pub const SHARED_VALUE_PATTERN: &str = r"^[^\x00-\x1f\x7f]+$";

/// Which measurements a share or an open dataset covers: a row filter the database
/// enforces, on metric, sensor and time.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RowFilter {
    /// Metrics included, by exact name. With `metricPrefixes`, a measurement is included
    /// when its metric is listed here or starts with a listed prefix; with neither, every
    /// metric is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = MAX_FILTER_METRICS),
        inner(length(min = 1, max = 128), regex(pattern = SHARED_VALUE_PATTERN))
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub metrics: Vec<String>,

    /// Metrics included, by the start of their name, e.g. "river_".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = MAX_FILTER_METRICS),
        inner(length(min = 1, max = 128), regex(pattern = SHARED_VALUE_PATTERN))
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub metric_prefixes: Vec<String>,

    /// Sensors included, by exact id. With `sensorPrefixes`, as for metrics; with neither,
    /// every sensor is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = MAX_FILTER_SENSORS),
        inner(length(min = 1, max = 256), regex(pattern = SHARED_VALUE_PATTERN))
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub sensors: Vec<String>,

    /// Sensors included, by the start of their id, e.g. "arno-".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = MAX_FILTER_SENSORS),
        inner(length(min = 1, max = 256), regex(pattern = SHARED_VALUE_PATTERN))
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub sensor_prefixes: Vec<String>,

    /// Only measurements from this time on (RFC 3339, e.g. "2026-01-01T00:00:00Z").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
}

/// Data one ente shares with others: which tenants may read which of its measurements.
/// Made by the providing ente itself, in its own namespace (its admins may create and
/// delete shares there); enforced in the database by a view the consumers' readers may
/// read, never by copying.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "smartregion.toscana.it",
    version = "v1alpha1",
    kind = "SmartRegionShare",
    derive = "PartialEq",
    plural = "smartregionshares",
    singular = "smartregionshare",
    shortname = "srs",
    category = "smartregion",
    namespaced,
    status = "SmartRegionShareStatus",
    doc = "Data an ente shares with other enti: which tenants may read which of its measurements.",
    printcolumn(name = "Consumers", type_ = "string", json_path = ".spec.consumers"),
    printcolumn(name = "Metrics", type_ = "string", json_path = ".spec.metrics"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Read as", type_ = "string", json_path = ".status.readAs"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message(
        "metadata.name must be a DNS label that starts with a letter, e.g. 'river-levels'"
    ),
    validation = Rule::new("size(self.metadata.name) <= 40")
        .message("metadata.name must be at most 40 characters"),
)]
#[serde(rename_all = "camelCase")]
pub struct SmartRegionShareSpec {
    /// The tenants (their `metadata.name`) whose `db-reader` may read the shared data. A
    /// tenant that does not exist yet is accepted and waits; the providing tenant itself
    /// cannot be listed.
    #[schemars(
        length(min = 1, max = MAX_SHARE_CONSUMERS),
        inner(regex(pattern = TENANT_NAME_PATTERN))
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub consumers: Vec<String>,

    /// Which of the provider's measurements are shared. The sensor catalogue shared is
    /// the chosen sensors' entries.
    #[serde(flatten)]
    pub rows: RowFilter,
}

/// What the operator made of a share.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SmartRegionShareStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`: the view is in place as declared, and readable by every consumer that
    /// exists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Where the consumers read the shared measurements, e.g. `s_publiacqua.river_levels`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_as: Option<String>,

    /// Where they read the shared sensors' catalogue entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sensors_read_as: Option<String>,

    /// Each consumer and whether it can read now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<ShareConsumer>,
}

/// One consumer of a share.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ShareConsumer {
    pub tenant: String,
    pub state: ShareState,
}

/// Whether a consumer can read what is shared with it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShareState {
    /// Its `db-reader` may read the view.
    Active,
    /// No tenant of that name exists yet (or its database part is not in place): it may
    /// read once it does.
    WaitingForConsumer,
}

/// Something shared with this tenant by another, as its status lists it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SharedWith {
    /// The tenant that shares.
    pub provider: String,
    /// The share's name in the provider's namespace.
    pub share: String,
    /// Where to read it with `db-reader`, e.g. `s_publiacqua.river_levels`.
    pub read_as: String,
    /// Where to read the shared sensors' catalogue entries.
    pub sensors_read_as: String,
}

/// Longest open dataset title, in characters.
pub const DATASET_TITLE_MAX_LEN: usize = 200;
/// Longest open dataset description, in characters.
pub const DATASET_DESCRIPTION_MAX_LEN: usize = 4000;

/// Data an ente publishes as open data: which of its measurements anyone may read
/// without a key, at which granularity at finest, and how the regional portal describes
/// it (DCAT-AP_IT). Made by the ente itself, in its own namespace; enforced in the
/// database by a function that only ever returns whole buckets of the declared period.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "smartregion.toscana.it",
    version = "v1alpha1",
    kind = "SmartRegionDataset",
    derive = "PartialEq",
    plural = "smartregiondatasets",
    singular = "smartregiondataset",
    shortname = "srd",
    category = "smartregion",
    namespaced,
    status = "SmartRegionDatasetStatus",
    doc = "Data an ente publishes as open data, aggregated at a declared granularity, with its DCAT-AP_IT description.",
    printcolumn(name = "Title", type_ = "string", json_path = ".spec.title"),
    printcolumn(name = "Granularity", type_ = "string", json_path = ".spec.granularity"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.url"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message(
        "metadata.name must be a DNS label that starts with a letter, e.g. 'air-quality-hourly'"
    ),
    validation = Rule::new("size(self.metadata.name) <= 40")
        .message("metadata.name must be at most 40 characters"),
)]
#[serde(rename_all = "camelCase")]
pub struct SmartRegionDatasetSpec {
    /// The dataset's title in the catalogue, e.g. "Qualità dell'aria a Prato, medie orarie".
    #[schemars(length(min = 1, max = DATASET_TITLE_MAX_LEN))]
    pub title: String,

    /// What the data is, how it is measured, what to mind when using it.
    #[schemars(length(min = 1, max = DATASET_DESCRIPTION_MAX_LEN))]
    pub description: String,

    /// The finest granularity published: anyone reads whole buckets of this period, or
    /// of a multiple of it, and never anything finer (no raw rows).
    #[serde(default)]
    pub granularity: Granularity,

    /// Which of the ente's measurements are published.
    #[serde(flatten)]
    pub rows: RowFilter,

    /// The licence the data is published under.
    pub licence: Licence,

    /// Themes of the EU data-theme vocabulary, e.g. `[ENVI]`.
    #[schemars(length(min = 1, max = 5))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub themes: Vec<Theme>,

    /// Words a portal search finds the dataset by.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 20),
        inner(length(min = 1, max = 64), regex(pattern = SHARED_VALUE_PATTERN))
    )]
    pub keywords: Vec<String>,

    /// How often the data is updated (EU frequency vocabulary).
    #[serde(default)]
    pub update_frequency: Frequency,

    /// Who answers questions about the data.
    pub contact: DatasetContact,
}

/// The finest period an open dataset is published at.
#[derive(
    JsonSchema,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    strum::EnumIter,
)]
pub enum Granularity {
    #[serde(rename = "PT5M")]
    FiveMinutes,
    #[serde(rename = "PT15M")]
    QuarterHour,
    #[default]
    #[serde(rename = "PT1H")]
    Hour,
    #[serde(rename = "P1D")]
    Day,
}

impl Granularity {
    /// The period in seconds.
    pub fn seconds(self) -> i64 {
        match self {
            Granularity::FiveMinutes => 300,
            Granularity::QuarterHour => 900,
            Granularity::Hour => 3600,
            Granularity::Day => 86_400,
        }
    }

    /// As ISO 8601 writes it.
    pub fn iso(self) -> &'static str {
        match self {
            Granularity::FiveMinutes => "PT5M",
            Granularity::QuarterHour => "PT15M",
            Granularity::Hour => "PT1H",
            Granularity::Day => "P1D",
        }
    }
}

/// The contact point of an open dataset.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatasetContact {
    /// An office or a role, e.g. "Ufficio Ambiente".
    #[schemars(length(min = 1, max = 200))]
    pub name: String,
    /// Its e-mail address.
    #[schemars(
        length(min = 3, max = 254),
        regex(pattern = r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    )]
    pub email: String,
}

/// What the operator made of an open dataset.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SmartRegionDatasetStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`: the dataset is readable by anyone through the read service, as declared.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Where anyone reads it, e.g. `https://prato.dati.example.it/open/air-quality-hourly`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,

    /// The function the database answers it with, e.g. `o_prato.air_quality_hourly`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_as: Option<String>,
}
