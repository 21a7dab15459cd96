//! RBAC: Roles, ClusterRoles (aggregated ones too), RoleBindings and ClusterRoleBindings,
//! kept in memory from the log (a list, then a watch of each of the four resources) and
//! indexed by subject, so a decision reads no store.
//!
//! The cache is as fresh as the watch hub: a binding written a moment ago may not be seen
//! yet. A denial therefore first waits (up to [`RBAC_CATCH_UP_WAIT_MS`]) for the cache to
//! reach the log head it saw, so a client that grants and then acts is never refused by a
//! stale cache; allows never wait.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use logbook_store::{ListAt, Position, WatchItem};
use serde_json::{Value, json};

use crate::Api;
use crate::object::decode_stored;

/// How long a denial waits for the RBAC cache to reach the log head before it is final.
pub const RBAC_CATCH_UP_WAIT_MS: u64 = 2_000;
/// Objects read per page when the cache (re)loads a resource.
pub const RBAC_LOAD_PAGE_ITEMS_MAX: usize = 500;
/// Pause before a failed RBAC watch is retried.
pub const RBAC_WATCH_RETRY_MS: u64 = 500;

/// The store names of the four RBAC resources.
pub const ROLES: &str = "rbac.authorization.k8s.io/roles";
pub const CLUSTER_ROLES: &str = "rbac.authorization.k8s.io/clusterroles";
pub const ROLE_BINDINGS: &str = "rbac.authorization.k8s.io/rolebindings";
pub const CLUSTER_ROLE_BINDINGS: &str = "rbac.authorization.k8s.io/clusterrolebindings";

/// One `PolicyRule`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

/// The strings of a JSON array (others and non-strings skipped).
pub(crate) fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

impl Rule {
    pub fn from_json(v: &Value) -> Rule {
        Rule {
            verbs: strings(v.get("verbs")),
            api_groups: strings(v.get("apiGroups")),
            resources: strings(v.get("resources")),
            resource_names: strings(v.get("resourceNames")),
            non_resource_urls: strings(v.get("nonResourceURLs")),
        }
    }

    pub fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("verbs".into(), json!(self.verbs));
        if !self.api_groups.is_empty() || self.non_resource_urls.is_empty() {
            m.insert("apiGroups".into(), json!(self.api_groups));
        }
        if !self.resources.is_empty() {
            m.insert("resources".into(), json!(self.resources));
        }
        if !self.resource_names.is_empty() {
            m.insert("resourceNames".into(), json!(self.resource_names));
        }
        if !self.non_resource_urls.is_empty() {
            m.insert("nonResourceURLs".into(), json!(self.non_resource_urls));
        }
        Value::Object(m)
    }

    fn verb_matches(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == "*" || v == verb)
    }

    /// Whether this rule allows a resource request (kube's `RuleAllows`).
    pub fn allows_resource(&self, r: &ResourceAttrs<'_>) -> bool {
        if !self.verb_matches(r.verb) {
            return false;
        }
        if !self.api_groups.iter().any(|g| g == "*" || g == r.group) {
            return false;
        }
        let combined = match r.subresource {
            Some(s) if !s.is_empty() => format!("{}/{s}", r.resource),
            _ => r.resource.to_string(),
        };
        let res_ok = self.resources.iter().any(|x| {
            x == "*"
                || *x == combined
                || (r.subresource.is_some_and(|s| !s.is_empty())
                    && x.strip_prefix("*/") == r.subresource)
        });
        if !res_ok {
            return false;
        }
        self.resource_names.is_empty()
            || (!r.name.is_empty() && self.resource_names.iter().any(|n| n == r.name))
    }

    /// Whether this rule allows a non-resource request.
    pub fn allows_path(&self, verb: &str, path: &str) -> bool {
        self.verb_matches(verb)
            && self.non_resource_urls.iter().any(|u| {
                u == "*" || u == path || u.strip_suffix('*').is_some_and(|p| path.starts_with(p))
            })
    }
}

/// What a resource request asks.
#[derive(Clone, Copy, Debug)]
pub struct ResourceAttrs<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: Option<&'a str>,
    pub namespace: &'a str,
    pub name: &'a str,
}

/// A subject of a binding, as the user name or group it matches.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Subject {
    User(String),
    Group(String),
}

#[derive(Clone, Debug, Default)]
struct ClusterRole {
    rules: Vec<Rule>,
    labels: serde_json::Map<String, Value>,
    /// `aggregationRule.clusterRoleSelectors`, if the role aggregates.
    selectors: Option<Vec<Value>>,
}

#[derive(Clone, Debug)]
struct Binding {
    /// `Role` or `ClusterRole`.
    role_kind: String,
    role_name: String,
    subjects: Vec<Subject>,
}

/// Every ClusterRole's effective rules, and those of the aggregated ones alone.
type EffectiveRoles = (HashMap<String, Arc<Vec<Rule>>>, HashMap<String, Vec<Rule>>);

/// Everything the four resources hold.
#[derive(Default)]
struct State {
    roles: HashMap<(String, String), Vec<Rule>>,
    cluster_roles: HashMap<String, ClusterRole>,
    role_bindings: HashMap<(String, String), Binding>,
    cluster_role_bindings: HashMap<String, Binding>,
    /// Per resource: the position the cache reflects it at.
    seen: HashMap<&'static str, Position>,
}

/// The rules one subject is granted: cluster-wide, and per namespace.
#[derive(Default, Debug)]
struct Grants {
    cluster: Vec<Arc<Vec<Rule>>>,
    namespaced: HashMap<String, Vec<Arc<Vec<Rule>>>>,
}

/// The index decisions read.
#[derive(Default, Debug)]
pub struct Index {
    by_subject: HashMap<Subject, Grants>,
    /// Effective rules of aggregated ClusterRoles (name -> rules), for the writer that
    /// keeps their stored `rules` in step.
    pub aggregated: HashMap<String, Vec<Rule>>,
}

/// The RBAC cache of one API server.
#[derive(Default)]
pub struct Rbac {
    state: std::sync::Mutex<State>,
    index: RwLock<Arc<Index>>,
    changed: tokio::sync::Notify,
    /// Asks the followers to apply what their subscriptions hold and report the position.
    sync: tokio::sync::Notify,
    loaded: std::sync::atomic::AtomicUsize,
}

fn subjects(obj: &Value) -> Vec<Subject> {
    let mut out = Vec::new();
    for s in obj
        .get("subjects")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = s.get("name").and_then(Value::as_str).unwrap_or("");
        match s.get("kind").and_then(Value::as_str).unwrap_or("") {
            "User" => out.push(Subject::User(name.to_string())),
            "Group" => out.push(Subject::Group(name.to_string())),
            "ServiceAccount" => {
                let ns = s.get("namespace").and_then(Value::as_str).unwrap_or("");
                out.push(Subject::User(format!("system:serviceaccount:{ns}:{name}")));
            }
            _ => {}
        }
    }
    out
}

fn rules_of(obj: &Value) -> Vec<Rule> {
    obj.get("rules")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(Rule::from_json).collect())
        .unwrap_or_default()
}

/// Whether `labels` satisfy a LabelSelector given as JSON.
pub fn selector_matches(sel: &Value, labels: &serde_json::Map<String, Value>) -> bool {
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            if label(k) != v.as_str() {
                return false;
            }
        }
    }
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e.get("key").and_then(Value::as_str).unwrap_or("");
        let values = strings(e.get("values"));
        let ok = match e.get("operator").and_then(Value::as_str).unwrap_or("") {
            "In" => label(key).is_some_and(|l| values.iter().any(|v| v == l)),
            "NotIn" => label(key).is_none_or(|l| !values.iter().any(|v| v == l)),
            "Exists" => label(key).is_some(),
            "DoesNotExist" => label(key).is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

impl State {
    fn apply(&mut self, resource: &'static str, ns: &str, name: &str, obj: Option<&Value>) {
        let k = (ns.to_string(), name.to_string());
        let binding = |o: &Value| Binding {
            role_kind: o
                .pointer("/roleRef/kind")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            role_name: o
                .pointer("/roleRef/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            subjects: subjects(o),
        };
        match (resource, obj) {
            (ROLES, Some(o)) => {
                self.roles.insert(k, rules_of(o));
            }
            (ROLES, None) => {
                self.roles.remove(&k);
            }
            (CLUSTER_ROLES, Some(o)) => {
                let selectors = o
                    .pointer("/aggregationRule/clusterRoleSelectors")
                    .and_then(Value::as_array)
                    .cloned();
                let labels = o
                    .pointer("/metadata/labels")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                self.cluster_roles.insert(
                    name.to_string(),
                    ClusterRole {
                        rules: rules_of(o),
                        labels,
                        selectors,
                    },
                );
            }
            (CLUSTER_ROLES, None) => {
                self.cluster_roles.remove(name);
            }
            (ROLE_BINDINGS, Some(o)) => {
                self.role_bindings.insert(k, binding(o));
            }
            (ROLE_BINDINGS, None) => {
                self.role_bindings.remove(&k);
            }
            (_, Some(o)) => {
                self.cluster_role_bindings
                    .insert(name.to_string(), binding(o));
            }
            (_, None) => {
                self.cluster_role_bindings.remove(name);
            }
        }
    }

    /// The rules of every ClusterRole, aggregated ones resolved: an aggregated role
    /// collects the rules of the roles its selectors match, themselves resolved (so `admin`
    /// holds `edit`'s, which holds `view`'s), cycles cut.
    fn effective_cluster_roles(&self) -> EffectiveRoles {
        let mut memo: HashMap<String, Vec<Rule>> = HashMap::new();
        let mut aggregated = HashMap::new();
        let mut names: Vec<&String> = self.cluster_roles.keys().collect();
        names.sort();
        for name in &names {
            let mut stack = Vec::new();
            let rules = self.resolve(name, &mut memo, &mut stack);
            if self.cluster_roles[*name].selectors.is_some() {
                aggregated.insert((*name).clone(), rules);
            }
        }
        let out = memo.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
        (out, aggregated)
    }

    fn resolve(
        &self,
        name: &str,
        memo: &mut HashMap<String, Vec<Rule>>,
        stack: &mut Vec<String>,
    ) -> Vec<Rule> {
        if let Some(r) = memo.get(name) {
            return r.clone();
        }
        let Some(role) = self.cluster_roles.get(name) else {
            return Vec::new();
        };
        let Some(sels) = &role.selectors else {
            memo.insert(name.to_string(), role.rules.clone());
            return role.rules.clone();
        };
        if stack.iter().any(|n| n == name) {
            return role.rules.clone();
        }
        stack.push(name.to_string());
        let mut members: Vec<&String> = self
            .cluster_roles
            .iter()
            .filter(|(n, r)| {
                n.as_str() != name && sels.iter().any(|s| selector_matches(s, &r.labels))
            })
            .map(|(n, _)| n)
            .collect();
        members.sort();
        let mut rules: Vec<Rule> = Vec::new();
        for m in members {
            for r in self.resolve(m, memo, stack) {
                if !rules.contains(&r) {
                    rules.push(r);
                }
            }
        }
        stack.pop();
        memo.insert(name.to_string(), rules.clone());
        rules
    }

    fn build(&self) -> Index {
        let (cluster_roles, aggregated) = self.effective_cluster_roles();
        let mut idx = Index {
            aggregated,
            ..Index::default()
        };
        for b in self.cluster_role_bindings.values() {
            if b.role_kind != "ClusterRole" {
                continue;
            }
            if let Some(rules) = cluster_roles.get(&b.role_name) {
                for s in &b.subjects {
                    idx.by_subject
                        .entry(s.clone())
                        .or_default()
                        .cluster
                        .push(rules.clone());
                }
            }
        }
        for ((ns, _), b) in &self.role_bindings {
            let rules = match b.role_kind.as_str() {
                "ClusterRole" => cluster_roles.get(&b.role_name).cloned(),
                "Role" => self
                    .roles
                    .get(&(ns.clone(), b.role_name.clone()))
                    .map(|r| Arc::new(r.clone())),
                _ => None,
            };
            if let Some(rules) = rules {
                for s in &b.subjects {
                    idx.by_subject
                        .entry(s.clone())
                        .or_default()
                        .namespaced
                        .entry(ns.clone())
                        .or_default()
                        .push(rules.clone());
                }
            }
        }
        idx
    }
}

impl Rbac {
    fn index(&self) -> Arc<Index> {
        match self.index.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn rebuild(&self, st: &State) {
        let idx = Arc::new(st.build());
        match self.index.write() {
            Ok(mut g) => *g = idx,
            Err(p) => *p.into_inner() = idx,
        }
        self.changed.notify_waiters();
    }

    /// Whether all four resources were loaded.
    pub fn ready(&self) -> bool {
        self.loaded.load(std::sync::atomic::Ordering::Acquire) >= 4
    }

    /// The lowest position the cache reflects all four resources at.
    fn seen(&self) -> Position {
        let st = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        [ROLES, CLUSTER_ROLES, ROLE_BINDINGS, CLUSTER_ROLE_BINDINGS]
            .iter()
            .map(|r| st.seen.get(r).copied().unwrap_or(Position(0)))
            .min()
            .unwrap_or(Position(0))
    }

    /// Waits until the cache reflects the log up to `position` (bounded).
    pub async fn catch_up(&self, api: &Api, position: Position) {
        let wait = async {
            // The hub reaching `position` means every event up to it was handed to the
            // cache's subscriptions; then the cache applies them.
            let _ = api.hub.wait_applied(position).await;
            loop {
                let notified = self.changed.notified();
                if self.seen() >= position {
                    return;
                }
                self.sync.notify_waiters();
                let _ = tokio::time::timeout(Duration::from_millis(20), notified).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_millis(RBAC_CATCH_UP_WAIT_MS), wait).await;
    }

    /// The rules granted to `user` in `groups`: cluster-wide ones, then those of
    /// `namespace` (when not empty).
    pub fn rules_for(&self, user: &str, groups: &[String], namespace: &str) -> Vec<Arc<Vec<Rule>>> {
        let idx = self.index();
        let mut out = Vec::new();
        let subjects = std::iter::once(Subject::User(user.to_string()))
            .chain(groups.iter().map(|g| Subject::Group(g.clone())));
        for s in subjects {
            if let Some(g) = idx.by_subject.get(&s) {
                out.extend(g.cluster.iter().cloned());
                if !namespace.is_empty()
                    && let Some(n) = g.namespaced.get(namespace)
                {
                    out.extend(n.iter().cloned());
                }
            }
        }
        out
    }

    /// Whether RBAC allows a resource request.
    pub fn allows(&self, user: &str, groups: &[String], r: &ResourceAttrs<'_>) -> bool {
        self.rules_for(user, groups, r.namespace)
            .iter()
            .any(|rules| rules.iter().any(|rule| rule.allows_resource(r)))
    }

    /// Whether RBAC allows a non-resource request.
    pub fn allows_path(&self, user: &str, groups: &[String], verb: &str, path: &str) -> bool {
        self.rules_for(user, groups, "")
            .iter()
            .any(|rules| rules.iter().any(|rule| rule.allows_path(verb, path)))
    }

    /// Aggregated ClusterRoles whose effective rules differ from the stored ones.
    pub fn stale_aggregations(&self) -> Vec<(String, Vec<Rule>)> {
        let idx = self.index();
        let st = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut out: Vec<(String, Vec<Rule>)> = idx
            .aggregated
            .iter()
            .filter(|(n, rules)| st.cluster_roles.get(*n).is_some_and(|r| &r.rules != *rules))
            .map(|(n, r)| (n.clone(), r.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn apply_event(
        &self,
        resource: &'static str,
        ns: &str,
        name: &str,
        obj: Option<&Value>,
        at: Position,
    ) {
        let mut st = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        st.apply(resource, ns, name, obj);
        st.seen.insert(resource, at);
        self.rebuild(&st);
    }

    fn mark_seen(&self, resource: &'static str, at: Position) {
        let mut st = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let e = st.seen.entry(resource).or_insert(at);
        if *e < at {
            *e = at;
        }
        drop(st);
        self.changed.notify_waiters();
    }
}

/// Loads the four resources and follows them for the life of the server.
pub async fn start(api: Arc<Api>) {
    for resource in [ROLES, CLUSTER_ROLES, ROLE_BINDINGS, CLUSTER_ROLE_BINDINGS] {
        let from = load(&api, resource).await;
        api.rbac
            .loaded
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        tokio::spawn(follow(api.clone(), resource, from));
    }
    // The first pass before serving: a new cluster's `admin`, `edit` and `view` have their
    // rules before any client reads them.
    aggregate_once(&api).await;
    tokio::spawn(aggregate(api));
}

async fn aggregate_once(api: &Arc<Api>) {
    for (name, rules) in api.rbac.stale_aggregations() {
        let patch = json!({"rules": rules.iter().map(Rule::to_json).collect::<Vec<_>>()});
        if let Err(e) = crate::auth::system_merge_patch(
            api,
            "rbac.authorization.k8s.io",
            "clusterroles",
            None,
            &name,
            &patch,
        )
        .await
        {
            tracing::debug!(clusterrole = %name, error = %e.message, "aggregating a ClusterRole failed; will retry");
        }
    }
}

async fn load(api: &Arc<Api>, resource: &'static str) -> Position {
    loop {
        match load_once(api, resource).await {
            Ok(p) => return p,
            Err(e) => {
                tracing::warn!(%resource, error = %e, "loading RBAC objects failed; retrying");
                tokio::time::sleep(Duration::from_millis(RBAC_WATCH_RETRY_MS)).await;
            }
        }
    }
}

async fn load_once(
    api: &Arc<Api>,
    resource: &'static str,
) -> Result<Position, logbook_store::Error> {
    let mut token: Option<String> = None;
    let mut objs = Vec::new();
    let position = loop {
        let page = api
            .log
            .list(
                resource,
                None,
                ListAt::Latest,
                RBAC_LOAD_PAGE_ITEMS_MAX,
                token.as_deref(),
            )
            .await?;
        for item in &page.items {
            if let Ok(o) = decode_stored(&item.object, item.position.0) {
                objs.push((
                    item.key.namespace.clone(),
                    item.key.name.clone(),
                    Value::Object(o),
                ));
            }
        }
        match page.continue_token {
            Some(t) => token = Some(t),
            None => break page.position,
        }
    };
    let mut st = match api.rbac.state.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    // A reload replaces what the resource held.
    match resource {
        ROLES => st.roles.clear(),
        CLUSTER_ROLES => st.cluster_roles.clear(),
        ROLE_BINDINGS => st.role_bindings.clear(),
        _ => st.cluster_role_bindings.clear(),
    }
    for (ns, name, o) in &objs {
        st.apply(resource, ns, name, Some(o));
    }
    st.seen.insert(resource, position);
    api.rbac.rebuild(&st);
    Ok(position)
}

async fn follow(api: Arc<Api>, resource: &'static str, mut from: Position) {
    let mut shutdown = api.shutdown.clone();
    loop {
        let mut sub = match api.hub.subscribe(resource, None, from).await {
            Ok(s) => s,
            Err(logbook_store::Error::Compacted { .. }) => {
                from = load(&api, resource).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(%resource, error = %e, "the RBAC cache cannot watch; retrying");
                tokio::time::sleep(Duration::from_millis(RBAC_WATCH_RETRY_MS)).await;
                continue;
            }
        };
        let apply = |item: WatchItem, from: &mut Position| match item {
            WatchItem::Event(e) => {
                *from = e.position;
                let obj = match e.kind {
                    logbook_store::EventType::Deleted => None,
                    _ => decode_stored(&e.object, e.position.0)
                        .ok()
                        .map(Value::Object),
                };
                api.rbac.apply_event(
                    resource,
                    &e.key.namespace,
                    &e.key.name,
                    obj.as_ref(),
                    e.position,
                );
            }
            WatchItem::Bookmark(p) => {
                *from = (*from).max(p);
                api.rbac.mark_seen(resource, p);
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                () = api.rbac.sync.notified() => {
                    // The hub hands events to subscribers before it publishes a position:
                    // with the buffer drained, everything up to `applied` is applied.
                    let applied = api.hub.applied();
                    while let Some(item) = sub.try_next() {
                        apply(item, &mut from);
                    }
                    api.rbac.mark_seen(resource, applied);
                }
                item = sub.next() => match item {
                    Ok(item) => apply(item, &mut from),
                    Err(e) => {
                        tracing::debug!(%resource, error = %e, "the RBAC watch ended; resubscribing");
                        break;
                    }
                }
            }
        }
    }
}

/// Keeps the stored `rules` of aggregated ClusterRoles equal to what their selectors
/// collect (kube-controller-manager's clusterrole-aggregation controller).
async fn aggregate(api: Arc<Api>) {
    let mut shutdown = api.shutdown.clone();
    loop {
        let notified = api.rbac.changed.notified();
        aggregate_once(&api).await;
        tokio::select! {
            _ = shutdown.changed() => return,
            () = notified => {}
            () = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
    }
}

/// The rules a subject holds in `namespace`, flattened and deduplicated (for
/// SelfSubjectRulesReview).
pub fn flatten(rules: &[Arc<Vec<Rule>>]) -> Vec<Rule> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for set in rules {
        for r in set.iter() {
            let key = format!("{r:?}");
            if seen.insert(key) {
                out.push(r.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs<'a>(
        verb: &'a str,
        group: &'a str,
        resource: &'a str,
        sub: Option<&'a str>,
        name: &'a str,
    ) -> ResourceAttrs<'a> {
        ResourceAttrs {
            verb,
            group,
            resource,
            subresource: sub,
            namespace: "ns",
            name,
        }
    }

    #[test]
    fn rules_match_verbs_groups_resources_subresources_and_names() {
        let r = Rule::from_json(
            &json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "pods/log"]}),
        );
        assert!(r.allows_resource(&attrs("get", "", "pods", None, "x")));
        assert!(r.allows_resource(&attrs("get", "", "pods", Some("log"), "x")));
        assert!(!r.allows_resource(&attrs("get", "", "pods", Some("exec"), "x")));
        assert!(!r.allows_resource(&attrs("delete", "", "pods", None, "x")));
        assert!(!r.allows_resource(&attrs("get", "apps", "pods", None, "x")));
        let star =
            Rule::from_json(&json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}));
        assert!(star.allows_resource(&attrs("delete", "apps", "deployments", Some("scale"), "")));
        let sub = Rule::from_json(
            &json!({"verbs": ["update"], "apiGroups": ["apps"], "resources": ["*/scale"]}),
        );
        assert!(sub.allows_resource(&attrs(
            "update",
            "apps",
            "deployments",
            Some("scale"),
            "web"
        )));
        assert!(!sub.allows_resource(&attrs("update", "apps", "deployments", None, "web")));
        let named = Rule::from_json(
            &json!({"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"]}),
        );
        assert!(named.allows_resource(&attrs("get", "", "configmaps", None, "a")));
        assert!(!named.allows_resource(&attrs("get", "", "configmaps", None, "b")));
        assert!(!named.allows_resource(&attrs("get", "", "configmaps", None, "")));
    }

    #[test]
    fn non_resource_rules_match_exact_paths_and_prefixes() {
        let r =
            Rule::from_json(&json!({"verbs": ["get"], "nonResourceURLs": ["/healthz", "/apis/*"]}));
        assert!(r.allows_path("get", "/healthz"));
        assert!(r.allows_path("get", "/apis/apps/v1"));
        assert!(!r.allows_path("get", "/api"));
        assert!(!r.allows_path("post", "/healthz"));
    }

    #[test]
    fn bindings_grant_their_roles_to_users_groups_and_service_accounts() {
        let mut st = State::default();
        st.apply(
            ROLES,
            "ns",
            "reader",
            Some(&json!({"rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]})),
        );
        st.apply(ROLE_BINDINGS, "ns", "b", Some(&json!({"roleRef": {"kind": "Role", "name": "reader"},
            "subjects": [{"kind": "User", "name": "alice"}, {"kind": "ServiceAccount", "namespace": "ns", "name": "bot"}]})));
        st.apply(CLUSTER_ROLES, "", "agg", Some(&json!({"aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"x": "y"}}]}})));
        st.apply(
            CLUSTER_ROLES,
            "",
            "part",
            Some(&json!({"metadata": {"labels": {"x": "y"}},
            "rules": [{"verbs": ["list"], "apiGroups": ["apps"], "resources": ["deployments"]}]})),
        );
        st.apply(
            CLUSTER_ROLE_BINDINGS,
            "",
            "cb",
            Some(&json!({"roleRef": {"kind": "ClusterRole", "name": "agg"},
            "subjects": [{"kind": "Group", "name": "devs"}]})),
        );
        let rbac = Rbac::default();
        rbac.rebuild(&st);
        let get = attrs("get", "", "pods", None, "p");
        assert!(rbac.allows("alice", &[], &get));
        assert!(rbac.allows("system:serviceaccount:ns:bot", &[], &get));
        assert!(!rbac.allows("bob", &[], &get));
        assert!(!rbac.allows(
            "alice",
            &[],
            &ResourceAttrs {
                namespace: "other",
                ..get
            }
        ));
        let list = ResourceAttrs {
            verb: "list",
            group: "apps",
            resource: "deployments",
            subresource: None,
            namespace: "",
            name: "",
        };
        assert!(rbac.allows("carol", &["devs".into()], &list));
        assert!(!rbac.allows("carol", &[], &list));
    }
}
