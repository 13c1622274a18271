//! Rebuilding one of a service's projections by name, from position zero.

use mercato_eventstore::Projection;
use mercato_storage::Db;

/// Why a projection could not be rebuilt.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("{service} has no projection {name:?}")]
    Unknown { service: &'static str, name: String },
    #[error(transparent)]
    Failed(#[from] mercato_eventstore::CatchUpError),
}

/// Rebuilds the one of `projections` called `name`; returns the events applied. The
/// projection is as it was when the rebuild fails.
///
/// # Errors
/// An unknown name, or the rebuild failed.
pub async fn rebuild(
    db: &Db,
    service: &'static str,
    projections: &[&dyn Projection],
    name: &str,
) -> Result<u64, RebuildError> {
    let projection = projections
        .iter()
        .find(|p| p.name() == name)
        .ok_or_else(|| RebuildError::Unknown {
            service,
            name: name.to_owned(),
        })?;
    Ok(mercato_eventstore::rebuild(db, *projection).await?)
}
