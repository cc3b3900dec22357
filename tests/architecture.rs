//! The crate keeps the shape `src/lib.rs` ("Layout") describes: every module imports only from
//! layers below its own, the session layer sees nothing of the node but its local-connection
//! contract (`node::local`).
//!
//! The check reads the sources: every `crate::…`, `super::…` and `self::…` path outside comments
//! and test modules is resolved to the module it names and compared by layer.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Layers from the bottom; a module may import from a lower number only. Keys are a top-level
/// module, or `session::<sub>` for the session layer's own sub-layers (a fraction above 4; every
/// session sub-module must be listed). Inside the session layer: buffers, timers, budget and
/// queues at the bottom; the app context; the channel helpers and the session entry (what the
/// layer and the tasks share); the task core; the two session kinds; the layer on top, so a
/// task never reaches back into the layer that spawned it.
const LAYERS: &[(&str, f32)] = &[
    ("wire", 0.0),
    ("telemetry", 0.0),
    ("auth", 1.0),
    ("node", 2.0),
    ("mls", 2.0),
    ("error", 3.0),
    ("session", 4.0),
    ("session::budget", 4.1),
    ("session::buffers", 4.1),
    ("session::timer", 4.1),
    ("session::queue", 4.1),
    ("session::liveness", 4.1),
    ("session::context", 4.2),
    ("session::channel", 4.3),
    ("session::inbound", 4.25),
    ("session::entry", 4.3),
    ("session::task", 4.4),
    ("session::point_to_point", 4.5),
    ("session::multicast", 4.5),
    ("session::layer", 4.6),
    ("app", 5.0),
    ("python", 6.0),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// `src/a/b.rs` and `src/a/b/mod.rs` → `["a", "b"]`; `None` for the crate root and binaries.
fn module_of(file: &Path) -> Option<Vec<String>> {
    let rel = file.strip_prefix(src()).unwrap();
    let mut parts: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
    if parts.first().is_some_and(|p| p == "bin") || parts == ["lib.rs"] {
        return None;
    }
    let last = parts.pop().unwrap();
    if last != "mod.rs" {
        parts.push(last.trim_end_matches(".rs").to_string());
    }
    Some(parts)
}

/// The code of a file without line comments and without its trailing `#[cfg(test)]` module.
fn code_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line == "#[cfg(test)]" {
            break;
        }
        let code = match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        };
        out.push((i + 1, code.to_string()));
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path of the use-tree that starts at `rest` (after `crate::`, `super::`, ...), as segments:
/// `a::{b, c::d}` → `[a, b]`, `[a, c, d]`. `self` in a group names the group's own path.
fn use_tree(rest: &str) -> Vec<Vec<String>> {
    fn parse(s: &[char], i: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
        let mut path = prefix.to_vec();
        loop {
            while *i < s.len() && s[*i].is_whitespace() {
                *i += 1;
            }
            if *i < s.len() && s[*i] == '{' {
                *i += 1;
                loop {
                    parse(s, i, &path, out);
                    while *i < s.len() && s[*i].is_whitespace() {
                        *i += 1;
                    }
                    match s.get(*i) {
                        Some(',') => *i += 1,
                        Some('}') => {
                            *i += 1;
                            return;
                        }
                        _ => return,
                    }
                    while *i < s.len() && s[*i].is_whitespace() {
                        *i += 1;
                    }
                    if s.get(*i) == Some(&'}') {
                        *i += 1;
                        return;
                    }
                }
            }
            let start = *i;
            while *i < s.len() && is_ident(s[*i]) {
                *i += 1;
            }
            let seg: String = s[start..*i].iter().collect();
            if seg.is_empty() {
                break;
            }
            if seg != "self" {
                path.push(seg);
            }
            if s.get(*i) == Some(&':') && s.get(*i + 1) == Some(&':') {
                *i += 2;
                continue;
            }
            break;
        }
        // Skip `as name` and anything else up to the next separator.
        while *i < s.len() && !matches!(s[*i], ',' | '}' | ';') && !s[*i].is_whitespace() {
            *i += 1;
        }
        out.push(path);
    }
    let chars: Vec<char> = rest.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    parse(&chars, &mut i, &[], &mut out);
    out
}

/// The absolute module paths named in `code` (a file's code, lines joined) from module `me`.
fn references(code: &str, me: &[String]) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    let bytes: Vec<char> = code.chars().collect();
    let text: String = bytes.iter().collect();
    for (at, _) in text.match_indices("::") {
        // The word before `::` and whether it is the start of a path.
        let before = &text[..at];
        let word_start = before.rfind(|c: char| !is_ident(c)).map_or(0, |p| p + 1);
        let word = &before[word_start..];
        if !matches!(word, "crate" | "super" | "self") {
            continue;
        }
        let prev = before[..word_start].chars().last();
        if prev == Some(':') {
            continue; // `super::super::…` is handled from its first `super`.
        }
        let mut base: Vec<String> = match word {
            "crate" => Vec::new(),
            "self" => me.to_vec(),
            _ => me[..me.len().saturating_sub(1)].to_vec(),
        };
        let mut rest = &text[at + 2..];
        while let Some(r) = rest.strip_prefix("super::") {
            base.pop();
            rest = r;
        }
        let line = text[..at].matches('\n').count();
        for path in use_tree(rest) {
            let mut full = base.clone();
            full.extend(path);
            out.push((line, full));
        }
    }
    out
}

/// The layer key of a module path: `session::<sub>` inside the session layer, else the top module.
fn key(module: &[String]) -> String {
    match module {
        [first, second, ..] if first == "session" => format!("session::{second}"),
        [first, ..] => first.clone(),
        [] => String::new(),
    }
}

fn level(key: &str) -> Option<f32> {
    LAYERS.iter().find(|(k, _)| *k == key).map(|(_, l)| *l)
}

/// The layer of a module seen from outside its own layer: a session sub-module is the session
/// layer.
fn outer_level(key: &str) -> Option<f32> {
    level(key.split("::").next().unwrap_or(key))
}

#[test]
fn modules_import_only_from_layers_below() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let modules: BTreeSet<Vec<String>> = files.iter().filter_map(|f| module_of(f)).collect();
    let mut violations = Vec::new();
    for file in &files {
        let Some(me) = module_of(file) else { continue };
        let text = std::fs::read_to_string(file).unwrap();
        let lines = code_lines(&text);
        let code: String = lines.iter().map(|(_, l)| format!("{l}\n")).collect();
        for (line_idx, path) in references(&code, &me) {
            // The module a path names: its longest prefix that is a module of the crate.
            let target = (0..=path.len()).rev().map(|n| path[..n].to_vec()).find(|p| modules.contains(p));
            let Some(target) = target else { continue };
            let (from, to) = (key(&me), key(&target));
            if to.is_empty() || from == to || (from.starts_with("session") && to == "session") {
                continue;
            }
            let line = lines.get(line_idx).map_or(0, |(n, _)| *n);
            let place = format!("{}:{line}", file.strip_prefix(src()).unwrap().display());
            let inside_session = from.starts_with("session") && to.starts_with("session");
            let (lf, lt) =
                if inside_session { (level(&from), level(&to)) } else { (outer_level(&from), outer_level(&to)) };
            let (Some(lf), Some(lt)) = (lf, lt) else {
                violations.push(format!("{place}: {from} or {to} has no layer in LAYERS"));
                continue;
            };
            if lt >= lf {
                violations.push(format!("{place}: {from} imports {} from a layer not below it", path.join("::")));
            }
            if from.starts_with("session") && to == "node" && target.get(1).is_none_or(|m| m != "local") {
                violations.push(format!("{place}: the session layer uses {} (only node::local)", path.join("::")));
            }
        }
    }
    assert!(violations.is_empty(), "layering violations:\n{}", violations.join("\n"));
}

#[test]
fn the_checker_reads_grouped_and_relative_paths() {
    let me: Vec<String> = ["session", "multicast", "moderator"].iter().map(|s| s.to_string()).collect();
    let refs =
        references("use super::super::{task::Core, layer};\nuse crate::{wire::{self, Name}, node::local::X};\n", &me);
    let paths: Vec<String> = refs.iter().map(|(_, p)| p.join("::")).collect();
    assert_eq!(paths, ["session::task::Core", "session::layer", "wire", "wire::Name", "node::local::X"]);
    assert_eq!(refs[2].0, 1, "line index of the second use");
}

/// Longest a source file under `src/` may be: past it, a module is split by concern (as
/// `session/multicast/` is) rather than read as one long scroll.
const MAX_FILE_LINES: usize = 700;

#[test]
fn no_source_file_is_over_the_line_limit() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).unwrap().lines().count();
            (n > MAX_FILE_LINES).then(|| format!("{}: {n} lines", f.strip_prefix(src()).unwrap().display()))
        })
        .collect();
    assert!(long.is_empty(), "files over {MAX_FILE_LINES} lines (split them by concern):\n{}", long.join("\n"));
}
