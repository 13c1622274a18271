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

/// One language's words for every message: a subject and a text per kind, in which `{name}`,
/// `{order_id}`, `{lines}`, `{total}` and `{reason}` stand for the message's facts.
struct Words {
    greeting: &'static str,
    greeting_named: &'static str,
    sign_off: &'static str,
    welcome_subject: &'static str,
    welcome_subject_named: &'static str,
    welcome: &'static str,
    confirmed: (&'static str, &'static str),
    cancelled: (&'static str, &'static str),
    /// The `{reason}` of a cancellation, a clause that fits the language's sentence.
    reason: fn(CancelReason) -> &'static str,
    shipped: (&'static str, &'static str),
    delivered: (&'static str, &'static str),
}

const ENGLISH: Words = Words {
    greeting: "Hello,",
    greeting_named: "Hello {name},",
    sign_off: "The Mercato team",
    welcome_subject: "Welcome to Mercato",
    welcome_subject_named: "Welcome to Mercato, {name}",
    welcome: "Thank you for registering with Mercato. Your account is ready: browse the catalogue and \
              place your first order whenever you like.",
    confirmed: (
        "Your order {order_id} is confirmed",
        "Thank you for your order {order_id}. Your payment has been received and we are preparing \
         your parcel.\n\n{lines}\nTotal: {total}",
    ),
    cancelled: (
        "Your order {order_id} has been cancelled",
        "We are sorry: your order {order_id} has been cancelled because {reason}. If you were \
         charged, the amount will be refunded.",
    ),
    reason: |reason| match reason {
        CancelReason::OutOfStock => "an item in it is out of stock",
        CancelReason::PaymentDeclined => "the payment was declined",
        CancelReason::PaymentTimeout => "the payment could not be completed in time",
        CancelReason::CustomerCancelled => "you asked us to cancel it",
        CancelReason::UnknownProduct => "an item in it is no longer sold",
        CancelReason::Other => "of a problem while processing it",
    },
    shipped: (
        "Your order {order_id} is on its way",
        "Good news: your order {order_id} has left our warehouse and is on its way to you.",
    ),
    delivered: (
        "Your order {order_id} has been delivered",
        "Your order {order_id} has been delivered. We hope you enjoy it!",
    ),
};

const GERMAN: Words = Words {
    greeting: "Guten Tag,",
    greeting_named: "Hallo {name},",
    sign_off: "Ihr Mercato-Team",
    welcome_subject: "Willkommen bei Mercato",
    welcome_subject_named: "Willkommen bei Mercato, {name}",
    welcome: "vielen Dank für Ihre Registrierung bei Mercato. Ihr Konto ist bereit: Stöbern Sie im \
              Katalog und geben Sie Ihre erste Bestellung auf, wann immer Sie möchten.",
    confirmed: (
        "Ihre Bestellung {order_id} ist bestätigt",
        "vielen Dank für Ihre Bestellung {order_id}. Ihre Zahlung ist eingegangen, und wir \
         bereiten Ihr Paket vor.\n\n{lines}\nGesamtbetrag: {total}",
    ),
    cancelled: (
        "Ihre Bestellung {order_id} wurde storniert",
        "es tut uns leid: Ihre Bestellung {order_id} wurde storniert, weil {reason}. Falls Ihnen \
         bereits etwas berechnet wurde, erstatten wir den Betrag.",
    ),
    // German puts the verb last after "weil", so each reason is a whole clause.
    reason: |reason| match reason {
        CancelReason::OutOfStock => "ein Artikel nicht vorrätig ist",
        CancelReason::PaymentDeclined => "die Zahlung abgelehnt wurde",
        CancelReason::PaymentTimeout => "die Zahlung nicht rechtzeitig abgeschlossen werden konnte",
        CancelReason::CustomerCancelled => "Sie die Stornierung veranlasst haben",
        CancelReason::UnknownProduct => "ein Artikel nicht mehr angeboten wird",
        CancelReason::Other => "bei der Bearbeitung ein Problem aufgetreten ist",
    },
    shipped: (
        "Ihre Bestellung {order_id} ist unterwegs",
        "gute Nachrichten: Ihre Bestellung {order_id} hat unser Lager verlassen und ist auf dem \
         Weg zu Ihnen.",
    ),
    delivered: (
        "Ihre Bestellung {order_id} wurde zugestellt",
        "Ihre Bestellung {order_id} wurde zugestellt. Wir wünschen Ihnen viel Freude damit!",
    ),
};

/// `template` with each `{key}` of `facts` replaced by its value. One pass over the template:
/// a value (a customer's name) is never searched for keys itself.
fn fill(template: &str, facts: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let fact = after.find('}').and_then(|close| {
            let key = &after[..close];
            facts
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, value)| (*value, close))
        });
        if let Some((value, close)) = fact {
            out.push_str(value);
            rest = &after[close + 1..];
        } else {
            out.push('{');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Renders `message` for a customer called `name` (when known) in `locale`.
#[must_use]
pub fn render(message: &Message, name: Option<&str>, locale: Locale) -> Rendered {
    let name = clean(name);
    let words = match locale {
        Locale::En => &ENGLISH,
        Locale::De => &GERMAN,
    };
    let named = |with: &str, without: &str| match &name {
        Some(name) => fill(with, &[("name", name)]),
        None => without.to_owned(),
    };
    let both =
        |(subject, text): (&str, &str), facts: &[(&str, &str)]| (fill(subject, facts), fill(text, facts));
    let (subject, text) = match message {
        Message::Welcome => (
            named(words.welcome_subject_named, words.welcome_subject),
            words.welcome.to_owned(),
        ),
        Message::OrderConfirmed {
            order_id,
            lines,
            total,
        } => both(
            words.confirmed,
            &[
                ("order_id", order_id),
                ("lines", &lines_in(lines, locale)),
                ("total", &format_money(total, locale)),
            ],
        ),
        Message::OrderCancelled { order_id, reason } => both(
            words.cancelled,
            &[("order_id", order_id), ("reason", (words.reason)(*reason))],
        ),
        Message::OrderShipped { order_id } => both(words.shipped, &[("order_id", order_id)]),
        Message::OrderDelivered { order_id } => both(words.delivered, &[("order_id", order_id)]),
    };
    Rendered {
        subject,
        body: format!(
            "{}\n\n{text}\n\n{}\n",
            named(words.greeting_named, words.greeting),
            words.sign_off
        ),
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
    fn a_confirmation_lists_the_lines_and_the_total_in_the_languages_words_and_number_format() {
        let cases = [
            (
                Locale::En,
                "Your order o-1 is confirmed",
                "Hello Ada,\n\n",
                ["2 × Tea mug  €25.00", "Total: €25.00"],
                "The Mercato team\n",
            ),
            (
                Locale::De,
                "Ihre Bestellung o-1 ist bestätigt",
                "Hallo Ada,\n\n",
                ["2 × Tea mug  25,00 €", "Gesamtbetrag: 25,00 €"],
                "Ihr Mercato-Team\n",
            ),
        ];
        for (locale, subject, greeting, facts, sign_off) in cases {
            let r = render(&confirmed(), Some("Ada"), locale);
            assert_eq!(r.subject, subject);
            assert!(r.body.starts_with(greeting), "{}", r.body);
            for fact in facts {
                assert!(r.body.contains(fact), "{fact:?} in {}", r.body);
            }
            assert!(r.body.ends_with(sign_off), "{}", r.body);
        }
    }

    #[test]
    fn a_cancellation_says_why_in_words() {
        let message = |reason| Message::OrderCancelled {
            order_id: "o-9".into(),
            reason,
        };
        let cases = [
            (
                CancelReason::PaymentDeclined,
                Locale::En,
                "Your order o-9 has been cancelled",
                "because the payment was declined.",
            ),
            (
                CancelReason::OutOfStock,
                Locale::De,
                "Ihre Bestellung o-9 wurde storniert",
                "weil ein Artikel nicht vorrätig ist.",
            ),
            (
                CancelReason::Other,
                Locale::En,
                "Your order o-9 has been cancelled",
                "because of a problem while processing it.",
            ),
        ];
        for (reason, locale, subject, why) in cases {
            let r = render(&message(reason), None, locale);
            assert_eq!(r.subject, subject);
            assert!(r.body.contains(why), "{}", r.body);
        }
        assert_eq!(CancelReason::parse("something_new"), CancelReason::Other);
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
    fn a_fact_is_filled_in_once_and_never_searched_for_keys() {
        let facts = [("order_id", "{name}"), ("name", "Ada")];
        assert_eq!(fill("{order_id} by {name}", &facts), "{name} by Ada");
        assert_eq!(fill("{unknown} {name", &facts), "{unknown} {name");
    }

    #[test]
    fn a_name_cannot_break_a_line() {
        let r = render(&Message::Welcome, Some("Ada\r\nBcc: x@evil.test"), Locale::En);
        assert!(!r.subject.contains(['\r', '\n']), "{:?}", r.subject);
    }
}
