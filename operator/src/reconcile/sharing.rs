//! Sharing (pure, but for [`update_share_statuses`]): from the `SmartRegionShare`s the
//! inputs read to what the database step enforces, and from what it enforced to the
//! shares' status and the tenant's `status.sharedWithMe`.
//!
//! A tenant's reconcile does both sides: as a provider, its shares' views and grants; as
//! a consumer, its reader's grants on what is shared with it (for a consumer that
//! appears after its provider). Nothing crosses namespaces on the Kubernetes side: no
//! Secret is copied, the consumer reads with its own reader login.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};

use super::child_status;
use super::conditions::Reason;
use crate::crd::{
    RowFilter, ShareConsumer, ShareState, SharedWith, SmartRegionShare, SmartRegionShareStatus,
};
use crate::database::names::TenantDb;
use crate::database::shares::{self, Share};
use crate::tenant::TenantName;

/// One of the tenant's own shares, as the database step enforces it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Declared {
    pub share: Share,
    /// Its consumers, but the provider itself (which the admission policy refuses).
    pub consumers: Vec<TenantName>,
}

/// The tenant's own shares, from the objects in its namespace.
pub fn declared(shares: &[SmartRegionShare], provider: &TenantName) -> Vec<Declared> {
    let mut declared: Vec<Declared> = shares
        .iter()
        .filter(|share| share.metadata.deletion_timestamp.is_none())
        .map(|object| {
            let spec = &object.spec;
            Declared {
                share: rows(object.name_any(), &spec.rows),
                consumers: spec
                    .consumers
                    .iter()
                    .filter_map(|name| TenantName::parse(name).ok())
                    .filter(|name| name != provider)
                    .collect(),
            }
        })
        .collect();
    declared.sort_by(|a, b| a.share.name.cmp(&b.share.name));
    declared
}

/// A row filter as the database step enforces it, named `name` (a share's or an open
/// dataset's).
pub(super) fn rows(name: String, filter: &RowFilter) -> Share {
    Share {
        name,
        metrics: sorted(&filter.metrics),
        metric_prefixes: sorted(&filter.metric_prefixes),
        sensors: sorted(&filter.sensors),
        sensor_prefixes: sorted(&filter.sensor_prefixes),
        since: filter.since.as_ref().map(|time| time.0.to_string()),
    }
}

/// In a canonical order: reordering a list in the spec changes no view.
fn sorted(values: &[String]) -> Vec<String> {
    let mut values = values.to_vec();
    values.sort();
    values.dedup();
    values
}

/// What other tenants share with this one: (provider, share), from the shares that list
/// it, each in a namespace named with the tenant prefix.
pub fn shared_with(shares: &[SmartRegionShare], prefix: &str) -> Vec<(TenantName, String)> {
    let mut shared: Vec<(TenantName, String)> = shares
        .iter()
        .filter(|share| share.metadata.deletion_timestamp.is_none())
        .filter_map(|share| {
            let namespace = share.namespace()?;
            let provider = TenantName::parse(namespace.strip_prefix(prefix)?).ok()?;
            Some((provider, share.name_any()))
        })
        .collect();
    shared.sort();
    shared
}

/// `status.sharedWithMe` of the consumer.
pub fn shared_with_me(shared: &[(TenantName, String)]) -> Vec<SharedWith> {
    shared
        .iter()
        .map(|(provider, share)| {
            let db = TenantDb::for_tenant(provider);
            SharedWith {
                provider: provider.to_string(),
                share: share.clone(),
                read_as: shares::read_as(&db, &shares::view(share)),
                sensors_read_as: shares::read_as(&db, &shares::sensors_view(share)),
            }
        })
        .collect()
}

/// The tenants a change to a share concerns: its provider (by its namespace) and its
/// consumers, those it lists now and those its status still lists (a consumer just
/// taken off the list learns it from its own reconcile).
pub fn tenants_of_share(
    namespace_prefix: &str,
) -> impl Fn(SmartRegionShare) -> Vec<kube::runtime::reflector::ObjectRef<crate::crd::SmartRegionTenant>>
+ Clone
+ Send
+ Sync
+ 'static {
    let prefix = namespace_prefix.to_string();
    move |share: SmartRegionShare| {
        let provider = share
            .namespace()
            .and_then(|namespace| namespace.strip_prefix(&prefix).map(str::to_string));
        let listed = share.spec.consumers.iter().cloned();
        let before = share
            .status
            .iter()
            .flat_map(|status| status.consumers.iter().map(|c| c.tenant.clone()));
        let mut tenants: Vec<String> = provider.into_iter().chain(listed).chain(before).collect();
        tenants.sort();
        tenants.dedup();
        tenants
            .into_iter()
            .map(|tenant| kube::runtime::reflector::ObjectRef::new(&tenant))
            .collect()
    }
}

/// The providers whose shares concern a tenant that changed or went: those whose shares
/// list it as a consumer, now or in their status. A consumer deleted, created or
/// suspended changes what its providers' shares say and grant, and no share changes
/// with it.
pub fn providers_sharing_with(
    shares: kube::runtime::reflector::Store<SmartRegionShare>,
    namespace_prefix: &str,
) -> impl Fn(
    crate::crd::SmartRegionTenant,
) -> Vec<kube::runtime::reflector::ObjectRef<crate::crd::SmartRegionTenant>>
+ Send
+ Sync
+ 'static {
    let prefix = namespace_prefix.to_string();
    move |tenant: crate::crd::SmartRegionTenant| {
        let name = tenant.name_any();
        let mut providers: Vec<String> = shares
            .state()
            .iter()
            .filter(|share| {
                share.spec.consumers.contains(&name)
                    || share
                        .status
                        .iter()
                        .any(|status| status.consumers.iter().any(|c| c.tenant == name))
            })
            .filter_map(|share| {
                share
                    .namespace()
                    .and_then(|namespace| namespace.strip_prefix(&prefix).map(str::to_string))
            })
            .filter(|provider| *provider != name)
            .collect();
        providers.sort();
        providers.dedup();
        providers
            .iter()
            .map(|provider| kube::runtime::reflector::ObjectRef::new(provider))
            .collect()
    }
}

/// What the provider's database step made of a share.
#[derive(Clone, Copy, Debug)]
pub enum Enforced<'a> {
    /// In place; these consumers' readers may read it.
    Active(&'a [TenantName]),
    /// The provider's tier does not allow sharing: no view.
    Forbidden,
    /// The step failed, for this reason.
    Failed(&'a str),
}

/// The status a share has after the provider's database step, its last one `previous`.
pub fn share_status(
    object: &SmartRegionShare,
    previous: Option<&SmartRegionShareStatus>,
    provider: &TenantName,
    declared: Option<&Declared>,
    enforced: Enforced<'_>,
    now: &Time,
) -> SmartRegionShareStatus {
    let db = TenantDb::for_tenant(provider);
    let name = object.name_any();
    let consumers: Vec<ShareConsumer> = declared
        .map(|d| d.consumers.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|tenant| ShareConsumer {
            state: match enforced {
                Enforced::Active(active) if active.contains(&tenant) => ShareState::Active,
                _ => ShareState::WaitingForConsumer,
            },
            tenant: tenant.to_string(),
        })
        .collect();
    let waiting: Vec<&str> = consumers
        .iter()
        .filter(|c| c.state == ShareState::WaitingForConsumer)
        .map(|c| c.tenant.as_str())
        .collect();
    let read_as = shares::read_as(&db, &shares::view(&name));
    let (ok, reason, message) = match enforced {
        Enforced::Failed(why) => (false, Reason::ShareFailed, why.to_string()),
        Enforced::Forbidden => (
            false,
            Reason::SharingForbidden,
            "the platform does not allow this tenant's tier to share data (the tiers' \
             `sharing` setting); nothing of it is readable by others"
                .to_string(),
        ),
        Enforced::Active(_) if waiting.is_empty() => (
            true,
            Reason::Shared,
            format!("every consumer's db-reader may read {read_as}"),
        ),
        Enforced::Active(_) => (
            false,
            Reason::WaitingForConsumers,
            format!(
                "{read_as} is in place; {} cannot read it yet: no tenant of that name with \
                 its database part in place (it may read once there is)",
                waiting.join(", ")
            ),
        ),
    };
    let mut message = message;
    if object.spec.consumers.iter().any(|c| c == provider.as_str()) {
        message.push_str(&format!(
            "; {provider} is the tenant that shares and is left out of its consumers"
        ));
    }
    let generation = object.metadata.generation;
    let previous = previous
        .map(|p| p.conditions.as_slice())
        .unwrap_or_default();
    SmartRegionShareStatus {
        observed_generation: generation,
        conditions: vec![child_status::ready(
            previous, generation, ok, reason, message, now,
        )],
        read_as: Some(read_as),
        sensors_read_as: Some(shares::read_as(&db, &shares::sensors_view(&name))),
        consumers,
    }
}

/// The Events that announce what changed for a share's consumers: granted, revoked.
pub fn share_events(
    previous: Option<&SmartRegionShareStatus>,
    next: &SmartRegionShareStatus,
) -> Vec<Event> {
    let active = |status: Option<&SmartRegionShareStatus>| -> Vec<String> {
        status
            .map(|s| {
                s.consumers
                    .iter()
                    .filter(|c| c.state == ShareState::Active)
                    .map(|c| c.tenant.clone())
                    .collect()
            })
            .unwrap_or_default()
    };
    let (before, after) = (active(previous), active(Some(next)));
    let read_as = next.read_as.clone().unwrap_or_default();
    let event = |reason: Reason, tenant: &str, note: String| Event {
        type_: EventType::Normal,
        reason: reason.as_str().into(),
        note: Some(format!("{tenant}: {note}")),
        action: "Share".into(),
        secondary: None,
    };
    let granted = after.iter().filter(|t| !before.contains(t)).map(|t| {
        event(
            Reason::Granted,
            t,
            format!("its db-reader may read {read_as}"),
        )
    });
    let revoked = before.iter().filter(|t| !after.contains(t)).map(|t| {
        event(
            Reason::Revoked,
            t,
            format!("its db-reader may no longer read {read_as}"),
        )
    });
    granted.chain(revoked).collect()
}

/// Writes each share's status where it changed (never on an idle reconcile), with its
/// Events; `desired` makes a share's status from its last one. Returns the writes made.
pub async fn update_share_statuses(
    client: &Client,
    recorder: &Recorder,
    shares: &[SmartRegionShare],
    desired: impl Fn(&SmartRegionShare, Option<&SmartRegionShareStatus>) -> SmartRegionShareStatus,
) -> Result<usize, kube::Error> {
    let mut writes = 0;
    for object in shares {
        let api = Api::namespaced(client.clone(), &object.namespace().unwrap_or_default());
        let Some((previous, status)) =
            child_status::write(&api, object, |previous| desired(object, previous)).await?
        else {
            continue;
        };
        writes += 1;
        for event in share_events(previous.as_ref(), &status) {
            if let Err(error) = recorder.publish(&event, &object.object_ref(&())).await {
                tracing::warn!(share = %object.name_any(), %error, "failed to record an Event");
            }
        }
    }
    Ok(writes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    fn object(namespace: &str, name: &str, consumers: &[&str]) -> SmartRegionShare {
        SmartRegionShare {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                generation: Some(1),
                ..ObjectMeta::default()
            },
            spec: crate::crd::SmartRegionShareSpec {
                consumers: consumers.iter().map(|c| c.to_string()).collect(),
                rows: RowFilter {
                    metrics: vec!["river_level".into(), "flow".into(), "flow".into()],
                    ..RowFilter::default()
                },
            },
            status: None,
        }
    }

    fn name(text: &str) -> TenantName {
        TenantName::parse(text).unwrap()
    }

    #[test]
    fn a_share_concerns_its_provider_and_every_consumer_before_and_after() {
        let mut share = object("srt-publiacqua", "river-levels", &["firenze"]);
        share.status = Some(SmartRegionShareStatus {
            consumers: vec![ShareConsumer {
                tenant: "pisa".into(),
                state: ShareState::Active,
            }],
            ..SmartRegionShareStatus::default()
        });
        let names: Vec<String> = tenants_of_share("srt-")(share)
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, ["firenze", "pisa", "publiacqua"]);
        let elsewhere = object("default", "bait", &["firenze"]);
        let names: Vec<String> = tenants_of_share("srt-")(elsewhere)
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, ["firenze"]);
    }

    #[test]
    fn a_consumer_that_changes_or_goes_concerns_the_providers_sharing_with_it() {
        let (store, mut writer) = kube::runtime::reflector::store();
        for share in [
            object("srt-publiacqua", "river-levels", &["firenze", "cm-firenze"]),
            object("srt-prato", "air-quality", &["firenze"]),
            object("srt-alia", "waste", &["prato"]),
            object("kube-system", "bait", &["firenze"]),
        ] {
            writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(share));
        }
        let mut tenant = crate::crd::SmartRegionTenant::new(
            "firenze",
            serde_json::from_value(serde_json::json!({
                "displayName": "Comune di Firenze",
                "entity": { "type": "Comune", "istatCode": "048017" },
                "admins": { "groups": ["firenze-admins"] },
            }))
            .unwrap(),
        );
        let providers = providers_sharing_with(store, "srt-");
        let names = |refs: Vec<kube::runtime::reflector::ObjectRef<_>>| {
            refs.into_iter().map(|r| r.name).collect::<Vec<_>>()
        };
        assert_eq!(
            names(providers(tenant.clone())),
            vec!["prato", "publiacqua"]
        );
        tenant.metadata.name = Some("alia".into());
        assert!(providers(tenant).is_empty());
    }

    #[test]
    fn a_provider_never_shares_with_itself_and_lists_are_canonical() {
        let shares = [object(
            "srt-publiacqua",
            "river-levels",
            &["firenze", "publiacqua"],
        )];
        let declared = declared(&shares, &name("publiacqua"));
        assert_eq!(declared[0].consumers, vec![name("firenze")]);
        assert_eq!(declared[0].share.metrics, vec!["flow", "river_level"]);
    }

    #[test]
    fn what_is_shared_with_a_tenant_is_named_by_provider_and_share() {
        let shares = [
            object("srt-publiacqua", "river-levels", &["firenze"]),
            object("kube-system", "bait", &["firenze"]),
        ];
        let shared = shared_with(&shares, "srt-");
        assert_eq!(
            shared,
            vec![(name("publiacqua"), "river-levels".to_string())]
        );
        let listed = shared_with_me(&shared);
        assert_eq!(listed[0].read_as, "s_publiacqua.river_levels");
        assert_eq!(
            listed[0].sensors_read_as,
            "s_publiacqua.river_levels__sensors"
        );
    }

    #[test]
    fn a_share_is_ready_when_every_consumer_reads_and_says_who_waits() {
        let share = object("srt-publiacqua", "river-levels", &["firenze", "pisa"]);
        let provider = name("publiacqua");
        let declared = declared(std::slice::from_ref(&share), &provider);
        let now = Time(k8s_openapi::jiff::Timestamp::from_second(100).unwrap());
        let waiting = share_status(
            &share,
            None,
            &provider,
            declared.first(),
            Enforced::Active(&[name("firenze")]),
            &now,
        );
        assert_eq!(waiting.conditions[0].status, "False");
        assert_eq!(waiting.conditions[0].reason, "WaitingForConsumers");
        assert!(waiting.conditions[0].message.contains("pisa"));
        assert_eq!(
            waiting.read_as.as_deref(),
            Some("s_publiacqua.river_levels")
        );
        let both = [name("firenze"), name("pisa")];
        let ready = share_status(
            &share,
            Some(&waiting),
            &provider,
            declared.first(),
            Enforced::Active(&both),
            &now,
        );
        assert_eq!(ready.conditions[0].status, "True");
        let events: Vec<String> = share_events(Some(&waiting), &ready)
            .into_iter()
            .map(|e| e.reason)
            .collect();
        assert_eq!(events, ["Granted"]);
        let events: Vec<String> = share_events(Some(&ready), &waiting)
            .into_iter()
            .map(|e| e.reason)
            .collect();
        assert_eq!(events, ["Revoked"]);
    }
}
