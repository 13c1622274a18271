//! The services the `mercato` binary can run, by name.

use mercato_kit::StartError;
use mercato_storage::{DatabaseConfig, Db, Migration};

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

    /// The service's migrations; none for the gateway and the sandbox, which keep no database.
    #[must_use]
    pub fn migrations(self) -> &'static [Migration] {
        match self {
            Self::Identity => mercato_identity::store::MIGRATIONS,
            Self::Customers => mercato_customers::store::MIGRATIONS,
            Self::Inventory => mercato_inventory::store::MIGRATIONS,
            Self::Orders => mercato_orders::store::MIGRATIONS,
            Self::Notifications => mercato_notifications::store::MIGRATIONS,
            Self::Payments => mercato_payments::store::MIGRATIONS,
            Self::Gateway | Self::PaymentSandbox => &[],
        }
    }

    /// Connects to the service's database and applies its migrations, for work on its data
    /// while it is stopped (an admin account, a projection's rebuild).
    ///
    /// # Errors
    /// The database cannot be reached or a migration fails.
    pub async fn open_database(self, database: &DatabaseConfig) -> Result<Db, StartError> {
        mercato_kit::builder::open_database(self.as_str(), database, self.migrations()).await
    }

    /// Whether it is a domain service, built by the service kit: such a service owns a database,
    /// publishes or consumes events, is served over mutual TLS when `[tls]` is on, and is reached
    /// through the gateway. The gateway is the edge and the sandbox stands for an outside provider.
    #[must_use]
    pub fn is_domain_service(self) -> bool {
        !matches!(self, Self::Gateway | Self::PaymentSandbox)
    }
}
