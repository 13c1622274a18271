//! [`Noted`]: the event the platform's own suites (the bus, the pipeline, the event store)
//! publish and store, a number so a test can check that a payload arrived intact.

use mercato_messaging::Event;
use serde::{Deserialize, Serialize};

/// Event number `n`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Noted {
    pub n: i64,
}

impl Event for Noted {
    const TYPE: &'static str = "Noted";
    const VERSION: u32 = 1;
}
