//! Processes: the container's pid 1 (a reaper) and the process it runs.
//!
//! # Forking from a multi-threaded caller
//!
//! The caller may have threads, so after `fork(2)` only async-signal-safe work is allowed. All
//! the allocation happens before: `ChildPlan` holds the resolved executable, argv and envp as
//! NUL-terminated arrays, the cwd, the ids, and the fds. The code below `fork` calls libc
//! directly (no allocation, no locks, no `std` I/O) and reports a failure as a fixed-size
//! record `{stage, errno}` on a close-on-exec pipe, which the setup thread turns into a
//! [`SandboxError`] naming the call and the path.
//!
//! # pid 1
//!
//! The setup thread has `unshare(CLONE_NEWPID)`ed, so its first child is pid 1 of the new pid
//! namespace. pid 1: gets `SIGKILL` if the setup thread dies (`PR_SET_PDEATHSIG`; a pidfd of
//! the caller, checked right after, covers a death before that was armed), puts the
//! stdio fds in place and closes every other fd, mounts `/proc` (it must be a member of the
//! namespace to mount its procfs) and masks the dangerous parts of it as docker does, forks the
//! process, forwards `SIGINT`, `SIGTERM`, `SIGHUP`, `SIGQUIT`, `SIGUSR1` and `SIGUSR2` to it,
//! reaps every zombie, and when the process ends writes its raw wait status to a pipe and
//! exits with its code (128 + signal for a signal). Its exit makes the kernel kill whatever is
//! left in the namespace, so nothing outlives the run.
//!
//! # The process
//!
//! Signal dispositions back to default (the caller's ignored `SIGPIPE` must not leak), a new
//! session with the pty as controlling terminal in [`Stdio::Tty`](crate::Stdio::Tty) mode,
//! `chdir`, a fresh session keyring (as runc gives each container: the caller's session
//! keyring stays out of reach), capability bounding set reduced to docker's default set (no
//! `CAP_SYS_ADMIN`, so `mount` fails inside), the seccomp filter ([`seccomp`](crate::seccomp):
//! docker's default profile for that set), `setgroups`, `setgid`, `setuid`, `execve`.
//!
//! The filter goes in while the process still has every capability in its effective set, so
//! the kernel takes it without `no_new_privs`: setuid programs (`su`, `ping`) keep working, as
//! under docker. Everything after it (`setgroups`, `setresgid`, `setresuid`, `execve`, and
//! `write`/`_exit` on failure) is allowed by the profile.
//!
//! In insecure mode ([`RunSpec::insecure`](crate::RunSpec::insecure)) pid 1 masks nothing of
//! `/proc`, and the process keeps its bounding set, installs no filter, and keeps its
//! capabilities across `setresuid` (`PR_SET_KEEPCAPS`, then `capset` and ambient raises), as
//! runc does for BuildKit's insecure spec, whose ambient set is every capability.

use std::ffi::CString;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};

use crate::SandboxError;
use crate::seccomp;

/// Docker's default capability set; every other capability leaves the bounding set.
pub(crate) const DEFAULT_CAPS: &[u32] = &[
    0,  // CAP_CHOWN
    1,  // CAP_DAC_OVERRIDE
    3,  // CAP_FOWNER
    4,  // CAP_FSETID
    5,  // CAP_KILL
    6,  // CAP_SETGID
    7,  // CAP_SETUID
    8,  // CAP_SETPCAP
    10, // CAP_NET_BIND_SERVICE
    13, // CAP_NET_RAW
    18, // CAP_SYS_CHROOT
    27, // CAP_MKNOD
    29, // CAP_AUDIT_WRITE
    31, // CAP_SETFCAP
];

/// How the process relates to the caller's terminal session. It never stays in the caller's:
/// a process whose controlling terminal is the caller's could type into the caller's shell
/// with `TIOCSTI`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Session {
    /// pid 1 starts a new session without a terminal ([`Stdio::Piped`](crate::Stdio) and
    /// [`Stdio::Inherit`](crate::Stdio)).
    Detach,
    /// pid 1 starts a new session; the process another one, with fd 0 (the pty slave) as its
    /// controlling terminal.
    Tty,
}

/// Everything the forked processes need, prepared before `fork`.
pub(crate) struct ChildPlan {
    exe: CString,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    cwd: CString,
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
    /// Sources of fds 0, 1, 2.
    stdio: [RawFd; 3],
    session: Session,
    /// Bit n set: keep capability n.
    keep_caps: u64,
    last_cap: u32,
    /// Compiled for `keep_caps`; installed right before the ids change. None in insecure mode.
    filter: Option<seccomp::Program>,
    /// Mask and make read-only parts of `/proc` and `/sys`, as docker does (not in insecure
    /// mode).
    mask: bool,
    /// Insecure mode: the capabilities (kiln's own permitted set) the process keeps in its
    /// effective, permitted, inheritable and ambient sets, whatever its uid.
    ambient: Option<u64>,
    /// `cgroup.procs` files pid 1 writes `0` to, moving itself into the run's cgroups.
    cgroup_procs: Vec<RawFd>,
}

/// What failed after `fork`; the codes travel over the error pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Stage {
    Fds = 1,
    MountProc = 2,
    MaskProc = 3,
    Fork = 4,
    Setsid = 5,
    Ctty = 6,
    Chdir = 7,
    Capbset = 8,
    Setgroups = 9,
    Setgid = 10,
    Setuid = 11,
    Exec = 12,
    Keyring = 13,
    Seccomp = 14,
    Cgroup = 15,
    Ambient = 16,
}

impl Stage {
    fn from_u32(v: u32) -> Option<Stage> {
        use Stage::*;
        [
            Fds, MountProc, MaskProc, Fork, Setsid, Ctty, Chdir, Capbset, Setgroups, Setgid,
            Setuid, Exec, Keyring, Seccomp, Cgroup, Ambient,
        ]
        .into_iter()
        .find(|s| *s as u32 == v)
    }
}

impl ChildPlan {
    /// Prepare the plan; fails on strings with interior NULs.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        exe: &str,
        args: &[String],
        env: &[String],
        cwd: &str,
        user: &crate::user::ExecUser,
        stdio: [RawFd; 3],
        session: Session,
        last_cap: u32,
        skip_syncs: bool,
        insecure: bool,
    ) -> Result<Self, SandboxError> {
        let c = |s: &str, what: &str| {
            CString::new(s)
                .map_err(|_| SandboxError::Spec(format!("{what} {s:?} contains a NUL byte")))
        };
        let argv = args
            .iter()
            .map(|a| c(a, "argument"))
            .collect::<Result<Vec<_>, _>>()?;
        let envp = env
            .iter()
            .map(|e| c(e, "environment entry"))
            .collect::<Result<Vec<_>, _>>()?;
        let nul_terminated = |v: &[CString]| {
            v.iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect::<Vec<_>>()
        };
        let argv_ptrs = nul_terminated(&argv);
        let envp_ptrs = nul_terminated(&envp);
        let last_cap = last_cap.min(63);
        let (keep_caps, filter, ambient) = if insecure {
            let every = u64::MAX >> (63 - last_cap);
            (every, None, Some(own_permitted_caps()? & every))
        } else {
            let keep_caps = DEFAULT_CAPS.iter().fold(0u64, |m, c| m | (1u64 << c));
            let filter = seccomp::compile(seccomp::FilterOptions {
                caps: keep_caps,
                skip_syncs,
            })?;
            (keep_caps, Some(filter), None)
        };
        Ok(ChildPlan {
            exe: c(exe, "executable")?,
            _argv: argv,
            argv_ptrs,
            _envp: envp,
            envp_ptrs,
            cwd: c(cwd, "working directory")?,
            uid: user.uid,
            gid: user.gid,
            groups: user.groups.clone(),
            stdio,
            session,
            keep_caps,
            last_cap,
            filter,
            mask: !insecure,
            ambient,
            cgroup_procs: Vec::new(),
        })
    }

    /// pid 1 joins these cgroups (open `cgroup.procs` files) before anything else runs.
    pub(crate) fn in_cgroups(mut self, procs: Vec<RawFd>) -> Self {
        self.cgroup_procs = procs;
        self
    }

    /// Turn an error record from the pipe into an error naming the call and path.
    pub(crate) fn describe(&self, stage: u32, errno: i32) -> SandboxError {
        let s = |c: &CString| c.to_string_lossy().into_owned();
        let (call, path) = match Stage::from_u32(stage) {
            Some(Stage::Fds) => ("dup2 stdio of", "pid 1".to_string()),
            Some(Stage::MountProc) => ("mount proc on", "/proc".to_string()),
            Some(Stage::MaskProc) => ("mount mask on", "/proc".to_string()),
            Some(Stage::Fork) => ("fork", "container process".to_string()),
            Some(Stage::Setsid) => ("setsid", "container process".to_string()),
            Some(Stage::Ctty) => ("ioctl TIOCSCTTY on", "the pty".to_string()),
            Some(Stage::Chdir) => ("chdir", s(&self.cwd)),
            Some(Stage::Capbset) => (
                "prctl PR_CAPBSET_DROP",
                "capability bounding set".to_string(),
            ),
            Some(Stage::Setgroups) => ("setgroups", format!("{:?}", self.groups)),
            Some(Stage::Setgid) => ("setgid", self.gid.to_string()),
            Some(Stage::Setuid) => ("setuid", self.uid.to_string()),
            Some(Stage::Exec) => ("execve", s(&self.exe)),
            Some(Stage::Keyring) => (
                "keyctl KEYCTL_JOIN_SESSION_KEYRING",
                "a new session keyring".to_string(),
            ),
            Some(Stage::Seccomp) => (
                "seccomp SECCOMP_SET_MODE_FILTER",
                "the container process".to_string(),
            ),
            Some(Stage::Cgroup) => ("write 0 to", "the run's cgroup.procs".to_string()),
            Some(Stage::Ambient) => (
                "prctl PR_CAP_AMBIENT_RAISE (insecure mode)",
                "the container process's capabilities".to_string(),
            ),
            None => ("unknown stage of", format!("container setup {stage}")),
        };
        SandboxError::errno(call, path, errno)
    }
}

/// `capget(2)`/`capset(2)`'s header, version 3 (64-bit sets in two halves).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// One half of the capability sets.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;

/// The permitted capabilities of this thread (what insecure mode can pass on).
fn own_permitted_caps() -> Result<u64, SandboxError> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes two CapData records for version 3; both pointers are valid.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if r < 0 {
        return Err(SandboxError::sys(
            "capget",
            "the setup thread",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(u64::from(data[0].permitted) | (u64::from(data[1].permitted) << 32))
}

/// `keyctl(2)`'s operation that gives the caller a new session keyring.
const KEYCTL_JOIN_SESSION_KEYRING: libc::c_int = 1;

/// The pid the reaper forwards signals to (set in pid 1 only).
static FORWARD_TO: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward_signal(sig: libc::c_int) {
    let pid = FORWARD_TO.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

const FORWARDED: &[libc::c_int] = &[
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Parts of `/proc` made read-only, as docker does.
const PROC_READONLY: &[&std::ffi::CStr] = &[
    c"/proc/bus",
    c"/proc/fs",
    c"/proc/irq",
    c"/proc/sys",
    c"/proc/sysrq-trigger",
];
/// Files hidden behind `/dev/null`.
const PROC_MASK_FILES: &[&std::ffi::CStr] = &[
    c"/proc/kcore",
    c"/proc/keys",
    c"/proc/latency_stats",
    c"/proc/timer_list",
    c"/proc/timer_stats",
    c"/proc/sched_debug",
];
/// Directories hidden behind an empty read-only tmpfs.
const MASK_DIRS: &[&std::ffi::CStr] = &[
    c"/proc/acpi",
    c"/proc/asound",
    c"/proc/scsi",
    c"/sys/firmware",
    c"/sys/devices/virtual/powercap",
];

/// Fork pid 1. Returns its (host) pid. `err_w` and `status_w` are the write ends of the error
/// and status pipes; the caller closes its copies right after.
pub(crate) fn spawn_pid1(
    plan: &ChildPlan,
    err_w: RawFd,
    status_w: RawFd,
) -> Result<i32, SandboxError> {
    // SAFETY: sigset_t is plain data; sigfillset initialises it.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to sigset_t values owned here. Blocking every signal in this
    // thread keeps a signal from running a handler of the caller in the child before pid 1
    // installs its own.
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    // A pidfd of this process: pid 1 checks it right after PR_SET_PDEATHSIG, which closes the
    // window in which the caller could die before the death signal was armed.
    // SAFETY: pidfd_open on our own pid; the fd is owned right away (or -1).
    let me = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) } as RawFd;
    // SAFETY: fork in a possibly multi-threaded process: the child only runs pid1_main, which
    // makes async-signal-safe calls only, on data prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: we are the child of fork; see pid1_main's contract.
        unsafe { pid1_main(plan, me, err_w, status_w) }
    }
    let fork_err = std::io::Error::last_os_error();
    if me >= 0 {
        // SAFETY: closes the pidfd opened above, which nothing else uses.
        unsafe { libc::close(me) };
    }
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    if pid < 0 {
        return Err(SandboxError::sys("fork", "container pid 1", fork_err));
    }
    Ok(pid)
}

/// Report `stage` with the current errno on `fd` and exit.
///
/// # Safety
/// Only after fork.
unsafe fn die_on(fd: RawFd, stage: Stage) -> ! {
    // SAFETY: errno location is thread-local and valid.
    let errno = unsafe { *libc::__errno_location() };
    let mut rec = [0u8; 8];
    rec[..4].copy_from_slice(&(stage as u32).to_ne_bytes());
    rec[4..].copy_from_slice(&errno.to_ne_bytes());
    // SAFETY: write and _exit are async-signal-safe; rec is a valid buffer.
    unsafe {
        libc::write(fd, rec.as_ptr().cast(), rec.len());
        libc::_exit(126)
    }
}

/// [`die_on`] the error pipe, once it sits on fd 3.
///
/// # Safety
/// Only after fork, with the error pipe on fd 3.
unsafe fn die(stage: Stage) -> ! {
    // SAFETY: forwarded contract.
    unsafe { die_on(3, stage) }
}

/// pid 1 of the container.
///
/// # Safety
/// Must only run in the child of `fork`, and must not return. Makes async-signal-safe calls
/// only; `plan` and the statics it reads were set up before the fork.
unsafe fn pid1_main(plan: &ChildPlan, parent: RawFd, err_w: RawFd, status_w: RawFd) -> ! {
    // SAFETY: everything below is libc calls on valid, NUL-terminated data from `plan` or
    // static C strings, in a single-threaded child.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        if parent >= 0 {
            let mut p = [libc::pollfd {
                fd: parent,
                events: libc::POLLIN,
                revents: 0,
            }];
            if libc::poll(p.as_mut_ptr(), 1, 0) != 0 {
                // The caller is gone already (or poll failed): run nothing.
                libc::_exit(125);
            }
        }

        // Into the run's cgroups before anything else: all it starts is limited too.
        for fd in &plan.cgroup_procs {
            if libc::write(*fd, c"0".as_ptr().cast(), 1) != 1 {
                die_on(err_w, Stage::Cgroup);
            }
        }

        // fds: stdio sources on 0..2, error pipe on 3, status pipe on 4, nothing else.
        let srcs = [plan.stdio[0], plan.stdio[1], plan.stdio[2], err_w, status_w];
        let mut tmp = [-1; 5];
        for (i, fd) in srcs.iter().enumerate() {
            tmp[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 10);
            if tmp[i] < 0 {
                die_on(err_w, Stage::Fds);
            }
        }
        if libc::dup3(tmp[3], 3, libc::O_CLOEXEC) < 0 {
            die_on(tmp[3], Stage::Fds);
        }
        for (i, fd) in tmp.iter().take(3).enumerate() {
            if libc::dup2(*fd, i as libc::c_int) < 0 {
                die(Stage::Fds);
            }
        }
        if libc::dup3(tmp[4], 4, libc::O_CLOEXEC) < 0 {
            die(Stage::Fds);
        }
        if libc::syscall(libc::SYS_close_range, 5u32, u32::MAX, 0u32) < 0 {
            for fd in 5..4096 {
                libc::close(fd);
            }
        }
        libc::umask(0o022);
        if libc::setsid() < 0 {
            die(Stage::Setsid);
        }

        // /proc of the new pid namespace, with docker's masks.
        let ro = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        if libc::mount(
            c"proc".as_ptr(),
            c"/proc".as_ptr(),
            c"proc".as_ptr(),
            ro,
            std::ptr::null(),
        ) < 0
        {
            die(Stage::MountProc);
        }
        let (readonly, mask_files, mask_dirs): (&[&std::ffi::CStr], &[_], &[_]) = if plan.mask {
            (PROC_READONLY, PROC_MASK_FILES, MASK_DIRS)
        } else {
            (&[], &[], &[])
        };
        for p in readonly {
            if libc::mount(
                p.as_ptr(),
                p.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ) < 0
            {
                if *libc::__errno_location() == libc::ENOENT {
                    continue;
                }
                die(Stage::MaskProc);
            }
            let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | ro;
            if libc::mount(
                std::ptr::null(),
                p.as_ptr(),
                std::ptr::null(),
                flags,
                std::ptr::null(),
            ) < 0
            {
                die(Stage::MaskProc);
            }
        }
        for p in mask_files {
            if libc::mount(
                c"/dev/null".as_ptr(),
                p.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ) < 0
                && *libc::__errno_location() != libc::ENOENT
            {
                die(Stage::MaskProc);
            }
        }
        for p in mask_dirs {
            let flags = libc::MS_RDONLY | ro;
            if libc::mount(
                c"tmpfs".as_ptr(),
                p.as_ptr(),
                c"tmpfs".as_ptr(),
                flags,
                c"size=0".as_ptr().cast(),
            ) < 0
                && *libc::__errno_location() != libc::ENOENT
            {
                die(Stage::MaskProc);
            }
        }

        // Signals stay blocked (inherited from the setup thread) until the handlers are in
        // place and the child's pid is known.
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = forward_signal as *const () as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigfillset(&mut sa.sa_mask);
        for sig in FORWARDED {
            libc::sigaction(*sig, &sa, std::ptr::null_mut());
        }

        let child = libc::fork();
        if child < 0 {
            die(Stage::Fork);
        }
        if child == 0 {
            workload_main(plan);
        }
        FORWARD_TO.store(child, Ordering::Relaxed);
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());

        loop {
            let mut status = 0;
            let r = libc::waitpid(-1, &mut status, 0);
            if r == child {
                let bytes = status.to_ne_bytes();
                libc::write(4, bytes.as_ptr().cast(), bytes.len());
                let code = if libc::WIFSIGNALED(status) {
                    128 + libc::WTERMSIG(status)
                } else {
                    libc::WEXITSTATUS(status)
                };
                libc::_exit(code);
            }
            if r < 0 && *libc::__errno_location() != libc::EINTR {
                libc::_exit(255);
            }
        }
    }
}

/// The process: credentials, cwd, capabilities, exec.
///
/// # Safety
/// Only in the child of pid 1's fork; async-signal-safe calls only.
unsafe fn workload_main(plan: &ChildPlan) -> ! {
    // SAFETY: libc calls on data prepared before the fork; single-threaded child.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = libc::SIG_DFL;
        for sig in 1..libc::SIGRTMAX() {
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
        if plan.session == Session::Tty {
            if libc::setsid() < 0 {
                die(Stage::Setsid);
            }
            if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                die(Stage::Ctty);
            }
        }
        if libc::chdir(plan.cwd.as_ptr()) < 0 {
            die(Stage::Chdir);
        }
        // An anonymous keyring of its own; a kernel without keys support has none to share.
        if libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        ) < 0
            && *libc::__errno_location() != libc::ENOSYS
        {
            die(Stage::Keyring);
        }
        for cap in 0..=plan.last_cap {
            if plan.keep_caps & (1u64 << cap) == 0
                && libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) < 0
                && *libc::__errno_location() != libc::EINVAL
            {
                die(Stage::Capbset);
            }
        }
        if let Some(filter) = &plan.filter {
            let prog = filter.fprog();
            if libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const libc::sock_fprog,
            ) < 0
            {
                die(Stage::Seccomp);
            }
        }
        if plan.ambient.is_some() && libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0 {
            die(Stage::Ambient);
        }
        // Raw syscalls: per-thread credentials are per-process in this single-threaded child.
        if libc::syscall(libc::SYS_setgroups, plan.groups.len(), plan.groups.as_ptr()) < 0 {
            die(Stage::Setgroups);
        }
        if libc::syscall(libc::SYS_setresgid, plan.gid, plan.gid, plan.gid) < 0 {
            die(Stage::Setgid);
        }
        if libc::syscall(libc::SYS_setresuid, plan.uid, plan.uid, plan.uid) < 0 {
            die(Stage::Setuid);
        }
        if let Some(caps) = plan.ambient {
            // setresuid to a non-root uid emptied the effective set; the permitted one stayed.
            let mut header = CapHeader {
                version: CAP_VERSION_3,
                pid: 0,
            };
            let half = |bits: u32| CapData {
                effective: bits,
                permitted: bits,
                inheritable: bits,
            };
            let data = [half(caps as u32), half((caps >> 32) as u32)];
            if libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) < 0 {
                die(Stage::Ambient);
            }
            for cap in 0..=plan.last_cap {
                if caps & (1u64 << cap) != 0
                    && libc::prctl(
                        libc::PR_CAP_AMBIENT,
                        libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                        cap as libc::c_ulong,
                        0,
                        0,
                    ) < 0
                {
                    die(Stage::Ambient);
                }
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(
            plan.exe.as_ptr(),
            plan.argv_ptrs.as_ptr(),
            plan.envp_ptrs.as_ptr(),
        );
        die(Stage::Exec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_caps_exclude_sys_admin() {
        assert!(
            !DEFAULT_CAPS.contains(&21),
            "CAP_SYS_ADMIN must leave the bounding set"
        );
        assert!(
            !DEFAULT_CAPS.contains(&19),
            "CAP_SYS_PTRACE must leave the bounding set"
        );
        assert!(
            !DEFAULT_CAPS.contains(&12),
            "CAP_NET_ADMIN must leave the bounding set"
        );
    }

    #[test]
    fn errors_from_the_child_name_call_and_path() {
        let user = crate::user::ExecUser {
            uid: 5,
            gid: 6,
            groups: vec![],
            home: "/".into(),
        };
        let plan = ChildPlan::new(
            "/bin/true",
            &["true".into()],
            &[],
            "/work",
            &user,
            [0, 1, 2],
            Session::Detach,
            40,
            false,
            false,
        )
        .unwrap();
        assert_eq!(
            plan.describe(Stage::Chdir as u32, libc::ENOENT).to_string(),
            "chdir /work: ENOENT"
        );
        assert_eq!(
            plan.describe(Stage::Exec as u32, libc::EACCES).to_string(),
            "execve /bin/true: EACCES"
        );
        assert_eq!(
            plan.describe(Stage::Setuid as u32, libc::EPERM).to_string(),
            "setuid 5: EPERM"
        );
        assert_eq!(
            plan.describe(Stage::Seccomp as u32, libc::EACCES)
                .to_string(),
            "seccomp SECCOMP_SET_MODE_FILTER the container process: EACCES"
        );
        assert_eq!(
            plan.describe(Stage::Keyring as u32, libc::EDQUOT)
                .to_string()
                .split(':')
                .next(),
            Some("keyctl KEYCTL_JOIN_SESSION_KEYRING a new session keyring")
        );
    }

    #[test]
    fn nul_bytes_are_spec_errors() {
        let user = crate::user::ExecUser {
            uid: 0,
            gid: 0,
            groups: vec![],
            home: "/".into(),
        };
        let r = ChildPlan::new(
            "/bin/sh",
            &["a\0b".into()],
            &[],
            "/",
            &user,
            [0, 1, 2],
            Session::Detach,
            40,
            false,
            false,
        );
        assert!(matches!(r, Err(SandboxError::Spec(_))));
    }
}
