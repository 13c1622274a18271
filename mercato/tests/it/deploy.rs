//! `mercato deploy switch` against a running system: inventory gets a second (green) instance on
//! the same database and bus, and the command moves the gateway's traffic to it and back.

use mercato::ServiceName;
use mercato_gateway::UpstreamSettings;
use mercato_runtime::CancellationToken;
use mercato_testkit::{TestBackend, backend_tests};

use crate::support::{System, fresh, run};

backend_tests!(deploy_switch_moves_a_service_to_its_green_instance_and_refuses_a_non_admin);

async fn deploy_switch_moves_a_service_to_its_green_instance_and_refuses_a_non_admin(backend: TestBackend) {
    let (_fixture, mut config) = fresh(backend).await;
    let green_stop = CancellationToken::new();
    let green = {
        let mut green = config.clone();
        // The catalogue is seeded once, by the system's own inventory.
        green.inventory.demo_catalogue = false;
        mercato::start(&green, &[ServiceName::Inventory], green_stop.clone())
            .await
            .expect("the green inventory starts")
    };
    config.gateway.upstreams.insert(
        "inventory".into(),
        UpstreamSettings {
            green: vec![green.url(ServiceName::Inventory).unwrap().to_owned()],
            ..UpstreamSettings::default()
        },
    );
    let system = System::start(config).await;
    let admin = system.admin().await;
    let switch = |to: &'static str, token: String| {
        let gateway = system.gateway.clone();
        async move {
            run(
                &[
                    "deploy",
                    "switch",
                    "--to",
                    to,
                    "--upstream",
                    "inventory",
                    "--gateway",
                    &gateway,
                    "--watch-secs",
                    "1",
                ],
                &[("MERCATO_ADMIN_TOKEN", token)],
            )
            .await
        }
    };

    let (ok, out, err) = switch("green", admin.clone()).await;
    assert!(ok, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("inventory is on green"), "{out}");
    let view = system.get_json("/admin/upstreams/inventory", &admin).await;
    assert_eq!(view["green_percent"], 100, "{view}");
    let products = system.get_json("/api/products", &admin).await;
    assert!(!products["items"].as_array().unwrap().is_empty(), "{products}");
    let green_requests = view["green"]["requests"].as_u64().unwrap();
    let view = system.get_json("/admin/upstreams/inventory", &admin).await;
    assert!(
        view["green"]["requests"].as_u64().unwrap() > green_requests,
        "{view}"
    );

    let customer = system.customer(&crate::support::unique_email()).await;
    let (ok, _, err) = switch("blue", customer).await;
    assert!(!ok);
    assert!(err.contains("403"), "{err}");

    let (ok, out, err) = switch("blue", admin.clone()).await;
    assert!(ok, "stdout: {out}\nstderr: {err}");
    let view = system.get_json("/admin/upstreams/inventory", &admin).await;
    assert_eq!(view["green_percent"], 0, "{view}");

    system.stop().await;
    green_stop.cancel();
    green.stop().await.expect("the green inventory stops");
}
