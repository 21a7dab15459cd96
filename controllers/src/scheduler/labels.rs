//! Label selectors and node selector terms, compiled once per pod and matched many times.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Labels as the API gives them.
pub type Labels = BTreeMap<String, String>;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Requirement {
    fn matches(&self, labels: &Labels) -> bool {
        match self {
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        }
    }
}

/// A compiled `metav1.LabelSelector`. A missing selector matches nothing, an empty one
/// everything; an operator the selector grammar does not know matches nothing (the API
/// validates selectors, so this only guards against what validation missed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Nothing,
    All(Vec<Requirement>),
}

impl Selector {
    pub fn everything() -> Self {
        Selector::All(Vec::new())
    }

    pub fn from_label_selector(sel: Option<&LabelSelector>) -> Self {
        let Some(sel) = sel else {
            return Selector::Nothing;
        };
        let mut reqs = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            reqs.push(Requirement::In(k.clone(), vec![v.clone()]));
        }
        for e in sel.match_expressions.iter().flatten() {
            let values = e.values.clone().unwrap_or_default();
            reqs.push(match e.operator.as_str() {
                "In" => Requirement::In(e.key.clone(), values),
                "NotIn" => Requirement::NotIn(e.key.clone(), values),
                "Exists" => Requirement::Exists(e.key.clone()),
                "DoesNotExist" => Requirement::DoesNotExist(e.key.clone()),
                _ => return Selector::Nothing,
            });
        }
        Selector::All(reqs)
    }

    /// Adds `key in (value)` (or `notin`), as `matchLabelKeys` / `mismatchLabelKeys` do
    /// with the incoming pod's label values.
    pub fn require(&mut self, req: Requirement) {
        if let Selector::All(reqs) = self {
            reqs.push(req);
        }
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        match self {
            Selector::Nothing => false,
            Selector::All(reqs) => reqs.iter().all(|r| r.matches(labels)),
        }
    }

    pub fn is_nothing(&self) -> bool {
        matches!(self, Selector::Nothing)
    }
}

/// Whether a node selector requirement holds for a value (`None` = the label is absent).
fn node_requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), [bound]) = (value, values) else {
                return false;
            };
            let (Ok(v), Ok(bound)) = (v.parse::<i64>(), bound.parse::<i64>()) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// One node selector term: its expressions (on labels) and fields (`metadata.name` only)
/// are ANDed; a term with neither matches no node, as in kube.
pub fn node_selector_term_matches(
    term: &NodeSelectorTerm,
    node_name: &str,
    labels: &Labels,
) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs
        .iter()
        .all(|r| node_requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            let value = (r.key == "metadata.name").then_some(node_name);
            r.key == "metadata.name" && node_requirement_matches(r, value)
        })
}

/// Terms are ORed.
pub fn node_selector_terms_match(
    terms: &[NodeSelectorTerm],
    node_name: &str,
    labels: &Labels,
) -> bool {
    terms
        .iter()
        .any(|t| node_selector_term_matches(t, node_name, labels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn a_missing_label_selector_matches_nothing_and_an_empty_one_everything() {
        let l = labels(&[("app", "web")]);
        assert!(!Selector::from_label_selector(None).matches(&l));
        assert!(Selector::from_label_selector(Some(&LabelSelector::default())).matches(&l));
    }

    #[test]
    fn label_selector_match_labels_and_expressions_are_anded() {
        let sel = LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "NotIn".into(),
                values: Some(vec!["db".into()]),
            }]),
        };
        let s = Selector::from_label_selector(Some(&sel));
        assert!(s.matches(&labels(&[("app", "web")])));
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "fe")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "db")])));
        assert!(!s.matches(&labels(&[("app", "api")])));
    }

    #[test]
    fn node_selector_operators_behave_as_in_kube() {
        let l = labels(&[("zone", "a"), ("gpus", "4")]);
        let term = |r: NodeSelectorRequirement| NodeSelectorTerm {
            match_expressions: Some(vec![r]),
            match_fields: None,
        };
        let cases = [
            (req("zone", "In", &["a", "b"]), true),
            (req("zone", "In", &["b"]), false),
            (req("zone", "NotIn", &["b"]), true),
            (req("missing", "NotIn", &["b"]), true),
            (req("zone", "Exists", &[]), true),
            (req("zone", "DoesNotExist", &[]), false),
            (req("missing", "DoesNotExist", &[]), true),
            (req("gpus", "Gt", &["3"]), true),
            (req("gpus", "Gt", &["4"]), false),
            (req("gpus", "Lt", &["5"]), true),
            (req("zone", "Lt", &["5"]), false),
            (req("zone", "Bogus", &["a"]), false),
        ];
        for (r, want) in cases {
            let desc = format!("{} {} {:?}", r.key, r.operator, r.values);
            assert_eq!(
                node_selector_term_matches(&term(r), "n1", &l),
                want,
                "{desc}"
            );
        }
    }

    #[test]
    fn node_selector_terms_are_ored_and_match_fields_select_the_node_name() {
        let by_name = NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![req("metadata.name", "In", &["n2"])]),
        };
        let by_zone = NodeSelectorTerm {
            match_expressions: Some(vec![req("zone", "In", &["b"])]),
            match_fields: None,
        };
        let terms = [by_name, by_zone];
        assert!(node_selector_terms_match(
            &terms,
            "n2",
            &labels(&[("zone", "a")])
        ));
        assert!(node_selector_terms_match(
            &terms,
            "n1",
            &labels(&[("zone", "b")])
        ));
        assert!(!node_selector_terms_match(
            &terms,
            "n1",
            &labels(&[("zone", "a")])
        ));
        assert!(!node_selector_terms_match(
            &[NodeSelectorTerm::default()],
            "n1",
            &Labels::new()
        ));
    }
}
