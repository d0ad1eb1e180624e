//! The escape simulator, for tests only (the cargo feature `escape-simulator`, which a
//! release build refuses: see build.rs). It stands in for a wasmtime bug that gives a guest
//! native code execution in the process that runs it: a preview 1 module that imports
//! `wasmpod_escape.attempt(which, arg, arg_len) -> errno` makes this process try one of
//! [`ATTEMPTS`] as native code would, and learns the kernel's answer (0: it worked).
//!
//! Each attempt undoes what it did when it worked (a mount is unmounted, a traced process
//! detached, a forked child reaped), so that a run on an unconfined process leaves the
//! node as it was.

use std::ffi::CString;

use wasmtime::{Caller, Extern, Linker};

use crate::run::P1Host;

/// The string every binary built with the simulator holds, and no other does: what the
/// e2e and the bench look for in a binary to tell.
pub const MARKER: &str = "wasmpod-escape-simulator-is-built-in";

/// The attempts, by their index in `attempt`'s `which`, and what `arg` is for each.
pub const ATTEMPTS: [(&str, &str); 12] = [
    ("open-shadow", "open /etc/shadow for reading"),
    (
        "open-neighbour",
        "open ARG, another container's file, for reading",
    ),
    (
        "connect-containerd",
        "connect to the Unix socket ARG (containerd's)",
    ),
    (
        "exec-shell",
        "start /bin/sh -c true (posix_spawn: a new process, then execve)",
    ),
    (
        "ptrace-neighbour",
        "PTRACE_SEIZE the process whose pid is ARG",
    ),
    ("mount", "mount a tmpfs on the directory ARG"),
    ("kill-init", "kill(1, 0): may this process signal init"),
    (
        "write-proc-sys",
        "write /proc/sys/vm/swappiness (its own value, back)",
    ),
    ("raw-socket", "socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)"),
    ("setuid-root", "setuid(0) on this thread"),
    ("load-module", "init_module of an empty image"),
    (
        "user-namespace",
        "clone a process into a new user namespace",
    ),
];

/// Adds `wasmpod_escape.attempt` to a preview 1 linker.
pub(crate) fn add_to_linker(linker: &mut Linker<P1Host>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "wasmpod_escape",
        "attempt",
        |mut caller: Caller<'_, P1Host>, which: i32, ptr: i32, len: i32| -> i32 {
            let arg = read_arg(&mut caller, ptr, len).unwrap_or_default();
            tracing::debug!(marker = MARKER, which, arg, "escape attempt");
            match usize::try_from(which).ok() {
                Some(i) if i < ATTEMPTS.len() => attempt(i, &arg),
                _ => libc::EINVAL,
            }
        },
    )?;
    Ok(())
}

fn read_arg(caller: &mut Caller<'_, P1Host>, ptr: i32, len: i32) -> Option<String> {
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        return None;
    };
    let start = usize::try_from(ptr).ok()?;
    let len = usize::try_from(len).ok()?;
    let bytes = memory.data(&caller).get(start..start.checked_add(len)?)?;
    String::from_utf8(bytes.to_vec()).ok()
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// 0 when `rc` is not -1, else the errno.
fn check(rc: libc::c_long) -> i32 {
    if rc == -1 {
        last_errno()
    } else {
        0
    }
}

fn c(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

fn attempt(which: usize, arg: &str) -> i32 {
    // SAFETY: each block makes system calls with valid pointers to live C strings and
    // buffers, and closes or undoes what it opened or changed.
    unsafe {
        match which {
            0 => open_read("/etc/shadow"),
            1 => open_read(arg),
            2 => {
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
                if fd < 0 {
                    return last_errno();
                }
                let mut addr: libc::sockaddr_un = std::mem::zeroed();
                addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
                for (dst, src) in addr.sun_path.iter_mut().zip(arg.bytes()) {
                    *dst = src as libc::c_char;
                }
                let len = size_of::<libc::sockaddr_un>() as libc::socklen_t;
                let rc = libc::connect(fd, (&raw const addr).cast(), len);
                let e = check(rc.into());
                libc::close(fd);
                e
            }
            3 => {
                let sh = c("/bin/sh");
                let dash_c = c("-c");
                let t = c("true");
                let argv = [sh.as_ptr(), dash_c.as_ptr(), t.as_ptr(), std::ptr::null()];
                let mut pid: libc::pid_t = 0;
                let rc = libc::posix_spawn(
                    &mut pid,
                    sh.as_ptr(),
                    std::ptr::null(),
                    std::ptr::null(),
                    argv.as_ptr().cast(),
                    std::ptr::null(),
                );
                if rc == 0 {
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
                rc
            }
            4 => {
                let pid: libc::pid_t = arg.trim().parse().unwrap_or(0);
                let rc = libc::ptrace(libc::PTRACE_SEIZE, pid, 0, 0);
                if rc == -1 {
                    return last_errno();
                }
                // Stop it, so that it can be detached, and let it go.
                libc::ptrace(libc::PTRACE_INTERRUPT, pid, 0, 0);
                libc::waitpid(pid, std::ptr::null_mut(), libc::__WALL);
                libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0);
                0
            }
            5 => {
                let target = c(arg);
                let tmpfs = c("tmpfs");
                let rc = libc::mount(
                    tmpfs.as_ptr(),
                    target.as_ptr(),
                    tmpfs.as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    std::ptr::null(),
                );
                if rc == 0 {
                    libc::umount2(target.as_ptr(), libc::MNT_DETACH);
                }
                check(rc.into())
            }
            6 => check(libc::kill(1, 0).into()),
            7 => {
                let path = c("/proc/sys/vm/swappiness");
                let mut value = [0u8; 16];
                let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return last_errno();
                }
                let n = libc::read(fd, value.as_mut_ptr().cast(), value.len());
                libc::close(fd);
                if n <= 0 {
                    return last_errno();
                }
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return last_errno();
                }
                let rc = libc::write(fd, value.as_ptr().cast(), n.unsigned_abs());
                let e = check(rc as libc::c_long);
                libc::close(fd);
                e
            }
            8 => {
                let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP);
                if fd < 0 {
                    return last_errno();
                }
                libc::close(fd);
                0
            }
            9 => check(libc::syscall(libc::SYS_setuid, 0)),
            10 => {
                let params = c("");
                match libc::syscall(
                    libc::SYS_init_module,
                    std::ptr::null::<u8>(),
                    0,
                    params.as_ptr(),
                ) {
                    -1 => last_errno(),
                    _ => 0,
                }
            }
            11 => {
                let flags = libc::CLONE_NEWUSER | libc::SIGCHLD;
                let pid = libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0);
                match pid {
                    -1 => last_errno(),
                    0 => libc::_exit(0),
                    pid => {
                        libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), libc::__WALL);
                        0
                    }
                }
            }
            _ => libc::EINVAL,
        }
    }
}

/// # Safety
/// Plain system calls.
unsafe fn open_read(path: &str) -> i32 {
    let path = c(path);
    // SAFETY: a valid C string; the descriptor is closed.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return last_errno();
        }
        libc::close(fd);
    }
    0
}
