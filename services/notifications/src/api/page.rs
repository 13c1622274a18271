//! `?page_size=` and the opaque `?page_token=` of a list.
//!
//! A token is the position of the last item of the previous page (its creation time and id),
//! base64url-encoded with a version prefix: it survives new messages arriving between pages
//! (they are newer, so they never shift later pages), and its shape can change later.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mercato_runtime::FieldError;

use crate::store::Cursor;

pub const DEFAULT_PAGE_SIZE: i64 = 20;
pub const MAX_PAGE_SIZE: i64 = 100;
/// Longer than any token this service issues.
const MAX_TOKEN_LEN: usize = 256;

/// A validated page request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub size: i64,
    pub after: Option<Cursor>,
}

/// Reads the paging parameters; unknown parameters are ignored.
///
/// # Errors
/// One [`FieldError`] per bad parameter.
pub fn parse(params: &HashMap<String, String>) -> Result<PageRequest, Vec<FieldError>> {
    let mut errors = Vec::new();
    let size = match params.get("page_size") {
        None => DEFAULT_PAGE_SIZE,
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => n,
            _ => {
                errors.push(FieldError::new(
                    "page_size",
                    format!("must be a whole number from 1 to {MAX_PAGE_SIZE}"),
                ));
                DEFAULT_PAGE_SIZE
            }
        },
    };
    let after = match params.get("page_token").map(String::as_str) {
        None | Some("") => None,
        Some(token) => {
            let cursor = decode(token);
            if cursor.is_none() {
                errors.push(FieldError::new(
                    "page_token",
                    "is not a token from a previous page of this list",
                ));
            }
            cursor
        }
    };
    if errors.is_empty() {
        Ok(PageRequest { size, after })
    } else {
        Err(errors)
    }
}

/// The token that continues a list after `cursor`.
#[must_use]
pub fn token(cursor: &Cursor) -> String {
    URL_SAFE_NO_PAD.encode(format!("1:{}:{}", cursor.created_at, cursor.id))
}

fn decode(token: &str) -> Option<Cursor> {
    if token.len() > MAX_TOKEN_LEN {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let rest = text.strip_prefix("1:")?;
    let (created_at, id) = rest.split_once(':')?;
    let created_at = created_at.parse().ok()?;
    let id_ok = !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    id_ok.then(|| Cursor {
        created_at,
        id: id.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_defaults_are_twenty_from_the_start() {
        let page = parse(&params(&[])).unwrap();
        assert_eq!(
            page,
            PageRequest {
                size: 20,
                after: None
            }
        );
    }

    #[test]
    fn a_token_round_trips() {
        let cursor = Cursor {
            created_at: 1_700_000_000_123,
            id: "0190c3e4-7b1a-7cde-8f00-0123456789ab".into(),
        };
        let page = parse(&params(&[("page_size", "5"), ("page_token", &token(&cursor))])).unwrap();
        assert_eq!(page.size, 5);
        assert_eq!(page.after, Some(cursor));
    }

    #[test]
    fn bad_sizes_and_tokens_name_their_parameter() {
        for size in ["0", "101", "-1", "ten", "1.5", ""] {
            let errors = parse(&params(&[("page_size", size)])).unwrap_err();
            assert_eq!(errors[0].field, "page_size", "{size:?}");
        }
        let forged = URL_SAFE_NO_PAD.encode("1:12:x' OR 1=1 --");
        for bad in ["!!!", "bm90IGEgdG9rZW4", forged.as_str(), &"A".repeat(300)] {
            let errors = parse(&params(&[("page_token", bad)])).unwrap_err();
            assert_eq!(errors[0].field, "page_token", "{bad:?}");
        }
        let both = parse(&params(&[("page_size", "0"), ("page_token", "!!!")])).unwrap_err();
        assert_eq!(both.len(), 2);
    }
}
