//! A command's usage text, as `--help` prints it, read back into its parts.
//!
//! The help texts are the one place where commands, flags and their descriptions are
//! written down; the man pages and the shell completions are made from what this
//! module reads out of them, so they cannot say something the help does not.
//!
//! The layout every usage text follows (src/cli/*.rs, src/server/run.rs):
//! a section starts with a title alone on an unindented line (`Usage:`, `Commands:`,
//! `Options:`, `Examples:`) and holds the indented lines below it; an unindented line
//! that is not a title is prose. In `Commands:` and `Options:` an entry starts at an
//! indent of at most 8 columns with its term (`create`, `-k, --insecure`,
//! `--config FILE`), and its description follows after two or more spaces or on the
//! deeper-indented lines below.

/// A usage text split into its blocks, in the order they appear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    /// The command lines under `Usage:`.
    pub synopsis: Vec<String>,
    pub blocks: Vec<Block>,
}

/// One part of a usage text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    /// A paragraph of prose, one string per line as written.
    Text(Vec<String>),
    /// The entries under `Commands:`.
    Commands(Vec<Entry>),
    /// The entries under `Options:`.
    Options(Vec<Entry>),
    /// The lines under `Examples:`, without their indent.
    Examples(Vec<String>),
    /// A section this reader does not know, kept line by line (indent removed).
    Other { title: String, lines: Vec<String> },
}

/// A term and its description, e.g. `-k, --insecure` / `Skip TLS certificate validation.`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub term: String,
    /// The description's lines as written (may be empty).
    pub description: Vec<String>,
}

impl Entry {
    /// The description as one line.
    pub fn text(&self) -> String {
        self.description.join(" ")
    }
}

/// One flag of an `Options:` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagSpec {
    pub short: Option<char>,
    /// Without the dashes; `None` for a short-only flag.
    pub long: Option<String>,
    /// The value's placeholder as written (`FILE`, `<when>`, `on|off`), for flags that
    /// take one.
    pub value: Option<String>,
    pub description: String,
}

/// Entries start at an indent of at most this many columns; deeper lines continue
/// the description of the entry above.
const MAX_ENTRY_INDENT: usize = 8;

impl Usage {
    /// Reads a usage text.
    pub fn parse(text: &str) -> Usage {
        let mut usage = Usage {
            synopsis: Vec::new(),
            blocks: Vec::new(),
        };
        let mut section: Option<(String, Vec<&str>)> = None;
        let mut paragraph: Vec<String> = Vec::new();
        for line in text.lines() {
            let indented = line.starts_with(' ') || line.starts_with('\t');
            if line.trim().is_empty() {
                flush_paragraph(&mut usage, &mut paragraph);
                if let Some((_, lines)) = section.as_mut() {
                    lines.push(line);
                }
                continue;
            }
            if indented && section.is_some() {
                if let Some((_, lines)) = section.as_mut() {
                    lines.push(line);
                }
                continue;
            }
            if let Some((title, lines)) = section.take() {
                usage.finish_section(&title, &lines);
            }
            if is_title(line) {
                flush_paragraph(&mut usage, &mut paragraph);
                section = Some((line.trim_end_matches(':').to_owned(), Vec::new()));
            } else {
                paragraph.push(line.trim().to_owned());
            }
        }
        flush_paragraph(&mut usage, &mut paragraph);
        if let Some((title, lines)) = section.take() {
            usage.finish_section(&title, &lines);
        }
        usage
    }

    fn finish_section(&mut self, title: &str, lines: &[&str]) {
        let nonblank = lines.iter().filter(|l| !l.trim().is_empty());
        match title {
            "Usage" => self.synopsis.extend(nonblank.map(|l| l.trim().to_owned())),
            "Commands" => self.blocks.push(Block::Commands(entries(lines))),
            "Options" => self.blocks.push(Block::Options(entries(lines))),
            "Examples" => self
                .blocks
                .push(Block::Examples(nonblank.map(|l| dedent(l)).collect())),
            _ => self.blocks.push(Block::Other {
                title: title.to_owned(),
                lines: nonblank.map(|l| dedent(l)).collect(),
            }),
        }
    }

    /// The entries of every `Commands:` section.
    pub fn commands(&self) -> impl Iterator<Item = &Entry> {
        self.blocks.iter().flat_map(|b| match b {
            Block::Commands(entries) => entries.as_slice(),
            _ => &[],
        })
    }

    /// The flags of every `Options:` section.
    pub fn flags(&self) -> Vec<FlagSpec> {
        self.blocks
            .iter()
            .flat_map(|b| match b {
                Block::Options(entries) => entries.as_slice(),
                _ => &[],
            })
            .flat_map(|entry| flags_of(&entry.term, &entry.text()))
            .collect()
    }
}

/// `Usage:`, `Commands:`: one word and a colon on an unindented line.
fn is_title(line: &str) -> bool {
    line.ends_with(':')
        && line.len() > 1
        && line[..line.len() - 1]
            .chars()
            .all(|c| c.is_ascii_alphabetic() || c == ' ')
        && line.starts_with(|c: char| c.is_ascii_uppercase())
        && !line.contains("  ")
}

fn flush_paragraph(usage: &mut Usage, paragraph: &mut Vec<String>) {
    if !paragraph.is_empty() {
        usage.blocks.push(Block::Text(std::mem::take(paragraph)));
    }
}

/// A section line without the section's 4-column indent (deeper indents are kept).
fn dedent(line: &str) -> String {
    let spaces = line.len() - line.trim_start_matches(' ').len();
    line[spaces.min(4)..].trim_end().to_owned()
}

fn entries(lines: &[&str]) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    for line in lines.iter().filter(|l| !l.trim().is_empty()) {
        let indent = line.len() - line.trim_start().len();
        let text = line.trim();
        match out.last_mut() {
            Some(entry) if indent > MAX_ENTRY_INDENT => entry.description.push(text.to_owned()),
            _ => {
                let (term, description) = match text.find("  ") {
                    Some(i) => (&text[..i], Some(text[i..].trim())),
                    None => (text, None),
                };
                out.push(Entry {
                    term: term.to_owned(),
                    description: description.into_iter().map(str::to_owned).collect(),
                });
            }
        }
    }
    out
}

/// The flags of an `Options:` term: `-k, --insecure` is one flag, `--key FILE, --cert
/// FILE` two; the value placeholder follows a space or `=`.
pub fn flags_of(term: &str, description: &str) -> Vec<FlagSpec> {
    let mut flags: Vec<FlagSpec> = Vec::new();
    for part in term.split(", ").map(str::trim) {
        let (name, value) = match part.find([' ', '=']) {
            Some(i) => (&part[..i], Some(part[i + 1..].trim().to_owned())),
            None => (part, None),
        };
        if let Some(long) = name.strip_prefix("--") {
            // A long flag right after a lone short one is the same flag (`-k, --insecure`).
            match flags.last_mut() {
                Some(last) if last.long.is_none() && last.value.is_none() => {
                    last.long = Some(long.to_owned());
                    last.value = value;
                }
                _ => flags.push(FlagSpec {
                    short: None,
                    long: Some(long.to_owned()),
                    value,
                    description: description.to_owned(),
                }),
            }
        } else if let Some(short) = name.strip_prefix('-') {
            let mut chars = short.chars();
            if let (Some(c), None) = (chars.next(), chars.next()) {
                flags.push(FlagSpec {
                    short: Some(c),
                    long: None,
                    value,
                    description: description.to_owned(),
                });
            }
        }
    }
    flags
}

/// The aliases a command's description names: `… (alias: describe).`,
/// `(aliases: a, b)`.
pub fn aliases_of(description: &str) -> Vec<String> {
    let Some(start) = description
        .find("(alias: ")
        .map(|i| i + "(alias: ".len())
        .or_else(|| {
            description
                .find("(aliases: ")
                .map(|i| i + "(aliases: ".len())
        })
    else {
        return Vec::new();
    };
    let rest = &description[start..];
    let end = rest.find(')').unwrap_or(rest.len());
    rest[..end]
        .split(',')
        .map(|a| a.trim().to_owned())
        .filter(|a| !a.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "Usage:
    kes thing [options] <name>
    kes thing --other

Commands:
    one                      First (alias: 1).

    two                      Second, with a description
                             over two lines.

Options:
    -k, --insecure           Skip it.
        --json               JSON.
    --key FILE, --cert FILE
                             Both files.
    --auth on|off            Mode.
    -t, --time <DURATION>    How long.

Prose line one,
line two.

Signals: not a title.

Examples:
    $ kes thing x
      indented more
";

    #[test]
    fn sections_and_entries() {
        let usage = Usage::parse(TEXT);
        assert_eq!(
            usage.synopsis,
            ["kes thing [options] <name>", "kes thing --other"]
        );
        let commands: Vec<_> = usage.commands().collect();
        assert_eq!(commands.len(), 2);
        assert_eq!(commands[0].term, "one");
        assert_eq!(aliases_of(&commands[0].text()), ["1"]);
        assert_eq!(
            commands[1].text(),
            "Second, with a description over two lines."
        );
        assert!(usage.blocks.contains(&Block::Text(vec![
            "Prose line one,".into(),
            "line two.".into()
        ])));
        assert!(
            usage
                .blocks
                .contains(&Block::Text(vec!["Signals: not a title.".into()]))
        );
        assert!(usage.blocks.contains(&Block::Examples(vec![
            "$ kes thing x".into(),
            "  indented more".into()
        ])));
    }

    #[test]
    fn flags_from_terms() {
        let flags = Usage::parse(TEXT).flags();
        let names: Vec<_> = flags
            .iter()
            .map(|f| (f.short, f.long.as_deref(), f.value.as_deref()))
            .collect();
        assert_eq!(
            names,
            [
                (Some('k'), Some("insecure"), None),
                (None, Some("json"), None),
                (None, Some("key"), Some("FILE")),
                (None, Some("cert"), Some("FILE")),
                (None, Some("auth"), Some("on|off")),
                (Some('t'), Some("time"), Some("<DURATION>")),
            ]
        );
        assert_eq!(flags[2].description, "Both files.");
    }
}
