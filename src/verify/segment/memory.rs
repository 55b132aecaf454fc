//! The memory limit of verification: parsing `--memory-limit`, its default, and the estimate of
//! what verifying a model whole needs.

/// tract's memory while it runs one model, as a multiple of that model's weights: the bytes
/// handed to tract, tract's own tensors, and the packed copies its optimizer makes (measured as
/// anonymous memory on a MatMul chain of 64 MB: README, "Verifying in bounded memory").
pub const TRACT_FACTOR: u64 = 3;

/// The default `--memory-limit` is this fraction (1/N) of the machine's RAM: on a 24 GB machine
/// a tenth kept verified `clean` at 2.42–2.43 GB and verified `quantize` at 2.53–2.54 GB of
/// anonymous memory from 2 to 12 GB of weights (README, "Models larger than memory"), while
/// models of up to a thirtieth of the RAM in weights still verify whole.
pub const DEFAULT_RAM_FRACTION: u64 = 10;

/// The default `--memory-limit` where the RAM size is unknown (not Linux): 2 GiB.
pub const FALLBACK_LIMIT: u64 = 2 << 30;

/// Parses a size: plain bytes (`1048576`) or a number with a binary unit `K`, `M`, `G` or `T`
/// (`512M`, `8G`, `1.5G`; a trailing `B` or `iB` and lowercase are accepted). The error is the
/// reason, for the caller to put in one line.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let body = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let (num, unit) = match body.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&body[..i], Some(c)),
        _ => (body, None),
    };
    let scale: u64 = match unit {
        None => 1,
        Some('k') => 1 << 10,
        Some('m') => 1 << 20,
        Some('g') => 1 << 30,
        Some('t') => 1 << 40,
        Some(c) => {
            return Err(format!(
                "unknown unit `{c}` (use K, M, G or T, e.g. 512M or 8G)"
            ))
        }
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| "is not a size (e.g. 512M, 8G, 1.5G or a number of bytes)".to_string())?;
    let bytes = v * scale as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 / 2.0 {
        return Err("must be a positive size (e.g. 512M, 8G, 1.5G or a number of bytes)".into());
    }
    Ok(bytes as u64)
}

/// The machine's RAM in bytes (`MemTotal` of `/proc/meminfo`), if known.
pub fn total_ram() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The default `--memory-limit`: 1/[`DEFAULT_RAM_FRACTION`] of the RAM, else [`FALLBACK_LIMIT`].
pub fn default_memory_limit() -> u64 {
    total_ram()
        .map(|r| r / DEFAULT_RAM_FRACTION)
        .unwrap_or(FALLBACK_LIMIT)
}

/// `1.50G`, `512M`, `12K` or `100B`: a size in the units `--memory-limit` takes.
pub fn format_size(bytes: u64) -> String {
    let units = [
        (1u64 << 40, "T"),
        (1 << 30, "G"),
        (1 << 20, "M"),
        (1 << 10, "K"),
    ];
    for (scale, u) in units {
        if bytes >= scale {
            let v = bytes as f64 / scale as f64;
            return if v >= 100.0 {
                format!("{v:.0}{u}")
            } else if v >= 10.0 {
                format!("{v:.1}{u}")
            } else {
                format!("{v:.2}{u}")
            };
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("8G"), Ok(8 << 30));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("64kib"), Ok(64 << 10));
        assert_eq!(parse_size("2TB"), Ok(2 << 40));
        for bad in ["", "G", "-1G", "0", "8X", "1.5.5G", "nan", "inf"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_format_in_the_units_they_parse_in() {
        assert_eq!(format_size(512 << 20), "512M");
        assert_eq!(format_size(3 << 29), "1.50G");
        assert_eq!(format_size(100), "100B");
        assert_eq!(parse_size(&format_size(3 << 29)), Ok(3 << 29));
    }
}

/// Gives the heap's free pages back to the system (glibc's `malloc_trim`, over every arena).
/// Called after each segment's tract models are dropped: glibc raises its threshold for serving
/// allocations from `mmap` up to 32 MiB after large frees, so the freed weights of a segment
/// otherwise stay in the heap as anonymous memory beside the next segment (0.7–1.3 GB on the
/// bench's stacks; README, "Models larger than memory"). Elsewhere a no-op.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only returns free pages of the allocator's own heaps to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}
