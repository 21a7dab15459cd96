//! The informer: a list+watch consumer of one resource that keeps a local cache, calls the
//! registered handlers for every change, and records the log position it reached.
//!
//! **Resuming.** With a state directory, the cache and its position are written to
//! `<state-dir>/<name>.json` every [`STATE_SAVE_INTERVAL_MS`] (and at shutdown). A restarted
//! informer loads them and *watches from that position* — the log replays every change since
//! — instead of listing the resource again; a 410 (the position fell below the retention
//! horizon) falls back to a list. The loaded objects go to the handlers as adds, so each
//! controller re-checks every object it owns once, from its cache, without an API call.
//! Positions are opaque strings here, as for any Kubernetes client.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use kube::api::{
    ApiResource, DynamicObject, ListParams, ObjectList, PartialObjectMeta, WatchEvent, WatchParams,
};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

/// Objects per page when (re)listing.
pub const LIST_PAGE_OBJECTS: u32 = 500;
/// Server-side timeout asked for each watch request; the informer re-watches from its
/// position when it ends.
pub const WATCH_TIMEOUT_SECONDS: u32 = 290;
/// How often a changed cache is written to the state directory, at least...
pub const STATE_SAVE_INTERVAL_MS: u64 = 5_000;
/// ...and at most: a large cache waits `STATE_SAVE_COST_FACTOR` times as long as its last
/// save took (30,000 pods are ~60 MB of JSON), so saving stays a few percent of a core.
pub const STATE_SAVE_INTERVAL_MAX_MS: u64 = 60_000;
pub const STATE_SAVE_COST_FACTOR: u32 = 50;
/// Wait before retrying a failed list or watch request (doubles up to the max).
pub const WATCH_RETRY_BACKOFF_BASE_MS: u64 = 200;
pub const WATCH_RETRY_BACKOFF_MAX_MS: u64 = 10_000;

/// A change as handlers see it: the old state (none for an add) and the new (none for a
/// delete).
pub type Handler<K> = Box<dyn Fn(Option<&K>, Option<&K>) + Send + Sync>;

/// `namespace/name`, or `name` for cluster-scoped objects: the cache and queue key.
pub fn key_of<K: Resource>(o: &K) -> String {
    match o.meta().namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{}", o.meta().name.as_deref().unwrap_or("")),
        _ => o.meta().name.clone().unwrap_or_default(),
    }
}

struct Cache<K> {
    objects: HashMap<String, Arc<K>>,
    position: Option<String>,
    /// Bumped on every change; the saver compares it with what it last wrote.
    generation: u64,
}

/// Counters a test or a metrics page reads.
#[derive(Default, Debug)]
pub struct InformerStats {
    /// List requests made (pages count once each).
    pub lists: AtomicU64,
    /// Watch requests made.
    pub watches: AtomicU64,
    /// Watch events applied.
    pub events: AtomicU64,
    /// 1 when the informer started from saved state rather than a list.
    pub resumed: AtomicU64,
}

/// Where an informer's objects come from: a typed API, or object metadata only.
#[async_trait::async_trait]
pub trait Source<K: Clone>: Send + Sync {
    /// Names the resource in saved state (`<group>/<plural>`).
    fn resource_id(&self) -> String;
    async fn list(&self, lp: &ListParams) -> Result<ObjectList<K>, kube::Error>;
    async fn watch(
        &self,
        wp: &WatchParams,
        from: &str,
    ) -> Result<BoxStream<'static, Result<WatchEvent<K>, kube::Error>>, kube::Error>;
}

#[async_trait::async_trait]
impl<K> Source<K> for Api<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default,
{
    fn resource_id(&self) -> String {
        let dt = K::DynamicType::default();
        format!("{}/{}", K::group(&dt), K::plural(&dt))
    }

    async fn list(&self, lp: &ListParams) -> Result<ObjectList<K>, kube::Error> {
        Api::list(self, lp).await
    }

    async fn watch(
        &self,
        wp: &WatchParams,
        from: &str,
    ) -> Result<BoxStream<'static, Result<WatchEvent<K>, kube::Error>>, kube::Error> {
        Ok(Api::watch(self, wp, from).await?.boxed())
    }
}

/// Only the metadata of any resource (`as=PartialObjectMetadata`): what the garbage
/// collector needs of every object.
pub struct MetadataSource {
    pub api: Api<DynamicObject>,
    pub resource: ApiResource,
}

#[async_trait::async_trait]
impl Source<PartialObjectMeta<DynamicObject>> for MetadataSource {
    fn resource_id(&self) -> String {
        format!("{}/{}", self.resource.group, self.resource.plural)
    }

    async fn list(
        &self,
        lp: &ListParams,
    ) -> Result<ObjectList<PartialObjectMeta<DynamicObject>>, kube::Error> {
        self.api.list_metadata(lp).await
    }

    async fn watch(
        &self,
        wp: &WatchParams,
        from: &str,
    ) -> Result<
        BoxStream<'static, Result<WatchEvent<PartialObjectMeta<DynamicObject>>, kube::Error>>,
        kube::Error,
    > {
        Ok(self.api.watch_metadata(wp, from).await?.boxed())
    }
}

pub struct Informer<K: Resource> {
    name: String,
    source: Box<dyn Source<K>>,
    cache: RwLock<Cache<K>>,
    handlers: Mutex<Vec<Arc<Handler<K>>>>,
    synced: watch::Sender<bool>,
    state_path: Option<PathBuf>,
    label_selector: Option<String>,
    pub stats: InformerStats,
}

#[derive(Serialize, serde::Deserialize)]
struct SavedState<K> {
    /// The resource this state is of (`<group>/<plural>`), checked on load.
    resource: String,
    position: String,
    objects: Vec<K>,
}

impl<K> Informer<K>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default,
{
    /// An informer of every `K` in the cluster. `name` names its state file.
    pub fn new(api: Api<K>, name: &str, state_dir: Option<&std::path::Path>) -> Arc<Self> {
        Self::from_source(Box::new(api), name, state_dir, None)
    }
}

impl<K> Informer<K>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug + Send + Sync + 'static,
{
    pub fn from_source(
        source: Box<dyn Source<K>>,
        name: &str,
        state_dir: Option<&std::path::Path>,
        label_selector: Option<String>,
    ) -> Arc<Self> {
        Arc::new(Informer {
            name: name.to_string(),
            source,
            cache: RwLock::new(Cache {
                objects: HashMap::new(),
                position: None,
                generation: 0,
            }),
            handlers: Mutex::new(Vec::new()),
            synced: watch::channel(false).0,
            state_path: state_dir.map(|d| d.join(format!("{name}.json"))),
            label_selector,
            stats: InformerStats::default(),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Cache<K>> {
        match self.cache.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Cache<K>> {
        match self.cache.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Registers a handler; call before [`Informer::start`].
    pub fn on_change(&self, f: impl Fn(Option<&K>, Option<&K>) + Send + Sync + 'static) {
        match self.handlers.lock() {
            Ok(mut h) => h.push(Arc::new(Box::new(f))),
            Err(p) => p.into_inner().push(Arc::new(Box::new(f))),
        }
    }

    /// The cached object with this key.
    pub fn get(&self, key: &str) -> Option<Arc<K>> {
        self.read().objects.get(key).cloned()
    }

    /// The cached objects with these keys (one lock for all of them).
    pub fn get_many<'a>(&self, keys: impl IntoIterator<Item = &'a str>) -> Vec<Arc<K>> {
        let c = self.read();
        keys.into_iter()
            .filter_map(|k| c.objects.get(k).cloned())
            .collect()
    }

    /// Every cached object for which `f` holds.
    pub fn filter(&self, f: impl Fn(&K) -> bool) -> Vec<Arc<K>> {
        self.read()
            .objects
            .values()
            .filter(|o| f(o))
            .cloned()
            .collect()
    }

    /// Every cached object in namespace `ns`.
    pub fn in_namespace(&self, ns: &str) -> Vec<Arc<K>> {
        self.filter(|o| o.meta().namespace.as_deref() == Some(ns))
    }

    pub fn len(&self) -> usize {
        self.read().objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The log position the cache reflects.
    pub fn position(&self) -> Option<String> {
        self.read().position.clone()
    }

    /// Waits until the cache holds a full view (loaded or listed).
    pub async fn wait_synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Whether the cache holds a full view.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    fn notify(&self, old: Option<&K>, new: Option<&K>) {
        let handlers: Vec<Arc<Handler<K>>> = match self.handlers.lock() {
            Ok(h) => h.clone(),
            Err(p) => p.into_inner().clone(),
        };
        for h in &handlers {
            h(old, new);
        }
    }

    /// Runs the informer until `shutdown` flips: load or list, then watch from the position,
    /// forever. Spawn it.
    pub fn start(self: &Arc<Self>, shutdown: watch::Receiver<bool>) {
        let me = Arc::clone(self);
        let sd = shutdown.clone();
        tokio::spawn(async move { me.run(sd).await });
        if self.state_path.is_some() {
            let me = Arc::clone(self);
            tokio::spawn(async move { me.save_loop(shutdown).await });
        }
    }

    async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        self.load();
        let mut failures = 0u32;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let step = async {
                if self.position().is_none() {
                    self.relist().await
                } else {
                    self.watch_once().await
                }
            };
            let outcome = tokio::select! {
                r = step => r,
                _ = shutdown.changed() => return,
            };
            match outcome {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let exp = failures.min(10) - 1;
                    let ms = (WATCH_RETRY_BACKOFF_BASE_MS << exp).min(WATCH_RETRY_BACKOFF_MAX_MS);
                    tracing::debug!(informer = %self.name, error = %e, "list/watch failed; retrying in {ms} ms");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(ms)) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        }
    }

    fn load(&self) {
        let Some(path) = &self.state_path else { return };
        let Ok(bytes) = std::fs::read(path) else {
            return;
        };
        let saved: SavedState<K> = match serde_json::from_slice(&bytes) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(informer = %self.name, "ignoring unreadable state {}: {e}", path.display());
                return;
            }
        };
        if saved.resource != self.source.resource_id() {
            return;
        }
        let objects: Vec<Arc<K>> = saved.objects.into_iter().map(Arc::new).collect();
        {
            let mut c = self.write();
            c.objects = objects
                .iter()
                .map(|o| (key_of(o.as_ref()), o.clone()))
                .collect();
            c.position = Some(saved.position);
            c.generation += 1;
        }
        self.stats.resumed.store(1, Ordering::Relaxed);
        for o in &objects {
            self.notify(None, Some(o));
        }
        self.synced.send_replace(true);
        tracing::info!(informer = %self.name, objects = objects.len(), "resumed from saved state");
    }

    async fn relist(&self) -> Result<(), kube::Error> {
        let mut objects = HashMap::new();
        let mut lp = ListParams::default().limit(LIST_PAGE_OBJECTS);
        if let Some(l) = &self.label_selector {
            lp = lp.labels(l);
        }
        let position = loop {
            self.stats.lists.fetch_add(1, Ordering::Relaxed);
            let page = self.source.list(&lp).await?;
            for mut o in page.items {
                strip(&mut o);
                objects.insert(key_of(&o), Arc::new(o));
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(c) => lp = lp.continue_token(&c),
                None => break page.metadata.resource_version.unwrap_or_default(),
            }
        };
        let old = {
            let mut c = self.write();
            let old = std::mem::replace(&mut c.objects, objects.clone());
            c.position = Some(position);
            c.generation += 1;
            old
        };
        for (k, o) in &objects {
            self.notify(old.get(k).map(AsRef::as_ref), Some(o));
        }
        for (k, o) in &old {
            if !objects.contains_key(k) {
                self.notify(Some(o), None);
            }
        }
        self.synced.send_replace(true);
        Ok(())
    }

    async fn watch_once(&self) -> Result<(), kube::Error> {
        let Some(from) = self.position() else {
            return Ok(());
        };
        let mut wp = WatchParams::default().timeout(WATCH_TIMEOUT_SECONDS);
        if let Some(l) = &self.label_selector {
            wp = wp.labels(l);
        }
        self.stats.watches.fetch_add(1, Ordering::Relaxed);
        let stream = match self.source.watch(&wp, &from).await {
            Ok(s) => s,
            Err(kube::Error::Api(s)) if s.code == 410 => {
                self.expire();
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.try_next().await? {
            match ev {
                WatchEvent::Added(o) | WatchEvent::Modified(o) => self.apply(o),
                WatchEvent::Deleted(o) => self.remove(o),
                WatchEvent::Bookmark(b) => {
                    let mut c = self.write();
                    c.position = Some(b.metadata.resource_version);
                    c.generation += 1;
                }
                WatchEvent::Error(s) if s.code == 410 => {
                    self.expire();
                    return Ok(());
                }
                WatchEvent::Error(s) => {
                    tracing::debug!(informer = %self.name, "watch error {}: {}", s.code, s.message);
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The position fell below the retention horizon: list again.
    fn expire(&self) {
        tracing::info!(informer = %self.name, "position expired (410); listing again");
        self.write().position = None;
    }

    fn apply(&self, mut o: K) {
        self.stats.events.fetch_add(1, Ordering::Relaxed);
        strip(&mut o);
        let key = key_of(&o);
        let new = Arc::new(o);
        let old = {
            let mut c = self.write();
            c.position = new.meta().resource_version.clone();
            c.generation += 1;
            c.objects.insert(key, new.clone())
        };
        self.notify(old.as_deref(), Some(&new));
    }

    fn remove(&self, o: K) {
        self.stats.events.fetch_add(1, Ordering::Relaxed);
        let key = key_of(&o);
        let old = {
            let mut c = self.write();
            c.position = o.meta().resource_version.clone();
            c.generation += 1;
            c.objects.remove(&key)
        };
        let last = old.unwrap_or_else(|| Arc::new(o));
        self.notify(Some(&last), None);
    }

    async fn save_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut saved_generation = 0u64;
        let mut wait = Duration::from_millis(STATE_SAVE_INTERVAL_MS);
        loop {
            let stop = tokio::select! {
                () = tokio::time::sleep(wait) => false,
                _ = shutdown.changed() => true,
            };
            let started = std::time::Instant::now();
            saved_generation = self.save(saved_generation).await;
            wait = (started.elapsed() * STATE_SAVE_COST_FACTOR).clamp(
                Duration::from_millis(STATE_SAVE_INTERVAL_MS),
                Duration::from_millis(STATE_SAVE_INTERVAL_MAX_MS),
            );
            if stop || *shutdown.borrow() {
                return;
            }
        }
    }

    /// Writes the cache if it changed since `saved_generation`; returns the generation now
    /// on disk.
    async fn save(self: &Arc<Self>, saved_generation: u64) -> u64 {
        let Some(path) = self.state_path.clone() else {
            return saved_generation;
        };
        let (generation, position, objects) = {
            let c = self.read();
            let Some(position) = c.position.clone() else {
                return saved_generation;
            };
            if c.generation == saved_generation || !self.is_synced() {
                return saved_generation;
            }
            let objects: Vec<Arc<K>> = c.objects.values().cloned().collect();
            (c.generation, position, objects)
        };
        let resource = self.source.resource_id();
        let res = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            #[derive(Serialize)]
            struct Out<'a, K> {
                resource: String,
                position: &'a str,
                objects: Vec<&'a K>,
            }
            let out = Out {
                resource,
                position: &position,
                objects: objects.iter().map(AsRef::as_ref).collect(),
            };
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension("json.tmp");
            let f = std::fs::File::create(&tmp)?;
            let mut w = std::io::BufWriter::new(f);
            serde_json::to_writer(&mut w, &out)?;
            let f = w.into_inner().map_err(|e| e.into_error())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })
        .await;
        match res {
            Ok(Ok(())) => generation,
            Ok(Err(e)) => {
                tracing::warn!(informer = %self.name, "saving state: {e}");
                saved_generation
            }
            Err(_) => saved_generation,
        }
    }
}

/// The object's namespace ("" when cluster-scoped).
/// Drops what no controller reads from a cached object: `managedFields` (server-side
/// apply's bookkeeping, often the largest part of a pod's metadata), as client-go informers
/// are commonly set to (`TransformFunc`).
fn strip<K: Resource>(o: &mut K) {
    o.meta_mut().managed_fields = None;
}

pub fn ns_of<K: Resource>(o: &K) -> &str {
    o.meta().namespace.as_deref().unwrap_or("")
}

/// Convenience for handlers: the name of whichever side of a change is present.
pub fn either<'a, K>(old: Option<&'a K>, new: Option<&'a K>) -> Option<&'a K> {
    new.or(old)
}

/// Lists every page of `api` (used by controllers that need a one-off complete view).
pub async fn list_all<K>(api: &Api<K>, lp: ListParams) -> Result<Vec<K>, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut lp = lp.limit(LIST_PAGE_OBJECTS);
    let mut out = Vec::new();
    loop {
        let page = api.list(&lp).await?;
        out.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => return Ok(out),
        }
    }
}
