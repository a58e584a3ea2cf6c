//! Store and password figures reported in docs/store.md.
//!
//! Run with `cargo bench --bench store`. The per-request revocation check
//! (`session_state`) should stay well under 5 µs; a login's password check at
//! the default argon2id parameters is reported in milliseconds.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use latchkey::password::{Params, Passwords};
use latchkey::store::{SessionCache, UserStore};

const USERS: u64 = 1000;

fn store_reads(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("latchkey-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let store = UserStore::open(&dir.join("users.redb")).expect("open");
    // A realistic record: a default-parameter PHC string is about 100 bytes.
    let hash = Passwords::new(Params {
        m_kib: 64,
        t: 1,
        p: 1,
    })
    .expect("params")
    .hash("benchmark password")
    .expect("hash")
    .replace("m=64,t=1", "m=19456,t=2");
    for i in 0..USERS {
        store
            .create(&format!("user{i:04}@example.org"), "user", &hash)
            .expect("create");
    }

    let mut id = 0;
    c.bench_function("session_state (1000 users)", |b| {
        b.iter(|| {
            id = id % USERS + 1;
            black_box(store.session_state(black_box(id)).expect("read"))
        })
    });
    // What a worker does per logged-in request: the memo answers while nothing was written.
    let mut cache = SessionCache::new();
    c.bench_function("session_state_cached, memo warm (1000 users)", |b| {
        b.iter(|| {
            id = id % USERS + 1;
            black_box(
                store
                    .session_state_cached(black_box(id), &mut cache)
                    .expect("read")
                    .is_some(),
            )
        })
    });
    c.bench_function("get by id (1000 users)", |b| {
        b.iter(|| {
            id = id % USERS + 1;
            black_box(store.get(black_box(id)).expect("read"))
        })
    });
    c.bench_function("get_by_name (1000 users)", |b| {
        b.iter(|| {
            black_box(
                store
                    .get_by_name(black_box("User0500@example.org"))
                    .expect("read"),
            )
        })
    });
    c.bench_function("check (healthz)", |b| {
        b.iter(|| store.check().expect("check"))
    });

    let mut writes = c.benchmark_group("writes");
    writes
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    writes.bench_function("revoke (one durable commit)", |b| {
        b.iter(|| black_box(store.revoke(1).expect("revoke")))
    });
    writes.finish();

    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

fn password_verify(c: &mut Criterion) {
    let pw = Passwords::new(Params::default()).expect("defaults");
    let phc = pw.hash("correct horse battery").expect("hash");
    let mut group = c.benchmark_group("password (m=19456 KiB, t=2, p=1)");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("verify", |b| {
        b.iter(|| black_box(pw.verify(black_box("correct horse battery"), &phc)))
    });
    group.bench_function("verify_unknown", |b| {
        b.iter(|| black_box(pw.verify_unknown(black_box("correct horse battery"))))
    });
    group.finish();
}

criterion_group!(benches, store_reads, password_verify);
criterion_main!(benches);
