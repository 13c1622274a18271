/// A password that meets the policy: 8 to 128 characters (NIST SP 800-63B), not only spaces,
/// and not the email address itself. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

const MIN: usize = 8;
const MAX: usize = 128;

impl Password {
    /// # Errors
    /// A message saying which rule the password breaks.
    pub fn parse(raw: &str, email: Option<&str>) -> Result<Self, &'static str> {
        let length = raw.chars().count();
        if length < MIN {
            return Err("must be at least 8 characters");
        }
        if length > MAX {
            return Err("must be at most 128 characters");
        }
        if raw.trim().is_empty() {
            return Err("must not be only spaces");
        }
        if email.is_some_and(|e| raw.trim().eq_ignore_ascii_case(e.trim())) {
            return Err("must not be your email address");
        }
        Ok(Self(raw.to_owned()))
    }

    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enforces_length_and_content_rules() {
        assert!(Password::parse("correct horse", None).is_ok());
        assert!(Password::parse("short", None).is_err());
        assert!(Password::parse(&"x".repeat(129), None).is_err());
        assert!(Password::parse("         ", None).is_err());
        assert!(Password::parse("ada@example.com", Some("ada@example.com")).is_err());
    }

    #[test]
    fn never_prints_the_secret() {
        let p = Password::parse("correct horse", None).unwrap();
        assert!(!format!("{p:?}").contains("horse"));
    }
}
