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

/// The terminal on stdin in raw mode (no echo, no line editing, no signals from keys: all
/// of it goes to a remote terminal), until dropped.
pub(crate) struct RawTerminal {
    saved: libc::termios,
}

impl RawTerminal {
    /// Puts stdin's terminal in raw mode; an error when stdin is not a terminal.
    pub(crate) fn enter() -> std::io::Result<Self> {
        // SAFETY: termios is plain data that tcgetattr fills in whole on success.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd 0 and a valid pointer to a termios.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut raw = saved;
        // SAFETY: cfmakeraw only edits the termios it is given.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: fd 0 and a valid termios.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: fd 0 and the termios it had before.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved) };
    }
}

/// The size (columns, rows) of the terminal on stdout, when it is one.
pub(crate) fn terminal_size() -> Option<(u16, u16)> {
    // SAFETY: winsize is plain data that the ioctl fills in on success.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ on fd 1 with a valid pointer to a winsize.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_col > 0).then_some((size.ws_col, size.ws_row))
}
