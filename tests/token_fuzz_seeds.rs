//! The fuzz corpus seeds (fuzz/corpus/verify/, made by fuzz/make_seeds.py) are what their
//! names say: `valid_*` verify under the fuzz target's key and clock, the others do not.

use std::fs;
use std::path::Path;

mod common;

use common::token::{NOW, key, verifier_of};
use latchkey::keys::KeyRing;
use latchkey::token::{ErrorClass, TokenBuf};

#[test]
fn seeds_are_judged_as_named() {
    // The fuzz target's key and instant (fuzz/fuzz_targets/verify.rs).
    let ring = KeyRing::new(vec![key(b"fuzz-corpus-key-0123456789abcdefghij")]).expect("ring");
    let verifier = verifier_of(&ring);
    assert_eq!(NOW, 1_800_000_000, "the instant the seeds were made for");
    let mut buf = TokenBuf::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/verify");
    let mut seen = 0;
    for entry in fs::read_dir(dir).expect("corpus") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let token = fs::read_to_string(&path).expect("seed");
        let result = verifier.verify(&token, &mut buf).map(drop);
        match name.as_str() {
            n if n.starts_with("valid_") => assert!(result.is_ok(), "{n}: {result:?}"),
            "expired" => assert_eq!(result.map_err(|e| e.class()), Err(ErrorClass::Expired)),
            n => assert!(result.is_err(), "{n} accepted"),
        }
        seen += 1;
    }
    assert!(seen >= 8, "corpus missing");
}
