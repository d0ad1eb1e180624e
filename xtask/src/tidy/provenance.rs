//! The provenance rule: the tree holds only this project's own code. Another project's
//! sources, protos, test suites and binaries come from a registry at build or test time;
//! a `vendor/` directory, a licence file, a copyright notice or a licence's own wording in
//! a committed file means someone else's work was copied in.
//!
//! The phrases are assembled from pieces, so that this file does not match itself.

use std::path::Path;

/// Directory names that only ever hold copies of other projects.
const VENDOR_DIRS: &[&str] = &["vendor", "third_party", "third-party"];

/// File names (before any extension, any case) of licence texts.
const LICENCE_FILES: &[&str] = &["LICENSE", "LICENCE", "COPYING", "NOTICE", "UNLICENSE"];

/// Words from the opening of the common licences' texts, lower case.
fn licence_phrases() -> Vec<String> {
    [
        ["permission is hereby granted,", " free of charge"],
        ["licensed under the apache license,", " version"],
        ["gnu general public", " license"],
        ["gnu lesser general public", " license"],
        [
            "redistribution and use in source and binary forms,",
            " with or without",
        ],
        ["mozilla public license,", " v. 2.0"],
        ["spdx-license-", "identifier:"],
    ]
    .iter()
    .map(|parts| parts.concat())
    .collect()
}

/// Whether a lower-cased line is a notice of ownership: the word, followed on the line by
/// the letter c in parentheses, the symbol, a year, or "the … authors".
fn is_copyright_notice(line: &str) -> bool {
    let word = ["copy", "right"].concat();
    let Some(at) = line.find(&word) else {
        return false;
    };
    let rest = &line[at + word.len()..];
    let year = rest.as_bytes().windows(4).any(|w| {
        (w.starts_with(b"19") || w.starts_with(b"20")) && w.iter().all(u8::is_ascii_digit)
    });
    rest.contains("(c)")
        || rest.contains('\u{a9}')
        || year
        || (rest.trim_start().starts_with("the ") && rest.contains("authors"))
}

/// What in `files` (path under the root, text) is another project's: each a message
/// naming the file and why.
pub(crate) fn third_party(files: &[(&Path, &str)]) -> Vec<String> {
    let phrases = licence_phrases();
    let mut out = Vec::new();
    for (path, text) in files {
        let shown = path.display();
        if let Some(dir) = path
            .parent()
            .into_iter()
            .flat_map(Path::iter)
            .find(|p| VENDOR_DIRS.iter().any(|v| p.eq_ignore_ascii_case(v)))
        {
            out.push(format!(
                "{shown}: under a {} directory (a copy of another project: take it from a registry at build time)",
                dir.to_string_lossy()
            ));
            continue;
        }
        let stem = path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_uppercase())
            .unwrap_or_default();
        let stem = stem.split(['.', '-', '_']).next().unwrap_or_default();
        if LICENCE_FILES.contains(&stem) {
            out.push(format!("{shown}: a licence file (another project's work?)"));
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            let lower = line.to_lowercase();
            if is_copyright_notice(&lower) {
                out.push(format!(
                    "{shown}:{}: a copyright notice: {}",
                    n + 1,
                    line.trim()
                ));
                break;
            }
            if let Some(phrase) = phrases.iter().find(|p| lower.contains(p.as_str())) {
                out.push(format!("{shown}:{}: a licence's text ({phrase:?})", n + 1));
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(path: &str, text: &str) -> Vec<String> {
        third_party(&[(Path::new(path), text)])
    }

    #[test]
    fn our_own_files_pass() {
        assert!(check("crates/shim/src/lib.rs", "//! The shim.\nfn main() {}\n").is_empty());
        // Talking about licences is not carrying one.
        assert!(check(
            "docs/install.md",
            "The binary is Apache-2.0; see the licence.\n"
        )
        .is_empty());
        assert!(check("README.md", "no copyright lines here\n").is_empty());
    }

    #[test]
    fn a_vendor_directory_a_licence_file_and_a_notice_fail() {
        let vendored = check("vendor/some-crate/src/lib.rs", "fn f() {}\n");
        assert!(
            vendored[0].contains("under a vendor directory"),
            "{vendored:?}"
        );
        let licence = check("tests/fixtures/lua/LICENSE", "text\n");
        assert!(licence[0].contains("a licence file"), "{licence:?}");
        let notice = format!(
            "/*\n * {} (C) 1994-2025 Lua.org, PUC-Rio.\n */\n",
            ["Copy", "right"].concat()
        );
        let found = check("tests/fixtures/lapi.c", &notice);
        assert!(
            found[0].contains("lapi.c:2: a copyright notice"),
            "{found:?}"
        );
        let authors = format!(
            "   {} The containerd Authors.\n",
            ["Copy", "right"].concat()
        );
        assert_eq!(check("build.rs", &authors).len(), 1);
        let apache = format!(
            "   {} 2.0 (the \"License\");\n",
            ["Licensed under the Apache License,", " Version"].concat()
        );
        let found = check("crates/x/build.rs", &apache);
        assert!(found[0].contains("a licence's text"), "{found:?}");
    }
}
