//! Label selectors as controllers evaluate them against cached objects (`matchLabels` and
//! `matchExpressions` with In, NotIn, Exists, DoesNotExist).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

#[derive(Debug, Clone, Default)]
pub struct Selector {
    /// (key, operator, values), all of which must hold.
    reqs: Vec<(String, String, Vec<String>)>,
    /// A selector that matches nothing (kube: a nil selector on a workload).
    nothing: bool,
}

impl Selector {
    /// From a `LabelSelector`. An empty selector matches everything.
    pub fn from_label_selector(s: &LabelSelector) -> Selector {
        let mut reqs = Vec::new();
        for (k, v) in s.match_labels.iter().flatten() {
            reqs.push((k.clone(), "In".to_string(), vec![v.clone()]));
        }
        for e in s.match_expressions.iter().flatten() {
            reqs.push((
                e.key.clone(),
                e.operator.clone(),
                e.values.clone().unwrap_or_default(),
            ));
        }
        Selector {
            reqs,
            nothing: false,
        }
    }

    /// Matches objects carrying all of these labels (a Service's selector). An empty map
    /// matches nothing, as for Services.
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Selector {
        Selector {
            reqs: labels
                .iter()
                .map(|(k, v)| (k.clone(), "In".to_string(), vec![v.clone()]))
                .collect(),
            nothing: labels.is_empty(),
        }
    }

    /// A ReplicaSet's selector (`None` when it has none).
    pub fn of_rs(rs: &ReplicaSet) -> Option<Selector> {
        rs.spec
            .as_ref()
            .map(|s| Selector::from_label_selector(&s.selector))
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        if self.nothing {
            return false;
        }
        self.reqs.iter().all(|(k, op, vals)| {
            let v = labels.get(k);
            match op.as_str() {
                "In" => v.is_some_and(|v| vals.contains(v)),
                "NotIn" => v.is_none_or(|v| !vals.contains(v)),
                "Exists" => v.is_some(),
                "DoesNotExist" => v.is_none(),
                _ => false,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_selector_needs_every_label_and_expression_to_hold() {
        let s = Selector::from_label_selector(&LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "NotIn".into(),
                values: Some(vec!["db".into()]),
            }]),
        });
        assert!(s.matches(&labels(&[("app", "web")])));
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "front")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "db")])));
        assert!(!s.matches(&labels(&[("app", "api")])));
    }

    #[test]
    fn an_empty_service_selector_matches_nothing() {
        assert!(!Selector::from_labels(&BTreeMap::new()).matches(&labels(&[("a", "b")])));
    }
}
