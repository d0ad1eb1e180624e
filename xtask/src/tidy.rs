//! `cargo xtask tidy`: the rules ARCHITECTURE.md states, checked. Each rule is a function
//! from the tree's sources (and `cargo metadata`) to the places that break it, so a test can
//! feed it a deliberate violation; `cargo xtask test` runs them all on the real tree.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::util::root;

mod provenance;

/// The longest a source file may be, in lines.
pub(crate) const MAX_LINES: usize = 1000;

/// Which workspace crates each library or binary may depend on (normal dependencies; dev
/// dependencies are free). xtask is not listed: it drives everything.
const ALLOWED_DEPS: &[(&str, &[&str])] = &[
    ("wasm-engine", &[]),
    ("wasm-oci", &[]),
    ("sandbox", &["wasm-engine"]),
    ("oci-image", &["wasm-oci"]),
    ("grpc-api", &[]),
    (
        "shim",
        &[
            "wasm-engine",
            "sandbox",
            "wasm-oci",
            "oci-image",
            "grpc-api",
        ],
    ),
    ("cri", &["grpc-api"]),
    (
        "wasmpod",
        &["wasm-engine", "sandbox", "oci-image", "cri", "wasm-oci"],
    ),
    ("test-support", &[]),
    ("embed-example", &["oci-image", "sandbox", "wasm-engine"]),
];

/// The only crate that names wasmtime.
const ENGINE: &str = "wasm-engine";

/// One source file: its path under the root, and its text.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    pub(crate) path: PathBuf,
    pub(crate) text: String,
}

impl Source {
    #[cfg(test)]
    fn new(path: &str, text: &str) -> Self {
        Self {
            path: PathBuf::from(path),
            text: text.to_owned(),
        }
    }

    fn parts(&self) -> Vec<String> {
        self.path
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect()
    }

    /// The crate directory name for `crates/<name>/...`.
    fn crate_name(&self) -> Option<String> {
        let parts = self.parts();
        (parts.len() >= 3 && parts[0] == "crates").then(|| parts[1].clone())
    }

    /// Under `crates/<name>/src`.
    fn in_src(&self) -> bool {
        let parts = self.parts();
        parts.len() >= 3 && parts[0] == "crates" && parts[2] == "src"
    }

    /// A `sys` module: `sys.rs` or a file under a `sys/` directory.
    fn is_sys(&self) -> bool {
        self.path.file_name().is_some_and(|n| n == "sys.rs")
            || self.parts().iter().any(|p| p == "sys")
    }

    /// The code, without `//` comments and string literals' contents (good enough for the
    /// keywords checked here).
    fn code_lines(&self) -> impl Iterator<Item = (usize, String)> + '_ {
        self.text.lines().enumerate().map(|(n, line)| {
            let mut out = String::new();
            let mut in_str = false;
            let mut chars = line.chars().peekable();
            while let Some(c) = chars.next() {
                match c {
                    '\\' if in_str => {
                        chars.next();
                    }
                    '"' => in_str = !in_str,
                    '/' if !in_str && chars.peek() == Some(&'/') => break,
                    _ if in_str => {}
                    _ => out.push(c),
                }
            }
            (n + 1, out)
        })
    }
}

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

/// Every Rust source of the tree (the vendored crates aside: they are upstream's).
pub(crate) fn all_sources() -> Vec<Source> {
    let mut files = Vec::new();
    for dir in ["crates", "xtask", "tests", "fuzz", "examples"] {
        rust_files(&root().join(dir), &mut files);
    }
    files.sort();
    files
        .into_iter()
        .map(|f| Source {
            text: std::fs::read_to_string(&f).unwrap_or_default(),
            path: f.strip_prefix(root()).unwrap_or(&f).to_path_buf(),
        })
        .collect()
}

/// Every file opens with a `//!` line saying what it is for.
pub(crate) fn doc_lines(sources: &[Source]) -> Vec<String> {
    sources
        .iter()
        .filter(|s| !s.text.starts_with("//!"))
        .map(|s| format!("{}: does not start with a `//!` line", s.path.display()))
        .collect()
}

/// No file is longer than [`MAX_LINES`].
pub(crate) fn file_length(sources: &[Source]) -> Vec<String> {
    sources
        .iter()
        .filter(|s| s.text.lines().count() > MAX_LINES)
        .map(|s| {
            format!(
                "{}: {} lines, over the ceiling of {MAX_LINES} (split it by what it does)",
                s.path.display(),
                s.text.lines().count()
            )
        })
        .collect()
}

/// Library code (`crates/*/src` but the CLI's, before its tests) does not `unwrap`.
pub(crate) fn no_unwrap(sources: &[Source]) -> Vec<String> {
    let mut out = Vec::new();
    for s in sources {
        let parts = s.parts();
        let is_test = parts.iter().any(|p| p == "tests.rs" || p == "tests");
        if !s.in_src() || is_test || parts[1] == "wasmpod" || parts[1] == "test-support" {
            continue;
        }
        let end = s.text.find("#[cfg(test)]").unwrap_or(s.text.len());
        for (n, line) in s.text[..end].lines().enumerate() {
            if line.contains(".unwrap()") && !line.trim_start().starts_with("//") {
                out.push(format!(
                    "{}:{}: library code unwraps (use `?` or `expect(\"why it holds\")`): {}",
                    s.path.display(),
                    n + 1,
                    line.trim()
                ));
            }
        }
    }
    out
}

/// Whether a line of code (comments and strings removed) uses the `unsafe` keyword.
fn uses_unsafe(code: &str) -> bool {
    let mut rest = code;
    while let Some(i) = rest.find("unsafe") {
        let before = rest[..i].chars().next_back();
        let after = &rest[i + "unsafe".len()..];
        let word_start = before.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        let next = after.trim_start();
        // `unsafe(` is an unsafe attribute: `#[unsafe(no_mangle)]`, `#[unsafe(export_name)]`.
        let keyword = ["{", "fn ", "fn(", "impl", "extern", "trait", "("]
            .iter()
            .any(|k| next.starts_with(k));
        let word_end = after
            .chars()
            .next()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        if word_start && word_end && keyword {
            return true;
        }
        rest = after;
    }
    false
}

/// `unsafe` only in a `sys` module (in tests too: they get one of their own).
pub(crate) fn unsafe_only_in_sys(sources: &[Source]) -> Vec<String> {
    let mut out = Vec::new();
    for s in sources.iter().filter(|s| !s.is_sys()) {
        for (n, code) in s.code_lines() {
            if uses_unsafe(&code) {
                out.push(format!(
                    "{}:{n}: unsafe outside a sys module (move it behind a safe function in sys.rs)",
                    s.path.display()
                ));
            }
        }
    }
    out
}

/// The crate roots (`lib.rs`, `main.rs`) of each crate under `crates/`.
fn crate_roots(sources: &[Source]) -> BTreeMap<String, Vec<&Source>> {
    let mut roots: BTreeMap<String, Vec<&Source>> = BTreeMap::new();
    for s in sources {
        let parts = s.parts();
        if s.in_src() && parts.len() == 4 && (parts[3] == "lib.rs" || parts[3] == "main.rs") {
            roots.entry(parts[1].clone()).or_default().push(s);
        }
    }
    roots
}

/// A crate whose sources have no `unsafe` forbids it; one with a `sys` module denies it
/// everywhere else (so the compiler keeps it there).
pub(crate) fn unsafe_attributes(sources: &[Source]) -> Vec<String> {
    let mut uses: BTreeSet<String> = BTreeSet::new();
    for s in sources.iter().filter(|s| s.in_src()) {
        if s.code_lines().any(|(_, code)| uses_unsafe(&code)) {
            uses.extend(s.crate_name());
        }
    }
    let mut out = Vec::new();
    for (name, roots) in crate_roots(sources) {
        let has_lib = roots.iter().any(|r| r.path.ends_with("src/lib.rs"));
        for root in &roots {
            // A binary beside a library is a crate of its own: only its file counts, and
            // the modules it keeps under `src/main/`.
            let bin_beside_lib = has_lib && root.path.ends_with("src/main.rs");
            let unsafe_here = if bin_beside_lib {
                let bin_dir = root.path.with_extension("");
                sources
                    .iter()
                    .filter(|s| s.path == root.path || s.path.starts_with(&bin_dir))
                    .any(|s| s.code_lines().any(|(_, code)| uses_unsafe(&code)))
            } else {
                uses.contains(&name)
            };
            let (wanted, why) = if unsafe_here {
                ("#![deny(unsafe_code)]", "its unsafe code lives in sys")
            } else {
                ("#![forbid(unsafe_code)]", "it has no unsafe code")
            };
            if !root.text.contains(wanted) {
                out.push(format!("{}: lacks `{wanted}` ({why})", root.path.display()));
            }
        }
    }
    out
}

/// Every library crate documents its public API (test-support is test code).
pub(crate) fn missing_docs(sources: &[Source]) -> Vec<String> {
    crate_roots(sources)
        .into_iter()
        .filter(|(name, _)| name != "test-support")
        .flat_map(|(_, roots)| roots)
        .filter(|r| r.path.ends_with("src/lib.rs") && !r.text.contains("#![deny(missing_docs)]"))
        .map(|r| format!("{}: lacks `#![deny(missing_docs)]`", r.path.display()))
        .collect()
}

/// No source outside wasm-engine names a wasmtime crate.
pub(crate) fn wasmtime_in_engine_only(sources: &[Source]) -> Vec<String> {
    let mut out = Vec::new();
    for s in sources {
        if s.crate_name().as_deref() == Some(ENGINE) {
            continue;
        }
        for (n, code) in s.code_lines() {
            if code.contains("wasmtime::") || code.contains("wasmtime_wasi") {
                out.push(format!(
                    "{}:{n}: names wasmtime outside {ENGINE} (give wasm-engine a plain-data API)",
                    s.path.display()
                ));
            }
        }
    }
    out
}

/// The workspace's dependency graph (from `cargo metadata --no-deps`) keeps to
/// [`ALLOWED_DEPS`], and only wasm-engine depends on wasmtime.
pub(crate) fn dependency_graph(metadata: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    let packages = metadata["packages"].as_array().cloned().unwrap_or_default();
    let members: BTreeSet<String> = packages
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    for package in &packages {
        let name = package["name"].as_str().unwrap_or_default();
        if name == "xtask" {
            continue;
        }
        let Some((_, allowed)) = ALLOWED_DEPS.iter().find(|(n, _)| *n == name) else {
            out.push(format!(
                "crate {name} is not in the allowed dependency graph (xtask/src/tidy.rs ALLOWED_DEPS, ARCHITECTURE.md)"
            ));
            continue;
        };
        for dep in package["dependencies"].as_array().into_iter().flatten() {
            let dep_name = dep["name"].as_str().unwrap_or_default();
            let normal = dep["kind"].is_null();
            if dep_name.starts_with("wasmtime") && name != ENGINE {
                out.push(format!(
                    "crate {name} depends on {dep_name}: only {ENGINE} may name wasmtime"
                ));
            }
            if normal && members.contains(dep_name) && !allowed.contains(&dep_name) {
                out.push(format!(
                    "crate {name} depends on {dep_name}, which the dependency graph does not allow"
                ));
            }
        }
    }
    out
}

/// `cargo metadata` of the workspace, without its dependencies' own packages.
fn metadata() -> anyhow::Result<serde_json::Value> {
    let out = crate::util::output_ok(crate::util::cargo().args([
        "metadata",
        "--format-version",
        "1",
        "--no-deps",
    ]))?;
    Ok(serde_json::from_str(&out)?)
}

/// Every rule on these sources and this metadata: the rule's name and what breaks it.
pub(crate) fn check(
    sources: &[Source],
    metadata: &serde_json::Value,
) -> Vec<(&'static str, Vec<String>)> {
    vec![
        ("doc line", doc_lines(sources)),
        ("file length", file_length(sources)),
        ("no unwrap in libraries", no_unwrap(sources)),
        ("unsafe only in sys", unsafe_only_in_sys(sources)),
        ("unsafe attributes", unsafe_attributes(sources)),
        ("missing docs", missing_docs(sources)),
        (
            "wasmtime in wasm-engine only",
            wasmtime_in_engine_only(sources),
        ),
        ("dependency graph", dependency_graph(metadata)),
    ]
}

/// The provenance rule on every file git tracks (`tidy/provenance.rs`).
fn tracked_third_party() -> anyhow::Result<Vec<String>> {
    let root = root();
    let listing = crate::util::output_ok(
        std::process::Command::new("git")
            .args(["ls-files", "-z"])
            .current_dir(&root),
    )?;
    let files: Vec<(PathBuf, String)> = listing
        .split('\0')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            // A file deleted in the work tree but not yet in git's index is not there.
            let bytes = std::fs::read(root.join(p)).ok()?;
            Some((
                PathBuf::from(p),
                String::from_utf8_lossy(&bytes).into_owned(),
            ))
        })
        .collect();
    let files: Vec<(&Path, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_path(), t.as_str()))
        .collect();
    Ok(provenance::third_party(&files))
}

/// `cargo xtask tidy`: every rule on the tree; fails naming each violation.
pub(crate) fn run(_args: &[String]) -> anyhow::Result<()> {
    let sources = all_sources();
    anyhow::ensure!(!sources.is_empty(), "no sources under {}", root().display());
    let metadata = metadata()?;
    let mut failed = 0;
    let mut rules = check(&sources, &metadata);
    rules.push(("only our own code", tracked_third_party()?));
    for (rule, violations) in rules {
        if violations.is_empty() {
            eprintln!("tidy: {rule}: ok");
        } else {
            failed += violations.len();
            for v in violations {
                eprintln!("tidy: {rule}: {v}");
            }
        }
    }
    anyhow::ensure!(failed == 0, "tidy: {failed} violation(s)");
    eprintln!("tidy: {} files, all rules hold", sources.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small tree that keeps every rule.
    fn clean_tree() -> Vec<Source> {
        vec![
            Source::new(
                "crates/wasm-engine/src/lib.rs",
                "//! The engine.\n#![deny(missing_docs)]\n#![deny(unsafe_code)]\n#[allow(unsafe_code)]\nmod sys;\nuse wasmtime::Engine;\n",
            ),
            Source::new(
                "crates/wasm-engine/src/sys.rs",
                "//! System calls.\npub fn euid() -> u32 { unsafe { libc::geteuid() } }\n",
            ),
            Source::new(
                "crates/sandbox/src/lib.rs",
                "//! Policy.\n#![deny(missing_docs)]\n#![forbid(unsafe_code)]\nfn unsafe_entry() {}\n// unsafe { comment }\nconst S: &str = \"unsafe { in a string }\";\n",
            ),
            Source::new(
                "crates/wasmpod/src/main.rs",
                "//! The CLI.\n#![forbid(unsafe_code)]\nfn main() { let _ = x.unwrap(); }\n",
            ),
            // A binary beside a library that uses unsafe is a crate of its own.
            Source::new(
                "crates/wasm-engine/src/main.rs",
                "//! A tool.\n#![forbid(unsafe_code)]\nfn wasmtime_tool() {}\nfn main() {}\n",
            ),
        ]
    }

    /// A package's dependencies: name, and kind (`None` for a normal one).
    type Deps<'a> = &'a [(&'a str, Option<&'a str>)];

    fn metadata(deps: &[(&str, Deps<'_>)]) -> serde_json::Value {
        let packages: Vec<_> = deps
            .iter()
            .map(|(name, deps)| {
                let deps: Vec<_> = deps
                    .iter()
                    .map(|(d, kind)| serde_json::json!({"name": d, "kind": kind}))
                    .collect();
                serde_json::json!({"name": name, "dependencies": deps})
            })
            .collect();
        serde_json::json!({ "packages": packages })
    }

    fn clean_metadata() -> serde_json::Value {
        metadata(&[
            ("wasm-engine", &[("wasmtime", None)]),
            ("sandbox", &[("wasm-engine", None)]),
            (
                "shim",
                &[("sandbox", None), ("wasm-oci", None), ("cri", Some("dev"))],
            ),
            ("wasmpod", &[("cri", None), ("oci-image", None)]),
            ("cri", &[]),
            ("oci-image", &[("wasm-oci", None)]),
            ("wasm-oci", &[]),
        ])
    }

    fn broken(tree: &[Source], meta: &serde_json::Value) -> Vec<(&'static str, Vec<String>)> {
        check(tree, meta)
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .collect()
    }

    /// The one rule `tree` breaks, and its messages.
    fn only_broken(tree: &[Source], meta: &serde_json::Value) -> (&'static str, String) {
        let broken = broken(tree, meta);
        assert_eq!(broken.len(), 1, "{broken:#?}");
        let (rule, v) = broken.into_iter().next().unwrap();
        (rule, v.join("\n"))
    }

    #[test]
    fn a_clean_tree_passes() {
        assert!(broken(&clean_tree(), &clean_metadata()).is_empty());
    }

    #[test]
    fn each_rule_fails_on_a_deliberate_violation() {
        let meta = clean_metadata();
        let with = |path: &str, edit: &dyn Fn(&str) -> String| {
            let mut tree = clean_tree();
            let s = tree.iter_mut().find(|s| s.path == Path::new(path)).unwrap();
            s.text = edit(&s.text);
            tree
        };
        let (rule, msg) = only_broken(
            &with("crates/sandbox/src/lib.rs", &|t| {
                t.replacen("//! Policy.\n", "", 1)
            }),
            &meta,
        );
        assert_eq!(rule, "doc line", "{msg}");

        let (rule, msg) = only_broken(
            &with("crates/wasmpod/src/main.rs", &|t| {
                format!("{t}{}", "// filler\n".repeat(MAX_LINES))
            }),
            &meta,
        );
        assert_eq!(rule, "file length", "{msg}");
        assert!(
            msg.contains("crates/wasmpod/src/main.rs: 1003 lines"),
            "{msg}"
        );

        let (rule, msg) = only_broken(
            &with("crates/sandbox/src/lib.rs", &|t| {
                format!("{t}fn f() {{ g().unwrap(); }}\n")
            }),
            &meta,
        );
        assert_eq!(rule, "no unwrap in libraries", "{msg}");

        // unsafe outside sys: in a crate that forbids it, both rules break.
        let tree = with("crates/wasm-engine/src/lib.rs", &|t| {
            format!("{t}fn f() {{ unsafe {{ g() }} }}\n")
        });
        let (rule, msg) = only_broken(&tree, &meta);
        assert_eq!(rule, "unsafe only in sys", "{msg}");
        assert!(msg.contains("crates/wasm-engine/src/lib.rs:7"), "{msg}");

        // An unsafe attribute is unsafe code too.
        let tree = with("crates/wasm-engine/src/lib.rs", &|t| {
            format!("{t}#[unsafe(no_mangle)]\npub extern \"C\" fn f() {{}}\n")
        });
        let (rule, msg) = only_broken(&tree, &meta);
        assert_eq!(rule, "unsafe only in sys", "{msg}");
        assert!(msg.contains("crates/wasm-engine/src/lib.rs:7"), "{msg}");

        // A binary's own sys module (under `src/main/`) makes the binary deny, not forbid.
        let mut tree = clean_tree();
        tree.push(Source::new(
            "crates/wasm-engine/src/main/sys.rs",
            "//! Symbols.\n#[unsafe(no_mangle)]\npub extern \"C\" fn pow() {}\n",
        ));
        let (rule, msg) = only_broken(&tree, &meta);
        assert_eq!(rule, "unsafe attributes", "{msg}");
        assert!(
            msg.contains("crates/wasm-engine/src/main.rs: lacks `#![deny(unsafe_code)]`"),
            "{msg}"
        );

        let (rule, msg) = only_broken(
            &with("crates/sandbox/src/lib.rs", &|t| {
                t.replace("#![forbid(unsafe_code)]\n", "")
            }),
            &meta,
        );
        assert_eq!(rule, "unsafe attributes", "{msg}");
        assert!(msg.contains("forbid(unsafe_code)"), "{msg}");

        let (rule, msg) = only_broken(
            &with("crates/wasm-engine/src/lib.rs", &|t| {
                t.replace("#![deny(unsafe_code)]\n", "")
            }),
            &meta,
        );
        assert_eq!(rule, "unsafe attributes", "{msg}");
        assert!(msg.contains("deny(unsafe_code)"), "{msg}");

        let (rule, msg) = only_broken(
            &with("crates/sandbox/src/lib.rs", &|t| {
                t.replace("#![deny(missing_docs)]\n", "")
            }),
            &meta,
        );
        assert_eq!(rule, "missing docs", "{msg}");

        let (rule, msg) = only_broken(
            &with("crates/sandbox/src/lib.rs", &|t| {
                format!("{t}pub fn f(_: wasmtime::Store<()>) {{}}\n")
            }),
            &meta,
        );
        assert_eq!(rule, "wasmtime in wasm-engine only", "{msg}");

        let (rule, msg) = only_broken(
            &with("crates/sandbox/src/lib.rs", &|t| {
                format!("{t}use wasmtime_wasi::p2;\n")
            }),
            &meta,
        );
        assert_eq!(rule, "wasmtime in wasm-engine only", "{msg}");
    }

    #[test]
    fn the_dependency_graph_is_checked() {
        let tree = clean_tree();
        let bad = metadata(&[("shim", &[("cri", None)]), ("cri", &[])]);
        let (rule, msg) = only_broken(&tree, &bad);
        assert_eq!(rule, "dependency graph");
        assert!(msg.contains("crate shim depends on cri"), "{msg}");
        let bad = metadata(&[("sandbox", &[("wasmtime-wasi", None)])]);
        let (_, msg) = only_broken(&tree, &bad);
        assert!(msg.contains("only wasm-engine may name wasmtime"), "{msg}");
        let bad = metadata(&[("newcomer", &[])]);
        let (_, msg) = only_broken(&tree, &bad);
        assert!(msg.contains("newcomer is not in the allowed"), "{msg}");
    }

    /// The real tree keeps every rule (what `cargo xtask tidy` checks, under `cargo test`).
    #[test]
    fn the_tree_is_tidy() {
        let sources = all_sources();
        assert!(!sources.is_empty());
        let meta = super::metadata().expect("cargo metadata");
        let broken = broken(&sources, &meta);
        assert!(broken.is_empty(), "tidy: {broken:#?}");
    }
}
