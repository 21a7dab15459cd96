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
