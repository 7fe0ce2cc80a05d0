//! `kiln build --ssh` and `RUN --mount=type=ssh`: ssh agents forwarded into build steps, as
//! BuildKit forwards them.
//!
//! buildx reads `--ssh default|<id>[=<socket>|<key>[,<key>]]`: no path is `$SSH_AUTH_SOCK`;
//! one socket is that agent; key files are loaded into an agent of the build's own. kiln
//! keeps those key files in a real `ssh-agent` of its own ([`SshAgents`], killed with it).
//!
//! For each ssh mount of a step, kiln listens on a fresh socket in a private staging dir,
//! with the mount's owner and mode (BuildKit's defaults: root, 0600), bind-mounts it at the
//! target, and relays each connection to the agent ([`Forward`]): the socket the step sees is
//! BuildKit's whatever the agent's own is, and it goes with the step, never into a layer. The
//! user's agent is forwarded read-only, as BuildKit's `readOnlyAgent` has it: a step can list
//! the keys and sign with them, not add, remove or lock.

use std::io::{BufRead as _, Read, Write};
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crate::Error;

/// The id of `--ssh default` and of an ssh mount without `id=`.
pub const DEFAULT_ID: &str = "default";

/// BuildKit reads at most this much of a key file.
const MAX_KEY_BYTES: u64 = 100 * 1024;

/// An agent the build forwards under an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshAgent {
    /// The id that `RUN --mount=type=ssh,id=` names.
    pub id: String,
    /// The agent's socket.
    pub socket: PathBuf,
    /// The user's own agent: forwarded read-only, as BuildKit does. kiln's agent of key files
    /// is the build's alone, and BuildKit lets steps change its keyring.
    pub read_only: bool,
}

/// The agents of a build's `--ssh` flags; the agents kiln started for key files live as long
/// as this does.
#[derive(Debug, Default)]
pub struct SshAgents {
    agents: Vec<SshAgent>,
    key_agents: Vec<KeyAgent>,
}

impl SshAgents {
    /// Reads each `--ssh` value as buildx does, and starts an agent for each one that names
    /// key files. `auth_sock` is `$SSH_AUTH_SOCK`, for values with no path.
    pub fn start(
        store: &kiln_image::Store,
        specs: &[String],
        auth_sock: Option<&Path>,
    ) -> Result<SshAgents, Error> {
        let mut agents = SshAgents::default();
        for text in specs.iter().filter(|s| !s.is_empty()) {
            let bad = |why: String| Error::BadInput(format!("--ssh {text}: {why}"));
            let (id, paths) = match text.split_once('=') {
                Some((id, paths)) => (id, paths.split(',').map(PathBuf::from).collect()),
                None => (text.as_str(), Vec::new()),
            };
            let id = if id.is_empty() { DEFAULT_ID } else { id };
            if agents.agents.iter().any(|a| a.id == id) {
                return Err(bad(format!(
                    "duplicate agent ID {id:?}: give each --ssh its own id"
                )));
            }
            let paths = match paths.as_slice() {
                [] => vec![PathBuf::new()],
                _ => paths,
            };
            let paths =
                if paths == [PathBuf::new()] {
                    let sock = auth_sock.filter(|p| !p.as_os_str().is_empty()).ok_or_else(|| {
                    bad(format!(
                        "SSH_AUTH_SOCK is not set, so there is no agent to forward: start one \
                         (eval \"$(ssh-agent)\"; ssh-add), or give --ssh {id}=SOCKET or \
                         --ssh {id}=KEYFILE"
                    ))
                })?;
                    vec![sock.to_path_buf()]
                } else {
                    paths
                };
            let mut socket = None;
            let mut keys = Vec::new();
            for path in &paths {
                let meta =
                    std::fs::metadata(path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
                if socket.is_some() || (meta.file_type().is_socket() && !keys.is_empty()) {
                    return Err(bad(format!(
                        "{}: an agent socket must be the only path of its id (BuildKit: \
                         invalid combination of keys and sockets)",
                        path.display()
                    )));
                }
                if meta.file_type().is_socket() {
                    socket = Some(path.clone());
                } else {
                    keys.push(path.clone());
                }
            }
            let agent = match socket {
                Some(socket) => SshAgent {
                    id: id.to_owned(),
                    socket,
                    read_only: true,
                },
                None => {
                    let key_agent = KeyAgent::start(store, text, &keys)?;
                    let socket = key_agent.socket.clone();
                    agents.key_agents.push(key_agent);
                    SshAgent {
                        id: id.to_owned(),
                        socket,
                        read_only: false,
                    }
                }
            };
            agents.agents.push(agent);
        }
        Ok(agents)
    }

    /// The agents by id, for [`crate::BuildRequest::ssh`].
    pub fn agents(&self) -> Vec<SshAgent> {
        self.agents.clone()
    }
}

/// A real `ssh-agent` holding the key files of one `--ssh`, in a private staging dir of the
/// store; killed, and its dir removed, when dropped.
#[derive(Debug)]
struct KeyAgent {
    /// The command the agent watches: it ends when kiln closes its stdin, or dies.
    child: Child,
    /// The agent's pid, to stop it at once.
    pid: Option<rustix::process::Pid>,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl KeyAgent {
    fn start(store: &kiln_image::Store, text: &str, keys: &[PathBuf]) -> Result<KeyAgent, Error> {
        let bad = |why: String| Error::BadInput(format!("--ssh {text}: {why}"));
        let dir = store.staging_dir("ssh-keys")?;
        // Copies that only root reads: ssh-add refuses a key that others may read, which
        // BuildKit does not ask of its key files.
        let mut copies = Vec::with_capacity(keys.len());
        for (i, key) in keys.iter().enumerate() {
            let mut bytes = Vec::new();
            std::fs::File::open(key)
                .and_then(|f| f.take(MAX_KEY_BYTES + 1).read_to_end(&mut bytes))
                .map_err(|e| bad(format!("{}: {e}", key.display())))?;
            if bytes.len() as u64 > MAX_KEY_BYTES {
                return Err(bad(format!(
                    "{} is larger than a key file may be (100 KiB)",
                    key.display()
                )));
            }
            let copy = dir.path().join(format!("key{i}"));
            std::fs::OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(0o600)
                .open(&copy)
                .and_then(|mut f| f.write_all(&bytes))
                .map_err(Error::io("write", &copy))?;
            // Empty passphrase or none: ssh-add would prompt for any other, and kiln cannot
            // answer (BuildKit fails to parse such a key too).
            let out = tool("ssh-keygen")
                .args(["-y", "-P", "", "-f"])
                .arg(&copy)
                .output()
                .map_err(|e| not_started("ssh-keygen", text, e))?;
            if !out.status.success() {
                let stderr = String::from_utf8_lossy(&out.stderr).replace(
                    copy.to_string_lossy().as_ref(),
                    key.to_string_lossy().as_ref(),
                );
                return Err(bad(if stderr.contains("passphrase") {
                    format!(
                        "{} is protected by a passphrase, which kiln cannot ask for: add it to \
                         your agent (ssh-add {}) and pass --ssh with that agent's socket",
                        key.display(),
                        key.display()
                    )
                } else {
                    format!(
                        "{} is not a private key ssh-keygen can read: {}",
                        key.display(),
                        stderr.trim()
                    )
                }));
            }
            copies.push(copy);
        }
        let socket = dir.path().join("agent.sock");
        // With a command, ssh-agent forks the agent and runs the command in its own process;
        // the agent exits once that process is gone (it looks every 10 s). The command reads
        // a pipe that only kiln holds, so the agent, and the keys it holds, die with kiln even
        // when kiln is killed before it can stop them. The socket listens before the fork.
        let log_path = dir.path().join("agent.log");
        let log = std::fs::File::create(&log_path).map_err(Error::io("create", &log_path))?;
        let mut child = tool("ssh-agent")
            .arg("-a")
            .arg(&socket)
            .args(["sh", "-c", "echo \"$SSH_AGENT_PID\" && exec cat >/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| not_started("ssh-agent", text, e))?;
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        }
        let agent = KeyAgent {
            child,
            pid: line
                .trim()
                .parse()
                .ok()
                .and_then(rustix::process::Pid::from_raw),
            socket,
            _dir: dir,
        };
        if agent.pid.is_none() {
            let said = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(bad(format!(
                "ssh-agent did not start on {}: {}",
                agent.socket.display(),
                said.trim()
            )));
        }
        for (copy, key) in copies.iter().zip(keys) {
            let out = tool("ssh-add")
                .arg("-q")
                .arg(copy)
                .env("SSH_AUTH_SOCK", &agent.socket)
                .env("SSH_ASKPASS_REQUIRE", "never")
                .output()
                .map_err(|e| not_started("ssh-add", text, e))?;
            if !out.status.success() {
                return Err(bad(format!(
                    "ssh-add {}: {}",
                    key.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            std::fs::remove_file(copy).map_err(Error::io("remove", copy))?;
        }
        Ok(agent)
    }
}

impl Drop for KeyAgent {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            // SIGTERM: the agent removes its socket and exits.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `NAME` of the ssh client tools, never prompting.
fn tool(name: &str) -> Command {
    let mut cmd = Command::new(name);
    cmd.stdin(Stdio::null())
        .stderr(Stdio::piped())
        .env_remove("DISPLAY");
    cmd
}

/// Why `NAME` did not start: missing, named with the package that has it.
fn not_started(name: &str, text: &str, e: std::io::Error) -> Error {
    Error::BadInput(match e.kind() {
        std::io::ErrorKind::NotFound => format!(
            "--ssh {text}: key files are loaded into an ssh-agent of kiln's with {name}, which \
             is not on PATH (apt-get install openssh-client)"
        ),
        _ => format!("--ssh {text}: run {name}: {e}"),
    })
}

/// One ssh mount's socket, relaying to its agent until dropped.
pub(crate) struct Forward {
    listener: Arc<UnixListener>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Forward {
    /// Listens on a fresh socket owned by `uid:gid` with `mode`, as BuildKit makes it.
    pub(crate) fn start(
        store: &kiln_image::Store,
        agent: &SshAgent,
        uid: u32,
        gid: u32,
        mode: u32,
    ) -> Result<Forward, Error> {
        let dir = store.staging_dir("ssh")?;
        let socket = dir.path().join("ssh_auth_sock");
        let listener =
            Arc::new(UnixListener::bind(&socket).map_err(Error::io("listen on", &socket))?);
        std::os::unix::fs::chown(&socket, Some(uid), Some(gid))
            .map_err(Error::io("chown", &socket))?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(mode & 0o777))
            .map_err(Error::io("chmod", &socket))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (listener, stop, agent) = (listener.clone(), stop.clone(), agent.clone());
            std::thread::spawn(move || accept(&listener, &stop, &agent))
        };
        Ok(Forward {
            listener,
            stop,
            thread: Some(thread),
            socket,
            _dir: dir,
        })
    }

    /// The socket to bind at the mount's target.
    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Linux wakes an accept() blocked on a listening socket that is shut down.
        let _ = rustix::net::shutdown(&*self.listener, rustix::net::Shutdown::Both);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Accepts connections until the forward stops; then ends the ones still open.
fn accept(listener: &UnixListener, stop: &AtomicBool, agent: &SshAgent) {
    let mut open: Vec<(UnixStream, JoinHandle<()>)> = Vec::new();
    loop {
        match listener.accept() {
            _ if stop.load(Ordering::SeqCst) => break,
            Ok((client, _)) => {
                let Ok(ours) = client.try_clone() else {
                    continue;
                };
                let agent = agent.clone();
                open.push((ours, std::thread::spawn(move || relay(client, &agent))));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    for (client, thread) in open {
        let _ = client.shutdown(std::net::Shutdown::Both);
        let _ = thread.join();
    }
}

/// The largest agent message relayed: OpenSSH's agent takes no more.
const MAX_MESSAGE: u32 = 256 * 1024;
/// SSH_AGENT_FAILURE.
const FAILURE: u8 = 5;
/// What a read-only agent answers (draft-miller-ssh-agent): the identities (11), a signature
/// (13), unlock (23).
const READ_ONLY: [u8; 3] = [11, 13, 23];

/// Relays one connection's requests to the agent and its answers back; the agent protocol is
/// one answer per request. A read-only agent answers anything else with a failure itself.
fn relay(mut client: UnixStream, agent: &SshAgent) {
    let Ok(mut upstream) = UnixStream::connect(&agent.socket) else {
        return;
    };
    while let Some(request) = read_message(&mut client) {
        let answer = if agent.read_only && !READ_ONLY.contains(&request[4]) {
            vec![0, 0, 0, 1, FAILURE]
        } else {
            if upstream.write_all(&request).is_err() {
                return;
            }
            match read_message(&mut upstream) {
                Some(answer) => answer,
                None => return,
            }
        };
        if client.write_all(&answer).is_err() {
            return;
        }
    }
}

/// One length-prefixed agent message, prefix included; none at EOF or on a bad length.
fn read_message(from: &mut UnixStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    from.read_exact(&mut len).ok()?;
    let n = u32::from_be_bytes(len);
    if n == 0 || n > MAX_MESSAGE {
        return None;
    }
    let mut message = len.to_vec();
    message.resize(4 + n as usize, 0);
    from.read_exact(&mut message[4..]).ok()?;
    Some(message)
}
