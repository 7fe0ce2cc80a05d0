//! The setup thread: everything between "spec" and "pid 1 is running", and the teardown.
//!
//! It runs on a thread of its own so that it can allocate freely while it builds the container
//! (see [`namespaces`](crate::namespaces) for why a thread can do this without disturbing the
//! caller's other threads), and forks only at the very end.

use std::ffi::CStr;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;

use crate::cgroups::RunCgroups;
use crate::mounts::{self, Created, Planned};
use crate::namespaces::{self, HostMountNs};
use crate::network::PrivateNetwork;
use crate::process::{self, ChildFds, ChildPlan, Session};
use crate::rootfs::{self, HostLayers, Target};
use crate::syscall::{FileKind, LinuxSyscall, Syscall};
use crate::{ExitStatus, Mount, Network, Outcome, Rootfs, RunSpec, SandboxError, user};

/// The host resolver files bound with [`RunSpec::etc_binds`].
pub(crate) const ETC_FILES: &[&str] = &["/etc/resolv.conf", "/etc/hosts", "/etc/hostname"];

/// Where a rootless run's stand-in clones of the host's `/proc` and `/sys` sit while the
/// run's own are mounted (on the run's private /dev tmpfs; never seen by the process).
const VISIBLE_PROC: &CStr = c"/dev/.kiln-visible-proc";
const VISIBLE_SYS: &CStr = c"/dev/.kiln-visible-sys";

/// Docker's default `PATH`.
pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The caller's side of stdio, handed to the thread.
pub(crate) enum ThreadIo {
    Piped { stdout: OwnedFd, stderr: OwnedFd },
    Inherit,
    Tty { master_to: Sender<OwnedFd> },
}

pub(crate) fn pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| SandboxError::sys("pipe2", "sandbox pipe", e))
}

/// `mount_setattr(2)` attribute bits.
pub(crate) const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub(crate) const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub(crate) const MOUNT_ATTR_NODEV: u64 = 0x4;
pub(crate) const MOUNT_ATTR_NOEXEC: u64 = 0x8;

/// `open_tree(OPEN_TREE_CLONE)`: a detached copy of the mount tree at a host path, with the
/// `MOUNT_ATTR_*` bits of `attrs` set on every mount in it. A bind from the host is always
/// given at least `nosuid,nodev` by its callers: a setuid file or a device node that a step
/// plants through it must stay inert on the host and in the step.
fn clone_tree(path: &Path, attrs: u64) -> Result<OwnedFd, SandboxError> {
    use rustix::mount::OpenTreeFlags;
    const AT_RECURSIVE: libc::c_uint = 0x8000;
    let fd = rustix::mount::open_tree(
        rustix::fs::CWD,
        path,
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_RECURSIVE,
    )
    .map_err(|e| SandboxError::sys("open_tree", path.display().to_string(), e))?;
    if attrs != 0 {
        #[repr(C)]
        struct MountAttr {
            attr_set: u64,
            attr_clr: u64,
            propagation: u64,
            userns_fd: u64,
        }
        let attr = MountAttr {
            attr_set: attrs,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        // SAFETY: mount_setattr (rustix has no wrapper) reads the empty NUL-terminated path
        // and `size_of::<MountAttr>()` bytes of `attr`, which outlive the call; it writes no
        // memory.
        let r = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                fd.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        };
        if r < 0 {
            return Err(SandboxError::sys(
                "mount_setattr",
                path.display().to_string(),
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(fd)
}

/// The attributes of a bind from the host: never suid or device files, read-only if asked.
fn bind_attrs(readonly: bool) -> u64 {
    let attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    if readonly {
        attrs | MOUNT_ATTR_RDONLY
    } else {
        attrs
    }
}

/// A writable view of `source` whose writes vanish with the run, made on the staging tmpfs:
/// an overlay over a directory, or a copy of a file. BuildKit gives `--mount=type=bind,rw`
/// this meaning; the source itself is never written.
fn scratch_tree(
    sys: &dyn Syscall,
    staging: &Path,
    index: usize,
    source: &Path,
) -> Result<(OwnedFd, bool), SandboxError> {
    let base = staging.join(format!("scratch-{index}"));
    let shown = |p: &Path| p.display().to_string();
    sys.mkdir(&base, 0o700)
        .map_err(|e| SandboxError::sys("mkdir", shown(&base), e))?;
    let meta = std::fs::metadata(source)
        .map_err(|e| SandboxError::sys("stat bind source", shown(source), e))?;
    if meta.is_dir() {
        let [init, upper, work, merged] = ["init", "upper", "work", "merged"].map(|d| base.join(d));
        for d in [&init, &upper, &work, &merged] {
            sys.mkdir(d, 0o755)
                .map_err(|e| SandboxError::sys("mkdir", shown(d), e))?;
        }
        // The upper dir takes the source's owner and mode, so the merged root looks like it.
        std::os::unix::fs::chown(&upper, Some(meta.uid()), Some(meta.gid()))
            .map_err(|e| SandboxError::sys("chown", shown(&upper), e))?;
        std::fs::set_permissions(
            &upper,
            std::fs::Permissions::from_mode(meta.mode() & 0o7777),
        )
        .map_err(|e| SandboxError::sys("chmod", shown(&upper), e))?;
        rootfs::mount_overlay(sys, &merged, &init, &[source.to_path_buf()], &upper, &work)?;
        Ok((clone_tree(&merged, bind_attrs(false))?, true))
    } else {
        let copy = base.join("file");
        std::fs::copy(source, &copy).map_err(|e| SandboxError::sys("copy", shown(source), e))?;
        std::os::unix::fs::chown(&copy, Some(meta.uid()), Some(meta.gid()))
            .map_err(|e| SandboxError::sys("chown", shown(&copy), e))?;
        Ok((clone_tree(&copy, bind_attrs(false))?, false))
    }
}

/// slirp4netns' DNS forwarder, which asks the host's resolver.
const SLIRP_DNS: &str = "10.0.2.3";

/// The host's resolv.conf as a private network's step should see it: a loopback nameserver
/// (systemd-resolved's 127.0.0.53, a local dnsmasq) is the host's and unreachable from the
/// step's namespace, so it becomes slirp's forwarder, as docker replaces it for its bridge.
fn resolv_conf_for_private_network(host: &str) -> String {
    let loopback = |addr: &str| {
        addr.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
    };
    let mut forwarder = false;
    let mut out = String::new();
    for line in host.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver") && words.next().is_some_and(loopback) {
            if !forwarder {
                out.push_str(&format!("nameserver {SLIRP_DNS}\n"));
                forwarder = true;
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Writes the private network's resolv.conf on the staging tmpfs when the host's needs a
/// change, and returns the file to bind.
fn private_resolv_conf(staging: &Path) -> Result<PathBuf, SandboxError> {
    let host = Path::new("/etc/resolv.conf");
    let text = std::fs::read_to_string(host)
        .map_err(|e| SandboxError::sys("read", "/etc/resolv.conf", e))?;
    let fixed = resolv_conf_for_private_network(&text);
    if fixed == text || fixed.trim_end() == text.trim_end() {
        return Ok(host.to_path_buf());
    }
    let path = staging.join("resolv.conf");
    std::fs::write(&path, fixed)
        .map_err(|e| SandboxError::sys("write", path.display().to_string(), e))?;
    Ok(path)
}

/// The host's `/etc/hosts` with `extra` (`--add-host`) appended, written on the staging tmpfs.
fn hosts_with(staging: &Path, extra: &[(String, String)]) -> Result<PathBuf, SandboxError> {
    let mut text = std::fs::read_to_string("/etc/hosts")
        .map_err(|e| SandboxError::sys("read", "/etc/hosts", e))?;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    for (name, address) in extra {
        text.push_str(&format!("{address}\t{name}\n"));
    }
    let path = staging.join("hosts");
    std::fs::write(&path, text)
        .map_err(|e| SandboxError::sys("write", path.display().to_string(), e))?;
    Ok(path)
}

/// Read a small regular file of the rootfs (never a fifo or a device: no hang, no flood).
fn read_rootfs_file(path: &str) -> Result<Option<String>, SandboxError> {
    let err = |e| SandboxError::ReadRootfs {
        path: path.to_string(),
        source: e,
    };
    use std::os::unix::fs::OpenOptionsExt;
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(e)),
    };
    let meta = f.metadata().map_err(err)?;
    if !meta.is_file() {
        return Ok(None);
    }
    let mut s = String::new();
    f.take(16 << 20).read_to_string(&mut s).map_err(err)?;
    Ok(Some(s))
}

/// Find `program` like `execvp`, inside the current root.
fn lookup(program: &str, path_var: &str) -> Option<String> {
    search_path(program, path_var, |cand| {
        std::fs::metadata(cand).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// `execvp`'s search of `PATH`: `program` itself when it has a `/`, else the first
/// `DIR/program` that `is_executable` accepts. Shared by the namespaced and the chroot run,
/// which look at the rootfs in their own ways.
pub(crate) fn search_path(
    program: &str,
    path_var: &str,
    is_executable: impl Fn(&str) -> bool,
) -> Option<String> {
    if program.contains('/') {
        return Some(program.to_string());
    }
    path_var
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|dir| format!("{}/{program}", dir.trim_end_matches('/')))
        .find(|cand| is_executable(cand))
}

pub(crate) fn env_get<'a>(env: &'a [String], key: &str) -> Option<&'a str> {
    env.iter()
        .rev()
        .find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

pub(crate) fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Run the container; called on the setup thread.
pub(crate) fn run_container(
    spec: RunSpec,
    staging: Option<PathBuf>,
    io: ThreadIo,
) -> Result<Outcome, SandboxError> {
    let sys = LinuxSyscall;
    let host_ns = HostMountNs::open()?;
    let last_cap = last_cap();
    // Made on the host side: the container's /sys has no cgroup file system.
    let cgroups = RunCgroups::create(&spec.limits)?;
    let network = match spec.network {
        Network::Private => Some(PrivateNetwork::start()?),
        Network::Host | Network::None => None,
    };
    if let Some(network) = &network {
        network.enter()?;
    }
    namespaces::unshare(namespaces::unshare_flags(spec.network))?;
    // The umask of this thread only: its fs_struct is private after CLONE_NEWNS.
    rustix::process::umask(rustix::fs::Mode::empty());
    let from_host = FromHost {
        last_cap,
        cgroup_procs: cgroups
            .as_ref()
            .map(RunCgroups::procs_fds)
            .unwrap_or_default(),
    };
    let result = in_namespaces(&sys, &spec, staging.as_deref(), io, &from_host);
    // Leaving the mount namespace as its last member tears it down now, with every mount.
    let back = host_ns.enter();
    drop((network, cgroups));
    let outcome = result?;
    back?;
    Ok(outcome)
}

/// The container's stdio, as this thread holds it until pid 1 has its copies.
pub(crate) enum Stdio {
    /// The caller's own 0, 1 and 2.
    Inherit,
    /// `/dev/null` and the write ends of the output pipes.
    Piped([OwnedFd; 3]),
    /// The pty slave, on all three.
    Tty(OwnedFd),
}

impl Stdio {
    pub(crate) fn fds(&self) -> [BorrowedFd<'_>; 3] {
        match self {
            Stdio::Inherit => [
                rustix::stdio::stdin(),
                rustix::stdio::stdout(),
                rustix::stdio::stderr(),
            ],
            Stdio::Piped(fds) => fds.each_ref().map(AsFd::as_fd),
            Stdio::Tty(slave) => [slave.as_fd(); 3],
        }
    }
}

/// What the setup thread learnt on the host side, before it entered the namespaces.
struct FromHost<'a> {
    last_cap: u32,
    /// `cgroup.procs` of the run's cgroups, for pid 1 to move itself in.
    cgroup_procs: Vec<BorrowedFd<'a>>,
}

fn in_namespaces(
    sys: &dyn Syscall,
    spec: &RunSpec,
    staging: Option<&Path>,
    io: ThreadIo,
    from_host: &FromHost<'_>,
) -> Result<Outcome, SandboxError> {
    sys.mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )
    .map_err(|e| SandboxError::sys("mount make-rprivate", "/", e))?;
    if spec.network == Network::None {
        namespaces::loopback_up()?;
    }
    namespaces::set_hostname(&spec.hostname)?;

    // The staging tmpfs holds the overlay's init layer and the scratch mounts' upper dirs.
    if let Some(staging) = staging {
        sys.mount(
            Some("tmpfs"),
            staging,
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV,
            Some("mode=700"),
        )
        .map_err(|e| SandboxError::sys("mount tmpfs on", staging.display().to_string(), e))?;
    }

    // Sources of the binds, captured on the host side as detached trees.
    let mut trees: Vec<OwnedFd> = Vec::new();
    let mut planned: Vec<Planned> = Vec::new();
    // The host's own device nodes, bound one by one onto a `nodev` /dev: a node that a step
    // creates with mknod anywhere in the container can never be opened (runc's device cgroup
    // gives the same guarantee).
    let mut devices: Vec<(&str, OwnedFd)> = Vec::new();
    let insecure: &[&str] = if spec.insecure {
        mounts::INSECURE_DEVICES
    } else {
        &[]
    };
    for name in mounts::DEVICES {
        let host = Path::new("/dev").join(name);
        devices.push((
            name,
            clone_tree(&host, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC)?,
        ));
    }
    for name in insecure {
        // As BuildKit, the ones the host has.
        let host = Path::new("/dev").join(name);
        if host.exists() {
            devices.push((
                name,
                clone_tree(&host, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC)?,
            ));
        }
    }
    // sysfs may be mounted only by the user namespace that owns the network namespace: a
    // rootless run in the host's network gets the host's /sys, bound read-only, instead.
    let host_sys = if spec.network == Network::Host && crate::userns::current().is_some() {
        Some(clone_tree(
            Path::new("/sys"),
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
        )?)
    } else {
        None
    };
    // A user namespace may mount procfs and sysfs only where one of the same type is fully
    // visible in its mount namespace, which the host's stop being after the pivot: clones of
    // them stand in /dev until the run's own are mounted, then go (see `VISIBLE`).
    let mut visible: Vec<(&CStr, OwnedFd)> = Vec::new();
    if crate::userns::current().is_some() {
        let attrs = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
        visible.push((VISIBLE_PROC, clone_tree(Path::new("/proc"), attrs)?));
        if host_sys.is_none() {
            visible.push((VISIBLE_SYS, clone_tree(Path::new("/sys"), attrs)?));
        }
    }
    let mut targets: Vec<Target> = ["/proc", "/dev", "/sys"]
        .iter()
        .map(|p| Target {
            path: p.to_string(),
            kind: FileKind::Dir,
            shadow: false,
        })
        .collect();
    if spec.etc_binds {
        for f in ETC_FILES {
            if !Path::new(f).exists() {
                continue;
            }
            let source = match (*f, spec.network, staging) {
                ("/etc/resolv.conf", Network::Private, Some(staging)) => {
                    private_resolv_conf(staging)?
                }
                ("/etc/hosts", _, staging) if !spec.extra_hosts.is_empty() => {
                    let staging = staging.ok_or_else(|| {
                        SandboxError::Spec("extra hosts need an overlay rootfs".into())
                    })?;
                    hosts_with(staging, &spec.extra_hosts)?
                }
                _ => PathBuf::from(f),
            };
            let fd = clone_tree(&source, bind_attrs(true))?;
            planned.push(Planned::Tree {
                target: f.to_string(),
                fd: fd.as_raw_fd(),
                dir: false,
            });
            trees.push(fd);
            targets.push(Target {
                path: f.to_string(),
                kind: FileKind::File,
                shadow: true,
            });
        }
    }
    let n_etc = planned.len();
    for (index, m) in spec.mounts.iter().enumerate() {
        match m {
            Mount::Bind {
                source,
                target,
                readonly,
            } => {
                let dir = std::fs::metadata(source)
                    .map_err(|e| {
                        SandboxError::sys("stat bind source", source.display().to_string(), e)
                    })?
                    .is_dir();
                let fd = clone_tree(source, bind_attrs(*readonly))?;
                planned.push(Planned::Tree {
                    target: target.clone(),
                    fd: fd.as_raw_fd(),
                    dir,
                });
                trees.push(fd);
            }
            Mount::Scratch { source, target } => {
                let staging = staging.ok_or_else(|| {
                    SandboxError::Spec("a scratch mount needs an overlay rootfs".into())
                })?;
                let (fd, dir) = scratch_tree(sys, staging, index, source)?;
                planned.push(Planned::Tree {
                    target: target.clone(),
                    fd: fd.as_raw_fd(),
                    dir,
                });
                trees.push(fd);
            }
            Mount::Tmpfs { target, size } => planned.push(Planned::Tmpfs {
                target: target.clone(),
                size: *size,
            }),
        }
    }
    mounts::sort_outer_first(&mut planned[n_etc..]);
    // Targets in /dev get their mountpoints on its tmpfs later, never in the rootfs; targets
    // inside another mount get theirs in it, once it is mounted.
    for (_, p) in planned.iter().enumerate().skip(n_etc).filter(|(i, p)| {
        !p.target().starts_with("/dev/") && mounts::outer_of(&planned, *i).is_none()
    }) {
        let kind = if p.is_dir() {
            FileKind::Dir
        } else {
            FileKind::File
        };
        targets.push(Target {
            path: p.target().to_string(),
            kind,
            shadow: false,
        });
    }

    // The root, `nodev` so that device nodes in the image or made by the step stay inert.
    let (root, fallback) = match (&spec.rootfs, staging) {
        (
            Rootfs::Overlay {
                lowers,
                upper,
                work,
            },
            Some(staging),
        ) => {
            let init = staging.join("init");
            let root = staging.join("root");
            for d in [&init, &root] {
                sys.mkdir(d, 0o755)
                    .map_err(|e| SandboxError::sys("mkdir", d.display().to_string(), e))?;
            }
            let plan = rootfs::plan_init(&HostLayers(lowers), &targets)
                .map_err(|e| SandboxError::sys("lstat lower dirs for", "mountpoints", e))?;
            rootfs::write_init(&init, &plan)?;
            rootfs::mount_overlay(sys, &root, &init, lowers, upper, work)?;
            (root, plan.fallback)
        }
        (Rootfs::Dir(dir), _) => {
            let shown = dir.display().to_string();
            sys.mount(Some(&shown), dir, None, libc::MS_BIND | libc::MS_REC, None)
                .map_err(|e| SandboxError::sys("mount bind rootfs on", &shown, e))?;
            sys.mount(
                None,
                dir,
                None,
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NODEV,
                None,
            )
            .map_err(|e| SandboxError::sys("remount nodev rootfs", &shown, e))?;
            (dir.clone(), targets)
        }
        (Rootfs::Chroot(_), _) => {
            return Err(SandboxError::Spec(
                "a chroot rootfs is run by the chroot module, not in namespaces".into(),
            ));
        }
        (Rootfs::Overlay { .. }, None) => {
            return Err(SandboxError::Spec("overlay without staging dir".into()));
        }
    };
    rootfs::pivot(sys, &root)?;

    // From here on every path is inside the container.
    let mut created: Vec<Created> = Vec::new();
    let devices: Vec<(&str, RawFd)> = devices.iter().map(|(n, fd)| (*n, fd.as_raw_fd())).collect();
    let result = inside(
        sys,
        spec,
        &planned,
        &devices,
        host_sys.as_ref().map(AsRawFd::as_raw_fd),
        &visible
            .iter()
            .map(|(p, fd)| (*p, fd.as_raw_fd()))
            .collect::<Vec<_>>(),
        &fallback,
        &mut created,
        io,
        from_host,
    );
    drop((trees, host_sys, visible));
    let cleaned = mounts::cleanup(sys, &planned, &created)
        .map_err(|e| SandboxError::sys("remove created mountpoints in", "the rootfs", e));
    let outcome = result?;
    cleaned?;
    Ok(outcome)
}

#[allow(clippy::too_many_arguments)]
fn inside(
    sys: &dyn Syscall,
    spec: &RunSpec,
    planned: &[Planned],
    devices: &[(&str, RawFd)],
    host_sys: Option<RawFd>,
    visible: &[(&'static CStr, RawFd)],
    fallback: &[Target],
    created: &mut Vec<Created>,
    io: ThreadIo,
    from_host: &FromHost<'_>,
) -> Result<Outcome, SandboxError> {
    for t in fallback {
        mounts::ensure_mountpoint(sys, Path::new(&t.path), t.kind, created)?;
    }
    mounts::mount_dev(sys, devices, spec.shm_size)?;
    for (path, tree) in visible {
        let path = Path::new(std::ffi::OsStr::from_bytes(path.to_bytes()));
        sys.mkdir(path, 0o700)
            .map_err(|e| SandboxError::sys("mkdir", path.display().to_string(), e))?;
        sys.attach_tree(*tree, path)
            .map_err(|e| SandboxError::sys("move_mount", path.display().to_string(), e))?;
    }
    match host_sys {
        Some(tree) => sys
            .attach_tree(tree, Path::new("/sys"))
            .map_err(|e| SandboxError::sys("move_mount host sysfs on", "/sys", e))?,
        None => mounts::mount_sys(sys, spec.insecure)?,
    }
    if visible.iter().any(|(p, _)| *p == VISIBLE_SYS) {
        let path = Path::new(std::ffi::OsStr::from_bytes(VISIBLE_SYS.to_bytes()));
        sys.umount(path, libc::MNT_DETACH)
            .map_err(|e| SandboxError::sys("umount", path.display().to_string(), e))?;
        sys.rmdir(path)
            .map_err(|e| SandboxError::sys("rmdir", path.display().to_string(), e))?;
    }
    // Mountpoints in /dev go on its fresh tmpfs, which dies with the run.
    let mut in_dev = Vec::new();
    for (_, p) in planned
        .iter()
        .enumerate()
        .filter(|(i, p)| p.target().starts_with("/dev/") && mounts::outer_of(planned, *i).is_none())
    {
        let kind = if p.is_dir() {
            FileKind::Dir
        } else {
            FileKind::File
        };
        mounts::ensure_mountpoint(sys, Path::new(p.target()), kind, &mut in_dev)?;
    }
    mounts::mount_planned(sys, planned)?;

    let passwd = read_rootfs_file("/etc/passwd")?;
    let group = read_rootfs_file("/etc/group")?;
    let who = user::resolve(&spec.user, passwd.as_deref(), group.as_deref()).map_err(|reason| {
        SandboxError::User {
            spec: spec.user.clone(),
            reason,
        }
    })?;

    let mut env = spec.env.clone();
    if env_get(&env, "PATH").is_none() {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    if env_get(&env, "HOME").is_none() {
        env.push(format!("HOME={}", who.home));
    }
    let path_var = env_get(&env, "PATH").unwrap_or(DEFAULT_PATH).to_string();
    let program = &spec.args[0];
    let exe = lookup(program, &path_var).ok_or_else(|| SandboxError::NotFound {
        program: program.clone(),
        path: path_var.clone(),
    })?;

    let cwd = if spec.cwd.starts_with('/') {
        spec.cwd.clone()
    } else {
        format!("/{}", spec.cwd)
    };
    // Explicit mode: this thread's umask is 0.
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o755)
        .create(&cwd)
        .map_err(|e| SandboxError::sys("mkdir workdir", &cwd, e))?;

    // stdio of the container.
    let (keep, session) = match io {
        ThreadIo::Inherit => (Stdio::Inherit, Session::Detach),
        ThreadIo::Piped { stdout, stderr } => {
            let null =
                File::open("/dev/null").map_err(|e| SandboxError::sys("open", "/dev/null", e))?;
            (
                Stdio::Piped([OwnedFd::from(null), stdout, stderr]),
                Session::Detach,
            )
        }
        ThreadIo::Tty { master_to } => {
            let (master, slave) = crate::tty::open_pty()?;
            let ws = crate::tty::host_winsize().unwrap_or(rustix::termios::Winsize {
                ws_row: 24,
                ws_col: 80,
                ws_xpixel: 0,
                ws_ypixel: 0,
            });
            crate::tty::set_winsize(&master, ws);
            // If the caller's side is gone, the relay cannot run; run anyway without it.
            let _ = master_to.send(master);
            (Stdio::Tty(slave), Session::Tty)
        }
    };

    let mut plan = ChildPlan::new(
        &exe,
        &spec.args,
        &env,
        &cwd,
        &who,
        session,
        from_host.last_cap,
        spec.skip_syncs,
        spec.insecure,
        &spec.ulimits,
    )?;
    if visible.iter().any(|(p, _)| *p == VISIBLE_PROC) {
        plan.visible_proc = Some(VISIBLE_PROC);
    }
    let (err_r, err_w) = pipe()?;
    let (status_r, status_w) = pipe()?;
    if spec.interrupt.is_interrupted() {
        return Err(SandboxError::Interrupted);
    }
    let fds = ChildFds {
        stdio: keep.fds(),
        cgroup_procs: &from_host.cgroup_procs,
        err_w: err_w.as_fd(),
        status_w: status_w.as_fd(),
    };
    let pid = process::spawn_pid1(&plan, &fds)?;
    // Our copies of the write ends go now, so that the readers see EOF when the container ends.
    drop((err_w, status_w, keep));
    if let Err(e) = spec.interrupt.attach(pid) {
        let _ = wait_pid1(pid, &spec.interrupt);
        return Err(e);
    }
    let pid1_status = wait_pid1(pid, &spec.interrupt)?;

    let mut rec = [0u8; 8];
    if read_full(&err_r, &mut rec) == rec.len() {
        let stage = u32::from_ne_bytes([rec[0], rec[1], rec[2], rec[3]]);
        let errno = i32::from_ne_bytes([rec[4], rec[5], rec[6], rec[7]]);
        return Err(plan.describe(stage, errno));
    }
    let mut st = [0u8; 4];
    let status = if read_full(&status_r, &mut st) == st.len() {
        ExitStatus::from_wait_status(i32::from_ne_bytes(st))
    } else {
        ExitStatus::from_wait_status(pid1_status)
    };
    Ok(Outcome {
        status,
        interrupted: spec.interrupt.is_interrupted(),
    })
}

/// Wait for pid 1 without reaping, forget its pid for [`Interrupt`](crate::Interrupt), reap.
pub(crate) fn wait_pid1(pid: i32, interrupt: &crate::Interrupt) -> Result<i32, SandboxError> {
    use rustix::process::{Pid, WaitId, WaitIdOptions, WaitOptions};
    let shown = || format!("container pid 1 ({pid})");
    let Some(child) = Pid::from_raw(pid) else {
        return Err(SandboxError::errno("waitid", shown(), libc::ECHILD));
    };
    loop {
        match rustix::process::waitid(
            WaitId::Pid(child),
            WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
        ) {
            Ok(_) => break,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                interrupt.detach(pid);
                return Err(SandboxError::sys("waitid", shown(), e));
            }
        }
    }
    interrupt.detach(pid);
    loop {
        match rustix::process::waitpid(Some(child), WaitOptions::empty()) {
            Ok(Some((_, status))) => return Ok(status.as_raw()),
            Ok(None) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(SandboxError::sys("waitpid", shown(), e)),
        }
    }
}

pub(crate) fn read_full(fd: &OwnedFd, buf: &mut [u8]) -> usize {
    let mut got = 0;
    while got < buf.len() {
        match rustix::io::read(fd, &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => break,
        }
    }
    got
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_lookup_takes_the_last_entry() {
        let env = vec![
            "PATH=/a".to_string(),
            "PATHX=1".to_string(),
            "PATH=/b".to_string(),
        ];
        assert_eq!(env_get(&env, "PATH"), Some("/b"));
        assert_eq!(env_get(&env, "HOME"), None);
    }

    #[test]
    fn loopback_resolvers_become_slirps_forwarder() {
        let host = "search example.org\nnameserver 127.0.0.53\nnameserver ::1\noptions edns0\n";
        assert_eq!(
            resolv_conf_for_private_network(host),
            "search example.org\nnameserver 10.0.2.3\noptions edns0\n"
        );
        let remote = "nameserver 10.255.255.53\n";
        assert_eq!(resolv_conf_for_private_network(remote), remote);
    }

    #[test]
    fn programs_with_a_slash_are_not_searched() {
        assert_eq!(lookup("./x", "/nowhere").as_deref(), Some("./x"));
        assert_eq!(
            lookup("surely-not-a-program-kiln", "/nowhere:/also-not"),
            None
        );
    }
}
