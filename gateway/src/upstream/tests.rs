use super::*;
use crate::config::UpstreamSettings;

fn upstreams(urls: &[&str], adjust: impl FnOnce(&mut GatewayConfig)) -> Result<Upstreams, StartError> {
    let config = BTreeMap::from([("a".to_owned(), urls.iter().map(|u| (*u).to_owned()).collect())]);
    let mut gateway = GatewayConfig::default();
    adjust(&mut gateway);
    Upstreams::new(&config, &gateway, None, &mut Registry::default())
}

fn port(pick: &Pick) -> u16 {
    pick.instance.uri.port_u16().unwrap()
}

#[test]
fn round_robin_picks_in_turn() {
    let u = upstreams(&["http://127.0.0.1:1", "http://127.0.0.1:2"], |g| {
        g.load_balancing.policy = BalancingPolicy::RoundRobin;
    })
    .unwrap();
    let picks: Vec<_> = (0..4)
        .map(|_| port(&u.pick::<()>("a").unwrap().unwrap()))
        .collect();
    assert_eq!(picks, [1, 2, 1, 2]);
    assert!(u.pick::<()>("b").unwrap().is_none());
}

#[test]
fn non_http_instances_are_refused() {
    assert!(upstreams(&["ftp://x"], |_| ()).is_err());
    assert!(upstreams(&["http://127.0.0.1:1/path"], |_| ()).is_err());
    assert!(upstreams(&[], |_| ()).is_err());
}

#[test]
fn an_https_instance_needs_the_gateway_certificate() {
    let Err(StartError::Config { key, message }) = upstreams(&["https://127.0.0.1:1"], |_| ()) else {
        panic!("an https instance without [tls] was accepted");
    };
    assert_eq!(key, "upstreams.a");
    assert!(message.contains("no [tls] certificate"), "{message}");
}

#[test]
fn unhealthy_instances_are_skipped_unless_all_are() {
    let u = upstreams(&["http://127.0.0.1:1", "http://127.0.0.1:2"], |_| ()).unwrap();
    let instances = u.get("a").unwrap().instances(Group::Blue);
    instances[0].record_check(false, 1, 1);
    for _ in 0..20 {
        assert_eq!(port(&u.pick::<()>("a").unwrap().unwrap()), 2);
    }
    instances[1].record_check(false, 1, 1);
    assert!(u.pick::<()>("a").unwrap().is_some(), "all unhealthy: still tried");
}

#[test]
fn a_retry_passes_over_the_instances_that_failed_the_request_while_another_is_left() {
    let u = upstreams(&["http://127.0.0.1:1", "http://127.0.0.1:2"], |_| ()).unwrap();
    let instances = u.get("a").unwrap().instances(Group::Blue);
    // Both still healthy: the first one has died, but no health check has noticed yet.
    let failed = [Arc::clone(&instances[0])];
    for _ in 0..20 {
        assert_eq!(port(&u.pick_avoiding::<()>("a", &failed).unwrap().unwrap()), 2);
    }
    let all = [Arc::clone(&instances[0]), Arc::clone(&instances[1])];
    assert!(
        u.pick_avoiding::<()>("a", &all).unwrap().is_some(),
        "every instance failed: still tried"
    );
}

#[test]
fn the_split_sends_traffic_to_green_and_refuses_an_empty_group() {
    let u = upstreams(&["http://127.0.0.1:1"], |g| {
        g.upstreams.insert(
            "a".into(),
            UpstreamSettings {
                green: vec!["http://127.0.0.1:9".into()],
                ..UpstreamSettings::default()
            },
        );
    })
    .unwrap();
    assert_eq!(port(&u.pick::<()>("a").unwrap().unwrap()), 1);
    let view = u.set_split("a", 100).unwrap();
    assert_eq!(view.live, Group::Green);
    for _ in 0..10 {
        assert_eq!(port(&u.pick::<()>("a").unwrap().unwrap()), 9);
    }
    u.remove("a", "http://127.0.0.1:1").unwrap();
    assert_eq!(
        u.set_split("a", 0).unwrap_err(),
        ChangeError::WouldEmpty {
            upstream: "a".into(),
            group: "blue"
        }
    );
    assert!(matches!(
        u.remove("a", "http://127.0.0.1:9"),
        Err(ChangeError::WouldEmpty { .. })
    ));
}

#[test]
fn instances_are_added_and_removed_once() {
    let u = upstreams(&["http://127.0.0.1:1"], |_| ()).unwrap();
    u.add("a", Group::Blue, "http://127.0.0.1:2/").unwrap();
    assert!(matches!(
        u.add("a", Group::Green, "http://127.0.0.1:2"),
        Err(ChangeError::Exists { .. })
    ));
    assert!(matches!(
        u.add("a", Group::Blue, "nope"),
        Err(ChangeError::InvalidUrl(_))
    ));
    assert_eq!(u.get("a").unwrap().instances(Group::Blue).len(), 2);
    u.remove("a", "http://127.0.0.1:1").unwrap();
    assert!(matches!(
        u.remove("a", "http://127.0.0.1:1"),
        Err(ChangeError::NotFound { .. })
    ));
    assert!(matches!(
        u.remove("a", "http://127.0.0.1:2"),
        Err(ChangeError::WouldEmpty { .. })
    ));
}

#[test]
fn a_failed_pick_is_recorded_against_its_instance() {
    let u = upstreams(&["http://127.0.0.1:1"], |_| ()).unwrap();
    u.pick::<()>("a").unwrap().unwrap().finish(true);
    let view = u.view(u.get("a").unwrap());
    assert_eq!((view.blue.requests, view.blue.failures), (1, 1));
    assert_eq!(view.blue.instances[0].failures, 1);
    assert_eq!(view.blue.instances[0].in_flight, 0);
}
