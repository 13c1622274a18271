//! One Redis connection per use (rate limits, admin state), made on first use so that a gateway
//! starts without Redis, with connect and response times bounded.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Mutex;

/// The connection in `slot`, made now if there is none yet.
///
/// # Errors
/// Redis could not be reached within `timeout`.
pub(crate) async fn get(
    client: &redis::Client,
    slot: &Mutex<Option<ConnectionManager>>,
    timeout: Duration,
) -> Result<ConnectionManager, redis::RedisError> {
    let mut slot = slot.lock().await;
    if let Some(c) = slot.as_ref() {
        return Ok(c.clone());
    }
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(timeout)
        .set_response_timeout(timeout)
        .set_number_of_retries(1);
    let c = ConnectionManager::new_with_config(client.clone(), config).await?;
    *slot = Some(c.clone());
    Ok(c)
}
