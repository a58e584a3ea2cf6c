//! Unpadded base64url (RFC 4648 §5), as JWS compact serialization uses it (RFC 7515 §2).
//!
//! Decoding is strict: no padding, alphabet characters only, and the unused low bits of
//! the last character zero, so every byte string has exactly one accepted encoding. Both
//! directions are table driven and write into caller-provided buffers; the tests check
//! them against the base64 crate's `URL_SAFE_NO_PAD`.

/// The base64url alphabet.
pub(super) const ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The length of unpadded base64 for `len` bytes.
pub(super) const fn encoded_len(len: usize) -> usize {
    (len * 4).div_ceil(3)
}

/// The number of bytes `len` characters decode to, or `None` for a length no canonical
/// encoding has (one character left over after the groups of four).
pub(super) const fn decoded_len(len: usize) -> Option<usize> {
    match len % 4 {
        1 => None,
        tail => Some(len / 4 * 3 + tail.saturating_sub(1)),
    }
}

/// Encodes `input` into `out`, which must be exactly [`encoded_len`] bytes long: twelve
/// bytes at a time where the CPU has SSSE3, then as [`encode_scalar`].
pub(super) fn encode_into(input: &[u8], out: &mut [u8]) {
    debug_assert_eq!(out.len(), encoded_len(input.len()));
    let done = simd::encode_blocks(input, out);
    encode_scalar(&input[done..], &mut out[done / 3 * 4..]);
}

/// Six bytes become eight characters through four lookups of character pairs.
fn encode_scalar(input: &[u8], out: &mut [u8]) {
    let mut groups = input.chunks_exact(6);
    let mut outs = out.chunks_exact_mut(8);
    for (bytes, chars) in (&mut groups).zip(&mut outs) {
        let mut word = [0u8; 8];
        word[..6].copy_from_slice(bytes);
        let bits = u64::from_be_bytes(word);
        for (i, pair) in chars.chunks_exact_mut(2).enumerate() {
            pair.copy_from_slice(&CHAR_PAIRS[(bits >> (52 - 12 * i)) as usize & 0xfff]);
        }
    }
    // Up to five bytes left: three at a time, then one or two.
    let out = outs.into_remainder();
    for (bytes, chars) in groups.remainder().chunks(3).zip(out.chunks_mut(4)) {
        let byte = |i: usize| u32::from(bytes.get(i).copied().unwrap_or(0));
        let bits = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        for (i, c) in chars.iter_mut().enumerate() {
            *c = ALPHABET[(bits >> (18 - 6 * i)) as usize & 63];
        }
    }
}

/// The two base64url characters of every 12-bit value.
static CHAR_PAIRS: [[u8; 2]; 4096] = {
    let mut pairs = [[0; 2]; 4096];
    let mut i = 0;
    while i < 4096 {
        pairs[i] = [ALPHABET[i >> 6], ALPHABET[i & 63]];
        i += 1;
    }
    pairs
};

/// For each byte, its base64url value shifted to its place in a group of four characters
/// (18, 12, 6, 0 bits); bit 31 marks a byte outside the alphabet.
static SHIFTED: [[u32; 256]; 4] = [shifted(18), shifted(12), shifted(6), shifted(0)];

const fn shifted(shift: u32) -> [u32; 256] {
    let mut table = [1 << 31; 256];
    let mut i = 0;
    while i < 64 {
        table[ALPHABET[i] as usize] = (i as u32) << shift;
        i += 1;
    }
    table
}

/// Strict decoding of `text` into the start of `buf`; returns the decoded length, or
/// `None` when `text` is not canonical unpadded base64url or `buf` is too small.
/// Sixteen characters at a time where the CPU has SSSE3 (while `buf` has room for a
/// 16-byte store), then one table lookup per character.
pub(super) fn decode(text: &[u8], buf: &mut [u8]) -> Option<usize> {
    let len = decoded_len(text.len())?;
    if buf.len() < len {
        return None;
    }
    let whole = text.len() / 4 * 4;
    let (done, valid) = simd::decode_blocks(&text[..whole], buf);
    valid.then_some(())?;
    decode_scalar(&text[done..], &mut buf[done / 4 * 3..len]).then_some(len)
}

/// Decodes one character at a time into `out`, exactly as long as the result; false
/// when `text` is not canonical.
fn decode_scalar(text: &[u8], out: &mut [u8]) -> bool {
    let whole = text.len() / 4 * 4;
    let (groups, tail) = text.split_at(whole);
    let (group_out, tail_out) = out.split_at_mut(whole / 4 * 3);
    let invalid = decode_groups(groups, group_out);
    invalid >> 31 == 0 && decode_tail(tail, tail_out)
}

/// Block decoding with SIMD instructions, where the CPU has them.
mod simd {
    /// Decodes blocks of 16 characters from the start of `text` (whole groups of four)
    /// into `buf`, 12 bytes each, while a block remains and `buf` has room for a 16-byte
    /// store; returns the characters done (a multiple of 16) and whether all of them
    /// were in the alphabet. With AVX2, two blocks at a time first; without SSSE3, does
    /// nothing.
    #[cfg(target_arch = "x86_64")]
    pub(super) fn decode_blocks(text: &[u8], buf: &mut [u8]) -> (usize, bool) {
        if text.len() < 16 || !std::arch::is_x86_feature_detected!("ssse3") {
            return (0, true);
        }
        let (mut done, mut valid) = (0, true);
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            (done, valid) = unsafe { decode_blocks_avx2(text, buf) };
        }
        // SAFETY: the CPU has SSSE3, checked above.
        let (more, rest_valid) =
            unsafe { decode_blocks_ssse3(&text[done..], &mut buf[done / 4 * 3..]) };
        (done + more, valid && rest_valid)
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub(super) fn decode_blocks(_text: &[u8], _buf: &mut [u8]) -> (usize, bool) {
        (0, true)
    }

    /// Encodes blocks of 12 bytes from the start of `input` into `out`, 16 characters
    /// each, while 16 bytes of `input` can be loaded and 16 characters stored; returns
    /// the bytes done (a multiple of 12). With AVX2, two blocks at a time after the
    /// first; without SSSE3, does nothing.
    #[cfg(target_arch = "x86_64")]
    pub(super) fn encode_blocks(input: &[u8], out: &mut [u8]) -> usize {
        if input.len() < 16 || !std::arch::is_x86_feature_detected!("ssse3") {
            return 0;
        }
        // SAFETY: the CPU has SSSE3, checked just above.
        let mut done = unsafe { encode_blocks_ssse3(&input[..16], out) };
        if std::arch::is_x86_feature_detected!("avx2") {
            // From 4 bytes before the second block (see `encode_blocks_avx2`).
            // SAFETY: the CPU has AVX2, checked just above.
            done += unsafe { encode_blocks_avx2(&input[done - 4..], &mut out[done / 3 * 4..]) };
        }
        // SAFETY: the CPU has SSSE3, checked above.
        done + unsafe { encode_blocks_ssse3(&input[done..], &mut out[done / 3 * 4..]) }
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub(super) fn encode_blocks(_input: &[u8], _out: &mut [u8]) -> usize {
        0
    }

    /// [`encode_blocks`] with SSSE3. Per block: each group of three bytes `b0 b1 b2` is
    /// laid out as `b1 b0 b2 b1` in a 32-bit lane (`pshufb`), its four 6-bit values are
    /// shifted into one byte each by 16-bit multiplies (`pmulhuw` for the first and third,
    /// `pmullw` for the second and fourth), and each value gets the offset to its
    /// character from a 16-byte table indexed by its range (`pshufb`).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "ssse3")]
    fn encode_blocks_ssse3(input: &[u8], out: &mut [u8]) -> usize {
        use std::arch::x86_64::*;
        let spread = _mm_setr_epi8(1, 0, 2, 1, 4, 3, 5, 4, 7, 6, 8, 7, 10, 9, 11, 10);
        let first_third = _mm_set1_epi32(0x0fc0_fc00);
        let first_third_shift = _mm_set1_epi32(0x0400_0040);
        let second_fourth = _mm_set1_epi32(0x003f_03f0);
        let second_fourth_shift = _mm_set1_epi32(0x0100_0010);
        // Offsets by range: 0 for 26..=51 ('a'..), 1..=10 for 52..=61 ('0'..), 11 for 62
        // ('-'), 12 for 63 ('_'), 13 for 0..=25 ('A'..).
        let offsets = _mm_setr_epi8(
            71, -4, -4, -4, -4, -4, -4, -4, -4, -4, -4, -17, 32, 65, 0, 0,
        );
        let (mut done, mut written) = (0, 0);
        while done + 16 <= input.len() && written + 16 <= out.len() {
            // SAFETY: `input[done..done + 16]` is in bounds (the loop condition); the last
            // 4 bytes are loaded but not used.
            let bytes = unsafe { _mm_loadu_si128(input.as_ptr().add(done).cast()) };
            let lanes = _mm_shuffle_epi8(bytes, spread);
            let ac = _mm_mulhi_epu16(_mm_and_si128(lanes, first_third), first_third_shift);
            let bd = _mm_mullo_epi16(_mm_and_si128(lanes, second_fourth), second_fourth_shift);
            let values = _mm_or_si128(ac, bd);
            let range = _mm_subs_epu8(values, _mm_set1_epi8(51));
            let upper = _mm_cmpgt_epi8(_mm_set1_epi8(26), values);
            let range = _mm_or_si128(range, _mm_and_si128(upper, _mm_set1_epi8(13)));
            let chars = _mm_add_epi8(values, _mm_shuffle_epi8(offsets, range));
            // SAFETY: `out[written..written + 16]` is in bounds (the loop condition).
            unsafe { _mm_storeu_si128(out.as_mut_ptr().add(written).cast(), chars) };
            done += 12;
            written += 16;
        }
        done
    }

    /// Two blocks of [`encode_blocks_ssse3`] at a time, one per 128-bit lane, from
    /// `input[4..]`: each 32-byte load starts 4 bytes before its first block, so that the
    /// low lane holds that block at its bytes 4..16 and the high lane the next block at
    /// its bytes 0..12 (a lane's shuffle reaches only its own 16 bytes). Returns the
    /// bytes of `input[4..]` done (a multiple of 24), written to `out` 32 characters a
    /// time, while 32 bytes can be loaded and 32 characters stored.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn encode_blocks_avx2(input: &[u8], out: &mut [u8]) -> usize {
        use std::arch::x86_64::*;
        let spread = _mm256_setr_epi8(
            5, 4, 6, 5, 8, 7, 9, 8, 11, 10, 12, 11, 14, 13, 15, 14, //
            1, 0, 2, 1, 4, 3, 5, 4, 7, 6, 8, 7, 10, 9, 11, 10,
        );
        let first_third = _mm256_set1_epi32(0x0fc0_fc00);
        let first_third_shift = _mm256_set1_epi32(0x0400_0040);
        let second_fourth = _mm256_set1_epi32(0x003f_03f0);
        let second_fourth_shift = _mm256_set1_epi32(0x0100_0010);
        // The offsets of `encode_blocks_ssse3`, in both lanes.
        let offsets = _mm256_setr_epi8(
            71, -4, -4, -4, -4, -4, -4, -4, -4, -4, -4, -17, 32, 65, 0, 0, //
            71, -4, -4, -4, -4, -4, -4, -4, -4, -4, -4, -17, 32, 65, 0, 0,
        );
        let (mut at, mut written) = (0, 0);
        while at + 32 <= input.len() && written + 32 <= out.len() {
            // SAFETY: `input[at..at + 32]` is in bounds (the loop condition).
            let bytes = unsafe { _mm256_loadu_si256(input.as_ptr().add(at).cast()) };
            let lanes = _mm256_shuffle_epi8(bytes, spread);
            let ac = _mm256_mulhi_epu16(_mm256_and_si256(lanes, first_third), first_third_shift);
            let bd =
                _mm256_mullo_epi16(_mm256_and_si256(lanes, second_fourth), second_fourth_shift);
            let values = _mm256_or_si256(ac, bd);
            let range = _mm256_subs_epu8(values, _mm256_set1_epi8(51));
            let upper = _mm256_cmpgt_epi8(_mm256_set1_epi8(26), values);
            let range = _mm256_or_si256(range, _mm256_and_si256(upper, _mm256_set1_epi8(13)));
            let chars = _mm256_add_epi8(values, _mm256_shuffle_epi8(offsets, range));
            // SAFETY: `out[written..written + 32]` is in bounds (the loop condition).
            unsafe { _mm256_storeu_si256(out.as_mut_ptr().add(written).cast(), chars) };
            at += 24;
            written += 32;
        }
        at
    }

    /// The tables of the block decoders, one 16-byte lane each (made where SSSE3 is
    /// enabled, as the decoders that use them are).
    #[cfg(target_arch = "x86_64")]
    #[derive(Clone, Copy)]
    struct DecodeTables {
        valid_by_low: std::arch::x86_64::__m128i,
        bit_of_high: std::arch::x86_64::__m128i,
        offset_by_high: std::arch::x86_64::__m128i,
        underscore: std::arch::x86_64::__m128i,
        underscore_fix: std::arch::x86_64::__m128i,
        nibble: std::arch::x86_64::__m128i,
        pair_weights: std::arch::x86_64::__m128i,
        quad_weights: std::arch::x86_64::__m128i,
        order: std::arch::x86_64::__m128i,
    }

    #[cfg(target_arch = "x86_64")]
    impl DecodeTables {
        #[target_feature(enable = "ssse3")]
        fn new() -> DecodeTables {
            use std::arch::x86_64::*;
            // Bit h set: high nibble h is valid with this low nibble.
            let valid_by_low = _mm_setr_epi8(
                0xa8u8 as i8, // 0 P p
                0xf8u8 as i8, // 1 A Q a q
                0xf8u8 as i8,
                0xf8u8 as i8,
                0xf8u8 as i8,
                0xf8u8 as i8,
                0xf8u8 as i8,
                0xf8u8 as i8,
                0xf8u8 as i8,
                0xf8u8 as i8, // 9 I Y i y
                0xf0u8 as i8, // J Z j z
                0x50,         // K k
                0x50,         // L l
                0x54,         // - M m
                0x50,         // N n
                0x70,         // O _ o
            );
            let bit_of_high = _mm_setr_epi8(1, 2, 4, 8, 16, 32, 64, -128, 0, 0, 0, 0, 0, 0, 0, 0);
            let offset_by_high =
                _mm_setr_epi8(0, 0, 17, 4, -65, -65, -71, -71, 0, 0, 0, 0, 0, 0, 0, 0);
            let underscore = _mm_set1_epi8(b'_' as i8);
            // '_' is 95 and must become 63; its high nibble's offset makes it 30.
            let underscore_fix = _mm_set1_epi8(33);
            let nibble = _mm_set1_epi8(0x0f);
            let pair_weights = _mm_set1_epi16(0x0140);
            let quad_weights = _mm_set1_epi32(0x0001_1000);
            let order = _mm_setr_epi8(2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1);
            DecodeTables {
                valid_by_low,
                bit_of_high,
                offset_by_high,
                underscore,
                underscore_fix,
                nibble,
                pair_weights,
                quad_weights,
                order,
            }
        }
    }

    /// [`decode_blocks`] with SSSE3. Per block: each character's high nibble picks, from
    /// a 16-byte table, a bit that the low nibble's table entry must have (so only the 64
    /// alphabet characters pass), and the offset that turns it into its 6-bit value (`_`
    /// is the one character its high nibble does not decide); the values are joined in
    /// pairs (`maddubs`: 12 bits), pairs of pairs (`madd`: 24 bits), and the 12 bytes
    /// moved into order (`pshufb`).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "ssse3")]
    fn decode_blocks_ssse3(text: &[u8], buf: &mut [u8]) -> (usize, bool) {
        use std::arch::x86_64::*;
        let DecodeTables {
            valid_by_low,
            bit_of_high,
            offset_by_high,
            underscore,
            underscore_fix,
            nibble,
            pair_weights,
            quad_weights,
            order,
        } = DecodeTables::new();
        let mut bad = _mm_setzero_si128();
        let (mut done, mut written) = (0, 0);
        while done + 16 <= text.len() && written + 16 <= buf.len() {
            // SAFETY: `text[done..done + 16]` is in bounds (the loop condition); an
            // unaligned load reads exactly those 16 bytes.
            let chars = unsafe { _mm_loadu_si128(text.as_ptr().add(done).cast()) };
            let high = _mm_and_si128(_mm_srli_epi32(chars, 4), nibble);
            let low = _mm_and_si128(chars, nibble);
            let allowed = _mm_and_si128(
                _mm_shuffle_epi8(valid_by_low, low),
                _mm_shuffle_epi8(bit_of_high, high),
            );
            bad = _mm_or_si128(bad, _mm_cmpeq_epi8(allowed, _mm_setzero_si128()));
            let fix = _mm_and_si128(_mm_cmpeq_epi8(chars, underscore), underscore_fix);
            let offset = _mm_add_epi8(_mm_shuffle_epi8(offset_by_high, high), fix);
            let values = _mm_add_epi8(chars, offset);
            let pairs = _mm_maddubs_epi16(values, pair_weights);
            let quads = _mm_madd_epi16(pairs, quad_weights);
            let bytes = _mm_shuffle_epi8(quads, order);
            // SAFETY: `buf[written..written + 16]` is in bounds (the loop condition). Its
            // last 4 bytes are overwritten next (by a block or the scalar decoder), or lie
            // past the decoded length.
            unsafe { _mm_storeu_si128(buf.as_mut_ptr().add(written).cast(), bytes) };
            done += 16;
            written += 12;
        }
        (done, _mm_movemask_epi8(bad) == 0)
    }

    /// Two blocks of [`decode_blocks_ssse3`] at a time, one per 128-bit lane, with the
    /// same tables in both; each lane's 12 bytes are then moved together
    /// (`vpermd`) and stored with one 32-byte store (its last 8 bytes are overwritten
    /// next or lie past the decoded length). Returns the characters done (a multiple of
    /// 32) and whether all were in the alphabet, while 32 characters can be loaded and
    /// `buf` has room for the store.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn decode_blocks_avx2(text: &[u8], buf: &mut [u8]) -> (usize, bool) {
        use std::arch::x86_64::*;
        let t = DecodeTables::new();
        let wide = |x| _mm256_broadcastsi128_si256(x);
        let (valid_by_low, bit_of_high, offset_by_high) = (
            wide(t.valid_by_low),
            wide(t.bit_of_high),
            wide(t.offset_by_high),
        );
        let (underscore, underscore_fix, nibble) =
            (wide(t.underscore), wide(t.underscore_fix), wide(t.nibble));
        let (pair_weights, quad_weights, order) =
            (wide(t.pair_weights), wide(t.quad_weights), wide(t.order));
        // The low lane's first three words, then the high lane's.
        let together = _mm256_setr_epi32(0, 1, 2, 4, 5, 6, 3, 7);
        let mut bad = _mm256_setzero_si256();
        let (mut done, mut written) = (0, 0);
        while done + 32 <= text.len() && written + 32 <= buf.len() {
            // SAFETY: `text[done..done + 32]` is in bounds (the loop condition).
            let chars = unsafe { _mm256_loadu_si256(text.as_ptr().add(done).cast()) };
            let high = _mm256_and_si256(_mm256_srli_epi32(chars, 4), nibble);
            let low = _mm256_and_si256(chars, nibble);
            let allowed = _mm256_and_si256(
                _mm256_shuffle_epi8(valid_by_low, low),
                _mm256_shuffle_epi8(bit_of_high, high),
            );
            bad = _mm256_or_si256(bad, _mm256_cmpeq_epi8(allowed, _mm256_setzero_si256()));
            let fix = _mm256_and_si256(_mm256_cmpeq_epi8(chars, underscore), underscore_fix);
            let offset = _mm256_add_epi8(_mm256_shuffle_epi8(offset_by_high, high), fix);
            let values = _mm256_add_epi8(chars, offset);
            let pairs = _mm256_maddubs_epi16(values, pair_weights);
            let quads = _mm256_madd_epi16(pairs, quad_weights);
            let bytes = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(quads, order), together);
            // SAFETY: `buf[written..written + 32]` is in bounds (the loop condition).
            unsafe { _mm256_storeu_si256(buf.as_mut_ptr().add(written).cast(), bytes) };
            done += 32;
            written += 24;
        }
        (done, _mm256_movemask_epi8(bad) == 0)
    }
}

/// Decodes whole groups of four characters (`text.len()` a multiple of 4) into `out`
/// (exactly 3 bytes a group); returns a value with bit 31 set if any character is
/// outside the alphabet.
fn decode_groups(text: &[u8], out: &mut [u8]) -> u32 {
    let mut invalid = 0;
    for (chars, bytes) in text.chunks_exact(4).zip(out.chunks_exact_mut(3)) {
        let bits = SHIFTED[0][usize::from(chars[0])]
            | SHIFTED[1][usize::from(chars[1])]
            | SHIFTED[2][usize::from(chars[2])]
            | SHIFTED[3][usize::from(chars[3])];
        invalid |= bits;
        bytes.copy_from_slice(&bits.to_be_bytes()[1..]);
    }
    invalid
}

/// Decodes the last zero, two or three characters into `out` (0, 1 or 2 bytes); false
/// when they are not canonical (outside the alphabet, or bits set past the last byte).
fn decode_tail(text: &[u8], out: &mut [u8]) -> bool {
    let mut bits = 0;
    for (i, &c) in text.iter().enumerate() {
        bits |= SHIFTED[i][usize::from(c)];
    }
    let [_, first, second, third] = bits.to_be_bytes();
    let canonical = match (text.len(), &mut *out) {
        (0, []) => true,
        (2, [a]) if second == 0 => {
            *a = first;
            true
        }
        (3, [a, b]) if third == 0 => {
            (*a, *b) = (first, second);
            true
        }
        _ => false,
    };
    canonical && bits >> 31 == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    proptest::proptest! {
        #[test]
        fn encoders_match_the_base64_crate(input in proptest::collection::vec(0u8.., 0..300)) {
            let expected = URL_SAFE_NO_PAD.encode(&input).into_bytes();
            let mut out = vec![0u8; encoded_len(input.len())];
            encode_into(&input, &mut out);
            proptest::prop_assert_eq!(&out, &expected);
            let mut scalar = vec![0u8; encoded_len(input.len())];
            encode_scalar(&input, &mut scalar);
            proptest::prop_assert_eq!(&scalar, &expected);
        }

        #[test]
        fn decoder_matches_the_strict_base64_crate(
            text in "[A-Za-z0-9_-]{0,70}|[A-Za-z0-9_+/=. \n-]{0,70}|\\PC{0,20}",
            cut in 0usize..4,
        ) {
            let text = &text.as_bytes()[..text.len().saturating_sub(cut)];
            let mut ours = [0u8; 64];
            let mut theirs = [0u8; 64];
            let got = decode(text, &mut ours);
            let want = URL_SAFE_NO_PAD.decode_slice(text, &mut theirs).ok();
            proptest::prop_assert_eq!(got, want);
            if let Some(len) = got {
                proptest::prop_assert_eq!(&ours[..len], &theirs[..len]);
            }
        }

        #[test]
        fn both_decoders_match_the_strict_base64_crate(
            bytes in proptest::collection::vec(0u8.., 0..300),
            flaw in proptest::option::of((0usize..400, "[^A-Za-z0-9_-]")),
            last in proptest::option::of(0usize..64),
            spare in 0usize..20,
        ) {
            let mut text = URL_SAFE_NO_PAD.encode(&bytes).into_bytes();
            if let (Some(last), Some(end)) = (last, text.last_mut()) {
                *end = ALPHABET[last];
            }
            if let Some((at, bad)) = flaw {
                let at = at % (text.len() + 1);
                text.splice(at..at, bad.bytes());
            }
            let want = URL_SAFE_NO_PAD.decode(&text).ok();
            let len = decoded_len(text.len());
            let mut buf = vec![0xee; len.unwrap_or(0) + spare];
            let got = decode(&text, &mut buf).map(|n| buf[..n].to_vec());
            proptest::prop_assert_eq!(&got, &want);
            if let Some(len) = len {
                let mut out = vec![0xee; len];
                let scalar = decode_scalar(&text, &mut out).then_some(out);
                proptest::prop_assert_eq!(&scalar, &want);
            }
        }

        #[test]
        fn decoder_refuses_every_non_canonical_last_character(bytes: [u8; 32], last in 0usize..64) {
            let mut text = [0u8; 43];
            encode_into(&bytes, &mut text);
            text[42] = ALPHABET[last];
            let mut ours = [0u8; 32];
            let got = decode(&text, &mut ours).map(|_| ours.to_vec());
            proptest::prop_assert_eq!(got, URL_SAFE_NO_PAD.decode(text).ok());
        }
    }

    #[test]
    fn blocks_judge_every_byte_at_every_place() {
        if cfg!(target_arch = "x86_64") && std::arch::is_x86_feature_detected!("ssse3") {
            let done = simd::decode_blocks(&[b'A'; 32], &mut [0; 28]);
            assert_eq!(done, (32, true), "the SSSE3 path runs here");
        }
        for len in [16, 22, 43] {
            for byte in 0..=255u8 {
                for at in 0..len {
                    let mut text = b"AZaz09-_QqRrSsTtUuVvWwXxYyZz0123456789-_AbQ".to_vec();
                    text.truncate(len);
                    text[at] = byte;
                    let mut ours = [0u8; 64];
                    let mut theirs = [0u8; 64];
                    let got = decode(&text, &mut ours[..decoded_len(len).unwrap_or(0)])
                        .map(|n| ours[..n].to_vec());
                    let want = URL_SAFE_NO_PAD
                        .decode_slice(&text, &mut theirs)
                        .ok()
                        .map(|n| theirs[..n].to_vec());
                    assert_eq!(got, want, "{byte:#x} at {at} of {len}");
                }
            }
        }
    }

    #[test]
    fn blocks_encode_every_value_at_every_place() {
        if cfg!(target_arch = "x86_64") && std::arch::is_x86_feature_detected!("ssse3") {
            assert_eq!(
                simd::encode_blocks(&[0; 28], &mut [0; 40]),
                24,
                "SSSE3 runs here"
            );
        }
        for byte in 0..=255u8 {
            for at in 0..32 {
                let mut input = [0x5au8; 32];
                input[at] = byte;
                let mut out = [0u8; 43];
                encode_into(&input, &mut out);
                assert_eq!(
                    &out[..],
                    URL_SAFE_NO_PAD.encode(input).as_bytes(),
                    "{byte:#x}@{at}"
                );
            }
        }
    }

    #[test]
    fn lengths() {
        assert_eq!(encoded_len(32), 43);
        assert_eq!(decoded_len(43), Some(32));
        assert_eq!(decoded_len(5), None);
        assert_eq!(decoded_len(0), Some(0));
        let mut small = [0u8; 2];
        assert_eq!(decode(b"AAAA", &mut small), None, "buffer too small");
    }
}
