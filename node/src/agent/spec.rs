//! From a pod's spec to CRI configurations: the sandbox, each container (command, env,
//! mounts, resources, security context) and the environment (env, envFrom, the downward
//! API, service links, `$(VAR)` expansion). The API reads (ConfigMaps, Secrets, Services)
//! go through [`Lookup`], so the pure parts are tested without a server.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::cri::{self, v1};

/// Default CFS period (kubelet's), in microseconds.
const CPU_PERIOD_US: i64 = 100_000;
/// Paths masked in unprivileged containers (kubelet/containerd defaults).
const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];
const READONLY_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

pub fn pod_name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or("")
}
pub fn pod_namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}
pub fn pod_uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or("")
}

/// Labels that find a pod's sandboxes and containers again.
pub fn pod_labels(pod: &Pod) -> HashMap<String, String> {
    HashMap::from([
        (cri::POD_UID_LABEL.to_string(), pod_uid(pod).to_string()),
        (cri::POD_NAME_LABEL.to_string(), pod_name(pod).to_string()),
        (
            cri::POD_NAMESPACE_LABEL.to_string(),
            pod_namespace(pod).to_string(),
        ),
        (cri::MANAGED_LABEL.to_string(), "true".to_string()),
    ])
}

fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

fn namespace_options(pod: &Pod) -> v1::NamespaceOption {
    let spec = pod.spec.as_ref();
    let node = v1::NamespaceMode::Node as i32;
    let pod_mode = v1::NamespaceMode::Pod as i32;
    v1::NamespaceOption {
        network: if host_network(pod) { node } else { pod_mode },
        pid: if spec.and_then(|s| s.host_pid).unwrap_or(false) {
            node
        } else if spec
            .and_then(|s| s.share_process_namespace)
            .unwrap_or(false)
        {
            pod_mode
        } else {
            v1::NamespaceMode::Container as i32
        },
        ipc: if spec.and_then(|s| s.host_ipc).unwrap_or(false) {
            node
        } else {
            pod_mode
        },
        target_id: String::new(),
        userns_options: None,
    }
}

/// The host's resolv.conf as a CRI DNS config (there is no cluster DNS service to point
/// pods at; `ClusterFirst` falls back to the node's resolvers, as kubelet does without
/// `--cluster-dns`).
pub fn dns_config(resolv_conf: &str, pod: &Pod) -> v1::DnsConfig {
    let mut d = v1::DnsConfig::default();
    for line in resolv_conf.lines() {
        let mut w = line.split_whitespace();
        match w.next() {
            Some("nameserver") => d.servers.extend(w.next().map(str::to_string)),
            Some("search") => d.searches.extend(w.map(str::to_string)),
            Some("options") => d.options.extend(w.map(str::to_string)),
            _ => {}
        }
    }
    if let Some(cfg) = pod.spec.as_ref().and_then(|s| s.dns_config.as_ref()) {
        d.servers.extend(cfg.nameservers.iter().flatten().cloned());
        d.searches.extend(cfg.searches.iter().flatten().cloned());
        for o in cfg.options.iter().flatten() {
            if let Some(n) = &o.name {
                d.options.push(match &o.value {
                    Some(v) => format!("{n}:{v}"),
                    None => n.clone(),
                });
            }
        }
    }
    if pod.spec.as_ref().and_then(|s| s.dns_policy.as_deref()) == Some("None") {
        // Only the pod's own dnsConfig.
        let own = pod.spec.as_ref().and_then(|s| s.dns_config.as_ref());
        d.servers = own.and_then(|c| c.nameservers.clone()).unwrap_or_default();
        d.searches = own.and_then(|c| c.searches.clone()).unwrap_or_default();
    }
    d
}

/// The sandbox configuration for `pod`'s `attempt`-th sandbox.
pub fn sandbox_config(
    pod: &Pod,
    node: &str,
    log_dir: &str,
    attempt: u32,
    dns: v1::DnsConfig,
) -> v1::PodSandboxConfig {
    let spec = pod.spec.as_ref();
    let hostname = spec
        .and_then(|s| s.hostname.clone())
        .unwrap_or_else(|| pod_name(pod).chars().take(63).collect());
    let mut port_mappings = Vec::new();
    for c in spec.map(|s| s.containers.as_slice()).unwrap_or(&[]) {
        for p in c.ports.iter().flatten() {
            if let Some(hp) = p.host_port.filter(|&h| h > 0) {
                port_mappings.push(v1::PortMapping {
                    protocol: match p.protocol.as_deref() {
                        Some("UDP") => v1::Protocol::Udp as i32,
                        Some("SCTP") => v1::Protocol::Sctp as i32,
                        _ => v1::Protocol::Tcp as i32,
                    },
                    container_port: p.container_port,
                    host_port: hp,
                    host_ip: p.host_ip.clone().unwrap_or_default(),
                });
            }
        }
    }
    let mut labels = pod_labels(pod);
    labels.insert(cri::NODE_LABEL.into(), node.into());
    for (k, v) in pod.metadata.labels.iter().flatten() {
        labels.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let psc = spec.and_then(|s| s.security_context.as_ref());
    let sysctls = psc
        .and_then(|s| s.sysctls.as_ref())
        .map(|v| {
            v.iter()
                .map(|s| (s.name.clone(), s.value.clone()))
                .collect()
        })
        .unwrap_or_default();
    v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata {
            name: pod_name(pod).into(),
            uid: pod_uid(pod).into(),
            namespace: pod_namespace(pod).into(),
            attempt,
        }),
        hostname: if host_network(pod) {
            String::new()
        } else {
            hostname
        },
        log_directory: log_dir.into(),
        dns_config: Some(dns),
        port_mappings,
        labels,
        annotations: pod
            .metadata
            .annotations
            .clone()
            .map(|a| a.into_iter().collect())
            .unwrap_or_default(),
        linux: Some(v1::LinuxPodSandboxConfig {
            cgroup_parent: String::new(),
            security_context: Some(v1::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options(pod)),
                run_as_user: psc
                    .and_then(|s| s.run_as_user)
                    .map(|value| v1::Int64Value { value }),
                run_as_group: psc
                    .and_then(|s| s.run_as_group)
                    .map(|value| v1::Int64Value { value }),
                supplemental_groups: psc
                    .and_then(|s| s.supplemental_groups.clone())
                    .unwrap_or_default(),
                ..Default::default()
            }),
            sysctls,
            overhead: None,
            resources: None,
        }),
        windows: None,
    }
}

/// A quantity in its base unit, rounded up to an integer after dividing by `divisor`
/// (`resourceFieldRef`): "500m" / "1" → 1, "1Gi" / "1Mi" → 1024.
pub fn quantity_scaled(q: &str, divisor: &str) -> Option<i64> {
    let v = quantity_value(q)?;
    let d = quantity_value(divisor).filter(|d| *d > 0.0).unwrap_or(1.0);
    Some((v / d).ceil() as i64)
}

/// A Kubernetes quantity as a float in its base unit.
pub fn quantity_value(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        s if s.starts_with('e') || s.starts_with('E') => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    Some(n * mult)
}

fn resource(c: &Container, kind: &str, name: &str) -> Option<String> {
    let r = c.resources.as_ref()?;
    let m: &BTreeMap<String, Quantity> = if kind == "limits" {
        r.limits.as_ref()?
    } else {
        r.requests.as_ref()?
    };
    m.get(name).map(|q| q.0.clone())
}

/// Linux resources from requests and limits (cpu shares from the request, CFS quota and the
/// memory limit from the limits), as kubelet computes them.
pub fn linux_resources(c: &Container) -> v1::LinuxContainerResources {
    let cpu_req = resource(c, "requests", "cpu")
        .or_else(|| resource(c, "limits", "cpu"))
        .and_then(|q| quantity_value(&q));
    let cpu_shares = cpu_req.map_or(2, |cores| ((cores * 1024.0) as i64).max(2));
    let cpu_limit = resource(c, "limits", "cpu").and_then(|q| quantity_value(&q));
    let cpu_quota = cpu_limit.map_or(0, |cores| ((cores * CPU_PERIOD_US as f64) as i64).max(1000));
    let memory = resource(c, "limits", "memory")
        .and_then(|q| quantity_value(&q))
        .map_or(0, |b| b as i64);
    v1::LinuxContainerResources {
        cpu_period: if cpu_quota > 0 { CPU_PERIOD_US } else { 0 },
        cpu_quota,
        cpu_shares,
        memory_limit_in_bytes: memory,
        ..Default::default()
    }
}

fn security_context(pod: &Pod, c: &Container) -> v1::LinuxContainerSecurityContext {
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let sc = c.security_context.as_ref();
    let privileged = sc.and_then(|s| s.privileged).unwrap_or(false);
    let caps = sc.and_then(|s| s.capabilities.as_ref());
    v1::LinuxContainerSecurityContext {
        capabilities: caps.map(|c| v1::Capability {
            add_capabilities: c.add.clone().unwrap_or_default(),
            drop_capabilities: c.drop.clone().unwrap_or_default(),
            add_ambient_capabilities: Vec::new(),
        }),
        privileged,
        namespace_options: Some(namespace_options(pod)),
        run_as_user: sc
            .and_then(|s| s.run_as_user)
            .or(psc.and_then(|s| s.run_as_user))
            .map(|value| v1::Int64Value { value }),
        run_as_group: sc
            .and_then(|s| s.run_as_group)
            .or(psc.and_then(|s| s.run_as_group))
            .map(|value| v1::Int64Value { value }),
        readonly_rootfs: sc
            .and_then(|s| s.read_only_root_filesystem)
            .unwrap_or(false),
        supplemental_groups: psc
            .and_then(|s| s.supplemental_groups.clone())
            .unwrap_or_default(),
        no_new_privs: sc
            .and_then(|s| s.allow_privilege_escalation)
            .is_some_and(|a| !a),
        masked_paths: if privileged {
            Vec::new()
        } else {
            MASKED_PATHS.iter().map(|s| (*s).to_string()).collect()
        },
        readonly_paths: if privileged {
            Vec::new()
        } else {
            READONLY_PATHS.iter().map(|s| (*s).to_string()).collect()
        },
        ..Default::default()
    }
}

/// Inputs of one container's configuration that the worker resolved.
pub struct Resolved {
    pub image: String,
    pub env: Vec<(String, String)>,
    pub mounts: Vec<v1::Mount>,
    pub attempt: u32,
    pub init: bool,
}

/// The container configuration.
pub fn container_config(pod: &Pod, c: &Container, r: Resolved) -> v1::ContainerConfig {
    let vars: HashMap<&str, &str> = r
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let expand_all = |v: &Option<Vec<String>>| -> Vec<String> {
        v.iter().flatten().map(|s| expand(s, &vars)).collect()
    };
    let mut labels = pod_labels(pod);
    labels.insert(cri::CONTAINER_NAME_LABEL.into(), c.name.clone());
    let mut annotations = HashMap::from([
        (
            "io.kubernetes.container.restartCount".to_string(),
            r.attempt.to_string(),
        ),
        (
            "io.kubernetes.pod.terminationGracePeriod".to_string(),
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
                .unwrap_or(30)
                .to_string(),
        ),
    ]);
    if r.init {
        annotations.insert(cri::INIT_ANNOTATION.into(), "true".into());
    }
    v1::ContainerConfig {
        metadata: Some(v1::ContainerMetadata {
            name: c.name.clone(),
            attempt: r.attempt,
        }),
        image: Some(cri::image_spec(&r.image)),
        command: expand_all(&c.command),
        args: expand_all(&c.args),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: r
            .env
            .iter()
            .map(|(key, value)| v1::KeyValue {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        mounts: r.mounts,
        labels,
        annotations,
        log_path: format!("{}/{}.log", c.name, r.attempt),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        linux: Some(v1::LinuxContainerConfig {
            resources: Some(linux_resources(c)),
            security_context: Some(security_context(pod, c)),
        }),
        ..Default::default()
    }
}

/// Kubernetes `$(VAR)` expansion: a defined variable is replaced, an undefined reference
/// stays as written, `$$` is a literal `$`.
pub fn expand(s: &str, vars: &HashMap<&str, &str>) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            if b[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if b[i + 1] == b'('
                && let Some(end) = s[i + 2..].find(')')
            {
                let name = &s[i + 2..i + 2 + end];
                match vars.get(name) {
                    Some(v) => out.push_str(v),
                    None => out.push_str(&s[i..i + 3 + end]),
                }
                i += 3 + end;
                continue;
            }
        }
        let ch = s[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// A downward API field of the pod (`fieldRef.fieldPath`).
pub fn field_value(pod: &Pod, path: &str, host_ip: &str, pod_ips: &[String]) -> Option<String> {
    let meta = &pod.metadata;
    let key_of = |prefix: &str| -> Option<String> {
        path.strip_prefix(prefix)?
            .strip_suffix("']")
            .map(str::to_string)
    };
    if let Some(k) = key_of("metadata.labels['") {
        return Some(meta.labels.as_ref()?.get(&k)?.clone());
    }
    if let Some(k) = key_of("metadata.annotations['") {
        return Some(meta.annotations.as_ref()?.get(&k)?.clone());
    }
    let spec = pod.spec.as_ref();
    Some(match path {
        "metadata.name" => pod_name(pod).into(),
        "metadata.namespace" => pod_namespace(pod).into(),
        "metadata.uid" => pod_uid(pod).into(),
        "metadata.labels" => format_map(meta.labels.as_ref()),
        "metadata.annotations" => format_map(meta.annotations.as_ref()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" => host_ip.into(),
        "status.hostIPs" => host_ip.into(),
        "status.podIP" => pod_ips.first().cloned().unwrap_or_default(),
        "status.podIPs" => pod_ips.join(","),
        _ => return None,
    })
}

/// `key="value"` lines, sorted (the downward API's format for label and annotation maps).
fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    m.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", serde_json::Value::String(v.clone())))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A `resourceFieldRef` value: the container's limit (else the node's allocatable, given as
/// `fallback`) or request, divided by `divisor`.
pub fn resource_field(
    c: &Container,
    resource_name: &str,
    divisor: &str,
    fallback: &str,
) -> Option<String> {
    let (kind, name) = resource_name.split_once('.')?;
    let q = resource(c, kind, name).unwrap_or_else(|| {
        if kind == "requests" {
            "0".into()
        } else {
            fallback.into()
        }
    });
    let d = if divisor.is_empty() { "1" } else { divisor };
    quantity_scaled(&q, d).map(|v| v.to_string())
}

/// Docker-link style variables for a Service (`enableServiceLinks`): `NAME_SERVICE_HOST`,
/// `NAME_SERVICE_PORT`, `NAME_PORT`, and per port `NAME_PORT_<port>_<PROTO>[_PROTO|_PORT|_ADDR]`.
pub fn service_env(
    name: &str,
    cluster_ip: &str,
    ports: &[(Option<String>, i32, String)],
) -> Vec<(String, String)> {
    let n = name.to_uppercase().replace('-', "_");
    let Some((_, first_port, first_proto)) = ports.first() else {
        return Vec::new();
    };
    let mut v = vec![
        (format!("{n}_SERVICE_HOST"), cluster_ip.to_string()),
        (format!("{n}_SERVICE_PORT"), first_port.to_string()),
    ];
    for (pname, port, _) in ports {
        if let Some(p) = pname.as_deref().filter(|p| !p.is_empty()) {
            v.push((
                format!("{n}_SERVICE_PORT_{}", p.to_uppercase().replace('-', "_")),
                port.to_string(),
            ));
        }
    }
    let proto_lower = first_proto.to_lowercase();
    v.push((
        format!("{n}_PORT"),
        format!("{proto_lower}://{cluster_ip}:{first_port}"),
    ));
    for (_, port, proto) in ports {
        let base = format!("{n}_PORT_{port}_{}", proto.to_uppercase());
        v.push((
            base.clone(),
            format!("{}://{cluster_ip}:{port}", proto.to_lowercase()),
        ));
        v.push((format!("{base}_PROTO"), proto.to_lowercase()));
        v.push((format!("{base}_PORT"), port.to_string()));
        v.push((format!("{base}_ADDR"), cluster_ip.to_string()));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expansion_replaces_defined_variables_and_keeps_the_rest() {
        let vars = HashMap::from([("A", "1"), ("B", "two")]);
        assert_eq!(expand("x$(A)y$(B)", &vars), "x1ytwo");
        assert_eq!(expand("$(C) stays", &vars), "$(C) stays");
        assert_eq!(expand("$$(A) is escaped", &vars), "$(A) is escaped");
        assert_eq!(expand("cost $5 and $(", &vars), "cost $5 and $(");
        assert_eq!(expand("ünïcode $(A)", &vars), "ünïcode 1");
    }

    #[test]
    fn quantities_scale_and_round_up() {
        assert_eq!(quantity_scaled("500m", "1"), Some(1));
        assert_eq!(quantity_scaled("1Gi", "1Mi"), Some(1024));
        assert_eq!(quantity_scaled("2", "1m"), Some(2000));
        assert_eq!(quantity_scaled("128M", "1"), Some(128_000_000));
        assert_eq!(quantity_value("bogus"), None);
    }

    #[test]
    fn downward_api_fields_read_the_pod() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "web", "tier": "a\"b"}},
            "spec": {"nodeName": "n1", "serviceAccountName": "sa", "containers": []},
        }))
        .expect("pod");
        let ips = vec!["10.88.0.2".to_string()];
        assert_eq!(
            field_value(&pod, "metadata.name", "h", &ips).as_deref(),
            Some("p")
        );
        assert_eq!(
            field_value(&pod, "metadata.labels['app']", "h", &ips).as_deref(),
            Some("web")
        );
        assert_eq!(
            field_value(&pod, "metadata.labels", "h", &ips).as_deref(),
            Some("app=\"web\"\ntier=\"a\\\"b\"")
        );
        assert_eq!(
            field_value(&pod, "status.podIP", "h", &ips).as_deref(),
            Some("10.88.0.2")
        );
        assert_eq!(
            field_value(&pod, "spec.nodeName", "h", &ips).as_deref(),
            Some("n1")
        );
        assert_eq!(
            field_value(&pod, "status.hostIP", "h", &ips).as_deref(),
            Some("h")
        );
        assert_eq!(field_value(&pod, "spec.bogus", "h", &ips), None);
    }

    #[test]
    fn resources_become_shares_quota_and_memory_limit() {
        let c: Container = serde_json::from_value(json!({
            "name": "c", "resources": {"requests": {"cpu": "250m"}, "limits": {"cpu": "500m", "memory": "64Mi"}},
        }))
        .expect("container");
        let r = linux_resources(&c);
        assert_eq!(r.cpu_shares, 256);
        assert_eq!(r.cpu_quota, 50_000);
        assert_eq!(r.cpu_period, 100_000);
        assert_eq!(r.memory_limit_in_bytes, 64 * 1024 * 1024);
        let none: Container = serde_json::from_value(json!({"name": "c"})).expect("container");
        assert_eq!(linux_resources(&none).cpu_shares, 2);
        assert_eq!(linux_resources(&none).cpu_quota, 0);
    }

    #[test]
    fn service_links_follow_the_docker_link_names() {
        let v = service_env(
            "my-svc",
            "10.96.0.10",
            &[(Some("http".into()), 80, "TCP".into())],
        );
        let m: HashMap<_, _> = v.into_iter().collect();
        assert_eq!(m["MY_SVC_SERVICE_HOST"], "10.96.0.10");
        assert_eq!(m["MY_SVC_SERVICE_PORT"], "80");
        assert_eq!(m["MY_SVC_SERVICE_PORT_HTTP"], "80");
        assert_eq!(m["MY_SVC_PORT"], "tcp://10.96.0.10:80");
        assert_eq!(m["MY_SVC_PORT_80_TCP_ADDR"], "10.96.0.10");
    }

    #[test]
    fn resolv_conf_becomes_the_dns_config() {
        let pod: Pod = serde_json::from_value(json!({"metadata": {}, "spec": {"containers": []}}))
            .expect("pod");
        let d = dns_config(
            "# c\nnameserver 10.0.0.1\nsearch a.b c.d\noptions ndots:2\n",
            &pod,
        );
        assert_eq!(d.servers, vec!["10.0.0.1"]);
        assert_eq!(d.searches, vec!["a.b", "c.d"]);
        assert_eq!(d.options, vec!["ndots:2"]);
    }
}
