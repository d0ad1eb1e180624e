//! Parsing of human-written sizes (`64Mi`, `64m`, `1g`).

/// Parses a byte count: a plain number, or one with a binary suffix as docker (`k`, `m`,
/// `g`, `t`, optionally followed by `b`, any case) or Kubernetes (`Ki`, `Mi`, `Gi`, `Ti`)
/// write it. Decimal suffixes (`M`, `G` in Kubernetes' sense) are rejected rather than
/// guessed at, except that docker's single letters are binary as docker reads them.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, suffix) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 64Mi, 64m, 1g, 1048576)"))?;
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "ki" | "kib" => 10,
        "m" | "mb" | "mi" | "mib" => 20,
        "g" | "gb" | "gi" | "gib" => 30,
        "t" | "tb" | "ti" | "tib" => 40,
        _ => {
            return Err(format!(
                "{s:?}: unknown size suffix {suffix:?} (use Ki, Mi, Gi or k, m, g)"
            ))
        }
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<u64, &str>) {
        match (parse_bytes(input), expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{input}"),
            (Err(got), Err(want)) => assert!(got.contains(want), "{got:?} lacks {want:?}"),
            (got, want) => panic!("{input}: got {got:?}, expected {want:?}"),
        }
    }

    #[test]
    fn sizes() {
        check("1048576", Ok(1 << 20));
        check("64Mi", Ok(64 << 20));
        check("64m", Ok(64 << 20));
        check("64MB", Ok(64 << 20));
        check("1g", Ok(1 << 30));
        check("2Ki", Ok(2048));
        check("", Err("not a size"));
        check("Mi", Err("not a size"));
        check("12x", Err("unknown size suffix"));
        check("99999999999999999999t", Err("not a size"));
        check("9999999999t", Err("too large"));
    }
}
