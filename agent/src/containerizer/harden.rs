//! What a task's process may do once it runs: its capabilities, no new
//! privileges, and a seccomp filter modelled on Docker's default profile
//! (moby's `default.json`). Applied by the task process itself between
//! `setuid` and `execve` (see `init::TaskExec::run`), so everything is
//! built beforehand and applying it only makes system calls.
//!
//! - Capabilities: a task running as any user but root keeps none at all
//!   (bounding, ambient, inheritable, permitted and effective sets empty).
//!   A task running as root keeps runc's and crun's default set
//!   ([`ROOT_CAPS`]) and nothing else.
//! - `no_new_privs`: a setuid binary or file capabilities never raise a
//!   task's privileges.
//! - Seccomp: an allowlist; anything else fails with `EPERM`. Left out, as
//!   in Docker's profile, are the calls that a container without
//!   `CAP_SYS_ADMIN` and friends cannot use anyway or that reach kernel
//!   surfaces a task has no business with: `mount`, `umount2`,
//!   `pivot_root`, `unshare`, `setns`, module loading, `kexec_*`, `bpf`,
//!   `perf_event_open`, the keyring, `userfaultfd`, `open_by_handle_at`,
//!   clock setting, `reboot`, `swapon`, `acct`, `syslog`, `iopl`, and
//!   io_uring (moby dropped it from its default too). `clone` is allowed
//!   only without namespace flags; `clone3`, whose flags a filter cannot
//!   read, fails with `ENOSYS` so that the C library falls back to
//!   `clone`. `socket` refuses `AF_VSOCK`; `personality` takes only the
//!   values Docker allows.
//!
//! The capability calls are made raw (`prctl`, `capset`): the task process
//! shares the init's memory until its `execve` and must not allocate,
//! which rules out the `caps` crate's set-based API. So are Landlock's
//! (make a ruleset, restrict, close): the `landlock` crate's builder
//! allocates.

#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use nix::errno::Errno;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};
use serde::{Deserialize, Serialize};

/// `CAP_KILL`, `CAP_NET_BIND_SERVICE` and `CAP_AUDIT_WRITE`: what runc and
/// crun leave a root process by default.
pub const ROOT_CAPS: u64 = (1 << CAP_KILL) | (1 << CAP_NET_BIND_SERVICE) | (1 << CAP_AUDIT_WRITE);
// Numbers from linux/capability.h (the libc crate does not define them).
const CAP_KILL: u32 = 5;
const CAP_NET_BIND_SERVICE: u32 = 10;
const CAP_AUDIT_WRITE: u32 = 29;

/// How a task is confined; part of the init's spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confinement {
    /// Capabilities a root task keeps (others keep none).
    pub root_caps: u64,
    /// The default seccomp filter; false only where the ACLs allowed a
    /// task to run unconfined.
    pub seccomp: bool,
}

impl Default for Confinement {
    fn default() -> Self {
        Confinement {
            root_caps: ROOT_CAPS,
            seccomp: true,
        }
    }
}

/// Why a confinement could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HardenError {
    #[error("seccomp is not supported on {0}")]
    Arch(&'static str),
    #[error("building the seccomp filter: {0}")]
    Filter(#[from] seccompiler::BackendError),
    #[error("compiling the seccomp filter: {0}")]
    Compile(#[from] seccompiler::Error),
    #[error("{0}")]
    Cached(String),
}

/// The default filters, compiled once per process: the launcher compiles
/// them before it forks any supervisor ([`warm`]), so no launch pays for it.
static DEFAULT_FILTERS: OnceLock<Result<Vec<BpfProgram>, String>> = OnceLock::new();
/// `/proc/sys/kernel/cap_last_cap`, read once.
static LAST_CAP: OnceLock<u32> = OnceLock::new();

/// Builds what every launch needs, ahead of the first.
pub fn warm() {
    let _ = cached_filters();
    let _ = last_cap();
}

fn cached_filters() -> Result<&'static [BpfProgram], HardenError> {
    match DEFAULT_FILTERS.get_or_init(|| default_filters().map_err(|e| e.to_string())) {
        Ok(f) => Ok(f),
        Err(e) => Err(HardenError::Cached(e.clone())),
    }
}

fn last_cap() -> u32 {
    *LAST_CAP.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(40)
    })
}

/// A confinement ready to apply in the task process.
#[derive(Debug)]
pub struct Prepared {
    /// Capabilities kept: the permitted, effective and bounding sets.
    /// `None`: left as they are (an agent that is not root has none to
    /// drop, and no right to change the bounding set).
    keep: Option<u64>,
    /// Highest capability number the kernel knows.
    last_cap: u32,
    /// The allowlist, then the filter that makes `clone3` `ENOSYS` (filters
    /// run newest first, and the first action of the highest precedence
    /// wins, so the second decides `clone3`).
    filters: &'static [BpfProgram],
    /// Scope the task's abstract Unix sockets with Landlock: false where
    /// the kernel has no Landlock or no scopes (before 6.12).
    landlock: bool,
}

impl Prepared {
    /// Builds the confinement of a task that runs as `uid`. Nothing is
    /// changed for an agent that is not root: it has no capability to
    /// drop, and its tasks run as itself (the filter still applies).
    pub fn new(c: &Confinement, uid: u32, agent_is_root: bool) -> Result<Prepared, HardenError> {
        let keep = if uid == 0 { c.root_caps } else { 0 };
        let filters = if c.seccomp { cached_filters()? } else { &[] };
        Ok(Prepared {
            keep: agent_is_root.then_some(keep),
            last_cap: last_cap(),
            filters,
            landlock: abstract_unix_scope_supported(),
        })
    }

    /// Before `setuid` (dropping from the bounding set needs
    /// `CAP_SETPCAP`): empties the bounding set but for the kept ones.
    pub fn before_user(&self) -> Result<(), Errno> {
        let Some(keep) = self.keep else { return Ok(()) };
        for cap in 0..=self.last_cap {
            if keep & (1 << cap) == 0 {
                // SAFETY: prctl with integer arguments only.
                let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
                if rc != 0 {
                    return Err(Errno::last());
                }
            }
        }
        Ok(())
    }

    /// After `setuid`, the last steps before `execve`: ambient and
    /// inheritable sets cleared, permitted and effective cut to the kept
    /// set, no new privileges, then the filters.
    pub fn after_user(&self) -> Result<(), Errno> {
        if let Some(keep) = self.keep {
            // SAFETY: prctl with integer arguments only.
            let rc = unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                    0,
                    0,
                    0,
                )
            };
            if rc != 0 {
                return Err(Errno::last());
            }
            capset(keep)?;
        }
        nix::sys::prctl::set_no_new_privs()?;
        if self.landlock {
            scope_abstract_unix()?;
        }
        for filter in self.filters {
            if let Err(e) = seccompiler::apply_filter(filter) {
                let errno = match e {
                    seccompiler::Error::Seccomp(io) | seccompiler::Error::Prctl(io) => {
                        io.raw_os_error().map_or(Errno::EINVAL, Errno::from_raw)
                    }
                    _ => Errno::EINVAL,
                };
                return Err(errno);
            }
        }
        Ok(())
    }
}

/// `struct landlock_ruleset_attr` (ABI 6): no access right handled, only
/// the scope of abstract Unix sockets, so restricting a process with it
/// leaves its files and ports alone.
#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

const SCOPE_ABSTRACT_UNIX: RulesetAttr = RulesetAttr {
    handled_access_fs: 0,
    handled_access_net: 0,
    scoped: 1, // LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET
};

/// `landlock_create_ruleset` of [`SCOPE_ABSTRACT_UNIX`]: a descriptor
/// (close-on-exec) or the error.
fn create_ruleset() -> Result<i32, Errno> {
    // SAFETY: a valid attribute of the size passed, read only; the kernel
    // returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &SCOPE_ABSTRACT_UNIX as *const RulesetAttr,
            std::mem::size_of::<RulesetAttr>(),
            0,
        )
    };
    Errno::result(fd).map(|fd| fd as i32)
}

/// Whether this kernel can scope abstract Unix sockets (no Landlock, or an
/// ABI before 6: `E2BIG`/`EINVAL` for the larger attribute), found once,
/// and logged once when it cannot.
fn abstract_unix_scope_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| match create_ruleset() {
        Ok(fd) => {
            // SAFETY: the descriptor was just made and is closed once.
            unsafe { libc::close(fd) };
            true
        }
        Err(e) => {
            tracing::warn!(
                "this kernel cannot keep tasks from the host's abstract Unix sockets (Landlock scopes need Linux 6.12): {e}"
            );
            false
        }
    })
}

/// Restricts this process (and what it starts) to the abstract Unix
/// sockets of its own Landlock domain. Three system calls, no allocation;
/// `no_new_privs` must be set.
fn scope_abstract_unix() -> Result<(), Errno> {
    let fd = create_ruleset()?;
    // SAFETY: integer arguments; `fd` is the ruleset just made, closed once.
    let rc = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, fd, 0) };
    let restricted = Errno::result(rc);
    // SAFETY: as above.
    unsafe { libc::close(fd) };
    restricted.map(drop)
}

/// Sets the effective and permitted sets to `caps` and the inheritable set
/// to nothing (the raw call: the task process must not allocate).
fn capset(caps: u64) -> Result<(), Errno> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let half = |shift: u32| Data {
        effective: (caps >> shift) as u32,
        permitted: (caps >> shift) as u32,
        inheritable: 0,
    };
    let data = [half(0), half(32)];
    // SAFETY: capset reads a version-3 header and two data structs, which
    // both live on this stack for the call.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
    if rc != 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// `AF_VSOCK`: host-guest sockets, refused as in Docker's profile.
const AF_VSOCK: u64 = 40;
/// Namespace flags `clone` may not carry (Docker's mask 0x7E020000).
const CLONE_NAMESPACES: u64 = 0x7E02_0000;
/// The `personality` values Docker's profile allows (Linux, with
/// `UNAME26`, `PER_LINUX32`, both, and the query).
const PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// The system calls allowed without conditions (Docker's default profile,
/// less what it grants only with capabilities a task does not get).
fn allowed() -> Vec<i64> {
    macro_rules! sys {
        ($($name:ident),* $(,)?) => { vec![$(libc::$name),*] };
    }
    let mut calls = sys![
        SYS_accept,
        SYS_accept4,
        SYS_bind,
        SYS_brk,
        SYS_capget,
        SYS_capset,
        SYS_chdir,
        SYS_chmod,
        SYS_chown,
        SYS_clock_getres,
        SYS_clock_gettime,
        SYS_clock_nanosleep,
        SYS_close,
        SYS_close_range,
        SYS_connect,
        SYS_copy_file_range,
        SYS_dup,
        SYS_dup3,
        SYS_epoll_create1,
        SYS_epoll_ctl,
        SYS_epoll_pwait,
        SYS_epoll_pwait2,
        SYS_eventfd2,
        SYS_execve,
        SYS_execveat,
        SYS_exit,
        SYS_exit_group,
        SYS_faccessat,
        SYS_faccessat2,
        SYS_fadvise64,
        SYS_fallocate,
        SYS_fanotify_mark,
        SYS_fchdir,
        SYS_fchmod,
        SYS_fchmodat,
        SYS_fchown,
        SYS_fchownat,
        SYS_fcntl,
        SYS_fdatasync,
        SYS_fgetxattr,
        SYS_flistxattr,
        SYS_flock,
        SYS_fremovexattr,
        SYS_fsetxattr,
        SYS_fstat,
        SYS_fstatfs,
        SYS_fsync,
        SYS_ftruncate,
        SYS_futex,
        SYS_futex_waitv,
        SYS_getcpu,
        SYS_getcwd,
        SYS_getdents64,
        SYS_getegid,
        SYS_geteuid,
        SYS_getgid,
        SYS_getgroups,
        SYS_getitimer,
        SYS_getpeername,
        SYS_getpgid,
        SYS_getpid,
        SYS_getppid,
        SYS_getpriority,
        SYS_getrandom,
        SYS_getresgid,
        SYS_getresuid,
        SYS_getrlimit,
        SYS_get_robust_list,
        SYS_getrusage,
        SYS_getsid,
        SYS_getsockname,
        SYS_getsockopt,
        SYS_gettid,
        SYS_gettimeofday,
        SYS_getuid,
        SYS_getxattr,
        SYS_inotify_add_watch,
        SYS_inotify_init1,
        SYS_inotify_rm_watch,
        SYS_io_cancel,
        SYS_ioctl,
        SYS_io_destroy,
        SYS_io_getevents,
        SYS_ioprio_get,
        SYS_ioprio_set,
        SYS_io_setup,
        SYS_io_submit,
        SYS_kcmp,
        SYS_kill,
        SYS_landlock_add_rule,
        SYS_landlock_create_ruleset,
        SYS_landlock_restrict_self,
        SYS_lchown,
        SYS_lgetxattr,
        SYS_linkat,
        SYS_listen,
        SYS_listxattr,
        SYS_llistxattr,
        SYS_lremovexattr,
        SYS_lseek,
        SYS_lsetxattr,
        SYS_madvise,
        SYS_membarrier,
        SYS_memfd_create,
        SYS_mincore,
        SYS_mkdirat,
        SYS_mknodat,
        SYS_mlock,
        SYS_mlock2,
        SYS_mlockall,
        SYS_mmap,
        SYS_mprotect,
        SYS_mq_getsetattr,
        SYS_mq_notify,
        SYS_mq_open,
        SYS_mq_timedreceive,
        SYS_mq_timedsend,
        SYS_mq_unlink,
        SYS_mremap,
        SYS_msgctl,
        SYS_msgget,
        SYS_msgrcv,
        SYS_msgsnd,
        SYS_msync,
        SYS_munlock,
        SYS_munlockall,
        SYS_munmap,
        SYS_name_to_handle_at,
        SYS_nanosleep,
        SYS_newfstatat,
        SYS_openat,
        SYS_openat2,
        SYS_pidfd_getfd,
        SYS_pidfd_open,
        SYS_pidfd_send_signal,
        SYS_pipe2,
        SYS_pkey_alloc,
        SYS_pkey_free,
        SYS_pkey_mprotect,
        SYS_ppoll,
        SYS_prctl,
        SYS_pread64,
        SYS_preadv,
        SYS_preadv2,
        SYS_prlimit64,
        SYS_process_madvise,
        SYS_process_mrelease,
        SYS_process_vm_readv,
        SYS_process_vm_writev,
        SYS_pselect6,
        SYS_ptrace,
        SYS_pwrite64,
        SYS_pwritev,
        SYS_pwritev2,
        SYS_read,
        SYS_readahead,
        SYS_readlinkat,
        SYS_readv,
        SYS_recvfrom,
        SYS_recvmmsg,
        SYS_recvmsg,
        SYS_remap_file_pages,
        SYS_removexattr,
        SYS_renameat,
        SYS_renameat2,
        SYS_restart_syscall,
        SYS_rseq,
        SYS_rt_sigaction,
        SYS_rt_sigpending,
        SYS_rt_sigprocmask,
        SYS_rt_sigqueueinfo,
        SYS_rt_sigreturn,
        SYS_rt_sigsuspend,
        SYS_rt_sigtimedwait,
        SYS_rt_tgsigqueueinfo,
        SYS_sched_getaffinity,
        SYS_sched_getattr,
        SYS_sched_getparam,
        SYS_sched_get_priority_max,
        SYS_sched_get_priority_min,
        SYS_sched_getscheduler,
        SYS_sched_rr_get_interval,
        SYS_sched_setaffinity,
        SYS_sched_setattr,
        SYS_sched_setparam,
        SYS_sched_setscheduler,
        SYS_sched_yield,
        SYS_seccomp,
        SYS_semctl,
        SYS_semget,
        SYS_semop,
        SYS_semtimedop,
        SYS_sendfile,
        SYS_sendmmsg,
        SYS_sendmsg,
        SYS_sendto,
        SYS_setfsgid,
        SYS_setfsuid,
        SYS_setgid,
        SYS_setgroups,
        SYS_setitimer,
        SYS_setpgid,
        SYS_setpriority,
        SYS_setregid,
        SYS_setresgid,
        SYS_setresuid,
        SYS_setreuid,
        SYS_setrlimit,
        SYS_set_robust_list,
        SYS_setsid,
        SYS_setsockopt,
        SYS_set_tid_address,
        SYS_setuid,
        SYS_setxattr,
        SYS_shmat,
        SYS_shmctl,
        SYS_shmdt,
        SYS_shmget,
        SYS_shutdown,
        SYS_sigaltstack,
        SYS_signalfd4,
        SYS_socketpair,
        SYS_splice,
        SYS_statfs,
        SYS_statx,
        SYS_symlinkat,
        SYS_sync,
        SYS_sync_file_range,
        SYS_syncfs,
        SYS_sysinfo,
        SYS_tee,
        SYS_tgkill,
        SYS_timer_create,
        SYS_timer_delete,
        SYS_timer_getoverrun,
        SYS_timer_gettime,
        SYS_timer_settime,
        SYS_timerfd_create,
        SYS_timerfd_gettime,
        SYS_timerfd_settime,
        SYS_times,
        SYS_tkill,
        SYS_truncate,
        SYS_umask,
        SYS_uname,
        SYS_unlinkat,
        SYS_utimensat,
        SYS_vmsplice,
        SYS_wait4,
        SYS_waitid,
        SYS_write,
        SYS_writev,
    ];
    // The older calls that newer architectures have only in their `*at`
    // forms, and x86's own.
    #[cfg(target_arch = "x86_64")]
    calls.extend(sys![
        SYS_access,
        SYS_alarm,
        SYS_arch_prctl,
        SYS_creat,
        SYS_dup2,
        SYS_epoll_create,
        SYS_epoll_wait,
        SYS_eventfd,
        SYS_fork,
        SYS_futimesat,
        SYS_getdents,
        SYS_getpgrp,
        SYS_inotify_init,
        SYS_link,
        SYS_lstat,
        SYS_mkdir,
        SYS_mknod,
        SYS_modify_ldt,
        SYS_open,
        SYS_pause,
        SYS_pipe,
        SYS_poll,
        SYS_readlink,
        SYS_rename,
        SYS_rmdir,
        SYS_select,
        SYS_signalfd,
        SYS_stat,
        SYS_symlink,
        SYS_time,
        SYS_unlink,
        SYS_utime,
        SYS_utimes,
        SYS_vfork,
    ]);
    calls
}

fn arch() -> Result<TargetArch, HardenError> {
    std::env::consts::ARCH
        .try_into()
        .map_err(|_| HardenError::Arch(std::env::consts::ARCH))
}

/// The default profile as two programs (see [`Prepared::filters`]).
fn default_filters() -> Result<Vec<BpfProgram>, HardenError> {
    let arch = arch()?;
    let conditional = conditional_rules()?;
    let unconditional: Vec<i64> = allowed().into_iter().filter(|n| !conditional.contains_key(n)).collect();
    let rest = SeccompFilter::new(
        conditional,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        arch,
    )?;
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )?;
    Ok(vec![with_ranges(&unconditional, rest.try_into()?)?, clone3.try_into()?])
}

/// The calls allowed only with certain arguments: `clone` without
/// namespace flags, `socket` but `AF_VSOCK`, and Docker's personalities.
fn conditional_rules() -> Result<BTreeMap<i64, Vec<SeccompRule>>, HardenError> {
    let cond = |arg, len, op, value| SeccompCondition::new(arg, len, op, value);
    let personality = PERSONALITIES
        .iter()
        .map(|&p| {
            Ok(SeccompRule::new(vec![cond(
                0,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                p,
            )?])?)
        })
        .collect::<Result<Vec<_>, HardenError>>()?;
    Ok(BTreeMap::from([
        (
            libc::SYS_clone,
            vec![SeccompRule::new(vec![cond(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(CLONE_NAMESPACES),
                0,
            )?])?],
        ),
        (
            libc::SYS_socket,
            vec![SeccompRule::new(vec![cond(
                0,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Ne,
                AF_VSOCK,
            )?])?],
        ),
        (libc::SYS_personality, personality),
    ]))
}

/// `AUDIT_ARCH_*` of this architecture (linux/audit.h), as in the
/// `seccomp_data` a filter reads.
const fn audit_arch() -> u32 {
    const LE_64: u32 = 0x8000_0000 | 0x4000_0000;
    if cfg!(target_arch = "x86_64") {
        62 | LE_64
    } else if cfg!(target_arch = "aarch64") {
        183 | LE_64
    } else {
        243 | LE_64 // riscv64, the last architecture seccompiler knows
    }
}

/// `allowed`, unconditionally allowed calls, as ranges of numbers checked
/// in order ahead of `rest` (seccompiler's program for everything else).
///
/// Why not one seccompiler program for all: it tests each call number in
/// turn, five instructions per call, and the kernel, when it installs a
/// filter, runs it for every call number to find the ones it may allow
/// without running it again (the seccomp action cache). For an allowlist
/// of 300 calls that took about 0.5 ms of every launch. About 40 ranges
/// make the same decisions in a tenth of the instructions, and the cache
/// still sees every allowed call as always allowed (it follows loads of
/// the number and architecture, jumps and returns, all this prefix uses).
fn with_ranges(allowed: &[i64], rest: BpfProgram) -> Result<BpfProgram, HardenError> {
    const SECCOMP_DATA_NR: u32 = 0;
    const SECCOMP_DATA_ARCH: u32 = 4;
    let ld = |offset| insn(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, offset);
    let jump = |op, k, jt, jf| insn(libc::BPF_JMP | op | libc::BPF_K, jt, jf, k);
    let mut numbers: Vec<u32> = allowed
        .iter()
        .map(|&n| u32::try_from(n).map_err(|_| HardenError::Cached(format!("system call number {n}"))))
        .collect::<Result<_, _>>()?;
    numbers.sort_unstable();
    numbers.dedup();
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    for n in numbers {
        match ranges.last_mut() {
            Some((_, hi)) if *hi + 1 == n => *hi = n,
            _ => ranges.push((n, n)),
        }
    }
    // Each instruction's jump to `rest` (the first instruction after this
    // prefix) is a `ja`, whose offset has 32 bits; conditional jumps have 8.
    let len = 4 + 4 * ranges.len() + 1;
    let mut prog = Vec::with_capacity(len + rest.len());
    let to_rest = |at: usize| insn(libc::BPF_JMP | libc::BPF_JA, 0, 0, (len - at - 1) as u32);
    prog.push(ld(SECCOMP_DATA_ARCH));
    prog.push(jump(libc::BPF_JEQ, audit_arch(), 1, 0));
    prog.push(to_rest(2));
    prog.push(ld(SECCOMP_DATA_NR));
    for (lo, hi) in ranges {
        // Above this range: on to the next. In it: allowed. Below: not
        // one of these (the ranges ascend).
        prog.push(jump(libc::BPF_JGT, hi, 3, 0));
        prog.push(jump(libc::BPF_JGE, lo, 0, 1));
        prog.push(insn(libc::BPF_RET | libc::BPF_K, 0, 0, libc::SECCOMP_RET_ALLOW));
        prog.push(to_rest(prog.len()));
    }
    prog.push(to_rest(prog.len()));
    debug_assert_eq!(prog.len(), len);
    prog.extend(rest);
    Ok(prog)
}

fn insn(code: u32, jt: u8, jf: u8, k: u32) -> seccompiler::sock_filter {
    seccompiler::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_filters_compile_within_the_kernel_limit() {
        let filters = default_filters().expect("filters");
        assert_eq!(filters.len(), 2);
        // BPF_MAXINSNS is 4096 per program.
        assert!(filters[0].len() < 4096, "{} instructions", filters[0].len());
        let calls = allowed();
        let mut unique = calls.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), calls.len(), "a call listed twice");
        for denied in [
            libc::SYS_mount,
            libc::SYS_umount2,
            libc::SYS_pivot_root,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_init_module,
            libc::SYS_finit_module,
            libc::SYS_bpf,
            libc::SYS_keyctl,
            libc::SYS_io_uring_setup,
            libc::SYS_clone3,
        ] {
            assert!(!calls.contains(&denied), "{denied} is allowed");
        }
    }

    /// Runs a classic BPF seccomp program on one call (the instructions
    /// seccompiler and `with_ranges` emit), returning its action.
    fn run(prog: &[seccompiler::sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let word = |offset: u32| -> u32 {
            match offset {
                0 => nr,
                4 => arch,
                16..=63 => {
                    let arg = args[(offset as usize - 16) / 8];
                    if offset.is_multiple_of(8) {
                        arg as u32
                    } else {
                        (arg >> 32) as u32
                    }
                }
                _ => panic!("load of seccomp_data offset {offset}"),
            }
        };
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = &prog[pc];
            let code = u32::from(i.code);
            pc += 1;
            match code {
                c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => acc = word(i.k),
                c if c == libc::BPF_ALU | libc::BPF_AND | libc::BPF_K => acc &= i.k,
                c if c == libc::BPF_RET | libc::BPF_K => return i.k,
                c if c == libc::BPF_JMP | libc::BPF_JA => pc += i.k as usize,
                c if c & 0x07 == libc::BPF_JMP => {
                    let taken = match c & 0xf0 {
                        op if op == libc::BPF_JEQ => acc == i.k,
                        op if op == libc::BPF_JGT => acc > i.k,
                        op if op == libc::BPF_JGE => acc >= i.k,
                        op if op == libc::BPF_JSET => acc & i.k != 0,
                        op => panic!("jump op {op:#x}"),
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                c => panic!("instruction {c:#x}"),
            }
        }
    }

    /// The allowlist with its unconditional calls as ranges decides every
    /// call exactly as the plain seccompiler program of the same profile
    /// (one test of each call number in turn) did: every number, this
    /// architecture and another, the conditional calls with allowed and
    /// refused arguments.
    #[test]
    fn the_ranged_allowlist_decides_as_the_plain_one() {
        let arch = arch().expect("arch");
        let mut all = conditional_rules().expect("rules");
        for n in allowed() {
            all.entry(n).or_default();
        }
        let plain: BpfProgram = SeccompFilter::new(
            all,
            SeccompAction::Errno(libc::EPERM as u32),
            SeccompAction::Allow,
            arch,
        )
        .expect("filter")
        .try_into()
        .expect("compile");
        let ranged = &default_filters().expect("filters")[0];
        assert!(
            ranged.len() * 4 < plain.len(),
            "{} against {} instructions",
            ranged.len(),
            plain.len()
        );
        let i386 = 3 | 0x4000_0000;
        let arg_sets = [
            [0; 6],
            [AF_VSOCK, 0, 0, 0, 0, 0],
            [0x2_0000, 0, 0, 0, 0, 0],
            [0x1000_0000, 0, 0, 0, 0, 0],
            [0xffff_ffff, 1, 2, 3, 4, 5],
            [u64::MAX; 6],
        ];
        let mut allowed_calls = 0;
        for nr in (0..1024).chain([0x4000_0000, 0x4000_0001, u32::MAX]) {
            for audit in [audit_arch(), i386] {
                for args in arg_sets {
                    let (a, b) = (run(&plain, audit, nr, args), run(ranged, audit, nr, args));
                    assert_eq!(a, b, "call {nr} arch {audit:#x} args {args:x?}");
                    allowed_calls += usize::from(a == libc::SECCOMP_RET_ALLOW);
                }
            }
        }
        assert!(allowed_calls > 250 * arg_sets.len(), "{allowed_calls}");
    }

    #[test]
    fn root_keeps_runc_s_set_and_others_nothing() {
        let c = Confinement::default();
        assert_eq!(ROOT_CAPS, 0x2000_0420);
        assert_eq!(Prepared::new(&c, 0, true).expect("root").keep, Some(ROOT_CAPS));
        assert_eq!(Prepared::new(&c, 65534, true).expect("nobody").keep, Some(0));
        assert_eq!(Prepared::new(&c, 0, false).expect("unprivileged agent").keep, None);
        let unconfined = Confinement { seccomp: false, ..c };
        assert!(Prepared::new(&unconfined, 65534, true).expect("p").filters.is_empty());
    }
}
