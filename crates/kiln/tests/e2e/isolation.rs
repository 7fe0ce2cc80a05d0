//! A RUN cannot reach the host, and nothing of a build outlives it: no mount, no process, no
//! half-written store, whether the step succeeds, fails or is interrupted.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;

use crate::util::*;

/// Processes whose root or cwd is under `dir` (a container left behind).
fn processes_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        for link in ["root", "cwd"] {
            if let Ok(target) = std::fs::read_link(entry.path().join(link))
                && target.starts_with(dir)
            {
                found.push(format!("pid {pid} {link} -> {}", target.display()));
            }
        }
    }
    found
}

fn assert_nothing_left(env: &Env, when: &str) {
    let mounts = mounts_under(env.dir.path());
    assert!(mounts.is_empty(), "mounts left {when}: {mounts:?}");
    let procs = processes_under(env.dir.path());
    assert!(procs.is_empty(), "processes left {when}: {procs:?}");
}

fn write_context(env: &Env, name: &str, dockerfile: &str) -> String {
    let dir = env.path(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    dir.to_string_lossy().into_owned()
}

#[test]
fn a_run_step_cannot_touch_the_host() {
    let env = Env::new();
    env.busybox_base("busybox");
    let sentinel = env.path("host-sentinel");
    std::fs::write(&sentinel, "untouched").unwrap();
    let s = sentinel.display();
    let dockerfile = format!(
        "FROM busybox\n\
         RUN echo pwned > /proc/1/root{s} 2>/dev/null; echo pwned > /proc/1/root/kiln-escape 2>/dev/null; true\n\
         RUN mount -t tmpfs tmpfs /mnt 2>/dev/null && echo MOUNTED || echo mount-denied-$((6*7))\n\
         RUN cd /../../../../ && echo pwned > .{s} 2>/dev/null; mkdir -p $(dirname {s}) && echo inside > {s}; true\n\
         RUN echo 1 > /sys/kernel/kiln-escape 2>/dev/null && echo SYS-WRITABLE || echo sys-read-only-$((6*7))\n"
    );
    let ctx = write_context(&env, "escape", &dockerfile);
    let (_, log) = env.build(&["-t", "escape", &ctx]);
    assert!(
        // The marker is computed, so the echoed RUN line cannot satisfy the check.
        log.contains("mount-denied-42") && !log.contains("#3 MOUNTED"),
        "mount must fail inside a RUN:\n{log}"
    );
    assert!(
        log.contains("sys-read-only-42"),
        "/sys must be read-only:\n{log}"
    );
    assert_eq!(std::fs::read_to_string(&sentinel).unwrap(), "untouched");
    assert!(!Path::new("/kiln-escape").exists());
    // The writes that stayed inside the rootfs are in the image, as they should be.
    let inside = env.ok(&["run", "--rm", "escape", "cat", &sentinel.to_string_lossy()]);
    assert_eq!(inside.trim(), "inside");
    assert_nothing_left(&env, "after a successful build");
}

#[test]
fn a_failing_run_reports_the_step_and_adds_nothing() {
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = write_context(
        &env,
        "fail",
        "FROM busybox\nRUN echo first-line && echo second-line && exit 7\n",
    );
    let before: Vec<_> = std::fs::read_dir(env.root().join("oci/blobs/sha256"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let out = env
        .kiln()
        .args(["build", "-t", "broken", &ctx])
        .output()
        .unwrap();
    let err = assert_clean_failure(&out, "a build with a failing RUN");
    assert!(err.contains("line 2"), "names the line: {err}");
    assert!(err.contains("exit code 7"), "names the exit code: {err}");
    assert!(err.contains("RUN echo first-line"), "names the step: {err}");
    assert!(err.contains("second-line"), "shows the last output: {err}");
    let after: Vec<_> = std::fs::read_dir(env.root().join("oci/blobs/sha256"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(before.len(), after.len(), "a failed step adds no blob");
    assert!(!env.ok(&["images"]).contains("broken"));
    let staged = std::fs::read_dir(env.root().join("tmp")).unwrap().count();
    assert_eq!(staged, 0, "no staging is left");
    assert_nothing_left(&env, "after a failed build");
}

#[test]
fn sigint_during_a_run_stops_everything_and_keeps_the_store() {
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = write_context(
        &env,
        "long",
        // Two stages that run at once: Ctrl-C must stop both sandboxes.
        "FROM busybox AS other\nRUN echo other-started && sleep 600 & wait\n\
         FROM busybox\nRUN echo step-started && sleep 600 & wait\n\
         COPY --from=other /etc/passwd /p\n",
    );
    let mut child = env
        .kiln()
        .args(["build", "--jobs", "2", "-t", "long", &ctx])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    // Wait for both steps' own output: both containers are running.
    let printed = |seen: &str, text: &str| {
        seen.lines()
            .any(|l| l.split_once(' ').is_some_and(|(_, rest)| rest == text))
    };
    while !printed(&seen, "step-started") || !printed(&seen, "other-started") {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "kiln ended before both steps started:\n{seen}"
        );
        seen.push_str(&line);
    }
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "an interrupted build fails");
    assert!(rest.contains("interrupted"), "{rest}");
    assert!(!env.ok(&["images"]).contains("long"));
    assert_nothing_left(&env, "after SIGINT");
}
