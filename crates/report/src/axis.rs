//! Round axis ticks for the report's charts: 0, 0.5 GiB, 1 GiB, 1.5 GiB …
//! or $0, $0.005, $0.01 …, never two ticks with the same label.

/// What a chart's values are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Bytes, labelled in the binary unit that fits the axis.
    Bytes,
    /// US dollars.
    Usd,
}

const BYTE_UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

/// Ticks from 0 up to the first at or above `max`, about four steps of 1,
/// 2, 2.5 or 5 × 10ⁿ (of the byte unit for bytes), with their labels.
#[must_use]
pub fn ticks(max: f64, unit: Unit) -> Vec<(f64, String)> {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let base = match unit {
        Unit::Usd => 1.0,
        Unit::Bytes => {
            let mut b = 1.0;
            let mut k = 0;
            while max / b >= 1024.0 && k + 1 < BYTE_UNITS.len() {
                b *= 1024.0;
                k += 1;
            }
            b
        }
    };
    let scaled = max / base;
    let (step, decimals) = nice_step(scaled / 4.0);
    // Bytes below one are not split.
    let (step, decimals) = if unit == Unit::Bytes && base == 1.0 && step < 1.0 {
        (1.0, 0)
    } else {
        (step, decimals)
    };
    let n = (scaled / step - 1e-9).ceil().max(1.0) as u32;
    (0..=n)
        .map(|i| {
            let v = step * f64::from(i);
            (v * base, label(v, decimals, base, unit))
        })
        .collect()
}

/// A round step near `raw` and the decimals its multiples need.
fn nice_step(raw: f64) -> (f64, usize) {
    let e = raw.log10().floor();
    let mag = 10f64.powf(e);
    let norm = raw / mag;
    let (nice, extra) = [(1.0, 0), (2.0, 0), (2.5, 1), (5.0, 0), (10.0, 0)]
        .into_iter()
        .find(|(n, _)| *n >= norm - 1e-9)
        .unwrap_or((10.0, 0));
    let step = nice * mag;
    let e = if nice >= 10.0 { e + 1.0 } else { e };
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let decimals = if e < 0.0 {
        (-e) as usize + extra
    } else {
        extra.saturating_sub(e as usize)
    };
    (step, decimals)
}

fn label(v: f64, decimals: usize, base: f64, unit: Unit) -> String {
    if v == 0.0 {
        return match unit {
            Unit::Usd => "$0".into(),
            Unit::Bytes => "0".into(),
        };
    }
    let mut s = format!("{v:.decimals$}");
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    match unit {
        Unit::Usd => format!("${s}"),
        Unit::Bytes => {
            let k = (base.log2() / 10.0).round() as usize;
            format!("{s} {}", BYTE_UNITS[k.min(BYTE_UNITS.len() - 1)])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ticks, Unit};

    fn labels(max: f64, unit: Unit) -> Vec<String> {
        ticks(max, unit).into_iter().map(|(_, l)| l).collect()
    }

    #[test]
    fn bytes_round_to_their_unit() {
        let gib = 1024f64.powi(3);
        assert_eq!(
            labels(1.95 * gib, Unit::Bytes),
            ["0", "0.5 GiB", "1 GiB", "1.5 GiB", "2 GiB"]
        );
        assert_eq!(
            labels(996.02 * 1024.0 * 1024.0, Unit::Bytes),
            ["0", "250 MiB", "500 MiB", "750 MiB", "1000 MiB"]
        );
        assert_eq!(labels(3.0, Unit::Bytes), ["0", "1 B", "2 B", "3 B"]);
        let t = ticks(1.95 * gib, Unit::Bytes);
        assert!((t[4].0 - 2.0 * gib).abs() < 1.0);
    }

    #[test]
    fn dollars_get_the_decimals_their_step_needs() {
        assert_eq!(labels(0.024, Unit::Usd), ["$0", "$0.01", "$0.02", "$0.03"]);
        assert_eq!(
            labels(0.018, Unit::Usd),
            ["$0", "$0.005", "$0.01", "$0.015", "$0.02"]
        );
        assert_eq!(labels(38.0, Unit::Usd), ["$0", "$10", "$20", "$30", "$40"]);
        assert_eq!(
            labels(0.9, Unit::Usd),
            ["$0", "$0.25", "$0.5", "$0.75", "$1"]
        );
    }

    proptest::proptest! {
        /// Ticks rise from 0 past the maximum in a handful of steps, each
        /// label different.
        #[test]
        fn ticks_cover_the_range_with_distinct_labels(max in 1e-4f64..1e15, bytes: bool) {
            let unit = if bytes { Unit::Bytes } else { Unit::Usd };
            let t = ticks(max, unit);
            proptest::prop_assert!(t.len() >= 2 && t.len() <= 12, "{t:?}");
            proptest::prop_assert_eq!(t[0].0, 0.0);
            proptest::prop_assert!(t.last().map(|x| x.0).unwrap_or(0.0) >= max * (1.0 - 1e-9), "{t:?}");
            proptest::prop_assert!(t.windows(2).all(|w| w[1].0 > w[0].0));
            let distinct: std::collections::HashSet<&String> = t.iter().map(|x| &x.1).collect();
            proptest::prop_assert_eq!(distinct.len(), t.len(), "{:?}", t);
        }
    }
}
