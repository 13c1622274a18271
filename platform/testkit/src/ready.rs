//! What `/ready` answered: the status and the report with one entry per check.

use serde_json::Value;

/// A readiness report and the status it came with.
#[derive(Debug)]
pub struct Readiness {
    pub status: u16,
    pub report: Value,
}

impl Readiness {
    /// Reads the answer to a `GET /ready`.
    ///
    /// # Panics
    /// When the body is not JSON.
    pub async fn of(response: reqwest::Response) -> Self {
        Self {
            status: response.status().as_u16(),
            report: response.json().await.expect("a readiness report is JSON"),
        }
    }

    /// Every check, in the order the report lists them.
    ///
    /// # Panics
    /// When the report has no list of checks.
    #[must_use]
    pub fn checks(&self) -> &[Value] {
        self.report["checks"]
            .as_array()
            .unwrap_or_else(|| panic!("no list of checks in {}", self.report))
    }

    /// The names of the checks, in order.
    #[must_use]
    pub fn check_names(&self) -> Vec<&str> {
        self.checks()
            .iter()
            .map(|c| c["name"].as_str().unwrap_or_default())
            .collect()
    }

    /// The check called `name`.
    ///
    /// # Panics
    /// When there is none.
    #[must_use]
    pub fn check(&self, name: &str) -> &Value {
        self.checks()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name} check in {}", self.report))
    }

    /// The check called `name`, once the answer is known to be `503` `not_ready` with that check
    /// down.
    ///
    /// # Panics
    /// When the answer is anything else.
    #[must_use]
    pub fn down(&self, name: &str) -> &Value {
        let report = &self.report;
        assert_eq!(self.status, 503, "{report}");
        assert_eq!(report["status"], "not_ready", "{report}");
        let check = self.check(name);
        assert_eq!(check["status"], "down", "{report}");
        check
    }
}
