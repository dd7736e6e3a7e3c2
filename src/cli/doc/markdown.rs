//! The Markdown of docs/*.md as man-page roff, so that a page built from a document
//! (kes-config(5) from docs/config.md, parts of kes(1) from docs/cli.md) says what the
//! document says.
//!
//! Only what those documents use: ATX headings, paragraphs, `*`/`-`/`1.` lists with
//! indented continuation lines, fenced code, pipe tables, and inline code, bold,
//! emphasis and links. A table becomes a list of tagged paragraphs (first column as the
//! tag, the other columns as `Header: cell` lines): tbl(1) tables do not fit an
//! 80-column terminal.

use super::roff::{Roff, escape};

/// Renders `markdown` into `roff`. Headings of level `top` become `.SH`, deeper ones
/// `.SS` (and bold paragraphs below that); headings above `top` are left out (the
/// page's title says it).
pub fn render(roff: &mut Roff, markdown: &str, top: usize) {
    let lines: Vec<&str> = markdown.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim();
        if trimmed.is_empty() {
            i += 1;
        } else if let Some((level, title)) = heading(line) {
            if level == top {
                roff.section(&plain(title));
            } else if level == top + 1 {
                roff.subsection(&plain(title));
            } else if level > top + 1 {
                roff.paragraph_roff(&format!("\\fB{}\\fR", inline(title)));
            }
            i += 1;
        } else if trimmed.starts_with("```") {
            let start = i + 1;
            let mut end = start;
            while end < lines.len() && !lines[end].trim_start().starts_with("```") {
                end += 1;
            }
            roff.literal(&lines[start..end], 4);
            i = end + 1;
        } else if trimmed.starts_with('|') {
            let start = i;
            while i < lines.len() && lines[i].trim().starts_with('|') {
                i += 1;
            }
            table(roff, &lines[start..i]);
        } else if let Some((marker, first)) = list_item(line) {
            let mut text = vec![first];
            i += 1;
            while i < lines.len() && continues_item(lines[i]) {
                text.push(lines[i].trim());
                i += 1;
            }
            roff.request(&format!(".IP {marker} 4"));
            for line in text {
                roff.text_line(&inline(line));
            }
        } else {
            let mut text = Vec::new();
            while i < lines.len() && is_paragraph_line(lines[i]) {
                text.push(lines[i].trim());
                i += 1;
            }
            roff.paragraph_roff(
                &text
                    .iter()
                    .map(|l| inline(l))
                    .collect::<Vec<_>>()
                    .join("\n"),
            );
        }
    }
}

/// The text of the section under heading `title` (any level), up to the next heading
/// of the same or a higher level.
pub fn section<'a>(markdown: &'a str, title: &str) -> Option<&'a str> {
    let mut offset = 0;
    let mut found: Option<(usize, usize)> = None;
    for line in markdown.split_inclusive('\n') {
        let end = offset + line.len();
        match (heading(line.trim_end()), found) {
            (Some((level, text)), None) if text == title => found = Some((level, end)),
            (Some((level, _)), Some((wanted, start))) if level <= wanted => {
                return Some(&markdown[start..offset]);
            }
            _ => {}
        }
        offset = end;
    }
    found.map(|(_, start)| &markdown[start..])
}

/// The first paragraph after the document's title.
pub fn first_paragraph(markdown: &str) -> String {
    markdown
        .lines()
        .skip_while(|l| l.trim().is_empty() || l.starts_with('#'))
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ")
}

fn heading(line: &str) -> Option<(usize, &str)> {
    let level = line.len() - line.trim_start_matches('#').len();
    if level == 0 || level > 6 {
        return None;
    }
    line[level..]
        .strip_prefix(' ')
        .map(|title| (level, title.trim()))
}

/// A list item's marker (a bullet, or the item's number as written) and first line.
fn list_item(line: &str) -> Option<(String, &str)> {
    if let Some(rest) = line.strip_prefix("* ").or_else(|| line.strip_prefix("- ")) {
        return Some(("\\(bu".to_owned(), rest.trim()));
    }
    let digits = line.len() - line.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    if digits > 0 && line[digits..].starts_with(". ") {
        return Some((line[..digits + 1].to_owned(), line[digits + 2..].trim()));
    }
    None
}

fn continues_item(line: &str) -> bool {
    line.starts_with("  ") && !line.trim().is_empty()
}

fn is_paragraph_line(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty()
        && heading(line).is_none()
        && !t.starts_with("```")
        && !t.starts_with('|')
        && list_item(line).is_none()
}

/// The cells of a table row; `\|` is a pipe inside a cell.
fn cells(row: &str) -> Vec<String> {
    let row = row.trim().trim_start_matches('|');
    let row = row.strip_suffix('|').unwrap_or(row);
    let mut out = vec![String::new()];
    let mut chars = row.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                out.last_mut().unwrap().push('|');
                chars.next();
            }
            '|' => out.push(String::new()),
            c => out.last_mut().unwrap().push(c),
        }
    }
    out.into_iter().map(|c| c.trim().to_owned()).collect()
}

/// Table headers of a description column, which gets no label.
const DESCRIPTION_COLUMNS: &[&str] = &["Meaning", "Description", "Notes"];

fn table(roff: &mut Roff, rows: &[&str]) {
    let Some((header, body)) = rows.split_first() else {
        return;
    };
    let header = cells(header);
    let is_rule = |row: &str| row.chars().all(|c| matches!(c, '|' | '-' | ':' | ' '));
    for row in body.iter().filter(|r| !is_rule(r)) {
        let cells = cells(row);
        let Some((first, rest)) = cells.split_first() else {
            continue;
        };
        // Columns are labelled by their header (`Default: 5m`), except the description.
        let mut lines = Vec::new();
        for (name, cell) in header.iter().skip(1).zip(rest) {
            if cell.is_empty() || cell == "—" || cell == "-" {
                continue;
            }
            if DESCRIPTION_COLUMNS.contains(&name.as_str()) {
                lines.push(inline(cell));
            } else {
                lines.push(format!("{}: {}", escape(name), inline(cell)));
            }
        }
        let tag = if first.starts_with('`') || first.starts_with("**") {
            inline(first)
        } else {
            format!("\\fB{}\\fR", inline(first))
        };
        roff.tagged_lines(&tag, &lines);
    }
}

/// Heading text without Markdown marks, for `.SH`/`.SS` (which escape it themselves).
fn plain(text: &str) -> String {
    text.replace(['`', '*'], "")
}

/// Inline Markdown as roff: `code` and **bold** in bold, *emphasis* in italics, links
/// as their text.
pub fn inline(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c == '`' {
            if let Some(end) = rest[1..].find('`') {
                out.push_str(&format!("\\fB{}\\fR", escape(&rest[1..1 + end])));
                rest = &rest[end + 2..];
                continue;
            }
        }
        if let Some(inner) = rest.strip_prefix("**") {
            if let Some(end) = inner.find("**") {
                out.push_str(&format!("\\fB{}\\fR", inline(&inner[..end])));
                rest = &inner[end + 2..];
                continue;
            }
        }
        if c == '*' {
            if let Some(end) = emphasis_end(&rest[1..]) {
                out.push_str(&format!("\\fI{}\\fR", inline(&rest[1..1 + end])));
                rest = &rest[end + 2..];
                continue;
            }
        }
        if c == '[' {
            if let Some((label, after)) = link(rest) {
                out.push_str(&inline(label));
                rest = after;
                continue;
            }
        }
        if c == '\\' {
            if let Some(next) = rest[1..].chars().next().filter(char::is_ascii_punctuation) {
                out.push_str(&escape(&next.to_string()));
                rest = &rest[1 + next.len_utf8()..];
                continue;
            }
        }
        out.push_str(&escape(&c.to_string()));
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// `*word*`: the emphasis must start and end next to a letter, so that a glob such
/// as `minio-*` in prose stays a star.
fn emphasis_end(after_star: &str) -> Option<usize> {
    if !after_star.starts_with(|c: char| c.is_alphanumeric()) {
        return None;
    }
    let end = after_star.find('*')?;
    after_star[..end]
        .ends_with(|c: char| c.is_alphanumeric() || c == '.')
        .then_some(end)
}

/// `[label](target)` → (label, text after the link).
fn link(text: &str) -> Option<(&str, &str)> {
    let close = text.find("](")?;
    let label = &text[1..close];
    if label.contains('[') {
        return None;
    }
    let end = text[close..].find(')')? + close;
    Some((label, &text[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_marks() {
        assert_eq!(
            inline("a `--json` **b** *c* [d](e.md) minio-* x"),
            "a \\fB\\-\\-json\\fR \\fBb\\fR \\fIc\\fR d minio\\-* x"
        );
    }

    #[test]
    fn blocks() {
        let md = "# Title\n\nIntro\nmore.\n\n## Part\n\n* one\n  two\n- three\n\n\
                  | Key | Default | Meaning |\n|---|---|---|\n| `a` | 1 | b |\n| `c` | — | d |\n\n```yaml\nkey: value\n```\n";
        let mut roff = Roff::default();
        render(&mut roff, md, 2);
        let text = roff.finish();
        assert_eq!(
            text,
            ".PP\nIntro\nmore.\n.SH \"PART\"\n.IP \\(bu 4\none\ntwo\n.IP \\(bu 4\nthree\n\
             .TP\n\\fBa\\fR\nDefault: 1\n.br\nb\n.TP\n\\fBc\\fR\nd\n.PP\n.RS 4\n.nf\nkey: value\n.fi\n.RE\n"
        );
    }

    #[test]
    fn sections() {
        let md = "# T\n## A\na\n### A1\nb\n## B\nc\n";
        assert_eq!(section(md, "A"), Some("a\n### A1\nb\n"));
        assert_eq!(section(md, "B"), Some("c\n"));
        assert_eq!(section(md, "C"), None);
        assert_eq!(first_paragraph("# T\n\nOne\ntwo.\n\nThree"), "One two.");
    }
}
