//! The layer map of docs/ARCHITECTURE.md, held against the code: every import of a file
//! under `src/` points down a layer, and no files import each other in a circle.
//!
//! The map is read from the document itself, so the document and this check cannot
//! disagree. The imports are read from the source as text: `use` trees and every path
//! through `crate::`, `super::`, `self::`, a child module or a module brought in by `use`.
//! (Tools that see the crate as the compiler does, such as cargo-modules, build
//! rust-analyzer's crates first: minutes on CI's two cores for what this reads in
//! milliseconds.)

mod source;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use source::{Crate, Edge};

#[test]
fn imports_point_down_the_layer_map() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let layers = layer_map(&root.join("docs/ARCHITECTURE.md"));
    let crate_ = Crate::read(root);

    let top: BTreeSet<&str> = crate_
        .modules
        .keys()
        .filter(|m| m.len() == 1)
        .map(|m| m[0].as_str())
        .collect();
    let mapped: BTreeSet<&str> = layers.keys().map(String::as_str).collect();
    assert_eq!(
        top, mapped,
        "the modules of src/lib.rs and those of the layer map in docs/ARCHITECTURE.md differ: add or remove rows there"
    );

    let mut wrong = Vec::new();
    for edge in &crate_.edges {
        let (from, to) = (top_module(&edge.from), top_module(&edge.to));
        if from == to {
            continue;
        }
        let (lf, lt) = (layers[from], layers[to]);
        if lf <= lt {
            wrong.push(format!(
                "{} (`{from}`, layer {lf}) imports {} from {} (`{to}`, layer {lt})",
                edge.from,
                edge.names.join(", "),
                edge.to
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that do not point down a layer (docs/ARCHITECTURE.md, \"Layers\"): move the \
         imported item down, or the importing code up\n  {}",
        wrong.join("\n  ")
    );
}

#[test]
fn no_files_import_each_other_in_a_circle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let crate_ = Crate::read(root);
    let circles = circles(&crate_.edges);

    let mut report = Vec::new();
    for circle in &circles {
        report.push(format!("circle of {} files:", circle.len()));
        for edge in crate_
            .edges
            .iter()
            .filter(|e| circle.contains(&e.from) && circle.contains(&e.to))
        {
            report.push(format!(
                "    {} -> {}: {}",
                edge.from,
                edge.to,
                edge.names.join(", ")
            ));
        }
    }
    assert!(
        report.is_empty(),
        "files that import each other (break the circle: move what both need into a file \
         that imports neither)\n  {}",
        report.join("\n  ")
    );
}

/// `module name -> layer` from the table under "## Layers" of the document: rows of
/// `| N | \`a\`, \`b\` | ... |`.
fn layer_map(doc: &Path) -> BTreeMap<String, u32> {
    let text = std::fs::read_to_string(doc).unwrap();
    let section = text
        .split("\n## ")
        .find(|s| s.starts_with("Layers"))
        .expect("docs/ARCHITECTURE.md has a section \"## Layers\" with the layer map");
    let mut map = BTreeMap::new();
    for line in section.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (Some(layer), Some(modules)) = (cells.get(1), cells.get(2)) else {
            continue;
        };
        let Ok(layer) = layer.parse::<u32>() else {
            continue;
        };
        for name in modules.split(',') {
            let name = name.trim().trim_matches('`');
            let before = map.insert(name.to_string(), layer);
            assert!(before.is_none(), "`{name}` is twice in the layer map");
        }
    }
    assert!(!map.is_empty(), "the layer map has no rows");
    map
}

fn top_module(file: &str) -> &str {
    let rest = file.strip_prefix("src/").unwrap();
    let end = rest.find(['/', '.']).unwrap();
    &rest[..end]
}

/// The strongly connected components of more than one file (Tarjan).
fn circles(edges: &[Edge]) -> Vec<BTreeSet<String>> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for e in edges {
        next.entry(&e.from).or_default().push(&e.to);
        next.entry(&e.to).or_default();
    }
    struct Tarjan<'a> {
        next: &'a BTreeMap<&'a str, Vec<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<BTreeSet<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for &w in &self.next[v] {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut scc = BTreeSet::new();
                loop {
                    let w = self.stack.pop().unwrap();
                    self.on_stack.remove(w);
                    scc.insert(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if scc.len() > 1 {
                    self.out.push(scc);
                }
            }
        }
    }
    let mut t = Tarjan {
        next: &next,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for &v in next.keys() {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    t.out
}
