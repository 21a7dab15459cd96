//! Revision history shared by the StatefulSet and DaemonSet controllers: ControllerRevisions
//! (apps/v1) as kube-controller-manager's `controller/history` keeps them, so `kubectl
//! rollout history` and `kubectl rollout undo` work on both kinds.
//!
//! A revision's `data` is the owner's pod template as a strategic merge patch,
//! `{"spec":{"template":{…,"$patch":"replace"}}}` — what kubectl applies to roll back. It is
//! named `<owner>-<hash>` (the hash of `data` and the owner's `collisionCount`), labelled
//! with the template's labels and `controller-revision-hash: <hash>`, and controlled by its
//! owner. Revision numbers only grow: a template equal to an older revision reuses it and
//! moves it to the top (a rollback), and revisions no pod runs are pruned beyond
//! `revisionHistoryLimit`.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::runtime::{ReconcileError, adopt, controller_of};
use crate::selector::Selector;

/// The label naming a revision's hash (on revisions, and on the pods made from them).
pub const HASH_LABEL: &str = "controller-revision-hash";
/// Longest owner-name prefix of a revision name (kube: 253 less room for the hash).
pub const REVISION_NAME_PREFIX_CHARS_MAX: usize = 223;

/// The revision data of a pod template: a patch that replaces the owner's template.
pub fn template_patch(template: &PodTemplateSpec) -> Value {
    let mut t = serde_json::to_value(template).unwrap_or_else(|_| json!({}));
    if let Some(o) = t.as_object_mut() {
        o.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": t}})
}

/// The pod template a revision holds (`None` when its data is not a template patch).
pub fn template_of(rev: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = rev.data.as_ref()?.0.get("spec")?.get("template")?.clone();
    if let Some(o) = t.as_object_mut() {
        o.remove("$patch");
    }
    serde_json::from_value(t).ok()
}

/// FNV-1a, 32 bits (kube hashes revisions with it).
fn fnv32a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// FNV-1a of `bytes` and a collision count, in kube's safe alphabet (no vowels, no
/// look-alike digits): ControllerRevision names and a Deployment's `pod-template-hash`.
pub fn safe_hash(mut bytes: Vec<u8>, collision_count: Option<i32>) -> String {
    const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    if let Some(c) = collision_count {
        bytes.extend_from_slice(&c.to_le_bytes());
    }
    fnv32a(&bytes)
        .to_string()
        .bytes()
        .map(|b| char::from(SAFE[usize::from(b) % SAFE.len()]))
        .collect()
}

/// The hash of revision data and a collision count.
pub fn hash(data: &Value, collision_count: Option<i32>) -> String {
    safe_hash(
        serde_json::to_vec(data).unwrap_or_default(),
        collision_count,
    )
}

/// `<owner>-<hash>`, the owner's name shortened so the whole stays a valid name.
pub fn revision_name(owner: &str, hash: &str) -> String {
    let prefix: String = owner.chars().take(REVISION_NAME_PREFIX_CHARS_MAX).collect();
    format!("{prefix}-{hash}")
}

/// Whether two revisions hold the same data.
pub fn equal(a: &ControllerRevision, b: &ControllerRevision) -> bool {
    a.data.as_ref().map(|d| &d.0) == b.data.as_ref().map(|d| &d.0)
}

/// The revision after the highest of these.
pub fn next_number(revs: &[ControllerRevision]) -> i64 {
    revs.iter().map(|r| r.revision).max().unwrap_or(0) + 1
}

/// The revision's hash label (the hash in its name when the label is missing).
pub fn hash_of(rev: &ControllerRevision) -> String {
    rev.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(HASH_LABEL).cloned())
        .unwrap_or_else(|| {
            rev.metadata
                .name
                .as_deref()
                .and_then(|n| n.rsplit('-').next())
                .unwrap_or("")
                .to_string()
        })
}

/// A new revision (not yet created) of the owner with this template.
pub fn new_revision(
    owner: &OwnerReference,
    namespace: &str,
    template: &PodTemplateSpec,
    number: i64,
    collision_count: Option<i32>,
) -> ControllerRevision {
    let data = template_patch(template);
    let h = hash(&data, collision_count);
    let mut labels: BTreeMap<String, String> = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(HASH_LABEL.into(), h.clone());
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(revision_name(&owner.name, &h)),
            namespace: Some(namespace.to_string()),
            labels: Some(labels),
            owner_references: Some(vec![owner.clone()]),
            ..ObjectMeta::default()
        },
        data: Some(RawExtension(data)),
        revision: number,
    }
}

/// What [`ensure_update_revision`] settled on.
pub struct Settled {
    /// The revision of the owner's current template.
    pub update: ControllerRevision,
    /// The owner's revisions, the update revision included, as they now are.
    pub all: Vec<ControllerRevision>,
}

/// Finds or creates the revision of `template` among the owner's `revs`: an equal revision
/// is reused (and renumbered to the top if it is not already there); otherwise a new one is
/// created. A name taken by another owner's or template's revision is a hash collision: the
/// error asks the caller to bump its `collisionCount` and retry.
///
/// `Ok(Err(n))` is a collision: `n` is the `collisionCount` to write before retrying.
///
/// # Errors
/// API errors.
pub async fn ensure_update_revision(
    client: &Client,
    owner: &OwnerReference,
    namespace: &str,
    template: &PodTemplateSpec,
    mut revs: Vec<ControllerRevision>,
    collision_count: Option<i32>,
) -> Result<Result<Settled, i32>, ReconcileError> {
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), namespace);
    let next = next_number(&revs);
    let candidate = new_revision(owner, namespace, template, next, collision_count);
    revs.sort_by_key(|r| r.revision);
    if let Some(i) = revs.iter().rposition(|r| equal(r, &candidate)) {
        if i + 1 != revs.len() {
            // An older template again (a rollback): it becomes the newest revision.
            let name = revs[i].metadata.name.clone().unwrap_or_default();
            let updated = api
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"revision": next})),
                )
                .await?;
            revs[i] = updated;
        }
        let update = revs[i].clone();
        return Ok(Ok(Settled { update, all: revs }));
    }
    let name = candidate.metadata.name.clone().unwrap_or_default();
    match api.create(&PostParams::default(), &candidate).await {
        Ok(created) => {
            revs.push(created.clone());
            Ok(Ok(Settled {
                update: created,
                all: revs,
            }))
        }
        Err(kube::Error::Api(s)) if s.code == 409 => {
            // Ours, made by a reconcile the cache has not caught up with, or an equal orphan
            // the cache does not show as one yet (left by an owner deleted with
            // `--cascade=orphan`): use it. Only a different template is a collision — bumping
            // the collisionCount for an equal one would roll every pod for nothing.
            let existing = api.get(&name).await?;
            let controller = controller_of(&existing).map(|r| r.uid.clone());
            if equal(&existing, &candidate) && controller.is_none() {
                let adopted = adopt::adopt(&api, owner, [Arc::new(existing)]).await?;
                let Some(existing) = adopted.into_iter().next() else {
                    return Err(ReconcileError::Other(format!(
                        "revision {name} was claimed or changed while being adopted"
                    )));
                };
                revs.push(existing.clone());
                return Ok(Ok(Settled {
                    update: existing,
                    all: revs,
                }));
            }
            if controller.as_deref() == Some(owner.uid.as_str()) && equal(&existing, &candidate) {
                let mut existing = existing;
                if existing.revision < next - 1 {
                    existing = api
                        .patch(
                            &name,
                            &PatchParams::default(),
                            &Patch::Merge(json!({"revision": next})),
                        )
                        .await?;
                }
                revs.push(existing.clone());
                return Ok(Ok(Settled {
                    update: existing,
                    all: revs,
                }));
            }
            Ok(Err(collision_count.unwrap_or(0).saturating_add(1)))
        }
        Err(e) => Err(e.into()),
    }
}

/// Where an owner's revisions are read from: the shared revision informer and its owner
/// index.
pub struct Revisions<'a> {
    pub cache: &'a crate::runtime::Informer<ControllerRevision>,
    pub by_owner: &'a crate::runtime::OwnerIndex,
}

/// One reconcile's revision step for a DaemonSet or StatefulSet: the owner's revisions from
/// the cache plus the orphans its selector matches (adopted), settled on `template`'s
/// revision. On a name collision the owner's `status.collisionCount` is raised through
/// `owner_api` and the pass fails, to be retried with the new count.
///
/// # Errors
/// API errors, and the collision itself (retryable).
#[allow(clippy::too_many_arguments)] // the owner, its API, its template and its selector
pub async fn settle_for<K>(
    client: &Client,
    revisions: Revisions<'_>,
    owner_api: &Api<K>,
    owner: &OwnerReference,
    namespace: &str,
    template: &PodTemplateSpec,
    selector: &Selector,
    collision_count: Option<i32>,
) -> Result<Settled, ReconcileError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut revs: Vec<ControllerRevision> = revisions
        .cache
        .get_many(
            revisions
                .by_owner
                .owned_by(&owner.uid)
                .iter()
                .map(AsRef::as_ref),
        )
        .into_iter()
        .map(|r| (*r).clone())
        .collect();
    let orphans = revisions.cache.get_many(
        revisions
            .by_owner
            .orphans_in(namespace)
            .iter()
            .map(AsRef::as_ref),
    );
    if !orphans.is_empty() {
        revs.extend(adopt_orphans(client, owner, orphans, selector).await?);
    }
    match ensure_update_revision(client, owner, namespace, template, revs, collision_count).await? {
        Ok(s) => Ok(s),
        Err(next) => {
            owner_api
                .patch_status(
                    &owner.name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"collisionCount": next}})),
                )
                .await?;
            Err(ReconcileError::Other(format!(
                "revision name collision for {namespace}/{}; collisionCount is now {next}",
                owner.name
            )))
        }
    }
}

/// Adopts orphaned revisions (e.g. left by a DaemonSet deleted with `--cascade=orphan`)
/// whose labels the owner's selector matches, as kube's `ClaimControllerRevisions` does, so a new owner
/// with the same template reuses their hashes instead of colliding; returns the adopted ones.
///
/// # Errors
/// API errors other than the object being gone or changed meanwhile.
pub async fn adopt_orphans(
    client: &Client,
    owner: &OwnerReference,
    orphans: Vec<Arc<ControllerRevision>>,
    selector: &Selector,
) -> Result<Vec<ControllerRevision>, ReconcileError> {
    let empty = BTreeMap::new();
    let Some(ns) = orphans
        .first()
        .map(|r| r.metadata.namespace.clone().unwrap_or_default())
    else {
        return Ok(Vec::new());
    };
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
    let matching = orphans.into_iter().filter(|r| {
        r.metadata.deletion_timestamp.is_none()
            && selector.matches(r.metadata.labels.as_ref().unwrap_or(&empty))
    });
    adopt::adopt(&api, owner, matching).await
}

/// The revisions to delete to keep `limit` unused ones: the oldest revisions that are not
/// `live` (named by a pod, or the current or update revision).
pub fn to_prune<'a>(
    revs: &'a [ControllerRevision],
    live: &dyn Fn(&ControllerRevision) -> bool,
    limit: usize,
) -> Vec<&'a ControllerRevision> {
    let mut idle: Vec<&ControllerRevision> = revs.iter().filter(|r| !live(r)).collect();
    if idle.len() <= limit {
        return Vec::new();
    }
    idle.sort_by_key(|r| r.revision);
    let n = idle.len() - limit;
    idle.into_iter().take(n).collect()
}

/// Deletes a revision (gone already is fine).
///
/// # Errors
/// API errors other than 404/409.
pub async fn delete(client: &Client, rev: &ControllerRevision) -> Result<(), ReconcileError> {
    let api: Api<ControllerRevision> = Api::namespaced(
        client.clone(),
        rev.metadata.namespace.as_deref().unwrap_or(""),
    );
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: rev.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api
        .delete(rev.metadata.name.as_deref().unwrap_or(""), &dp)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(image: &str) -> PodTemplateSpec {
        serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": image}]},
        }))
        .unwrap_or_default()
    }

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: "StatefulSet".into(),
            name: "web".into(),
            uid: "u1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    #[test]
    fn revision_data_is_a_template_patch_that_replaces_and_reads_back() {
        let t = template("nginx:1");
        let d = template_patch(&t);
        assert_eq!(d["spec"]["template"]["$patch"], "replace");
        let r = new_revision(&owner(), "default", &t, 1, None);
        assert_eq!(template_of(&r), Some(t));
    }

    #[test]
    fn equal_templates_hash_alike_and_collisions_change_the_name() {
        let a = new_revision(&owner(), "default", &template("nginx:1"), 1, None);
        let b = new_revision(&owner(), "default", &template("nginx:1"), 2, None);
        let c = new_revision(&owner(), "default", &template("nginx:2"), 3, None);
        assert!(equal(&a, &b));
        assert!(!equal(&a, &c));
        assert_eq!(a.metadata.name, b.metadata.name);
        assert_ne!(a.metadata.name, c.metadata.name);
        let d = new_revision(&owner(), "default", &template("nginx:1"), 1, Some(1));
        assert_ne!(a.metadata.name, d.metadata.name);
        let name = a.metadata.name.clone().unwrap_or_default();
        assert!(name.starts_with("web-"));
        assert_eq!(hash_of(&a), name.trim_start_matches("web-"));
        assert_eq!(
            a.metadata.labels.as_ref().and_then(|l| l.get("app")),
            Some(&"web".to_string())
        );
    }

    #[test]
    fn pruning_keeps_live_revisions_and_the_newest_idle_ones() {
        let revs: Vec<ControllerRevision> = (1..=5)
            .map(|i| new_revision(&owner(), "default", &template(&format!("i:{i}")), i, None))
            .collect();
        let live = |r: &ControllerRevision| r.revision == 1 || r.revision == 5;
        let gone: Vec<i64> = to_prune(&revs, &live, 1)
            .iter()
            .map(|r| r.revision)
            .collect();
        assert_eq!(gone, vec![2, 3]);
        assert!(to_prune(&revs, &live, 3).is_empty());
    }

    #[test]
    fn long_owner_names_are_shortened_in_revision_names() {
        let n = revision_name(&"a".repeat(300), "h");
        assert_eq!(n.len(), REVISION_NAME_PREFIX_CHARS_MAX + 2);
    }
}
