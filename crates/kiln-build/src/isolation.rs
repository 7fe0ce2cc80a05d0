//! `--isolation`: how RUN steps are isolated, and so how a step's rootfs is made.
//!
//! - [`Isolation::Oci`]: namespaces, an overlay of the parent snapshots, `pivot_root` (as
//!   runc); needs root with `CAP_SYS_ADMIN` and a seccomp profile that allows `unshare` and
//!   `mount`.
//! - [`Isolation::Rootless`]: the same inside a user namespace, for a normal user.
//! - [`Isolation::Chroot`]: no namespace and no mount (root in a container with docker's
//!   default security): each step's rootfs is a plain directory per stage, changed in place,
//!   its layer found by comparing two walks of it ([`crate::snapshot::WorkingRoot`]).
//!
//! `auto` takes the strongest that works here, probing for it.

use crate::Error;

/// How RUN steps are isolated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Isolation {
    /// Namespaces and overlay mounts, as root.
    #[default]
    Oci,
    /// A user namespace, as a normal user.
    Rootless,
    /// `chroot` into a plain directory.
    Chroot,
}

impl Isolation {
    /// The flag's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Oci => "oci",
            Isolation::Rootless => "rootless",
            Isolation::Chroot => "chroot",
        }
    }
}

/// `--isolation`'s value: a mode, or `auto` (None).
pub fn parse(text: &str) -> Result<Option<Isolation>, Error> {
    match text {
        "auto" => Ok(None),
        "oci" => Ok(Some(Isolation::Oci)),
        "rootless" => Ok(Some(Isolation::Rootless)),
        "chroot" => Ok(Some(Isolation::Chroot)),
        other => Err(Error::BadInput(format!(
            "--isolation {other:?}: kiln has oci, rootless, chroot and auto"
        ))),
    }
}

/// The mode to build with, and why it was chosen: the one asked for if it works here, or for
/// `auto` the strongest that does. The error says what is missing and what to do.
pub fn choose(asked: Option<Isolation>) -> Result<(Isolation, String), Error> {
    // A normal user's kiln has re-entered itself in a user namespace before it got here.
    if let Some(mapping) = kiln_sandbox::userns::current() {
        let why = format!("user namespace {mapping}");
        return match asked {
            None | Some(Isolation::Rootless) => Ok((Isolation::Rootless, why)),
            Some(Isolation::Chroot) => {
                kiln_sandbox::chroot::check_chroot()?;
                Ok((Isolation::Chroot, format!("asked for, in {why}")))
            }
            Some(Isolation::Oci) => Err(Error::BadInput(
                "--isolation oci needs root: this kiln runs as a normal user, in a user \
                 namespace of its own; use --isolation rootless (the default here), or run \
                 kiln as root"
                    .into(),
            )),
        };
    }
    let oci = kiln_sandbox::check_namespaces();
    match asked {
        Some(Isolation::Oci) => match oci {
            Ok(()) => Ok((Isolation::Oci, "asked for".into())),
            Err(why) => Err(Error::BadInput(format!(
                "--isolation oci cannot work here: {why}. It needs root with CAP_SYS_ADMIN and \
                 a seccomp profile that allows unshare and mount (outside a container, or \
                 docker run --privileged); in a container with docker's default security use \
                 --isolation chroot"
            ))),
        },
        Some(Isolation::Rootless) => Err(Error::BadInput(
            "--isolation rootless is what a normal user's kiln does by itself (it enters a \
             user namespace with newuidmap/newgidmap): run kiln as that user; as root, use \
             --isolation oci or auto"
                .into(),
        )),
        Some(Isolation::Chroot) => {
            kiln_sandbox::chroot::check_chroot()?;
            Ok((Isolation::Chroot, "asked for".into()))
        }
        None => {
            if oci.is_ok() {
                return Ok((
                    Isolation::Oci,
                    "namespaces and overlay mounts work here".into(),
                ));
            }
            let oci_err = oci.err().map(|e| e.to_string()).unwrap_or_default();
            match kiln_sandbox::chroot::check_chroot() {
                Ok(()) => Ok((
                    Isolation::Chroot,
                    format!("no user namespaces or mounts allowed here: {oci_err}"),
                )),
                Err(chroot) => Err(Error::BadInput(format!(
                    "no isolation mode works here: oci needs namespaces and mounts ({oci_err}); \
                     chroot needs CAP_SYS_CHROOT ({chroot}). Run kiln as root (in a container: \
                     as root with docker's default capabilities), or as a normal user where \
                     user namespaces are allowed (rootless)"
                ))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_parses_and_others_are_errors() {
        for mode in [Isolation::Oci, Isolation::Rootless, Isolation::Chroot] {
            assert_eq!(parse(mode.as_str()).ok(), Some(Some(mode)));
        }
        assert_eq!(parse("auto").ok(), Some(None));
        let err = parse("vm").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("oci, rootless, chroot and auto"), "{err}");
    }
}
