//! The protobuf wire format, read-only and bounds-checked: every length is checked
//! against the bytes that remain before it is used, so no input can index out of range.

use super::ProtoError;

/// The wire types Kubernetes messages use (groups, 3 and 4, never appear: proto2 groups
/// are not used by any generated.proto).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum WireType {
    Varint,
    Fixed64,
    Len,
    Fixed32,
}

impl WireType {
    fn from_key(key: u64) -> Result<Self, ProtoError> {
        match key & 7 {
            0 => Ok(Self::Varint),
            1 => Ok(Self::Fixed64),
            2 => Ok(Self::Len),
            5 => Ok(Self::Fixed32),
            other => Err(ProtoError(format!(
                "unsupported protobuf wire type {other}"
            ))),
        }
    }
}

/// A cursor over one message's bytes.
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    /// Offset into the outermost message this one started at, for error messages.
    base: usize,
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8], base: usize) -> Self {
        Self { buf, base, pos: 0 }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// The absolute offset of the cursor, for error messages and nested readers.
    pub(super) fn offset(&self) -> usize {
        self.base + self.pos
    }

    fn err(&self, what: &str) -> ProtoError {
        ProtoError(format!("protobuf: {what} at byte {}", self.offset()))
    }

    pub(super) fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(self.err("truncated varint"));
            };
            self.pos += 1;
            // The tenth byte may only carry the top bit of a u64.
            if i == 9 && b > 1 {
                return Err(self.err("varint overflows 64 bits"));
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err(self.err("varint longer than 10 bytes"))
    }

    /// The next field's (tag, wire type).
    pub(super) fn key(&mut self) -> Result<(u32, WireType), ProtoError> {
        let key = self.varint()?;
        let tag = key >> 3;
        if tag == 0 || tag > u64::from(u32::MAX >> 3) {
            return Err(self.err(&format!("invalid field number {tag}")));
        }
        let wire = WireType::from_key(key)?;
        Ok((tag as u32, wire))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.buf.len())
            .ok_or_else(|| self.err(&format!("length {n} runs past the end of the message")))?;
        let bytes = self
            .buf
            .get(self.pos..end)
            .ok_or_else(|| self.err("bad range"))?;
        self.pos = end;
        Ok(bytes)
    }

    /// A length-delimited payload: the bytes and their absolute offset.
    pub(super) fn len_delimited(&mut self) -> Result<(&'a [u8], usize), ProtoError> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| self.err("length does not fit in memory"))?;
        let at = self.offset();
        Ok((self.take(len)?, at))
    }

    pub(super) fn fixed64(&mut self) -> Result<u64, ProtoError> {
        let bytes = self.take(8)?;
        let arr: [u8; 8] = bytes.try_into().map_err(|_| self.err("bad fixed64"))?;
        Ok(u64::from_le_bytes(arr))
    }

    fn fixed32(&mut self) -> Result<u32, ProtoError> {
        let bytes = self.take(4)?;
        let arr: [u8; 4] = bytes.try_into().map_err(|_| self.err("bad fixed32"))?;
        Ok(u32::from_le_bytes(arr))
    }

    /// Skips a field this schema does not know.
    pub(super) fn skip(&mut self, wire: WireType) -> Result<(), ProtoError> {
        match wire {
            WireType::Varint => self.varint().map(drop),
            WireType::Fixed64 => self.fixed64().map(drop),
            WireType::Len => self.len_delimited().map(drop),
            WireType::Fixed32 => self.fixed32().map(drop),
        }
    }
}

/// A singular field's last value as raw wire data, for the small special messages.
#[derive(Clone, Copy, Debug)]
pub(super) enum Raw<'a> {
    Varint(u64),
    /// A length-delimited payload and its absolute offset.
    Bytes(&'a [u8], usize),
    Other,
}

/// The last value of fields 1..=N of a flat message (what proto2 keeps of a singular
/// scalar field); other tags are skipped.
pub(super) fn flat_fields<const N: usize>(
    buf: &[u8],
    base: usize,
) -> Result<[Option<Raw<'_>>; N], ProtoError> {
    let mut out = [None; N];
    let mut r = Reader::new(buf, base);
    while !r.is_empty() {
        let (tag, wire) = r.key()?;
        let value = match wire {
            WireType::Varint => Raw::Varint(r.varint()?),
            WireType::Len => {
                let (bytes, at) = r.len_delimited()?;
                Raw::Bytes(bytes, at)
            }
            other => {
                r.skip(other)?;
                Raw::Other
            }
        };
        let slot = usize::try_from(tag)
            .ok()
            .and_then(|t| t.checked_sub(1))
            .and_then(|i| out.get_mut(i));
        if let Some(slot) = slot {
            *slot = Some(value);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_decode_up_to_ten_bytes_and_reject_overflow() {
        let cases: &[(&[u8], Option<u64>)] = &[
            (&[0x00], Some(0)),
            (&[0x96, 0x01], Some(150)),
            (
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
                Some(u64::MAX),
            ),
            (
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
                None,
            ),
            (
                &[
                    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00,
                ],
                None,
            ),
            (&[0x80], None),
            (&[], None),
        ];
        for (bytes, want) in cases {
            let got = Reader::new(bytes, 0).varint().ok();
            assert_eq!(got, *want, "{bytes:02x?}");
        }
    }

    #[test]
    fn lengths_past_the_end_of_the_message_are_rejected() {
        // Field 1, length 5, only 2 bytes follow.
        let err = Reader::new(&[0x0a, 0x05, 0x61, 0x62], 0)
            .skip_field_for_test()
            .map(drop);
        assert!(err.is_err());
        // A length near u64::MAX must not overflow the cursor.
        let mut huge = vec![0x0a];
        huge.extend([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert!(Reader::new(&huge, 0).skip_field_for_test().is_err());
    }

    #[test]
    fn field_number_zero_and_group_wire_types_are_rejected() {
        assert!(Reader::new(&[0x00], 0).key().is_err());
        assert!(Reader::new(&[0x0b], 0).key().is_err()); // field 1, start group
    }

    impl Reader<'_> {
        fn skip_field_for_test(&mut self) -> Result<(), ProtoError> {
            let (_, wire) = self.key()?;
            self.skip(wire)
        }
    }
}
