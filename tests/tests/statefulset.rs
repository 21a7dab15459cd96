//! StatefulSets as users drive them with kubectl against the real binary, with the
//! controllers and scheduler in-process and simulated nodes running the pods: ordered
//! creation and scale-down observed through a watch, a partitioned rolling update,
//! `kubectl rollout status/history/undo`, OnDelete with `ordinals.start`, failed pods made
//! again, and claims from volumeClaimTemplates kept or deleted on scale-down and with the set
//! per `persistentVolumeClaimRetentionPolicy`.

#![allow(clippy::unwrap_used)] // a test that panics has failed; the message says where

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::watcher;
use logbook_e2e::{Server, eventually, within};
use serde_json::{Value, json};

fn get_json(s: &Server, args: &[&str]) -> Result<Value> {
    s.kubectl_json(args)
}

fn apply(s: &Server, name: &str, manifest: &Value) -> Result<String> {
    let path = s.data_dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec(manifest)?)?;
    s.kubectl(&["apply", "-f", &path.to_string_lossy()])
}

/// A StatefulSet of nginx pods labelled `app=<name>`, with extra spec fields.
fn statefulset(name: &str, replicas: u32, image: &str, extra: Value) -> Value {
    let mut spec = json!({
        "serviceName": name,
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}},
                     "spec": {"containers": [{"name": "nginx", "image": image}]}},
    });
    if let (Some(o), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name}, "spec": spec})
}

/// Pod name → image, for the set's pods that run and are not being deleted.
fn images(s: &Server, app: &str) -> Result<HashMap<String, String>> {
    let v = get_json(s, &["get", "pods", "-l", &format!("app={app}")])?;
    Ok(v["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| {
            p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
        })
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                p["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect())
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// What a watch saw happen to the pods, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Created(String),
    Ready(String),
    Terminating(String),
    Gone(String),
}

/// Records, through a kube-rs watcher, each pod's creation, first readiness, deletion and
/// removal, in the order the watch delivered them.
fn record(client: kube::Client, selector: &str) -> Arc<Mutex<Vec<Seen>>> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let o = out.clone();
    let api: Api<Pod> = Api::namespaced(client, "default");
    let cfg = watcher::Config::default().labels(selector);
    tokio::spawn(async move {
        let mut known: HashMap<String, (bool, bool)> = HashMap::new();
        let mut stream = std::pin::pin!(watcher(api, cfg));
        while let Ok(Some(ev)) = stream.try_next().await {
            let mut log = o.lock().unwrap();
            match ev {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                    let name = p.metadata.name.clone().unwrap_or_default();
                    let e = known.entry(name.clone()).or_insert_with(|| {
                        log.push(Seen::Created(name.clone()));
                        (false, false)
                    });
                    if !e.0 && ready(&p) {
                        e.0 = true;
                        log.push(Seen::Ready(name.clone()));
                    }
                    if !e.1 && p.metadata.deletion_timestamp.is_some() {
                        e.1 = true;
                        log.push(Seen::Terminating(name));
                    }
                }
                watcher::Event::Delete(p) => {
                    let name = p.metadata.name.clone().unwrap_or_default();
                    if known.remove(&name).is_some_and(|(_, t)| !t) {
                        log.push(Seen::Terminating(name.clone()));
                    }
                    log.push(Seen::Gone(name));
                }
                _ => {}
            }
        }
    });
    out
}

fn position(log: &[Seen], what: &Seen) -> usize {
    log.iter()
        .position(|s| s == what)
        .unwrap_or_else(|| panic!("{what:?} was never seen: {log:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_ordering_is_observed_through_a_watch() -> Result<()> {
    within(180, "ordered creation and scale-down did not finish", async {
        let s = Server::start_with(&["--simulate-nodes", "3"])?;
        let log = record(s.client().await?, "app=web");
        // A readiness delay makes "Ready before the next is created" observable.
        apply(
            &s,
            "web",
            &statefulset(
                "web",
                3,
                "nginx:1.25",
                json!({"template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "nginx", "image": "nginx:1.25",
                        "readinessProbe": {"exec": {"command": ["true"]}, "initialDelaySeconds": 1}}]}}}),
            ),
        )?;
        s.kubectl(&["rollout", "status", "statefulset/web", "--timeout=90s"])?;
        {
            let l = log.lock().unwrap().clone();
            for i in 1..3 {
                let created = position(&l, &Seen::Created(format!("web-{i}")));
                let before_ready = position(&l, &Seen::Ready(format!("web-{}", i - 1)));
                assert!(
                    before_ready < created,
                    "web-{i} was created before web-{} was Ready: {l:?}",
                    i - 1
                );
            }
        }
        let p = get_json(&s, &["get", "pod", "web-1"])?;
        assert_eq!(p["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"], "web-1");
        assert_eq!(p["metadata"]["labels"]["apps.kubernetes.io/pod-index"], "1");
        assert_eq!(p["spec"]["hostname"], "web-1");
        assert_eq!(p["spec"]["subdomain"], "web");

        s.kubectl(&["scale", "statefulset", "web", "--replicas=1"])?;
        eventually(90, "web scaled down to one pod", || Ok(images(&s, "web")?.len() == 1 && {
            let l = log.lock().unwrap();
            l.contains(&Seen::Gone("web-1".into()))
        }))
        .await;
        let l = log.lock().unwrap().clone();
        let gone2 = position(&l, &Seen::Gone("web-2".into()));
        let term1 = position(&l, &Seen::Terminating("web-1".into()));
        assert!(
            gone2 < term1,
            "web-1 was deleted before web-2 was gone: {l:?}"
        );
        assert!(!l.contains(&Seen::Terminating("web-0".into())), "{l:?}");
        let st = get_json(&s, &["get", "statefulset", "web"])?;
        assert_eq!(st["status"]["replicas"], 1, "{st}");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_rolling_update_updates_only_high_ordinals_and_rolls_back_with_undo()
-> Result<()> {
    within(240, "the rolling update workflow did not finish", async {
        let s = Server::start_with(&["--simulate-nodes", "3"])?;
        apply(&s, "web", &statefulset("web", 3, "nginx:1.25", json!({})))?;
        s.kubectl(&["rollout", "status", "statefulset/web", "--timeout=90s"])?;
        let st = get_json(&s, &["get", "statefulset", "web"])?;
        assert_eq!(
            st["status"]["currentRevision"], st["status"]["updateRevision"],
            "{st}"
        );

        s.kubectl(&[
            "patch",
            "statefulset",
            "web",
            "-p",
            r#"{"spec":{"updateStrategy":{"type":"RollingUpdate","rollingUpdate":{"partition":1}},
                "template":{"spec":{"containers":[{"name":"nginx","image":"nginx:1.26"}]}}}}"#,
        ])?;
        let out = s.kubectl(&["rollout", "status", "statefulset/web", "--timeout=90s"])?;
        assert!(out.contains("partitioned roll out complete"), "{out}");
        let im = images(&s, "web")?;
        assert_eq!(
            im.get("web-0").map(String::as_str),
            Some("nginx:1.25"),
            "{im:?}"
        );
        assert_eq!(
            im.get("web-1").map(String::as_str),
            Some("nginx:1.26"),
            "{im:?}"
        );
        assert_eq!(
            im.get("web-2").map(String::as_str),
            Some("nginx:1.26"),
            "{im:?}"
        );
        let st = get_json(&s, &["get", "statefulset", "web"])?;
        assert_eq!(st["status"]["updatedReplicas"], 2, "{st}");
        assert_ne!(
            st["status"]["currentRevision"], st["status"]["updateRevision"],
            "{st}"
        );

        s.kubectl(&[
            "patch",
            "statefulset",
            "web",
            "-p",
            r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}"#,
        ])?;
        // (kubectl reports any set with a partition, 0 included, as "partitioned".)
        let out = s.kubectl(&["rollout", "status", "statefulset/web", "--timeout=90s"])?;
        assert!(out.contains("roll out complete: 3 new pods"), "{out}");
        let im = images(&s, "web")?;
        assert!(
            im.len() == 3 && im.values().all(|i| i == "nginx:1.26"),
            "{im:?}"
        );
        let st = get_json(&s, &["get", "statefulset", "web"])?;
        assert_eq!(
            st["status"]["currentRevision"], st["status"]["updateRevision"],
            "{st}"
        );
        assert_eq!(
            st["status"]["observedGeneration"], st["metadata"]["generation"],
            "{st}"
        );

        let history = s.kubectl(&["rollout", "history", "statefulset/web"])?;
        assert!(history.contains('1') && history.contains('2'), "{history}");
        let revs = get_json(&s, &["get", "controllerrevisions", "-l", "app=web"])?;
        assert_eq!(revs["items"].as_array().map(Vec::len), Some(2), "{revs}");

        s.kubectl(&["rollout", "undo", "statefulset/web"])?;
        s.kubectl(&["rollout", "status", "statefulset/web", "--timeout=90s"])?;
        eventually(60, "every pod back on nginx:1.25", || {
            let im = images(&s, "web")?;
            Ok(im.len() == 3 && im.values().all(|i| i == "nginx:1.25"))
        })
        .await;
        // The first revision was reused and became the newest.
        let revs = get_json(&s, &["get", "controllerrevisions", "-l", "app=web"])?;
        let mut numbers: Vec<i64> = revs["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["revision"].as_i64().unwrap_or(0))
            .collect();
        numbers.sort_unstable();
        assert_eq!(numbers, vec![2, 3], "{revs}");
        Ok(())
    })
    .await
}

fn claims(s: &Server) -> Result<Vec<String>> {
    let v = get_json(s, &["get", "pvc"])?;
    let mut names: Vec<String> = v["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c["metadata"]["deletionTimestamp"].is_null())
        .map(|c| c["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect();
    names.sort();
    Ok(names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_from_volume_claim_templates_are_deleted_on_scale_down_only_when_asked() -> Result<()>
{
    within(240, "the claims workflow did not finish", async {
        let s = Server::start_with(&["--simulate-nodes", "3"])?;
        let claim = json!([{"metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]);
        apply(
            &s,
            "del",
            &statefulset(
                "del",
                3,
                "nginx",
                json!({"podManagementPolicy": "Parallel", "volumeClaimTemplates": claim,
                       "persistentVolumeClaimRetentionPolicy":
                           {"whenScaled": "Delete", "whenDeleted": "Delete"}}),
            ),
        )?;
        apply(
            &s,
            "keep",
            &statefulset(
                "keep",
                3,
                "nginx",
                json!({"podManagementPolicy": "Parallel", "volumeClaimTemplates": claim}),
            ),
        )?;
        for set in ["del", "keep"] {
            s.kubectl(&["rollout", "status", &format!("statefulset/{set}"), "--timeout=90s"])?;
        }
        assert_eq!(
            claims(&s)?,
            ["data-del-0", "data-del-1", "data-del-2", "data-keep-0", "data-keep-1", "data-keep-2"]
        );
        let p = get_json(&s, &["get", "pod", "del-2"])?;
        let vols = p["spec"]["volumes"].as_array().cloned().unwrap_or_default();
        assert!(
            vols.iter()
                .any(|v| v["name"] == "data" && v["persistentVolumeClaim"]["claimName"] == "data-del-2"),
            "{vols:?}"
        );
        let c = get_json(&s, &["get", "pvc", "data-del-0"])?;
        assert_eq!(c["metadata"]["labels"]["app"], "del", "{c}");

        s.kubectl(&["scale", "statefulset", "del", "--replicas=1"])?;
        s.kubectl(&["scale", "statefulset", "keep", "--replicas=1"])?;
        eventually(90, "the scaled-down ordinals' claims of del are deleted", || {
            Ok(claims(&s)?
                == ["data-del-0", "data-keep-0", "data-keep-1", "data-keep-2"])
        })
        .await;
        eventually(60, "keep scaled down", || Ok(images(&s, "keep")?.len() == 1)).await;
        assert_eq!(
            claims(&s)?,
            ["data-del-0", "data-keep-0", "data-keep-1", "data-keep-2"],
            "Retain keeps every claim"
        );

        // whenDeleted: Delete takes the remaining claim with the set; Retain keeps them.
        s.kubectl(&["delete", "statefulset", "del", "keep"])?;
        eventually(90, "del's last claim deleted with its set", || {
            Ok(claims(&s)? == ["data-keep-0", "data-keep-1", "data-keep-2"])
        })
        .await;
        eventually(60, "every pod of both sets gone", || {
            Ok(get_json(&s, &["get", "pods"])?["items"].as_array().map(Vec::len) == Some(0))
        })
        .await;
        assert_eq!(claims(&s)?, ["data-keep-0", "data-keep-1", "data-keep-2"]);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_delete_replaces_a_pod_only_when_it_is_deleted_or_fails_and_ordinals_can_start_above_zero()
-> Result<()> {
    within(180, "the OnDelete workflow did not finish", async {
        let s = Server::start_with(&["--simulate-nodes", "2"])?;
        apply(
            &s,
            "db",
            &statefulset(
                "db",
                2,
                "postgres:16",
                json!({"ordinals": {"start": 5}, "updateStrategy": {"type": "OnDelete"}}),
            ),
        )?;
        eventually(60, "db-5 and db-6 running", || {
            let im = images(&s, "db")?;
            Ok(im.len() == 2 && im.contains_key("db-5") && im.contains_key("db-6"))
        })
        .await;
        s.kubectl(&["set", "image", "statefulset/db", "nginx=postgres:17"])?;
        eventually(30, "the update revision is observed", || {
            let st = get_json(&s, &["get", "statefulset", "db"])?;
            Ok(
                st["status"]["observedGeneration"] == st["metadata"]["generation"]
                    && st["status"]["updateRevision"] != st["status"]["currentRevision"],
            )
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let im = images(&s, "db")?;
        assert!(
            im.values().all(|i| i == "postgres:16"),
            "OnDelete replaced a pod by itself: {im:?}"
        );

        s.kubectl(&["delete", "pod", "db-6"])?;
        eventually(60, "db-6 recreated on the new template", || {
            let im = images(&s, "db")?;
            Ok(im.get("db-6").map(String::as_str) == Some("postgres:17")
                && im.get("db-5").map(String::as_str) == Some("postgres:16"))
        })
        .await;
        let st = get_json(&s, &["get", "statefulset", "db"])?;
        assert_eq!(st["status"]["updatedReplicas"], 1, "{st}");
        assert_eq!(st["status"]["currentReplicas"], 1, "{st}");

        // A failed pod is deleted and made again under its name (OnDelete or not).
        let uid = get_json(&s, &["get", "pod", "db-5"])?["metadata"]["uid"].clone();
        s.kubectl(&[
            "patch",
            "pod",
            "db-5",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Failed"}}"#,
        ])?;
        eventually(60, "db-5 recreated after failing", || {
            let p = get_json(&s, &["get", "pod", "db-5"])?;
            Ok(p["metadata"]["uid"] != uid && p["status"]["phase"] == "Running")
        })
        .await;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_with_max_unavailable_replaces_that_many_pods_at_once() -> Result<()> {
    within(180, "the maxUnavailable rolling update did not finish", async {
        let s = Server::start_with(&["--simulate-nodes", "2"])?;
        let log = record(s.client().await?, "app=web");
        apply(
            &s,
            "web",
            &statefulset(
                "web",
                4,
                "nginx:1.25",
                json!({"podManagementPolicy": "Parallel", "updateStrategy": {"type": "RollingUpdate",
                    "rollingUpdate": {"partition": 0, "maxUnavailable": 2}}}),
            ),
        )?;
        s.kubectl(&["rollout", "status", "statefulset/web", "--timeout=90s"])?;
        let start = log.lock().unwrap().len();
        s.kubectl(&["set", "image", "statefulset/web", "nginx=nginx:1.26"])?;
        s.kubectl(&["rollout", "status", "statefulset/web", "--timeout=90s"])?;
        eventually(60, "every pod on nginx:1.26", || {
            let im = images(&s, "web")?;
            Ok(im.len() == 4 && im.values().all(|i| i == "nginx:1.26"))
        })
        .await;
        // Replay the watch: how many pods were ready at the lowest point of the update.
        let l = log.lock().unwrap().clone();
        let mut ready: std::collections::HashSet<String> = std::collections::HashSet::new();
        for e in &l[..start] {
            match e {
                Seen::Ready(n) => {
                    ready.insert(n.clone());
                }
                Seen::Terminating(n) | Seen::Gone(n) => {
                    ready.remove(n);
                }
                Seen::Created(_) => {}
            }
        }
        assert_eq!(ready.len(), 4, "{l:?}");
        let mut lowest = ready.len();
        for e in &l[start..] {
            match e {
                Seen::Ready(n) => {
                    ready.insert(n.clone());
                }
                Seen::Terminating(n) | Seen::Gone(n) => {
                    ready.remove(n);
                }
                Seen::Created(_) => {}
            }
            lowest = lowest.min(ready.len());
        }
        assert_eq!(lowest, 2, "maxUnavailable 2 of 4 should leave exactly 2 ready at the lowest: {l:?}");
        Ok(())
    })
    .await
}
