//! The crate's layers depend one way (docs/ARCHITECTURE.md), and inside a layer no two modules
//! import each other, directly or round a circle. Read from the sources: every `crate::LAYER::…`
//! path, and every `super::…` path of a layer's top-level module, outside its unit tests.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

/// What each layer may name, besides itself.
const ALLOWED: &[(&str, &[&str])] = &[
    ("record", &[]),
    ("storage", &["record", "errors"]),
    ("replication", &["record", "storage", "proto", "errors"]),
    ("broker", &["record", "storage", "replication", "errors"]),
    (
        "server",
        &[
            "record",
            "storage",
            "replication",
            "broker",
            "proto",
            "errors",
        ],
    ),
    ("client", &["record", "proto", "errors"]),
    (
        "cli",
        &[
            "record",
            "storage",
            "replication",
            "broker",
            "server",
            "client",
            "proto",
            "errors",
        ],
    ),
];

/// Identifiers and the punctuation that paths are made of; everything else is dropped.
fn tokens(source: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = source.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    match (escaped, c) {
                        (false, '\\') => escaped = true,
                        (false, '"') => break,
                        _ => escaped = false,
                    }
                }
            }
            ':' if chars.peek() == Some(&':') => {
                chars.next();
                out.push("::".to_string());
            }
            '{' | '}' | ',' | ';' => out.push(c.to_string()),
            c if c.is_alphanumeric() || c == '_' => {
                let mut ident = c.to_string();
                while let Some(&n) = chars.peek() {
                    if n.is_alphanumeric() || n == '_' {
                        ident.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push(ident);
            }
            _ => out.push(" ".to_string()),
        }
    }
    out
}

/// The first names of every path that starts with `prefix` (e.g. `["crate", "storage"]`):
/// `prefix::a::b` gives `a`, `prefix::{a, b::c}` gives `a` and `b`.
fn names_after(tokens: &[String], prefix: &[&str]) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut i = 0;
    'outer: while i < tokens.len() {
        // prefix[0] :: prefix[1] :: ... ::
        let mut j = i;
        for (k, part) in prefix.iter().enumerate() {
            if tokens.get(j).map(String::as_str) != Some(part) {
                i += 1;
                continue 'outer;
            }
            j += 1;
            if tokens.get(j).map(String::as_str) != Some("::") {
                // `prefix` itself, or a shorter path: names nothing inside.
                if k + 1 == prefix.len() {
                    break;
                }
                i += 1;
                continue 'outer;
            }
            j += 1;
        }
        match tokens.get(j).map(String::as_str) {
            Some("{") => {
                let mut depth = 0;
                let mut expect_name = true;
                for t in &tokens[j..] {
                    match t.as_str() {
                        "{" => {
                            depth += 1;
                            expect_name = depth == 1;
                        }
                        "}" => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        "," if depth == 1 => expect_name = true,
                        " " => {}
                        name if expect_name && depth == 1 => {
                            found.insert(name.to_string());
                            expect_name = false;
                        }
                        _ => {}
                    }
                }
            }
            Some(name) if name.chars().all(|c| c.is_alphanumeric() || c == '_') => {
                found.insert(name.to_string());
            }
            _ => {}
        }
        i = j;
    }
    found
}

/// The source of a module file without its `#[cfg(test)] mod tests` block.
fn without_unit_tests(source: &str) -> &str {
    source
        .find("#[cfg(test)]\nmod tests")
        .map_or(source, |at| &source[..at])
}

/// Per layer: its modules (top-level files and folders of `src/LAYER/`) and the sibling modules
/// and other layers each one names.
struct Layer {
    modules: BTreeMap<String, BTreeSet<String>>,
    layers_named: BTreeMap<String, BTreeSet<String>>,
}

fn read_layer(src: &Path, layer: &str) -> Layer {
    let mut files = Vec::new();
    let mut stack = vec![src.join(layer)];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read src").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let mut modules: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut layers_named: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let names: BTreeSet<String> = files
        .iter()
        .filter_map(|f| {
            let rel = f.strip_prefix(src.join(layer)).ok()?;
            let first = rel.components().next()?.as_os_str().to_str()?;
            Some(first.trim_end_matches(".rs").to_string())
        })
        .filter(|m| m != "mod" && m != "tests")
        .collect();
    for file in &files {
        let rel = file.strip_prefix(src.join(layer)).expect("under the layer");
        let depth = rel.components().count();
        let module = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or_default()
            .trim_end_matches(".rs")
            .to_string();
        if module == "tests" || module == "mod" {
            continue;
        }
        let source = fs::read_to_string(file).expect("read a source file");
        let toks = tokens(without_unit_tests(&source));
        let mut deps = names_after(&toks, &["crate", layer]);
        // `super::x` names a sibling in a layer's top-level module file, and in `x/mod.rs`.
        let own_folder_mod = rel.file_name().is_some_and(|n| n == "mod.rs") && depth == 2;
        if depth == 1 || own_folder_mod {
            deps.extend(names_after(&toks, &["super"]));
        } else if depth == 2 {
            deps.extend(names_after(&toks, &["super", "super"]));
        }
        deps.retain(|d| names.contains(d) && *d != module);
        modules.entry(module.clone()).or_default().extend(deps);
        let others: BTreeSet<String> = names_after(&toks, &["crate"])
            .into_iter()
            .filter(|l| l != layer)
            .collect();
        layers_named.entry(module).or_default().extend(others);
    }
    Layer {
        modules,
        layers_named,
    }
}

/// A circle through `start`, if the graph has one.
fn circle_through(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![start.to_string()]];
    while let Some(path) = stack.pop() {
        let last = path.last().cloned().unwrap_or_default();
        for next in graph.get(&last).into_iter().flatten() {
            if next == start {
                let mut circle = path.clone();
                circle.push(start.to_string());
                return Some(circle);
            }
            if !path.contains(next) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push(longer);
            }
        }
    }
    None
}

#[test]
fn layers_import_one_way_and_no_modules_import_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut wrong = Vec::new();
    for (layer, allowed) in ALLOWED {
        let read = read_layer(&src, layer);
        assert!(!read.modules.is_empty(), "no modules found in src/{layer}");
        for (module, named) in &read.layers_named {
            for other in named {
                let is_layer = ALLOWED.iter().any(|(l, _)| l == other)
                    || ["proto", "errors"].contains(&other.as_str());
                if is_layer && !allowed.contains(&other.as_str()) {
                    wrong.push(format!("{layer}/{module} names crate::{other}"));
                }
            }
        }
        for module in read.modules.keys() {
            if let Some(circle) = circle_through(&read.modules, module) {
                wrong.push(format!("{layer}: {}", circle.join(" -> ")));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layering:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_reader_sees_the_imports_it_must_judge() {
    // The checker itself: a circle and a wrong layer in a made-up source are found.
    let toks = tokens(
        "use super::{a, b::{c, d}};\n// use super::commented;\nuse crate::broker::Broker;\nlet s = \"super::quoted\";\nsuper::e::f();",
    );
    let names = names_after(&toks, &["super"]);
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["a", "b", "e"].map(String::from)
    );
    assert_eq!(
        names_after(&toks, &["crate"])
            .into_iter()
            .collect::<Vec<_>>(),
        ["broker"].map(String::from)
    );
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("x", vec!["y"]),
        ("y", vec!["z"]),
        ("z", vec!["x"]),
        ("w", vec!["x"]),
    ]
    .into_iter()
    .map(|(m, d)| (m.to_string(), d.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(
        circle_through(&graph, "x"),
        Some(["x", "y", "z", "x"].map(String::from).to_vec())
    );
    assert_eq!(circle_through(&graph, "w"), None);
}
