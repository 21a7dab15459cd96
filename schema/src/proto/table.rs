//! The shape of the generated schema table ([`super::generated`]) and lookups into it.
//!
//! The table is plain data: which tag of which message carries which JSON field and how
//! its bytes are typed. How the special messages (Time, Quantity, IntOrString, ...) become
//! JSON is decided in [`super::decode`], by name.

use super::generated::{KINDS, MESSAGES};

/// A proto2 scalar as it appears in Kubernetes' generated.proto files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scalar {
    String,
    Int32,
    Int64,
    Bool,
    /// `double`: a fixed64 on the wire.
    Double,
    /// Rendered as standard base64, as Go's encoding/json renders `[]byte`.
    Bytes,
}

/// How one field is laid out on the wire and in JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Scalar(Scalar),
    /// A repeated scalar: a JSON array. Numbers are accepted packed or unpacked.
    Repeated(Scalar),
    /// A singular message, named by its full proto name.
    Message(&'static str),
    RepeatedMessage(&'static str),
    /// A Go struct embedded with `json:",inline"` (e.g. `Probe.handler`,
    /// `Volume.volumeSource`): its fields land in the parent's JSON object.
    Inline(&'static str),
    /// `map<string, string>`: repeated entries with key = 1, value = 2.
    StringMap,
    /// `map<string, bytes>`: values become base64 strings.
    BytesMap,
    /// `map<string, Message>`.
    MessageMap(&'static str),
}

/// One field of a message. `json` is empty for [`Kind::Inline`].
#[derive(Clone, Copy, Debug)]
pub struct Field {
    pub tag: u32,
    pub json: &'static str,
    pub kind: Kind,
}

/// One message; `fields` are sorted by tag.
#[derive(Debug)]
pub struct Message {
    /// Full proto name, e.g. `k8s.io.api.core.v1.Pod`.
    pub name: &'static str,
    /// A `+protobuf.nullable=true` wrapper of a Go slice (e.g. certificates' ExtraValue):
    /// on the wire `{items: [...]}`, in JSON just the array.
    pub items_only: bool,
    pub fields: &'static [Field],
}

impl Message {
    /// The field with this tag; `None` for a tag this schema does not know (skipped, as
    /// kube-apiserver skips it).
    pub fn field(&self, tag: u32) -> Option<&'static Field> {
        let fields: &'static [Field] = self.fields;
        fields
            .binary_search_by_key(&tag, |f| f.tag)
            .ok()
            .and_then(|i| fields.get(i))
    }
}

/// The message with this full proto name.
pub fn message(name: &str) -> Option<&'static Message> {
    MESSAGES
        .binary_search_by(|m| m.name.cmp(name))
        .ok()
        .and_then(|i| MESSAGES.get(i))
}

/// The message a body of this (apiVersion, kind) carries.
pub fn kind_message(api_version: &str, kind: &str) -> Option<&'static Message> {
    let i = KINDS
        .binary_search_by(|(av, k, _)| (*av, *k).cmp(&(api_version, kind)))
        .ok()?;
    KINDS.get(i).and_then(|(_, _, name)| message(name))
}

/// Every (apiVersion, kind) with a schema, sorted.
pub fn kinds() -> impl Iterator<Item = (&'static str, &'static str)> {
    KINDS.iter().map(|(av, k, _)| (*av, *k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_sorted_and_unique_so_binary_search_finds_them() {
        for pair in MESSAGES.windows(2) {
            if let [a, b] = pair {
                assert!(a.name < b.name, "{} !< {}", a.name, b.name);
            }
        }
        for pair in KINDS.windows(2) {
            if let [a, b] = pair {
                assert!((a.0, a.1) < (b.0, b.1), "{a:?} !< {b:?}");
            }
        }
    }

    #[test]
    fn every_referenced_message_exists_and_fields_are_sorted_by_tag() {
        for m in MESSAGES {
            for pair in m.fields.windows(2) {
                if let [a, b] = pair {
                    assert!(a.tag < b.tag, "{}: tag {} !< {}", m.name, a.tag, b.tag);
                }
            }
            for f in m.fields {
                assert!(f.tag > 0, "{}: tag 0", m.name);
                assert_eq!(
                    f.json.is_empty(),
                    matches!(f.kind, Kind::Inline(_)),
                    "{}.{}",
                    m.name,
                    f.tag
                );
                if let Kind::Message(r)
                | Kind::RepeatedMessage(r)
                | Kind::Inline(r)
                | Kind::MessageMap(r) = f.kind
                {
                    assert!(
                        message(r).is_some(),
                        "{}.{} refers to missing {r}",
                        m.name,
                        f.json
                    );
                }
            }
        }
        for (av, k, name) in KINDS {
            assert!(message(name).is_some(), "{av} {k} refers to missing {name}");
        }
    }

    #[test]
    fn inline_embeddings_found_by_the_generator_include_the_well_known_ones() {
        let inline = |msg: &str, tag: u32| message(msg).and_then(|m| m.field(tag)).map(|f| f.kind);
        assert_eq!(
            inline("k8s.io.api.core.v1.Probe", 1),
            Some(Kind::Inline("k8s.io.api.core.v1.ProbeHandler"))
        );
        assert_eq!(
            inline("k8s.io.api.core.v1.Volume", 2),
            Some(Kind::Inline("k8s.io.api.core.v1.VolumeSource"))
        );
        assert_eq!(
            inline("k8s.io.api.core.v1.SecretKeySelector", 1),
            Some(Kind::Inline("k8s.io.api.core.v1.LocalObjectReference"))
        );
    }
}
