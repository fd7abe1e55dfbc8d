//! The catalogue the read service writes (`smartregion_ingest::read::dcat`), through the
//! harvester's own code: ckanext-dcat parses it into the dataset dictionaries CKAN would
//! store, with the fields the catalogue declares, in Turtle and in JSON-LD; the project's
//! DCAT-AP_IT shapes pass it, and fail a catalogue that lacks a mandatory property.
//! (The same check runs on the live service's catalogue in `cluster::open_data`.)

use serde_json::Value;
use smartregion_e2e::dcat::{Format, extra, harvest};
use smartregion_ingest::read::dcat::*;

fn catalogue() -> Catalogue {
    let time: jiff::Timestamp = "2026-12-06T10:00:00Z".parse().unwrap();
    let dataset = |name: &str, title: &str, licence| {
        let uri = format!("https://prato.example.it/open/{name}");
        Dataset {
            name: name.into(),
            uri: uri.clone(),
            identifier: format!("c_g999:{name}"),
            title: title.into(),
            description: "Medie \"orarie\" <validate> & non;\nseconda riga @prefix x: <y> .".into(),
            keywords: vec!["aria".into(), "pm10".into()],
            themes: vec![Theme::Envi, Theme::Heal],
            accrual_periodicity: Frequency::Hourly,
            licence,
            contact: Contact {
                name: "Ufficio Ambiente".into(),
                email: "ambiente@comune.prato.it".into(),
            },
            temporal: Some(("2025-12-06T10:00:00Z".parse().unwrap(), time)),
            modified: time,
            period: "PT1H".into(),
            distributions: vec![
                Distribution {
                    format: DistributionFormat::Csv,
                    access_url: format!("{uri}/v2/attrs"),
                    download_url: format!(
                        "{uri}/v2/attrs?aggrMethod=avg&aggrPeriod=PT1H&format=csv"
                    ),
                    title: "Aggregati (CSV)".into(),
                },
                Distribution {
                    format: DistributionFormat::Json,
                    access_url: format!("{uri}/v2/attrs"),
                    download_url: format!(
                        "{uri}/v2/attrs?aggrMethod=avg&aggrPeriod=PT1H&format=json"
                    ),
                    title: "Aggregati (JSON)".into(),
                },
            ],
        }
    };
    Catalogue {
        uri: "https://prato.example.it/open/catalog".into(),
        title: "Dati aperti di Comune di Prato".into(),
        description: "Misure aggregate dei sensori".into(),
        homepage: "https://prato.example.it".into(),
        language: "it".into(),
        publisher: Agent {
            name: "Comune di Prato".into(),
            ipa_code: "c_g999".into(),
        },
        modified: time,
        datasets: vec![
            dataset(
                "air-quality",
                "Qualità dell'aria \"urbana\" & <altro>",
                Licence::CcBy40,
            ),
            dataset("traffic", "Traffico", Licence::Iodl20),
        ],
    }
}

/// The dataset dictionary of `name`, by its identifier.
fn by_identifier<'a>(datasets: &'a [Value], identifier: &str) -> &'a Value {
    datasets
        .iter()
        .find(|dataset| extra(dataset, "identifier") == Some(identifier))
        .unwrap_or_else(|| panic!("no dataset {identifier} in {datasets:#?}"))
}

#[test]
fn ckan_harvests_every_declared_field_from_the_catalogue_in_both_serialisations() {
    let catalogue = catalogue();
    for (format, text) in [
        (Format::Turtle, turtle(&catalogue)),
        (Format::JsonLd, json_ld(&catalogue)),
    ] {
        let harvest = harvest(&text, format).unwrap_or_else(|error| panic!("{error:#}"));
        assert!(harvest.conforms, "{format:?}: {}", harvest.report);
        assert_eq!(harvest.datasets.len(), 2, "{format:?}");
        let air = by_identifier(&harvest.datasets, "c_g999:air-quality");
        assert_eq!(air["title"], "Qualità dell'aria \"urbana\" & <altro>");
        assert!(
            air["notes"]
                .as_str()
                .unwrap()
                .contains("seconda riga @prefix")
        );
        assert_eq!(
            extra(air, "uri"),
            Some("https://prato.example.it/open/air-quality")
        );
        assert_eq!(
            extra(air, "frequency"),
            Some("http://publications.europa.eu/resource/authority/frequency/HOURLY")
        );
        let themes: Value = serde_json::from_str(extra(air, "theme").unwrap()).unwrap();
        assert_eq!(
            themes,
            serde_json::json!([
                "http://publications.europa.eu/resource/authority/data-theme/ENVI",
                "http://publications.europa.eu/resource/authority/data-theme/HEAL"
            ])
        );
        assert_eq!(extra(air, "publisher_name"), Some("Comune di Prato"));
        assert_eq!(extra(air, "contact_name"), Some("Ufficio Ambiente"));
        assert_eq!(
            extra(air, "contact_email"),
            Some("ambiente@comune.prato.it")
        );
        assert!(
            extra(air, "temporal_start")
                .unwrap()
                .starts_with("2025-12-06")
        );
        let tags: Vec<&str> = air["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|tag| tag["name"].as_str().unwrap())
            .collect();
        assert_eq!(tags.len(), 2, "{tags:?}");
        let resources = air["resources"].as_array().unwrap();
        assert_eq!(resources.len(), 2);
        for resource in resources {
            assert!(
                resource["url"]
                    .as_str()
                    .unwrap()
                    .contains("aggrPeriod=PT1H")
            );
            assert!(
                ["CSV", "JSON"]
                    .iter()
                    .any(|f| resource["format"].as_str().unwrap().ends_with(f))
            );
            assert_eq!(
                resource["license"],
                "https://w3id.org/italia/controlled-vocabulary/licences/A21_CCBY40"
            );
        }
        let traffic = by_identifier(&harvest.datasets, "c_g999:traffic");
        assert_eq!(
            traffic["resources"][0]["license"],
            "https://w3id.org/italia/controlled-vocabulary/licences/A29_IODL20"
        );
    }
}

#[test]
fn the_shapes_refuse_a_catalogue_without_a_mandatory_property_or_outside_the_vocabularies() {
    let text = turtle(&catalogue());
    for (what, broken, named) in [
        // The rights holder is mandatory on every dataset (DCAT-AP_IT): renamed away.
        (
            "no rights holder",
            text.replace("dct:rightsHolder", "<http://example.org/holder>"),
            "rightsHolder",
        ),
        // A theme outside the EU data-theme vocabulary.
        (
            "a theme of no vocabulary",
            text.replace(
                "http://publications.europa.eu/resource/authority/data-theme/ENVI",
                "http://example.org/themes/ENVI",
            ),
            "theme",
        ),
        // A distribution without its licence (renamed away).
        (
            "no licence",
            text.replace("dct:license", "<http://example.org/terms>"),
            "license",
        ),
    ] {
        assert_ne!(broken, text, "{what}");
        let harvest =
            harvest(&broken, Format::Turtle).unwrap_or_else(|error| panic!("{what}: {error:#}"));
        assert!(!harvest.conforms, "{what}: the shapes passed it");
        assert!(harvest.report.contains(named), "{what}: {}", harvest.report);
    }
}
