//! Where a page of the catalogue stops: the SKU of its last product, sorted by SKU. Sizes and
//! tokens are `mercato_runtime::page`'s, as in every list.

use mercato_runtime::page::Cursor;

use crate::domain::Sku;

impl Cursor for Sku {
    fn to_key(&self) -> String {
        self.as_str().to_owned()
    }

    fn from_key(key: &str) -> Option<Self> {
        Self::parse(key).ok()
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use mercato_runtime::page::{decode, encode};

    use super::*;

    #[test]
    fn a_token_round_trips_and_is_opaque() {
        let sku = Sku::parse("TEE-BLK-M").unwrap();
        let token = encode(&sku);
        assert!(!token.contains("TEE"), "{token}");
        assert_eq!(decode::<Sku>(&token), Some(sku));
    }

    #[test]
    fn tokens_naming_no_sku_are_refused() {
        for key in ["", "tee-blk-m", "NO SPACES", " TEE-BLK-M"] {
            let token = URL_SAFE_NO_PAD.encode(format!("1:{key}"));
            assert_eq!(decode::<Sku>(&token), None, "{key:?}");
        }
    }
}
