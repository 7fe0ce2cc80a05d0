//! The sandbox's edges: heredoc names, devices, bind mounts and the network. Each test starts
//! from an attacker's reproduction, and checks the legitimate use beside it too.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::util::*;

#[test]
fn heredoc_names_never_become_host_paths() {
    let env = Env::new();
    env.busybox_base("busybox");
    let victim = env.path("victim");
    std::fs::write(&victim, "original\n").unwrap();
    let v = victim.to_str().unwrap();
    let climb = format!("../../../../../../..{v}");
    let cases = [
        format!("FROM busybox\nCOPY <<{v} /x\npwned\n{v}\n"),
        format!("FROM busybox\nADD <<{v} /x\npwned\n{v}\n"),
        format!("FROM busybox\nCOPY <<\"{v}\" /x\npwned\n{v}\n"),
        format!("FROM busybox\nCOPY <<'{climb}' /x\npwned\n{climb}\n"),
    ];
    for (i, dockerfile) in cases.iter().enumerate() {
        let ctx = env.context(&format!("c{i}"), dockerfile, &[]);
        let out = env
            .kiln()
            .args(["build", "--no-lint", "-t", "h", &ctx])
            .output()
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&victim).unwrap(),
            "original\n",
            "case {i} wrote the host file {v}:\n{dockerfile}"
        );
        let stderr = assert_clean_failure(&out, &format!("case {i}"));
        assert!(
            stderr.contains("heredoc"),
            "case {i}: the error names the heredoc:\n{stderr}"
        );
    }
    // The Dockerfile on stdin takes the same path.
    let out = env.with_stdin(&["build", "--no-lint", "-t", "h", "-"], &cases[0]);
    assert_clean_failure(&out, "build from stdin");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "original\n");

    // A name that climbs but names one file is that file of the heredoc's own root, as in
    // BuildKit; the plain form keeps working.
    let ctx = env.context("legit",
        "FROM busybox\nCOPY <<../../greeting.txt <<EOF /app/\nhello\n../../greeting.txt\nplain\nEOF\n",
        &[],
    );
    env.build(&["--no-lint", "-t", "legit", &ctx]);
    let out = env.ok(&[
        "run",
        "--rm",
        "legit",
        "cat",
        "/app/greeting.txt",
        "/app/EOF",
    ]);
    assert_eq!(out, "hello\nplain\n");
}

/// A loop device over a file that starts with `marker`, detached on drop.
struct LoopDevice {
    path: String,
}

impl LoopDevice {
    fn new(env: &Env, marker: &str) -> LoopDevice {
        require("losetup");
        let file = env.path("loop.img");
        let mut data = marker.as_bytes().to_vec();
        data.resize(1 << 20, 0);
        std::fs::write(&file, data).unwrap();
        let path = run(Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&file))
        .trim()
        .to_owned();
        LoopDevice { path }
    }

    fn minor(&self) -> u32 {
        self.path.trim_start_matches("/dev/loop").parse().unwrap()
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.path]).status();
    }
}

#[test]
fn device_nodes_made_in_a_step_never_open() {
    let env = Env::new();
    env.busybox_base("busybox");
    let marker = "KILN-HOST-BLOCK-DEVICE-MARKER-0123";
    let device = LoopDevice::new(&env, marker);
    let minor = device.minor();
    // Every place a step can write: the rootfs, /dev itself, /dev/shm, a tmpfs mount.
    let dockerfile = format!(
        "FROM busybox\nRUN --mount=type=tmpfs,target=/scratch <<EOF\n\
         for d in /tmp /dev /dev/shm /scratch; do\n\
           mknod $d/blk b 7 {minor} && echo made-$d\n\
           head -c 34 $d/blk 2>/dev/null || echo blocked-$d\n\
         done\n\
         for c in 'kmsg 1 11' 'tty1 4 1' 'fuse 10 229' 'kvm 10 232'; do\n\
           set -- $c\n\
           mknod /tmp/$1 c $2 $3 && echo made-$1\n\
           (echo x > /tmp/$1) 2>/dev/null && echo OPENED-$1 || echo blocked-$1\n\
         done\n\
         echo hi > /dev/null && head -c 4 /dev/urandom | wc -c | sed 's/^ */urandom-/'\n\
         EOF\n"
    );
    let ctx = env.context("dev", &dockerfile, &[]);
    let (out, text) = env.build_output(&["--no-lint", "--no-cache", "-t", "dev", &ctx]);
    assert_success(&out, "the device probe build");
    assert!(
        !text.contains(marker),
        "a step read the host's {}:\n{text}",
        device.path
    );
    for place in ["/tmp", "/dev", "/dev/shm", "/scratch"] {
        assert!(
            text.contains(&format!("made-{place}")),
            "mknod in {place} ran:\n{text}"
        );
        assert!(
            text.contains(&format!("blocked-{place}")),
            "{place}:\n{text}"
        );
    }
    for node in ["kmsg", "tty1", "fuse", "kvm"] {
        assert!(text.contains(&format!("made-{node}")), "{text}");
        assert!(
            text.contains(&format!("blocked-{node}")),
            "{node} opened:\n{text}"
        );
    }
    assert!(!text.contains("OPENED-"), "{text}");
    assert!(
        text.contains("urandom-4"),
        "kiln's own /dev nodes work:\n{text}"
    );
}

/// A static binary that prints its effective uid, built with gcc.
fn euid_probe(dir: &Path) -> std::path::PathBuf {
    require("gcc");
    let src = dir.join("euid.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\n#include <unistd.h>\nint main(void){printf(\"euid=%d\\n\",(int)geteuid());return 0;}\n",
    )
    .unwrap();
    let bin = dir.join("euid");
    run(Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(&bin)
        .arg(&src));
    bin
}

#[test]
fn bind_mounts_never_write_the_context_and_never_grant_setuid() {
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context("ctx",
        "FROM busybox\n\
         RUN --mount=type=bind,rw,target=/ctx sh -c '\
           echo changed > /ctx/data/keep.txt && cat /ctx/data/keep.txt && \
           cp /bin/busybox /ctx/suid && chmod 4755 /ctx/suid && \
           mknod /ctx/blk b 7 0 && chmod 666 /ctx/blk && \
           mkdir -p /ctx/.git/hooks && echo evil > /ctx/.git/hooks/pre-commit && echo planted'\n\
         RUN --mount=type=bind,rw,source=data/keep.txt,target=/k.txt sh -c 'echo more >> /k.txt && cat /k.txt'\n\
         USER 65534:65534\n\
         RUN --mount=type=bind,target=/ctx /ctx/bin/euid\n",
        &[("data/keep.txt", "orig\n")],
    );
    let bin = Path::new(&ctx).join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let probe = euid_probe(&bin);
    std::fs::set_permissions(&probe, std::os::unix::fs::PermissionsExt::from_mode(0o4755)).unwrap();
    let (out, text) = env.build_output(&["--no-lint", "-t", "binds", &ctx]);
    assert_success(&out, "the bind-mount build");
    // Writes are seen inside the step...
    assert!(
        text.contains("changed") && text.contains("planted"),
        "{text}"
    );
    assert!(
        text.contains("orig\nmore") || text.contains("more"),
        "{text}"
    );
    // ...and never reach the context.
    let ctx = Path::new(&ctx);
    assert_eq!(
        std::fs::read_to_string(ctx.join("data/keep.txt")).unwrap(),
        "orig\n"
    );
    for planted in ["suid", "blk", ".git"] {
        assert!(
            !ctx.join(planted).exists(),
            "the step planted {planted} in the context"
        );
    }
    // A setuid-root file from the context runs as the step's user (nosuid).
    assert!(
        text.contains("euid=65534"),
        "the setuid probe ran as its caller:\n{text}"
    );
    assert!(
        !text.contains("euid=0"),
        "a setuid file in a bind gave uid 0:\n{text}"
    );
}

#[test]
fn steps_get_a_private_network_with_outbound_access() {
    require("slirp4netns");
    let env = Env::new();
    env.busybox_base("busybox");
    let secret = "KILN-HOST-LOOPBACK-SECRET";
    let port = loopback_server(secret);
    let abstract_name = format!("kiln-test-abstract-{}", std::process::id());
    let _abstract = std::os::unix::net::UnixListener::bind_addr(
        &<std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
            abstract_name.as_bytes(),
        )
        .unwrap(),
    )
    .unwrap();
    // busybox-static cannot resolve names (no NSS in the image): the host resolves.
    let archive = std::net::ToSocketAddrs::to_socket_addrs(&("deb.debian.org", 80))
        .expect("resolve deb.debian.org")
        .find(|a| a.is_ipv4())
        .expect("an IPv4 address for deb.debian.org")
        .ip();
    let dockerfile = format!(
        "FROM busybox\nRUN <<EOF\n\
         sed -n 's/^ *\\([a-z0-9]*\\):.*/iface-\\1/p' /proc/net/dev\n\
         wget -q -O- http://127.0.0.1:{port}/ || echo loopback-unreachable\n\
         wget -q -O- http://10.0.2.2:{port}/ || echo gateway-unreachable\n\
         grep -q {abstract_name} /proc/net/unix && echo abstract-visible || echo abstract-hidden\n\
         ping -c 1 -W 2 127.0.0.1 >/dev/null && echo ping-ok\n\
         wget -q --header 'Host: deb.debian.org' -O- http://{archive}/debian/dists/bookworm/Release | head -c 7\n\
         echo\n\
         EOF\n"
    );
    let ctx = env.context("net", &dockerfile, &[]);
    let (out, text) = env.build_output(&["--no-lint", "--no-cache", "-t", "net", &ctx]);
    assert_success(&out, "the default-network build");
    assert!(
        !text.contains(secret),
        "a step reached a host loopback service:\n{text}"
    );
    for expected in [
        "iface-lo",
        "iface-tap0",
        "loopback-unreachable",
        "gateway-unreachable",
        "abstract-hidden",
        "ping-ok",
        "Origin:",
    ] {
        assert!(text.contains(expected), "expected {expected}:\n{text}");
    }
    assert!(
        !text.contains("iface-eth0"),
        "the host's interfaces are not the step's:\n{text}"
    );

    // --network none: only lo, and no way out.
    let (out, text) = env.build_output(&[
        "--no-lint",
        "--no-cache",
        "--network",
        "none",
        "-t",
        "n",
        &ctx,
    ]);
    assert_success(&out, "the --network none build");
    assert!(
        text.contains("iface-lo") && !text.contains("iface-tap0"),
        "{text}"
    );
    assert!(
        !text.contains("Origin:"),
        "with --network none nothing is reachable:\n{text}"
    );

    // The host's network is an explicit opt-in, as BuildKit's network.host entitlement.
    let host_ctx = env.context(
        "hostnet",
        &format!("FROM busybox\nRUN --network=host wget -q -O- http://127.0.0.1:{port}/\n"),
        &[],
    );
    let stderr = env.fails(&["build", "--no-lint", "-t", "h", &host_ctx]);
    assert!(stderr.contains("--allow network.host"), "{stderr}");
    let (out, text) =
        env.build_output(&["--no-lint", "--allow", "network.host", "-t", "h", &host_ctx]);
    assert_success(&out, "RUN --network=host with the entitlement");
    assert!(text.contains(secret), "{text}");
    let stderr = env.fails(&["build", "--network", "bogus", &host_ctx]);
    assert!(
        stderr.contains("--network") && stderr.contains("bogus"),
        "{stderr}"
    );
}

/// The mount points under `dir` that process `pid` sees.
fn mounts_seen_by(pid: u32, dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(dir))
        .map(str::to_owned)
        .collect()
}

#[test]
fn kill_9_during_copy_leaves_nothing_mounted_on_the_host() {
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context("big", "FROM busybox\nCOPY big /big\n", &[]);
    run(Command::new("head")
        .args(["-c", "200M", "/dev/urandom"])
        .stdout(std::fs::File::create(Path::new(&ctx).join("big")).unwrap()));
    let store = env.root();
    let mut child = env
        .kiln()
        .args(["build", "--no-lint", "-t", "big", &ctx])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut in_kiln = Vec::new();
    let mut on_host = Vec::new();
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        in_kiln = mounts_seen_by(child.id(), &store);
        if !in_kiln.is_empty() {
            on_host = mounts_under(&store);
            break;
        }
        // Polling a condition (COPY's overlay is mounted), not waiting on time.
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !in_kiln.is_empty(),
        "the kill should land while COPY's overlay is mounted"
    );
    assert!(
        on_host.is_empty(),
        "COPY's overlay is visible on the host while it runs: {on_host:?}"
    );
    assert_eq!(
        mounts_under(&store),
        Vec::<String>::new(),
        "kill -9 left mounts on the host"
    );
}

#[test]
fn memory_and_pids_limits_hold_for_build_steps() {
    let env = Env::new();
    env.busybox_base("busybox");
    let dockerfile = "FROM busybox\nRUN <<EOF\n\
        grep -E ':(memory|pids):' /proc/self/cgroup | sed 's/^[0-9]*:/cgroup-/'\n\
        awk 'BEGIN { s = \"x\"; while (length(s) < 100000000) s = s s; print length(s) }' > /dev/null\n\
        echo hog-exit-$?\n\
        for i in $(seq 40); do sleep 1 & done 2>&1 | grep -c fork | sed 's/^/fork-failures-/'\n\
        kill $(jobs -p) 2>/dev/null; true\n\
        EOF\n";
    let ctx = env.context("limits", dockerfile, &[]);
    let (out, text) = env.build_output(&[
        "--no-lint",
        "--no-cache",
        "--memory",
        "32m",
        "--pids-limit",
        "20",
        "-t",
        "l",
        &ctx,
    ]);
    assert_success(&out, "the limited build");
    assert!(
        text.contains("cgroup-memory:/kiln/"),
        "the step runs in kiln's cgroup:\n{text}"
    );
    assert!(
        text.contains("hog-exit-137"),
        "the memory hog is killed:\n{text}"
    );
    assert!(
        !text.contains("fork-failures-0"),
        "forks beyond the limit fail:\n{text}"
    );
    // Without limits the same step runs to the end.
    let (out, text) = env.build_output(&["--no-lint", "--no-cache", "-t", "l", &ctx]);
    assert_success(&out, "the unlimited build");
    assert!(
        text.contains("hog-exit-0") && text.contains("fork-failures-0"),
        "{text}"
    );
    let out = env
        .kiln()
        .args(["build", "--memory", "4m", &ctx])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--memory") && stderr.contains("minimum"),
        "{stderr}"
    );
}
