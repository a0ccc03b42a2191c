//! Wall-clock times as RFC 3339 text, without a date library.
//!
//! Log records carry milliseconds since the Unix epoch (UTC). The tools
//! print them as `2024-05-06T07:08:09.123Z` and accept `--until-time` as
//! RFC 3339 (`T` or a space between date and time, optional fraction,
//! `Z` or a `±HH:MM` offset). Times before 1970 are refused: no record
//! can have one.

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = ((m + 9) % 12) as i64;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// Formats milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_ms(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        ms % 1000
    )
}

/// Parses an RFC 3339 time into milliseconds since the epoch (fractions
/// below a millisecond are cut off).
pub fn parse_rfc3339(text: &str) -> Result<u64, String> {
    let bad = |why: &str| format!("{text:?} is not an RFC 3339 time ({why})");
    let b = text.trim().as_bytes();
    let num = |r: std::ops::Range<usize>| -> Result<u32, String> {
        let s = b.get(r).ok_or_else(|| bad("too short"))?;
        if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
            return Err(bad("digits expected"));
        }
        std::str::from_utf8(s)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("digits expected"))
    };
    let sep = |i: usize, allowed: &[u8]| -> Result<(), String> {
        match b.get(i) {
            Some(c) if allowed.contains(c) => Ok(()),
            _ => Err(bad("wrong separator")),
        }
    };
    let y = num(0..4)? as i64;
    sep(4, b"-")?;
    let mo = num(5..7)?;
    sep(7, b"-")?;
    let d = num(8..10)?;
    sep(10, b"Tt ")?;
    let h = num(11..13)?;
    sep(13, b":")?;
    let mi = num(14..16)?;
    sep(16, b":")?;
    let s = num(17..19)?;
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) {
        return Err(bad("no such date"));
    }
    if h > 23 || mi > 59 || s > 60 {
        return Err(bad("no such time of day"));
    }
    let mut i = 19;
    let mut frac_ms = 0u64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 3 {
                frac_ms = frac_ms * 10 + (b[i] - b'0') as u64;
            }
            i += 1;
        }
        if i == start {
            return Err(bad("digits expected after '.'"));
        }
        for _ in (i - start)..3 {
            frac_ms *= 10;
        }
    }
    let offset_s: i64 = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(c @ (b'+' | b'-')) if i + 6 == b.len() => {
            let oh = num(i + 1..i + 3)? as i64;
            sep(i + 3, b":")?;
            let om = num(i + 4..i + 6)? as i64;
            if oh > 23 || om > 59 {
                return Err(bad("bad offset"));
            }
            let o = oh * 3600 + om * 60;
            if *c == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return Err(bad("a zone (Z or ±HH:MM) must end it")),
    };
    // A leap second counts as the last second of its minute.
    let s = s.min(59) as i64;
    let secs = days_from_civil(y, mo, d) * 86_400 + h as i64 * 3600 + mi as i64 * 60 + s - offset_s;
    if secs < 0 {
        return Err(bad("before 1970"));
    }
    Ok(secs as u64 * 1000 + frac_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_through_text() -> Result<(), String> {
        for ms in [0, 1_700_000_000_123, 951_782_400_000, 4_102_444_800_999] {
            assert_eq!(parse_rfc3339(&format_ms(ms))?, ms);
        }
        assert_eq!(format_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        Ok(())
    }

    #[test]
    fn offsets_fractions_and_separators_are_understood() -> Result<(), String> {
        let utc = parse_rfc3339("2023-11-14T22:13:20Z")?;
        assert_eq!(parse_rfc3339("2023-11-14 23:13:20+01:00")?, utc);
        assert_eq!(parse_rfc3339("2023-11-14t21:13:20-01:00")?, utc);
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20.5Z")?, utc + 500);
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20.123456Z")?, utc + 123);
        Ok(())
    }

    #[test]
    fn nonsense_is_refused_not_guessed() {
        for t in [
            "",
            "2023-11-14",
            "2023-11-14T22:13:20",
            "2023-02-29T00:00:00Z",
            "2023-11-14T24:00:00Z",
            "1969-12-31T23:59:59Z",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T22:13:20Zjunk",
        ] {
            assert!(parse_rfc3339(t).is_err(), "{t:?}");
        }
    }
}
