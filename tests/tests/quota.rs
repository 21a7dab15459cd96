//! ResourceQuota status as `kubectl describe quota` shows it: the quota controller counts
//! pods and their requests and limits, listed objects (`count/…`), and follows changes.

#![allow(clippy::unwrap_used)] // a test that panics has failed; the message says where

use std::time::Duration;

use anyhow::Result;
use logbook_e2e::{Server, within};
use serde_json::Value;

fn used(s: &Server) -> Result<Value> {
    let v: Value =
        serde_json::from_str(&s.kubectl(&["get", "quota", "team", "-n", "team", "-o", "json"])?)?;
    Ok(v["status"]["used"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_shows_what_the_namespace_uses_and_follows_changes() -> Result<()> {
    within(180, "the quota status did not follow", async {
        let s = Server::start_with(&["--simulate-nodes", "2"])?;
        s.kubectl(&["create", "namespace", "team"])?;
        s.kubectl(&[
            "create", "quota", "team", "-n", "team",
            "--hard=pods=10,requests.cpu=2,requests.memory=1Gi,limits.memory=2Gi,count/configmaps=5,services=3,count/deployments.apps=2",
        ])?;
        s.kubectl(&["create", "deployment", "web", "-n", "team", "--image=nginx:1", "--replicas=3"])?;
        s.kubectl(&[
            "set", "resources", "deployment/web", "-n", "team",
            "--requests=cpu=100m,memory=64Mi", "--limits=memory=128Mi",
        ])?;
        s.kubectl(&["rollout", "status", "deployment/web", "-n", "team", "--timeout=90s"])?;
        s.kubectl(&["create", "configmap", "settings", "-n", "team", "--from-literal=a=b"])?;
        s.kubectl(&["create", "service", "clusterip", "web", "-n", "team", "--tcp=80:80"])?;
        let mut last = Value::Null;
        let ok = within(60, "the quota counted the namespace", async {
            loop {
                last = used(&s).unwrap_or(Value::Null);
                // kube-root-ca.crt and settings; three pods of 100m / 64Mi / 128Mi.
                if last["pods"] == "3"
                    && last["requests.cpu"] == "300m"
                    && last["requests.memory"] == "192Mi"
                    && last["limits.memory"] == "384Mi"
                    && last["count/configmaps"] == "2"
                    && last["services"] == "1"
                    && last["count/deployments.apps"] == "1"
                {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
        .await;
        assert!(ok, "{last}");
        let q: Value = serde_json::from_str(&s.kubectl(&["get", "quota", "team", "-n", "team", "-o", "json"])?)?;
        assert_eq!(q["status"]["hard"]["pods"], "10", "{}", q["status"]);
        let described = s.kubectl(&["describe", "quota", "team", "-n", "team"])?;
        assert!(described.contains("requests.cpu") && described.contains("300m"), "{described}");

        s.kubectl(&["scale", "deployment/web", "-n", "team", "--replicas=1"])?;
        within(60, "the quota followed the scale-down", async {
            loop {
                let u = used(&s).unwrap_or(Value::Null);
                if u["pods"] == "1" && u["requests.cpu"] == "100m" {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
        .await;
        Ok(())
    })
    .await
}

/// A pod of `cpu` requested, for the concurrency test.
fn quota_pod(name: &str, cpu: &str) -> serde_json::Value {
    serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox",
            "resources": {"requests": {"cpu": cpu, "memory": "16Mi"}, "limits": {"cpu": cpu, "memory": "16Mi"}}}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_never_over_admits_under_64_concurrent_creates() -> Result<()> {
    within(180, "the concurrent creates did not finish", async {
        let s = Server::start()?;
        s.kubectl(&["create", "namespace", "race"])?;
        s.kubectl(&["create", "quota", "count", "-n", "race", "--hard=pods=10"])?;
        s.kubectl(&[
            "create",
            "quota",
            "compute",
            "-n",
            "race",
            "--hard=requests.cpu=4",
        ])?;
        let c = s.client().await?;
        let mut set = tokio::task::JoinSet::new();
        for i in 0..64 {
            let c = c.clone();
            // 64 pods of 300m: the cpu quota (4 cores) admits 13, the count quota 10.
            set.spawn(async move {
                logbook_e2e::call_json(
                    &c,
                    "POST",
                    "/api/v1/namespaces/race/pods",
                    quota_pod(&format!("p{i}"), "300m"),
                )
                .await
            });
        }
        let (mut admitted, mut refused) = (0, 0);
        while let Some(r) = set.join_next().await {
            match r? {
                Ok(_) => admitted += 1,
                Err(e) => {
                    let text = format!("{e:#}");
                    assert!(
                        text.contains("exceeded quota: count") && text.contains("403")
                            || text.contains("Forbidden"),
                        "{text}"
                    );
                    refused += 1;
                }
            }
        }
        assert_eq!(
            (admitted, refused),
            (10, 54),
            "exactly the quota's 10 pods are admitted"
        );
        let pods = s.kubectl(&["get", "pods", "-n", "race", "-o", "name"])?;
        assert_eq!(pods.lines().count(), 10, "{pods}");
        // status.used follows, exactly.
        logbook_e2e::eventually(30, "status.used shows 10 pods", || {
            let v: Value = serde_json::from_str(
                &s.kubectl(&["get", "quota", "count", "-n", "race", "-o", "json"])?,
            )?;
            Ok(v["status"]["used"]["pods"] == "10")
        })
        .await;
        // A pod without a cpu request is refused while a cpu quota exists, as kube words it.
        let out = s.kubectl(&["run", "bare", "-n", "race", "--image=busybox"]);
        let err = format!("{out:?}");
        assert!(
            err.contains("must specify requests.cpu") || err.contains("exceeded quota"),
            "{err}"
        );
        // Deleting a pod frees its share at once.
        let victim = pods
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("pod/")
            .to_string();
        s.kubectl(&[
            "delete",
            "pod",
            &victim,
            "-n",
            "race",
            "--grace-period=0",
            "--force",
        ])?;
        logbook_e2e::call_json(
            &c,
            "POST",
            "/api/v1/namespaces/race/pods",
            quota_pod("again", "300m"),
        )
        .await?;
        Ok(())
    })
    .await
}
