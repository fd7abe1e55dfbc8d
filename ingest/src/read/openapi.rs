//! The OpenAPI description the service serves on `/openapi.json`, kept equal to the code
//! by the tests below: the same paths, and the query parameters the code takes.

/// OpenAPI 3.1, as served.
pub const DOCUMENT: &str = include_str!("openapi.json");

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::DOCUMENT;
    use crate::read::http::{
        CATALOGUE_PATH, OPEN_CATALOG_PATH, OPEN_PREFIX, SERIES_PATHS, SHARED_PREFIX,
    };
    use crate::read::query::PARAMETERS;

    fn document() -> Value {
        serde_json::from_str(DOCUMENT).expect("openapi.json is JSON")
    }

    /// A parameter, following `$ref` into the components.
    fn resolve<'a>(document: &'a Value, parameter: &'a Value) -> &'a Value {
        match parameter["$ref"].as_str() {
            Some(reference) => {
                let name = reference.rsplit('/').next().unwrap();
                &document["components"]["parameters"][name]
            }
            None => parameter,
        }
    }

    #[test]
    fn the_paths_are_the_routers() {
        let document = document();
        let described: BTreeSet<&str> = document["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut served = BTreeSet::new();
        for prefix in ["", SHARED_PREFIX, OPEN_PREFIX] {
            for path in SERIES_PATHS.iter().chain([&CATALOGUE_PATH]) {
                served.insert(format!("{prefix}{path}"));
            }
        }
        for path in [
            "/openapi.json",
            "/healthz",
            "/readyz",
            "/metrics",
            OPEN_CATALOG_PATH,
        ] {
            served.insert(path.to_string());
        }
        let served: BTreeSet<&str> = served.iter().map(String::as_str).collect();
        assert_eq!(described, served);
    }

    #[test]
    fn each_path_takes_the_parameters_the_code_reads() {
        let document = document();
        for (path, item) in document["paths"].as_object().unwrap() {
            let parameters: Vec<&Value> = item["get"]["parameters"]
                .as_array()
                .map(|list| list.iter().map(|p| resolve(&document, p)).collect())
                .unwrap_or_default();
            let in_path: BTreeSet<&str> = parameters
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            let templated: BTreeSet<&str> = path
                .split('/')
                .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            assert_eq!(in_path, templated, "{path}");
            let in_query: BTreeSet<&str> = parameters
                .iter()
                .filter(|p| p["in"] == "query")
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            let expected: BTreeSet<&str> = if path == OPEN_CATALOG_PATH {
                ["format"].into()
            } else if path.ends_with(CATALOGUE_PATH) {
                ["limit", "cursor", "format"].into()
            } else if path.contains("/v2/") {
                PARAMETERS.iter().copied().collect()
            } else {
                BTreeSet::new()
            };
            assert_eq!(in_query, expected, "{path}");
        }
    }

    #[test]
    fn the_aggregate_methods_are_the_codes() {
        use strum::IntoEnumIterator;
        let document = document();
        let described = document["components"]["parameters"]["aggrMethod"]["description"]
            .as_str()
            .unwrap();
        for method in crate::read::query::Method::iter() {
            assert!(described.contains(&method.to_string()), "{method}");
        }
    }
}
