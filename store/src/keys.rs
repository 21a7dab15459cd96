//! The key layout, in one place. See ARCHITECTURE.md ("Key layout") for why it is this way.
//!
//! ```text
//! l <partition u16> <versionstamp 10> <chunk u16>        -> log event chunk
//! o <res> <ns> <name> <chunk u16>                        -> current object chunk
//! r <res> <ns> <name> <versionstamp 10>                  -> revision index entry
//! t <res> <versionstamp 10>                              -> resource log entry (ns, name)
//! m <name>                                               -> metadata (format, horizon, partitions)
//! m head <partition u16>                                 -> newest versionstamp of one partition
//! m horizon <res>                                        -> one resource's retention horizon
//! c <res> <ns>                                           -> object count (i64 LE, atomic add)
//! u <user> <versionstamp 10>                             -> user log entry (res, ns, name)
//! x <unix second u64 BE>                                 -> newest event stamped in that second
//! k <res> <versionstamp 10>                              -> checkpoint of one resource's log
//! ```
//! A resource's effective horizon is the larger of `m horizon` (the whole log) and
//! `m horizon <res>` (written by per-resource retention).
//! `<res>`, `<ns>`, `<name>` are byte strings in an order-preserving, prefix-free encoding
//! (FoundationDB tuple style: 0x00 escaped as 0x00 0xff, terminated by 0x00), so a prefix of
//! elements is a key prefix and all chunks and revisions of one object sort together.

use crate::position::{Position, Versionstamp};

pub const LOG: u8 = b'l';
pub const OBJ: u8 = b'o';
pub const REV: u8 = b'r';
pub const META: u8 = b'm';
/// Live object counts per resource and namespace, kept with atomic adds (no conflicts), so
/// a paged list can estimate `remainingItemCount` without scanning.
pub const COUNT: u8 = b'c';
/// The per-resource log: every event of one resource in log order, so a watch of one
/// resource catching up from an old position does not read every other resource's events.
pub const RES_LOG: u8 = b't';
/// Checkpoints: a digest per resource, chained to that resource's previous checkpoint, over
/// the resource's events since it (tamper evidence that survives per-resource retention).
pub const CHECKPOINT: u8 = b'k';

/// The per-user log: every event one user made, in log order (the auditor's "everything
/// alice changed" without reading anyone else's events).
pub const USER_LOG: u8 = b'u';
/// The time index: one key per second in which events were appended, holding the newest
/// such event's versionstamp (a blind versionstamped write), so "the cluster at 14:02" maps
/// to a position without scanning the log.
pub const TIME: u8 = b'x';

/// `m format`: the on-disk format version.
pub const META_FORMAT: &[u8] = b"mformat";
/// `m head`: prefix of the partition heads. Stores written before partition heads held one
/// `m head` key (the whole log's head); it sorts inside the prefix and is still read.
pub const META_HEAD: &[u8] = b"mhead";

/// `m head <partition u16>`: the versionstamp of the newest event of one log partition (a
/// versionstamped value written by every append to it). One head per partition, so on
/// FoundationDB no single key takes every commit; the log's head is the largest of them.
pub fn head(partition: u16) -> Vec<u8> {
    let mut out = META_HEAD.to_vec();
    out.extend_from_slice(&partition.to_be_bytes());
    out
}
/// `m horizon`: positions at or below this have been compacted away.
pub const META_HORIZON: &[u8] = b"mhorizon";
/// `m horizon <res>`: one resource's retention horizon (see [`resource_horizon`]).
pub fn resource_horizon(resource: &str) -> Vec<u8> {
    let mut out = META_HORIZON.to_vec();
    push_str(&mut out, resource.as_bytes());
    out
}

/// `k <res>`: prefix of one resource's checkpoints.
pub fn checkpoint_scope(resource: &str) -> Vec<u8> {
    let mut out = vec![CHECKPOINT];
    push_str(&mut out, resource.as_bytes());
    out
}

/// `k <res> <vs>`: the checkpoint of `resource` covering its events up to `position`.
pub fn checkpoint(resource: &str, position: Position) -> Vec<u8> {
    let mut out = checkpoint_scope(resource);
    out.extend_from_slice(&position.versionstamp().0);
    out
}

/// `m fences`: position ranges that were handed out by a store this one was restored from
/// but are not in it (pairs of big-endian u64: after, up to). A read at a position inside
/// one answers `Compacted` (410), never a wrong answer. See `EventLog::fence`.
pub const META_FENCES: &[u8] = b"mfences";

/// `m partitions history`: the counts the log had before its current one, oldest first
/// (u16 BE each): events appended under an older count stay in that count's partition.
pub const META_PARTITION_HISTORY: &[u8] = b"mpartitions-history";

/// `m partitions`: how many log partitions there are (only ever grows).
pub const META_PARTITIONS: &[u8] = b"mpartitions";

/// Appends one byte string element.
pub fn push_str(out: &mut Vec<u8>, s: &[u8]) {
    for &b in s {
        out.push(b);
        if b == 0 {
            out.push(0xff);
        }
    }
    out.push(0);
}

/// Reads one byte string element from the front of `input`; returns it and the rest.
pub fn pop_str(input: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if b == 0 {
            if input.get(i + 1) == Some(&0xff) {
                out.push(0);
                i += 2;
                continue;
            }
            return Some((out, &input[i + 1..]));
        }
        out.push(b);
        i += 1;
    }
    None
}

/// The identity of one object: resource (e.g. `apps/deployments`), namespace ("" for
/// cluster-scoped) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub resource: String,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(
        resource: impl Into<String>,
        namespace: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        ObjectKey {
            resource: resource.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        push_str(out, self.resource.as_bytes());
        push_str(out, self.namespace.as_bytes());
        push_str(out, self.name.as_bytes());
    }

    /// Decodes the three elements from the front of `input`.
    pub fn decode(input: &[u8]) -> Option<(ObjectKey, &[u8])> {
        let (r, rest) = pop_str(input)?;
        let (ns, rest) = pop_str(rest)?;
        let (n, rest) = pop_str(rest)?;
        let key = ObjectKey {
            resource: String::from_utf8(r).ok()?,
            namespace: String::from_utf8(ns).ok()?,
            name: String::from_utf8(n).ok()?,
        };
        Some((key, rest))
    }

    /// The log partition this object's events go to.
    pub fn partition(&self, partitions: u16) -> u16 {
        if partitions <= 1 {
            return 0;
        }
        // FNV-1a: stable across releases and platforms, unlike std's hasher.
        let mut h: u64 = 0xcbf29ce484222325;
        for b in self
            .resource
            .bytes()
            .chain([0])
            .chain(self.namespace.bytes())
            .chain([0])
            .chain(self.name.bytes())
        {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100000001b3);
        }
        (h % u64::from(partitions)) as u16
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.resource, self.name)
        } else {
            write!(f, "{}/{}/{}", self.resource, self.namespace, self.name)
        }
    }
}

/// `o <res> <ns> <name>`: prefix of an object's chunks.
pub fn obj(key: &ObjectKey) -> Vec<u8> {
    let mut out = vec![OBJ];
    key.encode_into(&mut out);
    out
}

/// `o <res>` or `o <res> <ns>`: prefix of a resource's objects, in one namespace or all.
pub fn obj_scope(resource: &str, namespace: Option<&str>) -> Vec<u8> {
    scope(OBJ, resource, namespace)
}

/// `r <res> <ns> <name>`: prefix of an object's revision entries.
pub fn rev(key: &ObjectKey) -> Vec<u8> {
    let mut out = vec![REV];
    key.encode_into(&mut out);
    out
}

/// `t <res>`: prefix of one resource's log.
pub fn res_log(resource: &str) -> Vec<u8> {
    let mut out = vec![RES_LOG];
    push_str(&mut out, resource.as_bytes());
    out
}

/// The value of a resource-log entry: the object's namespace and name.
pub fn res_log_value(key: &ObjectKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.namespace.len() + key.name.len() + 2);
    push_str(&mut out, key.namespace.as_bytes());
    push_str(&mut out, key.name.as_bytes());
    out
}

/// `u <user>`: prefix of one user's log.
pub fn user_log(user: &str) -> Vec<u8> {
    let mut out = vec![USER_LOG];
    push_str(&mut out, user.as_bytes());
    out
}

/// The value of a user-log entry: the object's resource, namespace and name.
pub fn user_log_value(key: &ObjectKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.resource.len() + key.namespace.len() + key.name.len() + 3);
    key.encode_into(&mut out);
    out
}

/// `x <second>`: the time-index key of one Unix second.
pub fn time_second(unix_second: u64) -> Vec<u8> {
    let mut out = vec![TIME];
    out.extend_from_slice(&unix_second.to_be_bytes());
    out
}

/// `c <res>` or `c <res> <ns>`: object counts.
pub fn count_scope(resource: &str, namespace: Option<&str>) -> Vec<u8> {
    scope(COUNT, resource, namespace)
}

/// `r <res>` or `r <res> <ns>`.
pub fn rev_scope(resource: &str, namespace: Option<&str>) -> Vec<u8> {
    scope(REV, resource, namespace)
}

fn scope(subspace: u8, resource: &str, namespace: Option<&str>) -> Vec<u8> {
    let mut out = vec![subspace];
    push_str(&mut out, resource.as_bytes());
    if let Some(ns) = namespace {
        push_str(&mut out, ns.as_bytes());
    }
    out
}

/// `l <partition>`: prefix of one log partition.
pub fn log_partition(partition: u16) -> Vec<u8> {
    let mut out = vec![LOG];
    out.extend_from_slice(&partition.to_be_bytes());
    out
}

/// `l <partition> <vs>`: prefix of one event's chunks.
pub fn log_event(partition: u16, vs: Versionstamp) -> Vec<u8> {
    let mut out = log_partition(partition);
    out.extend_from_slice(&vs.0);
    out
}

/// Offset of the versionstamp inside a log key.
pub const LOG_VS_OFFSET: usize = 3;

/// The first log key of `partition` after `position`.
pub fn log_after(partition: u16, position: Position) -> Vec<u8> {
    match position.0.checked_add(1) {
        Some(next) => log_event(partition, Position(next).versionstamp()),
        None => crate::kv::prefix_end(&log_partition(partition)),
    }
}

/// Splits a log key into its position and chunk index.
pub fn parse_log_key(key: &[u8]) -> Option<(u16, Position, u16)> {
    if key.len() != 1 + 2 + 10 + 2 || key[0] != LOG {
        return None;
    }
    let partition = u16::from_be_bytes([key[1], key[2]]);
    let vs = Versionstamp::from_slice(&key[3..13])?;
    let chunk = u16::from_be_bytes([key[13], key[14]]);
    Some((partition, Position::checked_from_versionstamp(vs)?, chunk))
}

/// Appends a chunk index.
pub fn with_chunk(prefix: &[u8], chunk: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + 2);
    out.extend_from_slice(prefix);
    out.extend_from_slice(&chunk.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_elements_round_trip_and_sort_like_the_strings() {
        let words: Vec<&[u8]> = vec![b"", b"a", b"a\0", b"a\0b", b"ab", b"b", b"\0", b"\xff"];
        let mut encoded: Vec<(Vec<u8>, &[u8])> = words
            .iter()
            .map(|w| {
                let mut out = Vec::new();
                push_str(&mut out, w);
                let (back, rest) = pop_str(&out).expect("decodes");
                assert_eq!(back, *w);
                assert!(rest.is_empty());
                (out, *w)
            })
            .collect();
        encoded.sort();
        let order: Vec<&[u8]> = encoded.iter().map(|(_, w)| *w).collect();
        let mut expected = words.clone();
        expected.sort();
        assert_eq!(order, expected);
    }

    #[test]
    fn an_objects_chunks_sort_between_it_and_the_next_name() {
        let a = obj(&ObjectKey::new("pods", "ns", "a"));
        let ab = obj(&ObjectKey::new("pods", "ns", "ab"));
        let a_chunk = with_chunk(&a, 7);
        assert!(a < a_chunk && a_chunk < ab);
        assert!(obj_scope("pods", Some("ns")) < a);
        assert!(a.starts_with(&obj_scope("pods", None)));
    }

    #[test]
    fn log_keys_parse_back_to_their_position() {
        let p = Position(42 << 16 | 3);
        let key = with_chunk(&log_event(5, p.versionstamp()), 2);
        assert_eq!(parse_log_key(&key), Some((5, p, 2)));
        assert!(log_after(5, p) > key);
    }

    #[test]
    fn partition_heads_and_the_older_single_head_share_one_prefix_apart_from_other_metadata() {
        let range = (META_HEAD.to_vec(), crate::kv::prefix_end(META_HEAD));
        for k in [META_HEAD.to_vec(), head(0), head(1), head(u16::MAX)] {
            assert!(
                range.0 <= k && k < range.1,
                "{k:?} is inside the head prefix"
            );
        }
        for other in [META_HORIZON, META_PARTITIONS, META_FORMAT] {
            assert!(!(range.0.as_slice() <= other && other < range.1.as_slice()));
        }
        assert!(head(0) < head(1) && head(1) < head(256));
    }

    #[test]
    fn an_objects_partition_is_stable_and_within_the_count() {
        let k = ObjectKey::new("pods", "default", "web-0");
        // FNV-1a of "pods\0default\0web-0" is 5406373708469862723 (computed apart, with
        // Python); 5406373708469862723 mod 16 = 3. A change here would lose every stored
        // event of a multi-partition store, since reads find events by this hash.
        assert_eq!(k.partition(16), 3);
        assert_eq!(k.partition(1), 0);
        let spread: std::collections::BTreeSet<u16> = (0..200)
            .map(|i| ObjectKey::new("pods", "default", format!("p-{i}")).partition(16))
            .collect();
        assert_eq!(
            spread.len(),
            16,
            "200 names reach every one of 16 partitions"
        );
    }
}
