//! The few raw system calls the engine makes, each wrapped safely.

use std::os::fd::AsRawFd;

#[cfg(feature = "escape-simulator")]
pub mod escape;

/// The effective user id of this process.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether `fd` refers to a pipe or FIFO.
pub(crate) fn is_fifo(fd: &impl AsRawFd) -> bool {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is a valid out-pointer for one `stat`, and the fd is borrowed for the call.
    let rc = unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) };
    if rc != 0 {
        return false;
    }
    // SAFETY: fstat returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    st.st_mode & libc::S_IFMT == libc::S_IFIFO
}

/// Loads compiled code from `path`, a file this runtime wrote into its precompile cache.
///
/// Trust, which the caller establishes: the file is a regular file in a directory only
/// this user can write, owned by this user and writable by nobody else, and its sha256 and
/// length match the record written beside it when this runtime stored it under the key it
/// is looked up by. wasmtime checks its header against `engine`'s settings before use.
pub(crate) fn load_own_code_file(
    engine: &wasmtime::Engine,
    kind: crate::ProgramKind,
    path: &std::path::Path,
) -> wasmtime::Result<crate::program::Code> {
    use crate::program::Code;
    // SAFETY: the trust above: the code is what this runtime's own compile produced, and
    // nobody else could have changed it (see `cache::Cache::load`).
    unsafe {
        match kind {
            crate::ProgramKind::Module => {
                wasmtime::Module::deserialize_file(engine, path).map(Code::Module)
            }
            crate::ProgramKind::Component => {
                wasmtime::component::Component::deserialize_file(engine, path).map(Code::Component)
            }
        }
    }
}

/// Loads compiled code from `bytes`, what this same executable's compile mode produced for
/// an engine of `engine`'s settings, read from a pipe only it and this process hold
/// (`compiler::compile`). wasmtime checks their header against `engine` before use.
pub(crate) fn load_own_code(
    engine: &wasmtime::Engine,
    kind: crate::ProgramKind,
    bytes: &[u8],
) -> wasmtime::Result<crate::program::Code> {
    use crate::program::Code;
    // SAFETY: the provenance above: compiled by this executable, through a private pipe.
    unsafe {
        match kind {
            crate::ProgramKind::Module => {
                wasmtime::Module::deserialize(engine, bytes).map(Code::Module)
            }
            crate::ProgramKind::Component => {
                wasmtime::component::Component::deserialize(engine, bytes).map(Code::Component)
            }
        }
    }
}

/// Makes this process die with its parent (`PR_SET_PDEATHSIG` with SIGKILL).
pub(crate) fn die_with_parent() -> std::io::Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes integers only.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The pid of this process's parent.
pub(crate) fn parent_pid() -> i32 {
    // SAFETY: getppid has no arguments and cannot fail.
    unsafe { libc::getppid() }
}

/// Lowers this process's priority by `increment` (nice(2)); best effort.
pub(crate) fn nice(increment: i32) {
    // SAFETY: nice(2) takes and returns integers only.
    unsafe { libc::nice(increment) };
}

/// Caps this process's data segment (`RLIMIT_DATA`, soft and hard) at `bytes`.
pub(crate) fn limit_data(bytes: u64) -> std::io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: bytes,
    };
    // SAFETY: setrlimit reads one valid rlimit for this process.
    if unsafe { libc::setrlimit(libc::RLIMIT_DATA, &limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
