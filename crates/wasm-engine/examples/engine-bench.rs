//! engine-bench: the engine's own figures, measured in-process (no process start-up).
//! Run by `cargo xtask bench`; each result is printed as `name: median [p90] unit (n runs)`.
//!
//! Usage: engine-bench BIG.wasm HELLO.wasm LUA_SCRIPT_DIR

use std::path::PathBuf;
use std::time::{Duration, Instant};

use wasm_engine::{Engine, EngineConfig, KillHandle, Preopen, RunConfig};

fn stats(name: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let median = samples[samples.len() / 2];
    let p90 = samples[(samples.len() * 9 / 10).min(samples.len() - 1)];
    println!(
        "{name}: {:.3} ms median, {:.3} ms p90 ({} runs)",
        median.as_secs_f64() * 1e3,
        p90.as_secs_f64() * 1e3,
        samples.len()
    );
    median
}

fn time<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let start = Instant::now();
    let out = f();
    (start.elapsed(), out)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [big, hello, script_dir] = &args[..] else {
        return Err("usage: engine-bench BIG.wasm HELLO.wasm LUA_SCRIPT_DIR".into());
    };
    let big_bytes = std::fs::read(big)?;
    println!(
        "program: {} ({} KiB)",
        big.display(),
        big_bytes.len() / 1024
    );

    // Compile cold: an engine without a cache, so every load compiles.
    let engine = Engine::new(EngineConfig::default())?;
    let cold: Vec<_> = (0..5).map(|_| time(|| engine.load(&big_bytes)).0).collect();
    let cold = stats("compile (cold, no cache)", cold);

    // Load from the precompile cache: verify + mmap + deserialize.
    let cache = tempfile_dir()?;
    let cached_engine = Engine::new(EngineConfig::default().cache_dir(cache.join("cache")))?;
    cached_engine.load(&big_bytes)?;
    let warm: Vec<_> = (0..20)
        .map(|_| time(|| cached_engine.load(&big_bytes)).0)
        .collect();
    let warm = stats("load from the precompile cache", warm);
    println!(
        "cache speed-up: {:.1}x",
        cold.as_secs_f64() / warm.as_secs_f64()
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    // Instantiate + run a hello world (stdout discarded), program already loaded.
    let hello = engine.load_file(hello)?;
    let runs: Vec<_> = (0..200)
        .map(|_| {
            let config = RunConfig::default().args(["hello"]);
            time(|| rt.block_on(engine.run(&hello, config))).0
        })
        .collect();
    stats("instantiate + run hello world", runs);

    // Kill latency: a guest in `loop {}` killed from another thread.
    let spin = engine.load(br#"(module (func (export "_start") (loop $l (br $l))))"#)?;
    let kills: Vec<_> = (0..10)
        .map(|_| {
            let kill = KillHandle::new();
            let handle = kill.clone();
            let killer = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                handle.kill();
                Instant::now()
            });
            let config = RunConfig::default().kill(kill).memory(Default::default());
            let status = rt.block_on(engine.run(&spin, config));
            let done = Instant::now();
            let killed_at = killer.join().expect("killer thread");
            assert_eq!(status.map(|s| s.code()).ok(), Some(137));
            done.saturating_duration_since(killed_at)
        })
        .collect();
    stats("kill latency of a spinning guest", kills);

    // CPU-bound: the Lua benchmark script, in-process (compile excluded).
    let lua = cached_engine.load(&big_bytes)?;
    let lua_runs: Vec<_> = (0..3)
        .map(|_| {
            let config = RunConfig::default()
                .args(["lua", "/bench/bench.lua"])
                .preopen(Preopen {
                    host: script_dir.clone(),
                    guest: "/bench".into(),
                    readonly: true,
                });
            let (elapsed, status) = time(|| rt.block_on(cached_engine.run(&lua, config)));
            assert_eq!(status.map(|s| s.code()).ok(), Some(0));
            elapsed
        })
        .collect();
    stats("lua bench.lua in wasm", lua_runs);
    std::fs::remove_dir_all(&cache)?;
    Ok(())
}

fn tempfile_dir() -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("engine-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
