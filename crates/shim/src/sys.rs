//! The shim's raw system calls, each with its safety argument.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// A pipe: `(read end, write end)`, both close-on-exec.
pub(crate) fn pipe() -> io::Result<(File, File)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((File::from(r), File::from(w)))
}

/// Detaches whatever is mounted at `target` (and everything under it). `Ok(false)` when
/// nothing was mounted there.
pub(crate) fn unmount(target: &Path) -> io::Result<bool> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(target.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let mut unmounted = false;
    loop {
        // SAFETY: `c` is a NUL-terminated path that outlives the call.
        let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) };
        if rc == 0 {
            unmounted = true;
            continue; // stacked mounts: unmount until nothing is left
        }
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::EINVAL) | Some(libc::ENOENT) => Ok(unmounted),
            _ => Err(err),
        };
    }
}

/// Whether `path` is a mount point (its device differs from its parent's).
pub(crate) fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(me), Some(Ok(parent))) = (
        std::fs::symlink_metadata(path),
        path.parent().map(std::fs::metadata),
    ) else {
        return false;
    };
    me.dev() != parent.dev() || me.ino() == parent.ino()
}

/// Hands freed heap memory back to the kernel. Compiling a module allocates tens of MiB
/// that the allocator would otherwise keep for the life of the shim.
pub(crate) fn release_free_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Keeps glibc's allocator to one arena, the main heap. By default every thread that finds
/// the arenas busy may make another (up to eight per core), and a serving shim's threads
/// (two task workers, the epoch ticker, blocking I/O) each kept a partly used arena of
/// their own: one arena holds a node-grouped shim with 50 guests 0.3–0.5 MiB smaller.
/// The shim's threads allocate little and rarely at once, and each keeps a cache of small
/// blocks of its own, so they do not queue on the one arena's lock; a compile, which
/// allocates from many threads, runs in a child that keeps the default.
pub(crate) fn single_malloc_arena() {
    // SAFETY: mallopt sets one of the allocator's tunables and touches no memory of ours.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Makes this process the reaper of its orphaned descendants (a guest's children), as
/// containerd's shims are.
pub(crate) fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes one integer argument and touches no memory.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets this process's nice value (its children inherit it).
pub(crate) fn set_nice(nice: i32) -> io::Result<()> {
    // SAFETY: setpriority takes plain integers and touches no memory.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reaps one child that has ended, without waiting: `(pid, exit status)`, the status
/// 128 + the signal for a child killed by one. `None` when no child has ended.
pub(crate) fn reap_any() -> Option<(i32, i32)> {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid int for waitpid to fill; WNOHANG never blocks.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid > 0 {
            if libc::WIFEXITED(status) {
                return Some((pid, libc::WEXITSTATUS(status)));
            }
            if libc::WIFSIGNALED(status) {
                return Some((pid, 128 + libc::WTERMSIG(status)));
            }
            continue; // stopped or continued: not an end
        }
        if pid < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return None;
    }
}

/// Clears `O_NONBLOCK` on a descriptor opened non-blocking.
pub(crate) fn set_blocking(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let fd = file.as_raw_fd();
    // SAFETY: F_GETFL/F_SETFL on a descriptor `file` owns; no memory is passed.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// kill(2): `signal` to process `pid` (a child this shim started and has not reaped).
pub(crate) fn kill(pid: libc::pid_t, signal: libc::c_int) -> io::Result<()> {
    if pid <= 0 {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    // SAFETY: kill(2) with a positive pid and an integer signal.
    if unsafe { libc::kill(pid, signal) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes this process receive SIGKILL when its parent dies (`PR_SET_PDEATHSIG`).
pub(crate) fn die_with_parent() -> io::Result<()> {
    // SAFETY: prctl(2) with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The pid of this process's parent.
pub(crate) fn parent_pid() -> libc::pid_t {
    // SAFETY: getppid(2) has no preconditions.
    unsafe { libc::getppid() }
}

/// Raises this process's soft limit on open descriptors to its hard limit (as Go's
/// runtime does for containerd's own shims); returns the new soft limit.
pub(crate) fn raise_descriptor_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

/// Moves this process into new IPC and UTS namespaces, and its future children into a new
/// PID namespace; names the new UTS namespace's host `hostname`. Only a process with one
/// thread may (unshare(2) refuses a new PID namespace's user otherwise).
pub(crate) fn unshare_pod_namespaces(hostname: &str) -> io::Result<()> {
    // SAFETY: unshare(2) with flags only.
    if unsafe { libc::unshare(libc::CLONE_NEWIPC | libc::CLONE_NEWUTS | libc::CLONE_NEWPID) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if !hostname.is_empty() {
        // SAFETY: the pointer and length describe `hostname`'s bytes, alive for the call.
        if unsafe { libc::sethostname(hostname.as_ptr().cast(), hostname.len()) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// fork(2) of a process with one thread: `Some(child pid)` in the parent, `None` in the
/// child.
pub(crate) fn fork_single_threaded() -> io::Result<Option<libc::pid_t>> {
    // SAFETY: the caller has one thread, so the child has a consistent copy of everything
    // (no lock held by a thread that does not exist there).
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(Some(pid)),
    }
}

/// dup2(2): `fd` becomes a copy of `from`; errors are left to the caller's next use.
pub(crate) fn dup_onto(from: RawFd, fd: RawFd) {
    // SAFETY: dup2 takes two integers; a bad one is an error, not undefined behaviour.
    unsafe {
        libc::dup2(from, fd);
    }
}

extern "C" fn wake(_: libc::c_int) {}

/// What the first process of a PID namespace does when it holds the namespace and nothing
/// else: sleeps, and reaps every process the namespace's orphans leave to it. Never
/// returns; only SIGKILL (from outside the namespace) ends it.
pub(crate) fn hold_as_init() -> ! {
    // SAFETY: sigset and sigaction calls on structs this function owns; the handler does
    // nothing, so it is async-signal-safe. waitpid and sigsuspend take integers and the
    // owned sets.
    unsafe {
        let mut chld: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut chld);
        libc::sigaddset(&mut chld, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &chld, std::ptr::null_mut());
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = wake as extern "C" fn(libc::c_int) as usize;
        libc::sigaction(libc::SIGCHLD, &action, std::ptr::null_mut());
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        loop {
            while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {}
            libc::sigsuspend(&none);
        }
    }
}

/// Process `pid`'s state letter and start time in clock ticks since boot (fields 3 and 22
/// of `/proc/PID/stat`).
fn stat(pid: u32) -> Option<(String, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from its end.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.to_owned();
    Some((state, fields.nth(18)?.parse().ok()?))
}

/// The start time of process `pid` in clock ticks since boot: with the pid, it names one
/// process for good.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    stat(pid).map(|(_, started)| started)
}

/// [`start_time`] of a process that still runs: `None` for one that has ended, a zombie
/// its parent has not reaped included.
pub(crate) fn running_start_time(pid: u32) -> Option<u64> {
    stat(pid)
        .filter(|(state, _)| !matches!(state.as_str(), "Z" | "X" | "x"))
        .map(|(_, started)| started)
}

/// One process for good, as a record on disk names it (`PID START`): a pid alone may be
/// another process's by the time the record is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcessId {
    pub(crate) pid: u32,
    /// Its start time in clock ticks since boot.
    pub(crate) started: u64,
}

impl ProcessId {
    /// Process `pid` as it is now (a start time of 0 if it is already gone).
    pub(crate) fn of(pid: u32) -> Self {
        Self {
            pid,
            started: start_time(pid).unwrap_or(0),
        }
    }

    /// A record's `PID START`.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let mut fields = text.split_whitespace();
        let pid = fields.next()?.parse().ok()?;
        let started = fields.next()?.parse().ok()?;
        Some(Self { pid, started })
    }

    /// Whether the process still runs (a zombie does not).
    pub(crate) fn is_running(&self) -> bool {
        running_start_time(self.pid) == Some(self.started)
    }
}

impl std::fmt::Display for ProcessId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.pid, self.started)
    }
}

/// The effective user id of this process.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

/// A FIFO at `path` (mode 0600), for tests that play containerd.
#[cfg(test)]
pub(crate) fn mkfifo(path: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: a valid NUL-terminated path that outlives the call.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The descriptor sent over `socket` in one message's `SCM_RIGHTS` (runc's console socket
/// sends a terminal's master this way, the message its name).
pub(crate) fn receive_fd(socket: &impl AsRawFd) -> io::Result<OwnedFd> {
    let mut data = [0u8; 256];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let one = u32::try_from(size_of::<RawFd>()).unwrap_or(4);
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(one) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: an all-zero msghdr is valid; its pointers are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: msg points at buffers that live until the call returns.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: msg was filled by recvmsg; CMSG_FIRSTHDR reads within its control buffer.
    let cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    // SAFETY: a non-null cmsg points into `control`.
    let rights = !cmsg.is_null()
        && unsafe {
            (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS
        };
    if !rights {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the message carried no descriptor",
        ));
    }
    // SAFETY: an SCM_RIGHTS message's data is the descriptor, now ours.
    let fd = unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>()) };
    // SAFETY: the kernel gave this process the descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets terminal `fd`'s window size (ResizePty).
pub(crate) fn set_window_size(fd: &impl AsRawFd, width: u32, height: u32) -> io::Result<()> {
    let size = libc::winsize {
        ws_row: u16::try_from(height).unwrap_or(u16::MAX),
        ws_col: u16::try_from(width).unwrap_or(u16::MAX),
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize, which outlives the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &size) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets or clears `FD_CLOEXEC` on `fd`: without it, the descriptor stays open, at the same
/// number, in a program this process executes.
pub(crate) fn set_cloexec(fd: &impl AsRawFd, cloexec: bool) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: F_GETFD/F_SETFD on a descriptor the caller keeps open for the call.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = if cloexec {
        flags | libc::FD_CLOEXEC
    } else {
        flags & !libc::FD_CLOEXEC
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Takes the descriptor `fd` this process inherited across exec (the serving shim's
/// listening socket, passed down by `start`), made close-on-exec again so that nothing this
/// process starts inherits it. An error when `fd` is a standard stream or not open. The
/// caller takes each inherited descriptor once.
pub(crate) fn take_inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    if fd <= libc::STDERR_FILENO {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {fd} is a standard stream"),
        ));
    }
    // Fails (EBADF) when `fd` is not open, before anything takes it.
    set_cloexec(&fd, true)?;
    // SAFETY: `fd` is open, and nothing else in this process owns it: it came across exec
    // from the parent, which named it for this one taker.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether `fd` is close-on-exec, for tests.
#[cfg(test)]
pub(crate) fn is_cloexec(fd: &impl AsRawFd) -> bool {
    // SAFETY: F_GETFD on a descriptor the caller keeps open for the call.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
    flags >= 0 && flags & libc::FD_CLOEXEC != 0
}

/// Whether `fd` is in non-blocking mode, for tests.
#[cfg(test)]
pub(crate) fn is_nonblocking(fd: &impl AsRawFd) -> bool {
    // SAFETY: F_GETFL on a descriptor the caller keeps open for the call.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    flags & libc::O_NONBLOCK != 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_zombie_has_no_running_start_time() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Ended, not reaped: a zombie until the wait below.
        while std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.contains(") Z "))
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(super::start_time(pid).is_some());
        assert_eq!(super::running_start_time(pid), None);
        child.wait().unwrap();
        let me = std::process::id();
        assert_eq!(super::running_start_time(me), super::start_time(me));
        assert!(super::start_time(me).is_some());
    }

    #[test]
    fn a_process_id_names_one_process_and_reads_back() {
        let me = super::ProcessId::of(std::process::id());
        assert!(me.is_running());
        assert_eq!(super::ProcessId::parse(&format!("{me}\n")), Some(me));
        let other = super::ProcessId {
            started: me.started + 1,
            ..me
        };
        assert!(
            !other.is_running(),
            "the same pid, another start: another process"
        );
        assert_eq!(super::ProcessId::parse("12"), None);
        assert_eq!(super::ProcessId::parse("x 1"), None);
    }

    #[test]
    fn the_descriptor_limit_is_raised_to_the_hard_one() {
        let soft = super::raise_descriptor_limit().unwrap();
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap();
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[3], soft.to_string(), "{line}");
        assert_eq!(fields[3], fields[4], "{line}");
    }
}
