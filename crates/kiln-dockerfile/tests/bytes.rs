//! BuildKit scans flags and the HEALTHCHECK type byte by byte and reads files as bytes; its
//! dump then shows cut characters and invalid UTF-8 as `\xNN`. These dumps were checked
//! against BuildKit's parser.

use kiln_dockerfile::{decode_lossless, encode_lossless, parse};

fn dump(bytes: &[u8]) -> String {
    parse(&decode_lossless(bytes)).unwrap().dump()
}

#[test]
fn healthcheck_type_cut_at_a_byte_that_go_takes_for_a_space() {
    // U+1F170 is F0 9F 85 B0; 0x85 is U+0085 (NEL) to a byte-wise scan.
    assert_eq!(
        dump("HEALTHCHECK  🅰\n".as_bytes()),
        "(healthcheck \"\\xf0\\x9f\" \"\\xb0\")\n"
    );
}

#[test]
fn flag_words_are_read_byte_by_byte() {
    // à is C3 A0; 0xA0 is NBSP to a byte-wise scan, 0xC3 becomes Ã.
    assert_eq!(
        dump("COPY --from=à x y\nFROM a\n".as_bytes()),
        "(copy [\"--from=Ã\"] \"x\" \"y\")\n(from \"a\")\n"
    );
    assert_eq!(
        dump("RUN --mount=x🅰 echo\n".as_bytes()),
        "(run [\"--mount=xð\\u009f\"] \"\\xb0 echo\")\n"
    );
}

#[test]
fn invalid_utf8_is_kept_and_dumped_as_bytes() {
    assert_eq!(
        dump(b"FROM a\nRUN echo \xff\xc3\n"),
        "(from \"a\")\n(run \"echo \\xff\\xc3\")\n"
    );
    let text = decode_lossless(b"FROM a\nCOPY <<EOF /x\n\xff\xfe\nEOF\n");
    let parsed = parse(&text).unwrap();
    assert_eq!(
        encode_lossless(&parsed.nodes[1].heredocs[0].content),
        b"\xff\xfe\n"
    );
}
