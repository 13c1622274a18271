//! The built-in templates: one per kind and language. They are code, not files, so a message
//! can never fail to render at run time and every one is covered by a test.

use super::{Kind, Locale, Money, format_money};

/// Why an order was cancelled, as the orders service names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    OutOfStock,
    PaymentDeclined,
    PaymentTimeout,
    CustomerCancelled,
    UnknownProduct,
    /// A reason newer than this build: the message still goes out, in general words.
    Other,
}

impl CancelReason {
    #[must_use]
    pub fn parse(code: &str) -> Self {
        match code {
            "out_of_stock" => Self::OutOfStock,
            "payment_declined" => Self::PaymentDeclined,
            "payment_timeout" => Self::PaymentTimeout,
            "customer_cancelled" => Self::CustomerCancelled,
            "unknown_product" => Self::UnknownProduct,
            _ => Self::Other,
        }
    }
}

/// One line of a confirmed order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub name: String,
    pub quantity: i64,
    pub unit_price: Money,
}

/// A message to render, with the facts its template needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Welcome,
    OrderConfirmed {
        order_id: String,
        lines: Vec<Line>,
        total: Money,
    },
    OrderCancelled {
        order_id: String,
        reason: CancelReason,
    },
    OrderShipped {
        order_id: String,
    },
    OrderDelivered {
        order_id: String,
    },
}

impl Message {
    #[must_use]
    pub fn kind(&self) -> Kind {
        match self {
            Self::Welcome => Kind::Welcome,
            Self::OrderConfirmed { .. } => Kind::OrderConfirmed,
            Self::OrderCancelled { .. } => Kind::OrderCancelled,
            Self::OrderShipped { .. } => Kind::OrderShipped,
            Self::OrderDelivered { .. } => Kind::OrderDelivered,
        }
    }
}

/// A message in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub body: String,
}

/// Names come from other services' events: control characters (a line break meant to forge
/// a header) become spaces, and a blank name counts as none.
fn clean(name: Option<&str>) -> Option<String> {
    let cleaned: String = name?
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let trimmed = cleaned.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

/// Renders `message` for a customer called `name` (when known) in `locale`.
#[must_use]
pub fn render(message: &Message, name: Option<&str>, locale: Locale) -> Rendered {
    let name = clean(name);
    match locale {
        Locale::En => english(message, name.as_deref()),
        Locale::De => german(message, name.as_deref()),
    }
}

fn lines_in(lines: &[Line], locale: Locale) -> String {
    lines
        .iter()
        .map(|line| {
            // A line whose total cannot be held shows its unit price rather than a wrong sum.
            let amount = format_money(
                &line
                    .unit_price
                    .checked_mul(line.quantity)
                    .unwrap_or(line.unit_price),
                locale,
            );
            format!("  {} × {}  {amount}\n", line.quantity, line.name)
        })
        .collect()
}

fn english(message: &Message, name: Option<&str>) -> Rendered {
    let greeting = name.map_or_else(|| "Hello,".to_owned(), |n| format!("Hello {n},"));
    let sign_off = "The Mercato team";
    let (subject, text) = match message {
        Message::Welcome => (
            name.map_or_else(
                || "Welcome to Mercato".to_owned(),
                |n| format!("Welcome to Mercato, {n}"),
            ),
            "Thank you for registering with Mercato. Your account is ready: browse the catalogue and \
             place your first order whenever you like."
                .to_owned(),
        ),
        Message::OrderConfirmed {
            order_id,
            lines,
            total,
        } => (
            format!("Your order {order_id} is confirmed"),
            format!(
                "Thank you for your order {order_id}. Your payment has been received and we are \
                 preparing your parcel.\n\n{}\nTotal: {}",
                lines_in(lines, Locale::En),
                format_money(total, Locale::En)
            ),
        ),
        Message::OrderCancelled { order_id, reason } => {
            let because = match reason {
                CancelReason::OutOfStock => "an item in it is out of stock",
                CancelReason::PaymentDeclined => "the payment was declined",
                CancelReason::PaymentTimeout => "the payment could not be completed in time",
                CancelReason::CustomerCancelled => "you asked us to cancel it",
                CancelReason::UnknownProduct => "an item in it is no longer sold",
                CancelReason::Other => "of a problem while processing it",
            };
            (
                format!("Your order {order_id} has been cancelled"),
                format!(
                    "We are sorry: your order {order_id} has been cancelled because {because}. \
                     If you were charged, the amount will be refunded."
                ),
            )
        }
        Message::OrderShipped { order_id } => (
            format!("Your order {order_id} is on its way"),
            format!("Good news: your order {order_id} has left our warehouse and is on its way to you."),
        ),
        Message::OrderDelivered { order_id } => (
            format!("Your order {order_id} has been delivered"),
            format!("Your order {order_id} has been delivered. We hope you enjoy it!"),
        ),
    };
    Rendered {
        subject,
        body: format!("{greeting}\n\n{text}\n\n{sign_off}\n"),
    }
}

fn german(message: &Message, name: Option<&str>) -> Rendered {
    let greeting = name.map_or_else(|| "Guten Tag,".to_owned(), |n| format!("Hallo {n},"));
    let sign_off = "Ihr Mercato-Team";
    let (subject, text) = match message {
        Message::Welcome => (
            name.map_or_else(
                || "Willkommen bei Mercato".to_owned(),
                |n| format!("Willkommen bei Mercato, {n}"),
            ),
            "vielen Dank für Ihre Registrierung bei Mercato. Ihr Konto ist bereit: Stöbern Sie im \
             Katalog und geben Sie Ihre erste Bestellung auf, wann immer Sie möchten."
                .to_owned(),
        ),
        Message::OrderConfirmed {
            order_id,
            lines,
            total,
        } => (
            format!("Ihre Bestellung {order_id} ist bestätigt"),
            format!(
                "vielen Dank für Ihre Bestellung {order_id}. Ihre Zahlung ist eingegangen, und wir \
                 bereiten Ihr Paket vor.\n\n{}\nGesamtbetrag: {}",
                lines_in(lines, Locale::De),
                format_money(total, Locale::De)
            ),
        ),
        Message::OrderCancelled { order_id, reason } => {
            // German puts the verb last after "weil", so each reason is a whole clause.
            let weil = match reason {
                CancelReason::OutOfStock => "ein Artikel nicht vorrätig ist",
                CancelReason::PaymentDeclined => "die Zahlung abgelehnt wurde",
                CancelReason::PaymentTimeout => "die Zahlung nicht rechtzeitig abgeschlossen werden konnte",
                CancelReason::CustomerCancelled => "Sie die Stornierung veranlasst haben",
                CancelReason::UnknownProduct => "ein Artikel nicht mehr angeboten wird",
                CancelReason::Other => "bei der Bearbeitung ein Problem aufgetreten ist",
            };
            (
                format!("Ihre Bestellung {order_id} wurde storniert"),
                format!(
                    "es tut uns leid: Ihre Bestellung {order_id} wurde storniert, weil {weil}. \
                     Falls Ihnen bereits etwas berechnet wurde, erstatten wir den Betrag."
                ),
            )
        }
        Message::OrderShipped { order_id } => (
            format!("Ihre Bestellung {order_id} ist unterwegs"),
            format!(
                "gute Nachrichten: Ihre Bestellung {order_id} hat unser Lager verlassen und ist auf dem \
                 Weg zu Ihnen."
            ),
        ),
        Message::OrderDelivered { order_id } => (
            format!("Ihre Bestellung {order_id} wurde zugestellt"),
            format!("Ihre Bestellung {order_id} wurde zugestellt. Wir wünschen Ihnen viel Freude damit!"),
        ),
    };
    Rendered {
        subject,
        body: format!("{greeting}\n\n{text}\n\n{sign_off}\n"),
    }
}

#[cfg(test)]
mod tests {
    use mercato_contracts::money::Currency;

    use super::*;

    fn eur(amount_minor: i64) -> Money {
        Money::new(amount_minor, Currency::EUR)
    }

    fn confirmed() -> Message {
        Message::OrderConfirmed {
            order_id: "o-1".into(),
            lines: vec![Line {
                name: "Tea mug".into(),
                quantity: 2,
                unit_price: eur(1250),
            }],
            total: eur(2500),
        }
    }

    fn every_message() -> Vec<Message> {
        vec![
            Message::Welcome,
            confirmed(),
            Message::OrderCancelled {
                order_id: "o-1".into(),
                reason: CancelReason::OutOfStock,
            },
            Message::OrderShipped {
                order_id: "o-1".into(),
            },
            Message::OrderDelivered {
                order_id: "o-1".into(),
            },
        ]
    }

    #[test]
    fn every_kind_renders_in_every_language_with_the_name() {
        for message in every_message() {
            for locale in [Locale::En, Locale::De] {
                let r = render(&message, Some("Ada"), locale);
                assert!(!r.subject.is_empty(), "{message:?} {locale:?}");
                assert!(r.body.contains("Ada"), "{message:?} {locale:?}: {}", r.body);
                if message != Message::Welcome {
                    assert!(r.subject.contains("o-1"), "{message:?} {locale:?}");
                }
            }
        }
    }

    #[test]
    fn english_confirmation_lists_the_lines_and_the_total() {
        let r = render(&confirmed(), Some("Ada"), Locale::En);
        assert_eq!(r.subject, "Your order o-1 is confirmed");
        assert!(r.body.starts_with("Hello Ada,\n\n"));
        assert!(r.body.contains("2 × Tea mug  €25.00"), "{}", r.body);
        assert!(r.body.contains("Total: €25.00"), "{}", r.body);
    }

    #[test]
    fn german_confirmation_uses_german_words_and_number_format() {
        let r = render(&confirmed(), Some("Ada"), Locale::De);
        assert_eq!(r.subject, "Ihre Bestellung o-1 ist bestätigt");
        assert!(r.body.starts_with("Hallo Ada,\n\n"));
        assert!(r.body.contains("Gesamtbetrag: 25,00 €"), "{}", r.body);
        assert!(r.body.ends_with("Ihr Mercato-Team\n"));
    }

    #[test]
    fn a_cancellation_says_why_in_words() {
        let message = |reason| Message::OrderCancelled {
            order_id: "o-9".into(),
            reason,
        };
        let en = render(&message(CancelReason::PaymentDeclined), None, Locale::En);
        assert_eq!(en.subject, "Your order o-9 has been cancelled");
        assert!(
            en.body.contains("because the payment was declined."),
            "{}",
            en.body
        );
        let de = render(&message(CancelReason::OutOfStock), None, Locale::De);
        assert_eq!(de.subject, "Ihre Bestellung o-9 wurde storniert");
        assert!(
            de.body.contains("weil ein Artikel nicht vorrätig ist."),
            "{}",
            de.body
        );
        assert_eq!(CancelReason::parse("something_new"), CancelReason::Other);
        let other = render(&message(CancelReason::Other), None, Locale::En);
        assert!(other.body.contains("because of a problem while processing it."));
    }

    #[test]
    fn without_a_name_the_greeting_is_general() {
        let en = render(&Message::Welcome, None, Locale::En);
        assert_eq!(en.subject, "Welcome to Mercato");
        assert!(en.body.starts_with("Hello,\n\n"));
        let de = render(&Message::Welcome, Some("   "), Locale::De);
        assert_eq!(de.subject, "Willkommen bei Mercato");
        assert!(de.body.starts_with("Guten Tag,\n\n"));
    }

    #[test]
    fn a_name_cannot_break_a_line() {
        let r = render(&Message::Welcome, Some("Ada\r\nBcc: x@evil.test"), Locale::En);
        assert!(!r.subject.contains(['\r', '\n']), "{:?}", r.subject);
    }
}
