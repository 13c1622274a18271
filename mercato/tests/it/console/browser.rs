//! The console driven in headless Chromium: sign in, every service healthy, a blue/green switch
//! and its roll-back, a parked message replayed, an order found with its saga and trace, a
//! declined one with its compensation and each provider call, the funnel, a session renewed
//! after its access cookie went and ended by signing out, a session renewed before its access
//! token ends, with screenshots (see `screenshot_path`).
//! Run only where Chromium and chromedriver are installed (`scripts/test.sh` says when not).

use mercato_messaging::Bus;
use mercato_runtime::telemetry::LogFormat;
use mercato_runtime::trace::TraceSettings;
use mercato_testkit::{PATIENCE, TestBackend, eventually};
use serde_json::json;

use super::order_ending;
use super::webdriver::{Browser, screenshot_path};
use crate::support::{System, customer_at, fresh, metrics_of, poison_registration, unique_email};

/// A system whose console samples often, so the charts fill within a test.
async fn system() -> (crate::support::Fixture, System) {
    let (fixture, mut config) = fresh(TestBackend::Sqlite).await;
    config.gateway.console.sample_interval_ms = 500;
    (fixture, System::start(config).await)
}

async fn signed_in(system: &System, width: u32, height: u32) -> Browser {
    let email = system.admin_account().await;
    let browser = Browser::start(width, height).await;
    browser.goto(&system.url("/console")).await;
    browser.type_into("#email", &email).await;
    browser.type_into("#password", "correct horse").await;
    browser.click("#sign-in button[type=submit]").await;
    browser.shows(&["System", "Sign out"]).await;
    browser
}

/// Clicks the button `css`, then Confirm in the dialog it opens.
async fn confirmed(browser: &Browser, css: &str) {
    browser.click(css).await;
    browser
        .until(
            "the confirmation dialog",
            "return document.getElementById('confirm').open",
        )
        .await;
    browser.click("#confirm-ok").await;
}

async fn green_percent(system: &System, token: &str) -> u64 {
    system.get_json("/admin/upstreams/inventory", token).await["green_percent"]
        .as_u64()
        .unwrap()
}

/// Searches the console's orders for `query`: an order's id, or a customer's e-mail.
async fn search_orders(browser: &Browser, system: &System, query: &str) {
    browser.goto(&system.url("/console#orders")).await;
    browser.type_into("#order-query", query).await;
    browser.click("form[role=search] button").await;
}

/// Waits until the console shows `percent` % of inventory's traffic on green, and checks that
/// the gateway says the same.
async fn shows_green_percent(browser: &Browser, system: &System, admin: &str, percent: u64) {
    browser
        .until(
            &format!("inventory at {percent} % on green"),
            &format!(
                "return document.querySelector('[data-upstream=inventory]').dataset.greenPercent === '{percent}'"
            ),
        )
        .await;
    assert_eq!(green_percent(system, admin).await, percent);
}

/// Opens the system page with its answer held back for a second, moves on to the traffic page
/// at once, and checks that the system page's late draw does not replace it (nor start its
/// refresh timer): a slow answer under load once left the console showing the system page.
async fn leaves_the_system_page_while_it_draws(browser: &Browser) {
    browser
        .run(
            "const real = window.fetch;
             window.systemLanded = false;
             window.fetch = async (url, options) => {
               if (!String(url).endsWith('/console/api/system')) return real(url, options);
               await new Promise((done) => setTimeout(done, 1000));
               const answer = await real(url, options);
               setTimeout(() => { window.systemLanded = true; window.fetch = real; }, 500);
               return answer;
             };
             location.hash = '#system';
             setTimeout(() => { location.hash = '#traffic'; }, 100);",
        )
        .await;
    browser
        .until(
            "the held-back system answer to land",
            "return window.systemLanded === true",
        )
        .await;
    browser
        .until(
            "the traffic page still shown",
            "return document.querySelector('[data-upstream=inventory]') !== null
                 && document.getElementById('summary') === null",
        )
        .await;
}

#[tokio::test]
async fn an_admin_sees_every_service_healthy_switches_a_split_and_back_and_replays_a_message() {
    let (_fixture, system) = system().await;
    let admin = system.admin().await;
    let browser = signed_in(&system, 1280, 900).await;

    browser
        .until(
            "every instance healthy, with rates sampled",
            "const cards = [...document.querySelectorAll('[data-status]')];
             return cards.length >= 7 && cards.every((c) => c.dataset.status === 'healthy')
                 && document.querySelectorAll('svg.spark polyline[points*=\" \"]').length > 0",
        )
        .await;
    browser
        .shows(&["identity", "orders", "inventory", "gateway", "outbox backlog"])
        .await;
    // Each engine with every instance's check of it: here SQLite and the embedded bus.
    browser
        .until(
            "the dependencies up, each with its checks",
            "const row = (e) => document.querySelector(`#dependencies tr[data-engine=${e}][data-state=up]`);
             return ['sqlite', 'embedded'].every((e) => row(e) && row(e).innerText.includes(' ms'))",
        )
        .await;
    browser
        .shows(&["SQLite", "embedded bus", "payments database"])
        .await;
    browser.screenshot(&screenshot_path("system")).await;

    // A green group for inventory: the same instance under another name.
    let green = system.urls["inventory"].replace("127.0.0.1", "localhost");
    let added = system
        .send_json(
            reqwest::Method::POST,
            "/admin/upstreams/inventory/instances",
            &admin,
            &json!({"url": green, "group": "green"}),
        )
        .await;
    assert_eq!(added.status(), 201);
    leaves_the_system_page_while_it_draws(&browser).await;
    confirmed(&browser, "[data-upstream=inventory] button:not(.secondary)").await;
    shows_green_percent(&browser, &system, &admin, 100).await;
    browser.screenshot(&screenshot_path("traffic")).await;
    // Cancelling the dialog changes nothing.
    browser.click("[data-upstream=inventory] button.secondary").await;
    browser
        .until(
            "the confirmation dialog",
            "return document.getElementById('confirm').open",
        )
        .await;
    // Asked again at once, before the cancelled dialog's `close` event has run (as when the
    // click is handled first under load): that event must not answer the new question.
    browser
        .run(
            "document.getElementById('confirm').close('cancel');
             document.querySelector('[data-upstream=inventory] button.secondary').click();",
        )
        .await;
    assert_eq!(green_percent(&system, &admin).await, 100);
    browser
        .until(
            "the confirmation dialog asking again",
            "return document.getElementById('confirm').open",
        )
        .await;
    browser.click("#confirm-ok").await;
    shows_green_percent(&browser, &system, &admin, 0).await;

    // A message customers can never apply is parked; replayed from the page, it is handled
    // (and parked) again under a new dead-letter id.
    let poison = poison_registration();
    let bus = Bus::connect(&system.config.bus).await.unwrap();
    bus.publish(&poison).await.unwrap();
    browser.goto(&system.url("/console#messages")).await;
    let parked = eventually(PATIENCE, "the poison among the dead letters on the page", || async {
        browser.run("location.reload()").await;
        browser.find("h2").await;
        let rows = browser
            .run("return [...document.querySelectorAll('#dead-letters tr[data-id]')].map((r) => [r.dataset.id, r.innerText])")
            .await;
        rows.as_array()?.iter().find_map(|r| {
            let text = r[1].as_str()?;
            (text.contains(&poison.id) && text.contains("customers-on-identity")).then(|| r[0].as_str().unwrap().to_owned())
        })
    })
    .await;
    browser.screenshot(&screenshot_path("messages")).await;
    confirmed(&browser, &format!("tr[data-id='{parked}'] button")).await;
    eventually(
        PATIENCE,
        "the replayed letter gone and parked again under a new id",
        || async {
            let letters = bus.dead_letters(100).await.ok()?;
            let ours: Vec<_> = letters
                .iter()
                .filter(|l| l.envelope.id == poison.id && l.group == "customers-on-identity")
                .collect();
            (ours.len() == 1 && ours[0].id != parked).then_some(())
        },
    )
    .await;

    // Readable on a phone: nothing wider than the screen.
    browser.resize(390, 844).await;
    browser.goto(&system.url("/console#system")).await;
    browser
        .until(
            "the system page",
            "return document.querySelectorAll('[data-status]').length >= 7",
        )
        .await;
    let overflow = browser.run("return document.documentElement.scrollWidth").await;
    assert!(
        overflow.as_u64().unwrap() <= 390,
        "page is {overflow} px wide on a 390 px screen"
    );
    browser.screenshot(&screenshot_path("system-phone")).await;
    browser.close().await;
}

#[tokio::test]
async fn an_order_is_found_with_its_saga_and_trace_and_a_declined_one_shows_its_compensation() {
    // Spans are kept in this process, as `mercato up` keeps them.
    let _tracing = mercato_runtime::telemetry::install(LogFormat::Json, Some(&TraceSettings::default()));
    let (_fixture, system) = system().await;
    let email = unique_email();
    let customer = customer_at(&system.http, &system.gateway, &email).await;
    let confirmed_id = order_ending(&system, &customer, "tok_visa", "confirmed").await;
    let declined_id = order_ending(&system, &customer, "tok_decline", "cancelled").await;

    let browser = signed_in(&system, 1280, 1000).await;
    search_orders(&browser, &system, &confirmed_id).await;
    browser
        .until(
            "the saga timeline and the trace waterfall",
            "return !!document.querySelector('#timeline li[data-type=OrderConfirmed]')
                && document.querySelectorAll('svg#waterfall rect').length > 3
                && !!document.querySelector('#provider-attempts tr[data-step=charge][data-outcome=succeeded]')",
        )
        .await;
    browser
        .shows(&[
            "OrderPlaced",
            "StockReserved",
            "PaymentCaptured",
            "captured",
            "orders",
        ])
        .await;
    browser
        .run("document.getElementById('payment').scrollIntoView()")
        .await;
    browser.screenshot(&screenshot_path("order")).await;

    // By the customer's e-mail: both orders; the declined one shows its compensation.
    search_orders(&browser, &system, &email).await;
    browser.click(&format!("a[href='#orders/{declined_id}']")).await;
    browser
        .until(
            "the compensation and the cancel reason",
            "return !!document.querySelector('#timeline li.compensation[data-type=ReleaseStock]')
                && !!document.querySelector('#timeline li.cancelled[data-type=OrderCancelled]')
                && document.querySelectorAll('#provider-attempts tbody tr').length === 1
                && !!document.querySelector('#provider-attempts tr[data-outcome=declined]')",
        )
        .await;
    browser
        .shows(&[
            "reason: payment_declined",
            "(compensation)",
            "cancelled",
            "card_declined",
        ])
        .await;
    browser.screenshot(&screenshot_path("order-declined")).await;

    // An unknown order is a message on the page, not a broken page.
    browser.goto(&system.url("/console#orders/no-such-order")).await;
    browser.shows(&["no order no-such-order"]).await;

    // The access cookie gone, as at its Max-Age: the page renews the session with the refresh
    // cookie (which this page cannot see) and carries on.
    browser.delete_cookie("mercato_console").await;
    browser.goto(&system.url("/console#funnel")).await;
    browser
        .until(
            "two placed, one confirmed, one cancelled in the funnel",
            "const rows = [...document.querySelectorAll('#funnel tbody tr')].map((r) => [...r.cells].map((c) => c.innerText));
             const sum = (i) => rows.reduce((n, r) => n + Number(r[i]), 0);
             return sum(1) === 2 && sum(2) === 1 && sum(3) === 1 && rows.some((r) => r[4].includes('payment_declined'))",
        )
        .await;
    browser.screenshot(&screenshot_path("funnel")).await;

    // Signing out ends the session for good: a reload finds no session to renew.
    browser.click("#sign-out").await;
    let signed_out = "return !document.getElementById('sign-in').hidden";
    browser.until("the sign-in form", signed_out).await;
    browser.run("location.reload()").await;
    browser.find("#sign-in").await;
    browser.until("the sign-in form after a reload", signed_out).await;
    browser.close().await;
}

/// The gateway's count of console calls to routes starting with `route` answered `status`.
async fn console_calls(system: &System, route: &str, status: u16) -> f64 {
    let metrics = metrics_of(&system.http, &system.gateway)
        .await
        .unwrap_or_default();
    let (route, status) = (format!("route=\"{route}"), format!("status_code=\"{status}\""));
    metrics
        .lines()
        .filter(|l| l.starts_with("http_requests_total{") && l.contains(&route) && l.contains(&status))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn the_page_renews_its_session_before_the_access_token_ends_and_no_call_is_refused() {
    let (_fixture, mut config) = fresh(TestBackend::Sqlite).await;
    config.gateway.console.sample_interval_ms = 500;
    // The shortest life identity allows; the page renews 30 s before it ends.
    config.identity.access_token_ttl_secs = 60;
    config.service_tokens.ttl_secs = 60;
    let system = System::start(config).await;
    let browser = signed_in(&system, 1280, 900).await;
    // The page, loaded signed out, was refused its session once before the sign-in.
    let refused = console_calls(&system, "/console", 401).await;

    // The System page calls every half second, so a call falls due right after the renewal time.
    eventually(
        std::time::Duration::from_secs(90),
        "the session renewed",
        || async {
            (console_calls(&system, "/console/api/session/refresh\"", 200).await >= 1.0).then_some(())
        },
    )
    .await;
    let before = console_calls(&system, "/console/api/system\"", 200).await;
    eventually(
        PATIENCE,
        "the page's calls going on after the renewal",
        || async { (console_calls(&system, "/console/api/system\"", 200).await > before).then_some(()) },
    )
    .await;
    browser.shows(&["System", "Sign out"]).await;
    assert_eq!(
        console_calls(&system, "/console", 401).await,
        refused,
        "a console call was refused"
    );
    browser.close().await;
}
