//! Counts heap allocations on the hot path with a counting global allocator.
//!
//! Verifying a standard token allocates exactly the four strings `Claims` owns (`sub`,
//! `name`, `role`, `iss`); a forged one allocates nothing; signing allocates the token.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use latchkey::keys::{Key, KeyRing};
use latchkey::token::{Claims, Clock, Signer, Validation, Verifier};

/// Counts allocations made by the current thread while counting is on.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: delegates every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            COUNT.with(|c| c.set(c.get() + 1));
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            COUNT.with(|c| c.set(c.get() + 1));
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The number of allocations `f` makes on this thread.
fn allocations<T>(f: impl FnOnce() -> T) -> (usize, T) {
    COUNT.with(|c| c.set(0));
    COUNTING.with(|c| c.set(true));
    let out = f();
    COUNTING.with(|c| c.set(false));
    (COUNT.with(Cell::get), out)
}

const NOW: i64 = 1_800_000_000;

fn claims() -> Claims {
    Claims {
        sub: "1042".into(),
        user_id: 1042,
        name: "margaret.hamilton".into(),
        role: "admin".into(),
        iat: NOW - 120,
        exp: NOW + 3480,
        iss: "latchkey".into(),
        auth_time: NOW - 7200,
        ver: 3,
    }
}

#[test]
fn hot_path_allocation_counts() {
    let ring = KeyRing::new(vec![
        Key::new(b"allocation-test-key-0123456789abcdef".to_vec()).expect("key"),
    ])
    .expect("ring");
    let signer = Signer::new(&ring);
    let verifier = Verifier::new(&ring, Validation::new("latchkey", Clock::Fixed(NOW)));
    let token = signer.sign(&claims());
    // Warm up anything lazily initialised (CPU feature detection and the like).
    assert_eq!(verifier.verify(&token), Ok(claims()));

    let (count, result) = allocations(|| verifier.verify(&token));
    assert_eq!(result, Ok(claims()));
    assert_eq!(count, 4, "verify: one per owned string of Claims");

    let mut forged = token.clone();
    forged.replace_range(forged.len() - 10..forged.len() - 9, "A");
    forged.replace_range(forged.len() - 11..forged.len() - 10, "B");
    let (count, result) = allocations(|| verifier.verify(&forged));
    assert!(result.is_err());
    assert_eq!(count, 0, "rejecting a forgery allocates nothing");

    let claims = claims();
    let (count, signed) = allocations(|| signer.sign(&claims));
    assert_eq!(signed, token);
    assert_eq!(count, 1, "sign: the token string only");
}
