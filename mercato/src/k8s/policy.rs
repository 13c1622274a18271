//! Rules every rendering keeps, checked on the objects themselves: [`super::render`] refuses a
//! rendering that breaks one, and the tests run them on the committed tree.

use serde_json::Value;

use super::model::{self, System};

/// Every broken rule, as a sentence naming the object; empty when all hold.
#[must_use]
pub fn check(system: &System, objects: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    let of_kind = |kind: &str| -> Vec<&Value> { objects.iter().filter(|o| o["kind"] == kind).collect() };
    let deployments = of_kind("Deployment");
    for d in &deployments {
        let name = d["metadata"]["name"].as_str().unwrap_or("?");
        let pod = &d["spec"]["template"];
        out.extend(pod_rules(&format!("Deployment {name}"), pod, true));
        if !of_kind("PodDisruptionBudget")
            .iter()
            .any(|p| selects(&p["spec"]["selector"], pod))
        {
            out.push(format!("Deployment {name} has no PodDisruptionBudget"));
        }
        if !of_kind("HorizontalPodAutoscaler").iter().any(|h| {
            let target = &h["spec"]["scaleTargetRef"];
            target["kind"] == "Deployment" && target["name"] == name
        }) {
            out.push(format!("Deployment {name} has no HorizontalPodAutoscaler"));
        }
        out.extend(served_by_binary(system, name, pod));
    }
    for j in of_kind("Job") {
        let name = j["metadata"]["name"].as_str().unwrap_or("?");
        out.extend(pod_rules(&format!("Job {name}"), &j["spec"]["template"], false));
    }
    for w in &system.workloads {
        if w.port == 0 {
            out.push(format!(
                "services.{}.listen has port 0; a container needs a fixed port",
                w.name
            ));
        }
        if !deployments
            .iter()
            .any(|d| service_of(&d["spec"]["template"]) == Some(w.name))
        {
            out.push(format!("service {} has no Deployment", w.name));
        }
    }
    if !of_kind("NetworkPolicy").iter().any(|p| denies_all(p)) {
        out.push("no NetworkPolicy denies all traffic by default".into());
    }
    out
}

/// The service whose pods `template` makes, by their `app.kubernetes.io/name` label.
fn service_of(template: &Value) -> Option<&str> {
    template["metadata"]["labels"]["app.kubernetes.io/name"].as_str()
}

/// Whether `selector` (`matchLabels`) picks the pods of `template`.
fn selects(selector: &Value, template: &Value) -> bool {
    let Some(wanted) = selector["matchLabels"].as_object() else {
        return false;
    };
    !wanted.is_empty()
        && wanted
            .iter()
            .all(|(k, v)| &template["metadata"]["labels"][k] == v)
}

fn denies_all(policy: &Value) -> bool {
    let spec = &policy["spec"];
    let types: Vec<&str> = spec["policyTypes"]
        .as_array()
        .map(|t| t.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let empty = |v: &Value| v.is_null() || v.as_array().is_some_and(Vec::is_empty);
    spec["podSelector"]
        .as_object()
        .is_some_and(serde_json::Map::is_empty)
        && types.contains(&"Ingress")
        && types.contains(&"Egress")
        && empty(&spec["ingress"])
        && empty(&spec["egress"])
}

/// Resources, a non-root and locked-down security context, and (for long-running pods) probes.
fn pod_rules(what: &str, template: &Value, long_running: bool) -> Vec<String> {
    let mut out = Vec::new();
    let spec = &template["spec"];
    let pod_security = &spec["securityContext"];
    let containers = spec["containers"].as_array().cloned().unwrap_or_default();
    if containers.is_empty() {
        out.push(format!("{what} has no containers"));
    }
    if spec["automountServiceAccountToken"] != false {
        out.push(format!("{what} mounts a service account token"));
    }
    for c in &containers {
        let who = format!("{what} container {}", c["name"].as_str().unwrap_or("?"));
        for (kind, resource) in [
            ("requests", "cpu"),
            ("requests", "memory"),
            ("limits", "cpu"),
            ("limits", "memory"),
        ] {
            if !c["resources"][kind][resource].is_string() {
                out.push(format!("{who} has no {resource} {kind}"));
            }
        }
        let security = &c["securityContext"];
        let either = |key: &str| -> &Value {
            if security[key].is_null() {
                &pod_security[key]
            } else {
                &security[key]
            }
        };
        if either("runAsNonRoot") != true {
            out.push(format!("{who} may run as root"));
        }
        if either("runAsUser") == 0 {
            out.push(format!("{who} runs as uid 0"));
        }
        if security["allowPrivilegeEscalation"] != false {
            out.push(format!("{who} allows privilege escalation"));
        }
        if security["privileged"] == true {
            out.push(format!("{who} is privileged"));
        }
        if security["readOnlyRootFilesystem"] != true {
            out.push(format!("{who} has a writable root filesystem"));
        }
        if !security["capabilities"]["drop"]
            .as_array()
            .is_some_and(|d| d.iter().any(|c| c == "ALL"))
        {
            out.push(format!("{who} keeps its capabilities"));
        }
        if either("seccompProfile")["type"] != "RuntimeDefault" {
            out.push(format!("{who} has no RuntimeDefault seccomp profile"));
        }
        if long_running {
            for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
                if !c[probe].is_object() {
                    out.push(format!("{who} has no {probe}"));
                }
            }
        }
    }
    out
}

/// The container's port and probes are the ones `mercato serve <service>` serves: the port the
/// configuration gives the service, `/health` for liveness and start-up, `/ready` for
/// readiness; and the pod may take as long to stop as the runtime's drain needs.
fn served_by_binary(system: &System, name: &str, template: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let Some(w) = system
        .workloads
        .iter()
        .find(|w| Some(w.name) == service_of(template))
    else {
        return vec![format!("Deployment {name} is not a service the binary runs")];
    };
    let spec = &template["spec"];
    let Some(c) = spec["containers"].as_array().and_then(|c| c.first()) else {
        return out;
    };
    if c["args"] != serde_json::json!(["serve", w.name]) {
        out.push(format!(
            "Deployment {name} does not run `mercato serve {}`",
            w.name
        ));
    }
    let port_named = |port_name: &Value| {
        c["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| &p["name"] == port_name)
            .map(|p| p["containerPort"].clone())
    };
    if port_named(&"http".into()) != Some(w.port.into()) {
        out.push(format!(
            "Deployment {name} does not expose port {} as http",
            w.port
        ));
    }
    for (probe, path) in [
        ("startupProbe", model::HEALTH_PATH),
        ("livenessProbe", model::HEALTH_PATH),
        ("readinessProbe", model::READY_PATH),
    ] {
        let get = &c[probe]["httpGet"];
        let port = match &get["port"] {
            Value::String(_) => port_named(&get["port"]),
            other => Some(other.clone()),
        };
        if get["path"] != path || port != Some(w.probe_port().into()) {
            out.push(format!(
                "Deployment {name} {probe} is not GET {path} on port {}",
                w.probe_port()
            ));
        }
    }
    let grace = spec["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
    let pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap_or(0);
    let needed = pre_stop + (system.drain_delay_ms + system.shutdown_grace_ms).div_ceil(1000);
    if pre_stop == 0 || grace < needed {
        out.push(format!(
            "Deployment {name} stops within {grace} s, before its {pre_stop} s pause and drain ({needed} s) end"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::Config;
    use crate::k8s::manifests;

    fn rendered() -> (System, Vec<Value>) {
        let system = System::from_config(&Config::default());
        let objects = manifests::tree(&system).base_objects();
        (system, objects)
    }

    /// The violations after `change` is made to the rendering.
    fn broken(change: impl FnOnce(&mut Vec<Value>)) -> Vec<String> {
        let (system, mut objects) = rendered();
        change(&mut objects);
        check(&system, &objects)
    }

    fn orders(objects: &mut [Value]) -> &mut Value {
        objects
            .iter_mut()
            .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "orders")
            .unwrap()
    }

    fn container(objects: &mut [Value]) -> &mut Value {
        &mut orders(objects)["spec"]["template"]["spec"]["containers"][0]
    }

    fn assert_names(violations: &[String], text: &str) {
        assert!(
            violations.iter().any(|v| v.contains(text)),
            "{text:?} not in {violations:?}"
        );
    }

    #[test]
    fn the_rendering_keeps_every_rule() {
        let (system, objects) = rendered();
        assert_eq!(check(&system, &objects), Vec::<String>::new());
    }

    #[test]
    fn a_missing_probe_limit_or_lock_is_named() {
        let v = broken(|o| container(o)["readinessProbe"] = Value::Null);
        assert_names(&v, "orders container orders has no readinessProbe");
        let v = broken(|o| container(o)["resources"]["limits"] = json!({}));
        assert_names(&v, "has no memory limits");
        let v = broken(|o| container(o)["securityContext"]["readOnlyRootFilesystem"] = json!(false));
        assert_names(&v, "writable root filesystem");
        let v = broken(|o| {
            container(o)["securityContext"]["runAsNonRoot"] = Value::Null;
            orders(o)["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] = Value::Null;
        });
        assert_names(&v, "may run as root");
        let v = broken(|o| container(o)["securityContext"]["capabilities"] = json!({"add": ["NET_ADMIN"]}));
        assert_names(&v, "keeps its capabilities");
    }

    #[test]
    fn a_deployment_without_pdb_or_hpa_is_named() {
        let v = broken(|o| {
            o.retain(|x| !(x["kind"] == "PodDisruptionBudget" && x["metadata"]["name"] == "orders"))
        });
        assert_eq!(v, vec!["Deployment orders has no PodDisruptionBudget".to_owned()]);
        let v = broken(|o| {
            o.retain(|x| !(x["kind"] == "HorizontalPodAutoscaler" && x["metadata"]["name"] == "gateway"))
        });
        assert_eq!(
            v,
            vec!["Deployment gateway has no HorizontalPodAutoscaler".to_owned()]
        );
    }

    #[test]
    fn without_a_default_deny_policy_the_rendering_is_refused() {
        let v = broken(|o| o.retain(|x| x["metadata"]["name"] != "default-deny"));
        assert_eq!(
            v,
            vec!["no NetworkPolicy denies all traffic by default".to_owned()]
        );
    }

    #[test]
    fn a_port_or_probe_path_the_binary_does_not_serve_is_named() {
        let v = broken(|o| container(o)["ports"][0]["containerPort"] = json!(9999));
        assert_names(&v, "does not expose port 8104");
        let v = broken(|o| container(o)["livenessProbe"]["httpGet"]["path"] = json!("/healthz"));
        assert_names(&v, "livenessProbe is not GET /health on port 8099");
        let v = broken(|o| container(o)["readinessProbe"]["httpGet"]["port"] = json!("http"));
        assert_names(&v, "readinessProbe is not GET /ready on port 8099");
        let v = broken(|o| container(o)["args"] = json!(["serve", "payments"]));
        assert_names(&v, "does not run `mercato serve orders`");
    }

    #[test]
    fn a_service_on_port_zero_cannot_be_rendered() {
        let mut config = Config::default();
        config.services.get_mut("orders").unwrap().listen = "127.0.0.1:0".parse().unwrap();
        let err = crate::k8s::render(&config).unwrap_err().to_string();
        assert!(err.contains("services.orders.listen has port 0"), "{err}");
    }

    #[test]
    fn termination_shorter_than_the_drain_is_named() {
        let v =
            broken(|o| orders(o)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = json!(10));
        assert_names(&v, "stops within 10 s");
    }

    #[test]
    fn the_drain_settings_shape_termination_and_readiness_timeouts() {
        let mut config = Config::default();
        config.http.shutdown_grace_ms = 25_000;
        config.http.drain_delay_ms = 3_500;
        config.http.readiness_check_timeout_ms = 4_000;
        let system = System::from_config(&config);
        assert_eq!(system.termination_grace_secs(), 5 + 29 + 5);
        assert_eq!(system.readiness_probe_timeout_secs(), 5);
        let objects = manifests::tree(&system).base_objects();
        assert_eq!(check(&system, &objects), Vec::<String>::new());
    }
}
