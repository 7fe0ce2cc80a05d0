//! Where the layers come from: a kiln store, a `docker save` archive, or an OCI archive.
//!
//! Archives are read in place: one pass over the tar headers (seeking over the contents)
//! finds each member's offset; the JSON documents are then read, and each layer member is
//! streamed from its offset when it is analysed. Nothing is unpacked or copied.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use kiln_image::archive::{self, ArchiveMembers, PlatformChoice, member_name};
use kiln_image::{Digest, ImageConfig, IoError, Store};

use crate::{Analysis, Analyzer, Error, LayerInfo};

/// An image whose layers can be read.
#[derive(Debug)]
pub struct Opened {
    /// The name it was opened by.
    pub name: String,
    /// Its config (history included).
    pub config: ImageConfig,
    layers: Vec<(LayerInfo, Location)>,
    origin: Origin,
}

#[derive(Debug)]
enum Origin {
    Store(Store),
    Archive(PathBuf),
}

#[derive(Debug, Clone)]
enum Location {
    Blob(Digest),
    Member { offset: u64, size: u64 },
}

/// Opens an image of the store (by name, id or digest).
pub fn open_store(store: &Store, name: &str) -> Result<Opened, Error> {
    let image = store.resolve(name)?;
    let created_by = layer_commands(&image.config);
    let layers = image
        .manifest
        .layers
        .iter()
        .enumerate()
        .map(|(i, d)| {
            (
                LayerInfo {
                    digest: d.digest.to_string(),
                    blob_size: Some(d.size),
                    created_by: created_by.get(i).cloned().flatten(),
                },
                Location::Blob(d.digest.clone()),
            )
        })
        .collect();
    Ok(Opened {
        name: name.to_owned(),
        config: image.config,
        layers,
        origin: Origin::Store(store.clone()),
    })
}

/// The `created_by` of each layer: the history entries that made a layer, in order.
pub fn layer_commands(config: &ImageConfig) -> Vec<Option<String>> {
    config
        .history
        .iter()
        .filter(|h| !h.empty_layer)
        .map(|h| h.created_by.clone())
        .collect()
}

/// The members of an archive file: where each one's content starts, and its size.
struct Members {
    path: PathBuf,
    file: File,
    index: HashMap<String, (u64, u64)>,
}

impl Members {
    fn scan(path: &Path) -> Result<Members, Error> {
        let io = |op| IoError::at(op, path);
        let file = File::open(path).map_err(io("open"))?;
        let mut index = HashMap::new();
        {
            let mut archive = tar::Archive::new(&file);
            for entry in archive.entries_with_seek().map_err(io("read"))? {
                let entry = entry.map_err(io("read"))?;
                if !entry.header().entry_type().is_file() {
                    continue;
                }
                let name = member_name(&entry.path_bytes());
                index.insert(name, (entry.raw_file_position(), entry.size()));
            }
        }
        Ok(Members {
            path: path.to_path_buf(),
            file,
            index,
        })
    }
}

impl ArchiveMembers for Members {
    fn size(&self, name: &str) -> Option<u64> {
        self.index.get(name).map(|&(_, size)| size)
    }

    fn read(&mut self, name: &str, limit: u64) -> kiln_image::Result<Vec<u8>> {
        let Some(&(offset, size)) = self.index.get(name) else {
            return Err(kiln_image::Error::BadArchive(format!(
                "it names {name:?}, which it does not contain"
            )));
        };
        if size > limit {
            return Err(kiln_image::Error::TooLarge {
                what: format!("{} in {}", name, self.path.display()),
                size,
                limit,
            });
        }
        let mut buf = Vec::with_capacity(size as usize);
        self.file
            .seek(SeekFrom::Start(offset))
            .and_then(|_| (&self.file).take(size).read_to_end(&mut buf))
            .map_err(IoError::at("read", &self.path))?;
        Ok(buf)
    }
}

/// Opens the image of a `docker save` archive or an OCI archive (the first image, or the
/// one for this machine's architecture in a multi-platform index).
pub fn open_archive(path: &Path) -> Result<Opened, Error> {
    let mut members = Members::scan(path)?;
    let image = match archive::read_images(&mut members, PlatformChoice::HostOrFirst) {
        Ok(images) => images.into_iter().next(),
        Err(kiln_image::Error::BadArchive(why)) => {
            return Err(Error::BadArchive {
                path: path.to_path_buf(),
                why,
            });
        }
        Err(e) => return Err(e.into()),
    };
    // read_images refuses an archive without images.
    let Some(image) = image else {
        return Err(Error::BadArchive {
            path: path.to_path_buf(),
            why: "it holds no image".into(),
        });
    };
    let created_by = layer_commands(&image.config);
    let mut layers = Vec::new();
    for (i, name) in image.layers.into_iter().enumerate() {
        let Some(&(offset, size)) = members.index.get(&name) else {
            return Err(Error::BadArchive {
                path: path.to_path_buf(),
                why: format!("layer {name} is missing"),
            });
        };
        let digest = name
            .strip_prefix("blobs/")
            .map(|d| d.replacen('/', ":", 1))
            .unwrap_or_else(|| name.clone());
        layers.push((
            LayerInfo {
                digest,
                blob_size: Some(size),
                created_by: created_by.get(i).cloned().flatten(),
            },
            Location::Member { offset, size },
        ));
    }
    Ok(Opened {
        name: path.display().to_string(),
        config: image.config,
        layers,
        origin: Origin::Archive(path.to_path_buf()),
    })
}

impl Opened {
    /// The layers' infos, bottom first.
    pub fn layer_infos(&self) -> Vec<LayerInfo> {
        self.layers.iter().map(|(i, _)| i.clone()).collect()
    }

    /// Reads every layer once and analyses the image.
    pub fn analyze(&self) -> Result<Analysis, Error> {
        let mut analyzer = Analyzer::new();
        let mut archive = match &self.origin {
            Origin::Archive(path) => Some(File::open(path).map_err(IoError::at("open", path))?),
            Origin::Store(_) => None,
        };
        for (info, location) in &self.layers {
            match (location, &self.origin, archive.as_mut()) {
                (Location::Blob(digest), Origin::Store(store), _) => {
                    let blob = store.open_blob(digest)?;
                    analyzer.add_layer_seekable(info.clone(), blob)?;
                }
                (Location::Member { offset, size }, Origin::Archive(_), Some(file)) => {
                    let member = Window {
                        file,
                        start: *offset,
                        len: *size,
                        pos: 0,
                    };
                    analyzer.add_layer_seekable(info.clone(), member)?;
                }
                _ => {
                    return Err(Error::BadArchive {
                        path: PathBuf::from(&self.name),
                        why: "layer location does not match its source".into(),
                    });
                }
            }
        }
        Ok(analyzer.finish())
    }
}

/// One member of an archive file, readable and seekable on its own.
struct Window<'f> {
    file: &'f mut File,
    start: u64,
    len: u64,
    pos: u64,
}

impl Read for Window<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        if left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        self.file.seek(SeekFrom::Start(self.start + self.pos))?;
        let n = self.file.read(&mut buf[..want])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Window<'_> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        let target = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
        };
        self.pos = target.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the member")
        })?;
        Ok(self.pos)
    }
}
