//! The reader: the modules of the crate from `src/lib.rs` down, and the file each path
//! in their source names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One file's use of another: the paths it takes from it.
pub struct Edge {
    pub from: String,
    pub to: String,
    pub names: Vec<String>,
}

pub struct Crate {
    /// Module path -> the file that holds it (inline modules share their file's).
    pub modules: BTreeMap<Vec<String>, String>,
    pub edges: Vec<Edge>,
}

/// The names a `use` brought into a module: (module, name) -> the path it stands for.
type Aliases = BTreeMap<(Vec<String>, String), Vec<String>>;

impl Crate {
    pub fn read(root: &Path) -> Crate {
        let mut modules = BTreeMap::new();
        let mut aliases = Aliases::new();
        let mut paths: Vec<(String, Vec<String>)> = Vec::new();
        let mut todo = vec![(root.join("src/lib.rs"), Vec::<String>::new())];
        while let Some((file, module)) = todo.pop() {
            let name = file.strip_prefix(root).unwrap().display().to_string();
            let text = std::fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("cannot read {name}: {e}"));
            let toks = tokens(&text);
            modules.insert(module.clone(), name.clone());
            let (files, inline) = child_modules(&toks);
            let dir = children_dir(&file);
            for child in &files {
                let flat = dir.join(format!("{child}.rs"));
                let path = if flat.exists() {
                    flat
                } else {
                    dir.join(child).join("mod.rs")
                };
                let mut m = module.clone();
                m.push(child.clone());
                todo.push((path, m));
            }
            for path in inline {
                let mut m = module.clone();
                m.extend(path);
                modules.insert(m, name.clone());
            }
            let children: BTreeSet<String> = files.into_iter().collect();
            let scan = paths_of(&toks, &module, &children);
            paths.extend(scan.paths.into_iter().map(|p| (name.clone(), p)));
            aliases.extend(scan.aliases);
        }
        let mut by_pair: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
        for (from, path) in paths {
            if let Some((to, item)) = resolve(&path, &modules, &aliases) {
                if to != from {
                    by_pair.entry((from, to)).or_default().insert(item);
                }
            }
        }
        let edges = by_pair
            .into_iter()
            .map(|((from, to), names)| Edge {
                from,
                to,
                names: names.into_iter().collect(),
            })
            .collect();
        Crate { modules, edges }
    }
}

/// The file that defines what `path` names, and the name it takes from there. A name
/// that a module only brought in with `use` (`pub use` or not: its child modules see
/// both) is followed to where it comes from.
fn resolve(
    path: &[String],
    modules: &BTreeMap<Vec<String>, String>,
    aliases: &Aliases,
) -> Option<(String, String)> {
    let mut path = path.to_vec();
    for _ in 0..16 {
        // The longest prefix of the path that is a module names the file.
        let len = (1..=path.len())
            .rev()
            .find(|&n| modules.contains_key(&path[..n]))?;
        if let Some(next) = path.get(len) {
            if let Some(target) = aliases.get(&(path[..len].to_vec(), next.clone())) {
                if target[..] != path[..=len] {
                    let mut followed = target.clone();
                    followed.extend_from_slice(&path[len + 1..]);
                    path = followed;
                    continue;
                }
            }
        }
        let item = path.get(len).unwrap_or(&path[len - 1]).clone();
        return Some((modules[&path[..len]].clone(), item));
    }
    None
}

/// Where the files of a module's children are: beside `lib.rs` and `mod.rs`, in the
/// folder of the same name for `foo.rs`.
fn children_dir(file: &Path) -> PathBuf {
    let parent = file.parent().unwrap();
    match file.file_stem().unwrap().to_str().unwrap() {
        "lib" | "mod" => parent.to_path_buf(),
        stem => parent.join(stem),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    /// `::`
    Sep,
    Punct(char),
}

/// The tokens of Rust source that matter for paths; comments, strings and character
/// literals are dropped.
fn tokens(text: &str) -> Vec<Tok> {
    let s: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c.is_whitespace() {
            i += 1;
        } else if s[i..].starts_with(&['/', '/']) {
            while i < s.len() && s[i] != '\n' {
                i += 1;
            }
        } else if s[i..].starts_with(&['/', '*']) {
            i = skip_block_comment(&s, i);
        } else if c == '"' {
            i = skip_string(&s, i + 1);
        } else if c == '\'' {
            i = skip_char_or_lifetime(&s, i);
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < s.len() && (s[i].is_alphanumeric() || s[i] == '_') {
                i += 1;
            }
            let word: String = s[start..i].iter().collect();
            let hashes = s[i..].iter().take_while(|&&c| c == '#').count();
            match (word.as_str(), s.get(i + hashes)) {
                ("r" | "br" | "cr", Some('"')) => {
                    let close: Vec<char> = std::iter::once('"')
                        .chain(std::iter::repeat_n('#', hashes))
                        .collect();
                    i += hashes + 1;
                    while !s[i..].starts_with(&close) {
                        i += 1;
                    }
                    i += close.len();
                }
                ("b" | "c", Some('"')) if hashes == 0 => i = skip_string(&s, i + 1),
                ("b", Some('\'')) if hashes == 0 => i = skip_char_or_lifetime(&s, i),
                _ => out.push(Tok::Ident(word)),
            }
        } else if s[i..].starts_with(&[':', ':']) {
            out.push(Tok::Sep);
            i += 2;
        } else {
            out.push(Tok::Punct(c));
            i += 1;
        }
    }
    out
}

/// The index after the (nested) block comment at `i`.
fn skip_block_comment(s: &[char], mut i: usize) -> usize {
    let mut depth = 0;
    loop {
        if s[i..].starts_with(&['/', '*']) {
            depth += 1;
            i += 2;
        } else if s[i..].starts_with(&['*', '/']) {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
}

/// The index after the string whose text starts at `i`.
fn skip_string(s: &[char], mut i: usize) -> usize {
    while s[i] != '"' {
        i += if s[i] == '\\' { 2 } else { 1 };
    }
    i + 1
}

/// At a `'`: the index after the character literal (`'x'`, `'\n'`, `'\''`,
/// `'\u{..}'`), or after the `'` of a lifetime or label, whose name is read next.
fn skip_char_or_lifetime(s: &[char], i: usize) -> usize {
    if s.get(i + 1) == Some(&'\\') {
        i + 3 + s[i + 3..].iter().position(|&c| c == '\'').unwrap() + 1
    } else if s.get(i + 2) == Some(&'\'') {
        i + 3
    } else {
        i + 1
    }
}

fn ident(t: Option<&Tok>) -> Option<&str> {
    match t {
        Some(Tok::Ident(w)) => Some(w),
        _ => None,
    }
}

/// The child modules of a file: those in files of their own (`mod x;`), and the paths
/// of inline ones (`mod x { ... }`, nested too).
fn child_modules(toks: &[Tok]) -> (Vec<String>, Vec<Vec<String>>) {
    let mut files = Vec::new();
    let mut inline = Vec::new();
    let mut stack: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    for (i, t) in toks.iter().enumerate() {
        match t {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                depth -= 1;
                if stack.last().is_some_and(|(_, d)| *d == depth) {
                    stack.pop();
                }
            }
            Tok::Ident(w) if w == "mod" => {
                let Some(name) = ident(toks.get(i + 1)) else {
                    continue;
                };
                match toks.get(i + 2) {
                    Some(Tok::Punct(';')) if stack.is_empty() => files.push(name.to_string()),
                    Some(Tok::Punct('{')) => {
                        stack.push((name.to_string(), depth));
                        inline.push(stack.iter().map(|(n, _)| n.clone()).collect());
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    (files, inline)
}

/// Every path of the crate's own that the file names, made absolute (from the crate
/// root), with `module` the module of the file and `children` its file modules.
fn paths_of(toks: &[Tok], module: &[String], children: &BTreeSet<String>) -> Scan {
    let mut out = Vec::new();
    // The module each token is in (inline modules), and the names `use` brought in.
    let mut stack: Vec<(Vec<String>, usize)> = vec![(module.to_vec(), 0)];
    let mut aliases = Aliases::new();
    let mut depth = 0;
    let mut i = 0;
    while i < toks.len() {
        let here = stack.last().unwrap().0.clone();
        let start = |first: &str, aliases: &Aliases| -> Option<Vec<String>> {
            match first {
                "crate" => Some(Vec::new()),
                "self" => Some(here.clone()),
                "super" => Some(here[..here.len().saturating_sub(1)].to_vec()),
                w if here.len() == module.len() && children.contains(w) => {
                    let mut p = here.clone();
                    p.push(w.to_string());
                    Some(p)
                }
                w => aliases.get(&(here.clone(), w.to_string())).cloned(),
            }
        };
        match &toks[i] {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                depth -= 1;
                if stack.len() > 1 && stack.last().unwrap().1 == depth {
                    stack.pop();
                }
            }
            Tok::Ident(w) if w == "mod" => {
                if let (Some(name), Some(Tok::Punct('{'))) =
                    (ident(toks.get(i + 1)), toks.get(i + 2))
                {
                    let mut m = here.clone();
                    m.push(name.to_string());
                    stack.push((m, depth));
                    depth += 1;
                    i += 3;
                    continue;
                }
            }
            Tok::Ident(w) if w == "use" => {
                let end = i + toks[i..]
                    .iter()
                    .position(|t| *t == Tok::Punct(';'))
                    .unwrap();
                let mut leaves = Vec::new();
                use_tree(&toks[i + 1..end], Vec::new(), &mut leaves);
                for (path, alias) in leaves {
                    let Some(mut abs) = start(&path[0], &aliases) else {
                        continue;
                    };
                    for seg in &path[1..] {
                        if seg == "super" {
                            abs.pop();
                        } else {
                            abs.push(seg.clone());
                        }
                    }
                    if let Some(alias) = alias {
                        aliases.insert((here.clone(), alias), abs.clone());
                    }
                    out.push(abs);
                }
                i = end + 1;
                continue;
            }
            Tok::Ident(first)
                if toks.get(i + 1) == Some(&Tok::Sep) && (i == 0 || toks[i - 1] != Tok::Sep) =>
            {
                let mut j = i;
                let mut path = vec![first.clone()];
                while toks.get(j + 1) == Some(&Tok::Sep) {
                    match ident(toks.get(j + 2)) {
                        Some(w) => path.push(w.to_string()),
                        None => break,
                    }
                    j += 2;
                }
                if let Some(mut abs) = start(first, &aliases) {
                    for seg in &path[1..] {
                        if seg == "super" {
                            abs.pop();
                        } else {
                            abs.push(seg.clone());
                        }
                    }
                    out.push(abs);
                }
                i = j + 1;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    Scan {
        paths: out,
        aliases,
    }
}

/// What [`paths_of`] found in one file.
struct Scan {
    /// Absolute paths (from the crate root) the file names.
    paths: Vec<Vec<String>>,
    aliases: Aliases,
}

/// The leaves of a `use` tree: each full path, and the name it is known by (`None` for
/// a glob). `self` in a group names the group's prefix.
fn use_tree(toks: &[Tok], prefix: Vec<String>, out: &mut Vec<(Vec<String>, Option<String>)>) {
    let mut depth = 0;
    let mut start = 0;
    let mut parts = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        match t {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => depth -= 1,
            Tok::Punct(',') if depth == 0 => {
                parts.push(&toks[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&toks[start..]);
    for part in parts {
        let mut i = 0;
        // `pub` or `pub(crate)` before the tree.
        if ident(part.first()) == Some("pub") {
            i = 1;
            if part.get(1) == Some(&Tok::Punct('(')) {
                i += part.iter().position(|t| *t == Tok::Punct(')')).unwrap();
            }
        }
        let mut path = prefix.clone();
        while let Some(w) = ident(part.get(i)) {
            if w == "as" {
                break;
            }
            if w != "self" || path.is_empty() {
                path.push(w.to_string());
            }
            i += 1;
            if part.get(i) == Some(&Tok::Sep) {
                i += 1;
            }
        }
        match part.get(i) {
            Some(Tok::Punct('{')) => {
                let close = part.iter().rposition(|t| *t == Tok::Punct('}')).unwrap();
                use_tree(&part[i + 1..close], path, out);
            }
            Some(Tok::Punct('*')) => out.push((path, None)),
            _ if path.is_empty() => {}
            next => {
                let alias = match next {
                    Some(Tok::Ident(_)) => ident(part.get(i + 1)).map(str::to_string),
                    _ => path.last().cloned(),
                };
                out.push((path, alias));
            }
        }
    }
}

/// The self-check of the reader: a sample with every form of path it must see.
#[test]
fn the_reader_sees_every_form_of_import() {
    let text = r##"
        use crate::a::{self, b::{C, d}, e as f};
        use super::g;
        use h::I; // h is a child module
        mod h;
        mod inline { use super::super::j::K; }
        /* crate::not::this */ const S: &str = "crate::nor::this"; const R: &str = r#"crate::x"#;
        fn x<'a>(c: char) { let _ = 'c'; crate::l::m(); a::n::o(); f::P; }
    "##;
    let module = vec!["top".to_string(), "here".to_string()];
    let mut children = BTreeSet::new();
    children.insert("h".to_string());
    let paths: Vec<String> = paths_of(&tokens(text), &module, &children)
        .paths
        .into_iter()
        .map(|p| p.join("::"))
        .collect();
    assert_eq!(
        paths,
        [
            "a",
            "a::b::C",
            "a::b::d",
            "a::e",
            "top::g",
            "top::here::h::I",
            "top::j::K",
            "l::m",
            "a::n::o",
            "a::e::P",
        ]
    );
}
