//! A write transaction on either backend.

use sqlx::{Any, AnyConnection};

use crate::error::StorageError;
use crate::group::{CommitCounters, Member};

/// A write transaction: `&mut *tx` is the connection to run statements on, [`Tx::commit`]
/// returns once its work is durable, and dropping it uncommitted rolls it back.
///
/// On PostgreSQL it is a transaction of its own; on SQLite (from [`crate::Db::begin`]) one
/// member of a group that commits together (see [`crate::group`]).
#[derive(Debug)]
pub struct Tx(Inner);

#[derive(Debug)]
enum Inner {
    Own {
        tx: sqlx::Transaction<'static, Any>,
        counters: Option<CommitCounters>,
    },
    Member(Member),
}

impl Tx {
    pub(crate) fn own(tx: sqlx::Transaction<'static, Any>, counters: CommitCounters) -> Self {
        Self(Inner::Own {
            tx,
            counters: Some(counters),
        })
    }

    pub(crate) fn member(member: Member) -> Self {
        Self(Inner::Member(member))
    }

    /// Commits; on SQLite waits for the commit of the group this transaction joined.
    ///
    /// # Errors
    /// The commit failed (for a group, whichever member's work made it fail): nothing of this
    /// transaction is kept.
    pub async fn commit(self) -> Result<(), StorageError> {
        match self.0 {
            Inner::Own { tx, counters } => {
                tx.commit().await?;
                if let Some(counters) = counters {
                    counters.commits.inc();
                    counters.transactions.inc();
                }
                Ok(())
            }
            Inner::Member(member) => member.commit().await,
        }
    }

    /// Rolls back this transaction's work (on SQLite only its own, not its group's).
    ///
    /// # Errors
    /// The database could not be reached to roll back (it rolls back on its own then).
    pub async fn rollback(self) -> Result<(), StorageError> {
        match self.0 {
            Inner::Own { tx, .. } => Ok(tx.rollback().await?),
            Inner::Member(member) => {
                member.rollback().await;
                Ok(())
            }
        }
    }
}

/// A transaction begun outside [`crate::Db::begin`] (a reader's, say), not counted in the metrics.
impl From<sqlx::Transaction<'static, Any>> for Tx {
    fn from(tx: sqlx::Transaction<'static, Any>) -> Self {
        Self(Inner::Own { tx, counters: None })
    }
}

impl std::ops::Deref for Tx {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        match &self.0 {
            Inner::Own { tx, .. } => tx,
            Inner::Member(member) => member.connection(),
        }
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match &mut self.0 {
            Inner::Own { tx, .. } => tx,
            Inner::Member(member) => member.connection_mut(),
        }
    }
}
