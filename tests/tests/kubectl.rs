//! kubectl (the default binary on PATH, and every installed 1.27…1.33) against the real
//! server: the basic verbs, with their outputs checked.

#![allow(clippy::unwrap_used)] // a test that panics has failed; the message says where

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Result;
use logbook_e2e::Server;

/// `kubectl get` of a deleted object fails with NotFound.
fn assert_not_found(s: &Server, what: &[&str]) {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    let err = s.kubectl(&args).unwrap_err().to_string();
    assert!(err.contains("NotFound"), "{err}");
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write manifest");
    p.display().to_string()
}

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels:
    app: web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        ports:
        - containerPort: 80
"#;

#[test]
fn kubectl_create_get_label_annotate_scale_patch_replace_and_delete_work() -> Result<()> {
    let s = Server::start()?;
    let dir = tempfile::tempdir()?;

    let ns = s.kubectl(&["get", "namespaces", "-o", "name"])?;
    for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(
            ns.contains(&format!("namespace/{n}")),
            "bootstrapped namespaces: {ns}"
        );
    }

    let f = write(dir.path(), "deploy.yaml", DEPLOYMENT);
    let out = s.kubectl(&["create", "-f", &f])?;
    assert_eq!(out.trim(), "deployment.apps/web created");
    let err = s.kubectl(&["create", "-f", &f]).unwrap_err().to_string();
    assert!(err.contains("AlreadyExists"), "{err}");

    let replicas = s.kubectl(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.replicas} {.metadata.generation}",
    ])?;
    assert_eq!(replicas, "2 1");

    assert_eq!(
        s.kubectl(&["label", "deploy", "web", "tier=frontend"])?
            .trim(),
        "deployment.apps/web labeled"
    );
    assert_eq!(
        s.kubectl(&["get", "deploy", "-l", "tier=frontend", "-o", "name"])?
            .trim(),
        "deployment.apps/web"
    );
    assert_eq!(
        s.kubectl(&["get", "deploy", "-l", "tier=backend", "-o", "name"])?
            .trim(),
        ""
    );

    assert_eq!(
        s.kubectl(&["annotate", "deploy", "web", "note=hello"])?
            .trim(),
        "deployment.apps/web annotated"
    );
    assert_eq!(
        s.kubectl(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.metadata.annotations.note}"
        ])?,
        "hello"
    );

    assert_eq!(
        s.kubectl(&["scale", "deploy", "web", "--replicas=5"])?
            .trim(),
        "deployment.apps/web scaled"
    );
    // A spec change bumps generation; label and annotate did not.
    assert_eq!(
        s.kubectl(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.replicas} {.metadata.generation}"
        ])?,
        "5 2"
    );

    let out = s.kubectl(&[
        "patch",
        "deploy",
        "web",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"paused":true}}"#,
    ])?;
    assert_eq!(out.trim(), "deployment.apps/web patched");
    let out = s.kubectl(&[
        "patch",
        "deploy",
        "web",
        "--type",
        "json",
        "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":3}]"#,
    ])?;
    assert_eq!(out.trim(), "deployment.apps/web patched");
    let out = s.kubectl(&[
        "patch",
        "deploy",
        "web",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:1.26"}]}}}}"#,
    ])?;
    assert_eq!(out.trim(), "deployment.apps/web patched");
    assert_eq!(
        s.kubectl(&["get", "deploy", "web", "-o", "jsonpath={.spec.paused} {.spec.replicas} {.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].ports[0].containerPort}"])?,
        "true 3 nginx:1.26 80"
    );
    // A JSON patch whose test fails changes nothing.
    let err = s
        .kubectl(&[
            "patch",
            "deploy",
            "web",
            "--type",
            "json",
            "-p",
            r#"[{"op":"test","path":"/spec/replicas","value":99}]"#,
        ])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Invalid") || err.contains("422") || err.contains("test"),
        "{err}"
    );

    let replaced = DEPLOYMENT.replace("replicas: 2", "replicas: 7");
    let f2 = write(dir.path(), "deploy2.yaml", &replaced);
    assert_eq!(
        s.kubectl(&["replace", "-f", &f2])?.trim(),
        "deployment.apps/web replaced"
    );
    assert_eq!(
        s.kubectl(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"])?,
        "7"
    );

    assert_eq!(
        s.kubectl(&["delete", "deploy", "web", "--wait=true"])?
            .trim(),
        "deployment.apps \"web\" deleted"
    );
    assert_not_found(&s, &["deploy", "web"]);
    Ok(())
}

#[test]
fn kubectl_get_watch_prints_changes_as_they_happen() -> Result<()> {
    let s = Server::start()?;
    let home = s.data_dir.join("kubectl-home");
    std::fs::create_dir_all(&home)?;
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(s.kubeconfig())
        .args(["get", "configmaps", "-w", "-o", "name"])
        .env("HOME", &home)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    s.kubectl(&["create", "configmap", "watched", "--from-literal=a=b"])?;
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline
        && !seen.iter().any(|l: &String| l == "configmap/watched")
    {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(l);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.iter().any(|l| l == "configmap/watched"),
        "kubectl get -w printed {seen:?}"
    );
    Ok(())
}

#[test]
fn kubectl_delete_waits_for_finalizers_to_be_cleared() -> Result<()> {
    let s = Server::start()?;
    let dir = tempfile::tempdir()?;
    let f = write(
        dir.path(),
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  finalizers: [\"example.com/hold\"]\ndata:\n  a: b\n",
    );
    s.kubectl(&["create", "-f", &f])?;
    let out = s.kubectl(&["delete", "configmap", "held", "--wait=false"])?;
    assert_eq!(out.trim(), "configmap \"held\" deleted");
    let ts = s.kubectl(&[
        "get",
        "configmap",
        "held",
        "-o",
        "jsonpath={.metadata.deletionTimestamp}",
    ])?;
    assert!(!ts.is_empty(), "a held object gets a deletionTimestamp");
    let timeout = s
        .kubectl(&["delete", "configmap", "held", "--timeout=2s"])
        .unwrap_err()
        .to_string();
    assert!(timeout.contains("timed out"), "{timeout}");
    s.kubectl(&[
        "patch",
        "configmap",
        "held",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ])?;
    assert_not_found(&s, &["configmap", "held"]);
    Ok(())
}

#[test]
fn every_installed_kubectl_minor_version_lists_and_creates() -> Result<()> {
    let s = Server::start()?;
    let dir = std::path::PathBuf::from(
        String::from_utf8(
            Command::new("sh")
                .args(["-c", "dirname $(readlink -f $(which kubectl))"])
                .output()?
                .stdout,
        )?
        .trim(),
    );
    let mut ran = 0;
    for minor in 27..=33 {
        let bin = dir.join(format!("kubectl.1.{minor}"));
        if !bin.exists() {
            eprintln!("skip: {} is not installed", bin.display());
            continue;
        }
        let bin = bin.display().to_string();
        let name = format!("from-1-{minor}");
        s.kubectl_with(&bin, &["create", "configmap", &name, "--from-literal=v=1"])?;
        let got = s.kubectl_with(
            &bin,
            &["get", "configmap", &name, "-o", "jsonpath={.data.v}"],
        )?;
        assert_eq!(got, "1", "kubectl 1.{minor}");
        let ns = s.kubectl_with(&bin, &["get", "ns"])?;
        assert!(ns.contains("kube-system"), "kubectl 1.{minor} get ns: {ns}");
        ran += 1;
    }
    assert!(
        ran > 0,
        "no kubectl.1.NN binary found beside kubectl in {}",
        dir.display()
    );
    Ok(())
}
