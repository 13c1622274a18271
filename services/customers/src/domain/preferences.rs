use mercato_contracts::customers as contract;

/// A language tag such as `en` or `pt-BR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locale(String);

impl Locale {
    /// # Errors
    /// A message when the tag is not `ll` or `ll-RR`.
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let bytes = raw.as_bytes();
        let lang = bytes.len() >= 2 && bytes[..2].iter().all(u8::is_ascii_lowercase);
        let ok = match bytes.len() {
            2 => lang,
            5 => lang && bytes[2] == b'-' && bytes[3..].iter().all(u8::is_ascii_uppercase),
            _ => false,
        };
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err("must be a language tag such as en or pt-BR")
        }
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Locale {
    fn default() -> Self {
        Self("en".into())
    }
}

/// How a customer wants to be contacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preferences {
    pub email: bool,
    pub sms: bool,
    pub marketing_opt_in: bool,
    pub locale: Locale,
}

/// The contract's defaults, so that a profile and the events about it start out alike.
impl Default for Preferences {
    fn default() -> Self {
        contract::Preferences::default().into()
    }
}

impl From<contract::Preferences> for Preferences {
    /// A locale that is not a language tag reads as the default one.
    fn from(p: contract::Preferences) -> Self {
        Self {
            email: p.email,
            sms: p.sms,
            marketing_opt_in: p.marketing_opt_in,
            locale: Locale::parse(&p.locale).unwrap_or_default(),
        }
    }
}

impl From<&Preferences> for contract::Preferences {
    fn from(p: &Preferences) -> Self {
        Self {
            email: p.email,
            sms: p.sms,
            marketing_opt_in: p.marketing_opt_in,
            locale: p.locale.as_str().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_language_tags_only() {
        assert!(Locale::parse("en").is_ok());
        assert!(Locale::parse("pt-BR").is_ok());
        for bad in ["", "EN", "english", "pt_BR", "pt-br", "e1"] {
            assert!(Locale::parse(bad).is_err(), "{bad}");
        }
    }
}
