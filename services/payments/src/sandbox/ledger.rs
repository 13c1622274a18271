//! The sandbox's memory: charges, refunds and idempotency keys, and the rules of the test cards.
//!
//! Everything here is synchronous and takes the time as an argument, so the rules are tested
//! without a clock and the server holds the mutex only for the length of one decision.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// The test cards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Card {
    /// Succeeds.
    Visa,
    /// Declined.
    Decline,
    /// Unavailable for the first attempts of each idempotency key, then succeeds.
    Flaky,
    /// Never answers.
    Hang,
    /// Charged at once, but the answer (and the capture) comes only after the late delay.
    Late,
}

impl Card {
    #[must_use]
    pub fn parse(token: &str) -> Option<Self> {
        match token {
            "tok_visa" => Some(Self::Visa),
            "tok_decline" => Some(Self::Decline),
            "tok_flaky" => Some(Self::Flaky),
            "tok_hang" => Some(Self::Hang),
            "tok_late" => Some(Self::Late),
            _ => None,
        }
    }
}

/// The body of a charge request; two requests with one key must carry the same one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeRequest {
    pub amount_minor: i64,
    pub currency: String,
    pub card_token: String,
}

/// Money that moved (or, for a late card, is about to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub id: String,
    pub idempotency_key: String,
    pub amount_minor: i64,
    pub currency: String,
    pub created_at_ms: i64,
    /// Until then the charge is `pending` and requests for it wait.
    pub ready_at: Instant,
    pub refund: Option<Refund>,
}

impl Charge {
    #[must_use]
    pub fn status(&self, now: Instant) -> &'static str {
        if now < self.ready_at {
            "pending"
        } else {
            "succeeded"
        }
    }
}

/// A full refund of one charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    pub id: String,
    pub charge_id: String,
    pub amount_minor: i64,
    pub currency: String,
    pub created_at_ms: i64,
}

/// What the server answers to a charge request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeDecision {
    /// `200` with the charge, once its `ready_at` has passed.
    Charged(Charge),
    /// `402 card_declined`.
    Declined,
    /// `503`: try again with the same key.
    Unavailable,
    /// No answer at all.
    Hang,
    /// `400 invalid_card`.
    InvalidCard,
    /// `409`: the key was used with another body.
    KeyReused,
}

/// What the server answers to a refund request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundDecision {
    Refunded(Refund),
    UnknownCharge,
    /// The charge is still pending (a late card before its delay passed).
    NotCaptured,
    KeyReused,
}

#[derive(Debug)]
enum Outcome {
    Charged(Charge),
    Declined,
}

#[derive(Debug)]
struct KeyEntry {
    request: ChargeRequest,
    attempts: u32,
    outcome: Option<Outcome>,
}

/// The rules the ledger plays by.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// Keys (and refund keys) remembered; the oldest are forgotten first.
    pub capacity: usize,
    /// Attempts per key that a flaky card answers `503`.
    pub flaky_failures: u32,
    pub late_delay: Duration,
}

/// Charges by idempotency key, bounded.
#[derive(Debug)]
pub struct Ledger {
    rules: Rules,
    keys: HashMap<String, KeyEntry>,
    key_order: VecDeque<String>,
    /// Charge id → its idempotency key.
    charges: HashMap<String, String>,
    /// Refund idempotency key → the charge it refunded.
    refund_keys: HashMap<String, String>,
    refund_order: VecDeque<String>,
}

impl Ledger {
    #[must_use]
    pub fn new(rules: Rules) -> Self {
        Self {
            rules,
            keys: HashMap::new(),
            key_order: VecDeque::new(),
            charges: HashMap::new(),
            refund_keys: HashMap::new(),
            refund_order: VecDeque::new(),
        }
    }

    /// Decides a charge request made at `now` with idempotency key `key`.
    pub fn charge(&mut self, key: &str, request: ChargeRequest, now: Instant, now_ms: i64) -> ChargeDecision {
        if let Some(entry) = self.keys.get(key)
            && entry.request != request
        {
            return ChargeDecision::KeyReused;
        }
        // Unknown cards are refused before anything is remembered, as a provider's validation would.
        let Some(card) = Card::parse(&request.card_token) else {
            return ChargeDecision::InvalidCard;
        };
        if !self.keys.contains_key(key) {
            self.make_room();
            self.key_order.push_back(key.to_owned());
        }
        let entry = self.keys.entry(key.to_owned()).or_insert_with(|| KeyEntry {
            request,
            attempts: 0,
            outcome: None,
        });
        entry.attempts = entry.attempts.saturating_add(1);
        match &entry.outcome {
            Some(Outcome::Charged(charge)) => return ChargeDecision::Charged(charge.clone()),
            Some(Outcome::Declined) => return ChargeDecision::Declined,
            None => {}
        }
        let ready_at = match card {
            Card::Decline => {
                entry.outcome = Some(Outcome::Declined);
                return ChargeDecision::Declined;
            }
            Card::Hang => return ChargeDecision::Hang,
            Card::Flaky if entry.attempts <= self.rules.flaky_failures => return ChargeDecision::Unavailable,
            Card::Visa | Card::Flaky => now,
            Card::Late => now + self.rules.late_delay,
        };
        let charge = Charge {
            id: format!("ch_{}", uuid::Uuid::new_v4().simple()),
            idempotency_key: key.to_owned(),
            amount_minor: entry.request.amount_minor,
            currency: entry.request.currency.clone(),
            created_at_ms: now_ms,
            ready_at,
            refund: None,
        };
        entry.outcome = Some(Outcome::Charged(charge.clone()));
        self.charges.insert(charge.id.clone(), key.to_owned());
        ChargeDecision::Charged(charge)
    }

    /// Refunds the whole of `charge_id`; the same charge is only ever refunded once.
    pub fn refund(&mut self, key: &str, charge_id: &str, now: Instant, now_ms: i64) -> RefundDecision {
        if let Some(refunded) = self.refund_keys.get(key)
            && refunded != charge_id
        {
            return RefundDecision::KeyReused;
        }
        let Some(charge) = self.charge_mut(charge_id) else {
            return RefundDecision::UnknownCharge;
        };
        if now < charge.ready_at {
            return RefundDecision::NotCaptured;
        }
        let refund = charge
            .refund
            .get_or_insert_with(|| Refund {
                id: format!("re_{}", uuid::Uuid::new_v4().simple()),
                charge_id: charge_id.to_owned(),
                amount_minor: charge.amount_minor,
                currency: charge.currency.clone(),
                created_at_ms: now_ms,
            })
            .clone();
        if !self.refund_keys.contains_key(key) {
            if self.refund_order.len() >= self.rules.capacity
                && let Some(old) = self.refund_order.pop_front()
            {
                self.refund_keys.remove(&old);
            }
            self.refund_keys.insert(key.to_owned(), charge_id.to_owned());
            self.refund_order.push_back(key.to_owned());
        }
        RefundDecision::Refunded(refund)
    }

    #[must_use]
    pub fn get(&self, charge_id: &str) -> Option<Charge> {
        let key = self.charges.get(charge_id)?;
        match &self.keys.get(key)?.outcome {
            Some(Outcome::Charged(charge)) => Some(charge.clone()),
            _ => None,
        }
    }

    /// The charges made with `key`: none or one, which is the point of idempotency keys.
    #[must_use]
    pub fn by_key(&self, key: &str) -> Vec<Charge> {
        match self.keys.get(key).and_then(|e| e.outcome.as_ref()) {
            Some(Outcome::Charged(charge)) => vec![charge.clone()],
            _ => Vec::new(),
        }
    }

    /// The newest charges first, at most `limit`.
    #[must_use]
    pub fn recent(&self, limit: usize) -> Vec<Charge> {
        self.key_order
            .iter()
            .rev()
            .filter_map(|key| match self.keys.get(key)?.outcome.as_ref()? {
                Outcome::Charged(charge) => Some(charge.clone()),
                Outcome::Declined => None,
            })
            .take(limit)
            .collect()
    }

    /// How many idempotency keys are remembered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn charge_mut(&mut self, charge_id: &str) -> Option<&mut Charge> {
        let key = self.charges.get(charge_id)?;
        match &mut self.keys.get_mut(key)?.outcome {
            Some(Outcome::Charged(charge)) => Some(charge),
            _ => None,
        }
    }

    /// Forgets the oldest keys until one more fits.
    fn make_room(&mut self) {
        while self.keys.len() >= self.rules.capacity.max(1) {
            let Some(old) = self.key_order.pop_front() else {
                break;
            };
            if let Some(KeyEntry {
                outcome: Some(Outcome::Charged(charge)),
                ..
            }) = self.keys.remove(&old)
            {
                self.charges.remove(&charge.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger() -> Ledger {
        Ledger::new(Rules {
            capacity: 100,
            flaky_failures: 2,
            late_delay: Duration::from_secs(8),
        })
    }

    fn request(card: &str) -> ChargeRequest {
        ChargeRequest {
            amount_minor: 1999,
            currency: "EUR".into(),
            card_token: card.into(),
        }
    }

    fn charged(decision: ChargeDecision) -> Charge {
        match decision {
            ChargeDecision::Charged(charge) => charge,
            other => panic!("expected a charge, got {other:?}"),
        }
    }

    #[test]
    fn a_visa_card_is_charged_once_per_key() {
        let mut ledger = ledger();
        let now = Instant::now();
        let first = charged(ledger.charge("k1", request("tok_visa"), now, 1));
        assert_eq!(first.status(now), "succeeded");
        let again = charged(ledger.charge("k1", request("tok_visa"), now, 2));
        assert_eq!(again, first, "a replay returns the same charge");
        assert_eq!(ledger.by_key("k1"), vec![first]);
        let other = charged(ledger.charge("k2", request("tok_visa"), now, 3));
        assert_ne!(other.id, again.id);
    }

    #[test]
    fn a_key_reused_with_another_body_is_refused() {
        let mut ledger = ledger();
        let now = Instant::now();
        charged(ledger.charge("k", request("tok_visa"), now, 1));
        let mut changed = request("tok_visa");
        changed.amount_minor += 1;
        assert_eq!(ledger.charge("k", changed, now, 2), ChargeDecision::KeyReused);
        assert_eq!(
            ledger.charge("k", request("tok_nope"), now, 2),
            ChargeDecision::KeyReused
        );
        assert_eq!(ledger.by_key("k").len(), 1);
    }

    #[test]
    fn a_declined_card_stays_declined_and_charges_nothing() {
        let mut ledger = ledger();
        let now = Instant::now();
        assert_eq!(
            ledger.charge("k", request("tok_decline"), now, 1),
            ChargeDecision::Declined
        );
        assert_eq!(
            ledger.charge("k", request("tok_decline"), now, 1),
            ChargeDecision::Declined
        );
        assert!(ledger.by_key("k").is_empty());
        assert!(ledger.recent(10).is_empty());
    }

    #[test]
    fn a_flaky_card_fails_twice_per_key_then_succeeds_once() {
        let mut ledger = ledger();
        let now = Instant::now();
        for _ in 0..2 {
            assert_eq!(
                ledger.charge("k", request("tok_flaky"), now, 1),
                ChargeDecision::Unavailable
            );
        }
        let charge = charged(ledger.charge("k", request("tok_flaky"), now, 1));
        assert_eq!(charged(ledger.charge("k", request("tok_flaky"), now, 1)), charge);
        assert_eq!(
            ledger.charge("other", request("tok_flaky"), now, 1),
            ChargeDecision::Unavailable,
            "each key gets its own failures"
        );
    }

    #[test]
    fn a_hanging_card_never_charges() {
        let mut ledger = ledger();
        let now = Instant::now();
        assert_eq!(
            ledger.charge("k", request("tok_hang"), now, 1),
            ChargeDecision::Hang
        );
        assert!(ledger.by_key("k").is_empty());
    }

    #[test]
    fn a_late_card_charges_at_once_but_is_pending_until_the_delay_passed() {
        let mut ledger = ledger();
        let now = Instant::now();
        let charge = charged(ledger.charge("k", request("tok_late"), now, 1));
        assert_eq!(charge.ready_at, now + Duration::from_secs(8));
        assert_eq!(charge.status(now), "pending");
        let later = now + Duration::from_secs(3);
        let retry = charged(ledger.charge("k", request("tok_late"), later, 2));
        assert_eq!(retry.id, charge.id, "a retry waits for the same charge");
        assert_eq!(retry.ready_at, charge.ready_at);
        assert_eq!(charge.status(now + Duration::from_secs(8)), "succeeded");
    }

    #[test]
    fn unknown_cards_are_refused_and_not_remembered() {
        let mut ledger = ledger();
        let now = Instant::now();
        assert_eq!(
            ledger.charge("k", request("tok_unknown"), now, 1),
            ChargeDecision::InvalidCard
        );
        assert!(ledger.is_empty());
        charged(ledger.charge("k", request("tok_visa"), now, 1));
    }

    #[test]
    fn a_charge_is_refunded_once_whatever_the_key() {
        let mut ledger = ledger();
        let now = Instant::now();
        let charge = charged(ledger.charge("k", request("tok_visa"), now, 1));
        let RefundDecision::Refunded(first) = ledger.refund("r1", &charge.id, now, 2) else {
            panic!("refunded")
        };
        assert_eq!(first.amount_minor, 1999);
        assert_eq!(
            ledger.refund("r1", &charge.id, now, 3),
            RefundDecision::Refunded(first.clone())
        );
        assert_eq!(
            ledger.refund("r2", &charge.id, now, 3),
            RefundDecision::Refunded(first.clone())
        );
        assert_eq!(ledger.get(&charge.id).unwrap().refund, Some(first));
    }

    #[test]
    fn refunds_need_a_known_captured_charge_and_a_faithful_key() {
        let mut ledger = ledger();
        let now = Instant::now();
        assert_eq!(
            ledger.refund("r", "ch_missing", now, 1),
            RefundDecision::UnknownCharge
        );
        let late = charged(ledger.charge("late", request("tok_late"), now, 1));
        assert_eq!(ledger.refund("r", &late.id, now, 1), RefundDecision::NotCaptured);
        let visa = charged(ledger.charge("visa", request("tok_visa"), now, 1));
        assert!(matches!(
            ledger.refund("r", &visa.id, now, 1),
            RefundDecision::Refunded(_)
        ));
        let after = now + Duration::from_secs(9);
        assert_eq!(ledger.refund("r", &late.id, after, 1), RefundDecision::KeyReused);
        assert!(matches!(
            ledger.refund("r-late", &late.id, after, 1),
            RefundDecision::Refunded(_)
        ));
    }

    #[test]
    fn the_oldest_keys_are_forgotten_beyond_the_capacity() {
        let mut ledger = Ledger::new(Rules {
            capacity: 3,
            flaky_failures: 2,
            late_delay: Duration::ZERO,
        });
        let now = Instant::now();
        let first = charged(ledger.charge("k0", request("tok_visa"), now, 1));
        for i in 1..5 {
            charged(ledger.charge(&format!("k{i}"), request("tok_visa"), now, 1));
        }
        assert_eq!(ledger.len(), 3);
        assert!(ledger.by_key("k0").is_empty());
        assert_eq!(ledger.get(&first.id), None);
        let recent: Vec<_> = ledger.recent(10).into_iter().map(|c| c.idempotency_key).collect();
        assert_eq!(recent, ["k4", "k3", "k2"]);
        assert_eq!(ledger.recent(1).len(), 1);
    }
}
