//! The embedded backend's write-ahead log: how a group commit becomes durable cheaply.
//!
//! Each group commit appends one record holding the batch's resolved mutations (versionstamps
//! substituted, atomic ops evaluated) and fsyncs it: one sequential write. Only then is the
//! batch committed to redb — without an fsync of its own — and acknowledged. A checkpoint (a
//! durable redb commit) every [`EmbeddedConfig::checkpoint_interval_ms`] makes the redb file
//! hold everything, after which the WAL is emptied. Opening replays the records newer than
//! the redb file's committed version.
//!
//! Record: `magic u32 | payload_len u32 | crc32c(version ‖ payload) u32 | version u64 | payload`
//! with payload a sequence of `op u8 | len u32 | key [| len u32 | value]`.
//!
//! Damage: a record that fails its checks with no valid record after it is a torn tail (a
//! crash during the write; never acknowledged) and is cut off. A damaged record followed by a
//! valid one is corruption in the middle and stops the open with an error naming its offset.
//!
//! [`EmbeddedConfig::checkpoint_interval_ms`]: super::embedded::EmbeddedConfig

use crate::error::{Error, Result};

pub const WAL_MAGIC: u32 = 0x4c42_5731; // "LBW1"
pub const WAL_HEADER_BYTES: usize = 4 + 4 + 4 + 8;
/// Largest record payload accepted when reading the WAL back, in bytes; the committer keeps
/// batches below it (`commit_batch_bytes_max`).
pub const WAL_RECORD_BYTES_MAX: usize = 1 << 30;

const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_DELETE_RANGE: u8 = 3;

/// One resolved mutation, as replay applies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalOp {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    DeleteRange(Vec<u8>, Vec<u8>),
}

fn push_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

/// Appends one op to a record payload under construction.
pub fn push_op(out: &mut Vec<u8>, op: &WalOp) {
    match op {
        WalOp::Put(k, v) => {
            out.push(OP_PUT);
            push_bytes(out, k);
            push_bytes(out, v);
        }
        WalOp::Delete(k) => {
            out.push(OP_DELETE);
            push_bytes(out, k);
        }
        WalOp::DeleteRange(b, e) => {
            out.push(OP_DELETE_RANGE);
            push_bytes(out, b);
            push_bytes(out, e);
        }
    }
}

/// Frames a payload as a record of `version`.
pub fn frame(version: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(WAL_HEADER_BYTES + payload.len());
    out.extend_from_slice(&WAL_MAGIC.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&version.to_be_bytes()), payload);
    out.extend_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Parses the record at the start of `b`: its version, payload and total size.
fn parse_record(b: &[u8]) -> Option<(u64, &[u8], usize)> {
    if u32_at(b, 0)? != WAL_MAGIC {
        return None;
    }
    let len = u32_at(b, 4)? as usize;
    if len > WAL_RECORD_BYTES_MAX {
        return None;
    }
    let crc = u32_at(b, 8)?;
    let version = u64::from_be_bytes(b.get(12..20)?.try_into().ok()?);
    let payload = b.get(WAL_HEADER_BYTES..WAL_HEADER_BYTES + len)?;
    if crc32c::crc32c_append(crc32c::crc32c(&version.to_be_bytes()), payload) != crc {
        return None;
    }
    Some((version, payload, WAL_HEADER_BYTES + len))
}

/// Decodes a record payload into its ops.
pub fn decode_ops(mut p: &[u8]) -> Option<Vec<WalOp>> {
    fn take<'a>(p: &mut &'a [u8]) -> Option<&'a [u8]> {
        let len = u32_at(p, 0)? as usize;
        let v = p.get(4..4 + len)?;
        *p = &p[4 + len..];
        Some(v)
    }
    let mut ops = Vec::new();
    while let Some((&op, rest)) = p.split_first() {
        p = rest;
        ops.push(match op {
            OP_PUT => {
                let k = take(&mut p)?.to_vec();
                WalOp::Put(k, take(&mut p)?.to_vec())
            }
            OP_DELETE => WalOp::Delete(take(&mut p)?.to_vec()),
            OP_DELETE_RANGE => {
                let b = take(&mut p)?.to_vec();
                WalOp::DeleteRange(b, take(&mut p)?.to_vec())
            }
            _ => return None,
        });
    }
    Some(ops)
}

/// What reading a WAL found.
#[derive(Debug, Default)]
pub struct WalContents {
    /// Every intact record, in order: (version, ops).
    pub records: Vec<(u64, Vec<WalOp>)>,
    /// Length of the intact prefix; bytes after it are a torn tail to cut off.
    pub valid_bytes: u64,
}

/// Reads a whole WAL. `location` names the file in errors.
///
/// # Errors
/// [`Error::Corrupt`] when a damaged record is followed by a valid one, or versions do not
/// follow each other.
pub fn read(location: &str, b: &[u8]) -> Result<WalContents> {
    let mut out = WalContents::default();
    let mut at = 0usize;
    while at < b.len() {
        let Some((version, payload, size)) = parse_record(&b[at..]) else {
            // Torn tail, unless a valid record follows the damage.
            let later = (at + 1..b.len()).find(|&p| {
                b[p..].starts_with(&WAL_MAGIC.to_be_bytes()) && parse_record(&b[p..]).is_some()
            });
            if let Some(p) = later {
                return Err(Error::Corrupt {
                    location: format!("{location} at byte {at}"),
                    detail: format!(
                        "a damaged write-ahead record is followed by a valid one at byte {p}"
                    ),
                });
            }
            break;
        };
        let ops = decode_ops(payload).ok_or_else(|| Error::Corrupt {
            location: format!("{location} at byte {at}"),
            detail: format!("record of version {version} passes its checksum but does not decode"),
        })?;
        if let Some((prev, _)) = out.records.last()
            && version != prev + 1
        {
            return Err(Error::Corrupt {
                location: format!("{location} at byte {at}"),
                detail: format!("version {version} follows version {prev}"),
            });
        }
        out.records.push((version, ops));
        at += size;
        out.valid_bytes = at as u64;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal(n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for v in 1..=n {
            let mut p = Vec::new();
            push_op(
                &mut p,
                &WalOp::Put(format!("k{v}").into_bytes(), vec![v as u8; 50]),
            );
            push_op(&mut p, &WalOp::Delete(b"gone".to_vec()));
            push_op(&mut p, &WalOp::DeleteRange(b"a".to_vec(), b"b".to_vec()));
            out.extend(frame(v, &p));
        }
        out
    }

    #[test]
    fn records_read_back_as_written() {
        let b = wal(3);
        let c = read("wal", &b).expect("reads");
        assert_eq!(c.records.len(), 3);
        assert_eq!(c.valid_bytes, b.len() as u64);
        assert_eq!(c.records[2].1[0], WalOp::Put(b"k3".to_vec(), vec![3; 50]));
    }

    #[test]
    fn a_tail_cut_anywhere_drops_only_the_torn_record() {
        let b = wal(5);
        let one = b.len() / 5;
        for cut in 0..b.len() {
            let c = read("wal", &b[..cut]).expect("a torn tail is not an error");
            assert_eq!(c.records.len(), cut / one, "cut at {cut}");
            assert_eq!(c.valid_bytes as usize, (cut / one) * one);
        }
    }

    #[test]
    fn damage_before_a_valid_record_is_an_error_naming_the_offset() {
        let b = wal(5);
        let one = b.len() / 5;
        for at in 0..(4 * one) {
            let mut d = b.clone();
            d[at] ^= 0x20;
            match read("wal", &d) {
                Err(Error::Corrupt { location, .. }) => {
                    assert!(location.contains("byte"), "{location}")
                }
                other => panic!("flip at {at}: expected Corrupt, got {other:?}"),
            }
        }
    }
}
