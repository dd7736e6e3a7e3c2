//! The manual pages: `kes(1)`, one `kes-COMMAND(1)` per top-level command, and
//! `kes-config(5)`; and the hidden `kes man` command that prints or writes them.
//!
//! The command pages are the help texts (doc::tree) set in roff; the documents they
//! draw on (docs/cli.md for kes(1)'s environment and exit codes, docs/config.md for
//! kes-config(5)) are compiled in. Nothing else is written by hand, so a page cannot
//! say what `--help` or the docs do not. packaging/build.sh writes the pages with
//! `kes man --write` from the binary it packages.

use std::ffi::OsString;
use std::path::Path;

use super::markdown;
use super::roff::{Roff, bold, escape, italic};
use super::tree::{self, Command, Dispatch};
use super::usage::Block;
use crate::cli::args;
use crate::cli::{Exit, Outcome, output};

const CLI_DOC: &str = include_str!("../../../docs/cli.md");
const CONFIG_DOC: &str = include_str!("../../../docs/config.md");

/// Where the packages install the server's config file.
const CONFIG_PATH: &str = "/etc/kes/config.yml";

/// One manual page.
#[derive(Debug, Clone)]
pub struct Page {
    /// `kes`, `kes-key`, `kes-config`.
    pub name: String,
    pub section: char,
    pub roff: String,
}

impl Page {
    /// `kes-key.1`.
    pub fn file_name(&self) -> String {
        format!("{}.{}", self.name, self.section)
    }
}

/// Every page, `kes(1)` first and `kes-config(5)` last.
pub fn pages(dispatch: Dispatch) -> Vec<Page> {
    let root = tree::cli(dispatch);
    let mut pages = vec![Page {
        name: "kes".into(),
        section: '1',
        roff: kes_page(&root),
    }];
    for command in root.children.iter().filter(|c| c.help.is_some()) {
        pages.push(Page {
            name: page_name(command),
            section: '1',
            roff: command_page(command),
        });
    }
    pages.push(Page {
        name: "kes-config".into(),
        section: '5',
        roff: config_page(),
    });
    pages
}

/// `kes-key` for `kes key`.
fn page_name(command: &Command) -> String {
    format!("kes-{}", command.path[0])
}

/// A summary as a NAME line's description: without its final period.
fn whatis(summary: &str) -> String {
    summary.trim().trim_end_matches('.').to_owned()
}

fn kes_page(root: &Command) -> String {
    let mut roff = Roff::page("kes", '1');
    roff.section("Name");
    roff.text_line(&format!(
        "kes \\- {}",
        escape(&whatis(env!("CARGO_PKG_DESCRIPTION")))
    ));
    synopsis(&mut roff, &root.usage.synopsis);
    roff.section("Description");
    roff.paragraph_roff(&markdown::inline(&markdown::first_paragraph(CLI_DOC)));
    prose(&mut roff, &root.usage.blocks);
    roff.section("Commands");
    for command in &root.children {
        let mut body = escape(&command.summary);
        if command.help.is_some() {
            body.push_str(&format!(
                "\nSee \\fB{}\\fR(1).",
                escape(&page_name(command))
            ));
        }
        roff.tagged(&bold(&command.path[0]), &body);
    }
    options(&mut roff, &root.usage.blocks, true);
    for (heading, title) in [
        ("Connecting", "Environment"),
        ("Output and exit codes", "Output and exit status"),
    ] {
        if let Some(text) = markdown::section(CLI_DOC, heading) {
            roff.section(title);
            markdown::render(&mut roff, text, 3);
        }
    }
    roff.section("Files");
    roff.tagged(
        &italic(CONFIG_PATH),
        "The server\\(aqs config file of the packages; see \\fBkes\\-config\\fR(5).",
    );
    examples(&mut roff, &root.usage.blocks, true);
    see_also(&mut roff, root, "kes");
    roff.finish()
}

fn command_page(command: &Command) -> String {
    let name = page_name(command);
    let mut roff = Roff::page(&name, '1');
    roff.section("Name");
    roff.text_line(&format!(
        "{} \\- {}",
        escape(&name),
        escape(&whatis(&command.summary))
    ));
    synopsis(&mut roff, &command.usage.synopsis);
    roff.section("Description");
    if !has_prose(&command.usage.blocks) {
        roff.paragraph(&[command.summary.as_str()]);
    }
    prose(&mut roff, &command.usage.blocks);
    if !command.children.is_empty() {
        roff.section("Commands");
        for child in &command.children {
            roff.tagged(&bold(child.path.last().unwrap()), &escape(&child.summary));
        }
    }
    options(&mut roff, &command.usage.blocks, true);
    examples(&mut roff, &command.usage.blocks, true);
    let below: Vec<&Command> = command.walk().into_iter().skip(1).collect();
    if !below.is_empty() {
        roff.section("Command details");
        for child in below {
            details(&mut roff, child);
        }
    }
    see_also(&mut roff, command, &name);
    roff.finish()
}

/// A subcommand's whole help, under its own `.SS` heading.
fn details(roff: &mut Roff, command: &Command) {
    roff.subsection(&command.name());
    roff.paragraph(&[command.summary.as_str()]);
    if command.help.is_none() {
        return;
    }
    roff.literal(&command.usage.synopsis, 4);
    for block in &command.usage.blocks {
        match block {
            Block::Text(lines) => roff.paragraph(lines),
            Block::Commands(entries) => {
                roff.paragraph_roff(&italic("Commands:"));
                for entry in entries {
                    roff.tagged(&bold(&entry.term), &escape(&entry.text()));
                }
            }
            Block::Options(_) => options(roff, std::slice::from_ref(block), false),
            Block::Examples(_) => examples(roff, std::slice::from_ref(block), false),
            Block::Other { title, lines } => {
                roff.paragraph_roff(&italic(&format!("{title}:")));
                roff.literal(lines, 4);
            }
        }
    }
}

fn synopsis(roff: &mut Roff, lines: &[String]) {
    roff.section("Synopsis");
    roff.request(".nf");
    for line in lines {
        roff.text_line(&escape(line));
    }
    roff.request(".fi");
}

fn has_prose(blocks: &[Block]) -> bool {
    blocks
        .iter()
        .any(|b| matches!(b, Block::Text(_) | Block::Other { .. }))
}

/// The prose of a usage text (and sections this module does not know).
fn prose(roff: &mut Roff, blocks: &[Block]) {
    for block in blocks {
        match block {
            Block::Text(lines) => roff.paragraph(lines),
            Block::Other { title, lines } => {
                roff.paragraph_roff(&italic(&format!("{title}:")));
                roff.literal(lines, 4);
            }
            _ => {}
        }
    }
}

/// The `Options:` entries: under `.SH OPTIONS` (`section`) or a plain heading.
fn options(roff: &mut Roff, blocks: &[Block], section: bool) {
    let entries: Vec<_> = blocks
        .iter()
        .flat_map(|b| match b {
            Block::Options(entries) => entries.as_slice(),
            _ => &[],
        })
        .collect();
    if entries.is_empty() {
        return;
    }
    if section {
        roff.section("Options");
    } else {
        roff.paragraph_roff(&italic("Options:"));
    }
    for entry in entries {
        roff.tagged(&option_term(&entry.term), &escape(&entry.text()));
    }
}

/// `-k, --insecure` in bold, a value placeholder (`FILE`, `<when>`) in italics.
fn option_term(term: &str) -> String {
    term.split(' ')
        .map(|word| {
            if word.starts_with('-') {
                let (flag, comma) = match word.strip_suffix(',') {
                    Some(flag) => (flag, ","),
                    None => (word, ""),
                };
                match flag.split_once('=') {
                    Some((flag, value)) => format!("{}={}{comma}", bold(flag), italic(value)),
                    None => format!("{}{comma}", bold(flag)),
                }
            } else if word.is_empty() {
                String::new()
            } else {
                italic(word)
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn examples(roff: &mut Roff, blocks: &[Block], section: bool) {
    for block in blocks {
        if let Block::Examples(lines) = block {
            if section {
                roff.section("Examples");
            } else {
                roff.paragraph_roff(&italic("Examples:"));
            }
            roff.literal(lines, 4);
        }
    }
}

fn see_also(roff: &mut Roff, root_or_command: &Command, this_page: &str) {
    roff.section("See also");
    let mut refs: Vec<String> = Vec::new();
    if this_page != "kes" {
        refs.push("\\fBkes\\fR(1)".into());
    } else {
        for command in root_or_command.children.iter().filter(|c| c.help.is_some()) {
            refs.push(format!("\\fB{}\\fR(1)", escape(&page_name(command))));
        }
    }
    refs.push("\\fBkes\\-config\\fR(5)".into());
    roff.text_line(&refs.join(",\n"));
}

fn config_page() -> String {
    let mut roff = Roff::page("kes-config", '5');
    roff.section("Name");
    roff.text_line("kes\\-config \\- configuration file of the kes server");
    roff.section("Synopsis");
    roff.text_line(&italic(CONFIG_PATH));
    roff.section("Description");
    roff.paragraph_roff(&markdown::inline(&markdown::first_paragraph(CONFIG_DOC)));
    let body = CONFIG_DOC
        .split_once("\n## ")
        .map(|(_, rest)| format!("## {rest}"))
        .unwrap_or_default();
    markdown::render(&mut roff, &body, 2);
    roff.section("See also");
    roff.text_line("\\fBkes\\fR(1), \\fBkes\\-server\\fR(1)");
    roff.finish()
}

const USAGE: &str = "Usage:
    kes man [<page>]
    kes man --write <dir>

Prints a manual page in roff, e.g. 'kes man kes-key | man -l -'; without a page,
lists the pages. With --write, writes every page to <dir>/man1 and <dir>/man5.
The packages install these pages; 'man kes' shows them.
";

/// `kes man` (not listed in `kes --help`: the packages install the pages).
pub fn run(raw: Vec<OsString>, dispatch: Dispatch) -> Outcome {
    let flags = [args::option("write", None)];
    let parsed = args::parse("kes man", USAGE, &flags, raw)?;
    let pages = pages(dispatch);
    if let Some(dir) = parsed.value("write") {
        if !parsed.positionals.is_empty() {
            return Err(Exit::Error(
                "--write takes no page name. See 'kes man --help'".into(),
            ));
        }
        return write_all(&pages, Path::new(dir));
    }
    match parsed.positionals.as_slice() {
        [] => output::print(
            &pages
                .iter()
                .map(|p| format!("{}({})\n", p.name, p.section))
                .collect::<String>(),
        ),
        [wanted] => {
            let wanted = page_of_argument(wanted);
            let page = pages
                .iter()
                .find(|p| p.name == wanted || p.name == format!("kes-{wanted}"))
                .ok_or_else(|| {
                    Exit::Error(format!("no manual page {wanted:?}. 'kes man' lists them"))
                })?;
            output::print(&page.roff)
        }
        _ => Err(Exit::Error(
            "too many arguments. See 'kes man --help'".into(),
        )),
    }
}

/// `kes-key`, `kes-key.1`, `kes-key(1)` and `key` all name the page kes-key.
fn page_of_argument(text: &str) -> &str {
    let text = text
        .strip_suffix(')')
        .map_or(text, |t| t.rsplit_once('(').map_or(t, |(name, _)| name));
    match text.rsplit_once('.') {
        Some((name, section)) if section.chars().all(|c| c.is_ascii_digit()) => name,
        _ => text,
    }
}

fn write_all(pages: &[Page], dir: &Path) -> Outcome {
    for page in pages {
        let section_dir = dir.join(format!("man{}", page.section));
        std::fs::create_dir_all(&section_dir)
            .map_err(|e| Exit::Error(format!("cannot create {}: {e}", section_dir.display())))?;
        let path = section_dir.join(page.file_name());
        std::fs::write(&path, &page.roff)
            .map_err(|e| Exit::Error(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_arguments() {
        for text in ["kes-key", "kes-key.1", "kes-key(1)"] {
            assert_eq!(page_of_argument(text), "kes-key");
        }
    }

    #[test]
    fn option_terms() {
        assert_eq!(
            option_term("-k, --insecure"),
            "\\fB\\-k\\fR, \\fB\\-\\-insecure\\fR"
        );
        assert_eq!(
            option_term("--color <when>"),
            "\\fB\\-\\-color\\fR \\fI<when>\\fR"
        );
    }
}
