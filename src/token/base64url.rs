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

/// Encodes `input` into `out`, which must be exactly [`encoded_len`] bytes long.
/// Six bytes become eight characters through four lookups of character pairs.
pub(super) fn encode_into(input: &[u8], out: &mut [u8]) {
    debug_assert_eq!(out.len(), encoded_len(input.len()));
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
/// One table lookup per character.
pub(super) fn decode(text: &[u8], buf: &mut [u8]) -> Option<usize> {
    let len = decoded_len(text.len())?;
    let out = buf.get_mut(..len)?;
    let mut invalid = 0;
    let mut groups = text.chunks_exact(4);
    let mut outs = out.chunks_exact_mut(3);
    for (chars, bytes) in (&mut groups).zip(&mut outs) {
        let bits = SHIFTED[0][usize::from(chars[0])]
            | SHIFTED[1][usize::from(chars[1])]
            | SHIFTED[2][usize::from(chars[2])]
            | SHIFTED[3][usize::from(chars[3])];
        invalid |= bits;
        bytes.copy_from_slice(&bits.to_be_bytes()[1..]);
    }
    // Two or three characters left: one or two bytes, and bits that must be zero.
    let mut bits = 0;
    for (i, &c) in groups.remainder().iter().enumerate() {
        bits |= SHIFTED[i][usize::from(c)];
    }
    invalid |= bits;
    let [_, first, second, third] = bits.to_be_bytes();
    let rest = outs.into_remainder();
    match text.len() % 4 {
        2 if second == 0 => rest[0] = first,
        3 if third == 0 => rest.copy_from_slice(&[first, second]),
        0 => {}
        _ => return None,
    }
    (invalid >> 31 == 0).then_some(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    proptest::proptest! {
        #[test]
        fn encoder_matches_the_base64_crate(input in proptest::collection::vec(0u8.., 0..80)) {
            let expected = URL_SAFE_NO_PAD.encode(&input);
            let mut out = vec![0u8; encoded_len(input.len())];
            encode_into(&input, &mut out);
            proptest::prop_assert_eq!(out, expected.into_bytes());
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
    fn lengths() {
        assert_eq!(encoded_len(32), 43);
        assert_eq!(decoded_len(43), Some(32));
        assert_eq!(decoded_len(5), None);
        assert_eq!(decoded_len(0), Some(0));
        let mut small = [0u8; 2];
        assert_eq!(decode(b"AAAA", &mut small), None, "buffer too small");
    }
}
