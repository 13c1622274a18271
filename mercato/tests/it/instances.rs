//! Several instances of one service behind the gateway, each a `mercato serve` process: one is
//! killed with SIGKILL under a steady load, and later started again on the same port.

/// Two inventory processes on PostgreSQL and NATS behind a gateway process.
mod postgres {
    use mercato_testkit::load::Load;
    use mercato_testkit::nats::NatsServer;
    use mercato_testkit::{TestBackend, TestDatabase, eventually};

    use crate::support::{PATIENCE, Process, metrics_of};

    /// Requests to `/api/products` that reached the instance at `url`, from its own metrics.
    async fn products_served(http: &reqwest::Client, url: &str) -> Option<u64> {
        let text = metrics_of(http, url).await?;
        Some(
            text.lines()
                .filter(|l| l.starts_with("http_requests_total{") && l.contains(r#"route="/api/products""#))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum(),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_instance_killed_under_load_costs_no_request_and_is_used_again_when_it_returns() {
        let db = TestDatabase::new(TestBackend::Postgres).await;
        let nats = NatsServer::start(db.dir()).await;
        let data = db.dir().join("data");
        let data = data.to_str().unwrap().to_owned();
        let common = vec![
            ("MERCATO_BUS__URL", nats.url()),
            (
                "MERCATO_SERVICES__INVENTORY__DATABASE_URL",
                db.service_url("inventory"),
            ),
        ];
        let inventory = |port: u16, seed: bool| {
            let mut env = common.clone();
            env.push(("MERCATO_SERVICES__INVENTORY__LISTEN", format!("127.0.0.1:{port}")));
            env.push(("MERCATO_INVENTORY__DEMO_CATALOGUE", seed.to_string()));
            let data = data.clone();
            async move { Process::spawn(&["serve", "inventory", "--data-dir", &data], &env, &["inventory"]).await }
        };
        // Port 0: a port chosen before the process binds it may be taken by then.
        let a = inventory(0, true).await;
        let b = inventory(0, false).await;
        let (url_a, url_b) = (a.url("inventory").to_owned(), b.url("inventory").to_owned());
        let port_b: u16 = url_b
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port");

        let config = db.dir().join("gateway.toml");
        std::fs::write(
            &config,
            format!(
                "[gateway.upstreams.inventory]\nblue = [\"{url_a}\", \"{url_b}\"]\n\n\
                 [gateway.health_check]\ninterval_ms = 200\n\n[gateway.rate_limit]\nenabled = false\n"
            ),
        )
        .unwrap();
        let gateway = Process::spawn(
            &[
                "serve",
                "gateway",
                "--data-dir",
                &data,
                "--config",
                config.to_str().unwrap(),
            ],
            &[("MERCATO_SERVICES__GATEWAY__LISTEN", "127.0.0.1:0".into())],
            &["gateway"],
        )
        .await;
        let base = gateway.url("gateway").to_owned();
        let http = reqwest::Client::builder().timeout(PATIENCE).build().unwrap();

        let load = Load::start(&http, &format!("{base}/api/products"), 4);
        eventually(PATIENCE, "both instances to serve", || async {
            let b_served = products_served(&http, &url_b).await?;
            (b_served > 0 && products_served(&http, &url_a).await? > 0).then_some(())
        })
        .await;

        b.kill().await;
        let unhealthy =
            format!(r#"gateway_upstream_instance_healthy{{upstream="inventory",instance="{url_b}"}} 0"#);
        eventually(
            PATIENCE,
            "the gateway to mark the killed instance unhealthy",
            || async {
                let text = metrics_of(&http, &base).await?;
                text.contains(&unhealthy).then_some(())
            },
        )
        .await;
        let at_kill = load.sent();
        eventually(PATIENCE, "traffic to go on at the live instance", || async {
            (load.sent() > at_kill + 100).then_some(())
        })
        .await;

        let b = inventory(port_b, false).await;
        eventually(PATIENCE, "the restarted instance to be used again", || async {
            (products_served(&http, &url_b).await? > 0).then_some(())
        })
        .await;

        let (sent, failed) = load.finish().await;
        assert_eq!(failed, 0, "of {sent} GETs through the gateway, {failed} failed");
        for process in [gateway, b, a] {
            assert!(process.terminate().await.success());
        }
    }
}
