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
    if Command::new("openssl").arg("version").output().is_err() {
        println!("skipped: no openssl binary to probe TLS with");
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
    if Command::new("openssl").arg("version").output().is_err() {
        println!("skipped: no openssl binary to hold a TLS connection open with");
        return Ok(());
    }
    within(60, "the slow client was not disconnected", async {
        let s = Server::start_with(&[
            "--no-controllers",
            "--no-scheduler",
            "--http1-header-read-timeout",
            "2s",
        ])?;
        let mut child = Command::new("openssl")
            .args([
                "s_client",
                "-quiet",
                "-connect",
                &format!("127.0.0.1:{}", s.port),
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()?;
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
        let mut ok = Command::new("openssl")
            .args([
                "s_client",
                "-quiet",
                "-connect",
                &format!("127.0.0.1:{}", s.port),
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        ok.stdin
            .take()
            .expect("stdin")
            .write_all(b"GET /version HTTP/1.1\r\nHost: logbook\r\nConnection: close\r\n\r\n")?;
        let out = ok.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        Ok(())
    })
    .await
}
