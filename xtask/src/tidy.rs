//! Tidy checks run by plain `cargo test`: every source file says what it is for, and
//! library code does not `unwrap`.

use std::path::{Path, PathBuf};

use crate::util::root;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn all_sources() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["crates", "xtask", "tests", "fuzz"] {
        rust_files(&root().join(dir), &mut files);
    }
    assert!(
        !files.is_empty(),
        "no sources found under {}",
        root().display()
    );
    files
}

#[test]
fn every_file_starts_with_a_doc_line() {
    let missing: Vec<_> = all_sources()
        .into_iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            !text.starts_with("//!")
        })
        .collect();
    assert!(
        missing.is_empty(),
        "these files do not start with a `//!` line saying what they are for: {missing:#?}"
    );
}

/// Library sources: `crates/*/src`, except binaries' `main.rs` and test modules.
fn library_code(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(root()).ok()?;
    let parts: Vec<_> = rel.iter().map(|p| p.to_string_lossy()).collect();
    let is_lib = parts.len() >= 3 && parts[0] == "crates" && parts[2] == "src";
    let is_test = parts.iter().any(|p| p == "tests.rs" || p == "tests");
    if !is_lib || is_test || parts[1] == "wasmpod" {
        return None;
    }
    let text = std::fs::read_to_string(file).ok()?;
    // Everything from the first `#[cfg(test)]` on is test code.
    Some(match text.find("#[cfg(test)]") {
        Some(i) => text[..i].to_owned(),
        None => text,
    })
}

#[test]
fn libraries_do_not_unwrap() {
    let mut offenders = Vec::new();
    for file in all_sources() {
        let Some(code) = library_code(&file) else {
            continue;
        };
        for (n, line) in code.lines().enumerate() {
            if line.contains(".unwrap()") && !line.trim_start().starts_with("//") {
                offenders.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "library code uses unwrap (use `?` or `expect(\"why it holds\")`):\n{}",
        offenders.join("\n")
    );
}
