//! dive's efficiency model, computed while the layers stream by.
//!
//! For every layer, dive builds a file tree from the layer's tar and visits its *leaves* (an
//! entry with no other entry of the same layer under it). Each visit adds one node to the
//! record of that path:
//!
//! - a regular leaf adds the size of its tar entry (0 for directories, symlinks, hard links);
//! - a whiteout `.wh.NAME` adds, when NAME was a directory in the stack of the layers below,
//!   the total size of that directory's subtree there, and 0 otherwise (a deleted file adds
//!   0, so its record's minimum drops to 0 and its whole size becomes waste);
//! - opaque markers (`.wh..wh..opq`) are not visited.
//!
//! Per path: `cumulative` is the sum of the sizes added, `minimum` the smallest one. The
//! score is `Σ minimum / Σ cumulative` over all paths (1 when nothing has a size). A path
//! visited at least twice is an *inefficiency*, and dive's wasted bytes are the sum of the
//! cumulative sizes of the inefficiencies (every copy, the last one included). This module
//! also gives `reclaimable` = `Σ (cumulative − minimum)`, the part a rebuild could save.
//!
//! One divergence, on malformed input only: dive stops visiting a layer when a whiteout names
//! a path that no lower layer has; here that whiteout is skipped and the rest of the layer is
//! still counted.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One tar entry of a layer, as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Cleaned path without a leading slash (`etc/passwd`); whiteouts keep their `.wh.` name.
    pub path: String,
    /// The tar entry's size (0 for directories, links, devices).
    pub size: u64,
    /// True for a directory entry.
    pub is_dir: bool,
}

impl Entry {
    fn whiteout_target(&self) -> Option<String> {
        let (dir, name) = match self.path.rsplit_once('/') {
            Some((d, n)) => (Some(d), n),
            None => (None, self.path.as_str()),
        };
        let target = name.strip_prefix(".wh.")?;
        if target.starts_with(".wh.") {
            return None;
        }
        Some(match dir {
            Some(d) => format!("{d}/{target}"),
            None => target.to_owned(),
        })
    }

    fn is_opaque(&self) -> bool {
        self.path
            .rsplit('/')
            .next()
            .is_some_and(|n| n.starts_with(".wh..wh."))
    }
}

/// Per-path record.
#[derive(Debug, Clone, Default)]
pub(crate) struct PathRecord {
    pub cumulative: u64,
    pub minimum: u64,
    /// (layer index, size added) of each node, in layer order.
    pub nodes: Vec<(usize, u64)>,
}

#[derive(Debug, Clone, Copy)]
struct Stacked {
    size: u64,
    is_dir: bool,
    layer: usize,
}

/// The streaming state: the stacked tree of the layers seen so far and the path records.
#[derive(Debug, Default)]
pub(crate) struct Model {
    stacked: BTreeMap<String, Stacked>,
    pub records: HashMap<String, PathRecord>,
    /// Bytes of each layer that a later layer replaced or deleted.
    pub hidden: Vec<u64>,
}

impl Model {
    /// Adds the next layer.
    pub fn add_layer(&mut self, entries: Vec<Entry>) {
        let layer = self.hidden.len();
        self.hidden.push(0);
        // The layer's tree: the last entry for a path wins (tar semantics; dive replaces the
        // node's payload the same way).
        let mut tree: BTreeMap<String, Entry> = BTreeMap::new();
        for e in entries {
            if e.is_opaque() || e.path.is_empty() {
                continue;
            }
            tree.insert(e.path.clone(), e);
        }
        let keys: BTreeSet<&str> = tree.keys().map(String::as_str).collect();
        for (path, entry) in &tree {
            let prefix = format!("{path}/");
            let is_leaf = !keys
                .range(prefix.as_str()..)
                .next()
                .is_some_and(|k| k.starts_with(&prefix));
            if !is_leaf {
                continue;
            }
            let (key, size) = match entry.whiteout_target() {
                Some(target) => match self.stacked.get(&target) {
                    None => continue,
                    Some(s) if s.is_dir => (target.clone(), self.subtree_size(&target)),
                    Some(_) => (target, 0),
                },
                None => (path.clone(), entry.size),
            };
            let record = self.records.entry(format!("/{key}")).or_default();
            if record.nodes.is_empty() || size < record.minimum {
                record.minimum = size;
            }
            record.cumulative += size;
            record.nodes.push((layer, size));
        }
        // Stack the layer: whiteouts first (dive sorts `.wh.x` before `x`), then the entries.
        for entry in tree.values() {
            if let Some(target) = entry.whiteout_target() {
                self.remove_subtree(&target);
            }
        }
        for (path, entry) in &tree {
            if entry.whiteout_target().is_some() {
                continue;
            }
            // Parents that the tar does not list come in as plain nodes (as in dive).
            let mut at = 0;
            while let Some(i) = path[at..].find('/') {
                let parent = &path[..at + i];
                self.stacked.entry(parent.to_owned()).or_insert(Stacked {
                    size: 0,
                    is_dir: false,
                    layer,
                });
                at += i + 1;
            }
            if let Some(old) = self.stacked.insert(
                path.clone(),
                Stacked {
                    size: entry.size,
                    is_dir: entry.is_dir,
                    layer,
                },
            ) && old.layer != layer
            {
                self.hidden[old.layer] += old.size;
            }
        }
    }

    fn subtree(&self, path: &str) -> impl Iterator<Item = (&String, &Stacked)> {
        let prefix = format!("{path}/");
        let own = self.stacked.get_key_value(path);
        let below: Vec<(&String, &Stacked)> = self
            .stacked
            .range(prefix.clone()..)
            .take_while(move |(k, _)| k.starts_with(&prefix))
            .collect();
        own.into_iter().chain(below)
    }

    fn subtree_size(&self, path: &str) -> u64 {
        self.subtree(path).map(|(_, s)| s.size).sum()
    }

    fn remove_subtree(&mut self, path: &str) {
        let doomed: Vec<(String, Stacked)> =
            self.subtree(path).map(|(k, s)| (k.clone(), *s)).collect();
        for (key, s) in doomed {
            self.stacked.remove(&key);
            self.hidden[s.layer] += s.size;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64) -> Entry {
        Entry {
            path: path.into(),
            size,
            is_dir: false,
        }
    }

    fn dir(path: &str) -> Entry {
        Entry {
            path: path.into(),
            size: 0,
            is_dir: true,
        }
    }

    fn score(model: &Model) -> (u64, u64, u64) {
        let min: u64 = model.records.values().map(|r| r.minimum).sum();
        let cum: u64 = model.records.values().map(|r| r.cumulative).sum();
        let wasted: u64 = model
            .records
            .values()
            .filter(|r| r.nodes.len() >= 2)
            .map(|r| r.cumulative)
            .sum();
        (min, cum, wasted)
    }

    #[test]
    fn overwrite_and_delete_count_like_dive() {
        let mut m = Model::default();
        m.add_layer(vec![
            dir("a"),
            file("a/big", 1000),
            file("a/small", 10),
            file("keep", 5),
        ]);
        m.add_layer(vec![dir("a"), file("a/big", 1000)]);
        m.add_layer(vec![dir("a"), file("a/.wh.small", 0)]);
        // a/big: 1000+1000 (min 1000); a/small: 10+0 (min 0); keep: 5.
        assert_eq!(score(&m), (1005, 2015, 2010));
        assert_eq!(m.hidden, [1010, 0, 0]);
    }

    #[test]
    fn a_deleted_directory_adds_its_subtree_once() {
        let mut m = Model::default();
        m.add_layer(vec![
            dir("d"),
            file("d/x", 100),
            dir("d/e"),
            file("d/e/y", 50),
        ]);
        m.add_layer(vec![file(".wh.d", 0)]);
        // d/x and d/e/y were leaves: 100 and 50; the whiteout adds 150 under "/d", a path
        // seen once: no waste in dive's score, but the layer's bytes are hidden.
        assert_eq!(score(&m), (300, 300, 0));
        assert_eq!(m.hidden, [150, 0]);
    }

    #[test]
    fn directories_with_children_are_not_leaves_and_opaque_markers_are_skipped() {
        let mut m = Model::default();
        m.add_layer(vec![dir("d"), file("d/x", 7)]);
        m.add_layer(vec![dir("d"), file("d/.wh..wh..opq", 0)]);
        // Layer 2: "d" is a leaf now (the marker is not a node): one more 0-size node.
        assert_eq!(m.records["/d"].nodes.len(), 1);
        assert_eq!(score(&m), (7, 7, 0));
    }
}
