//! Foreign-architecture binaries run through binfmt_misc: the kernel hands them to a
//! registered emulator (qemu-user). kiln does nothing in the sandbox for it; the emulator must
//! be registered with the `F` (fix binary) flag, so that the kernel opens it when it is
//! registered and the sandbox's root, which lacks it, does not matter.

use std::path::Path;

const BINFMT: &str = "/proc/sys/fs/binfmt_misc";
const INSTALL: &str = "install Debian's qemu-user-static and binfmt-support \
     (apt-get install qemu-user-static binfmt-support)";

/// qemu's name for an OCI architecture.
fn qemu_name(architecture: &str) -> Option<&'static str> {
    Some(match architecture {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "arm" => "arm",
        "386" => "i386",
        "ppc64le" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "mips64le" => "mips64el",
        "loong64" => "loongarch64",
        _ => return None,
    })
}

/// Checks that binaries of `architecture` can run on this machine: an emulator is registered,
/// enabled, and fixed (`F`). The error says what is missing and what to do.
pub fn check_emulation(architecture: &str) -> Result<(), String> {
    check_emulation_in(Path::new(BINFMT), architecture)
}

fn check_emulation_in(binfmt: &Path, architecture: &str) -> Result<(), String> {
    let Some(qemu) = qemu_name(architecture) else {
        return Err(format!(
            "kiln knows no emulator for the {architecture} architecture"
        ));
    };
    if !binfmt.join("status").exists() {
        return Err(format!(
            "binfmt_misc is not mounted; mount it (mount -t binfmt_misc binfmt_misc {BINFMT}), \
             then {INSTALL} and run update-binfmts --enable"
        ));
    }
    let entry = binfmt.join(format!("qemu-{qemu}"));
    let text = std::fs::read_to_string(&entry).map_err(|_| {
        format!(
            "no emulator for {architecture} is registered ({} is missing): {INSTALL}",
            entry.display()
        )
    })?;
    if text.lines().next().is_none_or(|l| l.trim() != "enabled") {
        return Err(format!(
            "the {architecture} emulator is registered but disabled: run update-binfmts --enable qemu-{qemu}"
        ));
    }
    let fixed = text
        .lines()
        .find_map(|l| l.strip_prefix("flags: "))
        .is_some_and(|flags| flags.contains('F'));
    if !fixed {
        return Err(format!(
            "the {architecture} emulator is registered without the F (fix binary) flag, so it \
             cannot run inside a sandbox: {INSTALL}, whose registration has it"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_architecture_is_named() {
        let err = check_emulation("vax").unwrap_err();
        assert!(err.contains("vax"), "{err}");
    }

    #[test]
    fn each_missing_piece_is_named_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let err = check_emulation_in(dir.path(), "arm64").unwrap_err();
        assert!(err.contains("binfmt_misc is not mounted"), "{err}");
        std::fs::write(dir.path().join("status"), "enabled\n").unwrap();
        let err = check_emulation_in(dir.path(), "arm64").unwrap_err();
        assert!(
            err.contains("no emulator for arm64") && err.contains("qemu-user-static"),
            "{err}"
        );
        let entry = dir.path().join("qemu-aarch64");
        std::fs::write(&entry, "disabled\ninterpreter /x\nflags: F\n").unwrap();
        let err = check_emulation_in(dir.path(), "arm64").unwrap_err();
        assert!(err.contains("disabled"), "{err}");
        std::fs::write(&entry, "enabled\ninterpreter /x\nflags: P\n").unwrap();
        let err = check_emulation_in(dir.path(), "arm64").unwrap_err();
        assert!(err.contains("F (fix binary)"), "{err}");
        std::fs::write(&entry, "enabled\ninterpreter /x\nflags: PF\n").unwrap();
        assert_eq!(check_emulation_in(dir.path(), "arm64"), Ok(()));
    }
}
