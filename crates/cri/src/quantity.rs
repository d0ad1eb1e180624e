//! Kubernetes resource quantities (`128Mi`, `500m`, `0.5`, `1e3`, `2G`) as numbers, rounded
//! up as the API server's `Value()` and `MilliValue()` do.

/// The value of `quantity` in units of 10^-`scale` (0: whole units, 3: milli-units),
/// rounded up. `None` when it is not a quantity, is negative, or overflows `i64`.
pub(crate) fn parse(quantity: &str, scale: u32) -> Option<i64> {
    let q = quantity.trim();
    let q = q.strip_prefix('+').unwrap_or(q);
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let digits: u128 = format!("{int}{frac}").parse().ok()?;
    let frac_len = u32::try_from(frac.len()).ok()?;
    // value = digits × 2^binary × 10^decimal / 10^frac_len
    let (binary, decimal): (u32, i32) = match suffix {
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
        s if s.starts_with(['e', 'E']) => (0, s[1..].parse().ok()?),
        _ => return None,
    };
    let up = decimal + i32::try_from(scale).ok()?;
    let down = i32::try_from(frac_len).ok()?;
    let exp = up - down;
    let mut num = digits.checked_mul(1u128.checked_shl(binary)?)?;
    let mut den = 1u128;
    if exp >= 0 {
        num = num.checked_mul(10u128.checked_pow(exp.unsigned_abs())?)?;
    } else {
        den = 10u128.checked_pow(exp.unsigned_abs())?;
    }
    i64::try_from(num.div_ceil(den)).ok()
}

#[cfg(test)]
mod tests {
    use super::parse;

    fn check(q: &str, scale: u32, expected: Option<i64>) {
        assert_eq!(parse(q, scale), expected, "{q} at scale {scale}");
    }

    #[test]
    fn bytes() {
        check("128Mi", 0, Some(128 << 20));
        check("1Gi", 0, Some(1 << 30));
        check("64M", 0, Some(64_000_000));
        check("1.5Gi", 0, Some(3 << 29));
        check("1e3", 0, Some(1000));
        check("1E6", 0, Some(1_000_000));
        check("12345", 0, Some(12345));
        check("100m", 0, Some(1)); // rounded up
        check("0", 0, Some(0));
    }

    #[test]
    fn millis() {
        check("500m", 3, Some(500));
        check("0.5", 3, Some(500));
        check("2", 3, Some(2000));
        check("0.0001", 3, Some(1));
        check("100u", 3, Some(1));
        check("1k", 3, Some(1_000_000));
    }

    #[test]
    fn not_quantities() {
        check("", 0, None);
        check("-1", 0, None);
        check("12Q", 0, None);
        check("Mi", 0, None);
        check("1.2.3", 0, None);
        check("99999999999999999999Ei", 0, None);
    }
}
