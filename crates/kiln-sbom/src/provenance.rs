//! The SLSA v1 provenance predicate of a build (<https://slsa.dev/spec/v1.0/provenance>):
//! what went in (the Dockerfile's digest, the build args, the target and platform), the
//! base images by digest, and the builder (kiln and its version).

use serde_json::{Map, Value, json};

/// The predicate type of SLSA v1 provenance.
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";

/// What kiln's builds mean by their parameters.
pub const BUILD_TYPE: &str = "https://kiln.invalid/build-types/dockerfile/v1";

/// One base image the build read.
#[derive(Debug, Clone)]
pub struct Base {
    /// The name as the Dockerfile gives it (expanded).
    pub name: String,
    /// Its manifest digest.
    pub digest: kiln_image::Digest,
    /// The platform it was read for (`linux/amd64`).
    pub platform: String,
}

/// A build's inputs and run.
#[derive(Debug, Clone)]
pub struct Build<'a> {
    /// The Dockerfile's name as given (`Dockerfile`).
    pub dockerfile_name: &'a str,
    /// Its contents' digest.
    pub dockerfile_digest: kiln_image::Digest,
    /// `--build-arg`s, in order.
    pub build_args: &'a [(String, String)],
    /// `--target`.
    pub target: Option<&'a str>,
    /// The platform built for.
    pub platform: String,
    /// Base images.
    pub bases: Vec<Base>,
    /// kiln's version.
    pub kiln_version: &'a str,
    /// RFC 3339 start and end times.
    pub started: &'a str,
    /// See `started`.
    pub finished: &'a str,
}

/// The percent-encoding purl needs in a qualifier value (`/` of a platform).
fn qualifier(text: &str) -> String {
    text.replace('%', "%25").replace('/', "%2F")
}

/// `pkg:docker/REPO@TAG?platform=…`, as BuildKit names its base images.
fn docker_purl(name: &str, platform: &str) -> String {
    let name = name.split('@').next().unwrap_or(name);
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match name[slash..].rfind(':') {
        Some(i) => (&name[..slash + i], &name[slash + i + 1..]),
        None => (name, "latest"),
    };
    format!("pkg:docker/{repo}@{tag}?platform={}", qualifier(platform))
}

/// The predicate.
pub fn predicate(build: &Build<'_>) -> Value {
    let args: Map<String, Value> = build
        .build_args
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let mut external = json!({
        "dockerfile": {
            "name": build.dockerfile_name,
            "digest": {"sha256": build.dockerfile_digest.hex()},
        },
        "buildArgs": args,
        "platform": build.platform,
    });
    if let Some(t) = build.target {
        external["target"] = json!(t);
    }
    let deps: Vec<Value> = build
        .bases
        .iter()
        .map(|b| {
            json!({
                "uri": docker_purl(&b.name, &b.platform),
                "name": b.name,
                "digest": {"sha256": b.digest.hex()},
            })
        })
        .collect();
    json!({
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": external,
            "internalParameters": {},
            "resolvedDependencies": deps,
        },
        "runDetails": {
            "builder": {
                "id": "https://kiln.invalid/kiln",
                "version": {"kiln": build.kiln_version},
            },
            "metadata": {
                "startedOn": build.started,
                "finishedOn": build.finished,
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases_are_resolved_dependencies_by_digest() {
        let args = [("V".to_owned(), "1".to_owned())];
        let digest = kiln_image::Digest::of(b"base");
        let p = predicate(&Build {
            dockerfile_name: "Dockerfile",
            dockerfile_digest: kiln_image::Digest::of(b"FROM x"),
            build_args: &args,
            target: None,
            platform: "linux/amd64".into(),
            bases: vec![Base {
                name: "debian:bookworm".into(),
                digest: digest.clone(),
                platform: "linux/amd64".into(),
            }],
            kiln_version: "0.1.0",
            started: "2026-01-01T00:00:00Z",
            finished: "2026-01-01T00:00:01Z",
        });
        let dep = &p["buildDefinition"]["resolvedDependencies"][0];
        assert_eq!(
            dep["uri"],
            "pkg:docker/debian@bookworm?platform=linux%2Famd64"
        );
        assert_eq!(dep["digest"]["sha256"], digest.hex());
        assert_eq!(
            p["buildDefinition"]["externalParameters"]["buildArgs"]["V"],
            "1"
        );
        assert_eq!(p["runDetails"]["builder"]["version"]["kiln"], "0.1.0");
        assert_eq!(
            docker_purl("localhost:5000/a/b", "linux/arm64/v8"),
            "pkg:docker/localhost:5000/a/b@latest?platform=linux%2Farm64%2Fv8"
        );
    }
}
