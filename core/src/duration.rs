//! Go-style duration strings (`720h`, `1h30m`, `90s`, `1.5h`), the form
//! Kubernetes users write and CEL's `duration()` reads.
//!
//! Only positive, unsigned durations made of `<number><unit>` parts are
//! accepted; [`PATTERN`] is the same grammar as a regular expression for the
//! CRD schema, so the API server and this parser agree.

use std::time::Duration;

/// The grammar [`parse`] accepts, as a regular expression. Spelled without
/// backslashes so the CRD's CEL rules can embed it in a string literal.
#[macro_export]
macro_rules! duration_pattern {
    () => {
        "^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$"
    };
}

/// The grammar [`parse`] accepts, as used in the CRD's CEL rules.
pub const PATTERN: &str = duration_pattern!();

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    #[error("empty duration: write e.g. 720h, 90m or 30s")]
    Empty,
    #[error("invalid duration {0:?}: write a number followed by a unit (h, m, s, ms, us, ns), e.g. 1h30m")]
    Invalid(String),
    #[error("duration {0:?} is too large")]
    Overflow(String),
}

/// Parses a Go-style duration such as `720h` or `1h30m15.5s`.
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    if input.is_empty() {
        return Err(DurationError::Empty);
    }
    let invalid = || DurationError::Invalid(input.to_owned());
    let mut total: u128 = 0;
    let mut rest = input;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        if int_len == 0 {
            return Err(invalid());
        }
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(f) => {
                let n = f.bytes().take_while(u8::is_ascii_digit).count();
                if n == 0 {
                    return Err(invalid());
                }
                f.split_at(n)
            }
            None => ("", after),
        };
        let unit_len = after.find(|c: char| c.is_ascii_digit()).unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let nanos_per_unit: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3600 * 1_000_000_000,
            _ => return Err(invalid()),
        };
        let overflow = || DurationError::Overflow(input.to_owned());
        let int: u128 = int_part.parse().map_err(|_| overflow())?;
        let mut part = int.checked_mul(nanos_per_unit).ok_or_else(overflow)?;
        // Fractions beyond nanosecond precision are dropped, as Go does.
        let mut scale = nanos_per_unit;
        for digit in frac_part.bytes() {
            scale /= 10;
            part += u128::from(digit - b'0') * scale;
        }
        total = total.checked_add(part).ok_or_else(overflow)?;
        rest = after;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| DurationError::Overflow(input.to_owned()))?;
    Ok(Duration::new(secs, (total % 1_000_000_000) as u32))
}

/// Formats a duration the way Go's `time.Duration.String` does for whole
/// seconds and above (`1h0m0s` becomes `1h`, trailing zero units dropped).
pub fn format(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    let mut out = String::new();
    let total = d.as_secs();
    let (h, m, s) = (total / 3600, (total % 3600) / 60, total % 60);
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    let nanos = d.subsec_nanos();
    if s > 0 || nanos > 0 {
        if nanos == 0 {
            out.push_str(&format!("{s}s"));
        } else if total == 0 && nanos.is_multiple_of(1_000_000) {
            out.push_str(&format!("{}ms", nanos / 1_000_000));
        } else {
            let frac = format!("{nanos:09}");
            out.push_str(&format!("{s}.{}s", frac.trim_end_matches('0')));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let cases = [
            ("720h", Duration::from_secs(720 * 3600)),
            ("1h", Duration::from_secs(3600)),
            ("1m", Duration::from_secs(60)),
            ("90s", Duration::from_secs(90)),
            ("1h30m", Duration::from_secs(5400)),
            ("1.5h", Duration::from_secs(5400)),
            ("2h45m30s", Duration::from_secs(2 * 3600 + 45 * 60 + 30)),
            ("500ms", Duration::from_millis(500)),
            ("1.25s", Duration::from_millis(1250)),
            ("10us", Duration::from_micros(10)),
            ("10µs", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
            ("0s", Duration::ZERO),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input), Ok(want), "{input}");
        }
    }

    #[test]
    fn rejects_what_the_crd_pattern_rejects() {
        for bad in ["", "1", "h", "1d", "1 h", "-1h", "+1h", "1.h", ".5h", "1h-5m", "1H", "1hh", "1h ", "30days"] {
            assert!(parse(bad).is_err(), "{bad:?} must not parse");
        }
    }

    /// The CRD's regular expression and this parser must agree on every input.
    #[test]
    fn pattern_and_parser_agree() {
        let re = regex::Regex::new(PATTERN).expect("pattern compiles");
        let inputs = [
            "720h", "1h30m", "1.5h", "500ms", "10µs", "10us", "7ns", "0s", "", "1", "h", "1d", "1 h", "-1h", "+1h",
            "1.h", ".5h", "1h-5m", "1H", "1hh", "1h ", "30days", "1m1m", "2.50s",
        ];
        for input in inputs {
            assert_eq!(re.is_match(input), parse(input).is_ok(), "{input:?}");
        }
    }

    #[test]
    fn huge_durations_overflow_instead_of_panicking() {
        assert!(matches!(parse("99999999999999999999999999999999999999999h"), Err(DurationError::Overflow(_))));
        assert!(matches!(parse("9999999999999999999999h"), Err(DurationError::Overflow(_))));
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format(Duration::from_secs(720 * 3600)), "720h");
        assert_eq!(format(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format(Duration::from_secs(61)), "1m1s");
        assert_eq!(format(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format(Duration::from_millis(250)), "250ms");
        assert_eq!(format(Duration::ZERO), "0s");
        for d in ["720h", "1h30m", "1m1s", "1.5s", "250ms"] {
            assert_eq!(format(parse(d).expect("parse")), d);
        }
    }
}
