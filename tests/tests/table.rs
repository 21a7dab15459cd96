//! Server-side printing against the real binary: `kubectl get` (the default kubectl, 1.27
//! and 1.33) prints the columns kube-apiserver's printers define, `-o wide` the extra
//! ones, `get -w` prints rows as objects change; and the raw `meta.k8s.io` Table and
//! PartialObjectMetadata shapes over HTTP.

#![allow(clippy::unwrap_used)] // a test that panics has failed; the message says where

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use logbook_e2e::{Server, within};
use serde_json::{Value, json};

/// How long one kubectl invocation may take before the test fails.
const KUBECTL_TIMEOUT_SECONDS: u64 = 30;
/// How long a watching kubectl gets to print the rows it is expected to print.
const WATCH_ROWS_TIMEOUT_SECONDS: u64 = 30;

const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

/// Runs a command, killing it after `secs`.
fn run_bounded(mut cmd: Command, secs: u64, what: &str) -> Result<Output> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stdout.read_to_end(&mut b);
        b
    });
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stderr.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("timed out after {secs} s: {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

fn kubectl_home(s: &Server) -> Result<PathBuf> {
    let home = s.data_dir.join("kubectl-home");
    std::fs::create_dir_all(&home)?;
    Ok(home)
}

/// `kubectl` (or `kubectl.1.NN`) against the server, bounded; stdout, or the stderr as the
/// error.
fn kubectl_with(s: &Server, binary: &str, args: &[&str]) -> Result<String> {
    let mut cmd = Command::new(binary);
    cmd.arg("--kubeconfig")
        .arg(s.kubeconfig())
        .args(args)
        .env("HOME", kubectl_home(s)?);
    let what = format!("{binary} {} did not finish", args.join(" "));
    let out = run_bounded(cmd, KUBECTL_TIMEOUT_SECONDS, &what)?;
    if !out.status.success() {
        bail!(
            "{binary} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn kubectl(s: &Server, args: &[&str]) -> Result<String> {
    kubectl_with(s, "kubectl", args)
}

/// `kubectl.1.NN` beside the default kubectl.
fn versioned_kubectl(minor: u32) -> Result<PathBuf> {
    let out = Command::new("sh")
        .args(["-c", "dirname $(readlink -f $(which kubectl))"])
        .output()?;
    let dir = PathBuf::from(String::from_utf8(out.stdout)?.trim());
    let bin = dir.join(format!("kubectl.1.{minor}"));
    if !bin.exists() {
        bail!("{} is not installed", bin.display());
    }
    Ok(bin)
}

fn apply(s: &Server, dir: &Path, name: &str, manifest: &str) -> Result<()> {
    let p = dir.join(name);
    std::fs::write(&p, manifest)?;
    kubectl(s, &["create", "-f", &p.display().to_string()])?;
    Ok(())
}

/// A line's whitespace-separated fields.
fn fields(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// The line of a table whose first field is `name`.
fn row<'a>(table: &'a str, name: &str) -> Vec<&'a str> {
    table
        .lines()
        .map(fields)
        .find(|f| f.first() == Some(&name))
        .unwrap_or_else(|| panic!("no row {name:?} in:\n{table}"))
}

const PODS: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: web-0
  labels: {app: web}
spec:
  nodeName: node-a
  containers:
  - name: app
    image: nginx:1.25
---
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  labels: {app: web}
spec:
  containers:
  - name: app
    image: nginx:1.25
  - name: side
    image: busybox
"#;

/// Makes `pod` Running with a ready container that restarted twice and an IP.
fn make_running(s: &Server, pod: &str) -> Result<()> {
    let status = json!({"status": {
        "phase": "Running",
        "podIP": "10.1.2.3",
        "podIPs": [{"ip": "10.1.2.3"}],
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [{
            "name": "app", "image": "nginx:1.25", "imageID": "", "ready": true, "started": true,
            "restartCount": 2,
            "state": {"running": {"startedAt": "2020-01-01T00:00:00Z"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "startedAt": "2020-01-01T00:00:00Z", "finishedAt": "2020-01-01T00:00:00Z"}}
        }]
    }});
    kubectl(
        s,
        &[
            "patch",
            "pod",
            pod,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status.to_string(),
        ],
    )?;
    Ok(())
}

#[test]
fn kubectl_get_pods_prints_kube_apiserver_columns_and_wide_columns() -> Result<()> {
    let s = Server::start_api_only()?;
    let dir = tempfile::tempdir()?;
    apply(&s, dir.path(), "pods.yaml", PODS)?;
    make_running(&s, "web-0")?;

    let out = kubectl(&s, &["get", "pods"])?;
    let header = out.lines().next().unwrap_or("");
    assert_eq!(
        fields(header),
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "{out}"
    );
    let running = row(&out, "web-0");
    assert_eq!(&running[..3], ["web-0", "1/1", "Running"], "{out}");
    // "2 (6y20d ago)": the count and when the last container restarted.
    assert_eq!(running[3], "2", "{out}");
    assert!(running[4].starts_with('(') && running[5] == "ago)", "{out}");
    assert!(running[6].ends_with('s'), "age in seconds: {out}");
    let pending = row(&out, "web-1");
    assert_eq!(&pending[..4], ["web-1", "0/2", "Pending", "0"], "{out}");

    let wide = kubectl(&s, &["get", "pods", "-o", "wide"])?;
    let header = wide.lines().next().unwrap_or("");
    for (a, b) in [
        ("AGE", "IP"),
        ("IP", "NODE"),
        ("NODE", "NOMINATED NODE"),
        ("NOMINATED NODE", "READINESS GATES"),
    ] {
        assert!(
            header.find(a) < header.find(b) && header.contains(b),
            "{a} before {b}: {wide}"
        );
    }
    let running = row(&wide, "web-0");
    assert_eq!(
        &running[running.len() - 4..],
        ["10.1.2.3", "node-a", "<none>", "<none>"],
        "{wide}"
    );
    let pending = row(&wide, "web-1");
    assert_eq!(
        &pending[pending.len() - 4..],
        ["<none>", "<none>", "<none>", "<none>"],
        "{wide}"
    );

    // A label column comes from the row's PartialObjectMetadata.
    let labels = kubectl(&s, &["get", "pods", "--show-labels"])?;
    assert!(row(&labels, "web-1").contains(&"app=web"), "{labels}");
    Ok(())
}

const WEB: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - port: 80
    protocol: TCP
    nodePort: 30080
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data: {a: "1", b: "2"}
"#;

#[test]
fn kubectl_get_of_several_kinds_prints_each_kinds_columns() -> Result<()> {
    let s = Server::start_api_only()?;
    let dir = tempfile::tempdir()?;
    apply(&s, dir.path(), "web.yaml", WEB)?;

    let out = kubectl(&s, &["get", "deployments,services,namespaces,configmaps"])?;
    let sections: Vec<&str> = out.split("\n\n").collect();
    assert_eq!(sections.len(), 4, "{out}");
    let want: [(&[&str], &str, &[&str]); 4] = [
        (
            &["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
            "deployment.apps/web",
            &["0/2", "0", "0"],
        ),
        (
            &[
                "NAME",
                "TYPE",
                "CLUSTER-IP",
                "EXTERNAL-IP",
                "PORT(S)",
                "AGE",
            ],
            "service/web",
            &["NodePort"],
        ),
        (&["NAME", "STATUS", "AGE"], "namespace/default", &["Active"]),
        (&["NAME", "DATA", "AGE"], "configmap/settings", &["2"]),
    ];
    for (section, (header, name, cells)) in sections.iter().zip(want) {
        assert_eq!(
            fields(section.lines().next().unwrap_or("")),
            header,
            "{section}"
        );
        let r = row(section, name);
        assert_eq!(&r[1..=cells.len()], cells, "{section}");
    }
    let svc = row(sections[1], "service/web");
    assert_eq!(svc[3], "<none>", "external IP: {out}");
    assert_eq!(svc[4], "80:30080/TCP", "ports: {out}");

    let wide = kubectl(&s, &["get", "deployment", "web", "-o", "wide"])?;
    assert_eq!(
        fields(wide.lines().next().unwrap_or("")),
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ],
        "{wide}"
    );
    assert_eq!(
        &row(&wide, "web")[5..],
        ["nginx", "nginx:1.25", "app=web"],
        "{wide}"
    );
    let svc = kubectl(&s, &["get", "service", "web", "-o", "wide"])?;
    assert_eq!(row(&svc, "web").last(), Some(&"app=web"), "{svc}");

    // No printer in kube-apiserver: the default table.
    kubectl(
        &s,
        &[
            "create",
            "clusterrole",
            "reader",
            "--verb=get",
            "--resource=pods",
        ],
    )?;
    let roles = kubectl(&s, &["get", "clusterroles"])?;
    assert_eq!(
        fields(roles.lines().next().unwrap_or("")),
        ["NAME", "CREATED", "AT"],
        "{roles}"
    );
    assert!(row(&roles, "reader")[1].ends_with('Z'), "{roles}");
    Ok(())
}

#[test]
fn kubectl_get_pods_watch_prints_a_row_for_each_change() -> Result<()> {
    let s = Server::start_api_only()?;
    let dir = tempfile::tempdir()?;
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(s.kubeconfig())
        .args(["get", "pods", "-w", "--output-watch-events"])
        .env("HOME", kubectl_home(&s)?)
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
    apply(&s, dir.path(), "pods.yaml", PODS)?;
    make_running(&s, "web-0")?;
    kubectl(&s, &["delete", "pod", "web-1", "--wait=false"])?;

    let wanted = |seen: &[String]| {
        let has = |event: &str, name: &str, status: &str| {
            seen.iter().any(|l| {
                let f = fields(l);
                f.first() == Some(&event) && f.get(1) == Some(&name) && f.get(3) == Some(&status)
            })
        };
        has("ADDED", "web-0", "Pending")
            && has("ADDED", "web-1", "Pending")
            && has("MODIFIED", "web-0", "Running")
            && seen
                .iter()
                .any(|l| l.starts_with("DELETED") && fields(l).get(1) == Some(&"web-1"))
    };
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(WATCH_ROWS_TIMEOUT_SECONDS);
    while Instant::now() < deadline && !wanted(&seen) {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(l);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        wanted(&seen),
        "kubectl get pods -w printed (within {WATCH_ROWS_TIMEOUT_SECONDS} s):\n{}",
        seen.join("\n")
    );
    assert_eq!(
        fields(&seen[0]),
        ["EVENT", "NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "one header, from the first event's columns"
    );
    assert_eq!(
        seen.iter().filter(|l| l.starts_with("EVENT")).count(),
        1,
        "{seen:?}"
    );
    Ok(())
}

#[test]
fn kubectl_1_27_and_1_33_print_the_same_tables() -> Result<()> {
    let s = Server::start_api_only()?;
    let dir = tempfile::tempdir()?;
    apply(&s, dir.path(), "pods.yaml", PODS)?;
    apply(&s, dir.path(), "web.yaml", WEB)?;
    make_running(&s, "web-0")?;
    let mut outputs = Vec::new();
    for minor in [27, 33] {
        let bin = versioned_kubectl(minor)?.display().to_string();
        let pods = kubectl_with(&s, &bin, &["get", "pods", "-o", "wide"])?;
        let header = pods.lines().next().unwrap_or("");
        assert!(
            header.starts_with("NAME") && header.contains("READINESS GATES"),
            "kubectl 1.{minor}: {pods}"
        );
        assert_eq!(
            &row(&pods, "web-0")[..3],
            ["web-0", "1/1", "Running"],
            "kubectl 1.{minor}: {pods}"
        );
        let cms = kubectl_with(&s, &bin, &["get", "configmaps", "settings"])?;
        assert_eq!(
            fields(cms.lines().next().unwrap_or("")),
            ["NAME", "DATA", "AGE"],
            "kubectl 1.{minor}: {cms}"
        );
        assert_eq!(row(&cms, "settings")[1], "2", "kubectl 1.{minor}: {cms}");
        // Ages move on between the two runs; compare everything else.
        let stable: Vec<String> = [pods, cms]
            .iter()
            .flat_map(|t| t.lines().map(|l| fields(l)[..2].join(" ")))
            .collect();
        outputs.push(stable);
    }
    assert_eq!(outputs[0], outputs[1]);
    Ok(())
}

async fn get_with(client: &kube::Client, path: &str, accept: &str) -> Result<Value> {
    let r = http::Request::get(path)
        .header("accept", accept)
        .body(Vec::new())?;
    Ok(serde_json::from_str(&client.request_text(r).await?)?)
}

async fn status_of(client: &kube::Client, path: &str, accept: &str) -> u16 {
    let r = http::Request::get(path)
        .header("accept", accept)
        .body(Vec::new())
        .unwrap();
    match client.request_text(r).await {
        Err(kube::Error::Api(s)) => s.code,
        Err(e) => panic!("expected a Status, got {e}"),
        Ok(t) => panic!("expected a failure, got {t}"),
    }
}

#[tokio::test]
async fn a_table_has_the_meta_k8s_io_shape_for_lists_pages_gets_and_watches() -> Result<()> {
    let s = Server::start_api_only()?;
    let c = s.client().await?;
    let cms = "/api/v1/namespaces/default/configmaps";
    within(60, "creating three configmaps", async {
        for n in ["a", "b", "c"] {
            let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": n, "labels": {"x": n}}, "data": {"k": "v"}});
            let r = http::Request::post(cms)
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&body)?)?;
            c.request_text(r).await?;
        }
        anyhow::Ok(())
    })
    .await?;

    within(60, "the table requests", async {
        let t = get_with(&c, cms, TABLE_ACCEPT).await?;
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        assert!(t["metadata"]["resourceVersion"].as_str().is_some(), "{t}");
        let cols = t["columnDefinitions"].as_array().unwrap();
        let names: Vec<&str> = cols.iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["Name", "Data", "Age"]);
        assert_eq!(cols[0]["type"], "string");
        assert_eq!(cols[0]["format"], "name");
        assert_eq!(cols[0]["priority"], 0);
        assert!(
            cols[0]["description"]
                .as_str()
                .unwrap()
                .starts_with("Name must be unique")
        );
        let rows = t["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 3, "{t}");
        assert_eq!(rows[0]["cells"][0], "a");
        assert_eq!(rows[0]["cells"][1], 1);
        let obj = &rows[0]["object"];
        assert_eq!(obj["kind"], "PartialObjectMetadata");
        assert_eq!(obj["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(obj["metadata"]["name"], "a");
        assert_eq!(obj["metadata"]["labels"]["x"], "a");
        assert!(obj["metadata"]["resourceVersion"].as_str().is_some());
        assert!(obj.get("data").is_none(), "metadata only: {obj}");

        let none = get_with(&c, &format!("{cms}?includeObject=None"), TABLE_ACCEPT).await?;
        assert_eq!(none["rows"][0]["object"], Value::Null);
        let full = get_with(&c, &format!("{cms}?includeObject=Object"), TABLE_ACCEPT).await?;
        assert_eq!(full["rows"][0]["object"]["kind"], "ConfigMap");
        assert_eq!(full["rows"][0]["object"]["data"]["k"], "v");
        assert_eq!(
            status_of(&c, &format!("{cms}?includeObject=All"), TABLE_ACCEPT).await,
            400
        );

        let beta = get_with(&c, cms, "application/json;as=Table;v=v1beta1;g=meta.k8s.io").await?;
        assert_eq!(beta["apiVersion"], "meta.k8s.io/v1beta1");

        let page = get_with(&c, &format!("{cms}?limit=2"), TABLE_ACCEPT).await?;
        assert_eq!(page["rows"].as_array().unwrap().len(), 2);
        assert_eq!(page["metadata"]["remainingItemCount"], 1);
        let token = page["metadata"]["continue"].as_str().unwrap().to_string();
        let rest = get_with(&c, &format!("{cms}?limit=2&continue={token}"), TABLE_ACCEPT).await?;
        assert_eq!(rest["rows"][0]["cells"][0], "c");
        assert!(rest["metadata"].get("continue").is_none(), "{rest}");

        let one = get_with(&c, &format!("{cms}/b"), TABLE_ACCEPT).await?;
        assert_eq!(one["kind"], "Table");
        assert_eq!(one["rows"].as_array().unwrap().len(), 1);
        assert_eq!(one["rows"][0]["cells"][0], "b");
        assert_eq!(
            one["metadata"]["resourceVersion"],
            one["rows"][0]["object"]["metadata"]["resourceVersion"]
        );

        let partial_list = get_with(
            &c,
            cms,
            "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io",
        )
        .await?;
        assert_eq!(partial_list["kind"], "PartialObjectMetadataList");
        assert_eq!(partial_list["items"][2]["kind"], "PartialObjectMetadata");
        assert_eq!(partial_list["items"][2]["metadata"]["name"], "c");
        let partial = get_with(
            &c,
            &format!("{cms}/a"),
            "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io",
        )
        .await?;
        assert_eq!(partial["kind"], "PartialObjectMetadata");
        assert!(partial.get("data").is_none());
        assert_eq!(
            status_of(
                &c,
                cms,
                "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io"
            )
            .await,
            406
        );
        assert_eq!(
            status_of(&c, cms, "application/json;as=Table;v=v2;g=meta.k8s.io").await,
            406
        );

        let watch = c
            .request_text(
                http::Request::get(format!("{cms}?watch=true&timeoutSeconds=1"))
                    .header("accept", TABLE_ACCEPT)
                    .body(Vec::new())?,
            )
            .await?;
        let events: Vec<Value> = watch
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
        assert_eq!(events.len(), 3, "{watch}");
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e["type"], "ADDED");
            assert_eq!(e["object"]["kind"], "Table");
            assert_eq!(e["object"]["rows"].as_array().unwrap().len(), 1);
            assert_eq!(
                e["object"]["columnDefinitions"].is_array(),
                i == 0,
                "columns in the first event only: {e}"
            );
        }
        anyhow::Ok(())
    })
    .await
}
