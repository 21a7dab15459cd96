//! What the API serves, from its discovery documents (kube's `Discovery`), refreshed
//! periodically so custom resources added later are seen.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use kube::Client;
use kube::api::ApiResource;
use kube::discovery::{ApiCapabilities, Discovery, Scope, verbs};

/// How long a discovery snapshot is used before it is fetched again.
pub const DISCOVERY_REFRESH_MS: u64 = 10_000;

/// Resources no controller here lists or deletes: events come in floods and own nothing.
const SKIPPED: [(&str, &str); 2] = [("", "events"), ("events.k8s.io", "events")];

#[derive(Clone)]
pub struct Resource {
    pub ar: ApiResource,
    pub namespaced: bool,
    pub caps: ApiCapabilities,
}

impl Resource {
    /// `<plural>.<group>` (kubectl's spelling).
    pub fn id(&self) -> String {
        if self.ar.group.is_empty() {
            self.ar.plural.clone()
        } else {
            format!("{}.{}", self.ar.plural, self.ar.group)
        }
    }

    pub fn supports(&self, verb: &str) -> bool {
        self.caps.supports_operation(verb)
    }
}

struct Snapshot {
    discovery: Arc<Discovery>,
    at: Instant,
}

/// A cached discovery client.
pub struct Resources {
    client: Client,
    snap: RwLock<Option<Snapshot>>,
}

impl Resources {
    pub fn new(client: Client) -> Arc<Self> {
        Arc::new(Resources {
            client,
            snap: RwLock::new(None),
        })
    }

    async fn discovery(&self) -> Result<Arc<Discovery>, kube::Error> {
        if let Ok(g) = self.snap.read()
            && let Some(s) = g.as_ref()
            && s.at.elapsed() < Duration::from_millis(DISCOVERY_REFRESH_MS)
        {
            return Ok(s.discovery.clone());
        }
        let d = Arc::new(Discovery::new(self.client.clone()).run().await?);
        if let Ok(mut g) = self.snap.write() {
            *g = Some(Snapshot {
                discovery: d.clone(),
                at: Instant::now(),
            });
        }
        Ok(d)
    }

    /// Every resource (preferred version of each group) that can be listed, watched and
    /// deleted, events aside.
    pub async fn deletable(&self) -> Result<Vec<Resource>, kube::Error> {
        let d = self.discovery().await?;
        let mut out = Vec::new();
        for g in d.groups() {
            for (ar, caps) in g.recommended_resources() {
                if SKIPPED.contains(&(ar.group.as_str(), ar.plural.as_str())) {
                    continue;
                }
                if !(caps.supports_operation(verbs::LIST)
                    && caps.supports_operation(verbs::WATCH)
                    && caps.supports_operation(verbs::DELETE))
                {
                    continue;
                }
                out.push(Resource {
                    namespaced: caps.scope == Scope::Namespaced,
                    ar,
                    caps,
                });
            }
        }
        Ok(out)
    }

    /// The resource serving `apiVersion`/`kind` (for owner references).
    pub async fn for_kind(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<Option<Resource>, kube::Error> {
        let d = self.discovery().await?;
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
        Ok(d.resolve_gvk(&gvk).map(|(ar, caps)| Resource {
            namespaced: caps.scope == Scope::Namespaced,
            ar,
            caps,
        }))
    }
}
