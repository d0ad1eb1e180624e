//! The official WASI testsuite, where `$WASI_TESTSUITE_DIR` names a copy of its
//! `prod/testsuite-base` tree: its preview 1 tests read from their `.json` files, for the
//! runners of the CLI's tests and the e2e. The project's own conformance programs
//! (`tests/conformance/`) run whether or not it is there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One preview 1 command test.
#[derive(Debug, Clone)]
pub struct Test {
    /// `<language>/<name>`, as the expectations file names it.
    pub name: String,
    /// The `.wasm` file.
    pub wasm: PathBuf,
    /// Arguments after the program.
    pub args: Vec<String>,
    /// Environment variables, in the order of the file.
    pub env: BTreeMap<String, String>,
    /// The directory the guest gets as `/`, if any.
    pub root: Option<PathBuf>,
    /// The expected stdout, when the test says.
    pub stdout: Option<String>,
    /// The expected exit code (0 unless the test says).
    pub exit_code: i32,
}

/// The environment variable that names a copy of the suite's `prod/testsuite-base` tree
/// (the directory holding its `tests/`). Whoever runs the tests makes that copy; nothing in
/// this repository downloads, builds or holds the suite.
pub const DIR_VAR: &str = "WASI_TESTSUITE_DIR";

/// The suite's tree, when [`DIR_VAR`] names one; `None` when it is unset (the runners then
/// say they skipped it). A variable that names no such tree is the caller's mistake and
/// panics, naming it.
pub fn dir() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os(DIR_VAR)?);
    assert!(
        dir.join("tests").is_dir(),
        "{DIR_VAR}={}: not a wasi-testsuite prod/testsuite-base tree (it has no tests/)",
        dir.display()
    );
    Some(dir)
}

/// What a runner prints when the suite is not there.
pub fn skipped() -> String {
    format!("SKIPPED: the official wasi-testsuite ({DIR_VAR} is not set)")
}

/// The suite's preview 1 tests in the tree `into` (see [`dir`]), sorted by name.
pub fn preview1_tests(into: &Path) -> Vec<Test> {
    let mut tests = Vec::new();
    for lang in ["assemblyscript", "c", "rust"] {
        let dir = into
            .join("tests")
            .join(lang)
            .join("testsuite/wasm32-wasip1");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for wasm in entries.flatten().map(|e| e.path()) {
            if wasm.extension().is_none_or(|e| e != "wasm") {
                continue;
            }
            let stem = wasm.file_stem().unwrap().to_string_lossy().into_owned();
            let spec: serde_json::Value = std::fs::read(wasm.with_extension("json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            let strings = |v: &serde_json::Value| -> Vec<String> {
                v.as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            };
            tests.push(Test {
                name: format!("{lang}/{stem}"),
                args: strings(&spec["args"]),
                env: spec["env"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect(),
                root: spec["root"].as_str().map(|r| dir.join(r)),
                stdout: spec["stdout"].as_str().map(str::to_owned),
                exit_code: spec["exit_code"].as_i64().unwrap_or(0) as i32,
                wasm,
            });
        }
    }
    tests.sort_by(|a, b| a.name.cmp(&b.name));
    tests
}

/// `from` copied to `to` (files, directories and symbolic links as they are): the tests
/// write into their root.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src).unwrap(), &dst).unwrap();
        } else if kind.is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// The expected failures: `<path> <language>/<name>  <reason>` lines of
/// `tests/wasi-testsuite/expected-failures.txt` for `path` (`run` or `shim` for preview
/// 1, `run-p3` or `shim-p3` for preview 3; `both` is both of preview 1), `#` comments.
pub fn expected_failures(repo: &Path, path: &str) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(repo.join("tests/wasi-testsuite/expected-failures.txt"))
        .unwrap_or_default();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (which, rest) = l.split_once(char::is_whitespace)?;
            let (name, reason) = rest.trim().split_once(char::is_whitespace)?;
            (which == path || which == "both").then(|| (name.to_owned(), reason.trim().to_owned()))
        })
        .collect()
}

/// What a pass over the tests found: passed and all per language, and each failure with
/// why.
#[derive(Debug, Default)]
pub struct Tally {
    per_language: BTreeMap<String, (usize, usize)>,
    failed: BTreeMap<String, String>,
}

impl Tally {
    /// Checks one test's exit code and stdout against what it expects; `first_error` (the
    /// first line of what it printed on error) is asked for only when it failed.
    pub fn record(
        &mut self,
        test: &Test,
        code: Option<i32>,
        stdout: &str,
        first_error: impl FnOnce() -> String,
    ) {
        let mut why = Vec::new();
        if code != Some(test.exit_code) {
            why.push(format!("exit {code:?}, expected {}", test.exit_code));
        }
        if let Some(expected) = &test.stdout {
            if stdout != expected {
                why.push(format!("stdout {stdout:?}, expected {expected:?}"));
            }
        }
        let outcome = if why.is_empty() {
            Ok(())
        } else {
            Err(format!("{} ({})", why.join("; "), first_error()))
        };
        self.record_outcome(&test.name, outcome);
    }

    /// Counts the test `name` (`<language>/<test>`) as passed, or failed and why.
    pub fn record_outcome(&mut self, name: &str, outcome: Result<(), String>) {
        let lang = name.split('/').next().unwrap_or_default().to_owned();
        let counts = self.per_language.entry(lang).or_default();
        counts.1 += 1;
        match outcome {
            Ok(()) => counts.0 += 1,
            Err(why) => {
                self.failed.insert(name.to_owned(), why);
            }
        }
    }

    /// Prints `N passed, M failed` for the pass `through` (and each failure), indented by
    /// `indent`, and compares the failures with the expectations file's lines for `path`:
    /// a failure not listed there, or a listed test that passed, is the error.
    pub fn finish(
        &self,
        through: &str,
        indent: &str,
        repo: &Path,
        path: &str,
    ) -> Result<(), String> {
        self.finish_suite("wasm32-wasip1", through, indent, repo, path)
    }

    /// [`finish`](Self::finish) for the suite `suite` (`wasm32-wasip3`), whose lines in
    /// the expectations file are those of `path` (`run-p3`).
    pub fn finish_suite(
        &self,
        suite: &str,
        through: &str,
        indent: &str,
        repo: &Path,
        path: &str,
    ) -> Result<(), String> {
        let all: usize = self.per_language.values().map(|(_, n)| n).sum();
        let languages: Vec<String> = self
            .per_language
            .iter()
            .map(|(lang, (ok, n))| format!("{lang} {ok}/{n}"))
            .collect();
        eprintln!(
            "{indent}wasi-testsuite {suite} through {through}: {} passed, {} failed ({})",
            all - self.failed.len(),
            self.failed.len(),
            languages.join(", ")
        );
        for (name, why) in &self.failed {
            eprintln!("{indent}  FAILED {name}: {why}");
        }
        let expected = expected_failures(repo, path);
        let unexpected: Vec<&String> = self
            .failed
            .keys()
            .filter(|n| !expected.contains_key(*n))
            .collect();
        let now_passing: Vec<&String> = expected
            .keys()
            .filter(|n| !self.failed.contains_key(*n))
            .collect();
        if unexpected.is_empty() && now_passing.is_empty() {
            return Ok(());
        }
        Err(format!(
            "failed without a line in tests/wasi-testsuite/expected-failures.txt: {unexpected:?}; \
             listed there but passing: {now_passing:?}"
        ))
    }
}
