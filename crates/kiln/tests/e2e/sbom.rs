//! `kiln build --sbom --provenance` and `kiln sbom`: the SBOM lists exactly what dpkg and pip
//! say is installed (run inside the image), an SPDX validator accepts it, and the
//! attestations sit in the pushed index where BuildKit puts them.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::registry::Registry;
use crate::slim::{HOST_CA, build_slim_python};
use crate::util::*;

/// `(type, name, version)` of every package of an SPDX document that has a purl.
fn sbom_packages(doc: &Value) -> BTreeSet<(String, String, String)> {
    doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| {
            let purl = p["externalRefs"]
                .as_array()?
                .iter()
                .find(|r| r["referenceType"] == "purl")?["referenceLocator"]
                .as_str()?;
            let kind = purl.strip_prefix("pkg:")?.split('/').next()?.to_owned();
            let name = p["name"].as_str()?.to_owned();
            let version = p["versionInfo"].as_str()?.to_owned();
            Some((kind, name, version))
        })
        .collect()
}

/// The SPDX validator from PyPI (spdx-tools), in a venv of the test's own.
fn spdx_validator(env: &Env) -> std::path::PathBuf {
    let venv = env.path("spdx-venv");
    run(Command::new(require("python3"))
        .args(["-m", "venv"])
        .arg(&venv));
    let out = Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "spdx-tools"])
        .env("PIP_CERT", HOST_CA)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "this test needs the SPDX validator spdx-tools from PyPI, and `pip install spdx-tools` failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    venv.join("bin/pyspdxtools")
}

#[test]
fn sbom_lists_what_dpkg_and_pip_see_validates_and_is_pushed_as_buildkit_attests() {
    assert!(Path::new(HOST_CA).is_file(), "this test needs {HOST_CA}");
    let env = Env::new();
    build_slim_python(&env, "py-slim");
    let ctx = env.context(
        "app",
        "FROM py-slim\n\
         RUN --mount=type=secret,id=ca PIP_CERT=/run/secrets/ca pip install --only-binary=:all: six==1.16.0 MarkupSafe==2.1.5\n",
        &[],
    );
    let secret = format!("id=ca,src={HOST_CA}");
    let (_, log) = env.build(&[
        "--sbom",
        "--provenance",
        "--secret",
        &secret,
        "--build-arg",
        "FLAVOUR=test",
        "-t",
        "app:1",
        &ctx,
    ]);
    assert!(log.contains("writing attestations: index sha256:"), "{log}");

    // The SBOM, from the attestation.
    let text = env.ok(&["sbom", "app:1"]);
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    let listed = sbom_packages(&doc);

    // What dpkg says, inside the image (kiln run picks the image, not the attestation).
    let dpkg = env.ok(&[
        "run",
        "app:1",
        "dpkg-query",
        "-W",
        "-f",
        "${db:Status-Abbrev} ${Package} ${Version}\\n",
    ]);
    let debs: BTreeSet<(String, String, String)> = dpkg
        .lines()
        .filter(|l| l.starts_with("ii "))
        .map(|l| {
            let mut w = l.split_whitespace().skip(1);
            let (name, version) = (w.next().unwrap(), w.next().unwrap());
            ("deb".to_owned(), name.to_owned(), version.to_owned())
        })
        .collect();
    let plain = env.ok(&["run", "app:1", "dpkg-query", "-W"]);
    assert_eq!(debs.len(), plain.lines().count(), "{dpkg}");
    assert!(debs.iter().any(|(_, n, _)| n == "python3.11"), "{dpkg}");
    let listed_debs: BTreeSet<_> = listed.iter().filter(|p| p.0 == "deb").cloned().collect();
    assert_eq!(listed_debs, debs);

    // What pip says, over every directory that holds distribution metadata.
    let pip = env.ok(&[
        "run",
        "app:1",
        "sh",
        "-c",
        "set -e; dirs=$(find / -xdev \\( -name '*.dist-info' -o -name '*.egg-info' \\) -printf '%h\\n' | sort -u); \
         args=; for d in $dirs; do args=\"$args --path $d\"; done; pip list --format json $args",
    ]);
    let pip: Value = serde_json::from_str(&pip).unwrap_or_else(|e| panic!("{e}: {pip}"));
    let dists: BTreeSet<(String, String, String)> = pip
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                "pypi".to_owned(),
                d["name"].as_str().unwrap().to_owned(),
                d["version"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        dists.contains(&("pypi".into(), "MarkupSafe".into(), "2.1.5".into())),
        "{pip}"
    );
    let listed_dists: BTreeSet<_> = listed.iter().filter(|p| p.0 == "pypi").cloned().collect();
    assert_eq!(listed_dists, dists);
    assert_eq!(listed.len(), debs.len() + dists.len());

    // Purls and licenses, on packages whose facts are known.
    let purls: Vec<&str> = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["externalRefs"][0]["referenceLocator"].as_str())
        .collect();
    assert!(purls.contains(&"pkg:pypi/markupsafe@2.1.5"), "{purls:?}");
    assert!(
        purls
            .iter()
            .any(|p| p.starts_with("pkg:deb/debian/libc6@2.36-9%2Bdeb12u")
                && p.ends_with("?arch=amd64&distro=debian-12")),
        "{purls:?}"
    );
    let libc6 = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "libc6")
        .unwrap();
    assert!(
        libc6["sourceInfo"]
            .as_str()
            .unwrap()
            .starts_with("built package from: glibc 2.36-"),
        "{libc6}"
    );
    // zlib's copyright file is machine-readable (DEP-5); glibc's is not.
    let license = |name: &str| {
        doc["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()["licenseDeclared"]
            .clone()
    };
    assert_eq!(license("zlib1g"), "Zlib");
    assert_eq!(license("libc6"), "NOASSERTION");
    assert_eq!(license("six"), "MIT");

    // The table reads the same document.
    let table = env.ok(&["sbom", "--format", "table", "app:1"]);
    assert!(
        table.lines().any(|l| l.starts_with("pypi")
            && l.contains("six")
            && l.contains("pkg:pypi/six@1.16.0")),
        "{table}"
    );

    // A scan of an image with no attestation finds the same Debian packages as the base.
    let base: Value = serde_json::from_str(&env.ok(&["sbom", "py-slim"])).unwrap();
    let base_debs: BTreeSet<_> = sbom_packages(&base)
        .into_iter()
        .filter(|p| p.0 == "deb")
        .collect();
    assert_eq!(base_debs, debs);

    // An SPDX validator accepts it, and reads the packages back.
    let validator = spdx_validator(&env);
    let file = env.path("app.spdx.json");
    std::fs::write(&file, &text).unwrap();
    let tv = env.path("app.spdx");
    let out = Command::new(&validator)
        .arg("-i")
        .arg(&file)
        .arg("-o")
        .arg(&tv)
        .output()
        .unwrap();
    assert_success(&out, "pyspdxtools");
    let tv = std::fs::read_to_string(&tv).unwrap();
    assert!(tv.contains("PackageName: MarkupSafe"), "{tv}");

    // Pushed: the attestation manifest after the image in the index, as BuildKit has it.
    let registry = Registry::start(&env, "sbom");
    let target = format!("{}/kiln/app:1", registry.host());
    env.ok(&["push", "app:1", &target]);
    let skopeo = |reference: &str| -> Value {
        let raw = run(Command::new(require("skopeo")).args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ]));
        serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{e}: {raw}"))
    };
    let index = skopeo(&target);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2, "{index}");
    let (image, attestation) = (&manifests[0], &manifests[1]);
    assert_eq!(image["platform"]["os"], "linux", "{index}");
    assert_eq!(attestation["platform"]["os"], "unknown", "{index}");
    assert_eq!(
        attestation["platform"]["architecture"], "unknown",
        "{index}"
    );
    assert_eq!(
        attestation["annotations"]["vnd.docker.reference.type"],
        "attestation-manifest"
    );
    assert_eq!(
        attestation["annotations"]["vnd.docker.reference.digest"],
        image["digest"]
    );
    let repo = format!("{}/kiln/app", registry.host());
    let manifest = skopeo(&format!(
        "{repo}@{}",
        attestation["digest"].as_str().unwrap()
    ));
    assert_eq!(manifest["subject"]["digest"], image["digest"], "{manifest}");
    let layers = manifest["layers"].as_array().unwrap();
    let types: BTreeSet<&str> = layers
        .iter()
        .map(|l| {
            assert_eq!(l["mediaType"], "application/vnd.in-toto+json");
            l["annotations"]["in-toto.io/predicate-type"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(
        types,
        BTreeSet::from([
            "https://spdx.dev/Document",
            "https://slsa.dev/provenance/v1"
        ])
    );
    // The statements name the pushed image (its layers were gzipped on the way).
    let curl = require("curl");
    for layer in layers {
        let blob = run(Command::new(&curl).args([
            "-fsS",
            &format!(
                "http://{}/v2/kiln/app/blobs/{}",
                registry.host(),
                layer["digest"].as_str().unwrap()
            ),
        ]));
        let statement: Value = serde_json::from_str(&blob).unwrap();
        assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
        assert_eq!(
            format!(
                "sha256:{}",
                statement["subject"][0]["digest"]["sha256"]
                    .as_str()
                    .unwrap()
            ),
            image["digest"].as_str().unwrap()
        );
        if statement["predicateType"] == "https://slsa.dev/provenance/v1" {
            let definition = &statement["predicate"]["buildDefinition"];
            assert_eq!(
                definition["externalParameters"]["buildArgs"]["FLAVOUR"],
                "test"
            );
            let deps = definition["resolvedDependencies"].as_array().unwrap();
            assert_eq!(deps.len(), 1, "{definition}");
            assert!(
                deps[0]["uri"]
                    .as_str()
                    .unwrap()
                    .starts_with("pkg:docker/py-slim@latest")
            );
            assert_eq!(
                statement["predicate"]["runDetails"]["builder"]["version"]["kiln"],
                env!("CARGO_PKG_VERSION")
            );
        }
    }

    // build --push of one platform sends the same layout (the same image, its layers'
    // gzip remembered from the first push).
    let target2 = format!("{}/kiln/app:2", registry.host());
    env.build(&[
        "--sbom", "--secret", &secret, "--push", "-t", &target2, &ctx,
    ]);
    let index2 = skopeo(&target2);
    let entries = index2["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{index2}");
    assert_eq!(entries[0]["digest"], image["digest"], "{index2}");
    assert_eq!(
        entries[1]["annotations"]["vnd.docker.reference.digest"],
        image["digest"]
    );

    // save --format docker writes the image, not the attestation.
    let tar = env.path("app.tar");
    env.ok(&["save", "-o", tar.to_str().unwrap(), "app:1"]);
    let listing = run(Command::new(require("tar"))
        .arg("-xOf")
        .arg(&tar)
        .arg("manifest.json"));
    let saved: Value = serde_json::from_str(&listing).unwrap();
    assert_eq!(saved.as_array().unwrap().len(), 1, "{saved}");
    let inspect: Value = serde_json::from_str(&env.ok(&["inspect", "app:1"])).unwrap();
    let id = inspect[0]["Id"].as_str().unwrap();
    assert!(
        saved[0]["Config"]
            .as_str()
            .unwrap()
            .contains(id.trim_start_matches("sha256:")),
        "{saved} {id}"
    );
}

/// A two-platform build gets one attestation manifest per image, each naming its image, after
/// the images; `kiln sbom --platform` reads the right one; `build --push` pushes them all;
/// flags kiln does not implement with attestations are refused by name.
#[test]
fn every_platform_gets_its_attestation_and_unsupported_flags_are_named() {
    let env = Env::new();
    env.busybox_base_for("bb", "amd64");
    env.busybox_base_for("bb", "arm64");
    let ctx = env.context("multi", "FROM bb\nLABEL x=1\n", &[]);
    env.build(&[
        "--no-lint",
        "--platform",
        "linux/amd64,linux/arm64",
        "--sbom",
        "--provenance=true",
        "-t",
        "multi:1",
        &ctx,
    ]);
    // The store itself is an OCI layout: read the tag's index from it, as skopeo would.
    let raw = run(Command::new(require("skopeo")).args([
        "inspect",
        "--raw",
        &format!("oci:{}:multi:1", env.root().join("oci").display()),
    ]));
    let index: Value = serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{e}: {raw}"));
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 4, "{index}");
    let arches: Vec<&str> = manifests
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(arches, ["amd64", "arm64", "unknown", "unknown"]);
    for (image, attestation) in manifests[..2].iter().zip(&manifests[2..]) {
        assert_eq!(
            attestation["annotations"]["vnd.docker.reference.digest"],
            image["digest"]
        );
    }
    // Each platform's SBOM names its own image.
    let arm: Value =
        serde_json::from_str(&env.ok(&["sbom", "--platform", "linux/arm64", "multi:1"])).unwrap();
    assert_eq!(arm["packages"][0]["versionInfo"], manifests[1]["digest"]);
    let amd: Value =
        serde_json::from_str(&env.ok(&["sbom", "--platform", "linux/amd64", "multi:1"])).unwrap();
    assert_eq!(amd["packages"][0]["versionInfo"], manifests[0]["digest"]);
    // An OCI archive keeps them, bound to the images as saved (their layers compressed).
    let tar = env.path("multi.tar");
    env.ok(&[
        "save",
        "--format",
        "oci",
        "--compress",
        "gzip",
        "-o",
        tar.to_str().unwrap(),
        "multi:1",
    ]);
    let raw = run(Command::new(require("skopeo")).args([
        "inspect",
        "--raw",
        &format!("oci-archive:{}", tar.display()),
    ]));
    let saved: Value = serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{e}: {raw}"));
    let saved = saved["manifests"].as_array().unwrap();
    assert_eq!(saved.len(), 4, "{raw}");
    assert_ne!(
        saved[0]["digest"], manifests[0]["digest"],
        "gzip changed the manifest"
    );
    for (image, attestation) in saved[..2].iter().zip(&saved[2..]) {
        assert_eq!(
            attestation["annotations"]["vnd.docker.reference.digest"],
            image["digest"]
        );
        let member = format!(
            "blobs/sha256/{}",
            attestation["digest"]
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:")
        );
        let manifest = run(Command::new("tar").arg("-xOf").arg(&tar).arg(&member));
        let manifest: Value = serde_json::from_str(&manifest).unwrap();
        assert_eq!(manifest["subject"]["digest"], image["digest"]);
    }

    // The runnable image is still what run picks.
    let said = env.ok(&[
        "run",
        "--platform",
        "linux/amd64",
        "multi:1",
        "echo",
        "real",
    ]);
    assert_eq!(said.trim(), "real");

    let err = env.fails(&["build", "--sbom=max", "-t", "x", &ctx]);
    assert!(err.contains("--sbom=max"), "{err}");
    let err = env.fails(&["build", "--provenance", "--load", "-t", "x", &ctx]);
    assert!(
        err.contains("--load with --sbom/--provenance is not supported yet"),
        "{err}"
    );
    let err = env.fails(&["build", "--provenance", "--push", &ctx]);
    assert!(err.contains("a push needs a name"), "{err}");

    // build --push sends the index with its attestations.
    let registry = Registry::start(&env, "multi");
    let target = format!("{}/kiln/multi:1", registry.host());
    env.build(&[
        "--no-lint",
        "--platform",
        "linux/amd64,linux/arm64",
        "--sbom",
        "--push",
        "-t",
        &target,
        &ctx,
    ]);
    let raw = run(Command::new(require("skopeo")).args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{target}"),
    ]));
    let pushed: Value = serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{e}: {raw}"));
    let entries = pushed["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 4, "{pushed}");
    for (image, attestation) in entries[..2].iter().zip(&entries[2..]) {
        assert_eq!(
            attestation["annotations"]["vnd.docker.reference.type"],
            "attestation-manifest"
        );
        assert_eq!(
            attestation["annotations"]["vnd.docker.reference.digest"],
            image["digest"]
        );
    }
}
