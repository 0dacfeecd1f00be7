//! Plain-text tables and the small formatters their cells use.

use std::fmt::Write as _;

/// Longest cell a table prints; longer ones end in an ellipsis (`--output json` carries them whole).
pub const MAX_CELL: usize = 40;

/// How a column lines its cells up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text.
    Left,
    /// Numbers, so their digits line up.
    Right,
}

/// A table whose column widths come from its content.
#[derive(Debug)]
pub struct Table {
    headers: Vec<&'static str>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these columns.
    pub fn new(columns: &[(&'static str, Align)]) -> Self {
        Self {
            headers: columns.iter().map(|c| c.0).collect(),
            align: columns.iter().map(|c| c.1).collect(),
            rows: vec![],
        }
    }

    /// Adds a row, one cell per column; each cell is made printable and capped at [`MAX_CELL`].
    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len(), "one cell per column");
        self.rows.push(cells.into_iter().map(|c| cell(&c)).collect());
    }

    /// The table, every line indented by `indent` spaces and ending in a newline; trailing spaces
    /// trimmed so a last left-aligned column does not pad the line.
    pub fn render(&self, indent: usize) -> String {
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|i| {
                let cells = self.rows.iter().map(|r| r[i].chars().count());
                cells.chain([self.headers[i].len()]).max().unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = " ".repeat(indent);
            for (i, text) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = " ".repeat(widths[i] - text.chars().count());
                match self.align[i] {
                    Align::Left => {
                        line.push_str(text);
                        line.push_str(&pad);
                    }
                    Align::Right => {
                        line.push_str(&pad);
                        line.push_str(text);
                    }
                }
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
        out
    }
}

/// `text` as one table cell: control characters escaped (a newline in a name must not break the
/// table), at most [`MAX_CELL`] characters.
pub fn cell(text: &str) -> String {
    let printable: String =
        text.chars().flat_map(|c| if c.is_control() { c.escape_default().collect() } else { vec![c] }).collect();
    ellipsis(&printable, MAX_CELL)
}

/// `text` cut to `max` characters, the last of them an ellipsis, if longer.
pub fn ellipsis(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// A size in bytes as a person reads it: `512 B`, `8.0 MiB`, `1.5 GiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// How long ago something was heard from, or `never`.
pub fn ago(ms: Option<u64>) -> String {
    let Some(ms) = ms else { return "never".into() };
    let secs = ms / 1000;
    match secs {
        // Tenths matter while it is fresh: a heartbeat is a fraction of a second.
        0..10 => format!("{:.1} s ago", ms as f64 / 1000.0),
        10..120 => format!("{secs} s ago"),
        120..7200 => format!("{} min ago", secs / 60),
        7200..172_800 => format!("{} h ago", secs / 3600),
        _ => format!("{} d ago", secs / 86_400),
    }
}

/// `value`, or `-` when empty: an empty cell would read as a misaligned table.
pub fn or_dash(value: &str) -> String {
    if value.is_empty() { "-".into() } else { value.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_fit_the_longest_cell() {
        let mut t = Table::new(&[("NAME", Align::Left), ("SIZE", Align::Right), ("NOTE", Align::Left)]);
        t.row(vec!["a-very-long-name".into(), "1".into(), "x".into()]);
        t.row(vec!["b".into(), "100".into(), "".into()]);
        assert_eq!(
            t.render(0),
            "NAME              SIZE  NOTE\n\
             a-very-long-name     1  x\n\
             b                  100\n"
        );
    }

    #[test]
    fn absurd_cells_are_capped_and_control_characters_escaped() {
        let long = "n".repeat(100);
        assert_eq!(cell(&long).chars().count(), MAX_CELL);
        assert!(cell(&long).ends_with('…'));
        assert_eq!(cell("a\nb"), "a\\nb");
    }

    #[test]
    fn sizes_and_ages_read_as_a_person_would_say_them() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(8 << 20), "8.0 MiB");
        assert_eq!(human_size(3 << 29), "1.5 GiB");
        assert_eq!(ago(None), "never");
        assert_eq!(ago(Some(400)), "0.4 s ago");
        assert_eq!(ago(Some(42_000)), "42 s ago");
        assert_eq!(ago(Some(600_000)), "10 min ago");
    }
}
