//! One task per pod bound to this node (kubelet's pod worker): it looks at the pod's sandbox
//! and containers in the runtime every [`SYNC_INTERVAL_MS`] and whenever the pod changes,
//! moves them one step towards the spec (sandbox, volumes, init containers in order,
//! containers, restarts with back-off, probes), and posts the pod's status when it changed.
//! A deleted pod's containers are stopped within its grace period before the pod is removed
//! from the API (the deletion handshake).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Event, Pod, Secret, Service};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::AgentConfig;
use super::probe::{self, Kind, Tally};
use super::spec::{self, pod_name, pod_namespace, pod_uid};
use super::status::{self, ContainerView, Observed, State};
use super::volumes::{self, VolumeState};
use crate::cri::{self, Cri, v1};

/// How often a pod's worker looks at its containers when nothing else wakes it, in
/// milliseconds (kubelet's PLEG relist period is 1 s).
pub const SYNC_INTERVAL_MS: u64 = 1_000;
/// How often ConfigMap, Secret, downward API and token volumes are rewritten from the API,
/// in milliseconds.
pub const VOLUME_REFRESH_INTERVAL_MS: u64 = 10_000;
/// First restart back-off of a crashed container, in seconds; it doubles up to
/// [`BACKOFF_MAX_S`] (kubelet's).
pub const BACKOFF_INITIAL_S: u64 = 10;
/// Longest restart back-off, in seconds.
pub const BACKOFF_MAX_S: u64 = 300;
/// A container that ran this long before exiting starts its back-off afresh, in seconds.
pub const BACKOFF_RESET_S: i64 = 600;
/// How long a failed pull of an image present on the node makes `Always` use the local
/// copy without asking the registry again, in seconds (an offline node stays usable).
pub const PULL_FAILURE_MEMORY_S: u64 = 300;
/// Grace given to the containers of a pod that vanished from the API (force deletion), in
/// seconds.
pub const VANISHED_POD_GRACE_S: u64 = 2;
/// Sandbox creations and container create+starts the agent asks of the runtime at once:
/// a burst of pods queues here instead of making the runtime, its shims, runc and the CNI
/// plugins share two cores fifty ways.
pub const CRI_STARTS_INFLIGHT_MAX: usize = 4;
/// Events being posted at once; more are dropped (they are best effort).
pub const EVENTS_INFLIGHT_MAX: usize = 32;
/// A pod's identical event (reason and message) is posted at most once per this window, in
/// seconds.
pub const EVENT_REPEAT_WINDOW_S: u64 = 60;
/// Distinct events a worker remembers for that (forgotten all at once past it).
const EVENTS_REMEMBERED_MAX: usize = 256;

/// What the pod watch tells a worker.
#[derive(Clone)]
pub enum Update {
    Pod(Arc<Pod>),
    /// The pod is gone from the API (its last known state).
    Gone(Arc<Pod>),
}

/// What all workers share.
pub struct Shared {
    pub cfg: Arc<AgentConfig>,
    pub client: kube::Client,
    pub cri: Cri,
    pub dns: v1::DnsConfig,
    pub allocatable: HashMap<String, String>,
    /// Images whose pull failed, and when.
    pub pull_failures: std::sync::Mutex<HashMap<String, Instant>>,
    pub events: Arc<tokio::sync::Semaphore>,
    /// Sandbox creations and container starts in flight ([`CRI_STARTS_INFLIGHT_MAX`]).
    pub starts: Arc<tokio::sync::Semaphore>,
}

struct Backoff {
    delay: Duration,
}

/// A worker's memory of its pod.
pub struct Worker {
    shared: Arc<Shared>,
    sandbox_config: Option<(String, v1::PodSandboxConfig)>,
    pod_ips: Vec<String>,
    volumes: VolumeState,
    prepared: Option<HashMap<String, volumes::Prepared>>,
    volumes_at: Option<Instant>,
    restart_backoff: HashMap<String, Backoff>,
    pull_backoff: HashMap<String, (Instant, Duration)>,
    waiting: HashMap<String, (String, String)>,
    probes: HashMap<(String, Kind), (String, Tally)>,
    start_time: Option<Timestamp>,
    last_status: Option<Value>,
    terminal: bool,
    events_sent: HashMap<(String, String), Instant>,
    /// A slot of [`Shared::starts`], held from a sandbox or container start to the end of
    /// the sync.
    start_permit: Option<tokio::sync::OwnedSemaphorePermit>,
    /// A container was started: sync again without waiting for the tick.
    resync_now: bool,
}

/// How a sync ended.
enum Flow {
    Continue,
    Done,
}

fn ts(nanos: i64) -> Timestamp {
    Timestamp::from_nanosecond(i128::from(nanos)).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn observed(s: &v1::ContainerStatus) -> Observed {
    let attempt = s.metadata.as_ref().map_or(0, |m| m.attempt);
    let state = match v1::ContainerState::try_from(s.state)
        .unwrap_or(v1::ContainerState::ContainerUnknown)
    {
        v1::ContainerState::ContainerCreated => State::Created,
        v1::ContainerState::ContainerRunning => State::Running {
            started_at: ts(s.started_at),
        },
        _ => State::Exited {
            exit_code: s.exit_code,
            reason: s.reason.clone(),
            message: s.message.clone(),
            started_at: (s.started_at > 0).then(|| ts(s.started_at)),
            finished_at: ts(s.finished_at),
        },
    };
    Observed {
        id: s.id.clone(),
        attempt,
        state,
        image: s
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default(),
        image_id: s.image_ref.clone(),
        created_at: ts(s.created_at),
    }
}

fn pull_policy(c: &Container) -> String {
    if let Some(p) = c.image_pull_policy.as_deref().filter(|p| !p.is_empty()) {
        return p.to_string();
    }
    let image = c.image.as_deref().unwrap_or("");
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        "IfNotPresent".into()
    } else if !last.contains(':') || last.ends_with(":latest") {
        "Always".into()
    } else {
        "IfNotPresent".into()
    }
}

fn grace_of(pod: &Pod) -> Duration {
    let s = pod
        .metadata
        .deletion_grace_period_seconds
        .or(pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds))
        .unwrap_or(30)
        .max(0);
    Duration::from_secs(s as u64)
}

impl Worker {
    pub fn new(shared: Arc<Shared>) -> Worker {
        Worker {
            shared,
            sandbox_config: None,
            pod_ips: Vec::new(),
            volumes: VolumeState::default(),
            prepared: None,
            volumes_at: None,
            restart_backoff: HashMap::new(),
            pull_backoff: HashMap::new(),
            waiting: HashMap::new(),
            probes: HashMap::new(),
            start_time: None,
            last_status: None,
            terminal: false,
            events_sent: HashMap::new(),
            start_permit: None,
            resync_now: false,
        }
    }

    /// Runs until the pod is gone and its containers are removed.
    pub async fn run(mut self, mut rx: watch::Receiver<Update>) {
        loop {
            let update = rx.borrow_and_update().clone();
            let flow = match &update {
                Update::Pod(p) => {
                    let r = self.sync(p).await;
                    self.start_permit = None;
                    r
                }
                Update::Gone(p) => {
                    self.teardown(p, Duration::from_secs(VANISHED_POD_GRACE_S), false)
                        .await
                }
            };
            match flow {
                Ok(Flow::Done) => return,
                Ok(Flow::Continue) => {}
                Err(e) => {
                    let p = match &update {
                        Update::Pod(p) | Update::Gone(p) => p,
                    };
                    tracing::warn!(pod = %format!("{}/{}", pod_namespace(p), pod_name(p)), error = %e, "syncing a pod failed; retrying");
                }
            }
            // A container started in this sync: look again at once, so the pod is reported
            // Running as soon as it runs (and the next init container starts).
            if std::mem::take(&mut self.resync_now) {
                continue;
            }
            // Our own status writes come back through the watch: they wake nobody, so a
            // state (ErrImagePull, say) stays visible until the next look.
            let seen = fingerprint(&update);
            let tick = tokio::time::sleep(Duration::from_millis(SYNC_INTERVAL_MS));
            tokio::pin!(tick);
            loop {
                tokio::select! {
                    r = rx.changed() => {
                        if r.is_err() {
                            return;
                        }
                        if fingerprint(&rx.borrow()) != seen {
                            break;
                        }
                    }
                    () = &mut tick => break,
                }
            }
        }
    }

    fn event(&mut self, pod: &Pod, kind: &str, reason: &str, message: String) {
        // The same event again within the window is not posted (kubelet aggregates them).
        let key = (reason.to_string(), message.clone());
        if self
            .events_sent
            .get(&key)
            .is_some_and(|t| t.elapsed() < Duration::from_secs(EVENT_REPEAT_WINDOW_S))
        {
            return;
        }
        if self.events_sent.len() >= EVENTS_REMEMBERED_MAX {
            self.events_sent.clear();
        }
        self.events_sent.insert(key, Instant::now());
        let Ok(permit) = self.shared.events.clone().try_acquire_owned() else {
            return;
        };
        let client = self.shared.client.clone();
        let ns = pod_namespace(pod).to_string();
        let now = Timestamp::now();
        let body = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": format!("{}.{:x}", pod_name(pod), now.as_nanosecond()), "namespace": ns},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": pod_name(pod), "namespace": ns, "uid": pod_uid(pod)},
            "reason": reason, "message": message, "type": kind,
            "source": {"component": "kubelet", "host": self.shared.cfg.node_name},
            "reportingComponent": "kubelet", "reportingInstance": self.shared.cfg.node_name,
            "firstTimestamp": crate::simulate::objects::time(now), "lastTimestamp": crate::simulate::objects::time(now), "count": 1,
        });
        tokio::spawn(async move {
            let _permit = permit;
            if let Ok(ev) = serde_json::from_value::<Event>(body) {
                let api: Api<Event> = Api::namespaced(client, &ns);
                if let Err(e) = api.create(&PostParams::default(), &ev).await {
                    tracing::debug!(error = %e, "posting an event failed");
                }
            }
        });
    }

    /// The pod's containers in the runtime, by name: (latest, the one before), removing
    /// older instances (kubelet keeps one dead container per container for logs).
    async fn observe(
        &self,
        pod: &Pod,
        sandbox: &str,
    ) -> Result<HashMap<String, (Option<Observed>, Option<Observed>)>, String> {
        let cri = &self.shared.cri;
        let mut sel = HashMap::new();
        sel.insert(cri::POD_UID_LABEL.to_string(), pod_uid(pod).to_string());
        let list = cri.list_containers(sel).await.map_err(|e| e.to_string())?;
        let mut by_name: HashMap<String, Vec<v1::Container>> = HashMap::new();
        for c in list {
            if c.pod_sandbox_id != sandbox {
                // A container of an older sandbox: it goes.
                let _ = cri.stop_container(&c.id, Duration::from_secs(0)).await;
                let _ = cri.remove_container(&c.id).await;
                continue;
            }
            let name = c
                .metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default();
            by_name.entry(name).or_default().push(c);
        }
        let mut out = HashMap::new();
        for (name, mut cs) in by_name {
            cs.sort_by_key(|c| {
                std::cmp::Reverse((c.metadata.as_ref().map_or(0, |m| m.attempt), c.created_at))
            });
            for old in cs.iter().skip(2) {
                let _ = cri.remove_container(&old.id).await;
            }
            let get = async |i: usize| -> Result<Option<Observed>, String> {
                match cs.get(i) {
                    Some(c) => Ok(cri
                        .container_status(&c.id)
                        .await
                        .map_err(|e| e.to_string())?
                        .map(|s| observed(&s))),
                    None => Ok(None),
                }
            };
            let cur = get(0).await?;
            let prev = get(1).await?;
            out.insert(name, (cur, prev));
        }
        Ok(out)
    }

    async fn ensure_sandbox(&mut self, pod: &Pod) -> Result<Option<String>, String> {
        let cri = &self.shared.cri;
        let mut sel = HashMap::new();
        sel.insert(cri::POD_UID_LABEL.to_string(), pod_uid(pod).to_string());
        let boxes = cri
            .list_pod_sandboxes(sel)
            .await
            .map_err(|e| e.to_string())?;
        let ready = boxes
            .iter()
            .filter(|b| b.state == v1::PodSandboxState::SandboxReady as i32)
            .max_by_key(|b| b.created_at);
        let log_dir = self.shared.cfg.root_dir.join("logs").join(format!(
            "{}_{}_{}",
            pod_namespace(pod),
            pod_name(pod),
            pod_uid(pod)
        ));
        let id = if let Some(b) = ready {
            if self.sandbox_config.as_ref().map(|(id, _)| id.as_str()) != Some(b.id.as_str()) {
                let attempt = b.metadata.as_ref().map_or(0, |m| m.attempt);
                let cfg = spec::sandbox_config(
                    pod,
                    &self.shared.cfg.node_name,
                    &log_dir.to_string_lossy(),
                    attempt,
                    self.shared.dns.clone(),
                );
                self.sandbox_config = Some((b.id.clone(), cfg));
            }
            b.id.clone()
        } else {
            let attempt = boxes
                .iter()
                .filter_map(|b| b.metadata.as_ref().map(|m| m.attempt + 1))
                .max()
                .unwrap_or(0);
            for b in &boxes {
                let _ = cri.stop_pod_sandbox(&b.id).await;
                let _ = cri.remove_pod_sandbox(&b.id).await;
            }
            std::fs::create_dir_all(&log_dir)
                .map_err(|e| format!("creating {}: {e}", log_dir.display()))?;
            let cfg = spec::sandbox_config(
                pod,
                &self.shared.cfg.node_name,
                &log_dir.to_string_lossy(),
                attempt,
                self.shared.dns.clone(),
            );
            // Held until this sync ends: a new pod's sandbox and containers start together,
            // so a burst of pods finishes one by one instead of all at the end.
            if self.start_permit.is_none() {
                self.start_permit = self.shared.starts.clone().acquire_owned().await.ok();
            }
            match cri.run_pod_sandbox(cfg.clone()).await {
                Ok(id) => {
                    self.sandbox_config = Some((id.clone(), cfg));
                    id
                }
                Err(e) => {
                    let msg = format!("Failed to create pod sandbox: {e}");
                    self.event(pod, "Warning", "FailedCreatePodSandBox", msg.clone());
                    for c in all_containers(pod) {
                        self.waiting
                            .insert(c.name.clone(), ("ContainerCreating".into(), msg.clone()));
                    }
                    return Ok(None);
                }
            }
        };
        if pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false)
        {
            self.pod_ips = vec![self.shared.cfg.node_ip.clone()];
        } else if let Some(st) = cri
            .pod_sandbox_status(&id)
            .await
            .map_err(|e| e.to_string())?
            && let Some(net) = st.network
        {
            let mut ips = vec![net.ip];
            ips.extend(net.additional_ips.into_iter().map(|i| i.ip));
            ips.retain(|i| !i.is_empty());
            self.pod_ips = ips;
        }
        Ok(Some(id))
    }

    async fn ensure_image(&mut self, pod: &Pod, c: &Container) -> Result<String, (String, String)> {
        let image = c.image.clone().unwrap_or_default();
        if image.is_empty() {
            return Err((
                "InvalidImageName".into(),
                "the container names no image".into(),
            ));
        }
        let cri = self.shared.cri.clone();
        let present = cri.image_status(&image).await.ok().flatten();
        let policy = pull_policy(c);
        let already = format!("Container image \"{image}\" already present on machine");
        if policy == "Never" {
            if present.is_some() {
                self.event(pod, "Normal", "Pulled", already);
            }
            return present.map(|i| i.id).ok_or_else(|| {
                (
                    "ErrImageNeverPull".into(),
                    format!("Container image \"{image}\" is not present with pull policy of Never"),
                )
            });
        }
        if let Some(p) = &present {
            if policy == "IfNotPresent" {
                self.event(pod, "Normal", "Pulled", already);
                return Ok(p.id.clone());
            }
            let recent = self
                .shared
                .pull_failures
                .lock()
                .ok()
                .and_then(|m| m.get(&image).copied());
            if recent.is_some_and(|t| t.elapsed() < Duration::from_secs(PULL_FAILURE_MEMORY_S)) {
                return Ok(p.id.clone());
            }
        }
        if let Some((next, _)) = self.pull_backoff.get(&c.name)
            && Instant::now() < *next
        {
            return Err((
                "ImagePullBackOff".into(),
                format!("Back-off pulling image \"{image}\""),
            ));
        }
        self.event(
            pod,
            "Normal",
            "Pulling",
            format!("Pulling image \"{image}\""),
        );
        match cri.pull_image(&image).await {
            Ok(r) => {
                self.pull_backoff.remove(&c.name);
                self.event(
                    pod,
                    "Normal",
                    "Pulled",
                    format!("Successfully pulled image \"{image}\""),
                );
                Ok(r)
            }
            Err(e) => {
                if let Ok(mut m) = self.shared.pull_failures.lock() {
                    m.insert(image.clone(), Instant::now());
                }
                if let Some(p) = present {
                    tracing::info!(image, error = %e, "pulling failed; using the copy on the node");
                    return Ok(p.id);
                }
                let delay = self
                    .pull_backoff
                    .get(&c.name)
                    .map_or(Duration::from_secs(BACKOFF_INITIAL_S), |(_, d)| {
                        (*d * 2).min(Duration::from_secs(BACKOFF_MAX_S))
                    });
                self.pull_backoff
                    .insert(c.name.clone(), (Instant::now() + delay, delay));
                let msg = format!("Failed to pull image \"{image}\": {e}");
                self.event(pod, "Warning", "Failed", msg.clone());
                Err(("ErrImagePull".into(), msg))
            }
        }
    }

    /// env, envFrom, downward API and service links, in kubelet's order.
    async fn environment(&self, pod: &Pod, c: &Container) -> Result<Vec<(String, String)>, String> {
        let client = &self.shared.client;
        let ns = pod_namespace(pod);
        let mut env: Vec<(String, String)> = Vec::new();
        let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
            if let Some(e) = env.iter_mut().find(|(n, _)| *n == k) {
                e.1 = v;
            } else {
                env.push((k, v));
            }
        };
        if pod
            .spec
            .as_ref()
            .and_then(|s| s.enable_service_links)
            .unwrap_or(true)
        {
            let mut svcs: Vec<Service> = Api::<Service>::namespaced(client.clone(), ns)
                .list(&ListParams::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default();
            if ns != "default"
                && let Ok(k) = Api::<Service>::namespaced(client.clone(), "default")
                    .get("kubernetes")
                    .await
            {
                svcs.push(k);
            }
            for s in svcs {
                let Some(spec) = s.spec else { continue };
                let ip = spec.cluster_ip.unwrap_or_default();
                if ip.is_empty() || ip == "None" {
                    continue;
                }
                let ports: Vec<(Option<String>, i32, String)> = spec
                    .ports
                    .unwrap_or_default()
                    .into_iter()
                    .map(|p| (p.name, p.port, p.protocol.unwrap_or_else(|| "TCP".into())))
                    .collect();
                for (k, v) in
                    spec::service_env(s.metadata.name.as_deref().unwrap_or(""), &ip, &ports)
                {
                    set(&mut env, k, v);
                }
            }
        }
        for from in c.env_from.iter().flatten() {
            let prefix = from.prefix.clone().unwrap_or_default();
            if let Some(r) = &from.config_map_ref {
                match Api::<ConfigMap>::namespaced(client.clone(), ns)
                    .get_opt(&r.name)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    Some(cm) => {
                        for (k, v) in cm.data.unwrap_or_default() {
                            set(&mut env, format!("{prefix}{k}"), v);
                        }
                    }
                    None if r.optional.unwrap_or(false) => {}
                    None => return Err(format!("configmap \"{}\" not found", r.name)),
                }
            }
            if let Some(r) = &from.secret_ref {
                match Api::<Secret>::namespaced(client.clone(), ns)
                    .get_opt(&r.name)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    Some(s) => {
                        for (k, v) in s.data.unwrap_or_default() {
                            set(
                                &mut env,
                                format!("{prefix}{k}"),
                                String::from_utf8_lossy(&v.0).into_owned(),
                            );
                        }
                    }
                    None if r.optional.unwrap_or(false) => {}
                    None => return Err(format!("secret \"{}\" not found", r.name)),
                }
            }
        }
        for e in c.env.iter().flatten() {
            let value = if let Some(v) = &e.value {
                let vars: HashMap<&str, &str> =
                    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                spec::expand(v, &vars)
            } else if let Some(src) = &e.value_from {
                if let Some(r) = &src.config_map_key_ref {
                    let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
                        .get_opt(&r.name)
                        .await
                        .map_err(|e| e.to_string())?;
                    match cm.and_then(|cm| cm.data.and_then(|mut d| d.remove(&r.key))) {
                        Some(v) => v,
                        None if r.optional.unwrap_or(false) => continue,
                        None => {
                            return Err(format!(
                                "couldn't find key {} in ConfigMap {ns}/{}",
                                r.key, r.name
                            ));
                        }
                    }
                } else if let Some(r) = &src.secret_key_ref {
                    let s = Api::<Secret>::namespaced(client.clone(), ns)
                        .get_opt(&r.name)
                        .await
                        .map_err(|e| e.to_string())?;
                    match s.and_then(|s| s.data.and_then(|mut d| d.remove(&r.key))) {
                        Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                        None if r.optional.unwrap_or(false) => continue,
                        None => {
                            return Err(format!(
                                "couldn't find key {} in Secret {ns}/{}",
                                r.key, r.name
                            ));
                        }
                    }
                } else if let Some(f) = &src.field_ref {
                    spec::field_value(pod, &f.field_path, &self.shared.cfg.node_ip, &self.pod_ips)
                        .ok_or_else(|| format!("unsupported fieldPath {:?}", f.field_path))?
                } else if let Some(r) = &src.resource_field_ref {
                    let res = r.resource.split('.').nth(1).unwrap_or("");
                    let fallback = self.shared.allocatable.get(res).map_or("0", String::as_str);
                    spec::resource_field(
                        c,
                        &r.resource,
                        r.divisor.as_ref().map_or("1", |d| d.0.as_str()),
                        fallback,
                    )
                    .ok_or_else(|| format!("unsupported resource {:?}", r.resource))?
                } else {
                    String::new()
                }
            } else {
                String::new()
            };
            set(&mut env, e.name.clone(), value);
        }
        Ok(env)
    }

    async fn refresh_volumes(&mut self, pod: &Pod, force: bool) -> Result<(), String> {
        let due = self
            .volumes_at
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(VOLUME_REFRESH_INTERVAL_MS));
        if !(force || due) {
            return Ok(());
        }
        let dir = volumes::pod_dir(&self.shared.cfg.root_dir, pod);
        let env = volumes::Env {
            client: &self.shared.client,
            pod_dir: &dir,
            host_ip: &self.shared.cfg.node_ip,
            pod_ips: &self.pod_ips,
            allocatable: &self.shared.allocatable,
        };
        let r = volumes::prepare(&env, pod, &mut self.volumes).await;
        self.volumes_at = Some(Instant::now());
        match r {
            Ok(p) => {
                self.prepared = Some(p);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Creates and starts one container; on failure records why it waits.
    async fn start(&mut self, pod: &Pod, sandbox: &str, c: &Container, attempt: u32, init: bool) {
        let t = Instant::now();
        let image = match self.ensure_image(pod, c).await {
            Ok(i) => i,
            Err(w) => {
                self.waiting.insert(c.name.clone(), w);
                return;
            }
        };
        let env = match self.environment(pod, c).await {
            Ok(e) => e,
            Err(e) => {
                self.event(pod, "Warning", "Failed", format!("Error: {e}"));
                self.waiting
                    .insert(c.name.clone(), ("CreateContainerConfigError".into(), e));
                return;
            }
        };
        let mounts = match self.prepared.as_ref().map(|p| volumes::mounts(c, p)) {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                self.waiting
                    .insert(c.name.clone(), ("CreateContainerConfigError".into(), e));
                return;
            }
            None => {
                self.waiting
                    .insert(c.name.clone(), ("ContainerCreating".into(), String::new()));
                return;
            }
        };
        let Some((_, sandbox_config)) = self.sandbox_config.clone() else {
            return;
        };
        let _ = std::fs::create_dir_all(
            std::path::Path::new(&sandbox_config.log_directory).join(&c.name),
        );
        let image_name = c.image.clone().unwrap_or(image);
        let config = spec::container_config(
            pod,
            c,
            spec::Resolved {
                image: image_name,
                env,
                mounts,
                attempt,
                init,
            },
        );
        let cri = self.shared.cri.clone();
        step(pod, "image and env", t);
        let t = Instant::now();
        if self.start_permit.is_none() {
            self.start_permit = self.shared.starts.clone().acquire_owned().await.ok();
        }
        let id = match cri.create_container(sandbox, config, sandbox_config).await {
            Ok(id) => id,
            Err(e) => {
                let msg = e.to_string();
                self.event(pod, "Warning", "Failed", format!("Error: {msg}"));
                self.waiting
                    .insert(c.name.clone(), ("CreateContainerError".into(), msg));
                return;
            }
        };
        step(pod, "create container", t);
        let t = Instant::now();
        self.event(
            pod,
            "Normal",
            "Created",
            format!("Created container {}", c.name),
        );
        if let Err(e) = cri.start_container(&id).await {
            let msg = e.to_string();
            self.event(pod, "Warning", "Failed", format!("Error: {msg}"));
            self.waiting
                .insert(c.name.clone(), ("RunContainerError".into(), msg));
            return;
        }
        step(pod, "start container", t);
        self.resync_now = true;
        self.event(
            pod,
            "Normal",
            "Started",
            format!("Started container {}", c.name),
        );
        self.waiting.remove(&c.name);
    }

    /// Whether an exited container may be restarted now (kubelet's back-off).
    fn may_restart(&mut self, name: &str, o: &Observed) -> bool {
        let State::Exited {
            started_at,
            finished_at,
            ..
        } = &o.state
        else {
            return true;
        };
        let ran = started_at.map_or(0, |s| finished_at.as_second() - s.as_second());
        if ran >= BACKOFF_RESET_S {
            self.restart_backoff.remove(name);
        }
        let now = Timestamp::now();
        match self.restart_backoff.get_mut(name) {
            None => {
                self.restart_backoff.insert(
                    name.to_string(),
                    Backoff {
                        delay: Duration::from_secs(BACKOFF_INITIAL_S),
                    },
                );
                true
            }
            Some(b) => {
                let since =
                    Duration::from_secs((now.as_second() - finished_at.as_second()).max(0) as u64);
                if since >= b.delay {
                    b.delay = (b.delay * 2).min(Duration::from_secs(BACKOFF_MAX_S));
                    true
                } else {
                    false
                }
            }
        }
    }

    async fn probe(&mut self, pod: &Pod, c: &Container, o: &Observed, view: &mut ContainerView) {
        let State::Running { started_at } = o.state else {
            return;
        };
        let now = Instant::now();
        let age = Duration::from_secs(
            (Timestamp::now().as_second() - started_at.as_second()).max(0) as u64,
        );
        let started_instant = now.checked_sub(age).unwrap_or(now);
        // Startup first: until it passes, the others wait.
        let mut started = true;
        if let Some(p) = &c.startup_probe
            && self.tally(&c.name, &o.id, Kind::Startup).passing != Some(true)
        {
            let (flipped, passing) = self
                .check(pod, c, o, Kind::Startup, p, started_instant, now)
                .await;
            started = passing == Some(true);
            if flipped == Some(false) {
                self.kill_for_restart(pod, c, o, "failed startup probe")
                    .await;
            }
        }
        view.started = started;
        if !started {
            view.ready = false;
            return;
        }
        if let Some(p) = &c.liveness_probe {
            let (flipped, _) = self
                .check(pod, c, o, Kind::Liveness, p, started_instant, now)
                .await;
            if flipped == Some(false) {
                self.probes.remove(&(c.name.clone(), Kind::Liveness));
                self.kill_for_restart(pod, c, o, "failed liveness probe")
                    .await;
                view.ready = false;
                return;
            }
        }
        view.ready = match &c.readiness_probe {
            None => true,
            Some(p) => {
                self.check(pod, c, o, Kind::Readiness, p, started_instant, now)
                    .await
                    .1
                    == Some(true)
            }
        };
    }

    /// Runs one try of a probe when it is due and records it (an `Unhealthy` event per failed
    /// try, as kubelet posts); (the result if this try flipped it, the current result).
    #[allow(clippy::too_many_arguments)]
    async fn check(
        &mut self,
        pod: &Pod,
        c: &Container,
        o: &Observed,
        kind: Kind,
        p: &k8s_openapi::api::core::v1::Probe,
        started_instant: Instant,
        now: Instant,
    ) -> (Option<bool>, Option<bool>) {
        let tm = probe::timing(p);
        let mut t = self.tally(&c.name, &o.id, kind);
        let mut flipped = None;
        if t.due(&tm, started_instant, now) {
            let pod_ip = self.pod_ips.first().cloned().unwrap_or_default();
            let r = probe::run(&self.shared.cri, &o.id, c, p, &pod_ip, &tm).await;
            let (ok, msg) = (r.is_ok(), r.err().unwrap_or_default());
            if !ok {
                let what = match kind {
                    Kind::Startup => "Startup",
                    Kind::Liveness => "Liveness",
                    Kind::Readiness => "Readiness",
                };
                self.event(
                    pod,
                    "Warning",
                    "Unhealthy",
                    format!("{what} probe failed: {msg}"),
                );
            }
            flipped = t.record(&tm, ok, msg, now);
        }
        let passing = t.passing;
        self.probes
            .insert((c.name.clone(), kind), (o.id.clone(), t));
        (flipped, passing)
    }

    /// A probe's tally for this container instance (a new instance starts afresh).
    fn tally(&self, name: &str, id: &str, kind: Kind) -> Tally {
        match self.probes.get(&(name.to_string(), kind)) {
            Some((i, t)) if i == id => t.clone(),
            _ => Tally::default(),
        }
    }

    async fn kill_for_restart(&mut self, pod: &Pod, c: &Container, o: &Observed, why: &str) {
        self.event(
            pod,
            "Normal",
            "Killing",
            format!("Container {} {why}, will be restarted", c.name),
        );
        let grace = Duration::from_secs(
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
                .unwrap_or(30)
                .max(0) as u64,
        );
        if let Err(e) = self.shared.cri.stop_container(&o.id, grace).await {
            tracing::warn!(container = c.name, error = %e, "stopping an unhealthy container failed");
        }
    }

    async fn sync(&mut self, pod: &Pod) -> Result<Flow, String> {
        if pod.metadata.deletion_timestamp.is_some() {
            return self.teardown(pod, grace_of(pod), true).await;
        }
        if self.start_time.is_none() {
            self.start_time = Some(
                pod.status
                    .as_ref()
                    .and_then(|s| s.start_time.as_ref())
                    .map_or_else(Timestamp::now, |t| t.0),
            );
        }
        let api_phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("");
        if self.terminal || matches!(api_phase, "Succeeded" | "Failed") {
            self.terminal = true;
            return Ok(Flow::Continue);
        }
        let t = Instant::now();
        let Some(sandbox) = self.ensure_sandbox(pod).await? else {
            self.post_status(pod, false, &HashMap::new(), false).await?;
            return Ok(Flow::Continue);
        };
        step(pod, "sandbox", t);
        let vol_err = self
            .refresh_volumes(pod, self.prepared.is_none())
            .await
            .err();
        if let Some(e) = &vol_err {
            if self.prepared.is_none() {
                for c in all_containers(pod) {
                    self.waiting
                        .insert(c.name.clone(), ("ContainerCreating".into(), e.clone()));
                }
            }
            self.event(
                pod,
                "Warning",
                "FailedMount",
                format!("MountVolume.SetUp failed: {e}"),
            );
        }
        let mut seen = self.observe(pod, &sandbox).await?;
        let spec = pod.spec.clone().unwrap_or_default();
        let mut views: HashMap<String, ContainerView> = HashMap::new();
        let mut init_views: HashMap<String, ContainerView> = HashMap::new();
        // Init containers, one at a time, in order.
        let mut initialized = true;
        for c in spec.init_containers.iter().flatten() {
            let (cur, prev) = seen.remove(&c.name).unwrap_or((None, None));
            let mut next = false;
            match &cur {
                None if self.prepared.is_some() => self.start(pod, &sandbox, c, 0, true).await,
                Some(o) if o.exited() == Some(0) => next = true,
                Some(o) => match o.exited() {
                    Some(code) if status::init_restarts(pod, code) => {
                        if self.may_restart(&c.name, o) {
                            self.start(pod, &sandbox, c, o.attempt + 1, true).await;
                        } else {
                            self.waiting.insert(
                                c.name.clone(),
                                (
                                    "CrashLoopBackOff".into(),
                                    format!(
                                        "back-off restarting failed container={} pod={}",
                                        c.name,
                                        pod_name(pod)
                                    ),
                                ),
                            );
                        }
                    }
                    Some(_) => {}
                    None if matches!(o.state, State::Created) => {
                        let _ = self.shared.cri.start_container(&o.id).await;
                    }
                    None => {}
                },
                None => {}
            }
            init_views.insert(
                c.name.clone(),
                ContainerView {
                    current: cur,
                    previous: prev,
                    waiting: self.waiting.get(&c.name).cloned(),
                    ready: false,
                    started: false,
                },
            );
            if !next {
                initialized = false;
                break;
            }
        }
        for c in &spec.containers {
            let (cur, prev) = seen.remove(&c.name).unwrap_or((None, None));
            let mut view = ContainerView {
                current: cur.clone(),
                previous: prev,
                ..ContainerView::default()
            };
            if initialized {
                match &cur {
                    None if self.prepared.is_some() => self.start(pod, &sandbox, c, 0, false).await,
                    None => {}
                    Some(o) if o.running() => {
                        self.waiting.remove(&c.name);
                        self.probe(pod, c, o, &mut view).await;
                    }
                    Some(o) if matches!(o.state, State::Created) => {
                        if let Err(e) = self.shared.cri.start_container(&o.id).await {
                            self.waiting.insert(
                                c.name.clone(),
                                ("RunContainerError".into(), e.to_string()),
                            );
                        }
                    }
                    Some(o) => {
                        let code = o.exited().unwrap_or(0);
                        if status::restarts(pod, code) {
                            if self.may_restart(&c.name, o) {
                                self.start(pod, &sandbox, c, o.attempt + 1, false).await;
                                if !self.waiting.contains_key(&c.name) {
                                    // Started: report the exit as lastState until the next look.
                                    self.waiting.insert(
                                        c.name.clone(),
                                        ("ContainerCreating".into(), String::new()),
                                    );
                                }
                            } else {
                                let delay = self
                                    .restart_backoff
                                    .get(&c.name)
                                    .map_or(BACKOFF_INITIAL_S, |b| b.delay.as_secs());
                                self.event(
                                    pod,
                                    "Warning",
                                    "BackOff",
                                    "Back-off restarting failed container".into(),
                                );
                                self.waiting.insert(c.name.clone(), ("CrashLoopBackOff".into(), format!("back-off {delay}s restarting failed container={} pod={}_{}({})", c.name, pod_name(pod), pod_namespace(pod), pod_uid(pod))));
                            }
                        } else {
                            self.waiting.remove(&c.name);
                        }
                    }
                }
            }
            view.waiting = self.waiting.get(&c.name).cloned();
            if view.current.as_ref().is_some_and(|o| !o.running()) {
                view.ready = false;
            }
            views.insert(c.name.clone(), view);
        }
        let phase = self
            .post_status_views(pod, true, &init_views, &views, false)
            .await?;
        if matches!(phase.as_str(), "Succeeded" | "Failed") {
            // Finished for good: stop what remains (a sidecar) and the sandbox; keep the
            // containers for their logs until the pod is deleted.
            self.terminal = true;
            self.stop_all(pod, grace_of(pod)).await;
        }
        Ok(Flow::Continue)
    }

    async fn post_status(
        &mut self,
        pod: &Pod,
        sandbox_ready: bool,
        views: &HashMap<String, ContainerView>,
        deleting: bool,
    ) -> Result<String, String> {
        let mut all: HashMap<String, ContainerView> = views.clone();
        for c in all_containers(pod) {
            all.entry(c.name.clone()).or_insert_with(|| ContainerView {
                waiting: self.waiting.get(&c.name).cloned(),
                ..ContainerView::default()
            });
        }
        self.post_status_views(pod, sandbox_ready, &all, &all, deleting)
            .await
    }

    async fn post_status_views(
        &mut self,
        pod: &Pod,
        sandbox_ready: bool,
        init: &HashMap<String, ContainerView>,
        views: &HashMap<String, ContainerView>,
        deleting: bool,
    ) -> Result<String, String> {
        let now = Timestamp::now();
        let inputs = status::Inputs {
            pod,
            init,
            containers: views,
            sandbox_ready,
            pod_ips: &self.pod_ips,
            host_ip: &self.shared.cfg.node_ip,
            start_time: self.start_time.unwrap_or(now),
            terminated_for_deletion: deleting,
        };
        let st = status::pod_status(&inputs, now);
        let phase = st["phase"].as_str().unwrap_or("Pending").to_string();
        if self.last_status.as_ref() != Some(&st) {
            let t = Instant::now();
            let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), pod_namespace(pod));
            match api
                .patch_status(
                    pod_name(pod),
                    &PatchParams::default(),
                    &Patch::Merge(&json!({ "status": st })),
                )
                .await
            {
                Ok(_) => {
                    self.last_status = Some(st);
                    step(pod, "post status", t);
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(format!("posting the pod's status: {e}")),
            }
        }
        Ok(phase)
    }

    async fn stop_all(&self, pod: &Pod, grace: Duration) {
        let cri = &self.shared.cri;
        let mut sel = HashMap::new();
        sel.insert(cri::POD_UID_LABEL.to_string(), pod_uid(pod).to_string());
        let list = cri.list_containers(sel.clone()).await.unwrap_or_default();
        let running = list
            .iter()
            .filter(|c| c.state == v1::ContainerState::ContainerRunning as i32);
        futures::future::join_all(running.map(|c| async move {
            if let Err(e) = cri.stop_container(&c.id, grace).await {
                tracing::warn!(container = c.id, error = %e, "stopping a container failed");
            }
        }))
        .await;
        for b in cri.list_pod_sandboxes(sel).await.unwrap_or_default() {
            if let Err(e) = cri.stop_pod_sandbox(&b.id).await {
                tracing::warn!(sandbox = b.id, error = %e, "stopping a sandbox failed");
            }
        }
    }

    /// Stops the pod's containers within `grace`, reports them terminated, removes them and
    /// (when `delete_object`) finishes the pod's deletion in the API.
    async fn teardown(
        &mut self,
        pod: &Pod,
        grace: Duration,
        delete_object: bool,
    ) -> Result<Flow, String> {
        let cri = self.shared.cri.clone();
        self.event(
            pod,
            "Normal",
            "Killing",
            format!(
                "Stopping the pod's containers (grace {} s)",
                grace.as_secs()
            ),
        );
        self.stop_all(pod, grace).await;
        let mut sel = HashMap::new();
        sel.insert(cri::POD_UID_LABEL.to_string(), pod_uid(pod).to_string());
        if delete_object {
            // Report the containers stopped, as kubelet does before the pod goes.
            let mut views = HashMap::new();
            let mut inits = HashMap::new();
            let init_names: Vec<String> = pod
                .spec
                .as_ref()
                .and_then(|s| s.init_containers.as_ref())
                .map(|v| v.iter().map(|c| c.name.clone()).collect())
                .unwrap_or_default();
            if let Some((sandbox, _)) = &self.sandbox_config {
                let sandbox = sandbox.clone();
                for (name, (cur, prev)) in self.observe(pod, &sandbox).await.unwrap_or_default() {
                    let v = ContainerView {
                        current: cur,
                        previous: prev,
                        ..ContainerView::default()
                    };
                    if init_names.contains(&name) {
                        inits.insert(name, v);
                    } else {
                        views.insert(name, v);
                    }
                }
            }
            if let Err(e) = self
                .post_status_views(pod, false, &inits, &views, true)
                .await
            {
                tracing::debug!(error = %e, "reporting a deleted pod's final status failed");
            }
        }
        for c in cri
            .list_containers(sel.clone())
            .await
            .map_err(|e| e.to_string())?
        {
            cri.remove_container(&c.id)
                .await
                .map_err(|e| e.to_string())?;
        }
        for b in cri
            .list_pod_sandboxes(sel)
            .await
            .map_err(|e| e.to_string())?
        {
            let _ = cri.stop_pod_sandbox(&b.id).await;
            cri.remove_pod_sandbox(&b.id)
                .await
                .map_err(|e| e.to_string())?;
        }
        let _ = std::fs::remove_dir_all(volumes::pod_dir(&self.shared.cfg.root_dir, pod));
        if delete_object {
            let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), pod_namespace(pod));
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: pod.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(pod_name(pod), &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => return Err(format!("finishing the pod's deletion: {e}")),
            }
        }
        Ok(Flow::Done)
    }
}

/// Logs how long one step of a pod's sync took (debug level; `RUST_LOG=logbook_node=debug`).
fn step(pod: &Pod, what: &str, since: Instant) {
    tracing::debug!(
        pod = pod_name(pod),
        step = what,
        ms = since.elapsed().as_millis() as u64,
        "sync step"
    );
}

/// What a worker reacts to at once: anything but the status (and the resource version).
fn fingerprint(u: &Update) -> String {
    let (gone, p) = match u {
        Update::Pod(p) => (false, p),
        Update::Gone(p) => (true, p),
    };
    let m = &p.metadata;
    serde_json::to_string(&(
        gone,
        &p.spec,
        &m.deletion_timestamp,
        &m.labels,
        &m.annotations,
    ))
    .unwrap_or_default()
}

/// Init containers then containers.
fn all_containers(pod: &Pod) -> Vec<Container> {
    let spec = pod.spec.as_ref();
    spec.and_then(|s| s.init_containers.clone())
        .unwrap_or_default()
        .into_iter()
        .chain(spec.map(|s| s.containers.clone()).unwrap_or_default())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_defaults_like_the_api_server() {
        let c = |image: &str| Container {
            name: "c".into(),
            image: Some(image.into()),
            ..Container::default()
        };
        assert_eq!(pull_policy(&c("busybox")), "Always");
        assert_eq!(pull_policy(&c("busybox:latest")), "Always");
        assert_eq!(pull_policy(&c("busybox:1.36")), "IfNotPresent");
        assert_eq!(pull_policy(&c("localhost:5000/busybox")), "Always");
        assert_eq!(pull_policy(&c("busybox@sha256:abc")), "IfNotPresent");
    }
}
