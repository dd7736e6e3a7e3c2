//! Terminal detection, colour, aligned tables and small formatting helpers.

use std::io::{IsTerminal, Write};

use super::Exit;

/// Whether standard output is a terminal: then commands print for people, otherwise
/// JSON or bare values for scripts.
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

/// Whether standard error is a terminal (for the red `Error:`).
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// Whether the user asked for no colour (https://no-color.org: set and not empty).
pub fn no_color_requested() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// Resolves `--color auto|never|always` (default auto: only on a terminal, never with
/// NO_COLOR).
pub fn colorize(color_flag: Option<&str>) -> Result<bool, Exit> {
    match color_flag.unwrap_or("auto") {
        "auto" => Ok(stdout_is_terminal() && !no_color_requested()),
        "never" => Ok(false),
        "always" => Ok(true),
        other => Err(Exit::Error(format!(
            "invalid --color value '{other}': use auto, never or always"
        ))),
    }
}

/// ANSI styling that is a no-op when colour is off.
#[derive(Debug, Clone, Copy)]
pub struct Paint {
    pub enabled: bool,
}

impl Paint {
    fn wrap(&self, code: &str, text: &str) -> String {
        if self.enabled {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
    pub fn bold(&self, text: &str) -> String {
        self.wrap("1", text)
    }
    pub fn faint(&self, text: &str) -> String {
        self.wrap("2", text)
    }
    pub fn underline(&self, text: &str) -> String {
        self.wrap("4", text)
    }
    pub fn red(&self, text: &str) -> String {
        self.wrap("31", text)
    }
    pub fn green(&self, text: &str) -> String {
        self.wrap("32", text)
    }
    pub fn yellow(&self, text: &str) -> String {
        self.wrap("33", text)
    }
    pub fn blue(&self, text: &str) -> String {
        self.wrap("34", text)
    }
    pub fn cyan(&self, text: &str) -> String {
        self.wrap("36", text)
    }
}

/// Rows of cells printed with every column padded to its widest cell (the last
/// column is not padded). The header row is underlined when colour is on.
pub fn table(header: &[&str], rows: &[Vec<String>], paint: Paint) -> String {
    let columns = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>, style: &dyn Fn(&str) -> String| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let last = i + 1 == cells.len();
            let padded = if last {
                cell.clone()
            } else {
                format!("{cell:<width$}", width = widths[i])
            };
            out.push_str(&style(&padded));
            if !last {
                out.push_str("  ");
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect(), &|s| {
        paint.underline(s)
    });
    for row in rows {
        out.push_str(&line(row.clone(), &|s| s.to_owned()));
    }
    out
}

/// Writes `text` to stdout at once; a closed pipe (`| head`) is not an error.
pub fn print(text: &str) -> Result<(), Exit> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Exit::Silent(0)),
        Err(e) => Err(Exit::Error(format!(
            "failed to write to standard output: {e}"
        ))),
    }
}

/// A JSON value serialized on one line followed by a newline, like Go's `json.Encoder`.
pub fn json_line<T: serde::Serialize>(value: &T) -> String {
    let mut text = serde_json::to_string(value).expect("JSON values always serialize");
    text.push('\n');
    text
}

/// A JSON value indented by two spaces followed by a newline.
pub fn json_pretty<T: serde::Serialize>(value: &T) -> String {
    let mut text = serde_json::to_string_pretty(value).expect("JSON values always serialize");
    text.push('\n');
    text
}

/// `YYYY-MM-DD hh:mm:ss` of an RFC 3339 timestamp (UTC as given); the input unchanged if
/// it does not look like one.
pub fn short_date(rfc3339: &str) -> String {
    if rfc3339.len() >= 19 && rfc3339.as_bytes()[10] == b'T' {
        format!("{} {}", &rfc3339[..10], &rfc3339[11..19])
    } else {
        rfc3339.to_owned()
    }
}

/// Decimal byte sizes with one fractional digit: `512 B`, `1.5 KB`, `12.3 MB`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KB", "MB", "GB", "TB", "PB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A duration in a Go-like short form: `850µs`, `12ms`, `1.2s`, `3m4s`.
pub fn format_duration(d: std::time::Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        "0s".to_owned()
    } else if nanos < 1_000 {
        format!("{nanos}ns")
    } else if nanos < 1_000_000 {
        format!("{}µs", trim_float(nanos as f64 / 1e3))
    } else if nanos < 1_000_000_000 {
        format!("{}ms", trim_float(nanos as f64 / 1e6))
    } else if d.as_secs() < 60 {
        format!("{}s", trim_float(nanos as f64 / 1e9))
    } else {
        let secs = d.as_secs();
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        if h > 0 {
            format!("{h}h{m}m{s}s")
        } else {
            format!("{m}m{s}s")
        }
    }
}

fn trim_float(value: f64) -> String {
    let text = format!("{value:.1}");
    text.strip_suffix(".0").map(str::to_owned).unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let rows = vec![
            vec!["a".into(), "x".into()],
            vec!["long".into(), "y".into()],
        ];
        let text = table(&["Key", "V"], &rows, Paint { enabled: false });
        assert_eq!(text, "Key   V\na     x\nlong  y\n");
    }

    #[test]
    fn sizes_dates_durations() {
        assert_eq!(format_size(999), "999 B");
        assert_eq!(format_size(12_345_678), "12.3 MB");
        assert_eq!(
            short_date("2024-02-29T10:12:28.123Z"),
            "2024-02-29 10:12:28"
        );
        assert_eq!(
            format_duration(std::time::Duration::from_millis(12)),
            "12ms"
        );
        assert_eq!(format_duration(std::time::Duration::from_secs(125)), "2m5s");
    }

    #[test]
    fn paint_off_is_plain() {
        assert_eq!(Paint { enabled: false }.red("x"), "x");
        assert_eq!(Paint { enabled: true }.red("x"), "\x1b[31mx\x1b[0m");
    }
}
