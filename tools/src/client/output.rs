//! Output helpers shared by the client commands: stdout, Python's `str()`,
//! DistKV's `add_dates` and timestamps, and small map edits.

use std::io::{self, BufWriter, Stdout, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use distkv_model::Value;
use distkv_yaml::top_level;

/// Buffered standard output.
pub(crate) struct Output {
    w: BufWriter<Stdout>,
}

impl Output {
    pub fn stdout() -> Output {
        Output {
            w: BufWriter::new(io::stdout()),
        }
    }

    /// Prints `v` as DistKV's `yprint` does (top-level scalar rule included).
    pub fn yprint(&mut self, v: &Value) -> io::Result<()> {
        self.w.write_all(top_level(v).as_bytes())
    }

    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.w.write_all(bytes)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

/// Python's `str(v)`: strings and paths bare, anything else as its `repr`.
pub fn py_str(v: &Value) -> String {
    match v {
        Value::Str(s) => s.to_string(),
        Value::Path(p) => p.to_string(),
        _ => v.to_string(),
    }
}

/// What `-R` (raw) writes: bytes as they are, anything else as [`py_str`].
pub fn raw(v: &Value) -> Vec<u8> {
    match v {
        Value::Bin(b) => b.to_vec(),
        _ => py_str(v).into_bytes(),
    }
}

/// Removes `key` from a map value, returning its value.
pub fn take(v: &mut Value, key: &str) -> Option<Value> {
    let Value::Map(pairs) = v else { return None };
    let i = pairs.iter().position(|(k, _)| k.as_str() == Some(key))?;
    Some(pairs.remove(i).1)
}

/// The value of `key` in a map value.
pub fn get_mut<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    let Value::Map(pairs) = v else { return None };
    pairs
        .iter_mut()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

/// `d[key] = value` on a map's pairs: replaces in place, else appends.
pub fn set(pairs: &mut Vec<(Value, Value)>, key: Value, value: Value) {
    match pairs.iter_mut().find(|(k, _)| *k == key) {
        Some(slot) => slot.1 = value,
        None => pairs.push((key, value)),
    }
}

/// The current time in seconds since the epoch (Python's `time.time()`).
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `datetime.fromtimestamp(t).isoformat(sep=" ", timespec="milliseconds")`,
/// e.g. `2026-11-24 07:05:05.017`. The time is given in UTC (Python uses the
/// local zone; the two agree on hosts running in UTC).
pub fn iso_time(t: f64) -> String {
    let us = (t * 1e6).round() as i64;
    let secs = us.div_euclid(1_000_000);
    let ms = us.rem_euclid(1_000_000) / 1000;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{ms:03}",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// The proleptic Gregorian date of a day number (days since 1970-01-01).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// DistKV's `add_dates`: next to every number in a map (recursively, also in
/// lists) that lies within a year of `now`, adds `_KEY` with the number as a
/// readable time. Keys starting with `_` are skipped.
pub fn add_dates(v: &mut Value, now: f64) {
    const YEAR: f64 = 366.0 * 24.0 * 3600.0;
    let (start, stop) = (now - YEAR, now + YEAR);
    match v {
        Value::Array(items) => items.iter_mut().for_each(|i| add_dates(i, now)),
        Value::Map(pairs) => {
            let mut dates = Vec::new();
            for (k, v) in pairs.iter_mut() {
                if k.as_str().is_some_and(|k| k.starts_with('_')) {
                    continue;
                }
                let n = match v {
                    Value::Bool(b) => f64::from(u8::from(*b)),
                    Value::Int(i) => *i as f64,
                    Value::UInt(u) => *u as f64,
                    Value::BigUint(_) => f64::INFINITY,
                    Value::Float(f) => *f,
                    _ => {
                        add_dates(v, now);
                        continue;
                    }
                };
                if start <= n && n <= stop {
                    dates.push((format!("_{}", py_str(k)), iso_time(n)));
                }
            }
            for (k, t) in dates {
                set(pairs, Value::str(&k), Value::str(&t));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use distkv_model::Path;

    #[test]
    fn python_str_and_raw() {
        assert_eq!(py_str(&Value::str("a b")), "a b");
        assert_eq!(py_str(&Value::Int(-3)), "-3");
        assert_eq!(py_str(&Value::Nil), "None");
        assert_eq!(py_str(&Value::Path(Path::parse("a.b").unwrap())), "a.b");
        let m = Value::map([("b", Value::str("c"))]);
        assert_eq!(py_str(&m), "{'b': 'c'}");
        assert_eq!(py_str(&Value::from(&b"hi"[..])), "b'hi'");
        assert_eq!(raw(&Value::from(&b"\x00\xff"[..])), b"\x00\xff");
        assert_eq!(raw(&Value::str("world")), b"world");
    }

    #[test]
    fn timestamps_format_like_isoformat_with_milliseconds() {
        assert_eq!(iso_time(0.0), "1970-01-01 00:00:00.000");
        assert_eq!(iso_time(1795503905.017694), "2026-11-24 07:05:05.017");
        assert_eq!(iso_time(951782400.9999), "2000-02-29 00:00:00.999");
        assert_eq!(iso_time(-1.5), "1969-12-31 23:59:58.500");
    }

    #[test]
    fn add_dates_marks_recent_numbers_only() {
        let now = 1_800_000_000.0;
        let mut v = Value::map([
            ("t", Value::Int(1_800_000_060)),
            ("_t", Value::Int(1_800_000_000)),
            ("old", Value::Int(5)),
            ("f", Value::Float(1_800_000_000.25)),
            ("s", Value::str("x")),
            (
                "sub",
                Value::Array(vec![Value::map([("u", Value::Int(1_800_000_000))])]),
            ),
        ]);
        add_dates(&mut v, now);
        assert_eq!(
            v.get("_t").and_then(Value::as_str),
            Some("2027-01-15 08:01:00.000")
        );
        assert_eq!(
            v.get("_f").and_then(Value::as_str),
            Some("2027-01-15 08:00:00.250")
        );
        assert!(v.get("_old").is_none() && v.get("_s").is_none());
        let sub = &v.get("sub").unwrap().as_array().unwrap()[0];
        assert!(sub.get("_u").is_some());
        // Not a map: nothing to do.
        let mut n = Value::Int(1_800_000_000);
        add_dates(&mut n, now);
        assert_eq!(n, Value::Int(1_800_000_000));
    }

    #[test]
    fn take_and_set_edit_maps() {
        let mut m = Value::map([("seq", Value::Int(2)), ("value", Value::Int(1))]);
        assert_eq!(take(&mut m, "seq"), Some(Value::Int(2)));
        assert_eq!(take(&mut m, "seq"), None);
        let Value::Map(pairs) = &mut m else {
            unreachable!()
        };
        set(pairs, Value::str("value"), Value::Int(3));
        set(pairs, Value::str("x"), Value::Nil);
        assert_eq!(m, Value::map([("value", Value::Int(3)), ("x", Value::Nil)]));
    }
}
