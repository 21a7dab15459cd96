//! The agent's own HTTPS endpoint — the kubelet API the API server proxies `kubectl logs`,
//! `exec`, `attach` and `port-forward` to:
//! - `GET /containerLogs/{namespace}/{pod}/{container}` (`follow`, `previous`,
//!   `tailLines`, `sinceSeconds`, `sinceTime`, `timestamps`, `limitBytes`);
//! - `/exec/{namespace}/{pod}/{container}`, `/attach/{namespace}/{pod}/{container}`,
//!   `/portForward/{namespace}/{pod}`: the agent asks CRI for a session URL and splices the
//!   upgraded connection through to the runtime's streaming server, which does the protocol
//!   (SPDY/3.1, or the WebSocket versions it knows). A WebSocket exec or attach offering
//!   `v5.channel.k8s.io` (kubectl 1.30+) or `v4.channel.k8s.io` is the exception: the
//!   agent answers it and translates to SPDY itself (`server/wsexec.rs`), since containerd
//!   1.6 knows no v5;
//! - `GET /healthz`.
//!
//! Only the API server may call it: a client certificate signed by the cluster CA with the
//! common name [`KUBELET_CLIENT_CN`]. The serving certificate is self-signed and published
//! (its SHA-256) on the Node, where the API server pins it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::logs;
use super::spec::pod_uid;
use crate::cri::{self, Cri, v1};
use wsexec::Streams;

mod spdy;
mod websocket;
mod wsexec;

/// The common name of the API server's client certificate towards node agents.
pub const KUBELET_CLIENT_CN: &str = "logbook-apiserver-kubelet-client";
/// Log bytes read from the end of a file for one request, at most (a longer log is read
/// from its last this many bytes), in bytes.
pub const LOG_READ_BYTES_MAX: u64 = 32 * 1024 * 1024;
/// How often a followed log file is checked for new lines, in milliseconds.
pub const LOG_FOLLOW_POLL_MS: u64 = 200;
/// Proxied streaming sessions open at once; more get 429.
pub const STREAM_SESSIONS_MAX: usize = 256;
/// Deadline for the runtime's streaming server to answer an upgrade, in milliseconds.
pub const STREAM_CONNECT_TIMEOUT_MS: u64 = 10_000;
/// TLS handshakes must finish within this, in milliseconds.
const TLS_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;

type Body = BoxBody<Bytes, Infallible>;

/// What the endpoint needs from the agent.
pub struct ServerState {
    pub cri: Cri,
    /// The pods bound to this node by namespace/name (kept by the pod watch).
    pub pods: super::pods::PodIndex,
    pub sessions: Arc<tokio::sync::Semaphore>,
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

/// A Kubernetes `Status` error response.
fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    let mut r = Response::new(full(body.to_string()));
    *r.status_mut() = code;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(v) => {
                    out.push(v);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A query string's pairs, decoded, in order.
pub fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn flag(q: &[(String, String)], name: &str) -> bool {
    q.iter()
        .any(|(k, v)| k == name && matches!(v.as_str(), "1" | "true" | "True" | ""))
}

fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The self-signed serving certificate under `dir` (created once), and its SHA-256.
///
/// # Errors
/// I/O or certificate generation.
pub fn serving_cert(
    dir: &Path,
    node_name: &str,
    node_ip: &str,
) -> anyhow::Result<(String, String, String)> {
    std::fs::create_dir_all(dir)?;
    let (crt, key) = (dir.join("serving.crt"), dir.join("serving.key"));
    let ip_line = dir.join("serving.hosts");
    let hosts = format!("{node_name} {node_ip}");
    let fresh = std::fs::read_to_string(&ip_line).ok().as_deref() != Some(hosts.as_str());
    if !crt.exists() || !key.exists() || fresh {
        let kp = rcgen::KeyPair::generate()?;
        let mut p = rcgen::CertificateParams::new(vec![node_name.to_string()])?;
        if let Ok(ip) = node_ip.parse::<std::net::IpAddr>() {
            p.subject_alt_names.push(rcgen::SanType::IpAddress(ip));
        }
        p.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("{node_name}@logbook-node"),
        );
        let cert = p.self_signed(&kp)?;
        std::fs::write(&crt, cert.pem())?;
        write_private(&key, &kp.serialize_pem())?;
        std::fs::write(&ip_line, &hosts)?;
    }
    let crt_pem = std::fs::read_to_string(&crt)?;
    let key_pem = std::fs::read_to_string(&key)?;
    let der = rustls_pemfile::certs(&mut crt_pem.as_bytes())
        .next()
        .ok_or_else(|| anyhow::anyhow!("no certificate in serving.crt"))??;
    let sha: String = Sha256::digest(der.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((crt_pem, key_pem, sha))
}

fn write_private(path: &Path, s: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(s.as_bytes())
}

/// The TLS configuration: the serving certificate, client certificates required and
/// verified against the cluster CA.
///
/// # Errors
/// Bad PEM.
pub fn tls_config(
    cert_pem: &str,
    key_pem: &str,
    ca_der: &[Vec<u8>],
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in ca_der {
        roots.add(rustls::pki_types::CertificateDer::from(c.clone()))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())?
        .ok_or_else(|| anyhow::anyhow!("no private key in the serving key file"))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(
        cert.subject()
            .iter_common_name()
            .next()?
            .as_str()
            .ok()?
            .to_string(),
    )
}

/// Serves until `shutdown` flips.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<ServerState>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let acceptor = acceptor.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let Ok(Ok(tls)) = tokio::time::timeout(
                Duration::from_millis(TLS_HANDSHAKE_TIMEOUT_MS),
                acceptor.accept(tcp),
            )
            .await
            else {
                tracing::debug!(%peer, "TLS handshake failed");
                return;
            };
            let allowed = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| common_name(c.as_ref()))
                .is_some_and(|cn| cn == KUBELET_CLIENT_CN);
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let state = state.clone();
                async move {
                    if !allowed {
                        return Ok::<_, Infallible>(status(
                            StatusCode::FORBIDDEN,
                            "Forbidden",
                            "only the API server may use this endpoint",
                        ));
                    }
                    Ok(route(&state, req).await)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), svc)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "node endpoint connection ended with an error");
            }
        });
    }
}

async fn route(state: &ServerState, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let parts: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let q = query_pairs(req.uri().query());
    match parts
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["healthz"] => Response::new(full("ok")),
        ["containerLogs", ns, pod, container] => {
            container_logs(state, ns, pod, container, &q).await
        }
        [kind @ ("exec" | "attach"), ns, pod, container] => {
            let kind = (*kind).to_string();
            let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
            stream(state, req, &kind, &ns, &pod, Some(&container), &q).await
        }
        ["portForward", ns, pod] => {
            let (ns, pod) = (ns.to_string(), pod.to_string());
            stream(state, req, "portForward", &ns, &pod, None, &q).await
        }
        _ => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("no such path {path}"),
        ),
    }
}

fn find_pod(state: &ServerState, ns: &str, name: &str) -> Option<Arc<Pod>> {
    state
        .pods
        .read()
        .ok()?
        .get(&(ns.to_string(), name.to_string()))
        .cloned()
}

/// The pod's instances of `container`, newest first.
async fn instances(cri: &Cri, pod: &Pod, container: &str) -> Result<Vec<v1::Container>, String> {
    let sel = HashMap::from([
        (cri::POD_UID_LABEL.to_string(), pod_uid(pod).to_string()),
        (cri::CONTAINER_NAME_LABEL.to_string(), container.to_string()),
    ]);
    let mut v = cri.list_containers(sel).await.map_err(|e| e.to_string())?;
    v.sort_by_key(|c| {
        std::cmp::Reverse((c.metadata.as_ref().map_or(0, |m| m.attempt), c.created_at))
    });
    Ok(v)
}

async fn container_logs(
    state: &ServerState,
    ns: &str,
    name: &str,
    container: &str,
    q: &[(String, String)],
) -> Response<Body> {
    let Some(pod) = find_pod(state, ns, name) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("pod \"{name}\" not found on this node"),
        );
    };
    let previous = flag(q, "previous");
    let list = match instances(&state.cri, &pod, container).await {
        Ok(l) => l,
        Err(e) => return status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", &e),
    };
    let Some(inst) = list.get(usize::from(previous)) else {
        let msg = if previous {
            format!("previous terminated container \"{container}\" in pod \"{name}\" not found")
        } else {
            format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating"
            )
        };
        return status(StatusCode::BAD_REQUEST, "BadRequest", &msg);
    };
    let st = match state.cri.container_status(&inst.id).await {
        Ok(Some(s)) => s,
        Ok(None) => return status(StatusCode::NOT_FOUND, "NotFound", "the container is gone"),
        Err(e) => {
            return status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                &e.to_string(),
            );
        }
    };
    let since = param(q, "sinceTime")
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .or_else(|| {
            param(q, "sinceSeconds")
                .and_then(|s| s.parse::<i64>().ok())
                .and_then(|s| {
                    jiff::Timestamp::now()
                        .checked_sub(jiff::SignedDuration::from_secs(s))
                        .ok()
                })
        });
    let opts = logs::Options {
        tail_lines: param(q, "tailLines")
            .and_then(|t| t.parse::<i64>().ok())
            .map(|t| t.max(0) as usize),
        since,
        timestamps: flag(q, "timestamps"),
    };
    let limit = param(q, "limitBytes").and_then(|l| l.parse::<u64>().ok());
    let follow = flag(q, "follow") && !previous;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let cri = state.cri.clone();
    let id = inst.id.clone();
    let path = st.log_path.clone();
    tokio::spawn(async move {
        let mut sent: u64 = 0;
        let mut send = async |b: String| -> bool {
            let mut b = Bytes::from(b);
            if let Some(l) = limit {
                let left = l.saturating_sub(sent);
                if left == 0 {
                    return false;
                }
                if (b.len() as u64) > left {
                    b.truncate(left as usize);
                }
            }
            sent += b.len() as u64;
            !b.is_empty() && tx.send(b).await.is_err()
        };
        let Ok(mut f) = tokio::fs::File::open(&path).await else {
            return;
        };
        let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
        let start = len.saturating_sub(LOG_READ_BYTES_MAX);
        if f.seek(std::io::SeekFrom::Start(start)).await.is_err() {
            return;
        }
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).await.is_err() {
            return;
        }
        let mut text = String::from_utf8_lossy(&buf).into_owned();
        if start > 0
            && let Some(p) = text.find('\n')
        {
            text.drain(..=p);
        }
        // Whole lines now; a trailing partial line waits for its end when following.
        let cut = if follow {
            text.rfind('\n').map_or(0, |p| p + 1)
        } else {
            text.len()
        };
        let rest = text.split_off(cut);
        if send(logs::render(&text, &opts)).await {
            return;
        }
        if !follow {
            return;
        }
        let follow_opts = logs::Options {
            tail_lines: None,
            ..opts
        };
        let mut carry = rest;
        let mut checks = 0u32;
        loop {
            tokio::time::sleep(Duration::from_millis(LOG_FOLLOW_POLL_MS)).await;
            let mut more = Vec::new();
            if f.read_to_end(&mut more).await.is_err() {
                return;
            }
            carry.push_str(&String::from_utf8_lossy(&more));
            if let Some(p) = carry.rfind('\n') {
                let rest = carry.split_off(p + 1);
                let chunk = std::mem::replace(&mut carry, rest);
                if send(logs::render(&chunk, &follow_opts)).await {
                    return;
                }
            }
            if tx.is_closed() {
                return;
            }
            checks += 1;
            if checks.is_multiple_of(5) {
                let running = matches!(cri.container_status(&id).await, Ok(Some(s)) if s.state == v1::ContainerState::ContainerRunning as i32);
                if !running {
                    // One last read after the exit, then the stream ends.
                    let mut more = Vec::new();
                    let _ = f.read_to_end(&mut more).await;
                    carry.push_str(&String::from_utf8_lossy(&more));
                    let _ = send(logs::render(&carry, &follow_opts)).await;
                    return;
                }
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    r
}

/// exec, attach and portForward: a CRI session URL, then the upgraded connection spliced to
/// the runtime's streaming server, or a WebSocket exec or attach translated to it.
async fn stream(
    state: &ServerState,
    mut req: Request<Incoming>,
    kind: &str,
    ns: &str,
    name: &str,
    container: Option<&str>,
    q: &[(String, String)],
) -> Response<Body> {
    let Some(pod) = find_pod(state, ns, name) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("pod \"{name}\" not found on this node"),
        );
    };
    let ws = matches!(kind, "exec" | "attach")
        .then(|| wsexec::offer(req.method(), req.headers()))
        .flatten();
    let Ok(permit) = state.sessions.clone().try_acquire_owned() else {
        return status(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "too many streaming sessions on this node",
        );
    };
    // What CRI is asked for; a translated session opens exactly these streams.
    let mut streams = Streams {
        stdin: false,
        stdout: false,
        stderr: false,
        tty: false,
    };
    let url = match (kind, container) {
        ("portForward", _) => {
            let sel = HashMap::from([(cri::POD_UID_LABEL.to_string(), pod_uid(&pod).to_string())]);
            let boxes = state.cri.list_pod_sandboxes(sel).await.unwrap_or_default();
            let Some(b) = boxes
                .iter()
                .find(|b| b.state == v1::PodSandboxState::SandboxReady as i32)
            else {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "the pod has no running sandbox",
                );
            };
            let ports = q
                .iter()
                .filter(|(k, _)| k == "port")
                .filter_map(|(_, v)| v.parse().ok())
                .collect();
            state
                .cri
                .port_forward(v1::PortForwardRequest {
                    pod_sandbox_id: b.id.clone(),
                    port: ports,
                })
                .await
        }
        (_, Some(c)) => {
            let running = match instances(&state.cri, &pod, c).await {
                Ok(l) => l
                    .into_iter()
                    .find(|i| i.state == v1::ContainerState::ContainerRunning as i32),
                Err(e) => return status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", &e),
            };
            let Some(inst) = running else {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("container {c} is not running in pod {name}"),
                );
            };
            let tty = flag(q, "tty");
            streams = Streams {
                stdin: flag(q, "stdin"),
                stdout: flag(q, "stdout"),
                stderr: flag(q, "stderr") && !tty,
                tty,
            };
            if kind == "exec" {
                let cmd: Vec<String> = q
                    .iter()
                    .filter(|(k, _)| k == "command")
                    .map(|(_, v)| v.clone())
                    .collect();
                if cmd.is_empty() {
                    return status(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        "you must specify at least 1 command",
                    );
                }
                state
                    .cri
                    .exec(v1::ExecRequest {
                        container_id: inst.id,
                        cmd,
                        tty,
                        stdin: streams.stdin,
                        stdout: streams.stdout,
                        stderr: streams.stderr,
                    })
                    .await
            } else {
                state
                    .cri
                    .attach(v1::AttachRequest {
                        container_id: inst.id,
                        stdin: streams.stdin,
                        tty,
                        stdout: streams.stdout,
                        stderr: streams.stderr,
                    })
                    .await
            }
        }
        _ => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "a container is required",
            );
        }
    };
    let url = match url {
        Ok(u) => u,
        Err(e) => {
            return status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                &e.to_string(),
            );
        }
    };
    let client_upgrade = hyper::upgrade::on(&mut req);
    if let Some(offer) = ws {
        return match wsexec::serve(offer, &url, streams, client_upgrade, permit).await {
            Ok(r) => r,
            Err(e) => status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                &format!("streaming session: {e}"),
            ),
        };
    }
    match splice(req, &url, client_upgrade, permit).await {
        Ok(r) => r,
        Err(e) => status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            &format!("streaming session: {e}"),
        ),
    }
}

/// Sends the client's upgrade request to the runtime's streaming `url` and relays its answer;
/// on `101 Switching Protocols` the two connections are spliced until both ends close.
async fn splice(
    req: Request<Incoming>,
    url: &str,
    client_upgrade: hyper::upgrade::OnUpgrade,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Result<Response<Body>, String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("runtime URL {url:?}: {e}"))?;
    let host = uri.host().ok_or("runtime URL without host")?.to_string();
    let port = uri.port_u16().unwrap_or(80);
    let tcp = tokio::time::timeout(
        Duration::from_millis(STREAM_CONNECT_TIMEOUT_MS),
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    .map_err(|_| "connecting to the runtime's streaming server timed out".to_string())?
    .map_err(|e| format!("connecting to the runtime's streaming server: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "streaming server connection ended with an error");
        }
    });
    let mut out = Request::builder()
        .method(req.method().clone())
        .uri(uri.path_and_query().map_or("/", |p| p.as_str()));
    for (k, v) in req.headers() {
        if k == hyper::header::HOST
            || k == hyper::header::AUTHORIZATION
            || k == hyper::header::CONTENT_LENGTH
        {
            continue;
        }
        out = out.header(k, v);
    }
    out = out.header(hyper::header::HOST, format!("{host}:{port}"));
    let out = out
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let mut resp = tokio::time::timeout(
        Duration::from_millis(STREAM_CONNECT_TIMEOUT_MS),
        sender.send_request(out),
    )
    .await
    .map_err(|_| "the runtime's streaming server did not answer".to_string())?
    .map_err(|e| e.to_string())?;
    let code = resp.status();
    let headers = resp.headers().clone();
    if code == StatusCode::SWITCHING_PROTOCOLS {
        let server_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::join!(client_upgrade, server_upgrade) {
                (Ok(c), Ok(s)) => {
                    let (mut c, mut s) = (TokioIo::new(c), TokioIo::new(s));
                    if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut s).await {
                        tracing::debug!(error = %e, "a streaming session ended with an error");
                    }
                }
                (c, s) => tracing::debug!(
                    client = c.is_ok(),
                    server = s.is_ok(),
                    "an upgrade did not complete"
                ),
            }
        });
        let mut r = Response::new(full(Bytes::new()));
        *r.status_mut() = code;
        *r.headers_mut() = headers;
        return Ok(r);
    }
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut r = Response::new(full(body));
    *r.status_mut() = code;
    *r.headers_mut() = headers;
    r.headers_mut().remove(hyper::header::CONTENT_LENGTH);
    r.headers_mut().remove(hyper::header::TRANSFER_ENCODING);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode_repeated_commands() {
        let q = query_pairs(Some(
            "command=sh&command=-c&command=echo%20hi+there&stdout=1&tty=false",
        ));
        let cmd: Vec<_> = q
            .iter()
            .filter(|(k, _)| k == "command")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(cmd, ["sh", "-c", "echo hi there"]);
        assert!(flag(&q, "stdout"));
        assert!(!flag(&q, "tty"));
        assert!(!flag(&q, "stdin"));
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
