//! A build's inputs as `docker buildx build` takes them: the context (a directory; `-`: a
//! tar stream on stdin, plain or gzip, bzip2, xz or zstd; a git URL or an HTTP(S) URL, see
//! [`kiln_build::git`]) and the Dockerfile (in the context, a file named by `-f`, or stdin with
//! `-f -`).
//!
//! When the context is `-`, stdin is the context if it starts as an archive does and the
//! Dockerfile otherwise (buildx's rule). A context from stdin may be hostile: it is unpacked
//! with the layer code, which resolves every path inside the target directory, into a staging
//! directory of the store; the Dockerfile and ignore files in it are read only if they resolve
//! inside it too.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use kiln_build::context::{Context, clean_path};
use kiln_build::git::Remote;
use kiln_build::named::{NamedContext, NamedContexts, OciLayoutRef};
use kiln_image::Store;

use super::registry::RegistryFlags;

/// What stdin bytes are looked at to tell a context from a Dockerfile (buildx peeks two tar
/// blocks).
const PEEK: usize = 1024;

/// The context and the Dockerfile of a build.
pub struct Input {
    /// The build context.
    pub context: Context,
    /// The Dockerfile's text.
    pub dockerfile: String,
    /// Its name, for diagnostics.
    pub dockerfile_name: String,
    /// A URL context's time, for `SOURCE_DATE_EPOCH=context`: its `Last-Modified`, or the
    /// newest file of an archive without one (BuildKit's rule); seconds since 1970.
    pub source_time: Option<i64>,
    /// An unpacked stdin context, removed when the build is done.
    _staged: Option<tempfile::TempDir>,
}

/// Reads the context and the Dockerfile that `CONTEXT` and `-f FILE` name.
pub fn read_input(
    store: &Store,
    context_arg: &str,
    file: Option<&Path>,
    registry: &RegistryFlags,
) -> anyhow::Result<Input> {
    let file_is_stdin = file.is_some_and(|f| f == Path::new("-"));
    if let Some(remote) = Remote::parse(context_arg)? {
        return read_remote(store, remote, file, registry);
    }
    if context_arg == "-" {
        anyhow::ensure!(
            !file_is_stdin,
            "context - and -f -: stdin cannot be both the build context and the Dockerfile"
        );
        let mut stdin = io::stdin().lock();
        let head = peek(&mut stdin).context("read the build context or Dockerfile from stdin")?;
        if is_archive(&head) {
            let from = "the build context from stdin";
            return unpack_context(store, io::Cursor::new(head).chain(stdin), file, from);
        }
        anyhow::ensure!(
            file.is_none(),
            "-f {}: stdin holds a Dockerfile (it is not a tar archive), so -f is ambiguous; \
             give one or the other",
            file.map(|f| f.display().to_string()).unwrap_or_default()
        );
        let mut bytes = head;
        stdin
            .read_to_end(&mut bytes)
            .context("read the Dockerfile from stdin")?;
        return Ok(Input {
            context: Context::none(),
            dockerfile: dockerfile_text(bytes, "stdin")?,
            dockerfile_name: "-".to_owned(),
            source_time: None,
            _staged: None,
        });
    }
    let root = PathBuf::from(context_arg);
    if file_is_stdin {
        // The context's own .dockerignore applies, as there is no Dockerfile beside it.
        let context = Context::open(&root, None)?;
        let mut bytes = Vec::new();
        io::stdin()
            .lock()
            .read_to_end(&mut bytes)
            .context("read the Dockerfile from stdin (-f -)")?;
        return Ok(Input {
            context,
            dockerfile: dockerfile_text(bytes, "stdin (-f -)")?,
            dockerfile_name: "-".to_owned(),
            source_time: None,
            _staged: None,
        });
    }
    let file = file
        .map(PathBuf::from)
        .unwrap_or_else(|| default_dockerfile(&root));
    let context = Context::open(&root, Some(&file))?;
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("read the Dockerfile {}", file.display()))?;
    Ok(Input {
        context,
        dockerfile: text,
        dockerfile_name: file_name(&file),
        source_time: None,
        _staged: None,
    })
}

/// docker's default, and its fallback to a lower-case `dockerfile`.
fn default_dockerfile(root: &Path) -> PathBuf {
    let upper = root.join("Dockerfile");
    let lower = root.join("dockerfile");
    if !upper.exists() && lower.exists() {
        lower
    } else {
        upper
    }
}

fn file_name(file: &Path) -> String {
    file.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "Dockerfile".into())
}

fn dockerfile_text(bytes: Vec<u8>, from: &str) -> anyhow::Result<String> {
    String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("the Dockerfile from {from} is not UTF-8"))
}

/// Reads up to [`PEEK`] bytes (fewer only at the end of the stream).
fn peek(reader: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(PEEK);
    reader.take(PEEK as u64).read_to_end(&mut head)?;
    Ok(head)
}

/// Whether a stream that starts with `head` is an archive: compressed (gzip, bzip2, xz,
/// zstd: the formats the layer code decompresses), or a tar whose first header's checksum
/// holds, which no Dockerfile's text does.
pub fn is_archive(head: &[u8]) -> bool {
    const MAGIC: [&[u8]; 4] = [
        &[0x1f, 0x8b, 0x08],
        b"BZh",
        &[0xfd, b'7', b'z', b'X', b'Z', 0x00],
        &[0x28, 0xb5, 0x2f, 0xfd],
    ];
    MAGIC.iter().any(|m| head.starts_with(m)) || is_tar_header(head)
}

fn is_tar_header(head: &[u8]) -> bool {
    let Some(block) = head.get(..512) else {
        return false;
    };
    if block.iter().all(|&b| b == 0) {
        return false;
    }
    let field = &block[148..156];
    let digits: String = field
        .iter()
        .map(|&b| b as char)
        .skip_while(|c| *c == ' ')
        .take_while(|c| c.is_digit(8))
        .collect();
    let Ok(stored) = i64::from_str_radix(&digits, 8) else {
        return false;
    };
    // The checksum is the sum of the header's bytes with its own field read as spaces; old
    // tars summed them as signed bytes.
    let unsigned: i64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                i64::from(b)
            }
        })
        .sum();
    let signed: i64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                i64::from(b as i8)
            }
        })
        .sum();
    stored == unsigned || stored == signed
}

/// A remote context: a git checkout, or an HTTP download that is an archive (the context) or
/// text (the Dockerfile, with no context).
fn read_remote(
    store: &Store,
    remote: Remote,
    file: Option<&Path>,
    registry: &RegistryFlags,
) -> anyhow::Result<Input> {
    match remote {
        Remote::Git {
            url,
            reference,
            subdir,
            options,
        } => {
            let (staged, root) = stage_git(
                store,
                &url,
                reference.as_deref(),
                subdir.as_deref(),
                &options,
            )?;
            staged_input(staged, &root, file, &format!("the git context {url}"))
        }
        Remote::Http(url) => {
            let client = super::registry::client(registry)?;
            let mut download = client
                .fetch_url(&url)
                .with_context(|| format!("build context {url}"))?;
            let last_modified = download
                .header("last-modified")
                .and_then(kiln_build::http_date)
                .map(unix_seconds);
            let head = peek(&mut download).with_context(|| format!("download {url}"))?;
            if is_archive(&head) {
                let from = format!("the build context {url}");
                let mut input =
                    unpack_context(store, io::Cursor::new(head).chain(download), file, &from)?;
                input.source_time = match last_modified {
                    Some(seconds) => Some(seconds),
                    None => match &input.context.root {
                        Some(root) => newest_time(root)?,
                        None => None,
                    },
                };
                return Ok(input);
            }
            // BuildKit builds the download whatever -f names ("any name should work"), but
            // -f - would be a second Dockerfile.
            anyhow::ensure!(
                file != Some(Path::new("-")),
                "build context {url} is a Dockerfile (not an archive), so -f - gives a second one"
            );
            let mut bytes = head;
            download
                .read_to_end(&mut bytes)
                .with_context(|| format!("download {url}"))?;
            let name = file.and_then(Path::file_name).map_or_else(
                || "Dockerfile".to_owned(),
                |n| n.to_string_lossy().into_owned(),
            );
            Ok(Input {
                context: Context::none(),
                dockerfile: dockerfile_text(bytes, &url)?,
                dockerfile_name: name,
                source_time: last_modified,
                _staged: None,
            })
        }
    }
}

/// The time BuildKit takes for `SOURCE_DATE_EPOCH` from a download: its `Last-Modified`, or
/// the newest file of the archive it is (unpacked in a staging directory of the store, then
/// dropped); `None` for a plain file without one.
pub fn url_source_time(
    store: &Store,
    url: &str,
    registry: &RegistryFlags,
) -> anyhow::Result<Option<i64>> {
    let client = super::registry::client(registry)?;
    let mut download = client
        .fetch_url(url)
        .with_context(|| format!("download {url}"))?;
    if let Some(seconds) = download
        .header("last-modified")
        .and_then(kiln_build::http_date)
        .map(unix_seconds)
    {
        return Ok(Some(seconds));
    }
    let head = peek(&mut download).with_context(|| format!("download {url}"))?;
    if !is_archive(&head) {
        return Ok(None);
    }
    let staged = store.staging_dir("epoch")?;
    let plain =
        kiln_layer::decompress_auto(io::BufReader::new(io::Cursor::new(head).chain(download)))
            .with_context(|| format!("read {url}"))?;
    let opts = kiln_layer::ApplyOptions {
        preserve_owner: false,
        ..Default::default()
    };
    kiln_layer::apply_layer(plain, staged.path(), kiln_layer::ApplyMode::Merged, opts)
        .with_context(|| format!("unpack {url}"))?;
    newest_time(staged.path())
}

fn unix_seconds(time: std::time::SystemTime) -> i64 {
    let seconds = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    i64::try_from(seconds).unwrap_or(i64::MAX)
}

/// The newest mtime under `root` (not following links), what BuildKit takes as an archive's
/// time when its download has no `Last-Modified`.
fn newest_time(root: &Path) -> anyhow::Result<Option<i64>> {
    let mut newest = None;
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
            let entry = entry.with_context(|| format!("read {}", dir.display()))?;
            let meta = entry
                .metadata()
                .with_context(|| format!("stat {}", entry.path().display()))?;
            if meta.is_dir() {
                dirs.push(entry.path());
            }
            if let Ok(modified) = meta.modified() {
                newest = newest.max(Some(unix_seconds(modified)));
            }
        }
    }
    Ok(newest)
}

/// A git checkout in a staging directory of the store, and the directory of it that `subdir`
/// names.
fn stage_git(
    store: &Store,
    url: &str,
    reference: Option<&str>,
    subdir: Option<&str>,
    options: &kiln_build::git::GitOptions,
) -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
    let staged = store.staging_dir("git-context")?;
    kiln_build::git::checkout(
        url,
        reference,
        staged.path(),
        options.keep_git_dir == Some(true),
        options.checksum.as_deref(),
        options.submodules != Some(false),
    )?;
    // Private (0700) as made; a context directory is as a user makes it.
    std::fs::set_permissions(
        staged.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .with_context(|| format!("chmod {}", staged.path().display()))?;
    let root = kiln_build::git::subdir_of(staged.path(), subdir, url)?;
    Ok((staged, root))
}

/// Unpacks a context archive into a staging directory of the store and reads the Dockerfile
/// (`-f`, relative to the context, or `Dockerfile`) from it.
fn unpack_context(
    store: &Store,
    stream: impl Read,
    file: Option<&Path>,
    from: &str,
) -> anyhow::Result<Input> {
    let staged = store.staging_dir("context")?;
    let root = staged.path();
    let plain = kiln_layer::decompress_auto(io::BufReader::with_capacity(1 << 20, stream))
        .with_context(|| format!("read {from}"))?;
    let opts = kiln_layer::ApplyOptions {
        // The files are the user's, as a directory context's are; COPY sets owners itself.
        preserve_owner: false,
        ..Default::default()
    };
    let stats = kiln_layer::apply_layer(plain, root, kiln_layer::ApplyMode::Merged, opts)
        .with_context(|| format!("unpack {from}"))?;
    // The layer code reads `.wh.` names as whiteouts and drops them; in a context they are
    // files, which kiln cannot take from a stream.
    anyhow::ensure!(
        stats.whiteouts == 0 && stats.opaque_dirs == 0,
        "{from} holds files named `.wh.…`, which kiln cannot unpack from a tar stream; give \
         the context as a directory"
    );
    // Private (0700) as made; a context directory is as a user makes it.
    std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .with_context(|| format!("chmod {}", root.display()))?;
    let root = root.to_path_buf();
    staged_input(staged, &root, file, from)
}

/// The input of a context staged in the store at `root` (the staging dir or a subdirectory of
/// it): the Dockerfile (`-f`, relative to the context, `-` for stdin, or `Dockerfile`) must
/// resolve inside it.
fn staged_input(
    staged: tempfile::TempDir,
    root: &Path,
    file: Option<&Path>,
    from: &str,
) -> anyhow::Result<Input> {
    // The staging directory is private (0700); a context directory is as a user makes it.
    std::fs::set_permissions(
        staged.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .with_context(|| format!("chmod {}", staged.path().display()))?;
    if file.is_some_and(|f| f == Path::new("-")) {
        let mut bytes = Vec::new();
        io::stdin()
            .lock()
            .read_to_end(&mut bytes)
            .context("read the Dockerfile from stdin (-f -)")?;
        return Ok(Input {
            context: Context::open(root, None)?,
            dockerfile: dockerfile_text(bytes, "stdin (-f -)")?,
            dockerfile_name: "-".to_owned(),
            source_time: None,
            _staged: Some(staged),
        });
    }
    let dockerfile = match file {
        Some(file) => {
            let rel = clean_path(&file.to_string_lossy());
            anyhow::ensure!(
                !rel.is_empty(),
                "-f {}: not a file in the build context",
                file.display()
            );
            root.join(rel)
        }
        None => default_dockerfile(root),
    };
    let shown = dockerfile
        .strip_prefix(root)
        .unwrap_or(&dockerfile)
        .display()
        .to_string();
    let resolved = inside(root, &dockerfile, from)?
        .ok_or_else(|| anyhow::anyhow!("{from} holds no {shown} (name it with -f)"))?;
    anyhow::ensure!(resolved.is_file(), "{shown} in {from} is not a file");
    for ignore in [
        root.join(".dockerignore"),
        dockerfile.with_file_name(format!("{}.dockerignore", file_name(&dockerfile))),
    ] {
        inside(root, &ignore, from)?;
    }
    let context = Context::open(root, Some(&dockerfile))?;
    let text = std::fs::read(&resolved).with_context(|| format!("read {shown}"))?;
    Ok(Input {
        context,
        dockerfile: dockerfile_text(text, &format!("the context's {shown}"))?,
        dockerfile_name: file_name(&dockerfile),
        source_time: None,
        _staged: Some(staged),
    })
}

/// Where `path` (under `root`) leads, if it exists, after following its symlinks; an error
/// when that is outside `root` (a hostile context's `Dockerfile -> /etc/shadow`).
fn inside(root: &Path, path: &Path, from: &str) -> anyhow::Result<Option<PathBuf>> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(None);
    }
    let shown = path
        .strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string();
    let real_root = root
        .canonicalize()
        .with_context(|| format!("resolve {}", root.display()))?;
    let real = match path.canonicalize() {
        Ok(real) => real,
        // A dangling link is no file, wherever it points.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("resolve {shown}"))),
    };
    anyhow::ensure!(
        real.starts_with(&real_root),
        "{shown} in {from} is a link to outside the context; kiln does not read it"
    );
    Ok(Some(real))
}

/// The named contexts of a build, and the staging directories that URL contexts were fetched
/// into, which must outlive the build.
pub struct Named {
    /// By name.
    pub contexts: NamedContexts,
    _staged: Vec<tempfile::TempDir>,
}

/// `--build-context NAME=VALUE` values, as buildx reads them: a directory,
/// `docker-image://REF`, `oci-layout://PATH[:TAG][@DIGEST]` (whose image is loaded into the
/// store now, checked blob by blob, so that the build reads it like any other), a git URL (its
/// checkout), or an HTTP(S) URL (a directory holding the downloaded file, as BuildKit's
/// `llb.HTTP` gives it).
pub fn named_contexts(
    store: &Store,
    values: &[String],
    registry: &RegistryFlags,
) -> anyhow::Result<Named> {
    let mut contexts = NamedContexts::default();
    let mut staged = Vec::new();
    for text in values {
        let Some((name, value)) = text.split_once('=') else {
            anyhow::bail!("--build-context {text:?}: expected NAME=VALUE");
        };
        let context = if let Some(reference) = value.strip_prefix("docker-image://") {
            reference
                .parse::<kiln_image::Reference>()
                .with_context(|| format!("--build-context {text}"))?;
            NamedContext::Image(reference.to_owned())
        } else if let Some(layout) = OciLayoutRef::parse(value) {
            let layout = layout.with_context(|| format!("--build-context {text}"))?;
            let image = kiln_build::named::load_oci_layout(store, &layout)
                .with_context(|| format!("--build-context {text}: load the image"))?;
            NamedContext::Loaded(Box::new(image))
        } else if let Some(remote) =
            Remote::parse(value).with_context(|| format!("--build-context {text}"))?
        {
            let (dir, root) = match remote {
                Remote::Git {
                    url,
                    reference,
                    subdir,
                    options,
                } => stage_git(
                    store,
                    &url,
                    reference.as_deref(),
                    subdir.as_deref(),
                    &options,
                ),
                Remote::Http(url) => stage_download(store, &url, registry),
            }
            .with_context(|| format!("--build-context {text}"))?;
            let context = Context::open(&root, None)?;
            staged.push(dir);
            NamedContext::Dir(context)
        } else if let Some(scheme) = ["target:", "input:"]
            .iter()
            .find(|s| value.starts_with(**s))
        {
            anyhow::bail!(
                "--build-context {text}: {scheme} contexts (bake's) are not supported by kiln"
            );
        } else {
            let dir = Path::new(value);
            anyhow::ensure!(
                dir.is_dir(),
                "--build-context {text}: {value} is not a directory"
            );
            // Its own .dockerignore applies, as BuildKit reads it.
            NamedContext::Dir(
                Context::open(dir, None).with_context(|| format!("--build-context {text}"))?,
            )
        };
        contexts
            .insert(name, context)
            .with_context(|| format!("--build-context {text}"))?;
    }
    Ok(Named {
        contexts,
        _staged: staged,
    })
}

/// Downloads `url` into a staging directory, as one file named as BuildKit names it: the
/// `Content-Disposition` filename, else the URL path's last segment, else `index`.
fn stage_download(
    store: &Store,
    url: &str,
    registry: &RegistryFlags,
) -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
    let client = super::registry::client(registry)?;
    let mut download = client.fetch_url(url)?;
    let name = download
        .header("content-disposition")
        .and_then(disposition_filename)
        .or_else(|| url_file_name(url))
        .unwrap_or_else(|| "index".to_owned());
    let staged = store.staging_dir("url-context")?;
    std::fs::set_permissions(
        staged.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .with_context(|| format!("chmod {}", staged.path().display()))?;
    let path = staged.path().join(&name);
    let mut file =
        std::fs::File::create(&path).with_context(|| format!("create {}", path.display()))?;
    io::copy(&mut download, &mut file).with_context(|| format!("download {url}"))?;
    let root = staged.path().to_path_buf();
    Ok((staged, root))
}

/// A plain file name (no directory, not `.` or `..`), or nothing.
fn plain_name(name: &str) -> Option<String> {
    let name = name.trim().trim_matches('"');
    (!name.is_empty() && name != "." && name != ".." && !name.contains('/'))
        .then(|| name.to_owned())
}

fn disposition_filename(header: &str) -> Option<String> {
    header
        .split(';')
        .find_map(|part| part.trim().strip_prefix("filename="))
        .and_then(plain_name)
}

fn url_file_name(url: &str) -> Option<String> {
    let path = url.split(['?', '#']).next()?;
    let after_host = path.split_once("://")?.1.split_once('/')?.1;
    plain_name(after_host.rsplit('/').next()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(name: &str) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, &b"abc"[..]).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn downloads_are_named_as_buildkit_names_them() {
        assert_eq!(
            url_file_name("https://h/a/b.tar.gz?x=1"),
            Some("b.tar.gz".into())
        );
        assert_eq!(url_file_name("https://h/"), None);
        assert_eq!(url_file_name("https://h"), None);
        assert_eq!(
            disposition_filename("attachment; filename=\"x.txt\""),
            Some("x.txt".into())
        );
        assert_eq!(disposition_filename("attachment; filename=../x"), None);
    }

    #[test]
    fn archives_are_told_from_dockerfiles() {
        assert!(is_archive(&tar_of("Dockerfile")));
        let mut gnu = tar::Header::new_gnu();
        gnu.set_path("x").unwrap();
        gnu.set_cksum();
        assert!(is_archive(gnu.as_bytes()));
        assert!(is_archive(&[0x1f, 0x8b, 0x08, 0]));
        assert!(is_archive(b"BZh91AY"));
        assert!(is_archive(&[0xfd, b'7', b'z', b'X', b'Z', 0, 0]));
        assert!(is_archive(&[0x28, 0xb5, 0x2f, 0xfd, 0]));
        assert!(!is_archive(b"FROM busybox\nRUN echo hi\n"));
        let long = "# a comment\n".repeat(100) + "FROM busybox\n";
        assert!(!is_archive(long.as_bytes()));
        assert!(!is_archive(&[0u8; 1024]));
        let mut broken = tar_of("Dockerfile");
        broken[0] ^= 1;
        assert!(!is_archive(&broken), "a wrong checksum is not a tar");
    }
}
