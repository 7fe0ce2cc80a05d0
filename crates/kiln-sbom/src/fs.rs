//! The few files an SBOM needs, read from an image's merged file system: every layer's tar,
//! bottom first, with its whiteouts honoured, and nothing unpacked or run.

use std::collections::BTreeMap;
use std::io::Read;

use kiln_image::{Descriptor, Store};

use crate::Error;

/// Larger files than this are not what the SBOM reads (a dpkg status is a few MB).
const MAX_FILE: u64 = 64 << 20;

/// Whether the SBOM reads the file at `path` (relative, no leading `/`).
pub fn wanted(path: &str) -> bool {
    if path == "var/lib/dpkg/status" || path == "etc/os-release" || path == "usr/lib/os-release" {
        return true;
    }
    if let Some(rest) = path.strip_prefix("usr/share/doc/")
        && let Some((package, file)) = rest.split_once('/')
    {
        return !package.is_empty() && file == "copyright";
    }
    path.ends_with(".dist-info/METADATA")
        || path.ends_with(".egg-info/PKG-INFO")
        || (path.ends_with(".egg-info") && !path.ends_with("/.egg-info"))
}

/// `./a/b/` → `a/b`.
fn clean(path: &str) -> String {
    path.trim_start_matches("./")
        .trim_start_matches('/')
        .trim_end_matches('/')
        .to_owned()
}

/// The wanted files of the merged file system: path (relative) → contents.
#[derive(Debug, Default)]
pub struct Files {
    files: BTreeMap<String, Vec<u8>>,
}

impl Files {
    /// Reads the layers of an image bottom first.
    pub fn of_layers(store: &Store, layers: &[Descriptor]) -> Result<Files, Error> {
        let mut files = Files::default();
        for layer in layers {
            let blob = store.open_blob(&layer.digest)?;
            let reader =
                kiln_layer::decompress_auto(std::io::BufReader::new(blob)).map_err(|source| {
                    Error::Decompress {
                        layer: layer.digest.to_string(),
                        source,
                    }
                })?;
            files.add_layer(reader).map_err(|source| Error::Layer {
                layer: layer.digest.to_string(),
                source,
            })?;
        }
        Ok(files)
    }

    /// Applies one layer: its whiteouts and replaced paths hide what lower layers had, then
    /// its own files are added.
    pub fn add_layer<R: Read>(&mut self, reader: R) -> std::io::Result<()> {
        let mut hidden: Vec<(String, bool)> = Vec::new();
        let mut added: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let raw = entry.path_bytes();
            let path = clean(&String::from_utf8_lossy(&raw));
            let (dir, name) = match path.rsplit_once('/') {
                Some((d, n)) => (format!("{d}/"), n.to_owned()),
                None => (String::new(), path.clone()),
            };
            if name == kiln_layer::WHITEOUT_OPAQUE {
                // Everything lower under the directory goes; the directory stays.
                hidden.push((dir, true));
                continue;
            }
            if let Some(gone) = name.strip_prefix(kiln_layer::WHITEOUT_PREFIX) {
                hidden.push((format!("{dir}{gone}"), false));
                continue;
            }
            let kind = entry.header().entry_type();
            // A file, link or device here replaces whatever lower layers had at the path;
            // only paths that lead to a file already read matter.
            if !kind.is_dir()
                && self
                    .files
                    .range(path.clone()..)
                    .next()
                    .is_some_and(|(p, _)| p.starts_with(&path))
            {
                hidden.push((path.clone(), false));
            }
            if !wanted(&path) {
                continue;
            }
            if kind.is_hard_link() {
                let target = entry
                    .link_name()?
                    .map(|t| clean(&t.to_string_lossy()))
                    .unwrap_or_default();
                let bytes = added
                    .get(&target)
                    .or_else(|| self.files.get(&target))
                    .cloned();
                if let Some(bytes) = bytes {
                    added.insert(path, bytes);
                }
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            if entry.size() > MAX_FILE {
                return Err(std::io::Error::other(format!(
                    "/{path} is {} bytes, more than the {MAX_FILE} an SBOM reads",
                    entry.size()
                )));
            }
            let mut bytes = Vec::with_capacity(entry.size() as usize);
            entry.read_to_end(&mut bytes)?;
            added.insert(path, bytes);
        }
        for (path, contents_only) in hidden {
            if contents_only {
                self.files.retain(|p, _| !p.starts_with(&path));
            } else {
                let under = format!("{path}/");
                self.files
                    .retain(|p, _| p != &path && !p.starts_with(&under));
            }
        }
        self.files.extend(added);
        Ok(())
    }

    /// The contents of one file.
    pub fn get(&self, path: &str) -> Option<&[u8]> {
        self.files.get(path).map(Vec::as_slice)
    }

    /// Every file read, by path.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.files.iter().map(|(p, b)| (p.as_str(), b.as_slice()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            match data {
                Some(data) => {
                    h.set_size(data.len() as u64);
                    h.set_mode(0o644);
                    h.set_entry_type(tar::EntryType::Regular);
                    b.append_data(&mut h, name, *data).unwrap();
                }
                None => {
                    h.set_size(0);
                    h.set_mode(0o755);
                    h.set_entry_type(tar::EntryType::Directory);
                    b.append_data(&mut h, name, &[][..]).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn whiteouts_and_opaque_dirs_hide_lower_files() {
        let mut files = Files::default();
        let meta = |n: &str| format!("usr/lib/python3/dist-packages/{n}.dist-info/METADATA");
        let (a, b, c) = (meta("a-1"), meta("b-1"), meta("c-1"));
        files
            .add_layer(
                &layer(&[
                    ("./var/lib/dpkg/status", Some(b"one")),
                    (&a, Some(b"a")),
                    (&b, Some(b"b")),
                    ("opt/venv/lib/x.dist-info/METADATA", Some(b"x")),
                    ("usr/share/doc/bash/README", Some(b"not wanted")),
                ])[..],
            )
            .unwrap();
        files
            .add_layer(
                &layer(&[
                    ("var/lib/dpkg/status", Some(b"two")),
                    ("usr/lib/python3/dist-packages/.wh.a-1.dist-info", Some(b"")),
                    ("opt/venv/lib/.wh..wh..opq", Some(b"")),
                    (&c, Some(b"c")),
                ])[..],
            )
            .unwrap();
        let paths: Vec<&str> = files.iter().map(|(p, _)| p).collect();
        assert_eq!(paths, [b.as_str(), c.as_str(), "var/lib/dpkg/status"]);
        // A file where a directory was hides what the directory held.
        files
            .add_layer(&layer(&[("usr/lib/python3", Some(b"a file now"))])[..])
            .unwrap();
        let paths: Vec<&str> = files.iter().map(|(p, _)| p).collect();
        assert_eq!(paths, ["var/lib/dpkg/status"]);
        assert_eq!(files.get("var/lib/dpkg/status"), Some(&b"two"[..]));
    }

    #[test]
    fn wanted_paths() {
        assert!(wanted("usr/share/doc/bash/copyright"));
        assert!(!wanted("usr/share/doc/bash/x/copyright"));
        assert!(wanted("usr/lib/python3/dist-packages/six-1.16.0.egg-info"));
        assert!(wanted("x/six-1.16.0.egg-info/PKG-INFO"));
        assert!(!wanted("x/six-1.16.0.dist-info/RECORD"));
    }
}
