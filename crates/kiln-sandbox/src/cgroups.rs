//! Resource limits of a run: a cgroup per run with docker's `--memory` and `--pids-limit`.
//!
//! cgroup v2 (one unified hierarchy) and v1 (a hierarchy per controller) are both handled:
//! a run gets `kiln/<pid>-<n>` under the hierarchy's root, with `memory.max` and `pids.max`
//! (v2) or `memory.limit_in_bytes` and `pids.max` (v1). pid 1 moves itself in by writing `0`
//! to the `cgroup.procs` files opened here, before it forks the process, so nothing the
//! step starts escapes the limits. The cgroups are removed when the run ends.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::SandboxError;

/// The limits of a run; `None` means the host's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Memory in bytes (`--memory`).
    pub memory: Option<u64>,
    /// Processes and threads (`--pids-limit`).
    pub pids: Option<u64>,
}

impl Limits {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.memory.is_some() || self.pids.is_some()
    }
}

const ROOT: &str = "/sys/fs/cgroup";

/// The cgroups of one run, removed on drop.
pub(crate) struct RunCgroups {
    dirs: Vec<PathBuf>,
    procs: Vec<File>,
}

impl RunCgroups {
    /// Creates the cgroups for `limits`. `Ok(None)` when no limit is set; an error names what
    /// is missing when the machine cannot enforce them.
    pub(crate) fn create(limits: &Limits) -> Result<Option<RunCgroups>, SandboxError> {
        if !limits.any() {
            return Ok(None);
        }
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut cgroups = RunCgroups {
            dirs: Vec::new(),
            procs: Vec::new(),
        };
        if Path::new(ROOT).join("cgroup.controllers").exists() {
            let kiln = Path::new(ROOT).join("kiln");
            let controllers = "+memory +pids";
            write(&Path::new(ROOT).join("cgroup.subtree_control"), controllers)?;
            mkdir(&kiln)?;
            write(&kiln.join("cgroup.subtree_control"), controllers)?;
            let dir = cgroups.add_dir(kiln.join(&name))?;
            if let Some(bytes) = limits.memory {
                write(&dir.join("memory.max"), &bytes.to_string())?;
                // docker's default --memory-swap: as much swap again as memory.
                write(&dir.join("memory.swap.max"), &bytes.to_string()).ok();
            }
            if let Some(pids) = limits.pids {
                write(&dir.join("pids.max"), &pids.to_string())?;
            }
        } else {
            if let Some(bytes) = limits.memory {
                let dir = cgroups.add_v1("memory", &name)?;
                write(&dir.join("memory.limit_in_bytes"), &bytes.to_string())?;
                // docker's default --memory-swap: memory and swap together twice the memory.
                // Absent when the kernel does not account swap.
                write(
                    &dir.join("memory.memsw.limit_in_bytes"),
                    &(bytes.saturating_mul(2)).to_string(),
                )
                .ok();
            }
            if let Some(pids) = limits.pids {
                let dir = cgroups.add_v1("pids", &name)?;
                write(&dir.join("pids.max"), &pids.to_string())?;
            }
        }
        for dir in cgroups.dirs.clone() {
            let procs = dir.join("cgroup.procs");
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&procs)
                .map_err(|e| unavailable(&procs, e))?;
            cgroups.procs.push(file);
        }
        Ok(Some(cgroups))
    }

    /// The `cgroup.procs` fds pid 1 writes `0` to.
    pub(crate) fn procs_fds(&self) -> Vec<BorrowedFd<'_>> {
        self.procs.iter().map(AsFd::as_fd).collect()
    }

    fn add_v1(&mut self, controller: &str, name: &str) -> Result<PathBuf, SandboxError> {
        let hierarchy = Path::new(ROOT).join(controller);
        if !hierarchy.join("cgroup.procs").exists() {
            return Err(unavailable(
                &hierarchy,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
        let kiln = hierarchy.join("kiln");
        mkdir(&kiln)?;
        self.add_dir(kiln.join(name))
    }

    fn add_dir(&mut self, dir: PathBuf) -> Result<PathBuf, SandboxError> {
        std::fs::create_dir(&dir).map_err(|e| unavailable(&dir, e))?;
        self.dirs.push(dir.clone());
        Ok(dir)
    }
}

impl Drop for RunCgroups {
    fn drop(&mut self) {
        self.procs.clear();
        // Every process of the run is gone by now, so the cgroups are empty.
        for dir in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn mkdir(dir: &Path) -> Result<(), SandboxError> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(unavailable(dir, e)),
    }
}

fn write(path: &Path, value: &str) -> Result<(), SandboxError> {
    std::fs::write(path, value).map_err(|e| unavailable(path, e))
}

fn unavailable(path: &Path, source: std::io::Error) -> SandboxError {
    SandboxError::Limits {
        path: path.display().to_string(),
        source,
    }
}
