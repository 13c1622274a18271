//! The customer aggregate: its state is the fold of its events; commands check the rules and
//! return the event to append (or none when nothing changes).

use mercato_contracts::identity::display_name;
use mercato_kit::aggregate::Aggregate;

use super::address::{Address, AddressInput};
use super::preferences::{Locale, Preferences};

/// The most addresses a customer keeps.
pub const MAX_ADDRESSES: usize = 10;

/// A customer as its events left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    pub id: String,
    pub email: String,
    pub name: String,
    pub addresses: Vec<Address>,
    pub preferences: Preferences,
    /// The number of events in the customer's stream.
    pub version: i64,
}

/// What happened to a customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomerEvent {
    Created {
        id: String,
        email: String,
        name: String,
    },
    /// The whole profile after the change.
    Updated {
        name: String,
        addresses: Vec<Address>,
        preferences: Preferences,
    },
}

/// Fields that break the rules, as (field path, message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub Vec<(String, &'static str)>);

impl Aggregate for Customer {
    type Event = CustomerEvent;

    fn apply(state: Option<Self>, event: CustomerEvent) -> Option<Self> {
        match (state, event) {
            (None, CustomerEvent::Created { id, email, name }) => Some(Self {
                id,
                email,
                name,
                addresses: Vec::new(),
                preferences: Preferences::default(),
                version: 1,
            }),
            (
                Some(c),
                CustomerEvent::Updated {
                    name,
                    addresses,
                    preferences,
                },
            ) => Some(Self {
                name,
                addresses,
                preferences,
                version: c.version + 1,
                ..c
            }),
            // An event that cannot follow the state is ignored; streams are written only here.
            (state, _) => state.map(|c| Self {
                version: c.version + 1,
                ..c
            }),
        }
    }
}

impl Customer {
    /// Changes the name and/or replaces the addresses.
    ///
    /// # Errors
    /// [`Invalid`] naming every bad field.
    pub fn change_profile(
        &self,
        name: Option<&str>,
        addresses: Option<&[AddressInput]>,
    ) -> Result<Option<CustomerEvent>, Invalid> {
        let mut errors = Vec::new();
        let name = match name {
            Some(raw) => display_name(raw)
                .map(str::to_owned)
                .map_err(|m| errors.push(("name".to_owned(), m)))
                .ok(),
            None => Some(self.name.clone()),
        };
        let addresses = match addresses {
            Some(list) if list.len() > MAX_ADDRESSES => {
                errors.push(("addresses".to_owned(), "must hold at most 10 addresses"));
                None
            }
            Some(list) => {
                let mut parsed = Vec::with_capacity(list.len());
                for (i, input) in list.iter().enumerate() {
                    match Address::parse(input) {
                        Ok(a) => parsed.push(a),
                        Err(fields) => {
                            errors.extend(
                                fields
                                    .into_iter()
                                    .map(|(f, m)| (format!("addresses[{i}].{f}"), m)),
                            );
                        }
                    }
                }
                Some(parsed)
            }
            None => Some(self.addresses.clone()),
        };
        if !errors.is_empty() {
            return Err(Invalid(errors));
        }
        let (Some(name), Some(addresses)) = (name, addresses) else {
            return Err(Invalid(errors));
        };
        if name == self.name && addresses == self.addresses {
            return Ok(None);
        }
        Ok(Some(CustomerEvent::Updated {
            name,
            addresses,
            preferences: self.preferences.clone(),
        }))
    }

    /// Replaces the communication preferences.
    ///
    /// # Errors
    /// [`Invalid`] for a malformed locale.
    pub fn change_preferences(
        &self,
        email: bool,
        sms: bool,
        marketing_opt_in: bool,
        locale: &str,
    ) -> Result<Option<CustomerEvent>, Invalid> {
        let locale = Locale::parse(locale).map_err(|m| Invalid(vec![("locale".to_owned(), m)]))?;
        let preferences = Preferences {
            email,
            sms,
            marketing_opt_in,
            locale,
        };
        if preferences == self.preferences {
            return Ok(None);
        }
        Ok(Some(CustomerEvent::Updated {
            name: self.name.clone(),
            addresses: self.addresses.clone(),
            preferences,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created() -> Customer {
        Customer::replay([CustomerEvent::Created {
            id: "c1".into(),
            email: "a@example.com".into(),
            name: "Ada".into(),
        }])
        .unwrap()
    }

    fn address(city: &str) -> AddressInput {
        AddressInput {
            line1: "1 Main St".into(),
            line2: None,
            city: city.into(),
            postal_code: "10115".into(),
            country: "DE".into(),
        }
    }

    #[test]
    fn given_created_when_renamed_then_updated_with_the_rest_kept() {
        let c = created();
        let event = c.change_profile(Some(" Ada L. "), None).unwrap().unwrap();
        let after = Customer::replay([
            CustomerEvent::Created {
                id: "c1".into(),
                email: "a@example.com".into(),
                name: "Ada".into(),
            },
            event,
        ])
        .unwrap();
        assert_eq!(after.name, "Ada L.");
        assert_eq!(after.version, 2);
        assert_eq!(after.preferences, Preferences::default());
    }

    #[test]
    fn an_unchanged_profile_appends_nothing() {
        assert_eq!(created().change_profile(Some("Ada"), Some(&[])).unwrap(), None);
    }

    #[test]
    fn every_bad_field_is_named_with_its_path() {
        let bad = AddressInput {
            country: "Deutschland".into(),
            ..address("Berlin")
        };
        let Invalid(fields) = created()
            .change_profile(Some(""), Some(&[address("Berlin"), bad]))
            .unwrap_err();
        let names: Vec<&str> = fields.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(names, ["name", "addresses[1].country"]);
    }

    #[test]
    fn too_many_addresses_are_refused() {
        let many: Vec<_> = (0..11).map(|i| address(&format!("City {i}"))).collect();
        assert!(created().change_profile(None, Some(&many)).is_err());
    }

    #[test]
    fn preferences_change_only_when_different() {
        let c = created();
        assert_eq!(c.change_preferences(true, false, false, "en").unwrap(), None);
        assert!(
            c.change_preferences(false, true, true, "de-DE")
                .unwrap()
                .is_some()
        );
        assert!(c.change_preferences(true, false, false, "german").is_err());
    }
}
