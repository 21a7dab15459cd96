//! The stored form of an object and how it is rendered for a client.
//!
//! The log stores each object as compact JSON with `metadata` first and no
//! `metadata.resourceVersion`: the resourceVersion is the event's log position, known only
//! after the commit. Rendering splices `"resourceVersion":"N"` right after the leading
//! `{"metadata":{` without parsing the object, so a list of 100,000 objects costs a copy
//! per object, not a JSON round trip.

use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};

const STORED_PREFIX: &[u8] = b"{\"metadata\":{";

/// Encodes an object for the log: `metadata` first, `resourceVersion` dropped.
pub fn encode_stored(obj: &Map<String, Value>) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"{\"metadata\":{");
    let mut first = true;
    if let Some(Value::Object(meta)) = obj.get("metadata") {
        for (k, v) in meta {
            if k == "resourceVersion" || k == "selfLink" {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            write_entry(&mut out, k, v);
        }
    }
    out.push(b'}');
    for (k, v) in obj {
        if k == "metadata" {
            continue;
        }
        out.push(b',');
        write_entry(&mut out, k, v);
    }
    out.push(b'}');
    out
}

fn write_entry(out: &mut Vec<u8>, k: &str, v: &Value) {
    // Serializing a String or a Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, k);
    out.push(b':');
    let _ = serde_json::to_writer(&mut *out, v);
}

/// Appends the client form of a stored object, with `resourceVersion` = `rv`.
pub fn render_into(out: &mut Vec<u8>, stored: &[u8], rv: u64) {
    if let Some(rest) = stored.strip_prefix(STORED_PREFIX) {
        out.extend_from_slice(STORED_PREFIX);
        out.extend_from_slice(b"\"resourceVersion\":\"");
        out.extend_from_slice(rv.to_string().as_bytes());
        out.push(b'"');
        if rest.first() != Some(&b'}') {
            out.push(b',');
        }
        out.extend_from_slice(rest);
    } else {
        // Not written by encode_stored (never expected); fall back to a parse.
        match serde_json::from_slice::<Value>(stored) {
            Ok(Value::Object(mut m)) => {
                set_resource_version(&mut m, rv);
                let _ = serde_json::to_writer(&mut *out, &m);
            }
            _ => out.extend_from_slice(stored),
        }
    }
}

/// The body of a stored object's `metadata` (the bytes between its braces), found by
/// scanning rather than parsing; `None` when `stored` is not in the stored form.
pub fn metadata_inner(stored: &[u8]) -> Option<&[u8]> {
    let rest = stored.strip_prefix(STORED_PREFIX)?;
    let mut depth = 1usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, &c) in rest.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_string = false;
            }
            continue;
        }
        match c {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&rest[..i]);
                }
            }
            _ => {}
        }
    }
    None
}

/// Renders a stored object as `api_version` (a custom resource read in a version other
/// than its storage version: conversion strategy None changes only `apiVersion`).
pub fn render_into_as(out: &mut Vec<u8>, stored: &[u8], rv: u64, api_version: Option<&str>) {
    let Some(v) = api_version else {
        return render_into(out, stored, rv);
    };
    match decode_stored(stored, rv) {
        Ok(mut obj) => {
            obj.insert("apiVersion".into(), Value::String(v.to_string()));
            // Serializing a Map into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, &obj);
        }
        Err(_) => render_into(out, stored, rv),
    }
}

/// [`render`] in the version `info` serves.
pub fn render_for(info: &logbook_schema::ResourceInfo, stored: &[u8], rv: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(stored.len() + 32);
    render_into_as(&mut out, stored, rv, info.served_api_version().as_deref());
    out
}

pub fn render(stored: &[u8], rv: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(stored.len() + 32);
    render_into(&mut out, stored, rv);
    out
}

/// Decodes a stored object for a read-modify-write, with `resourceVersion` set.
pub fn decode_stored(stored: &[u8], rv: u64) -> ApiResult<Map<String, Value>> {
    match serde_json::from_slice::<Value>(stored) {
        Ok(Value::Object(mut m)) => {
            set_resource_version(&mut m, rv);
            Ok(m)
        }
        _ => Err(ApiError::internal("a stored object is not a JSON object")),
    }
}

pub fn set_resource_version(obj: &mut Map<String, Value>, rv: u64) {
    let meta = obj
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(m) = meta {
        m.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

/// `metadata` of an object (created empty when missing).
pub fn meta_mut(obj: &mut Map<String, Value>) -> &mut Map<String, Value> {
    let meta = obj
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    match meta {
        Value::Object(m) => m,
        _ => unreachable!("metadata was just made an object"),
    }
}

pub fn meta_str<'a>(obj: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test that panics has failed
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rendering_a_stored_object_splices_the_resource_version_into_metadata() {
        let obj = json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "a", "resourceVersion": "7"}, "spec": {"x": 1}});
        let stored = encode_stored(obj.as_object().unwrap());
        assert!(!String::from_utf8_lossy(&stored).contains("resourceVersion"));
        let out: Value = serde_json::from_slice(&render(&stored, 42)).unwrap();
        assert_eq!(out["metadata"]["resourceVersion"], "42");
        assert_eq!(out["metadata"]["name"], "a");
        assert_eq!(out["spec"]["x"], 1);
    }

    #[test]
    fn the_metadata_of_a_stored_object_is_found_without_a_parse() {
        let obj = json!({"kind": "Pod", "metadata": {"name": "a}\\\"{", "labels": {"x": "[}"}}, "spec": {"y": "}"}});
        let stored = encode_stored(obj.as_object().unwrap());
        let inner = metadata_inner(&stored).unwrap();
        let meta: Value = serde_json::from_slice(&[b"{", inner, b"}"].concat()).unwrap();
        assert_eq!(meta, obj["metadata"]);
        let empty = encode_stored(json!({"kind": "Pod"}).as_object().unwrap());
        assert_eq!(metadata_inner(&empty), Some(&b""[..]));
        assert_eq!(metadata_inner(b"{\"kind\":1}"), None);
    }

    #[test]
    fn rendering_an_object_with_empty_metadata_stays_valid_json() {
        let obj = json!({"kind": "Pod", "metadata": {}});
        let stored = encode_stored(obj.as_object().unwrap());
        let out: Value = serde_json::from_slice(&render(&stored, 1)).unwrap();
        assert_eq!(out["metadata"]["resourceVersion"], "1");
    }
}
