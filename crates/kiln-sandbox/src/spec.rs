//! What to run and how: [`RunSpec`] and the small types around it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

use rustix::process::Signal;

/// The root filesystem of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rootfs {
    /// An overlayfs assembled from read-only lower dirs and one writable upper dir.
    ///
    /// The overlay is mounted with `redirect_dir=off`, `metacopy=off` and `index=off`, so the
    /// upper dir holds whole files, 0/0 character-device whiteouts and
    /// `trusted.overlay.opaque` dirs only: a layer differ can read it as it is (skipping the
    /// other `trusted.overlay.*` bookkeeping xattrs, such as `origin`). Mountpoints of the run
    /// never land in it. `upper` and `work` must be absolute and free of `,`, `:` and `\`;
    /// lowers may be any absolute paths, up to overlayfs' 500.
    Overlay {
        /// Lower dirs, top-most first (the order of overlayfs' `lowerdir=`).
        lowers: Vec<PathBuf>,
        /// The upper dir: every write of the run lands here.
        upper: PathBuf,
        /// The overlay work dir: empty, on the same filesystem as `upper`.
        work: PathBuf,
    },
    /// A plain directory, used read-write as it is (bind-mounted on itself).
    Dir(PathBuf),
    /// A plain directory, entered with `chroot` alone: no namespace, no mount (see
    /// [`chroot`](crate::chroot) for what such a run gets and what it lacks). Its
    /// [`FURNISHED`](crate::chroot::FURNISHED) paths are changed for the run and put back.
    Chroot(PathBuf),
}

/// The network of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    /// A network namespace of its own with NAT'd egress through slirp4netns (docker's default
    /// bridge, seen from the step): the internet is reachable, the host's loopback services,
    /// abstract sockets and traffic are not.
    #[default]
    Private,
    /// Share the host's network namespace: an explicit opt-in (`--network host`, BuildKit's
    /// `network.host` entitlement).
    Host,
    /// A new, empty network namespace with only the loopback interface, up.
    None,
}

impl std::str::FromStr for Network {
    type Err = String;

    /// docker's names: `default` (also `bridge`), `host`, `none`.
    fn from_str(text: &str) -> Result<Network, String> {
        match text {
            "default" | "bridge" => Ok(Network::Private),
            "host" => Ok(Network::Host),
            "none" => Ok(Network::None),
            other => Err(format!(
                "network {other:?}: kiln has default (a private network with outbound access), \
                 host and none"
            )),
        }
    }
}

/// An extra mount inside the rootfs. Targets are absolute paths inside the container; missing
/// targets are created for the run only (see the crate docs on mountpoints).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    /// Bind a host file or directory (a cache dir, a secret file, a build-context dir).
    Bind {
        /// Host path.
        source: PathBuf,
        /// Path inside the container.
        target: String,
        /// Mount it read-only.
        readonly: bool,
    },
    /// A writable view of a host file or directory whose writes are thrown away when the run
    /// ends (BuildKit's `--mount=type=bind,rw`). The source is never written.
    Scratch {
        /// Host path.
        source: PathBuf,
        /// Path inside the container.
        target: String,
    },
    /// A fresh tmpfs.
    Tmpfs {
        /// Path inside the container.
        target: String,
        /// Size limit in bytes; `None` for the kernel's default (half of RAM).
        size: Option<u64>,
    },
}

impl Mount {
    /// The path inside the container.
    pub fn target(&self) -> &str {
        match self {
            Mount::Bind { target, .. }
            | Mount::Scratch { target, .. }
            | Mount::Tmpfs { target, .. } => target,
        }
    }
}

/// Where the process's stdin, stdout and stderr go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stdio {
    /// stdin is `/dev/null`; stdout and stderr are pipes whose chunks reach the `on_output`
    /// callback of [`run`](crate::run) as they arrive. The container gets its own session, so a
    /// terminal's Ctrl-C reaches the caller only (see [`Interrupt`]).
    #[default]
    Piped,
    /// The caller's fds 0, 1 and 2 are passed through unchanged. The container still gets a
    /// session of its own: a terminal among those fds is not its controlling terminal, so it
    /// cannot type into the caller's shell (`TIOCSTI`) or take over its job control.
    Inherit,
    /// A pseudo-terminal: the slave is the controlling terminal of the process, the caller's
    /// stdin (put in raw mode if it is a terminal) is relayed to it, and what the process
    /// writes reaches `on_output` as [`OutputStream::Stdout`] chunks; the caller writes them to
    /// its terminal unchanged. Window size changes (`SIGWINCH`) are forwarded.
    Tty,
}

/// Which stream an output chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputStream {
    /// The process's stdout (or the pty, in [`Stdio::Tty`] mode).
    Stdout,
    /// The process's stderr.
    Stderr,
}

/// Everything [`run`](crate::run) needs.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The root filesystem.
    pub rootfs: Rootfs,
    /// argv, already shell-wrapped by the caller. `argv[0]` without a `/` is looked up in the
    /// `PATH` of `env` (docker's default `PATH` if `env` has none), inside the rootfs.
    pub args: Vec<String>,
    /// Environment, `K=V`. `PATH` and `HOME` are added when missing, as docker does.
    pub env: Vec<String>,
    /// Working directory inside the container, created (mode 0755, owned by root) if missing,
    /// as docker does for `WORKDIR`; that creation is legitimate layer content.
    pub cwd: String,
    /// `""` (root), `name`, `uid`, `uid:gid`, `name:group`: resolved from the rootfs's
    /// `/etc/passwd` and `/etc/group`, supplementary groups included.
    pub user: String,
    /// Hostname inside the new UTS namespace.
    pub hostname: String,
    /// Host network or none.
    pub network: Network,
    /// Extra mounts (caches and secrets are binds prepared by the caller).
    pub mounts: Vec<Mount>,
    /// stdio handling.
    pub stdio: Stdio,
    /// Bind the host's `/etc/resolv.conf`, `/etc/hosts` and `/etc/hostname` read-only for the
    /// run only. They never reach the upper dir.
    pub etc_binds: bool,
    /// The handle a signal handler uses to stop the run (see [`Interrupt`]).
    pub interrupt: Interrupt,
    /// `fsync`, `fdatasync`, `syncfs`, `sync` and `sync_file_range` return 0 without doing
    /// anything (the seccomp filter answers them). For build steps, whose layer the caller
    /// makes durable when it commits it and throws away if the step is cut short; not for a
    /// container whose writes are meant to last.
    pub skip_syncs: bool,
    /// Memory and process limits, through a cgroup of the run's own.
    pub limits: crate::Limits,
    /// BuildKit's insecure mode (`RUN --security=insecure`, granted by the `security.insecure`
    /// entitlement): the process keeps every capability kiln has (bounding, effective and
    /// ambient, so a non-root user has them too), no seccomp filter, nothing of `/proc`
    /// masked or read-only, `/sys` writable, and the host's fuse, loop, kmsg, kvm and tun
    /// devices in `/dev`. Only for a caller that was asked for it explicitly.
    pub insecure: bool,
    /// `--add-host`: `/etc/hosts` lines (name, address) after the host's file's (which is then
    /// a copy on the staging tmpfs, not a bind of the host's).
    pub extra_hosts: Vec<(String, String)>,
    /// The size of `/dev/shm` in bytes (`--shm-size`).
    pub shm_size: u64,
    /// `--ulimit`: the process's resource limits, set before it runs.
    pub ulimits: Vec<crate::Ulimit>,
}

/// docker's `/dev/shm` size: 64 MiB.
pub const DEFAULT_SHM_SIZE: u64 = 64 << 20;

impl RunSpec {
    /// A spec with docker-like defaults: cwd `/`, user root, hostname `kiln`, a private network,
    /// piped output, the host's resolver files bound, a fresh [`Interrupt`], real syncs.
    pub fn new(rootfs: Rootfs, args: Vec<String>) -> Self {
        RunSpec {
            rootfs,
            args,
            env: Vec::new(),
            cwd: "/".to_string(),
            user: String::new(),
            hostname: "kiln".to_string(),
            network: Network::Private,
            mounts: Vec::new(),
            stdio: Stdio::Piped,
            etc_binds: true,
            interrupt: Interrupt::new(),
            skip_syncs: false,
            limits: crate::Limits::default(),
            insecure: false,
            extra_hosts: Vec::new(),
            shm_size: DEFAULT_SHM_SIZE,
            ulimits: Vec::new(),
        }
    }
}

/// How the process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It called `exit(code)`.
    Exited(i32),
    /// A signal killed it.
    Signaled(i32),
}

impl ExitStatus {
    /// The shell's view: the exit code, or 128 + the signal number.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Exited(c) => c,
            ExitStatus::Signaled(s) => 128 + s,
        }
    }

    /// Exited with code 0.
    pub fn success(self) -> bool {
        self == ExitStatus::Exited(0)
    }

    pub(crate) fn from_wait_status(status: i32) -> Self {
        if libc::WIFSIGNALED(status) {
            ExitStatus::Signaled(libc::WTERMSIG(status))
        } else {
            ExitStatus::Exited(libc::WEXITSTATUS(status))
        }
    }
}

/// The result of a run that got as far as starting the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// How the process (or the container's pid 1) ended.
    pub status: ExitStatus,
    /// [`Interrupt::interrupt`] was called during the run: the caller must treat the step as
    /// cancelled (not commit it), whatever the status says.
    pub interrupted: bool,
}

/// How many sandboxes can run at once under one [`Interrupt`] (a build's `--jobs` is capped
/// at this).
pub const MAX_CONCURRENT_RUNS: usize = 64;

#[derive(Debug)]
struct InterruptState {
    /// Host pids of the pid 1s of the containers running now; 0 marks a free slot. Fixed
    /// slots, because the signal handler may neither lock nor allocate.
    pids: [AtomicI32; MAX_CONCURRENT_RUNS],
    /// How many times `interrupt` was called.
    requests: AtomicU32,
}

impl Default for InterruptState {
    fn default() -> Self {
        InterruptState {
            pids: std::array::from_fn(|_| AtomicI32::new(0)),
            requests: AtomicU32::new(0),
        }
    }
}

/// A handle that stops a run from a signal handler.
///
/// The library installs no `SIGINT`/`SIGTERM` handler of its own. The caller (the `kiln`
/// binary) installs one and calls [`Interrupt::interrupt`] from it. The first call sends
/// `SIGTERM` to the container's pid 1, which forwards it to the process; a second call sends
/// `SIGKILL` to pid 1, and the kernel then kills every process of the pid namespace. Either way
/// [`run`](crate::run) returns with [`Outcome::interrupted`] set after everything is torn down.
/// Once interrupted, a handle makes later runs fail with
/// [`SandboxError::Interrupted`](crate::SandboxError::Interrupted) before they start, so one
/// handle can be shared by all the steps of a build (clones share the state), including steps
/// that run at the same time: a request reaches every sandbox running under the handle, up to
/// [`MAX_CONCURRENT_RUNS`] of them.
///
/// If the caller does not catch the signal and the process dies, the container's pid 1 gets
/// `SIGKILL` (parent-death signal) and its namespaces go with it; only an empty staging
/// directory next to the overlay work dir may remain.
#[derive(Debug, Clone, Default)]
pub struct Interrupt(Arc<InterruptState>);

impl Interrupt {
    /// A fresh handle.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask every run under this handle to stop. Async-signal-safe: atomics and `kill(2)` only.
    pub fn interrupt(&self) {
        let n = self.0.requests.fetch_add(1, Ordering::SeqCst);
        let sig = if n == 0 { Signal::TERM } else { Signal::KILL };
        for slot in &self.0.pids {
            signal(slot.load(Ordering::SeqCst), sig);
        }
    }

    /// Whether [`Interrupt::interrupt`] was called.
    pub fn is_interrupted(&self) -> bool {
        self.0.requests.load(Ordering::SeqCst) > 0
    }

    /// Publish a pid 1's host pid; deliver a request that arrived before it was known.
    pub(crate) fn attach(&self, pid: i32) -> Result<(), crate::SandboxError> {
        let free = self.0.pids.iter().find(|slot| {
            slot.compare_exchange(0, pid, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        });
        if free.is_none() {
            // Callers bound their concurrency below the slot count; this is the backstop.
            // pid is our unreaped child.
            signal(pid, Signal::KILL);
            return Err(crate::SandboxError::TooManyRuns {
                max: MAX_CONCURRENT_RUNS,
            });
        }
        let n = self.0.requests.load(Ordering::SeqCst);
        if n > 0 {
            // pid is our unreaped child.
            signal(pid, if n == 1 { Signal::TERM } else { Signal::KILL });
        }
        Ok(())
    }

    /// Forget a pid 1 before it is reaped, so that a late request never hits a recycled pid.
    pub(crate) fn detach(&self, pid: i32) {
        for slot in &self.0.pids {
            let _ = slot.compare_exchange(pid, 0, Ordering::SeqCst, Ordering::SeqCst);
        }
    }
}

/// `kill(2)` of one process, async-signal-safe. A pid of 0 or less (no one, or a group) is
/// never signalled.
fn signal(pid: i32, sig: Signal) {
    if pid > 0
        && let Some(pid) = rustix::process::Pid::from_raw(pid)
    {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleeper() -> std::process::Child {
        std::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .expect("spawn sleep")
    }

    #[test]
    fn a_request_before_pid_1_is_known_is_delivered_on_attach() {
        let mut child = sleeper();
        let i = Interrupt::new();
        i.interrupt();
        assert!(i.is_interrupted());
        i.attach(child.id() as i32).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGTERM)
        );
    }

    #[test]
    fn first_request_terminates_second_kills_and_detach_forgets() {
        let mut child = sleeper();
        let i = Interrupt::new();
        i.attach(child.id() as i32).unwrap();
        i.detach(child.id() as i32);
        i.interrupt(); // detached: nothing is sent
        i.attach(child.id() as i32).unwrap(); // one request pending: SIGTERM
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGTERM)
        );
        let mut child = sleeper();
        let j = Interrupt::new();
        j.attach(child.id() as i32).unwrap();
        j.interrupt();
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGTERM)
        );
        j.detach(child.id() as i32);
        j.interrupt(); // second request, nothing attached
        let mut child = sleeper();
        j.attach(child.id() as i32).unwrap(); // two requests already: SIGKILL
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
    }

    #[test]
    fn one_request_reaches_every_attached_run() {
        let mut first = sleeper();
        let mut second = sleeper();
        let i = Interrupt::new();
        i.attach(first.id() as i32).unwrap();
        i.clone().attach(second.id() as i32).unwrap();
        i.interrupt();
        for child in [&mut first, &mut second] {
            let status = child.wait().unwrap();
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&status),
                Some(libc::SIGTERM)
            );
        }
    }

    #[test]
    fn exit_status_codes() {
        assert_eq!(ExitStatus::Exited(3).code(), 3);
        assert_eq!(ExitStatus::Signaled(9).code(), 137);
        assert!(ExitStatus::Exited(0).success());
        assert!(!ExitStatus::Signaled(15).success());
    }
}
