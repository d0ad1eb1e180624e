//! Tests of the precompile cache: hits, and every kind of bad entry being discarded.

use super::*;
use std::os::unix::fs::symlink;

const MODULE: &str = r#"(module (func (export "_start")))"#;

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    engine: wasmtime::Engine,
    cache: Cache,
    digest: String,
    code: Code,
}

fn engine() -> wasmtime::Engine {
    let mut config = wasmtime::Config::new();
    config.epoch_interruption(true);
    wasmtime::Engine::new(&config).unwrap()
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    let engine = engine();
    let cache = Cache::open(root.clone(), &engine).unwrap();
    let wasm = wat::parse_str(MODULE).unwrap();
    let digest = sha256_hex(&wasm);
    let code = Code::Module(wasmtime::Module::new(&engine, &wasm).unwrap());
    Fixture {
        _dir: dir,
        root,
        engine,
        cache,
        digest,
        code,
    }
}

impl Fixture {
    fn get(&self) -> Option<Code> {
        self.cache
            .get(&self.engine, &self.digest, ProgramKind::Module)
    }
    fn paths(&self) -> (PathBuf, PathBuf) {
        self.cache.paths(&self.digest, ProgramKind::Module)
    }
    /// Asserts the entry is refused and removed, and that storing it again works.
    fn assert_discarded(&self) {
        assert!(self.get().is_none(), "a bad entry was used");
        let (code, sum) = self.paths();
        assert!(
            !code.exists() && !sum.exists(),
            "a bad entry was left behind"
        );
        self.cache.put(&self.digest, &self.code);
        assert!(self.get().is_some(), "the entry was not stored again");
    }
}

#[test]
fn miss_then_hit() {
    let f = fixture();
    assert!(f.get().is_none());
    f.cache.put(&f.digest, &f.code);
    assert!(matches!(f.get(), Some(Code::Module(_))));
    // The same digest as a component is another key.
    assert!(f
        .cache
        .get(&f.engine, &f.digest, ProgramKind::Component)
        .is_none());
}

#[test]
fn entries_are_private() {
    let f = fixture();
    f.cache.put(&f.digest, &f.code);
    let (code, sum) = f.paths();
    for path in [&f.root, &f.cache.dir] {
        assert_eq!(fs::metadata(path).unwrap().mode() & 0o777, 0o700);
    }
    for path in [code, sum] {
        assert_eq!(fs::metadata(path).unwrap().mode() & 0o777, 0o600);
    }
}

#[test]
fn components_are_cached() {
    let f = fixture();
    let component = wasmtime::component::Component::new(&f.engine, "(component)").unwrap();
    f.cache.put("c0ffee", &Code::Component(component));
    assert!(matches!(
        f.cache.get(&f.engine, "c0ffee", ProgramKind::Component),
        Some(Code::Component(_))
    ));
}

#[test]
fn truncated_code_is_discarded() {
    let f = fixture();
    f.cache.put(&f.digest, &f.code);
    let (code, _) = f.paths();
    let len = fs::metadata(&code).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&code)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    f.assert_discarded();
}

#[test]
fn corrupted_code_is_discarded() {
    let f = fixture();
    f.cache.put(&f.digest, &f.code);
    let (code, _) = f.paths();
    let mut bytes = fs::read(&code).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&code, bytes).unwrap();
    f.assert_discarded();
}

#[test]
fn an_entry_of_another_key_is_discarded() {
    let f = fixture();
    let other_wasm = wat::parse_str(r#"(module (func (export "_start") nop))"#).unwrap();
    let other_digest = sha256_hex(&other_wasm);
    let other = Code::Module(wasmtime::Module::new(&f.engine, &other_wasm).unwrap());
    f.cache.put(&other_digest, &other);
    let (other_code, other_sum) = f.cache.paths(&other_digest, ProgramKind::Module);
    let (code, sum) = f.paths();
    fs::copy(other_code, &code).unwrap();
    fs::copy(other_sum, &sum).unwrap();
    f.assert_discarded();
}

#[test]
fn foreign_code_with_a_consistent_record_is_discarded() {
    // Code from an engine with other settings, with a record that matches it: wasmtime's
    // own header check refuses it, and the cache recompiles.
    let f = fixture();
    let mut config = wasmtime::Config::new();
    config.epoch_interruption(false);
    let foreign_engine = wasmtime::Engine::new(&config).unwrap();
    let foreign = foreign_engine
        .precompile_module(&wat::parse_str(MODULE).unwrap())
        .unwrap();
    let (code, sum) = f.paths();
    write_atomic(&code, &foreign).unwrap();
    write_atomic(
        &sum,
        f.cache
            .record(&f.digest, ProgramKind::Module, &foreign)
            .as_bytes(),
    )
    .unwrap();
    f.assert_discarded();
}

#[test]
fn garbage_with_a_consistent_record_is_discarded() {
    let f = fixture();
    let garbage = b"\x7fELF but not really".to_vec();
    let (code, sum) = f.paths();
    write_atomic(&code, &garbage).unwrap();
    write_atomic(
        &sum,
        f.cache
            .record(&f.digest, ProgramKind::Module, &garbage)
            .as_bytes(),
    )
    .unwrap();
    f.assert_discarded();
}

#[test]
fn code_without_a_record_is_discarded() {
    let f = fixture();
    f.cache.put(&f.digest, &f.code);
    let (_, sum) = f.paths();
    fs::remove_file(sum).unwrap();
    f.assert_discarded();
}

#[test]
fn writable_by_others_is_discarded() {
    let f = fixture();
    f.cache.put(&f.digest, &f.code);
    let (code, _) = f.paths();
    fs::set_permissions(&code, fs::Permissions::from_mode(0o666)).unwrap();
    f.assert_discarded();
}

#[test]
fn a_symlinked_entry_is_discarded() {
    let f = fixture();
    f.cache.put(&f.digest, &f.code);
    let (code, _) = f.paths();
    let elsewhere = f.root.join("elsewhere.cwasm");
    fs::rename(&code, &elsewhere).unwrap();
    symlink(&elsewhere, &code).unwrap();
    f.assert_discarded();
}

#[test]
fn an_entry_owned_by_another_user_is_discarded() {
    if sys::euid() != 0 {
        return; // only root can hand a file to another user
    }
    let f = fixture();
    f.cache.put(&f.digest, &f.code);
    let (code, _) = f.paths();
    std::os::unix::fs::chown(&code, Some(4242), None).unwrap();
    f.assert_discarded();
}

#[test]
fn an_open_cache_directory_is_made_private() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    fs::create_dir(&root).unwrap();
    fs::set_permissions(&root, fs::Permissions::from_mode(0o777)).unwrap();
    assert!(Cache::open(root.clone(), &engine()).is_some());
    assert_eq!(fs::metadata(&root).unwrap().mode() & 0o777, 0o700);
}

#[test]
fn a_cache_directory_of_another_user_is_not_used() {
    if sys::euid() != 0 {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    fs::create_dir(&root).unwrap();
    std::os::unix::fs::chown(&root, Some(4242), None).unwrap();
    assert!(Cache::open(root, &engine()).is_none());
}

#[test]
fn a_file_where_the_directory_should_be_disables_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    fs::write(&root, b"not a directory").unwrap();
    assert!(Cache::open(root, &engine()).is_none());
}

#[test]
fn clearing_removes_every_engines_entries_and_nothing_else() {
    let f = fixture();
    f.cache.put(&f.digest, &f.code);
    // An entry of another engine version (another compat directory), and a stray file.
    let old = f.root.join("0123456789abcdef01234567");
    fs::create_dir_all(&old).unwrap();
    fs::write(old.join("abc.module.cwasm"), b"old code").unwrap();
    fs::write(old.join("abc.module.sum"), b"old record").unwrap();
    fs::write(old.join("notes.txt"), b"not ours").unwrap();
    let cleared = clear_cache(&f.root).unwrap();
    assert_eq!(cleared.entries, 2);
    assert!(cleared.bytes > 8, "{cleared:?}");
    assert!(f.get().is_none(), "an entry survived");
    assert!(
        old.join("notes.txt").exists(),
        "removed a file that is not the cache's"
    );
    assert!(!old.join("abc.module.cwasm").exists());
    // Nothing there: nothing to do.
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        clear_cache(&dir.path().join("none")).unwrap(),
        CacheCleared::default()
    );
    // The cache works again afterwards (its own directory is made on the next put).
    let again = Cache::open(f.root.clone(), &f.engine).unwrap();
    again.put(&f.digest, &f.code);
    assert!(again
        .get(&f.engine, &f.digest, ProgramKind::Module)
        .is_some());
}

/// A program whose compile is under way elsewhere (its lock held) is waited for, then
/// loaded from what that compile left in the cache: not compiled a second time.
#[test]
fn a_compile_under_way_is_waited_for_not_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let engine = crate::Engine::new(crate::EngineConfig::default().cache_dir(dir.path())).unwrap();
    let binary = wat::parse_str(r#"(module (func (export "_start")))"#).unwrap();
    let digest = sha256_hex(&binary);
    let cache = engine.inner.cache.as_ref().unwrap();
    let held = cache.lock(&digest, ProgramKind::Module).unwrap();
    assert!(!held.waited);
    let waiter = {
        let (engine, binary) = (engine.clone(), binary.clone());
        std::thread::spawn(move || engine.load(&binary))
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        !waiter.is_finished(),
        "did not wait for the compile under way"
    );
    // The other compile ends: its result in the cache, then its lock released.
    let code = engine.compile_here(&binary, ProgramKind::Module).unwrap();
    cache.put(&digest, &code);
    drop(held);
    let program = waiter.join().unwrap().unwrap();
    assert!(!program.was_compiled(), "compiled a second time");
    // And a lock left behind by nobody costs nothing: the next load takes it at once.
    let again = cache.lock(&digest, ProgramKind::Module).unwrap();
    assert!(!again.waited);
}
