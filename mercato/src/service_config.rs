//! Each service's settings, cut from the whole configuration: the shared sections become its
//! [`ServiceSettings`], its own section is handed on, and `urls` says where the services it
//! calls answer (configured URLs, or the addresses services of this process actually bound).

use std::collections::BTreeMap;

use mercato_kit::ServiceSettings;

use crate::config::Config;
use crate::names::ServiceName;

/// Where each service answers, by name.
pub type Urls = BTreeMap<ServiceName, String>;

/// The configured URL of every service.
#[must_use]
pub fn configured_urls(config: &Config) -> Urls {
    ServiceName::ALL
        .iter()
        .map(|s| (*s, config.base_url(*s)))
        .collect()
}

/// The settings every service shares, for `name`.
#[must_use]
pub fn settings(config: &Config, name: ServiceName, urls: &Urls) -> ServiceSettings {
    ServiceSettings {
        listen: config.endpoint(name).listen,
        http: config.http.clone(),
        database: config.database_for(name),
        auth: config.auth.clone(),
        jwks_url: format!("{}/.well-known/jwks.json", urls[&ServiceName::Identity]),
        relay: config.relay.clone(),
        inbox: config.inbox.clone(),
        service_tokens: config.service_tokens.clone(),
        token_url: format!("{}/api/identity/token", urls[&ServiceName::Identity]),
        tls: config.tls.clone(),
    }
}

#[must_use]
pub fn identity(config: &Config) -> mercato_identity::Config {
    mercato_identity::Config {
        service: settings(config, ServiceName::Identity, &configured_urls(config)),
        identity: config.identity.clone(),
    }
}

#[must_use]
pub fn customers(config: &Config, urls: &Urls) -> mercato_customers::Config {
    mercato_customers::Config {
        service: settings(config, ServiceName::Customers, urls),
        projection_poll_ms: config.projections.poll_ms,
    }
}

#[must_use]
pub fn inventory(config: &Config, urls: &Urls) -> mercato_inventory::Config {
    mercato_inventory::Config {
        service: settings(config, ServiceName::Inventory, urls),
        inventory: config.inventory.clone(),
    }
}

/// Payments' settings; its provider is the payment sandbox at the URL in `urls`, when that
/// sandbox runs in this process.
#[must_use]
pub fn payments(config: &Config, urls: &Urls, sandbox_here: bool) -> mercato_payments::Config {
    let mut payments = config.payments.clone();
    if sandbox_here {
        payments
            .provider
            .url
            .clone_from(&urls[&ServiceName::PaymentSandbox]);
    }
    mercato_payments::Config {
        service: settings(config, ServiceName::Payments, urls),
        payments,
        client: config.client.clone(),
    }
}

#[must_use]
pub fn notifications(config: &Config, urls: &Urls) -> mercato_notifications::Config {
    mercato_notifications::Config {
        service: settings(config, ServiceName::Notifications, urls),
        notifications: config.notifications.clone(),
    }
}

#[must_use]
pub fn orders(config: &Config, urls: &Urls) -> mercato_orders::Config {
    mercato_orders::Config {
        service: settings(config, ServiceName::Orders, urls),
        saga: config.orders.clone(),
        inventory_url: urls[&ServiceName::Inventory].clone(),
        customers_url: urls[&ServiceName::Customers].clone(),
        projection_poll_ms: config.projections.poll_ms,
        cache: config.cache.clone(),
        client: config.client.clone(),
    }
}

#[must_use]
pub fn sandbox(config: &Config) -> mercato_payments::sandbox::SandboxConfig {
    mercato_payments::sandbox::SandboxConfig {
        listen: config.endpoint(ServiceName::PaymentSandbox).listen,
        http: config.http.clone(),
        late_delay_ms: config.sandbox.late_delay_ms,
        flaky_failures: config.sandbox.flaky_failures,
        capacity: config.sandbox.capacity,
    }
}

#[must_use]
pub fn gateway(config: &Config, urls: &Urls) -> mercato_gateway::Config {
    let upstreams = ServiceName::ALL
        .iter()
        .filter(|s| s.is_domain_service())
        .map(|s| (s.as_str().to_owned(), vec![urls[s].clone()]))
        .collect();
    mercato_gateway::Config {
        listen: config.endpoint(ServiceName::Gateway).listen,
        http: config.http.clone(),
        client: config.client.clone(),
        gateway: config.gateway.clone(),
        auth: config.auth.clone(),
        jwks_url: format!("{}/.well-known/jwks.json", urls[&ServiceName::Identity]),
        upstreams,
        tls: config.tls.files(),
    }
}
