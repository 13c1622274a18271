//! Readiness of a service that owns a database and uses the bus.

use mercato_runtime::Readiness;
use mercato_storage::Db;

use crate::bus::Bus;

/// `database` and `bus` checks, each a cheap round trip, named with their engines.
#[must_use]
pub fn readiness(db: &Db, bus: &Bus) -> Readiness {
    let (db_engine, bus_engine) = (db.backend().as_str(), bus.backend());
    let (db, bus) = (db.clone(), bus.clone());
    Readiness::new()
        .with_check("database", move || {
            let db = db.clone();
            async move { db.ping().await.map_err(|e| e.to_string()) }
        })
        .on_engine(db_engine)
        .with_check("bus", move || {
            let bus = bus.clone();
            async move { bus.ping().await.map_err(|e| e.to_string()) }
        })
        .on_engine(bus_engine)
}
