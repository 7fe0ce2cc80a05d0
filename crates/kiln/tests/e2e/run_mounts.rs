//! RUN's forms and mounts: exec form, heredocs, `--network`, and `--mount` of type cache, bind,
//! tmpfs and secret. A secret is readable in the step and never lands in a layer.

use crate::util::*;

#[test]
fn run_forms_mounts_and_secrets() {
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.path("ctx");
    std::fs::create_dir_all(ctx.join("conf")).unwrap();
    std::fs::write(ctx.join("conf/app.ini"), "mode=bound\n").unwrap();
    let secret = env.path("token.txt");
    std::fs::write(&secret, "s3cr3t-value\n").unwrap();
    let dockerfile = r#"FROM busybox
RUN ["/bin/sh", "-c", "echo exec-form > /exec.txt"]
RUN <<EOF
echo heredoc-line-1 > /heredoc.txt
echo heredoc-line-2 >> /heredoc.txt
EOF
RUN --network=none ls /sys/class/net > /net.txt
RUN --mount=type=cache,target=/cache sh -c 'echo run >> /cache/runs; wc -l < /cache/runs > /cache-count.txt'
RUN --mount=type=bind,source=conf,target=/mnt/conf cat /mnt/conf/app.ini > /bound.txt
RUN --mount=type=tmpfs,target=/scratch sh -c 'echo temp > /scratch/t && cat /scratch/t > /tmpfs.txt'
RUN --mount=type=secret,id=token sh -c 'cat /run/secrets/token | wc -c > /secret-len.txt'
"#;
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    let secret_arg = format!("id=token,src={}", secret.display());
    env.build(&[
        "--secret",
        &secret_arg,
        "-t",
        "mounts",
        ctx.to_str().unwrap(),
    ]);
    let cat = |path: &str| {
        env.ok(&["run", "--rm", "mounts", "cat", path])
            .trim()
            .to_owned()
    };
    assert_eq!(cat("/exec.txt"), "exec-form");
    assert_eq!(cat("/heredoc.txt"), "heredoc-line-1\nheredoc-line-2");
    assert_eq!(cat("/net.txt"), "lo");
    assert_eq!(cat("/cache-count.txt"), "1");
    assert_eq!(cat("/bound.txt"), "mode=bound");
    assert_eq!(cat("/tmpfs.txt"), "temp");
    assert_eq!(cat("/secret-len.txt"), "13");
    // Mount targets leave nothing in the image.
    let listing = env.ok(&[
        "run",
        "--rm",
        "mounts",
        "sh",
        "-c",
        "ls -A /cache /scratch /mnt/conf /run/secrets 2>&1; true",
    ]);
    assert!(
        !listing.contains("runs") && !listing.contains("app.ini") && !listing.contains("token"),
        "{listing}"
    );

    // --no-cache starts the cache mount empty, as BuildKit's has since 2019 (moby/buildkit
    // #1213, #5305; testCacheMountModeNoCache): the rerun counts one run again.
    env.build(&[
        "--no-cache",
        "--secret",
        &secret_arg,
        "-t",
        "mounts",
        ctx.to_str().unwrap(),
    ]);
    assert_eq!(cat("/cache-count.txt"), "1");

    // A bound file is part of the step's cache key: changing it reruns the step.
    std::fs::write(ctx.join("conf/app.ini"), "mode=changed\n").unwrap();
    env.build(&[
        "--secret",
        &secret_arg,
        "-t",
        "mounts",
        ctx.to_str().unwrap(),
    ]);
    assert_eq!(cat("/bound.txt"), "mode=changed");

    // No layer blob holds the secret.
    let image: serde_json::Value = serde_json::from_str(&env.ok(&["inspect", "mounts"])).unwrap();
    for layer in image[0]["RootFS"]["Layers"].as_array().unwrap() {
        let digest = layer.as_str().unwrap().trim_start_matches("sha256:");
        let bytes = std::fs::read(env.root().join("oci/blobs/sha256").join(digest)).unwrap();
        assert!(
            !bytes.windows(12).any(|w| w == b"s3cr3t-value"),
            "the secret leaked into layer {digest}"
        );
    }

    // A required secret that is not given is a clear error.
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nRUN --mount=type=secret,id=missing,required=true cat /run/secrets/missing\n",
    )
    .unwrap();
    let err = env.fails(&["build", "-t", "nosecret", ctx.to_str().unwrap()]);
    assert!(err.contains("--secret id=missing"), "{err}");
}

/// `--secret` from the environment, as buildx takes it: `env=VAR`, `type=env,src=VAR`, and a
/// bare `id=ID` that names a variable; and bad `--secret` values named.
#[test]
fn secrets_from_the_environment() {
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context(
        "envsecret",
        "FROM busybox
RUN --mount=type=secret,id=a --mount=type=secret,id=b \\
         --mount=type=secret,id=API_TOKEN sh -c 'echo \"$(cat /run/secrets/a)-$(cat \
         /run/secrets/b)-$(cat /run/secrets/API_TOKEN)\"'
",
        &[],
    );
    let out = env
        .kiln()
        .args(["build", "--no-lint", "--progress", "plain"])
        .args(["--secret", "id=a,env=KILN_T_A"])
        .args(["--secret", "id=b,type=env,src=KILN_T_B"])
        .args(["--secret", "id=API_TOKEN", &ctx])
        .env("KILN_T_A", "qz7alpha")
        .env("KILN_T_B", "qz7beta")
        .env("API_TOKEN", "qz7gamma")
        .output()
        .unwrap();
    assert_success(&out, "kiln build with env secrets");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("qz7alpha-qz7beta-qz7gamma"), "{log}");
    for blob in env.blobs() {
        let bytes = std::fs::read(env.root().join("oci/blobs/sha256").join(&blob)).unwrap();
        assert!(
            !bytes.windows(8).any(|w| w == b"qz7alpha"),
            "the secret leaked into blob {blob}"
        );
    }
    assert_eq!(entries(&env.root().join("tmp")), Vec::<String>::new());

    for (arg, expected) in [
        (
            "id=a,env=KILN_T_UNSET",
            "the environment has no variable KILN_T_UNSET",
        ),
        ("id=a,kind=x", "unexpected \"kind=x\""),
        ("id=a,type=ssh", "type=ssh is not a secret type"),
        ("src=/etc/hostname", "no id=ID"),
        ("id=a,src=/nonexistent", "/nonexistent is not a file"),
    ] {
        let err = env.fails(&["build", "--secret", arg, &ctx]);
        assert!(
            err.contains(&format!("--secret {arg}")) && err.contains(expected),
            "{arg}: {err}"
        );
    }
}

/// A read-only bind of an image of one layer, or of a stage of none: overlayfs mounts no
/// fewer than two lowers without an upper dir, so empty dirs fill the stack up.
#[test]
fn bind_mounts_from_short_layer_stacks() {
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    let dockerfile = r#"FROM scratch AS nothing
ENV EMPTY=yes

FROM busybox
RUN --mount=type=bind,from=busybox,target=/one ls /one/bin/busybox > /one.txt
RUN --mount=type=bind,from=nothing,target=/none sh -c 'ls -A /none | wc -l > /none.txt'
"#;
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    env.build(&["-t", "short-binds", ctx.to_str().unwrap()]);
    let cat = |path: &str| {
        env.ok(&["run", "--rm", "short-binds", "cat", path])
            .trim()
            .to_owned()
    };
    assert_eq!(cat("/one.txt"), "/one/bin/busybox");
    assert_eq!(cat("/none.txt"), "0");
}

/// `--add-host`, `--shm-size` and `--ulimit` reach every RUN step, and are part of its key;
/// bad values are named.
#[test]
fn add_host_shm_size_and_ulimit_reach_run_steps() {
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = env.context(
        "runopts",
        "FROM busybox\nRUN grep -w kiln-peer /etc/hosts && df -k /dev/shm | tail -1 && \
         echo \"nofile $(ulimit -n) $(ulimit -Hn)\"\n",
        &[],
    );
    let flags = [
        "--add-host",
        "kiln-peer:10.1.2.3",
        "--add-host",
        "v6peer=fd00::7",
        "--shm-size",
        "128m",
        "--ulimit",
        "nofile=1234:2345",
    ];
    let mut args = vec!["--no-lint"];
    args.extend(flags);
    args.push(&ctx);
    let (out, log) = env.build_output(&args);
    assert_success(&out, "kiln build with run options");
    assert!(log.contains("10.1.2.3\tkiln-peer"), "{log}");
    assert!(log.contains(" 131072 "), "/dev/shm of 128 MiB:\n{log}");
    assert!(log.contains("nofile 1234 2345"), "{log}");

    // The same options: cached. Without them: the step runs again, with docker's defaults.
    let (_, log) = env.build_output(&args);
    assert_eq!(step_log(&log, "grep -w").last(), Some(&"CACHED"), "{log}");
    let (out, log) = env.build_output(&["--no-lint", &ctx]);
    assert!(
        !out.status.success(),
        "no kiln-peer without --add-host:\n{log}"
    );

    for (flag, value, expected) in [
        ("--add-host", "nocolon", "expected HOST:IP"),
        ("--add-host", "h:not-an-ip", "is not an IP address"),
        ("--ulimit", "nofile=10:5", "above the hard limit"),
        ("--ulimit", "files=1", "not a resource"),
    ] {
        let err = env.fails(&["build", flag, value, &ctx]);
        assert!(
            err.contains(flag) && err.contains(expected),
            "{flag} {value}: {err}"
        );
    }
    // A usage error, as clap reports them all.
    let out = env
        .kiln()
        .args(["build", "--shm-size", "12q", &ctx])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--shm-size") && err.contains("unknown unit"),
        "{err}"
    );
}

/// Cache mounts as BuildKit's dockerfile2llb makes them (convert_runmount.go): `from=` seeds
/// the cache with that stage's files and keys it apart from the same id without them,
/// `source=` mounts a directory of the cache, and a `source=` that resolves through a link out
/// of the cache fails (BuildKit's testCacheMountSourceEscape).
#[test]
fn cache_mounts_take_from_and_source() {
    let env = Env::new();
    env.busybox_base("busybox");
    let dockerfile = "FROM busybox AS seed\n\
        RUN mkdir -p /deps/sub && echo seeded > /deps/sub/a\n\
        FROM busybox\n\
        RUN --mount=type=cache,id=c1,from=seed,source=/deps,target=/c \
            cat /c/sub/a > /got && echo more > /c/sub/b\n\
        RUN --mount=type=cache,id=c1,from=seed,source=/deps,target=/c ls /c/sub > /second\n\
        RUN --mount=type=cache,id=c1,target=/c ls -A /c > /plain\n\
        RUN --mount=type=cache,id=c2,target=/c mkdir -p /c/x && echo in-x > /c/x/f\n\
        RUN --mount=type=cache,id=c2,source=x,target=/y cat /y/f > /via-source\n";
    let ctx = env.context("cache-from", dockerfile, &[]);
    env.build(&["--no-lint", "-t", "cache-from", &ctx]);
    let cat = |path: &str| {
        env.ok(&["run", "--rm", "cache-from", "cat", path])
            .trim()
            .to_owned()
    };
    assert_eq!(cat("/got"), "seeded");
    assert_eq!(
        cat("/second"),
        "a\nb",
        "the seeded cache keeps what steps write"
    );
    assert_eq!(
        cat("/plain"),
        "",
        "the same id without from= is another cache"
    );
    assert_eq!(cat("/via-source"), "in-x");

    let escape = "FROM busybox\n\
        RUN --mount=type=cache,id=esc,target=/cache mkdir -p /cache/sel && echo benign > /cache/sel/b\n\
        RUN --mount=type=cache,id=esc,target=/cache rm -rf /cache/sel && ln -s /etc /cache/sel\n\
        RUN --mount=type=cache,id=esc,source=sel,target=/victim cat /victim/hostname\n";
    let ctx = env.context("cache-escape", escape, &[]);
    let err = env.fails(&["build", "--no-lint", "--no-cache", "-t", "escape", &ctx]);
    assert!(err.contains("open directory"), "{err}");
}

/// `sharing=private`: a step that finds the cache in use gets an instance of its own (two
/// steps that meet in the middle of their runs each see only their own file), and a later
/// step reuses a free instance. `shared` steps at the same time see each other's files.
#[test]
fn private_cache_mounts_give_concurrent_steps_their_own() {
    let env = Env::new();
    env.busybox_base("busybox");
    // Each step marks the cache, waits (up to a minute) in a shared rendezvous cache until the
    // other step is running too, then lists the cache.
    let step = |me: &str, other: &str, sharing: &str| {
        format!(
            "RUN --mount=type=cache,id=meet-{sharing},target=/meet,sharing=shared \
             --mount=type=cache,id=work-{sharing},target=/c,sharing={sharing} \
             touch /c/{me} /meet/{me} && i=0; while [ ! -e /meet/{other} ]; do \
             i=$((i+1)); [ $i -lt 600 ] || {{ echo {me} waited alone; exit 1; }}; sleep 0.1; done; \
             ls /c | tr '\\n' ' ' > /seen"
        )
    };
    for sharing in ["private", "shared"] {
        let dockerfile = format!(
            "FROM busybox AS left\n{}\nFROM busybox AS right\n{}\n\
             FROM busybox\nCOPY --from=left /seen /left\nCOPY --from=right /seen /right\n\
             RUN --mount=type=cache,id=work-{sharing},target=/c,sharing={sharing} \
                 ls /c | tr '\\n' ' ' > /after\n",
            step("left", "right", sharing),
            step("right", "left", sharing),
        );
        let ctx = env.context(&format!("cache-{sharing}"), &dockerfile, &[]);
        env.build(&["--no-lint", "--jobs", "2", "-t", sharing, &ctx]);
        let cat = |path: &str| {
            env.ok(&["run", "--rm", sharing, "cat", path])
                .trim()
                .to_owned()
        };
        let (left, right, after) = (cat("/left"), cat("/right"), cat("/after"));
        if sharing == "private" {
            assert_eq!((left.as_str(), right.as_str()), ("left", "right"));
            assert!(
                after == "left" || after == "right",
                "a later step reuses a free instance: {after:?}"
            );
        } else {
            assert_eq!(
                (left.as_str(), right.as_str()),
                ("left right", "left right")
            );
            assert_eq!(after, "left right");
        }
    }
}

/// Nested mount targets, as BuildKit's testCacheMountParallel
/// (frontend/dockerfile/dockerfile_mount_test.go) runs them: the outer mount goes first
/// whatever the order of the flags, and the inner mountpoint is made inside it. Files written
/// in each cache reach a later step with the same caches and never the layer; a bind, tmpfs
/// or secret nested in a cache works the same, and leaves no content in the cache. A symlink
/// on the way to a target, in the rootfs or in a cache, is resolved inside the container's
/// root, never on the host.
#[test]
fn nested_mount_targets_mount_outer_first() {
    let env = Env::new();
    env.busybox_base("busybox");
    // A link in the image to this (absolute) path: if a mountpoint were made on the host
    // through it, it would show up here.
    let host = env.path("host-side");
    std::fs::create_dir_all(&host).unwrap();
    let host = host.display().to_string();
    let dockerfile = format!(
        "FROM busybox\n\
         RUN --mount=type=cache,target=/foo/bar --mount=type=cache,target=/foo/bar/baz \
             sh -c 'echo outer > /foo/bar/outer && echo inner > /foo/bar/baz/inner'\n\
         RUN --mount=type=cache,target=/foo/bar/baz --mount=type=cache,target=/foo/bar \
             sh -c 'cat /foo/bar/outer /foo/bar/baz/inner > /seen; ls -A /foo/bar/baz > /inner-list'\n\
         RUN ls -AR /foo > /listing 2>&1; true\n\
         RUN --mount=type=cache,target=/c --mount=type=bind,source=conf,target=/c/conf \
             --mount=type=tmpfs,target=/c/tmp --mount=type=secret,id=tok,target=/c/secret/tok \
             sh -c 'cat /c/conf/app.ini /c/secret/tok > /mix; echo t > /c/tmp/t; echo kept > /c/kept'\n\
         RUN --mount=type=cache,target=/c sh -c 'ls -A /c /c/tmp; wc -c < /c/secret/tok' > /c-list\n\
         RUN mkdir -p {host} && ln -s {host} /link\n\
         RUN --mount=type=cache,target=/link/bar --mount=type=cache,target=/link/bar/baz \
             sh -c 'echo x > /link/bar/baz/f && cat /link/bar/baz/f > /via-link'\n\
         RUN --mount=type=cache,id=lnk,target=/c ln -s {host} /c/sub\n\
         RUN --mount=type=cache,id=lnk,target=/c --mount=type=tmpfs,target=/c/sub/t \
             sh -c 'echo y > /c/sub/t/f && cat {host}/t/f > /via-cache-link'\n"
    );
    let ctx = env.context("nested", &dockerfile, &[("conf/app.ini", "mode=bound\n")]);
    let secret = env.path("tok.txt");
    std::fs::write(&secret, "tok-value\n").unwrap();
    let secret_arg = format!("id=tok,src={}", secret.display());
    env.build(&["--no-lint", "--secret", &secret_arg, "-t", "nested", &ctx]);
    let cat = |path: &str| {
        env.ok(&["run", "--rm", "nested", "cat", path])
            .trim()
            .to_owned()
    };
    assert_eq!(cat("/seen"), "outer\ninner");
    assert_eq!(cat("/inner-list"), "inner", "the inner cache is its own");
    let listing = cat("/listing");
    assert!(
        !listing.contains("outer") && !listing.contains("inner"),
        "cache files reached the layer: {listing}"
    );
    assert_eq!(cat("/mix"), "mode=bound\ntok-value");
    let c_list = cat("/c-list");
    assert!(c_list.contains("kept"), "{c_list}");
    assert!(
        !c_list.contains("app.ini") && !c_list.contains("\nt\n"),
        "a nested mount's files reached the cache: {c_list}"
    );
    assert!(
        c_list.ends_with("\n0"),
        "the secret's content reached the cache: {c_list}"
    );
    assert_eq!(cat("/via-link"), "x");
    assert_eq!(
        cat("/via-cache-link"),
        "y",
        "a link in a cache leads inside the container"
    );
    assert_eq!(
        entries(std::path::Path::new(&host)),
        Vec::<String>::new(),
        "a mountpoint was made on the host through the image's link"
    );
}

/// A cache nested in a read-only bind: where the bind's source has the directory, the cache
/// is mounted on it; where not, no mountpoint can be made in a read-only mount (runc, under
/// BuildKit, fails the same way) and the error names the target.
#[test]
fn nested_target_in_a_read_only_bind() {
    let env = Env::new();
    env.busybox_base("busybox");
    let dockerfile = "FROM busybox\n\
        RUN --mount=type=bind,source=ro,target=/r --mount=type=cache,target=/r/has \
            sh -c 'echo c > /r/has/f && cat /r/has/f /r/file > /got'\n";
    let ctx = env.context(
        "ro-has",
        dockerfile,
        &[("ro/file", "from-bind\n"), ("ro/has/.keep", "")],
    );
    env.build(&["--no-lint", "-t", "ro-has", &ctx]);
    let got = env.ok(&["run", "--rm", "ro-has", "cat", "/got"]);
    assert_eq!(got.trim(), "c\nfrom-bind");

    let dockerfile = "FROM busybox\n\
        RUN --mount=type=bind,source=ro,target=/r --mount=type=cache,target=/r/missing/dir true\n";
    let ctx = env.context("ro-missing", dockerfile, &[("ro/file", "x\n")]);
    let err = env.fails(&["build", "--no-lint", "-t", "ro-missing", &ctx]);
    assert!(
        err.contains("/r/missing/dir") && err.contains("read-only"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
