//! Pod creates and deletes as the ReplicaSet and Job controllers make them: slow-start
//! batches of creates and UID-preconditioned deletes, each recorded in the controller's
//! [`Expectations`] so the next reconcile waits until the cache has seen them.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::{Api, Client};

use crate::runtime::expectations::Expectations;
use crate::runtime::key_of;

/// Creates `pods` in namespace `ns` in slow-start batches (1, 2, 4, …, at most `inflight`
/// at once), as kube's `slowStartBatch`: a batch with a failure ends the run, so a quota or
/// a webhook that refuses pods costs one request, not hundreds. Returns the first error.
pub async fn create_slow_start(
    client: &Client,
    ns: &str,
    pods: Vec<Pod>,
    expectations: &Expectations,
    key: &str,
    inflight: usize,
) -> Option<String> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    expectations.expect_creations(key, pods.len());
    let mut rest = pods.into_iter();
    let mut batch = 1usize;
    let mut failure = None;
    loop {
        let chunk: Vec<Pod> = rest.by_ref().take(batch).collect();
        if chunk.is_empty() {
            break;
        }
        let results: Vec<Result<Pod, kube::Error>> = futures::stream::iter(chunk)
            .map(|pod| {
                let api = api.clone();
                async move { api.create(&PostParams::default(), &pod).await }
            })
            .buffer_unordered(inflight)
            .collect()
            .await;
        let mut failed = 0;
        for r in results {
            if let Err(e) = r {
                failed += 1;
                failure = Some(e.to_string());
            }
        }
        for _ in 0..failed {
            expectations.creation_observed(key);
        }
        if failed > 0 {
            // Creates not attempted now will never be observed either.
            for _ in rest.by_ref() {
                expectations.creation_observed(key);
            }
            break;
        }
        batch *= 2;
    }
    failure
}

/// Deletes `victims` (each with its UID as a precondition; 404 and 409 mean it is already
/// gone or replaced), at most `inflight` at once. Returns the first error.
pub async fn delete_expected(
    client: &Client,
    victims: Vec<Arc<Pod>>,
    expectations: &Expectations,
    key: &str,
    inflight: usize,
) -> Result<(), kube::Error> {
    if victims.is_empty() {
        return Ok(());
    }
    expectations.expect_deletions(key, victims.iter().map(|p| key_of(p.as_ref())));
    let results: Vec<(String, Result<(), kube::Error>)> = futures::stream::iter(victims)
        .map(|p| {
            let client = client.clone();
            async move {
                let ns = p.metadata.namespace.clone().unwrap_or_default();
                let api: Api<Pod> = Api::namespaced(client, &ns);
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: p.metadata.uid.clone(),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                let name = p.metadata.name.clone().unwrap_or_default();
                let r = match api.delete(&name, &dp).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
                    Err(e) => Err(e),
                };
                (key_of(p.as_ref()), r)
            }
        })
        .buffer_unordered(inflight)
        .collect()
        .await;
    let mut first_err = None;
    for (pod, r) in results {
        if let Err(e) = r {
            expectations.deletion_observed(key, &pod);
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
