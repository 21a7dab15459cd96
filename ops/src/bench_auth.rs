//! `logbook bench auth`: what authentication, authorization and admission cost. Pod creates
//! with 64 concurrent clients against three servers, each started fresh as its own process:
//!
//! 1. security off: `--authorization-mode=AlwaysAllow`, the administrator's certificate;
//! 2. a client certificate of a user allowed by a RoleBinding to `edit` (RBAC decides);
//! 3. a ServiceAccount token (TokenRequest) bound to `edit` (the token is verified, its
//!    ServiceAccount looked up, then RBAC decides).
//!
//! Each configuration runs twice, alternately, so drift shows. Progress goes to stderr; the
//! Markdown table to stdout and `<out>/results.md`, the raw numbers to `<out>/results.json`.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::bench_api::{
    BENCH_API_PHASE_SECS, BENCH_API_WRITERS_COUNT, ServerProc, client, create_storm,
    ensure_namespace, lat, start_server,
};
use crate::cli::BenchApiArgs;

/// Rounds of the three configurations (alternating).
pub const BENCH_AUTH_ROUNDS_COUNT: usize = 2;
/// The namespace the pods are created in.
const NS: &str = "bench";

/// The server's kubeconfig with its user replaced by a bearer token.
fn token_kubeconfig(admin: &Path, token: &str) -> Result<std::path::PathBuf> {
    let text = std::fs::read_to_string(admin)?;
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(k).map(str::to_string))
            .with_context(|| format!("no {k} in {}", admin.display()))
    };
    let server = field("server: ")?;
    let ca = field("certificate-authority-data: ")?;
    let out = admin.with_file_name("token.kubeconfig");
    std::fs::write(
        &out,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\n"
        ),
    )?;
    Ok(out)
}

async fn post(c: &kube::Client, path: &str, body: Value) -> Result<Value> {
    let req = http::Request::post(path)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body)?)?;
    Ok(serde_json::from_str(&c.request_text(req).await?)?)
}

/// Starts a server in `mode` and returns it with the kubeconfig its writers use.
async fn prepare(
    bin: &Path,
    mode: &str,
    extra: &[String],
) -> Result<(ServerProc, std::path::PathBuf)> {
    let mut args = vec!["--no-controllers".to_string(), "--no-scheduler".to_string()];
    if mode == "off" {
        args.push("--authorization-mode=AlwaysAllow".into());
    }
    args.extend(extra.iter().cloned());
    let server = start_server(bin, &args)?;
    let admin = client(&server.kubeconfig).await?;
    ensure_namespace(&admin, NS).await?;
    let binding = |name: &str, subject: Value| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": NS},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
            "subjects": [subject]})
    };
    let rb = format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/rolebindings");
    let kubeconfig = match mode {
        "off" => server.kubeconfig.clone(),
        "certificate" => {
            post(
                &admin,
                &rb,
                binding(
                    "writer-user",
                    json!({"kind": "User", "name": "bench-writer"}),
                ),
            )
            .await?;
            let data = server.kubeconfig.parent().context("a data directory")?;
            let out = data.join("bench-writer.kubeconfig");
            let status = std::process::Command::new(bin)
                .args(["user", "add", "bench-writer", "--data-dir"])
                .arg(data)
                .arg("--out")
                .arg(&out)
                .status()?;
            if !status.success() {
                bail!("logbook user add failed");
            }
            out
        }
        _ => {
            post(&admin, &format!("/api/v1/namespaces/{NS}/serviceaccounts"),
                json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "writer"}})).await?;
            post(
                &admin,
                &rb,
                binding(
                    "writer-sa",
                    json!({"kind": "ServiceAccount", "name": "writer", "namespace": NS}),
                ),
            )
            .await?;
            let tr = post(&admin, &format!("/api/v1/namespaces/{NS}/serviceaccounts/writer/token"),
                json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}})).await?;
            let token = tr["status"]["token"].as_str().context("no token")?;
            token_kubeconfig(&server.kubeconfig, token)?
        }
    };
    Ok((server, kubeconfig))
}

pub async fn run(args: BenchApiArgs) -> Result<()> {
    let bin = match &args.server_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?,
    };
    let secs = if args.quick {
        BENCH_API_PHASE_SECS.1
    } else {
        BENCH_API_PHASE_SECS.0
    };
    std::fs::create_dir_all(&args.out)?;
    let modes = ["off", "certificate", "token"];
    let mut results: Vec<(String, usize, f64, f64, f64)> = Vec::new();
    for round in 1..=BENCH_AUTH_ROUNDS_COUNT {
        for mode in modes {
            eprintln!("== round {round}/{BENCH_AUTH_ROUNDS_COUNT}: {mode}");
            let (server, kubeconfig) = prepare(&bin, mode, &args.server_arg).await?;
            let c = client(&kubeconfig).await?;
            // Warm up connections and caches.
            create_storm(
                &c,
                NS,
                &format!("warm-{round}"),
                BENCH_API_WRITERS_COUNT,
                None,
                Some(640),
            )
            .await?;
            let (n, elapsed, lats) = create_storm(
                &c,
                NS,
                &format!("pod-{round}"),
                BENCH_API_WRITERS_COUNT,
                Some(secs),
                None,
            )
            .await?;
            let rate = n as f64 / elapsed.as_secs_f64();
            let l = lat(lats);
            eprintln!(
                "   {mode}: {rate:.0} creates/s, p50 {:.2} ms, p99 {:.2} ms",
                l.p50_ms, l.p99_ms
            );
            results.push((mode.to_string(), round, rate, l.p50_ms, l.p99_ms));
            drop(server);
        }
    }
    let mean = |m: &str| {
        let v: Vec<f64> = results.iter().filter(|r| r.0 == m).map(|r| r.2).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let off = mean("off");
    let mut md = String::from(
        "| configuration | round | creates/s | p50 ms | p99 ms | vs security off (mean) |\n|---|---|---|---|---|---|\n",
    );
    for (mode, round, rate, p50, p99) in &results {
        md.push_str(&format!(
            "| {mode} | {round} | {rate:.0} | {p50:.2} | {p99:.2} | {:.0}% |\n",
            100.0 * mean(mode) / off.max(1.0)
        ));
    }
    println!("{md}");
    std::fs::write(args.out.join("results.md"), &md)?;
    let raw: Vec<Value> = results
        .iter()
        .map(|(m, r, rate, p50, p99)| json!({"mode": m, "round": r, "creates_per_sec": rate, "p50_ms": p50, "p99_ms": p99}))
        .collect();
    std::fs::write(
        args.out.join("results.json"),
        serde_json::to_vec_pretty(
            &json!({"writers": BENCH_API_WRITERS_COUNT, "secs": secs, "runs": raw}),
        )?,
    )?;
    Ok(())
}
