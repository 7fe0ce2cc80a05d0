//! Value syntaxes used by instruction flags, with the Go semantics BuildKit inherits:
//! durations (`time.ParseDuration`), RAM sizes (`units.RAMInBytes`), CSV fields of
//! `--mount` (`encoding/csv`), and Go's `strconv.ParseBool`.

use std::time::Duration;

/// Parses a Go duration (`1h30m`, `1.5s`, `300ms`, `0`). Negative values are returned as
/// `Err` with a message, like values that do not parse.
pub(crate) fn parse_go_duration(s: &str) -> Result<i128, String> {
    let orig = s;
    let err = || format!("time: invalid duration {orig:?}");
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(err());
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let int_end = rest
            .bytes()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(rest.len());
        let int_part = &rest[..int_end];
        rest = &rest[int_end..];
        let mut frac_part = "";
        if let Some(after) = rest.strip_prefix('.') {
            let frac_end = after
                .bytes()
                .position(|b| !b.is_ascii_digit())
                .unwrap_or(after.len());
            frac_part = &after[..frac_end];
            rest = &after[frac_end..];
            if int_part.is_empty() && frac_part.is_empty() {
                return Err(err());
            }
        } else if int_part.is_empty() {
            return Err(err());
        }
        let unit_end = rest
            .char_indices()
            .find(|&(_, c)| c == '.' || c.is_ascii_digit())
            .map_or(rest.len(), |(i, _)| i);
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(format!("time: missing unit in duration {orig:?}")),
            u => return Err(format!("time: unknown unit {u:?} in duration {orig:?}")),
        };
        let int: i128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse::<i128>().map_err(|_| err())?
        };
        let mut value = int.checked_mul(scale).ok_or_else(err)?;
        if !frac_part.is_empty() {
            // Fractions beyond nanosecond precision are truncated, as Go does.
            let mut frac_ns: i128 = 0;
            let mut div: i128 = 1;
            for b in frac_part.bytes().take(30) {
                frac_ns = frac_ns * 10 + i128::from(b - b'0');
                div *= 10;
            }
            value += frac_ns * scale / div;
        }
        total = total.checked_add(value).ok_or_else(err)?;
        if total > i128::from(i64::MAX) {
            return Err(err());
        }
    }
    Ok(if neg { -total } else { total })
}

/// BuildKit's `parseOptInterval`: empty → `None`; `0` → zero; otherwise at least 1ms.
pub(crate) fn parse_interval(flag: &str, value: &str) -> Result<Option<Duration>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    let ns = parse_go_duration(value)?;
    if ns == 0 {
        return Ok(Some(Duration::ZERO));
    }
    if ns < 1_000_000 {
        return Err(format!("Interval \"{flag}\" cannot be less than 1ms"));
    }
    let ns = u64::try_from(ns).map_err(|_| format!("time: invalid duration {value:?}"))?;
    Ok(Some(Duration::from_nanos(ns)))
}

/// Go's `strconv.ParseBool`.
pub(crate) fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// docker/go-units `RAMInBytes`: `64m`, `1.5g`, `512k`, `1024`, `2GiB` (binary multiples).
pub(crate) fn parse_ram_bytes(s: &str) -> Result<i64, String> {
    let err = || format!("invalid size: '{s}'");
    let num_end = s
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_digit() || c == '.'))
        .map_or(s.len(), |(i, _)| i);
    let (num, mut suffix) = s.split_at(num_end);
    // The number is digits with optional `.digits` groups.
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') || num.contains("..") {
        return Err(err());
    }
    let size: f64 = num.parse().map_err(|_| err())?;
    suffix = suffix.strip_prefix(' ').unwrap_or(suffix);
    let mut chars = suffix.chars();
    let mult: f64 = match chars.clone().next() {
        Some('k' | 'K') => 1024.0,
        Some('m' | 'M') => 1024.0 * 1024.0,
        Some('g' | 'G') => 1024.0f64.powi(3),
        Some('t' | 'T') => 1024.0f64.powi(4),
        Some('p' | 'P') => 1024.0f64.powi(5),
        _ => 1.0,
    };
    if mult > 1.0 {
        chars.next();
    }
    let mut rest = chars.as_str();
    rest = rest.strip_prefix(['i', 'I']).unwrap_or(rest);
    rest = rest.strip_prefix(['b', 'B']).unwrap_or(rest);
    if !rest.is_empty() {
        return Err(err());
    }
    Ok((size * mult) as i64)
}

/// One CSV record as Go's `encoding/csv` reads it (comma separator, `"` quoting, `""` for a
/// quote inside quotes, no lazy quotes).
pub(crate) fn csv_fields(s: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    if s.is_empty() {
        return Ok(fields);
    }
    let mut chars = s.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("extraneous or missing \" in quoted-field".into()),
                    Some('"') => match chars.peek() {
                        Some('"') => {
                            chars.next();
                            field.push('"');
                        }
                        Some(',') | None => break,
                        Some(_) => return Err("extraneous or missing \" in quoted-field".into()),
                    },
                    Some(c) => field.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                if c == '"' {
                    return Err("bare \" in non-quoted-field".into());
                }
                field.push(c);
                chars.next();
            }
        }
        fields.push(field);
        match chars.next() {
            Some(',') => continue,
            _ => break,
        }
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_go_duration("5s"), Ok(5_000_000_000));
        assert_eq!(parse_go_duration("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(parse_go_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_go_duration(".5ms"), Ok(500_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("-2s"), Ok(-2_000_000_000));
        let err = |s| parse_go_duration(s).unwrap_err();
        assert_eq!(err("5"), r#"time: missing unit in duration "5""#);
        assert_eq!(err(""), r#"time: invalid duration """#);
        assert_eq!(err("5x"), r#"time: unknown unit "x" in duration "5x""#);
        assert_eq!(
            err("99999999999h"),
            r#"time: invalid duration "99999999999h""#
        );
        assert_eq!(parse_interval("interval", "0s"), Ok(Some(Duration::ZERO)));
        let too_short = r#"Interval "interval" cannot be less than 1ms"#;
        assert_eq!(parse_interval("interval", "10us").unwrap_err(), too_short);
        assert_eq!(parse_interval("interval", "-1s").unwrap_err(), too_short);
        assert_eq!(parse_interval("interval", ""), Ok(None));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_ram_bytes("1024"), Ok(1024));
        assert_eq!(parse_ram_bytes("64m"), Ok(64 << 20));
        assert_eq!(parse_ram_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_ram_bytes("1.5k"), Ok(1536));
        assert_eq!(parse_ram_bytes("abc").unwrap_err(), "invalid size: 'abc'");
        assert_eq!(parse_ram_bytes("1x").unwrap_err(), "invalid size: '1x'");
    }

    #[test]
    fn csv() {
        assert_eq!(csv_fields("a,b=c,\"d,e\"").unwrap(), ["a", "b=c", "d,e"]);
        assert!(csv_fields("").unwrap().is_empty());
        assert_eq!(csv_fields("\"a\"\"b\"").unwrap(), ["a\"b"]);
        assert_eq!(
            csv_fields("a\"b").unwrap_err(),
            "bare \" in non-quoted-field"
        );
        assert_eq!(
            csv_fields("\"ab").unwrap_err(),
            "extraneous or missing \" in quoted-field"
        );
    }
}
