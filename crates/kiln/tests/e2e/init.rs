//! `kiln init python`: the files it writes follow the seed's lessons and lint clean. (The
//! build, `python3 -V` and the size comparison with the seed image run in
//! `analyze::seed_images_wrong_practice_wastes_the_apt_lists`, which shares its store.)

use crate::util::*;

#[test]
fn templates_lint_clean_and_follow_the_lessons() {
    let env = Env::new();
    for (variant, extra) in [
        ("slim", &[][..]),
        ("dev", &["--packages", "libpq-dev git"][..]),
    ] {
        let dir = env.path(variant);
        let mut args = vec!["init", "python", "--variant", variant];
        args.extend_from_slice(extra);
        args.push(dir.to_str().unwrap());
        env.ok(&args);
        let dockerfile = std::fs::read_to_string(dir.join("Dockerfile")).unwrap();
        let ignore = std::fs::read_to_string(dir.join(".dockerignore")).unwrap();
        assert!(ignore.lines().any(|l| l == ".git"), "{ignore}");
        let lint = env.ok(&["lint", dir.join("Dockerfile").to_str().unwrap()]);
        assert_eq!(lint, "", "{variant} lints clean:\n{dockerfile}");
        // The lessons, one by one.
        assert_eq!(
            dockerfile.matches("\nRUN ").count(),
            1,
            "one RUN:\n{dockerfile}"
        );
        assert!(dockerfile.contains("--no-install-recommends"));
        assert!(
            dockerfile.contains("&& apt-get clean")
                && dockerfile.contains("&& rm -rf /var/lib/apt/lists/*")
        );
        assert!(dockerfile.contains("LABEL maintainer=") && !dockerfile.contains("MAINTAINER "));
        assert!(dockerfile.contains("PIP_NO_CACHE_DIR=1"));
        assert!(dockerfile.contains("WORKDIR /app") && !dockerfile.contains("RUN mkdir"));
        assert!(dockerfile.contains("EXPOSE 80") && dockerfile.contains("CMD [\"bash\"]"));
        let run_at = dockerfile.find("\nRUN ").unwrap();
        assert!(
            dockerfile.find("WORKDIR").unwrap() > run_at,
            "stable steps first"
        );
        let compilers =
            dockerfile.contains("build-essential") && dockerfile.contains("python3-dev");
        assert_eq!(compilers, variant == "dev", "{dockerfile}");
        if variant == "dev" {
            assert!(dockerfile.contains("libpq-dev \\") && dockerfile.contains("git \\"));
        }
    }
}

#[test]
fn options_shape_the_template() {
    let env = Env::new();
    let dir = env.path("u");
    env.ok(&[
        "init",
        "python",
        "--base",
        "ubuntu:24.04",
        "--python",
        "3.12",
        "--workdir",
        "/srv",
        "--port",
        "8000",
        "--cmd",
        "python3 -m http.server",
        dir.to_str().unwrap(),
    ]);
    let dockerfile = std::fs::read_to_string(dir.join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("FROM ubuntu:24.04"));
    assert!(dockerfile.contains("python3.12 \\") && dockerfile.contains("python3.12-venv"));
    assert!(dockerfile.contains("WORKDIR /srv") && dockerfile.contains("EXPOSE 8000"));
    assert!(dockerfile.contains("CMD [\"python3\", \"-m\", \"http.server\"]"));
    assert_eq!(
        env.ok(&["lint", dir.join("Dockerfile").to_str().unwrap()]),
        ""
    );

    // Existing files are kept unless --force; bad options are refused with a reason.
    let err = env.fails(&["init", "python", dir.to_str().unwrap()]);
    assert!(err.contains("--force"), "{err}");
    env.ok(&["init", "python", "--force", dir.to_str().unwrap()]);
    let err = env.fails(&[
        "init",
        "python",
        "--base",
        "alpine:3.20",
        env.path("a").to_str().unwrap(),
    ]);
    assert!(err.contains("apt"), "{err}");
    let err = env.fails(&[
        "init",
        "python",
        "--base",
        "debian",
        env.path("b").to_str().unwrap(),
    ]);
    assert!(err.contains("tag"), "{err}");
}
