/// A postal address, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, upper case.
    pub country: String,
}

/// An address as a client sent it.
#[derive(Debug, Clone, Default)]
pub struct AddressInput {
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    pub country: String,
}

fn text(value: &str, max: usize) -> Result<String, &'static str> {
    let value = value.trim();
    if value.is_empty() {
        return Err("must not be empty");
    }
    if value.chars().count() > max {
        return Err(if max == 200 {
            "must be at most 200 characters"
        } else {
            "is too long"
        });
    }
    if value.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    Ok(value.to_owned())
}

impl Address {
    /// Every problem with the input, as (field, message), the field relative to the address.
    ///
    /// # Errors
    /// The list of invalid fields.
    pub fn parse(input: &AddressInput) -> Result<Self, Vec<(&'static str, &'static str)>> {
        let mut errors = Vec::new();
        let line1 = text(&input.line1, 200)
            .map_err(|m| errors.push(("line1", m)))
            .ok();
        let line2 = match input.line2.as_deref().map(str::trim).filter(|l| !l.is_empty()) {
            None => Some(None),
            Some(l) => text(l, 200).map(Some).map_err(|m| errors.push(("line2", m))).ok(),
        };
        let city = text(&input.city, 100).map_err(|m| errors.push(("city", m))).ok();
        let postal = input.postal_code.trim();
        let postal_code = if postal.is_empty()
            || postal.len() > 16
            || !postal
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '-')
        {
            errors.push(("postal_code", "must be 1 to 16 letters, digits, spaces or dashes"));
            None
        } else {
            Some(postal.to_uppercase())
        };
        let country = input.country.trim();
        let country = if country.len() == 2 && country.chars().all(|c| c.is_ascii_alphabetic()) {
            Some(country.to_ascii_uppercase())
        } else {
            errors.push(("country", "must be an ISO 3166-1 alpha-2 code such as DE"));
            None
        };
        match (line1, line2, city, postal_code, country) {
            (Some(line1), Some(line2), Some(city), Some(postal_code), Some(country)) if errors.is_empty() => {
                Ok(Self {
                    line1,
                    line2,
                    city,
                    postal_code,
                    country,
                })
            }
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> AddressInput {
        AddressInput {
            line1: " 1 Main St ".into(),
            line2: Some("  ".into()),
            city: "Berlin".into(),
            postal_code: "10115".into(),
            country: "de".into(),
        }
    }

    #[test]
    fn normalises_a_good_address() {
        let a = Address::parse(&input()).unwrap();
        assert_eq!(a.line1, "1 Main St");
        assert_eq!(a.line2, None);
        assert_eq!(a.country, "DE");
    }

    #[test]
    fn names_every_bad_field() {
        let bad = AddressInput {
            line1: String::new(),
            country: "Germany".into(),
            postal_code: "$$".into(),
            ..input()
        };
        let fields: Vec<_> = Address::parse(&bad)
            .unwrap_err()
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(fields, ["line1", "postal_code", "country"]);
    }
}
