//! Every object and status the simulation writes, as pure functions of the config, a node
//! index and the time: node names, addresses and CIDRs, the Node, its status, its Lease, a
//! pod's status, image and container IDs, and the per-node pod IP pool.

use std::net::Ipv4Addr;

use jiff::Timestamp;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::lifecycle::{Exit, Life, SimPod};
use super::{Error, Result, SIMULATED_LABEL, SimConfig};

/// Node `i`'s InternalIP is `NODE_IP_BASE + i` (172.16.0.10 upward: unique for every node).
const NODE_IP_BASE: u32 = u32::from_be_bytes([172, 16, 0, 10]);
/// Node `i`'s podCIDR is the `/24` at `POD_CIDR_BASE + i × 256` (10.64.0.0/24 upward).
const POD_CIDR_BASE: u32 = u32::from_be_bytes([10, 64, 0, 0]);
/// The most nodes one simulation registers: as many `/24`s as fit from 10.64.0.0 to
/// 10.255.255.0, so every node's podCIDR is unique and inside 10.0.0.0/8.
pub const SIM_NODES_MAX: usize = 192 * 256;
/// Pod IPs are host octets `POD_IP_HOST_MIN..=POD_IP_HOST_MAX` of the node's `/24` (.1 is
/// the node's bridge, .255 the broadcast address): 253 addresses, more than `pods 110`.
const POD_IP_HOST_MIN: u8 = 2;
const POD_IP_HOST_MAX: u8 = 254;

pub(super) fn check_config(cfg: &SimConfig) -> Result<()> {
    if cfg.nodes > SIM_NODES_MAX {
        return Err(Error::Config(format!(
            "{} nodes asked, at most {SIM_NODES_MAX} fit the pod CIDR range",
            cfg.nodes
        )));
    }
    if cfg.zones.is_empty() {
        return Err(Error::Config("zones must name at least one zone".into()));
    }
    if cfg.heartbeat_interval.is_zero() || cfg.node_status_report_interval.is_zero() {
        return Err(Error::Config(
            "heartbeat_interval and node_status_report_interval must be positive".into(),
        ));
    }
    if cfg.name_prefix.is_empty() {
        return Err(Error::Config("name_prefix must not be empty".into()));
    }
    Ok(())
}

/// `<prefix>-<i>`, `i` zero-padded to the width of the largest index (at least 4 digits),
/// so names sort in index order.
pub(super) fn node_name(cfg: &SimConfig, i: usize) -> String {
    let width = cfg.nodes.saturating_sub(1).to_string().len().max(4);
    format!("{}-{i:0width$}", cfg.name_prefix)
}

pub(super) fn node_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(NODE_IP_BASE.wrapping_add(i as u32))
}

/// The network address of node `i`'s `/24`.
pub(super) fn pod_network(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(POD_CIDR_BASE.wrapping_add((i as u32) << 8))
}

pub(super) fn pod_cidr(i: usize) -> String {
    format!("{}/24", pod_network(i))
}

/// Kubernetes `Time`: RFC 3339, whole seconds, UTC.
pub(crate) fn time(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Kubernetes `MicroTime` (Lease renewTime): six fractional digits.
pub(crate) fn micro_time(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn hex_digest(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A stable UUID-shaped ID derived from `parts` (machineID, systemUUID, bootID).
fn derived_uuid(parts: &[&str]) -> String {
    let h = hex_digest(parts);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The Node as registered (metadata and spec; status is written through `nodes/status`).
pub(super) fn node_object(cfg: &SimConfig, i: usize) -> Value {
    let name = node_name(cfg, i);
    let zone = &cfg.zones[i % cfg.zones.len()];
    let cidr = pod_cidr(i);
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": cfg.instance_type,
                "topology.kubernetes.io/zone": zone,
                "topology.kubernetes.io/region": cfg.region,
                SIMULATED_LABEL.0: SIMULATED_LABEL.1,
            },
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "sim.logbook.dev/simulated": "true",
            },
        },
        "spec": {
            "podCIDR": cidr,
            "podCIDRs": [cidr],
            "providerID": format!("logbook-sim://{name}"),
        },
    })
}

fn condition(
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
    since: Timestamp,
) -> Value {
    json!({
        "type": kind, "status": status, "reason": reason, "message": message,
        "lastHeartbeatTime": time(now), "lastTransitionTime": time(since),
    })
}

/// The Node's status at `now`; `boot` is when the simulation started (transition times).
pub(super) fn node_status(cfg: &SimConfig, i: usize, now: Timestamp, boot: Timestamp) -> Value {
    let name = node_name(cfg, i);
    const GIB_KIB: u64 = 1024 * 1024;
    let memory_allocatable_kib = (cfg.memory_gib * GIB_KIB).saturating_sub(GIB_KIB + 100 * 1024);
    let storage_allocatable_bytes = cfg.ephemeral_storage_gib * GIB_KIB * 1024 / 10 * 9;
    let boot_id = derived_uuid(&[&name, "boot", &time(boot)]);
    json!({
        "capacity": {
            "cpu": format!("{}m", cfg.cpu_millicores),
            "memory": format!("{}Gi", cfg.memory_gib),
            "pods": cfg.pods_per_node_max.to_string(),
            "ephemeral-storage": format!("{}Gi", cfg.ephemeral_storage_gib),
            "hugepages-1Gi": "0",
            "hugepages-2Mi": "0",
        },
        "allocatable": {
            "cpu": format!("{}m", cfg.cpu_millicores.saturating_sub(100)),
            "memory": format!("{memory_allocatable_kib}Ki"),
            "pods": cfg.pods_per_node_max.to_string(),
            "ephemeral-storage": storage_allocatable_bytes.to_string(),
            "hugepages-1Gi": "0",
            "hugepages-2Mi": "0",
        },
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available", now, boot),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure", now, boot),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available", now, boot),
            condition("Ready", "True", "KubeletReady", "kubelet is posting ready status", now, boot),
        ],
        "addresses": [
            {"type": "InternalIP", "address": node_ip(i).to_string()},
            {"type": "Hostname", "address": name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "machineID": hex_digest(&[&name, "machine"])[..32].to_string(),
            "systemUUID": derived_uuid(&[&name, "system"]),
            "bootID": boot_id,
            "kernelVersion": "6.8.0-logbook-sim",
            "osImage": "Logbook simulated node",
            "containerRuntimeVersion": format!("logbook-sim://{}", env!("CARGO_PKG_VERSION")),
            "kubeletVersion": cfg.kubelet_version,
            "kubeProxyVersion": cfg.kubelet_version,
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    })
}

/// Node `name`'s Lease in `kube-node-lease`, owned by the Node (as kubelet writes it).
pub(super) fn lease_object(
    name: &str,
    node_uid: &str,
    lease_seconds: i32,
    now: Timestamp,
) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "namespace": "kube-node-lease",
            "ownerReferences": [{
                "apiVersion": "v1", "kind": "Node", "name": name, "uid": node_uid,
            }],
        },
        "spec": {
            "holderIdentity": name,
            "leaseDurationSeconds": lease_seconds,
            "renewTime": micro_time(now),
        },
    })
}

/// `docker.io/library/nginx@sha256:<64 hex>`: the repository as a runtime reports it, with
/// a digest derived from the image reference (stable for equal references).
pub(super) fn image_id(image: &str) -> String {
    let without_digest = image.split('@').next().unwrap_or(image);
    // A tag is a `:` after the last `/` (a `:` before it is a registry port).
    let last_slash = without_digest.rfind('/').map_or(0, |p| p + 1);
    let repo = match without_digest[last_slash..].find(':') {
        Some(p) => &without_digest[..last_slash + p],
        None => without_digest,
    };
    let first = repo.split('/').next().unwrap_or(repo);
    let is_registry =
        repo.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let full = if is_registry {
        repo.to_string()
    } else if repo.contains('/') {
        format!("docker.io/{repo}")
    } else {
        format!("docker.io/library/{repo}")
    };
    format!("{full}@sha256:{}", hex_digest(&[image]))
}

/// `logbook-sim://<64 hex>`, unique per pod, container and restart.
pub(super) fn container_id(pod_uid: &str, container: &str, restarts: u32) -> String {
    format!(
        "logbook-sim://{}",
        hex_digest(&[pod_uid, container, &restarts.to_string()])
    )
}

/// The pod IPs of one node: a bitmap of the host octets of its `/24`.
#[derive(Clone, Debug, Default)]
pub(super) struct IpPool {
    used: [u64; 4],
    next: u8,
}

impl IpPool {
    fn is_used(&self, host: u8) -> bool {
        self.used[usize::from(host / 64)] & (1 << (host % 64)) != 0
    }

    fn set(&mut self, host: u8, on: bool) {
        let (w, b) = (usize::from(host / 64), host % 64);
        if on {
            self.used[w] |= 1 << b;
        } else {
            self.used[w] &= !(1 << b);
        }
    }

    /// A free host octet, searching round-robin from the last one given (so a released
    /// address is not reused at once); `None` when all are taken.
    pub(super) fn allocate(&mut self) -> Option<u8> {
        let span = POD_IP_HOST_MAX - POD_IP_HOST_MIN + 1;
        for k in 0..span {
            let host = POD_IP_HOST_MIN + (self.next.wrapping_add(k)) % span;
            if !self.is_used(host) {
                self.set(host, true);
                self.next = (host - POD_IP_HOST_MIN + 1) % span;
                return Some(host);
            }
        }
        None
    }

    /// Marks `host` taken (an address adopted from a pod's status); false if it already was.
    pub(super) fn reserve(&mut self, host: u8) -> bool {
        if !(POD_IP_HOST_MIN..=POD_IP_HOST_MAX).contains(&host) || self.is_used(host) {
            return false;
        }
        self.set(host, true);
        true
    }

    pub(super) fn release(&mut self, host: u8) {
        self.set(host, false);
    }
}

/// The host octet of `ip` if it lies in node `i`'s `/24`.
pub(super) fn host_in_node_cidr(i: usize, ip: Ipv4Addr) -> Option<u8> {
    let net = u32::from(pod_network(i));
    let ip = u32::from(ip);
    (ip & !0xff == net).then_some((ip & 0xff) as u8)
}

fn terminated(pod: &SimPod, container: &str, exit: &Exit) -> Value {
    json!({"terminated": {
        "exitCode": exit.code,
        "reason": if exit.code == 0 { "Completed" } else { "Error" },
        "startedAt": time(exit.started),
        "finishedAt": time(exit.finished),
        "containerID": container_id(&pod.shape.uid, container, exit.restart),
    }})
}

/// The pod's `status` at `now`, as a kubelet would post it (a merge patch body's `status`:
/// every list is whole). `qosClass` is left out so the server's value stays.
pub(super) fn pod_status(
    pod: &SimPod,
    host_ip: Ipv4Addr,
    pod_ip: Option<Ipv4Addr>,
    now: Timestamp,
) -> Value {
    let start = time(pod.start);
    let (phase, ready, ready_since, not_ready_reason) = match &pod.life {
        Life::Running { since } => {
            let ready = pod.all_ready(now);
            let since_ready = pod.ready_at(*since);
            (
                "Running",
                ready,
                if ready { since_ready } else { *since },
                "ContainersNotReady",
            )
        }
        Life::BackOff { .. } => (
            "Running",
            false,
            pod.last.as_ref().map_or(pod.start, |e| e.finished),
            "ContainersNotReady",
        ),
        Life::Done(exit) => (
            if exit.code == 0 {
                "Succeeded"
            } else {
                "Failed"
            },
            false,
            exit.finished,
            "PodCompleted",
        ),
    };
    let ready_condition = |kind: &str| {
        if ready {
            json!({"type": kind, "status": "True", "lastProbeTime": null, "lastTransitionTime": time(ready_since)})
        } else {
            json!({"type": kind, "status": "False", "reason": not_ready_reason, "lastProbeTime": null, "lastTransitionTime": time(ready_since)})
        }
    };
    let true_condition = |kind: &str| json!({"type": kind, "status": "True", "lastProbeTime": null, "lastTransitionTime": start});
    let containers: Vec<Value> = pod
        .shape
        .containers
        .iter()
        .map(|c| {
            let (state, ready, started) = match &pod.life {
                Life::Running { since } => (
                    json!({"running": {"startedAt": time(*since)}}),
                    now >= pod.container_ready_at(c, *since),
                    true,
                ),
                Life::BackOff { until } => {
                    let secs = pod.last.as_ref().map_or(0, |e| until.duration_since(e.finished).as_secs());
                    (
                        json!({"waiting": {"reason": "CrashLoopBackOff", "message": format!("back-off {secs}s restarting failed container={} pod={}", c.name, pod.shape.name)}}),
                        false,
                        false,
                    )
                }
                Life::Done(exit) => (terminated(pod, &c.name, exit), false, false),
            };
            let last_state = match &pod.last {
                Some(exit) => terminated(pod, &c.name, exit),
                None => json!({}),
            };
            json!({
                "name": c.name,
                "image": c.image,
                "imageID": image_id(&c.image),
                "containerID": container_id(&pod.shape.uid, &c.name, pod.restarts),
                "ready": ready,
                "started": started,
                "restartCount": pod.restarts,
                "state": state,
                "lastState": last_state,
            })
        })
        .collect();
    let init: Vec<Value> = pod
        .shape
        .init_containers
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "image": c.image,
                "imageID": image_id(&c.image),
                "containerID": container_id(&pod.shape.uid, &c.name, 0),
                "ready": true,
                "started": false,
                "restartCount": 0,
                "state": {"terminated": {
                    "exitCode": 0, "reason": "Completed", "startedAt": start, "finishedAt": start,
                    "containerID": container_id(&pod.shape.uid, &c.name, 0),
                }},
                "lastState": {},
            })
        })
        .collect();
    let mut status = json!({
        "phase": phase,
        "hostIP": host_ip.to_string(),
        "hostIPs": [{"ip": host_ip.to_string()}],
        "startTime": start,
        "conditions": [
            true_condition("PodReadyToStartContainers"),
            true_condition("Initialized"),
            ready_condition("Ready"),
            ready_condition("ContainersReady"),
            true_condition("PodScheduled"),
        ],
        "containerStatuses": containers,
        "initContainerStatuses": init,
    });
    if let Some(ip) = pod_ip {
        status["podIP"] = json!(ip.to_string());
        status["podIPs"] = json!([{"ip": ip.to_string()}]);
    }
    status
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a test that panics has failed; the message says where

    use super::*;

    fn cfg(nodes: usize) -> SimConfig {
        SimConfig {
            nodes,
            ..SimConfig::default()
        }
    }

    #[test]
    fn node_names_are_zero_padded_to_one_width() {
        assert_eq!(node_name(&cfg(3), 2), "sim-node-0002");
        assert_eq!(node_name(&cfg(1000), 7), "sim-node-0007");
        assert_eq!(node_name(&cfg(20_000), 7), "sim-node-00007");
    }

    #[test]
    fn pod_cidrs_and_node_ips_are_unique_beyond_256_nodes() {
        assert_eq!(pod_cidr(0), "10.64.0.0/24");
        assert_eq!(pod_cidr(257), "10.65.1.0/24");
        assert_eq!(pod_cidr(SIM_NODES_MAX - 1), "10.255.255.0/24");
        assert_eq!(node_ip(0).to_string(), "172.16.0.10");
        assert_eq!(node_ip(300).to_string(), "172.16.1.54");
        let cidrs: std::collections::HashSet<_> = (0..2000).map(pod_cidr).collect();
        assert_eq!(cidrs.len(), 2000);
        assert!(check_config(&cfg(SIM_NODES_MAX + 1)).is_err());
    }

    #[test]
    fn a_node_carries_the_well_known_labels_and_its_zone_round_robin() {
        let c = cfg(5);
        let n = node_object(&c, 4);
        let labels = &n["metadata"]["labels"];
        assert_eq!(labels["kubernetes.io/hostname"], "sim-node-0004");
        assert_eq!(labels["topology.kubernetes.io/zone"], "zone-b");
        assert_eq!(labels["type"], "logbook-simulated");
        assert_eq!(n["spec"]["podCIDRs"], json!(["10.64.4.0/24"]));
        let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(n).unwrap();
        assert_eq!(node.metadata.name.as_deref(), Some("sim-node-0004"));
    }

    #[test]
    fn a_node_status_is_ready_with_allocatable_below_capacity() {
        let c = cfg(2);
        let t = Timestamp::from_second(1_700_000_000).unwrap();
        let s = node_status(&c, 1, t, t);
        let ready = s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(
            (ready["status"].as_str(), ready["reason"].as_str()),
            (Some("True"), Some("KubeletReady"))
        );
        assert_eq!(s["capacity"]["cpu"], "32000m");
        assert_eq!(s["allocatable"]["cpu"], "31900m");
        assert_eq!(s["allocatable"]["memory"], "267284480Ki");
        assert_eq!(s["addresses"][0]["address"], "172.16.0.11");
        assert_eq!(
            s["nodeInfo"]["containerRuntimeVersion"],
            format!("logbook-sim://{}", env!("CARGO_PKG_VERSION"))
        );
        let status: k8s_openapi::api::core::v1::NodeStatus = serde_json::from_value(s).unwrap();
        assert_eq!(status.node_info.unwrap().kubelet_version, "v1.33.0");
    }

    #[test]
    fn micro_time_has_six_fractional_digits() {
        let t = Timestamp::from_millisecond(1_700_000_000_123).unwrap();
        assert_eq!(micro_time(t), "2023-11-14T22:13:20.123000Z");
        assert_eq!(time(t), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn image_ids_name_the_full_repository_with_a_stable_digest() {
        let cases = [
            ("nginx", "docker.io/library/nginx"),
            ("nginx:1.27", "docker.io/library/nginx"),
            ("bitnami/redis:7", "docker.io/bitnami/redis"),
            ("registry.k8s.io/pause:3.10", "registry.k8s.io/pause"),
            ("localhost:5000/app:v1", "localhost:5000/app"),
        ];
        for (image, repo) in cases {
            let id = image_id(image);
            let (r, digest) = id.split_once("@sha256:").unwrap();
            assert_eq!(r, repo, "{image}");
            assert_eq!(digest.len(), 64, "{image}");
            assert_eq!(id, image_id(image), "stable");
        }
    }

    #[test]
    fn the_ip_pool_never_gives_an_address_twice_and_reuses_released_ones() {
        let mut p = IpPool::default();
        let all: Vec<u8> = std::iter::from_fn(|| p.allocate()).collect();
        assert_eq!(all.len(), 253);
        assert_eq!(
            all.iter().collect::<std::collections::HashSet<_>>().len(),
            253
        );
        assert!(all.iter().all(|h| (2..=254).contains(h)));
        p.release(77);
        assert_eq!(p.allocate(), Some(77));
        assert_eq!(p.allocate(), None);
        let mut q = IpPool::default();
        assert!(q.reserve(2));
        assert!(!q.reserve(2));
        assert_eq!(q.allocate(), Some(3));
    }

    #[test]
    fn only_addresses_inside_a_nodes_cidr_are_its_own() {
        assert_eq!(host_in_node_cidr(3, "10.64.3.9".parse().unwrap()), Some(9));
        assert_eq!(host_in_node_cidr(3, "10.64.4.9".parse().unwrap()), None);
    }
}
