//! Cache keys: the digest of a canonical serialisation of a versioned [`KeyInput`].
//!
//! A key must change when, and only when, a step's result could. Keys were once the hash of
//! Rust's `Debug` output, which a renamed field or a new compiler could change without anyone
//! noticing; now every input is an explicit field, serialised as JSON in declaration order, and
//! the golden tests below pin the digests of a few steps. Changing the format is a conscious act:
//! bump [`KEY_FORMAT`], update the golden digests, and say so in the change's note.

use kiln_dockerfile::Instruction;
use kiln_image::Digest;
use serde::Serialize;

/// The version of the key format. Bumping it misses every cached step once.
///
/// 1: the first versioned format (keys before it hashed `Debug` output).
pub const KEY_FORMAT: u32 = 1;

/// Everything a step's key is made of.
#[derive(Debug, Serialize)]
pub struct KeyInput<'a> {
    /// [`KEY_FORMAT`].
    pub format: u32,
    /// The key of the step before (or of the stage's base).
    pub parent: &'a Digest,
    /// The platform the step builds for (`linux/amd64`).
    pub platform: &'a str,
    /// `SOURCE_DATE_EPOCH`: it sets the history's times and clamps the layer's file times,
    /// so a step made under another epoch (or none) is another result.
    pub source_date_epoch: Option<i64>,
    /// The instruction with its variables expanded.
    pub instruction: &'a Instruction,
    /// What a `RUN` runs with besides its text.
    pub run: Option<RunInput<'a>>,
    /// `ARG`: the declared args with their values, which later steps see.
    pub args: Option<Vec<(String, Option<String>)>>,
    /// Content digests of what the step reads, by role: `sources` (COPY/ADD), `from` (the
    /// stage or image COPY --from reads), `bind:<source>` (a RUN bind mount).
    pub inputs: Vec<(String, Digest)>,
    /// `COPY --link`/`ADD --link`: the absolute destination. Such a step copies onto an empty
    /// root, so its `parent` is the empty image's key and the only thing it takes from the
    /// stage is where WORKDIR puts a relative destination (left out otherwise, so that other
    /// keys are unchanged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_dest: Option<&'a str>,
}

/// The process context of a `RUN`.
#[derive(Debug, Serialize)]
pub struct RunInput<'a> {
    /// The environment, as the process gets it (proxy args left out, as BuildKit does).
    pub env: Vec<String>,
    /// The shell of shell-form commands.
    pub shell: Vec<String>,
    /// The working directory.
    pub workdir: &'a str,
    /// The user.
    pub user: &'a str,
    /// `--add-host` entries, which BuildKit's exec op keys on too (left out when there are none,
    /// so that keys without them are unchanged).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub extra_hosts: &'a [(String, String)],
    /// `--shm-size`, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<u64>,
    /// `--ulimit`s, as given.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub ulimits: &'a [String],
}

impl KeyInput<'_> {
    /// The key.
    pub fn digest(&self) -> Digest {
        // Serialising plain structs, strings and vectors cannot fail.
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        Digest::of(&bytes)
    }

    /// The canonical bytes, for `--log-level debug` and the golden tests.
    pub fn canonical(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The key of the state after a `--link` step: its layer (keyed without the parent) laid on
/// the parent, as BuildKit's MergeOp is keyed on both of its inputs. Steps after it depend on
/// the parent through this key.
pub fn merge_key(parent: &Digest, layer: &Digest) -> Digest {
    #[derive(Serialize)]
    struct MergeInput<'a> {
        format: u32,
        merge: [&'a Digest; 2],
    }
    let input = MergeInput {
        format: KEY_FORMAT,
        merge: [parent, layer],
    };
    Digest::of(&serde_json::to_vec(&input).unwrap_or_default())
}

/// The key of a stage's base: an image by its manifest digest, or the empty image.
pub fn base_key(platform: &str, manifest: Option<&Digest>) -> Digest {
    // The epoch enters with each step's key; the base is the same image under any epoch.
    #[derive(Serialize)]
    struct BaseInput<'a> {
        format: u32,
        platform: &'a str,
        image: Option<&'a Digest>,
    }
    let input = BaseInput {
        format: KEY_FORMAT,
        platform,
        image: manifest,
    };
    Digest::of(&serde_json::to_vec(&input).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instruction(line: &str) -> Instruction {
        let parsed = kiln_dockerfile::parse(line).unwrap();
        kiln_dockerfile::parse_instruction(&parsed.nodes[0])
            .unwrap()
            .value
    }

    fn key(parent: &Digest, inst: &Instruction, run: Option<RunInput<'_>>) -> Digest {
        KeyInput {
            format: KEY_FORMAT,
            parent,
            platform: "linux/amd64",
            source_date_epoch: None,
            instruction: inst,
            run,
            args: None,
            inputs: Vec::new(),
            link_dest: None,
        }
        .digest()
    }

    fn run_input() -> RunInput<'static> {
        RunInput {
            env: vec!["PATH=/usr/local/bin:/usr/bin:/bin".into()],
            shell: vec!["/bin/sh".into(), "-c".into()],
            workdir: "/app",
            user: "",
            extra_hosts: &[],
            shm_size: None,
            ulimits: &[],
        }
    }

    // Golden keys: a change here changes every cache key kiln has written. If the change is
    // meant, bump KEY_FORMAT and update the digests; the note of the change must list it.
    #[test]
    fn golden_keys_of_the_seed_dockerfile() {
        let base = base_key("linux/amd64", Some(&Digest::of(b"a manifest")));
        assert_eq!(
            base.as_str(),
            "sha256:081cbdb053d7766b04758e3523f40500a2f51c44573f68880f8d6d42de8e688d"
        );
        let maintainer = key(&base, &instruction("MAINTAINER kiln"), None);
        assert_eq!(
            maintainer.as_str(),
            "sha256:07b989ceb4e0f423ee6563fc5bc034e95377f5cbebcfe9d12864c2745ca4978d"
        );
        let run = key(
            &maintainer,
            &instruction(
                "RUN apt-get update && apt-get install -y python3 && rm -rf /var/lib/apt/lists/*",
            ),
            Some(run_input()),
        );
        assert_eq!(
            run.as_str(),
            "sha256:0baed00644824813480ccf661e21131dd9355714d45bb96ec629257389cf1719"
        );
        let workdir = key(&run, &instruction("WORKDIR /app"), None);
        assert_eq!(
            workdir.as_str(),
            "sha256:f8b2b4f1d461d05a8a44a9cb5dc635252e257617bcbdf436d18136c397d50b4f"
        );
        let expose = key(&workdir, &instruction("EXPOSE 80"), None);
        assert_eq!(
            expose.as_str(),
            "sha256:b6f397a76350da49e14a98e47bc760f2472ceaeece83901af0f73efde23a7b18"
        );
        let cmd = key(&expose, &instruction(r#"CMD ["bash"]"#), None);
        assert_eq!(
            cmd.as_str(),
            "sha256:46b4a6691da6d932489002e01d211213670ef065b02e2ac98bf5954eac818aa4"
        );
    }

    #[test]
    fn golden_keys_of_copy_arg_and_mounts() {
        let parent = base_key("linux/amd64", None);
        let copy = KeyInput {
            format: KEY_FORMAT,
            parent: &parent,
            platform: "linux/amd64",
            source_date_epoch: None,
            instruction: &instruction("COPY --chmod=644 requirements.txt /app/"),
            run: None,
            args: None,
            inputs: vec![("sources".into(), Digest::of(b"the files"))],
            link_dest: None,
        };
        assert_eq!(
            copy.digest().as_str(),
            "sha256:65df066293e3e959f1d697df0c5acda5deb0a95c760ab8d143d335c672be9eb3"
        );
        let arg = KeyInput {
            format: KEY_FORMAT,
            parent: &parent,
            platform: "linux/amd64",
            source_date_epoch: None,
            instruction: &instruction("ARG VERSION=1"),
            run: None,
            args: Some(vec![("VERSION".into(), Some("2".into()))]),
            inputs: Vec::new(),
            link_dest: None,
        };
        assert_eq!(
            arg.digest().as_str(),
            "sha256:b33f8b39e18280b28195a3d02fc2264192767ad2c6c254dd3bd27be2bc88c859"
        );
        let mount = key(
            &parent,
            &instruction("RUN --mount=type=cache,target=/root/.cache pip install -r r.txt"),
            Some(run_input()),
        );
        assert_eq!(
            mount.as_str(),
            "sha256:6fda9d20848e02ade35850aeddf43acaab9c90562a8bfd9ea3112b870e153358"
        );
    }

    #[test]
    fn every_input_changes_the_key() {
        let parent = base_key("linux/amd64", None);
        let inst = instruction("RUN make");
        let reference = key(&parent, &inst, Some(run_input()));
        let other_parent = base_key("linux/arm64", None);
        assert_ne!(reference, key(&other_parent, &inst, Some(run_input())));
        assert_ne!(
            reference,
            key(&parent, &instruction("RUN make all"), Some(run_input()))
        );
        let mut env = run_input();
        env.env.push("A=1".into());
        assert_ne!(reference, key(&parent, &inst, Some(env)));
        let mut user = run_input();
        user.user = "nobody";
        assert_ne!(reference, key(&parent, &inst, Some(user)));
        let on_arm = KeyInput {
            format: KEY_FORMAT,
            parent: &parent,
            platform: "linux/arm64",
            source_date_epoch: None,
            instruction: &inst,
            run: Some(run_input()),
            args: None,
            inputs: Vec::new(),
            link_dest: None,
        };
        assert_ne!(reference, on_arm.digest());
        let with_epoch = KeyInput {
            format: KEY_FORMAT,
            parent: &parent,
            platform: "linux/amd64",
            source_date_epoch: Some(0),
            instruction: &inst,
            run: Some(run_input()),
            args: None,
            inputs: Vec::new(),
            link_dest: None,
        };
        assert_ne!(reference, with_epoch.digest());
    }

    #[test]
    fn a_link_key_has_no_parent_and_the_merge_key_has_both() {
        let scratch = base_key("linux/amd64", None);
        let inst = instruction("COPY --link a /app/");
        let link = |dest| KeyInput {
            format: KEY_FORMAT,
            parent: &scratch,
            platform: "linux/amd64",
            source_date_epoch: None,
            instruction: &inst,
            run: None,
            args: None,
            inputs: vec![("sources".into(), Digest::of(b"the files"))],
            link_dest: Some(dest),
        };
        let layer = link("/app/").digest();
        // WORKDIR moves a relative destination: another layer.
        assert_ne!(layer, link("/srv/app/").digest());
        let (one, two) = (
            base_key("linux/amd64", Some(&Digest::of(b"base one"))),
            base_key("linux/amd64", Some(&Digest::of(b"base two"))),
        );
        assert_ne!(merge_key(&one, &layer), merge_key(&two, &layer));
        assert_ne!(
            merge_key(&one, &layer),
            merge_key(&one, &link("/srv/").digest())
        );
    }
}
