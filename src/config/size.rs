//! Byte sizes as people write them in den's YAML files: `512M`, `1.5G`,
//! `64KiB`, or a plain byte count. Suffixes are powers of 1024, as
//! tmpfs and most tools read them.

/// The number of bytes `text` names; `None` when it names none (or more
/// than 64 bits hold).
pub fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return None,
    };
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return None;
    }
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if shift == 0 && !fraction.is_empty() {
        return None; // a fraction of a byte
    }
    let whole: u64 = whole.parse().ok()?;
    let mut bytes = whole.checked_mul(1 << shift)?;
    if !fraction.is_empty() {
        // Exact in f64 up to 2^53, far more than a fraction of a unit needs.
        let fraction: f64 = format!("0.{fraction}").parse().ok()?;
        bytes = bytes.checked_add((fraction * (1u64 << shift) as f64) as u64)?;
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn suffixes_are_powers_of_1024() {
        assert_eq!(parse_bytes("4096"), Some(4096));
        assert_eq!(parse_bytes("64K"), Some(64 << 10));
        assert_eq!(parse_bytes("512M"), Some(512 << 20));
        assert_eq!(parse_bytes("2GiB"), Some(2 << 30));
        assert_eq!(parse_bytes("1.5G"), Some(3 << 29));
        assert_eq!(parse_bytes("10 g"), Some(10 << 30));
    }

    #[test]
    fn nonsense_is_refused() {
        for text in [
            "",
            "G",
            "1.2.3G",
            "1X",
            "-1M",
            ".5G",
            "5.G",
            "1.5",
            "1e3G",
            "99999999999T",
        ] {
            assert_eq!(parse_bytes(text), None, "{text}");
        }
    }
}
