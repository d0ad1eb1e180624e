//! The layers under the engine: what a process that runs guest code can still do if a
//! wasmtime bug hands a guest native code execution.
//!
//! - [`BASELINE`] and [`BASELINE_CONDITIONAL`]: a seccomp filter that allows only the system
//!   calls wasmtime, tokio and WASI need once the guest's program is loaded; every other
//!   call fails with `EPERM` (`clone3` with `ENOSYS`, so that glibc falls back to `clone`,
//!   whose flags the filter can read). The lists are the ones docs/security.md shows; a
//!   unit test keeps the two the same.
//! - The spec's own profile (`linux.seccomp`, Kubernetes' `RuntimeDefault`), stacked over
//!   the baseline as runc would apply it: the kernel runs every filter and takes the
//!   strictest answer, so the spec can only narrow what the baseline allows.
//! - A Landlock ruleset: the files beneath the directories the guest was handed (read-only
//!   where its mount is), the precompile cache read-only, nothing else; no signals to, and
//!   no abstract sockets of, processes outside it. Best effort: a kernel without Landlock,
//!   or with an older ABI, enforces what it knows, and [`Status`] says how much.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

use landlock::{
    Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, Scope, ABI,
};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator, Spec};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use syscalls::Sysno;

use crate::error::{Error, Result};

/// The system calls the baseline allows whatever their arguments.
pub const BASELINE: &[&str] = &[
    // Files, through the descriptors the guest was handed (Landlock bounds the paths).
    "read",
    "write",
    "readv",
    "writev",
    "pread64",
    "pwrite64",
    "preadv",
    "pwritev",
    "preadv2",
    "pwritev2",
    "lseek",
    "close",
    "close_range",
    "fstat",
    "newfstatat",
    "statx",
    "fstatfs",
    "openat",
    "openat2",
    "getdents64",
    "mkdirat",
    "unlinkat",
    "renameat",
    "renameat2",
    "linkat",
    "symlinkat",
    "readlinkat",
    "faccessat",
    "faccessat2",
    "utimensat",
    "fsync",
    "fdatasync",
    "ftruncate",
    "fallocate",
    "fadvise64",
    "fcntl",
    "dup",
    "dup3",
    "pipe2",
    // Event loops and waiting.
    "epoll_create1",
    "epoll_ctl",
    "epoll_pwait",
    "epoll_pwait2",
    "eventfd2",
    "ppoll",
    "pselect6",
    "futex",
    "nanosleep",
    "clock_nanosleep",
    "sched_yield",
    // Memory: linear memories, code, the pooling allocator, memory images.
    "mmap",
    "munmap",
    "mprotect",
    "madvise",
    "mremap",
    "brk",
    "memfd_create",
    "membarrier",
    // Signals: wasmtime's trap handlers, tokio's signal streams.
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "sigaltstack",
    "restart_syscall",
    // Threads (created by `clone` below) and their bookkeeping.
    "set_robust_list",
    "rseq",
    "set_tid_address",
    "sched_getaffinity",
    "getcpu",
    "exit",
    "exit_group",
    // Sockets the guest's network policy allows (created by `socket` below).
    "bind",
    "listen",
    "accept",
    "accept4",
    "connect",
    "getsockname",
    "getpeername",
    "setsockopt",
    "getsockopt",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "sendmmsg",
    "recvmmsg",
    "shutdown",
    // Time, randomness and identity.
    "clock_gettime",
    "clock_getres",
    "gettimeofday",
    "getrandom",
    "getpid",
    "gettid",
    "getppid",
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "getresuid",
    "getresgid",
    "getgroups",
    "uname",
    "getrusage",
    "sysinfo",
    "getcwd",
];

/// The legacy names of [`BASELINE`]'s calls that glibc still makes on x86_64.
#[cfg(target_arch = "x86_64")]
pub const BASELINE_LEGACY: &[&str] = &[
    "open",
    "stat",
    "lstat",
    "access",
    "readlink",
    "poll",
    "epoll_wait",
    "dup2",
    "pipe",
    "time",
    "getrlimit",
];

/// The legacy names of [`BASELINE`]'s calls: none on this architecture.
#[cfg(not(target_arch = "x86_64"))]
pub const BASELINE_LEGACY: &[&str] = &[];

/// The system calls the baseline allows only with some arguments, and which.
pub const BASELINE_CONDITIONAL: &[(&str, &str)] = &[
    (
        "clone",
        "a new thread (CLONE_THREAD set): no new process, no namespace",
    ),
    (
        "socket",
        "AF_INET or AF_INET6, SOCK_STREAM or SOCK_DGRAM: no raw, netlink or Unix sockets",
    ),
    (
        "socketpair",
        "AF_UNIX: a pair that reaches nothing (tokio's signal streams)",
    ),
    (
        "ioctl",
        "FIONREAD, FIONBIO, FIOCLEX, FIONCLEX, TCGETS, TCGETS2, TIOCGWINSZ",
    ),
    (
        "prctl",
        "PR_SET_NAME, PR_GET_NAME, PR_SET_VMA, PR_SET_NO_NEW_PRIVS (which only narrows)",
    ),
    (
        "seccomp",
        "SECCOMP_SET_MODE_FILTER: a further filter, which only narrows",
    ),
    ("kill", "to this process only"),
    ("tgkill", "to this process's threads only"),
    (
        "prlimit64",
        "reading this process's limits, not setting them",
    ),
];

/// What [`Hardening::apply`] could enforce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The seccomp filters installed: the baseline's two, and the spec profile's.
    pub filters: usize,
    /// Landlock: `full`, `partial` (an older ABI: some rights unenforced), or
    /// `not enforced` (no Landlock in this kernel).
    pub landlock: &'static str,
}

/// The seccomp and Landlock layers of one process that runs guests.
#[derive(Debug, Default)]
pub struct Hardening {
    /// The spec's own profile, compiled.
    profile: Vec<BpfProgram>,
    /// System call names the profile names that this architecture does not have.
    unknown: Vec<String>,
    /// Directories (opened `O_PATH` while the process could reach them) beneath which
    /// files may be read (`false`) or also written (`true`).
    paths: Vec<(landlock::PathFd, bool)>,
}

impl Hardening {
    /// The baseline, with the spec's `linux.seccomp` profile over it when it has one. A
    /// profile that cannot be applied as written is an error naming the field.
    pub fn from_spec(spec: &Spec) -> Result<Self> {
        let mut hardening = Self::default();
        if let Some(profile) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
            let (filters, unknown) = profile_filters(profile)?;
            hardening.profile = filters;
            hardening.unknown = unknown;
        }
        Ok(hardening)
    }

    /// Lets the process read files beneath `dir`, and write them when `writable`. `dir` is
    /// opened now: the process may lose the right to look it up before [`Hardening::apply`].
    pub fn allow(&mut self, dir: &Path, writable: bool) -> Result<()> {
        let fd = landlock::PathFd::new(dir)
            .map_err(|e| Error::Confine(format!("landlock: {}: {e}", dir.display())))?;
        self.paths.push((fd, writable));
        Ok(())
    }

    /// The profile's system call names that this architecture does not have (skipped, as
    /// runc skips them).
    pub fn unknown_syscalls(&self) -> &[String] {
        &self.unknown
    }

    /// Restricts the calling thread, and every thread and process it creates afterwards:
    /// Landlock first, then the baseline, then the spec's profile. Needs `no_new_privs`
    /// (or `CAP_SYS_ADMIN`), and a process with one thread, or the other threads stay free.
    pub fn apply(&self) -> Result<Status> {
        let landlock = self.restrict_paths()?;
        let baseline = baseline_filters(std::process::id())?;
        for filter in baseline.iter().chain(&self.profile) {
            seccompiler::apply_filter(filter)
                .map_err(|e| Error::Confine(format!("installing a seccomp filter: {e}")))?;
        }
        Ok(Status {
            filters: baseline.len() + self.profile.len(),
            landlock,
        })
    }

    fn restrict_paths(&self) -> Result<&'static str> {
        let abi = ABI::V6;
        let err = |e: landlock::RulesetError| Error::Confine(format!("landlock: {e}"));
        let mut ruleset = Ruleset::default()
            .set_compatibility(CompatLevel::BestEffort)
            .handle_access(AccessFs::from_all(abi))
            .map_err(err)?
            .scope(Scope::from_all(abi))
            .map_err(err)?
            .create()
            .map_err(err)?;
        for (fd, writable) in &self.paths {
            let access = match writable {
                true => AccessFs::from_all(abi),
                false => AccessFs::from_read(abi),
            };
            ruleset = ruleset
                .add_rule(landlock::PathBeneath::new(fd, access))
                .map_err(err)?;
        }
        let status = ruleset.restrict_self().map_err(err)?;
        Ok(match status.ruleset {
            RulesetStatus::FullyEnforced => "full",
            RulesetStatus::PartiallyEnforced => "partial",
            RulesetStatus::NotEnforced => "not enforced",
        })
    }
}

fn arch() -> Result<TargetArch> {
    TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| Error::Confine(format!("seccomp on {}: {e}", std::env::consts::ARCH)))
}

fn number(name: &str) -> Option<i64> {
    Sysno::from_str(name).ok().map(|s| i64::from(s.id()))
}

/// A condition on the low 32 bits of argument `arg` (an `int`), or on all 64 (`wide`).
fn condition_of(arg: u8, wide: bool, op: SeccompCmpOp, value: u64) -> SeccompCondition {
    let len = match wide {
        true => SeccompCmpArgLen::Qword,
        false => SeccompCmpArgLen::Dword,
    };
    // Valid by construction: arguments 0 to 5, a 32-bit value for a 32-bit comparison.
    SeccompCondition::new(arg, len, op, value).expect("argument index below 6")
}

fn condition(arg: u8, op: SeccompCmpOp, value: u64) -> SeccompCondition {
    condition_of(arg, false, op, value)
}

fn rule(conditions: Vec<SeccompCondition>) -> SeccompRule {
    SeccompRule::new(conditions).expect("a rule with conditions")
}

/// One rule per value: argument `arg` equals one of `values`.
fn arg_in(arg: u8, values: &[u64]) -> Vec<SeccompRule> {
    values
        .iter()
        .map(|v| rule(vec![condition(arg, SeccompCmpOp::Eq, *v)]))
        .collect()
}

fn as_u64(v: libc::c_int) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// The baseline's filters for the process `pid`: the allow list, and `clone3` → `ENOSYS`
/// (installed after it, so that its answer wins over the allow list's `EPERM`).
fn baseline_filters(pid: u32) -> Result<Vec<BpfProgram>> {
    let arch = arch()?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for name in BASELINE.iter().chain(BASELINE_LEGACY) {
        if let Some(nr) = number(name) {
            rules.insert(nr, Vec::new());
        }
    }
    let pid = u64::from(pid);
    let thread = as_u64(libc::CLONE_THREAD);
    let socket_type = 0xf; // SOCK_TYPE_MASK: the type without SOCK_NONBLOCK | SOCK_CLOEXEC
    let mut sockets = Vec::new();
    for family in [libc::AF_INET, libc::AF_INET6] {
        for kind in [libc::SOCK_STREAM, libc::SOCK_DGRAM] {
            sockets.push(rule(vec![
                condition(0, SeccompCmpOp::Eq, as_u64(family)),
                condition(1, SeccompCmpOp::MaskedEq(socket_type), as_u64(kind)),
            ]));
        }
    }
    #[allow(
        clippy::useless_conversion,
        reason = "the request's type differs between C libraries"
    )]
    let ioctls: Vec<u64> = [
        libc::FIONREAD,
        libc::FIONBIO,
        libc::FIOCLEX,
        libc::FIONCLEX,
        libc::TCGETS,
        libc::TCGETS2,
        libc::TIOCGWINSZ,
    ]
    .into_iter()
    .map(u64::from)
    .collect();
    let conditional: [(&str, Vec<SeccompRule>); 9] = [
        (
            "clone",
            vec![rule(vec![condition_of(
                0,
                true,
                SeccompCmpOp::MaskedEq(thread),
                thread,
            )])],
        ),
        ("socket", sockets),
        ("socketpair", arg_in(0, &[as_u64(libc::AF_UNIX)])),
        ("ioctl", arg_in(1, &ioctls)),
        (
            "prctl",
            arg_in(
                0,
                &[
                    as_u64(libc::PR_SET_NAME),
                    as_u64(libc::PR_GET_NAME),
                    0x5356_4d41, // PR_SET_VMA
                    as_u64(libc::PR_SET_NO_NEW_PRIVS),
                ],
            ),
        ),
        ("seccomp", arg_in(0, &[1])), // SECCOMP_SET_MODE_FILTER
        ("kill", arg_in(0, &[pid])),
        ("tgkill", arg_in(0, &[pid])),
        (
            "prlimit64",
            vec![rule(vec![
                condition(0, SeccompCmpOp::Eq, 0),
                condition_of(2, true, SeccompCmpOp::Eq, 0),
            ])],
        ),
    ];
    debug_assert!(conditional
        .iter()
        .map(|(n, _)| *n)
        .eq(BASELINE_CONDITIONAL.iter().map(|(n, _)| *n)));
    for (name, conditions) in conditional {
        if let Some(nr) = number(name) {
            rules.insert(nr, conditions);
        }
    }
    let allow = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM.unsigned_abs()),
        SeccompAction::Allow,
        arch,
    );
    let mut filters = vec![compile(allow)?];
    if let Some(clone3) = number("clone3") {
        let enosys = SeccompFilter::new(
            BTreeMap::from([(clone3, Vec::new())]),
            SeccompAction::Allow,
            SeccompAction::Errno(libc::ENOSYS.unsigned_abs()),
            arch,
        );
        filters.push(compile(enosys)?);
    }
    Ok(filters)
}

fn compile(
    filter: std::result::Result<SeccompFilter, seccompiler::BackendError>,
) -> Result<BpfProgram> {
    filter
        .and_then(TryInto::try_into)
        .map_err(|e| Error::Confine(format!("building a seccomp filter: {e}")))
}

/// The action of a profile entry, as seccompiler names it; `field` names it in errors.
fn action(a: LinuxSeccompAction, errno: Option<u32>, field: &str) -> Result<SeccompAction> {
    let errno = errno.unwrap_or(libc::EPERM.unsigned_abs());
    Ok(match a {
        LinuxSeccompAction::ScmpActAllow => SeccompAction::Allow,
        LinuxSeccompAction::ScmpActErrno => SeccompAction::Errno(errno),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            SeccompAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => SeccompAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => SeccompAction::Trap,
        LinuxSeccompAction::ScmpActLog => SeccompAction::Log,
        LinuxSeccompAction::ScmpActTrace => SeccompAction::Trace(errno),
        LinuxSeccompAction::ScmpActNotify => {
            return Err(Error::Spec(format!(
                "{field}: SCMP_ACT_NOTIFY needs a seccomp agent, which wasmpod does not run"
            )))
        }
    })
}

/// The rules of one profile entry: all its conditions in one rule, or, when two name the
/// same argument, one rule each (either may match), as runc reads them.
fn entry_rules(
    args: &[oci_spec::runtime::LinuxSeccompArg],
    field: &str,
) -> Result<Vec<SeccompRule>> {
    let mut conditions = Vec::new();
    for (i, arg) in args.iter().enumerate() {
        let index = u8::try_from(arg.index())
            .ok()
            .filter(|i| *i < 6)
            .ok_or_else(|| {
                Error::Spec(format!(
                    "{field}.args[{i}].index: {} is not 0 to 5",
                    arg.index()
                ))
            })?;
        let op = match arg.op() {
            LinuxSeccompOperator::ScmpCmpNe => SeccompCmpOp::Ne,
            LinuxSeccompOperator::ScmpCmpLt => SeccompCmpOp::Lt,
            LinuxSeccompOperator::ScmpCmpLe => SeccompCmpOp::Le,
            LinuxSeccompOperator::ScmpCmpEq => SeccompCmpOp::Eq,
            LinuxSeccompOperator::ScmpCmpGe => SeccompCmpOp::Ge,
            LinuxSeccompOperator::ScmpCmpGt => SeccompCmpOp::Gt,
            LinuxSeccompOperator::ScmpCmpMaskedEq => SeccompCmpOp::MaskedEq(arg.value()),
        };
        let value = match arg.op() {
            LinuxSeccompOperator::ScmpCmpMaskedEq => arg.value_two().unwrap_or(0),
            _ => arg.value(),
        };
        conditions.push((index, condition_of(index, true, op, value)));
    }
    if conditions.is_empty() {
        return Ok(Vec::new());
    }
    let mut indexes: Vec<u8> = conditions.iter().map(|(i, _)| *i).collect();
    indexes.sort_unstable();
    let repeated = indexes.windows(2).any(|w| w[0] == w[1]);
    Ok(match repeated {
        true => conditions.into_iter().map(|(_, c)| rule(vec![c])).collect(),
        false => vec![rule(conditions.into_iter().map(|(_, c)| c).collect())],
    })
}

/// The spec's profile as filters the kernel stacks: one per action other than the default
/// (its calls get the action, everything else is allowed), and one for the default (every
/// call the profile names is allowed, everything else gets the default). The kernel takes
/// the strictest answer of all, which is the profile's answer for each call.
fn profile_filters(profile: &LinuxSeccomp) -> Result<(Vec<BpfProgram>, Vec<String>)> {
    let arch = arch()?;
    let default = action(
        profile.default_action(),
        profile.default_errno_ret(),
        "linux.seccomp.defaultAction",
    )?;
    let mut by_action: Vec<(SeccompAction, BTreeMap<i64, Vec<SeccompRule>>)> = Vec::new();
    let mut named: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let mut unknown = Vec::new();
    for (i, entry) in profile.syscalls().iter().flatten().enumerate() {
        let field = format!("linux.seccomp.syscalls[{i}]");
        let act = action(entry.action(), entry.errno_ret(), &field)?;
        let rules = entry_rules(entry.args().as_deref().unwrap_or_default(), &field)?;
        if act == default {
            continue;
        }
        let group = match by_action.iter().position(|(a, _)| *a == act) {
            Some(g) => g,
            None => {
                by_action.push((act.clone(), BTreeMap::new()));
                by_action.len() - 1
            }
        };
        for name in entry.names() {
            let Some(nr) = number(name) else {
                unknown.push(name.clone());
                continue;
            };
            for map in [&mut by_action[group].1, &mut named] {
                merge(map, nr, rules.clone());
            }
        }
    }
    let mut filters = Vec::new();
    for (act, rules) in by_action {
        if act != SeccompAction::Allow && !rules.is_empty() {
            filters.push(compile(SeccompFilter::new(
                rules,
                SeccompAction::Allow,
                act,
                arch,
            ))?);
        }
    }
    if default != SeccompAction::Allow {
        filters.push(compile(SeccompFilter::new(
            named,
            default,
            SeccompAction::Allow,
            arch,
        ))?);
    }
    unknown.sort();
    unknown.dedup();
    Ok((filters, unknown))
}

/// Adds `rules` for call `nr`: an entry without conditions matches whatever else says.
fn merge(map: &mut BTreeMap<i64, Vec<SeccompRule>>, nr: i64, rules: Vec<SeccompRule>) {
    match map.get_mut(&nr) {
        // Already unconditional.
        Some(existing) if existing.is_empty() => {}
        Some(_) if rules.is_empty() => {
            map.insert(nr, Vec::new());
        }
        Some(existing) => existing.extend(rules),
        None => {
            map.insert(nr, rules);
        }
    }
}

#[cfg(test)]
#[allow(
    unsafe_code,
    reason = "the tests make the refused system calls themselves"
)]
mod tests;
