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

    /// Whether it is a domain service, built by the service kit: such a service owns a database,
    /// publishes or consumes events, is served over mutual TLS when `[tls]` is on, and is reached
    /// through the gateway. The gateway is the edge and the sandbox stands for an outside provider.
    #[must_use]
    pub fn is_domain_service(self) -> bool {
        !matches!(self, Self::Gateway | Self::PaymentSandbox)
    }
}
