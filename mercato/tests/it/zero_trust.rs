//! The whole system with TLS on everywhere: every service its own `mercato serve` process on
//! PostgreSQL, NATS and Redis, certificates from `mercato certs`, service tokens required. A
//! checkout through the gateway over HTTPS confirms; no service's port serves a plaintext
//! client, a client without a certificate, or one whose certificate another CA issued. The
//! console signs an admin in through identity and reads every service over the same mutual TLS.

/// Distributed only: TLS is refused in embedded mode.
mod postgres {
    use mercato_runtime::tls::{client_for, reqwest_builder};
    use mercato_security::tls::TlsFiles;
    use mercato_testkit::eventually;
    use mercato_testkit::tls::Pki;
    use reqwest::header::{COOKIE, ORIGIN, SET_COOKIE};
    use serde_json::{Value, json};

    use crate::faults::{Cluster, MUTUAL_TLS, VISA, settles};
    use crate::support::PATIENCE;

    /// A client presenting `files` to `service` (and accepting only `service`'s certificate).
    fn presenting(files: &TlsFiles, service: &str) -> reqwest::Client {
        let tls = client_for(files, service).unwrap();
        reqwest_builder(reqwest::Client::builder().timeout(PATIENCE), &tls)
            .build()
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_tls_everywhere_a_checkout_over_https_confirms_and_no_port_serves_a_stranger() {
        let cluster = Cluster::start_tls(&[("MERCATO_SERVICE_TOKENS__ENABLED", "true")]).await;
        let tls = cluster.tls();
        let plain = reqwest::Client::builder().timeout(PATIENCE).build().unwrap();
        // Readiness as a kubelet sees it: the probe ports, in plaintext.
        for (name, port) in &tls.probes {
            eventually(PATIENCE, &format!("{name} to be ready"), || async {
                let ready = plain
                    .get(format!("http://127.0.0.1:{port}/ready"))
                    .send()
                    .await
                    .ok()?;
                (ready.status() == 200).then_some(())
            })
            .await;
        }

        // The shopper's calls go to the gateway over HTTPS; orders fetches its tokens from
        // identity and calls customers and inventory with them, all over mutual TLS.
        assert!(cluster.url("gateway", "").starts_with("https://"));
        let shopper = cluster.customer().await;
        let [order] = cluster.place(&shopper, &[VISA]).await.try_into().unwrap();
        let confirmed = cluster.confirmed(&shopper, &order.id).await;
        assert_eq!(confirmed["payment"]["status"], "captured", "{confirmed}");
        let gateway = TlsFiles::in_dir(&tls.certs, "gateway");
        let anonymous = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(&std::fs::read(&gateway.ca).unwrap()).unwrap(),
            )
            .timeout(PATIENCE)
            .build()
            .unwrap();
        let other_ca = Pki::new();
        let foreign = other_ca.issue("gateway");
        for name in MUTUAL_TLS {
            let port = cluster.url(name, "").rsplit(':').next().unwrap().to_owned();
            // The same request from a holder of a certificate of this CA is served.
            let member = presenting(&gateway, name)
                .get(format!("https://127.0.0.1:{port}/health"))
                .send()
                .await
                .unwrap();
            assert_eq!(member.status(), 200, "{name}");
            let strangers = [
                (
                    "a plaintext client",
                    &plain,
                    format!("http://127.0.0.1:{port}/health"),
                ),
                (
                    "a client without a certificate",
                    &anonymous,
                    format!("https://localhost:{port}/health"),
                ),
                (
                    "a certificate of another CA",
                    &presenting(&foreign, name),
                    format!("https://127.0.0.1:{port}/health"),
                ),
            ];
            for (stranger, client, url) in strangers {
                let answer = client.get(url).send().await;
                assert!(answer.is_err(), "{name} served {stranger}: {answer:?}");
            }
        }
        cluster.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_tls_everywhere_the_console_signs_in_and_reads_every_service() {
        let cluster = Cluster::start_tls(&[("MERCATO_GATEWAY__CONSOLE__SAMPLE_INTERVAL_MS", "200")]).await;
        let email = cluster.admin_account().await;
        let gateway = cluster.url("gateway", "");
        // Signing in goes through identity's token endpoint, reached by the gateway.
        let signed_in = cluster
            .http
            .post(cluster.url("gateway", "/console/api/session"))
            .header(ORIGIN, &gateway)
            .json(&json!({"email": email, "password": "correct horse"}))
            .send()
            .await
            .unwrap();
        let status = signed_in.status();
        let cookie = signed_in
            .headers()
            .get(SET_COOKIE)
            .map(|c| c.to_str().unwrap().split(';').next().unwrap().to_owned());
        let answer = signed_in.text().await.unwrap();
        assert_eq!(status, 200, "{answer}");
        let cookie = cookie.expect("a session cookie");
        let console = |path: &str| {
            cluster
                .http
                .get(cluster.url("gateway", path))
                .header(COOKIE, &cookie)
        };

        // The System page: every service's /ready and /metrics, read over mutual TLS.
        let readings = settles("every service to be read as up", || async {
            let page: Value = console("/console/api/system")
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            let readings: Option<Vec<(&str, Value)>> = MUTUAL_TLS
                .iter()
                .map(|name| {
                    let instance = page["instances"]
                        .as_array()?
                        .iter()
                        .find(|i| i["upstream"] == *name)?;
                    Some((*name, instance["latest"].clone()))
                })
                .collect();
            match readings {
                Some(r) if r.iter().all(|(_, latest)| latest["up"] == true) => Ok(r),
                _ => Err(page.to_string()),
            }
        })
        .await;
        for (name, latest) in &readings {
            assert_eq!(latest["ready"]["status"], "ready", "{name}: {latest}");
        }

        // A page read from a service's admin endpoint, which only the gateway may call.
        let funnel = console("/console/api/funnel").send().await.unwrap();
        let status = funnel.status();
        let body = funnel.text().await.unwrap();
        assert_eq!(status, 200, "{body}");
        cluster.stop().await;
    }
}
