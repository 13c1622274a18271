//! The one place where orders' errors become HTTP answers.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use mercato_contracts::money::MoneyError;
use mercato_runtime::{FieldError, Problem, Transient};

use crate::checkout::OrderError;
use crate::directory::DirectoryError;
use crate::domain::InvalidLines;

#[derive(Debug)]
pub enum ApiError {
    Problem(Problem),
    Order(OrderError),
    Directory(DirectoryError),
}

impl From<Problem> for ApiError {
    fn from(p: Problem) -> Self {
        Self::Problem(p)
    }
}

impl From<OrderError> for ApiError {
    fn from(e: OrderError) -> Self {
        Self::Order(e)
    }
}

impl From<DirectoryError> for ApiError {
    fn from(e: DirectoryError) -> Self {
        Self::Directory(e)
    }
}

/// `422` naming `items`: lines that cannot make one order.
pub(super) fn lines_problem(error: InvalidLines) -> Problem {
    let message = match error {
        InvalidLines::Empty => "must hold at least one item",
        InvalidLines::Total(MoneyError::CurrencyMismatch(..)) => {
            "all products must be priced in one currency"
        }
        InvalidLines::Total(MoneyError::Overflow) => "the order's total is too large",
    };
    Problem::validation(vec![FieldError::new("items", message)])
}

impl Transient for OrderError {
    fn is_transient(&self) -> bool {
        OrderError::is_transient(self)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = match self {
            Self::Problem(p) => p,
            Self::Order(OrderError::NotFound) => Problem::not_found("no such order"),
            Self::Order(OrderError::WrongStatus(status)) => {
                Problem::conflict(format!("the order is {status} and can no longer change that way"))
            }
            Self::Order(OrderError::KeyReused) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency key reused",
            )
            .with_detail("this Idempotency-Key was used for a different request"),
            Self::Order(OrderError::Lines(e)) => lines_problem(e),
            Self::Order(OrderError::Contended) => {
                Problem::conflict("the order changed while updating it; try again")
            }
            Self::Directory(e) => {
                tracing::warn!(error = %e, "a dependency is unavailable");
                Problem::unavailable("a service this order needs is unavailable, try again shortly", 2)
            }
            Self::Order(e) => Problem::from_failure(&e),
        };
        problem.into_response()
    }
}
