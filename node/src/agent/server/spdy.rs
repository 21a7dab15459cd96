//! SPDY/3.1 framing, as much of it as a client of a kubelet-style streaming server needs
//! (the draft 3 spec; the peer is `github.com/moby/spdystream`): frames decoded and encoded,
//! and name/value header blocks compressed with zlib and the spec's preset dictionary, one
//! zlib stream per direction per connection, each block ended with a sync flush.
//!
//! Wire layout (big-endian):
//! - control frame: `1 | version:15 | type:16`, `flags:8 | length:24`, then `length` bytes;
//! - data frame: `0 | stream-id:31`, `flags:8 | length:24`, then `length` bytes;
//! - header block (before compression): `count:32`, then per pair `len:32 name len:32 value`,
//!   names lowercase, several values of one name joined by NUL.

use std::sync::LazyLock;

use bytes::{Buf, Bytes, BytesMut};
use flate2::{Compress, Compression, FlushCompress};
#[cfg(test)]
use flate2::{Decompress, FlushDecompress};

pub const VERSION: u16 = 3;
/// The largest frame accepted from the peer, in bytes (the protocol allows 2^24 - 1). The
/// streaming server copies a process's output in 32 KiB writes, one data frame each.
pub const FRAME_BYTES_MAX: usize = 1 << 20;
/// The largest header block accepted once decompressed, in bytes.
#[cfg(test)]
pub const HEADER_BLOCK_BYTES_MAX: usize = 64 * 1024;

pub const TYPE_SYN_STREAM: u16 = 1;
pub const TYPE_SYN_REPLY: u16 = 2;
pub const TYPE_RST_STREAM: u16 = 3;
pub const TYPE_PING: u16 = 6;
pub const TYPE_GOAWAY: u16 = 7;
pub const TYPE_HEADERS: u16 = 8;

/// FLAG_FIN on data, SYN_STREAM, SYN_REPLY and HEADERS frames: the sender's half is done.
pub const FLAG_FIN: u8 = 0x01;

/// RST_STREAM status codes.
pub const RST_REFUSED_STREAM: u32 = 3;
pub const RST_CANCEL: u32 = 5;

/// The names of the SPDY/3 header dictionary, each written as `len:32 name`.
const DICTIONARY_NAMES: [&str; 65] = [
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];
/// The SPDY/3 header dictionary's raw tail, after the length-prefixed names.
const DICTIONARY_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,",
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

/// The zlib preset dictionary of SPDY/3 header blocks (draft 3, §2.6.10.1), 1423 bytes. The
/// peer's zlib reader checks its Adler-32 against the id in our stream's header.
pub fn dictionary() -> &'static [u8] {
    static DICT: LazyLock<Vec<u8>> = LazyLock::new(|| {
        let mut d = Vec::with_capacity(1423);
        for n in DICTIONARY_NAMES {
            d.extend_from_slice(&(n.len() as u32).to_be_bytes());
            d.extend_from_slice(n.as_bytes());
        }
        d.extend_from_slice(DICTIONARY_TAIL.as_bytes());
        d
    });
    &DICT
}

/// Why the peer's SPDY cannot be read on.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("a frame of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("SPDY version {0}, not 3")]
    Version(u16),
    #[error("a {kind} frame of {len} bytes is malformed")]
    Malformed { kind: &'static str, len: usize },
    #[error("header compression: {0}")]
    Zlib(String),
    #[cfg(test)]
    #[error("a header block is malformed")]
    HeaderBlock,
}

/// One frame as read; header blocks are left compressed (see [`HeaderDecoder`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream: u32,
        fin: bool,
        data: Bytes,
    },
    SynStream {
        stream: u32,
        associated: u32,
        priority: u8,
        fin: bool,
        header_block: Bytes,
    },
    SynReply {
        stream: u32,
        fin: bool,
        header_block: Bytes,
    },
    RstStream {
        stream: u32,
        status: u32,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good: u32,
        status: u32,
    },
    Headers {
        stream: u32,
        fin: bool,
        header_block: Bytes,
    },
    /// SETTINGS, WINDOW_UPDATE and types this client has no use for.
    Other {
        kind: u16,
    },
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Takes one frame off the front of `buf`, or `Ok(None)` (and `buf` untouched) until all of it
/// has arrived. A frame over [`FRAME_BYTES_MAX`] is refused from its header.
///
/// # Errors
/// An oversized or malformed frame, or another SPDY version.
pub fn decode_frame(buf: &mut BytesMut) -> Result<Option<Frame>, SpdyError> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let first = u32_at(buf, 0);
    let flags = buf[4];
    let len = (u32_at(buf, 4) & 0x00FF_FFFF) as usize;
    if len > FRAME_BYTES_MAX {
        return Err(SpdyError::TooLarge(len));
    }
    if buf.len() < 8 + len {
        return Ok(None);
    }
    buf.advance(8);
    let body = buf.split_to(len).freeze();
    let fin = flags & FLAG_FIN != 0;
    if first & 0x8000_0000 == 0 {
        return Ok(Some(Frame::Data {
            stream: first & 0x7FFF_FFFF,
            fin,
            data: body,
        }));
    }
    let version = ((first >> 16) & 0x7FFF) as u16;
    if version != VERSION {
        return Err(SpdyError::Version(version));
    }
    let kind = (first & 0xFFFF) as u16;
    let need = |kind: &'static str, min: usize| {
        if len < min {
            Err(SpdyError::Malformed { kind, len })
        } else {
            Ok(())
        }
    };
    let id = |at: usize| u32_at(&body, at) & 0x7FFF_FFFF;
    Ok(Some(match kind {
        TYPE_SYN_STREAM => {
            need("SYN_STREAM", 10)?;
            Frame::SynStream {
                stream: id(0),
                associated: id(4),
                priority: body[8] >> 5,
                fin,
                header_block: body.slice(10..),
            }
        }
        TYPE_SYN_REPLY => {
            need("SYN_REPLY", 4)?;
            Frame::SynReply {
                stream: id(0),
                fin,
                header_block: body.slice(4..),
            }
        }
        TYPE_RST_STREAM => {
            need("RST_STREAM", 8)?;
            Frame::RstStream {
                stream: id(0),
                status: u32_at(&body, 4),
            }
        }
        TYPE_PING => {
            need("PING", 4)?;
            Frame::Ping {
                id: u32_at(&body, 0),
            }
        }
        TYPE_GOAWAY => {
            need("GOAWAY", 8)?;
            Frame::GoAway {
                last_good: id(0),
                status: u32_at(&body, 4),
            }
        }
        TYPE_HEADERS => {
            need("HEADERS", 4)?;
            Frame::Headers {
                stream: id(0),
                fin,
                header_block: body.slice(4..),
            }
        }
        kind => Frame::Other { kind },
    }))
}

fn control(out: &mut Vec<u8>, kind: u16, flags: u8, body_len: usize) {
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&((u32::from(flags) << 24) | body_len as u32).to_be_bytes());
}

/// Appends a SYN_STREAM opening client stream `stream` (odd) with a compressed header block.
pub fn encode_syn_stream(out: &mut Vec<u8>, stream: u32, fin: bool, header_block: &[u8]) {
    control(
        out,
        TYPE_SYN_STREAM,
        if fin { FLAG_FIN } else { 0 },
        10 + header_block.len(),
    );
    out.extend_from_slice(&(stream & 0x7FFF_FFFF).to_be_bytes());
    // Associated-to stream 0, priority 0 (highest, as spdystream's default), slot 0.
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(header_block);
}

/// Appends a data frame; `data` must be at most 2^24 - 1 bytes (callers chunk by far less).
pub fn encode_data(out: &mut Vec<u8>, stream: u32, fin: bool, data: &[u8]) {
    debug_assert!(data.len() < 1 << 24);
    out.extend_from_slice(&(stream & 0x7FFF_FFFF).to_be_bytes());
    let flags = if fin { FLAG_FIN } else { 0 };
    out.extend_from_slice(&((u32::from(flags) << 24) | data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
}

pub fn encode_rst_stream(out: &mut Vec<u8>, stream: u32, status: u32) {
    control(out, TYPE_RST_STREAM, 0, 8);
    out.extend_from_slice(&(stream & 0x7FFF_FFFF).to_be_bytes());
    out.extend_from_slice(&status.to_be_bytes());
}

pub fn encode_ping(out: &mut Vec<u8>, id: u32) {
    control(out, TYPE_PING, 0, 4);
    out.extend_from_slice(&id.to_be_bytes());
}

pub fn encode_goaway(out: &mut Vec<u8>, last_good: u32, status: u32) {
    control(out, TYPE_GOAWAY, 0, 8);
    out.extend_from_slice(&(last_good & 0x7FFF_FFFF).to_be_bytes());
    out.extend_from_slice(&status.to_be_bytes());
}

/// This side's header compressor: one zlib stream for the connection's life.
pub struct HeaderEncoder {
    z: Compress,
}

impl HeaderEncoder {
    /// # Errors
    /// The zlib backend refused the dictionary.
    pub fn new() -> Result<Self, SpdyError> {
        // spdystream compresses with zlib.BestCompression; any level reads back the same.
        let mut z = Compress::new(Compression::best(), true);
        z.set_dictionary(dictionary())
            .map_err(|e| SpdyError::Zlib(e.to_string()))?;
        Ok(Self { z })
    }

    /// The compressed header block for `pairs` (names are lowercased, as SPDY requires).
    ///
    /// # Errors
    /// A zlib failure.
    pub fn encode(&mut self, pairs: &[(&str, &str)]) -> Result<Vec<u8>, SpdyError> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(pairs.len() as u32).to_be_bytes());
        for (name, value) in pairs {
            let name = name.to_ascii_lowercase();
            raw.extend_from_slice(&(name.len() as u32).to_be_bytes());
            raw.extend_from_slice(name.as_bytes());
            raw.extend_from_slice(&(value.len() as u32).to_be_bytes());
            raw.extend_from_slice(value.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut used = 0usize;
        loop {
            let before = self.z.total_in();
            self.z
                .compress_vec(&raw[used..], &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::Zlib(e.to_string()))?;
            used += (self.z.total_in() - before) as usize;
            // The flush is complete once the input is used up and output space was left over.
            if used == raw.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            out.reserve(out.capacity().max(64));
        }
    }
}

/// The receiving side of header compression: one zlib stream for the connection's life, so
/// every header block the peer sends must pass through it, in order. Only tests use it (to
/// read back what [`HeaderEncoder`] wrote): this client never needs the server's headers, a
/// SYN_REPLY's are empty, so it leaves them compressed.
#[cfg(test)]
pub struct HeaderDecoder {
    z: Decompress,
}

#[cfg(test)]
impl Default for HeaderDecoder {
    fn default() -> Self {
        Self {
            z: Decompress::new(true),
        }
    }
}

#[cfg(test)]
impl HeaderDecoder {
    /// The name/value pairs of one header block (a value with NULs stays one string).
    ///
    /// # Errors
    /// A zlib failure (a wrong dictionary included), or a block that is malformed or over
    /// [`HEADER_BLOCK_BYTES_MAX`].
    pub fn decode(&mut self, block: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
        let mut raw = Vec::with_capacity(block.len() * 4 + 64);
        let mut used = 0usize;
        loop {
            let before = self.z.total_in();
            let r = self
                .z
                .decompress_vec(&block[used..], &mut raw, FlushDecompress::Sync);
            used += (self.z.total_in() - before) as usize;
            match r {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.z
                        .set_dictionary(dictionary())
                        .map_err(|e| SpdyError::Zlib(e.to_string()))?;
                    continue;
                }
                Err(e) => return Err(SpdyError::Zlib(e.to_string())),
            }
            if used == block.len() && raw.len() < raw.capacity() {
                break;
            }
            if raw.len() >= HEADER_BLOCK_BYTES_MAX {
                return Err(SpdyError::TooLarge(raw.len()));
            }
            raw.reserve(raw.capacity().max(64));
        }
        parse_header_block(&raw)
    }
}

#[cfg(test)]
fn parse_header_block(raw: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
    let mut b = raw;
    let mut take = |n: usize| -> Result<&[u8], SpdyError> {
        if b.len() < n {
            return Err(SpdyError::HeaderBlock);
        }
        let (h, t) = b.split_at(n);
        b = t;
        Ok(h)
    };
    let count = u32_at(take(4)?, 0) as usize;
    let mut pairs = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let n = u32_at(take(4)?, 0) as usize;
        let name = String::from_utf8_lossy(take(n)?).into_owned();
        let n = u32_at(take(4)?, 0) as usize;
        let value = String::from_utf8_lossy(take(n)?).into_owned();
        pairs.push((name, value));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adler32(d: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for &x in d {
            a = (a + u32::from(x)) % 65_521;
            b = (b + a) % 65_521;
        }
        (b << 16) | a
    }

    #[test]
    fn the_header_dictionary_is_spdy3s_by_length_and_adler32() {
        // The dictionary id that spdystream's zlib reader expects in our stream's header.
        assert_eq!(dictionary().len(), 1423);
        assert_eq!(adler32(dictionary()), 0xe3c6_a7c2);
    }

    #[test]
    fn a_syn_stream_decodes_with_its_headers_through_the_peers_zlib_stream() {
        let mut enc = HeaderEncoder::new().expect("encoder");
        let mut dec = HeaderDecoder::default();
        let mut wire = Vec::new();
        for (id, kind) in [(1u32, "error"), (3, "stdin"), (5, "stdout")] {
            let block = enc.encode(&[("streamType", kind)]).expect("compress");
            encode_syn_stream(&mut wire, id, false, &block);
        }
        // The zlib stream's header names the dictionary by its Adler-32 (FDICT set).
        assert_eq!(wire[18], 0x78);
        assert_eq!(wire[19] & 0x20, 0x20, "FDICT");
        assert_eq!(u32_at(&wire, 20), 0xe3c6_a7c2);
        let mut buf = BytesMut::from(&wire[..]);
        for (id, kind) in [(1u32, "error"), (3, "stdin"), (5, "stdout")] {
            let Some(Frame::SynStream {
                stream,
                associated,
                priority,
                fin,
                header_block,
            }) = decode_frame(&mut buf).expect("valid")
            else {
                panic!("a SYN_STREAM for stream {id}");
            };
            assert_eq!((stream, associated, priority, fin), (id, 0, 0, false));
            assert_eq!(
                dec.decode(&header_block).expect("decompress"),
                [("streamtype".to_string(), kind.to_string())],
                "stream {id}: names are lowercased on the wire"
            );
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn data_frames_carry_their_stream_payload_and_fin() {
        let mut wire = Vec::new();
        encode_data(&mut wire, 3, false, b"typed-in\n");
        encode_data(&mut wire, 3, true, b"");
        assert_eq!(&wire[..8], &[0, 0, 0, 3, 0, 0, 0, 9]);
        assert_eq!(&wire[17..], &[0, 0, 0, 3, FLAG_FIN, 0, 0, 0]);
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(
            decode_frame(&mut buf).expect("valid"),
            Some(Frame::Data {
                stream: 3,
                fin: false,
                data: Bytes::from_static(b"typed-in\n")
            })
        );
        assert_eq!(
            decode_frame(&mut buf).expect("valid"),
            Some(Frame::Data {
                stream: 3,
                fin: true,
                data: Bytes::new()
            })
        );
        assert_eq!(decode_frame(&mut buf).expect("valid"), None);
    }

    #[test]
    fn control_frames_round_trip_and_unknown_ones_are_skipped() {
        let mut wire = Vec::new();
        encode_ping(&mut wire, 2);
        encode_rst_stream(&mut wire, 5, RST_CANCEL);
        encode_goaway(&mut wire, 0, 0);
        // A WINDOW_UPDATE (stream 1, delta 4096), then an unknown type 0x42 with a body.
        wire.extend_from_slice(&[0x80, 3, 0, 9, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0x10, 0]);
        wire.extend_from_slice(&[0x80, 3, 0, 0x42, 0, 0, 0, 2, 0xAB, 0xCD]);
        let mut buf = BytesMut::from(&wire[..]);
        let mut got = Vec::new();
        while let Some(f) = decode_frame(&mut buf).expect("valid") {
            got.push(f);
        }
        assert_eq!(
            got,
            [
                Frame::Ping { id: 2 },
                Frame::RstStream {
                    stream: 5,
                    status: RST_CANCEL
                },
                Frame::GoAway {
                    last_good: 0,
                    status: 0
                },
                Frame::Other { kind: 9 },
                Frame::Other { kind: 0x42 },
            ]
        );
    }

    #[test]
    fn a_partial_frame_waits_and_an_oversized_one_is_refused_from_its_header() {
        let mut wire = Vec::new();
        encode_data(&mut wire, 1, false, &[9u8; 100]);
        for cut in [0, 4, 8, 107] {
            let mut buf = BytesMut::from(&wire[..cut]);
            assert_eq!(decode_frame(&mut buf).expect("valid"), None, "cut at {cut}");
            assert_eq!(buf.len(), cut);
        }
        let mut buf = BytesMut::from(&[0u8, 0, 0, 1, 0, 0x20, 0, 0][..]);
        assert!(matches!(
            decode_frame(&mut buf),
            Err(SpdyError::TooLarge(0x20_0000))
        ));
        let mut buf = BytesMut::from(&[0x80u8, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1][..]);
        assert!(matches!(decode_frame(&mut buf), Err(SpdyError::Version(2))));
        let mut buf = BytesMut::from(&[0x80u8, 3, 0, 3, 0, 0, 0, 4, 0, 0, 0, 1][..]);
        assert!(matches!(
            decode_frame(&mut buf),
            Err(SpdyError::Malformed { .. })
        ));
    }

    #[test]
    fn a_truncated_header_block_is_malformed() {
        assert!(matches!(
            parse_header_block(&[0, 0, 0, 1, 0, 0, 0, 9, b'x']),
            Err(SpdyError::HeaderBlock)
        ));
        assert_eq!(parse_header_block(&[0, 0, 0, 0]).expect("empty"), []);
    }
}
