//! The vocabularies an open dataset is described with: `spec.licence`, `spec.themes` and
//! `spec.updateFrequency` of a `SmartRegionDataset` in the API, and the same values as
//! the read service's DCAT-AP_IT catalogue names them — one enum each for both.
//!
//! Serde (the API, the stored description) and strum (parsing what is stored, printing
//! the vocabulary code) spell every value the same way; a test keeps them equal.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A licence open data is published under (DCAT-AP_IT's licence vocabulary).
#[derive(
    JsonSchema,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    strum::EnumString,
    strum::Display,
    strum::EnumIter,
)]
pub enum Licence {
    #[serde(rename = "CC-BY-4.0")]
    #[strum(serialize = "CC-BY-4.0")]
    CcBy40,
    #[serde(rename = "CC0-1.0")]
    #[strum(serialize = "CC0-1.0")]
    Cc010,
    #[serde(rename = "CC-BY-SA-4.0")]
    #[strum(serialize = "CC-BY-SA-4.0")]
    CcBySa40,
    #[serde(rename = "IODL-2.0")]
    #[strum(serialize = "IODL-2.0")]
    Iodl20,
}

/// A theme of the EU data-theme vocabulary.
#[derive(
    JsonSchema,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    strum::EnumString,
    strum::Display,
    strum::EnumIter,
)]
#[serde(rename_all = "UPPERCASE")]
#[strum(serialize_all = "UPPERCASE")]
pub enum Theme {
    Agri,
    Econ,
    Educ,
    Ener,
    Envi,
    Gove,
    Heal,
    Intr,
    Just,
    Regi,
    Soci,
    Tech,
    Tran,
}

/// How often an open dataset is updated (EU frequency vocabulary).
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
    strum::EnumString,
    strum::Display,
    strum::EnumIter,
)]
#[serde(rename_all = "UPPERCASE")]
#[strum(serialize_all = "UPPERCASE")]
pub enum Frequency {
    /// Continuously, as measurements arrive.
    Cont,
    #[default]
    Hourly,
    Daily,
    Weekly,
    Monthly,
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::IntoEnumIterator;

    fn spelled_alike<T>()
    where
        T: IntoEnumIterator + Serialize + std::str::FromStr + std::fmt::Display + PartialEq,
        T: std::fmt::Debug,
        <T as std::str::FromStr>::Err: std::fmt::Debug,
    {
        for value in T::iter() {
            let json = serde_json::to_value(&value).unwrap();
            assert_eq!(json, value.to_string());
            assert_eq!(value.to_string().parse::<T>().unwrap(), value);
        }
    }

    #[test]
    fn the_api_and_the_catalogue_spell_every_value_alike() {
        spelled_alike::<Licence>();
        spelled_alike::<Theme>();
        spelled_alike::<Frequency>();
        assert_eq!(Theme::Envi.to_string(), "ENVI");
        assert_eq!(Licence::Iodl20.to_string(), "IODL-2.0");
    }
}
