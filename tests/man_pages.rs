//! The manual pages against the help they are made from: every line that `kes … --help`
//! prints (the real binary) is in its page as `kes man` prints it, the pages render
//! without a groff warning, `kes man --write` writes the same bytes, and kes-config(5)
//! documents every field the config parser accepts.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

use common::run_kes;
use kes::cli::doc::man::pages;
use kes::cli::doc::tree;

/// Headings of a usage text, which the pages turn into their own headings.
const TITLES: &[&str] = &["Usage:", "Commands:", "Options:", "Examples:"];

/// The text a reader sees in a roff page: requests dropped (the titles of `.SH` and
/// `.SS` kept), escapes resolved, fonts removed, all whitespace one space.
fn roff_to_text(roff: &str) -> String {
    let mut text = String::new();
    for line in roff.lines() {
        let line = line.strip_prefix("\\&").unwrap_or(line);
        if let Some(request) = line.strip_prefix('.') {
            let (name, arg) = request.split_once(' ').unwrap_or((request, ""));
            if matches!(name, "SH" | "SS") {
                text.push_str(arg.trim_matches('"'));
                text.push(' ');
            }
            continue;
        }
        text.push_str(line);
        text.push(' ');
    }
    for (escape, plain) in [
        ("\\fB", ""),
        ("\\fI", ""),
        ("\\fR", ""),
        ("\\-", "-"),
        ("\\(aq", "'"),
        ("\\(ga", "`"),
        ("\\(dq", "\""),
        ("\\(ha", "^"),
        ("\\(ti", "~"),
        ("\\(em", "—"),
        ("\\(en", "–"),
        ("\\(->", "→"),
        ("\\(<=", "≤"),
        ("\\(>=", "≥"),
        ("\\e", "\\"),
    ] {
        text = text.replace(escape, plain);
    }
    normalize(&text)
}

fn normalize(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn man(page: &str) -> String {
    let (code, out, err) = run_kes(&["man", page]);
    assert_eq!(code, 0, "kes man {page}: {err}");
    out
}

/// What `kes PATH --help` prints (on stderr, exit code 2).
fn help(path: &[String]) -> String {
    let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
    args.push("--help");
    let (code, _, err) = run_kes(&args);
    assert_eq!(code, 2, "kes {} --help", path.join(" "));
    err
}

#[test]
fn every_line_of_every_help_is_in_its_page() {
    let root = tree::cli(kes::cli::dispatch);
    let mut pages = std::collections::BTreeMap::new();
    let mut checked = 0;
    for command in root.walk() {
        if command.help.is_none() {
            continue;
        }
        let page = match command.path.first() {
            None => "kes".to_owned(),
            Some(first) => format!("kes-{first}"),
        };
        let text = pages
            .entry(page.clone())
            .or_insert_with(|| roff_to_text(&man(&page)));
        let help = help(&command.path);
        // The binary's help is the text the tree read (one source, no copy).
        assert_eq!(Some(help.as_str()), command.help, "{}", command.name());
        for line in help.lines() {
            let line = normalize(line);
            if line.is_empty() || TITLES.contains(&line.as_str()) {
                continue;
            }
            assert!(
                text.contains(&line),
                "{page}: missing this line of '{} --help':\n  {line}",
                command.name()
            );
            checked += 1;
        }
    }
    // Every top-level command with a help has its page; the rest are in kes(1).
    for command in &root.children {
        let kes1 = &pages["kes"];
        assert!(
            kes1.contains(&format!("{} {}", command.path[0], command.summary)),
            "kes(1) does not list {}",
            command.name()
        );
    }
    assert!(pages.len() >= 13, "pages: {:?}", pages.keys());
    assert!(checked > 300, "only {checked} help lines checked");
}

#[test]
fn a_help_line_missing_from_a_page_is_found() {
    // The check above is not vacuous: a page without one option line fails it.
    let page = man("kes-key");
    let without = page.replace("Skip TLS certificate validation.", "");
    let line = normalize("    -k, --insecure           Skip TLS certificate validation.");
    assert!(roff_to_text(&page).contains(&line));
    assert!(!roff_to_text(&without).contains(&line));
}

#[test]
fn pages_render_without_warnings() {
    let Ok(groff) = Command::new("groff").arg("--version").output() else {
        eprintln!("groff is not installed: rendering not checked (lintian checks the packages)");
        return;
    };
    assert!(groff.status.success());
    let (_, list, _) = run_kes(&["man"]);
    let names: Vec<&str> = list.lines().collect();
    assert!(
        names.contains(&"kes(1)") && names.contains(&"kes-config(5)"),
        "{names:?}"
    );
    for name in names {
        let page = name.split('(').next().unwrap();
        let mut child = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z", "-K", "utf8"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(man(page).as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && warnings.trim().is_empty(),
            "{name}: {warnings}"
        );
    }
}

#[test]
fn man_write_writes_every_page() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run_kes(&["man", "--write", dir.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let (_, list, _) = run_kes(&["man"]);
    let mut expected = BTreeSet::new();
    for name in list.lines() {
        let (page, section) = name.trim_end_matches(')').split_once('(').unwrap();
        let path = dir
            .path()
            .join(format!("man{section}"))
            .join(format!("{page}.{section}"));
        let written =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(written, man(page), "{}", path.display());
        expected.insert(path);
    }
    let mut found = BTreeSet::new();
    for section in std::fs::read_dir(dir.path()).unwrap() {
        for file in std::fs::read_dir(section.unwrap().path()).unwrap() {
            found.insert(file.unwrap().path());
        }
    }
    assert_eq!(found, expected);
}

#[test]
fn page_names_and_errors() {
    assert_eq!(man("key"), man("kes-key.1"));
    assert_eq!(man("kes-key(1)"), man("kes-key"));
    assert!(man("config").starts_with(".TH \"KES\\-CONFIG\" 5"));
    let (code, _, err) = run_kes(&["man", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("no manual page \"nope\""), "{err}");
    // Not a command of the usage: the packages install the pages.
    let (_, _, usage) = run_kes(&["--help"]);
    assert!(!usage.contains("\n    man "));
}

/// The fields the config parser accepts in the section that `yaml` opens with an
/// unknown field `bogus`, from its "expected one of" message.
fn accepted_fields(yaml: &str) -> Vec<String> {
    let err = kes::config::Config::parse(yaml, Path::new("probe.yml"))
        .expect_err("an unknown field is an error")
        .0;
    let list = err
        .split("expected one of ")
        .nth(1)
        .or_else(|| err.split("expected ").nth(1))
        .unwrap_or_else(|| panic!("{yaml}: {err}"));
    list.split(", ")
        .flat_map(|f| f.split(" or "))
        .map(|f| f.trim().trim_matches('`').to_owned())
        .filter(|f| !f.is_empty())
        .collect()
}

#[test]
fn the_config_page_names_every_field_of_the_parser() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/config.md")).unwrap();
    let page = roff_to_text(&man("kes-config"));
    let sections = [
        "bogus: 1\n",
        "admin:\n  bogus: 1\n",
        "tls:\n  bogus: 1\n",
        "tls:\n  proxy:\n    bogus: 1\n",
        "tls:\n  proxy:\n    header:\n      bogus: 1\n",
        "policy:\n  p:\n    bogus: 1\n",
        "cache:\n  bogus: 1\n",
        "cache:\n  expiry:\n    bogus: 1\n",
        "log:\n  bogus: 1\n",
        "api:\n  /v1/status:\n    bogus: 1\n",
        "keys:\n  - bogus: 1\n",
        "keystore:\n  bogus: 1\n",
        "keystore:\n  fs:\n    bogus: 1\n",
        "keystore:\n  gemalto:\n    bogus: 1\n",
        "keystore:\n  ciphertrust:\n    bogus: 1\n",
        "keystore:\n  ciphertrust:\n    credentials:\n      bogus: 1\n",
        "keystore:\n  ciphertrust:\n    tls:\n      bogus: 1\n",
        "keystore:\n  ciphertrust:\n    master_keys: resident\n    intermediate_key:\n      bogus: 1\n",
        "compat:\n  bogus: 1\n",
    ];
    let mut count = 0;
    for yaml in sections {
        for field in accepted_fields(yaml) {
            // Named in code (`tls.ca`, `ca`, `- name: KEY`) in the doc and in the page.
            let in_doc = doc
                .split('`')
                .skip(1)
                .step_by(2)
                .any(|code| code.split(['.', ' ', ':', ',']).any(|part| part == field));
            assert!(
                in_doc,
                "docs/config.md does not name the field '{field}' ({yaml:?})"
            );
            assert!(page.contains(&field), "kes-config(5) lacks '{field}'");
            count += 1;
        }
    }
    assert!(count >= 40, "only {count} fields probed");
}

/// One page per command that has help, and the config page.
#[test]
fn one_page_per_command_with_help() {
    let names: Vec<String> = pages(kes::cli::dispatch)
        .iter()
        .map(kes::cli::doc::man::Page::file_name)
        .collect();
    for expected in [
        "kes.1",
        "kes-server.1",
        "kes-key.1",
        "kes-tool.1",
        "kes-config.5",
    ] {
        assert!(
            names.contains(&expected.to_owned()),
            "{expected}: {names:?}"
        );
    }
    assert!(!names.contains(&"kes-update.1".to_owned()));
}
