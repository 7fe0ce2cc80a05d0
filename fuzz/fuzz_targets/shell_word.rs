//! The shell-word lexer on arbitrary words, with every option combination.
#![no_main]

use kiln_dockerfile::shell::{EnvList, Lexer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let word = kiln_dockerfile::decode_lossless(rest);
    let env = EnvList::from_pairs([("PWD", "/home"), ("E", ""), ("S", "a b  c"), ("P", "x*y/z.tar.gz")]);
    let lexer = Lexer {
        escape: if flags & 1 == 0 { '\\' } else { '`' },
        raw_quotes: flags & 2 != 0,
        raw_escapes: flags & 4 != 0,
        skip_process_quotes: flags & 8 != 0,
        skip_unset_env: flags & 16 != 0,
    };
    let _ = lexer.process(&word, &env);
});
