//! What each consumer expects of the messages it reads. The examples are made from the payload
//! types the consumer decodes with, so an expectation is exactly what its decoding needs: every
//! field that is not optional, with its JSON type, and the wire names of enums.

use serde_json::json;

use super::{Expectation, HttpExpectation, Pact};
use crate::customers::{CustomerCreated, CustomerUpdated, Preferences};
use crate::identity::UserRegistered;
use crate::inventory::{ReservationFailure, StockReservationFailed, StockReserved};
use crate::money::{Currency, Money};
use crate::orders::{
    ChargePayment, CommitReservation, OrderCancelled, OrderConfirmed, OrderDelivered, OrderLine,
    OrderShipped, PricedLine, RefundPayment, ReleaseStock, ReserveStock,
};
use crate::payments::{PaymentCaptured, PaymentFailed, PaymentFailure};

const ORDER: &str = "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
const CUSTOMER: &str = "0193a1b2-0000-7000-8000-000000000001";

fn eur(amount_minor: i64) -> Money {
    Money::new(amount_minor, Currency::EUR)
}

fn lines() -> Vec<OrderLine> {
    vec![OrderLine {
        sku: "MUG-001".into(),
        quantity: 2,
    }]
}

fn priced() -> Vec<PricedLine> {
    vec![PricedLine {
        sku: "MUG-001".into(),
        name: "Mug".into(),
        quantity: 2,
        unit_price: eur(1250),
    }]
}

fn pact(consumer: &str, provider: &str, expectations: &[Expectation]) -> Pact {
    let mut pact = Pact::new(consumer, provider);
    pact.interactions = expectations.iter().map(Expectation::to_interaction).collect();
    pact
}

/// inventory applies the saga's stock commands.
fn inventory() -> Pact {
    pact(
        "inventory",
        "orders",
        &[
            Expectation::message(
                "ReserveStock: hold every line of an order",
                "an order was placed",
                &ReserveStock {
                    order_id: ORDER.into(),
                    lines: lines(),
                    expires_at: 1_767_225_600_000,
                },
            ),
            Expectation::message(
                "CommitReservation: the held stock is sold",
                "an order's payment was captured",
                &CommitReservation {
                    order_id: ORDER.into(),
                },
            ),
            Expectation::message(
                "ReleaseStock: give back what was held",
                "an order's payment was declined",
                &ReleaseStock {
                    order_id: ORDER.into(),
                    reason: "payment_declined".into(),
                },
            ),
        ],
    )
}

/// payments applies the saga's payment commands.
fn payments() -> Pact {
    pact(
        "payments",
        "orders",
        &[
            Expectation::message(
                "ChargePayment: charge the card once for an order",
                "an order's stock was reserved",
                &ChargePayment {
                    order_id: ORDER.into(),
                    customer_id: CUSTOMER.into(),
                    amount: eur(2500),
                    card_token: "tok_visa".into(),
                    idempotency_key: format!("order-{ORDER}"),
                },
            )
            .matching("$.amount.currency", "^[A-Z]{3}$"),
            Expectation::message(
                "RefundPayment: refund what was captured for an order",
                "an order's charge was captured after the saga gave up",
                &RefundPayment {
                    order_id: ORDER.into(),
                    reason: "payment_timeout".into(),
                },
            ),
        ],
    )
}

/// orders' saga reads inventory's answers.
fn orders_from_inventory() -> Pact {
    pact(
        "orders",
        "inventory",
        &[
            Expectation::message(
                "StockReserved: every line is held",
                "stock was reserved for an order",
                &StockReserved {
                    order_id: ORDER.into(),
                    lines: lines(),
                    expires_at: 1_767_225_600_000,
                },
            ),
            Expectation::message(
                "StockReservationFailed: nothing was held",
                "an order asked for more than there is",
                &StockReservationFailed {
                    order_id: ORDER.into(),
                    reason: ReservationFailure::OutOfStock,
                    sku: "MUG-001".into(),
                },
            )
            .matching("$.reason", "^(out_of_stock|unknown_product)$"),
        ],
    )
}

/// orders' saga reads payments' answers.
fn orders_from_payments() -> Pact {
    pact(
        "orders",
        "payments",
        &[
            Expectation::message(
                "PaymentCaptured: the card was charged",
                "an order was charged to a card that pays",
                &PaymentCaptured {
                    order_id: ORDER.into(),
                    payment_id: "ch_0001".into(),
                    amount: eur(2500),
                },
            )
            .matching("$.amount.currency", "^[A-Z]{3}$"),
            Expectation::message(
                "PaymentFailed: the card was not charged",
                "an order was charged to a declined card",
                &PaymentFailed {
                    order_id: ORDER.into(),
                    reason: PaymentFailure::Declined,
                },
            )
            .matching("$.reason", "^(declined|provider_unavailable)$"),
        ],
    )
}

fn user_registered() -> Expectation {
    Expectation::message(
        "UserRegistered: a person registered",
        "a person registered",
        &UserRegistered {
            user_id: CUSTOMER.into(),
            email: "ada@example.com".into(),
            name: "Ada Lovelace".into(),
        },
    )
}

/// customers makes a profile for each registration.
fn customers() -> Pact {
    pact("customers", "identity", &[user_registered()])
}

/// notifications welcomes new users and keeps their channel preferences.
fn notifications_from_identity() -> Pact {
    pact("notifications", "identity", &[user_registered()])
}

fn notifications_from_customers() -> Pact {
    pact(
        "notifications",
        "customers",
        &[
            Expectation::message(
                "CustomerCreated: a profile was made",
                "a person registered",
                &CustomerCreated {
                    customer_id: CUSTOMER.into(),
                    email: "ada@example.com".into(),
                    name: "Ada Lovelace".into(),
                },
            ),
            Expectation::message(
                "CustomerUpdated: a profile or its preferences changed",
                "a customer changed their preferences",
                &CustomerUpdated {
                    customer_id: CUSTOMER.into(),
                    email: "ada@example.com".into(),
                    name: "Ada Lovelace".into(),
                    // Notifications reads the preferences; the addresses may be any list.
                    addresses: Vec::new(),
                    preferences: Preferences::default(),
                },
            ),
        ],
    )
}

/// notifications tells the customer where their order is.
fn notifications_from_orders() -> Pact {
    let cancel_reasons = "^(out_of_stock|unknown_product|payment_declined|payment_timeout|reservation_timeout|customer_cancelled)$";
    pact(
        "notifications",
        "orders",
        &[
            Expectation::message(
                "OrderConfirmed: the order will be fulfilled",
                "an order was charged to a card that pays",
                &OrderConfirmed {
                    order_id: ORDER.into(),
                    customer_id: CUSTOMER.into(),
                    lines: priced(),
                    total: eur(2500),
                },
            ),
            Expectation::message(
                "OrderCancelled: the order ended unfulfilled",
                "an order was charged to a declined card",
                &OrderCancelled {
                    order_id: ORDER.into(),
                    customer_id: CUSTOMER.into(),
                    reason: "payment_declined".into(),
                },
            )
            .matching("$.reason", cancel_reasons),
            Expectation::message(
                "OrderShipped: the order left the warehouse",
                "a confirmed order was shipped",
                &OrderShipped {
                    order_id: ORDER.into(),
                    customer_id: CUSTOMER.into(),
                },
            ),
            Expectation::message(
                "OrderDelivered: the order reached the customer",
                "a shipped order was delivered",
                &OrderDelivered {
                    order_id: ORDER.into(),
                    customer_id: CUSTOMER.into(),
                },
            ),
        ],
    )
}

/// A charge as payments sends it, and what the provider answers for `card`.
fn charge(
    card: &str,
    state: &str,
    status: u16,
    response: serde_json::Value,
    typed: &[&str],
) -> HttpExpectation {
    HttpExpectation {
        description: format!("a charge of 25.00 EUR to {card}"),
        state: state.into(),
        method: "POST".into(),
        path: "/v1/charges".into(),
        headers: vec![("Idempotency-Key".into(), format!("order-contract-{card}"))],
        body: json!({"amount_minor": 2500, "currency": "EUR", "card_token": card}),
        status,
        response,
        typed: typed.iter().map(|p| (*p).to_owned()).collect(),
        from_state: Vec::new(),
    }
}

/// A full refund of a captured charge. The charge is made by the provider state, whose id the
/// verifier puts in the request (`charge_id`); payments sends the id it was given at capture.
fn refund() -> HttpExpectation {
    HttpExpectation {
        description: "a full refund of a captured charge".into(),
        state: "a charge was captured".into(),
        method: "POST".into(),
        path: "/v1/refunds".into(),
        headers: vec![("Idempotency-Key".into(), "refund-contract".into())],
        body: json!({"charge_id": "ch_0001"}),
        status: 200,
        response: json!({"id": "re_0001", "charge_id": "ch_0001"}),
        typed: vec!["$.id".into(), "$.charge_id".into()],
        from_state: vec![("$.charge_id".into(), "charge_id".into())],
    }
}

/// payments charges cards through the provider's HTTP API (the sandbox stands in for it), one
/// provider state per test card; it reads a charge's id, status and amount, and an error's
/// code; and refunds a captured charge. `tok_hang` is left out: its answer is no answer, which a pact cannot express.
fn payments_from_provider() -> Pact {
    let captured = json!({"id": "ch_0001", "status": "succeeded", "amount_minor": 2500, "currency": "EUR"});
    let paid = ["$.id"];
    let error = |code: &str| json!({"error": {"code": code}});
    let expectations = [
        charge(
            "tok_visa",
            "tok_visa is a card that pays",
            200,
            captured.clone(),
            &paid,
        ),
        charge(
            "tok_late",
            "tok_late is a card that pays after a delay",
            200,
            captured,
            &paid,
        ),
        charge(
            "tok_decline",
            "tok_decline is a card that is declined",
            402,
            error("card_declined"),
            &[],
        ),
        charge(
            "tok_flaky",
            "tok_flaky is a card whose first attempts fail",
            503,
            error("temporarily_unavailable"),
            &["$.error.code"],
        ),
    ];
    let mut pact = Pact::new("payments", "payment-sandbox");
    pact.interactions = expectations
        .iter()
        .chain([&refund()])
        .map(HttpExpectation::to_interaction)
        .collect();
    pact
}

/// Every consumer's pact with each provider whose messages it reads, and payments' with the
/// payment provider.
#[must_use]
pub fn all() -> Vec<Pact> {
    vec![
        inventory(),
        payments(),
        orders_from_inventory(),
        orders_from_payments(),
        customers(),
        notifications_from_identity(),
        notifications_from_customers(),
        notifications_from_orders(),
        payments_from_provider(),
    ]
}
