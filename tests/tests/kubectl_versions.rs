//! Everything kubectl does, with every installed kubectl (1.27 … 1.33 and the default one)
//! against the real server: client-side apply twice (the second removing fields and list
//! items), get -o yaml, label, annotate, scale, wait, strategic merge patch, replace, edit,
//! diff, server-side dry run, explain (OpenAPI v2 protobuf in 1.27, v3 later), api-resources,
//! api-versions, a manifest with an invalid name, one with an unknown field, delete --wait.

#![allow(clippy::unwrap_used)] // a test that panics has failed; the message says where

use anyhow::{Result, bail};
use logbook_e2e::Server;
use serde_json::Value;

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write manifest");
    p.display().to_string()
}

const FIRST: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels:
    app: web
    stage: canary
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
        - containerPort: 443
      - name: sidecar
        image: busybox:1.36
        command: ["sleep", "3600"]
"#;

/// The same Deployment with a label, a container port and a whole container removed and
/// the image changed.
const SECOND: &str = r#"apiVersion: apps/v1
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
        image: nginx:1.26
        ports:
        - containerPort: 80
"#;

const INVALID_NAME: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: Not_A_Valid_Name
data:
  a: "1"
"#;

const UNKNOWN_FIELD: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: typo
data:
  a: "1"
dataa:
  b: "2"
"#;

struct Kubectl<'a> {
    s: &'a Server,
    label: String,
    bin: String,
    ns: String,
}

impl Kubectl<'_> {
    /// Runs with `-n <ns>`; fails the test step when kubectl fails.
    fn run(&self, args: &[&str]) -> Result<String> {
        self.run_env(args, &[])
    }

    fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Result<String> {
        let out = self.output_env(args, env)?;
        if !out.status.success() {
            bail!(
                "kubectl {} {} failed: {}",
                self.label,
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn output_env(&self, args: &[&str], env: &[(&str, &str)]) -> Result<std::process::Output> {
        let mut full = vec!["-n", self.ns.as_str()];
        full.extend_from_slice(args);
        self.s.kubectl_output_env(&self.bin, &full, env)
    }

    /// Runs expecting failure; returns stderr.
    fn fails(&self, args: &[&str]) -> Result<String> {
        let out = self.output_env(args, &[])?;
        if out.status.success() {
            bail!(
                "kubectl {} {} succeeded but should have failed: {}",
                self.label,
                args.join(" "),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    }

    fn deployment(&self) -> Result<Value> {
        Ok(serde_json::from_str(&self.run(&[
            "get",
            "deployment",
            "web",
            "-o",
            "json",
        ])?)?)
    }
}

fn container_names(d: &Value) -> Vec<String> {
    d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn the_whole_kubectl_workflow_works(k: &Kubectl, dir: &std::path::Path) -> Result<()> {
    let l = &k.label;
    let first = write(dir, "first.yaml", FIRST);
    let second = write(dir, "second.yaml", SECOND);

    // Client-side apply, twice.
    let out = k.run(&["apply", "-f", &first])?;
    assert!(out.contains("deployment.apps/web created"), "{l}: {out}");
    let d = k.deployment()?;
    assert_eq!(container_names(&d), ["nginx", "sidecar"], "{l}");
    assert!(
        d["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string(),
        "{l}: apply records the last applied configuration"
    );
    let out = k.run(&["apply", "-f", &second])?;
    assert!(out.contains("deployment.apps/web configured"), "{l}: {out}");
    let d = k.deployment()?;
    assert_eq!(
        container_names(&d),
        ["nginx"],
        "{l}: the removed container is gone"
    );
    let nginx = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(nginx["image"], "nginx:1.26", "{l}");
    assert_eq!(
        nginx["ports"].as_array().map(Vec::len),
        Some(1),
        "{l}: the removed port is gone: {nginx}"
    );
    assert!(
        d["metadata"]["labels"].get("stage").is_none(),
        "{l}: the removed label is gone: {}",
        d["metadata"]["labels"]
    );

    // Table output: kube-apiserver's columns, in every kubectl.
    let table = k.run(&["get", "deployment", "web"])?;
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{l}: {table}"
    );
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(&row[..2], ["web", "0/2"], "{l}: {table}");
    let wide = k.run(&["get", "deployment", "web", "-o", "wide"])?;
    assert!(
        wide.lines().next().unwrap_or_default().contains("IMAGES"),
        "{l}: {wide}"
    );
    assert!(wide.contains("nginx:1.26"), "{l}: {wide}");

    // get -o yaml.
    let yaml = k.run(&["get", "deployment", "web", "-o", "yaml"])?;
    assert!(
        yaml.contains("kind: Deployment") && yaml.contains("image: nginx:1.26"),
        "{l}: {yaml}"
    );

    // label, annotate.
    k.run(&["label", "deployment", "web", "tier=front"])?;
    k.run(&["annotate", "deployment", "web", "owner=team-a"])?;
    let got = k.run(&[
        "get",
        "deployment",
        "web",
        "-o",
        "jsonpath={.metadata.labels.tier} {.metadata.annotations.owner}",
    ])?;
    assert_eq!(got, "front team-a", "{l}");

    // scale, then wait for it.
    k.run(&["scale", "deployment", "web", "--replicas=3"])?;
    k.run(&[
        "wait",
        "--for=jsonpath={.spec.replicas}=3",
        "deployment/web",
        "--timeout=20s",
    ])?;

    // Strategic merge patch: an env var added to one container by its merge key.
    k.run(&[
        "patch",
        "deployment",
        "web",
        "--type",
        "strategic",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"nginx","env":[{"name":"MODE","value":"fast"}]}]}}}}"#,
    ])?;
    let d = k.deployment()?;
    let nginx = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(nginx["env"][0]["value"], "fast", "{l}: {nginx}");
    assert_eq!(
        nginx["image"], "nginx:1.26",
        "{l}: the patch kept the image"
    );

    // replace with an edited copy of what the server holds.
    let mut d = k.deployment()?;
    d["metadata"]["labels"]["replaced"] = Value::from("yes");
    let replaced = write(dir, "replaced.json", &serde_json::to_string(&d)?);
    k.run(&["replace", "-f", &replaced])?;
    let got = k.run(&[
        "get",
        "deployment",
        "web",
        "-o",
        "jsonpath={.metadata.labels.replaced}",
    ])?;
    assert_eq!(got, "yes", "{l}");

    // edit, with a script as the editor.
    k.run_env(
        &["edit", "deployment", "web"],
        &[
            ("EDITOR", "sed -i s/nginx:1.26/nginx:1.27/"),
            ("KUBE_EDITOR", ""),
        ],
    )?;
    let got = k.run(&[
        "get",
        "deployment",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ])?;
    assert_eq!(got, "nginx:1.27", "{l}: edit changed the image");

    // diff: exit code 1 and the change shown when the manifest differs.
    let out = k.output_env(&["diff", "-f", &second], &[])?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{l}: diff finds differences: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.lines()
            .any(|x| x.starts_with('+') && x.contains("image: nginx:1.26")),
        "{l}: {text}"
    );

    // Server-side dry run: the answer shows the change, the server keeps the old object.
    let out = k.run(&[
        "apply",
        "-f",
        &second,
        "--dry-run=server",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ])?;
    assert_eq!(out, "nginx:1.26", "{l}");
    let got = k.run(&[
        "get",
        "deployment",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ])?;
    assert_eq!(got, "nginx:1.27", "{l}: a dry run changes nothing");

    // explain.
    let out = k.run(&["explain", "deployment.spec.strategy"])?;
    assert!(out.contains("rollingUpdate"), "{l}: {out}");
    let out = k.run(&["explain", "pods.spec.containers.ports"])?;
    assert!(out.contains("containerPort"), "{l}: {out}");

    // api-resources, api-versions.
    let out = k.run(&["api-resources"])?;
    let line = out
        .lines()
        .find(|l| l.starts_with("deployments "))
        .unwrap_or_default();
    assert!(
        line.contains("deploy") && line.contains("apps/v1") && line.contains("Deployment"),
        "{l}: {out}"
    );
    let out = k.run(&["api-versions"])?;
    assert!(
        out.lines().any(|x| x == "apps/v1") && out.lines().any(|x| x == "v1"),
        "{l}: {out}"
    );

    // Bad manifests.
    let bad = write(dir, "bad-name.yaml", INVALID_NAME);
    let err = k.fails(&["create", "-f", &bad])?;
    assert!(
        err.contains("Invalid value") && err.contains("Not_A_Valid_Name"),
        "{l}: {err}"
    );
    let typo = write(dir, "typo.yaml", UNKNOWN_FIELD);
    let err = k.fails(&["create", "-f", &typo])?;
    assert!(
        err.contains("unknown field") && err.contains("dataa"),
        "{l}: {err}"
    );
    let err = k.fails(&["get", "configmap", "typo"])?;
    assert!(err.contains("NotFound"), "{l}: nothing was written: {err}");

    // get -w --output-watch-events: a row per change, as it happens.
    let mut child = std::process::Command::new(&k.bin)
        .arg("--kubeconfig")
        .arg(k.s.kubeconfig())
        .args([
            "-n",
            &k.ns,
            "get",
            "configmaps",
            "-w",
            "--output-watch-events",
        ])
        .env("HOME", k.s.data_dir.join("kubectl-home"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    k.run(&["create", "configmap", "watched", "--from-literal=a=1"])?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut seen = Vec::new();
    while std::time::Instant::now() < deadline
        && !seen
            .iter()
            .any(|l: &String| l.starts_with("ADDED") && l.contains("watched"))
    {
        if let Ok(l) = rx.recv_timeout(std::time::Duration::from_millis(200)) {
            seen.push(l);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.iter()
            .any(|l| l.starts_with("ADDED") && l.contains("watched")),
        "{l}: get -w showed no ADDED row for the new configmap: {seen:?}"
    );

    // delete --wait.
    let out = k.run(&["delete", "deployment", "web", "--wait=true"])?;
    assert!(out.contains("deleted"), "{l}: {out}");
    let err = k.fails(&["get", "deployment", "web"])?;
    assert!(err.contains("NotFound"), "{l}: {err}");
    Ok(())
}

#[test]
fn every_installed_kubectl_runs_the_whole_workflow() -> Result<()> {
    let s = Server::start()?;
    let bins = Server::kubectl_binaries();
    assert!(!bins.is_empty(), "no kubectl found on PATH");
    for (label, bin) in bins {
        let ns = format!("kubectl-{}", label.replace('.', "-"));
        s.kubectl(&["create", "namespace", &ns])?;
        let dir = tempfile::tempdir()?;
        let k = Kubectl {
            s: &s,
            label,
            bin,
            ns,
        };
        the_whole_kubectl_workflow_works(&k, dir.path())?;
    }
    Ok(())
}
