//! The one place where inventory's errors become HTTP answers and gRPC statuses.

use mercato_runtime::{FieldError, Problem};

use crate::catalogue::CatalogueError;

impl From<CatalogueError> for Problem {
    fn from(error: CatalogueError) -> Self {
        match error {
            CatalogueError::NotFound(sku) => Self::not_found(format!("there is no product with SKU {sku:?}")),
            CatalogueError::Invalid(fields) => Self::validation(
                fields
                    .into_iter()
                    .map(|(field, message)| FieldError::new(field, message))
                    .collect(),
            ),
            CatalogueError::Contended => Self::conflict("the product changed while updating it; try again"),
            CatalogueError::Storage(e) if e.is_transient() => {
                tracing::warn!(error = %e, "database busy or unreachable");
                Self::unavailable("the service is busy, try again shortly", 1)
            }
            other => {
                tracing::error!(error = %other, cause = ?std::error::Error::source(&other), "request failed");
                Self::internal()
            }
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
            CatalogueError::Storage(e) if e.is_transient() => {
                tracing::warn!(error = %e, "database busy or unreachable");
                Self::unavailable("the service is busy, try again shortly")
            }
            other => {
                tracing::error!(error = %other, cause = ?std::error::Error::source(&other), "gRPC call failed");
                Self::internal("the call could not be completed; it has been logged")
            }
        }
    }
}
