//! Paging through a list: `?page_size=` (20 unless the client says, at most 100) and the opaque
//! `?page_token=` that continues after the last item of the previous page.
//!
//! A token names a position in the list (a [`Cursor`]), not an offset, so items added between
//! two pages never shift the later ones. It is base64url over a version prefix and the cursor's
//! key: clients cannot read or build one, and the format can change without old tokens being
//! misread.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::problem::{FieldError, Problem};

/// Items per page when the client does not say.
pub const DEFAULT_PAGE_SIZE: usize = 20;
/// The most items one page holds.
pub const MAX_PAGE_SIZE: usize = 100;

/// Marks the token format.
const VERSION: &str = "1:";
/// Longer than any token a list issues; longer text is refused before it is decoded.
const MAX_TOKEN_LEN: usize = 512;

const BAD_SIZE: &str = "must be a whole number from 1 to 100";
const BAD_TOKEN: &str = "is not a page token from this API; use next_page_token from the previous page";

/// Where a page stopped: the sort key of its last item.
pub trait Cursor: Sized {
    /// The position as text, for the token.
    fn to_key(&self) -> String;

    /// The position `key` names; `None` for text that [`Cursor::to_key`] never writes.
    fn from_key(key: &str) -> Option<Self>;
}

/// A position in a list sorted by creation time (Unix milliseconds), then id: `"{at}:{id}"`.
impl Cursor for (i64, String) {
    fn to_key(&self) -> String {
        format!("{}:{}", self.0, self.1)
    }

    fn from_key(key: &str) -> Option<Self> {
        let (at, id) = key.split_once(':')?;
        let id_ok = !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !id_ok {
            return None;
        }
        Some((at.parse().ok()?, id.to_owned()))
    }
}

/// A checked page request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest<C> {
    pub size: usize,
    /// Where the previous page stopped; `None` for the first page.
    pub after: Option<C>,
}

impl<C> PageRequest<C> {
    /// How many items to fetch: one more than the page holds tells whether another page follows.
    #[must_use]
    pub fn fetch(&self) -> i64 {
        i64::try_from(self.size).map_or(i64::MAX, |size| size.saturating_add(1))
    }

    /// Cuts `items` (fetched with [`PageRequest::fetch`]) to the page and returns the token of
    /// the next page, if there is one. `cursor` gives an item's position.
    pub fn finish<T>(&self, items: &mut Vec<T>, cursor: impl Fn(&T) -> C) -> Option<String>
    where
        C: Cursor,
    {
        let more = items.len() > self.size;
        items.truncate(self.size);
        items.last().filter(|_| more).map(|last| encode(&cursor(last)))
    }
}

/// Reads `page_size` and `page_token` as the client sent them; an empty token is the first page.
///
/// # Errors
/// `422` naming `page_size` and/or `page_token`.
pub fn parse<C: Cursor>(
    page_size: Option<&str>,
    page_token: Option<&str>,
) -> Result<PageRequest<C>, Problem> {
    let mut errors = Vec::new();
    let size = match page_size.map(str::parse::<usize>) {
        None => DEFAULT_PAGE_SIZE,
        Some(Ok(size)) if (1..=MAX_PAGE_SIZE).contains(&size) => size,
        Some(_) => {
            errors.push(FieldError::new("page_size", BAD_SIZE));
            DEFAULT_PAGE_SIZE
        }
    };
    let after = match page_token.filter(|t| !t.is_empty()) {
        None => None,
        Some(token) => {
            let after = decode(token);
            if after.is_none() {
                errors.push(FieldError::new("page_token", BAD_TOKEN));
            }
            after
        }
    };
    if errors.is_empty() {
        Ok(PageRequest { size, after })
    } else {
        Err(Problem::validation(errors))
    }
}

/// The token that continues a list after `after`.
#[must_use]
pub fn encode<C: Cursor>(after: &C) -> String {
    URL_SAFE_NO_PAD.encode(format!("{VERSION}{}", after.to_key()))
}

/// The position a token continues after; `None` for a token no list issued.
#[must_use]
pub fn decode<C: Cursor>(token: &str) -> Option<C> {
    if token.len() > MAX_TOKEN_LEN {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let after = C::from_key(text.strip_prefix(VERSION)?)?;
    // A token is only ours if it is exactly what we would issue for its position.
    (encode(&after) == token).then_some(after)
}

#[cfg(test)]
mod tests {
    use http::StatusCode;
    use proptest::prelude::*;

    use super::*;

    type At = (i64, String);

    fn fields(problem: &Problem) -> Vec<&str> {
        problem.errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn the_first_page_holds_twenty_by_default() {
        let request = parse::<At>(None, None).unwrap();
        assert_eq!(
            request,
            PageRequest {
                size: 20,
                after: None
            }
        );
        assert_eq!(parse::<At>(None, Some("")).unwrap().after, None);
        assert_eq!(parse::<At>(Some("1"), None).unwrap().size, 1);
        assert_eq!(parse::<At>(Some("100"), None).unwrap().size, 100);
    }

    #[test]
    fn bad_sizes_and_tokens_are_a_422_naming_the_parameter() {
        for size in [
            "0",
            "101",
            "-1",
            "ten",
            "",
            "1.5",
            " 5",
            "99999999999999999999999",
        ] {
            let problem = parse::<At>(Some(size), None).unwrap_err();
            assert_eq!(problem.status(), StatusCode::UNPROCESSABLE_ENTITY);
            assert_eq!(fields(&problem), ["page_size"], "{size:?}");
        }
        let forged = [
            "!!!",
            "bm90IGEgdG9rZW4",
            &URL_SAFE_NO_PAD.encode("1:12:x' OR 1=1 --"),
            &URL_SAFE_NO_PAD.encode("12:0190-ab"),
            &URL_SAFE_NO_PAD.encode("1:012:0190-ab"),
            &URL_SAFE_NO_PAD.encode([0xff, 0xfe]),
            &"A".repeat(600),
        ];
        for token in forged {
            let problem = parse::<At>(None, Some(token)).unwrap_err();
            assert_eq!(fields(&problem), ["page_token"], "{token:?}");
        }
        let both = parse::<At>(Some("0"), Some("!!!")).unwrap_err();
        assert_eq!(fields(&both), ["page_size", "page_token"]);
    }

    #[test]
    fn finishing_a_page_cuts_the_look_ahead_item_and_points_after_the_last_kept() {
        let request = PageRequest::<At> { size: 2, after: None };
        assert_eq!(request.fetch(), 3);
        let mut items = vec![(3, "c"), (2, "b"), (1, "a")];
        let token = request.finish(&mut items, |&(at, id)| (at, id.to_owned()));
        assert_eq!(items, [(3, "c"), (2, "b")]);
        assert_eq!(decode::<At>(&token.unwrap()), Some((2, "b".to_owned())));
        let mut last = vec![(1, "a")];
        assert_eq!(request.finish(&mut last, |&(at, id)| (at, id.to_owned())), None);
    }

    fn position() -> impl Strategy<Value = At> {
        (any::<i64>(), "[0-9a-f-]{1,40}")
    }

    proptest! {
        #[test]
        fn a_token_decodes_to_the_position_it_was_made_from(at in position()) {
            prop_assert_eq!(decode::<At>(&encode(&at)), Some(at));
        }

        #[test]
        fn a_token_does_not_show_its_position(at in (any::<i64>(), "[0-9a-f-]{8,40}")) {
            let token = encode(&at);
            prop_assert!(!token.contains(&at.1), "{} shows {}", token, at.1);
            prop_assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        }

        #[test]
        fn any_text_as_a_token_decodes_or_fails_cleanly(token in any::<String>()) {
            if let Some(at) = decode::<At>(&token) {
                prop_assert_eq!(encode(&at), token);
            }
        }

        #[test]
        fn any_base64_text_as_a_token_decodes_or_fails_cleanly(text in any::<String>()) {
            let token = URL_SAFE_NO_PAD.encode(&text);
            match decode::<At>(&token) {
                Some(at) => prop_assert_eq!(format!("1:{}", at.to_key()), text),
                // The empty token is the first page.
                None => prop_assert_eq!(parse::<At>(None, Some(&token)).is_err(), !token.is_empty()),
            }
        }

        #[test]
        fn any_page_size_is_accepted_from_1_to_100_only(raw in any::<String>()) {
            let expected = raw.parse::<usize>().ok().filter(|n| (1..=100).contains(n));
            prop_assert_eq!(parse::<At>(Some(&raw), None).ok().map(|r| r.size), expected);
        }
    }
}
