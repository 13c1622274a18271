/// What a user may do. Every user is a customer; admins also manage the shop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Customer,
    Admin,
}

impl Role {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Admin => "admin",
        }
    }

    /// The role a stored name denotes; unknown names are ignored, not promoted.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "customer" => Some(Self::Customer),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}
