//! Processes: the container's pid 1 (a reaper) and the process it runs.
//!
//! # Forking from a multi-threaded caller
//!
//! The caller may have threads, so after `fork(2)` only async-signal-safe work is allowed. All
//! the allocation happens before: `ChildPlan` holds the resolved executable, argv and envp as
//! NUL-terminated arrays, the cwd and the ids, and `ChildFds` the fds. The code below `fork`
//! calls the kernel directly, through rustix (raw syscalls, paths as `&CStr`) or libc where
//! rustix has no wrapper (signal dispositions, `fork`, `execve`, `keyctl`, `seccomp`): no
//! allocation, no locks, no `std` I/O. It reports a failure as a fixed-size record
//! `{stage, errno}` on a close-on-exec pipe, which the setup thread turns into a
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

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::Mode;
use rustix::io::Errno;
use rustix::mount::MountFlags;
use rustix::process::{Gid, Signal, Uid, WaitOptions};
use rustix::thread::CapabilitySet;

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
    uid: Uid,
    gid: Gid,
    groups: Vec<Gid>,
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
    ambient: Option<CapabilitySet>,
    /// `--ulimit`s, set while the process still has root's powers to raise a hard limit.
    ulimits: Vec<crate::Ulimit>,
    /// Rootless: where the setup thread attached a clone of the host's `/proc` so that the
    /// kernel lets pid 1 mount its own (a user namespace may mount procfs only where one is
    /// already fully visible); pid 1 detaches and removes it before anything else runs.
    pub(crate) visible_proc: Option<&'static CStr>,
    /// `--isolation chroot`: pid 1 is no namespace's init but a subreaper in the caller's
    /// namespaces that `chroot`s here; see [`crate::chroot`].
    chroot: Option<CString>,
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
    VisibleProc = 17,
    Rlimit = 18,
    Chroot = 19,
    NoNewPrivs = 20,
}

impl Stage {
    fn from_u32(v: u32) -> Option<Stage> {
        use Stage::*;
        [
            Fds,
            MountProc,
            MaskProc,
            Fork,
            Setsid,
            Ctty,
            Chdir,
            Capbset,
            Setgroups,
            Setgid,
            Setuid,
            Exec,
            Keyring,
            Seccomp,
            Cgroup,
            Ambient,
            VisibleProc,
            Rlimit,
            Chroot,
            NoNewPrivs,
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
        session: Session,
        last_cap: u32,
        skip_syncs: bool,
        insecure: bool,
        ulimits: &[crate::Ulimit],
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
            let own = own_permitted_caps()?;
            (
                every,
                None,
                Some(own & CapabilitySet::from_bits_retain(every)),
            )
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
            uid: Uid::from_raw(user.uid),
            gid: Gid::from_raw(user.gid),
            groups: user.groups.iter().map(|g| Gid::from_raw(*g)).collect(),
            session,
            keep_caps,
            last_cap,
            filter,
            mask: !insecure,
            ambient,
            ulimits: ulimits.to_vec(),
            visible_proc: None,
            chroot: None,
        })
    }

    /// Makes pid 1 `chroot` into `root` instead of mounting a `/proc`, and the process set
    /// `no_new_privs` (a filter needs it without `CAP_SYS_ADMIN`).
    pub(crate) fn chrooted(mut self, root: &std::path::Path) -> Result<Self, SandboxError> {
        use std::os::unix::ffi::OsStrExt;
        self.chroot = Some(CString::new(root.as_os_str().as_bytes()).map_err(|_| {
            SandboxError::Spec(format!("rootfs {} contains a NUL byte", root.display()))
        })?);
        Ok(self)
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
            Some(Stage::Setgroups) => (
                "setgroups",
                format!(
                    "{:?}",
                    self.groups.iter().map(|g| g.as_raw()).collect::<Vec<_>>()
                ),
            ),
            Some(Stage::Setgid) => ("setgid", self.gid.as_raw().to_string()),
            Some(Stage::Setuid) => ("setuid", self.uid.as_raw().to_string()),
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
            Some(Stage::Rlimit) => ("setrlimit (--ulimit)", "the container process".to_string()),
            Some(Stage::VisibleProc) => (
                "umount the host's /proc clone at",
                self.visible_proc
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
            Some(Stage::Chroot) => (
                "chroot (needs CAP_SYS_CHROOT) into",
                self.chroot.as_ref().map(s).unwrap_or_default(),
            ),
            Some(Stage::NoNewPrivs) => (
                "prctl PR_SET_NO_NEW_PRIVS",
                "the container process".to_string(),
            ),
            None => ("unknown stage of", format!("container setup {stage}")),
        };
        SandboxError::errno(call, path, errno)
    }
}

/// The permitted capabilities of this thread (what insecure mode can pass on).
fn own_permitted_caps() -> Result<CapabilitySet, SandboxError> {
    rustix::thread::capabilities(None)
        .map(|sets| sets.permitted)
        .map_err(|e| SandboxError::sys("capget", "the setup thread", e))
}

/// `keyctl(2)`'s operation that gives the caller a new session keyring.
const KEYCTL_JOIN_SESSION_KEYRING: libc::c_int = 1;

/// The fds pid 1 starts from, all valid in the caller while [`spawn_pid1`] runs.
pub(crate) struct ChildFds<'a> {
    /// Sources of fds 0, 1, 2.
    pub stdio: [BorrowedFd<'a>; 3],
    /// `cgroup.procs` files pid 1 writes `0` to, moving itself into the run's cgroups.
    pub cgroup_procs: &'a [BorrowedFd<'a>],
    /// The write end of the error pipe.
    pub err_w: BorrowedFd<'a>,
    /// The write end of the status pipe.
    pub status_w: BorrowedFd<'a>,
}

/// The fd the error pipe sits on in pid 1 and the process, once the fds are in place.
const ERR_FD: RawFd = 3;
/// The fd the status pipe sits on in pid 1.
const STATUS_FD: RawFd = 4;

/// The pid the reaper forwards signals to (set in pid 1 only).
static FORWARD_TO: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward_signal(sig: libc::c_int) {
    let pid = rustix::process::Pid::from_raw(FORWARD_TO.load(Ordering::Relaxed));
    if let (Some(pid), Some(sig)) = (pid, Signal::from_named_raw(sig)) {
        // kill(2) is async-signal-safe; the pid is pid 1's own unreaped child.
        let _ = rustix::process::kill_process(pid, sig);
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
const PROC_READONLY: &[&CStr] = &[
    c"/proc/bus",
    c"/proc/fs",
    c"/proc/irq",
    c"/proc/sys",
    c"/proc/sysrq-trigger",
];
/// Files hidden behind `/dev/null`.
const PROC_MASK_FILES: &[&CStr] = &[
    c"/proc/kcore",
    c"/proc/keys",
    c"/proc/latency_stats",
    c"/proc/timer_list",
    c"/proc/timer_stats",
    c"/proc/sched_debug",
];
/// Directories hidden behind an empty read-only tmpfs.
const MASK_DIRS: &[&CStr] = &[
    c"/proc/acpi",
    c"/proc/asound",
    c"/proc/scsi",
    c"/sys/firmware",
    c"/sys/devices/virtual/powercap",
];

/// Fork pid 1. Returns its (host) pid. The caller closes its copies of the pipes' write ends
/// right after.
pub(crate) fn spawn_pid1(plan: &ChildPlan, fds: &ChildFds<'_>) -> Result<i32, SandboxError> {
    // Blocking every signal in this thread keeps a signal from running a handler of the
    // caller in the child before pid 1 installs its own.
    let old = block_all_signals();
    // A pidfd of this process: pid 1 checks it right after PR_SET_PDEATHSIG, which closes the
    // window in which the caller could die before the death signal was armed.
    let me = rustix::process::pidfd_open(
        rustix::process::getpid(),
        rustix::process::PidfdFlags::empty(),
    )
    .ok();
    // SAFETY: fork in a possibly multi-threaded process: the child only runs pid1_main, which
    // makes async-signal-safe calls only, on data prepared before the fork, and never returns.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        pid1_main(plan, fds, me.as_ref().map(AsFd::as_fd));
    }
    let fork_err = std::io::Error::last_os_error();
    drop(me);
    set_signal_mask(&old);
    if pid < 0 {
        return Err(SandboxError::sys("fork", "container pid 1", fork_err));
    }
    Ok(pid)
}

/// Blocks every signal in the calling thread; returns the mask it had.
fn block_all_signals() -> libc::sigset_t {
    let mut all = empty_sigset();
    // SAFETY: `all` is a sigset_t owned here; sigfillset only writes it.
    unsafe { libc::sigfillset(&mut all) };
    let mut old = empty_sigset();
    // SAFETY: both pointers are to sigset_t values owned here; the mask of this thread only
    // changes.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old) };
    old
}

/// Sets the calling thread's signal mask. Async-signal-safe.
fn set_signal_mask(mask: &libc::sigset_t) {
    // SAFETY: `mask` is a valid sigset_t; the old mask is not asked for (null).
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, mask, std::ptr::null_mut()) };
}

/// An empty signal set. Async-signal-safe.
fn empty_sigset() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data (an array of words), for which all-zero is a value.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is owned here; sigemptyset only writes it.
    unsafe { libc::sigemptyset(&mut set) };
    set
}

/// Sets the disposition of `sig` to `handler` (`SIG_DFL` or an `extern "C" fn`), with every
/// signal blocked while a handler runs. Async-signal-safe.
fn set_signal_handler(sig: libc::c_int, handler: libc::sighandler_t) {
    // SAFETY: sigaction is plain data (a handler address, flags and a sigset_t), for which
    // all-zero is a value: no handler, no flags, nothing blocked.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = handler;
    sa.sa_flags = libc::SA_RESTART;
    // SAFETY: `sa.sa_mask` is owned here; sigfillset only writes it.
    unsafe { libc::sigfillset(&mut sa.sa_mask) };
    // SAFETY: `sa` is a valid sigaction and the old one is not asked for (null); `handler` is
    // SIG_DFL or an `extern "C" fn(c_int)` that makes async-signal-safe calls only.
    unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) };
}

/// Ends the process at once, running no exit handlers (which may hold locks after a fork).
fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions and does not return.
    unsafe { libc::_exit(code) }
}

/// The errno of the libc call that just failed. Async-signal-safe (reads errno, allocates
/// nothing).
fn last_errno() -> Errno {
    Errno::from_raw_os_error(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

/// Reports `stage` with `errno` on the error pipe `fd` and exits. Only after fork.
fn die_on(fd: BorrowedFd<'_>, stage: Stage, errno: Errno) -> ! {
    let mut rec = [0u8; 8];
    rec[..4].copy_from_slice(&(stage as u32).to_ne_bytes());
    rec[4..].copy_from_slice(&errno.raw_os_error().to_ne_bytes());
    let _ = rustix::io::write(fd, &rec);
    exit_now(126)
}

/// [`die_on`] the error pipe, once it sits on [`ERR_FD`].
fn die(stage: Stage, errno: Errno) -> ! {
    // SAFETY: only called after pid 1 has put the error pipe on ERR_FD, which stays open
    // (close-on-exec) until exec or exit.
    die_on(unsafe { BorrowedFd::borrow_raw(ERR_FD) }, stage, errno)
}

/// pid 1 of the container. Runs in the child of `fork` and never returns; makes
/// async-signal-safe calls only (rustix's are raw syscalls); `plan`, `fds` and the statics it
/// reads were set up before the fork.
fn pid1_main(plan: &ChildPlan, fds: &ChildFds<'_>, parent: Option<BorrowedFd<'_>>) -> ! {
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
    if let Some(parent) = parent {
        let mut p = [PollFd::new(&parent, PollFlags::IN)];
        if rustix::event::poll(&mut p, Some(&Timespec::default())) != Ok(0) {
            // The caller is gone already (or poll failed): run nothing.
            exit_now(125);
        }
    }

    // Into the run's cgroups before anything else: all it starts is limited too.
    for fd in fds.cgroup_procs {
        match rustix::io::write(fd, b"0") {
            Ok(1) => {}
            Ok(_) => die_on(fds.err_w, Stage::Cgroup, Errno::IO),
            Err(e) => die_on(fds.err_w, Stage::Cgroup, e),
        }
    }

    // fds: stdio sources on 0..2, error pipe on 3, status pipe on 4, nothing else. Copies
    // numbered 10 and up first, so that no dup onto 0..4 clobbers a source.
    let [stdin, stdout, stderr] = fds.stdio;
    let high = |fd| {
        rustix::io::fcntl_dupfd_cloexec(fd, 10).unwrap_or_else(|e| die_on(fds.err_w, Stage::Fds, e))
    };
    let tmp = [stdin, stdout, stderr, fds.err_w, fds.status_w].map(high);
    // SAFETY: dup3 onto a fixed number: tmp[3] is open, and whatever fd 3 was is replaced
    // (nothing in this process owns it).
    if unsafe { libc::dup3(tmp[3].as_raw_fd(), ERR_FD, libc::O_CLOEXEC) } < 0 {
        die_on(tmp[3].as_fd(), Stage::Fds, last_errno());
    }
    let stdio = rustix::stdio::dup2_stdin(&tmp[0])
        .and_then(|()| rustix::stdio::dup2_stdout(&tmp[1]))
        .and_then(|()| rustix::stdio::dup2_stderr(&tmp[2]));
    if let Err(e) = stdio {
        die(Stage::Fds, e);
    }
    // SAFETY: as for ERR_FD above, with tmp[4] and STATUS_FD.
    if unsafe { libc::dup3(tmp[4].as_raw_fd(), STATUS_FD, libc::O_CLOEXEC) } < 0 {
        die(Stage::Fds, last_errno());
    }
    // SAFETY: close_range closes fds only; none from 5 up is used from here on (the copies
    // in `tmp` included: they are never touched again, and dropping them is skipped below).
    if unsafe { libc::syscall(libc::SYS_close_range, 5u32, u32::MAX, 0u32) } < 0 {
        for fd in 5..4096 {
            // SAFETY: as for close_range.
            unsafe { libc::close(fd) };
        }
    }
    // The copies are closed already; dropping them would close numbers that may be reused.
    std::mem::forget(tmp);
    rustix::process::umask(Mode::from_raw_mode(0o022));
    if let Err(e) = rustix::process::setsid() {
        die(Stage::Setsid, e);
    }

    if let Some(root) = &plan.chroot {
        chroot_pid1(root);
    } else {
        proc_pid1(plan);
    }

    // Signals stay blocked (inherited from the setup thread) until the handlers are in place
    // and the child's pid is known.
    for sig in FORWARDED {
        set_signal_handler(*sig, forward_signal as *const () as libc::sighandler_t);
    }

    // SAFETY: fork of this single-threaded process: the child only runs workload_main, which
    // makes async-signal-safe calls only and never returns.
    let child = unsafe { libc::fork() };
    if child < 0 {
        die(Stage::Fork, last_errno());
    }
    if child == 0 {
        workload_main(plan);
    }
    FORWARD_TO.store(child, Ordering::Relaxed);
    set_signal_mask(&empty_sigset());

    let child = rustix::process::Pid::from_raw(child);
    loop {
        match rustix::process::wait(WaitOptions::empty()) {
            Ok(Some((pid, status))) if Some(pid) == child => {
                let raw = status.as_raw();
                // SAFETY: STATUS_FD holds the status pipe (dup3'd above) until exit.
                let status_pipe = unsafe { BorrowedFd::borrow_raw(STATUS_FD) };
                let _ = rustix::io::write(status_pipe, &raw.to_ne_bytes());
                let code = match status.terminating_signal() {
                    Some(sig) => 128 + sig,
                    None => status.exit_status().unwrap_or(255),
                };
                if plan.chroot.is_some() {
                    // What the process left behind is reparented here (a subreaper) and swept
                    // by the caller, which reads the status first; this pid 1 lives until the
                    // last of them is reaped, so that it stays the ancestor to look for.
                    // SAFETY: STATUS_FD is not used again: closing it tells the caller the
                    // status is complete.
                    unsafe { libc::close(STATUS_FD) };
                    while !matches!(
                        rustix::process::wait(WaitOptions::empty()),
                        Err(Errno::CHILD)
                    ) {}
                }
                exit_now(code);
            }
            Ok(_) | Err(Errno::INTR) => {}
            Err(_) => exit_now(255),
        }
    }
}

/// pid 1 of a chroot run: a subreaper (whatever its process leaves behind stays its
/// descendant), rooted in the rootfs.
fn chroot_pid1(root: &CStr) {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) reads no memory.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } < 0 {
        die(Stage::Chroot, last_errno());
    }
    if let Err(e) = rustix::process::chroot(root) {
        die(Stage::Chroot, e);
    }
    if let Err(e) = rustix::process::chdir(c"/") {
        die(Stage::Chroot, e);
    }
}

/// /proc of the new pid namespace, with docker's masks.
fn proc_pid1(plan: &ChildPlan) {
    let ro = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    if let Err(e) = rustix::mount::mount(c"proc", c"/proc", c"proc", ro, None::<&CStr>) {
        die(Stage::MountProc, e);
    }
    // Insecure mode masks nothing and leaves /proc writable.
    let (readonly, mask_files, mask_dirs): (&[&CStr], &[&CStr], &[&CStr]) = if plan.mask {
        (PROC_READONLY, PROC_MASK_FILES, MASK_DIRS)
    } else {
        (&[], &[], &[])
    };
    for p in readonly {
        match rustix::mount::mount_bind_recursive(*p, *p) {
            Ok(()) => {}
            Err(Errno::NOENT) => continue,
            Err(e) => die(Stage::MaskProc, e),
        }
        let flags = MountFlags::BIND | MountFlags::RDONLY | ro;
        if let Err(e) = rustix::mount::mount_remount(*p, flags, c"") {
            die(Stage::MaskProc, e);
        }
    }
    for p in mask_files {
        match rustix::mount::mount_bind(c"/dev/null", *p) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => die(Stage::MaskProc, e),
        }
    }
    for p in mask_dirs {
        let flags = MountFlags::RDONLY | ro;
        match rustix::mount::mount(c"tmpfs", *p, c"tmpfs", flags, c"size=0") {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => die(Stage::MaskProc, e),
        }
    }

    if let Some(visible) = plan.visible_proc {
        if let Err(e) = rustix::mount::unmount(visible, rustix::mount::UnmountFlags::DETACH) {
            die(Stage::VisibleProc, e);
        }
        if let Err(e) = rustix::fs::rmdir(visible) {
            die(Stage::VisibleProc, e);
        }
    }
}

/// The process: credentials, cwd, capabilities, exec. Runs in the child of pid 1's fork and
/// never returns; async-signal-safe calls only.
fn workload_main(plan: &ChildPlan) -> ! {
    for sig in 1..libc::SIGRTMAX() {
        set_signal_handler(sig, libc::SIG_DFL);
    }
    if plan.session == Session::Tty {
        if let Err(e) = rustix::process::setsid() {
            die(Stage::Setsid, e);
        }
        if let Err(e) = rustix::process::ioctl_tiocsctty(rustix::stdio::stdin()) {
            die(Stage::Ctty, e);
        }
    }
    if let Err(e) = rustix::process::chdir(plan.cwd.as_c_str()) {
        die(Stage::Chdir, e);
    }
    for ulimit in &plan.ulimits {
        if let Err(e) = rustix::process::setrlimit(ulimit.resource, ulimit.rlimit()) {
            die(Stage::Rlimit, e);
        }
    }
    // An anonymous keyring of its own; a kernel without keys support has none to share.
    // SAFETY: keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL) reads no memory (a null name means an
    // anonymous keyring) and writes none.
    let r = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    // Under docker's default seccomp profile (a chroot run in a container) keyctl is EPERM:
    // that profile keeps the keyrings out of reach already.
    let refused = plan.chroot.is_some() && last_errno() == Errno::PERM;
    if r < 0 && last_errno() != Errno::NOSYS && !refused {
        die(Stage::Keyring, last_errno());
    }
    for cap in 0..=plan.last_cap {
        if plan.keep_caps & (1u64 << cap) != 0 {
            continue;
        }
        let set = CapabilitySet::from_bits_retain(1u64 << cap);
        match rustix::thread::remove_capability_from_bounding_set(set) {
            // A capability this kernel does not know.
            Ok(()) | Err(Errno::INVAL) => {}
            Err(e) => die(Stage::Capbset, e),
        }
    }
    if plan.chroot.is_some() && plan.filter.is_some() {
        // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1) reads no memory.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
            die(Stage::NoNewPrivs, last_errno());
        }
    }
    if let Some(filter) = &plan.filter {
        let prog = filter.fprog();
        // SAFETY: `prog` points at the filter's instructions, which `plan` owns and which
        // outlive the call; the kernel copies them.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const libc::sock_fprog,
            )
        };
        if r < 0 {
            die(Stage::Seccomp, last_errno());
        }
    }
    if plan.ambient.is_some()
        && let Err(e) = rustix::thread::set_keep_capabilities(true)
    {
        die(Stage::Ambient, e);
    }
    // The thread's credentials are the process's in this single-threaded child.
    if let Err(e) = rustix::thread::set_thread_groups(&plan.groups) {
        die(Stage::Setgroups, e);
    }
    if let Err(e) = rustix::thread::set_thread_res_gid(plan.gid, plan.gid, plan.gid) {
        die(Stage::Setgid, e);
    }
    if let Err(e) = rustix::thread::set_thread_res_uid(plan.uid, plan.uid, plan.uid) {
        die(Stage::Setuid, e);
    }
    if let Some(caps) = plan.ambient {
        // setresuid to a non-root uid emptied the effective set; the permitted one stayed.
        let sets = rustix::thread::CapabilitySets {
            effective: caps,
            permitted: caps,
            inheritable: caps,
        };
        if let Err(e) = rustix::thread::set_capabilities(None, sets) {
            die(Stage::Ambient, e);
        }
        for cap in 0..=plan.last_cap {
            let one = CapabilitySet::from_bits_retain(1u64 << cap);
            if caps.contains(one)
                && let Err(e) = rustix::thread::configure_capability_in_ambient_set(one, true)
            {
                die(Stage::Ambient, e);
            }
        }
    }
    set_signal_mask(&empty_sigset());
    // SAFETY: exe is a NUL-terminated string and argv/envp are null-terminated arrays of
    // NUL-terminated strings, all owned by `plan`, which outlives the call.
    unsafe {
        libc::execve(
            plan.exe.as_ptr(),
            plan.argv_ptrs.as_ptr(),
            plan.envp_ptrs.as_ptr(),
        )
    };
    die(Stage::Exec, last_errno())
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
            Session::Detach,
            40,
            false,
            false,
            &[],
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
            Session::Detach,
            40,
            false,
            false,
            &[],
        );
        assert!(matches!(r, Err(SandboxError::Spec(_))));
    }
}
