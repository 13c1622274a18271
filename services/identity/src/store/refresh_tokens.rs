use mercato_storage::sqlx::{self, Row as _};
use mercato_storage::{StorageError, Tx};

/// A stored refresh token (by hash; the token itself is never stored).
#[derive(Debug)]
pub struct RefreshRecord {
    pub family_id: String,
    pub user_id: String,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// # Errors
/// The database failed.
pub async fn insert_refresh(
    tx: &mut Tx,
    token_hash: &str,
    family_id: &str,
    user_id: &str,
    issued_at: i64,
    expires_at: i64,
) -> Result<(), StorageError> {
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, family_id, user_id, issued_at, expires_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(token_hash)
    .bind(family_id)
    .bind(user_id)
    .bind(issued_at)
    .bind(expires_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// # Errors
/// The database failed.
pub async fn find_refresh(tx: &mut Tx, token_hash: &str) -> Result<Option<RefreshRecord>, StorageError> {
    let row = sqlx::query(
        "SELECT family_id, user_id, expires_at, used_at, revoked_at FROM refresh_tokens WHERE token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.map(|r| RefreshRecord {
        family_id: r.get("family_id"),
        user_id: r.get("user_id"),
        expires_at: r.get("expires_at"),
        used_at: r.get("used_at"),
        revoked_at: r.get("revoked_at"),
    }))
}

/// Marks a token used; `false` when it was used or revoked already (a concurrent refresh won).
///
/// # Errors
/// The database failed.
pub async fn mark_used(tx: &mut Tx, token_hash: &str, now: i64) -> Result<bool, StorageError> {
    let result = sqlx::query(
        "UPDATE refresh_tokens SET used_at = $1
         WHERE token_hash = $2 AND used_at IS NULL AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(token_hash)
    .execute(&mut **tx)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Revokes every live token of a family (reuse of a rotated token was detected).
///
/// # Errors
/// The database failed.
pub async fn revoke_family(tx: &mut Tx, family_id: &str, now: i64) -> Result<u64, StorageError> {
    let result =
        sqlx::query("UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(family_id)
            .execute(&mut **tx)
            .await?;
    Ok(result.rows_affected())
}
