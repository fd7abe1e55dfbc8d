//! The open-data catalogue in DCAT-AP_IT, the Italian profile of DCAT-AP that CKAN's
//! harvesters (dati.toscana.it, dati.gov.it) read: the graph built with `oxrdf`, written
//! as Turtle by `oxttl` or as JSON-LD by `oxjsonld` (so every literal and IRI is escaped
//! by the writer, whatever a title or description holds). Pure.
//!
//! What is written, by class (docs/open-data.md has the reasons):
//! - `dcat:Catalog`, `dcatapit:Catalog`: title, description, publisher, modified,
//!   homepage, language, its datasets.
//! - `dcat:Dataset`, `dcatapit:Dataset`: `dct:identifier` (`<IPA code>:<name>`), title,
//!   description, modified, `dcat:theme` (EU data themes), `dct:accrualPeriodicity` (EU
//!   frequencies), `dct:rightsHolder` and `dct:publisher` (the ente as
//!   `dcatapit:Agent` with its IPA code), `dcat:contactPoint` (`dcatapit:Organization`,
//!   `vcard:Kind` with `vcard:fn` and `vcard:hasEmail`), keywords, `dct:temporal`, language,
//!   `dcat:landingPage`, distributions.
//! - `dcat:Distribution`, `dcatapit:Distribution`: `dct:format` (EU file types),
//!   `dcat:accessURL`, `dcat:downloadURL`, title, `dct:license`: the licence's concept in
//!   the Italian licence vocabulary, a `dct:LicenseDocument` with its ADMS licence type,
//!   name, version and `dcatapit:referenceDoc` (its legal text).

use jiff::Timestamp;
use oxrdf::vocab::{rdf, xsd};
use oxrdf::{BlankNode, Literal, NamedNode, NamedOrBlankNode, Term, Triple};

const DCAT: &str = "http://www.w3.org/ns/dcat#";
const DCT: &str = "http://purl.org/dc/terms/";
const DCATAPIT: &str = "http://dati.gov.it/onto/dcatapit#";
const FOAF: &str = "http://xmlns.com/foaf/0.1/";
const VCARD: &str = "http://www.w3.org/2006/vcard/ns#";
const SCHEMA: &str = "http://schema.org/";
const THEMES: &str = "http://publications.europa.eu/resource/authority/data-theme/";
const FREQUENCIES: &str = "http://publications.europa.eu/resource/authority/frequency/";
const FILE_TYPES: &str = "http://publications.europa.eu/resource/authority/file-type/";
const LANGUAGES: &str = "http://publications.europa.eu/resource/authority/language/";
const LICENCE_TYPES: &str = "http://purl.org/adms/licencetype/";
/// The Italian licence vocabulary DCAT-AP_IT (and ckanext-dcatapit) names licences by.
const ITALIAN_LICENCES: &str = "https://w3id.org/italia/controlled-vocabulary/licences/";
const OWL_VERSION_INFO: &str = "http://www.w3.org/2002/07/owl#versionInfo";

/// The prefixes both serialisations declare.
const PREFIXES: &[(&str, &str)] = &[
    ("dcat", DCAT),
    ("dct", DCT),
    ("dcatapit", DCATAPIT),
    ("foaf", FOAF),
    ("vcard", VCARD),
    ("schema", SCHEMA),
    ("xsd", "http://www.w3.org/2001/XMLSchema#"),
];

/// The catalogue of one tenant's open datasets.
#[derive(Clone, Debug, PartialEq)]
pub struct Catalogue {
    /// The catalogue's own URL, e.g. `https://prato.example.it/open/catalog`.
    pub uri: String,
    pub title: String,
    pub description: String,
    /// The read service's public base URL.
    pub homepage: String,
    /// ISO 639-1, e.g. `it`.
    pub language: String,
    pub publisher: Agent,
    pub modified: Timestamp,
    pub datasets: Vec<Dataset>,
}

/// The ente that publishes, as DCAT-AP_IT names it: by its IPA code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agent {
    pub name: String,
    pub ipa_code: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contact {
    pub name: String,
    pub email: String,
}

pub use smartregion_contract::open_data::{Frequency, Licence, Theme};

/// A licence as DCAT-AP_IT describes it.
struct LicenceTerms {
    /// Its code in the Italian licence vocabulary (the concept's IRI ends with it).
    code: &'static str,
    /// Its ADMS licence type.
    kind: &'static str,
    name: &'static str,
    version: &'static str,
    /// Its legal text (`dcatapit:referenceDoc`).
    document: &'static str,
}

/// The licence's terms, as DCAT-AP_IT describes them.
fn terms(licence: Licence) -> LicenceTerms {
    match licence {
        Licence::CcBy40 => LicenceTerms {
            code: "A21_CCBY40",
            kind: "Attribution",
            name: "Creative Commons Attribuzione 4.0 Internazionale (CC BY 4.0)",
            version: "4.0",
            document: "https://creativecommons.org/licenses/by/4.0/",
        },
        // The vocabulary spells it with the letter O: CCO.
        Licence::Cc010 => LicenceTerms {
            code: "A11_CCO10",
            kind: "PublicDomain",
            name: "Creative Commons CC0 1.0 Universale - Public Domain Dedication (CC0 1.0)",
            version: "1.0",
            document: "https://creativecommons.org/publicdomain/zero/1.0/",
        },
        Licence::CcBySa40 => LicenceTerms {
            code: "A31_CCBYSA40",
            kind: "ViralEffect-ShareAlike",
            name: "Creative Commons Attribuzione - Condividi allo stesso modo 4.0 Internazionale (CC BY-SA 4.0)",
            version: "4.0",
            document: "https://creativecommons.org/licenses/by-sa/4.0/",
        },
        Licence::Iodl20 => LicenceTerms {
            code: "A29_IODL20",
            kind: "Attribution",
            name: "Italian Open Data License 2.0 (IODL 2.0)",
            version: "2.0",
            document: "https://www.dati.gov.it/content/italian-open-data-license-v20",
        },
    }
}

/// The licence's concept in the Italian licence vocabulary.
pub fn licence_iri(licence: Licence) -> String {
    format!("{ITALIAN_LICENCES}{}", terms(licence).code)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DistributionFormat {
    Csv,
    Json,
}

impl DistributionFormat {
    /// The code in the EU file-type vocabulary, and the media type.
    fn facts(self) -> (&'static str, &'static str) {
        match self {
            DistributionFormat::Csv => ("CSV", "text/csv"),
            DistributionFormat::Json => ("JSON", "application/json"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Distribution {
    pub format: DistributionFormat,
    /// Where the data is reached (the API's series of the dataset).
    pub access_url: String,
    /// A file of it: the aggregates of the last day.
    pub download_url: String,
    pub title: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// Its name (a DNS label).
    pub name: String,
    /// Its URL, also its landing page.
    pub uri: String,
    /// `<IPA code>:<name>`, DCAT-AP_IT's identifier.
    pub identifier: String,
    pub title: String,
    pub description: String,
    pub keywords: Vec<String>,
    pub themes: Vec<Theme>,
    pub accrual_periodicity: Frequency,
    pub licence: Licence,
    pub contact: Contact,
    /// The first and last instant the data covers, when known.
    pub temporal: Option<(Timestamp, Timestamp)>,
    pub modified: Timestamp,
    /// The published granularity, ISO 8601 (`PT1H`).
    pub period: String,
    pub distributions: Vec<Distribution>,
}

/// The catalogue's triples, built with IRIs the caller's URLs must make valid.
struct Graph {
    triples: Vec<Triple>,
}

fn iri(text: &str) -> NamedNode {
    NamedNode::new(text).unwrap_or_else(|_| {
        // A URL from the configuration that is not an IRI: kept, percent-encoded, so the
        // catalogue stays well-formed.
        let encoded: String = text
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-._~:/?#[]@!$&'()*+,;=%".contains(c) {
                    c.to_string()
                } else {
                    c.to_string().bytes().map(|b| format!("%{b:02X}")).collect()
                }
            })
            .collect();
        NamedNode::new_unchecked(encoded)
    })
}

fn term(namespace: &str, local: &str) -> NamedNode {
    NamedNode::new_unchecked(format!("{namespace}{local}"))
}

fn text(value: &str) -> Term {
    Literal::new_simple_literal(value).into()
}

fn italian(value: &str) -> Term {
    Literal::new_language_tagged_literal_unchecked(value, "it").into()
}

fn date(time: Timestamp) -> Term {
    Literal::new_typed_literal(time.strftime("%Y-%m-%d").to_string(), xsd::DATE).into()
}

fn date_time(time: Timestamp) -> Term {
    Literal::new_typed_literal(
        time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        xsd::DATE_TIME,
    )
    .into()
}

impl Graph {
    fn add(
        &mut self,
        subject: impl Into<NamedOrBlankNode>,
        predicate: NamedNode,
        object: impl Into<Term>,
    ) {
        self.triples
            .push(Triple::new(subject.into(), predicate, object.into()));
    }

    fn types(&mut self, subject: &NamedOrBlankNode, classes: &[(&str, &str)]) {
        for (namespace, local) in classes {
            self.add(
                subject.clone(),
                rdf::TYPE.into_owned(),
                term(namespace, local),
            );
        }
    }

    /// The ente: `dcatapit:Agent` with its name and IPA code.
    fn agent(&mut self, agent: &Agent) -> NamedOrBlankNode {
        let node: NamedOrBlankNode = BlankNode::default().into();
        self.types(&node, &[(DCATAPIT, "Agent"), (FOAF, "Agent")]);
        self.add(node.clone(), term(FOAF, "name"), italian(&agent.name));
        self.add(node.clone(), term(DCT, "identifier"), text(&agent.ipa_code));
        node
    }

    fn dataset(&mut self, dataset: &Dataset, publisher: &Agent) -> NamedOrBlankNode {
        let node: NamedOrBlankNode = iri(&dataset.uri).into();
        self.types(&node, &[(DCAT, "Dataset"), (DCATAPIT, "Dataset")]);
        self.add(
            node.clone(),
            term(DCT, "identifier"),
            text(&dataset.identifier),
        );
        self.add(node.clone(), term(DCT, "title"), italian(&dataset.title));
        self.add(
            node.clone(),
            term(DCT, "description"),
            italian(&dataset.description),
        );
        self.add(node.clone(), term(DCT, "modified"), date(dataset.modified));
        for theme in &dataset.themes {
            self.add(
                node.clone(),
                term(DCAT, "theme"),
                term(THEMES, &theme.to_string()),
            );
        }
        self.add(
            node.clone(),
            term(DCT, "accrualPeriodicity"),
            term(FREQUENCIES, &dataset.accrual_periodicity.to_string()),
        );
        let holder = self.agent(publisher);
        self.add(node.clone(), term(DCT, "rightsHolder"), holder);
        let agent = self.agent(publisher);
        self.add(node.clone(), term(DCT, "publisher"), agent);
        let contact: NamedOrBlankNode = BlankNode::default().into();
        self.types(
            &contact,
            &[
                (DCATAPIT, "Organization"),
                (VCARD, "Kind"),
                (VCARD, "Organization"),
            ],
        );
        self.add(
            contact.clone(),
            term(VCARD, "fn"),
            text(&dataset.contact.name),
        );
        self.add(
            contact.clone(),
            term(VCARD, "hasEmail"),
            iri(&format!("mailto:{}", dataset.contact.email)),
        );
        self.add(node.clone(), term(DCAT, "contactPoint"), contact);
        for keyword in &dataset.keywords {
            self.add(node.clone(), term(DCAT, "keyword"), italian(keyword));
        }
        if let Some((start, end)) = dataset.temporal {
            let period: NamedOrBlankNode = BlankNode::default().into();
            self.types(&period, &[(DCT, "PeriodOfTime")]);
            // DCAT-AP_IT's own, DCAT 2's, and schema.org's: each reader looks for one.
            self.add(period.clone(), term(DCATAPIT, "startDate"), date(start));
            self.add(period.clone(), term(DCATAPIT, "endDate"), date(end));
            self.add(period.clone(), term(DCAT, "startDate"), date_time(start));
            self.add(period.clone(), term(DCAT, "endDate"), date_time(end));
            self.add(period.clone(), term(SCHEMA, "startDate"), date(start));
            self.add(period.clone(), term(SCHEMA, "endDate"), date(end));
            self.add(node.clone(), term(DCT, "temporal"), period);
        }
        self.add(node.clone(), term(DCT, "language"), term(LANGUAGES, "ITA"));
        self.add(node.clone(), term(DCAT, "landingPage"), iri(&dataset.uri));
        self.add(
            node.clone(),
            term(DCAT, "temporalResolution"),
            Literal::new_typed_literal(dataset.period.clone(), xsd::DURATION),
        );
        for distribution in &dataset.distributions {
            let part = self.distribution(distribution, dataset.licence);
            self.add(node.clone(), term(DCAT, "distribution"), part);
        }
        node
    }

    fn distribution(&mut self, distribution: &Distribution, licence: Licence) -> NamedOrBlankNode {
        let node: NamedOrBlankNode = iri(&distribution.download_url).into();
        self.types(&node, &[(DCAT, "Distribution"), (DCATAPIT, "Distribution")]);
        let (code, media_type) = distribution.format.facts();
        self.add(node.clone(), term(DCT, "format"), term(FILE_TYPES, code));
        self.add(node.clone(), term(DCAT, "mediaType"), text(media_type));
        self.add(
            node.clone(),
            term(DCAT, "accessURL"),
            iri(&distribution.access_url),
        );
        self.add(
            node.clone(),
            term(DCAT, "downloadURL"),
            iri(&distribution.download_url),
        );
        self.add(
            node.clone(),
            term(DCT, "title"),
            italian(&distribution.title),
        );
        let terms = terms(licence);
        let document: NamedOrBlankNode = iri(&licence_iri(licence)).into();
        self.types(&document, &[(DCT, "LicenseDocument")]);
        self.add(
            document.clone(),
            term(DCT, "type"),
            term(LICENCE_TYPES, terms.kind),
        );
        self.add(document.clone(), term(FOAF, "name"), italian(terms.name));
        self.add(
            document.clone(),
            NamedNode::new_unchecked(OWL_VERSION_INFO),
            text(terms.version),
        );
        self.add(
            document.clone(),
            term(DCATAPIT, "referenceDoc"),
            Literal::new_typed_literal(terms.document, xsd::ANY_URI),
        );
        self.add(node.clone(), term(DCT, "license"), document);
        node
    }
}

/// The catalogue's graph.
fn graph(catalogue: &Catalogue) -> Vec<Triple> {
    let mut graph = Graph {
        triples: Vec::new(),
    };
    let node: NamedOrBlankNode = iri(&catalogue.uri).into();
    graph.types(&node, &[(DCAT, "Catalog"), (DCATAPIT, "Catalog")]);
    graph.add(node.clone(), term(DCT, "title"), italian(&catalogue.title));
    graph.add(
        node.clone(),
        term(DCT, "description"),
        italian(&catalogue.description),
    );
    let publisher = graph.agent(&catalogue.publisher);
    graph.add(node.clone(), term(DCT, "publisher"), publisher);
    graph.add(
        node.clone(),
        term(DCT, "modified"),
        date(catalogue.modified),
    );
    graph.add(
        node.clone(),
        term(FOAF, "homepage"),
        iri(&catalogue.homepage),
    );
    graph.add(
        node.clone(),
        term(DCT, "language"),
        term(
            LANGUAGES,
            if catalogue.language == "it" {
                "ITA"
            } else {
                "ENG"
            },
        ),
    );
    graph.add(
        node.clone(),
        term(DCAT, "themeTaxonomy"),
        iri("http://publications.europa.eu/resource/authority/data-theme"),
    );
    for dataset in &catalogue.datasets {
        let part = graph.dataset(dataset, &catalogue.publisher);
        graph.add(node.clone(), term(DCAT, "dataset"), part);
    }
    graph.triples
}

/// The catalogue in Turtle.
pub fn turtle(catalogue: &Catalogue) -> String {
    let mut serializer = oxttl::TurtleSerializer::new();
    for (prefix, namespace) in PREFIXES {
        serializer = serializer
            .with_prefix(*prefix, *namespace)
            .expect("the prefixes are IRIs");
    }
    let mut writer = serializer.for_writer(Vec::new());
    // Grouped by subject, so each resource is written once with all its properties.
    let mut triples = graph(catalogue);
    triples.sort_by_cached_key(|triple| triple.subject.to_string());
    for triple in triples {
        writer
            .serialize_triple(&triple)
            .expect("writing to memory cannot fail");
    }
    String::from_utf8(writer.finish().expect("writing to memory cannot fail"))
        .expect("Turtle is UTF-8")
}

/// The catalogue in JSON-LD.
pub fn json_ld(catalogue: &Catalogue) -> String {
    let mut serializer = oxjsonld::JsonLdSerializer::new();
    for (prefix, namespace) in PREFIXES {
        serializer = serializer
            .with_prefix(*prefix, *namespace)
            .expect("the prefixes are IRIs");
    }
    let mut writer = serializer.for_writer(Vec::new());
    for triple in graph(catalogue) {
        writer
            .serialize_quad(triple.as_ref().in_graph(oxrdf::GraphNameRef::DefaultGraph))
            .expect("writing to memory cannot fail");
    }
    String::from_utf8(writer.finish().expect("writing to memory cannot fail"))
        .expect("JSON-LD is UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A catalogue with hostile text in every literal a user writes.
    pub fn sample() -> Catalogue {
        let time: Timestamp = "2026-12-06T10:00:00Z".parse().unwrap();
        let distribution = |format, suffix: &str| Distribution {
            format,
            access_url: "https://prato.example.it/open/aria/v2/attrs".into(),
            download_url: format!(
                "https://prato.example.it/open/aria/v2/attrs?aggrMethod=avg&aggrPeriod=PT1H&format={suffix}"
            ),
            title: "Medie \"orarie\"".into(),
        };
        Catalogue {
            uri: "https://prato.example.it/open/catalog".into(),
            title: "Dati aperti di Comune di Prato".into(),
            description: "Misure aggregate".into(),
            homepage: "https://prato.example.it".into(),
            language: "it".into(),
            publisher: Agent {
                name: "Comune di Prato".into(),
                ipa_code: "c_g999".into(),
            },
            modified: time,
            datasets: vec![Dataset {
                name: "aria".into(),
                uri: "https://prato.example.it/open/aria".into(),
                identifier: "c_g999:aria".into(),
                title: "Qualità dell'aria \"urbana\" <PM10> & \\ ok".into(),
                description: "Riga uno\nriga due \"\"\" ''' ; . @prefix x: <y> .".into(),
                keywords: vec!["aria".into(), "pm10".into()],
                themes: vec![Theme::Envi, Theme::Heal],
                accrual_periodicity: Frequency::Hourly,
                licence: Licence::CcBy40,
                contact: Contact {
                    name: "Ufficio Ambiente".into(),
                    email: "ambiente@comune.prato.it".into(),
                },
                temporal: Some(("2025-12-06T10:00:00Z".parse().unwrap(), time)),
                modified: time,
                period: "PT1H".into(),
                distributions: vec![
                    distribution(DistributionFormat::Csv, "csv"),
                    distribution(DistributionFormat::Json, "json"),
                ],
            }],
        }
    }

    #[test]
    fn the_turtle_parses_back_to_the_same_graph_whatever_the_text() {
        let catalogue = sample();
        let turtle = turtle(&catalogue);
        let parsed: Vec<Triple> = oxttl::TurtleParser::new()
            .for_slice(turtle.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap_or_else(|error| panic!("{error}\n{turtle}"));
        assert_eq!(parsed.len(), graph(&catalogue).len());
        let title = parsed
            .iter()
            .find(|t| {
                t.predicate.as_str() == format!("{DCT}title")
                    && t.subject.to_string().contains("/open/aria>")
            })
            .expect("the dataset's title");
        assert!(
            title.object.to_string().contains("Qualità"),
            "{}",
            title.object
        );
        assert!(turtle.contains("@prefix dcatapit: <http://dati.gov.it/onto/dcatapit#>"));
    }

    #[test]
    fn the_json_ld_parses_back_to_as_many_statements() {
        let catalogue = sample();
        let document = json_ld(&catalogue);
        let value: serde_json::Value = serde_json::from_str(&document).expect("JSON");
        assert!(value["@context"]["dcat"].is_string());
        let parsed: Vec<oxrdf::Quad> = oxjsonld::JsonLdParser::new()
            .for_slice(document.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap_or_else(|error| panic!("{error}\n{document}"));
        assert_eq!(parsed.len(), graph(&catalogue).len());
    }

    #[test]
    fn the_vocabularies_name_every_value_the_crd_allows() {
        use strum::IntoEnumIterator;
        for theme in Theme::iter() {
            assert_eq!(theme.to_string().len(), 4);
        }
        assert_eq!("HOURLY".parse::<Frequency>().unwrap(), Frequency::Hourly);
        assert_eq!("CC-BY-4.0".parse::<Licence>().unwrap(), Licence::CcBy40);
        assert_eq!("IODL-2.0".parse::<Licence>().unwrap(), Licence::Iodl20);
        for licence in Licence::iter() {
            assert!(NamedNode::new(licence_iri(licence)).is_ok());
            assert!(NamedNode::new(terms(licence).document).is_ok());
        }
    }
}
