//! The admission chain: what runs between decoding a write and the resource strategy, as
//! kube-apiserver's admission plugins do.
//!
//! The corridor of every write (create, update, patch, server-side apply, delete, and the
//! `status`/`scale`/`finalize` subresources) is:
//!
//! ```text
//! decode → default → [mutating admission] → strategy prepare/default/validate
//!        → [validating admission] → store
//! ```
//!
//! Every plugin in [`PLUGINS`] sees every write; each decides from the [`Attributes`]
//! (operation, group/version/resource/subresource, namespace, name) whether it cares.
//! First every plugin's [`Plugin::admit`] runs in list order (mutating: it may change the
//! object), then every plugin's [`Plugin::validate`] in list order (it may only refuse or
//! warn). Running all validations after all mutations is what makes a mutating webhook's
//! change subject to every validation, as in kube-apiserver.
//!
//! # Adding a plugin
//! 1. A file in this folder with a unit struct implementing [`Plugin`]: `name()`, and
//!    `admit` and/or `validate` (both default to "admit unchanged"). State that outlives a
//!    request (caches, clients) lives in [`State`], reached as `a.ctx.api.admission`.
//! 2. One line in [`PLUGINS`], at kube-apiserver's position for it (the comments there
//!    name the slots of ServiceAccount, NodeRestriction and ResourceQuota).
//!
//! A plugin refuses with an [`ApiError`]; [`forbidden`] builds kube's
//! `<resource> "<name>" is forbidden: <reason>` 403. Warnings go to [`Attributes::warn`]
//! (`Warning` response headers). Objects a plugin reads that change rarely (LimitRanges,
//! webhook configurations) come from [`State::list`], a cache, never a store list per
//! request; the request's namespace object from [`Attributes::namespace_object`] (one
//! point read per write, shared by every plugin).
//!
//! # Invariants
//! - Admission never writes: a refused request leaves no event in the log.
//! - Dry-run requests are admitted like real ones (webhooks with side effects refuse them).
//! - Every wait is bounded (webhook timeouts, response sizes, calls in flight).

pub mod limit_ranger;
pub mod namespace_lifecycle;
pub mod pod_security;
pub mod service_account;
pub mod toleration_seconds;
pub mod webhook;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use logbook_store::{ListAt, ObjectKey};
use serde_json::{Map, Value, json};

use crate::Api;
use crate::error::{ApiError, ApiResult, from_store};
use crate::handlers::Ctx;
use crate::object::decode_stored;

/// The chain, in kube-apiserver's order (its `--enable-admission-plugins` ordering).
/// Slots for plugins still to come are marked where kube runs them.
pub const PLUGINS: &[&dyn Plugin] = &[
    &namespace_lifecycle::NamespaceLifecycle,
    &limit_ranger::LimitRanger,
    &service_account::ServiceAccount,
    // NodeRestriction: with the node authorizer (api/src/auth/node.rs), which sees every
    // node request, and `check_create` for the names a node creates.
    &pod_security::PodSecurity,
    &toleration_seconds::DefaultTolerationSeconds,
    &webhook::MutatingAdmissionWebhook,
    &webhook::ValidatingAdmissionWebhook,
    // ResourceQuota runs last, as in kube, but outside this list (api/src/quota.rs, called
    // by create): it holds a namespace lock until the object is written.
];

/// How long a cached list of admission configuration objects (LimitRanges, webhook
/// configurations) is served after it was read, in milliseconds. Writes through this
/// server invalidate the cache at once; the TTL bounds how stale a replica sharing the
/// store (FoundationDB mode) may be about writes made through another replica.
pub const CONFIG_CACHE_TTL_MS: u64 = 1_000;
/// Most (resource, namespace) lists the cache holds; at the limit it is emptied.
pub const CONFIG_CACHE_ENTRIES_MAX: usize = 4_096;
/// Most objects of one cached list (LimitRanges of a namespace, webhook configurations of
/// one kind); more are ignored, with a logged warning.
pub const CONFIG_OBJECTS_MAX: usize = 1_000;

/// The resources whose writes invalidate the configuration cache.
const CACHED_RESOURCES: &[&str] = &[
    "limitranges",
    "admissionregistration.k8s.io/mutatingwebhookconfigurations",
    "admissionregistration.k8s.io/validatingwebhookconfigurations",
];

/// A plugin of the admission chain. Both phases default to "admit unchanged".
pub trait Plugin: Send + Sync {
    /// kube's name for the plugin (`LimitRanger`, `PodSecurity`).
    fn name(&self) -> &'static str;

    /// The mutating phase: may change `a.object` (absent on DELETE and CONNECT).
    ///
    /// # Errors
    /// A refusal, answered to the client as it is.
    fn admit<'a>(&'a self, a: &'a mut Attributes<'_>) -> BoxFuture<'a, ApiResult<()>> {
        let _ = a;
        Box::pin(async { Ok(()) })
    }

    /// The validating phase: sees the object as it will be stored; may only refuse or warn.
    ///
    /// # Errors
    /// A refusal, answered to the client as it is.
    fn validate<'a>(&'a self, a: &'a Attributes<'_>) -> BoxFuture<'a, ApiResult<()>> {
        let _ = a;
        Box::pin(async { Ok(()) })
    }
}

/// The admission operation (kube's `admission.Operation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }

    /// The kind of the request's options object.
    fn options_kind(self) -> &'static str {
        match self {
            Operation::Create => "CreateOptions",
            Operation::Update => "UpdateOptions",
            Operation::Delete => "DeleteOptions",
            Operation::Connect => "",
        }
    }
}

/// One write under admission: built once per request and used for both phases.
pub struct Review<'a> {
    pub ctx: &'a Ctx,
    pub operation: Operation,
    /// The object's name ("" when the server generates it later).
    pub name: String,
    pub dry_run: bool,
    /// The request's options object (CreateOptions, UpdateOptions, DeleteOptions).
    pub options: Value,
    namespace: tokio::sync::OnceCell<Option<Arc<Map<String, Value>>>>,
}

impl<'a> Review<'a> {
    pub fn new(ctx: &'a Ctx, operation: Operation, name: &str, dry_run: bool) -> Self {
        let mut options = json!({"kind": operation.options_kind(), "apiVersion": "meta.k8s.io/v1"});
        if dry_run {
            options["dryRun"] = json!(["All"]);
        }
        if let Some(fm) = ctx.query.get("fieldManager") {
            options["fieldManager"] = json!(fm);
        }
        Review {
            ctx,
            operation,
            name: name.to_string(),
            dry_run,
            options,
            namespace: tokio::sync::OnceCell::new(),
        }
    }

    /// Runs every plugin's mutating phase, in order.
    ///
    /// # Errors
    /// The first refusal.
    pub async fn mutate(
        &self,
        object: Option<&mut Map<String, Value>>,
        old_object: Option<&Map<String, Value>>,
    ) -> ApiResult<()> {
        let mut a = Attributes {
            review: self,
            ctx: self.ctx,
            object,
            old_object,
        };
        for p in PLUGINS {
            p.admit(&mut a).await?;
        }
        Ok(())
    }

    /// Runs every plugin's validating phase, in order.
    ///
    /// # Errors
    /// The first refusal.
    pub async fn validate(
        &self,
        object: Option<&mut Map<String, Value>>,
        old_object: Option<&Map<String, Value>>,
    ) -> ApiResult<()> {
        let a = Attributes {
            review: self,
            ctx: self.ctx,
            object,
            old_object,
        };
        for p in PLUGINS {
            p.validate(&a).await?;
        }
        Ok(())
    }
}

/// What a plugin sees of one write (kube's `admission.Attributes`).
pub struct Attributes<'a> {
    pub review: &'a Review<'a>,
    /// The request: the API, the resource entry, the target path, `identity` (userInfo).
    pub ctx: &'a Ctx,
    /// The object as it will be written (mutable in the mutating phase); absent on DELETE.
    pub object: Option<&'a mut Map<String, Value>>,
    /// The stored object an UPDATE or DELETE changes.
    pub old_object: Option<&'a Map<String, Value>>,
}

impl Attributes<'_> {
    pub fn operation(&self) -> Operation {
        self.review.operation
    }

    pub fn group(&self) -> &str {
        &self.ctx.info.group
    }

    pub fn version(&self) -> &str {
        &self.ctx.info.version
    }

    /// The resource's plural (`pods`).
    pub fn resource(&self) -> &str {
        &self.ctx.info.plural
    }

    pub fn kind(&self) -> &str {
        &self.ctx.info.kind
    }

    /// The subresource ("" for the object itself).
    pub fn subresource(&self) -> &str {
        self.ctx.target.subresource.as_deref().unwrap_or("")
    }

    /// Whether this is the core group's `resource` itself (not a subresource).
    pub fn is_core(&self, resource: &str) -> bool {
        self.group().is_empty() && self.resource() == resource
    }

    /// The namespace ("" for cluster-scoped resources).
    pub fn namespace(&self) -> &str {
        self.ctx.namespace()
    }

    pub fn name(&self) -> &str {
        match self.object.as_deref() {
            Some(o) if self.review.name.is_empty() => crate::object::meta_str(o, "name")
                .or_else(|| crate::object::meta_str(o, "generateName"))
                .unwrap_or(""),
            _ => &self.review.name,
        }
    }

    pub fn object(&self) -> Option<&Map<String, Value>> {
        self.object.as_deref()
    }

    pub fn dry_run(&self) -> bool {
        self.review.dry_run
    }

    /// Adds a `Warning` header to the response.
    pub fn warn(&self, message: String) {
        self.ctx.warn(vec![message]);
    }

    /// The request's namespace object, read once per request (None when it does not exist
    /// or the resource is cluster-scoped).
    ///
    /// # Errors
    /// A store failure.
    pub async fn namespace_object(&self) -> ApiResult<Option<Arc<Map<String, Value>>>> {
        let ns = self.namespace();
        if ns.is_empty() {
            return Ok(None);
        }
        self.review
            .namespace
            .get_or_try_init(|| async {
                let key = ObjectKey::new("namespaces", "", ns);
                match self.ctx.api.log.get(&key).await.map_err(from_store)? {
                    Some(cur) => Ok(Some(Arc::new(decode_stored(&cur.object, cur.position.0)?))),
                    None => Ok(None),
                }
            })
            .await
            .cloned()
    }
}

/// kube's `admission.NewForbidden`: 403 Forbidden, `<resource> "<name>" is forbidden: <why>`.
pub fn forbidden(a: &Attributes<'_>, why: &str) -> ApiError {
    let resource = if a.group().is_empty() {
        a.resource().to_string()
    } else {
        format!("{}.{}", a.resource(), a.group())
    };
    let name = a.name().to_string();
    let mut e = ApiError::new(
        403,
        "Forbidden",
        format!("{resource} \"{name}\" is forbidden: {why}"),
    );
    e.details = Some(json!({"name": name, "group": a.group(), "kind": a.resource()}));
    e
}

/// State of the chain that outlives a request, one per [`Api`].
pub struct State {
    /// Bumped by every write of a [`CACHED_RESOURCES`] resource through this server.
    generation: AtomicU64,
    lists: std::sync::Mutex<HashMap<(String, String), Cached>>,
    /// Webhook calls in flight from this server.
    pub(crate) webhook_calls: Arc<tokio::sync::Semaphore>,
}

struct Cached {
    generation: u64,
    loaded: Instant,
    items: Arc<Vec<Map<String, Value>>>,
}

impl Default for State {
    fn default() -> Self {
        State {
            generation: AtomicU64::new(0),
            lists: std::sync::Mutex::new(HashMap::new()),
            webhook_calls: Arc::new(tokio::sync::Semaphore::new(
                webhook::WEBHOOK_CALLS_INFLIGHT_MAX,
            )),
        }
    }
}

impl State {
    /// Called after every write: a write of a cached resource invalidates the cache.
    pub fn note_write(&self, store_resource: &str) {
        if CACHED_RESOURCES.contains(&store_resource) {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The objects of `store_resource` in `namespace` ("" = cluster-scoped), from the cache
    /// when it is fresh (see [`CONFIG_CACHE_TTL_MS`]).
    ///
    /// # Errors
    /// A store failure.
    pub async fn list(
        &self,
        api: &Api,
        store_resource: &str,
        namespace: &str,
    ) -> ApiResult<Arc<Vec<Map<String, Value>>>> {
        let key = (store_resource.to_string(), namespace.to_string());
        // Read before listing: a write during the list leaves the entry already stale.
        let generation = self.generation.load(Ordering::SeqCst);
        if let Ok(lists) = self.lists.lock()
            && let Some(c) = lists.get(&key)
            && c.generation == generation
            && c.loaded.elapsed() < Duration::from_millis(CONFIG_CACHE_TTL_MS)
        {
            return Ok(c.items.clone());
        }
        let ns = (!namespace.is_empty()).then_some(namespace);
        let page = api
            .log
            .list(store_resource, ns, ListAt::Latest, CONFIG_OBJECTS_MAX, None)
            .await
            .map_err(from_store)?;
        if page.continue_token.is_some() {
            tracing::warn!(
                resource = store_resource,
                namespace,
                "more than {CONFIG_OBJECTS_MAX} admission configuration objects; the rest are ignored"
            );
        }
        let mut items = Vec::with_capacity(page.items.len());
        for item in &page.items {
            items.push(decode_stored(&item.object, item.position.0)?);
        }
        let items = Arc::new(items);
        if let Ok(mut lists) = self.lists.lock() {
            if lists.len() >= CONFIG_CACHE_ENTRIES_MAX {
                lists.clear();
            }
            lists.insert(
                key,
                Cached {
                    generation,
                    loaded: Instant::now(),
                    items: items.clone(),
                },
            );
        }
        Ok(items)
    }
}

/// The labels of an object, if any.
pub fn labels(obj: &Map<String, Value>) -> Option<&Map<String, Value>> {
    obj.get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
}
