//! Compiled workloads: telling modules from components, compiling and caching them.

use std::path::Path;
use std::sync::Arc;

use crate::error::{chain, Error, Result};
use crate::Engine;

/// What kind of WebAssembly a [`Program`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProgramKind {
    /// A WASI preview 1 core module, started through its `_start` export.
    Module,
    /// A WASI preview 2 component, started through `wasi:cli/run`.
    Component,
}

/// Compiled code ready to be instantiated any number of times.
#[derive(Clone)]
pub struct Program {
    /// Shared by every load of the same binary while any of them is alive
    /// ([`Engine`]'s table of loaded programs).
    pub(crate) code: Arc<Code>,
    digest: String,
    compiled: bool,
}

#[derive(Clone)]
pub(crate) enum Code {
    Module(wasmtime::Module),
    Component(wasmtime::component::Component),
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program")
            .field("kind", &self.kind())
            .field("digest", &self.digest)
            .finish()
    }
}

impl Program {
    /// Whether this is a core module or a component.
    pub fn kind(&self) -> ProgramKind {
        match *self.code {
            Code::Module(_) => ProgramKind::Module,
            Code::Component(_) => ProgramKind::Component,
        }
    }

    /// The `sha256:<hex>` digest of the WebAssembly binary this was compiled from.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Whether loading it compiled the code (no precompile cache, or a miss), leaving the
    /// compiler's freed memory behind, rather than mapping it from the cache.
    pub fn was_compiled(&self) -> bool {
        self.compiled
    }
}

const MAGIC: &[u8; 4] = b"\0asm";

/// What a program may be before the engine compiles it: compiling is native code
/// generation, whose time and memory grow with the program, so an image or a file the
/// runtime does not control is bounded here. Past a limit, loading fails with
/// [`Error::LimitExceeded`] naming the program, its size or count, and the limit.
///
/// The compile limits bind when the engine compiles in a child process
/// ([`EngineConfig::compiler`](crate::EngineConfig::compiler)); a compile in the caller's
/// process cannot be stopped or capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgramLimits {
    /// Bytes of the binary (or of the text, and of the binary it becomes).
    pub max_size: u64,
    /// Functions defined by the module, or by all core modules inside a component.
    pub max_functions: u32,
    /// How long a compile may take before it is killed and loading fails; `None`: no
    /// deadline.
    pub compile_timeout: Option<std::time::Duration>,
    /// The compile child's data memory (`RLIMIT_DATA`), in bytes.
    pub compile_memory: u64,
}

impl ProgramLimits {
    /// Default cap on a program's size.
    pub const DEFAULT_MAX_SIZE: u64 = 256 << 20;
    /// Default cap on a program's defined functions (wasmtime itself stops at 1,000,000).
    pub const DEFAULT_MAX_FUNCTIONS: u32 = 200_000;
    /// Default compile deadline: minutes, for a program under the default size; a
    /// crafted one can otherwise take hours.
    pub const DEFAULT_COMPILE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);
    /// Default cap on a compile's memory.
    pub const DEFAULT_COMPILE_MEMORY: u64 = 4 << 30;

    /// Limits nobody reaches: for a program already checked by whoever wrote it to the
    /// cache (the process level's child loads what Create checked).
    pub const NONE: ProgramLimits = ProgramLimits {
        max_size: u64::MAX,
        max_functions: u32::MAX,
        compile_timeout: None,
        compile_memory: u64::MAX,
    };

    /// Refuses `size` bytes.
    pub fn check_size(&self, name: &Path, size: u64) -> Result<()> {
        if size > self.max_size {
            return Err(Error::LimitExceeded {
                name: name.display().to_string(),
                detail: format!(
                    "{size} bytes, over the limit of {} bytes for a program",
                    self.max_size
                ),
            });
        }
        Ok(())
    }

    /// Counts the functions a binary defines (nested modules included) and refuses too
    /// many. Reads section headers only; malformed bytes are left to the compiler's errors.
    fn check_functions(&self, name: &Path, binary: &[u8]) -> Result<()> {
        if self.max_functions == u32::MAX {
            return Ok(());
        }
        let mut functions: u64 = 0;
        for payload in wasmparser::Parser::new(0).parse_all(binary) {
            match payload {
                Ok(wasmparser::Payload::FunctionSection(reader)) => {
                    functions += u64::from(reader.count());
                }
                Ok(_) => {}
                Err(_) => break,
            }
            if functions > u64::from(self.max_functions) {
                return Err(Error::LimitExceeded {
                    name: name.display().to_string(),
                    detail: format!(
                        "defines {functions} functions or more, over the limit of {}",
                        self.max_functions
                    ),
                });
            }
        }
        Ok(())
    }
}

impl Default for ProgramLimits {
    fn default() -> Self {
        Self {
            max_size: Self::DEFAULT_MAX_SIZE,
            max_functions: Self::DEFAULT_MAX_FUNCTIONS,
            compile_timeout: Some(Self::DEFAULT_COMPILE_TIMEOUT),
            compile_memory: Self::DEFAULT_COMPILE_MEMORY,
        }
    }
}

/// Tells a core module from a component by the 8-byte header: magic, then a
/// version (1 for modules) or a version and layer (layer 1 for components).
pub(crate) fn detect(bytes: &[u8]) -> Result<ProgramKind> {
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err(Error::NotWasm {
            reason: describe(bytes),
        });
    }
    match (&bytes[4..6], &bytes[6..8]) {
        ([1, 0], [0, 0]) => Ok(ProgramKind::Module),
        (_, [1, 0]) => Ok(ProgramKind::Component),
        _ => Err(Error::Invalid(format!(
            "unsupported WebAssembly version/layer {:02x?}",
            &bytes[4..8]
        ))),
    }
}

/// A short description of what non-wasm bytes look like, for error messages.
fn describe(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "the file is empty".into();
    }
    if bytes.len() < 8 && bytes.starts_with(&MAGIC[..bytes.len().min(4)]) {
        return format!("truncated header ({} bytes)", bytes.len());
    }
    let head = &bytes[..bytes.len().min(4)];
    let kind = match head {
        [0x7f, b'E', b'L', b'F'] => "an ELF executable",
        [b'#', b'!', ..] => "a script",
        [0x1f, 0x8b, ..] => "gzip data",
        [b'P', b'K', ..] => "a zip archive",
        _ if std::str::from_utf8(&bytes[..bytes.len().min(512)]).is_ok() => {
            "text that is not valid WebAssembly text"
        }
        _ => "data without the \\0asm magic",
    };
    format!("found {kind} (starts with \"{}\")", head.escape_ascii())
}

/// Whether the bytes are (probably) WebAssembly text rather than binary.
fn looks_like_text(bytes: &[u8]) -> bool {
    let trimmed = bytes.iter().position(|b| !b.is_ascii_whitespace());
    matches!(trimmed.map(|i| bytes[i]), Some(b'(' | b';'))
}

impl Engine {
    /// Compiles a module or component from binary or text, using the precompile cache.
    pub fn load(&self, bytes: &[u8]) -> Result<Program> {
        self.load_named(bytes, Path::new("<input>"))
    }

    /// Reads and [loads](Self::load) a `.wasm` or `.wat` file.
    pub fn load_file(&self, path: &Path) -> Result<Program> {
        let bytes = std::fs::read(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        self.load_named(&bytes, path)
    }

    /// [`load`](Self::load), with `name` used for the location of errors in text, within
    /// the default [`ProgramLimits`].
    pub fn load_named(&self, bytes: &[u8], name: &Path) -> Result<Program> {
        self.load_limited(bytes, name, &ProgramLimits::default())
    }

    /// [`load_named`](Self::load_named) within `limits`, checked before anything is
    /// compiled or taken from the cache.
    pub fn load_limited(
        &self,
        bytes: &[u8],
        name: &Path,
        limits: &ProgramLimits,
    ) -> Result<Program> {
        self.load_reporting(bytes, name, limits, |_| {})
    }

    /// [`load_limited`](Self::load_limited), calling `compiling` with the binary's size
    /// just before a compile starts (not for a cache hit): for a caller that shows
    /// progress. A compile is logged (`info`) as it starts and ends, with its duration.
    pub fn load_reporting(
        &self,
        bytes: &[u8],
        name: &Path,
        limits: &ProgramLimits,
        compiling: impl FnOnce(u64),
    ) -> Result<Program> {
        limits.check_size(name, bytes.len() as u64)?;
        let text;
        let binary = if looks_like_text(bytes) {
            text = wat::parse_bytes(bytes).map_err(|mut e| {
                e.set_path(name);
                Error::Invalid(e.to_string())
            })?;
            &text[..]
        } else {
            bytes
        };
        let kind = detect(binary)?;
        limits.check_size(name, binary.len() as u64)?;
        limits.check_functions(name, binary)?;
        let digest = crate::cache::sha256_hex(binary);
        let program = |code, compiled| Program {
            code,
            digest: format!("sha256:{digest}"),
            compiled,
        };
        // Loaded already in this process and still in use (a node-grouped shim's other
        // containers of the same image): the same code, mapped and described once.
        if let Some(code) = self.inner.loaded.get(&digest, kind) {
            tracing::debug!(%digest, "program loaded already");
            return Ok(program(code, false));
        }
        let cached = |code| program(self.inner.loaded.insert(&digest, kind, code), false);
        if let Some(cache) = &self.inner.cache {
            if let Some(code) = cache.get(&self.inner.wasmtime, &digest, kind) {
                tracing::debug!(%digest, "precompile cache hit");
                return Ok(cached(code));
            }
        }
        // One compile of a program at a time on this cache: after waiting for another,
        // its result is loaded rather than compiled again.
        let lock = self
            .inner
            .cache
            .as_ref()
            .and_then(|cache| cache.lock(&digest, kind));
        if let (Some(cache), Some(lock)) = (&self.inner.cache, &lock) {
            if lock.waited {
                if let Some(code) = cache.get(&self.inner.wasmtime, &digest, kind) {
                    tracing::debug!(%digest, "compiled meanwhile by another");
                    return Ok(cached(code));
                }
            }
        }
        let size = binary.len() as u64;
        tracing::info!(program = %name.display(), size, "compiling");
        compiling(size);
        let started = std::time::Instant::now();
        let code = self.compile(binary, kind, name, limits)?;
        tracing::info!(program = %name.display(), size, elapsed = ?started.elapsed(), "compiled");
        if let Some(cache) = &self.inner.cache {
            cache.put(&digest, &code);
        }
        drop(lock);
        Ok(program(self.inner.loaded.insert(&digest, kind, code), true))
    }

    /// Compiles in a child process when the engine has a [`CompilerProcess`]
    /// (under `limits`' deadline and memory cap), here otherwise.
    ///
    /// [`CompilerProcess`]: crate::CompilerProcess
    fn compile(
        &self,
        binary: &[u8],
        kind: ProgramKind,
        name: &Path,
        limits: &ProgramLimits,
    ) -> Result<Code> {
        let Some(process) = &self.inner.compiler else {
            return self.compile_here(binary, kind);
        };
        let bytes =
            crate::compiler::compile(process, self.inner.pooling, binary, kind, name, limits)?;
        let engine = &self.inner.wasmtime;
        // What this same executable's compile mode produced from `binary`, through a
        // private pipe.
        crate::sys::load_own_code(engine, kind, &bytes).map_err(|e| Error::Compiler {
            name: name.display().to_string(),
            detail: format!("the compiled code does not load: {}", chain(&e)),
        })
    }

    /// Compiles on this process's threads.
    pub(crate) fn compile_here(&self, binary: &[u8], kind: ProgramKind) -> Result<Code> {
        let engine = &self.inner.wasmtime;
        let started = std::time::Instant::now();
        let code = match kind {
            ProgramKind::Module => wasmtime::Module::new(engine, binary).map(Code::Module),
            ProgramKind::Component => {
                wasmtime::component::Component::new(engine, binary).map(Code::Component)
            }
        }
        .map_err(|e| Error::Invalid(chain(&e)))?;
        tracing::debug!(?kind, elapsed = ?started.elapsed(), "compiled");
        Ok(code)
    }
}

impl Code {
    /// wasmtime's serialized form of the code.
    pub(crate) fn serialize(&self) -> wasmtime::Result<Vec<u8>> {
        match self {
            Code::Module(m) => m.serialize(),
            Code::Component(c) => c.serialize(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(bytes: &[u8], expected: Result<ProgramKind, &str>) {
        match (detect(bytes), expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want),
            (Err(got), Err(want)) => {
                let got = got.to_string();
                assert!(got.contains(want), "{got:?} should contain {want:?}")
            }
            (got, want) => panic!("detect gave {got:?}, expected {want:?}"),
        }
    }

    #[test]
    fn core_module_header() {
        check(b"\0asm\x01\0\0\0", Ok(ProgramKind::Module));
    }

    #[test]
    fn component_header() {
        check(b"\0asm\x0d\0\x01\0", Ok(ProgramKind::Component));
    }

    #[test]
    fn elf_is_named() {
        check(b"\x7fELF\x02\x01\x01\0", Err("an ELF executable"));
    }

    #[test]
    fn empty_is_named() {
        check(b"", Err("the file is empty"));
    }

    #[test]
    fn truncated_header() {
        check(b"\0asm\x01", Err("truncated header"));
    }

    #[test]
    fn unknown_version() {
        check(b"\0asm\x02\0\0\0", Err("unsupported WebAssembly version"));
    }

    /// A second load of a binary while the first is held shares its code, without even
    /// a cache lookup; once nobody holds it, it is loaded (here, from the cache) anew.
    #[test]
    fn a_held_program_is_shared_and_a_dropped_one_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::new(crate::EngineConfig::default().cache_dir(dir.path())).unwrap();
        let wat = r#"(module (func (export "_start")))"#;
        let first = engine.load(wat.as_bytes()).unwrap();
        assert!(first.was_compiled());
        let second = engine.load(wat.as_bytes()).unwrap();
        assert!(Arc::ptr_eq(&first.code, &second.code));
        assert!(!second.was_compiled());
        assert_eq!(first.digest(), second.digest());
        // Another binary is another program.
        let other = engine
            .load(br#"(module (func (export "_start") nop))"#)
            .unwrap();
        assert!(!Arc::ptr_eq(&first.code, &other.code));
        let weak = Arc::downgrade(&first.code);
        drop((first, second));
        assert!(
            weak.upgrade().is_none(),
            "the table kept a dropped program alive"
        );
        let again = engine.load(wat.as_bytes()).unwrap();
        assert!(!again.was_compiled(), "not taken from the precompile cache");
        // Dropped entries are pruned from the table as others are added.
        assert_eq!(engine.inner.loaded.len(), 2);
    }

    #[test]
    fn limits_name_the_program_its_size_or_count_and_the_limit() {
        let engine = Engine::new(Default::default()).unwrap();
        let name = Path::new("/app/big.wasm");
        let three = r#"(module (func) (func) (func (export "_start")))"#;
        let size = ProgramLimits {
            max_size: 20,
            ..ProgramLimits::default()
        };
        let e = engine
            .load_limited(three.as_bytes(), name, &size)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "/app/big.wasm: {} bytes, over the limit of 20 bytes for a program",
                three.len()
            )
        );
        let two = ProgramLimits {
            max_functions: 2,
            ..ProgramLimits::default()
        };
        let e = engine
            .load_limited(three.as_bytes(), name, &two)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "/app/big.wasm: defines 3 functions or more, over the limit of 2"
        );
        // Functions of the core modules inside a component count too.
        let component = r#"(component
            (core module (func) (func))
            (core module (func) (func)))"#;
        let three = ProgramLimits {
            max_functions: 3,
            ..ProgramLimits::default()
        };
        let e = engine
            .load_limited(component.as_bytes(), name, &three)
            .unwrap_err();
        assert!(matches!(e, Error::LimitExceeded { .. }), "{e}");
        let four = ProgramLimits {
            max_functions: 4,
            ..ProgramLimits::default()
        };
        engine
            .load_limited(component.as_bytes(), name, &four)
            .unwrap();
        engine
            .load_limited(component.as_bytes(), name, &ProgramLimits::NONE)
            .unwrap();
    }

    #[test]
    fn text_detection() {
        assert!(looks_like_text(b"  (module)"));
        assert!(looks_like_text(b";; comment\n(module)"));
        assert!(!looks_like_text(b"\0asm\x01\0\0\0"));
    }
}

/// The programs this process has loaded and still holds, by binary digest and kind: a
/// second load of the same binary (another container of the same image in one shim)
/// shares the first one's code instead of mapping and describing it again. An entry lives
/// as long as some [`Program`] of it does.
#[derive(Default)]
pub(crate) struct Loaded(
    std::sync::Mutex<std::collections::HashMap<(String, ProgramKind), std::sync::Weak<Code>>>,
);

impl Loaded {
    fn get(&self, digest: &str, kind: ProgramKind) -> Option<Arc<Code>> {
        let table = self.0.lock().unwrap_or_else(|p| p.into_inner());
        table
            .get(&(digest.to_owned(), kind))
            .and_then(std::sync::Weak::upgrade)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Remembers `code` (unless another load of the same binary got there first: then
    /// that one is kept and returned) and forgets programs nobody holds any more.
    fn insert(&self, digest: &str, kind: ProgramKind, code: Code) -> Arc<Code> {
        let mut table = self.0.lock().unwrap_or_else(|p| p.into_inner());
        table.retain(|_, weak| weak.strong_count() > 0);
        let key = (digest.to_owned(), kind);
        if let Some(held) = table.get(&key).and_then(std::sync::Weak::upgrade) {
            return held;
        }
        let code = Arc::new(code);
        table.insert(key, Arc::downgrade(&code));
        code
    }
}
