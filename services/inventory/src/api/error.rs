//! The one place where inventory's errors become HTTP answers and gRPC statuses.

use mercato_kit::problems::invalid_fields;
use mercato_runtime::{Problem, Transient, failure};

use crate::catalogue::CatalogueError;

impl Transient for CatalogueError {
    fn is_transient(&self) -> bool {
        matches!(self, Self::Storage(e) if e.is_transient())
    }
}

impl From<CatalogueError> for Problem {
    fn from(error: CatalogueError) -> Self {
        match error {
            CatalogueError::NotFound(sku) => Self::not_found(format!("there is no product with SKU {sku:?}")),
            CatalogueError::Invalid(fields) => invalid_fields(fields),
            CatalogueError::Contended => Self::conflict("the product changed while updating it; try again"),
            other => Self::from_failure(&other),
        }
    }
}

impl From<CatalogueError> for tonic::Status {
    fn from(error: CatalogueError) -> Self {
        match error {
            CatalogueError::NotFound(sku) => Self::not_found(format!("there is no product with SKU {sku:?}")),
            CatalogueError::Invalid(fields) => {
                let detail: Vec<String> = fields.iter().map(|(f, m)| format!("{f}: {m}")).collect();
                Self::invalid_argument(detail.join("; "))
            }
            CatalogueError::Contended => Self::aborted("the product changed while reading it; try again"),
            other => failure::status(&other),
        }
    }
}
