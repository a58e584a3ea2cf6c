//! The `amr` claim (RFC 8176): how the user authenticated, as a set of registered values.
//!
//! latchkey writes `["pwd"]` after a password and `["pwd","otp"]` after a password and a
//! one-time code. A token without `amr` (older latchkey tokens, the original Flask
//! design, PyJWT tokens of that shape) reads as `["pwd"]`.
//!
//! **Rule for other values.** The claim must be an array of strings (anything else is a
//! wrong type); the array must name at least one method, each at most once, each one of
//! the values registered by RFC 8176 §2. An unregistered value makes the token *invalid*
//! rather than being dropped: its meaning is unknown, so it can neither be passed on nor
//! safely ignored (a value an app relies on would vanish). Registered values other than
//! `pwd` and `otp` are kept, so a token from another issuer sharing the key reads and
//! slides unchanged.
//!
//! [`Amr`] is a bitset over the registry: copying, comparing and testing it allocates
//! nothing, and it always serializes in one order (`pwd`, `otp`, then the rest A–Z).

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeSeq;

/// The RFC 8176 §2 registry; bit `i` of an [`Amr`] stands for `METHODS[i]`. `pwd` and
/// `otp` come first so that the values latchkey writes serialize as `["pwd","otp"]`.
const METHODS: [&str; 21] = [
    "pwd", "otp", "face", "fpt", "geo", "hwk", "iris", "kba", "mca", "mfa", "pin", "pop", "rba",
    "retina", "sc", "sms", "swk", "tel", "user", "vbm", "wia",
];

/// The longest registered value, in bytes (`retina`).
pub(super) const LONGEST_METHOD: usize = 6;

/// A non-empty set of RFC 8176 authentication method values (the `amr` claim).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Amr(u32);

impl Amr {
    /// `["pwd"]`: a password (also what a token without `amr` reads as).
    pub const PWD: Amr = Amr(1);
    /// `["pwd","otp"]`: a password and a one-time code (RFC 6238).
    pub const PWD_OTP: Amr = Amr(0b11);

    /// The set holding only the registered `value` (case-sensitive, as RFC 8176 values
    /// are), or `None` when `value` is not registered.
    pub fn from_value(value: &str) -> Option<Amr> {
        METHODS
            .iter()
            .position(|m| *m == value)
            .map(|i| Amr(1 << i))
    }

    /// Both sets together.
    pub const fn union(self, other: Amr) -> Amr {
        Amr(self.0 | other.0)
    }

    /// Whether every method of `other` is in this set.
    pub const fn contains(self, other: Amr) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether the user entered a one-time code (`otp`): the second factor.
    pub const fn has_otp(self) -> bool {
        self.contains(Amr(0b10))
    }

    /// The values, in serialization order (`pwd`, `otp`, then alphabetical).
    pub fn values(self) -> impl Iterator<Item = &'static str> {
        METHODS
            .iter()
            .enumerate()
            .filter(move |(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, m)| *m)
    }

    /// Adds `value` to a set being read; `None` when it is unregistered or already in.
    /// Reading starts from the empty set, which only this module can make.
    pub(super) fn add(read: u32, value: &str) -> Option<u32> {
        let bit = Amr::from_value(value)?.0;
        (read & bit == 0).then_some(read | bit)
    }

    /// The set read, or `None` when nothing was read.
    pub(super) fn from_read(read: u32) -> Option<Amr> {
        (read != 0).then_some(Amr(read))
    }
}

impl Default for Amr {
    /// What a token without `amr` reads as: `["pwd"]`.
    fn default() -> Amr {
        Amr::PWD
    }
}

impl fmt::Debug for Amr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.values()).finish()
    }
}

impl serde::Serialize for Amr {
    /// A JSON array of the values, in their one order.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.count_ones() as usize))?;
        for value in self.values() {
            seq.serialize_element(value)?;
        }
        seq.end()
    }
}

impl<'de> serde::Deserialize<'de> for Amr {
    /// An array of strings under the same rule as the verifier's.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Amr, D::Error> {
        struct Methods;
        impl<'de> Visitor<'de> for Methods {
            type Value = Amr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-empty array of distinct RFC 8176 method values")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Amr, A::Error> {
                let mut read = 0;
                while let Some(value) = seq.next_element::<std::borrow::Cow<'de, str>>()? {
                    read = Amr::add(read, &value).ok_or_else(|| {
                        de::Error::invalid_value(de::Unexpected::Str(&value), &self)
                    })?;
                }
                Amr::from_read(read).ok_or_else(|| de::Error::invalid_length(0, &self))
            }
        }
        deserializer.deserialize_seq(Methods)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_is_rfc_8176() {
        let mut sorted = METHODS;
        sorted.sort_unstable();
        assert_eq!(
            sorted.join(" "),
            "face fpt geo hwk iris kba mca mfa otp pin pop pwd rba retina sc sms swk tel \
             user vbm wia"
        );
        assert_eq!(METHODS.iter().map(|m| m.len()).max(), Some(LONGEST_METHOD));
    }

    #[test]
    fn sets_serialize_in_one_order() {
        let json = |amr: Amr| serde_json::to_string(&amr).expect("json");
        assert_eq!(json(Amr::PWD), r#"["pwd"]"#);
        assert_eq!(json(Amr::PWD_OTP), r#"["pwd","otp"]"#);
        let hwk = Amr::from_value("hwk").expect("registered");
        assert_eq!(json(hwk.union(Amr::PWD_OTP)), r#"["pwd","otp","hwk"]"#);
        assert!(Amr::PWD_OTP.has_otp() && !Amr::PWD.has_otp());
        assert!(Amr::PWD_OTP.contains(Amr::PWD) && !Amr::PWD.contains(Amr::PWD_OTP));
        assert_eq!(Amr::default(), Amr::PWD);
        assert_eq!(format!("{:?}", Amr::PWD_OTP), r#"["pwd", "otp"]"#);
    }

    #[test]
    fn reading_follows_the_rule() {
        let read = |json: &str| serde_json::from_str::<Amr>(json).ok();
        assert_eq!(read(r#"["otp","pwd"]"#), Some(Amr::PWD_OTP));
        assert_eq!(read(r#"["pwd"]"#), Some(Amr::PWD));
        for bad in [
            "[]",
            r#"["pwd","pwd"]"#,
            r#"["PWD"]"#,
            r#"["password"]"#,
            r#"["pwd",1]"#,
            r#""pwd""#,
            "null",
        ] {
            assert_eq!(read(bad), None, "{bad}");
        }
        assert_eq!(Amr::from_value("otp"), Some(Amr(0b10)));
        assert_eq!(Amr::from_value("ot"), None);
    }
}
