//! API keys from the `ingest-keys` Secret: any of them opens the write endpoints, so a key
//! can be rotated by adding the new one, moving clients, then removing the old one.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("no API key configured: the ingest-keys Secret (key `keys`) must hold at least one")]
    None,
    #[error("API key number {0} is shorter than 16 characters")]
    Short(usize),
}

pub struct ApiKeys {
    /// SHA-256 of each key: equal length, so comparing takes the same time for any input.
    digests: Vec<[u8; 32]>,
}

impl ApiKeys {
    /// Keys separated by newlines, commas or spaces.
    pub fn parse(text: &str) -> Result<ApiKeys, Error> {
        let keys: Vec<&str> = text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|key| !key.is_empty())
            .collect();
        if keys.is_empty() {
            return Err(Error::None);
        }
        if let Some(index) = keys.iter().position(|key| key.len() < 16) {
            return Err(Error::Short(index + 1));
        }
        Ok(ApiKeys {
            digests: keys.iter().map(|key| digest(key)).collect(),
        })
    }

    pub fn accepts(&self, key: &str) -> bool {
        let candidate = digest(key);
        // Every key is compared, so the time does not tell which one nearly matched.
        self.digests
            .iter()
            .fold(subtle::Choice::from(0), |found, known| {
                found | known.ct_eq(&candidate)
            })
            .into()
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_configured_key_opens_and_nothing_else() {
        let keys = ApiKeys::parse("old-key-0123456789abcdef\nnew-key-0123456789abcdef,").unwrap();
        assert!(keys.accepts("old-key-0123456789abcdef"));
        assert!(keys.accepts("new-key-0123456789abcdef"));
        assert!(!keys.accepts("new-key-0123456789abcde"));
        assert!(!keys.accepts(""));
    }

    #[test]
    fn missing_or_short_keys_are_refused_at_start() {
        assert_eq!(ApiKeys::parse(" \n").err(), Some(Error::None));
        assert_eq!(
            ApiKeys::parse("0123456789abcdef0 short").err(),
            Some(Error::Short(2))
        );
    }
}
