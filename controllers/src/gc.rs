//! The garbage collector: `ownerReferences` as Kubernetes users rely on them.
//!
//! - **Background** (the default): once every owner of an object is gone, the object is
//!   deleted; owners that are gone are dropped from an object that still has others.
//! - **Foreground**: an owner deleted with `propagationPolicy=Foreground` carries the
//!   `foregroundDeletion` finalizer; its dependents are deleted (those that block it with
//!   `blockOwnerDeletion`, in foreground too, so whole chains go bottom-up), and the
//!   finalizer is removed when no blocking dependent is left.
//! - **Orphan**: an owner with the `orphan` finalizer has itself removed from its dependents'
//!   `ownerReferences`, then the finalizer is removed; the dependents stay.
//!
//! It watches the metadata (`as=PartialObjectMetadata`) of every resource discovery lists as
//! listable, watchable and deletable — custom resources too, found again every
//! [`crate::discovery::DISCOVERY_REFRESH_MS`] — events aside. An owner missing from the
//! graph is confirmed absent with a live GET (by name, uid compared) before anything is
//! deleted, so a lagging cache never deletes a live object's dependents. An owner whose kind
//! discovery does not know is treated as present.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    DeleteParams, DynamicObject, PartialObjectMeta, Patch, PatchParams, Preconditions,
    PropagationPolicy,
};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::watch;

use crate::discovery::{DISCOVERY_REFRESH_MS, Resource, Resources};
use crate::runtime::informer::MetadataSource;
use crate::runtime::{Action, Informer, ReconcileError, Reconciler, WorkQueue, spawn_workers};

/// Workers deleting and patching dependents at once.
pub const GC_WORKERS: usize = 8;

type Meta = PartialObjectMeta<DynamicObject>;

#[derive(Clone)]
struct Node {
    uid: String,
    resource: Arc<Resource>,
    namespace: String,
    name: String,
    resource_version: String,
    owners: Vec<OwnerReference>,
    deleting: bool,
    finalizers: Vec<String>,
}

#[derive(Default)]
struct Graph {
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    fn remove(&mut self, uid: &str) {
        if let Some(n) = self.nodes.remove(uid) {
            for o in &n.owners {
                if let Some(set) = self.dependents.get_mut(&o.uid) {
                    set.remove(uid);
                    if set.is_empty() {
                        self.dependents.remove(&o.uid);
                    }
                }
            }
        }
    }

    fn insert(&mut self, uid: String, node: Node) {
        self.remove(&uid);
        for o in &node.owners {
            self.dependents
                .entry(o.uid.clone())
                .or_default()
                .insert(uid.clone());
        }
        self.nodes.insert(uid, node);
    }
}

pub struct GarbageCollector {
    client: Client,
    resources: Arc<Resources>,
    graph: RwLock<Graph>,
    pub queue: Arc<WorkQueue>,
    informers: Mutex<HashMap<String, Arc<Informer<Meta>>>>,
    state_dir: Option<PathBuf>,
}

impl GarbageCollector {
    pub fn new(client: Client, resources: Arc<Resources>, state_dir: Option<PathBuf>) -> Arc<Self> {
        Arc::new(GarbageCollector {
            client,
            resources,
            graph: RwLock::new(Graph::default()),
            queue: Arc::new(WorkQueue::default()),
            informers: Mutex::new(HashMap::new()),
            state_dir,
        })
    }

    fn graph_read(&self) -> std::sync::RwLockReadGuard<'_, Graph> {
        match self.graph.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn graph_write(&self) -> std::sync::RwLockWriteGuard<'_, Graph> {
        match self.graph.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Starts informers for every deletable resource (and keeps adding new ones), then
    /// the workers once the first set has synced.
    pub fn start(self: &Arc<Self>, shutdown: watch::Receiver<bool>) {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut sd = shutdown.clone();
            let mut started = false;
            loop {
                match me.watch_new_resources(&shutdown).await {
                    Ok(new) => {
                        if !started {
                            for i in &new {
                                i.wait_synced().await;
                            }
                            spawn_workers(me.queue.clone(), me.clone(), GC_WORKERS);
                            started = true;
                        }
                    }
                    Err(e) => tracing::warn!("garbage collector discovery: {e}"),
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(DISCOVERY_REFRESH_MS)) => {}
                    _ = sd.changed() => {
                        me.queue.shut_down();
                        return;
                    }
                }
            }
        });
    }

    async fn watch_new_resources(
        self: &Arc<Self>,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Vec<Arc<Informer<Meta>>>, kube::Error> {
        let mut new = Vec::new();
        for r in self.resources.deletable().await? {
            let id = r.id();
            let known = match self.informers.lock() {
                Ok(m) => m.contains_key(&id),
                Err(p) => p.into_inner().contains_key(&id),
            };
            if known {
                continue;
            }
            let resource = Arc::new(r);
            let source = MetadataSource {
                api: Api::all_with(self.client.clone(), &resource.ar),
                resource: resource.ar.clone(),
            };
            // Secrets' metadata is never saved: `kubectl apply` puts the whole Secret, values
            // included, in the last-applied-configuration annotation, and nothing under the
            // data directory may hold a Secret value in plaintext (the log seals them). Their
            // informer lists again after a restart instead, and a file saved by an older
            // version is removed.
            let state_dir = if id == "secrets" {
                if let Some(dir) = &self.state_dir {
                    let _ = std::fs::remove_file(dir.join("gc-secrets.json"));
                }
                None
            } else {
                self.state_dir.as_deref()
            };
            let inf = Informer::from_source(Box::new(source), &format!("gc-{id}"), state_dir, None);
            let me = Arc::downgrade(self);
            let res = resource.clone();
            inf.on_change(move |old, new| {
                if let Some(gc) = me.upgrade() {
                    gc.observe(&res, old, new);
                }
            });
            inf.start(shutdown.clone());
            match self.informers.lock() {
                Ok(mut m) => m.insert(id, inf.clone()),
                Err(p) => p.into_inner().insert(id, inf.clone()),
            };
            new.push(inf);
        }
        Ok(new)
    }

    fn observe(&self, resource: &Arc<Resource>, old: Option<&Meta>, new: Option<&Meta>) {
        if let (Some(o), Some(n)) = (old, new)
            && o.metadata.owner_references == n.metadata.owner_references
            && o.metadata.deletion_timestamp.is_some() == n.metadata.deletion_timestamp.is_some()
            && o.metadata.finalizers == n.metadata.finalizers
        {
            // Nothing the collector decides on changed (most pod updates: a binding, a
            // status): keep the graph's resourceVersion current and skip the queue.
            if let Some(uid) = n.metadata.uid.as_deref()
                && let Some(node) = self.graph_write().nodes.get_mut(uid)
            {
                node.resource_version = n.metadata.resource_version.clone().unwrap_or_default();
            }
            return;
        }
        let mut touched: Vec<String> = Vec::new();
        {
            let mut g = self.graph_write();
            if let Some(o) = old {
                let uid = o.metadata.uid.clone().unwrap_or_default();
                touched.extend(owner_uids(o));
                if new.is_none() {
                    // Its dependents may have lost their last owner.
                    if let Some(d) = g.dependents.get(&uid) {
                        touched.extend(d.iter().cloned());
                    }
                    g.remove(&uid);
                }
            }
            if let Some(n) = new {
                let uid = n.metadata.uid.clone().unwrap_or_default();
                touched.extend(owner_uids(n));
                touched.push(uid.clone());
                g.insert(
                    uid.clone(),
                    Node {
                        uid,
                        resource: resource.clone(),
                        namespace: n.metadata.namespace.clone().unwrap_or_default(),
                        name: n.metadata.name.clone().unwrap_or_default(),
                        resource_version: n.metadata.resource_version.clone().unwrap_or_default(),
                        owners: n.metadata.owner_references.clone().unwrap_or_default(),
                        deleting: n.metadata.deletion_timestamp.is_some(),
                        finalizers: n.metadata.finalizers.clone().unwrap_or_default(),
                    },
                );
            }
        }
        for uid in touched {
            self.queue.add(&uid);
        }
    }

    fn api_for(&self, r: &Resource, ns: &str) -> Api<DynamicObject> {
        if r.namespaced {
            Api::namespaced_with(self.client.clone(), ns, &r.ar)
        } else {
            Api::all_with(self.client.clone(), &r.ar)
        }
    }

    /// Whether the owner exists: in the graph, else by a live GET.
    async fn owner_exists(
        &self,
        dependent_ns: &str,
        o: &OwnerReference,
    ) -> Result<bool, ReconcileError> {
        if self.graph_read().nodes.contains_key(&o.uid) {
            return Ok(true);
        }
        let Some(r) = self.resources.for_kind(&o.api_version, &o.kind).await? else {
            return Ok(true);
        };
        match self
            .api_for(&r, dependent_ns)
            .get_metadata_opt(&o.name)
            .await?
        {
            Some(m) => Ok(m.metadata.uid.as_deref() == Some(o.uid.as_str())),
            None => Ok(false),
        }
    }

    async fn delete(
        &self,
        uid: &str,
        r: &Resource,
        ns: &str,
        name: &str,
        foreground: bool,
        resource_version: Option<&str>,
    ) -> Result<(), ReconcileError> {
        let dp = DeleteParams {
            propagation_policy: Some(if foreground {
                PropagationPolicy::Foreground
            } else {
                PropagationPolicy::Background
            }),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: resource_version.map(str::to_string),
            }),
            ..DeleteParams::default()
        };
        match self.api_for(r, ns).delete(name, &dp).await {
            Ok(_) => Ok(()),
            // Changed since it was read: look again (with back-off) rather than guess.
            Err(kube::Error::Api(s)) if s.code == 409 && resource_version.is_some() => {
                Err(kube::Error::Api(s).into())
            }
            Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn patch_meta(
        &self,
        r: &Resource,
        ns: &str,
        name: &str,
        meta: serde_json::Value,
    ) -> Result<(), ReconcileError> {
        match self
            .api_for(r, ns)
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "metadata": meta })),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn remove_finalizer(&self, uid: &str, f: &str) -> Result<(), ReconcileError> {
        let (r, ns, name, rv, rest) = {
            let g = self.graph_read();
            let Some(n) = g.nodes.get(uid) else {
                return Ok(());
            };
            let rest: Vec<String> = n.finalizers.iter().filter(|x| *x != f).cloned().collect();
            (
                n.resource.clone(),
                n.namespace.clone(),
                n.name.clone(),
                n.resource_version.clone(),
                rest,
            )
        };
        self.patch_meta(
            &r,
            &ns,
            &name,
            json!({"finalizers": rest, "resourceVersion": rv}),
        )
        .await
    }
}

fn owner_uids(m: &Meta) -> Vec<String> {
    m.metadata
        .owner_references
        .iter()
        .flatten()
        .map(|o| o.uid.clone())
        .collect()
}

#[async_trait::async_trait]
impl Reconciler for GarbageCollector {
    fn name(&self) -> &'static str {
        "garbagecollector"
    }

    async fn reconcile(&self, uid: &str) -> Result<Action, ReconcileError> {
        let (resource, ns, name, owners, deleting, finalizers) = {
            let g = self.graph_read();
            let Some(n) = g.nodes.get(uid) else {
                return Ok(Action::Done);
            };
            (
                n.resource.clone(),
                n.namespace.clone(),
                n.name.clone(),
                n.owners.clone(),
                n.deleting,
                n.finalizers.clone(),
            )
        };
        if deleting {
            if finalizers.iter().any(|f| f == "orphan") {
                self.orphan_dependents(uid).await?;
                self.remove_finalizer(uid, "orphan").await?;
            } else if finalizers.iter().any(|f| f == "foregroundDeletion") {
                let deps: Vec<Node> = self.dependents_of(uid);
                let blocks = |n: &Node| {
                    n.owners
                        .iter()
                        .any(|o| o.uid == uid && o.block_owner_deletion == Some(true))
                };
                for d in &deps {
                    if !d.deleting {
                        self.delete(&d.uid, &d.resource, &d.namespace, &d.name, blocks(d), None)
                            .await?;
                    }
                }
                if !deps.iter().any(blocks) {
                    self.remove_finalizer(uid, "foregroundDeletion").await?;
                }
            }
            return Ok(Action::Done);
        }
        if owners.is_empty() {
            return Ok(Action::Done);
        }
        let mut absent = Vec::new();
        for o in &owners {
            if !self.owner_exists(&ns, o).await? {
                absent.push(o.uid.clone());
            }
        }
        if absent.is_empty() {
            return Ok(Action::Done);
        }
        // Before acting, the dependent as it is now, not as the graph last saw it: an owner
        // deleted with `orphan` removes itself from its dependents just before it goes, and a
        // graph that has not seen that patch yet would delete an orphan (kube's collector
        // reads the dependent live too).
        let Some(live) = self
            .api_for(&resource, &ns)
            .get_metadata_opt(&name)
            .await?
            .filter(|m| m.metadata.uid.as_deref() == Some(uid))
        else {
            return Ok(Action::Done);
        };
        let owners = live.metadata.owner_references.clone().unwrap_or_default();
        absent.retain(|a| owners.iter().any(|o| &o.uid == a));
        if absent.is_empty() || owners.is_empty() {
            return Ok(Action::Done);
        }
        if absent.len() == owners.len() {
            let rv = live.metadata.resource_version.as_deref();
            self.delete(uid, &resource, &ns, &name, false, rv).await?;
        } else {
            let rv = live.metadata.resource_version.clone().unwrap_or_default();
            let keep: Vec<&OwnerReference> =
                owners.iter().filter(|o| !absent.contains(&o.uid)).collect();
            self.patch_meta(
                &resource,
                &ns,
                &name,
                json!({"ownerReferences": keep, "resourceVersion": rv}),
            )
            .await?;
        }
        Ok(Action::Done)
    }
}

impl GarbageCollector {
    /// The objects that name `owner` in their ownerReferences, as the graph has them now.
    fn dependents_of(&self, owner: &str) -> Vec<Node> {
        let g = self.graph_read();
        g.dependents
            .get(owner)
            .into_iter()
            .flatten()
            .filter_map(|d| g.nodes.get(d).cloned())
            .collect()
    }

    /// Removes `owner` from every dependent's ownerReferences.
    async fn orphan_dependents(&self, owner: &str) -> Result<(), ReconcileError> {
        for d in self.dependents_of(owner) {
            let keep: Vec<&OwnerReference> = d.owners.iter().filter(|o| o.uid != owner).collect();
            let refs = if keep.is_empty() {
                serde_json::Value::Null
            } else {
                json!(keep)
            };
            self.patch_meta(
                &d.resource,
                &d.namespace,
                &d.name,
                json!({"ownerReferences": refs, "resourceVersion": d.resource_version}),
            )
            .await?;
        }
        Ok(())
    }
}
