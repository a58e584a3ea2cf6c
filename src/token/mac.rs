//! HMAC-SHA256 (RFC 2104, as HS256 uses it: RFC 7518 §3.2), keyed once and cloned per
//! message.
//!
//! Keying hashes the key's inner and outer pads; [`hmac_sha256`] does that once and every
//! message then starts from a clone of the keyed state. The token code and the CSRF
//! tokens of `auth` both key their MACs here. [`KeyedMac`] goes one step further for our
//! own tokens, whose first 64 bytes are always the same for a key.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// An HMAC-SHA256 state: keyed, then fed with `update`, then finalized or verified.
pub type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256 keyed with `secret` (any length; RFC 2104 §3 hashes keys longer than the
/// 64-byte block). Key once, then `clone()` the state for each message.
pub fn hmac_sha256(secret: &[u8]) -> HmacSha256 {
    match <HmacSha256 as KeyInit>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

/// The SHA-256 block size: the unit the MAC absorbs its message in.
pub(super) const BLOCK: usize = 64;

/// A pre-keyed HMAC, and the same state with the first 64 bytes of our own tokens already
/// absorbed: our header, the dot, and the start of the payload (its leading `{"sub"`
/// encodes to `eyJzdWIi`). A message that starts with that block skips one of the ~6
/// SHA-256 compressions a token costs.
#[derive(Clone)]
pub(super) struct KeyedMac {
    mac: HmacSha256,
    first_block: [u8; BLOCK],
    after_first_block: HmacSha256,
}

impl KeyedMac {
    /// Keys the MAC with `secret`; `header_b64` is the base64url of the header our
    /// tokens carry under this key.
    pub(super) fn new(secret: &[u8], header_b64: &str) -> KeyedMac {
        let mac = hmac_sha256(secret);
        let mut first_block = [0u8; BLOCK];
        // Our header encodes to 59 characters, so the block ends 4 characters into the
        // payload. Should a block not fill (a shorter header), the zero block matches no
        // token (base64url has no NUL) and every message takes the long way.
        let lead = format!("{header_b64}.eyJzdWIi");
        if let Some(lead) = lead.as_bytes().get(..BLOCK) {
            first_block.copy_from_slice(lead);
        }
        let mut after_first_block = mac.clone();
        after_first_block.update(&first_block);
        KeyedMac {
            mac,
            first_block,
            after_first_block,
        }
    }

    /// The MAC state after absorbing `message`.
    pub(super) fn absorb(&self, message: &[u8]) -> HmacSha256 {
        match message.split_at_checked(BLOCK) {
            Some((first, rest)) if first == self.first_block => {
                let mut mac = self.after_first_block.clone();
                mac.update(rest);
                mac
            }
            _ => {
                let mut mac = self.mac.clone();
                mac.update(message);
                mac
            }
        }
    }

    /// The first block our tokens start with, for tests.
    #[cfg(test)]
    pub(super) fn first_block(&self) -> &[u8; BLOCK] {
        &self.first_block
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_block_shortcut_gives_the_plain_hmac() {
        let secret = b"0123456789abcdef0123456789abcdef";
        // 59 characters, as our header with a kid encodes to.
        let header = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6IkFCQ0RFRkdIIn0";
        let keyed = KeyedMac::new(secret, header);
        assert_ne!(
            keyed.first_block(),
            &[0u8; BLOCK],
            "our header fills the block"
        );
        let ours = format!("{header}.eyJzdWIiOiI0MiJ9");
        let other = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9-and-some-more-bytes-than-sixty-four";
        for message in [ours.as_str(), other, "short", ""] {
            let mut plain = hmac_sha256(secret);
            plain.update(message.as_bytes());
            assert_eq!(
                keyed.absorb(message.as_bytes()).finalize().into_bytes(),
                plain.finalize().into_bytes(),
                "{message}"
            );
        }
    }

    #[test]
    fn a_short_header_never_takes_the_shortcut() {
        let keyed = KeyedMac::new(b"0123456789abcdef0123456789abcdef", "e30");
        assert_eq!(keyed.first_block(), &[0u8; BLOCK]);
    }

    #[test]
    fn keyed_state_matches_rfc_4231_case_2() {
        // RFC 4231 §4.3: key "Jefe", data "what do ya want for nothing?".
        let mut mac = hmac_sha256(b"Jefe");
        mac.update(b"what do ya want for nothing?");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
