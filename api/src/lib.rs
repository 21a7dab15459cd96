//! logbook-api: the Kubernetes HTTP(S) API over the event log.
//!
//! Owns: routing of Kubernetes paths ([`request`]), the request corridor — identity from
//! the TLS client certificate, decode, admission ([`admission`]: mutating, then
//! validating), strategy ([`strategy`]), store — for every verb
//! ([`handlers`], [`list`], [`watch`]), server-side printing — Tables and
//! PartialObjectMetadata negotiated from `Accept` ([`table`]) — discovery ([`discovery`]),
//! OpenAPI v2/v3 ([`openapi`]), field ownership and server-side apply ([`fields`]), the
//! CustomResourceDefinition controller that swaps custom resources into the registry
//! ([`crd`]), Service address allocation ([`service_alloc`]), the pod action subresources
//! ([`pod_actions`]) with their proxy to node agents ([`node_proxy`]), health, `/version`,
//! Prometheus metrics ([`metrics`]), and the HTTPS listener ([`serve`]: rustls, HTTP/2 and
//! HTTP/1.1 over ALPN, HTTP/1.1 upgrades, graceful shutdown).
//!
//! Start reading at [`handle`]: one function routes every request.
//!
//! # Invariants
//! - Knows the store only through logbook-store's public API (`EventLog`, `WatchHub`), never
//!   how the store lays out keys on disk.
//! - Knows Kubernetes kinds only through logbook-schema's registry: no generic handler names
//!   a kind; per-kind behaviour is registry data or lives in a module named for it
//!   ([`strategy`] branches, [`service_alloc`], [`pod_actions`] and the Node endpoint it
//!   proxies to ([`node_proxy`]), [`crd`]).
//! - Every error a client sees is a `Status` ([`error::ApiError`]); no input panics.
//! - A request body is read under [`REQUEST_BODY_BYTES_MAX`]; a malformed body is refused
//!   before anything is appended.

pub mod admission;
pub mod auth;
pub mod crd;
pub mod discovery;
pub mod duplicates;
pub mod error;
pub mod fairness;
pub mod fields;
pub mod handlers;
pub mod history;
pub mod list;
pub mod metrics;
pub mod node_proxy;
pub mod object;
pub mod openapi;
pub mod openapi_pb;
pub mod pod_actions;
pub mod quota;
pub mod request;
pub mod service_alloc;
pub mod strategy;
pub mod table;
pub mod watch;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use logbook_schema::registry::Registry;
use logbook_store::{EventLog, WatchHub};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::error::{ApiError, from_store};
use crate::handlers::Ctx;
use crate::request::{Query, Route, parse_path};

pub use metrics::Metrics;

/// Largest request body accepted (413 above), as kube-apiserver's 3 MiB.
pub const REQUEST_BODY_BYTES_MAX: usize = 3 * 1024 * 1024;
/// How much of an oversized body is read (and dropped) before answering 413, so clients
/// that send the whole body before reading see the status rather than a reset.
pub const REQUEST_BODY_DRAIN_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Non-watch requests served at once; more get 429 (kube: --max-requests-inflight).
pub const REQUESTS_INFLIGHT_MAX: usize = 2_048;
/// How long shutdown waits for open connections to finish before exiting anyway.
pub const SHUTDOWN_GRACE_MS: u64 = 10_000;
/// How long a client may take to complete the TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// How long an HTTP/1 client may take to send a request's headers, counted from when the
/// connection starts waiting for them, so it also bounds an idle keep-alive connection: a
/// slow-loris client is disconnected after this. Longer than the 90 s for which client-go
/// and hyper keep idle connections, so a client always closes an idle connection before
/// the server does and never sends a request into one being closed.
pub const HTTP1_HEADER_READ_TIMEOUT_MS: u64 = 120_000;

/// Connection-level settings of [`serve`] that tests shorten.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// See [`HTTP1_HEADER_READ_TIMEOUT_MS`].
    pub http1_header_read_timeout: Duration,
    /// Checks client certificate chains after the handshake (the TLS configuration's
    /// verifier defers them, [`auth::tls::DeferredClientVerifier`]); `None`: every presented
    /// certificate is refused.
    pub client_verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            http1_header_read_timeout: Duration::from_millis(HTTP1_HEADER_READ_TIMEOUT_MS),
            client_verifier: None,
        }
    }
}
/// Largest request head (request line and headers) an HTTP/1 client may send, in bytes.
pub const HTTP1_HEAD_BYTES_MAX: usize = 64 * 1024;
/// Streams one HTTP/2 connection may have open at once (kube-apiserver's
/// `--http2-max-streams-per-connection` default).
pub const HTTP2_STREAMS_PER_CONNECTION_MAX: u32 = 1_000;
/// Largest header list of one HTTP/2 request, in bytes.
pub const HTTP2_HEADER_LIST_BYTES_MAX: u32 = 64 * 1024;
/// HTTP/2 keep-alive: a ping after this long without frames…
pub const HTTP2_KEEPALIVE_INTERVAL_MS: u64 = 30_000;
/// …and the connection is closed when its answer takes longer than this.
pub const HTTP2_KEEPALIVE_TIMEOUT_MS: u64 = 20_000;
/// Streams a client may open and reset before being answered (the HTTP/2 "rapid reset"
/// attack, CVE-2023-44487) before the connection is closed.
pub const HTTP2_PENDING_RESET_STREAMS_MAX: usize = 100;
/// Longest client-sent `Audit-ID` used as the request id (longer ones are replaced).
pub const AUDIT_ID_CHARS_MAX: usize = 128;
/// Longest `User-Agent` recorded with a write (longer ones are cut).
pub const USER_AGENT_CHARS_MAX: usize = 256;
/// The Kubernetes version this server reports (the API surface it follows).
pub const KUBERNETES_VERSION: (&str, &str) = ("1", "33");

/// Who made a request: the TLS client certificate's CN and O's (anonymous without one).
#[derive(Clone, Debug)]
pub struct Identity {
    pub user: String,
    /// The user's uid, when the authenticator knows one (a ServiceAccount's).
    pub uid: String,
    pub groups: Vec<String>,
    /// Extra fields of the user (a bound token's pod, its credential id).
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
    /// The request's `User-Agent` ("" when absent).
    pub user_agent: String,
    /// The client's address, `ip:port` ("" for the server's own writes).
    pub source: String,
    /// The request's id: the client's `Audit-ID` header when it sent a usable one, else a
    /// new UUID; echoed in the `Audit-Id` response header and recorded with every event the
    /// request writes, so client logs join the history.
    pub request_id: String,
}

impl Identity {
    pub fn anonymous() -> Self {
        Identity {
            user: "system:anonymous".into(),
            uid: String::new(),
            groups: vec!["system:unauthenticated".into()],
            extra: Default::default(),
            user_agent: String::new(),
            source: String::new(),
            request_id: String::new(),
        }
    }

    /// The server itself (bootstrap objects, the CRD controller, allocators).
    pub fn system() -> Self {
        Identity {
            user: "system:logbook".into(),
            uid: String::new(),
            groups: vec!["system:masters".into()],
            extra: Default::default(),
            user_agent: concat!("logbook/", env!("CARGO_PKG_VERSION")).into(),
            source: String::new(),
            request_id: String::new(),
        }
    }
}

/// The API server's shared state.
/// The registry behind a lock, swapped whole: CustomResourceDefinitions add and remove
/// resources while requests hold the snapshot they started with.
pub struct RegistryHandle(std::sync::RwLock<Arc<Registry>>);

impl RegistryHandle {
    pub fn new(r: Registry) -> Self {
        RegistryHandle(std::sync::RwLock::new(Arc::new(r)))
    }

    /// The current registry.
    pub fn load(&self) -> Arc<Registry> {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Changes the registry: a copy is changed and swapped in.
    pub fn update(&self, f: impl FnOnce(&mut Registry)) {
        let mut g = match self.0.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut next = (**g).clone();
        f(&mut next);
        *g = Arc::new(next);
    }
}

pub struct Api {
    pub log: EventLog,
    pub hub: WatchHub,
    pub registry: RegistryHandle,
    pub metrics: Metrics,
    /// Flips to true on shutdown: watch streams end.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// The address clients reach this server at (for `/api`'s serverAddressByClientCIDRs).
    pub server_address: String,
    /// Watch event lines rendered once for every watcher without selectors.
    pub lines: watch::LineCache,
    /// OpenAPI documents built from the registry.
    pub openapi: openapi::Cache,
    /// Where Service ClusterIPs and NodePorts come from.
    pub service_ranges: service_alloc::Ranges,
    /// Every printer's Table `columnDefinitions`, rendered once.
    pub columns: table::Columns,
    inflight: Arc<Semaphore>,
    /// Each user's share of the requests in flight.
    pub shares: fairness::UserShares,
    /// Each certificate user's executing slots and queue, before a request is handled.
    pub gates: Arc<fairness::Gates>,
    /// Authentication and authorization settings.
    pub auth: auth::Auth,
    /// The RBAC objects, indexed for decisions.
    pub rbac: auth::rbac::Rbac,
    /// Creates in a namespace with quotas are admitted one at a time.
    pub quota_locks: quota::NamespaceLocks,
    /// The admission chain's caches and webhook client limits.
    pub admission: admission::State,
    /// The client of node agents for logs, exec, attach and port-forward (its certificate
    /// is set after [`Api::new`], by whoever holds the PKI).
    pub node_proxy: node_proxy::NodeProxy,
}

impl Api {
    pub fn new(
        log: EventLog,
        hub: WatchHub,
        mut registry: Registry,
        shutdown: tokio::sync::watch::Receiver<bool>,
        server_address: String,
        service_ranges: service_alloc::Ranges,
        auth: auth::Auth,
    ) -> Arc<Self> {
        Arc::new(Api {
            log,
            hub,
            registry: RegistryHandle::new({
                history::register(&mut registry);
                auth::reviews::register(&mut registry);
                registry
            }),
            metrics: Metrics::default(),
            shutdown,
            server_address,
            lines: watch::LineCache::default(),
            openapi: openapi::Cache::default(),
            service_ranges,
            columns: table::Columns::default(),
            inflight: Arc::new(Semaphore::new(REQUESTS_INFLIGHT_MAX)),
            shares: fairness::UserShares::default(),
            gates: Arc::new(fairness::Gates::default()),
            auth,
            rbac: auth::rbac::Rbac::default(),
            quota_locks: quota::NamespaceLocks::default(),
            admission: admission::State::default(),
            node_proxy: node_proxy::NodeProxy::default(),
        })
    }

    /// Creates the namespaces every cluster has (`default`, `kube-system`, `kube-public`,
    /// `kube-node-lease`) when missing.
    ///
    /// # Errors
    /// A store failure.
    pub async fn bootstrap(self: &Arc<Self>) -> Result<(), ApiError> {
        let Some(info) = self.registry.load().get("", "v1", "namespaces").cloned() else {
            return Err(ApiError::internal("the registry has no namespaces"));
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let ctx = Ctx {
                api: self.clone(),
                info: info.clone(),
                target: request::Target {
                    group: String::new(),
                    version: "v1".into(),
                    plural: "namespaces".into(),
                    namespace: None,
                    name: None,
                    subresource: None,
                    legacy_watch: false,
                },
                query: Query::default(),
                identity: Identity::system(),
                headers: Default::default(),
                output: table::Output::Object,
                warnings: Default::default(),
            };
            let exists = self
                .log
                .get(&ctx.key(ns))
                .await
                .map_err(from_store)?
                .is_some();
            if !exists {
                let body =
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
                match handlers::create(&ctx, serde_json::to_vec(&body).unwrap_or_default().into())
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.code == 409 => {}
                    Err(e) => return Err(e),
                }
            }
        }
        self.bootstrap_kubernetes_service().await?;
        auth::bootstrap(self).await?;
        auth::rbac::start(self.clone()).await;
        Ok(())
    }

    /// A request context for bootstrapping `resource` in `namespace` as `system:logbook`.
    pub(crate) fn system_ctx(
        self: &Arc<Self>,
        group: &str,
        plural: &str,
        namespace: Option<&str>,
    ) -> Result<Ctx, ApiError> {
        let info = self
            .registry
            .load()
            .get(group, "v1", plural)
            .cloned()
            .ok_or_else(|| ApiError::internal(format!("the registry has no {plural}")))?;
        Ok(Ctx {
            api: self.clone(),
            info,
            target: request::Target {
                group: group.to_string(),
                version: "v1".into(),
                plural: plural.to_string(),
                namespace: namespace.map(str::to_string),
                name: None,
                subresource: None,
                legacy_watch: false,
            },
            query: Query::default(),
            identity: Identity::system(),
            headers: Default::default(),
            output: table::Output::Object,
            warnings: Default::default(),
        })
    }

    /// The `kubernetes` Service in `default` (the first ClusterIP, port 443 to this server),
    /// with its Endpoints and EndpointSlice when the advertised address is an IP, as every
    /// cluster has them. Existing objects are left alone.
    async fn bootstrap_kubernetes_service(self: &Arc<Self>) -> Result<(), ApiError> {
        let (host, port) = self
            .server_address
            .rsplit_once(':')
            .unwrap_or((self.server_address.as_str(), "6443"));
        let port: u16 = port.parse().unwrap_or(6443);
        let ip: Option<std::net::IpAddr> = host.trim_matches(['[', ']']).parse().ok();
        let cluster_ip = self.service_ranges.first_ip().to_string();
        let labels = json!({"component": "apiserver", "provider": "kubernetes"});
        let mut objects = vec![(
            "",
            "services",
            json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "kubernetes", "labels": labels},
                "spec": {"type": "ClusterIP", "clusterIP": cluster_ip, "sessionAffinity": "None",
                    "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]}}),
        )];
        if let Some(ip) = ip {
            let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
            objects.push((
                "",
                "endpoints",
                json!({"apiVersion": "v1", "kind": "Endpoints",
                    "metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
                    "subsets": [{"addresses": [{"ip": ip.to_string()}],
                        "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]}),
            ));
            objects.push((
                "discovery.k8s.io",
                "endpointslices",
                json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"name": "kubernetes", "labels": {"kubernetes.io/service-name": "kubernetes"}},
                    "addressType": family,
                    "endpoints": [{"addresses": [ip.to_string()], "conditions": {"ready": true}}],
                    "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}),
            ));
        }
        for (group, plural, body) in objects {
            let ctx = self.system_ctx(group, plural, Some("default"))?;
            if self
                .log
                .get(&ctx.key("kubernetes"))
                .await
                .map_err(from_store)?
                .is_some()
            {
                continue;
            }
            match handlers::create(&ctx, serde_json::to_vec(&body).unwrap_or_default().into()).await
            {
                Ok(_) => {}
                Err(e) if e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

fn text(code: StatusCode, body: &'static str) -> Response {
    let mut r = (code, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Serves one request from the network: authenticates it (client certificate, bearer
/// token, or anonymous when allowed), then [`handle`]s it. Health probes are answered
/// without credentials.
pub async fn handle_remote(
    api: Arc<Api>,
    cert: Option<Result<Identity, ()>>,
    source: String,
    req: Request<Body>,
) -> Response {
    let path = req.uri().path();
    let mut identity = match auth::authenticate(&api, cert, req.headers()).await {
        Ok(Some(id)) => id,
        Ok(None) if auth::is_open_path(path) => Identity::anonymous(),
        Ok(None) => return auth::authn::unauthorized_error().into_response(),
        Err(e) => return e.into_response(),
    };
    identity.source = source;
    handle(api, identity, req).await
}

/// Routes and serves one request of an authenticated `identity` (in-process clients call
/// this directly, as who they are).
pub async fn handle(api: Arc<Api>, mut identity: Identity, req: Request<Body>) -> Response {
    let started = Instant::now();
    identity.user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .chars()
        .take(USER_AGENT_CHARS_MAX)
        .collect();
    identity.request_id = req
        .headers()
        .get("audit-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= AUDIT_ID_CHARS_MAX
                && v.bytes().all(|b| b.is_ascii_graphic())
        })
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string);
    let audit_id = header::HeaderValue::from_str(&identity.request_id).ok();
    let identity = match auth::impersonate(&api, identity, req.headers()).await {
        Ok(i) => i,
        Err(e) => {
            let mut resp = e.into_response();
            if let Some(id) = audit_id {
                resp.headers_mut().insert("audit-id", id);
            }
            return resp;
        }
    };
    let mut resp = handle_routed(api, identity, req, started).await;
    if let Some(id) = audit_id {
        resp.headers_mut().insert("audit-id", id);
    }
    resp
}

async fn handle_routed(
    api: Arc<Api>,
    identity: Identity,
    req: Request<Body>,
    started: Instant,
) -> Response {
    let path = req.uri().path().to_string();
    let route = parse_path(&path);
    if !matches!(route, Some(Route::Resource(_))) && !auth::is_open_path(&path) {
        let verb = req.method().as_str().to_ascii_lowercase();
        let ask = auth::Request::Path {
            verb: &verb,
            path: &path,
        };
        if let Err(e) = auth::authorize(&api, &identity, &ask).await {
            return e.into_response();
        }
    }
    let Some(route) = route else {
        if let Some(r) = auth::reviews::oidc(api.auth.signer.as_ref(), &path) {
            return r;
        }
        if let Some(r) = openapi::route(&api.openapi, &api.registry.load(), req.headers(), &path) {
            return r;
        }
        return match path.as_str() {
            "/healthz" | "/livez" | "/readyz" => text(StatusCode::OK, "ok"),
            "/version" => version(),
            "/metrics" => {
                let head = api.log.head().await.map(|p| p.0).unwrap_or(0);
                let mut r = (StatusCode::OK, api.metrics.render(head)).into_response();
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                r
            }
            _ => ApiError::no_route().into_response(),
        };
    };
    if req.method() != Method::GET && !matches!(route, Route::Resource(_)) {
        return ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        )
        .into_response();
    }
    let reg = api.registry.load();
    match route {
        Route::CoreVersions => discovery::core_versions(&reg, req.headers(), &api.server_address),
        Route::Groups => discovery::groups(&reg, req.headers()),
        Route::Group { group } => discovery::group(&reg, &group),
        Route::ResourceList { group, version } => {
            if group.is_empty() && version != "v1" {
                return ApiError::no_route().into_response();
            }
            discovery::resource_list(&reg, &group, &version)
        }
        Route::Resource(target) => {
            let resource = target.plural.clone();
            let sub = target.subresource.clone().unwrap_or_default();
            let (verb, resp) = resource_request(api.clone(), identity, target, req).await;
            let resp = resp.unwrap_or_else(IntoResponse::into_response);
            api.metrics.observe_request(
                verb,
                &resource,
                &sub,
                resp.status().as_u16(),
                started.elapsed(),
            );
            resp
        }
    }
}

fn version() -> Response {
    let v = json!({
        "major": KUBERNETES_VERSION.0,
        "minor": KUBERNETES_VERSION.1,
        "gitVersion": format!("v{}.{}.0-logbook.{}", KUBERNETES_VERSION.0, KUBERNETES_VERSION.1, env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if std::env::consts::ARCH == "x86_64" { "amd64" } else { std::env::consts::ARCH }),
    });
    handlers::json_response(StatusCode::OK, serde_json::to_vec(&v).unwrap_or_default())
}

async fn resource_request(
    api: Arc<Api>,
    identity: Identity,
    target: request::Target,
    req: Request<Body>,
) -> (&'static str, Result<Response, ApiError>) {
    let Some(info) = api
        .registry
        .load()
        .get(&target.group, &target.version, &target.plural)
        .cloned()
    else {
        return ("unknown", Err(ApiError::no_route()));
    };
    if target.namespace.is_some() && !info.namespaced {
        return ("unknown", Err(ApiError::no_route()));
    }
    match target.subresource.as_deref() {
        None => {}
        Some("status") if info.status_subresource => {}
        Some("scale") if info.scale.is_some() => {}
        Some("finalize") if info.group.is_empty() && info.plural == "namespaces" => {}
        Some(s) if info.action(s).is_some() => {}
        Some(_) => return ("unknown", Err(ApiError::no_route())),
    }
    let mut query = Query::parse(req.uri().query());
    let watch = target.legacy_watch || query.flag("watch");
    if let Err(e) = history::resolve_as_of(&api, &mut query, watch).await {
        return ("unknown", Err(e));
    }
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok());
    let output = match table::negotiate(accept, &query) {
        Ok(o) => o,
        Err(e) => return ("unknown", Err(e)),
    };
    let method = req.method().clone();
    let has_name = target.name.is_some();
    let verb: &'static str = match (&method, has_name) {
        (&Method::GET, true) if watch => "watch",
        (&Method::GET, true) => "get",
        (&Method::GET, false) if watch => "watch",
        (&Method::GET, false) => "list",
        (&Method::POST, false) => "create",
        (&Method::POST, true) if target.subresource.is_some() => "create",
        (&Method::PUT, true) => "update",
        (&Method::PATCH, true) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => {
            return (
                "unknown",
                Err(ApiError::method_not_allowed(format!(
                    "the server does not allow this method on the requested resource ({method})"
                ))),
            );
        }
    };
    let action = target
        .subresource
        .as_deref()
        .and_then(|s| info.action(s))
        .cloned();
    if let Some(a) = &action
        && !a.verbs.contains(&verb)
    {
        return (
            verb,
            Err(ApiError::method_not_allowed(format!(
                "{}/{} does not support {verb}",
                info.plural, a.name
            ))),
        );
    }
    if target.subresource.is_some()
        && action.is_none()
        && !matches!(verb, "get" | "update" | "patch")
    {
        return (
            verb,
            Err(ApiError::method_not_allowed(
                "subresources support get, update and patch",
            )),
        );
    }
    if !info.verbs.iter().any(|v| v == verb) && target.subresource.is_none() {
        return (
            verb,
            Err(ApiError::method_not_allowed(format!(
                "{} does not support {verb}",
                info.plural
            ))),
        );
    }
    {
        let ns = match (&target.namespace, info.group.as_str(), info.plural.as_str()) {
            (Some(ns), _, _) => ns.as_str(),
            // A namespace is its own namespace for RBAC (kube's RequestInfo).
            (None, "", "namespaces") => target.name.as_deref().unwrap_or(""),
            (None, _, _) => "",
        };
        let ask = auth::Request::Resource {
            attrs: auth::rbac::ResourceAttrs {
                verb,
                group: &info.group,
                resource: &info.plural,
                subresource: target.subresource.as_deref(),
                namespace: ns,
                name: target.name.as_deref().unwrap_or(""),
            },
            field_selector: query.get("fieldSelector"),
        };
        if let Err(e) = auth::authorize(&api, &identity, &ask).await {
            return (verb, Err(e));
        }
    }
    let (mut parts, body) = req.into_parts();
    // What a node stream (pods/log, exec, …) needs of the request beyond the Ctx.
    let stream_req = pod_actions::StreamRequest {
        method: parts.method.clone(),
        raw_query: parts.uri.query().map(str::to_string),
        on_upgrade: parts.extensions.remove::<hyper::upgrade::OnUpgrade>(),
        in_progress: parts.extensions.remove::<Arc<fairness::InProgress>>(),
    };
    let mut ctx = Ctx {
        api: api.clone(),
        info,
        target,
        query,
        identity,
        headers: parts.headers,
        output,
        warnings: Default::default(),
    };
    if verb == "watch" {
        if let Some(name) = ctx.target.name.take() {
            // A watch on one object: a fieldSelector on its name.
            ctx.query
                .0
                .insert("fieldSelector".into(), format!("metadata.name={name}"));
        }
        return (verb, watch::watch(ctx).await);
    }
    let Some(_share) = api.shares.acquire(&ctx.identity) else {
        return (
            verb,
            Err(ApiError::too_many_requests(format!(
                "user {:?} has {} requests in flight, its whole share; retry later",
                ctx.identity.user,
                api.shares.max()
            ))),
        );
    };
    let Ok(_permit) = api.inflight.clone().try_acquire_owned() else {
        return (
            verb,
            Err(ApiError::too_many_requests(
                "too many requests in flight; retry later",
            )),
        );
    };
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(e) => return (verb, Err(e)),
    };
    if verb == "create"
        && ctx.target.subresource.is_none()
        && let Some(node) = auth::node::node_name(&ctx.identity.user, &ctx.identity.groups)
        && let Err(e) = auth::node::check_create(node, &ctx.info.group, &ctx.info.plural, &body)
    {
        return (verb, Err(e));
    }
    let res = match (action.as_ref().map(|a| a.name), verb) {
        (Some("token"), _) => auth::reviews::token_request(&ctx, body).await,
        (Some("binding"), _) => pod_actions::bind(&ctx, body).await,
        (Some("eviction"), _) => pod_actions::evict(&ctx, body).await,
        (Some(name), _) => pod_actions::node_stream(&ctx, name, stream_req).await,
        (None, "list") if history::is_history(&ctx.info) => history::list(&ctx).await,
        (None, "create") if auth::reviews::is_review(&ctx.info) => {
            auth::reviews::create(&ctx, body).await
        }
        (None, v) => dispatch(&ctx, v, body).await,
    };
    let res = res.map(|mut r| {
        if let Ok(w) = ctx.warnings.lock() {
            for msg in w.iter() {
                let v = format!("299 - {}", serde_json::Value::String(msg.clone()));
                if let Ok(h) = header::HeaderValue::from_str(&v) {
                    r.headers_mut().append(header::WARNING, h);
                }
            }
        }
        r
    });
    (verb, res)
}

/// Serves one verb on a resource (or its status or scale).
async fn dispatch(ctx: &Ctx, verb: &str, body: bytes::Bytes) -> Result<Response, ApiError> {
    match verb {
        "get" => handlers::get(ctx).await,
        "list" => list::list(ctx).await,
        "create" => handlers::create(ctx, body).await,
        "update" => handlers::update(ctx, body).await,
        "patch" => handlers::patch(ctx, body).await,
        "delete" => handlers::delete(ctx, body).await,
        _ => handlers::delete_collection(ctx, body).await,
    }
}

async fn read_body(body: Body) -> Result<bytes::Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!("the request body is larger than {REQUEST_BODY_BYTES_MAX} bytes"),
        )
    };
    use http_body_util::BodyExt;
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    // Past the limit the body is read and dropped (up to a bound) so the client, still
    // sending, receives the 413 instead of a reset connection.
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Err(ApiError::bad_request("the request body could not be read"));
        };
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen <= REQUEST_BODY_BYTES_MAX {
                buf.extend_from_slice(&data);
            } else if seen > REQUEST_BODY_DRAIN_BYTES_MAX {
                break;
            }
        }
    }
    if seen > REQUEST_BODY_BYTES_MAX {
        return Err(too_large());
    }
    Ok(buf.freeze())
}

/// The identity in a TLS client certificate: user = CN, groups = O.
pub fn identity_from_cert(der: &[u8]) -> Option<Identity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let user = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some(Identity {
        user,
        groups,
        ..Identity::anonymous()
    })
}

/// Serves HTTPS on `listener` until `shutdown` resolves, then lets open requests finish
/// for up to [`SHUTDOWN_GRACE_MS`].
///
/// # Errors
/// Accept failures on the listener.
pub async fn serve(
    api: Arc<Api>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    options: ServeOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    use hyper_util::rt::TokioIo;
    use hyper_util::server::conn::auto;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let api = api.clone();
        let watcher = graceful.watcher();
        let header_timeout = options.http1_header_read_timeout;
        let verifier = options.client_verifier.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(
                Duration::from_millis(TLS_HANDSHAKE_TIMEOUT_MS),
                acceptor.accept(tcp),
            )
            .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            // A presented certificate is checked against the CA here, so a foreign one is a
            // 401 on each request rather than a failed handshake.
            let cert = tls.get_ref().1.peer_certificates().map(|chain| {
                let valid = verifier
                    .as_deref()
                    .is_some_and(|v| auth::tls::chain_is_valid(v, chain));
                match chain.first() {
                    Some(c) if valid => identity_from_cert(c.as_ref()).ok_or(()),
                    _ => Err(()),
                }
            });
            let source = peer.to_string();
            // The user this connection's requests are gated as (fairness.rs), known from
            // its certificate before any request is read.
            let gated: Option<Arc<str>> = match &cert {
                Some(Ok(id)) if !fairness::is_exempt(id) => Some(id.user.as_str().into()),
                _ => None,
            };
            let (api_gates, gated_user) = (api.gates.clone(), gated.clone());
            let in_progress = Arc::new(fairness::InProgress::default());
            let io = fairness::GatedIo::new(
                tls,
                gated
                    .clone()
                    .map(|u| (api.gates.clone(), u, in_progress.clone())),
            );
            let svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                // An upgraded connection (exec, attach, port-forward) outlives its request: it
                // counts itself in progress so GatedIo keeps reading it (node_proxy).
                req.extensions_mut().insert(in_progress.clone());
                let api = api.clone();
                let cert = cert.clone();
                let source = source.clone();
                let gated = gated.clone();
                // Counted from when the request's head is parsed, so its connection keeps
                // reading its body (fairness::GatedIo).
                let in_progress = in_progress.start();
                async move {
                    let _in_progress = in_progress;
                    // HTTP/2: the executor already waited for this stream's turn.
                    let turn = fairness::take_turn();
                    if let (Some((_, true)), Some(user)) = (&turn, &gated) {
                        return Ok::<_, Infallible>(
                            ApiError::too_many_requests(format!(
                                "user {user:?} has {} requests executing and its queue full; retry later",
                                api.gates.executing_max()
                            ))
                            .into_response(),
                        );
                    }
                    let ticket = match (&gated, turn) {
                        (_, Some((t, _))) => Some(t),
                        // HTTP/1 serves one request at a time per connection; it waits here.
                        (Some(user), None) => match api.gates.admit(user).await {
                            Ok(t) => Some(t),
                            Err(queued) => {
                                return Ok::<_, Infallible>(
                                    ApiError::too_many_requests(format!(
                                        "user {user:?} has {} requests executing and {queued} waiting, its whole share; retry later",
                                        api.gates.executing_max()
                                    ))
                                    .into_response(),
                                );
                            }
                        },
                        (None, None) => None,
                    };
                    // `map` keeps the extensions: the connection's upgrade (`OnUpgrade`) among them.
                    // The ticket and shares are released when the handler returns, so an
                    // upgraded connection spliced to a node agent holds no fairness slot.
                    let work = handle_remote(api.clone(), cert, source, req.map(Body::new));
                    Ok::<_, Infallible>(match &ticket {
                        Some(t) => api.gates.run(t, work).await,
                        None => work.await,
                    })
                }
            });
            let mut builder = auto::Builder::new(fairness::GatedExecutor {
                gates: api_gates,
                user: gated_user,
            });
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(HTTP1_HEAD_BYTES_MAX);
            builder
                .http2()
                .timer(hyper_util::rt::TokioTimer::new())
                .max_concurrent_streams(HTTP2_STREAMS_PER_CONNECTION_MAX)
                .max_header_list_size(HTTP2_HEADER_LIST_BYTES_MAX)
                .max_pending_accept_reset_streams(HTTP2_PENDING_RESET_STREAMS_MAX)
                .keep_alive_interval(Duration::from_millis(HTTP2_KEEPALIVE_INTERVAL_MS))
                .keep_alive_timeout(Duration::from_millis(HTTP2_KEEPALIVE_TIMEOUT_MS));
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_millis(SHUTDOWN_GRACE_MS)) => {
            tracing::warn!("connections still open after the shutdown grace period");
        }
    }
    Ok(())
}
