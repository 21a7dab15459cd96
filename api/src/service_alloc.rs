//! Service ClusterIP and NodePort allocation, as kube-apiserver 1.33 does it:
//! - a ClusterIP is an `IPAddress` object (networking.k8s.io/v1) named after the address,
//!   whose `parentRef` is the Service; creating it is the allocation, so two Services can
//!   never get the same address (the second create is AlreadyExists and picks again);
//! - a NodePort is an internal record `logbook.internal/nodeports/<port>-<protocol>` in the
//!   same log, created the same way (kube-apiserver keeps a bitmap instead);
//! - both are released when the Service is deleted.
//!
//! The allocation is written before the Service; a Service create that then fails releases
//! it again. A crash in between leaves an allocation without a Service (an address out of
//! use, never a duplicate); kube-apiserver's repair loop has the same window.

use std::net::Ipv4Addr;
use std::sync::Arc;

use logbook_schema::registry::ResourceInfo;
use logbook_store::{EventType, Expect};
use rand::Rng;
use serde_json::{Map, Value, json};

use crate::error::{ApiError, ApiResult};
use crate::handlers::Ctx;
use crate::object::{meta_mut, meta_str};
use crate::strategy::now_rfc3339;

/// Random picks tried before a bounded sequential scan of the range.
const ALLOCATION_RANDOM_ATTEMPTS_MAX: usize = 32;
/// Candidates the sequential scan looks at before giving up (a nearly full range).
const ALLOCATION_SCAN_CANDIDATES_MAX: u32 = 4_096;

/// The ranges Services are allocated from (`logbook serve --service-cluster-ip-range`,
/// `--service-node-port-range`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ranges {
    /// The ClusterIP network and its prefix length (IPv4).
    pub cluster_ip_net: Ipv4Addr,
    pub cluster_ip_prefix: u8,
    /// The NodePort range, inclusive.
    pub node_port_min: u16,
    pub node_port_max: u16,
}

impl Default for Ranges {
    /// kube-apiserver's defaults: 10.96.0.0/12 and 30000-32767.
    fn default() -> Self {
        Ranges {
            cluster_ip_net: Ipv4Addr::new(10, 96, 0, 0),
            cluster_ip_prefix: 12,
            node_port_min: 30_000,
            node_port_max: 32_767,
        }
    }
}

impl Ranges {
    /// Parses `a.b.c.d/n` and `min-max`.
    ///
    /// # Errors
    /// A message naming what is wrong.
    pub fn parse(cidr: &str, ports: &str) -> Result<Self, String> {
        let (net, prefix) = cidr
            .split_once('/')
            .ok_or_else(|| format!("{cidr}: expected an IPv4 CIDR such as 10.96.0.0/12"))?;
        let net: Ipv4Addr = net.parse().map_err(|e| format!("{cidr}: {e}"))?;
        let prefix: u8 = prefix.parse().map_err(|e| format!("{cidr}: {e}"))?;
        if !(8..=30).contains(&prefix) {
            return Err(format!(
                "{cidr}: the prefix length must be between 8 and 30"
            ));
        }
        let (min, max) = ports
            .split_once('-')
            .ok_or_else(|| format!("{ports}: expected a range such as 30000-32767"))?;
        let min: u16 = min.trim().parse().map_err(|e| format!("{ports}: {e}"))?;
        let max: u16 = max.trim().parse().map_err(|e| format!("{ports}: {e}"))?;
        if min == 0 || min > max {
            return Err(format!("{ports}: an empty or invalid port range"));
        }
        let mask = u32::MAX << (32 - u32::from(prefix));
        Ok(Ranges {
            cluster_ip_net: Ipv4Addr::from(u32::from(net) & mask),
            cluster_ip_prefix: prefix,
            node_port_min: min,
            node_port_max: max,
        })
    }

    fn size(&self) -> u32 {
        1u32 << (32 - u32::from(self.cluster_ip_prefix))
    }

    /// The first usable address: the `kubernetes` Service's.
    pub fn first_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cluster_ip_net) + 1)
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - u32::from(self.cluster_ip_prefix));
        u32::from(ip) & mask == u32::from(self.cluster_ip_net)
            && ip != self.cluster_ip_net
            && u32::from(ip) != u32::from(self.cluster_ip_net) + self.size() - 1
    }

    fn cidr(&self) -> String {
        format!("{}/{}", self.cluster_ip_net, self.cluster_ip_prefix)
    }
}

/// What one Service holds; released on failure or deletion.
#[derive(Default, Debug)]
pub struct Held {
    pub ip: Option<String>,
    pub node_ports: Vec<String>,
}

fn spec(svc: &Map<String, Value>) -> Option<&Map<String, Value>> {
    svc.get("spec").and_then(Value::as_object)
}

fn service_type(svc: &Map<String, Value>) -> &str {
    spec(svc)
        .and_then(|s| s.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
}

fn is_services(info: &ResourceInfo) -> bool {
    info.group.is_empty() && info.plural == "services"
}

fn invalid(svc: &Map<String, Value>, field: &str, message: String) -> ApiError {
    ApiError::invalid(
        "Service",
        "",
        meta_str(svc, "name").unwrap_or_default(),
        vec![logbook_schema::Cause {
            reason: "FieldValueInvalid".into(),
            message,
            field: field.into(),
        }],
    )
}

fn ip_ctx(ctx: &Ctx) -> ApiResult<Ctx> {
    let info = ctx
        .api
        .registry
        .load()
        .get("networking.k8s.io", "v1", "ipaddresses")
        .cloned()
        .ok_or_else(|| {
            ApiError::internal("the registry has no networking.k8s.io/v1 ipaddresses")
        })?;
    let mut c = ctx.for_resource(info);
    c.target.namespace = None;
    Ok(c)
}

fn port_ctx(ctx: &Ctx) -> Ctx {
    let info = ResourceInfo::new(
        "logbook.internal",
        "v1",
        "NodePortAllocation",
        "nodeports",
        false,
    );
    let mut c = ctx.for_resource(Arc::new(info));
    c.target.namespace = None;
    c
}

/// Creates an allocation record; `Ok(false)` when it is already taken.
async fn claim(c: &Ctx, name: &str, obj: Map<String, Value>, dry_run: bool) -> ApiResult<bool> {
    if dry_run {
        return Ok(c.current(name).await?.is_none());
    }
    let uid = uuid::Uuid::new_v4().to_string();
    let mut obj = obj;
    {
        let meta = meta_mut(&mut obj);
        meta.insert("uid".into(), Value::String(uid.clone()));
        meta.insert("creationTimestamp".into(), Value::String(now_rfc3339()));
        meta.insert("generation".into(), json!(1));
    }
    match c
        .append(
            EventType::Added,
            name,
            &obj,
            &uid,
            Expect::default(),
            "create;by=service-allocator",
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

async fn release_one(c: &Ctx, name: &str) {
    for _ in 0..3 {
        let Ok(Some(cur)) = c.current(name).await else {
            return;
        };
        let Ok(obj) = crate::object::decode_stored(&cur.object, cur.position.0) else {
            return;
        };
        let expect = Expect {
            position: Some(cur.position),
            uid: None,
        };
        match c
            .append(
                EventType::Deleted,
                name,
                &obj,
                &cur.uid,
                expect,
                "delete;by=service-allocator",
            )
            .await
        {
            Err(e) if e.code == 409 => continue,
            Err(e) => {
                tracing::warn!(allocation = name, error = %e.message, "releasing a service allocation failed");
                return;
            }
            Ok(_) => return,
        }
    }
}

fn ip_object(ip: &str, ns: &str, name: &str) -> Map<String, Value> {
    let v = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IPAddress",
        "metadata": {"name": ip, "labels": {
            "ipaddress.kubernetes.io/ip-family": "IPv4",
            "ipaddress.kubernetes.io/managed-by": "ipallocator.k8s.io",
        }},
        "spec": {"parentRef": {"group": "", "resource": "services", "namespace": ns, "name": name}},
    });
    v.as_object().cloned().unwrap_or_default()
}

fn port_object(key: &str, ns: &str, name: &str) -> Map<String, Value> {
    let v = json!({"apiVersion": "logbook.internal/v1", "kind": "NodePortAllocation",
                   "metadata": {"name": key}, "service": {"namespace": ns, "name": name}});
    v.as_object().cloned().unwrap_or_default()
}

async fn allocate_ip(
    ctx: &Ctx,
    svc: &Map<String, Value>,
    requested: Option<&str>,
    dry_run: bool,
) -> ApiResult<String> {
    let ranges = &ctx.api.service_ranges;
    let c = ip_ctx(ctx)?;
    let ns = ctx.namespace().to_string();
    let name = meta_str(svc, "name").unwrap_or_default().to_string();
    if let Some(req) = requested {
        let ip: Ipv4Addr = req.parse().map_err(|_| {
            invalid(svc, "spec.clusterIPs", format!("Invalid value: []string{{\"{req}\"}}: must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"))
        })?;
        if !ranges.contains(ip) {
            return Err(invalid(
                svc,
                "spec.clusterIPs",
                format!(
                    "Invalid value: []string{{\"{req}\"}}: failed to allocate IP {req}: the provided IP ({req}) is not in the valid range. The range of valid IPs is {}",
                    ranges.cidr()
                ),
            ));
        }
        if !claim(&c, req, ip_object(req, &ns, &name), dry_run).await? {
            return Err(invalid(
                svc,
                "spec.clusterIPs",
                format!(
                    "Invalid value: []string{{\"{req}\"}}: failed to allocate IP {req}: provided IP is already allocated"
                ),
            ));
        }
        return Ok(req.to_string());
    }
    let base = u32::from(ranges.cluster_ip_net);
    let size = ranges.size();
    // Offsets 0 and size-1 are the network and broadcast addresses; 1 is the kubernetes
    // Service's (taken like any other, so it is simply skipped when in use).
    let usable = size - 2;
    for _ in 0..ALLOCATION_RANDOM_ATTEMPTS_MAX {
        let offset = rand::rng().random_range(1..=usable);
        let ip = Ipv4Addr::from(base + offset).to_string();
        if claim(&c, &ip, ip_object(&ip, &ns, &name), dry_run).await? {
            return Ok(ip);
        }
    }
    let start = rand::rng().random_range(1..=usable);
    for i in 0..usable.min(ALLOCATION_SCAN_CANDIDATES_MAX) {
        let offset = (start - 1 + i) % usable + 1;
        let ip = Ipv4Addr::from(base + offset).to_string();
        if claim(&c, &ip, ip_object(&ip, &ns, &name), dry_run).await? {
            return Ok(ip);
        }
    }
    Err(ApiError::new(
        500,
        "InternalError",
        format!(
            "failed to allocate a serviceIP: range is full ({})",
            ranges.cidr()
        ),
    ))
}

/// Allocates what a new (or changed) Service needs: a ClusterIP unless it is headless or
/// ExternalName, NodePorts for NodePort and LoadBalancer Services. Fills them into `svc`.
///
/// # Errors
/// 422 for a requested address or port outside the range or already taken; 500 when a
/// range is full.
pub async fn allocate(
    ctx: &Ctx,
    svc: &mut Map<String, Value>,
    old: Option<&Map<String, Value>>,
    dry_run: bool,
) -> ApiResult<Held> {
    let mut held = Held::default();
    if !is_services(&ctx.info) {
        return Ok(held);
    }
    let ty = service_type(svc).to_string();
    let requested_ip = spec(svc)
        .and_then(|s| s.get("clusterIP"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let old_ip = old
        .and_then(spec)
        .and_then(|s| s.get("clusterIP"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && *s != "None");
    if ty != "ExternalName" && requested_ip.as_deref() != Some("None") && old_ip.is_none() {
        let result = allocate_ip(ctx, svc, requested_ip.as_deref(), dry_run).await;
        let ip = match result {
            Ok(ip) => ip,
            Err(e) => return Err(e),
        };
        if let Some(s) = svc.get_mut("spec").and_then(Value::as_object_mut) {
            s.insert("clusterIP".into(), Value::String(ip.clone()));
            s.insert("clusterIPs".into(), json!([ip.clone()]));
        }
        held.ip = Some(ip);
    }
    if matches!(ty.as_str(), "NodePort" | "LoadBalancer")
        && let Err(e) = allocate_node_ports(ctx, svc, old, dry_run, &mut held).await
    {
        if !dry_run {
            release(ctx, &held).await;
        }
        return Err(e);
    }
    Ok(held)
}

async fn allocate_node_ports(
    ctx: &Ctx,
    svc: &mut Map<String, Value>,
    old: Option<&Map<String, Value>>,
    dry_run: bool,
    held: &mut Held,
) -> ApiResult<()> {
    let ranges = ctx.api.service_ranges.clone();
    let c = port_ctx(ctx);
    let ns = ctx.namespace().to_string();
    let name = meta_str(svc, "name").unwrap_or_default().to_string();
    let old_ports: Vec<i64> = old
        .and_then(spec)
        .and_then(|s| s.get("ports"))
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p.get("nodePort").and_then(Value::as_i64))
                .collect()
        })
        .unwrap_or_default();
    let n = spec(svc)
        .and_then(|s| s.get("ports"))
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    for i in 0..n {
        let port = svc["spec"]["ports"][i].clone();
        let protocol = port
            .get("protocol")
            .and_then(Value::as_str)
            .unwrap_or("TCP")
            .to_string();
        let requested = port
            .get("nodePort")
            .and_then(Value::as_i64)
            .filter(|p| *p != 0);
        if requested.is_some_and(|p| old_ports.contains(&p)) {
            continue;
        }
        let field = format!("spec.ports[{i}].nodePort");
        let chosen = if let Some(p) = requested {
            if p < i64::from(ranges.node_port_min) || p > i64::from(ranges.node_port_max) {
                return Err(invalid(
                    svc,
                    &field,
                    format!(
                        "Invalid value: {p}: provided port is not in the valid range. The range of valid ports is {}-{}",
                        ranges.node_port_min, ranges.node_port_max
                    ),
                ));
            }
            let key = format!("{p}-{protocol}");
            if !claim(&c, &key, port_object(&key, &ns, &name), dry_run).await? {
                return Err(invalid(
                    svc,
                    &field,
                    format!("Invalid value: {p}: provided port is already allocated"),
                ));
            }
            held.node_ports.push(key);
            p
        } else {
            let span = u32::from(ranges.node_port_max - ranges.node_port_min) + 1;
            let mut got = None;
            let start = rand::rng().random_range(0..span);
            for attempt in 0..span.min(ALLOCATION_SCAN_CANDIDATES_MAX) {
                let offset = if (attempt as usize) < ALLOCATION_RANDOM_ATTEMPTS_MAX {
                    rand::rng().random_range(0..span)
                } else {
                    (start + attempt) % span
                };
                let p = i64::from(ranges.node_port_min) + i64::from(offset);
                let key = format!("{p}-{protocol}");
                if claim(&c, &key, port_object(&key, &ns, &name), dry_run).await? {
                    held.node_ports.push(key);
                    got = Some(p);
                    break;
                }
            }
            got.ok_or_else(|| {
                ApiError::internal(format!(
                    "failed to allocate a nodePort: range is full ({}-{})",
                    ranges.node_port_min, ranges.node_port_max
                ))
            })?
        };
        if let Some(p) = svc
            .get_mut("spec")
            .and_then(|s| s.get_mut("ports"))
            .and_then(|ps| ps.get_mut(i))
            .and_then(Value::as_object_mut)
        {
            p.insert("nodePort".into(), json!(chosen));
        }
    }
    Ok(())
}

/// Releases what a Service held (after a failed create).
pub async fn release(ctx: &Ctx, held: &Held) {
    if let Some(ip) = &held.ip
        && let Ok(c) = ip_ctx(ctx)
    {
        release_one(&c, ip).await;
    }
    let c = port_ctx(ctx);
    for key in &held.node_ports {
        release_one(&c, key).await;
    }
}

/// Releases everything a deleted Service held: its IPAddress and its NodePort records.
pub async fn release_service(ctx: &Ctx, svc: &Map<String, Value>) {
    if !is_services(&ctx.info) {
        return;
    }
    let mut held = Held::default();
    if let Some(ip) = spec(svc)
        .and_then(|s| s.get("clusterIP"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && *s != "None")
    {
        // Only the address this Service owns: its IPAddress names it as parent.
        if let Ok(c) = ip_ctx(ctx)
            && let Ok(Some(cur)) = c.current(ip).await
            && let Ok(obj) = crate::object::decode_stored(&cur.object, cur.position.0)
        {
            let parent = &obj["spec"]["parentRef"];
            if parent["namespace"].as_str() == Some(ctx.namespace())
                && parent["name"].as_str() == meta_str(svc, "name")
            {
                held.ip = Some(ip.to_string());
            }
        }
    }
    for p in spec(svc)
        .and_then(|s| s.get("ports"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(n) = p.get("nodePort").and_then(Value::as_i64) {
            let protocol = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            held.node_ports.push(format!("{n}-{protocol}"));
        }
    }
    release(ctx, &held).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_contain_what_kube_apiserver_would() {
        let r = Ranges::parse("10.96.0.0/12", "30000-32767").unwrap_or_default();
        assert_eq!(r, Ranges::default());
        assert_eq!(r.first_ip(), Ipv4Addr::new(10, 96, 0, 1));
        assert!(r.contains(Ipv4Addr::new(10, 111, 255, 254)));
        assert!(!r.contains(Ipv4Addr::new(10, 111, 255, 255)), "broadcast");
        assert!(!r.contains(Ipv4Addr::new(10, 96, 0, 0)), "network");
        assert!(!r.contains(Ipv4Addr::new(10, 112, 0, 1)));
        assert!(Ranges::parse("10.0.0.0", "1-2").is_err());
        assert!(Ranges::parse("10.0.0.0/31", "1-2").is_err());
        assert!(Ranges::parse("10.0.0.0/24", "5-2").is_err());
        let r = Ranges::parse("10.0.0.7/24", "100-200").unwrap_or_default();
        assert_eq!(
            r.cluster_ip_net,
            Ipv4Addr::new(10, 0, 0, 0),
            "host bits are cleared"
        );
    }
}
