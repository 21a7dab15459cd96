//! Log positions: what `resourceVersion` is.
//!
//! A position is a `u64` rendered as a decimal integer. It is derived from the backend's
//! 10-byte commit versionstamp (8-byte commit version, 2-byte order of the transaction inside
//! its commit batch) as `version << 16 | batch_order`. Each log append is one transaction
//! holding exactly one event, so a versionstamp names exactly one event and positions
//! increase strictly in log order on both backends. See ARCHITECTURE.md ("Positions").

use std::fmt;

/// The 10 bytes a backend fills in at commit: big-endian commit version then big-endian
/// batch order, byte-compatible with FoundationDB's versionstamps.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Versionstamp(pub [u8; 10]);

/// Placeholder bytes written where the backend will substitute the versionstamp.
pub const VERSIONSTAMP_PLACEHOLDER: [u8; 10] = [0xff; 10];

impl Versionstamp {
    /// Builds a versionstamp from its parts.
    pub fn new(version: u64, batch_order: u16) -> Self {
        let mut b = [0u8; 10];
        b[..8].copy_from_slice(&version.to_be_bytes());
        b[8..].copy_from_slice(&batch_order.to_be_bytes());
        Versionstamp(b)
    }

    /// The commit version part.
    pub fn version(&self) -> u64 {
        let mut v = [0u8; 8];
        v.copy_from_slice(&self.0[..8]);
        u64::from_be_bytes(v)
    }

    /// The order of the transaction inside its commit batch.
    pub fn batch_order(&self) -> u16 {
        u16::from_be_bytes([self.0[8], self.0[9]])
    }

    /// Reads a versionstamp from the first 10 bytes of `b`.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        let arr: [u8; 10] = b.get(..10)?.try_into().ok()?;
        Some(Versionstamp(arr))
    }
}

/// A position in the event log; `resourceVersion` rendered as decimal.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Position(pub u64);

/// Commit versions above this do not fit the 48 bits a position gives them.
pub const POSITION_VERSION_MAX: u64 = (1u64 << 48) - 1;

impl Position {
    /// Before the first event: subscribing or reading "after ZERO" yields the whole log.
    pub const ZERO: Position = Position(0);

    /// The position a versionstamp denotes. Backends refuse to commit past
    /// [`POSITION_VERSION_MAX`] (see ARCHITECTURE.md for the horizon this gives), so only
    /// damaged bytes can hold a larger version: they map to `Position(u64::MAX)`, which
    /// sorts after every real position and names no event. Readers of stored keys use
    /// [`Self::checked_from_versionstamp`] to report such damage instead.
    pub fn from_versionstamp(vs: Versionstamp) -> Self {
        Self::checked_from_versionstamp(vs).unwrap_or(Position(u64::MAX))
    }

    /// The position a versionstamp denotes, or `None` past the horizon (damaged bytes).
    pub fn checked_from_versionstamp(vs: Versionstamp) -> Option<Self> {
        let version = vs.version();
        (version <= POSITION_VERSION_MAX)
            .then(|| Position(version << 16 | u64::from(vs.batch_order())))
    }

    /// The versionstamp this position was derived from.
    pub fn versionstamp(self) -> Versionstamp {
        Versionstamp::new(self.0 >> 16, (self.0 & 0xffff) as u16)
    }

    /// The smallest position of a commit version (batch order 0).
    pub fn first_of_version(version: u64) -> Self {
        Position(version << 16)
    }

    /// The largest position a commit version could hold.
    pub fn last_of_version(version: u64) -> Self {
        Position(version << 16 | 0xffff)
    }

    /// Parses a decimal resourceVersion.
    pub fn parse(s: &str) -> Option<Self> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok().map(Position)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_through_versionstamps_and_keep_their_order() {
        let cases = [
            (1u64, 0u16),
            (1, 1),
            (1, 65535),
            (2, 0),
            (POSITION_VERSION_MAX, 7),
        ];
        let mut last = None;
        for (v, o) in cases {
            let vs = Versionstamp::new(v, o);
            let p = Position::from_versionstamp(vs);
            assert_eq!(p.versionstamp(), vs);
            if let Some(prev) = last {
                assert!(p > prev, "positions must increase with versionstamps");
            }
            last = Some(p);
        }
    }

    #[test]
    fn resource_versions_are_plain_decimal_integers() {
        assert_eq!(Position(65536).to_string(), "65536");
        assert_eq!(Position::parse("65536"), Some(Position(65536)));
        assert_eq!(Position::parse("-1"), None);
        assert_eq!(Position::parse("1e3"), None);
        assert_eq!(Position::parse(""), None);
        assert_eq!(Position::parse("99999999999999999999999"), None);
    }
}
