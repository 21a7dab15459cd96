//! Parsing a request: the Kubernetes path layout and the query parameters.

use std::collections::HashMap;

/// What a resource path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub group: String,
    pub version: String,
    pub plural: String,
    /// The namespace in the path (`/namespaces/<ns>/...`), if any.
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// The legacy `/watch/` path prefix was used.
    pub legacy_watch: bool,
}

/// A path the API serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/api/v1` or `/apis/<g>/<v>`
    ResourceList {
        group: String,
        version: String,
    },
    /// `/apis/<g>`
    Group {
        group: String,
    },
    Resource(Target),
}

/// Parses `/api/...` and `/apis/...` paths; `None` for anything else.
pub fn parse_path(path: &str) -> Option<Route> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api"] => return Some(Route::CoreVersions),
        ["apis"] => return Some(Route::Groups),
        ["api", v] => {
            return Some(Route::ResourceList {
                group: String::new(),
                version: (*v).to_string(),
            });
        }
        ["apis", g] => {
            return Some(Route::Group {
                group: (*g).to_string(),
            });
        }
        ["apis", g, v] => {
            return Some(Route::ResourceList {
                group: (*g).to_string(),
                version: (*v).to_string(),
            });
        }
        ["api", v, rest @ ..] => (String::new(), (*v).to_string(), rest),
        ["apis", g, v, rest @ ..] => ((*g).to_string(), (*v).to_string(), rest),
        _ => return None,
    };
    let (legacy_watch, rest) = match rest {
        ["watch", r @ ..] => (true, r),
        r => (false, r),
    };
    if rest.iter().any(|p| p.is_empty()) {
        return None;
    }
    let t = |namespace: Option<&str>, plural: &str, name: Option<&str>, sub: Option<&str>| {
        Some(Route::Resource(Target {
            group: group.clone(),
            version: version.clone(),
            plural: plural.to_string(),
            namespace: namespace.map(str::to_string),
            name: name.map(str::to_string),
            subresource: sub.map(str::to_string),
            legacy_watch,
        }))
    };
    match rest {
        // The namespace object itself and its subresources.
        ["namespaces", ns] => t(None, "namespaces", Some(ns), None),
        ["namespaces", ns, sub @ ("status" | "finalize")] => {
            t(None, "namespaces", Some(ns), Some(sub))
        }
        ["namespaces", ns, plural] => t(Some(ns), plural, None, None),
        ["namespaces", ns, plural, name] => t(Some(ns), plural, Some(name), None),
        ["namespaces", ns, plural, name, sub] => t(Some(ns), plural, Some(name), Some(sub)),
        [plural] => t(None, plural, None, None),
        [plural, name] => t(None, plural, Some(name), None),
        [plural, name, sub] => t(None, plural, Some(name), Some(sub)),
        _ => None,
    }
}

/// Query parameters, last value wins (as Go's `url.Values.Get` takes the first; clients
/// send each once).
#[derive(Debug, Default, Clone)]
pub struct Query(pub HashMap<String, String>);

impl Query {
    pub fn parse(q: Option<&str>) -> Self {
        let mut m = HashMap::new();
        if let Some(q) = q {
            for (k, v) in form_urlencoded::parse(q.as_bytes()) {
                m.entry(k.into_owned()).or_insert_with(|| v.into_owned());
            }
        }
        Query(m)
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    /// A boolean parameter the way Go's strconv.ParseBool reads it.
    pub fn flag(&self, k: &str) -> bool {
        matches!(
            self.get(k),
            Some("true" | "1" | "t" | "T" | "TRUE" | "True")
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test that panics has failed
mod tests {
    use super::*;

    fn target(path: &str) -> Target {
        match parse_path(path) {
            Some(Route::Resource(t)) => t,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn namespaced_paths_name_the_namespace_resource_name_and_subresource() {
        let t = target("/apis/apps/v1/namespaces/ns1/deployments/web/scale");
        assert_eq!(
            (
                t.group.as_str(),
                t.namespace.as_deref(),
                t.plural.as_str(),
                t.name.as_deref(),
                t.subresource.as_deref()
            ),
            (
                "apps",
                Some("ns1"),
                "deployments",
                Some("web"),
                Some("scale")
            )
        );
    }

    #[test]
    fn a_namespace_path_names_the_namespace_object() {
        let t = target("/api/v1/namespaces/kube-system");
        assert_eq!(t.plural, "namespaces");
        assert_eq!(t.name.as_deref(), Some("kube-system"));
        assert_eq!(t.namespace, None);
        let t = target("/api/v1/namespaces/x/status");
        assert_eq!(t.subresource.as_deref(), Some("status"));
    }

    #[test]
    fn the_legacy_watch_prefix_is_understood() {
        let t = target("/api/v1/watch/namespaces/a/pods");
        assert!(t.legacy_watch);
        assert_eq!(t.plural, "pods");
    }
}
