//! Byte sizes on the command line: `65536`, `64KiB`, `16MiB`, `1GiB`, `64k`.

/// Parses a byte size with an optional binary unit.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 65536, 64KiB, 16MiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} in {s:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

pub use cairn_report::human;

/// "added N new chunks, X raw, Y stored": what a backup added.
pub fn added(t: &cairn_engine::SnapshotTotals) -> String {
    format!(
        "added {} new chunks, {} raw, {} stored in {} packs; {} PUT requests",
        t.new_chunks,
        human(t.new_bytes),
        human(t.new_stored_bytes),
        t.new_packs,
        t.requests.puts
    )
}

/// A record's time as the repository writes it: `2026-11-25T04:00:00.000000Z`.
pub fn time(t: &cairn_engine::Time) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("16m"), Ok(16 << 20));
        assert!(parse_size("12 parsecs").is_err());
        assert_eq!(human(1536), "1.50 KiB");
    }
}
