//! Least privilege on the bus and the cache, against a real `nats-server` started with the
//! rendered authorization block and the shared Redis given the rendered ACL rules.

use std::time::Duration;

use mercato::access::{self, nats as rendered, redis as acl};
use mercato_messaging::{Bus, BusConfig, ConsumerSpec, Envelope};
use mercato_testkit::event::Noted;
use mercato_testkit::nats::NatsServer;

fn probe(category: &str, n: i64) -> Envelope {
    Envelope::new(
        category,
        &format!("{category}-{}", uuid::Uuid::new_v4().simple()),
        &Noted { n },
        &mercato_messaging::Context::default(),
    )
    .unwrap()
}

fn password(user: &str) -> String {
    format!("pw-{user}-{}", uuid::Uuid::new_v4().simple())
}

/// A server whose only users are the rendered ones, and each user's password.
async fn server(dir: &std::path::Path) -> (NatsServer, Vec<(String, String)>) {
    let mut users: Vec<_> = access::bus_grants()
        .iter()
        .map(|g| g.service.to_owned())
        .collect();
    users.push(rendered::OPERATOR.to_owned());
    let env: Vec<_> = users
        .iter()
        .map(|u| (rendered::password_env(u), password(u)))
        .collect();
    let passwords = users
        .iter()
        .zip(&env)
        .map(|(u, (_, p))| (u.clone(), p.clone()))
        .collect();
    let server = NatsServer::start_with_config(dir, &rendered::render(&access::bus_grants()), env).await;
    (server, passwords)
}

async fn connect_as(server: &NatsServer, passwords: &[(String, String)], user: &str) -> Bus {
    let (_, password) = passwords.iter().find(|(u, _)| u == user).unwrap();
    let url = server
        .url()
        .replace("nats://", &format!("nats://{user}:{password}@"));
    Bus::connect(&BusConfig {
        url,
        // A publish the server refuses is never acknowledged: fail it soon.
        publish_timeout_ms: 1_500,
        ..BusConfig::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{user} connects: {e}"))
}

fn spec(group: &str, category: &str) -> ConsumerSpec {
    ConsumerSpec {
        group: group.into(),
        category: category.into(),
        event_types: vec![],
    }
}

/// Needs `nats-server` on PATH: left out with the other NATS suites when it is missing.
mod nats {
    use super::*;

    #[tokio::test]
    async fn each_service_publishes_only_its_own_events_and_pulls_only_its_own_groups() {
        let dir = tempfile::tempdir().unwrap();
        let (server, passwords) = server(dir.path()).await;
        let orders = connect_as(&server, &passwords, mercato_orders::NAME).await;
        let inventory = connect_as(&server, &passwords, mercato_inventory::NAME).await;
        let notifications = connect_as(&server, &passwords, mercato_notifications::NAME).await;

        // Orders publishes its own event; inventory's group on orders receives it and parks it.
        orders
            .publish(&probe("orders", 1))
            .await
            .expect("orders publishes orders events");
        let mut reserving = inventory
            .consumer(&spec(mercato_inventory::ORDERS_CONSUMER, "orders"))
            .await
            .expect("inventory pulls its own group");
        let deadline = tokio::time::Instant::now() + mercato_testkit::PATIENCE;
        let delivery = loop {
            let mut batch = reserving.fetch(1, Duration::from_millis(500)).await.unwrap();
            if let Some(delivery) = batch.pop() {
                break delivery;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "inventory never got the order event"
            );
        };
        delivery
            .park("no handler for Noted")
            .await
            .expect("inventory parks in its own group");
        inventory
            .publish(&probe("inventory", 1))
            .await
            .expect("inventory publishes its own events");

        // What each service may not do.
        let forged = inventory.publish(&probe("orders", 2)).await;
        assert!(forged.is_err(), "inventory published an orders event");
        let log = server.log();
        assert!(
            log.contains("Violation - User \"inventory\", Subject \"mercato.orders.Noted\""),
            "the server did not refuse the publish itself:\n{log}"
        );
        let stolen = notifications
            .consumer(&spec(mercato_inventory::ORDERS_CONSUMER, "orders"))
            .await;
        assert!(stolen.is_err(), "notifications bound inventory's group");
        assert!(
            server
                .log()
                .lines()
                .any(|l| l.contains("Violation - User \"notifications\"")
                    && l.contains(&format!("MERCATO_ORDERS.{}", mercato_inventory::ORDERS_CONSUMER))),
            "the server did not refuse the consumer itself"
        );

        // The operator sees the dead letter inventory parked.
        let operator = connect_as(&server, &passwords, rendered::OPERATOR).await;
        let letters = operator.dead_letters(10).await.unwrap();
        assert_eq!(letters.len(), 1, "{letters:?}");
    }
}

/// Needs Redis: left out with the other Redis suites when it is missing.
mod redis {
    use ::redis::AsyncCommands as _;

    use super::*;

    /// Every ACL user is deleted when the test ends, pass or fail.
    struct AclUsers(Vec<String>);

    impl Drop for AclUsers {
        fn drop(&mut self) {
            if let Ok(mut conn) =
                ::redis::Client::open(mercato_testkit::redis::url()).and_then(|c| c.get_connection())
            {
                for user in &self.0 {
                    let _: ::redis::RedisResult<i64> =
                        ::redis::cmd("ACL").arg("DELUSER").arg(user).query(&mut conn);
                }
            }
        }
    }

    #[tokio::test]
    async fn redis_refuses_the_cache_user_the_rate_limiters_keys() {
        let keys = mercato_testkit::redis::KeyPrefix::new();
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let users = [
            acl::RedisUser {
                name: format!("gateway-{suffix}"),
                prefixes: vec![format!("{}ratelimit", keys.as_str())],
            },
            acl::RedisUser {
                name: format!("cache-{suffix}"),
                prefixes: vec![format!("{}cache:", keys.as_str())],
            },
        ];
        let _cleanup = AclUsers(users.iter().map(|u| u.name.clone()).collect());
        let client = ::redis::Client::open(keys.url()).unwrap();
        let mut admin = client.get_multiplexed_async_connection().await.unwrap();
        let mut as_user = Vec::new();
        for user in &users {
            let secret = password(&user.name);
            let _: () = ::redis::cmd("ACL")
                .arg("SETUSER")
                .arg(&user.name)
                .arg(acl::rules(user, &secret))
                .query_async(&mut admin)
                .await
                .unwrap();
            let url = keys
                .url()
                .replace("redis://", &format!("redis://{}:{secret}@", user.name));
            as_user.push(
                ::redis::Client::open(url)
                    .unwrap()
                    .get_multiplexed_async_connection()
                    .await
                    .unwrap(),
            );
        }
        let [gateway, cache] = &mut as_user[..] else {
            unreachable!()
        };
        let limiter_key = format!("{}ratelimit:client-1", keys.as_str());
        let cache_key = format!("{}cache:v:product-1", keys.as_str());

        let _: () = gateway.set(&limiter_key, "1").await.unwrap();
        let _: () = cache.set(&cache_key, "{}").await.unwrap();
        let read: Option<String> = cache.get(&cache_key).await.unwrap();
        assert_eq!(read.as_deref(), Some("{}"));

        let refused: ::redis::RedisResult<Option<String>> =
            ::redis::cmd("GET").arg(&limiter_key).query_async(cache).await;
        let error = refused.expect_err("the cache user read a rate limiter key");
        assert!(error.to_string().contains("NOPERM"), "{error}");
        let dangerous: ::redis::RedisResult<()> = ::redis::cmd("FLUSHALL").query_async(gateway).await;
        assert!(dangerous.is_err(), "the gateway user may flush the server");
    }
}
