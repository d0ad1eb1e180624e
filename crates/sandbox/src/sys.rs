//! The system calls of the process level that std has no API for, behind safe functions:
//! the only `unsafe` of this crate. Each returns the OS error as it is.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// setns(2) of the calling thread into the network namespace `ns`.
pub(crate) fn join_network_namespace(ns: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: setns(2) on a descriptor the caller keeps open for the call.
    check(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) })
}

/// unshare(2) of one kind of namespace (`CLONE_NEWNET`, `CLONE_NEWNS`).
pub(crate) fn unshare(flag: libc::c_int) -> io::Result<()> {
    // SAFETY: unshare(2) takes an integer flag.
    check(unsafe { libc::unshare(flag) })
}

/// Makes `/` and everything under it a slave mount: mounts made in this namespace stay in
/// it, the host's still reach in.
pub(crate) fn make_root_rslave() -> io::Result<()> {
    // SAFETY: mount(2) changing only the propagation of "/", with static C strings and
    // null data.
    check(unsafe {
        libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_SLAVE,
            std::ptr::null(),
        )
    })
}

/// prctl(2) with integer arguments: `PR_SET_KEEPCAPS`, `PR_SET_NO_NEW_PRIVS`.
pub(crate) fn prctl(option: libc::c_int, arg: libc::c_ulong) -> io::Result<()> {
    // SAFETY: the options this crate passes take integers only.
    check(unsafe { libc::prctl(option, arg, 0, 0, 0) })
}

/// setgroups(2): the supplementary groups of every thread (glibc applies it to all).
pub(crate) fn setgroups(gids: &[libc::gid_t]) -> io::Result<()> {
    // SAFETY: setgroups(2) reads `len` gids from a live slice.
    check(unsafe { libc::setgroups(gids.len(), gids.as_ptr()) })
}

/// setgid(2).
pub(crate) fn setgid(gid: libc::gid_t) -> io::Result<()> {
    // SAFETY: setgid(2) takes an integer.
    check(unsafe { libc::setgid(gid) })
}

/// setuid(2).
pub(crate) fn setuid(uid: libc::uid_t) -> io::Result<()> {
    // SAFETY: setuid(2) takes an integer.
    check(unsafe { libc::setuid(uid) })
}

/// kill(2) of `pid` with SIGKILL; a pid that is not positive is refused.
pub(crate) fn kill_now(pid: libc::pid_t) -> io::Result<()> {
    if pid <= 0 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: kill(2) with a positive pid and a valid signal.
    check(unsafe { libc::kill(pid, libc::SIGKILL) })
}

/// Forks a keeper: a child that holds no file descriptor and sleeps until it is killed,
/// so that a systemd scope has a process from the container's Create on. Its parent (or
/// the parent's reaper) reaps it.
pub(crate) fn fork_keeper() -> io::Result<libc::pid_t> {
    // SAFETY: the child of a multi-threaded process may call only async-signal-safe
    // functions: it makes two system calls (close_range, pause) and never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: close_range(2) and pause(2) take integers; nothing of the parent's
        // memory is touched in the child.
        unsafe {
            if libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) != 0 {
                // Kernels before 5.9.
                for fd in 0..4096 {
                    libc::close(fd);
                }
            }
            loop {
                libc::pause();
            }
        }
    }
    Ok(pid)
}

/// Reaps child `pid` if it has ended, without waiting: whether it was reaped here (a
/// reaper of the parent's may have done it already).
pub(crate) fn reap(pid: libc::pid_t) -> bool {
    // SAFETY: waitpid(2) with a null status pointer and WNOHANG never blocks.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) == pid }
}

/// The calls `harden`'s tests make under a filter, each as a safe function that returns
/// the errno (0: it worked). Arguments that could do harm without the filter are harmless
/// anyway: a path that does not exist, signal 0, pid 1 under a filter or a missing right.
#[cfg(test)]
pub(crate) mod probe {
    use std::ffi::CString;

    fn errno(rc: libc::c_long) -> i32 {
        match rc {
            -1 => std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            _ => 0,
        }
    }

    /// Sets `no_new_privs` on the calling thread.
    pub(crate) fn no_new_privs() -> i32 {
        // SAFETY: prctl with integer arguments.
        errno(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }.into())
    }

    /// socket(2), closed again when made.
    pub(crate) fn socket(domain: i32, kind: i32, protocol: i32) -> i32 {
        // SAFETY: integer arguments; the descriptor is closed.
        unsafe {
            let fd = libc::socket(domain, kind, protocol);
            if fd >= 0 {
                libc::close(fd);
                return 0;
            }
            errno(fd.into())
        }
    }

    /// kill(pid, 0): a permission check only.
    pub(crate) fn kill0(pid: i32) -> i32 {
        // SAFETY: signal 0 is delivered to nobody.
        errno(unsafe { libc::kill(pid, 0) }.into())
    }

    /// execve of `/nonexistent/…`: `ENOENT` when allowed, nothing runs either way.
    pub(crate) fn execve_nonexistent() -> i32 {
        let path = CString::new("/nonexistent/wasmpod-harden-test").unwrap_or_default();
        let argv = [path.as_ptr(), std::ptr::null()];
        // SAFETY: a valid path and argv; the file does not exist.
        errno(unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), std::ptr::null()) }.into())
    }

    /// unshare(2) of `flags`.
    pub(crate) fn unshare(flags: i32) -> i32 {
        // SAFETY: integer arguments.
        errno(unsafe { libc::unshare(flags) }.into())
    }

    /// A bind mount of a path that does not exist.
    pub(crate) fn mount_nonexistent() -> i32 {
        let path = CString::new("/nonexistent/wasmpod-harden-test").unwrap_or_default();
        // SAFETY: valid C strings; the paths do not exist.
        let rc = unsafe {
            libc::mount(
                path.as_ptr(),
                path.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            )
        };
        errno(rc.into())
    }

    /// `PTRACE_ATTACH` to `pid`.
    pub(crate) fn ptrace_attach(pid: i32) -> i32 {
        // SAFETY: integer arguments.
        errno(unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0) })
    }

    /// setuid(0) of the calling thread alone (the raw call, not glibc's for all threads).
    pub(crate) fn setuid_root() -> i32 {
        // SAFETY: integer argument.
        errno(unsafe { libc::syscall(libc::SYS_setuid, 0) })
    }

    /// init_module of an empty image.
    pub(crate) fn init_module_empty() -> i32 {
        // SAFETY: a null image of length 0 and an empty parameter string.
        errno(unsafe { libc::syscall(libc::SYS_init_module, 0, 0, c"".as_ptr()) })
    }

    /// clone(2) without `CLONE_THREAD`: a fork. A child, if one is made, exits at once.
    pub(crate) fn fork() -> i32 {
        // SAFETY: clone with fork's semantics; the child only calls _exit.
        unsafe {
            match libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0) {
                0 => libc::_exit(0),
                -1 => errno(-1),
                pid => {
                    libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
                    0
                }
            }
        }
    }

    /// clone3 with no arguments (`EINVAL` when the filter lets it through).
    pub(crate) fn clone3_empty() -> i32 {
        // SAFETY: a null argument of size 0, refused by the kernel or the filter.
        errno(unsafe { libc::syscall(libc::SYS_clone3, 0, 0) })
    }

    /// mkdirat(AT_FDCWD, path), as cap-std makes directories.
    pub(crate) fn mkdirat(path: &std::path::Path) -> i32 {
        let path = CString::new(path.as_os_str().as_encoded_bytes()).unwrap_or_default();
        // SAFETY: a valid C string.
        errno(unsafe { libc::mkdirat(libc::AT_FDCWD, path.as_ptr(), 0o755) }.into())
    }

    /// getpid and getppid as raw calls: `(errno of getpid, errno of getppid)`.
    pub(crate) fn getpid_getppid() -> (i32, i32) {
        // SAFETY: calls without arguments.
        unsafe {
            (
                errno(libc::syscall(libc::SYS_getpid)),
                errno(libc::syscall(libc::SYS_getppid)),
            )
        }
    }
}
