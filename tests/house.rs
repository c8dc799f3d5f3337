//! The rules of the house (design.md), kept by a test: imports between `src/`'s modules go one
//! way (no cycle), and no source file but tests grows past 500 lines. Read from the files as
//! text: a `crate::name` anywhere in a module's code is an edge to `name`; a module is a
//! top-level file or folder of `src/` (`fleet/bus.rs` belongs to `fleet`), so a folder's files
//! may use each other; test files (`tests.rs`, `testutil/`, an inline `#[cfg(test)] mod tests`)
//! do not count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 500;

/// Each module and the modules it names.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn is_test_file(rel: &Path) -> bool {
    rel.file_name().is_some_and(|n| n == "tests.rs")
        || rel.components().any(|c| {
            let c = c.as_os_str();
            c == "tests" || c == "testutil"
        })
}

/// The module a file belongs to: its first path component, without `.rs`.
fn module_of(rel: &Path) -> String {
    let first = rel
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default();
    first.trim_end_matches(".rs").to_string()
}

/// A file's code: comments and an inline test module cut off.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The modules a file's code names through `crate::`: `crate::a::x`, `crate::{a, b::c}`.
fn uses(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.trim()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            // Top-level names of the group: split at commas outside nested braces.
            let mut depth = 0;
            let mut start = 0;
            let body = &group[..end];
            for (j, ch) in body.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(ident(&body[start..j]));
                        start = j + 1;
                    }
                    _ => {}
                }
            }
            out.insert(ident(&body[start..]));
        } else {
            out.insert(ident(rest));
        }
    }
    out.retain(|m| !m.is_empty());
    out
}

/// The module graph of `src/` and the non-test files over the limit.
fn read_house(src: &Path) -> (Graph, Vec<(String, usize)>) {
    let mut files = Vec::new();
    sources(src, &mut files);
    let mut graph = Graph::new();
    let mut long = Vec::new();
    for f in files {
        let rel = f.strip_prefix(src).expect("under src").to_path_buf();
        if is_test_file(&rel) {
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("a source file");
        let lines = text.lines().count();
        if lines > MAX_LINES {
            long.push((rel.display().to_string(), lines));
        }
        let module = module_of(&rel);
        let edges = graph.entry(module.clone()).or_default();
        for used in uses(&code(&text)) {
            if used != module {
                edges.insert(used);
            }
        }
    }
    (graph, long)
}

/// One cycle of the graph, as a path `a -> b -> ... -> a`, if there is any.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_string(), 1);
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next.as_str()) {
                Some(1) => {
                    let from = stack.iter().position(|n| n == next).unwrap_or(0);
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(next, graph, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if !state.contains_key(node.as_str()) {
            if let Some(c) = visit(node, graph, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

/// Every cycle, one at a time: the first found is reported, its edge removed, and so on, so
/// one run names them all.
fn all_cycles(mut graph: Graph) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    while let Some(c) = find_cycle(&graph) {
        let (a, b) = (&c[c.len() - 2], &c[c.len() - 1]);
        if let Some(edges) = graph.get_mut(a) {
            edges.remove(b);
        }
        found.push(c);
    }
    found
}

#[test]
fn imports_go_one_way_and_files_stay_small() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let (graph, long) = read_house(&src);
    let cycles = all_cycles(graph);
    let cycles: Vec<String> = cycles.iter().map(|c| c.join(" -> ")).collect();
    let mut problems = Vec::new();
    if !cycles.is_empty() {
        problems.push(format!(
            "import cycles between modules of src/ (design.md: imports go one way, down):\n  {}",
            cycles.join("\n  ")
        ));
    }
    if !long.is_empty() {
        let files: Vec<String> = long
            .iter()
            .map(|(f, n)| format!("src/{f}: {n} lines"))
            .collect();
        problems.push(format!(
            "non-test files over {MAX_LINES} lines (split them by concern):\n  {}",
            files.join("\n  ")
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_reader_sees_every_form_of_import() {
    let text = "use crate::a::X;\nuse crate::{b::Y, c, d::{e, f}};\nfn g() { crate::h::run(); }\n// crate::comment\n#[cfg(test)]\nmod tests {\n    use crate::t;\n}\n";
    let got: Vec<String> = uses(&code(text)).into_iter().collect();
    assert_eq!(got, ["a", "b", "c", "d", "h"]);
}

#[test]
fn the_checker_finds_a_cycle_added_back() {
    let graph = |edges: &[(&str, &str)]| {
        let mut g = Graph::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
            g.entry(b.to_string()).or_default();
        }
        g
    };
    let down = graph(&[
        ("proxy", "runtime"),
        ("runtime", "fleet"),
        ("fleet", "identity"),
    ]);
    assert!(all_cycles(down).is_empty());
    let up = graph(&[
        ("proxy", "runtime"),
        ("runtime", "fleet"),
        ("fleet", "runtime"),
        ("cache", "fleet"),
        ("fleet", "cache"),
    ]);
    let found = all_cycles(up);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().any(|c| c.contains(&"runtime".to_string())));
    assert!(found.iter().any(|c| c.contains(&"cache".to_string())));
}
