//! Paging through the catalogue: `?page_size=` and the opaque `?page_token=`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::domain::Sku;

/// Products per page when the client does not say.
pub const DEFAULT_PAGE_SIZE: usize = 20;
/// The most products one page holds.
pub const MAX_PAGE_SIZE: usize = 100;

/// Marks the token's format, so it can change without old tokens being misread.
const TOKEN_PREFIX: &str = "after:";

/// `page_size` as the client sent it, checked.
///
/// # Errors
/// The message for a value that is not a whole number from 1 to 100.
pub fn page_size(raw: Option<&str>) -> Result<usize, &'static str> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_PAGE_SIZE);
    };
    match raw.parse::<usize>() {
        Ok(size) if (1..=MAX_PAGE_SIZE).contains(&size) => Ok(size),
        _ => Err("must be a whole number from 1 to 100"),
    }
}

/// The token that continues after `sku`. It is opaque to clients: only this module reads it.
#[must_use]
pub fn encode_token(after: &Sku) -> String {
    URL_SAFE_NO_PAD.encode(format!("{TOKEN_PREFIX}{after}"))
}

/// The SKU a token continues after.
///
/// # Errors
/// The message for a token this service did not issue.
pub fn decode_token(token: &str) -> Result<Sku, &'static str> {
    const MALFORMED: &str = "is not a page token from this API; use next_page_token from the previous page";
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| MALFORMED)?;
    let text = String::from_utf8(bytes).map_err(|_| MALFORMED)?;
    let raw = text.strip_prefix(TOKEN_PREFIX).ok_or(MALFORMED)?;
    let sku = Sku::parse(raw).map_err(|_| MALFORMED)?;
    // Only the canonical spelling is one we issued.
    if sku.as_str() == raw {
        Ok(sku)
    } else {
        Err(MALFORMED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_and_is_opaque() {
        let sku = Sku::parse("TEE-BLK-M").unwrap();
        let token = encode_token(&sku);
        assert!(!token.contains("TEE"), "{token}");
        assert_eq!(decode_token(&token), Ok(sku));
    }

    #[test]
    fn tokens_we_did_not_issue_are_refused() {
        let forged = [
            "",
            "!!!",
            "not base64 at all",
            &URL_SAFE_NO_PAD.encode("TEE-BLK-M"),
            &URL_SAFE_NO_PAD.encode("after:"),
            &URL_SAFE_NO_PAD.encode("after:tee-blk-m"),
            &URL_SAFE_NO_PAD.encode("after:NO SPACES"),
            &URL_SAFE_NO_PAD.encode([0xff, 0xfe]),
        ];
        for token in forged {
            assert!(decode_token(token).is_err(), "{token:?}");
        }
    }

    #[test]
    fn page_size_defaults_and_stays_within_bounds() {
        assert_eq!(page_size(None), Ok(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(Some("1")), Ok(1));
        assert_eq!(page_size(Some("100")), Ok(100));
        for bad in ["0", "101", "-1", "ten", "", "1.5", "99999999999999999999999"] {
            assert!(page_size(Some(bad)).is_err(), "{bad:?}");
        }
    }
}
