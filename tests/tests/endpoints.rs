//! The Endpoints and EndpointSlice controllers as users meet them, through real `kubectl`
//! against `logbook serve` (which runs the controllers in-process): a Service's Endpoints
//! and EndpointSlices list only its ready pods as ready, a pod that stops being ready moves,
//! a deleted pod leaves, a named targetPort resolves per pod, deleting the Service removes
//! both, and a Service without a selector keeps the Endpoints its user wrote.
//!
//! There is no kubelet here: the test plays it, writing each pod's status (Running, podIP,
//! Ready) through `pods/{name}/status`.

#![allow(clippy::unwrap_used)] // a test that panics has failed; the message says where

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Result;
use logbook_e2e::{Server, call_json as call, within};
use serde_json::{Value, json};

const NS: &str = "/api/v1/namespaces/default";

async fn patch(c: &kube::Client, path: &str, body: Value) -> Result<Value> {
    let req = logbook_e2e::json_request("PATCH", path, "application/merge-patch+json", &body);
    Ok(serde_json::from_str(&c.request_text(req).await?)?)
}

/// A pod on node `n1` labelled `app=web` whose container names port `http` `port`.
async fn add_pod(c: &kube::Client, name: &str, port: i64) -> Result<()> {
    call(
        c,
        "POST",
        &format!("{NS}/pods"),
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "nginx",
                "ports": [{"name": "http", "containerPort": port}]}]}}),
    )
    .await?;
    Ok(())
}

/// What a kubelet reports: Running with an IP, Ready or not.
async fn set_status(c: &kube::Client, name: &str, ip: &str, ready: bool) -> Result<()> {
    let status = if ready { "True" } else { "False" };
    patch(
        c,
        &format!("{NS}/pods/{name}/status"),
        json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": status}]}}),
    )
    .await?;
    Ok(())
}

/// `kubectl get <args> -o json`, parsed; `None` when kubectl fails (e.g. NotFound).
fn kubectl_json(s: &Server, args: &[&str]) -> Option<Value> {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    s.kubectl(&a)
        .ok()
        .and_then(|out| serde_json::from_str(&out).ok())
}

/// The Endpoints as (ip, ready, port) triples.
fn endpoints_view(ep: &Value) -> BTreeSet<(String, bool, i64)> {
    let mut out = BTreeSet::new();
    for ss in ep["subsets"].as_array().into_iter().flatten() {
        for (field, ready) in [("addresses", true), ("notReadyAddresses", false)] {
            for a in ss[field].as_array().into_iter().flatten() {
                for p in ss["ports"].as_array().into_iter().flatten() {
                    out.insert((
                        a["ip"].as_str().unwrap_or("").to_string(),
                        ready,
                        p["port"].as_i64().unwrap_or(0),
                    ));
                }
            }
        }
    }
    out
}

/// The slices of a list as (ip, ready, port) triples.
fn slices_view(list: &Value) -> BTreeSet<(String, bool, i64)> {
    let mut out = BTreeSet::new();
    for sl in list["items"].as_array().into_iter().flatten() {
        for e in sl["endpoints"].as_array().into_iter().flatten() {
            for p in sl["ports"].as_array().into_iter().flatten() {
                out.insert((
                    e["addresses"][0].as_str().unwrap_or("").to_string(),
                    e["conditions"]["ready"].as_bool().unwrap_or(false),
                    p["port"].as_i64().unwrap_or(0),
                ));
            }
        }
    }
    out
}

fn set(v: &[(&str, bool, i64)]) -> BTreeSet<(String, bool, i64)> {
    v.iter()
        .map(|(ip, r, p)| (ip.to_string(), *r, *p))
        .collect()
}

/// Polls `check` until it holds; the caller's `within` bounds the wait.
async fn until(mut check: impl FnMut() -> bool) {
    while !check() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_publish_their_ready_pods_as_endpoints_and_endpointslices() -> Result<()> {
    within(180, "the endpoint controllers did not converge", async {
        let s = Server::start()?;
        let c = s.client().await?;
        call(
            &c,
            "POST",
            &format!("{NS}/services"),
            json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web", "labels": {"tier": "front"}},
                "spec": {"selector": {"app": "web"},
                    "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}),
        )
        .await?;
        // b serves `http` on another port number; c is not ready.
        add_pod(&c, "a", 8080).await?;
        add_pod(&c, "b", 9090).await?;
        add_pod(&c, "c", 8080).await?;
        set_status(&c, "a", "10.244.0.1", true).await?;
        set_status(&c, "b", "10.244.0.2", true).await?;
        set_status(&c, "c", "10.244.0.3", false).await?;

        let want = set(&[
            ("10.244.0.1", true, 8080),
            ("10.244.0.2", true, 9090),
            ("10.244.0.3", false, 8080),
        ]);
        let slices_of_web = [
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
        ];
        within(
            30,
            "Endpoints web never listed a, b ready and c not ready",
            until(|| {
                kubectl_json(&s, &["get", "endpoints", "web"])
                    .is_some_and(|e| endpoints_view(&e) == want)
            }),
        )
        .await;
        within(
            30,
            "the slices of web never listed a, b ready and c not ready",
            until(|| kubectl_json(&s, &slices_of_web).is_some_and(|l| slices_view(&l) == want)),
        )
        .await;

        // The Endpoints: one subset per resolved port, labels from the Service.
        let ep = kubectl_json(&s, &["get", "endpoints", "web"]).unwrap();
        assert_eq!(ep["subsets"].as_array().map(Vec::len), Some(2), "{ep}");
        assert_eq!(ep["metadata"]["labels"]["tier"], "front");
        assert!(
            ep["metadata"]["annotations"]["endpoints.kubernetes.io/last-change-trigger-time"]
                .is_string()
        );
        let a = ep["subsets"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|ss| ss["addresses"].as_array().cloned().unwrap_or_default())
            .find(|a| a["ip"] == "10.244.0.1")
            .unwrap();
        assert_eq!(a["nodeName"], "n1");
        assert_eq!(a["targetRef"]["kind"], "Pod");
        assert_eq!(a["targetRef"]["name"], "a");

        // The slices: one per port group, owned by the Service, labelled as kube labels them.
        let list = kubectl_json(&s, &slices_of_web).unwrap();
        let items = list["items"].as_array().unwrap();
        assert_eq!(items.len(), 2, "{list}");
        let svc = call(&c, "GET", &format!("{NS}/services/web"), Value::Null).await?;
        for sl in items {
            assert_eq!(sl["addressType"], "IPv4");
            assert_eq!(sl["ports"][0]["name"], "http");
            assert_eq!(
                sl["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
                "endpointslice-controller.k8s.io"
            );
            assert_eq!(sl["metadata"]["labels"]["tier"], "front");
            assert!(sl["metadata"]["name"].as_str().unwrap().starts_with("web-"));
            let owner = &sl["metadata"]["ownerReferences"][0];
            assert_eq!(
                (&owner["kind"], &owner["uid"], &owner["controller"]),
                (&json!("Service"), &svc["metadata"]["uid"], &json!(true))
            );
        }
        // Converged means quiet: nothing is rewritten while nothing changes.
        let versions = |s: &Server| {
            let ep = kubectl_json(s, &["get", "endpoints", "web"]).unwrap();
            let list = kubectl_json(s, &slices_of_web).unwrap();
            let mut v: Vec<String> = list["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|sl| {
                    sl["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect();
            v.push(
                ep["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
            v
        };
        let before = versions(&s);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            versions(&s),
            before,
            "the controllers rewrite objects that did not change"
        );
        // kubectl's own table shows the addresses too.
        let table = s.kubectl(&["get", "endpoints", "web"])?;
        assert!(table.contains("10.244.0.1:8080"), "{table}");

        // a stops being ready: it moves.
        set_status(&c, "a", "10.244.0.1", false).await?;
        let want = set(&[
            ("10.244.0.1", false, 8080),
            ("10.244.0.2", true, 9090),
            ("10.244.0.3", false, 8080),
        ]);
        within(
            30,
            "a did not move to notReadyAddresses / ready=false",
            until(|| {
                kubectl_json(&s, &["get", "endpoints", "web"])
                    .is_some_and(|e| endpoints_view(&e) == want)
                    && kubectl_json(&s, &slices_of_web).is_some_and(|l| slices_view(&l) == want)
            }),
        )
        .await;

        // b is deleted: it leaves, and the slice of its port goes with it.
        s.kubectl(&["delete", "pod", "b", "--grace-period=0", "--force"])?;
        let want = set(&[("10.244.0.1", false, 8080), ("10.244.0.3", false, 8080)]);
        within(
            30,
            "deleted pod b stayed in the Endpoints or slices",
            until(|| {
                kubectl_json(&s, &["get", "endpoints", "web"])
                    .is_some_and(|e| endpoints_view(&e) == want)
                    && kubectl_json(&s, &slices_of_web).is_some_and(|l| {
                        slices_view(&l) == want && l["items"].as_array().map(Vec::len) == Some(1)
                    })
            }),
        )
        .await;

        // A Service without a selector: its user's Endpoints stay as written, and it gets no
        // slices from the controller.
        call(
            &c,
            "POST",
            &format!("{NS}/services"),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "manual"},
                "spec": {"ports": [{"port": 5432}]}}),
        )
        .await?;
        call(
            &c,
            "POST",
            &format!("{NS}/endpoints"),
            json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "manual"},
                "subsets": [{"addresses": [{"ip": "192.0.2.10"}], "ports": [{"port": 5432}]}]}),
        )
        .await?;
        // Another change to web's pods, so the controllers have surely run since.
        set_status(&c, "a", "10.244.0.1", true).await?;
        within(
            30,
            "a did not become ready again",
            until(|| {
                kubectl_json(&s, &["get", "endpoints", "web"]).is_some_and(|e| {
                    endpoints_view(&e).contains(&("10.244.0.1".to_string(), true, 8080))
                })
            }),
        )
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let manual = kubectl_json(&s, &["get", "endpoints", "manual"]).unwrap();
        assert_eq!(
            endpoints_view(&manual),
            set(&[("192.0.2.10", true, 5432)]),
            "{manual}"
        );
        assert!(manual["metadata"]["labels"].is_null(), "{manual}");
        let none = kubectl_json(
            &s,
            &[
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=manual",
            ],
        )
        .unwrap();
        assert_eq!(none["items"].as_array().map(Vec::len), Some(0), "{none}");

        // Deleting web removes its Endpoints and slices.
        s.kubectl(&["delete", "service", "web"])?;
        within(
            30,
            "web's Endpoints or slices outlived it",
            until(|| {
                kubectl_json(&s, &["get", "endpoints", "web"]).is_none()
                    && kubectl_json(&s, &slices_of_web)
                        .is_some_and(|l| l["items"].as_array().is_some_and(Vec::is_empty))
            }),
        )
        .await;
        // The bootstrap kubernetes Service (no selector) kept its Endpoints.
        let k = kubectl_json(&s, &["get", "endpoints", "kubernetes"]).unwrap();
        assert_eq!(k["subsets"][0]["addresses"][0]["ip"], "127.0.0.1");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_with_more_than_a_hundred_pods_gets_slices_of_at_most_a_hundred_endpoints()
-> Result<()> {
    within(
        240,
        "the endpoint controllers did not publish 150 pods",
        async {
            let s = Server::start()?;
            let c = s.client().await?;
            call(
                &c,
                "POST",
                &format!("{NS}/services"),
                json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
            )
            .await?;
            for i in 0..150 {
                add_pod(&c, &format!("p{i}"), 8080).await?;
                set_status(
                    &c,
                    &format!("p{i}"),
                    &format!("10.244.{}.{}", i / 200, i % 200 + 1),
                    true,
                )
                .await?;
            }
            let slices = [
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=web",
            ];
            within(
                60,
                "150 pods never reached the slices",
                until(|| kubectl_json(&s, &slices).is_some_and(|l| slices_view(&l).len() == 150)),
            )
            .await;
            let list = kubectl_json(&s, &slices).unwrap();
            let sizes: Vec<usize> = list["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|sl| sl["endpoints"].as_array().map_or(0, Vec::len))
                .collect();
            assert!(
                sizes.len() >= 2 && sizes.iter().all(|n| *n <= 100),
                "{sizes:?}"
            );
            assert_eq!(
                sizes.iter().sum::<usize>(),
                150,
                "no endpoint is listed twice: {sizes:?}"
            );
            within(
                30,
                "150 pods never reached the Endpoints",
                until(|| {
                    kubectl_json(&s, &["get", "endpoints", "web"])
                        .is_some_and(|e| endpoints_view(&e).len() == 150)
                }),
            )
            .await;
            let ep = kubectl_json(&s, &["get", "endpoints", "web"]).unwrap();
            assert!(
                ep["metadata"]["annotations"]["endpoints.kubernetes.io/over-capacity"].is_null()
            );
            Ok(())
        },
    )
    .await
}
