//! Writing roff for man(7): escaping and the few macros the pages use.
//!
//! Text is escaped so that what a reader copies from `man kes` is what the help says:
//! `-` stays an ASCII hyphen-minus (`\-`), `'` and `` ` `` stay straight quotes, and a
//! line that would start with `.` or `'` cannot be taken for a request.

/// A man page being written.
#[derive(Debug, Default)]
pub struct Roff {
    out: String,
}

impl Roff {
    /// A page titled `title(section)`; no date, so that the same commit always gives
    /// the same page (reproducible packages, docs/release.md).
    pub fn page(title: &str, section: char) -> Roff {
        let mut roff = Roff::default();
        roff.request(&format!(
            ".TH {} {section} \"\" \"kes {}\" \"KES Manual\"",
            arg(&title.to_uppercase()),
            env!("CARGO_PKG_VERSION")
        ));
        roff
    }

    pub fn finish(self) -> String {
        self.out
    }

    /// A request line written as given (already escaped).
    pub fn request(&mut self, line: &str) {
        self.out.push_str(line);
        self.out.push('\n');
    }

    /// `.SH TITLE`.
    pub fn section(&mut self, title: &str) {
        self.request(&format!(".SH {}", arg(&title.to_uppercase())));
    }

    /// `.SS title`.
    pub fn subsection(&mut self, title: &str) {
        self.request(&format!(".SS {}", arg(title)));
    }

    /// A new paragraph of filled text; `lines` are escaped here.
    pub fn paragraph<S: AsRef<str>>(&mut self, lines: &[S]) {
        self.request(".PP");
        for line in lines {
            self.text_line(&escape(line.as_ref()));
        }
    }

    /// A new paragraph of text that is already roff (escaped, with font changes).
    pub fn paragraph_roff(&mut self, roff: &str) {
        self.request(".PP");
        for line in roff.lines() {
            self.text_line(line);
        }
    }

    /// A tagged paragraph: `tag` (roff) above `body` (roff), indented.
    pub fn tagged(&mut self, tag: &str, body: &str) {
        self.request(".TP");
        self.text_line(tag);
        for line in body.lines() {
            self.text_line(line);
        }
    }

    /// A tagged paragraph whose body lines (roff) each start a new line.
    pub fn tagged_lines(&mut self, tag: &str, lines: &[String]) {
        self.request(".TP");
        self.text_line(tag);
        for (i, line) in lines.iter().enumerate() {
            if i > 0 {
                self.request(".br");
            }
            self.text_line(line);
        }
    }

    /// Lines shown as written (no filling), escaped here, indented by `indent` ens.
    pub fn literal<S: AsRef<str>>(&mut self, lines: &[S], indent: u8) {
        self.request(".PP");
        if indent > 0 {
            self.request(&format!(".RS {indent}"));
        }
        self.request(".nf");
        for line in lines {
            self.text_line(&escape(line.as_ref()));
        }
        self.request(".fi");
        if indent > 0 {
            self.request(".RE");
        }
    }

    /// One line of text (already roff). Leading blanks would break the line in filled
    /// text and a leading `.`/`'` would be a request: both are guarded.
    pub fn text_line(&mut self, line: &str) {
        if line.is_empty() {
            // An empty line in roff is a blank line even in filled text.
            self.request(".sp");
            return;
        }
        if line.starts_with(['.', '\'']) {
            self.out.push_str("\\&");
        }
        self.request(line);
    }
}

/// Bold text.
pub fn bold(text: &str) -> String {
    format!("\\fB{}\\fR", escape(text))
}

/// Italic text.
pub fn italic(text: &str) -> String {
    format!("\\fI{}\\fR", escape(text))
}

/// A macro argument: escaped and quoted.
pub fn arg(text: &str) -> String {
    format!("\"{}\"", escape(text))
}

/// Escapes text for roff. Characters with a portable groff name get it; other
/// non-ASCII text is left to preconv(1), which man-db runs on every page.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\e"),
            '-' => out.push_str("\\-"),
            '\'' | '’' => out.push_str("\\(aq"),
            '`' => out.push_str("\\(ga"),
            '"' => out.push_str("\\(dq"),
            '^' => out.push_str("\\(ha"),
            '~' => out.push_str("\\(ti"),
            '—' => out.push_str("\\(em"),
            '–' => out.push_str("\\(en"),
            '…' => out.push_str("..."),
            '→' => out.push_str("\\(->"),
            '←' => out.push_str("\\(<-"),
            '≤' => out.push_str("\\(<="),
            '≥' => out.push_str("\\(>="),
            '≠' => out.push_str("\\(!="),
            '×' => out.push_str("\\(mu"),
            '§' => out.push_str("\\(sc"),
            '“' => out.push_str("\\(lq"),
            '”' => out.push_str("\\(rq"),
            '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_roff_would_change() {
        assert_eq!(escape("--json 'x*' a\\b"), "\\-\\-json \\(aqx*\\(aq a\\eb");
        assert_eq!(escape("a → b — c"), "a \\(-> b \\(em c");
        let mut roff = Roff::default();
        roff.text_line(".hidden request");
        roff.text_line(&escape("'quoted"));
        assert_eq!(roff.finish(), "\\&.hidden request\n\\(aqquoted\n");
    }
}
