//! The `nats-server` authorization block: a user per service and one for the operator.
//!
//! A service may publish its own category's events, park dead letters of its own groups, create
//! and read the streams it touches, and create, read and pull its own durable consumers and
//! acknowledge their messages. It may not publish another service's events, nor read or steer
//! another service's consumers. Replies (JetStream's acknowledgements of publishes and the
//! messages of a pull) come to the client's `_INBOX`.
//!
//! The operator user (`mercato-operator`) is what `mercato dlq` and the stream setup job use: a
//! replayed dead letter goes back into a category its replaying tool did not produce.

use super::BusGrant;

/// The operator's user name.
pub const OPERATOR: &str = "mercato-operator";

/// The environment variable of `nats-server` that holds `user`'s password.
#[must_use]
pub fn password_env(user: &str) -> String {
    format!(
        "MERCATO_NATS_PASSWORD_{}",
        user.to_ascii_uppercase().replace('-', "_")
    )
}

/// The subjects `grant` may publish to: events, dead letters and the JetStream API calls.
#[must_use]
pub fn publish_allow(grant: &BusGrant) -> Vec<String> {
    let mut allow = vec!["$JS.API.INFO".to_owned()];
    let mut streams = Vec::new();
    if let Some(category) = grant.publishes {
        allow.push(format!("mercato.{category}.>"));
        streams.push(stream(category));
    }
    if !grant.consumes.is_empty() {
        streams.push(stream("dlq"));
    }
    for (group, category) in &grant.consumes {
        let stream = stream(category);
        allow.push(format!("mercato.dlq.{group}"));
        // CREATE carries the filter subject as extra tokens on newer servers.
        for call in ["CREATE", "DURABLE.CREATE", "INFO", "DELETE", "MSG.NEXT"] {
            allow.push(format!("$JS.API.CONSUMER.{call}.{stream}.{group}"));
        }
        allow.push(format!("$JS.API.CONSUMER.CREATE.{stream}.{group}.>"));
        allow.push(format!("$JS.ACK.{stream}.{group}.>"));
        streams.push(stream);
    }
    streams.sort();
    streams.dedup();
    for stream in streams {
        for call in ["INFO", "CREATE"] {
            allow.push(format!("$JS.API.STREAM.{call}.{stream}"));
        }
    }
    allow
}

/// The subjects `grant` may subscribe to: its replies and the categories it follows.
#[must_use]
pub fn subscribe_allow(grant: &BusGrant) -> Vec<String> {
    let mut allow = vec!["_INBOX.>".to_owned()];
    allow.extend(grant.follows.iter().map(|c| format!("mercato.{c}.>")));
    allow
}

/// The authorization block for `grants`, with the operator user last.
#[must_use]
pub fn render(grants: &[BusGrant]) -> String {
    let mut out = String::from(
        "# Rendered by `mercato access nats`; include it from nats-server's configuration.\n\
         # Each password is read from nats-server's environment, never written here.\n\
         authorization {\n  users = [\n",
    );
    for grant in grants {
        user(
            &mut out,
            grant.service,
            &publish_allow(grant),
            &subscribe_allow(grant),
        );
    }
    user(&mut out, OPERATOR, &[">".to_owned()], &[">".to_owned()]);
    out.push_str("  ]\n}\n");
    out
}

fn user(out: &mut String, name: &str, publish: &[String], subscribe: &[String]) {
    use std::fmt::Write as _;
    let list = |subjects: &[String]| {
        subjects
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = write!(
        out,
        "    {{\n      user: \"{name}\"\n      password: ${}\n      permissions: {{\n        \
         publish: {{ allow: [{}] }}\n        subscribe: {{ allow: [{}] }}\n      }}\n    }}\n",
        password_env(name),
        list(publish),
        list(subscribe),
    );
}

/// The stream of a category, as the bus names it.
fn stream(category: &str) -> String {
    format!("MERCATO_{}", category.to_ascii_uppercase().replace('-', "_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inventory() -> BusGrant {
        super::super::bus_grants()
            .into_iter()
            .find(|g| g.service == mercato_inventory::NAME)
            .unwrap()
    }

    #[test]
    fn a_service_may_publish_only_its_own_category() {
        let allow = publish_allow(&inventory());
        assert!(allow.contains(&"mercato.inventory.>".to_owned()));
        assert!(!allow.iter().any(|s| s.starts_with("mercato.orders")));
        assert!(!allow.iter().any(|s| s == ">" || s == "mercato.>"));
    }

    #[test]
    fn a_service_may_pull_only_its_own_groups() {
        let allow = publish_allow(&inventory());
        assert!(allow.contains(&"$JS.API.CONSUMER.MSG.NEXT.MERCATO_ORDERS.inventory-on-orders".to_owned()));
        assert!(!allow.iter().any(|s| s.contains("payments-on-orders")));
    }

    #[test]
    fn passwords_are_environment_references() {
        let text = render(&super::super::bus_grants());
        assert!(text.contains("password: $MERCATO_NATS_PASSWORD_INVENTORY\n"));
        assert!(text.contains("password: $MERCATO_NATS_PASSWORD_MERCATO_OPERATOR\n"));
    }
}
