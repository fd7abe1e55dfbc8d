//! Kubernetes resource quantities ("2", "1500m", "8Gi", "1e3") as exact numbers.
//!
//! Needed to compare what the operator wants with what the API server stores: the server
//! rewrites quantities into canonical form ("1000m" becomes "1"), and a textual
//! comparison would see drift, and write, on every reconcile.

/// A positive Kubernetes quantity, checked once where it enters (the tiers file, a
/// tenant's `spec.quotas`): code holding one cannot meet an invalid value. It keeps the
/// text as written (what the API server is given) and its exact value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Amount {
    text: String,
    thousandths: i128,
}

/// What is wrong with a text that should be a positive quantity.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("must be a positive quantity such as 2, 500m or 8Gi, not {0:?}")]
pub struct NotAnAmount(pub String);

impl Amount {
    pub fn parse(text: &str) -> Result<Amount, NotAnAmount> {
        match parse(text) {
            Some(thousandths) if thousandths > 0 => Ok(Amount {
                text: text.trim().to_string(),
                thousandths,
            }),
            _ => Err(NotAnAmount(text.to_string())),
        }
    }

    /// As the API server takes it.
    pub fn quantity(&self) -> k8s_openapi::apimachinery::pkg::api::resource::Quantity {
        k8s_openapi::apimachinery::pkg::api::resource::Quantity(self.text.clone())
    }

    /// In whole units (bytes, cores), rounded up: "2Mi" is 2097152.
    pub fn whole_units(&self) -> i128 {
        (self.thousandths + 999).div_euclid(1000)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl std::fmt::Display for Amount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl serde::Serialize for Amount {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Amount::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A quantity of bytes (or any whole unit), rounded up: "2Mi" is 2097152.
pub fn whole_units(text: &str) -> Option<i128> {
    parse(text).map(|thousandths| (thousandths + 999).div_euclid(1000))
}

/// The quantity in thousandths of its unit, or `None` when it is not a quantity.
/// Fractions below one thousandth are rounded up, as the API server does.
pub fn parse(text: &str) -> Option<i128> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let (negative, digits) = match number.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, number.strip_prefix('+').unwrap_or(number)),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole
            .chars()
            .chain(fraction.chars())
            .all(|c| c.is_ascii_digit())
        || whole.len() + fraction.len() > 30
    {
        return None;
    }
    // value = mantissa / 10^scale * multiplier, with the multiplier as base^exponent.
    let mantissa: i128 = format!("{whole}{fraction}").parse().ok()?;
    let scale = fraction.len() as u32;
    let (base, exponent): (i128, i32) = match suffix {
        "" => (10, 0),
        "n" => (10, -9),
        "u" => (10, -6),
        "m" => (10, -3),
        "k" => (10, 3),
        "M" => (10, 6),
        "G" => (10, 9),
        "T" => (10, 12),
        "P" => (10, 15),
        "E" => (10, 18),
        "Ki" => (2, 10),
        "Mi" => (2, 20),
        "Gi" => (2, 30),
        "Ti" => (2, 40),
        "Pi" => (2, 50),
        "Ei" => (2, 60),
        exponent if exponent.starts_with(['e', 'E']) => (10, exponent[1..].parse().ok()?),
        _ => return None,
    };
    if exponent.abs() > 30 {
        return None;
    }
    // In thousandths: multiply by 1000 first, then apply scale and multiplier exactly.
    let mut numerator = mantissa.checked_mul(1000)?;
    let mut denominator: i128 = 10i128.checked_pow(scale)?;
    if exponent >= 0 {
        numerator = numerator.checked_mul(base.checked_pow(exponent as u32)?)?;
    } else {
        denominator = denominator.checked_mul(base.checked_pow(exponent.unsigned_abs())?)?;
    }
    let value = (numerator + denominator - 1) / denominator;
    Some(if negative { -value } else { value })
}

/// True when both texts are the same quantity, however written.
pub fn same(a: &str, b: &str) -> bool {
    a == b || matches!((parse(a), parse(b)), (Some(x), Some(y)) if x == y)
}

#[cfg(test)]
mod tests {
    use super::whole_units;

    #[test]
    fn whole_units_are_bytes_rounded_up() {
        assert_eq!(whole_units("2Mi"), Some(2 * 1024 * 1024));
        assert_eq!(whole_units("10Gi"), Some(10 * 1024 * 1024 * 1024));
        assert_eq!(whole_units("1500m"), Some(2));
        assert_eq!(whole_units("lots"), None);
    }

    use super::*;

    #[test]
    fn parses_decimal_binary_and_exponent_forms() {
        assert_eq!(parse("2"), Some(2000));
        assert_eq!(parse("1500m"), Some(1500));
        assert_eq!(parse("1.5"), Some(1500));
        assert_eq!(parse("8Gi"), Some(8 * 1024 * 1024 * 1024 * 1000));
        assert_eq!(parse("1k"), Some(1_000_000));
        assert_eq!(parse("1e3"), Some(1_000_000));
        assert_eq!(parse("-1Gi"), Some(-(1 << 30) * 1000));
        assert_eq!(parse("0"), Some(0));
    }

    #[test]
    fn refuses_what_is_not_a_quantity() {
        for text in ["", "lots", "1.2.3", "Gi", "1Xi", "1e99", "--1"] {
            assert_eq!(parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn amounts_are_positive_quantities_kept_as_written() {
        let amount = Amount::parse("8Gi").unwrap();
        assert_eq!(amount.to_string(), "8Gi");
        assert_eq!(amount.whole_units(), 8 << 30);
        assert_eq!(Amount::parse("1500m").unwrap().whole_units(), 2);
        for bad in ["0", "-1", "lots", ""] {
            assert_eq!(Amount::parse(bad), Err(NotAnAmount(bad.to_string())));
        }
        let parsed: Amount = serde_yaml::from_str("\"250m\"").unwrap();
        assert_eq!(parsed.as_str(), "250m");
        let refused = serde_yaml::from_str::<Amount>("\"-2\"").unwrap_err();
        assert!(
            refused.to_string().contains("positive quantity"),
            "{refused}"
        );
    }

    #[test]
    fn compares_canonical_forms_the_api_server_writes() {
        assert!(same("1000m", "1"));
        assert!(same("1024Mi", "1Gi"));
        assert!(same("0.5", "500m"));
        assert!(!same("1Gi", "1G"));
        assert!(!same("lots", "more"));
    }
}
