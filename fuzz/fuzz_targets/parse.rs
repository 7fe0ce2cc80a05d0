//! Whole pipeline on arbitrary text: parse, dump, typed instructions, stages, expansion.
//! Any panic, hang or crash is a bug: every input must end in a value or an error.
#![no_main]

use kiln_dockerfile::shell::EnvList;
use kiln_dockerfile::{Platform, PlatformArgs, Variables, parse, parse_stages};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Invalid UTF-8 is kept the way `kiln debug parse` keeps it.
    let text = kiln_dockerfile::decode_lossless(data);
    let Ok(parsed) = parse(&text) else { return };
    // Round trip, unless the input itself holds the (valid) characters used for kept bytes.
    if !data.windows(2).any(|w| w == [0xF4, 0x8F]) {
        assert_eq!(kiln_dockerfile::encode_lossless(&text), data);
    }
    let dump = parsed.dump();
    assert!(dump.ends_with('\n'));
    for node in &parsed.nodes {
        assert!(node.span.start.line <= node.span.end.line);
        let _ = kiln_dockerfile::parse_instruction(node);
    }
    let Ok((meta, stages)) = parse_stages(&parsed) else { return };
    let mut global = Variables::new(&PlatformArgs::same(Platform::new("linux", "amd64", "")), [("B", "cli")]);
    if global.declare_meta_args(&meta, parsed.escape).is_err() {
        return;
    }
    let env = EnvList::from_pairs([("HOME", "/root"), ("E", ""), ("S", "a b  c")]);
    for stage in &stages {
        let _ = stage.from.expand(global.global(), parsed.escape);
        let mut vars = global.for_stage();
        vars.set_base_env(env.to_env_strings());
        for inst in &stage.instructions {
            let _ = vars.expand_and_apply(inst, parsed.escape);
            if let kiln_dockerfile::Instruction::Onbuild(o) = &inst.value {
                let _ = o.parse_trigger();
            }
        }
    }
});
