//! Field sets: which fields of an object a manager owns, and their `FieldsV1` form.
//!
//! A set is a trie of path elements, as in sigs.k8s.io/structured-merge-diff's `fieldpath`:
//! each node records whether the path ending there is itself a member, and its children.
//! `FieldsV1` (the JSON stored in `metadata.managedFields[].fieldsV1`) writes each element
//! as a key — `f:<field>`, `k:<key fields as a JSON object>` (an item of a map-list),
//! `v:<JSON value>` (an item of a set-list), `i:<index>` — whose value is the child node;
//! `{}` means "a member, no children", and `".": {}` marks a node that is both a member and
//! a parent.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value};

/// The deepest path (in path elements) a field set or an object walk accepts. Kubernetes
/// objects nest about 20 deep (a pod template inside a CronJob); deeper input is refused
/// rather than recursed into.
pub const PATH_ELEMENTS_MAX: usize = 128;

/// A malformed `FieldsV1` document, or one deeper than [`PATH_ELEMENTS_MAX`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FieldsError(pub String);

/// One step of a path. The order (fields, then keys, then values, then indices) is
/// structured-merge-diff's, so sets iterate and serialize as kube-apiserver's do.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElement {
    /// A field of a struct or a key of a map: `f:name`.
    Field(String),
    /// An item of a map-list, by its key fields: the canonical (sorted, compact) JSON object
    /// of the key fields, `k:{"name":"nginx"}`.
    Key(String),
    /// An item of a set-list, by value: its canonical JSON, `v:"a"`.
    Value(String),
    /// An item of a list by position: `i:0`.
    Index(usize),
}

impl PathElement {
    /// A field element.
    pub fn field(name: &str) -> PathElement {
        PathElement::Field(name.to_string())
    }

    /// A map-list item element from its key fields (in any order).
    pub fn key<'a>(fields: impl IntoIterator<Item = (&'a str, &'a Value)>) -> PathElement {
        let map: Map<String, Value> = fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        PathElement::Key(canonical_json(&Value::Object(map)))
    }

    /// A set-list item element.
    pub fn value(v: &Value) -> PathElement {
        PathElement::Value(canonical_json(v))
    }

    /// The `FieldsV1` key of this element.
    pub fn encode(&self) -> String {
        match self {
            PathElement::Field(name) => format!("f:{name}"),
            PathElement::Key(json) => format!("k:{json}"),
            PathElement::Value(json) => format!("v:{json}"),
            PathElement::Index(i) => format!("i:{i}"),
        }
    }

    /// Parses a `FieldsV1` key; `Ok(None)` for a prefix this version does not know (those
    /// are dropped, as structured-merge-diff does, so a newer format degrades gracefully).
    ///
    /// # Errors
    /// A known prefix with a malformed body (`k:` that is not a JSON object, bad JSON, a
    /// non-numeric index).
    pub fn decode(s: &str) -> Result<Option<PathElement>, FieldsError> {
        let Some((prefix, body)) = s.split_once(':') else {
            return Ok(None);
        };
        let json = |body: &str| {
            serde_json::from_str::<Value>(body)
                .map_err(|e| FieldsError(format!("parsing key {s:?} as path element: {e}")))
        };
        Ok(Some(match prefix {
            "f" => PathElement::Field(body.to_string()),
            "k" => match json(body)? {
                v @ Value::Object(_) => PathElement::Key(canonical_json(&v)),
                _ => {
                    return Err(FieldsError(format!(
                        "parsing key {s:?} as path element: expected a JSON object"
                    )));
                }
            },
            "v" => PathElement::Value(canonical_json(&json(body)?)),
            "i" => PathElement::Index(body.parse().map_err(|_| {
                FieldsError(format!("parsing key {s:?} as path element: bad index"))
            })?),
            _ => return Ok(None),
        }))
    }
}

/// kube's notation for conflicts and messages: `.spec`, `[name="nginx"]`, `[="a"]`, `[0]`.
impl fmt::Display for PathElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathElement::Field(name) => write!(f, ".{name}"),
            PathElement::Key(json) => {
                let fields = match serde_json::from_str::<Value>(json) {
                    Ok(Value::Object(m)) => m,
                    _ => Map::new(),
                };
                let parts: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| format!("{k}={}", go_value_string(v)))
                    .collect();
                write!(f, "[{}]", parts.join(","))
            }
            PathElement::Value(json) => {
                let v = serde_json::from_str::<Value>(json).unwrap_or(Value::Null);
                write!(f, "[={}]", go_value_string(&v))
            }
            PathElement::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// structured-merge-diff's `value.ToString`: strings quoted, everything else as JSON.
fn go_value_string(v: &Value) -> String {
    match v {
        Value::String(s) => crate::validate::go_quote(s),
        other => canonical_json(other),
    }
}

/// Compact JSON with object keys sorted, whatever serde_json's map order is: the form of
/// `k:` and `v:` elements, so equal keys are equal strings.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// A path from the object root.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Path(pub Vec<PathElement>);

impl Path {
    /// A path of field names only (`Path::fields(&["spec", "replicas"])`).
    pub fn fields(names: &[&str]) -> Path {
        Path(names.iter().map(|n| PathElement::field(n)).collect())
    }
}

/// `.spec.containers[name="nginx"].image`, as kube-apiserver prints conflicts.
impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for pe in &self.0 {
            write!(f, "{pe}")?;
        }
        Ok(())
    }
}

/// A set of paths, stored as a trie.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    members: BTreeSet<PathElement>,
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    /// The empty set.
    pub fn new() -> FieldSet {
        FieldSet::default()
    }

    /// A set of the given paths.
    pub fn from_paths<'a>(paths: impl IntoIterator<Item = &'a Path>) -> FieldSet {
        let mut s = FieldSet::new();
        for p in paths {
            s.insert(&p.0);
        }
        s
    }

    /// Whether the set has no member anywhere.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.values().all(FieldSet::is_empty)
    }

    /// Adds a path (the empty path is not a member of anything and is ignored).
    pub fn insert(&mut self, path: &[PathElement]) {
        let Some((last, parents)) = path.split_last() else {
            return;
        };
        let mut node = self;
        for pe in parents {
            node = node.children.entry(pe.clone()).or_default();
        }
        node.members.insert(last.clone());
    }

    /// Whether `path` is a member.
    pub fn has(&self, path: &[PathElement]) -> bool {
        let Some((last, parents)) = path.split_last() else {
            return false;
        };
        let mut node = self;
        for pe in parents {
            match node.children.get(pe) {
                Some(n) => node = n,
                None => return false,
            }
        }
        node.members.contains(last)
    }

    /// Whether `pe` (one step from this node) is a member.
    pub fn has_member(&self, pe: &PathElement) -> bool {
        self.members.contains(pe)
    }

    /// The subset under `pe` (paths relative to it), if any.
    pub fn child(&self, pe: &PathElement) -> Option<&FieldSet> {
        self.children.get(pe)
    }

    /// Every member path, in set order.
    pub fn paths(&self) -> Vec<Path> {
        let mut out = Vec::new();
        let mut prefix = Vec::new();
        self.collect_paths(&mut prefix, &mut out);
        out
    }

    fn collect_paths(&self, prefix: &mut Vec<PathElement>, out: &mut Vec<Path>) {
        // Members and children interleaved in element order, a member before its children.
        let mut keys: BTreeSet<&PathElement> = self.members.iter().collect();
        keys.extend(self.children.keys());
        for pe in keys {
            prefix.push(pe.clone());
            if self.members.contains(pe) {
                out.push(Path(prefix.clone()));
            }
            if let Some(c) = self.children.get(pe) {
                c.collect_paths(prefix, out);
            }
            prefix.pop();
        }
    }

    /// Members of either set.
    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.members.extend(other.members.iter().cloned());
        for (pe, c) in &other.children {
            let merged = match out.children.get(pe) {
                Some(mine) => mine.union(c),
                None => c.clone(),
            };
            out.children.insert(pe.clone(), merged);
        }
        out
    }

    /// Members of `self` that are not members of `other` (children of a removed member
    /// stay: structured-merge-diff's `Difference`).
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            members: self.members.difference(&other.members).cloned().collect(),
            children: BTreeMap::new(),
        };
        for (pe, c) in &self.children {
            let d = match other.children.get(pe) {
                Some(o) => c.difference(o),
                None => c.clone(),
            };
            if !d.is_empty() {
                out.children.insert(pe.clone(), d);
            }
        }
        out
    }

    /// Members of both sets.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            members: self.members.intersection(&other.members).cloned().collect(),
            children: BTreeMap::new(),
        };
        for (pe, c) in &self.children {
            if let Some(o) = other.children.get(pe) {
                let i = c.intersection(o);
                if !i.is_empty() {
                    out.children.insert(pe.clone(), i);
                }
            }
        }
        out
    }

    /// Members of `self` that are neither members of `other` nor below one of its members
    /// (`other`'s members remove whole subtrees).
    pub fn recursive_difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            members: self.members.difference(&other.members).cloned().collect(),
            children: BTreeMap::new(),
        };
        for (pe, c) in &self.children {
            if other.members.contains(pe) {
                continue;
            }
            let d = match other.children.get(pe) {
                Some(o) => c.recursive_difference(o),
                None => c.clone(),
            };
            if !d.is_empty() {
                out.children.insert(pe.clone(), d);
            }
        }
        out
    }

    /// This set with every child element `is_field` accepts made a member too; `names`
    /// is the path of field names to this node (list items add none).
    pub(crate) fn with_fields_as_members(
        &self,
        names: &mut Vec<String>,
        is_field: &dyn Fn(&[String]) -> bool,
    ) -> FieldSet {
        let mut out = FieldSet {
            members: self.members.clone(),
            children: BTreeMap::new(),
        };
        for (pe, c) in &self.children {
            let named = if let PathElement::Field(n) = pe {
                names.push(n.clone());
                true
            } else {
                false
            };
            if named && is_field(names) {
                out.members.insert(pe.clone());
            }
            let n = c.with_fields_as_members(names, is_field);
            if named {
                names.pop();
            }
            if !n.is_empty() {
                out.children.insert(pe.clone(), n);
            }
        }
        out
    }

    /// The `FieldsV1` JSON of this set.
    pub fn to_fields_v1(&self) -> Value {
        Value::Object(self.to_fields_v1_map(false))
    }

    fn to_fields_v1_map(&self, include_self: bool) -> Map<String, Value> {
        let mut out = Map::new();
        if include_self {
            out.insert(".".into(), Value::Object(Map::new()));
        }
        for pe in &self.members {
            if self.children.get(pe).is_none_or(FieldSet::is_empty) {
                out.insert(pe.encode(), Value::Object(Map::new()));
            }
        }
        for (pe, c) in &self.children {
            if c.is_empty() {
                continue;
            }
            let member = self.members.contains(pe);
            out.insert(pe.encode(), Value::Object(c.to_fields_v1_map(member)));
        }
        out
    }

    /// Reads a `FieldsV1` document. Keys with unknown prefixes are dropped.
    ///
    /// # Errors
    /// Not a JSON object, a malformed key, or nesting deeper than [`PATH_ELEMENTS_MAX`].
    pub fn from_fields_v1(v: &Value) -> Result<FieldSet, FieldsError> {
        let Value::Object(m) = v else {
            return Err(FieldsError("FieldsV1 must be a JSON object".into()));
        };
        Ok(read_v1(m, 0)?.0)
    }
}

/// Returns the children of a `FieldsV1` node and whether the node itself is a member.
fn read_v1(m: &Map<String, Value>, depth: usize) -> Result<(FieldSet, bool), FieldsError> {
    if depth > PATH_ELEMENTS_MAX {
        return Err(FieldsError(format!(
            "FieldsV1 nests deeper than {PATH_ELEMENTS_MAX} path elements"
        )));
    }
    let mut set = FieldSet::new();
    let mut is_member = false;
    let mut has_children = false;
    for (k, v) in m {
        if k == "." {
            is_member = true;
            continue;
        }
        let Some(pe) = PathElement::decode(k)? else {
            continue;
        };
        let Value::Object(child) = v else {
            return Err(FieldsError(format!(
                "FieldsV1 value of {k:?} must be an object"
            )));
        };
        has_children = true;
        let (grandchildren, child_is_member) = read_v1(child, depth + 1)?;
        if child_is_member {
            set.members.insert(pe.clone());
        }
        if !grandchildren.is_empty() {
            set.children.insert(pe, grandchildren);
        }
    }
    if !has_children {
        is_member = true;
    }
    Ok((set, is_member))
}
