//! The user record codec: a fixed, versioned byte layout (integers little-endian).
//!
//! Format 2 (schema v2, written by this build):
//!
//! ```text
//! [0]       format = 2
//! [1..9]    ver          u64
//! [9]       flags        bit 0 locked, bit 1 last_login present, bit 2 must_change_password,
//!                        bit 3 totp present, bit 4 totp_pending present; other bits 0
//! [10..18]  created      i64
//! [18..26]  updated      i64
//! [26..34]  last_login   i64 (0 when absent)
//! then name, role, password_hash: each a u16 byte length + UTF-8 bytes
//! then, with bit 3, totp: u8 secret length (10..=64) + the secret,
//!                         u64 last_step,
//!                         u8 recovery count (0..=16) + count × 32-byte SHA-256 hashes
//! then, with bit 4, totp_pending: u8 length (10..=64) + the secret
//! nothing after
//! ```
//!
//! Format 1 (schema v1) is the same header without bits 2–4 and ends after the hash; it is
//! read only by the v1 → v2 migration. The decoder refuses an unknown format byte,
//! unknown flags, lengths outside their bounds, short records, bad UTF-8 and trailing
//! bytes, and never panics (property tests feed it random and mutated bytes). A new field
//! therefore means a new format byte, a schema version and a migration that rewrites
//! every record, never a silent reinterpretation.

use super::{
    HASH_MAX, Invalid, NAME_MAX, RECOVERY_CODES_MAX, ROLE_MAX, SessionState, TOTP_SECRET_MAX,
    TOTP_SECRET_MIN, TotpFactor, User,
};

/// The record format written by this build.
pub(crate) const FORMAT: u8 = 2;
/// The record format of schema v1, read by the migration only.
pub(crate) const FORMAT_V1: u8 = 1;

const FLAG_LOCKED: u8 = 1;
const FLAG_LAST_LOGIN: u8 = 1 << 1;
const FLAG_MUST_CHANGE: u8 = 1 << 2;
const FLAG_TOTP: u8 = 1 << 3;
const FLAG_TOTP_PENDING: u8 = 1 << 4;
const FLAGS_V1: u8 = FLAG_LOCKED | FLAG_LAST_LOGIN;
const FLAGS_V2: u8 = FLAGS_V1 | FLAG_MUST_CHANGE | FLAG_TOTP | FLAG_TOTP_PENDING;
/// Bytes before the first text field.
pub(crate) const HEADER_LEN: usize = 34;

/// Checks what the layout bounds (lengths) before a record is written, so that every
/// record written can be read back.
pub(crate) fn check(user: &User) -> Result<(), Invalid> {
    if user.name.is_empty() || user.name.len() > NAME_MAX {
        return Err(Invalid::Name(format!(
            "the name has {} characters; use 1 to {NAME_MAX}",
            user.name.len()
        )));
    }
    if user.role.is_empty() || user.role.len() > ROLE_MAX {
        return Err(Invalid::Role(format!(
            "the role has {} characters; use 1 to {ROLE_MAX}",
            user.role.len()
        )));
    }
    if user.password_hash.is_empty() || user.password_hash.len() > HASH_MAX {
        return Err(Invalid::Hash(format!(
            "the password hash has {} bytes; it must have 1 to {HASH_MAX}",
            user.password_hash.len()
        )));
    }
    if let Some(totp) = &user.totp {
        check_secret(&totp.secret)?;
        if totp.recovery.len() > RECOVERY_CODES_MAX {
            return Err(Invalid::Totp(format!(
                "{} recovery codes; at most {RECOVERY_CODES_MAX} are kept",
                totp.recovery.len()
            )));
        }
    }
    if let Some(pending) = &user.totp_pending {
        check_secret(pending)?;
    }
    Ok(())
}

fn check_secret(secret: &[u8]) -> Result<(), Invalid> {
    if (TOTP_SECRET_MIN..=TOTP_SECRET_MAX).contains(&secret.len()) {
        Ok(())
    } else {
        Err(Invalid::Totp(format!(
            "a secret of {} bytes; use {TOTP_SECRET_MIN} to {TOTP_SECRET_MAX}",
            secret.len()
        )))
    }
}

/// Encodes a user record in format 2 (the id is the table key, not part of the record).
pub(crate) fn encode(user: &User) -> Result<Vec<u8>, Invalid> {
    check(user)?;
    let mut out = Vec::with_capacity(
        HEADER_LEN + 6 + user.name.len() + user.role.len() + user.password_hash.len(),
    );
    out.push(FORMAT);
    out.extend_from_slice(&user.ver.to_le_bytes());
    let mut flags = 0;
    for (set, flag) in [
        (user.locked, FLAG_LOCKED),
        (user.last_login.is_some(), FLAG_LAST_LOGIN),
        (user.must_change_password, FLAG_MUST_CHANGE),
        (user.totp.is_some(), FLAG_TOTP),
        (user.totp_pending.is_some(), FLAG_TOTP_PENDING),
    ] {
        if set {
            flags |= flag;
        }
    }
    out.push(flags);
    out.extend_from_slice(&user.created.to_le_bytes());
    out.extend_from_slice(&user.updated.to_le_bytes());
    out.extend_from_slice(&user.last_login.unwrap_or(0).to_le_bytes());
    for s in [&user.name, &user.role, &user.password_hash] {
        // Bounded by `check` far below u16::MAX.
        out.extend_from_slice(&(s.len() as u16).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    if let Some(totp) = &user.totp {
        out.push(totp.secret.len() as u8);
        out.extend_from_slice(&totp.secret);
        out.extend_from_slice(&totp.last_step.to_le_bytes());
        out.push(totp.recovery.len() as u8);
        for hash in &totp.recovery {
            out.extend_from_slice(hash);
        }
    }
    if let Some(pending) = &user.totp_pending {
        out.push(pending.len() as u8);
        out.extend_from_slice(pending);
    }
    Ok(out)
}

/// What is wrong with a record that does not decode.
pub(crate) type Why = String;

/// A cursor over a record that fails, never panics, on short or bad input.
struct Reader<'a> {
    rest: &'a [u8],
}

/// The fixed fields.
struct Header {
    format: u8,
    ver: u64,
    flags: u8,
    created: i64,
    updated: i64,
    last_login: Option<i64>,
}

impl<'a> Reader<'a> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], Why> {
        let Some((head, rest)) = self.rest.split_first_chunk::<N>() else {
            return Err("it ends early".into());
        };
        self.rest = rest;
        Ok(*head)
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], Why> {
        if self.rest.len() < len {
            return Err("it ends early".into());
        }
        let (head, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(head)
    }

    fn str(&mut self) -> Result<&'a str, Why> {
        let len = usize::from(u16::from_le_bytes(self.bytes()?));
        std::str::from_utf8(self.take(len)?).map_err(|_| "a text field is not UTF-8".into())
    }

    fn secret(&mut self) -> Result<Vec<u8>, Why> {
        let [len] = self.bytes()?;
        let len = usize::from(len);
        if !(TOTP_SECRET_MIN..=TOTP_SECRET_MAX).contains(&len) {
            return Err(format!("a second-factor secret of {len} bytes"));
        }
        Ok(self.take(len)?.to_vec())
    }

    /// The header of a record in `format` (1 or 2).
    fn header(&mut self, format: u8) -> Result<Header, Why> {
        let [found] = self.bytes()?;
        if found != format {
            return Err(format!("unknown record format {found}"));
        }
        let ver = u64::from_le_bytes(self.bytes()?);
        let [flags] = self.bytes()?;
        let known = if format == FORMAT_V1 {
            FLAGS_V1
        } else {
            FLAGS_V2
        };
        if flags & !known != 0 {
            return Err(format!("unknown flags {flags:#04x}"));
        }
        let created = i64::from_le_bytes(self.bytes()?);
        let updated = i64::from_le_bytes(self.bytes()?);
        let last_login = i64::from_le_bytes(self.bytes()?);
        Ok(Header {
            format: found,
            ver,
            flags,
            created,
            updated,
            last_login: (flags & FLAG_LAST_LOGIN != 0).then_some(last_login),
        })
    }

    fn end(&self) -> Result<(), Why> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err("it has bytes after the last field".into())
        }
    }
}

fn user_from(id: u64, header: Header, r: &mut Reader<'_>) -> Result<User, Why> {
    let name = r.str()?.to_string();
    let role = r.str()?.to_string();
    let password_hash = r.str()?.to_string();
    let mut totp = None;
    let mut totp_pending = None;
    if header.format != FORMAT_V1 {
        if header.flags & FLAG_TOTP != 0 {
            let secret = r.secret()?;
            let last_step = u64::from_le_bytes(r.bytes()?);
            let [count] = r.bytes()?;
            if usize::from(count) > RECOVERY_CODES_MAX {
                return Err(format!("{count} recovery codes"));
            }
            let mut recovery = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                recovery.push(r.bytes::<32>()?);
            }
            totp = Some(TotpFactor {
                secret,
                last_step,
                recovery,
            });
        }
        if header.flags & FLAG_TOTP_PENDING != 0 {
            totp_pending = Some(r.secret()?);
        }
    }
    r.end()?;
    Ok(User {
        id,
        name,
        role,
        password_hash,
        ver: header.ver,
        locked: header.flags & FLAG_LOCKED != 0,
        created: header.created,
        updated: header.updated,
        last_login: header.last_login,
        must_change_password: header.flags & FLAG_MUST_CHANGE != 0,
        totp,
        totp_pending,
    })
}

/// Decodes a whole format-2 record; garbage is an error, never a panic.
pub(crate) fn decode(id: u64, record: &[u8]) -> Result<User, Why> {
    let mut r = Reader { rest: record };
    let header = r.header(FORMAT)?;
    user_from(id, header, &mut r)
}

/// Decodes a format-1 record (schema v1), for the migration.
pub(crate) fn decode_v1(id: u64, record: &[u8]) -> Result<User, Why> {
    let mut r = Reader { rest: record };
    let header = r.header(FORMAT_V1)?;
    user_from(id, header, &mut r)
}

/// Decodes only what a request needs (header, name, role), skipping the rest; whether a
/// second factor is on is a header flag, so the factor itself is not read.
pub(crate) fn decode_session(record: &[u8]) -> Result<SessionState, Why> {
    let mut r = Reader { rest: record };
    let header = r.header(FORMAT)?;
    let name = r.str()?.to_string();
    let role = r.str()?.to_string();
    Ok(SessionState {
        ver: header.ver,
        locked: header.flags & FLAG_LOCKED != 0,
        must_change_password: header.flags & FLAG_MUST_CHANGE != 0,
        role,
        name,
        totp: header.flags & FLAG_TOTP != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn user() -> User {
        User {
            id: 7,
            name: "Alice".into(),
            role: "admin".into(),
            password_hash: "$argon2id$v=19$m=1024,t=1,p=1$c2FsdA$aGFzaA".into(),
            ver: 3,
            locked: true,
            created: 1_700_000_000,
            updated: 1_700_000_500,
            last_login: Some(1_700_001_000),
            must_change_password: false,
            totp: None,
            totp_pending: None,
        }
    }

    fn with_totp() -> User {
        User {
            must_change_password: true,
            totp: Some(TotpFactor {
                secret: vec![0xab; 20],
                last_step: 58_000_000,
                recovery: vec![[1; 32], [2; 32]],
            }),
            totp_pending: Some(vec![5; 10]),
            ..user()
        }
    }

    /// A format-1 record as schema v1 wrote it (docs/store.md), by hand.
    fn v1_bytes(u: &User) -> Vec<u8> {
        let mut out = vec![1];
        out.extend_from_slice(&u.ver.to_le_bytes());
        out.push(u8::from(u.locked) | if u.last_login.is_some() { 2 } else { 0 });
        out.extend_from_slice(&u.created.to_le_bytes());
        out.extend_from_slice(&u.updated.to_le_bytes());
        out.extend_from_slice(&u.last_login.unwrap_or(0).to_le_bytes());
        for s in [&u.name, &u.role, &u.password_hash] {
            out.extend_from_slice(&(s.len() as u16).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        out
    }

    #[test]
    fn records_round_trip() {
        for u in [
            user(),
            with_totp(),
            User {
                last_login: None,
                locked: false,
                ..user()
            },
        ] {
            let bytes = encode(&u).expect("encode");
            assert_eq!(bytes[0], FORMAT);
            assert_eq!(decode(7, &bytes).expect("decode"), u);
            let s = decode_session(&bytes).expect("session");
            assert_eq!(
                (
                    s.ver,
                    s.locked,
                    s.must_change_password,
                    s.role.as_str(),
                    s.name.as_str(),
                    s.totp,
                ),
                (
                    u.ver,
                    u.locked,
                    u.must_change_password,
                    "admin",
                    "Alice",
                    u.totp.is_some()
                )
            );
        }
    }

    #[test]
    fn format_1_is_read_by_the_migration_only() {
        let u = user();
        let old = v1_bytes(&u);
        assert_eq!(decode_v1(7, &old).expect("v1"), u);
        let err = decode(7, &old).expect_err("format 1 is not format 2");
        assert_eq!(err, "unknown record format 1");
        assert!(decode_session(&old).is_err());
        // Flags that format 1 never had are refused in it.
        let mut bad = old.clone();
        bad[9] |= FLAG_MUST_CHANGE;
        assert!(decode_v1(7, &bad).is_err());
    }

    #[test]
    fn bad_records_are_errors() {
        let good = encode(&with_totp()).expect("encode");
        for len in 0..good.len() {
            assert!(decode(7, &good[..len]).is_err(), "truncated to {len}");
        }
        let mut other = good.clone();
        other[0] = 3;
        assert_eq!(decode(7, &other).expect_err("3"), "unknown record format 3");
        let mut bad_flags = good.clone();
        bad_flags[9] |= 0x80;
        assert!(decode(7, &bad_flags).is_err());
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(decode(7, &trailing).is_err());
        let mut not_utf8 = good.clone();
        not_utf8[HEADER_LEN + 2] = 0xff;
        assert!(decode(7, &not_utf8).is_err());
        // The secret's length byte comes right after the hash.
        let at = HEADER_LEN + 6 + 5 + 5 + with_totp().password_hash.len();
        for len in [0u8, 9, 65, 255] {
            let mut short_secret = good.clone();
            short_secret[at] = len;
            assert!(decode(7, &short_secret).is_err(), "secret length {len}");
        }
    }

    #[test]
    fn unrepresentable_users_are_refused_before_writing() {
        let too_long = User {
            totp_pending: Some(vec![0; 65]),
            ..user()
        };
        assert!(matches!(encode(&too_long), Err(Invalid::Totp(_))));
        let many_codes = User {
            totp: Some(TotpFactor {
                secret: vec![1; 20],
                last_step: 0,
                recovery: vec![[0; 32]; 17],
            }),
            ..user()
        };
        assert!(matches!(encode(&many_codes), Err(Invalid::Totp(_))));
        let long_hash = User {
            password_hash: "x".repeat(HASH_MAX + 1),
            ..user()
        };
        assert!(matches!(encode(&long_hash), Err(Invalid::Hash(_))));
    }

    fn any_user() -> impl Strategy<Value = User> {
        let totp = proptest::option::of((
            proptest::collection::vec(any::<u8>(), TOTP_SECRET_MIN..=TOTP_SECRET_MAX),
            any::<u64>(),
            proptest::collection::vec(any::<[u8; 32]>(), 0..=RECOVERY_CODES_MAX),
        ));
        let pending = proptest::option::of(proptest::collection::vec(
            any::<u8>(),
            TOTP_SECRET_MIN..=TOTP_SECRET_MAX,
        ));
        (
            (any::<u64>(), any::<bool>(), any::<i64>(), any::<i64>()),
            (any::<Option<i64>>(), any::<bool>()),
            (
                "[A-Za-z0-9][A-Za-z0-9._@-]{0,63}",
                "[a-z0-9][a-z0-9._@-]{0,31}",
                "[ -~]{1,300}",
            ),
            (totp, pending),
        )
            .prop_map(
                |(
                    (ver, locked, created, updated),
                    (last_login, must),
                    (name, role, hash),
                    (totp, pending),
                )| {
                    User {
                        id: 9,
                        name,
                        role,
                        password_hash: hash,
                        ver,
                        locked,
                        created,
                        updated,
                        last_login,
                        must_change_password: must,
                        totp: totp.map(|(secret, last_step, recovery)| TotpFactor {
                            secret,
                            last_step,
                            recovery,
                        }),
                        totp_pending: pending,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode(1, &bytes);
            let _ = decode_v1(1, &bytes);
            let _ = decode_session(&bytes);
        }

        #[test]
        fn any_valid_user_round_trips(u in any_user()) {
            let bytes = encode(&u).expect("encode");
            prop_assert_eq!(decode(9, &bytes).expect("decode"), u);
        }

        #[test]
        fn mutated_records_never_panic(u in any_user(), at in any::<usize>(), byte in any::<u8>(), cut in any::<usize>()) {
            let mut bytes = encode(&u).expect("encode");
            let at = at % bytes.len();
            bytes[at] = byte;
            let _ = decode(9, &bytes);
            let _ = decode_session(&bytes);
            bytes.truncate(cut % (bytes.len() + 1));
            let _ = decode(9, &bytes);
            let _ = decode_session(&bytes);
        }

        #[test]
        fn v1_records_migrate_to_the_same_user(
            ver in any::<u64>(), locked in any::<bool>(), created in any::<i64>(),
            last_login in any::<Option<i64>>(), name in "[A-Za-z0-9][A-Za-z0-9._@-]{0,63}",
        ) {
            let u = User { ver, locked, created, last_login, name, ..user() };
            let migrated = decode_v1(7, &v1_bytes(&u)).expect("v1");
            prop_assert_eq!(decode(7, &encode(&migrated).expect("encode")).expect("v2"), u);
        }
    }
}
