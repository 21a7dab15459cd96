//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`) decoded into
//! the JSON object kube-apiserver would have decoded from them.
//!
//! kubectl 1.32+ sends the bodies of its typed commands (`create configmap`, `create
//! deployment`, `run`, `expose`, ...) as protobuf. A body is the magic `k8s\0` followed by
//! a `runtime.Unknown` {1 typeMeta {1 apiVersion, 2 kind}, 2 raw, 3 contentEncoding,
//! 4 contentType} whose `raw` is the object's own message.
//!
//! Start at [`decode_object`]. The schema it walks is the table in `generated.rs`,
//! produced by `scripts/gen-proto-schema.py` from the k8s-pb and k8s-openapi crates (tags
//! and types from the former, JSON names and kinds from the latter); it is never
//! hand-edited, and `--check` tells whether it is current.
//! `decode.rs` renders the apimachinery types whose JSON is not an object of their fields:
//! Time, MicroTime, Duration, Quantity, IntOrString, RawExtension, FieldsV1.
//!
//! # What the JSON looks like
//! Go writes every non-pointer field, so the bytes carry zero values a JSON client would
//! have left out. The rule here: empty strings (and empty `bytes`) and zero Times are left
//! out, as kube's `omitempty` leaves them out; numbers, booleans and empty nested messages
//! (`{}`) are kept as written (`replicas: 0` must survive). An `int32 omitempty` zero such
//! as `hostPort: 0` is therefore kept where kube-apiserver would print nothing; both mean
//! the same to Go. Fields Kubernetes 1.33 does not have are skipped, as 1.33 skips them.
//!
//! # Invariants
//! - Never panics on input: every length is checked against the bytes that remain, nesting
//!   is bounded by [`NESTING_DEPTH_MAX`], and errors are [`ProtoError`]s for a 400.
//! - Knows no kind by hand: the kinds with a schema are exactly the generated `KINDS`
//!   (see [`known_kinds`]); the only names written here are the seven special messages.

mod decode;
#[rustfmt::skip]
mod generated;
mod table;
mod wire;

use serde_json::{Map, Value};

use wire::{Raw, flat_fields};

/// The four bytes every Kubernetes protobuf body starts with: `k8s\0`.
pub const PROTOBUF_MAGIC: [u8; 4] = *b"k8s\0";

/// The deepest nesting of messages a body may have; deeper bodies are rejected rather than
/// recursed into. The deepest built-in path (a pod template's affinity terms inside a
/// CronJob) is under 15.
pub const NESTING_DEPTH_MAX: usize = 64;

/// A body that is not a well-formed Kubernetes protobuf object this server knows; the
/// message is meant for a 400 (or 415 for an unknown kind) `Status`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ProtoError(pub String);

/// Decodes an `application/vnd.kubernetes.protobuf` body into its JSON object, with
/// `apiVersion` and `kind` set from the envelope.
///
/// # Errors
/// A body without the magic, a malformed or truncated message, a wire type that does not
/// match the schema, an envelope without apiVersion or kind, or a kind without a schema
/// here (see [`knows`]).
pub fn decode_object(body: &[u8]) -> Result<Value, ProtoError> {
    let Some(envelope) = body.strip_prefix(PROTOBUF_MAGIC.as_slice()) else {
        return Err(ProtoError(
            "provided data does not appear to be a protobuf message, expected prefix k8s\\0"
                .to_owned(),
        ));
    };
    if envelope.is_empty() {
        return Err(ProtoError("empty body".to_owned()));
    }
    let base = PROTOBUF_MAGIC.len();
    // runtime.Unknown. contentEncoding and contentType are ignored, as kube-apiserver's
    // protobuf serializer ignores them.
    let [type_meta, raw, _, _] = flat_fields::<4>(envelope, base)?;
    let (type_meta, type_meta_at) = bytes_field(type_meta, base, "runtime.Unknown typeMeta")?;
    let (raw, raw_at) = bytes_field(raw, base, "runtime.Unknown raw")?;
    let [api_version, kind] = flat_fields::<2>(type_meta, type_meta_at)?;
    let api_version = utf8_field(api_version, type_meta_at, "apiVersion")?;
    let kind = utf8_field(kind, type_meta_at, "kind")?;
    if api_version.is_empty() || kind.is_empty() {
        return Err(ProtoError(format!(
            "protobuf body is missing its type: apiVersion {api_version:?}, kind {kind:?}"
        )));
    }
    let Some(message) = table::kind_message(&api_version, &kind) else {
        return Err(ProtoError(format!(
            "no protobuf schema for kind {kind:?} in {api_version:?}; send JSON instead"
        )));
    };
    let mut object = Map::new();
    object.insert("apiVersion".to_owned(), Value::String(api_version));
    object.insert("kind".to_owned(), Value::String(kind));
    decode::decode_into(message, raw, raw_at, 0, &mut object)?;
    Ok(Value::Object(object))
}

/// Whether (apiVersion, kind) has a protobuf schema here: the top-level kinds of the
/// groups in the generated table's header, `DeleteOptions` under each of their versions and
/// `meta.k8s.io/v1`, and `v1` `Status`.
pub fn knows(api_version: &str, kind: &str) -> bool {
    table::kind_message(api_version, kind).is_some()
}

/// Every (apiVersion, kind) [`decode_object`] accepts, sorted.
pub fn known_kinds() -> impl Iterator<Item = (&'static str, &'static str)> {
    table::kinds()
}

/// A length-delimited envelope field; absent means empty, as Go decodes it.
fn bytes_field<'a>(
    raw: Option<Raw<'a>>,
    at: usize,
    what: &str,
) -> Result<(&'a [u8], usize), ProtoError> {
    match raw {
        None => Ok((&[], at)),
        Some(Raw::Bytes(b, b_at)) => Ok((b, b_at)),
        Some(_) => Err(ProtoError(format!(
            "protobuf: {what} has the wrong wire type"
        ))),
    }
}

fn utf8_field(raw: Option<Raw<'_>>, at: usize, what: &str) -> Result<String, ProtoError> {
    let (bytes, _) = bytes_field(raw, at, what)?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| ProtoError(format!("protobuf: {what} is not UTF-8")))
}

#[cfg(test)]
mod tests;
