//! Duplicate fields in a JSON request body (`{"a":1,"a":2}`): JSON parsers keep the last
//! value silently; kube-apiserver's strict decoder reports each duplicate, and
//! `fieldValidation` turns the report into a 400 (Strict) or a `Warning` (Warn).

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Deepest nesting scanned; deeper bodies are not scanned further (the JSON parser has its
/// own recursion limit, 128, and refuses them anyway).
const DUPLICATE_SCAN_DEPTH_MAX: usize = 100;

struct Scan<'a> {
    path: String,
    depth: usize,
    out: &'a mut Vec<String>,
}

impl<'de> DeserializeSeed<'de> for Scan<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl<'de> Visitor<'de> for Scan<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = join(&self.path, &key);
            if !seen.insert(key) {
                self.out.push(path.clone());
            }
            if self.depth < DUPLICATE_SCAN_DEPTH_MAX {
                map.next_value_seed(Scan {
                    path,
                    depth: self.depth + 1,
                    out: &mut *self.out,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0usize;
        loop {
            let path = format!("{}[{i}]", self.path);
            let more = if self.depth < DUPLICATE_SCAN_DEPTH_MAX {
                seq.next_element_seed(Scan {
                    path,
                    depth: self.depth + 1,
                    out: &mut *self.out,
                })?
            } else {
                seq.next_element::<IgnoredAny>()?.map(|_| ())
            };
            if more.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// The paths of every duplicated field in a JSON body (`spec.replicas`,
/// `spec.containers[0].name`), in body order; empty for a body that is not JSON.
pub fn duplicate_fields(body: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(body);
    let _ = Scan {
        path: String::new(),
        depth: 0,
        out: &mut out,
    }
    .deserialize(&mut de);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_fields_are_found_at_any_depth_with_their_paths() {
        let cases: [(&str, &[&str]); 4] = [
            (r#"{"a":1,"b":2}"#, &[]),
            (r#"{"a":1,"a":2}"#, &["a"]),
            (
                r#"{"spec":{"replicas":1,"replicas":2,"t":{"c":[{"n":1,"n":2}]}}}"#,
                &["spec.replicas", "spec.t.c[0].n"],
            ),
            ("not json", &[]),
        ];
        for (body, want) in cases {
            assert_eq!(duplicate_fields(body.as_bytes()), want, "{body}");
        }
    }
}
