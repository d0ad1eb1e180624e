//! The raw system calls of the CLI, each wrapped safely.

/// The effective user id of this process.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The real user id of this process.
pub(crate) fn uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// Lets SIGPIPE end this process, as it ends `ls` or `crictl` whose reader went away
/// (`wasmpod images | head -1`): Rust ignores it, so printing to the closed pipe would
/// panic instead. Only for commands whose whole output is a listing: nothing is left
/// half-done when it strikes.
pub(crate) fn die_on_sigpipe() {
    // SAFETY: restoring a signal's default disposition has no preconditions; this runs
    // before the command starts any thread that could be writing.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Registers `action` to run when `signal` arrives (on top of whatever else is registered).
/// `action` runs in a signal handler: it must only do async-signal-safe work, such as
/// storing to an atomic — the reason this takes a plain `fn` and its argument, not any
/// closure.
pub(crate) fn on_signal(signal: libc::c_int, store: fn(i32), code: i32) -> std::io::Result<()> {
    // SAFETY: the action calls `store`, which callers keep async-signal-safe (an atomic
    // store), and captures only an integer.
    unsafe { signal_hook_registry::register(signal, move || store(code)) }.map(drop)
}
