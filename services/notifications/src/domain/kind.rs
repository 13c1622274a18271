/// What a notification is about; its wire name is the `kind` clients see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Welcome,
    OrderConfirmed,
    OrderCancelled,
    OrderShipped,
    OrderDelivered,
}

impl Kind {
    pub const ALL: [Self; 5] = [
        Self::Welcome,
        Self::OrderConfirmed,
        Self::OrderCancelled,
        Self::OrderShipped,
        Self::OrderDelivered,
    ];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Welcome => "welcome",
            Self::OrderConfirmed => "order_confirmed",
            Self::OrderCancelled => "order_cancelled",
            Self::OrderShipped => "order_shipped",
            Self::OrderDelivered => "order_delivered",
        }
    }

    #[must_use]
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == raw)
    }
}

/// Where a notification is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// The in-app inbox `GET /api/notifications` lists; delivered the moment it is written.
    Mailbox,
    /// An email sent through SMTP by the delivery worker.
    Email,
}

impl Channel {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mailbox => "mailbox",
            Self::Email => "email",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_wire_name() {
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(Kind::parse("marketing"), None);
    }
}
