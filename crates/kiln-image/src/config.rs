//! The image config, with docker's field names so that docker, skopeo and umoci read it as
//! their own. Fields kiln does not know survive a round trip through `extra`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Digest;

/// `application/vnd.oci.image.config.v1+json` (docker's fields are a superset of OCI's).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// RFC 3339 creation time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The image author (`MAINTAINER`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// CPU architecture, GOARCH-style (`amd64`).
    #[serde(default)]
    pub architecture: String,
    /// Operating system (`linux`).
    #[serde(default)]
    pub os: String,
    /// CPU variant (`v8`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// What a container started from this image runs with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ContainerConfig>,
    /// The layers' uncompressed digests, bottom first.
    pub rootfs: RootFs,
    /// One entry per build step, including steps that made no layer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    /// Fields kiln does not interpret, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `rootfs` of the image config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Uncompressed layer digests, bottom first.
    pub diff_ids: Vec<Digest>,
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs {
            kind: "layers".into(),
            diff_ids: Vec::new(),
        }
    }
}

/// One history entry, as docker writes them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// RFC 3339 time of the step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The step, e.g. `/bin/sh -c #(nop)  CMD ["bash"]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Author at that step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Free text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// True when the step made no layer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

/// The `config` member: docker's `container.Config` subset that images carry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    /// `USER`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// `EXPOSE`: keys like `80/tcp`, values `{}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, EmptyObject>>,
    /// `ENV`, as `K=V`, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// `ENTRYPOINT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// `CMD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// `HEALTHCHECK`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    /// Set when a shell-form command was stored (Windows heritage, kept for docker parity).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub args_escaped: bool,
    /// `VOLUME`: keys are paths, values `{}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, EmptyObject>>,
    /// `WORKDIR`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub working_dir: String,
    /// `LABEL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// `STOPSIGNAL`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stop_signal: String,
    /// `SHELL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
    /// `ONBUILD` triggers, as source text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_build: Option<Vec<String>>,
    /// Fields kiln does not interpret, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `{}` in maps such as `ExposedPorts`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmptyObject {}

/// `HEALTHCHECK`, durations in nanoseconds as docker stores them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", …]` or `["CMD-SHELL", cmd]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Vec<String>>,
    /// `--interval`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub interval: i64,
    /// `--timeout`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timeout: i64,
    /// `--start-period`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_period: i64,
    /// `--start-interval`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_interval: i64,
    /// `--retries`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: i64,
}

fn is_zero(value: &i64) -> bool {
    *value == 0
}

impl ImageConfig {
    /// A config for an empty (`scratch`) image on this host's platform.
    pub fn scratch() -> ImageConfig {
        ImageConfig {
            architecture: host_architecture().to_owned(),
            os: "linux".into(),
            config: Some(ContainerConfig::default()),
            ..ImageConfig::default()
        }
    }

    /// The container config, created empty if absent.
    pub fn container(&mut self) -> &mut ContainerConfig {
        self.config.get_or_insert_with(ContainerConfig::default)
    }

    /// The platform the config says the image is for.
    pub fn platform(&self) -> crate::Platform {
        crate::Platform::new(&self.os, &self.architecture, self.variant.as_deref())
    }

    /// Env as `(key, value)` pairs, in order.
    pub fn env_pairs(&self) -> Vec<(String, String)> {
        let env = self.config.as_ref().and_then(|c| c.env.as_ref());
        env.map(|list| {
            list.iter()
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => (k.to_owned(), v.to_owned()),
                    None => (kv.clone(), String::new()),
                })
                .collect()
        })
        .unwrap_or_default()
    }

    /// Serializes the config the way it is stored and hashed.
    pub fn to_bytes(&self) -> Vec<u8> {
        // A config is plain data; serde_json only fails on non-string map keys, which it has none of.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The host CPU architecture in OCI (GOARCH) spelling.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let text = r#"{"architecture":"amd64","os":"linux","config":{"Env":["A=1"],"Hostname":"x"},"rootfs":{"type":"layers","diff_ids":[]},"docker_version":"20.10"}"#;
        let config: ImageConfig = serde_json::from_str(text).unwrap();
        assert_eq!(config.extra["docker_version"], "20.10");
        let again = String::from_utf8(config.to_bytes()).unwrap();
        assert!(again.contains(r#""Hostname":"x""#), "{again}");
        assert!(again.contains(r#""docker_version":"20.10""#), "{again}");
        assert_eq!(config.env_pairs(), vec![("A".to_owned(), "1".to_owned())]);
    }
}
