//! `kill -9` in the middle of writes, and a full disk: the store stays usable.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

/// A rootfs tarball of about 160 MB of incompressible data.
fn big_tarball(env: &Env) -> std::path::PathBuf {
    let dir = env.path("big");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..4 {
        run(Command::new("head")
            .args(["-c", "40M", "/dev/urandom"])
            .stdout(std::fs::File::create(dir.join(format!("blob{i}"))).unwrap()));
    }
    let tar = env.path("big.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&dir)
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    tar
}

fn staged_bytes(store: &Path) -> u64 {
    walk_size(&store.join("tmp"))
}

fn walk_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => walk_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Starts `args`, waits until the store's staging area holds `threshold` bytes (or the process
/// ends), and kills it with SIGKILL. Returns whether the kill landed mid-write.
fn kill_when_staged(env: &Env, args: &[&str], threshold: u64) -> bool {
    let mut child = env
        .kiln()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if staged_bytes(&env.root()) >= threshold || Instant::now() > deadline {
            break;
        }
        // Polling a condition, not waiting on time: the kill point is the byte count.
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    true
}

#[test]
fn kill_9_during_import_and_load_leaves_a_working_store() {
    let env = Env::new();
    let tar = big_tarball(&env);
    let size = std::fs::metadata(&tar).unwrap().len();
    env.busybox_base("survivor");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let mut landed = 0;
    for fraction in [1, 30, 70, 99, 1 + seed % 98] {
        if kill_when_staged(
            &env,
            &["import", tar.to_str().unwrap(), "big"],
            size * fraction / 100,
        ) {
            landed += 1;
        }
        let images = env.ok(&["images"]);
        assert!(
            images.contains("survivor"),
            "after kill at {fraction}%: {images}"
        );
        assert!(
            !images.contains("big "),
            "a killed import must not be tagged: {images}"
        );
    }
    assert!(
        landed >= 3,
        "the kill should land mid-import most of the time ({landed}/5)"
    );
    // The next import succeeds, and the dead processes' staging is cleared.
    env.ok(&["import", tar.to_str().unwrap(), "big"]);
    assert!(env.ok(&["images"]).contains("big"));
    assert_eq!(
        staged_bytes(&env.root()),
        0,
        "staging of killed processes is cleared"
    );

    let archive = env.path("big-archive.tar");
    env.ok(&["save", "-o", archive.to_str().unwrap(), "big"]);
    env.ok(&["rmi", "big"]);
    env.ok(&["gc"]);
    for fraction in [10, 60, 95] {
        kill_when_staged(
            &env,
            &["load", "-i", archive.to_str().unwrap()],
            size * fraction / 100,
        );
        let images = env.ok(&["images"]);
        assert!(
            !images.contains("big "),
            "a killed load must not be tagged: {images}"
        );
    }
    env.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert!(env.ok(&["images"]).contains("big"));
}

#[test]
fn a_full_disk_fails_cleanly_and_keeps_the_store() {
    let env = Env::new();
    let tar = big_tarball(&env);
    let small = env.path("small-disk");
    std::fs::create_dir_all(&small).unwrap();
    run(Command::new("mount").args([
        "-t",
        "tmpfs",
        "-o",
        "size=48m",
        "tmpfs",
        small.to_str().unwrap(),
    ]));
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _guard = Unmount(&small);
    let root = small.join("store");
    let kiln = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("--root")
            .arg(&root)
            .args(args)
            .output()
            .unwrap()
    };
    let busybox = busybox_tar();
    assert_success(
        &kiln(&["import", busybox.to_str().unwrap(), "fits"]),
        "import of a small base",
    );
    let out = kiln(&["import", tar.to_str().unwrap(), "too-big"]);
    let err = assert_clean_failure(&out, "import onto a full disk");
    assert!(err.contains("No space left on device"), "{err}");
    let listed = kiln(&["images"]);
    assert_success(&listed, "images after a full disk");
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains("fits") && !listed.contains("too-big"),
        "{listed}"
    );
    assert_eq!(
        walk_size(&root.join("tmp")),
        0,
        "a failed import leaves no staging behind"
    );
}
