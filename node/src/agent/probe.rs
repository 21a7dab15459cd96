//! Container probes: exec (CRI `ExecSync`), HTTP GET and TCP, with kubelet's timing —
//! `initialDelaySeconds` after the container started, then every `periodSeconds`, each try
//! bounded by `timeoutSeconds`, and a result that flips only after `successThreshold`
//! successes or `failureThreshold` failures in a row.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cri::Cri;

/// Largest HTTP probe response head read, in bytes (kubelet reads at most 10 KiB of body).
const HTTP_PROBE_HEAD_BYTES_MAX: usize = 10 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

/// One probe's running tally for one container instance.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub last_run: Option<Instant>,
    pub successes: i32,
    pub failures: i32,
    /// The current result (`None` until the first decision).
    pub passing: Option<bool>,
    pub last_message: String,
}

/// Timing of a probe with kubelet's defaults.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: i32,
    pub failure_threshold: i32,
}

pub fn timing(p: &Probe) -> Timing {
    let secs = |v: Option<i32>, d: i32| Duration::from_secs(v.unwrap_or(d).max(0) as u64);
    Timing {
        initial_delay: secs(p.initial_delay_seconds, 0),
        period: secs(p.period_seconds, 10).max(Duration::from_secs(1)),
        timeout: secs(p.timeout_seconds, 1).max(Duration::from_secs(1)),
        success_threshold: p.success_threshold.unwrap_or(1).max(1),
        failure_threshold: p.failure_threshold.unwrap_or(3).max(1),
    }
}

impl Tally {
    /// Whether the probe is due at `now` for a container that started at `started`.
    pub fn due(&self, t: &Timing, started: Instant, now: Instant) -> bool {
        if now < started + t.initial_delay {
            return false;
        }
        self.last_run.is_none_or(|last| now >= last + t.period)
    }

    /// Records one try; returns the new result when it changed.
    pub fn record(&mut self, t: &Timing, ok: bool, message: String, now: Instant) -> Option<bool> {
        self.last_run = Some(now);
        self.last_message = message;
        if ok {
            self.successes += 1;
            self.failures = 0;
            if self.passing != Some(true) && self.successes >= t.success_threshold {
                self.passing = Some(true);
                return Some(true);
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            if self.passing != Some(false) && self.failures >= t.failure_threshold {
                self.passing = Some(false);
                return Some(false);
            }
        }
        None
    }
}

fn port_of(port: &IntOrString, c: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).map_err(|_| format!("invalid port {p}")),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("no container port named {name:?}")),
    }
}

/// The status code in an HTTP/1 status line.
pub fn status_code(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// Certificates are not verified, as kubelet's HTTPS probes do not verify them.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

async fn tls_to(
    host: &str,
    s: tokio::net::TcpStream,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let name =
        rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, s)
        .await
        .map_err(|e| e.to_string())
}

async fn get_status<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> Result<(), String> {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; HTTP_PROBE_HEAD_BYTES_MAX];
    let mut n = 0;
    while n < buf.len() {
        let r = s.read(&mut buf[n..]).await.map_err(|e| e.to_string())?;
        if r == 0 || buf[..n + r].contains(&b'\n') {
            n += r;
            break;
        }
        n += r;
    }
    match status_code(&buf[..n]) {
        Some(code) if (200..400).contains(&code) => Ok(()),
        Some(code) => Err(format!("HTTP probe failed with statuscode: {code}")),
        None => Err("HTTP probe got no status line".to_string()),
    }
}

async fn http_get(
    https: bool,
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Result<(), String> {
    let scheme = if https { "https" } else { "http" };
    let fut = async {
        let s = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("Get \"{scheme}://{host}:{port}{path}\": {e}"))?;
        if https {
            get_status(tls_to(host, s).await?, host, port, path, headers).await
        } else {
            get_status(s, host, port, path, headers).await
        }
    };
    tokio::time::timeout(timeout, fut).await.unwrap_or_else(|_| {
        Err(format!(
            "Get \"{scheme}://{host}:{port}{path}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        ))
    })
}

/// Runs one try of `p` against a container; `Err` carries kubelet's kind of message.
pub async fn run(
    cri: &Cri,
    container_id: &str,
    c: &Container,
    p: &Probe,
    pod_ip: &str,
    t: &Timing,
) -> Result<(), String> {
    if let Some(e) = &p.exec {
        let cmd = e.command.clone().unwrap_or_default();
        return match cri.exec_sync(container_id, cmd, t.timeout).await {
            Ok(r) if r.exit_code == 0 => Ok(()),
            Ok(r) => Err(format!(
                "command failed with exit code {}: {}",
                r.exit_code,
                String::from_utf8_lossy(&r.stdout).trim()
            )),
            Err(e) => Err(e.to_string()),
        };
    }
    if let Some(h) = &p.http_get {
        let port = port_of(&h.port, c)?;
        let host = h
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| pod_ip.to_string());
        let path = h
            .path
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".into());
        let headers: Vec<(String, String)> = h
            .http_headers
            .iter()
            .flatten()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        let https = h
            .scheme
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"));
        return http_get(https, &host, port, &path, &headers, t.timeout).await;
    }
    if let Some(s) = &p.tcp_socket {
        let port = port_of(&s.port, c)?;
        let host = s
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| pod_ip.to_string());
        return match tokio::time::timeout(
            t.timeout,
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("dial tcp {host}:{port}: {e}")),
            Err(_) => Err(format!("dial tcp {host}:{port}: i/o timeout")),
        };
    }
    // gRPC probes are not implemented: they pass rather than kill a healthy container.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(success: i32, failure: i32) -> Timing {
        Timing {
            initial_delay: Duration::from_secs(5),
            period: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            success_threshold: success,
            failure_threshold: failure,
        }
    }

    #[test]
    fn a_probe_flips_only_after_its_threshold_in_a_row() {
        let timing = t(1, 3);
        let now = Instant::now();
        let mut tally = Tally::default();
        assert_eq!(tally.record(&timing, false, String::new(), now), None);
        assert_eq!(tally.record(&timing, false, String::new(), now), None);
        assert_eq!(tally.record(&timing, true, String::new(), now), Some(true));
        assert_eq!(tally.record(&timing, false, String::new(), now), None);
        assert_eq!(tally.record(&timing, false, String::new(), now), None);
        assert_eq!(tally.record(&timing, false, "x".into(), now), Some(false));
        assert_eq!(tally.last_message, "x");
    }

    #[test]
    fn a_probe_waits_for_its_initial_delay_then_its_period() {
        let timing = t(1, 3);
        let start = Instant::now();
        let mut tally = Tally::default();
        assert!(!tally.due(&timing, start, start + Duration::from_secs(4)));
        assert!(tally.due(&timing, start, start + Duration::from_secs(5)));
        tally.record(&timing, true, String::new(), start + Duration::from_secs(5));
        assert!(!tally.due(&timing, start, start + Duration::from_secs(14)));
        assert!(tally.due(&timing, start, start + Duration::from_secs(15)));
    }

    #[test]
    fn status_lines_give_their_code() {
        assert_eq!(status_code(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(status_code(b"HTTP/1.0 500 x\r\n\r\n"), Some(500));
        assert_eq!(status_code(b"garbage"), None);
    }

    #[test]
    fn defaults_follow_kubelet() {
        let tm = timing(&Probe::default());
        assert_eq!(tm.period, Duration::from_secs(10));
        assert_eq!(tm.timeout, Duration::from_secs(1));
        assert_eq!((tm.success_threshold, tm.failure_threshold), (1, 3));
    }

    /// A one-shot HTTP(S) server on a free port answering `status`; its port.
    async fn serve_once(status: u16, tls: bool) -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        let acceptor = tls.then(|| {
            let key = rcgen::KeyPair::generate().expect("key");
            let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
                .expect("params")
                .self_signed(&key)
                .expect("cert");
            let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .expect("config");
            tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
        });
        tokio::spawn(async move {
            let (s, _) = l.accept().await.expect("accept");
            let reply = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
            async fn answer<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
                mut s: S,
                reply: String,
            ) {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(reply.as_bytes()).await;
                let _ = s.shutdown().await;
            }
            match acceptor {
                Some(a) => answer(a.accept(s).await.expect("tls"), reply).await,
                None => answer(s, reply).await,
            }
        });
        port
    }

    #[tokio::test]
    async fn http_and_https_probes_pass_on_2xx_and_3xx_and_fail_otherwise() {
        let t = Duration::from_secs(5);
        for tls in [false, true] {
            let ok = serve_once(204, tls).await;
            assert_eq!(
                http_get(tls, "127.0.0.1", ok, "/", &[], t).await,
                Ok(()),
                "tls={tls}"
            );
            let bad = serve_once(500, tls).await;
            let e = http_get(tls, "127.0.0.1", bad, "/", &[], t)
                .await
                .expect_err("500 fails");
            assert!(e.contains("statuscode: 500"), "{e}");
        }
        // A self-signed certificate is accepted, as kubelet's probes do; plain HTTP to a TLS
        // port is not a pass.
        let tls_port = serve_once(200, true).await;
        assert!(
            http_get(
                false,
                "127.0.0.1",
                tls_port,
                "/",
                &[],
                Duration::from_secs(2)
            )
            .await
            .is_err()
        );
    }
}
