//! How every kind's status is written (the tenant's, its shares' and its open datasets'),
//! and the one `Ready` condition of shares and datasets.

use std::fmt::Debug;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::core::object::HasStatus;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::conditions::Reason;

/// The `Ready` condition of an object whose last status had `previous`: the transition
/// time is kept while the state stays the same.
pub fn ready(
    previous: &[Condition],
    generation: Option<i64>,
    ok: bool,
    reason: Reason,
    message: String,
    now: &Time,
) -> Condition {
    let state = if ok { "True" } else { "False" };
    let since = previous
        .iter()
        .find(|c| c.type_ == "Ready")
        .filter(|c| c.status == state)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: "Ready".into(),
        status: state.into(),
        reason: reason.as_str().into(),
        message,
        last_transition_time: since,
        observed_generation: generation,
    }
}

/// A status written: the one it replaced and the new one.
pub type Written<S> = (Option<S>, S);

/// Writes `object`'s status through `api` (its namespace's, or the cluster's for a
/// tenant) as `desired` makes it from the current one, unless that is what the object
/// already has (never on an idle reconcile). The object comes from the watch cache, which
/// may not have seen this operator's own last write (compared with the cache alone, an
/// idle tenant once got its unchanged status written again): when the cache differs, the
/// status as the server has it decides. Fields the new status no longer has are removed
/// (a merge patch writes them null).
pub async fn write<K>(
    api: &Api<K>,
    object: &K,
    desired: impl Fn(Option<&K::Status>) -> K::Status,
) -> Result<Option<Written<K::Status>>, kube::Error>
where
    K: Resource<DynamicType = ()> + HasStatus + Clone + Debug + DeserializeOwned,
    K::Status: PartialEq + Clone + Serialize,
{
    if object.status() == Some(&desired(object.status())) {
        return Ok(None);
    }
    let name = object.name_any();
    let fresh = api.get_status(&name).await?;
    let previous = fresh.status().cloned();
    let status = desired(previous.as_ref());
    if previous.as_ref() == Some(&status) {
        return Ok(None);
    }
    api.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": merge_patch(previous.as_ref(), &status) })),
    )
    .await?;
    Ok(Some((previous, status)))
}

/// `next` as a merge patch over `previous`: every top-level field `previous` has and
/// `next` leaves out becomes null.
pub(super) fn merge_patch<S: Serialize>(previous: Option<&S>, next: &S) -> serde_json::Value {
    let mut value = serde_json::to_value(next).expect("a status serializes");
    let before = previous.map(|p| serde_json::to_value(p).expect("a status serializes"));
    if let (Some(serde_json::Value::Object(before)), serde_json::Value::Object(after)) =
        (before, &mut value)
    {
        for field in before.keys() {
            after
                .entry(field.clone())
                .or_insert(serde_json::Value::Null);
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::SmartRegionDatasetStatus;

    fn at(second: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(second).unwrap())
    }

    #[test]
    fn the_transition_time_is_kept_while_the_state_stays() {
        let first = ready(
            &[],
            Some(1),
            false,
            Reason::PublishFailed,
            "x".into(),
            &at(10),
        );
        assert_eq!(first.last_transition_time, at(10));
        let same = ready(
            std::slice::from_ref(&first),
            Some(2),
            false,
            Reason::PublishFailed,
            "y".into(),
            &at(20),
        );
        assert_eq!(same.last_transition_time, at(10));
        assert_eq!(same.observed_generation, Some(2));
        let flipped = ready(
            &[same],
            Some(2),
            true,
            Reason::Published,
            "z".into(),
            &at(30),
        );
        assert_eq!(
            (flipped.status.as_str(), flipped.last_transition_time),
            ("True", at(30))
        );
    }

    #[test]
    fn a_field_the_new_status_leaves_out_is_written_null() {
        let published = SmartRegionDatasetStatus {
            url: Some("https://read.example/open/aq".into()),
            read_as: Some("o_prato.aq".into()),
            ..SmartRegionDatasetStatus::default()
        };
        let withdrawn = SmartRegionDatasetStatus {
            observed_generation: Some(3),
            ..SmartRegionDatasetStatus::default()
        };
        let patch = merge_patch(Some(&published), &withdrawn);
        assert_eq!(patch["url"], serde_json::Value::Null);
        assert_eq!(patch["readAs"], serde_json::Value::Null);
        assert_eq!(patch["observedGeneration"], 3);
        assert_eq!(
            merge_patch(None, &published).get("observedGeneration"),
            None
        );
    }
}
