//! `--isolation chroot`: a run where no namespace and no mount can be made, as root in a
//! container with docker's default security (its seccomp profile refuses `unshare` and
//! `mount` without `CAP_SYS_ADMIN`), the case kaniko serves.
//!
//! What such a run gets, from what docker's default capability set still allows:
//!
//! - pid 1 forked from the setup thread, with a session (and process group) of its own, made a
//!   child subreaper, `chroot`ed into the plain rootfs directory; it forks the process, forwards
//!   signals to it and reaps. When the process ends, the caller kills everything left that
//!   descends from pid 1 or stayed in its session, so that no daemon outlives the step.
//! - The process: docker's default capability bounding set, `no_new_privs` (a seccomp filter
//!   needs it without `CAP_SYS_ADMIN`), kiln's seccomp filter on top of the container's, the
//!   resolved user and groups, env and cwd as in the other modes.
//! - `/dev/null`, `zero`, `full`, `random`, `urandom`, `tty` made with `mknod` and `/dev/shm`
//!   as a directory, in the rootfs, removed again after the run; the container's
//!   `/etc/resolv.conf`, `/etc/hosts` and `/etc/hostname` copied in for the run and the
//!   image's own put back after it. The layer differ leaves these paths out of layers.
//!
//! What it does not get (the gaps `docs/isolation.md` names): no `/proc` and no `/sys`; the
//! container's network, hostname, IPC and pid namespace; no mounts (`RUN --mount` is an
//! error); setuid programs do not raise privileges (`no_new_privs`); no cgroup limits; and a
//! `chroot` is not a security boundary against a process that keeps `CAP_SYS_CHROOT`, which
//! docker's default set (and so this one) includes: the container's own isolation is what
//! protects the host.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::container::{self, ThreadIo};
use crate::process::{self, ChildFds, ChildPlan, Session};
use crate::{ExitStatus, Network, Outcome, RunSpec, SandboxError, user};

/// Device nodes a chroot run gets: name, major, minor (docker's set, without the pty ones).
const DEVICES: [(&str, u32, u32); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Paths of the rootfs that a chroot run furnishes and takes back: a layer differ leaves them
/// out (in the other modes they are mounts, which never reach a layer either).
pub const FURNISHED: &[&str] = &["dev", "etc/resolv.conf", "etc/hosts", "etc/hostname"];

/// Whether this process may `chroot` (it has `CAP_SYS_CHROOT` in its effective set).
pub fn check_chroot() -> Result<(), SandboxError> {
    let caps = rustix::thread::capabilities(None)
        .map_err(|e| SandboxError::sys("capget", "kiln's own capabilities", e))?;
    if caps
        .effective
        .contains(rustix::thread::CapabilitySet::SYS_CHROOT)
    {
        Ok(())
    } else {
        Err(SandboxError::NoChroot {
            euid: rustix::process::geteuid().as_raw(),
        })
    }
}

/// Runs `spec` chrooted into its [`Rootfs::Chroot`](crate::Rootfs::Chroot) dir; on the setup
/// thread.
pub(crate) fn run_chroot(
    spec: RunSpec,
    root: PathBuf,
    io: ThreadIo,
) -> Result<Outcome, SandboxError> {
    refuse_what_needs_namespaces(&spec)?;
    // Whatever a run leaves behind and whose pid 1 is gone comes to kiln, not to the
    // container's init, so that it is not lost from sight.
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) reads no memory.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let root_fd = rustix::fs::open(
        &root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| SandboxError::sys("open rootfs", root.display().to_string(), e))?;
    let furnished = Furnished::set_up(&root_fd, &root, &spec.extra_hosts)?;
    let result = run_in(&spec, &root, &root_fd, io);
    let restored = furnished.take_back();
    let outcome = result?;
    restored?;
    Ok(outcome)
}

fn refuse_what_needs_namespaces(spec: &RunSpec) -> Result<(), SandboxError> {
    let missing = |what: String| {
        Err(SandboxError::Spec(format!(
            "{what}, and --isolation chroot can make no namespace or mount; use \
             --isolation oci (as root, where mounts are allowed) or --isolation rootless \
             (where user namespaces are allowed)"
        )))
    };
    if let Some(m) = spec.mounts.first() {
        return missing(format!("the run needs a mount on {}", m.target()));
    }
    match spec.network {
        Network::Host => {}
        Network::Private => return missing("the run asks for a private network".into()),
        Network::None => return missing("the run asks for no network (--network=none)".into()),
    }
    if spec.limits != crate::Limits::default() {
        return missing("--memory/--pids-limit need a cgroup of the run's own".into());
    }
    if spec.stdio == crate::Stdio::Tty {
        return missing("a terminal needs a devpts mount".into());
    }
    if spec.shm_size != crate::DEFAULT_SHM_SIZE {
        return missing("--shm-size needs a /dev/shm mount".into());
    }
    Ok(())
}

fn run_in(
    spec: &RunSpec,
    root: &Path,
    root_fd: &OwnedFd,
    io: ThreadIo,
) -> Result<Outcome, SandboxError> {
    let passwd = read_in_root(root_fd, root, "etc/passwd")?;
    let group = read_in_root(root_fd, root, "etc/group")?;
    let who = user::resolve(&spec.user, passwd.as_deref(), group.as_deref()).map_err(|reason| {
        SandboxError::User {
            spec: spec.user.clone(),
            reason,
        }
    })?;
    let mut env = spec.env.clone();
    if container::env_get(&env, "PATH").is_none() {
        env.push(format!("PATH={}", container::DEFAULT_PATH));
    }
    if container::env_get(&env, "HOME").is_none() {
        env.push(format!("HOME={}", who.home));
    }
    let path_var = container::env_get(&env, "PATH")
        .unwrap_or(container::DEFAULT_PATH)
        .to_string();
    let program = &spec.args[0];
    let exe =
        lookup_in_root(root_fd, program, &path_var).ok_or_else(|| SandboxError::NotFound {
            program: program.clone(),
            path: path_var.clone(),
        })?;
    let cwd = format!("/{}", spec.cwd.trim_start_matches('/'));
    mkdir_in_root(root_fd, root, &cwd)?;

    let (keep, session) = match io {
        ThreadIo::Inherit => (container::Stdio::Inherit, Session::Detach),
        ThreadIo::Piped { stdout, stderr } => {
            let null =
                File::open("/dev/null").map_err(|e| SandboxError::sys("open", "/dev/null", e))?;
            (
                container::Stdio::Piped([OwnedFd::from(null), stdout, stderr]),
                Session::Detach,
            )
        }
        ThreadIo::Tty { .. } => {
            return Err(SandboxError::Spec(
                "a terminal needs a devpts mount, which --isolation chroot cannot make".into(),
            ));
        }
    };
    let plan = ChildPlan::new(
        &exe,
        &spec.args,
        &env,
        &cwd,
        &who,
        session,
        container::last_cap(),
        spec.skip_syncs,
        spec.insecure,
        &spec.ulimits,
    )?
    .chrooted(root)?;
    let (err_r, err_w) = container::pipe()?;
    let (status_r, status_w) = container::pipe()?;
    if spec.interrupt.is_interrupted() {
        return Err(SandboxError::Interrupted);
    }
    let fds = ChildFds {
        stdio: keep.fds(),
        cgroup_procs: &[],
        err_w: err_w.as_fd(),
        status_w: status_w.as_fd(),
    };
    let pid = process::spawn_pid1(&plan, &fds)?;
    drop((err_w, status_w, keep));
    if let Err(e) = spec.interrupt.attach(pid) {
        sweep(pid);
        let _ = container::wait_pid1(pid, &spec.interrupt);
        return Err(e);
    }
    // pid 1 writes the status, then waits for what is left, which goes now.
    let mut st = [0u8; 4];
    let got = container::read_full(&status_r, &mut st);
    sweep(pid);
    // Its session may hold processes that pid 1 never saw again (it was killed first): swept
    // once more after it has exited, before it is reaped, while its pid (the session's id)
    // cannot be anyone else's.
    exited(pid);
    sweep(pid);
    let pid1_status = container::wait_pid1(pid, &spec.interrupt)?;
    let mut rec = [0u8; 8];
    if container::read_full(&err_r, &mut rec) == rec.len() {
        let stage = u32::from_ne_bytes([rec[0], rec[1], rec[2], rec[3]]);
        let errno = i32::from_ne_bytes([rec[4], rec[5], rec[6], rec[7]]);
        return Err(plan.describe(stage, errno));
    }
    let status = if got == st.len() {
        ExitStatus::from_wait_status(i32::from_ne_bytes(st))
    } else {
        ExitStatus::from_wait_status(pid1_status)
    };
    Ok(Outcome {
        status,
        interrupted: spec.interrupt.is_interrupted(),
    })
}

/// Kills (SIGKILL) every process that descends from `pid1` or is in its session, but `pid1`
/// itself, until none is left: without a pid namespace this is what ends a step's daemons.
fn sweep(pid1: i32) {
    // A process can fork while the last round is killed; each round finds its children.
    for _ in 0..1000 {
        let procs = processes();
        let mut ours: Vec<i32> = vec![pid1];
        let mut grew = true;
        while grew {
            grew = false;
            for p in &procs {
                if !ours.contains(&p.pid) && (ours.contains(&p.ppid) || p.session == pid1) {
                    ours.push(p.pid);
                    grew = true;
                }
            }
        }
        let victims: Vec<i32> = ours.into_iter().filter(|p| *p != pid1).collect();
        if victims.is_empty() {
            return;
        }
        for victim in victims {
            if let Some(pid) = rustix::process::Pid::from_raw(victim) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        // Killed processes are zombies until their parent (pid 1, or kiln) reaps them; they
        // are not counted again, as they cannot fork.
        std::thread::yield_now();
    }
}

/// Waits until `pid` (a child) has exited, leaving it to be reaped.
fn exited(pid: i32) {
    use rustix::process::{Pid, WaitId, WaitIdOptions};
    let Some(child) = Pid::from_raw(pid) else {
        return;
    };
    while let Err(Errno::INTR) = rustix::process::waitid(
        WaitId::Pid(child),
        WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
    ) {}
}

struct Proc {
    pid: i32,
    ppid: i32,
    session: i32,
}

/// The live (not zombie) processes in `/proc`, with their parent and session.
fn processes() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp session …`; comm may hold spaces and parens.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() == Some(&"Z") {
            continue;
        }
        let num = |i: usize| fields.get(i).and_then(|f| f.parse::<i32>().ok());
        if let (Some(ppid), Some(session)) = (num(1), num(3)) {
            out.push(Proc { pid, ppid, session });
        }
    }
    out
}

fn open_in(root: &OwnedFd, rel: &str, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    loop {
        match rustix::fs::openat2(
            root,
            rel,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) {
            // The kernel asks for a retry when a rename raced the resolution.
            Err(Errno::AGAIN) => continue,
            other => return other,
        }
    }
}

/// A regular file of the rootfs (symlinks resolved inside it), or None where there is none.
fn read_in_root(root_fd: &OwnedFd, root: &Path, rel: &str) -> Result<Option<String>, SandboxError> {
    let err = |e: std::io::Error| SandboxError::ReadRootfs {
        path: format!("/{rel}"),
        source: e,
    };
    let fd = match open_in(root_fd, rel, OFlags::RDONLY | OFlags::NONBLOCK) {
        Ok(fd) => fd,
        Err(Errno::NOENT | Errno::NOTDIR) => return Ok(None),
        Err(e) => return Err(err(e.into())),
    };
    let file = File::from(fd);
    if !file.metadata().map_err(err)?.is_file() {
        return Ok(None);
    }
    let mut text = String::new();
    file.take(16 << 20).read_to_string(&mut text).map_err(|e| {
        err(std::io::Error::other(format!(
            "{e} (in {})",
            root.display()
        )))
    })?;
    Ok(Some(text))
}

/// `execvp`'s search, inside the rootfs.
fn lookup_in_root(root_fd: &OwnedFd, program: &str, path_var: &str) -> Option<String> {
    crate::container::search_path(program, path_var, |cand| {
        let Ok(fd) = open_in(root_fd, cand.trim_start_matches('/'), OFlags::PATH) else {
            return false;
        };
        rustix::fs::fstat(&fd).is_ok_and(|st| {
            FileType::from_raw_mode(st.st_mode) == FileType::RegularFile && st.st_mode & 0o111 != 0
        })
    })
}

/// `mkdir -p` of the cwd inside the rootfs (as docker makes a missing `WORKDIR`).
fn mkdir_in_root(root_fd: &OwnedFd, root: &Path, cwd: &str) -> Result<(), SandboxError> {
    let mut prefix = String::new();
    for part in cwd.split('/').filter(|p| !p.is_empty()) {
        let parent = if prefix.is_empty() {
            "."
        } else {
            prefix.as_str()
        };
        let dir = open_in(root_fd, parent, OFlags::PATH | OFlags::DIRECTORY).map_err(|e| {
            SandboxError::sys("open workdir", root.join(parent).display().to_string(), e)
        })?;
        match rustix::fs::mkdirat(&dir, part, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => {
                return Err(SandboxError::sys(
                    "mkdir workdir",
                    root.join(&prefix).join(part).display().to_string(),
                    e,
                ));
            }
        }
        prefix = if prefix.is_empty() {
            part.to_string()
        } else {
            format!("{prefix}/{part}")
        };
    }
    Ok(())
}

/// What [`Furnished::set_up`] put in the rootfs, to take back after the run.
struct Furnished {
    /// The rootfs's `/dev` (made here if `made_dev`), and the nodes made in it.
    dev: Option<(OwnedFd, Vec<&'static str>)>,
    made_dev: bool,
    made_shm: bool,
    root_fd: OwnedFd,
    /// The rootfs's `/etc`, and which of its files were moved into `stash` (the others were
    /// absent).
    etc: Option<(OwnedFd, Vec<(&'static str, bool)>)>,
    stash: Option<tempfile::TempDir>,
    stash_fd: Option<OwnedFd>,
}

impl Furnished {
    /// `extra_hosts` (`--add-host`) go after the container's own `/etc/hosts` lines.
    fn set_up(
        root_fd: &OwnedFd,
        root: &Path,
        extra_hosts: &[(String, String)],
    ) -> Result<Furnished, SandboxError> {
        let shown = |rel: &str| root.join(rel).display().to_string();
        let root_fd = rustix::io::fcntl_dupfd_cloexec(root_fd, 0)
            .map_err(|e| SandboxError::sys("dup", shown(""), e))?;
        let mut f = Furnished {
            dev: None,
            made_dev: false,
            made_shm: false,
            root_fd,
            etc: None,
            stash: None,
            stash_fd: None,
        };
        // /dev: only a real directory of the rootfs (a symlink in a hostile image is resolved
        // inside the rootfs, never on the host).
        let dev = match open_in(&f.root_fd, "dev", OFlags::RDONLY | OFlags::DIRECTORY) {
            Err(Errno::NOENT) => {
                match rustix::fs::mkdirat(&f.root_fd, "dev", Mode::from_raw_mode(0o755)) {
                    Ok(()) => f.made_dev = true,
                    Err(e) => return Err(SandboxError::sys("mkdir", shown("dev"), e)),
                }
                open_in(&f.root_fd, "dev", OFlags::RDONLY | OFlags::DIRECTORY).ok()
            }
            other => other.ok(),
        };
        if let Some(dev) = dev {
            let mut made = Vec::new();
            for (name, major, minor) in DEVICES {
                let number = rustix::fs::makedev(major, minor);
                match rustix::fs::mknodat(
                    &dev,
                    name,
                    FileType::CharacterDevice,
                    Mode::from_raw_mode(0o666),
                    number,
                ) {
                    Ok(()) => made.push(name),
                    Err(Errno::EXIST) => continue,
                    Err(e) => {
                        f.dev = Some((dev, made));
                        f.take_back_dev();
                        return Err(SandboxError::sys(
                            "mknod (needs CAP_MKNOD)",
                            shown(&format!("dev/{name}")),
                            e,
                        ));
                    }
                }
                // The umask took bits off.
                let _ =
                    rustix::fs::chmodat(&dev, name, Mode::from_raw_mode(0o666), AtFlags::empty());
            }
            if rustix::fs::mkdirat(&dev, "shm", Mode::from_raw_mode(0o1777)).is_ok() {
                f.made_shm = true;
                let _ =
                    rustix::fs::chmodat(&dev, "shm", Mode::from_raw_mode(0o1777), AtFlags::empty());
            }
            f.dev = Some((dev, made));
        }
        // /etc's name-service files: the container's, for the run only.
        let Ok(etc) = open_in(&f.root_fd, "etc", OFlags::RDONLY | OFlags::DIRECTORY) else {
            return Ok(f);
        };
        let parent = root.parent().unwrap_or(Path::new("/"));
        let stash = tempfile::Builder::new()
            .prefix(".kiln-chroot-")
            .tempdir_in(parent)
            .map_err(|e| {
                SandboxError::sys("mkdir staging dir in", parent.display().to_string(), e)
            })?;
        let stash_fd = rustix::fs::open(
            stash.path(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| SandboxError::sys("open", stash.path().display().to_string(), e))?;
        let mut moved = Vec::new();
        let mut result = Ok(());
        for name in ["resolv.conf", "hosts", "hostname"] {
            let mut host = std::fs::read(Path::new("/etc").join(name)).unwrap_or_default();
            if name == "hosts" && !extra_hosts.is_empty() {
                if !host.is_empty() && !host.ends_with(b"\n") {
                    host.push(b'\n');
                }
                for (hostname, address) in extra_hosts {
                    host.extend_from_slice(format!("{address}\t{hostname}\n").as_bytes());
                }
            }
            let was = match rustix::fs::renameat(&etc, name, &stash_fd, name) {
                Ok(()) => true,
                Err(Errno::NOENT) => false,
                Err(e) => {
                    result = Err(SandboxError::sys(
                        "rename aside",
                        shown(&format!("etc/{name}")),
                        e,
                    ));
                    break;
                }
            };
            moved.push((name, was));
            let written = rustix::fs::openat(
                &etc,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )
            .map_err(std::io::Error::from)
            .and_then(|fd| File::from(fd).write_all(&host));
            if let Err(e) = written {
                result = Err(SandboxError::sys("write", shown(&format!("etc/{name}")), e));
                break;
            }
        }
        f.etc = Some((etc, moved));
        f.stash = Some(stash);
        f.stash_fd = Some(stash_fd);
        match result {
            Ok(()) => Ok(f),
            Err(e) => {
                let _ = f.take_back();
                Err(e)
            }
        }
    }

    fn take_back_dev(&mut self) {
        if let Some((dev, made)) = self.dev.take() {
            for name in made {
                let _ = rustix::fs::unlinkat(&dev, name, AtFlags::empty());
            }
            if self.made_shm {
                let _ = rustix::fs::unlinkat(&dev, "shm", AtFlags::REMOVEDIR);
            }
        }
        if self.made_dev {
            // Not empty if the run wrote there: it stays, out of every layer all the same.
            let _ = rustix::fs::unlinkat(&self.root_fd, "dev", AtFlags::REMOVEDIR);
        }
    }

    /// Puts the image's own files back; the first failure is returned, after every attempt.
    fn take_back(mut self) -> Result<(), SandboxError> {
        self.take_back_dev();
        let mut result = Ok(());
        if let (Some((etc, moved)), Some(stash_fd)) = (&self.etc, &self.stash_fd) {
            for (name, was) in moved {
                match rustix::fs::unlinkat(etc, *name, AtFlags::empty()) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(Errno::ISDIR) => {
                        let _ = rustix::fs::unlinkat(etc, *name, AtFlags::REMOVEDIR);
                    }
                    Err(e) if result.is_ok() => {
                        result = Err(SandboxError::sys(
                            "remove the run's",
                            format!("/etc/{name}"),
                            e,
                        ));
                    }
                    Err(_) => {}
                }
                if *was
                    && let Err(e) = rustix::fs::renameat(stash_fd, *name, etc, *name)
                    && result.is_ok()
                {
                    result = Err(SandboxError::sys(
                        "put back the image's",
                        format!("/etc/{name}"),
                        e,
                    ));
                }
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn furnished_paths_are_relative() {
        assert!(FURNISHED.iter().all(|p| !p.starts_with('/')));
    }
}
