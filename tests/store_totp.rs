//! The store's second-factor operations through the public API, on a real file and (feature
//! `postgres`) on a real PostgreSQL database, two instances racing there: each one
//! is one write transaction whose condition is checked inside it, so a stale or
//! concurrent request can never switch a factor on twice, use one code twice or spend
//! one recovery code twice.

mod common;

use std::sync::{Arc, Barrier};
use std::thread;

use latchkey::store::UpdateError;

const HASH: &str = "$fake$hash";
const SECRET: &[u8] = b"0123456789abcdefghij";
const OTHER: &[u8] = b"jihgfedcba9876543210";

on_both_stores! {
    fn enrolment_moves_the_pending_secret_only_when_it_is_still_the_one_checked(s) {
        let s = s.arc();
        let user = s.create("ann", "user", HASH).expect("create");
        assert!(!s.session_state(user.id).expect("state").expect("ann").totp);

        let pending = s.begin_totp(user.id, SECRET).expect("begin");
        assert_eq!(pending.totp_pending.as_deref(), Some(SECRET));
        assert_eq!(pending.ver, user.ver, "starting changes nothing in force");
        assert!(pending.totp.is_none());
        // Another tab starts over: the code checked against the first secret no longer
        // switches anything on, and nothing is written.
        s.begin_totp(user.id, OTHER).expect("start over");
        assert_eq!(
            s.enable_totp(user.id, SECRET, 7, &[[1; 32]]).expect("ok"),
            None
        );
        let unchanged = s.get(user.id).expect("get").expect("ann");
        assert_eq!(unchanged.totp_pending.as_deref(), Some(OTHER));
        assert!(unchanged.totp.is_none());

        let on = s
            .enable_totp(user.id, OTHER, 7, &[[1; 32], [2; 32]])
            .expect("enable")
            .expect("the pending secret matched");
        let factor = on.totp.as_ref().expect("factor");
        assert_eq!((factor.secret.as_slice(), factor.last_step), (OTHER, 7));
        assert_eq!(factor.recovery, vec![[1; 32], [2; 32]]);
        assert_eq!(on.totp_pending, None);
        assert_eq!(on.ver, user.ver + 1, "sessions from before end");
        let state = s.session_state(user.id).expect("state").expect("ann");
        assert!(state.totp && state.ver == on.ver);
        // Once on, neither a second enable nor a stale one does anything.
        s.begin_totp(user.id, SECRET)
            .expect("a new enrolment may be started");
        assert_eq!(s.enable_totp(user.id, SECRET, 8, &[]).expect("ok"), None);
        assert_eq!(
            s.get(user.id).expect("get").expect("ann").totp.as_ref(),
            Some(factor)
        );

        // A reset clears both and ends every session.
        let reset = s.reset_totp(user.id).expect("reset");
        assert!(reset.totp.is_none() && reset.totp_pending.is_none());
        assert_eq!(reset.ver, on.ver + 1);
        assert!(!s.session_state(user.id).expect("state").expect("ann").totp);
        assert!(matches!(
            s.enable_totp(999, SECRET, 1, &[]),
            Err(UpdateError::NotFound)
        ));
    }

    fn a_step_is_accepted_only_when_it_is_later_and_the_factor_unchanged(s) {
        let s = s.arc();
        let id = s.create("bob", "user", HASH).expect("create").id;
        assert_eq!(
            s.use_totp_step(id, SECRET, 5).expect("ok"),
            None,
            "no factor"
        );
        s.begin_totp(id, SECRET).expect("begin");
        s.enable_totp(id, SECRET, 10, &[])
            .expect("enable")
            .expect("on");
        for stale in [9, 10] {
            assert_eq!(s.use_totp_step(id, SECRET, stale).expect("ok"), None);
        }
        let used = s.use_totp_step(id, SECRET, 11).expect("ok").expect("later");
        assert_eq!(used.totp.expect("factor").last_step, 11);
        assert_eq!(s.use_totp_step(id, SECRET, 11).expect("ok"), None, "replay");
        // A code checked against another secret (the factor was replaced meanwhile).
        assert_eq!(s.use_totp_step(id, OTHER, 12).expect("ok"), None);
        assert_eq!(
            s.get(id)
                .expect("get")
                .expect("bob")
                .totp
                .expect("f")
                .last_step,
            11
        );
    }

    fn a_recovery_code_is_spent_once(s) {
        let s = s.arc();
        let id = s.create("cat", "user", HASH).expect("create").id;
        s.begin_totp(id, SECRET).expect("begin");
        s.enable_totp(id, SECRET, 1, &[[1; 32], [2; 32], [3; 32]])
            .expect("enable")
            .expect("on");
        let after = s
            .use_recovery_code(id, &[2; 32])
            .expect("ok")
            .expect("there");
        assert_eq!(after.totp.expect("factor").recovery, vec![[1; 32], [3; 32]]);
        assert_eq!(
            s.use_recovery_code(id, &[2; 32]).expect("ok"),
            None,
            "spent"
        );
        assert_eq!(
            s.use_recovery_code(id, &[9; 32]).expect("ok"),
            None,
            "never issued"
        );
    }

    // Eight threads present the same code (the same step) at once, then the same recovery
    // code: exactly one of each gets through.
    fn concurrent_uses_of_one_code_let_exactly_one_through(s) {
        const THREADS: usize = 8;
        let second = s.second_instance();
        let s = s.arc();
        let id = s.create("dan", "user", HASH).expect("create").id;
        s.begin_totp(id, SECRET).expect("begin");
        s.enable_totp(id, SECRET, 100, &[[7; 32]])
            .expect("enable")
            .expect("on");
        for round in 0..5u64 {
            let barrier = Arc::new(Barrier::new(THREADS));
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    // Half the requests through a second instance (PostgreSQL).
                    let s = if t % 2 == 0 { s.clone() } else { second.clone() };
                    let barrier = barrier.clone();
                    thread::spawn(move || {
                        barrier.wait();
                        if round == 4 {
                            s.use_recovery_code(id, &[7; 32]).map(|u| u.is_some())
                        } else {
                            s.use_totp_step(id, SECRET, 101 + round)
                                .map(|u| u.is_some())
                        }
                    })
                })
                .collect();
            let winners = handles
                .into_iter()
                .map(|h| h.join().expect("thread").expect("no store error"))
                .filter(|won| *won)
                .count();
            assert_eq!(winners, 1, "round {round}");
        }
    }
}
