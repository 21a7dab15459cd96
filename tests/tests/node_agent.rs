//! The real node agent: pods run as containers through containerd's CRI plugin, runc and a
//! CNI bridge (`logbook node --cri-socket`). Each test starts its own `logbook serve` and
//! agent (a Node of its own name) against the containerd that `scripts/test.sh` starts
//! (`LOGBOOK_CRI_SOCKET`); without it the tests print a skip line.

use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Node, Pod, Secret, Service};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use logbook_e2e::{Component, Server, cri_socket, within};
use serde_json::{Value, json};

/// Generous bounds: a debug build on two cores, containers started for real.
const READY_S: u64 = 90;

struct Cluster {
    server: Server,
    agent: Component,
    client: kube::Client,
    node: String,
    socket: std::path::PathBuf,
}

async fn cluster(test: &str, node: &str) -> Option<Cluster> {
    let socket = cri_socket(test)?;
    let server = Server::start().expect("server");
    let agent = server.node_agent(node, &socket).expect("node agent");
    let client = server.client().await.expect("client");
    let nodes: Api<Node> = Api::all(client.clone());
    within(READY_S, "the node registers Ready", async {
        loop {
            if let Ok(n) = nodes.get(node).await
                && n.status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    Some(Cluster {
        server,
        agent,
        client,
        node: node.to_string(),
        socket,
    })
}

fn pod(v: Value) -> Pod {
    serde_json::from_value(v).expect("pod manifest")
}

/// Polls the pod until `f` holds; the last pod seen.
async fn wait_pod(
    c: &kube::Client,
    name: &str,
    secs: u64,
    what: &str,
    f: impl Fn(&Pod) -> bool,
) -> Pod {
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    within(secs, what, async {
        loop {
            if let Ok(Some(p)) = pods.get_opt(name).await
                && f(&p)
            {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .map_or(0, |c| c.restart_count)
}

fn container_id(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .and_then(|c| c.container_id.clone())
        .unwrap_or_default()
}

async fn create(c: &kube::Client, p: Value) -> Pod {
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    pods.create(&PostParams::default(), &pod(p))
        .await
        .expect("create pod")
}

/// A pod on `node` running `script` in busybox.
fn busybox(name: &str, node: &str, restart: &str, script: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "nodeName": node,
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 5,
            "containers": [{"name": "main", "image": "busybox:1.36", "command": ["sh", "-c", script]}],
        },
    })
}

#[tokio::test]
async fn a_node_registers_with_the_machines_capacity_its_runtime_and_a_lease() {
    let Some(k) = cluster("a_node_registers", "na-register").await else {
        return;
    };
    let n: Node = Api::all(k.client.clone()).get(&k.node).await.expect("node");
    let st = n.status.expect("status");
    let cap = st.capacity.expect("capacity");
    for r in ["cpu", "memory", "ephemeral-storage", "pods"] {
        assert!(cap.contains_key(r), "capacity has {r}: {cap:?}");
    }
    let info = st.node_info.expect("nodeInfo");
    assert!(
        info.container_runtime_version.starts_with("containerd://"),
        "{}",
        info.container_runtime_version
    );
    let conds: Vec<(String, String)> = st
        .conditions
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.type_, c.status))
        .collect();
    for (t, s) in [
        ("Ready", "True"),
        ("MemoryPressure", "False"),
        ("DiskPressure", "False"),
        ("PIDPressure", "False"),
    ] {
        assert!(
            conds.contains(&(t.to_string(), s.to_string())),
            "{t}={s} in {conds:?}"
        );
    }
    assert!(
        st.addresses
            .unwrap_or_default()
            .iter()
            .any(|a| a.type_ == "InternalIP")
    );
    let lease = k
        .server
        .kubectl_json(&["get", "lease", "-n", "kube-node-lease", &k.node])
        .expect("lease");
    assert_eq!(lease["spec"]["holderIdentity"], k.node.as_str());
}

#[tokio::test]
async fn a_deployment_of_busybox_pods_runs_and_its_pod_ips_answer_from_another_pod() {
    let Some(k) = cluster("a_deployment_runs", "na-deploy").await else {
        return;
    };
    let script = "mkdir -p /www && echo hello-from-$(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www";
    k.server
        .kubectl(&[
            "create",
            "deployment",
            "web",
            "--image=busybox:1.36",
            "--replicas=2",
            "--",
            "sh",
            "-c",
            script,
        ])
        .expect("create deployment");
    let pods: Api<Pod> = Api::namespaced(k.client.clone(), "default");
    let ips: Vec<(String, String)> = within(READY_S, "two web pods Running with pod IPs", async {
        loop {
            let list = pods
                .list(&kube::api::ListParams::default().labels("app=web"))
                .await
                .expect("list");
            let running: Vec<(String, String)> = list
                .items
                .iter()
                .filter(|p| phase(p) == "Running" && ready(p))
                .filter_map(|p| {
                    Some((p.metadata.name.clone()?, p.status.as_ref()?.pod_ip.clone()?))
                })
                .collect();
            if running.len() == 2 {
                return running;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    assert_ne!(ips[0].1, ips[1].1, "pods have distinct IPs");
    // A third pod fetches each web pod's page over the pod network.
    let cmd = ips
        .iter()
        .map(|(name, ip)| format!("wget -qO- http://{ip}:8080/ | grep -q hello-from-{name}"))
        .collect::<Vec<_>>()
        .join(" && ");
    create(&k.client, busybox("client", &k.node, "Never", &cmd)).await;
    let p = wait_pod(
        &k.client,
        "client",
        READY_S,
        "the client pod finishes",
        |p| matches!(phase(p), "Succeeded" | "Failed"),
    )
    .await;
    assert_eq!(
        phase(&p),
        "Succeeded",
        "the client reached both pods: {:?}",
        p.status
    );
}

#[tokio::test]
async fn a_failing_liveness_probe_restarts_the_container() {
    let Some(k) = cluster("a_failing_liveness_probe", "na-liveness").await else {
        return;
    };
    let mut p = busybox(
        "live",
        &k.node,
        "Always",
        "touch /tmp/healthy; sleep 4; rm /tmp/healthy; sleep 600",
    );
    p["spec"]["containers"][0]["livenessProbe"] = json!({
        "exec": {"command": ["cat", "/tmp/healthy"]},
        "periodSeconds": 1, "failureThreshold": 1, "initialDelaySeconds": 1,
    });
    create(&k.client, p).await;
    let first = wait_pod(&k.client, "live", READY_S, "the pod runs", |p| {
        phase(p) == "Running"
    })
    .await;
    let first_id = container_id(&first);
    let p = wait_pod(
        &k.client,
        "live",
        READY_S,
        "the liveness failure restarts the container",
        |p| restarts(p) >= 1,
    )
    .await;
    let cs = &p
        .status
        .as_ref()
        .expect("status")
        .container_statuses
        .as_ref()
        .expect("statuses")[0];
    assert!(
        cs.last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .is_some(),
        "lastState holds the killed instance: {cs:?}"
    );
    let p = wait_pod(
        &k.client,
        "live",
        READY_S,
        "the restarted container runs",
        |p| phase(p) == "Running" && container_id(p) != first_id && ready(p),
    )
    .await;
    assert!(restarts(&p) >= 1);
}

#[tokio::test]
async fn a_failing_readiness_probe_takes_the_pod_out_of_the_services_endpoints() {
    let Some(k) = cluster("a_failing_readiness_probe", "na-ready").await else {
        return;
    };
    // The container turns itself unready when the test drops a file into its hostPath volume.
    let signal = k.server.data_dir.join("rdy-signal");
    std::fs::create_dir_all(&signal).expect("signal dir");
    let mut p = busybox(
        "rdy",
        &k.node,
        "Always",
        "touch /tmp/ready; while [ ! -e /signal/unready ]; do sleep 0.5; done; rm /tmp/ready; sleep 600",
    );
    p["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "signal", "mountPath": "/signal"}]);
    p["spec"]["volumes"] = json!([{"name": "signal", "hostPath": {"path": signal.display().to_string(), "type": "Directory"}}]);
    p["spec"]["containers"][0]["readinessProbe"] = json!({
        "exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 1, "failureThreshold": 1,
    });
    p["spec"]["containers"][0]["ports"] = json!([{"containerPort": 8080}]);
    create(&k.client, p).await;
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "rdy"},
        "spec": {"selector": {"app": "rdy"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }))
    .expect("service");
    Api::<Service>::namespaced(k.client.clone(), "default")
        .create(&PostParams::default(), &svc)
        .await
        .expect("service");
    let running = wait_pod(&k.client, "rdy", READY_S, "the pod becomes ready", ready).await;
    let ip = running.status.and_then(|s| s.pod_ip).expect("pod IP");
    let eps: Api<Endpoints> = Api::namespaced(k.client.clone(), "default");
    let addrs = |e: &Endpoints, not_ready: bool| -> Vec<String> {
        e.subsets
            .iter()
            .flatten()
            .flat_map(|s| {
                if not_ready {
                    s.not_ready_addresses.clone()
                } else {
                    s.addresses.clone()
                }
                .unwrap_or_default()
            })
            .map(|a| a.ip)
            .collect()
    };
    within(READY_S, "the ready pod is in the endpoints", async {
        while !eps
            .get_opt("rdy")
            .await
            .ok()
            .flatten()
            .is_some_and(|e| addrs(&e, false).contains(&ip))
        {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    // The probe starts failing: the file goes.
    std::fs::write(signal.join("unready"), b"").expect("signal");
    wait_pod(&k.client, "rdy", READY_S, "the pod turns unready", |p| {
        !ready(p)
    })
    .await;
    within(
        READY_S,
        "the unready pod leaves the endpoints' ready addresses",
        async {
            while !eps
                .get_opt("rdy")
                .await
                .ok()
                .flatten()
                .is_some_and(|e| !addrs(&e, false).contains(&ip) && addrs(&e, true).contains(&ip))
            {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_jobs_pod_exits_zero_and_the_job_completes() {
    let Some(k) = cluster("a_jobs_pod_exits_zero", "na-job").await else {
        return;
    };
    let job: Job = serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once"},
        "spec": {"template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox:1.36", "command": ["sh", "-c", "echo done; exit 0"]}],
        }}},
    }))
    .expect("job");
    let jobs: Api<Job> = Api::namespaced(k.client.clone(), "default");
    jobs.create(&PostParams::default(), &job)
        .await
        .expect("job");
    within(READY_S, "the Job completes", async {
        loop {
            let j = jobs.get("once").await.expect("job");
            let st = j.status.unwrap_or_default();
            if st.succeeded == Some(1)
                && st
                    .conditions
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Complete" && c.status == "True")
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn deleting_a_pod_stops_its_containers_within_the_grace_period() {
    let Some(k) = cluster("deleting_a_pod", "na-delete").await else {
        return;
    };
    // PID 1 ignores SIGTERM: the runtime must SIGKILL it when the grace period ends.
    let mut p = busybox("stubborn", &k.node, "Always", "sleep 600");
    p["spec"]["terminationGracePeriodSeconds"] = json!(3);
    create(&k.client, p).await;
    let running = wait_pod(&k.client, "stubborn", READY_S, "the pod runs", |p| {
        phase(p) == "Running"
    })
    .await;
    let id = container_id(&running)
        .trim_start_matches("containerd://")
        .to_string();
    let pods: Api<Pod> = Api::namespaced(k.client.clone(), "default");
    let started = Instant::now();
    pods.delete("stubborn", &DeleteParams::default())
        .await
        .expect("delete");
    within(
        30,
        "the pod is removed after its containers stopped",
        async {
            while pods.get_opt("stubborn").await.ok().flatten().is_some() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        },
    )
    .await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2_500),
        "the grace period was given: {took:?}"
    );
    assert!(
        took <= Duration::from_secs(3 + 10),
        "stopped within the grace period (plus slack): {took:?}"
    );
    let out = std::process::Command::new("ctr")
        .args([
            "--address",
            &k.socket.display().to_string(),
            "-n",
            "k8s.io",
            "tasks",
            "ls",
            "-q",
        ])
        .output()
        .expect("ctr");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(&id),
        "the container's task is gone"
    );
}

#[tokio::test]
async fn a_restarted_node_agent_leaves_running_containers_alone_and_reconciles() {
    let Some(mut k) = cluster("a_restarted_node_agent", "na-restart").await else {
        return;
    };
    create(&k.client, busybox("keep", &k.node, "Always", "sleep 600")).await;
    create(
        &k.client,
        busybox(
            "drop",
            &k.node,
            "Always",
            "trap 'exit 0' TERM; sleep 600 & wait",
        ),
    )
    .await;
    let keep = wait_pod(&k.client, "keep", READY_S, "keep runs", |p| {
        phase(p) == "Running"
    })
    .await;
    wait_pod(&k.client, "drop", READY_S, "drop runs", |p| {
        phase(p) == "Running"
    })
    .await;
    k.agent.kill9().expect("kill the agent");
    // While the agent is down: one pod is deleted, one is added.
    let pods: Api<Pod> = Api::namespaced(k.client.clone(), "default");
    pods.delete("drop", &DeleteParams::default())
        .await
        .expect("delete");
    create(&k.client, busybox("late", &k.node, "Always", "sleep 600")).await;
    k.agent = k
        .server
        .node_agent(&k.node, &k.socket)
        .expect("restart the agent");
    wait_pod(
        &k.client,
        "late",
        READY_S,
        "the pod created while the agent was down runs",
        |p| phase(p) == "Running",
    )
    .await;
    within(
        READY_S,
        "the pod deleted while the agent was down is finished",
        async {
            while pods.get_opt("drop").await.ok().flatten().is_some() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        },
    )
    .await;
    let after = wait_pod(&k.client, "keep", 10, "keep", |_| true).await;
    assert_eq!(
        container_id(&after),
        container_id(&keep),
        "the running container was adopted, not replaced"
    );
    assert_eq!(restarts(&after), 0);
}

#[tokio::test]
async fn a_missing_image_is_reported_as_err_image_pull_then_image_pull_back_off() {
    let Some(k) = cluster("a_missing_image", "na-image").await else {
        return;
    };
    let mut p = busybox("noimg", &k.node, "Always", "true");
    p["spec"]["containers"][0]["image"] = json!("registry.invalid/nothing/here:1.0");
    create(&k.client, p).await;
    let reason = |p: &Pod| -> String {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.first())
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.reason.clone())
            .unwrap_or_default()
    };
    let mut seen = std::collections::BTreeSet::new();
    let pods: Api<Pod> = Api::namespaced(k.client.clone(), "default");
    within(READY_S, "ErrImagePull then ImagePullBackOff", async {
        loop {
            if let Ok(p) = pods.get("noimg").await {
                seen.insert(reason(&p));
                assert_eq!(phase(&p), "Pending");
            }
            if seen.contains("ErrImagePull") && seen.contains("ImagePullBackOff") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    // imagePullPolicy Never on a missing image.
    let mut p = busybox("never", &k.node, "Always", "true");
    p["spec"]["containers"][0]["image"] = json!("registry.invalid/nothing/here:1.0");
    p["spec"]["containers"][0]["imagePullPolicy"] = json!("Never");
    create(&k.client, p).await;
    wait_pod(&k.client, "never", READY_S, "ErrImageNeverPull", |p| {
        reason(p) == "ErrImageNeverPull"
    })
    .await;
}

#[tokio::test]
async fn config_maps_secrets_and_the_downward_api_reach_pods_as_files_and_env() {
    let Some(k) = cluster("config_maps_secrets", "na-config").await else {
        return;
    };
    let cms: Api<ConfigMap> = Api::namespaced(k.client.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "cfg"}, "data": {"key": "v1", "greeting": "hi"}}),
    )
    .expect("cm");
    cms.create(&PostParams::default(), &cm)
        .await
        .expect("configmap");
    let s: Secret = serde_json::from_value(
        json!({"metadata": {"name": "sec"}, "stringData": {"password": "s3cret"}}),
    )
    .expect("secret");
    Api::<Secret>::namespaced(k.client.clone(), "default")
        .create(&PostParams::default(), &s)
        .await
        .expect("secret");
    // The pod checks everything itself, then waits for the ConfigMap update to appear.
    let script = r#"set -e
test "$(cat /etc/config/key)" = v1
test "$(cat /etc/secret/password)" = s3cret
test "$GREETING" = hi
test "$CFG_key" = v1
test "$PASSWORD" = s3cret
test "$POD_NAME" = cfgpod
test "$MY_NODE" = "$EXPECTED_NODE"
test "$EXPANDED" = "pod-cfgpod"
test -n "$KUBERNETES_SERVICE_HOST"
test -s /var/run/secrets/kubernetes.io/serviceaccount/token
test "$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace)" = default
test "$(cat /etc/podinfo/labels)" = 'app="cfgpod"'
echo /scratch-ok > /scratch/f && test "$(cat /scratch/f)" = /scratch-ok
i=0; while [ "$(cat /etc/config/key)" != v2 ]; do i=$((i+1)); [ $i -lt 120 ] || exit 7; sleep 1; done
"#;
    let mut p = busybox("cfgpod", &k.node, "Never", script);
    p["spec"]["containers"][0]["env"] = json!([
        {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}}},
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "MY_NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "EXPECTED_NODE", "value": k.node},
        {"name": "EXPANDED", "value": "pod-$(POD_NAME)"},
    ]);
    p["spec"]["containers"][0]["envFrom"] =
        json!([{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}]);
    p["spec"]["containers"][0]["volumeMounts"] = json!([
        {"name": "config", "mountPath": "/etc/config"},
        {"name": "secret", "mountPath": "/etc/secret"},
        {"name": "podinfo", "mountPath": "/etc/podinfo"},
        {"name": "scratch", "mountPath": "/scratch"},
    ]);
    p["spec"]["volumes"] = json!([
        {"name": "config", "configMap": {"name": "cfg"}},
        {"name": "secret", "secret": {"secretName": "sec"}},
        {"name": "podinfo", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
        {"name": "scratch", "emptyDir": {}},
    ]);
    create(&k.client, p).await;
    wait_pod(
        &k.client,
        "cfgpod",
        READY_S,
        "the pod runs its checks",
        |p| phase(p) == "Running",
    )
    .await;
    cms.patch(
        "cfg",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"key": "v2"}})),
    )
    .await
    .expect("update the configmap");
    let p = wait_pod(&k.client, "cfgpod", READY_S, "the pod finishes", |p| {
        matches!(phase(p), "Succeeded" | "Failed")
    })
    .await;
    let code = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref())
        .map(|t| t.exit_code);
    assert_eq!(
        phase(&p),
        "Succeeded",
        "every check passed and the update appeared (exit code {code:?})"
    );
}

/// The kubectl binaries named `kubectl.1.NN` for these minors (skipping missing ones).
fn kubectls(minors: &[&str]) -> Vec<(String, String)> {
    Server::kubectl_binaries()
        .into_iter()
        .filter(|(label, _)| minors.contains(&label.as_str()))
        .collect()
}

fn kubectl_stdin(server: &Server, bin: &str, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(bin)
        .arg("--kubeconfig")
        .arg(server.kubeconfig())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("kubectl output")
}

/// kubectl 1.30+ tries WebSocket (`v5.channel.k8s.io`) first and falls back to SPDY when
/// the upgrade fails, which the plain checks above cannot tell apart. With `-v=7` it logs the
/// negotiated subprotocol, and a "RemoteCommand fallback" line when it gave up on WebSocket:
/// exec, exec -i (stdin's end travels as v5's CLOSE signal), an exit code and attach all go
/// over WebSocket, translated to SPDY by the node agent.
fn kubectl_1_33_execs_over_websocket(server: &Server, bin: &str) {
    let websocket_only = |what: &str, stderr: &[u8]| {
        let stderr = String::from_utf8_lossy(stderr);
        assert!(
            !stderr.to_lowercase().contains("fallback"),
            "kubectl 1.33 {what} falls back to SPDY (the WebSocket upgrade failed): {stderr}"
        );
        assert!(
            stderr.contains("v5.channel.k8s.io"),
            "kubectl 1.33 {what} negotiates v5.channel.k8s.io: {stderr}"
        );
    };
    let out = server
        .kubectl_output(
            bin,
            &["exec", "-v=7", "shell", "--", "cat", "/etc/config/key"],
        )
        .expect("exec -v=7");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "value-from-configmap");
    websocket_only("exec", &out.stderr);
    let out = kubectl_stdin(
        server,
        bin,
        &[
            "exec",
            "-v=7",
            "-i",
            "shell",
            "--",
            "sh",
            "-c",
            "cat; echo :end",
        ],
        "typed-in\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "typed-in\n:end\n");
    websocket_only("exec -i", &out.stderr);
    let out = server
        .kubectl_output(bin, &["exec", "-v=7", "shell", "--", "sh", "-c", "exit 3"])
        .expect("exec");
    assert_eq!(out.status.code(), Some(3), "the exit code over WebSocket");
    websocket_only("exec of exit 3", &out.stderr);
    // A megabyte of stdout (many SPDY data frames, many WebSocket messages) and a stderr line.
    let out = server
        .kubectl_output(
            bin,
            &[
                "exec",
                "-v=7",
                "shell",
                "--",
                "sh",
                "-c",
                "head -c 1000000 /dev/zero | tr '\\0' x; echo on-stderr >&2",
            ],
        )
        .expect("exec");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), 1_000_000, "every byte of stdout arrives");
    assert!(
        out.stdout.iter().all(|b| *b == b'x'),
        "stdout arrives intact"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .any(|l| l == "on-stderr"),
        "stderr arrives on its own channel: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    websocket_only("exec with a megabyte of output", &out.stderr);
    // attach: the container's own output streams over WebSocket until kubectl leaves.
    let mut attach = std::process::Command::new(bin)
        .arg("--kubeconfig")
        .arg(server.kubeconfig())
        .args(["attach", "-v=7", "shell"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl attach");
    let stdout = attach.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(30));
    let _ = attach.kill();
    let out = attach.wait_with_output().expect("kubectl attach output");
    let line = line.unwrap_or_else(|_| {
        panic!(
            "kubectl 1.33 attach shows the container's output: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(line.starts_with("line-"), "{line:?}");
    websocket_only("attach", &out.stderr);
}

#[tokio::test]
async fn kubectl_1_27_and_1_33_read_logs_exec_into_a_pod_and_forward_a_port() {
    let Some(k) = cluster("kubectl_logs_exec", "na-kubectl").await else {
        return;
    };
    let cms: Api<ConfigMap> = Api::namespaced(k.client.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "cfg"}, "data": {"key": "value-from-configmap"}}),
    )
    .expect("cm");
    cms.create(&PostParams::default(), &cm)
        .await
        .expect("configmap");
    let script = "mkdir -p /www && echo served-by-shell > /www/index.html && httpd -p 8080 -h /www && i=0; while true; do echo line-$i; i=$((i+1)); sleep 0.5; done";
    let mut p = busybox("shell", &k.node, "Always", script);
    p["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "cfg", "mountPath": "/etc/config"}]);
    p["spec"]["volumes"] = json!([{"name": "cfg", "configMap": {"name": "cfg"}}]);
    create(&k.client, p).await;
    wait_pod(&k.client, "shell", READY_S, "the pod runs", |p| {
        phase(p) == "Running" && ready(p)
    })
    .await;
    let bins = kubectls(&["1.27", "1.33"]);
    assert_eq!(
        bins.len(),
        2,
        "kubectl 1.27 and 1.33 are installed: {bins:?}"
    );
    // The pod prints a line every 0.5 s; wait for a few before reading the tail.
    let pods: Api<Pod> = Api::namespaced(k.client.clone(), "default");
    within(30, "the pod has logged three lines", async {
        while pods
            .logs("shell", &Default::default())
            .await
            .map_or(0, |l| l.lines().count())
            < 3
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    for (label, bin) in &bins {
        let logs = k
            .server
            .kubectl_with(bin, &["logs", "shell", "--tail=2"])
            .expect("logs");
        assert_eq!(
            logs.lines().count(),
            2,
            "kubectl {label} logs --tail=2: {logs:?}"
        );
        assert!(
            logs.lines().all(|l| l.starts_with("line-")),
            "kubectl {label}: {logs:?}"
        );
        let out = k
            .server
            .kubectl_with(bin, &["exec", "shell", "--", "cat", "/etc/config/key"])
            .expect("exec");
        assert_eq!(out, "value-from-configmap", "kubectl {label} exec");
        let out = kubectl_stdin(
            &k.server,
            bin,
            &["exec", "-i", "shell", "--", "sh", "-c", "cat; echo :end"],
            "typed-in\n",
        );
        assert!(
            out.status.success(),
            "kubectl {label} exec -i: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "typed-in\n:end\n",
            "kubectl {label} exec -i"
        );
        let out = k
            .server
            .kubectl_output(bin, &["exec", "shell", "--", "sh", "-c", "exit 3"])
            .expect("exec");
        assert_eq!(
            out.status.code(),
            Some(3),
            "kubectl {label} exec passes the exit code on"
        );
        if label == "1.33" {
            kubectl_1_33_execs_over_websocket(&k.server, bin);
        }
    }
    // Following a log: new lines arrive while the command runs.
    let mut follow = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(k.server.kubeconfig())
        .args(["logs", "-f", "shell", "--tail=1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl logs -f");
    let stdout = follow.stdout.take().expect("stdout");
    let lines = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .take(4)
            .collect::<Result<Vec<_>, _>>()
    });
    let lines = within(30, "kubectl logs -f streams new lines", lines)
        .await
        .expect("join")
        .expect("lines");
    let _ = follow.kill();
    let _ = follow.wait();
    let n: Vec<u64> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("line-")?.parse().ok())
        .collect();
    assert_eq!(n.len(), 4, "{lines:?}");
    assert!(
        n.windows(2).all(|w| w[1] == w[0] + 1),
        "consecutive lines: {lines:?}"
    );
    // Port-forward to the pod's web server.
    let mut pf = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(k.server.kubeconfig())
        .args(["port-forward", "pod/shell", ":8080"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl port-forward");
    let stdout = pf.stdout.take().expect("stdout");
    // The reader keeps draining kubectl's stdout (a closed pipe would kill it).
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stdout).lines();
        if let Some(Ok(l)) = lines.next() {
            let _ = tx.send(l);
        }
        for _ in lines {}
    });
    let line = within(30, "kubectl port-forward listens", rx)
        .await
        .expect("first line");
    let port: u16 = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("a local port in {line:?}"));
    let body = within(30, "a request through the forwarded port", async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect");
            s.write_all(b"GET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .expect("write");
            // kubectl may reset the local connection once the pod side closed: keep what came.
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while let Ok(n) = s.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = String::from_utf8_lossy(&buf).into_owned();
            if body.contains("served-by-shell") {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    let _ = pf.kill();
    let _ = pf.wait();
    assert!(body.contains("served-by-shell"), "{body}");
    // RBAC: a user without pods/exec and pods/log is refused.
    let kc = k.server.data_dir.join("nobody.kubeconfig");
    let out = k
        .server
        .run_tool(&["user", "add", "nobody", "--out", &kc.display().to_string()])
        .expect("user add");
    assert!(out.status.success());
    for args in [&["exec", "shell", "--", "true"][..], &["logs", "shell"][..]] {
        let out = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kc)
            .args(args)
            .output()
            .expect("kubectl");
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("forbidden"),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
