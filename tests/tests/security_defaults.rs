//! Secure defaults of `logbook serve` (issue 9, item 6): the data directory and every private
//! file are readable by their owner only, and TLS offers 1.2 and 1.3 with AEAD suites only —
//! checked from outside with OpenSSL's client, which (unlike rustls) can still offer the old
//! protocols and CBC suites a scanner would try.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use anyhow::Result;
use logbook_e2e::{Server, within};

fn mode(path: &std::path::Path) -> Result<u32> {
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_and_private_files_are_readable_by_their_owner_only() -> Result<()> {
    within(60, "the server did not start", async {
        let s = Server::start_api_only()?;
        assert_eq!(mode(&s.data_dir)?, 0o700, "data directory");
        assert_eq!(mode(&s.data_dir.join("pki"))?, 0o700, "pki directory");
        for f in [
            "pki/ca.key",
            "pki/server.key",
            "pki/admin.key",
            "kubeconfig",
        ] {
            assert_eq!(mode(&s.data_dir.join(f))?, 0o600, "{f}");
        }
        Ok(())
    })
    .await
}

/// Whether the `openssl` binary is missing; then says which test skips and why.
fn openssl_missing(needed_for: &str) -> bool {
    let missing = Command::new("openssl").arg("version").output().is_err();
    if missing {
        println!("skipped: no openssl binary {needed_for}");
    }
    missing
}

/// `openssl s_client -quiet` connected to the server, its stdin and stdout piped.
fn s_client_quiet(s: &Server) -> Result<std::process::Child> {
    Ok(Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-connect",
            &format!("127.0.0.1:{}", s.port),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?)
}

/// Runs `openssl s_client` against the server with extra flags; whether the handshake
/// completed (a negotiated cipher other than "(NONE)"). Fails when OpenSSL's summary line
/// is missing, so an unexpected output can never pass as a refusal.
fn handshake(s: &Server, flags: &[&str]) -> Result<(bool, String)> {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{}", s.port)])
        .args(flags)
        .stdin(std::process::Stdio::null())
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // "New, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384", or "New, (NONE), Cipher is (NONE)".
    let Some(cipher) = text.lines().find_map(|l| {
        l.split_once("Cipher is ")
            .map(|(_, c)| c.trim().to_string())
    }) else {
        anyhow::bail!("openssl s_client printed no \"Cipher is\" line:\n{text}");
    };
    Ok((cipher != "(NONE)", text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_offers_versions_1_2_and_1_3_with_aead_suites_only() -> Result<()> {
    if openssl_missing("to probe TLS with") {
        return Ok(());
    }
    within(60, "the TLS probes did not finish", async {
        let s = Server::start_api_only()?;
        let (ok, text) = handshake(&s, &["-tls1_3"])?;
        assert!(ok, "TLS 1.3 is offered:\n{text}");
        let (ok, text) = handshake(&s, &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"])?;
        assert!(ok, "TLS 1.2 with an AEAD suite is offered:\n{text}");
        for cbc in [
            "ECDHE-ECDSA-AES128-SHA",
            "ECDHE-ECDSA-AES256-SHA384",
            "AES128-SHA",
        ] {
            let (ok, text) = handshake(&s, &["-tls1_2", "-cipher", cbc])?;
            assert!(!ok, "the non-AEAD suite {cbc} is refused:\n{text}");
        }
        for old in ["-tls1", "-tls1_1"] {
            let (ok, text) = handshake(&s, &[old, "-cipher", "DEFAULT@SECLEVEL=0"])?;
            assert!(!ok, "{old} is refused:\n{text}");
        }
        Ok(())
    })
    .await
}

/// A client that starts a request's headers and never finishes them (slow loris) is cut off
/// after the header timeout, while a client that completes its request is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_headers_is_disconnected() -> Result<()> {
    use std::io::Write;
    use std::time::{Duration, Instant};
    if openssl_missing("to hold a TLS connection open with") {
        return Ok(());
    }
    within(60, "the slow client was not disconnected", async {
        let s = Server::start_with(&[
            "--no-controllers",
            "--no-scheduler",
            "--http1-header-read-timeout",
            "2s",
        ])?;
        let mut child = s_client_quiet(&s)?;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"GET /version HTTP/1.1\r\nHost: logbook\r\nX-Slow: ")?;
        stdin.flush()?;
        let started = Instant::now();
        // Keep our side open (stdin stays unclosed): only the server can end this.
        let ended = loop {
            if let Some(status) = child.try_wait()? {
                break Some(status);
            }
            if started.elapsed() > Duration::from_secs(20) {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        drop(stdin);
        if ended.is_none() {
            let _ = child.kill();
            anyhow::bail!("the connection was still open 20 s after the headers stalled");
        }
        assert!(
            started.elapsed() >= Duration::from_millis(1500),
            "cut off by the header timeout, not at once ({:?})",
            started.elapsed()
        );
        // A complete request on a fresh connection is still served.
        let mut ok = s_client_quiet(&s)?;
        ok.stdin
            .take()
            .expect("stdin")
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: logbook\r\nConnection: close\r\n\r\n")?;
        let out = ok.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        Ok(())
    })
    .await
}

/// A kubeconfig for a new user `name` (no groups), its certificate signed by the server's CA
/// with `openssl` (as an administrator would until `logbook user add` exists).
fn user_kubeconfig(s: &Server, name: &str) -> Result<std::path::PathBuf> {
    let dir = s.data_dir.join(format!("user-{name}"));
    std::fs::create_dir_all(&dir)?;
    let (key, csr, crt) = (dir.join("u.key"), dir.join("u.csr"), dir.join("u.crt"));
    let pki = s.data_dir.join("pki");
    let run = |args: &[&str]| -> Result<()> {
        let out = Command::new("openssl").args(args).output()?;
        anyhow::ensure!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    let p = |x: &std::path::Path| x.to_string_lossy().into_owned();
    run(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &p(&key),
        "-subj",
        &format!("/CN={name}"),
        "-out",
        &p(&csr),
    ])?;
    // Extensions make it an X.509 v3 certificate (rustls refuses v1) for client auth.
    let ext = dir.join("ext.cnf");
    std::fs::write(
        &ext,
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
    )?;
    run(&[
        "x509",
        "-extfile",
        &p(&ext),
        "-req",
        "-in",
        &p(&csr),
        "-CA",
        &p(&pki.join("ca.crt")),
        "-CAkey",
        &p(&pki.join("ca.key")),
        "-CAcreateserial",
        "-days",
        "1",
        "-out",
        &p(&crt),
    ])?;
    let kubeconfig = dir.join("kubeconfig");
    let admin = std::fs::read_to_string(s.kubeconfig())?;
    let mut out = String::new();
    for line in admin.lines() {
        let t = line.trim_start();
        let indent = &line[..line.len() - t.len()];
        if t.starts_with("client-certificate-data:") {
            out.push_str(&format!("{indent}client-certificate: {}\n", p(&crt)));
        } else if t.starts_with("client-key-data:") {
            out.push_str(&format!("{indent}client-key: {}\n", p(&key)));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    std::fs::write(&kubeconfig, out)?;
    Ok(kubeconfig)
}

async fn client_from(kubeconfig: &std::path::Path) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    cfg.default_retry = false;
    Ok(kube::Client::try_from(cfg)?)
}

/// One user flooding the server gets 429 (TooManyRequests) once it holds its share of the
/// requests in flight; another user's requests meanwhile all succeed. The flood's requests
/// hold their slots: lists at a resourceVersion the log has not reached wait (3 s, then
/// 504), as a slow request would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noisy_user_gets_429_for_its_excess_while_another_user_is_served() -> Result<()> {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, ListParams};
    if openssl_missing("to sign user certificates with") {
        return Ok(());
    }
    within(120, "the fairness check did not finish", async {
        let s = Server::start_with(&[
            "--no-controllers",
            "--no-scheduler",
            "--requests-inflight-per-user",
            "4",
        ])?;
        let admin: Api<ConfigMap> = Api::namespaced(s.client().await?, "default");
        s.kubectl(&[
            "create",
            "clusterrolebinding",
            "users-view",
            "--clusterrole=view",
            "--user=noisy",
            "--user=quiet",
        ])?;
        let head: u64 = admin
            .list_metadata(&ListParams::default())
            .await?
            .metadata
            .resource_version
            .unwrap_or_default()
            .parse()?;
        let future_rv = (head + (1 << 40)).to_string();
        let noisy: Api<ConfigMap> = Api::namespaced(
            client_from(&user_kubeconfig(&s, "noisy")?).await?,
            "default",
        );
        let quiet: Api<ConfigMap> = Api::namespaced(
            client_from(&user_kubeconfig(&s, "quiet")?).await?,
            "default",
        );

        let flood = futures::stream::iter(0..64)
            .map(|_| {
                let noisy = noisy.clone();
                let rv = future_rv.clone();
                async move { noisy.list_metadata(&ListParams::default().at(&rv)).await }
            })
            .buffer_unordered(64)
            .collect::<Vec<_>>();
        let calm = async {
            // Let the flood take its slots first.
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            let mut results = Vec::new();
            for _ in 0..10 {
                results.push(quiet.list_metadata(&ListParams::default().limit(10)).await);
            }
            results
        };
        let (flooded, calmed) = tokio::join!(flood, calm);
        let code = |r: &Result<_, kube::Error>| match r {
            Err(kube::Error::Api(st)) => st.code,
            Ok(_) => 200,
            Err(_) => 0,
        };
        let refused = flooded.iter().filter(|r| code(r) == 429).count();
        let waited = flooded.iter().filter(|r| code(r) == 504).count();
        assert_eq!(refused + waited, 64, "only 429s and 504s: {flooded:?}");
        assert!(
            (1..=60).contains(&refused),
            "{refused} of 64 refused: the noisy user keeps its share of 4 and no more"
        );
        assert!(
            waited >= 4,
            "{waited} waited: the noisy user's share was served"
        );
        for r in &calmed {
            assert!(r.is_ok(), "the quiet user was refused: {r:?}");
        }
        Ok(())
    })
    .await
}
