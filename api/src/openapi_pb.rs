//! The protobuf form of an OpenAPI v2 document, as kubectl requests it
//! (`Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf`): gnostic's
//! `openapi.v2.Document` message, encoded by hand from the JSON document (no generated
//! code; the field numbers are gnostic's `openapiv2/OpenAPIv2.proto`). Vendor extensions and
//! defaults travel as `Any.yaml`, which holds JSON text (JSON is YAML).
//!
//! Only what a Kubernetes document uses is encoded: info, paths with their operations,
//! parameters and responses, and definitions with every schema keyword kube-openapi reads.

use serde_json::{Map, Value};

/// A protobuf message under construction.
#[derive(Default)]
struct Pb(Vec<u8>);

const WIRE_VARINT: u8 = 0;
const WIRE_FIXED64: u8 = 1;
const WIRE_LEN: u8 = 2;

impl Pb {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(&mut self, field: u32, wire: u8) {
        self.varint(u64::from(field) << 3 | u64::from(wire));
    }

    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, WIRE_LEN);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    fn string(&mut self, field: u32, s: &str) {
        if !s.is_empty() {
            self.bytes(field, s.as_bytes());
        }
    }

    fn boolean(&mut self, field: u32, b: bool) {
        if b {
            self.key(field, WIRE_VARINT);
            self.varint(1);
        }
    }

    fn int64(&mut self, field: u32, v: i64) {
        if v != 0 {
            self.key(field, WIRE_VARINT);
            self.varint(v as u64);
        }
    }

    fn double(&mut self, field: u32, v: f64) {
        if v != 0.0 {
            self.key(field, WIRE_FIXED64);
            self.0.extend_from_slice(&v.to_le_bytes());
        }
    }

    fn message(&mut self, field: u32, build: impl FnOnce(&mut Pb)) {
        let mut inner = Pb::default();
        build(&mut inner);
        self.bytes(field, &inner.0);
    }
}

/// `Any { yaml = 2 }` holding `v` as JSON text.
fn any(pb: &mut Pb, field: u32, v: &Value) {
    let text = serde_json::to_string(v).unwrap_or_default();
    pb.message(field, |a| a.string(2, &text));
}

/// `repeated NamedAny vendor_extension` for every `x-` key of `m`.
fn vendor_extensions(pb: &mut Pb, field: u32, m: &Map<String, Value>) {
    for (k, v) in m.iter().filter(|(k, _)| k.starts_with("x-")) {
        pb.message(field, |n| {
            n.string(1, k);
            any(n, 2, v);
        });
    }
}

fn str_of<'a>(m: &'a Map<String, Value>, k: &str) -> &'a str {
    m.get(k).and_then(Value::as_str).unwrap_or("")
}

fn strings<'a>(m: &'a Map<String, Value>, k: &str) -> Vec<&'a str> {
    match m.get(k) {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// gnostic `Schema`.
fn schema(pb: &mut Pb, v: &Value) {
    let Some(m) = v.as_object() else {
        return;
    };
    pb.string(1, str_of(m, "$ref"));
    pb.string(2, str_of(m, "format"));
    pb.string(3, str_of(m, "title"));
    pb.string(4, str_of(m, "description"));
    if let Some(d) = m.get("default") {
        any(pb, 5, d);
    }
    let num = |k: &str| m.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let int = |k: &str| m.get(k).and_then(Value::as_i64).unwrap_or(0);
    let flag = |k: &str| m.get(k).and_then(Value::as_bool).unwrap_or(false);
    pb.double(6, num("multipleOf"));
    pb.double(7, num("maximum"));
    pb.boolean(8, flag("exclusiveMaximum"));
    pb.double(9, num("minimum"));
    pb.boolean(10, flag("exclusiveMinimum"));
    pb.int64(11, int("maxLength"));
    pb.int64(12, int("minLength"));
    pb.string(13, str_of(m, "pattern"));
    pb.int64(14, int("maxItems"));
    pb.int64(15, int("minItems"));
    pb.boolean(16, flag("uniqueItems"));
    pb.int64(17, int("maxProperties"));
    pb.int64(18, int("minProperties"));
    for r in strings(m, "required") {
        pb.string(19, r);
    }
    for e in m
        .get("enum")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        any(pb, 20, e);
    }
    match m.get("additionalProperties") {
        Some(Value::Bool(b)) => pb.message(21, |a| {
            a.key(2, WIRE_VARINT);
            a.varint(u64::from(*b));
        }),
        Some(s @ Value::Object(_)) => pb.message(21, |a| a.message(1, |x| schema(x, s))),
        _ => {}
    }
    let types = strings(m, "type");
    if !types.is_empty() {
        pb.message(22, |t| types.iter().for_each(|ty| t.string(1, ty)));
    }
    match m.get("items") {
        Some(s @ Value::Object(_)) => pb.message(23, |i| i.message(1, |x| schema(x, s))),
        Some(Value::Array(list)) => pb.message(23, |i| {
            list.iter().for_each(|s| i.message(1, |x| schema(x, s)));
        }),
        _ => {}
    }
    for s in m
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        pb.message(24, |x| schema(x, s));
    }
    if let Some(props) = m.get("properties").and_then(Value::as_object) {
        pb.message(25, |p| {
            for (name, s) in props {
                p.message(1, |n| {
                    n.string(1, name);
                    n.message(2, |x| schema(x, s));
                });
            }
        });
    }
    pb.boolean(27, flag("readOnly"));
    vendor_extensions(pb, 31, m);
}

/// gnostic `ParametersItem` → `Parameter` → body or non-body (query/path) parameter.
fn parameter(pb: &mut Pb, p: &Map<String, Value>) {
    pb.message(1, |param| match str_of(p, "in") {
        "body" => param.message(1, |b| {
            b.string(1, str_of(p, "description"));
            b.string(2, str_of(p, "name"));
            b.string(3, "body");
            b.boolean(4, p.get("required").and_then(Value::as_bool) == Some(true));
            if let Some(s) = p.get("schema") {
                b.message(5, |x| schema(x, s));
            }
        }),
        place => param.message(2, |nb| {
            let required = p.get("required").and_then(Value::as_bool) == Some(true);
            let unique = p.get("uniqueItems").and_then(Value::as_bool) == Some(true);
            if place == "path" {
                nb.message(4, |q| {
                    q.boolean(1, required);
                    q.string(2, "path");
                    q.string(3, str_of(p, "description"));
                    q.string(4, str_of(p, "name"));
                    q.string(5, str_of(p, "type"));
                    q.boolean(19, unique);
                });
            } else {
                nb.message(3, |q| {
                    q.boolean(1, required);
                    q.string(2, "query");
                    q.string(3, str_of(p, "description"));
                    q.string(4, str_of(p, "name"));
                    q.string(6, str_of(p, "type"));
                    q.boolean(20, unique);
                });
            }
        }),
    });
}

fn parameters(pb: &mut Pb, field: u32, m: &Map<String, Value>) {
    for p in m
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(p) = p.as_object() {
            pb.message(field, |item| parameter(item, p));
        }
    }
}

/// gnostic `Operation`.
fn operation(pb: &mut Pb, op: &Map<String, Value>) {
    for t in strings(op, "tags") {
        pb.string(1, t);
    }
    pb.string(3, str_of(op, "description"));
    pb.string(5, str_of(op, "operationId"));
    for t in strings(op, "produces") {
        pb.string(6, t);
    }
    for t in strings(op, "consumes") {
        pb.string(7, t);
    }
    parameters(pb, 8, op);
    if let Some(responses) = op.get("responses").and_then(Value::as_object) {
        pb.message(9, |rs| {
            for (code, r) in responses {
                rs.message(1, |named| {
                    named.string(1, code);
                    named.message(2, |value| {
                        value.message(1, |resp| {
                            let r = r.as_object();
                            resp.string(1, r.map_or("", |r| str_of(r, "description")));
                            if let Some(s) = r.and_then(|r| r.get("schema")) {
                                resp.message(2, |item| item.message(1, |x| schema(x, s)));
                            }
                        });
                    });
                });
            }
        });
    }
    for t in strings(op, "schemes") {
        pb.string(10, t);
    }
    vendor_extensions(pb, 13, op);
}

/// Encodes a Swagger 2.0 JSON document as gnostic's `openapi.v2.Document`.
pub fn encode_document(doc: &Value) -> Vec<u8> {
    let mut pb = Pb::default();
    let Some(d) = doc.as_object() else {
        return pb.0;
    };
    pb.string(1, str_of(d, "swagger"));
    if let Some(info) = d.get("info").and_then(Value::as_object) {
        pb.message(2, |i| {
            i.string(1, str_of(info, "title"));
            i.string(2, str_of(info, "version"));
            i.string(3, str_of(info, "description"));
        });
    }
    if let Some(paths) = d.get("paths").and_then(Value::as_object) {
        pb.message(8, |ps| {
            for (path, item) in paths {
                let Some(item) = item.as_object() else {
                    continue;
                };
                ps.message(2, |named| {
                    named.string(1, path);
                    named.message(2, |pi| {
                        for (method, field) in [
                            ("get", 2),
                            ("put", 3),
                            ("post", 4),
                            ("delete", 5),
                            ("patch", 8),
                        ] {
                            if let Some(op) = item.get(method).and_then(Value::as_object) {
                                pi.message(field, |o| operation(o, op));
                            }
                        }
                        parameters(pi, 9, item);
                    });
                });
            }
        });
    }
    if let Some(defs) = d.get("definitions").and_then(Value::as_object) {
        pb.message(9, |ds| {
            for (name, s) in defs {
                ds.message(1, |named| {
                    named.string(1, name);
                    named.message(2, |x| schema(x, s));
                });
            }
        });
    }
    pb.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn varints_and_nested_messages_are_encoded_as_protobuf_does() {
        let mut pb = Pb::default();
        pb.varint(300);
        assert_eq!(pb.0, [0xac, 0x02]);
        let doc =
            encode_document(&json!({"swagger": "2.0", "info": {"title": "K", "version": "v1"}}));
        // field 1 (len) "2.0"; field 2 (len) { field 1 "K", field 2 "v1" }
        assert_eq!(
            doc,
            [
                0x0a, 3, b'2', b'.', b'0', 0x12, 7, 0x0a, 1, b'K', 0x12, 2, b'v', b'1'
            ]
        );
    }
}
