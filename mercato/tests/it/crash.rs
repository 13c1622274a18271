//! A crash delays orders and never cancels them: the system is killed with SIGKILL while orders
//! are in flight and started again at once; with the default step deadlines and ack wait, every
//! order ends as it would have without the crash, confirmed, charged once, its stock sold, on top
//! of the invariants every fault run keeps (see `faults`).

use crate::faults::{Cluster, Placed, UP, VISA};

/// Orders at once: the load under which a restart used to cancel a third of them.
const IN_FLIGHT: usize = 30;

/// The default saga deadlines and ack wait, over the fault suite's quick ones: the crash must
/// not need settings of its own.
fn default_timing() -> Vec<(&'static str, String)> {
    let defaults = mercato::Config::default();
    vec![
        (
            "MERCATO_ORDERS__RESERVE_TIMEOUT_MS",
            defaults.orders.reserve_timeout_ms.to_string(),
        ),
        (
            "MERCATO_ORDERS__PAYMENT_TIMEOUT_MS",
            defaults.orders.payment_timeout_ms.to_string(),
        ),
        ("MERCATO_BUS__ACK_WAIT_MS", defaults.bus.ack_wait_ms.to_string()),
    ]
}

async fn crashes_with_orders_in_flight(mut cluster: Cluster, killed: &[&'static str]) {
    let shopper = cluster.customer().await;
    let stock = cluster.available().await.expect("the stock can be read");
    let placed: Vec<Placed> = cluster.place(&shopper, &[VISA; IN_FLIGHT]).await;
    for name in killed {
        cluster.kill(name).await;
    }
    for name in killed {
        cluster.restart(name).await;
    }
    // Orders that could not move while the system was down (shown with --nocapture).
    let mut pending = 0;
    for order in &placed {
        if cluster
            .order(&shopper, &order.id)
            .await
            .is_some_and(|view| view["status"] == "pending")
        {
            pending += 1;
        }
    }
    eprintln!("orders still pending after the restart: {pending} of {IN_FLIGHT}");

    let ended = cluster.ended(&shopper, &placed).await;
    let not_confirmed: Vec<String> = ended
        .iter()
        .filter(|order| order["status"] != "confirmed")
        .map(|order| format!("{} {} {}", order["id"], order["status"], order["cancel_reason"]))
        .collect();
    assert!(
        not_confirmed.is_empty(),
        "{} of {IN_FLIGHT} orders did not survive the crash: {not_confirmed:?}",
        not_confirmed.len()
    );
    cluster.assert_invariants(&shopper, &placed, stock).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mercato_up_killed_with_orders_in_flight_and_restarted_at_once_confirms_every_order() {
    let timing = default_timing();
    let overrides: Vec<(&str, &str)> = timing.iter().map(|(k, v)| (*k, v.as_str())).collect();
    crashes_with_orders_in_flight(Cluster::start_embedded(&overrides).await, &[UP]).await;
}

/// Selected by the distributed-suite filter (`::postgres::`).
mod postgres {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn orders_and_inventory_killed_with_orders_in_flight_and_restarted_confirm_every_order() {
        let timing = default_timing();
        let overrides: Vec<(&str, &str)> = timing.iter().map(|(k, v)| (*k, v.as_str())).collect();
        crashes_with_orders_in_flight(Cluster::start(&overrides).await, &["orders", "inventory"]).await;
    }
}
