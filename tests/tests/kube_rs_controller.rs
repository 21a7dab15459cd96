//! A kube-rs controller, as operators write them, against Logbook: `Controller` over a
//! custom resource, `finalizer()` for cleanup, and server-side apply (`Patch::Apply`) of its
//! status.

#![allow(clippy::unwrap_used)] // a test that panics has failed; the message says where

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use futures::StreamExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event, finalizer};
use kube::runtime::watcher;
use logbook_e2e::{Server, within};
use serde_json::json;

const FINALIZER: &str = "widgets.example.com/cleanup";
const MANAGER: &str = "widget-controller";

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ReconcileError(String);

struct Ctx {
    api: Api<DynamicObject>,
    cleaned: Mutex<Vec<String>>,
}

async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let api = ctx.api.clone();
    finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Event::Apply(o) => {
                let size = o.data["spec"]["size"].as_i64().unwrap_or(0);
                let status = json!({
                    "apiVersion": "example.com/v1", "kind": "Widget",
                    "metadata": {"name": o.metadata.name},
                    "status": {"observedSize": size},
                });
                let name = o.metadata.name.clone().unwrap_or_default();
                api.patch_status(&name, &PatchParams::apply(MANAGER), &Patch::Apply(status))
                    .await
                    .map_err(|e| ReconcileError(e.to_string()))?;
                Ok::<Action, ReconcileError>(Action::await_change())
            }
            Event::Cleanup(o) => {
                ctx.cleaned
                    .lock()
                    .unwrap()
                    .push(o.metadata.name.clone().unwrap_or_default());
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e: kube::runtime::finalizer::Error<ReconcileError>| ReconcileError(e.to_string()))
}

fn error_policy(_: Arc<DynamicObject>, e: &ReconcileError, _: Arc<Ctx>) -> Action {
    eprintln!("reconcile failed: {e}");
    Action::requeue(Duration::from_millis(200))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kube_rs_controller_applies_status_and_runs_its_finalizer() -> Result<()> {
    within(120, "the controller did not converge", async {
        let s = Server::start()?;
        let client = s.client().await?;
        let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
            Api::all(client.clone());
        let crd = serde_json::from_value(json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                        "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
                        "status": {"type": "object", "properties": {"observedSize": {"type": "integer"}}}}}}}]}
        }))?;
        crds.create(&PostParams::default(), &crd).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;

        let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("example.com", "v1", "Widget"), "widgets");
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
        let ctx = Arc::new(Ctx { api: api.clone(), cleaned: Mutex::new(Vec::new()) });
        let controller = Controller::new_with(api.clone(), watcher::Config::default(), ar.clone())
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|_| async {});
        let running = tokio::spawn(controller);

        let mut w = DynamicObject::new("w1", &ar);
        w.data = json!({"spec": {"size": 3}});
        api.create(&PostParams::default(), &w).await?;
        let observed = |want: i64| {
            let api = api.clone();
            async move {
                loop {
                    let o = api.get("w1").await.unwrap();
                    if o.data["status"]["observedSize"] == want {
                        return o;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        let o = within(20, "status.observedSize was not applied", observed(3)).await;
        assert!(o.metadata.finalizers.unwrap_or_default().contains(&FINALIZER.to_string()));
        let managers: Vec<String> = o
            .metadata
            .managed_fields
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| m.manager)
            .collect();
        assert!(managers.contains(&MANAGER.to_string()), "{managers:?}");

        api.patch("w1", &PatchParams::default(), &Patch::Merge(json!({"spec": {"size": 5}}))).await?;
        within(20, "the spec change was not reconciled", observed(5)).await;

        api.delete("w1", &DeleteParams::default()).await?;
        within(20, "the finalizer did not let the object go", async {
            while api.get_opt("w1").await.unwrap().is_some() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert_eq!(*ctx.cleaned.lock().unwrap(), vec!["w1".to_string()]);
        running.abort();
        anyhow::Ok(())
    })
    .await
}
