//! Sizes and probabilities as people write them on a command line (shared by `burghers` and
//! the benchmarks).

/// `123`, `4k`/`4KiB` (×1024), `64M`/`64MiB`, `1G`/`1GiB`; more than 0.
pub fn parse_size(text: &str) -> Result<u64, String> {
    match parse_size_or_zero(text)? {
        0 => Err(format!("expected a size above 0, got {text:?}")),
        n => Ok(n),
    }
}

/// A size as [`parse_size`] reads it, 0 allowed (for settings where 0 turns a thing off).
pub fn parse_size_or_zero(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("expected a size like 4MiB or 500k, got {text:?}"))?;
    let scale = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        _ => {
            return Err(format!(
                "unknown size unit {unit:?} in {text:?} (use k, M or G)"
            ));
        }
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("size {text:?} out of range"))
}

pub fn parse_probability(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!(
            "expected a probability between 0 and 1, got {text:?}"
        )),
    }
}
