//! `mercato access`: least privilege on the bus and the cache, rendered from what each service
//! declares it publishes and consumes, so a permission list never drifts from the code.
//!
//! - [`nats`]: a `nats-server` authorization block with one user per service, allowed to publish
//!   only its own category (and its own groups' dead letters) and to consume only its own groups.
//! - [`redis`]: a Redis ACL file with one user per client (the gateway, the orders cache), each
//!   limited to its key prefix.
//!
//! Neither rendering holds a secret: NATS reads each password from the server's environment, and
//! Redis stores a SHA-256 of the password read here from a file or the environment.

pub mod nats;
pub mod redis;

use std::path::PathBuf;

use crate::config::Config;

/// `mercato access`
#[derive(Debug, clap::Args)]
pub struct AccessArgs {
    #[command(subcommand)]
    pub target: AccessTarget,
}

#[derive(Debug, clap::Subcommand)]
pub enum AccessTarget {
    /// The `authorization` block for `nats-server` (include it from the server's configuration).
    /// Each password is `$MERCATO_NATS_PASSWORD_<SERVICE>` in the server's environment.
    Nats {
        /// Written here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// A Redis ACL file (`aclfile` in redis.conf). Each password is read from
    /// `MERCATO_REDIS_PASSWORD_<CLIENT>_FILE` (a file) or `MERCATO_REDIS_PASSWORD_<CLIENT>`.
    Redis {
        /// Written here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// A rendering could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("no password for Redis user {user}: set {env}_FILE (a file) or {env}")]
    MissingPassword { user: String, env: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    OpenSecret(#[from] mercato_security::secret_file::ExposedSecret),
}

/// What one service may do on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusGrant {
    /// The service, also its NATS user name.
    pub service: &'static str,
    /// The category whose events it publishes, if it publishes any.
    pub publishes: Option<&'static str>,
    /// The consumer groups it runs, with the category each reads.
    pub consumes: Vec<(&'static str, &'static str)>,
    /// Categories it follows as a broadcast (every instance sees every event), as the orders
    /// cache does to drop changed customers and products.
    pub follows: Vec<&'static str>,
}

/// Every service that uses the bus, from the services' own constants.
#[must_use]
pub fn bus_grants() -> Vec<BusGrant> {
    use mercato_contracts::{customers, identity, inventory, orders, payments};
    vec![
        BusGrant {
            service: mercato_identity::NAME,
            publishes: Some(identity::CATEGORY),
            consumes: vec![],
            follows: vec![],
        },
        BusGrant {
            service: mercato_customers::NAME,
            publishes: Some(customers::CATEGORY),
            consumes: vec![(mercato_customers::IDENTITY_CONSUMER, identity::CATEGORY)],
            follows: vec![],
        },
        BusGrant {
            service: mercato_inventory::NAME,
            publishes: Some(inventory::CATEGORY),
            consumes: vec![(mercato_inventory::ORDERS_CONSUMER, orders::CATEGORY)],
            follows: vec![],
        },
        BusGrant {
            service: mercato_payments::NAME,
            publishes: Some(payments::CATEGORY),
            consumes: vec![(mercato_payments::CONSUMER_GROUP, orders::CATEGORY)],
            follows: vec![],
        },
        BusGrant {
            service: mercato_notifications::NAME,
            publishes: None,
            consumes: mercato_notifications::CONSUMERS.to_vec(),
            follows: vec![],
        },
        BusGrant {
            service: mercato_orders::NAME,
            publishes: Some(orders::CATEGORY),
            consumes: vec![
                (mercato_orders::INVENTORY_CONSUMER, inventory::CATEGORY),
                (mercato_orders::PAYMENTS_CONSUMER, payments::CATEGORY),
            ],
            // services/orders/src/lookups.rs: `Lookups::invalidators`.
            follows: vec![customers::CATEGORY, inventory::CATEGORY],
        },
    ]
}

/// Renders `target` for `config`.
///
/// # Errors
/// [`AccessError`] when a password is missing or its file is readable by others.
pub fn render(config: &Config, target: &AccessTarget) -> Result<String, AccessError> {
    match target {
        AccessTarget::Nats { .. } => Ok(nats::render(&bus_grants())),
        AccessTarget::Redis { .. } => redis::render(&redis::users(config), &redis::password_from_env),
    }
}

/// Renders and writes (or prints) what `args` asks for.
///
/// # Errors
/// See [`render`]; [`AccessError::Io`] when the file cannot be written.
pub fn run(config: &Config, args: &AccessArgs) -> Result<(), AccessError> {
    let text = render(config, &args.target)?;
    let (AccessTarget::Nats { out } | AccessTarget::Redis { out }) = &args.target;
    match out {
        Some(path) => write_private(path, &text),
        None => {
            crate::say!("{text}");
            Ok(())
        }
    }
}

/// The Redis rendering holds password hashes: only its owner may read it.
fn write_private(path: &std::path::Path, text: &str) -> Result<(), AccessError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |source| AccessError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)
}

/// Reads a secret from a file that not every user may read.
///
/// # Errors
/// [`AccessError::OpenSecret`] when others may read it; [`AccessError::Io`] when it cannot be
/// read.
pub fn read_secret_file(path: &std::path::Path) -> Result<String, AccessError> {
    mercato_security::secret_file::check(path)?;
    let text = std::fs::read_to_string(path).map_err(|source| AccessError::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_consumer_group_a_service_runs_is_granted_once() {
        let grants = bus_grants();
        let mut groups: Vec<_> = grants
            .iter()
            .flat_map(|g| g.consumes.iter().map(|c| c.0))
            .collect();
        let count = groups.len();
        groups.sort_unstable();
        groups.dedup();
        assert_eq!(groups.len(), count, "a group is granted to two services");
        assert!(groups.contains(&mercato_payments::CONSUMER_GROUP));
    }

    #[test]
    fn each_category_has_exactly_one_publisher() {
        let grants = bus_grants();
        let mut publishers: Vec<_> = grants.iter().filter_map(|g| g.publishes).collect();
        let count = publishers.len();
        publishers.sort_unstable();
        publishers.dedup();
        assert_eq!(publishers.len(), count);
    }

    #[test]
    fn a_secret_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "hunter2\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(read_secret_file(&path), Err(AccessError::OpenSecret(_))));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret_file(&path).unwrap(), "hunter2");
    }
}
