/// A stock-keeping unit: 1 to 32 of `A-Z`, `0-9` and `-`, always upper case.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sku(String);

/// The longest SKU accepted.
pub const MAX_LEN: usize = 32;

/// The text is not a SKU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must be 1 to 32 letters, digits or dashes")]
pub struct InvalidSku;

impl Sku {
    /// Upper-cases `raw` so that `mug-001` and `MUG-001` name one product.
    ///
    /// # Errors
    /// [`InvalidSku`] when it is empty, too long, or holds anything but letters, digits and dashes.
    pub fn parse(raw: &str) -> Result<Self, InvalidSku> {
        let upper = raw.to_ascii_uppercase();
        let ok = !upper.is_empty()
            && upper.len() <= MAX_LEN
            && upper
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-');
        if ok { Ok(Self(upper)) } else { Err(InvalidSku) }
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    #[must_use]
    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::fmt::Display for Sku {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_cases_a_good_sku() {
        assert_eq!(Sku::parse("tee-blk-m").unwrap().as_str(), "TEE-BLK-M");
        assert_eq!(Sku::parse("MUG-001").unwrap().as_str(), "MUG-001");
    }

    #[test]
    fn refuses_empty_long_and_foreign_characters() {
        assert_eq!(Sku::parse(""), Err(InvalidSku));
        assert_eq!(Sku::parse(&"A".repeat(33)), Err(InvalidSku));
        assert!(Sku::parse(&"A".repeat(32)).is_ok());
        for bad in ["MUG 001", "MUG_001", "MUG/001", "MÜG", "mug.1", " MUG"] {
            assert_eq!(Sku::parse(bad), Err(InvalidSku), "{bad:?}");
        }
    }
}
