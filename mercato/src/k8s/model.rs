//! What the manifests are made from: each service's port and needs, read from the configuration
//! and the service list, so the manifests follow the code rather than a second description.

use crate::config::Config;
use crate::names::ServiceName;

/// The image's non-root user and group (no account exists in the image; the number is enough).
pub const RUN_AS: u64 = 65532;

/// Liveness, as the runtime serves it for every service.
pub const HEALTH_PATH: &str = "/health";
/// Readiness, with a check per dependency, as the runtime serves it.
pub const READY_PATH: &str = "/ready";

/// How long a stopping pod keeps serving before it is sent SIGTERM: the time endpoints and the
/// gateway's health checks take to stop sending it requests.
pub const PRESTOP_SECS: u64 = 5;

/// Slack after the runtime's own drain and grace, for background tasks to stop.
pub const TERMINATION_SLACK_SECS: u64 = 5;

/// Where the pods find the configuration file, the identity keys and scratch space.
pub const CONFIG_DIR: &str = "/etc/mercato/config";
pub const KEYS_DIR: &str = "/etc/mercato/keys";
pub const DATA_DIR: &str = "/var/lib/mercato";
/// Where a pod finds its certificate, key and CA: the layout of a cert-manager Secret.
pub const TLS_DIR: &str = "/etc/mercato/tls";
/// The plaintext port of `/health` and `/ready` (`[tls] probe_listen`) in a pod whose service
/// port takes only mutual TLS, which a kubelet's probe cannot speak.
pub const PROBE_PORT: u16 = 8099;

/// The event categories, each a JetStream stream the setup job creates.
pub const CATEGORIES: &[&str] = &[
    mercato_contracts::identity::CATEGORY,
    mercato_contracts::customers::CATEGORY,
    mercato_contracts::inventory::CATEGORY,
    mercato_contracts::orders::CATEGORY,
    mercato_contracts::payments::CATEGORY,
];

/// CPU in millicores and memory in MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resources {
    pub cpu_request_m: u32,
    pub cpu_limit_m: u32,
    pub memory_request_mib: u32,
    pub memory_limit_mib: u32,
}

/// Peak resident memory of a service's process under checkout load, in MiB, with mimalloc as
/// the allocator: the highest of
/// - the README's "Performance" run, `scripts/measure-resources.sh --bin target/release/mercato
///   --rate 200 --secs 20`: orders 81, inventory 67, identity 59;
/// - `scripts/measure-resources.sh --bin target/debug/mercato --rate 20 --secs 20`, with and
///   without `--tls --tokens`: identity 101, customers 62, inventory 65, payment-sandbox 59,
///   payments 65, notifications 62, orders 78, gateway 62;
/// - for the gateway, 78 at 20 orders/s on the debug build before mimalloc (README,
///   "Deploying to Kubernetes"), above what it reached since.
#[must_use]
pub fn peak_memory_mib(service: ServiceName) -> u32 {
    match service {
        ServiceName::Identity => 101,
        ServiceName::Customers | ServiceName::Notifications => 62,
        ServiceName::Inventory => 67,
        ServiceName::PaymentSandbox => 59,
        ServiceName::Payments => 65,
        ServiceName::Orders => 81,
        ServiceName::Gateway => 78,
    }
}

/// Requests and limits per service.
///
/// CPU was measured with `scripts/measure-resources.sh --rate 5 --secs 30` on the debug build
/// (every service as its own `mercato serve` process on PostgreSQL and NATS, `mercato loadgen`
/// through the gateway; CPU is user + system time over the run), which gave in millicores:
/// identity 33, customers 11, inventory 95, payment-sandbox 3, payments 88, notifications 62,
/// orders 151, gateway 34. A release build needs less CPU for the same load, so requests are
/// about those figures and CPU limits room for bursts and start-up (the HPA answers sustained
/// load with replicas). Memory requests are the peak ([`peak_memory_mib`]) with a quarter more,
/// rounded up to 8 MiB, limits at least twice the peak: a pod is never scheduled where its
/// measured peak does not fit.
#[must_use]
pub fn resources(service: ServiceName) -> Resources {
    let (cpu_request_m, cpu_limit_m, memory_limit_mib) = match service {
        ServiceName::Identity => (100, 1000, 320),
        ServiceName::Customers => (25, 500, 128),
        ServiceName::Inventory | ServiceName::Payments => (100, 500, 160),
        ServiceName::PaymentSandbox => (25, 250, 128),
        ServiceName::Notifications => (75, 500, 128),
        ServiceName::Orders => (150, 1000, 192),
        ServiceName::Gateway => (100, 1000, 192),
    };
    let with_headroom = (peak_memory_mib(service) * 5).div_ceil(4).next_multiple_of(8);
    // Argon2id hashes take 19 MiB each, several at once during registration bursts: more than
    // the load that set identity's peak asks for.
    let floor = if service == ServiceName::Identity { 160 } else { 0 };
    Resources {
        cpu_request_m,
        cpu_limit_m,
        memory_request_mib: with_headroom.max(floor),
        memory_limit_mib,
    }
}

/// One service as a Deployment sees it.
#[derive(Debug, Clone)]
pub struct Workload {
    pub service: ServiceName,
    /// The Kubernetes name: the service's own name (`payment-sandbox`, …).
    pub name: &'static str,
    pub port: u16,
    pub database: bool,
    pub bus: bool,
    pub redis: bool,
    /// Services it calls, by name: the JWKS from identity, orders' gRPC reads, the gateway's
    /// upstreams, payments' provider.
    pub calls: Vec<ServiceName>,
    /// Reached by clients from outside the namespace.
    pub public: bool,
    pub resources: Resources,
}

impl Workload {
    /// Needs secrets (database password, credentials in the Redis URL) from `mercato-secrets`.
    #[must_use]
    pub fn needs_secrets(&self) -> bool {
        self.database || self.redis
    }

    /// Holds a certificate of the service CA: every service but the sandbox, which stands for
    /// an outside provider.
    #[must_use]
    pub fn holds_certificate(&self) -> bool {
        self.service != ServiceName::PaymentSandbox
    }

    /// The port the kubelet probes: the plaintext probe port beside a mutual-TLS port, else the
    /// service's own.
    #[must_use]
    pub fn probe_port(&self) -> u16 {
        if self.service.is_domain_service() {
            PROBE_PORT
        } else {
            self.port
        }
    }

    /// How the other pods reach it.
    #[must_use]
    pub fn scheme(&self) -> &'static str {
        if self.service.is_domain_service() {
            "https"
        } else {
            "http"
        }
    }
}

/// Which services call which, as the `mercato` binary wires them (see `cli::*_config` and
/// `services::start_one`).
#[must_use]
pub fn calls(service: ServiceName) -> Vec<ServiceName> {
    let mut out = Vec::new();
    match service {
        ServiceName::Gateway => {
            out.extend(ServiceName::ALL.iter().copied().filter(|s| s.is_domain_service()));
        }
        ServiceName::Identity | ServiceName::PaymentSandbox => {}
        other => {
            // Every service behind the gateway verifies tokens against identity's JWKS.
            out.push(ServiceName::Identity);
            match other {
                ServiceName::Orders => out.extend([ServiceName::Customers, ServiceName::Inventory]),
                ServiceName::Payments => out.push(ServiceName::PaymentSandbox),
                _ => {}
            }
        }
    }
    out
}

/// Whether the service talks to Redis: orders' shared cache, the gateway's shared rate limits.
#[must_use]
pub fn uses_redis(service: ServiceName) -> bool {
    matches!(service, ServiceName::Orders | ServiceName::Gateway)
}

/// The settings the manifests take from the configuration.
#[derive(Debug, Clone)]
pub struct System {
    pub workloads: Vec<Workload>,
    pub shutdown_grace_ms: u64,
    pub drain_delay_ms: u64,
    pub readiness_check_timeout_ms: u64,
    pub bus_duplicate_window_secs: u64,
}

impl System {
    #[must_use]
    pub fn from_config(config: &Config) -> Self {
        let workloads = ServiceName::ALL
            .iter()
            .map(|&service| Workload {
                service,
                name: service.as_str(),
                port: config.endpoint(service).listen.port(),
                database: service.is_domain_service(),
                bus: service.is_domain_service(),
                redis: uses_redis(service),
                calls: calls(service),
                public: service == ServiceName::Gateway,
                resources: resources(service),
            })
            .collect();
        Self {
            workloads,
            shutdown_grace_ms: config.http.shutdown_grace_ms,
            drain_delay_ms: config.http.drain_delay_ms,
            readiness_check_timeout_ms: config.http.readiness_check_timeout_ms,
            bus_duplicate_window_secs: config.bus.duplicate_window_secs,
        }
    }

    #[must_use]
    pub fn workload(&self, service: ServiceName) -> &Workload {
        self.workloads
            .iter()
            .find(|w| w.service == service)
            .expect("every service has a workload")
    }

    /// The pod's whole stop: the preStop pause, then the runtime's drain delay and shutdown grace,
    /// then slack.
    #[must_use]
    pub fn termination_grace_secs(&self) -> u64 {
        PRESTOP_SECS + (self.drain_delay_ms + self.shutdown_grace_ms).div_ceil(1000) + TERMINATION_SLACK_SECS
    }

    /// A readiness probe must outlast the runtime's own per-check timeout.
    #[must_use]
    pub fn readiness_probe_timeout_secs(&self) -> u64 {
        self.readiness_check_timeout_ms.div_ceil(1000) + 1
    }

    /// The services that call `service`.
    #[must_use]
    pub fn callers(&self, service: ServiceName) -> Vec<&Workload> {
        self.workloads
            .iter()
            .filter(|w| w.calls.contains(&service))
            .collect()
    }
}
