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
