//! Record framing: the versioned, checksummed envelopes stored under log and object keys,
//! and their split into chunks of at most [`VALUE_CHUNK_BYTES_MAX`] bytes.
//!
//! Log event (assembled from its chunks):
//! ```text
//! 0xEB | format u8 | payload_len u32 BE | crc32c u32 BE | payload (MessagePack EventRecord)
//! ```
//! Current object (chunk 0 carries the commit versionstamp, substituted at commit):
//! ```text
//! 0x0B | format u8 | versionstamp 10 | payload_len u32 BE | crc32c u32 BE | payload
//! ```
//! The CRC covers the kind byte, the format byte, the length and the payload (not the
//! versionstamp, which the backend writes after the CRC was computed). Every record is
//! checked when it is read back; a mismatch is [`Error::Corrupt`] naming the key.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::keys::ObjectKey;
use crate::position::{Position, VERSIONSTAMP_PLACEHOLDER, Versionstamp};

/// Largest chunk of one record stored under one key, in bytes (below FoundationDB's
/// 100 kB value limit, leaving room for framing).
pub const VALUE_CHUNK_BYTES_MAX: usize = 90_000;
/// Largest object the store accepts, in bytes (Kubernetes' 1.5 MiB).
pub const OBJECT_BYTES_MAX: usize = 1536 * 1024;
/// Most chunks one record may have; chunk indices stay below 0xff00 so that an object's
/// chunk keys never collide with the escaped encoding of a longer name.
pub const RECORD_CHUNKS_MAX: usize = 64;

pub const EVENT_MAGIC: u8 = 0xEB;
pub const OBJECT_MAGIC: u8 = 0x0B;
pub const FORMAT_V1: u8 = 1;

const EVENT_HEADER_BYTES: usize = 1 + 1 + 4 + 4;
/// Offset of the versionstamp inside an object record.
pub const OBJECT_VS_OFFSET: usize = 2;
const OBJECT_HEADER_BYTES: usize = 1 + 1 + 10 + 4 + 4;

/// What happened to the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum EventType {
    Added = 1,
    Modified = 2,
    Deleted = 3,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }

    pub(crate) fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(EventType::Added),
            2 => Some(EventType::Modified),
            3 => Some(EventType::Deleted),
            _ => None,
        }
    }
}

/// Who made a change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub user: String,
    pub groups: Vec<String>,
    /// The client's `User-Agent` ("" for writes the server makes itself).
    #[serde(default)]
    pub user_agent: String,
    /// The client's address, `ip:port` ("" for writes the server makes itself).
    #[serde(default)]
    pub source: String,
}

/// The stored form of one event (MessagePack, field order is the format: append only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct EventRecord {
    kind: EventType,
    resource: String,
    namespace: String,
    name: String,
    uid: String,
    #[serde(with = "serde_bytes")]
    object: Vec<u8>,
    prev_position: u64,
    actor: Actor,
    verb: String,
    request_id: String,
    timestamp_unix_nanos: i64,
    #[serde(with = "serde_bytes")]
    prev_hash: Vec<u8>,
    #[serde(with = "serde_bytes")]
    hash: Vec<u8>,
}

/// One entry of the log, as readers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub position: Position,
    pub kind: EventType,
    pub key: ObjectKey,
    pub uid: String,
    /// The object after the change (for DELETED: its last state).
    pub object: Vec<u8>,
    /// The position of the previous revision of this object, if any.
    pub prev_position: Option<Position>,
    pub actor: Actor,
    pub verb: String,
    pub request_id: String,
    pub timestamp_unix_nanos: i64,
    /// The hash of the previous revision of this object (zeros for the first).
    pub prev_hash: [u8; 32],
    /// `sha256(prev_hash || record without hash)`: the chain that makes rewriting history
    /// detectable per object.
    pub hash: [u8; 32],
}

/// The fields of an event known before commit (the position comes from the commit).
pub struct NewEvent<'a> {
    pub kind: EventType,
    pub key: &'a ObjectKey,
    pub uid: &'a str,
    pub object: &'a [u8],
    pub prev_position: Option<Position>,
    pub actor: &'a Actor,
    pub verb: &'a str,
    pub request_id: &'a str,
    pub timestamp_unix_nanos: i64,
    pub prev_hash: [u8; 32],
}

fn to_array(v: &[u8]) -> Option<[u8; 32]> {
    v.try_into().ok()
}

fn event_hash(record: &EventRecord) -> Result<[u8; 32]> {
    let mut unhashed = record.clone();
    unhashed.hash = Vec::new();
    let bytes = rmp_serde::to_vec(&unhashed).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let mut h = Sha256::new();
    h.update(&record.prev_hash);
    h.update(&bytes);
    Ok(h.finalize().into())
}

/// Encodes a new event into its envelope; returns the bytes and the event's hash.
pub fn encode_event(e: &NewEvent<'_>) -> Result<(Vec<u8>, [u8; 32])> {
    let mut record = EventRecord {
        kind: e.kind,
        resource: e.key.resource.clone(),
        namespace: e.key.namespace.clone(),
        name: e.key.name.clone(),
        uid: e.uid.to_string(),
        object: e.object.to_vec(),
        prev_position: e.prev_position.map_or(0, |p| p.0),
        actor: e.actor.clone(),
        verb: e.verb.to_string(),
        request_id: e.request_id.to_string(),
        timestamp_unix_nanos: e.timestamp_unix_nanos,
        prev_hash: e.prev_hash.to_vec(),
        hash: Vec::new(),
    };
    let hash = event_hash(&record)?;
    record.hash = hash.to_vec();
    let payload = rmp_serde::to_vec(&record).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let mut out = Vec::with_capacity(EVENT_HEADER_BYTES + payload.len());
    out.push(EVENT_MAGIC);
    out.push(FORMAT_V1);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    let crc = crc_of(EVENT_MAGIC, FORMAT_V1, payload.len() as u32, &payload);
    out.extend_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(&payload);
    Ok((out, hash))
}

fn crc_of(magic: u8, format: u8, len: u32, payload: &[u8]) -> u32 {
    let mut head = [0u8; 6];
    head[0] = magic;
    head[1] = format;
    head[2..6].copy_from_slice(&len.to_be_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&head), payload)
}

fn corrupt(location: impl std::fmt::Display, detail: impl Into<String>) -> Error {
    Error::Corrupt {
        location: location.to_string(),
        detail: detail.into(),
    }
}

/// Checks an envelope's magic, format, length and checksum; returns its payload. The
/// payload length and CRC sit at `len_at` (after any versionstamp).
fn open_envelope<'a>(
    at: &str,
    bytes: &'a [u8],
    magic: u8,
    what: &str,
    len_at: usize,
) -> Result<&'a [u8]> {
    let header = len_at + 8;
    if bytes.len() < header || bytes[0] != magic {
        return Err(corrupt(at, format!("not an {what} record")));
    }
    if bytes[1] != FORMAT_V1 {
        return Err(corrupt(at, format!("unknown {what} format {}", bytes[1])));
    }
    let len = u32::from_be_bytes([
        bytes[len_at],
        bytes[len_at + 1],
        bytes[len_at + 2],
        bytes[len_at + 3],
    ]);
    let crc = u32::from_be_bytes([
        bytes[len_at + 4],
        bytes[len_at + 5],
        bytes[len_at + 6],
        bytes[len_at + 7],
    ]);
    let payload = &bytes[header..];
    if payload.len() != len as usize {
        return Err(corrupt(
            at,
            format!("payload is {} bytes, header says {len}", payload.len()),
        ));
    }
    if crc_of(bytes[0], bytes[1], len, payload) != crc {
        return Err(corrupt(at, "checksum mismatch"));
    }
    Ok(payload)
}

/// Decodes and checks an event envelope found at `position`.
///
/// # Errors
/// [`Error::Corrupt`] naming the position if framing, checksum or hash chain fields are off.
pub fn decode_event(position: Position, bytes: &[u8]) -> Result<Event> {
    let at = format!("log position {position}");
    let payload = open_envelope(&at, bytes, EVENT_MAGIC, "event", 2)?;
    decode_payload(position, &at, payload)
}

fn decode_payload(position: Position, at: &str, payload: &[u8]) -> Result<Event> {
    let r: EventRecord = rmp_serde::from_slice(payload)
        .map_err(|e| corrupt(at, format!("undecodable payload: {e}")))?;
    let (Some(prev_hash), Some(hash)) = (to_array(&r.prev_hash), to_array(&r.hash)) else {
        return Err(corrupt(at, "hash fields are not 32 bytes"));
    };
    Ok(Event {
        position,
        kind: r.kind,
        key: ObjectKey {
            resource: r.resource,
            namespace: r.namespace,
            name: r.name,
        },
        uid: r.uid,
        object: r.object,
        prev_position: (r.prev_position != 0).then_some(Position(r.prev_position)),
        actor: r.actor,
        verb: r.verb,
        request_id: r.request_id,
        timestamp_unix_nanos: r.timestamp_unix_nanos,
        prev_hash,
        hash,
    })
}

/// Decodes an event envelope like [`decode_event`] and re-derives its hash from the stored
/// bytes: true when `sha256(prev_hash || record without hash)` matches the stored hash.
///
/// Hashes the payload as stored (the hash field, the bytes `0xc4 0x20 <hash>`, replaced by
/// an empty one, `0xc4 0x00`) instead of re-encoding the decoded record: the same digest
/// for every record this code writes, without a copy and a re-encode per event, and any
/// change to the stored bytes, even one that decodes to the same fields, fails it.
///
/// # Errors
/// As [`decode_event`].
pub fn decode_event_verified(position: Position, bytes: &[u8]) -> Result<(Event, bool)> {
    let at = format!("log position {position}");
    let payload = open_envelope(&at, bytes, EVENT_MAGIC, "event", 2)?;
    let event = decode_payload(position, &at, payload)?;
    let ok = stored_hash_matches(payload, &event.prev_hash, &event.hash);
    Ok((event, ok))
}

fn stored_hash_matches(payload: &[u8], prev_hash: &[u8; 32], hash: &[u8; 32]) -> bool {
    const FIELD_BYTES: usize = 2 + 32;
    let Some(at) = payload
        .windows(FIELD_BYTES)
        .rposition(|w| w[0] == 0xc4 && w[1] == 0x20 && w[2..] == hash[..])
    else {
        return false;
    };
    let mut h = Sha256::new();
    h.update(prev_hash);
    h.update(&payload[..at]);
    h.update([0xc4, 0x00]);
    h.update(&payload[at + FIELD_BYTES..]);
    <[u8; 32]>::from(h.finalize()) == *hash
}

/// Recomputes an event's hash from its fields: true when the stored hash matches.
pub fn event_hash_is_valid(e: &Event) -> bool {
    let record = EventRecord {
        kind: e.kind,
        resource: e.key.resource.clone(),
        namespace: e.key.namespace.clone(),
        name: e.key.name.clone(),
        uid: e.uid.clone(),
        object: e.object.clone(),
        prev_position: e.prev_position.map_or(0, |p| p.0),
        actor: e.actor.clone(),
        verb: e.verb.clone(),
        request_id: e.request_id.clone(),
        timestamp_unix_nanos: e.timestamp_unix_nanos,
        prev_hash: e.prev_hash.to_vec(),
        hash: e.hash.to_vec(),
    };
    event_hash(&record).map(|h| h == e.hash).unwrap_or(false)
}

/// The stored form of the current-state pointer of one object. The object's bytes live only
/// in the log; this record says which event holds the current state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct ObjectRecord {
    uid: String,
    #[serde(with = "serde_bytes")]
    hash: Vec<u8>,
    request_id: String,
}

/// The current state of one object, as readers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredObject {
    pub key: ObjectKey,
    /// The position of the event that produced this state: the object's resourceVersion.
    pub position: Position,
    pub uid: String,
    pub object: Vec<u8>,
    /// Hash of the event that produced this state (the next event chains to it).
    pub hash: [u8; 32],
    /// Request id of the write that produced this state (idempotent retries).
    pub request_id: String,
    /// The stored form is not what the resource's value transformer writes now (sealed
    /// under an older key, or not sealed): an unchanged update should still be written.
    /// Always false for resources without a transformer.
    pub stale: bool,
}

impl StoredObject {
    /// The state an event left its object in.
    pub fn from_event(e: Event) -> Self {
        StoredObject {
            key: e.key,
            position: e.position,
            uid: e.uid,
            object: e.object,
            hash: e.hash,
            request_id: e.request_id,
            stale: false,
        }
    }
}

/// The current-state pointer of one object: which event holds its current state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectRef {
    pub key: ObjectKey,
    pub position: Position,
    pub uid: String,
    pub hash: [u8; 32],
    pub request_id: String,
}

/// Encodes the current-state pointer with a versionstamp placeholder at
/// [`OBJECT_VS_OFFSET`] (the backend writes the event's position there at commit).
pub fn encode_object(uid: &str, hash: &[u8; 32], request_id: &str) -> Result<Vec<u8>> {
    let rec = ObjectRecord {
        uid: uid.to_string(),
        hash: hash.to_vec(),
        request_id: request_id.to_string(),
    };
    let payload = rmp_serde::to_vec(&rec).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let mut out = Vec::with_capacity(OBJECT_HEADER_BYTES + payload.len());
    out.push(OBJECT_MAGIC);
    out.push(FORMAT_V1);
    out.extend_from_slice(&VERSIONSTAMP_PLACEHOLDER);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    let crc = crc_of(OBJECT_MAGIC, FORMAT_V1, payload.len() as u32, &payload);
    out.extend_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Decodes and checks a current-state pointer.
pub fn decode_object(key: ObjectKey, bytes: &[u8]) -> Result<ObjectRef> {
    let at = format!("object {key}");
    let payload = open_envelope(&at, bytes, OBJECT_MAGIC, "object", OBJECT_VS_OFFSET + 10)?;
    let vs = Versionstamp::from_slice(&bytes[OBJECT_VS_OFFSET..])
        .ok_or_else(|| corrupt(&at, "short header"))?;
    if vs.version() > crate::position::POSITION_VERSION_MAX {
        return Err(corrupt(&at, "versionstamp was never substituted"));
    }
    let r: ObjectRecord = rmp_serde::from_slice(payload)
        .map_err(|e| corrupt(&at, format!("undecodable payload: {e}")))?;
    let hash = to_array(&r.hash).ok_or_else(|| corrupt(&at, "hash is not 32 bytes"))?;
    Ok(ObjectRef {
        key,
        position: Position::from_versionstamp(vs),
        uid: r.uid,
        hash,
        request_id: r.request_id,
    })
}

/// Splits a record into chunks of at most [`VALUE_CHUNK_BYTES_MAX`].
pub fn chunks(bytes: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    bytes
        .chunks(VALUE_CHUNK_BYTES_MAX)
        .enumerate()
        .map(|(i, c)| (i as u16, c))
}

/// Reassembles chunks given in key order; checks that indices run 0, 1, 2, ….
pub fn join_chunks(location: &dyn std::fmt::Display, parts: &[(u16, &[u8])]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(parts.iter().map(|(_, p)| p.len()).sum());
    for (expected, (idx, part)) in parts.iter().enumerate() {
        if usize::from(*idx) != expected {
            return Err(corrupt(
                location,
                format!("chunk {idx} where chunk {expected} belongs"),
            ));
        }
        out.extend_from_slice(part);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(object: &[u8]) -> (Vec<u8>, [u8; 32]) {
        let key = ObjectKey::new("pods", "default", "web");
        let actor = Actor {
            user: "alice".into(),
            groups: vec!["devs".into()],
            ..Default::default()
        };
        encode_event(&NewEvent {
            kind: EventType::Added,
            key: &key,
            uid: "u1",
            object,
            prev_position: None,
            actor: &actor,
            verb: "create",
            request_id: "r1",
            timestamp_unix_nanos: 7,
            prev_hash: [0; 32],
        })
        .expect("encodes")
    }

    #[test]
    fn an_event_decodes_to_what_was_encoded_and_its_hash_checks() {
        let (bytes, hash) = sample(b"{\"a\":1}");
        let e = decode_event(Position(9), &bytes).expect("decodes");
        assert_eq!(e.hash, hash);
        assert_eq!(e.object, b"{\"a\":1}");
        assert_eq!(e.actor.user, "alice");
        assert!(event_hash_is_valid(&e));
        let mut tampered = e.clone();
        tampered.object = b"{\"a\":2}".to_vec();
        assert!(
            !event_hash_is_valid(&tampered),
            "a rewritten object must break the hash"
        );
    }

    #[test]
    fn the_hash_re_derived_from_stored_bytes_equals_the_hash_of_the_re_encoded_record() {
        for size in [0usize, 1, 100, 5000] {
            let (bytes, hash) = sample(&vec![7u8; size]);
            let (e, ok) = decode_event_verified(Position(9), &bytes).expect("decodes");
            assert!(
                ok,
                "stored-bytes hash differs for an object of {size} bytes"
            );
            assert!(event_hash_is_valid(&e));
            assert_eq!(e.hash, hash);
        }
    }

    #[test]
    fn every_single_byte_flip_in_an_event_is_detected() {
        let (bytes, _) = sample(b"0123456789");
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(
                decode_event(Position(1), &b).is_err(),
                "flip at byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn chunks_rejoin_only_in_order() {
        let data: Vec<u8> = (0..(VALUE_CHUNK_BYTES_MAX * 2 + 5))
            .map(|i| i as u8)
            .collect();
        let parts: Vec<(u16, &[u8])> = chunks(&data).collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(join_chunks(&"t", &parts).expect("joins"), data);
        let swapped = vec![parts[1], parts[0], parts[2]];
        assert!(join_chunks(&"t", &swapped).is_err());
    }
}
