//! Two `logbook serve` replicas over one FoundationDB cluster: a write on one is seen by a
//! watch and by a consistent read on the other, and optimistic concurrency holds across
//! them. Runs when `FDB_CLUSTER_FILE` names a cluster and `LOGBOOK_BIN` is a build with
//! `--features fdb` (docs/fdb.md, "Testing against a cluster"); otherwise prints a skip line.

use std::time::Duration;

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use logbook_e2e::{Server, within};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_replica_reaches_a_watch_and_a_consistent_read_on_the_other() -> Result<()> {
    let Some(cluster_file) = std::env::var_os("FDB_CLUSTER_FILE") else {
        println!(
            "skipped: FDB_CLUSTER_FILE is not set, so there is no FoundationDB cluster for two \
             replicas to share (see docs/fdb.md, \"Testing against a cluster\")"
        );
        return Ok(());
    };
    within(180, "the two replicas did not agree", async {
        let cluster_file = cluster_file.to_string_lossy().into_owned();
        let directory = format!(
            "e2e-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_nanos()
        );
        let args = [
            "--store",
            "fdb",
            "--fdb-cluster-file",
            cluster_file.as_str(),
            "--fdb-directory",
            directory.as_str(),
            "--no-controllers",
            "--no-scheduler",
        ];
        let a = Server::start_with(&args)?;
        // The second replica trusts the same cluster CA, so one kubeconfig works on both, and
        // holds the same encryption keys, so it reads the Secrets the first one writes.
        let tmp = tempfile::tempdir()?;
        let b_dir = tmp.path().join("data");
        std::fs::create_dir_all(b_dir.join("pki"))?;
        for f in ["ca.crt", "ca.key", "encryption-config.yaml"] {
            std::fs::copy(a.data_dir.join("pki").join(f), b_dir.join("pki").join(f))
                .with_context(|| format!("copying {f} to the second replica"))?;
        }
        let b = Server::start_in(b_dir, &args)?;

        let on_a: Api<ConfigMap> = Api::namespaced(a.client().await?, "default");
        let on_b: Api<ConfigMap> = Api::namespaced(b.client().await?, "default");

        // A watch on B from "now", then a create on A.
        let start_rv = on_b
            .list_metadata(&Default::default())
            .await?
            .metadata
            .resource_version
            .context("list resourceVersion")?;
        let mut watch = on_b
            .watch(&WatchParams::default().timeout(60), &start_rv)
            .await?
            .boxed();
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "shared"},
            "data": {"written-on": "a"}
        }))?;
        let created = on_a.create(&PostParams::default(), &cm).await?;
        let created_rv = created.metadata.resource_version.clone().context("rv")?;
        let seen = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(ev) = watch.try_next().await? {
                if let WatchEvent::Added(o) = ev
                    && o.metadata.name.as_deref() == Some("shared")
                {
                    return Ok::<_, anyhow::Error>(o);
                }
            }
            anyhow::bail!("the watch on B ended without the create made on A")
        })
        .await
        .context("the watch on B did not see the create on A within 30 s")??;
        assert_eq!(
            seen.metadata.resource_version.as_deref(),
            Some(created_rv.as_str())
        );

        // A consistent read on B right after a write on A sees the write.
        let mut updated = created.clone();
        updated
            .data
            .get_or_insert_with(Default::default)
            .insert("written-on".into(), "a-again".into());
        let updated = on_a
            .replace("shared", &PostParams::default(), &updated)
            .await?;
        let read = on_b.get("shared").await?;
        assert_eq!(
            read.metadata.resource_version,
            updated.metadata.resource_version
        );
        assert_eq!(
            read.data
                .as_ref()
                .and_then(|d| d.get("written-on"))
                .map(String::as_str),
            Some("a-again")
        );
        let listed = on_b.list(&Default::default()).await?;
        let list_rv: u64 = listed.metadata.resource_version.context("rv")?.parse()?;
        let write_rv: u64 = updated
            .metadata
            .resource_version
            .clone()
            .context("rv")?
            .parse()?;
        assert!(
            list_rv >= write_rv,
            "a list on B is at least as new as a write on A"
        );

        // Optimistic concurrency across replicas: B's update with A's RV wins, and A's
        // update with the now stale RV is refused with 409.
        let mut from_b = read.clone();
        from_b
            .data
            .get_or_insert_with(Default::default)
            .insert("written-on".into(), "b".into());
        on_b.replace("shared", &PostParams::default(), &from_b)
            .await?;
        let mut stale = updated.clone();
        stale
            .data
            .get_or_insert_with(Default::default)
            .insert("written-on".into(), "stale".into());
        match on_a.replace("shared", &PostParams::default(), &stale).await {
            Err(kube::Error::Api(s)) => assert_eq!(s.code, 409, "{s:?}"),
            other => anyhow::bail!("a stale update across replicas must be refused: {other:?}"),
        }
        Ok(())
    })
    .await
}
