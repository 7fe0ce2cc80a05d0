//! `RUN --mount=type=ssh` and `kiln build --ssh`: a step reaches a private git repository
//! through the ssh agent it is given, as BuildKit forwards one (Dockerfile reference,
//! `RUN --mount=type=ssh`; buildx `--ssh default|<id>[=<socket>|<key>[,<key>]]`). The server
//! is a real `sshd -i` behind a TcpListener on 127.0.0.1, the agent a real `ssh-agent`.

use std::io::BufRead as _;
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::util::*;

/// Serves ssh on 127.0.0.1 for a key: each connection is handed to `sshd -i` with a
/// configuration of its own (host key, `authorized_keys`), so the port is listening before
/// any client connects. Its port.
fn sshd(dir: &Path, authorized: &[&Path]) -> u16 {
    let sshd = require("sshd");
    let keygen = require("ssh-keygen");
    std::fs::create_dir_all(dir).unwrap();
    let host_key = dir.join("host_ed25519");
    run(Command::new(&keygen)
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&host_key));
    let keys: String = authorized
        .iter()
        .map(|p| std::fs::read_to_string(p.with_extension("pub")).unwrap())
        .collect();
    std::fs::write(dir.join("authorized_keys"), keys).unwrap();
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "HostKey {}\nAuthorizedKeysFile {}\nStrictModes no\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\n\
             PidFile none\nLogLevel ERROR\n",
            host_key.display(),
            dir.join("authorized_keys").display()
        ),
    )
    .unwrap();
    // sshd's privilege separation chroots into it; the package makes it only when it starts
    // the system's sshd, which is never started here.
    std::fs::create_dir_all("/run/sshd").unwrap();
    run(Command::new(&sshd).arg("-t").arg("-f").arg(&config));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = dir.join("sshd.log");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let input = OwnedFd::from(stream.try_clone().unwrap());
            let output = OwnedFd::from(stream);
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap();
            let _ = Command::new(&sshd)
                .arg("-i")
                .arg("-e")
                .arg("-f")
                .arg(&config)
                .stdin(Stdio::from(input))
                .stdout(Stdio::from(output))
                .stderr(Stdio::from(log))
                .spawn()
                .map(|mut child| child.wait());
        }
    });
    port
}

/// A fresh ed25519 key without a passphrase (or with `passphrase`); its private key file.
fn key(path: &Path, passphrase: &str) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    run(Command::new(require("ssh-keygen"))
        .args([
            "-q",
            "-t",
            "ed25519",
            "-C",
            "kiln-test",
            "-N",
            passphrase,
            "-f",
        ])
        .arg(path));
    path.to_path_buf()
}

/// The key's fingerprint as `ssh-add -l` and `ssh-keygen -l` print it.
fn fingerprint(key: &Path) -> String {
    let out = run(Command::new(require("ssh-keygen"))
        .arg("-l")
        .arg("-f")
        .arg(key.with_extension("pub")));
    out.split_whitespace().nth(1).unwrap().to_owned()
}

/// A real `ssh-agent` in the foreground on `socket`, killed when dropped.
struct Agent {
    child: Child,
    socket: PathBuf,
}

impl Agent {
    fn start(socket: &Path, keys: &[&Path]) -> Agent {
        let mut child = Command::new(require("ssh-agent"))
            .arg("-D")
            .arg("-a")
            .arg(socket)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // It prints its `SSH_AUTH_SOCK=…` line once the socket is listening.
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("SSH_AUTH_SOCK"), "ssh-agent said: {line}");
        let agent = Agent {
            child,
            socket: socket.to_path_buf(),
        };
        for key in keys {
            run(agent.command("ssh-add").arg(key));
        }
        agent
    }

    fn command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(require(tool));
        cmd.env("SSH_AUTH_SOCK", &self.socket).stdin(Stdio::null());
        cmd
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bare repository `<dir>/private.git` whose one file says `content`.
fn private_repo(dir: &Path, content: &str) -> PathBuf {
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("dependency.txt"), content).unwrap();
    let git = |dir: &Path, args: &[&str]| {
        run(Command::new(require("git"))
            .current_dir(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args))
    };
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "private"]);
    let bare = dir.join("private.git");
    git(
        dir,
        &["clone", "-q", "--bare", "work", bare.to_str().unwrap()],
    );
    bare
}

/// The lines of a RUN that clones the private repository over ssh and records what the
/// step saw of its agent socket.
fn clone_script(port: u16, repo: &Path, out: &str) -> String {
    format!(
        "GIT_SSH_COMMAND='ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
         -o BatchMode=yes' git clone -q ssh://root@127.0.0.1:{port}{repo} /{out} \
         && echo \"$SSH_AUTH_SOCK\" > /{out}.sock-env \
         && stat -c '%a %u %g %F' \"$SSH_AUTH_SOCK\" > /{out}.sock-stat \
         && ssh-add -l > /{out}.keys \
         && if ssh-add -D; then echo removed; else echo refused; fi > /{out}.remove-all",
        repo = repo.display()
    )
}

fn read(dir: &Path, rel: &str) -> String {
    std::fs::read_to_string(dir.join(rel))
        .unwrap_or_else(|e| panic!("{rel} in {}: {e}", dir.display()))
}

/// One Debian install of the ssh client and git, then every build on top of it, so that the
/// package download happens once per run.
#[test]
fn ssh_agents_reach_a_private_repository_from_run_steps() {
    let env = Env::new();
    let agent_key = key(&env.path("keys/agent"), "");
    let file_key = key(&env.path("keys/file"), "");
    let locked_key = key(&env.path("keys/locked"), "a passphrase");
    let content = format!("private dependency of {}", std::process::id());
    let repo = private_repo(&env.path("srv"), &content);
    let port = sshd(&env.path("sshd"), &[&agent_key, &file_key]);
    let agent = Agent::start(&env.path("agent.sock"), &[&agent_key]);
    let agent_socket = agent.socket.to_str().unwrap().to_owned();

    build_tools_image(&env);

    // `--ssh default`: the agent of $SSH_AUTH_SOCK, at BuildKit's default target, 0600 root's.
    let dockerfile = format!(
        "FROM tools\nRUN --mount=type=ssh {}\n",
        clone_script(port, &repo, "dep")
    );
    let ctx = env.context("default", &dockerfile, &[]);
    let out = env.path("out-default");
    let out_arg = format!("type=local,dest={}", out.display());
    let result = env
        .kiln()
        .env("SSH_AUTH_SOCK", &agent_socket)
        .args([
            "build",
            "--no-lint",
            "--network",
            "host",
            "--ssh",
            "default",
        ])
        .args(["-t", "default", "-o", &out_arg, &ctx])
        .output()
        .unwrap();
    assert_success(&result, "kiln build --ssh default");
    assert_eq!(read(&out, "dep/dependency.txt"), content);
    assert_eq!(read(&out, "dep.sock-env"), "/run/buildkit/ssh_agent.0\n");
    assert_eq!(read(&out, "dep.sock-stat"), "600 0 0 socket\n");
    assert!(
        read(&out, "dep.keys").contains(&fingerprint(&agent_key)),
        "the step sees the agent's key"
    );
    // BuildKit forwards the user's agent read-only: a step cannot remove its keys.
    assert_eq!(read(&out, "dep.remove-all"), "refused\n");
    let host_keys = run(agent.command("ssh-add").arg("-l"));
    assert!(
        host_keys.contains(&fingerprint(&agent_key)),
        "the agent keeps its key: {host_keys}"
    );
    assert!(
        !out.join("run/buildkit").exists(),
        "the agent's mountpoint is in the image"
    );

    // The step's key does not depend on the agent: another agent, the same step, cached.
    let log = {
        let (out, log) = env.build_output(&[
            "--no-lint",
            "--network",
            "host",
            "--ssh",
            &format!("default={}", file_key.display()),
            "-t",
            "default",
            &ctx,
        ]);
        assert_success(&out, "the rebuild with another agent");
        log
    };
    assert!(
        step_log(&log, "RUN --mount=type=ssh").contains(&"CACHED"),
        "another agent reran the step:\n{log}"
    );

    // `--ssh mykey=KEYFILE` with `id=mykey`: the key file alone, in an agent of kiln's, at the
    // target, with the mode and owner asked for; SSH_AUTH_SOCK names the target.
    let dockerfile = format!(
        "FROM tools\nRUN --mount=type=ssh,id=mykey,target=/tmp/agent.sock,mode=0660,uid=1000,gid=1001 {}\n",
        clone_script(port, &repo, "bykey")
    );
    let ctx = env.context("bykey", &dockerfile, &[]);
    let out = env.path("out-bykey");
    let out_arg = format!("type=local,dest={}", out.display());
    let result = env
        .kiln()
        .env_remove("SSH_AUTH_SOCK")
        .args(["build", "--no-lint", "--network", "host", "--ssh"])
        .arg(format!("mykey={}", file_key.display()))
        .args(["-t", "bykey", "-o", &out_arg, &ctx])
        .output()
        .unwrap();
    assert_success(&result, "kiln build --ssh mykey=KEY");
    assert_eq!(read(&out, "bykey/dependency.txt"), content);
    assert_eq!(read(&out, "bykey.sock-env"), "/tmp/agent.sock\n");
    assert_eq!(read(&out, "bykey.sock-stat"), "660 1000 1001 socket\n");
    let keys = read(&out, "bykey.keys");
    assert!(
        keys.contains(&fingerprint(&file_key)) && !keys.contains(&fingerprint(&agent_key)),
        "the step sees the key file's key only: {keys}"
    );
    assert!(
        !out.join("tmp/agent.sock").exists(),
        "the agent socket is in the image"
    );

    // Not required and not given: the step runs without the mount, as BuildKit skips it.
    let ctx = env.context(
        "optional",
        "FROM tools\nRUN --mount=type=ssh,id=absent test ! -e /run/buildkit/ssh_agent.0 \
         && echo \"sock=$SSH_AUTH_SOCK\"\n",
        &[],
    );
    let (result, log) = env.build_output(&["--no-lint", "-t", "optional", &ctx]);
    assert_success(&result, "an optional ssh mount without --ssh");
    assert!(
        log.contains("sock=/run/buildkit/ssh_agent.0"),
        "SSH_AUTH_SOCK is set as BuildKit sets it:\n{log}"
    );

    // Required and not given: an error naming the id and the flag, before the step runs.
    let ctx = env.context(
        "required",
        "FROM tools\nRUN --mount=type=ssh,id=deploy,required=true echo ran-$((40 + 2))\n",
        &[],
    );
    let (result, log) = env.build_output(&["--no-lint", "-t", "required", &ctx]);
    assert_clean_failure(&result, "a required ssh mount without --ssh");
    assert!(
        log.contains("id=deploy") && log.contains("--ssh deploy"),
        "the error names the id and the flag:\n{log}"
    );
    assert!(!log.contains("ran-42"), "the step ran:\n{log}");

    // Bad --ssh values: each names the flag and what is wrong, and nothing is built.
    let images_before = env.ok(&["images"]);
    let missing = env.path("no-such-key");
    let with_key = format!("k={}", file_key.display());
    let cases: [(Vec<String>, &str); 5] = [
        (
            vec![format!("default={}", missing.display())],
            "no-such-key",
        ),
        (vec![format!("k={}", locked_key.display())], "passphrase"),
        (
            vec![format!("k={},{}", agent_socket, file_key.display())],
            "keys and sockets",
        ),
        (vec![with_key.clone(), with_key], "duplicate"),
        (vec!["default".into()], "SSH_AUTH_SOCK"),
    ];
    for (specs, words) in &cases {
        let mut cmd = env.kiln();
        cmd.env_remove("SSH_AUTH_SOCK").args(["build", "--no-lint"]);
        for spec in specs {
            cmd.args(["--ssh", spec]);
        }
        let result = cmd.args(["-t", "bad", &ctx]).output().unwrap();
        let stderr = assert_clean_failure(&result, &format!("--ssh {specs:?}"));
        assert!(
            stderr.contains("--ssh") && stderr.contains(words),
            "--ssh {specs:?}: the error names the flag and {words}:\n{stderr}"
        );
    }
    assert_eq!(
        env.ok(&["images"]),
        images_before,
        "a bad --ssh built something"
    );
    assert_eq!(
        entries(&env.root().join("tmp")),
        Vec::<String>::new(),
        "a bad --ssh left staging behind"
    );
}

/// The socket without a network or a Debian: its mode and owner, `SSH_AUTH_SOCK` as BuildKit
/// sets it (not over the step's own), and a mount with no agent left out in each isolation
/// mode, chroot included, where a mount of an agent is refused by name.
#[test]
fn ssh_mounts_have_buildkits_socket_and_environment() {
    let env = Env::new();
    env.busybox_base("busybox");
    let agent_key = key(&env.path("keys/agent"), "");
    let agent = Agent::start(&env.path("agent.sock"), &[&agent_key]);
    let with_agent = format!("default={}", agent.socket.display());

    let ctx = env.context(
        "stat",
        "FROM busybox\n\
         RUN --mount=type=ssh --mount=type=ssh,id=other,uid=7,gid=8,mode=0604 \
         stat -c 'sock=%n %a %u %g %F' $SSH_AUTH_SOCK /run/buildkit/ssh_agent.1\n\
         ENV SSH_AUTH_SOCK=/mine\n\
         RUN --mount=type=ssh echo \"env=$SSH_AUTH_SOCK\" && stat -c 'sock=%n %a' /run/buildkit/ssh_agent.0\n",
        &[],
    );
    let (result, log) = env.build_output(&[
        "--no-lint",
        "--ssh",
        &with_agent,
        "--ssh",
        &format!("other={}", agent_key.display()),
        "-t",
        "stat",
        &ctx,
    ]);
    assert_success(&result, "two ssh mounts");
    for line in [
        "sock=/run/buildkit/ssh_agent.0 600 0 0 socket",
        "sock=/run/buildkit/ssh_agent.1 604 7 8 socket",
        "env=/mine",
        "sock=/run/buildkit/ssh_agent.0 600",
    ] {
        assert!(log.contains(line), "the build log shows {line}:\n{log}");
    }

    let ctx = env.context(
        "absent",
        "FROM busybox\nRUN --mount=type=ssh test ! -e /run/buildkit && echo \"no-agent $SSH_AUTH_SOCK\"\n",
        &[],
    );
    for isolation in ["oci", "chroot"] {
        let (result, log) = env.build_output(&[
            "--no-lint",
            "--no-cache",
            "--isolation",
            isolation,
            "-t",
            "absent",
            &ctx,
        ]);
        assert_success(&result, &format!("--isolation {isolation}"));
        assert!(
            log.contains("no-agent /run/buildkit/ssh_agent.0"),
            "--isolation {isolation}: the step ran without the mount:\n{log}"
        );
    }
    let (result, log) = env.build_output(&[
        "--no-lint",
        "--no-cache",
        "--isolation",
        "chroot",
        "--ssh",
        &with_agent,
        "-t",
        "absent",
        &ctx,
    ]);
    assert_clean_failure(&result, "an ssh mount under --isolation chroot");
    assert!(
        log.contains("type=ssh") && log.contains("--isolation chroot"),
        "the error names the mount and the mode:\n{log}"
    );
}

/// `kiln bake`'s `ssh` attribute, as buildx reads it (bake reference, `target.ssh`; buildx's
/// `buildflags.SSHKeys`): a list of `default`, `ID=PATH[,PATH]` or `{ id, paths }`, appended
/// through `inherits`. Each entry reaches the steps as `kiln build --ssh` does: a step given
/// the user's agent sees its key, a step given a key file sees that key alone.
#[test]
fn bake_ssh_attribute_forwards_agents_as_build_ssh_does() {
    let env = Env::new();
    let agent_key = key(&env.path("keys/agent"), "");
    let file_key = key(&env.path("keys/file"), "");
    let agent = Agent::start(&env.path("agent.sock"), &[&agent_key]);

    build_tools_image(&env);

    // A bake target has no host network (no sshd on 127.0.0.1): the steps ask the agents
    // for their keys instead of cloning.
    env.context(
        "app",
        "FROM tools\nRUN --mount=type=ssh ssh-add -l > /dep.keys\n\
         RUN --mount=type=ssh,id=mykey ssh-add -l > /bykey.keys\n",
        &[],
    );
    let out = env.path("out");
    std::fs::write(
        env.path("docker-bake.hcl"),
        format!(
            "target \"base\" {{\n  ssh = [\"default\"]\n}}\n\
             target \"app\" {{\n  inherits = [\"base\"]\n  context = \"app\"\n  \
             ssh = [{{ id = \"mykey\", paths = [\"{}\"] }}]\n  \
             output = [\"type=local,dest={}\"]\n}}\n",
            file_key.display(),
            out.display()
        ),
    )
    .unwrap();
    let bake = |args: &[&str]| {
        env.kiln()
            .env("SSH_AUTH_SOCK", &agent.socket)
            .arg("bake")
            .args(["--set", "*.no-cache=true"])
            .args(args)
            .current_dir(env.dir.path())
            .output()
            .unwrap()
    };
    let print = bake(&["--print", "app"]);
    assert_success(&print, "kiln bake --print app");
    let printed = String::from_utf8_lossy(&print.stdout);
    assert!(
        printed.contains("\"ssh\": [\n        {\n          \"id\": \"default\"\n        },"),
        "inherited and own entries both, as buildx prints them:\n{printed}"
    );
    let result = bake(&["app"]);
    assert_success(&result, "kiln bake app with ssh");
    assert!(
        read(&out, "dep.keys").contains(&fingerprint(&agent_key)),
        "`default` is the agent of SSH_AUTH_SOCK"
    );
    let keys = read(&out, "bykey.keys");
    assert!(
        keys.contains(&fingerprint(&file_key)) && !keys.contains(&fingerprint(&agent_key)),
        "`mykey` holds the key file alone: {keys}"
    );

    // A bad entry fails as `--ssh` does, naming the target.
    let result = bake(&["--set", "app.ssh=k=/no/such/key", "app"]);
    let stderr = assert_clean_failure(&result, "a missing ssh key file");
    assert!(
        stderr.contains("\"app\"") && stderr.contains("/no/such/key"),
        "{stderr}"
    );
}

/// Builds `tools`: Debian with the ssh client and git, what the steps of these tests run.
fn build_tools_image(env: &Env) {
    env.debian_base("debian");
    let tools = env.context(
        "tools",
        "FROM debian\nRUN apt-get update && apt-get install -y --no-install-recommends \
         openssh-client git ca-certificates && rm -rf /var/lib/apt/lists/*\n",
        &[],
    );
    env.build(&["--no-lint", "--network", "host", "-t", "tools", &tools]);
}
