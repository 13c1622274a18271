//! The services the `mercato` binary can run, by name.

/// The services the `mercato` binary can run, in start order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum ServiceName {
    Identity,
    Customers,
    Inventory,
    PaymentSandbox,
    Payments,
    Notifications,
    Orders,
    Gateway,
}

impl ServiceName {
    /// Every service, dependencies first.
    pub const ALL: &'static [Self] = &[
        Self::Identity,
        Self::Customers,
        Self::Inventory,
        Self::PaymentSandbox,
        Self::Payments,
        Self::Notifications,
        Self::Orders,
        Self::Gateway,
    ];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Identity => mercato_identity::NAME,
            Self::Customers => mercato_customers::NAME,
            Self::Inventory => mercato_inventory::NAME,
            Self::PaymentSandbox => mercato_payments::sandbox::NAME,
            Self::Payments => mercato_payments::NAME,
            Self::Notifications => mercato_notifications::NAME,
            Self::Orders => mercato_orders::NAME,
            Self::Gateway => mercato_gateway::NAME,
        }
    }

    /// Whether the service owns a database.
    #[must_use]
    pub fn has_database(self) -> bool {
        !matches!(self, Self::Gateway | Self::PaymentSandbox)
    }

    /// Whether the service is served over mutual TLS when `[tls]` is on: those the service kit
    /// builds. The gateway is the edge and the sandbox stands for an outside provider.
    #[must_use]
    pub fn serves_mutual_tls(self) -> bool {
        !matches!(self, Self::Gateway | Self::PaymentSandbox)
    }

    /// Whether the service publishes or consumes events.
    #[must_use]
    pub fn uses_bus(self) -> bool {
        !matches!(self, Self::Gateway | Self::PaymentSandbox)
    }

    /// Whether clients reach it through the gateway (the sandbox stands for an outside provider).
    #[must_use]
    pub fn behind_gateway(self) -> bool {
        !matches!(self, Self::Gateway | Self::PaymentSandbox)
    }
}
