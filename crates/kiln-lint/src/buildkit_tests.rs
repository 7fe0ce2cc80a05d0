//! Each case follows a test of BuildKit's `frontend/dockerfile/dockerfile_check_test.go`,
//! named in the test's comment: same Dockerfile (or its gist), same rule, line and message.

use super::*;

fn run(text: &str) -> Vec<(String, usize, String)> {
    run_with(text, &CheckConfig::default())
}

fn run_with(text: &str, config: &CheckConfig) -> Vec<(String, usize, String)> {
    build_checks(text, config, &[])
        .unwrap()
        .into_iter()
        .map(|f| (f.rule.id.to_string(), f.location.line, f.message))
        .collect()
}

fn only(text: &str, rule: &str) -> Vec<(usize, String)> {
    run(text)
        .into_iter()
        .filter(|(r, _, _)| r == rule)
        .map(|(_, l, m)| (l, m))
        .collect()
}

/// testJSONArgsRecommended
#[test]
fn json_args_recommended() {
    assert_eq!(
        only("\nFROM scratch\nCMD mycommand\n", "JSONArgsRecommended"),
        [(
            3,
            "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals"
                .to_string()
        )]
    );
    assert_eq!(
        only(
            "FROM scratch\nENTRYPOINT mycommand\n",
            "JSONArgsRecommended"
        )[0]
        .1,
        "JSON arguments recommended for ENTRYPOINT to prevent unintended behavior related to OS signals"
    );
    // Exec form, or a SHELL set in the stage (or a parent stage): no warning.
    assert!(only("FROM scratch\nCMD [\"mycommand\"]\n", "JSONArgsRecommended").is_empty());
    assert!(
        only(
            "FROM scratch AS base\nSHELL [\"/bin/bash\", \"-c\"]\nFROM base\nENTRYPOINT mycommand\n",
            "JSONArgsRecommended"
        )
        .is_empty()
    );
}

/// testStageName
#[test]
fn stage_name_casing_and_from_as_casing() {
    let text = "\n# warning: stage name should be lowercase\n#\nFROM scratch AS BadStageName\n\n\
                # warning: 'as' should match 'FROM' cmd casing.\n#\nFROM scratch as base2\n\n\
                FROM scratch AS base3\n";
    assert_eq!(
        run(text),
        [
            (
                "StageNameCasing".to_string(),
                4,
                "Stage name 'BadStageName' should be lowercase".to_string()
            ),
            (
                "FromAsCasing".to_string(),
                8,
                "'as' and 'FROM' keywords' casing do not match".to_string()
            ),
        ]
    );
    // Lower-case from with lower-case as: fine.
    assert!(only("from scratch as base\n", "FromAsCasing").is_empty());
    assert_eq!(
        only("from scratch AS base\n", "FromAsCasing")[0].1,
        "'AS' and 'from' keywords' casing do not match"
    );
}

/// testNoEmptyContinuation
#[test]
fn no_empty_continuation() {
    // BuildKit reports the line the instruction ends on.
    let text = "\nFROM scratch\n# warning: empty continuation line\nCOPY Dockerfile \\\n\n.\nCOPY Dockerfile \\\n.\n";
    assert_eq!(
        only(text, "NoEmptyContinuation"),
        [(6, "Empty continuation line".to_string())]
    );
    assert!(
        only(
            "FROM scratch\nRUN apk add \\\n    curl\n",
            "NoEmptyContinuation"
        )
        .is_empty()
    );
}

/// testConsistentInstructionCasing
#[test]
fn consistent_instruction_casing() {
    assert_eq!(
        only(
            "FROM alpine\nRUN echo hello\ncopy Dockerfile /foo\n",
            "ConsistentInstructionCasing"
        ),
        [(
            3,
            "Command 'copy' should match the case of the command majority (uppercase)".to_string()
        )]
    );
    assert_eq!(
        only(
            "from alpine\nrun echo hello\nCOPY Dockerfile /foo\n",
            "ConsistentInstructionCasing"
        ),
        [(
            3,
            "Command 'COPY' should match the case of the command majority (lowercase)".to_string()
        )]
    );
    assert!(only("FROM alpine\nRUN echo hi\n", "ConsistentInstructionCasing").is_empty());
}

/// testDuplicateStageName
#[test]
fn duplicate_stage_name() {
    let text = "\nFROM scratch AS b\nFROM scratch AS b\n";
    assert_eq!(
        only(text, "DuplicateStageName"),
        [(
            3,
            "Duplicate stage name \"b\", stage names should be unique".to_string()
        )]
    );
    assert!(
        only(
            "FROM scratch AS a\nFROM scratch AS b\n",
            "DuplicateStageName"
        )
        .is_empty()
    );
}

/// testReservedStageName
#[test]
fn reserved_stage_name() {
    let text = "\nFROM busybox AS scratch\nFROM busybox AS context\nFROM busybox AS ok\n";
    assert_eq!(
        only(text, "ReservedStageName"),
        [
            (
                2,
                "Stage name should not use the same name as reserved stage \"scratch\"".to_string()
            ),
            (
                3,
                "Stage name should not use the same name as reserved stage \"context\"".to_string()
            ),
        ]
    );
}

/// testMaintainerDeprecated
#[test]
fn maintainer_deprecated() {
    assert_eq!(
        only(
            "\nFROM scratch\nMAINTAINER me@example.org\n",
            "MaintainerDeprecated"
        ),
        [(
            3,
            "Maintainer instruction is deprecated in favor of using label".to_string()
        )]
    );
    assert!(
        only(
            "FROM scratch\nLABEL org.opencontainers.image.authors=\"me@example.org\"\n",
            "MaintainerDeprecated"
        )
        .is_empty()
    );
}

/// testUndeclaredArg
#[test]
fn undefined_arg_in_from() {
    assert_eq!(
        only("FROM ${BULIDPLATFORM}\n", "UndefinedArgInFrom"),
        [(
            1,
            "FROM argument 'BULIDPLATFORM' is not declared".to_string()
        )]
    );
    assert!(
        only(
            "ARG base=scratch\nFROM --platform=$BUILDPLATFORM $base\n",
            "UndefinedArgInFrom"
        )
        .is_empty()
    );
    // A --build-arg counts as declared.
    let with_arg = build_checks("FROM $base\n", &CheckConfig::default(), &["base".into()]).unwrap();
    assert!(with_arg.iter().all(|f| f.rule.id != "UndefinedArgInFrom"));
}

/// testWorkdirRelativePath
#[test]
fn workdir_relative_path() {
    assert_eq!(
        only("FROM scratch AS a\nWORKDIR app/\n", "WorkdirRelativePath"),
        [(
            2,
            "Relative workdir \"app/\" can have unexpected results if the base image changes"
                .to_string()
        )]
    );
    // After an absolute WORKDIR, in the stage or its parent stage, relative ones are fine.
    assert!(
        only(
            "FROM scratch AS a\nWORKDIR /app\nFROM a\nWORKDIR sub\n",
            "WorkdirRelativePath"
        )
        .is_empty()
    );
}

/// testMultipleInstructionsDisallowed
#[test]
fn multiple_instructions_disallowed() {
    let text = "\nFROM scratch\nENTRYPOINT [\"/myapp\"]\nENTRYPOINT [\"/myotherapp\"]\nCMD [\"/myapp\"]\n\
                CMD [\"/myotherapp\"]\nHEALTHCHECK CMD [\"/myapp\"]\nHEALTHCHECK CMD [\"/myotherapp\"]\n";
    let msg = |n: &str| {
        format!(
            "Multiple {n} instructions should not be used in the same stage because only the last one will be used"
        )
    };
    assert_eq!(
        only(text, "MultipleInstructionsDisallowed"),
        [
            (3, msg("ENTRYPOINT")),
            (5, msg("CMD")),
            (7, msg("HEALTHCHECK"))
        ]
    );
    // One per stage is fine.
    assert!(
        only(
            "FROM scratch\nCMD [\"a\"]\nFROM scratch\nCMD [\"b\"]\n",
            "MultipleInstructionsDisallowed"
        )
        .is_empty()
    );
}

/// testLegacyKeyValueFormat
#[test]
fn legacy_key_value_format() {
    assert_eq!(
        only(
            "\nFROM scratch\nENV testkey value\nLABEL key value\n",
            "LegacyKeyValueFormat"
        ),
        [
            (
                3,
                "\"ENV key=value\" should be used instead of legacy \"ENV key value\" format"
                    .to_string()
            ),
            (
                4,
                "\"LABEL key=value\" should be used instead of legacy \"LABEL key value\" format"
                    .to_string()
            ),
        ]
    );
    assert!(
        only(
            "FROM scratch\nENV testkey=value\nLABEL key=value\n",
            "LegacyKeyValueFormat"
        )
        .is_empty()
    );
}

/// testSecretsUsedInArgOrEnv
#[test]
fn secrets_used_in_arg_or_env() {
    let text = "FROM scratch\nARG SECRET_PASSPHRASE\nENV SUPER_Secret=foo\nENV password=bar secret=baz\n\
                ARG super_duper_secret_token=foo auth=bar\nENV apikey=bar sunflower=foo\nENV git_key=\n\
                ENV PUBLIC_KEY=\nARG public_token\nARG SECRET_PASSPHRASE_FILE\n\
                ENV password_file=bar secret_File=baz\nARG AUTH_MODULE_VERSION\n\
                # check=skip=SecretsUsedInArgOrEnv // allow secret in environment\nENV password=bar\n";
    let got: Vec<String> = only(text, "SecretsUsedInArgOrEnv")
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    let want: Vec<String> = [
        "ARG \"SECRET_PASSPHRASE\"",
        "ENV \"SUPER_Secret\"",
        "ENV \"password\"",
        "ENV \"secret\"",
        "ARG \"auth\"",
        "ARG \"super_duper_secret_token\"",
        "ENV \"apikey\"",
        "ENV \"git_key\"",
    ]
    .iter()
    .map(|s| format!("Do not use ARG or ENV instructions for sensitive data ({s})"))
    .collect();
    let (mut got, mut want) = (got, want);
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

/// testExposeProtoCasing, testExposeInvalidFormat
#[test]
fn expose_rules() {
    assert_eq!(
        only("FROM scratch\nEXPOSE 80/TcP\n", "ExposeProtoCasing"),
        [(
            2,
            "Defined protocol '80/TcP' in EXPOSE instruction should be lowercase".to_string()
        )]
    );
    assert_eq!(
        only(
            "FROM scratch\nEXPOSE 127.0.0.1:80:80 8080:80 80/tcp\n",
            "ExposeInvalidFormat"
        )
        .into_iter()
        .map(|(_, m)| m)
        .collect::<Vec<_>>(),
        [
            "EXPOSE instruction should not define an IP address or host-port mapping, found '127.0.0.1:80:80'",
            "EXPOSE instruction should not define an IP address or host-port mapping, found '8080:80'",
        ]
    );
    assert!(run("FROM scratch\nEXPOSE 80/tcp 53/udp\n").is_empty());
}

/// testRuleCheckOption
#[test]
fn check_option_skip_error_and_experimental() {
    let text = "FROM scratch as base\ncopy Dockerfile .\n";
    let c = CheckConfig::parse("skip=all").unwrap();
    assert!(run_with(text, &c).is_empty());
    let c = CheckConfig::parse("skip=ConsistentInstructionCasing,FromAsCasing;error=true").unwrap();
    assert!(c.error);
    assert!(run_with(text, &c).is_empty());
    let c = CheckConfig::parse("skip=ConsistentInstructionCasing;error=true").unwrap();
    let findings = build_checks(text, &c, &[]).unwrap();
    assert_eq!(
        violation_error(&findings).as_deref(),
        Some("lint violation found for rules: FromAsCasing")
    );
    // Every BuildKit rule may be skipped or asked for; an unknown name is an error.
    assert!(CheckConfig::parse("skip=UndefinedVar,CopyIgnoredFile").is_ok());
    assert!(CheckConfig::parse("experimental=InvalidDefinitionDescription").is_ok());
    let err = CheckConfig::parse("experimental=NoSuchRule")
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a BuildKit check"), "{err}");
    assert!(
        CheckConfig::parse("experimental=all")
            .unwrap()
            .experimental_all
    );
    assert!(CheckConfig::parse("error=maybe").is_err());
    assert!(CheckConfig::parse("nonsense").is_err());
    assert!(CheckConfig::parse("unknown=1").is_err());
}

/// The build arg replaces the directive (testRuleCheckOption, its last case).
#[test]
fn build_arg_replaces_the_directive() {
    let parsed = kiln_dockerfile::parse("#check=error=true\nFROM scratch as base\n").unwrap();
    assert!(CheckConfig::for_build(&parsed, None).unwrap().error);
    let c = CheckConfig::for_build(&parsed, Some("skip=all")).unwrap();
    assert!(!c.error && c.skip_all);
}

#[test]
fn explain_finds_buildkit_rules() {
    let rule = crate::rule("JSONArgsRecommended").unwrap();
    assert!(rule.doc.contains("json-args-recommended"));
    assert_eq!(crate::rule("kl008").unwrap().name, "shell-form-cmd");
    for name in EXPERIMENTAL {
        assert!(BUILDKIT_RULES.iter().any(|r| r.id == *name), "{name}");
    }
}

/// testFromPlatformFlagConstDisallowed
#[test]
fn from_platform_flag_const_disallowed() {
    assert_eq!(
        only(
            "\nFROM --platform=linux/amd64 scratch\n",
            "FromPlatformFlagConstDisallowed"
        ),
        [(
            2,
            "FROM --platform flag should not use constant value \"linux/amd64\"".to_string()
        )]
    );
    for quiet in [
        "FROM --platform=linux/amd64 scratch AS my_amd64_stage\n",
        "FROM --platform=linux/amd64 scratch AS linux\n",
        "FROM --platform=$BUILDPLATFORM scratch\n",
    ] {
        assert!(
            only(quiet, "FromPlatformFlagConstDisallowed").is_empty(),
            "{quiet}"
        );
    }
}

/// testRedundantTargetPlatform
#[test]
fn redundant_target_platform() {
    for (text, var) in [
        (
            "\nFROM --platform=$TARGETPLATFORM scratch\n",
            "$TARGETPLATFORM",
        ),
        (
            "\nFROM --platform=${TARGETPLATFORM} scratch\n",
            "${TARGETPLATFORM}",
        ),
    ] {
        assert_eq!(
            only(text, "RedundantTargetPlatform"),
            [(
                2,
                format!(
                    "Setting platform to predefined {var} in FROM is redundant as this is the default behavior"
                )
            )]
        );
    }
    assert!(
        only(
            "# check=skip=RedundantTargetPlatform\nFROM --platform=$TARGETPLATFORM scratch\n",
            "RedundantTargetPlatform"
        )
        .len()
            == 1,
        "build_checks takes its config from the caller; the directive is read by for_build"
    );
    let parsed = kiln_dockerfile::parse(
        "# check=skip=RedundantTargetPlatform\nFROM --platform=$TARGETPLATFORM scratch\n",
    )
    .unwrap();
    let config = CheckConfig::for_build(&parsed, None).unwrap();
    assert!(
        build_checks_parsed(&parsed, &config, &[])
            .unwrap()
            .is_empty()
    );
    assert!(
        only(
            "FROM --platform=$BUILDPLATFORM scratch\n",
            "RedundantTargetPlatform"
        )
        .is_empty()
    );
}

/// testUnmatchedVars, with `alpine`'s environment given as BuildKit reads it from the image.
#[test]
fn undefined_var() {
    let alpine = |name: &str| (name == "alpine").then(|| vec!["PATH".to_string()]);
    let undefined = |text: &str| -> Vec<(usize, String)> {
        let parsed = kiln_dockerfile::parse(text).unwrap();
        build_checks_with_base_env(&parsed, &CheckConfig::default(), &[], &alpine)
            .unwrap()
            .into_iter()
            .filter(|f| f.rule.id == "UndefinedVar")
            .map(|f| (f.location.line, f.message))
            .collect()
    };
    // Quiet: a declared ARG (even without value), an ARG of the parent stage, $PATH, RUN.
    for quiet in [
        "\nFROM scratch\nARG foo\nCOPY Dockerfile${foo} .\n",
        "\nFROM alpine AS base\nARG foo=Dockerfile\n\nFROM base\nCOPY $foo .\n",
        "\nFROM alpine\nRUN echo $PATH\n",
        "\nFROM alpine\nENV PATH=$PATH:/tmp/bin\n",
    ] {
        assert!(
            undefined(quiet).is_empty(),
            "{quiet}: {:?}",
            undefined(quiet)
        );
    }
    assert_eq!(
        undefined("\nFROM alpine\nCOPY $foo .\nARG foo=bar\nRUN echo $foo\n"),
        [(3, "Usage of undefined variable '$foo'".to_string())]
    );
    assert_eq!(
        undefined(
            "\nFROM alpine\nARG DIR_BINARIES=binaries/\nARG DIR_ASSETS=assets/\nARG DIR_CONFIG=config/\nCOPY $DIR_ASSET .\n"
        ),
        [(
            6,
            "Usage of undefined variable '$DIR_ASSET' (did you mean $DIR_ASSETS?)".to_string()
        )]
    );
    assert_eq!(
        undefined("\nFROM alpine\nENV PATH=$PAHT:/tmp/bin\n"),
        [(
            3,
            "Usage of undefined variable '$PAHT' (did you mean $PATH?)".to_string()
        )]
    );
    // An image whose environment is unknown: no guess, no finding.
    assert!(undefined("FROM debian\nCOPY $foo .\n").is_empty());
    // Escaped and single-quoted dollars are not lookups; ${x:-$y} looks up y only if x is unset.
    assert!(undefined("FROM scratch\nENV a='$nope' b=\\$nope\n").is_empty());
    assert_eq!(
        undefined(
            "FROM scratch\nARG defined=1\nENV a1=${defined:-$yyyyy}\nENV b1=${zzzzz:-$wwwww}\n"
        )
        .into_iter()
        .map(|(l, m)| format!("{l}:{m}"))
        .collect::<Vec<_>>(),
        [
            "4:Usage of undefined variable '$wwwww'",
            "4:Usage of undefined variable '$zzzzz'"
        ]
    );
}

/// The findings of `text` for `rule` with `facts`, as (line, message).
fn with_facts(text: &str, rule: &str, facts: &BuildFacts<'_>) -> Vec<(usize, String)> {
    let parsed = kiln_dockerfile::parse(text).unwrap();
    let config = CheckConfig::for_build(&parsed, None).unwrap();
    build_checks_with(&parsed, &config, facts)
        .unwrap()
        .into_iter()
        .filter(|f| f.rule.id == rule)
        .map(|f| (f.location.line, f.message))
        .collect()
}

fn is_reference(name: &str) -> bool {
    name.parse::<kiln_image::Reference>().is_ok()
}

/// testInvalidDefaultArgInFrom: the build args (here `VERSION=latest` and the like) do not
/// hide a default that makes no image name.
#[test]
fn invalid_default_arg_in_from() {
    let check = |text: &str, arg: (&str, &str)| {
        let args = [(arg.0.to_string(), arg.1.to_string())];
        let facts = BuildFacts {
            build_args: &args,
            is_image_reference: Some(&is_reference),
            ..BuildFacts::default()
        };
        with_facts(text, "InvalidDefaultArgInFrom", &facts)
    };
    let message = |base: &str| {
        vec![(
            3,
            format!("Default value for ARG {base} results in empty or invalid base image name"),
        )]
    };
    assert_eq!(
        check(
            "\nARG VERSION\nFROM busybox:$VERSION\n",
            ("VERSION", "latest")
        ),
        message("busybox:$VERSION")
    );
    assert_eq!(
        check("\nARG IMAGE\nFROM $IMAGE\n", ("IMAGE", "busybox:latest")),
        message("$IMAGE")
    );
    assert_eq!(
        check(
            "\nARG SFX=\"box:\"\nFROM busy${SFX}\n",
            ("SFX", "box:latest")
        ),
        message("busy${SFX}")
    );
    for quiet in [
        (
            "\nARG VERSION=\"latest\"\nFROM busybox:${VERSION}\n",
            ("VERSION", "latest"),
        ),
        (
            "\nARG BUSYBOX_VARIANT=\"\"\nFROM busybox:stable${BUSYBOX_VARIANT}\n",
            ("BUSYBOX_VARIANT", "-musl"),
        ),
        (
            "\n\tARG BUSYBOX_VARIANT\n\tFROM busybox:stable${BUSYBOX_VARIANT}\n\t",
            ("BUSYBOX_VARIANT", "-musl"),
        ),
        ("FROM scratch AS base\nFROM base\n", ("X", "")),
    ] {
        assert!(check(quiet.0, quiet.1).is_empty(), "{quiet:?}");
    }
    // Without the fact (`kiln lint` on text alone gives it; a caller may not), no finding.
    assert!(
        only(
            "\nARG VERSION\nFROM busybox:$VERSION\n",
            "InvalidDefaultArgInFrom"
        )
        .is_empty()
    );
}

/// testCopyIgnoredFiles: the facts give the context's rules (`Dockerfile` ignored).
#[test]
fn copy_ignored_file() {
    let ignored = |src: &str| {
        let cleaned = src.trim_start_matches("./");
        (cleaned == "Dockerfile").then(|| cleaned.to_string())
    };
    let facts = BuildFacts {
        copy_ignored: Some(&ignored),
        ..BuildFacts::default()
    };
    let text = "\nFROM scratch\nCOPY Dockerfile .\nADD Dockerfile /windy\n";
    assert_eq!(
        with_facts(text, "CopyIgnoredFile", &facts),
        [
            (
                3,
                "Attempting to Copy file \"Dockerfile\" that is excluded by .dockerignore"
                    .to_string()
            ),
            (
                4,
                "Attempting to Add file \"Dockerfile\" that is excluded by .dockerignore"
                    .to_string()
            ),
        ]
    );
    let skipped = format!("# check=skip=CopyIgnoredFile\n{text}");
    assert!(with_facts(&skipped, "CopyIgnoredFile", &facts).is_empty());
    // COPY --from reads a stage; URLs are downloads.
    let other = "\nFROM scratch AS base\nCOPY --from=base Dockerfile /x\nADD https://example.com/Dockerfile /y\n";
    assert!(with_facts(other, "CopyIgnoredFile", &facts).is_empty());
}

/// testBaseImagePlatformMismatch: the image is arm64, the build amd64 (and the other way).
#[test]
fn invalid_base_image_platform() {
    let arm64 = |name: &str| (name == "elsewhere").then(|| Platform::new("linux", "arm64", ""));
    let amd64 = Platform::new("linux", "amd64", "");
    let facts = BuildFacts {
        platform: Some(&amd64),
        base_platform: Some(&arm64),
        ..BuildFacts::default()
    };
    assert_eq!(
        with_facts("\nFROM elsewhere\nENV foo=bar\n", "InvalidBaseImagePlatform", &facts),
        [(
            2,
            "Base image elsewhere was pulled with platform \"linux/arm64\", expected \"linux/amd64\" for current build".to_string()
        )]
    );
    // The stage asks for the image's platform; another image; a stage; scratch.
    for quiet in [
        "FROM --platform=linux/arm64 elsewhere AS tools\n",
        "FROM --platform=linux/arm64/v8 elsewhere AS tools\n",
        "FROM other\n",
        "FROM scratch AS elsewhere\nFROM elsewhere\n",
    ] {
        assert!(
            with_facts(quiet, "InvalidBaseImagePlatform", &facts).is_empty(),
            "{quiet}"
        );
    }
    let arm = Platform::new("linux", "arm", "");
    let on_arm = BuildFacts {
        platform: Some(&arm),
        base_platform: Some(&arm64),
        ..BuildFacts::default()
    };
    assert_eq!(
        with_facts("FROM elsewhere\n", "InvalidBaseImagePlatform", &on_arm)[0].1,
        "Base image elsewhere was pulled with platform \"linux/arm64\", expected \"linux/arm/v7\" for current build"
    );
}

/// testDefinitionDescription: experimental, so it runs only when `experimental=` names it;
/// `skip=all` does not turn it off.
#[test]
fn invalid_definition_description() {
    let facts = BuildFacts::default();
    let good = "# check=skip=all;experimental=InvalidDefinitionDescription\n# foo this is the foo\nARG foo=bar\n\n# base this is the base image\nFROM scratch AS base\n\n# version this is the version number\nARG version=latest\n\n# baz this is the baz\nARG foo=baz bar=qux baz=quux\n#\nARG bit=bat\n\n# comment for something other than ARG or FROM\nCOPY Dockerfile .\n";
    assert!(with_facts(good, "InvalidDefinitionDescription", &facts).is_empty());
    let body = "# bar this is the bar\nARG foo=bar\n# BasE this is the BasE image\nFROM scratch AS base\n# definitely a bad comment\nARG version=latest\n# definitely a bad comment\nARG foo=baz bar=qux baz=quux\n";
    assert!(with_facts(body, "InvalidDefinitionDescription", &facts).is_empty());
    let asked = format!("# check=experimental=InvalidDefinitionDescription\n{body}");
    let format = |what: &str, name: &str| {
        format!("Comment for {what} should follow the format: `# {name} <description>`")
    };
    assert_eq!(
        with_facts(&asked, "InvalidDefinitionDescription", &facts),
        [
            (3, format("ARG", "foo")),
            (5, format("FROM", "base")),
            (7, format("ARG", "version")),
            (9, format("ARG", "<arg_key>")),
        ]
    );
    let all = format!("# check=skip=all;experimental=all\n{body}");
    assert_eq!(
        with_facts(&all, "InvalidDefinitionDescription", &facts).len(),
        4
    );
}
