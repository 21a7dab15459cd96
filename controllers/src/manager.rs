//! Starts the built-in controllers on one client, sharing informers between them.

use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet,
};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    Endpoints, Namespace, Node, PersistentVolumeClaim, Pod, ResourceQuota, Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::{Api, Client};
use tokio::sync::watch;

use crate::cronjob::CronJobController;
use crate::daemonset::DaemonSetController;
use crate::deployment::DeploymentController;
use crate::discovery::Resources;
use crate::disruption::DisruptionController;
use crate::endpoints::{EndpointsController, ServiceIndex};
use crate::endpointslice::EndpointSliceController;
use crate::gc::GarbageCollector;
use crate::job::JobController;
use crate::namespace::NamespaceController;
use crate::nodelifecycle::{NodeLifecycleConfig, NodeLifecycleController};
use crate::podgc::PodGc;
use crate::replicaset::ReplicaSetController;
use crate::resourcequota::ResourceQuotaController;
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
    /// How long a node may be silent before it is `Unknown` (kube's
    /// `--node-monitor-grace-period`; `None`: 50 s).
    pub node_monitor_grace_period: Option<std::time::Duration>,
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
    // Node lifecycle, taint-based eviction, disruption budgets and pod GC.
    let nodes = Informer::new(Api::<Node>::all(client.clone()), "nodes", dir);
    let node_leases = Informer::new(
        Api::<Lease>::namespaced(client.clone(), "kube-node-lease"),
        "node-leases",
        dir,
    );
    let pdbs = Informer::new(
        Api::<PodDisruptionBudget>::all(client.clone()),
        "poddisruptionbudgets",
        dir,
    );
    let nlc = NodeLifecycleController::new(
        client.clone(),
        nodes.clone(),
        &node_leases,
        pods.clone(),
        NodeLifecycleConfig {
            grace_period: cfg.node_monitor_grace_period,
        },
    );
    let pgc = PodGc::new(client.clone(), pods.clone(), nodes.clone());
    let drc = DisruptionController::new(client.clone(), pdbs.clone(), &pods);
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
    let quotas = Informer::new(
        Api::<ResourceQuota>::all(client.clone()),
        "resourcequotas",
        dir,
    );
    let rqc =
        ResourceQuotaController::new(client.clone(), quotas.clone(), &pods, resources.clone());
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
    let apps = AppsWorkloads::new(&client, dir, &pods, &pods_by_owner, &nodes);
    let nsc = NamespaceController::new(client.clone(), resources.clone(), namespaces.clone());
    let sac = ServiceAccountController::new(
        client.clone(),
        namespaces.clone(),
        accounts.clone(),
        cfg.root_ca.clone(),
    );
    // Batch (Job, CronJob): their own informers; Jobs share the pods informer and
    // `pods_by_owner` with the ReplicaSet controller.
    let jobs = Informer::new(Api::<Job>::all(client.clone()), "jobs", dir);
    let cronjobs = Informer::new(Api::<CronJob>::all(client.clone()), "cronjobs", dir);
    let jobs_by_owner = Arc::new(OwnerIndex::default());
    {
        let i = jobs_by_owner.clone();
        jobs.on_change(move |o, n| i.update(o, n));
    }
    let jc = JobController::new(
        client.clone(),
        jobs.clone(),
        pods.clone(),
        pods_by_owner.clone(),
    );
    let cjc = CronJobController::new(
        client.clone(),
        cronjobs.clone(),
        jobs.clone(),
        jobs_by_owner,
    );
    jobs.start(shutdown.clone());
    cronjobs.start(shutdown.clone());
    let batch_synced = (jobs, cronjobs);
    // End of batch.
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
    nodes.start(shutdown.clone());
    node_leases.start(shutdown.clone());
    pdbs.start(shutdown.clone());
    quotas.start(shutdown.clone());
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
            nodes.wait_synced(),
            node_leases.wait_synced(),
            pdbs.wait_synced(),
            quotas.wait_synced(),
            batch_synced.0.wait_synced(),
            batch_synced.1.wait_synced(),
        );
        tokio::spawn(nlc.run(sd.clone()));
        tokio::spawn(pgc.run(sd.clone()));
        apps.wait_synced().await;
        let queues: Vec<Arc<WorkQueue>> = vec![
            rsc.queue.clone(),
            dc.queue.clone(),
            nsc.queue.clone(),
            sac.queue.clone(),
            epc.queue.clone(),
            esc.queue.clone(),
            drc.queue.clone(),
            rqc.queue.clone(),
            jc.queue.clone(),
            cjc.queue.clone(),
            apps.sts.queue.clone(),
            apps.ds.queue.clone(),
        ];
        spawn_workers(rsc.queue.clone(), rsc, WORKERS_PER_CONTROLLER);
        spawn_workers(dc.queue.clone(), dc, WORKERS_PER_CONTROLLER);
        spawn_workers(nsc.queue.clone(), nsc, WORKERS_PER_CONTROLLER);
        spawn_workers(sac.queue.clone(), sac, 2);
        spawn_workers(epc.queue.clone(), epc, WORKERS_PER_CONTROLLER);
        spawn_workers(esc.queue.clone(), esc, WORKERS_PER_CONTROLLER);
        spawn_workers(drc.queue.clone(), drc, 2);
        spawn_workers(rqc.queue.clone(), rqc, 2);
        spawn_workers(jc.queue.clone(), jc, WORKERS_PER_CONTROLLER);
        spawn_workers(cjc.queue.clone(), cjc, WORKERS_PER_CONTROLLER);
        spawn_workers(apps.sts.queue.clone(), apps.sts, WORKERS_PER_CONTROLLER);
        spawn_workers(apps.ds.queue.clone(), apps.ds, WORKERS_PER_CONTROLLER);
        let _ = sd.wait_for(|s| *s).await;
        for q in queues {
            q.shut_down();
        }
    });
    running
}

/// The StatefulSet and DaemonSet controllers with the informers only they use
/// (StatefulSets, DaemonSets, ControllerRevisions, PersistentVolumeClaims) and the shared
/// Node informer.
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
        nodes: &Arc<Informer<Node>>,
    ) -> Self {
        let sets = Informer::new(Api::<StatefulSet>::all(client.clone()), "statefulsets", dir);
        let daemons = Informer::new(Api::<DaemonSet>::all(client.clone()), "daemonsets", dir);
        let nodes = nodes.clone();
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
        // (The Node informer is shared with node lifecycle, which starts it.)
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
