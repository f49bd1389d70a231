//! Number formats shared by the verifiers.
//!
//! Integers have one accepted form (canonical decimal: optional `-`, no leading zeros, no `+`, no `-0`) so that
//! "equal in value and form" is a plain comparison. Decimals are compared by exact value, so they accept every
//! plain or scientific numeral; the arithmetic is exact (`i128` mantissa, power-of-ten exponent), never binary
//! floating point, so a verdict does not depend on the platform.

use std::cmp::Ordering;
use std::fmt;

/// Parses a canonical decimal integer: `0`, `42`, `-7`; rejects `+7`, `007`, `-0`, `4_2`, `4,200`, `42.0`.
pub(crate) fn parse_canonical_int(text: &str) -> Option<i128> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && !(digits == "0" && text.starts_with('-'));
    if canonical { text.parse().ok() } else { None }
}

pub(crate) fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Python's `//` on integers: the quotient rounded towards negative infinity. `None` on division by zero or
/// overflow.
pub(crate) fn floor_div(a: i128, b: i128) -> Option<i128> {
    let quotient = a.checked_div(b)?;
    let inexact = a.checked_rem(b)? != 0;
    if inexact && ((a < 0) != (b < 0)) {
        quotient.checked_sub(1)
    } else {
        Some(quotient)
    }
}

/// An exact decimal number `mantissa × 10^exponent`, kept normalised (no trailing zeros in the mantissa), so
/// equal values have equal representations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Decimal {
    mantissa: i128,
    exponent: i32,
}

/// Exponents beyond this are refused: no answer to our questions needs them, and it bounds the work.
const MAX_EXPONENT: i32 = 4000;

impl Decimal {
    pub(crate) fn new(mantissa: i128, exponent: i32) -> Self {
        let (mut mantissa, mut exponent) = (mantissa, exponent);
        if mantissa == 0 {
            return Self {
                mantissa: 0,
                exponent: 0,
            };
        }
        while mantissa % 10 == 0 {
            mantissa /= 10;
            exponent += 1;
        }
        Self { mantissa, exponent }
    }

    /// Parses the numerals Python's `Decimal` accepts, minus its extensions: an optional sign, digits with an
    /// optional decimal point (`5.`, `.5`), and an optional exponent (`e`/`E`). Digit-group underscores,
    /// `NaN` and `Infinity` are refused, as are numerals with more significant digits than an `i128` holds.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let (negative, rest) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        let (number, exponent) = match rest.find(['e', 'E']) {
            Some(at) => (&rest[..at], parse_exponent(&rest[at + 1..])?),
            None => (rest, 0),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.len() + fraction.len() == 0 || !all_digits(whole) || !all_digits(fraction) {
            return None;
        }
        let mut mantissa: i128 = 0;
        for digit in whole.bytes().chain(fraction.bytes()) {
            mantissa = mantissa
                .checked_mul(10)?
                .checked_add(i128::from(digit - b'0'))?;
        }
        let exponent = exponent.checked_sub(i32::try_from(fraction.len()).ok()?)?;
        if exponent.abs() > MAX_EXPONENT {
            return None;
        }
        Some(Self::new(
            if negative { -mantissa } else { mantissa },
            exponent,
        ))
    }

    pub(crate) fn is_negative(self) -> bool {
        self.mantissa < 0
    }

    pub(crate) fn checked_add(self, other: Self) -> Option<Self> {
        let (a, b, exponent) = align(self, other)?;
        Some(Self::new(a.checked_add(b)?, exponent))
    }

    pub(crate) fn checked_sub(self, other: Self) -> Option<Self> {
        self.checked_add(Self::new(other.mantissa.checked_neg()?, other.exponent))
    }

    pub(crate) fn checked_mul(self, other: Self) -> Option<Self> {
        Some(Self::new(
            self.mantissa.checked_mul(other.mantissa)?,
            self.exponent.checked_add(other.exponent)?,
        ))
    }

    /// Whether `|self − other| ≤ tolerance`, computed exactly. When the two cannot be put on one scale in
    /// an `i128` (magnitudes more than ~38 digits apart from the tolerance), only exact equality counts.
    pub(crate) fn within(self, other: Self, tolerance: Self) -> bool {
        match self.checked_sub(other) {
            Some(difference) => difference.abs_cmp(tolerance) != Ordering::Greater,
            None => self == other,
        }
    }

    fn abs_cmp(self, other: Self) -> Ordering {
        match align(self, other) {
            Some((a, b, _)) => a.unsigned_abs().cmp(&b.unsigned_abs()),
            // Not alignable: the one with the larger exponent is larger by many orders of magnitude.
            None => self.exponent.cmp(&other.exponent),
        }
    }
}

fn parse_exponent(text: &str) -> Option<i32> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.strip_prefix('+').unwrap_or(text).parse().ok()
}

/// Both mantissas on the smaller of the two exponents.
fn align(a: Decimal, b: Decimal) -> Option<(i128, i128, i32)> {
    let exponent = a.exponent.min(b.exponent);
    let scale = |d: Decimal| -> Option<i128> {
        let shift = u32::try_from(d.exponent - exponent).ok()?;
        d.mantissa.checked_mul(10i128.checked_pow(shift)?)
    };
    Some((scale(a)?, scale(b)?, exponent))
}

impl fmt::Display for Decimal {
    /// Plain notation without trailing zeros: `3`, `-0.25`, `1200`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.mantissa < 0 { "-" } else { "" };
        let digits = self.mantissa.unsigned_abs().to_string();
        if self.exponent >= 0 {
            let zeros = "0".repeat(self.exponent.unsigned_abs() as usize);
            return write!(f, "{sign}{digits}{zeros}");
        }
        let places = self.exponent.unsigned_abs() as usize;
        if digits.len() > places {
            let (whole, fraction) = digits.split_at(digits.len() - places);
            write!(f, "{sign}{whole}.{fraction}")
        } else {
            let zeros = "0".repeat(places - digits.len());
            write!(f, "{sign}0.{zeros}{digits}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_integers_only() {
        assert_eq!(parse_canonical_int("0"), Some(0));
        assert_eq!(parse_canonical_int("-42"), Some(-42));
        for bad in ["", "-", "+4", "04", "-0", "4_2", "4,2", "4.0", " 4", "4e1"] {
            assert_eq!(parse_canonical_int(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn floor_division_follows_python() {
        assert_eq!(floor_div(7, 2), Some(3));
        assert_eq!(floor_div(-7, 2), Some(-4));
        assert_eq!(floor_div(7, -2), Some(-4));
        assert_eq!(floor_div(-7, -2), Some(3));
        assert_eq!(floor_div(-6, 2), Some(-3));
        assert_eq!(floor_div(1, 0), None);
    }

    #[test]
    fn decimals_parse_and_print() {
        let d = |s: &str| Decimal::parse(s).unwrap();
        assert_eq!(d("1.500"), d("1.5"));
        assert_eq!(d("1.5e+3").to_string(), "1500");
        assert_eq!(d("-.25").to_string(), "-0.25");
        assert_eq!(d("5.").to_string(), "5");
        assert_eq!(d("1E-7").to_string(), "0.0000001");
        assert_eq!(d("-0.0"), d("0"));
        for bad in [
            "", ".", "-", "1_000", "NaN", "Infinity", "1,5", "1e", "e5", "1.2.3", "0x10",
        ] {
            assert_eq!(Decimal::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Decimal::parse(&"9".repeat(40)), None);
    }

    #[test]
    fn tolerance_is_inclusive_and_exact() {
        let d = |s: &str| Decimal::parse(s).unwrap();
        assert!(d("7.216").within(d("7.215"), d("0.001")));
        assert!(d("7.214").within(d("7.215"), d("0.001")));
        assert!(!d("7.2160001").within(d("7.215"), d("0.001")));
        assert!(d("7.215").within(d("7.215"), d("0")));
        assert!(!d("7.2150000001").within(d("7.215"), d("0")));
        assert!(!d("1e300").within(d("7.215"), d("0.001")));
        assert!(d("1e300").within(d("1E+300"), d("0.001")));
    }

    #[test]
    fn arithmetic_is_exact() {
        let d = |s: &str| Decimal::parse(s).unwrap();
        assert_eq!(d("0.1").checked_add(d("0.2")), Some(d("0.3")));
        assert_eq!(d("1.25").checked_mul(d("-0.4")), Some(d("-0.5")));
        assert_eq!(d("3").checked_sub(d("3.001")), Some(d("-0.001")));
    }
}
