//! Chainable builders of tenants for unit tests: `tenant("prato").tier(Large).build()`,
//! and where the crate's files are.

use kube::api::ObjectMeta;

use crate::crd::{
    Admins, DeletionPolicy, Entity, EntityType, IngestSpec, Quantity, Quotas, SmartRegionTenant,
    SmartRegionTenantSpec, Tier,
};

pub struct TenantBuilder(SmartRegionTenant);

pub fn tenant(name: &str) -> TenantBuilder {
    let spec = SmartRegionTenantSpec {
        display_name: "Comune di Prato".into(),
        entity: Entity {
            kind: EntityType::Comune,
            istat_code: Some("100005".into()),
            ipa_code: None,
        },
        tier: Tier::Small,
        quotas: None,
        admins: None,
        ingest: None,
        read: None,
        grafana: None,
        database: None,
        deletion_policy: DeletionPolicy::Retain,
        suspended: false,
        sharing: None,
    };
    let mut tenant = SmartRegionTenant::new(name, spec);
    tenant.metadata = ObjectMeta {
        name: Some(name.into()),
        uid: Some(format!("uid-{name}")),
        generation: Some(1),
        ..ObjectMeta::default()
    };
    TenantBuilder(tenant)
}

impl TenantBuilder {
    pub fn tier(mut self, tier: Tier) -> Self {
        self.0.spec.tier = tier;
        self
    }

    pub fn admin_groups(mut self, groups: &[&str]) -> Self {
        let admins = self.0.spec.admins.get_or_insert_with(Admins::default);
        admins.groups = groups.iter().map(|g| g.to_string()).collect();
        self
    }

    pub fn admin_users(mut self, users: &[&str]) -> Self {
        let admins = self.0.spec.admins.get_or_insert_with(Admins::default);
        admins.users = users.iter().map(|u| u.to_string()).collect();
        self
    }

    pub fn quotas(mut self, edit: impl FnOnce(&mut Quotas)) -> Self {
        edit(self.0.spec.quotas.get_or_insert_with(Quotas::default));
        self
    }

    /// Edits `spec.ingest`, starting from what an empty `ingest: {}` means.
    pub fn ingest(mut self, edit: impl FnOnce(&mut IngestSpec)) -> Self {
        edit(self.0.spec.ingest.get_or_insert_with(|| IngestSpec {
            enabled: true,
            replicas: None,
            formats: Vec::new(),
            mqtt: None,
        }));
        self
    }

    pub fn suspended(mut self) -> Self {
        self.0.spec.suspended = true;
        self
    }

    pub fn not_persisted(mut self) -> Self {
        self.0.metadata.uid = None;
        self
    }

    pub fn build(self) -> SmartRegionTenant {
        self.0
    }
}

pub fn quantity(text: &str) -> Option<Quantity> {
    Some(Quantity(text.into()))
}

/// The pipeline's validation, for the builders' tests (the builders themselves never
/// call it).
pub use crate::reconcile::validate::validate;

/// This crate's directory as cargo gives it to the test at run time: every checkout on
/// the machine shares one target directory, and a test binary another checkout built
/// (its sources no newer) carries that checkout's path in `env!("CARGO_MANIFEST_DIR")`.
pub fn crate_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}
