//! Run one process in a rootfs: namespaces, overlay mounts, pivot_root, user, env, workdir.
//!
//! `kiln-sandbox` is what a Dockerfile `RUN` (and `kiln run`) executes in. One entry point,
//! [`run`], takes a [`RunSpec`] and streams the process's output to a callback:
//!
//! ```no_run
//! use kiln_sandbox::{run, OutputStream, Rootfs, RunSpec};
//!
//! let mut spec = RunSpec::new(
//!     Rootfs::Overlay {
//!         lowers: vec!["/var/lib/kiln/snapshots/b".into(), "/var/lib/kiln/snapshots/a".into()],
//!         upper: "/var/lib/kiln/tmp/step/upper".into(),
//!         work: "/var/lib/kiln/tmp/step/work".into(),
//!     },
//!     vec!["/bin/sh".into(), "-c".into(), "apt-get update".into()],
//! );
//! spec.cwd = "/app".into();
//! let outcome = run(&spec, &mut |stream, chunk| match stream {
//!     OutputStream::Stdout => { /* prefix with the step and print */ }
//!     OutputStream::Stderr => { /* same */ }
//! })?;
//! if outcome.interrupted || !outcome.status.success() {
//!     // do not commit the upper dir
//! }
//! # Ok::<(), kiln_sandbox::SandboxError>(())
//! ```
//!
//! # What a run gets
//!
//! - New mount, pid, ipc and uts namespaces, and a new network namespace with only `lo` (up)
//!   for [`Network::None`]. All mount propagation is private; nothing is ever mounted in the
//!   caller's mount namespace.
//! - The rootfs: an overlay of [`Rootfs::Overlay`]'s lowers and upper (or a plain dir),
//!   `pivot_root`ed into, the old root detached (`MNT_DETACH`), so no host mount is reachable.
//! - `/proc` (with docker's read-only and masked paths), `/dev` (tmpfs with `null`, `zero`,
//!   `full`, `random`, `urandom`, `tty`, a private `devpts` with `ptmx`, `shm`, `mqueue`),
//!   `/sys` read-only, and the host's `/etc/resolv.conf`, `/etc/hosts`, `/etc/hostname`
//!   bound read-only ([`RunSpec::etc_binds`]).
//! - **Mountpoints never reach the upper dir**: missing ones come from a private, top-most
//!   "init" lower layer (see [`rootfs`] for the rules and the one fallback). The cwd, created if
//!   missing, is real content, as with docker's `WORKDIR`.
//! - A pid-1 reaper ([`process`]) that forwards signals, reaps zombies and exits with the
//!   process's status; the whole namespace dies with it.
//! - The process runs as the resolved [`RunSpec::user`] (supplementary groups too) with docker's
//!   default capability bounding set: no `CAP_SYS_ADMIN`, so `mount` fails inside.
//! - A seccomp filter equivalent to docker's default profile for that capability set (kept as
//!   data in `seccomp/profile.toml`): no keyrings, no new namespaces, no `TIOCSTI`; with
//!   [`RunSpec::skip_syncs`] the sync calls return 0 without doing anything. A fresh session
//!   keyring, as runc gives each container.
//! - A session of its own, in every [`Stdio`] mode: the caller's terminal is never the
//!   process's controlling terminal.
//!
//! # Interruption and cleanup
//!
//! [`run`] returns only after every process of the container is gone and its mount namespace
//! is torn down. [`Interrupt`] (in the spec) lets a signal handler stop a run; the
//! [`Outcome::interrupted`] flag then tells the caller not to commit. If the caller's process
//! dies instead, pid 1 gets `SIGKILL` and the namespaces die with it.
//!
//! # Threads
//!
//! The container is built on a short-lived thread of its own; it `unshare`s and mounts without
//! affecting the caller's other threads, then `fork`s, doing only async-signal-safe work in the
//! children ([`process`]). The calling thread relays output meanwhile.
//!
//! # Rootless
//!
//! A normal user's kiln runs as root of a user namespace ([`userns`]): uid 0 there is the
//! user, and the run is the same, with three differences the kernel imposes. Overlays get
//! `userxattr` ([`overlay`]); `/proc` and `/sys` are mounted while clones of the host's stand
//! in the run's `/dev` (a user namespace may mount them only where they are already fully
//! visible), and `--network host` gets the host's `/sys` read-only; there is no cgroup, so
//! limits are refused by the caller.
//!
//! Requires root, or root of a user namespace (the tests say so when they are not run as
//! root), Linux ≥ 6.8
//! (`open_tree`, `move_mount`, `mount_setattr`, `close_range`, and overlayfs' `lowerdir+`,
//! see [`overlay`]).
#![deny(missing_docs)]

mod cgroups;
pub mod chroot;
mod container;
mod emulation;
mod error;
pub mod mounts;
pub mod namespaces;
mod network;
pub mod overlay;
pub mod process;
pub mod rootfs;
mod seccomp;
mod spec;
pub mod syscall;
pub mod tty;
mod ulimit;
pub mod user;
pub mod userns;

use std::os::fd::OwnedFd;
use std::path::Path;

pub use cgroups::Limits;
pub use emulation::check_emulation;
pub use error::SandboxError;
pub use spec::{
    DEFAULT_SHM_SIZE, ExitStatus, Interrupt, MAX_CONCURRENT_RUNS, Mount, Network, Outcome,
    OutputStream, Rootfs, RunSpec, Stdio,
};
pub use ulimit::Ulimit;

/// Whether this process can make the namespaces and the overlay mounts a run of
/// [`Rootfs::Overlay`] needs: tried on a thread of its own, which then ends, so nothing of it
/// stays. The error names the call the machine refused.
pub fn check_namespaces() -> Result<(), SandboxError> {
    let euid = rustix::process::geteuid().as_raw();
    if euid != 0 {
        return Err(SandboxError::NotRoot { euid });
    }
    std::thread::Builder::new()
        .name("kiln-probe".into())
        .spawn(|| {
            namespaces::unshare(namespaces::unshare_flags(Network::Host))?;
            rustix::mount::fsopen("overlay", rustix::mount::FsOpenFlags::FSOPEN_CLOEXEC)
                .map(drop)
                .map_err(|e| SandboxError::sys("fsopen", "overlay", e))
        })
        .map_err(|e| SandboxError::sys("spawn thread", "kiln-probe", e))?
        .join()
        .map_err(|_| SandboxError::Panicked)?
}

/// Whether this machine can enforce `limits` (a cgroup is made and removed again).
pub fn check_limits(limits: &Limits) -> Result<(), SandboxError> {
    cgroups::RunCgroups::create(limits).map(drop)
}

/// Run `spec.args` in the sandbox described by `spec` and wait for it.
///
/// `on_output` gets the output chunks as they arrive in [`Stdio::Piped`] and [`Stdio::Tty`]
/// modes (never in [`Stdio::Inherit`]). A non-zero exit is an `Ok` [`Outcome`]; an `Err` means
/// the process could not be started (or pid 1 could not be waited for), and says which call
/// failed on which path.
pub fn run(
    spec: &RunSpec,
    on_output: &mut dyn FnMut(OutputStream, &[u8]),
) -> Result<Outcome, SandboxError> {
    validate(spec)?;
    if let Rootfs::Chroot(_) = &spec.rootfs {
        chroot::check_chroot()?;
    } else {
        let euid = rustix::process::geteuid().as_raw();
        if euid != 0 {
            return Err(SandboxError::NotRoot { euid });
        }
    }
    if spec.interrupt.is_interrupted() {
        return Err(SandboxError::Interrupted);
    }
    let staging = match &spec.rootfs {
        Rootfs::Overlay { work, .. } => {
            let parent = work.parent().unwrap_or(Path::new("/"));
            Some(
                tempfile::Builder::new()
                    .prefix(".kiln-sandbox-")
                    .tempdir_in(parent)
                    .map_err(|e| {
                        SandboxError::sys("mkdir staging dir in", parent.display().to_string(), e)
                    })?,
            )
        }
        Rootfs::Dir(_) | Rootfs::Chroot(_) => None,
    };
    let staging_path = staging.as_ref().map(|t| t.path().to_path_buf());
    let owned = spec.clone();
    let spawn = |io| {
        std::thread::Builder::new()
            .name("kiln-sandbox".into())
            .spawn(move || match &owned.rootfs {
                Rootfs::Chroot(root) => {
                    let root = root.clone();
                    chroot::run_chroot(owned, root, io)
                }
                _ => container::run_container(owned, staging_path, io),
            })
            .map_err(|e| SandboxError::sys("spawn thread", "kiln-sandbox", e))
    };
    let handle = match spec.stdio {
        Stdio::Inherit => spawn(container::ThreadIo::Inherit)?,
        Stdio::Piped => {
            let (out_r, out_w) = container::pipe()?;
            let (err_r, err_w) = container::pipe()?;
            let h = spawn(container::ThreadIo::Piped {
                stdout: out_w,
                stderr: err_w,
            })?;
            relay_pipes(out_r, err_r, on_output);
            h
        }
        Stdio::Tty => {
            let (tx, rx) = std::sync::mpsc::channel();
            let h = spawn(container::ThreadIo::Tty { master_to: tx })?;
            if let Ok(master) = rx.recv() {
                tty::relay(master, on_output);
            }
            h
        }
    };
    let result = handle.join().map_err(|_| SandboxError::Panicked)?;
    drop(staging);
    result
}

fn validate(spec: &RunSpec) -> Result<(), SandboxError> {
    if spec.args.is_empty() || spec.args[0].is_empty() {
        return Err(SandboxError::Spec(
            "no command to run (args is empty)".into(),
        ));
    }
    for m in &spec.mounts {
        if !m.target().starts_with('/') || m.target().split('/').any(|c| c == "..") {
            return Err(SandboxError::Spec(format!(
                "mount target {:?} must be absolute, without '..'",
                m.target()
            )));
        }
    }
    if let Rootfs::Overlay { lowers, .. } = &spec.rootfs
        && lowers.is_empty()
    {
        return Err(SandboxError::Spec(
            "an overlay needs at least one lower dir".into(),
        ));
    }
    Ok(())
}

/// Deliver stdout and stderr chunks as they arrive, until both pipes reach EOF (every process
/// of the container is gone).
fn relay_pipes(out: OwnedFd, err: OwnedFd, on_output: &mut dyn FnMut(OutputStream, &[u8])) {
    use rustix::event::{PollFd, PollFlags};
    let mut open = [Some(out), Some(err)];
    let streams = [OutputStream::Stdout, OutputStream::Stderr];
    let mut buf = vec![0u8; 65536];
    while open.iter().any(Option::is_some) {
        let which: Vec<usize> = (0..open.len()).filter(|i| open[*i].is_some()).collect();
        let mut fds: Vec<PollFd<'_>> = open
            .iter()
            .flatten()
            .map(|fd| PollFd::new(fd, PollFlags::IN))
            .collect();
        match rustix::event::poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return,
        }
        let ready: Vec<bool> = fds.iter().map(|p| !p.revents().is_empty()).collect();
        drop(fds);
        for (&i, ready) in which.iter().zip(ready) {
            let Some(fd) = open[i].as_ref().filter(|_| ready) else {
                continue;
            };
            match rustix::io::read(fd, &mut buf) {
                Ok(n) if n > 0 => on_output(streams[i], &buf[..n]),
                Err(rustix::io::Errno::INTR) => {}
                _ => open[i] = None,
            }
        }
    }
}
