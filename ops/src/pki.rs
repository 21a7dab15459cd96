//! The cluster's PKI and kubeconfig, made on first start under `<data-dir>/pki`:
//! a CA (kept), an admin client certificate (kept; CN `logbook-admin`, O `system:masters`),
//! the API server's client certificate for node agents (kept, `apiserver-kubelet-client.*`;
//! CN [`logbook_api::node_proxy::KUBELET_CLIENT_CN`], O `system:masters`; re-issued when the
//! CA no longer signs it), and a serving certificate re-issued by the CA at every start so its SANs always cover
//! the current addresses. Validity is rcgen's default (1975 to 4096): rotation arrives with
//! the authentication issue.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

pub struct Pki {
    pub dir: PathBuf,
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub admin_cert_pem: String,
    pub admin_key_pem: String,
    /// The certificate the API server presents to node agents when it proxies logs, exec,
    /// attach and port-forward to them (PEM), and its key.
    pub kubelet_client_cert_pem: String,
    pub kubelet_client_key_pem: String,
    /// The service-account signing key (PKCS#8 DER, P-256): signs ServiceAccount tokens.
    /// Replicas of one cluster share it, as they share the CA.
    pub service_account_key_der: Vec<u8>,
}

/// The API server's client certificate for node agents, and its key, under `pki/`.
const KUBELET_CLIENT_CERT: &str = "apiserver-kubelet-client.crt";
const KUBELET_CLIENT_KEY: &str = "apiserver-kubelet-client.key";

/// Whether the client certificate `cert_pem` was issued by the CA `ca_pem` and is valid for
/// client authentication now.
fn signed_by_ca(cert_pem: &str, ca_pem: &str) -> Result<bool> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()?;
    let Some(cert) = CertificateDer::pem_slice_iter(cert_pem.as_bytes()).next() else {
        return Ok(false);
    };
    let Ok(cert) = cert else {
        return Ok(false);
    };
    Ok(verifier
        .verify_client_cert(&cert, &[], rustls::pki_types::UnixTime::now())
        .is_ok())
}

/// Loads `pki/sa.key` (PEM, PKCS#8 P-256), creating it when missing.
fn service_account_key(dir: &Path) -> Result<Vec<u8>> {
    let path = dir.join("sa.key");
    if !path.exists() {
        let key = KeyPair::generate()?;
        write_private(&path, &key.serialize_pem())?;
        tracing::info!(path = %path.display(), "generated a service-account signing key");
    }
    let key = KeyPair::from_pem(&fs::read_to_string(&path)?)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(key.serialize_der())
}

/// Writes a file only its owner may read: created with mode 0600 (never readable by others,
/// not even for a moment), and an existing one is narrowed to 0600 first.
pub(crate) fn write_private(path: &Path, contents: &str) -> Result<()> {
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        if path.exists() {
            fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
        }
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("writing {}", path.display()))?;
        f.write_all(contents.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    #[cfg(not(unix))]
    fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Creates `dir` (and its parents) and makes it private to its owner (mode 0700): the data
/// directory holds the store, whose Secret bytes must not be readable by other users, and
/// the PKI's private keys.
pub fn private_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private", dir.display()))?;
    }
    Ok(())
}

fn ca_params() -> Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, "logbook-ca");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

/// Loads the PKI in `data_dir/pki`, creating what is missing, and issues a serving
/// certificate for `hosts` (DNS names or IP addresses).
pub fn ensure(data_dir: &Path, hosts: &[String]) -> Result<Pki> {
    let dir = data_dir.join("pki");
    private_dir(&dir)?;
    let (ca_cert, ca_key) = (dir.join("ca.crt"), dir.join("ca.key"));
    if !ca_cert.exists() || !ca_key.exists() {
        let key = KeyPair::generate()?;
        let cert = ca_params()?.self_signed(&key)?;
        write_private(&ca_key, &key.serialize_pem())?;
        fs::write(&ca_cert, cert.pem())?;
        tracing::info!(dir = %dir.display(), "generated a cluster CA");
        // A new CA invalidates any older client certificate.
        let _ = fs::remove_file(dir.join("admin.crt"));
        let _ = fs::remove_file(dir.join(KUBELET_CLIENT_CERT));
    }
    let ca_pem = fs::read_to_string(&ca_cert)?;
    let ca_key_pair = KeyPair::from_pem(&fs::read_to_string(&ca_key)?)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key_pair)
        .context("reading the cluster CA certificate")?;

    let (admin_cert, admin_key) = (dir.join("admin.crt"), dir.join("admin.key"));
    if !admin_cert.exists() || !admin_key.exists() {
        let (cert, key) = client_cert(&issuer, "logbook-admin", &["system:masters".into()])?;
        write_private(&admin_key, &key)?;
        fs::write(&admin_cert, cert)?;
    }

    // The API server's identity towards node agents: kept like admin.crt, and re-issued
    // when it does not lead to the current CA (a CA replaced by another replica's).
    let (kubelet_cert, kubelet_key) = (dir.join(KUBELET_CLIENT_CERT), dir.join(KUBELET_CLIENT_KEY));
    let kept = kubelet_cert.exists()
        && kubelet_key.exists()
        && signed_by_ca(&fs::read_to_string(&kubelet_cert)?, &ca_pem)?;
    if !kept {
        let (cert, key) = client_cert(
            &issuer,
            logbook_api::node_proxy::KUBELET_CLIENT_CN,
            &[logbook_api::node_proxy::KUBELET_CLIENT_GROUP.into()],
        )?;
        write_private(&kubelet_key, &key)?;
        fs::write(&kubelet_cert, cert)?;
    }

    let server_key = KeyPair::generate()?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name
        .push(DnType::CommonName, "logbook-apiserver");
    for h in hosts {
        let san = match h.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(h.clone().try_into()?),
        };
        if !p.subject_alt_names.contains(&san) {
            p.subject_alt_names.push(san);
        }
    }
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let server_cert = p.signed_by(&server_key, &issuer)?;
    let server_cert_pem = server_cert.pem();
    let server_key_pem = server_key.serialize_pem();
    fs::write(dir.join("server.crt"), &server_cert_pem)?;
    write_private(&dir.join("server.key"), &server_key_pem)?;

    let service_account_key_der = service_account_key(&dir)?;
    Ok(Pki {
        dir,
        ca_pem,
        server_cert_pem,
        server_key_pem,
        admin_cert_pem: fs::read_to_string(&admin_cert)?,
        admin_key_pem: fs::read_to_string(&admin_key)?,
        kubelet_client_cert_pem: fs::read_to_string(&kubelet_cert)?,
        kubelet_client_key_pem: fs::read_to_string(&kubelet_key)?,
        service_account_key_der,
    })
}

/// A client certificate (PEM) and its key (PEM) for `user` in `groups`, signed by the CA:
/// the API server reads CN as the user name and each O as a group, as kube-apiserver does.
fn client_cert(
    issuer: &Issuer<'_, KeyPair>,
    user: &str,
    groups: &[String],
) -> Result<(String, String)> {
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, user);
    for g in groups {
        p.distinguished_name
            .push(DnType::OrganizationName, g.as_str());
    }
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let cert = p.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// `logbook user add`: mints a client certificate for `user` in `groups` with the data
/// directory's CA and writes a kubeconfig for it (server and CA from the admin kubeconfig).
///
/// # Errors
/// No CA or admin kubeconfig in `data_dir` (start the server once first), or I/O.
pub fn add_user(
    data_dir: &Path,
    user: &str,
    groups: &[String],
    out: Option<PathBuf>,
) -> Result<PathBuf> {
    anyhow::ensure!(!user.is_empty(), "a user name is required");
    let dir = data_dir.join("pki");
    let ca_pem = fs::read_to_string(dir.join("ca.crt")).with_context(|| {
        format!(
            "no CA in {} (start `logbook serve` once first)",
            dir.display()
        )
    })?;
    let ca_key = KeyPair::from_pem(&fs::read_to_string(dir.join("ca.key"))?)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).context("reading the cluster CA")?;
    let admin = fs::read_to_string(data_dir.join("kubeconfig"))
        .with_context(|| format!("no kubeconfig in {}", data_dir.display()))?;
    let server = admin
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .context("the admin kubeconfig names no server")?
        .to_string();
    let (cert, key) = client_cert(&issuer, user, groups)?;
    let path = out.unwrap_or_else(|| data_dir.join("users").join(format!("{user}.kubeconfig")));
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    write_private(&path, &kubeconfig_text(&server, &ca_pem, &cert, &key, user))?;
    Ok(path)
}

fn kubeconfig_text(server: &str, ca: &str, cert: &str, key: &str, user: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: logbook\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: logbook\n  context:\n    cluster: logbook\n    user: {user}\n    namespace: default\ncurrent-context: logbook\npreferences: {{}}\n",
        b64(ca),
        b64(cert),
        b64(key),
    )
}

/// The rustls server configuration: the serving certificate, client certificates verified
/// against the CA after the handshake (a foreign one gets 401, see
/// `logbook_api::auth::tls`), optional (tokens authenticate too),
/// ALPN h2 then http/1.1. TLS 1.2 and 1.3 only, and only AEAD cipher suites (AES-GCM and
/// ChaCha20-Poly1305 with ECDHE key exchange): rustls implements no CBC, RC4 or static-RSA
/// suite, and the list below is checked to hold nothing else.
pub fn server_config(
    pki: &Pki,
) -> Result<(
    Arc<rustls::ServerConfig>,
    Arc<dyn rustls::server::danger::ClientCertVerifier>,
)> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.retain(|s| {
        matches!(
            s.suite(),
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
                | rustls::CipherSuite::TLS13_AES_256_GCM_SHA384
                | rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
                | rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
                | rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
                | rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
                | rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
                | rustls::CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        )
    });
    let provider = Arc::new(provider);
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pki.server_cert_pem.as_bytes())
            .collect::<std::result::Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(pki.server_key_pem.as_bytes())?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(Arc::new(logbook_api::auth::tls::DeferredClientVerifier(
            verifier.clone(),
        )))
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(cfg), verifier))
}

/// Writes `<data-dir>/kubeconfig` for the admin user against `server` (an https URL).
pub fn write_kubeconfig(data_dir: &Path, pki: &Pki, server: &str) -> Result<PathBuf> {
    let text = kubeconfig_text(
        server,
        &pki.ca_pem,
        &pki.admin_cert_pem,
        &pki.admin_key_pem,
        "logbook-admin",
    );
    let path = data_dir.join("kubeconfig");
    write_private(&path, &text)?;
    let _ = &pki.dir;
    // Each component run as its own process gets its own identity (and so its own RBAC
    // role), not the administrator's: `logbook controllers --kubeconfig
    // <data-dir>/components/controllers.kubeconfig`, and so on.
    for (file, user) in COMPONENT_KUBECONFIGS {
        let out = data_dir.join("components").join(file);
        if !out.exists() {
            add_user(data_dir, user, &[], Some(out))?;
        }
    }
    Ok(path)
}

/// The kubeconfigs written for Logbook's own components, under `<data-dir>/components/`.
pub const COMPONENT_KUBECONFIGS: [(&str, &str); 2] = [
    ("controllers.kubeconfig", "system:kube-controller-manager"),
    ("scheduler.kubeconfig", "system:kube-scheduler"),
];

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test that panics has failed
mod tests {
    use super::*;

    #[test]
    fn the_kubelet_client_certificate_is_kept_and_reissued_when_the_ca_changes() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure(dir.path(), &["localhost".into()]).unwrap();
        let (user, groups) = subject(&first.kubelet_client_cert_pem);
        assert_eq!(user, logbook_api::node_proxy::KUBELET_CLIENT_CN);
        assert_eq!(groups, [logbook_api::node_proxy::KUBELET_CLIENT_GROUP]);
        assert!(signed_by_ca(&first.kubelet_client_cert_pem, &first.ca_pem).unwrap());

        let again = ensure(dir.path(), &["localhost".into()]).unwrap();
        assert_eq!(
            again.kubelet_client_cert_pem, first.kubelet_client_cert_pem,
            "a restart keeps the certificate"
        );

        // Another CA put in place (as when a replica's PKI is copied in): re-issued by it.
        let key = KeyPair::generate().unwrap();
        let other = ca_params().unwrap().self_signed(&key).unwrap();
        let pki = dir.path().join("pki");
        fs::write(pki.join("ca.crt"), other.pem()).unwrap();
        write_private(&pki.join("ca.key"), &key.serialize_pem()).unwrap();
        let moved = ensure(dir.path(), &["localhost".into()]).unwrap();
        assert_ne!(moved.kubelet_client_cert_pem, first.kubelet_client_cert_pem);
        assert!(signed_by_ca(&moved.kubelet_client_cert_pem, &moved.ca_pem).unwrap());
        assert!(!signed_by_ca(&first.kubelet_client_cert_pem, &moved.ca_pem).unwrap());
    }

    /// The CN and O's of a PEM certificate, as the API server reads them.
    fn subject(pem: &str) -> (String, Vec<String>) {
        let der = CertificateDer::pem_slice_iter(pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let id = logbook_api::identity_from_cert(der.as_ref()).unwrap();
        (id.user, id.groups)
    }
}
