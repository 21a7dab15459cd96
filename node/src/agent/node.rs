//! The node's own objects: the Node (registered once, its status re-posted every
//! [`AgentConfig::status_report_interval`](super::AgentConfig) or when a condition changes)
//! and its Lease in `kube-node-lease` (renewed every
//! [`AgentConfig::heartbeat_interval`](super::AgentConfig)).

use std::collections::HashMap;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::AgentConfig;
use super::machine::Machine;
use crate::simulate::objects::{micro_time, time};

/// The namespace of node Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// How long a Lease holds without renewal (kubelet's `nodeLeaseDurationSeconds`), in seconds.
pub const LEASE_DURATION_S: i32 = 40;
/// Node annotation: the SHA-256 (lowercase hex) of the agent's serving certificate, so the
/// API server can pin it when it proxies logs and exec to this node.
pub const SERVING_CERT_ANNOTATION: &str = "logbook.dev/serving-cert-sha256";

/// What the runtime said about itself (nodeInfo, Ready).
#[derive(Clone, Debug, Default)]
pub struct RuntimeInfo {
    pub name: String,
    pub version: String,
    /// Both the runtime and its network report ready (CRI `Status`).
    pub ready: bool,
    /// Why not, when not.
    pub message: String,
}

/// Condition statuses and when each last changed.
#[derive(Default)]
pub struct Transitions(HashMap<&'static str, (&'static str, Timestamp)>);

impl Transitions {
    fn since(&mut self, kind: &'static str, status: &'static str, now: Timestamp) -> Timestamp {
        let e = self.0.entry(kind).or_insert((status, now));
        if e.0 != status {
            *e = (status, now);
        }
        e.1
    }
    /// The statuses, to tell whether anything changed since the last report.
    pub fn statuses(&self) -> Vec<(&'static str, &'static str)> {
        let mut v: Vec<_> = self.0.iter().map(|(k, (s, _))| (*k, *s)).collect();
        v.sort_unstable();
        v
    }
}

/// The Node object as registered (metadata and spec).
pub fn node_object(cfg: &AgentConfig, cert_sha256: &str) -> Value {
    let arch = if std::env::consts::ARCH == "x86_64" {
        "amd64"
    } else if std::env::consts::ARCH == "aarch64" {
        "arm64"
    } else {
        std::env::consts::ARCH
    };
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": cfg.node_name,
            "labels": {
                "kubernetes.io/hostname": cfg.node_name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": arch,
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": arch,
            },
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                SERVING_CERT_ANNOTATION: cert_sha256,
            },
        },
        "spec": {},
    })
}

fn condition(
    t: &mut Transitions,
    kind: &'static str,
    on: bool,
    (reason_on, msg_on): (&str, &str),
    (reason_off, msg_off): (&str, &str),
    now: Timestamp,
) -> Value {
    let status = if on { "True" } else { "False" };
    let since = t.since(kind, status, now);
    let (reason, message) = if on {
        (reason_on, msg_on)
    } else {
        (reason_off, msg_off)
    };
    json!({
        "type": kind, "status": status, "reason": reason, "message": message,
        "lastHeartbeatTime": time(now), "lastTransitionTime": time(since),
    })
}

/// The Node's status from the machine and the runtime.
pub fn node_status(
    cfg: &AgentConfig,
    m: &Machine,
    rt: &RuntimeInfo,
    t: &mut Transitions,
    now: Timestamp,
) -> Value {
    const MI: u64 = 1024 * 1024;
    // kubelet's defaults: 100Mi reserved for eviction, no system/kube reservations.
    let memory_allocatable = m.memory_bytes.saturating_sub(100 * MI);
    let storage_allocatable = m.disk_bytes / 10 * 9;
    let ready_message = if rt.ready {
        "kubelet is posting ready status".to_string()
    } else {
        format!("container runtime is not ready: {}", rt.message)
    };
    json!({
        "capacity": {
            "cpu": m.cpus.to_string(),
            "memory": format!("{}Ki", m.memory_bytes / 1024),
            "pods": cfg.pods_max.to_string(),
            "ephemeral-storage": format!("{}Ki", m.disk_bytes / 1024),
            "hugepages-1Gi": "0",
            "hugepages-2Mi": "0",
        },
        "allocatable": {
            "cpu": m.cpus.to_string(),
            "memory": format!("{}Ki", memory_allocatable / 1024),
            "pods": cfg.pods_max.to_string(),
            "ephemeral-storage": storage_allocatable.to_string(),
            "hugepages-1Gi": "0",
            "hugepages-2Mi": "0",
        },
        "conditions": [
            condition(t, "MemoryPressure", m.memory_pressure(),
                ("KubeletHasInsufficientMemory", "kubelet has insufficient memory available"),
                ("KubeletHasSufficientMemory", "kubelet has sufficient memory available"), now),
            condition(t, "DiskPressure", m.disk_pressure(),
                ("KubeletHasDiskPressure", "kubelet has disk pressure"),
                ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"), now),
            condition(t, "PIDPressure", m.pid_pressure(),
                ("KubeletHasInsufficientPID", "kubelet has insufficient PID available"),
                ("KubeletHasSufficientPID", "kubelet has sufficient PID available"), now),
            condition(t, "Ready", rt.ready,
                ("KubeletReady", &ready_message),
                ("KubeletNotReady", &ready_message), now),
        ],
        "addresses": [
            {"type": "InternalIP", "address": cfg.node_ip},
            {"type": "Hostname", "address": cfg.node_name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": cfg.port}},
        "nodeInfo": {
            "machineID": m.machine_id,
            "systemUUID": m.machine_id,
            "bootID": m.boot_id,
            "kernelVersion": m.kernel,
            "osImage": m.os_image,
            "containerRuntimeVersion": format!("{}://{}", rt.name, rt.version),
            "kubeletVersion": cfg.kubelet_version,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": if std::env::consts::ARCH == "x86_64" { "amd64" } else { std::env::consts::ARCH },
        },
    })
}

fn lease_object(name: &str, node_uid: &str, now: Timestamp) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "namespace": LEASE_NAMESPACE,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": node_uid}],
        },
        "spec": {
            "holderIdentity": name,
            "leaseDurationSeconds": LEASE_DURATION_S,
            "renewTime": micro_time(now),
        },
    })
}

fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// Creates (or adopts) the Node and its Lease; the Node's uid.
///
/// # Errors
/// The API refused or could not be reached.
pub async fn register(
    client: &kube::Client,
    cfg: &AgentConfig,
    cert_sha256: &str,
    status: Value,
) -> Result<String, kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let obj = node_object(cfg, cert_sha256);
    let node: Node = serde_json::from_value(obj.clone()).map_err(kube::Error::SerdeError)?;
    let node = match nodes.create(&PostParams::default(), &node).await {
        Ok(n) => n,
        Err(e) if status_code(&e) == Some(409) => {
            // Re-registering (an agent restart): refresh labels and the pinned certificate.
            let patch = json!({"metadata": {"labels": obj["metadata"]["labels"], "annotations": obj["metadata"]["annotations"]}});
            nodes
                .patch(
                    &cfg.node_name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?
        }
        Err(e) => return Err(e),
    };
    let uid = node.metadata.uid.unwrap_or_default();
    nodes
        .patch_status(
            &cfg.node_name,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": status })),
        )
        .await?;
    renew_lease(client, &cfg.node_name, &uid).await?;
    Ok(uid)
}

/// Renews the Lease, creating it when missing.
///
/// # Errors
/// The API refused or could not be reached.
pub async fn renew_lease(client: &kube::Client, name: &str, uid: &str) -> Result<(), kube::Error> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let now = Timestamp::now();
    let patch = json!({"spec": {"renewTime": micro_time(now), "holderIdentity": name, "leaseDurationSeconds": LEASE_DURATION_S}});
    match leases
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if status_code(&e) == Some(404) => {
            let lease: Lease = serde_json::from_value(lease_object(name, uid, now))
                .map_err(kube::Error::SerdeError)?;
            leases
                .create(&PostParams::default(), &lease)
                .await
                .map(drop)
        }
        Err(e) => Err(e),
    }
}

/// Posts the Node's status.
///
/// # Errors
/// The API refused or could not be reached (404: the Node was deleted).
pub async fn post_status(
    client: &kube::Client,
    name: &str,
    status: Value,
) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": status })),
        )
        .await
        .map(drop)
}

/// Whether an error means the object is gone.
pub fn is_not_found(e: &kube::Error) -> bool {
    status_code(e) == Some(404)
}

pub type Shared<T> = Arc<std::sync::Mutex<T>>;
