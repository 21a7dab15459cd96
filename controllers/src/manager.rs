//! Starts the built-in controllers on one client, sharing informers between them.

use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};
use tokio::sync::watch;

use crate::deployment::DeploymentController;
use crate::replicaset::ReplicaSetController;
use crate::runtime::{Informer, OwnerIndex, spawn_workers};

/// Workers per controller (reconciles of different objects in parallel).
pub const WORKERS_PER_CONTROLLER: usize = 8;

#[derive(Debug, Clone, Default)]
pub struct ControllersConfig {
    /// Where informers save their caches and positions, to resume from after a restart
    /// (none: every start lists).
    pub state_dir: Option<PathBuf>,
}

/// What a running set of controllers exposes (tests and metrics read the informers).
pub struct Running {
    pub pods: Arc<Informer<Pod>>,
    pub replicasets: Arc<Informer<ReplicaSet>>,
    pub deployments: Arc<Informer<Deployment>>,
}

/// Starts every controller; they stop when `shutdown` flips.
pub fn start(client: Client, cfg: &ControllersConfig, shutdown: watch::Receiver<bool>) -> Running {
    let dir = cfg.state_dir.as_deref();
    let pods = Informer::new(Api::<Pod>::all(client.clone()), "pods", dir);
    let replicasets = Informer::new(Api::<ReplicaSet>::all(client.clone()), "replicasets", dir);
    let deployments = Informer::new(Api::<Deployment>::all(client.clone()), "deployments", dir);
    let pods_by_owner = Arc::new(OwnerIndex::default());
    let rs_by_owner = Arc::new(OwnerIndex::default());
    {
        let i = pods_by_owner.clone();
        pods.on_change(move |o, n| i.update(o, n));
        let i = rs_by_owner.clone();
        replicasets.on_change(move |o, n| i.update(o, n));
    }
    let rsc = ReplicaSetController::new(
        client.clone(),
        replicasets.clone(),
        pods.clone(),
        pods_by_owner.clone(),
    );
    let dc = DeploymentController::new(
        client,
        deployments.clone(),
        replicasets.clone(),
        pods.clone(),
        rs_by_owner,
        pods_by_owner,
    );
    pods.start(shutdown.clone());
    replicasets.start(shutdown.clone());
    deployments.start(shutdown.clone());
    // Workers start once the caches are whole, so nothing acts on a partial view.
    {
        let (p, r, d) = (pods.clone(), replicasets.clone(), deployments.clone());
        let (rq, dq) = (rsc.queue.clone(), dc.queue.clone());
        let mut sd = shutdown.clone();
        tokio::spawn(async move {
            tokio::join!(p.wait_synced(), r.wait_synced(), d.wait_synced());
            spawn_workers(rq.clone(), rsc, WORKERS_PER_CONTROLLER);
            spawn_workers(dq.clone(), dc, WORKERS_PER_CONTROLLER);
            let _ = sd.wait_for(|s| *s).await;
            rq.shut_down();
            dq.shut_down();
        });
    }
    Running {
        pods,
        replicasets,
        deployments,
    }
}
