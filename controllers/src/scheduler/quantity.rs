//! Resource quantities (`"100m"`, `"1.5"`, `"128Mi"`, `"1G"`, `"2e3"`) as integers, the way
//! kube-scheduler reads them: CPU in millicores (`MilliValue`), everything else in whole
//! units (`Value`), both rounded up. Values too large for an `i64` saturate.

use thiserror::Error;

/// A string that is not a Kubernetes quantity.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {0:?}"
)]
pub struct QuantityError(pub String);

/// Digits of a mantissa kept exactly; more than this saturates (an i128 holds 38).
const MANTISSA_DIGITS_MAX: usize = 30;

/// The value of `s` multiplied by 1000, rounded up.
///
/// # Errors
/// [`QuantityError`] when `s` is not a quantity.
pub fn parse_milli(s: &str) -> Result<i64, QuantityError> {
    scaled(s, 3)
}

/// The value of `s`, rounded up to a whole unit.
///
/// # Errors
/// [`QuantityError`] when `s` is not a quantity.
pub fn parse_value(s: &str) -> Result<i64, QuantityError> {
    scaled(s, 0)
}

/// `value(s) * 10^extra_exp10`, rounded up (towards +inf), saturated to i64.
fn scaled(s: &str, extra_exp10: i32) -> Result<i64, QuantityError> {
    let bad = || QuantityError(s.to_string());
    let t = s.trim();
    let (negative, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let num_end = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (num, suffix) = body.split_at(num_end);
    if num.is_empty() || num == "." || num.matches('.').count() > 1 {
        return Err(bad());
    }
    let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
    let (mut exp10, exp2): (i32, i32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        _ => {
            let rest = suffix
                .strip_prefix('e')
                .or_else(|| suffix.strip_prefix('E'))
                .ok_or_else(bad)?;
            let digits = rest.strip_prefix(['+', '-']).unwrap_or(rest);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            (rest.parse::<i32>().map_err(|_| bad())?, 0)
        }
    };
    // Mantissa as an integer: drop leading zeros, cap the digits kept (rounding up after).
    let digits: String = format!("{int_part}{frac_part}");
    let digits = digits.trim_start_matches('0');
    exp10 = exp10.saturating_sub(i32::try_from(frac_part.len()).unwrap_or(i32::MAX));
    exp10 = exp10.saturating_add(extra_exp10);
    if digits.is_empty() {
        return Ok(0);
    }
    let (kept, dropped) = digits.split_at(digits.len().min(MANTISSA_DIGITS_MAX));
    let mut mantissa: i128 = kept.parse().map_err(|_| bad())?;
    let mut inexact = dropped.bytes().any(|b| b != b'0');
    exp10 = exp10.saturating_add(i32::try_from(dropped.len()).unwrap_or(i32::MAX));
    let saturated = if negative { i64::MIN } else { i64::MAX };
    // Binary multiplier first (exact), then the decimal exponent.
    for _ in 0..exp2 {
        match mantissa.checked_mul(2) {
            Some(m) => mantissa = m,
            None => return Ok(saturated),
        }
    }
    while exp10 > 0 {
        match mantissa.checked_mul(10) {
            Some(m) => mantissa = m,
            None => return Ok(saturated),
        }
        exp10 -= 1;
    }
    while exp10 < 0 && mantissa != 0 {
        inexact |= mantissa % 10 != 0;
        mantissa /= 10;
        exp10 += 1;
    }
    if mantissa != 0 && exp10 < 0 {
        // Everything was divided away: a non-zero value smaller than one unit.
        inexact = true;
    }
    let mut v = if negative { -mantissa } else { mantissa };
    if inexact && !negative {
        v += 1; // rounded up, as resource.Quantity's Value/MilliValue do
    }
    Ok(i64::try_from(v).unwrap_or(saturated))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_into_milli_units_and_whole_units() {
        let cases: &[(&str, i64, i64)] = &[
            ("100m", 100, 1),
            ("1", 1000, 1),
            ("1.5", 1500, 2),
            ("0.1", 100, 1),
            ("128Mi", 128 * 1024 * 1024 * 1000, 128 * 1024 * 1024),
            ("1G", 1_000_000_000_000, 1_000_000_000),
            ("1Gi", 1_073_741_824_000, 1_073_741_824),
            ("2e3", 2_000_000, 2000),
            ("2E3", 2_000_000, 2000),
            ("1e-3", 1, 1),
            ("500u", 1, 1),
            ("1k", 1_000_000, 1000),
            ("0", 0, 0),
            ("0.0", 0, 0),
            ("+3", 3000, 3),
            ("1.25Ki", 1_280_000, 1280),
            ("250n", 1, 1),
            ("12345678901234567890123456789012345", i64::MAX, i64::MAX),
        ];
        for (s, milli, value) in cases {
            assert_eq!(parse_milli(s), Ok(*milli), "milli of {s}");
            assert_eq!(parse_value(s), Ok(*value), "value of {s}");
        }
    }

    #[test]
    fn strings_that_are_not_quantities_are_refused() {
        for s in [
            "", "m", "1.2.3", "1x", "1Mii", "e3", "1e", "1e+", "abc", "1 Gi",
        ] {
            assert!(parse_milli(s).is_err(), "{s:?} should not parse");
        }
    }
}
