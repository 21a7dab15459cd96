//! Starts the built-in controllers on one client, sharing informers between them.

use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet,
};
use k8s_openapi::api::core::v1::{
    Endpoints, Namespace, Node, PersistentVolumeClaim, Pod, Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{Api, Client};
use tokio::sync::watch;

use crate::daemonset::DaemonSetController;
use crate::deployment::DeploymentController;
use crate::discovery::Resources;
use crate::endpoints::{EndpointsController, ServiceIndex};
use crate::endpointslice::EndpointSliceController;
use crate::gc::GarbageCollector;
use crate::namespace::NamespaceController;
use crate::replicaset::ReplicaSetController;
use crate::runtime::{Informer, OwnerIndex, WorkQueue, spawn_workers};
use crate::serviceaccount::ServiceAccountController;
use crate::statefulset::StatefulSetController;

/// Workers per controller (reconciles of different objects in parallel).
pub const WORKERS_PER_CONTROLLER: usize = 8;

#[derive(Debug, Clone, Default)]
pub struct ControllersConfig {
    /// Where informers save their caches and positions, to resume from after a restart
    /// (none: every start lists).
    pub state_dir: Option<PathBuf>,
    /// The cluster CA (PEM) to publish as `kube-root-ca.crt` in every namespace.
    pub root_ca: Option<String>,
}

/// What a running set of controllers exposes (tests and metrics read the informers).
pub struct Running {
    pub pods: Arc<Informer<Pod>>,
    pub replicasets: Arc<Informer<ReplicaSet>>,
    pub deployments: Arc<Informer<Deployment>>,
    pub namespaces: Arc<Informer<Namespace>>,
}

impl Running {
    /// Waits until every informer holds a full view.
    pub async fn wait_synced(&self) {
        tokio::join!(
            self.pods.wait_synced(),
            self.replicasets.wait_synced(),
            self.deployments.wait_synced(),
            self.namespaces.wait_synced(),
        );
    }
}

/// Starts every controller; they stop when `shutdown` flips.
pub fn start(client: Client, cfg: &ControllersConfig, shutdown: watch::Receiver<bool>) -> Running {
    let dir = cfg.state_dir.as_deref();
    let pods = Informer::new(Api::<Pod>::all(client.clone()), "pods", dir);
    let replicasets = Informer::new(Api::<ReplicaSet>::all(client.clone()), "replicasets", dir);
    let deployments = Informer::new(Api::<Deployment>::all(client.clone()), "deployments", dir);
    let namespaces = Informer::new(Api::<Namespace>::all(client.clone()), "namespaces", dir);
    let accounts = Informer::new(
        Api::<ServiceAccount>::all(client.clone()),
        "serviceaccounts",
        dir,
    );
    let services = Informer::new(Api::<Service>::all(client.clone()), "services", dir);
    let endpoints = Informer::new(Api::<Endpoints>::all(client.clone()), "endpoints", dir);
    let slices = Informer::new(
        Api::<EndpointSlice>::all(client.clone()),
        "endpointslices",
        dir,
    );
    // Before the controllers' own handlers: their reconciles read it.
    let service_index = ServiceIndex::new(pods.clone(), services.clone());
    let epc = EndpointsController::new(
        client.clone(),
        service_index.clone(),
        &pods,
        services.clone(),
        endpoints.clone(),
    );
    let esc = EndpointSliceController::new(
        client.clone(),
        service_index,
        &pods,
        services.clone(),
        slices.clone(),
    );
    let pods_by_owner = Arc::new(OwnerIndex::default());
    let rs_by_owner = Arc::new(OwnerIndex::default());
    {
        let i = pods_by_owner.clone();
        pods.on_change(move |o, n| i.update(o, n));
        let i = rs_by_owner.clone();
        replicasets.on_change(move |o, n| i.update(o, n));
    }
    let resources = Resources::new(client.clone());
    let rsc = ReplicaSetController::new(
        client.clone(),
        replicasets.clone(),
        pods.clone(),
        pods_by_owner.clone(),
    );
    let dc = DeploymentController::new(
        client.clone(),
        deployments.clone(),
        replicasets.clone(),
        pods.clone(),
        rs_by_owner,
        pods_by_owner.clone(),
    );
    // --- StatefulSets and DaemonSets (apps/v1): their own informers, the shared pods
    // informer and `pods_by_owner`, one ControllerRevision index for both. ---
    let apps = AppsWorkloads::new(&client, dir, &pods, &pods_by_owner);
    let nsc = NamespaceController::new(client.clone(), resources.clone(), namespaces.clone());
    let sac = ServiceAccountController::new(
        client.clone(),
        namespaces.clone(),
        accounts.clone(),
        cfg.root_ca.clone(),
    );
    let gc = GarbageCollector::new(
        client,
        resources,
        cfg.state_dir.as_ref().map(|d| d.join("gc")),
    );
    pods.start(shutdown.clone());
    replicasets.start(shutdown.clone());
    deployments.start(shutdown.clone());
    namespaces.start(shutdown.clone());
    accounts.start(shutdown.clone());
    services.start(shutdown.clone());
    endpoints.start(shutdown.clone());
    slices.start(shutdown.clone());
    gc.start(shutdown.clone());
    apps.start(&shutdown);
    // Workers start once the caches are whole, so nothing acts on a partial view.
    let running = Running {
        pods,
        replicasets,
        deployments,
        namespaces,
    };
    let synced = Running {
        pods: running.pods.clone(),
        replicasets: running.replicasets.clone(),
        deployments: running.deployments.clone(),
        namespaces: running.namespaces.clone(),
    };
    let mut sd = shutdown;
    tokio::spawn(async move {
        synced.wait_synced().await;
        tokio::join!(
            accounts.wait_synced(),
            services.wait_synced(),
            endpoints.wait_synced(),
            slices.wait_synced(),
        );
        apps.wait_synced().await;
        let queues: Vec<Arc<WorkQueue>> = vec![
            rsc.queue.clone(),
            dc.queue.clone(),
            nsc.queue.clone(),
            sac.queue.clone(),
            epc.queue.clone(),
            esc.queue.clone(),
            apps.sts.queue.clone(),
            apps.ds.queue.clone(),
        ];
        spawn_workers(rsc.queue.clone(), rsc, WORKERS_PER_CONTROLLER);
        spawn_workers(dc.queue.clone(), dc, WORKERS_PER_CONTROLLER);
        spawn_workers(nsc.queue.clone(), nsc, WORKERS_PER_CONTROLLER);
        spawn_workers(sac.queue.clone(), sac, 2);
        spawn_workers(epc.queue.clone(), epc, WORKERS_PER_CONTROLLER);
        spawn_workers(esc.queue.clone(), esc, WORKERS_PER_CONTROLLER);
        spawn_workers(apps.sts.queue.clone(), apps.sts, WORKERS_PER_CONTROLLER);
        spawn_workers(apps.ds.queue.clone(), apps.ds, WORKERS_PER_CONTROLLER);
        let _ = sd.wait_for(|s| *s).await;
        for q in queues {
            q.shut_down();
        }
    });
    running
}

/// The StatefulSet and DaemonSet controllers with the informers only they use (Nodes,
/// StatefulSets, DaemonSets, ControllerRevisions, PersistentVolumeClaims).
struct AppsWorkloads {
    sts: Arc<StatefulSetController>,
    ds: Arc<DaemonSetController>,
    nodes: Arc<Informer<Node>>,
    revisions: Arc<Informer<ControllerRevision>>,
    claims: Arc<Informer<PersistentVolumeClaim>>,
}

impl AppsWorkloads {
    fn new(
        client: &Client,
        dir: Option<&std::path::Path>,
        pods: &Arc<Informer<Pod>>,
        pods_by_owner: &Arc<OwnerIndex>,
    ) -> Self {
        let sets = Informer::new(Api::<StatefulSet>::all(client.clone()), "statefulsets", dir);
        let daemons = Informer::new(Api::<DaemonSet>::all(client.clone()), "daemonsets", dir);
        let nodes = Informer::new(Api::<Node>::all(client.clone()), "nodes", dir);
        let revisions = Informer::new(
            Api::<ControllerRevision>::all(client.clone()),
            "controllerrevisions",
            dir,
        );
        let claims = Informer::new(
            Api::<PersistentVolumeClaim>::all(client.clone()),
            "persistentvolumeclaims",
            dir,
        );
        let revisions_by_owner = Arc::new(OwnerIndex::default());
        {
            let i = revisions_by_owner.clone();
            revisions.on_change(move |o, n| i.update(o, n));
        }
        let sts = StatefulSetController::new(
            client.clone(),
            sets,
            pods.clone(),
            pods_by_owner.clone(),
            revisions.clone(),
            revisions_by_owner.clone(),
            claims.clone(),
        );
        let ds = DaemonSetController::new(
            client.clone(),
            daemons,
            pods.clone(),
            pods_by_owner.clone(),
            nodes.clone(),
            revisions.clone(),
            revisions_by_owner,
        );
        AppsWorkloads {
            sts,
            ds,
            nodes,
            revisions,
            claims,
        }
    }

    fn start(&self, shutdown: &watch::Receiver<bool>) {
        self.sts.sets.start(shutdown.clone());
        self.ds.sets.start(shutdown.clone());
        self.nodes.start(shutdown.clone());
        self.revisions.start(shutdown.clone());
        self.claims.start(shutdown.clone());
    }

    async fn wait_synced(&self) {
        tokio::join!(
            self.sts.sets.wait_synced(),
            self.ds.sets.wait_synced(),
            self.nodes.wait_synced(),
            self.revisions.wait_synced(),
            self.claims.wait_synced(),
        );
    }
}
