//! Code comments point into `docs/` (as `docs/<file>.md "Heading"`), never to documents outside the
//! repository. This reads every source file and checks that each such pointer names a file in
//! `docs/` and, when it quotes headings, headings that file has.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Source files under `dir` (Rust, Python, proto), skipping build output and virtualenvs.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if !name.starts_with('.') && name != "target" && name != "__pycache__" {
                sources(&path, out);
            }
        } else if [".rs", ".py", ".pyi", ".proto"].iter().any(|ext| name.ends_with(ext)) {
            out.push(path);
        }
    }
}

/// The headings of a markdown file, without their `#`s.
fn headings(doc: &str) -> Vec<String> {
    doc.lines().filter(|l| l.starts_with('#')).map(|l| l.trim_start_matches('#').trim().to_string()).collect()
}

/// Whether `quoted` names `heading`: the whole heading, or its first words (`"Forwarding"` names
/// ``Forwarding (`forward.rs`)``, `"Links"` names `Links: who speaks what`).
fn names(quoted: &str, heading: &str) -> bool {
    heading == quoted || heading.strip_prefix(quoted).is_some_and(|rest| rest.starts_with([' ', ':', '(', ',']))
}

/// Every `docs/<file>.md` pointer in `text`: (line, file, quoted headings right after it).
fn pointers(text: &str) -> Vec<(usize, String, Vec<String>)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("docs/") {
            let after = &rest[at + "docs/".len()..];
            let Some(end) = after.find(".md") else { break };
            let file = &after[..end];
            rest = &after[end + ".md".len()..];
            if file.is_empty() || !file.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                continue;
            }
            let mut quoted = Vec::new();
            let mut tail = rest;
            loop {
                let t = tail.trim_start_matches([',', ':', ' ']);
                let t = t.strip_prefix("and ").unwrap_or(t);
                let Some(inner) = t.strip_prefix('"') else { break };
                let Some(close) = inner.find('"') else { break };
                quoted.push(inner[..close].to_string());
                tail = &inner[close + 1..];
            }
            out.push((n + 1, format!("{file}.md"), quoted));
        }
    }
    out
}

#[test]
fn pointers_into_docs_name_existing_files_and_headings() {
    let root = root();
    let mut files = Vec::new();
    for dir in ["src", "tests", "python", "benches", "proto"] {
        sources(&root.join(dir), &mut files);
    }
    assert!(files.len() > 50, "the source tree was not found under {}", root.display());
    let mut checked = 0;
    let mut problems = Vec::new();
    for file in &files {
        if file.ends_with("tests/docs_references.rs") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(file) else { continue };
        for (line, doc, quoted) in pointers(&text) {
            let shown = format!("{}:{line}", file.strip_prefix(&root).unwrap_or(file).display());
            let Ok(body) = std::fs::read_to_string(root.join("docs").join(&doc)) else {
                problems.push(format!("{shown}: docs/{doc} does not exist"));
                continue;
            };
            let have = headings(&body);
            for h in quoted {
                checked += 1;
                if !have.iter().any(|have| names(&h, have)) {
                    problems.push(format!("{shown}: docs/{doc} has no heading \"{h}\""));
                }
            }
        }
    }
    assert!(problems.is_empty(), "broken pointers into docs/:\n{}", problems.join("\n"));
    assert!(checked > 10, "only {checked} quoted headings found: is the pointer syntax still `docs/x.md \"Heading\"`?");
}

/// Documents outside the repository that code comments used to cite (spelled in pieces, so that
/// this file does not match a grep for them).
const OUTSIDE: &[&str] =
    &[concat!("spec ", "§"), concat!("DESIGN", ".md"), concat!("Δ", "0.6"), concat!("shared/", "spec")];

#[test]
fn no_pointer_leaves_the_repository() {
    let root = root();
    let mut files = Vec::new();
    for dir in ["src", "tests", "python", "benches", "proto"] {
        sources(&root.join(dir), &mut files);
    }
    let mut problems = Vec::new();
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else { continue };
        for (n, line) in text.lines().enumerate() {
            if let Some(what) = OUTSIDE.iter().find(|w| line.contains(*w)) {
                let shown = file.strip_prefix(&root).unwrap_or(file).display();
                problems.push(format!("{shown}:{}: `{what}` is not in the repository (point into docs/)", n + 1));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_pointer_reader_finds_files_and_headings() {
    let p = pointers(r#"//! see docs/mesh.md "Forwarding" and docs/protocol.md, "Names", "MLS" and "Remove" (x)"#);
    assert_eq!(
        p,
        vec![
            (1, "mesh.md".to_string(), vec!["Forwarding".to_string()]),
            (1, "protocol.md".to_string(), vec!["Names".to_string(), "MLS".to_string(), "Remove".to_string()]),
        ]
    );
    assert_eq!(headings("# A\ntext\n### B c\n"), vec!["A".to_string(), "B c".to_string()]);
    assert!(names("Links", "Links: who speaks what"));
    assert!(names("Forwarding", "Forwarding (`forward.rs`)"));
    assert!(!names("Link", "Links: who speaks what"));
    assert!(!names("Routes", "What each node keeps"));
}
