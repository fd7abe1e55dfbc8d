//! The committed CRD under `crds/`, and its copy in the Helm chart, are exactly what the
//! code generates.

use std::path::Path;

const COMMITTED: &str = "crds/smartregiontenants.smartregion.toscana.it.yaml";
const IN_CHART: &str =
    "charts/smartregion-operator/crds/smartregiontenants.smartregion.toscana.it.yaml";

#[test]
fn committed_crd_matches_the_generated_one() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let generated = smartregion_operator::crd_yaml().expect("the CRD serialises");
    for file in [COMMITTED, IN_CHART] {
        let committed = std::fs::read_to_string(root.join(file))
            .unwrap_or_else(|error| panic!("cannot read {file}: {error}"));
        assert!(
            committed == generated,
            "{file} is stale: the SmartRegionTenant types changed. Regenerate both copies with\n  \
             cargo run -q -p smartregion-operator -- crd > {COMMITTED} && cp {COMMITTED} {IN_CHART}\n\
             and commit the result (docs/api-reference.md too: see its header)."
        );
    }
}

#[test]
fn generated_crd_is_cluster_scoped_with_status_and_short_name() {
    let crd: serde_yaml::Value =
        serde_yaml::from_str(&smartregion_operator::crd_yaml().unwrap()).unwrap();
    assert_eq!(crd["spec"]["scope"], "Cluster");
    assert_eq!(crd["spec"]["group"], "smartregion.toscana.it");
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "srt");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(version["subresources"]["status"].is_mapping());
}
