//! The one pod watch of the node (`fieldSelector=spec.nodeName=<node>`) and the workers it
//! feeds: a pod that appears gets a [`Worker`], every change of it reaches that worker,
//! and a pod that disappears is torn down. After the first list, sandboxes in the runtime
//! that belong to no pod of this node (pods deleted while the agent was down) are torn down
//! too; sandboxes of pods that still exist are adopted, their containers left running.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::watcher;
use tokio::sync::watch;

use super::spec::{pod_name, pod_namespace, pod_uid};
use super::worker::{Shared, Update, Worker};
use crate::cri;

/// Pod workers at most (a node runs at most `pods_max` pods; terminating ones briefly add).
pub const POD_WORKERS_MAX: usize = 1_024;

type Workers = HashMap<String, (watch::Sender<Update>, tokio::task::JoinHandle<()>)>;
pub type PodIndex = Arc<std::sync::RwLock<HashMap<(String, String), Arc<Pod>>>>;

fn key(p: &Pod) -> (String, String) {
    (pod_namespace(p).to_string(), pod_name(p).to_string())
}

fn dispatch(shared: &Arc<Shared>, workers: &mut Workers, update: Update) {
    let pod = match &update {
        Update::Pod(p) | Update::Gone(p) => p.clone(),
    };
    let uid = pod_uid(&pod).to_string();
    workers.retain(|_, (_, h)| !h.is_finished());
    if let Some((tx, _)) = workers.get(&uid) {
        let _ = tx.send(update);
        return;
    }
    if matches!(update, Update::Gone(_)) && uid.is_empty() {
        return;
    }
    if workers.len() >= POD_WORKERS_MAX {
        tracing::warn!(
            pod = pod_name(&pod),
            "too many pod workers; the pod waits for the next change"
        );
        return;
    }
    let (tx, rx) = watch::channel(update);
    let handle = tokio::spawn(Worker::new(shared.clone()).run(rx));
    workers.insert(uid, (tx, handle));
}

/// A pod known only from its sandbox's labels (for tearing down an orphan).
fn orphan(uid: &str, labels: &HashMap<String, String>) -> Pod {
    let mut p = Pod::default();
    p.metadata.uid = Some(uid.to_string());
    p.metadata.name = labels.get(cri::POD_NAME_LABEL).cloned();
    p.metadata.namespace = labels.get(cri::POD_NAMESPACE_LABEL).cloned();
    p
}

/// Watches the node's pods and runs their workers until `shutdown` flips. Running
/// containers are left alone on shutdown (a restarted agent adopts them).
pub async fn run(shared: Arc<Shared>, index: PodIndex, mut shutdown: watch::Receiver<bool>) {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", shared.cfg.node_name));
    let mut stream = watcher(api, cfg).boxed();
    let mut workers: Workers = HashMap::new();
    let mut listing: HashSet<String> = HashSet::new();
    let mut first_list_done = false;
    loop {
        let ev = tokio::select! {
            ev = stream.next() => ev,
            _ = shutdown.changed() => break,
        };
        let Some(ev) = ev else { break };
        match ev {
            Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                listing.insert(pod_uid(&p).to_string());
                let p = Arc::new(p);
                if let Ok(mut ix) = index.write() {
                    ix.insert(key(&p), p.clone());
                }
                dispatch(&shared, &mut workers, Update::Pod(p));
            }
            Ok(watcher::Event::Delete(p)) => {
                let p = Arc::new(p);
                if let Ok(mut ix) = index.write()
                    && ix.get(&key(&p)).is_some_and(|q| pod_uid(q) == pod_uid(&p))
                {
                    ix.remove(&key(&p));
                }
                dispatch(&shared, &mut workers, Update::Gone(p));
            }
            Ok(watcher::Event::Init) => listing.clear(),
            Ok(watcher::Event::InitDone) => {
                // Pods that vanished while the watch was down.
                let gone: Vec<Arc<Pod>> = index
                    .read()
                    .map(|ix| {
                        ix.values()
                            .filter(|p| !listing.contains(pod_uid(p)))
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                for p in gone {
                    if let Ok(mut ix) = index.write() {
                        ix.remove(&key(&p));
                    }
                    dispatch(&shared, &mut workers, Update::Gone(p));
                }
                if !first_list_done {
                    first_list_done = true;
                    reap_orphans(&shared, &mut workers, &listing).await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "the pod watch failed; it resumes");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    for (_, (_, h)) in workers {
        h.abort();
    }
}

/// Tears down sandboxes whose pods are not bound to this node any more.
async fn reap_orphans(shared: &Arc<Shared>, workers: &mut Workers, known: &HashSet<String>) {
    let sel = HashMap::from([
        (cri::MANAGED_LABEL.to_string(), "true".to_string()),
        (cri::NODE_LABEL.to_string(), shared.cfg.node_name.clone()),
    ]);
    let boxes = match shared.cri.list_pod_sandboxes(sel).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "listing sandboxes for orphans failed");
            return;
        }
    };
    let mut seen = HashSet::new();
    for b in boxes {
        let Some(uid) = b.labels.get(cri::POD_UID_LABEL) else {
            continue;
        };
        if known.contains(uid) || !seen.insert(uid.clone()) {
            continue;
        }
        tracing::info!(
            pod_uid = uid,
            "tearing down the sandbox of a pod that is gone"
        );
        dispatch(
            shared,
            workers,
            Update::Gone(Arc::new(orphan(uid, &b.labels))),
        );
    }
}
