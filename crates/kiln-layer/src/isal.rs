//! Gzip level 1 through Intel's ISA-L (igzip): the one place kiln-layer calls C by hand.
//!
//! Level 1 asks for the fastest gzip. ISA-L's level 1 compresses the Debian base (170 MB) in
//! 0.36 s on one core, against libdeflate's 0.74 s. It writes 67.9 MB: 5.5% more than
//! libdeflate's level 1, 1.8% more than GNU gzip -1, and 2.6% fewer than skopeo's level 1.
//! Every other level stays with libdeflate, whose bytes are fewer.
//!
//! ISA-L picks its code for the CPU it runs on. At level 1 its x86-64 code for SSE4.2, AVX,
//! AVX2 and AVX-512 comes from one source and hashes with the CRC32 instruction, so their
//! members are the same bytes (checked under `qemu-x86_64 -cpu Nehalem` and `-cpu Haswell`
//! against an AVX-512 machine). Its portable C code hashes otherwise and gives other bytes. So
//! a level-1 push is byte-for-byte reproducible across x86-64 machines with SSE4.2, not across
//! architectures. (At level 3 the x86-64 variants differ too, which is one reason kiln does
//! not use ISA-L's other levels.)

use isal_sys::igzip_lib as ffi;

/// One thread's level-1 compressor: the stream state (80 KiB, so it lives on the heap) and
/// the level's work buffer (276 KiB), both reused for every member the thread makes.
pub(crate) struct Level1 {
    stream: Box<ffi::isal_zstream>,
    level_buf: Vec<u8>,
}

/// Why ISA-L made no member of a block.
#[derive(Debug)]
pub(crate) struct IsalError(i32);

impl std::fmt::Display for IsalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "isal_deflate_stateless returned {}", self.0)
    }
}

impl std::error::Error for IsalError {}

impl Level1 {
    pub(crate) fn new() -> Self {
        // SAFETY: `isal_zstream` is a C struct of integers, raw pointers and arrays of them,
        // for which all zero bytes is a valid value (null pointers, zero counts).
        let stream = Box::new(unsafe { std::mem::zeroed::<ffi::isal_zstream>() });
        Level1 {
            stream,
            level_buf: vec![0; ffi::ISAL_DEF_LVL1_DEFAULT as usize],
        }
    }

    /// The most bytes a member of `len` input bytes can take: ISA-L falls back to stored
    /// blocks (5 bytes of header per 64 KiB) when compressing would give more, and a gzip
    /// member adds a 10-byte header and an 8-byte trailer.
    pub(crate) fn bound(len: usize) -> usize {
        len + len.div_ceil(0xffff).max(1) * 5 + 18
    }

    /// Compresses `data` (at most 4 GiB) into one gzip member at the start of `out`, which
    /// must hold [`Level1::bound`] bytes; returns the member's length.
    pub(crate) fn gzip_member(&mut self, data: &[u8], out: &mut [u8]) -> Result<usize, IsalError> {
        let (Ok(avail_in), Ok(avail_out)) = (u32::try_from(data.len()), u32::try_from(out.len()))
        else {
            return Err(IsalError(ffi::ISAL_INVALID_OPERATION));
        };
        let stream = &mut *self.stream;
        // SAFETY: `stream` is a valid, exclusively borrowed isal_zstream; the call only resets
        // its fields.
        unsafe { ffi::isal_deflate_stateless_init(stream) };
        stream.level = 1;
        stream.level_buf = self.level_buf.as_mut_ptr();
        stream.level_buf_size = self.level_buf.len() as u32;
        stream.gzip_flag = ffi::IGZIP_GZIP as u16;
        stream.flush = ffi::NO_FLUSH as u16;
        stream.end_of_stream = 1;
        // ISA-L takes `next_in` as `*mut` but only reads through it.
        stream.next_in = data.as_ptr().cast_mut();
        stream.avail_in = avail_in;
        stream.next_out = out.as_mut_ptr();
        stream.avail_out = avail_out;
        // SAFETY: the stream points at `data` (read, `avail_in` bytes), `out` (written, at most
        // `avail_out` bytes) and `level_buf` (its size given), all borrowed for this call and
        // not touched by anything else during it; ISA-L keeps no pointer past the call (the
        // next use re-initialises the stream).
        let ret = unsafe { ffi::isal_deflate_stateless(stream) };
        if ret != ffi::COMP_OK as i32 || stream.avail_in != 0 {
            return Err(IsalError(ret));
        }
        Ok(stream.total_out as usize)
    }
}

// SAFETY: the raw pointers in the stream only ever point into buffers borrowed for the length
// of one `gzip_member` call; between calls a `Level1` owns nothing another thread could race on.
unsafe impl Send for Level1 {}

#[cfg(test)]
mod tests {
    use super::*;

    fn gunzip(member: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(member), &mut out)
            .expect("a gzip member");
        out
    }

    #[test]
    fn a_level_1_member_gunzips_to_its_block_and_fits_the_bound() {
        let mut level1 = Level1::new();
        let text: Vec<u8> = (0..300_000u32)
            .flat_map(|i| format!("line {} of {}\n", i % 977, i % 13).into_bytes())
            .collect();
        // Bytes no deflate can shrink: ISA-L must fall back to stored blocks within the bound.
        let mut noise = Vec::with_capacity(1 << 20);
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        while noise.len() < 1 << 20 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            noise.extend_from_slice(&x.to_le_bytes());
        }
        for data in [&text[..], &noise[..], b"", b"a"] {
            let mut out = vec![0; Level1::bound(data.len())];
            let n = level1.gzip_member(data, &mut out).expect("a member");
            assert!(n <= out.len());
            assert_eq!(gunzip(&out[..n]), data, "member of {} bytes", data.len());
        }
        let mut out = vec![0; Level1::bound(text.len())];
        let n = level1.gzip_member(&text, &mut out).expect("a member");
        assert!(n < text.len() / 4, "{n} bytes for {} of text", text.len());
    }

    #[test]
    fn an_output_buffer_below_the_bound_is_an_error_not_a_short_member() {
        let data = vec![7u8; 4096];
        let mut out = vec![0; 4];
        assert!(Level1::new().gzip_member(&data, &mut out).is_err());
    }
}
