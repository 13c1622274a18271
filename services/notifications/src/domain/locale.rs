/// The languages the built-in templates are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Locale {
    #[default]
    En,
    De,
}

impl Locale {
    /// The template language for a customer's language tag (`de`, `de-AT`, …); any language
    /// without templates falls back to English rather than failing the message.
    #[must_use]
    pub fn for_tag(tag: &str) -> Self {
        let language = tag.split(['-', '_']).next().unwrap_or_default();
        if language.eq_ignore_ascii_case("de") {
            Self::De
        } else {
            Self::En
        }
    }

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::De => "de",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regional_tags_use_their_language_and_unknown_ones_fall_back_to_english() {
        assert_eq!(Locale::for_tag("de"), Locale::De);
        assert_eq!(Locale::for_tag("de-AT"), Locale::De);
        assert_eq!(Locale::for_tag("en-GB"), Locale::En);
        assert_eq!(Locale::for_tag("fr"), Locale::En);
        assert_eq!(Locale::for_tag(""), Locale::En);
    }
}
