//! Registries: push, pull, mirrors, auth, faults and the shared build cache, against Debian's
//! `docker-registry` (distribution 2.8) started on 127.0.0.1 by each test, and the real
//! docker engine and skopeo as judges.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::util::{Env, assert_clean_failure, assert_success, docker, require, run};

/// A free port on 127.0.0.1 (bound, then released for the server to take).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls until something listens on the port; panics after 15 s.
fn wait_for_port(port: u16, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_millis(200),
    )
    .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the registry did not listen on {port} within 15 s; its log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::yield_now();
    }
}

/// A docker-registry process on 127.0.0.1, stopped on drop.
pub struct Registry {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl Registry {
    /// Plain HTTP, no auth.
    pub fn start(env: &Env, name: &str) -> Registry {
        Registry::start_with(env, name, "")
    }

    /// With extra YAML under `http:` keys given as a whole block appended to the config.
    pub fn start_with(env: &Env, name: &str, extra: &str) -> Registry {
        let bin = require("docker-registry");
        let dir = env.path(&format!("registry-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let tls = if extra.contains("__TLS__") {
            format!(
                "  tls:\n    certificate: {0}/srv.pem\n    key: {0}/srv.key\n",
                dir.display()
            )
        } else {
            String::new()
        };
        let extra = extra.replace("__TLS__", "");
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}/data\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{tls}{extra}",
            dir.display()
        );
        std::fs::write(dir.join("config.yml"), config).unwrap();
        let log = dir.join("registry.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap();
        wait_for_port(port, &log);
        Registry { child, port, log }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The access log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Access-log lines of GETs of a path.
    pub fn gets(&self, path: &str) -> Vec<String> {
        let needle = format!("\"GET {path} ");
        self.log()
            .lines()
            .filter(|l| l.contains(&needle))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kiln_ok(env: &Env, args: &[&str]) -> (String, String) {
    let out = env.kiln().args(args).output().unwrap();
    assert_success(&out, &format!("kiln {}", args.join(" ")));
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn kiln_fails(env: &Env, args: &[&str]) -> String {
    let out = env.kiln().args(args).output().unwrap();
    assert_clean_failure(&out, &format!("kiln {}", args.join(" ")))
}

/// The image id (config digest) of an image in a store.
fn image_id(env: &Env, name: &str) -> String {
    let json: serde_json::Value = serde_json::from_str(&env.ok(&["inspect", name])).unwrap();
    json[0]["Id"].as_str().unwrap().to_owned()
}

/// A second env (another "runner") with its own store.
fn other_env() -> Env {
    Env::new()
}

#[test]
fn push_to_plain_http_registry_docker_pulls_and_runs_it_and_second_push_uploads_nothing() {
    let env = Env::new();
    let registry = Registry::start(&env, "plain");
    env.busybox_base("bb");
    let target = format!("{}/kiln/busybox:1", registry.host());
    let (digest, first) = kiln_ok(&env, &["push", "bb", &target]);
    assert!(digest.trim().starts_with("sha256:"), "{digest}");
    assert!(first.contains("compressed 1 layers"), "{first}");
    // docker treats 127.0.0.0/8 as an insecure registry it may pull from over HTTP.
    run(docker().args(["pull", &target]));
    let said = run(docker().args(["run", "--rm", &target, "echo", "hello from kiln"]));
    assert_eq!(said.trim(), "hello from kiln");
    run(docker().args(["rmi", "-f", &target]));
    let inspect = run(Command::new(require("skopeo")).args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{target}"),
    ]));
    assert!(inspect.contains(digest.trim()), "{inspect}");
    // The second push: every blob is there (HEAD), and the layer's gzip is remembered.
    let uploads_before = registry
        .log()
        .matches("\"PUT /v2/kiln/busybox/blobs/")
        .count();
    let (again, second) = kiln_ok(&env, &["push", "bb", &target]);
    assert_eq!(again, digest);
    assert!(
        second.contains("uploaded 0 bytes, compressed 0 layers"),
        "{second}"
    );
    assert_eq!(
        registry
            .log()
            .matches("\"PUT /v2/kiln/busybox/blobs/")
            .count(),
        uploads_before,
        "the registry saw a blob upload on the second push"
    );
    // Another repository of the same registry: every blob is mounted, nothing uploaded.
    let sibling = format!("{}/kiln/sibling:1", registry.host());
    let (_, third) = kiln_ok(&env, &["push", "bb", &sibling]);
    assert!(third.contains("mounted"), "{third}");
    assert!(third.contains("uploaded 0 bytes"), "{third}");
    assert!(
        registry.log().lines().any(
            |l| l.contains("\"POST /v2/kiln/sibling/blobs/uploads/?mount=")
                && l.contains("&from=kiln%2Fbusybox ")
                && l.contains("\" 201 ")
        ),
        "no cross-repository mount in the registry log"
    );
    // A pull into a fresh store gives the same image id.
    let other = other_env();
    let (id, _) = kiln_ok(&other, &["pull", &target]);
    let local = image_id(&env, "bb");
    assert_eq!(id.trim(), local.trim());
}

#[test]
fn seed_image_pushed_runs_python_in_docker() {
    // The seed's base (examples/python-base on a Debian bookworm made with mmdebstrap).
    let env = Env::new();
    let registry = Registry::start(&env, "seed");
    env.debian_base("debian:bookworm");
    let context = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/python-base");
    env.build(&["-t", "my-python-base", context.to_str().unwrap()]);
    let target = format!("{}/my-python-base:latest", registry.host());
    kiln_ok(&env, &["push", "my-python-base", &target]);
    run(docker().args(["pull", &target]));
    let version = run(docker().args(["run", "--rm", &target, "python3", "-V"]));
    assert!(version.starts_with("Python 3"), "{version}");
    run(docker().args(["rmi", "-f", &target]));
    let (_, second) = kiln_ok(&env, &["push", "my-python-base", &target]);
    assert!(second.contains("uploaded 0 bytes"), "{second}");
}

/// Pushes the busybox base as `HOST/library/debian:bookworm`.
fn seed_debian(env: &Env, registry: &Registry) -> String {
    env.busybox_base("bb");
    let target = format!("{}/library/debian:bookworm", registry.host());
    kiln_ok(env, &["push", "bb", &target]);
    target
}

fn write_dockerfile(env: &Env, text: &str) -> PathBuf {
    let ctx = env.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), text).unwrap();
    ctx
}

#[test]
fn from_a_registry_image_pulls_it_during_the_build() {
    let env = Env::new();
    let registry = Registry::start(&env, "origin");
    let base = seed_debian(&env, &registry);
    let runner = other_env();
    let ctx = write_dockerfile(&runner, &format!("FROM {base}\nRUN echo built > /built\n"));
    let (_, err) = kiln_ok(&runner, &["build", "-t", "app", ctx.to_str().unwrap()]);
    assert!(
        err.contains(&format!("served by {}", registry.host())),
        "{err}"
    );
    let out = runner.ok(&["run", "--rm", "app", "cat", "/built"]);
    assert_eq!(out.trim(), "built");
    // The store has it now: a second build does not ask again, unless --pull.
    let before = registry.gets("/v2/library/debian/manifests/bookworm").len();
    kiln_ok(&runner, &["build", "-t", "app", ctx.to_str().unwrap()]);
    assert_eq!(
        registry.gets("/v2/library/debian/manifests/bookworm").len(),
        before
    );
    kiln_ok(
        &runner,
        &["build", "--pull", "-t", "app", ctx.to_str().unwrap()],
    );
    assert_eq!(
        registry.gets("/v2/library/debian/manifests/bookworm").len(),
        before + 1
    );
    // build --push: the result goes to the registry under its -t name.
    let app = format!("{}/built/app:1", registry.host());
    let (id, err) = kiln_ok(
        &runner,
        &["build", "--push", "-t", &app, ctx.to_str().unwrap()],
    );
    assert!(err.contains(&format!("pushed {app}")), "{err}");
    let config = run(Command::new(require("skopeo")).args([
        "inspect",
        "--config",
        "--tls-verify=false",
        &format!("docker://{app}"),
    ]));
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(
        config["rootfs"]["diff_ids"].as_array().unwrap().len(),
        2,
        "{config}"
    );
    assert!(id.trim().starts_with("sha256:"));
}

fn mirror_config(env: &Env, origin: &str, mirrors: &[String]) -> PathBuf {
    let file = env.path("kiln-config.toml");
    let list: Vec<String> = mirrors.iter().map(|m| format!("{m:?}")).collect();
    std::fs::write(
        &file,
        format!("[registry.\"{origin}\"]\nmirrors = [{}]\n", list.join(", ")),
    )
    .unwrap();
    file
}

#[test]
fn mirrors_are_tried_in_order_and_fall_back_to_the_origin() {
    let env = Env::new();
    let origin = Registry::start(&env, "origin");
    let empty = Registry::start(&env, "empty-mirror");
    let full = Registry::start(&env, "full-mirror");
    let base = seed_debian(&env, &origin);
    // The full mirror has the same image under the same path.
    kiln_ok(
        &env,
        &[
            "push",
            "bb",
            &format!("{}/library/debian:bookworm", full.host()),
        ],
    );
    let manifest = "/v2/library/debian/manifests/bookworm";

    // 1. A mirror that lacks it answers 404; the origin serves.
    let runner = other_env();
    let ctx = write_dockerfile(&runner, &format!("FROM {base}\n"));
    let config = mirror_config(
        &runner,
        &origin.host(),
        &[format!("http://{}", empty.host())],
    );
    let origin_before = origin.gets(manifest).len();
    let (_, err) = kiln_ok(
        &runner,
        &[
            "build",
            "--config",
            config.to_str().unwrap(),
            "-t",
            "app",
            ctx.to_str().unwrap(),
        ],
    );
    assert!(
        err.contains(&format!("served by {}", origin.host())),
        "{err}"
    );
    assert!(
        empty.gets(manifest).iter().any(|l| l.contains("\" 404 ")),
        "the empty mirror was asked first and said 404:\n{}",
        empty.log()
    );
    assert_eq!(origin.gets(manifest).len(), origin_before + 1);

    // 2. A mirror that has it serves it; the origin is not asked. (Mirrors given as flags.)
    let runner = other_env();
    let ctx = write_dockerfile(&runner, &format!("FROM {base}\n"));
    let origin_before = origin.gets(manifest).len();
    let (_, err) = kiln_ok(
        &runner,
        &[
            "build",
            "--registry-mirror",
            &format!("{}=http://{}", origin.host(), empty.host()),
            "--registry-mirror",
            &format!("{}=http://{}", origin.host(), full.host()),
            "-t",
            "app",
            ctx.to_str().unwrap(),
        ],
    );
    assert!(
        err.contains(&format!("served by mirror {}", full.host())),
        "{err}"
    );
    assert!(
        full.gets(manifest).iter().any(|l| l.contains("\" 200 ")),
        "{}",
        full.log()
    );
    assert!(
        full.log()
            .contains("\"GET /v2/library/debian/blobs/sha256:"),
        "the blobs came from the mirror too"
    );
    assert_eq!(
        origin.gets(manifest).len(),
        origin_before,
        "the origin was asked"
    );

    // 3. A mirror that is down (a closed port) is skipped and the origin serves. (What the
    //    dead mirror costs in time is measured by bench/push-pull.sh.)
    let runner = other_env();
    let ctx = write_dockerfile(&runner, &format!("FROM {base}\n"));
    let closed = free_port();
    let config = mirror_config(
        &runner,
        &origin.host(),
        &[
            format!("http://127.0.0.1:{closed}"),
            format!("https://127.0.0.1:{closed}"),
        ],
    );
    let origin_before = origin.gets(manifest).len();
    let (_, err) = kiln_ok(
        &runner,
        &[
            "build",
            "--config",
            config.to_str().unwrap(),
            "-t",
            "app",
            ctx.to_str().unwrap(),
        ],
    );
    assert!(
        err.contains(&format!("served by {}", origin.host())),
        "{err}"
    );
    assert!(
        err.contains(&format!("mirror 127.0.0.1:{closed} skipped")),
        "{err}"
    );
    assert_eq!(
        origin.gets(manifest).len(),
        origin_before + 1,
        "after the dead mirror, the origin served the manifest:\n{}",
        origin.log()
    );
}

/// What the fault proxy does to the first blob response it relays.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    /// Flip one byte in the middle of every large blob body.
    FlipByte,
    /// Send half of the first large blob body, then drop the connection.
    DropOnce,
}

/// An HTTP proxy in front of a registry: one request per connection (`Connection: close`),
/// relaying everything but the fault it was told to make.
struct FaultProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    pub faults: Arc<AtomicUsize>,
}

impl FaultProxy {
    fn start(upstream: u16, fault: Fault) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let faults = Arc::new(AtomicUsize::new(0));
        let (stop2, faults2) = (stop.clone(), faults.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let faults = faults2.clone();
                std::thread::spawn(move || {
                    let _ = relay(conn, upstream, fault, &faults);
                });
            }
        });
        FaultProxy { port, stop, faults }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Reads one HTTP message head (up to the blank line).
fn read_head(reader: &mut BufReader<TcpStream>) -> std::io::Result<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end().to_owned();
        if line.is_empty() {
            break;
        }
        lines.push(line);
    }
    Ok(lines)
}

fn content_length(head: &[String]) -> usize {
    head.iter()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0)
}

fn relay(
    client: TcpStream,
    upstream: u16,
    fault: Fault,
    faults: &AtomicUsize,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client = client;
    let head = read_head(&mut reader)?;
    if head.is_empty() {
        return Ok(());
    }
    let mut body = vec![0u8; content_length(&head)];
    reader.read_exact(&mut body)?;
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    let mut request = String::new();
    for line in &head {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("connection:") || lower.starts_with("host:") {
            continue;
        }
        request.push_str(line);
        request.push_str("\r\n");
    }
    request.push_str(&format!(
        "Host: 127.0.0.1:{upstream}\r\nConnection: close\r\n\r\n"
    ));
    up.write_all(request.as_bytes())?;
    up.write_all(&body)?;
    let mut response = Vec::new();
    up.read_to_end(&mut response)?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(response.len(), |p| p + 4);
    let (resp_head, resp_body) = response.split_at(split);
    let resp_head =
        String::from_utf8_lossy(resp_head).replace("Connection: keep-alive", "Connection: close");
    let is_blob = head[0].starts_with("GET ") && head[0].contains("/blobs/sha256:");
    let big = resp_body.len() > 64 * 1024 && resp_head.starts_with("HTTP/1.1 200");
    let mut resp_head = resp_head;
    if !resp_head.to_ascii_lowercase().contains("connection: close") {
        resp_head = resp_head.replacen("\r\n", "\r\nConnection: close\r\n", 1);
    }
    if is_blob && big {
        match fault {
            Fault::FlipByte => {
                faults.fetch_add(1, Ordering::SeqCst);
                let mut body = resp_body.to_vec();
                let mid = body.len() / 2;
                body[mid] ^= 0x55;
                client.write_all(resp_head.as_bytes())?;
                client.write_all(&body)?;
                return Ok(());
            }
            Fault::DropOnce if faults.fetch_add(1, Ordering::SeqCst) == 0 => {
                client.write_all(resp_head.as_bytes())?;
                client.write_all(&resp_body[..resp_body.len() / 2])?;
                client.flush()?;
                // Dropped halfway: a reset, not a clean end.
                let _ = client.shutdown(std::net::Shutdown::Both);
                return Ok(());
            }
            Fault::DropOnce => {}
        }
    }
    client.write_all(resp_head.as_bytes())?;
    client.write_all(resp_body)?;
    Ok(())
}

#[test]
fn a_flipped_byte_fails_the_pull_and_leaves_the_store_untouched() {
    let env = Env::new();
    let registry = Registry::start(&env, "origin");
    seed_debian(&env, &registry);
    let proxy = FaultProxy::start(registry.port, Fault::FlipByte);
    let runner = other_env();
    let before = runner.blobs();
    let err = kiln_fails(
        &runner,
        &[
            "pull",
            &format!("127.0.0.1:{}/library/debian:bookworm", proxy.port),
        ],
    );
    assert!(err.contains("digest mismatch"), "{err}");
    assert!(proxy.faults.load(Ordering::SeqCst) >= 1);
    assert_eq!(runner.blobs(), before, "a blob entered the store");
    let images = runner.ok(&["images"]);
    assert!(!images.contains("debian"), "{images}");
}

#[test]
fn a_connection_dropped_halfway_through_a_layer_is_retried() {
    let env = Env::new();
    let registry = Registry::start(&env, "origin");
    seed_debian(&env, &registry);
    let proxy = FaultProxy::start(registry.port, Fault::DropOnce);
    let runner = other_env();
    let (id, err) = kiln_ok(
        &runner,
        &[
            "pull",
            &format!("127.0.0.1:{}/library/debian:bookworm", proxy.port),
        ],
    );
    assert!(err.contains("retry GET blob"), "{err}");
    assert_eq!(
        proxy.faults.load(Ordering::SeqCst),
        1,
        "the fault was not made"
    );
    // The retry resumed where the cut left off: a ranged GET, answered 206.
    assert!(
        registry
            .log()
            .lines()
            .any(|l| l.contains("\"GET /v2/library/debian/blobs/sha256:") && l.contains("\" 206 ")),
        "no ranged GET after the cut:\n{}",
        registry.log()
    );
    let local = image_id(&env, "bb");
    assert_eq!(id.trim(), local.trim());
}

#[test]
fn a_second_runner_with_an_empty_store_reuses_the_registry_cache() {
    let env = Env::new();
    let registry = Registry::start(&env, "cache");
    let base = seed_debian(&env, &registry);
    let dockerfile = format!(
        "FROM {base}\nRUN echo step-ran-here && echo one > /one\nRUN echo step-ran-here && echo two > /two\nCMD [\"cat\", \"/one\"]\n"
    );
    let cache = format!("type=registry,ref={}/cache/app:buildcache", registry.host());
    let a = other_env();
    let ctx = write_dockerfile(&a, &dockerfile);
    let (id_a, out_a) = kiln_ok(
        &a,
        &[
            "build",
            "--cache-to",
            &cache,
            "-t",
            "app",
            ctx.to_str().unwrap(),
        ],
    );
    let ran = |out: &str| {
        out.lines()
            .filter(|l| {
                l.split_once(' ')
                    .is_some_and(|(_, rest)| rest == "step-ran-here")
            })
            .count()
    };
    assert_eq!(ran(&out_a), 2, "{out_a}");
    assert!(out_a.contains("exported 3 cache records"), "{out_a}");
    let b = other_env();
    let ctx = write_dockerfile(&b, &dockerfile);
    let (id_b, out_b) = kiln_ok(
        &b,
        &[
            "build",
            "--cache-from",
            &cache,
            "-t",
            "app",
            ctx.to_str().unwrap(),
        ],
    );
    assert_eq!(ran(&out_b), 0, "a RUN ran on the second runner:\n{out_b}");
    assert_eq!(out_b.matches(" CACHED").count(), 3, "{out_b}");
    assert_eq!(id_a, id_b);
    let one = b.ok(&["run", "--rm", "app"]);
    assert_eq!(one.trim(), "one");
}

/// A CA and a server certificate for 127.0.0.1, made with openssl in `dir`.
fn make_certs(dir: &Path) {
    let openssl = require("openssl");
    let sh = |args: &[&str]| run(Command::new(&openssl).current_dir(dir).args(args));
    sh(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=kiln test CA",
    ]);
    sh(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "srv.key",
        "-out",
        "srv.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    sh(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "srv.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

#[test]
fn tls_registry_with_basic_auth_login_push_pull() {
    let env = Env::new();
    let dir = env.path("registry-tls");
    std::fs::create_dir_all(&dir).unwrap();
    make_certs(&dir);
    let htpasswd = run(Command::new(require("htpasswd")).args(["-Bbn", "kiln", "s3cret"]));
    std::fs::write(dir.join("htpasswd"), htpasswd).unwrap();
    let registry = Registry::start_with(
        &env,
        "tls",
        &format!(
            "__TLS__auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}/htpasswd\n",
            dir.display()
        ),
    );
    let host = registry.host();
    let config = env.path("kiln-config.toml");
    std::fs::write(
        &config,
        format!("[registry.\"{host}\"]\nca = \"{}/ca.pem\"\n", dir.display()),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let docker_config = env.path("docker-config");
    let with_creds = |args: &[&str], stdin: Option<&str>| {
        let mut cmd = env.kiln();
        cmd.env("DOCKER_CONFIG", &docker_config).args(args);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    };
    env.busybox_base("bb");
    let target = format!("{host}/private/bb:1");
    // Anonymous: refused.
    let out = with_creds(&["push", "--config", config, "bb", &target], None);
    let err = assert_clean_failure(&out, "anonymous push");
    assert!(err.contains("refused the credentials"), "{err}");
    // Wrong password: login fails, nothing stored.
    let out = with_creds(
        &[
            "login",
            "--config",
            config,
            "-u",
            "kiln",
            "--password-stdin",
            &host,
        ],
        Some("wrong\n"),
    );
    let err = assert_clean_failure(&out, "login with a wrong password");
    assert!(err.contains("refused the credentials"), "{err}");
    assert!(!docker_config.join("config.json").exists());
    // Right password: stored, push and pull work.
    let out = with_creds(
        &[
            "login",
            "--config",
            config,
            "-u",
            "kiln",
            "--password-stdin",
            &host,
        ],
        Some("s3cret\n"),
    );
    assert_success(&out, "login");
    let out = with_creds(&["push", "--config", config, "bb", &target], None);
    assert_success(&out, "push over TLS with basic auth");
    let runner = other_env();
    let mut cmd = runner.kiln();
    let out = cmd
        .env("DOCKER_CONFIG", &docker_config)
        .args(["pull", "--config", config, &target])
        .output()
        .unwrap();
    assert_success(&out, "pull over TLS with basic auth");
    // Without the CA, TLS verification fails with a clear error.
    let runner = other_env();
    let out = runner
        .kiln()
        .env("DOCKER_CONFIG", &docker_config)
        .args(["pull", &target])
        .output()
        .unwrap();
    assert_clean_failure(&out, "pull without the CA");
    // Logout forgets.
    let out = with_creds(&["logout", &host], None);
    assert_success(&out, "logout");
    let out = with_creds(&["pull", "--config", config, &target], None);
    assert_clean_failure(&out, "pull after logout");
}

/// `ADD <https url>` trusts what a pull trusts: the CA file configured for the host.
#[test]
fn add_of_an_https_url_trusts_the_ca_configured_for_its_host() {
    let env = Env::new();
    let dir = env.path("registry-add-tls");
    std::fs::create_dir_all(&dir).unwrap();
    make_certs(&dir);
    let registry = Registry::start_with(&env, "add-tls", "__TLS__");
    let host = registry.host();
    let config = env.path("kiln-config.toml");
    std::fs::write(
        &config,
        format!("[registry.\"{host}\"]\nca = \"{}/ca.pem\"\n", dir.display()),
    )
    .unwrap();
    env.busybox_base("busybox");
    // The registry's /v2/ answers `{}`; a URL ending in `/` is saved as `__unnamed__`.
    let ctx = env.context(
        "add-tls",
        &format!("FROM busybox\nADD https://{host}/v2/ /got/\n"),
        &[],
    );
    let config = config.to_str().unwrap();
    env.build(&["--no-lint", "--config", config, "-t", "add-tls", &ctx]);
    let got = env.ok(&["run", "--rm", "add-tls", "cat", "/got/__unnamed__"]);
    assert_eq!(got.trim(), "{}");
    assert_eq!(registry.gets("/v2/").len(), 1, "{}", registry.log());
    // Without the CA the certificate is not trusted, and the error says which URL.
    let err = env.fails(&["build", "--no-lint", "--no-cache", "-t", "add-tls", &ctx]);
    assert!(err.contains(&format!("https://{host}/v2/")), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}

/// A registry impostor that serves fixed manifests (what a real registry refuses to store).
pub(crate) fn fake_registry(routes: Vec<(&'static str, &'static str, String)>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let Ok(head) = read_head(&mut reader) else {
                continue;
            };
            let Some(line) = head.first() else { continue };
            let path = line.split(' ').nth(1).unwrap_or("");
            let (status, ctype, body) = match routes.iter().find(|(p, _, _)| *p == path) {
                Some((_, ctype, body)) => ("200 OK", *ctype, body.clone()),
                None if path == "/v2/" => ("200 OK", "application/json", "{}".to_owned()),
                None => (
                    "404 Not Found",
                    "application/json",
                    r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#
                        .to_owned(),
                ),
            };
            let mut conn = conn;
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[test]
fn bad_input_gives_clear_errors() {
    let env = Env::new();
    // A malformed reference.
    let err = kiln_fails(&env, &["pull", "127.0.0.1:5000/UPPER//x"]);
    assert!(err.contains("invalid image reference"), "{err}");
    let err = kiln_fails(&env, &["pull", "--platform", "linux", "busybox"]);
    assert!(err.contains("invalid platform"), "{err}");
    let index = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":10,"platform":{"os":"linux","architecture":"s390x"}},{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","size":10,"platform":{"os":"windows","architecture":"amd64"}}]}"#;
    let port = fake_registry(vec![
        (
            "/v2/weird/manifests/1",
            "application/vnd.example.unknown+json",
            r#"{"schemaVersion":2,"mediaType":"application/vnd.example.unknown+json"}"#.to_owned(),
        ),
        (
            "/v2/multi/manifests/1",
            "application/vnd.oci.image.index.v1+json",
            index.to_owned(),
        ),
    ]);
    let err = kiln_fails(&env, &["pull", &format!("127.0.0.1:{port}/weird:1")]);
    assert!(
        err.contains("unsupported media type \"application/vnd.example.unknown+json\""),
        "{err}"
    );
    let err = kiln_fails(&env, &["pull", &format!("127.0.0.1:{port}/multi:1")]);
    assert!(err.contains("no image for platform linux/amd64"), "{err}");
    assert!(err.contains("linux/s390x, windows/amd64"), "{err}");
    let err = kiln_fails(&env, &["pull", &format!("127.0.0.1:{port}/absent:1")]);
    assert!(err.contains("manifest not found"), "{err}");
    // A bad config file in $XDG_CONFIG_HOME is named, with what is wrong in it.
    let xdg = env.path("xdg");
    std::fs::create_dir_all(xdg.join("kiln")).unwrap();
    std::fs::write(
        xdg.join("kiln/config.toml"),
        "[registry.\"docker.io\"]\nmirrors = [\"ftp://mirror/x\"]\n",
    )
    .unwrap();
    let out = env
        .kiln()
        .env("XDG_CONFIG_HOME", &xdg)
        .args(["pull", "busybox"])
        .output()
        .unwrap();
    let err = assert_clean_failure(&out, "pull with a bad config file");
    assert!(err.contains("kiln/config.toml"), "{err}");
    assert!(err.contains("expected https://host[:port]"), "{err}");
    std::fs::write(
        xdg.join("kiln/config.toml"),
        "[registry.\"x\"]\nmirorrs = []\n",
    )
    .unwrap();
    let out = env
        .kiln()
        .env("XDG_CONFIG_HOME", &xdg)
        .args(["pull", "busybox"])
        .output()
        .unwrap();
    let err = assert_clean_failure(&out, "pull with a misspelt config key");
    assert!(err.contains("mirorrs"), "{err}");
    let err = kiln_fails(&env, &["build", "--cache-to", "type=gha,scope=x", "-"]);
    assert!(err.contains("\"gha\" is not supported"), "{err}");
    assert!(env.blobs().is_empty());
}

/// base64 (standard alphabet, padded) or base64url (unpadded).
fn base64(bytes: &[u8], url: bool) -> String {
    let alphabet: &[u8; 64] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..=chunk.len() {
            out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
        if !url {
            for _ in chunk.len()..3 {
                out.push('=');
            }
        }
    }
    out
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A token issuer for distribution's `auth.token`: checks basic credentials and hands out an
/// RS256 JWT (signed with `openssl dgst`) granting the scopes asked for, its certificate in
/// the `x5c` header. Returns its port.
/// A token realm on 127.0.0.1 that grants any scope to `user`; its port, and the count of
/// tokens it has given.
fn token_issuer(
    dir: &Path,
    user: &'static str,
    password: &'static str,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let openssl = require("openssl");
    run(Command::new(&openssl).current_dir(dir).args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "tok.key",
        "-out",
        "tok.pem",
        "-days",
        "2",
        "-subj",
        "/CN=kiln test token issuer",
    ]));
    let der = Command::new(&openssl)
        .current_dir(dir)
        .args(["x509", "-in", "tok.pem", "-outform", "DER"])
        .output()
        .unwrap()
        .stdout;
    let header = format!(
        r#"{{"alg":"RS256","typ":"JWT","x5c":["{}"]}}"#,
        base64(&der, false)
    );
    let key = dir.join("tok.key");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let expected = format!(
        "Basic {}",
        base64(format!("{user}:{password}").as_bytes(), false)
    );
    let granted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = granted.clone();
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let Ok(head) = read_head(&mut reader) else {
                continue;
            };
            let Some(line) = head.first() else { continue };
            let target = line.split(' ').nth(1).unwrap_or("");
            let authorized = head.iter().any(|h| {
                h.split_once(':').is_some_and(|(k, v)| {
                    k.eq_ignore_ascii_case("authorization") && v.trim() == expected
                })
            });
            if !authorized {
                let _ = write!(
                    conn,
                    "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                continue;
            }
            let query = target.split_once('?').map_or("", |(_, q)| q);
            let mut access = Vec::new();
            for pair in query.split('&') {
                let Some(("scope", scope)) = pair.split_once('=') else {
                    continue;
                };
                let scope = percent_decode(scope);
                let mut parts = scope.splitn(3, ':');
                let (Some(kind), Some(name), Some(actions)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                let actions: Vec<String> = actions.split(',').map(|a| format!("{a:?}")).collect();
                access.push(format!(
                    r#"{{"type":"{kind}","name":"{name}","actions":[{}]}}"#,
                    actions.join(",")
                ));
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let claims = format!(
                r#"{{"iss":"kiln-test-issuer","sub":"{user}","aud":"kiln-test-registry","exp":{},"nbf":{},"iat":{now},"jti":"t{n}-{now}","access":[{}]}}"#,
                now + 600,
                now - 60,
                access.join(",")
            );
            let signing_input = format!(
                "{}.{}",
                base64(header.as_bytes(), true),
                base64(claims.as_bytes(), true)
            );
            let mut sign = Command::new("openssl")
                .args(["dgst", "-sha256", "-sign"])
                .arg(&key)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            sign.stdin
                .take()
                .unwrap()
                .write_all(signing_input.as_bytes())
                .unwrap();
            let signature = sign.wait_with_output().unwrap().stdout;
            let jwt = format!("{signing_input}.{}", base64(&signature, true));
            let body = format!(r#"{{"token":"{jwt}","access_token":"{jwt}","expires_in":600}}"#);
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, granted)
}

#[test]
fn bearer_token_registry_login_push_pull() {
    let env = Env::new();
    let dir = env.path("token");
    std::fs::create_dir_all(&dir).unwrap();
    let (issuer, granted) = token_issuer(&dir, "kiln", "t0ken-pass");
    let registry = Registry::start_with(
        &env,
        "bearer",
        &format!(
            "auth:\n  token:\n    realm: http://127.0.0.1:{issuer}/token\n    service: kiln-test-registry\n    issuer: kiln-test-issuer\n    rootcertbundle: {}/tok.pem\n",
            dir.display()
        ),
    );
    let host = registry.host();
    let docker_config = env.path("docker-config");
    let kiln_with_creds = |env: &Env, args: &[&str], stdin: Option<&str>| {
        let mut child = env
            .kiln()
            .env("DOCKER_CONFIG", &docker_config)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    };
    env.busybox_base("bb");
    let target = format!("{host}/team/bb:1");
    let out = kiln_with_creds(&env, &["push", "bb", &target], None);
    let err = assert_clean_failure(&out, "anonymous push to a token registry");
    assert!(err.contains("refused the credentials"), "{err}");
    let out = kiln_with_creds(
        &env,
        &["login", "-u", "kiln", "--password-stdin", &host],
        Some("nope"),
    );
    let err = assert_clean_failure(&out, "login with a wrong password");
    assert!(err.contains("refused the credentials"), "{err}");
    let out = kiln_with_creds(
        &env,
        &["login", "-u", "kiln", "--password-stdin", &host],
        Some("t0ken-pass"),
    );
    assert_success(&out, "login through the token realm");
    let out = kiln_with_creds(&env, &["push", "bb", &target], None);
    assert_success(&out, "push with a bearer token");
    let runner = other_env();
    let before = granted.load(std::sync::atomic::Ordering::SeqCst);
    let out = kiln_with_creds(&runner, &["pull", &target], None);
    assert_success(&out, "pull with a bearer token");
    // The manifest, the config and the layer are fetched with one token of the pull scope,
    // not one each: the realm is a round trip away from the registry.
    assert_eq!(
        granted.load(std::sync::atomic::Ordering::SeqCst) - before,
        1,
        "tokens the realm gave for one pull"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        image_id(&env, "bb")
    );
}

/// One plain HTTP/1.1 request to 127.0.0.1; returns (status, body).
pub(crate) fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let (status, _, body) = http_with_headers(port, method, path, headers, body);
    (status, body)
}

/// [`http`], also returning the response's header lines.
pub(crate) fn http_with_headers(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<String>, Vec<u8>) {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    conn.write_all(request.as_bytes()).unwrap();
    conn.write_all(body).unwrap();
    let mut response = Vec::new();
    conn.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(response.len(), |p| p + 4);
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let lines = head.lines().skip(1).map(str::to_owned).collect();
    (status, lines, response[split..].to_vec())
}

#[test]
fn docker_schema2_manifests_and_oci_indexes_pull() {
    let env = Env::new();
    let registry = Registry::start(&env, "formats");
    env.busybox_base("bb");
    let id = image_id(&env, "bb");
    let pushed = format!("{}/kiln/bb:1", registry.host());
    let (digest, _) = kiln_ok(&env, &["push", "bb", &pushed]);
    let digest = digest.trim();

    // An OCI index over that manifest, for two platforms, put with a plain HTTP request.
    let (status, manifest) = http(
        registry.port,
        "GET",
        &format!("/v2/kiln/bb/manifests/{digest}"),
        &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
        b"",
    );
    assert_eq!(status, 200);
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{digest}","size":{size},"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}},{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{digest}","size":{size},"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
        size = manifest.len()
    );
    let (status, body) = http(
        registry.port,
        "PUT",
        "/v2/kiln/bb/manifests/multi",
        &[("Content-Type", "application/vnd.oci.image.index.v1+json")],
        index.as_bytes(),
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let multi = format!("{}/kiln/bb:multi", registry.host());
    let runner = other_env();
    let (pulled, _) = kiln_ok(&runner, &["pull", "--platform", "linux/amd64", &multi]);
    assert_eq!(pulled.trim(), id);
    let err = kiln_fails(&runner, &["pull", "--platform", "linux/s390x", &multi]);
    assert!(
        err.contains(
            "no image for platform linux/s390x (the index has: linux/arm64/v8, linux/amd64)"
        ),
        "{err}"
    );

    // Docker pushes Docker schema 2 manifests with Docker media types.
    run(docker().args(["pull", &pushed]));
    let by_docker = format!("{}/docker/bb:1", registry.host());
    run(docker().args(["tag", &pushed, &by_docker]));
    run(docker().args(["push", &by_docker]));
    run(docker().args(["rmi", "-f", &pushed, &by_docker]));
    let (status, manifest) = http(
        registry.port,
        "GET",
        "/v2/docker/bb/manifests/1",
        &[(
            "Accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )],
        b"",
    );
    assert_eq!(status, 200);
    assert!(
        String::from_utf8_lossy(&manifest)
            .contains("application/vnd.docker.image.rootfs.diff.tar.gzip"),
        "docker pushed no schema 2 manifest"
    );
    let runner = other_env();
    let (pulled, _) = kiln_ok(&runner, &["pull", &by_docker]);
    assert_eq!(pulled.trim(), id, "docker keeps the config, so the id");
    let said = runner.ok(&["run", "--rm", &by_docker, "echo", "schema 2 ok"]);
    assert_eq!(said.trim(), "schema 2 ok");
}
