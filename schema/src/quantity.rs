//! `resource.Quantity` (`500m`, `1.5Gi`, `2e3`): parsing and ordering, as apimachinery's
//! `ParseQuantity` and `Quantity.Cmp` do, for the checks validation makes on resource
//! requirements (a request may not exceed its limit, no quantity is negative).
//!
//! Values are held as a whole number of nano-units (`1n`): every suffix apimachinery accepts
//! is a whole multiple of it except `n`'s own fractions, which round up (apimachinery keeps
//! arbitrary precision; nothing a client sends in practice is finer than `1n`). Magnitudes
//! beyond `i128` saturate, which keeps the ordering of every realistic pair exact.

use std::cmp::Ordering;

/// apimachinery's `ErrFormatWrong`, word for word (clients match on it).
pub const FORMAT_ERROR: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";
/// apimachinery's `ErrSuffix`.
pub const SUFFIX_ERROR: &str = "unable to parse quantity's suffix";

/// Digits of a mantissa that are kept; later digits only round (a value needs no more).
const MANTISSA_DIGITS_MAX: usize = 30;

/// A parsed quantity: its value in nano-units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity {
    nanos: i128,
}

impl Quantity {
    /// Parses a quantity string.
    ///
    /// # Errors
    /// [`FORMAT_ERROR`] when the text does not have a quantity's shape, [`SUFFIX_ERROR`]
    /// when the suffix is unknown.
    pub fn parse(s: &str) -> Result<Quantity, &'static str> {
        if s.is_empty() {
            return Err(FORMAT_ERROR);
        }
        let (negative, rest) = match s.as_bytes()[0] {
            b'+' => (false, &s[1..]),
            b'-' => (true, &s[1..]),
            _ => (false, s),
        };
        let number_len = rest
            .bytes()
            .take_while(|c| c.is_ascii_digit() || *c == b'.')
            .count();
        let (number, suffix) = rest.split_at(number_len);
        let (int_part, frac_part) = match number.split_once('.') {
            Some((i, f)) => (i, f),
            None => (number, ""),
        };
        if frac_part.contains('.') || (int_part.is_empty() && frac_part.is_empty()) {
            return Err(FORMAT_ERROR);
        }
        if !suffix_shape_ok(suffix) {
            return Err(FORMAT_ERROR);
        }
        let (base2_exp, base10_exp) = parse_suffix(suffix)?;

        // mantissa * 10^(base10_exp - frac_digits) * 2^base2_exp, in nanos (10^9 per unit).
        let mut digits: String = format!("{int_part}{frac_part}");
        let mut exp10 = base10_exp + 9 - frac_part.len() as i64;
        let trimmed = digits.trim_start_matches('0').to_string();
        digits = trimmed;
        let mut round_up = false;
        if digits.len() > MANTISSA_DIGITS_MAX {
            round_up = digits[MANTISSA_DIGITS_MAX..].bytes().any(|c| c != b'0');
            exp10 += (digits.len() - MANTISSA_DIGITS_MAX) as i64;
            digits.truncate(MANTISSA_DIGITS_MAX);
        }
        let mut mantissa: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| FORMAT_ERROR)?
        };
        if round_up {
            mantissa += 1;
        }
        let mut value = mantissa;
        for _ in 0..base2_exp {
            value = value.saturating_mul(2);
        }
        if exp10 >= 0 {
            for _ in 0..exp10.min(60) {
                value = value.saturating_mul(10);
            }
        } else {
            let mut divisor: i128 = 1;
            let mut exact = true;
            for _ in 0..(-exp10).min(38) {
                divisor = divisor.saturating_mul(10);
            }
            if -exp10 > 38 {
                exact = false;
            }
            let q = value / divisor;
            // Round away from zero (apimachinery rounds fractions of the smallest scale up).
            value = if value % divisor != 0 || (!exact && value != 0) {
                q + 1
            } else {
                q
            };
        }
        Ok(Quantity {
            nanos: if negative { -value } else { value },
        })
    }

    /// Whether the value is below zero.
    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    /// Orders two quantities by value (`1Gi` > `1G`, `1000m` == `1`).
    pub fn cmp_value(&self, other: &Quantity) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }

    /// The value in nano-units (`1` is 10^9), for sums and ratios.
    pub fn nanos(&self) -> i128 {
        self.nanos
    }

    /// A quantity of `nanos` nano-units.
    pub fn from_nanos(nanos: i128) -> Quantity {
        Quantity { nanos }
    }

    /// The canonical text of the value in decimal units: `2`, `500m`, `1500u`, `7n`
    /// (apimachinery's `String()` for decimal quantities; binary sizes print in bytes).
    pub fn to_canonical(&self) -> String {
        let n = self.nanos;
        for (div, suffix) in [(1_000_000_000, ""), (1_000_000, "m"), (1_000, "u")] {
            if n % div == 0 {
                return format!("{}{suffix}", n / div);
            }
        }
        format!("{n}n")
    }
}

/// Whether `suffix` matches `[eEinumkKMGTP]*[-+]?[0-9]*`.
fn suffix_shape_ok(suffix: &str) -> bool {
    let letters = suffix
        .bytes()
        .take_while(|c| b"eEinumkKMGTP".contains(c))
        .count();
    let rest = &suffix[letters..];
    let rest = rest.strip_prefix(['+', '-']).unwrap_or(rest);
    rest.bytes().all(|c| c.is_ascii_digit())
}

/// The (power of two, power of ten) a suffix multiplies by.
fn parse_suffix(suffix: &str) -> Result<(u32, i64), &'static str> {
    let pair = match suffix {
        "" => (0, 0),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        _ => {
            let exp = suffix
                .strip_prefix(['e', 'E'])
                .ok_or(SUFFIX_ERROR)?
                .parse::<i64>()
                .map_err(|_| SUFFIX_ERROR)?;
            (0, exp.clamp(-1_000, 1_000))
        }
    };
    Ok(pair)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test that panics has failed
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_to_their_value_in_every_notation() {
        let cases: &[(&str, &str, Ordering)] = &[
            ("1", "1000m", Ordering::Equal),
            ("0.5", "500m", Ordering::Equal),
            ("1Gi", "1G", Ordering::Greater),
            ("1Ki", "1024", Ordering::Equal),
            ("1k", "1000", Ordering::Equal),
            ("2e3", "2k", Ordering::Equal),
            ("1E", "1e18", Ordering::Equal),
            ("100Mi", "1Gi", Ordering::Less),
            ("1n", "0", Ordering::Greater),
            ("0.1n", "1n", Ordering::Equal),
            ("-1", "0", Ordering::Less),
            ("+1.5", "1500m", Ordering::Equal),
            (".5", "500m", Ordering::Equal),
            ("5.", "5", Ordering::Equal),
        ];
        for (a, b, want) in cases {
            let (qa, qb) = (Quantity::parse(a).unwrap(), Quantity::parse(b).unwrap());
            assert_eq!(qa.cmp_value(&qb), *want, "{a} vs {b}");
        }
    }

    #[test]
    fn malformed_quantities_are_refused_with_apimachinery_messages() {
        let cases: &[(&str, &str)] = &[
            ("", FORMAT_ERROR),
            ("abc", FORMAT_ERROR),
            ("1..2", FORMAT_ERROR),
            ("1 Gi", FORMAT_ERROR),
            (".", FORMAT_ERROR),
            ("1Gb", FORMAT_ERROR),
            ("1iG", SUFFIX_ERROR),
            ("1mm", SUFFIX_ERROR),
            ("1e", SUFFIX_ERROR),
        ];
        for (s, want) in cases {
            assert_eq!(Quantity::parse(s), Err(*want), "{s:?}");
        }
    }

    #[test]
    fn huge_quantities_saturate_instead_of_overflowing() {
        let big = Quantity::parse("9999999999999999999999999999999999999999Ei").unwrap();
        let small = Quantity::parse("1Ei").unwrap();
        assert_eq!(big.cmp_value(&small), Ordering::Greater);
        assert!(!big.is_negative());
    }
}
