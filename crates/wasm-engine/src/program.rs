//! Compiled workloads: telling modules from components, compiling and caching them.

use std::path::Path;

use crate::error::{chain, Error, Result};
use crate::Engine;

/// What kind of WebAssembly a [`Program`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgramKind {
    /// A WASI preview 1 core module, started through its `_start` export.
    Module,
    /// A WASI preview 2 component, started through `wasi:cli/run`.
    Component,
}

/// Compiled code ready to be instantiated any number of times.
#[derive(Clone)]
pub struct Program {
    pub(crate) code: Code,
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
        match self.code {
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

    /// [`load`](Self::load), with `name` used for the location of errors in text.
    pub fn load_named(&self, bytes: &[u8], name: &Path) -> Result<Program> {
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
        let digest = crate::cache::sha256_hex(binary);
        if let Some(cache) = &self.inner.cache {
            if let Some(code) = cache.get(&self.inner.wasmtime, &digest, kind) {
                tracing::debug!(%digest, "precompile cache hit");
                return Ok(Program {
                    code,
                    digest: format!("sha256:{digest}"),
                    compiled: false,
                });
            }
        }
        let code = self.compile(binary, kind)?;
        if let Some(cache) = &self.inner.cache {
            cache.put(&digest, &code);
        }
        Ok(Program {
            code,
            digest: format!("sha256:{digest}"),
            compiled: true,
        })
    }

    fn compile(&self, binary: &[u8], kind: ProgramKind) -> Result<Code> {
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

    #[test]
    fn text_detection() {
        assert!(looks_like_text(b"  (module)"));
        assert!(looks_like_text(b";; comment\n(module)"));
        assert!(!looks_like_text(b"\0asm\x01\0\0\0"));
    }
}
