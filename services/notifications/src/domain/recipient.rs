use super::{Channel, Locale};

/// Who a message is for, as far as notifications knows from the events it has seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub customer_id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    /// The customer's email channel preference.
    pub email_enabled: bool,
    pub locale: Locale,
}

impl Recipient {
    /// A customer no event has told us about yet: the customers service's default
    /// preferences (email on, English), but no address to write to.
    #[must_use]
    pub fn unknown(customer_id: &str) -> Self {
        Self {
            customer_id: customer_id.to_owned(),
            name: None,
            email: None,
            email_enabled: true,
            locale: Locale::En,
        }
    }
}

/// The channels a transactional message goes to: the mailbox always (it is the record the
/// customer can read in the app), email only when the customer accepts email, an address is
/// known, and this deployment sends email at all. Marketing opt-in plays no part: these messages
/// are about the customer's own account and orders.
#[must_use]
pub fn channels(recipient: &Recipient, email_configured: bool) -> Vec<Channel> {
    let mut channels = vec![Channel::Mailbox];
    if email_configured && recipient.email_enabled && recipient.email.is_some() {
        channels.push(Channel::Email);
    }
    channels
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(email_enabled: bool) -> Recipient {
        Recipient {
            email: Some("ada@example.com".into()),
            email_enabled,
            ..Recipient::unknown("c-1")
        }
    }

    #[test]
    fn the_mailbox_always_gets_the_message() {
        assert_eq!(channels(&known(false), true), [Channel::Mailbox]);
        assert_eq!(channels(&known(true), false), [Channel::Mailbox]);
    }

    #[test]
    fn email_needs_the_preference_an_address_and_a_mail_server() {
        assert_eq!(channels(&known(true), true), [Channel::Mailbox, Channel::Email]);
        assert_eq!(channels(&Recipient::unknown("c-1"), true), [Channel::Mailbox]);
    }
}
