//! wasmpod's own WASI preview 1 conformance programs (`tests/conformance/`): the cases
//! each runner (`wasmpod run`, the shim under containerd) starts, and the check of what
//! each left: its exit code, its stdout, and the files it made in its `/data` preopen,
//! read on the host.
//!
//! `wasi_p1.c` runs one family of functions per case and prints `FAIL …` for each check
//! that does not hold; `wasi_p1_raw.wat` calls the ABI with no libc in between;
//! `wasi_p3_args.wat` is a WASI 0.3 command component (`wasi:cli/run@0.3.0`) that checks
//! its arguments and answers with its `result`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// One run of a conformance program.
#[derive(Debug, Clone)]
pub struct Case {
    /// The case's name (the family, or `raw`).
    pub name: &'static str,
    /// Which program: `wasi_p1` (C), `wasi_p1_raw` or `wasi_p3_args` (WAT).
    pub program: &'static str,
    /// Arguments after the program's name.
    pub args: Vec<String>,
    /// Environment variables to set.
    pub env: Vec<(String, String)>,
    /// Bytes on standard input, if the case reads it.
    pub stdin: Option<Vec<u8>>,
    /// Whether it needs an empty read-write directory preopened as `/data`.
    pub data: bool,
    /// Its exit code.
    pub exit_code: i32,
}

/// The directory a case's preopen is made in: `scratch/data`, so that what a guest might
/// create beside it (an escape) shows in `scratch`.
pub fn data_dir(scratch: &Path) -> PathBuf {
    scratch.join("data")
}

fn case(name: &'static str, args: &[&str]) -> Case {
    Case {
        name,
        program: "wasi_p1",
        args: std::iter::once(name)
            .chain(args.iter().copied())
            .map(str::to_owned)
            .collect(),
        env: Vec::new(),
        stdin: None,
        data: false,
        exit_code: 0,
    }
}

/// What `stdin` reads: every byte value, and more than one pipe buffer.
fn stdin_bytes() -> Vec<u8> {
    (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect()
}

/// Every case, in the order they run.
pub fn cases() -> Vec<Case> {
    let with_data = |mut c: Case| {
        c.data = true;
        c
    };
    let mut env = case("env", &[]);
    env.env = [
        ("CONFORMANCE_A", "1"),
        ("CONFORMANCE_EMPTY", ""),
        ("CONFORMANCE_SPACED", "a b=c"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut stdin = case("stdin", &[]);
    stdin.stdin = Some(stdin_bytes());
    let mut exit = case("exit", &["7"]);
    exit.exit_code = 7;
    let raw = Case {
        name: "raw",
        program: "wasi_p1_raw",
        args: vec!["raw".into()],
        env: Vec::new(),
        stdin: None,
        data: false,
        exit_code: 3,
    };
    let p3 = |name, last: &str, exit_code| Case {
        name,
        program: "wasi_p3_args",
        args: vec!["a".into(), last.into()],
        env: Vec::new(),
        stdin: None,
        data: false,
        exit_code,
    };
    vec![
        case("args", &["hello world", "", "\u{fc}n\u{ef}"]),
        env,
        case("clocks", &[]),
        case("random", &[]),
        exit,
        stdin,
        with_data(case("fd", &[])),
        with_data(case("dir", &[])),
        with_data(case("path", &[])),
        with_data(case("poll", &[])),
        with_data(case("sockets", &[])),
        raw,
        p3("p3-run-ok", "p3ok", 0),
        p3("p3-run-err", "nope", 1),
    ]
}

/// The families whose checks need a writable `/data`: with the preopen missing or
/// read-only each must fail.
pub fn preopen_families() -> Vec<Case> {
    cases().into_iter().filter(|c| c.data).collect()
}

/// Checks what `case` did: `code` and `stdout` from the runner, and the files it left in
/// `data` (see [`data_dir`]). The error says every difference.
pub fn check(
    case: &Case,
    code: Option<i32>,
    stdout: &str,
    data: Option<&Path>,
) -> Result<(), String> {
    let mut why = Vec::new();
    if code != Some(case.exit_code) {
        why.push(format!("exit {code:?}, expected {}", case.exit_code));
    }
    for line in stdout.lines().filter(|l| l.starts_with("FAIL")) {
        why.push(line.to_owned());
    }
    let summary = format!("{}: ", case.name);
    if case.program == "wasi_p1" && case.name != "exit" {
        match stdout.lines().find(|l| l.starts_with(&summary)) {
            Some(line) if line.ends_with(" 0 failed") => {}
            Some(line) => why.push(line.to_owned()),
            None => why.push(format!("no summary line in {stdout:?}")),
        }
    }
    let want = |line: &str, why: &mut Vec<String>| {
        if !stdout.lines().any(|l| l == line) {
            why.push(format!("stdout lacks {line:?}: {stdout:?}"));
        }
    };
    match case.name {
        "args" => {
            for (i, arg) in case.args.iter().enumerate() {
                want(&format!("arg[{}]={arg}", i + 1), &mut why);
            }
        }
        "exit" => want("exiting with 7", &mut why),
        "stdin" => {
            let bytes = case.stdin.clone().unwrap_or_default();
            let sum = bytes
                .iter()
                .fold(0u32, |s, b| s.wrapping_mul(31).wrapping_add(u32::from(*b)));
            want(&format!("stdin {} bytes, sum {sum}", bytes.len()), &mut why);
        }
        "raw" => want(
            "raw: args and stdout as written, bad descriptor refused",
            &mut why,
        ),
        _ => {}
    }
    if let Some(data) = data {
        if let Err(e) = check_files(case.name, data) {
            why.push(e);
        }
    }
    if why.is_empty() {
        Ok(())
    } else {
        Err(why.join("; "))
    }
}

/// What a family left in `/data`, read on the host, and nothing beside it.
fn check_files(name: &str, data: &Path) -> Result<(), String> {
    let read = |p: &str| std::fs::read(data.join(p)).map_err(|e| format!("/data/{p}: {e}"));
    let meta =
        |p: &str| std::fs::symlink_metadata(data.join(p)).map_err(|e| format!("/data/{p}: {e}"));
    let names = |p: &str| -> Result<Vec<String>, String> {
        let mut names: Vec<String> = std::fs::read_dir(data.join(p))
            .map_err(|e| format!("/data/{p}: {e}"))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        Ok(names)
    };
    let expect = |ok: bool, what: String| if ok { Ok(()) } else { Err(what) };
    if let Some(scratch) = data.parent() {
        let beside = std::fs::read_dir(scratch)
            .map_err(|e| e.to_string())?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "data")
            .collect::<Vec<_>>();
        expect(
            beside.is_empty(),
            format!("the guest made {beside:?} outside its preopen"),
        )?;
    }
    match name {
        "fd" => {
            let text = read("fd.txt")?;
            expect(
                text == b"hel+tail",
                format!("/data/fd.txt holds {:?}", String::from_utf8_lossy(&text)),
            )?;
            let mtime = meta("fd.txt")?.mtime();
            expect(
                mtime == 1_600_000_000,
                format!("/data/fd.txt's mtime is {mtime}"),
            )
        }
        "dir" => {
            let tree = names("tree")?;
            expect(
                tree == ["keep"],
                format!("/data/tree holds {tree:?}, not [keep]"),
            )?;
            expect(
                meta("tree/keep/file.txt")?.is_file(),
                "/data/tree/keep/file.txt".into(),
            )
        }
        "path" => {
            let paths = names("paths")?;
            expect(
                paths == ["link", "moved.txt", "sub"],
                format!("/data/paths holds {paths:?}"),
            )?;
            expect(
                read("paths/moved.txt")? == b"content",
                "/data/paths/moved.txt".into(),
            )?;
            let target = std::fs::read_link(data.join("paths/link")).map_err(|e| e.to_string())?;
            expect(
                target == Path::new("moved.txt"),
                format!("/data/paths/link -> {target:?}"),
            )?;
            let (a, b) = (meta("paths/moved.txt")?, meta("paths/sub/hard.txt")?);
            expect(
                a.ino() == b.ino() && a.nlink() == 2,
                "paths/sub/hard.txt is not a hard link".into(),
            )?;
            expect(
                a.mtime() == 1_500_000_000,
                format!("moved.txt's mtime is {}", a.mtime()),
            )
        }
        "poll" => expect(meta("poll.txt")?.is_file(), "/data/poll.txt".into()),
        "sockets" => {
            let left = names("")?;
            expect(left.is_empty(), format!("/data holds {left:?}"))
        }
        _ => Ok(()),
    }
}

/// The C program, compiled with clang for wasm32-wasi (once per test run).
pub fn module() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let src = crate::fixtures_dir().join("../conformance/wasi_p1.c");
        crate::c_file_module(&src, "conformance-wasi_p1")
    })
}

/// The WAT program `tests/conformance/<name>.wat`, as a binary module or component.
pub fn wat_program(name: &str) -> PathBuf {
    let src = crate::fixtures_dir().join(format!("../conformance/{name}.wat"));
    let bytes = wat::parse_file(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    let out = crate::target_tmp("wasm-fixtures").join(format!("conformance-{name}.wasm"));
    crate::write_atomic(&out, &bytes);
    out
}

/// The program `case` runs.
pub fn program(case: &Case) -> PathBuf {
    match case.program {
        "wasi_p1" => module().to_path_buf(),
        other => wat_program(other),
    }
}
