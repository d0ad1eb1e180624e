//! `wasmpod pull | build | push | images | rmi | prune`: the image store from the command line.

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal as _, Read as _};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use oci_image::{BuildFormat, BuildOptions, Credentials, ImageRef, Progress, PullOptions, Store};

use crate::cli::{BuildArgs, Format, PullArgs, PushArgs, RegistryArgs, RmiArgs};
use crate::dirs::Dirs;

/// Runs a store command; errors are one line naming the image or file.
pub(crate) fn main(what: &str, f: impl FnOnce() -> anyhow::Result<()>) -> i32 {
    match f() {
        Ok(()) => 0,
        Err(e) => {
            let line = crate::messages::error_about(what, &e);
            let line = line.lines().next().unwrap_or_default();
            eprintln!("wasmpod: {line}");
            1
        }
    }
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub(crate) fn store(dirs: &Dirs) -> anyhow::Result<Store> {
    Ok(Store::open(&dirs.images)?)
}

/// The pull/push options the flags describe, with a progress display when stderr is a
/// terminal.
pub(crate) fn options(args: &RegistryArgs, quiet: bool) -> anyhow::Result<PullOptions> {
    let credentials = match &args.username {
        None => None,
        Some(username) => {
            let password = if args.password_stdin {
                let mut p = String::new();
                std::io::stdin()
                    .read_to_string(&mut p)
                    .context("reading the password from standard input")?;
                p.trim_end_matches(['\r', '\n']).to_owned()
            } else if let Ok(p) = std::env::var("WASMPOD_REGISTRY_PASSWORD") {
                p
            } else {
                bail!("--username needs --password-stdin or WASMPOD_REGISTRY_PASSWORD");
            };
            Some(Credentials::Basic {
                username: username.clone(),
                password,
            })
        }
    };
    let progress: Option<Arc<dyn Progress>> = if !quiet && std::io::stderr().is_terminal() {
        Some(Arc::new(Bars::default()))
    } else {
        None
    };
    let mut options = PullOptions::default()
        .insecure(args.insecure)
        .limits(args.limits())
        .deadline(args.deadline());
    options.credentials = credentials;
    options.progress = progress;
    Ok(options)
}

pub(crate) fn pull(dirs: &Dirs, args: PullArgs) -> anyhow::Result<()> {
    let reference = ImageRef::parse(&args.image)?;
    let store = store(dirs)?;
    let options = options(&args.registry, args.quiet)?;
    let image = runtime()?.block_on(oci_image::pull(&store, &reference, &options))?;
    if args.quiet {
        println!("{}", image.record.digest);
    } else {
        println!("{}: pulled {}", image.reference, image.record.digest);
    }
    // The image is here; a program that does not compile is the run's error, not the
    // pull's (as docker pulls an image whose binary would not start).
    if !args.no_compile {
        if let Err(e) = precompile(dirs, &image) {
            tracing::warn!(
                "{}: pulled, but not compiled ahead: {}",
                image.reference,
                crate::messages::error_line(&e)
            );
        }
    }
    Ok(())
}

/// Compiles the image's program into the precompile cache (what `wasmpod compile IMAGE`
/// does), in a compile child under the default deadline and memory cap, so that its first
/// run starts without compiling. A program compiling elsewhere meanwhile is waited for,
/// not compiled twice.
fn precompile(dirs: &Dirs, image: &oci_image::Image) -> anyhow::Result<()> {
    let spec = sandbox::ContainerSpec::new(image.config.argv(&[]))
        .root(&image.rootfs, true)
        .to_spec()?;
    let policy = sandbox::RunPolicy::from_spec(&spec, &image.rootfs)?;
    let limits = wasm_engine::ProgramLimits::default();
    let bytes = policy.read_entrypoint(limits.max_size)?;
    let engine = wasm_engine::Engine::new(
        wasm_engine::EngineConfig::default()
            .cache_dir(&dirs.cache)
            .compiler(wasm_engine::CompilerProcess::this_executable()),
    )?;
    crate::progress::load(
        &engine,
        &bytes,
        Path::new(policy.entrypoint()),
        &limits,
        false,
    )?;
    Ok(())
}

pub(crate) fn build(dirs: &Dirs, args: BuildArgs) -> anyhow::Result<()> {
    let reference = ImageRef::parse(&args.tag)?;
    let file = &args.file;
    let bytes = std::fs::read(file).with_context(|| file.display().to_string())?;
    let is_text = file.extension().is_some_and(|e| e == "wat");
    let wasm = if is_text {
        wat::parse_bytes(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?
            .into_owned()
    } else {
        bytes
    };
    let stem = file
        .file_stem()
        .with_context(|| format!("{}: the file has no name", file.display()))?
        .to_string_lossy();
    let mut annotations = BTreeMap::new();
    for a in &args.annotations {
        let (k, v) = a
            .split_once('=')
            .with_context(|| format!("annotation {a:?}: expected KEY=VALUE"))?;
        annotations.insert(k.to_owned(), v.to_owned());
    }
    // Where the archive goes is checked first: a build whose -o cannot be written must
    // not leave its tag behind.
    if let Some(out) = &args.output {
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if !parent.is_dir() {
            anyhow::bail!(
                "-o {}: {} is not a directory",
                out.display(),
                parent.display()
            );
        }
    }
    let store = store(dirs)?;
    let was_tagged = store.resolve(&reference)?.is_some();
    let options = BuildOptions {
        reference: reference.clone(),
        format: match args.format {
            Format::Artifact => BuildFormat::Artifact,
            Format::Compat => BuildFormat::Compat,
        },
        file_name: format!("{stem}.wasm"),
        annotations,
        created: None,
        files: args.add.clone(),
        exposed_ports: args.expose.clone(),
    };
    let record =
        oci_image::build(&store, &wasm, &options).with_context(|| file.display().to_string())?;
    if let Some(out) = &args.output {
        if let Err(e) = oci_image::export(&store, &reference, out) {
            if !was_tagged {
                let _ = store.remove(&reference);
            }
            return Err(e).with_context(|| format!("-o {}", out.display()));
        }
    }
    println!("{reference}: built {}", record.digest);
    Ok(())
}

pub(crate) fn push(dirs: &Dirs, args: PushArgs) -> anyhow::Result<()> {
    let source = ImageRef::parse(&args.image)?;
    let target = match &args.destination {
        Some(d) => ImageRef::parse(d)?,
        None => source.clone(),
    };
    let store = store(dirs)?;
    let options = options(&args.registry, false)?;
    let digest = runtime()?.block_on(oci_image::push(&store, &source, &target, &options))?;
    println!("{target}: pushed {digest}");
    Ok(())
}

pub(crate) fn images(dirs: &Dirs) -> anyhow::Result<()> {
    let store = store(dirs)?;
    let images = store.images()?;
    let width = images.keys().map(String::len).max().unwrap_or(0).max(5);
    println!("{:width$}  {:12}  SIZE", "IMAGE", "DIGEST");
    for (name, record) in images {
        let short = record
            .digest
            .strip_prefix("sha256:")
            .unwrap_or(&record.digest);
        println!(
            "{name:width$}  {:12}  {}",
            &short[..12.min(short.len())],
            human(record.size)
        );
    }
    Ok(())
}

pub(crate) fn rmi(dirs: &Dirs, args: RmiArgs) -> anyhow::Result<()> {
    let store = store(dirs)?;
    let mut missing = Vec::new();
    for name in &args.images {
        let reference = ImageRef::parse(name)?;
        if store.remove(&reference)? {
            println!("Untagged: {reference}");
        } else {
            missing.push(reference.to_string());
        }
    }
    let report = store.prune()?;
    if report.blobs > 0 {
        println!("Deleted {} blobs ({})", report.blobs, human(report.bytes));
    }
    if !missing.is_empty() {
        bail!("{}: no such image in the local store", missing.join(", "));
    }
    Ok(())
}

pub(crate) fn prune(dirs: &Dirs, args: &crate::cli::PruneArgs) -> anyhow::Result<()> {
    let report = store(dirs)?.prune()?;
    println!(
        "Deleted {} blobs ({}) and {} unpacked images",
        report.blobs,
        human(report.bytes),
        report.rootfs
    );
    if args.cache {
        let cleared = wasm_engine::clear_cache(&dirs.cache)
            .with_context(|| format!("emptying the precompile cache {}", dirs.cache.display()))?;
        println!(
            "Deleted {} compiled programs ({}) from the precompile cache",
            cleared.entries,
            human(cleared.bytes)
        );
    }
    Ok(())
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "kB", "MB", "GB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

/// One progress bar per blob.
#[derive(Default)]
struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Progress for Bars {
    fn start(&self, digest: &str, total: u64) {
        let bar = self.multi.add(ProgressBar::new(total));
        let style = ProgressStyle::with_template(
            "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(digest.strip_prefix("sha256:").unwrap_or(digest)[..12].to_owned());
        if let Ok(mut bars) = self.bars.lock() {
            bars.insert(digest.to_owned(), bar);
        }
    }
    fn advance(&self, digest: &str, bytes: u64) {
        if let Some(bar) = self.bars.lock().ok().and_then(|b| b.get(digest).cloned()) {
            bar.inc(bytes);
        }
    }
    fn finish(&self, digest: &str) {
        if let Some(bar) = self.bars.lock().ok().and_then(|b| b.get(digest).cloned()) {
            bar.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_sizes() {
        assert_eq!(super::human(999), "999B");
        assert_eq!(super::human(5_300_000), "5.3MB");
    }
}
