//! Simulated nodes (`logbook_node::simulate`) against the real server: nodes register Ready
//! with Leases that renew, and bound pods go through a kubelet's lifecycle: Running with a
//! pod IP from the node's podCIDR, run-to-completion pods ending Succeeded or Failed, and
//! deleted pods going away (including the graceful-deletion handshake of a pod held by a
//! finalizer).

#![allow(clippy::unwrap_used)] // a test that panics has failed; the message says where

use std::future::Future;
use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use logbook_e2e::{Server, within};
use logbook_node::simulate::{self, SimConfig};
use serde_json::{Value, json};

/// Polls `f` every 100 ms until it gives `Some`; the caller bounds it with `within`.
async fn until<T, F, Fut>(mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn pod(name: &str, node: &str, policy: &str, annotations: Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"nodeName": node, "restartPolicy": policy,
                 "containers": [{"name": "main", "image": "nginx:1.27"}]},
    }))
    .unwrap()
}

fn condition(p: &Pod, kind: &str) -> Option<String> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.status.clone())
}

fn phase(p: &Pod) -> Option<&str> {
    p.status.as_ref()?.phase.as_deref()
}

async fn phase_becomes(pods: &Api<Pod>, name: &str, want: &str) -> Result<Pod> {
    until(|| async {
        let p = pods.get(name).await?;
        Ok((phase(&p) == Some(want)).then_some(p))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_nodes_register_heartbeat_and_run_pods_like_kubelets() -> Result<()> {
    within(180, "the simulated-node scenario did not finish", async {
        let s = Server::start_api_only()?;
        let c = s.client().await?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let cfg = SimConfig {
            nodes: 3,
            heartbeat_interval: Duration::from_millis(600),
            ..SimConfig::default()
        };
        let sim = tokio::spawn(simulate::run(c.clone(), cfg, stopped));

        // Nodes register Ready, labelled as simulated, each with its own podCIDR.
        let nodes: Api<Node> = Api::all(c.clone());
        let listed = within(
            30,
            "three simulated nodes never became Ready",
            until(|| async {
                let l = nodes
                    .list(&ListParams::default().labels("type=logbook-simulated"))
                    .await?;
                let ready = l.items.iter().filter(|n| {
                    n.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|cs| {
                            cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        })
                });
                Ok((ready.count() == 3).then_some(l.items))
            }),
        )
        .await?;
        let names: Vec<_> = listed
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        assert_eq!(names, ["sim-node-0000", "sim-node-0001", "sim-node-0002"]);
        let n1 = &listed[1];
        assert_eq!(
            n1.spec.as_ref().unwrap().pod_cidr.as_deref(),
            Some("10.64.1.0/24")
        );
        let labels = n1.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["topology.kubernetes.io/zone"], "zone-b");
        assert_eq!(labels["kubernetes.io/hostname"], "sim-node-0001");
        let status = n1.status.as_ref().unwrap();
        assert_eq!(status.capacity.as_ref().unwrap()["pods"].0, "110");
        assert!(
            status
                .node_info
                .as_ref()
                .unwrap()
                .container_runtime_version
                .starts_with("logbook-sim://")
        );

        // Leases: held by their node, owned by it, renewed every heartbeat.
        let leases: Api<Lease> = Api::namespaced(c.clone(), "kube-node-lease");
        let first = leases.get("sim-node-0000").await?;
        let spec = first.spec.clone().unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("sim-node-0000"));
        assert_eq!(spec.lease_duration_seconds, Some(40));
        let owner = &first.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("Node", "sim-node-0000")
        );
        within(
            10,
            "the lease was never renewed",
            until(|| async {
                let now = leases.get("sim-node-0000").await?;
                let renewed = now.spec.and_then(|s| s.renew_time) != spec.renew_time;
                Ok(renewed.then_some(()))
            }),
        )
        .await?;

        // A bound pod runs: pod IP from the node's CIDR, host IP the node's, Ready.
        let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
        let created = pods
            .create(
                &PostParams::default(),
                &pod("web", "sim-node-0001", "Always", json!({})),
            )
            .await?;
        let qos = created.status.as_ref().and_then(|s| s.qos_class.clone());
        let web = within(
            15,
            "a pod bound to a simulated node never ran",
            phase_becomes(&pods, "web", "Running"),
        )
        .await?;
        let st = web.status.as_ref().unwrap();
        let ip = st.pod_ip.as_deref().unwrap();
        assert!(
            ip.starts_with("10.64.1.") && ip != "10.64.1.0",
            "pod IP {ip} outside 10.64.1.0/24"
        );
        assert_eq!(st.host_ip.as_deref(), Some("172.16.0.11"));
        assert_eq!(condition(&web, "Ready").as_deref(), Some("True"));
        assert_eq!(st.qos_class, qos, "the server's qosClass is kept");
        let cs = &st.container_statuses.as_ref().unwrap()[0];
        assert!(cs.ready && cs.started == Some(true), "{cs:?}");
        assert!(
            cs.image_id.starts_with("docker.io/library/nginx@sha256:"),
            "{}",
            cs.image_id
        );

        // A pod bound later through pods/binding (as a scheduler does) enters the watch's
        // `spec.nodeName!=` selector and runs too.
        let mut unbound = pod("bound-later", "", "Always", json!({}));
        unbound.spec.as_mut().unwrap().node_name = None;
        pods.create(&PostParams::default(), &unbound).await?;
        let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "bound-later"},
                             "target": {"kind": "Node", "name": "sim-node-0002"}});
        logbook_e2e::call_json(&c, "POST", "/api/v1/namespaces/default/pods/bound-later/binding", binding).await?;
        let bound = within(15, "a pod bound through pods/binding never ran", phase_becomes(&pods, "bound-later", "Running")).await?;
        assert!(bound.status.unwrap().pod_ip.unwrap().starts_with("10.64.2."));

        // Run-to-completion pods end by their exit code.
        let ok = pod(
            "ok",
            "sim-node-0002",
            "Never",
            json!({"sim.logbook.dev/exit-code": "0", "sim.logbook.dev/run-seconds": "0.5"}),
        );
        let bad = pod(
            "bad",
            "sim-node-0002",
            "Never",
            json!({"sim.logbook.dev/exit-code": "1", "sim.logbook.dev/run-seconds": "0.5"}),
        );
        pods.create(&PostParams::default(), &ok).await?;
        pods.create(&PostParams::default(), &bad).await?;
        within(
            15,
            "exit code 0 with restartPolicy Never did not end Succeeded",
            phase_becomes(&pods, "ok", "Succeeded"),
        )
        .await?;
        let failed = within(
            15,
            "exit code 1 with restartPolicy Never did not end Failed",
            phase_becomes(&pods, "bad", "Failed"),
        )
        .await?;
        let term = failed.status.unwrap().container_statuses.unwrap()[0]
            .state
            .clone()
            .unwrap()
            .terminated
            .unwrap();
        assert_eq!((term.exit_code, term.reason.as_deref()), (1, Some("Error")));

        // Deleting a running pod with a grace period removes it.
        pods.delete(
            "web",
            &DeleteParams {
                grace_period_seconds: Some(30),
                ..DeleteParams::default()
            },
        )
        .await?;
        within(
            15,
            "a deleted pod on a simulated node was never removed",
            until(|| async { Ok(pods.get_opt("web").await?.is_none().then_some(())) }),
        )
        .await?;

        // The graceful-deletion handshake: a pod held by a finalizer gets a
        // deletionTimestamp; the simulated kubelet stops its containers and deletes it.
        let mut held = pod("held", "sim-node-0000", "Always", json!({}));
        held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
        pods.create(&PostParams::default(), &held).await?;
        within(
            15,
            "the held pod never ran",
            phase_becomes(&pods, "held", "Running"),
        )
        .await?;
        pods.delete(
            "held",
            &DeleteParams {
                grace_period_seconds: Some(30),
                ..DeleteParams::default()
            },
        )
        .await?;
        within(
            15,
            "a terminating pod's containers were never reported terminated",
            until(|| async {
                let p = pods.get("held").await?;
                let terminated = p
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .is_some_and(|cs| {
                        cs.iter()
                            .all(|c| c.state.as_ref().is_some_and(|s| s.terminated.is_some()))
                    });
                Ok(terminated.then_some(()))
            }),
        )
        .await?;
        pods.patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await?;
        within(
            15,
            "the pod was not removed once its finalizer went",
            until(|| async { Ok(pods.get_opt("held").await?.is_none().then_some(())) }),
        )
        .await?;

        stop.send(true)?;
        within(10, "simulate::run did not return after shutdown", sim).await??;
        Ok(())
    })
    .await
}
