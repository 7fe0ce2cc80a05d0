//! Unpacked layers (`snapshots/<chain id>/`) and the overlay mounts built from them.
//!
//! Each snapshot holds one layer in overlayfs form (whiteouts as 0/0 devices, opaque dirs as
//! xattrs), so a step's rootfs is an overlay whose lowers are its image's snapshots. Nothing is
//! ever copied from one snapshot to another.

use std::path::{Path, PathBuf};

use kiln_image::{Digest, Image, Store, chain_id};
use kiln_layer::{ApplyMode, ApplyOptions};
use rustix::mount::UnmountFlags;

use crate::Error;

/// Makes sure every layer of `image` is unpacked, and returns the overlay lower dirs, top-most
/// first.
pub fn lowers(store: &Store, image: &Image) -> Result<Vec<PathBuf>, Error> {
    lowers_of(store, &image.manifest.layers, &image.config.rootfs.diff_ids)
}

/// [`lowers`] for a stack of layers that is not (yet) an image.
pub fn lowers_of(
    store: &Store,
    layers: &[kiln_image::Descriptor],
    diff_ids: &[Digest],
) -> Result<Vec<PathBuf>, Error> {
    let mut dirs = Vec::with_capacity(diff_ids.len());
    for (i, layer) in layers.iter().enumerate() {
        let chain = chain_id(diff_ids.get(..=i).unwrap_or_default())
            .filter(|_| i < diff_ids.len())
            .ok_or_else(|| Error::BadArchive("the image has more layers than diff ids".into()))?;
        let dir = store.snapshot_dir(&chain);
        if !dir.is_dir() {
            unpack(store, layer, &diff_ids[i], &chain)?;
        }
        dirs.push(dir);
    }
    dirs.reverse();
    Ok(dirs)
}

/// Unpacks a layer into the snapshot of `chain`. A snapshot is trusted by its name alone from
/// then on, so it is made only from a blob that matches its descriptor and unpacks to the
/// diff id its chain id was computed from.
fn unpack(
    store: &Store,
    layer: &kiln_image::Descriptor,
    diff_id: &Digest,
    chain: &Digest,
) -> Result<(), Error> {
    let staging = store.staging_dir("snapshot")?;
    let target = staging.path().join("layer");
    std::fs::create_dir(&target).map_err(Error::io("create directory", &target))?;
    kiln_layer::apply_stored_layer(
        store,
        layer,
        diff_id,
        &target,
        ApplyMode::Overlay,
        ApplyOptions {
            // An overlay mounted in a user namespace reads only `user.overlay.*` xattrs.
            user_xattrs: kiln_sandbox::userns::current().is_some(),
            ..ApplyOptions::default()
        },
    )?;
    store.commit_snapshot(&target, chain)?;
    Ok(())
}

/// An overlay mounted in kiln's own mount namespace, unmounted on drop.
#[derive(Debug)]
pub struct OverlayMount {
    target: PathBuf,
}

impl OverlayMount {
    /// Mounts lowers (top-most first) and an optional upper/work pair at `target`, with the
    /// sandbox's overlay options (`kiln_sandbox::overlay`). Without an upper the mount is
    /// read-only. `empty` (and a sibling `empty.2`) fill up a stack too short for overlayfs.
    pub fn mount(
        lowers: &[PathBuf],
        upper: Option<(&Path, &Path)>,
        empty: &Path,
        target: &Path,
    ) -> Result<OverlayMount, Error> {
        // overlayfs needs one lower with an upper and two without: empty dirs at the bottom
        // fill the stack up, changing nothing in the merged view, and a single layer's
        // whiteouts are still hidden by the mount. They must be distinct dirs.
        let least = if upper.is_some() { 1 } else { 2 };
        let mut stack = lowers.to_vec();
        if stack.len() < least {
            stack.push(empty.to_path_buf());
        }
        if stack.len() < least {
            let spare = empty.with_extension("2");
            match std::fs::create_dir(&spare) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(Error::io("create directory", spare)(e));
                }
                _ => stack.push(spare),
            }
        }
        let overlay = kiln_sandbox::overlay::Overlay {
            lowers: &stack,
            upper,
        };
        overlay.mount(target)?;
        Ok(OverlayMount {
            target: target.to_path_buf(),
        })
    }

    /// Where the merged view is.
    pub fn path(&self) -> &Path {
        &self.target
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        // Detach: an open file elsewhere must not keep the staging dir from being removed.
        let _ = rustix::mount::unmount(&self.target, UnmountFlags::DETACH);
    }
}

/// A staging area for one step: `upper/`, `work/`, `merged/` and an empty lower.
#[derive(Debug)]
pub struct StepDirs {
    /// Removed on drop (after the mount is gone).
    pub staging: tempfile::TempDir,
}

impl StepDirs {
    /// Creates the directories under the store's staging area.
    pub fn new(store: &Store, purpose: &str) -> Result<StepDirs, Error> {
        let staging = store.staging_dir(purpose)?;
        for dir in ["upper", "work", "merged", "empty"] {
            let path = staging.path().join(dir);
            std::fs::create_dir(&path).map_err(Error::io("create directory", &path))?;
        }
        Ok(StepDirs { staging })
    }

    /// The overlay upper dir.
    pub fn upper(&self) -> PathBuf {
        self.staging.path().join("upper")
    }

    /// The overlay work dir.
    pub fn work(&self) -> PathBuf {
        self.staging.path().join("work")
    }

    /// The mount point.
    pub fn merged(&self) -> PathBuf {
        self.staging.path().join("merged")
    }

    /// An empty dir, the lower of a rootfs with no layers.
    pub fn empty(&self) -> PathBuf {
        self.staging.path().join("empty")
    }
}

/// A writable overlay of a stack of layers: the merged view of a step that writes files
/// itself (COPY, ADD, WORKDIR), with its upper dir holding exactly the change.
pub fn mount_writable(
    store: &Store,
    purpose: &str,
    layers: &[kiln_image::Descriptor],
    diff_ids: &[Digest],
) -> Result<(StepDirs, OverlayMount), Error> {
    let dirs = StepDirs::new(store, purpose)?;
    let lowers = lowers_of(store, layers, diff_ids)?;
    let mount = OverlayMount::mount(
        &lowers,
        Some((&dirs.upper(), &dirs.work())),
        &dirs.empty(),
        &dirs.merged(),
    )?;
    Ok((dirs, mount))
}

/// `--isolation chroot`'s snapshotter, which needs no overlayfs: one plain rootfs directory per
/// stage, made by applying the stage's layers and changed in place by each step. A step's layer
/// is what changed between the walk before it and the walk after it
/// ([`kiln_layer::store_layer_from_changes`]), in the same form as an overlay upper dir's.
#[derive(Debug)]
pub struct WorkingRoot {
    staging: tempfile::TempDir,
    /// The layers the directory holds, bottom first.
    diff_ids: Vec<Digest>,
    /// The walk after the last of them.
    walk: kiln_layer::TreeState,
}

impl WorkingRoot {
    /// The rootfs directory.
    pub fn path(&self) -> PathBuf {
        self.staging.path().join("rootfs")
    }

    /// Takes the stage's root out of `slot` holding exactly `layers`: the one there if it
    /// holds a first part of them (the layers of cache hits since are applied on top, and the
    /// walk made again), a new one otherwise. A step that fails does not put its root back,
    /// so a half-changed tree is never reused.
    pub fn take(
        slot: &mut Option<WorkingRoot>,
        store: &Store,
        layers: &[kiln_image::Descriptor],
        diff_ids: &[Digest],
    ) -> Result<WorkingRoot, Error> {
        let mut root = match slot.take() {
            Some(root) if diff_ids.starts_with(&root.diff_ids) => root,
            _ => {
                let staging = store.staging_dir("chroot")?;
                let dir = staging.path().join("rootfs");
                std::fs::create_dir(&dir).map_err(Error::io("create directory", &dir))?;
                WorkingRoot {
                    staging,
                    diff_ids: Vec::new(),
                    walk: kiln_layer::TreeState::default(),
                }
            }
        };
        if root.diff_ids.len() < diff_ids.len() || root.diff_ids.is_empty() {
            let dir = root.path();
            for (layer, diff_id) in layers.iter().zip(diff_ids).skip(root.diff_ids.len()) {
                kiln_layer::apply_stored_layer(
                    store,
                    layer,
                    diff_id,
                    &dir,
                    ApplyMode::Merged,
                    ApplyOptions::default(),
                )?;
            }
            root.diff_ids = diff_ids.to_vec();
            root.walk = kiln_layer::TreeState::scan(&dir)?;
        }
        Ok(root)
    }

    /// Commits what changed since the last walk as the stage's next layer, like
    /// [`crate::steps`]' overlay commit, and puts the root back into `slot`.
    pub(crate) fn commit(
        mut self,
        slot: &mut Option<WorkingRoot>,
        store: &Store,
        state: &mut crate::steps::StageState,
        created_by: String,
    ) -> Result<(), Error> {
        let (layer, walk) = kiln_layer::store_layer_from_changes(
            store,
            &self.path(),
            &self.walk,
            kiln_sandbox::chroot::FURNISHED,
            kiln_layer::DiffOptions {
                source_date_epoch: crate::source_date_epoch(),
            },
        )?;
        state.config.rootfs.diff_ids.push(layer.diff_id.clone());
        state.layers.push(kiln_image::Descriptor::new(
            kiln_image::media_type::OCI_LAYER_TAR,
            layer.diff_id,
            layer.size,
        ));
        crate::steps::push_history(&mut state.config, created_by, false);
        self.diff_ids = state.config.rootfs.diff_ids.clone();
        self.walk = walk;
        *slot = Some(self);
        Ok(())
    }
}

/// A read-only tree of a stack of layers without overlayfs: applied into a staging dir, which
/// goes with the returned handle (`COPY --from` in `--isolation chroot`).
pub fn materialize(
    store: &Store,
    layers: &[kiln_image::Descriptor],
    diff_ids: &[Digest],
) -> Result<tempfile::TempDir, Error> {
    let mut slot = None;
    let root = WorkingRoot::take(&mut slot, store, layers, diff_ids)?;
    Ok(root.staging)
}
