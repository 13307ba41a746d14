//! Output of the operator commands: aligned tables for people, and the
//! API's JSON (pretty) for scripts with `--json`.

use std::fmt::Write;

/// Renders `rows` under `headers`, each column as wide as its widest cell,
/// two spaces apart. Numbers are right-aligned so they line up.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let numeric: Vec<bool> = (0..headers.len())
        .map(|i| {
            !rows.is_empty()
                && rows.iter().all(|r| {
                    r.get(i)
                        .is_some_and(|c| !c.is_empty() && c.parse::<u64>().is_ok())
                })
        })
        .collect();
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            if numeric[i] {
                let _ = write!(l, "{cell:>w$}");
            } else {
                let _ = write!(l, "{cell:<w$}");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(headers.to_vec(), &mut out);
    for row in rows {
        line(row.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

/// A duration in ms for people: `850ms`, `42s`, `3m05s`, `2h07m`.
pub fn duration_ms(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// Pretty JSON for `--json` (one document, newline-terminated).
pub fn json(v: &serde_json::Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_numbers_go_right() {
        let t = table(
            &["NODE", "ROOMS"],
            &[
                vec!["ast1".into(), "7".into()],
                vec!["ast10".into(), "12".into()],
            ],
        );
        assert_eq!(t, "NODE   ROOMS\nast1       7\nast10     12\n");
    }

    #[test]
    fn durations_read_at_a_glance() {
        let d: Vec<String> = [0, 850, 1_000, 59_999, 185_000, 7_620_000]
            .into_iter()
            .map(duration_ms)
            .collect();
        assert_eq!(d, ["0ms", "850ms", "1s", "59s", "3m05s", "2h07m"]);
    }

    #[test]
    fn an_empty_table_is_its_header() {
        assert_eq!(table(&["A", "B"], &[]), "A  B\n");
    }
}
