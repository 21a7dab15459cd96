//! RFC 6455 framing, the server's side of it: the opening handshake's accept key, frames
//! decoded from a client (masked, 7/16/64-bit lengths) and encoded towards it (never masked),
//! and fragmented messages reassembled with control frames passing between the fragments.
//! No extension is negotiated, so the reserved bits must be zero.

use base64::Engine;
use bytes::{Buf, BytesMut};
use sha1::{Digest, Sha1};

/// The GUID a server appends to `Sec-WebSocket-Key` before hashing (RFC 6455 §1.3).
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Control frames carry at most this many payload bytes (RFC 6455 §5.5).
pub const CONTROL_PAYLOAD_BYTES_MAX: usize = 125;

/// Close status codes (RFC 6455 §7.4.1).
pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
pub const CLOSE_TOO_BIG: u16 = 1009;

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`: base64(SHA-1(key ‖ GUID)).
pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.trim().as_bytes());
    h.update(ACCEPT_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Whether `key` is a valid `Sec-WebSocket-Key`: base64 of 16 bytes (RFC 6455 §4.1).
pub fn valid_key(key: &str) -> bool {
    base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .is_ok_and(|k| k.len() == 16)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    fn from_bits(b: u8) -> Option<Self> {
        Some(match b {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// One frame, unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: Opcode,
    pub payload: Vec<u8>,
}

/// Why a peer's frames cannot be read on; [`WsError::close_code`] is the status to close with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WsError {
    #[error("reserved bits set, but no extension was negotiated")]
    Reserved,
    #[error("unknown opcode {0:#x}")]
    Opcode(u8),
    #[error("a client frame is not masked")]
    Unmasked,
    #[error("a control frame is fragmented or longer than 125 bytes")]
    BadControl,
    #[error("a message of {0} bytes is over the limit")]
    TooBig(u64),
    #[error("a continuation frame with no message to continue")]
    UnexpectedContinuation,
    #[error("a new message began before the previous one ended")]
    UnfinishedMessage,
}

impl WsError {
    pub fn close_code(&self) -> u16 {
        match self {
            Self::TooBig(_) => CLOSE_TOO_BIG,
            _ => CLOSE_PROTOCOL_ERROR,
        }
    }
}

/// Takes one frame off the front of `buf`, or `Ok(None)` (and `buf` untouched) until all of
/// it has arrived. `require_mask` is the server's rule for client frames; a payload longer
/// than `payload_bytes_max` is refused from its header, before it is buffered.
///
/// # Errors
/// A frame that breaks RFC 6455 or the bound.
pub fn decode_frame(
    buf: &mut BytesMut,
    require_mask: bool,
    payload_bytes_max: usize,
) -> Result<Option<Frame>, WsError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(WsError::Reserved);
    }
    let fin = b0 & 0x80 != 0;
    let opcode = Opcode::from_bits(b0 & 0x0F).ok_or(WsError::Opcode(b0 & 0x0F))?;
    let masked = b1 & 0x80 != 0;
    if require_mask && !masked {
        return Err(WsError::Unmasked);
    }
    let (len, mut at) = match b1 & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            // The most significant bit must be 0; such a length is over any bound anyway.
            (u64::from_be_bytes(b), 10)
        }
        n => (u64::from(n), 2),
    };
    if opcode.is_control() && (!fin || len > CONTROL_PAYLOAD_BYTES_MAX as u64) {
        return Err(WsError::BadControl);
    }
    if len > payload_bytes_max as u64 {
        return Err(WsError::TooBig(len));
    }
    let len = len as usize;
    let mask = if masked {
        if buf.len() < at + 4 {
            return Ok(None);
        }
        let m = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
        at += 4;
        Some(m)
    } else {
        None
    };
    if buf.len() < at + len {
        return Ok(None);
    }
    buf.advance(at);
    let mut payload = buf.split_to(len).to_vec();
    if let Some(m) = mask {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= m[i % 4];
        }
    }
    Ok(Some(Frame {
        fin,
        opcode,
        payload,
    }))
}

/// Appends one frame to `out`: masked with `mask` (a client's frame, for tests) or, as a
/// server sends them, not at all.
pub fn encode_frame(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: Opcode,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    out.push(if fin { 0x80 } else { 0 } | opcode.bits());
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => out.push(mask_bit | n as u8),
        n @ 126..=0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(m) => {
            out.extend_from_slice(&m);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
}

/// A close frame's payload: the status code, big-endian.
pub fn close_payload(code: u16) -> [u8; 2] {
    code.to_be_bytes()
}

/// What a client said, once fragments are put together.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A whole text or binary message.
    Message(Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    /// The client's close, with its status code if it gave one.
    Close(Option<u16>),
}

/// Puts fragmented messages back together (RFC 6455 §5.4), bounded by `message_bytes_max`.
pub struct Assembler {
    partial: Option<Vec<u8>>,
    message_bytes_max: usize,
}

impl Assembler {
    pub fn new(message_bytes_max: usize) -> Self {
        Self {
            partial: None,
            message_bytes_max,
        }
    }

    /// Feeds one frame; a whole message or a control frame comes out.
    ///
    /// # Errors
    /// Fragments out of order, or a message over the bound.
    pub fn push(&mut self, f: Frame) -> Result<Option<Incoming>, WsError> {
        match f.opcode {
            Opcode::Ping => Ok(Some(Incoming::Ping(f.payload))),
            Opcode::Pong => Ok(Some(Incoming::Pong)),
            Opcode::Close => {
                Ok(Some(Incoming::Close((f.payload.len() >= 2).then(|| {
                    u16::from_be_bytes([f.payload[0], f.payload[1]])
                }))))
            }
            Opcode::Text | Opcode::Binary => {
                if self.partial.is_some() {
                    return Err(WsError::UnfinishedMessage);
                }
                if f.fin {
                    return Ok(Some(Incoming::Message(f.payload)));
                }
                self.partial = Some(f.payload);
                Ok(None)
            }
            Opcode::Continuation => {
                let Some(mut m) = self.partial.take() else {
                    return Err(WsError::UnexpectedContinuation);
                };
                let len = m.len() + f.payload.len();
                if len > self.message_bytes_max {
                    return Err(WsError::TooBig(len as u64));
                }
                m.extend_from_slice(&f.payload);
                if f.fin {
                    return Ok(Some(Incoming::Message(m)));
                }
                self.partial = Some(m);
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    fn client_frame(fin: bool, opcode: Opcode, payload: &[u8]) -> BytesMut {
        let mut v = Vec::new();
        encode_frame(&mut v, fin, opcode, payload, Some([0x37, 0xfa, 0x21, 0x3d]));
        BytesMut::from(&v[..])
    }

    #[test]
    fn the_accept_key_is_the_one_rfc_6455_gives_for_its_sample_key() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert!(valid_key("dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!valid_key("c2hvcnQ="));
        assert!(!valid_key("not base64!"));
    }

    #[test]
    fn a_masked_client_frame_decodes_to_its_unmasked_payload() {
        // RFC 6455 §5.7: a masked "Hello".
        let mut b = BytesMut::from(
            &[
                0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
            ][..],
        );
        let f = decode_frame(&mut b, true, MAX)
            .expect("valid")
            .expect("whole");
        assert_eq!(
            f,
            Frame {
                fin: true,
                opcode: Opcode::Text,
                payload: b"Hello".to_vec()
            }
        );
        assert!(b.is_empty());
    }

    #[test]
    fn an_unmasked_client_frame_is_a_protocol_error() {
        let mut v = Vec::new();
        encode_frame(&mut v, true, Opcode::Binary, b"x", None);
        let e = decode_frame(&mut BytesMut::from(&v[..]), true, MAX).expect_err("unmasked");
        assert_eq!(e, WsError::Unmasked);
        assert_eq!(e.close_code(), CLOSE_PROTOCOL_ERROR);
    }

    #[test]
    fn server_frames_are_never_masked_and_use_the_shortest_length_form() {
        for (len, header) in [
            (0usize, 2usize),
            (125, 2),
            (126, 4),
            (65_535, 4),
            (65_536, 10),
        ] {
            let payload = vec![7u8; len];
            let mut v = Vec::new();
            encode_frame(&mut v, true, Opcode::Binary, &payload, None);
            assert_eq!(v.len(), header + len, "length {len}");
            assert_eq!(v[1] & 0x80, 0, "length {len}: the mask bit is clear");
            let f = decode_frame(&mut BytesMut::from(&v[..]), false, MAX)
                .expect("valid")
                .expect("whole");
            assert_eq!(f.payload, payload, "length {len}");
        }
    }

    #[test]
    fn masked_frames_with_16_and_64_bit_lengths_round_trip() {
        for len in [126usize, 300, 65_535, 65_536, 200_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut b = client_frame(true, Opcode::Binary, &payload);
            let want = if len <= 0xFFFF { 126 } else { 127 };
            assert_eq!(b[1] & 0x7F, want, "length {len}");
            let f = decode_frame(&mut b, true, MAX)
                .expect("valid")
                .expect("whole");
            assert_eq!(f.payload, payload, "length {len}");
        }
    }

    #[test]
    fn a_partial_frame_waits_for_its_remaining_bytes() {
        let whole = client_frame(true, Opcode::Binary, &[1u8; 300]);
        for cut in [1, 3, 5, 8, whole.len() - 1] {
            let mut b = BytesMut::from(&whole[..cut]);
            assert_eq!(decode_frame(&mut b, true, MAX), Ok(None), "cut at {cut}");
            assert_eq!(b.len(), cut, "nothing consumed at {cut}");
        }
    }

    #[test]
    fn a_frame_over_the_bound_is_refused_from_its_header() {
        // Only the header of a 2 MiB frame has arrived.
        let mut b = BytesMut::from(&[0x82u8, 0xFF, 0, 0, 0, 0, 0, 0x20, 0, 0][..]);
        let e = decode_frame(&mut b, true, MAX).expect_err("too big");
        assert_eq!(e, WsError::TooBig(2 << 20));
        assert_eq!(e.close_code(), CLOSE_TOO_BIG);
    }

    #[test]
    fn reserved_bits_unknown_opcodes_and_long_control_frames_are_refused() {
        let mut b = BytesMut::from(&[0xC2u8, 0x80, 0, 0, 0, 0][..]);
        assert_eq!(decode_frame(&mut b, true, MAX), Err(WsError::Reserved));
        let mut b = BytesMut::from(&[0x83u8, 0x80, 0, 0, 0, 0][..]);
        assert_eq!(decode_frame(&mut b, true, MAX), Err(WsError::Opcode(3)));
        let mut b = client_frame(true, Opcode::Ping, &[0u8; 126]);
        assert_eq!(decode_frame(&mut b, true, MAX), Err(WsError::BadControl));
        let mut b = client_frame(false, Opcode::Ping, b"p");
        assert_eq!(decode_frame(&mut b, true, MAX), Err(WsError::BadControl));
    }

    #[test]
    fn fragments_reassemble_with_a_ping_between_them() {
        let mut wire = BytesMut::new();
        wire.extend_from_slice(&client_frame(false, Opcode::Binary, &[0, b'a']));
        wire.extend_from_slice(&client_frame(true, Opcode::Ping, b"hb"));
        wire.extend_from_slice(&client_frame(false, Opcode::Continuation, b"bc"));
        wire.extend_from_slice(&client_frame(true, Opcode::Continuation, b"d"));
        let mut asm = Assembler::new(MAX);
        let mut got = Vec::new();
        while let Some(f) = decode_frame(&mut wire, true, MAX).expect("valid") {
            if let Some(m) = asm.push(f).expect("in order") {
                got.push(m);
            }
        }
        assert_eq!(
            got,
            [
                Incoming::Ping(b"hb".to_vec()),
                Incoming::Message(vec![0, b'a', b'b', b'c', b'd'])
            ]
        );
    }

    #[test]
    fn fragments_out_of_order_or_over_the_bound_are_refused() {
        let f = |fin, opcode, p: &[u8]| Frame {
            fin,
            opcode,
            payload: p.to_vec(),
        };
        let mut asm = Assembler::new(4);
        assert_eq!(
            asm.push(f(true, Opcode::Continuation, b"x")),
            Err(WsError::UnexpectedContinuation)
        );
        assert_eq!(asm.push(f(false, Opcode::Binary, b"ab")), Ok(None));
        assert_eq!(
            asm.push(f(true, Opcode::Binary, b"c")),
            Err(WsError::UnfinishedMessage)
        );
        let mut asm = Assembler::new(4);
        assert_eq!(asm.push(f(false, Opcode::Binary, b"abc")), Ok(None));
        assert_eq!(
            asm.push(f(true, Opcode::Continuation, b"de")),
            Err(WsError::TooBig(5))
        );
    }

    #[test]
    fn a_close_frame_carries_its_status_code() {
        let mut b = client_frame(true, Opcode::Close, &close_payload(CLOSE_NORMAL));
        let f = decode_frame(&mut b, true, MAX)
            .expect("valid")
            .expect("whole");
        assert_eq!(
            Assembler::new(MAX).push(f),
            Ok(Some(Incoming::Close(Some(1000))))
        );
        let f = Frame {
            fin: true,
            opcode: Opcode::Close,
            payload: Vec::new(),
        };
        assert_eq!(Assembler::new(MAX).push(f), Ok(Some(Incoming::Close(None))));
    }
}
