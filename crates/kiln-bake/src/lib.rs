//! Bake files (`docker-bake.hcl`, `docker-bake.json` and their `.override` files) resolved into
//! the set of targets `kiln bake` builds, as `docker buildx bake` resolves them.
//!
//! The pipeline is buildx's: the files are parsed ([`parse`]: HCL through `hcl-rs`, JSON as
//! HCL's JSON form) and merged block by block, later files winning; variables take their
//! default or the environment's value; each target block is evaluated once per `matrix`
//! combination; then the names asked for are resolved ([`resolve`]): groups expand into their
//! targets, `inherits` merge parents first, `--set` overrides apply, and every target gets
//! buildx's defaults (context `.`, dockerfile `Dockerfile`).
//!
//! What kiln does not implement is an error that names the attribute, block or function and
//! where it is (`file:line`), never a value silently dropped.
//!
//! ```
//! let file = kiln_bake::BakeFile {
//!     name: "docker-bake.hcl".into(),
//!     text: r#"
//! variable "TAG" { default = "1" }
//! group "default" { targets = ["app"] }
//! target "app" { tags = ["app:${TAG}"] }
//! "#
//!     .into(),
//! };
//! let env = |name: &str| (name == "TAG").then(|| "2".to_owned());
//! let bake = kiln_bake::load(&[file], &[], &[], &env).unwrap();
//! assert_eq!(bake.targets["app"].tags, ["app:2"]);
//! assert_eq!(bake.targets["app"].context.as_deref(), Some("."));
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod parse;
mod print;
mod resolve;

use std::collections::BTreeMap;

pub use resolve::load;

/// A bake file's name (for messages, and to tell HCL from JSON) and text.
#[derive(Debug, Clone)]
pub struct BakeFile {
    /// The path as given.
    pub name: String,
    /// Its contents.
    pub text: String,
}

/// The files buildx reads when `-f` is not given, in its order; each that exists is read.
/// Compose files come first in buildx's list: kiln reads no compose file, so finding one is an
/// error rather than a file skipped.
pub const DEFAULT_FILES: &[&str] = &[
    "docker-bake.json",
    "docker-bake.hcl",
    "docker-bake.override.json",
    "docker-bake.override.hcl",
];

/// The compose files buildx would also read by default.
pub const COMPOSE_FILES: &[&str] = &[
    "compose.yaml",
    "compose.yml",
    "docker-compose.yml",
    "docker-compose.yaml",
];

/// What went wrong, with where.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file is not valid HCL or JSON.
    #[error("{file}: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// The parser's message.
        message: String,
    },
    /// Something kiln does not implement.
    #[error("{at}: {what} is not supported by kiln{hint}")]
    Unsupported {
        /// `file:line`, or the flag.
        at: String,
        /// The attribute, block or function, named.
        what: String,
        /// What to do instead, with a leading separator, or empty.
        hint: String,
    },
    /// A value of the wrong kind, an unknown name, a cycle.
    #[error("{at}: {message}")]
    Invalid {
        /// `file:line`, or the flag.
        at: String,
        /// What is wrong.
        message: String,
    },
}

/// A `type=…,key=value` entry of `output`, `cache-from` or `cache-to`: buildx prints each as a
/// JSON object of its keys (sorted, `type` among them).
pub type Entry = BTreeMap<String, String>;

/// A `secret` entry: `id`, `src` or `env`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Secret {
    /// The id `RUN --mount=type=secret,id=…` asks for.
    pub id: String,
    /// A file.
    pub src: Option<String>,
    /// An environment variable.
    pub env: Option<String>,
}

/// An `ssh` entry, buildx's `buildflags.SSH`: an agent id and its socket or key files (none:
/// `$SSH_AUTH_SOCK`), as `kiln build --ssh ID[=PATH[,PATH]]` takes them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ssh {
    /// The id `RUN --mount=type=ssh,id=…` asks for (`default` when it names none).
    pub id: String,
    /// A socket, or key files.
    pub paths: Vec<String>,
}

impl Ssh {
    /// The `--ssh` value: `ID` or `ID=PATH,PATH`.
    pub fn spec(&self) -> String {
        if self.paths.is_empty() {
            self.id.clone()
        } else {
            format!("{}={}", self.id, self.paths.join(","))
        }
    }
}

/// One resolved target: buildx's `Target`, the fields kiln builds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Target {
    /// Its name (a matrix target's generated name).
    pub name: String,
    /// `description`.
    pub description: String,
    /// `context`: a directory, relative to the working directory as buildx has it.
    pub context: Option<String>,
    /// `contexts`: named contexts (`NAME = "target:OTHER"`, a directory,
    /// `docker-image://REF`, `oci-layout://PATH`).
    pub contexts: BTreeMap<String, String>,
    /// `dockerfile`, relative to the context.
    pub dockerfile: Option<String>,
    /// `dockerfile-inline`: the Dockerfile's text.
    pub dockerfile_inline: Option<String>,
    /// `args`.
    pub args: BTreeMap<String, String>,
    /// `labels`.
    pub labels: BTreeMap<String, String>,
    /// `tags`.
    pub tags: Vec<String>,
    /// `cache-from`.
    pub cache_from: Vec<Entry>,
    /// `cache-to`.
    pub cache_to: Vec<Entry>,
    /// `attest`: `type=sbom`, `type=provenance[,mode=…]`, one entry per type.
    pub attest: Vec<Entry>,
    /// `target`: the Dockerfile stage.
    pub target: Option<String>,
    /// `secret`.
    pub secret: Vec<Secret>,
    /// `ssh`: one entry per id.
    pub ssh: Vec<Ssh>,
    /// `platforms`.
    pub platforms: Vec<String>,
    /// `output`.
    pub output: Vec<Entry>,
    /// `pull`.
    pub pull: Option<bool>,
    /// `no-cache`.
    pub no_cache: Option<bool>,
}

/// A group: the targets (and groups) it names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    /// `description`.
    pub description: String,
    /// `targets`.
    pub targets: Vec<String>,
}

/// The result: the groups met on the way and the targets to build, by name, as
/// `docker buildx bake --print` shows them.
#[derive(Debug, Clone, Default)]
pub struct Bake {
    /// Groups, by name; `default` lists the names asked for.
    pub groups: BTreeMap<String, Group>,
    /// Targets, by name.
    pub targets: BTreeMap<String, Target>,
}

impl Bake {
    /// The JSON `docker buildx bake --print` prints, byte for byte (Go's indentation, key
    /// order and escaping), with a final newline.
    pub fn print(&self) -> String {
        print::print(self)
    }

    /// The target names in an order where each comes after the targets its `target:`
    /// contexts name (ties by name).
    pub fn build_order(&self) -> Result<Vec<String>, Error> {
        resolve::build_order(self)
    }
}

impl Target {
    /// The targets this one's `contexts` name as `target:NAME`.
    pub fn target_contexts(&self) -> impl Iterator<Item = (&str, &str)> {
        self.contexts
            .iter()
            .filter_map(|(k, v)| v.strip_prefix("target:").map(|t| (k.as_str(), t)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bake(text: &str, names: &[&str], sets: &[&str]) -> Result<Bake, Error> {
        let file = BakeFile {
            name: "docker-bake.hcl".into(),
            text: text.into(),
        };
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        load(&[file], &names, &sets, &|_| None)
    }

    /// buildx's own `testBakePrint` case: the bytes it prints.
    #[test]
    fn print_is_buildx_print() {
        let b = bake(
            "target \"build\" {\n  args = {\n    HELLO = \"foo\"\n  }\n}\n",
            &["build"],
            &[],
        )
        .unwrap();
        assert_eq!(
            b.print(),
            r#"{
  "group": {
    "default": {
      "targets": [
        "build"
      ]
    }
  },
  "target": {
    "build": {
      "context": ".",
      "dockerfile": "Dockerfile",
      "args": {
        "HELLO": "foo"
      }
    }
  }
}
"#
        );
    }

    #[test]
    fn inherits_merges_maps_and_replaces_lists() {
        let b = bake(
            r#"
target "common" {
  args = { A = "1", B = "1" }
  tags = ["common"]
  cache-from = ["user/cache"]
}
target "app" {
  inherits = ["common"]
  args = { B = "2" }
  cache-from = ["type=local,src=dir"]
}
"#,
            &["app"],
            &[],
        )
        .unwrap();
        let app = &b.targets["app"];
        assert_eq!(app.args["A"], "1");
        assert_eq!(app.args["B"], "2");
        assert_eq!(app.tags, ["common"]);
        assert_eq!(app.cache_from.len(), 2);
        assert_eq!(app.cache_from[0]["ref"], "user/cache");
        assert_eq!(app.cache_from[0]["type"], "registry");
    }

    #[test]
    fn a_matrix_names_targets_and_becomes_a_group() {
        let b = bake(
            r#"
target "app" {
  name = "app-${replace(py, ".", "-")}"
  matrix = { py = ["3.11", "3.12"] }
  args = { PY = py }
}
"#,
            &["app"],
            &[],
        )
        .unwrap();
        assert_eq!(b.groups["app"].targets, ["app-3-11", "app-3-12"]);
        assert_eq!(b.groups["default"].targets, ["app"]);
        assert_eq!(b.targets["app-3-12"].args["PY"], "3.12");
    }

    #[test]
    fn set_patterns_override_every_match() {
        let b = bake(
            "target \"a\" {}\ntarget \"b\" {}\ngroup \"default\" { targets = [\"a\", \"b\"] }\n",
            &[],
            &[
                "*.tags=x",
                "a.args.K=V",
                "b.tags+=y",
                "*.platform=linux/amd64",
            ],
        )
        .unwrap();
        assert_eq!(b.targets["a"].tags, ["x"]);
        assert_eq!(b.targets["b"].tags, ["x", "y"]);
        assert_eq!(b.targets["a"].args["K"], "V");
        assert_eq!(b.targets["b"].platforms, ["linux/amd64"]);
        let err = bake("target \"a\" {}\n", &["a"], &["a.shm-size=1g"]).unwrap_err();
        assert!(
            err.to_string()
                .contains("the key `shm-size` is not supported"),
            "{err}"
        );
    }

    #[test]
    fn ssh_entries_append_through_inherits_one_per_id() {
        // buildx's SSHKeys: `ID[=PATH,PATH]` or `{ id, paths }`, merged by appending, a later
        // entry of the same id taking the earlier one's place.
        let file = "target \"base\" {\n  ssh = [\"default\", \"k=/a/key,/b/key\"]\n}\n\
                    target \"a\" {\n  inherits = [\"base\"]\n  \
                    ssh = [{ id = \"k\", paths = [\"/c/key\"] }, \"other=/run/agent.sock\"]\n}\n";
        let specs =
            |b: &Bake, t: &str| -> Vec<String> { b.targets[t].ssh.iter().map(Ssh::spec).collect() };
        let b = bake(file, &["a"], &[]).unwrap();
        assert_eq!(
            specs(&b, "a"),
            ["default", "k=/c/key", "other=/run/agent.sock"]
        );
        let b = bake(file, &["a"], &["a.ssh+=extra"]).unwrap();
        assert_eq!(specs(&b, "a").last().map(String::as_str), Some("extra"));
        let b = bake(file, &["a"], &["a.ssh=only=/x"]).unwrap();
        assert_eq!(specs(&b, "a"), ["only=/x"]);
        assert!(b.print().contains("\"ssh\": [\n        {\n          \"id\": \"only\",\n          \"paths\": [\n            \"/x\"\n          ]\n        }\n      ]"), "{}", b.print());
        let err = bake(
            "target \"a\" {\n  ssh = [{ id = \"k\", path = \"/x\" }]\n}\n",
            &["a"],
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("unexpected key \"path\""), "{err}");
    }

    #[test]
    fn attestations_keep_one_entry_per_type_the_last_given() {
        let file = "target \"base\" {\n  attest = [\"type=sbom\", \"type=provenance,mode=min\"]\n}\n\
                    target \"a\" {\n  inherits = [\"base\"]\n  attest = [{ type = \"provenance\", mode = \"max\" }]\n}\n";
        let b = bake(file, &["a"], &[]).unwrap();
        let attest: Vec<String> = b.targets["a"]
            .attest
            .iter()
            .map(|e| {
                e.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        assert_eq!(attest, ["type=sbom", "mode=max,type=provenance"]);
        let b = bake(file, &["a"], &["a.attest=type=sbom,disabled=true"]).unwrap();
        assert_eq!(b.targets["a"].attest.len(), 1);
        assert!(b.print().contains("\"attest\": ["), "{}", b.print());
    }

    #[test]
    fn unsupported_attributes_and_functions_are_named_with_their_line() {
        let err = bake("target \"a\" {\n  shm-size = \"2g\"\n}\n", &["a"], &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "docker-bake.hcl:2: the attribute `shm-size` of target \"a\" is not supported by kiln"
        );
        let err = bake("target \"a\" {\n\n  tags = [timestamp()]\n}\n", &["a"], &[]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("docker-bake.hcl:3: the function `timestamp` (in `tags`)"),
            "{err}"
        );
    }

    #[test]
    fn variables_take_the_environment_typed_as_the_default() {
        let file = BakeFile {
            name: "docker-bake.hcl".into(),
            text: r#"
variable "TAG" { default = "1" }
variable "FULL" { default = "app:${TAG}" }
variable "PUSH" { default = false }
target "a" {
  tags = [FULL]
  no-cache = PUSH
}
"#
            .into(),
        };
        let env = |n: &str| match n {
            "TAG" => Some("2".to_owned()),
            "PUSH" => Some("true".to_owned()),
            _ => None,
        };
        let b = load(std::slice::from_ref(&file), &["a".into()], &[], &env).unwrap();
        assert_eq!(b.targets["a"].tags, ["app:2"]);
        assert_eq!(b.targets["a"].no_cache, Some(true));
        let env = |n: &str| (n == "PUSH").then(|| "maybe".to_owned());
        assert!(load(&[file], &["a".into()], &[], &env).is_err());
    }

    #[test]
    fn a_target_context_builds_its_target_first() {
        let b = bake(
            r#"
target "base" {}
target "app" { contexts = { base = "target:base" } }
"#,
            &["app"],
            &[],
        )
        .unwrap();
        assert_eq!(b.build_order().unwrap(), ["base", "app"]);
        assert_eq!(b.targets["base"].output[0]["type"], "cacheonly");
        let err = bake(
            "target \"a\" { contexts = { x = \"target:b\" } }\ntarget \"b\" { contexts = { y = \"target:a\" } }\n",
            &["a"],
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("loop"), "{err}");
    }

    /// The JSON example of buildx's bake reference: strings are templates.
    #[test]
    fn json_files_read_as_hcl_files() {
        let file = BakeFile {
            name: "docker-bake.json".into(),
            text: r#"{
  "variable": { "TAG": { "default": "latest" } },
  "group": { "default": { "targets": ["webapp"] } },
  "target": {
    "webapp": {
      "dockerfile": "Dockerfile",
      "tags": ["docker.io/username/webapp:${TAG}"]
    }
  }
}"#
            .into(),
        };
        let b = load(&[file], &[], &[], &|_| None).unwrap();
        assert_eq!(
            b.print(),
            r#"{
  "group": {
    "default": {
      "targets": [
        "webapp"
      ]
    }
  },
  "target": {
    "webapp": {
      "context": ".",
      "dockerfile": "Dockerfile",
      "tags": [
        "docker.io/username/webapp:latest"
      ]
    }
  }
}
"#
        );
    }
}
