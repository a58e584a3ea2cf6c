//! Calls into redb whose panics become errors.
//!
//! Some damaged files make redb panic (an `unreachable` in its b-tree code; in debug
//! builds also its internal assertions) instead of returning an error. Every call into
//! redb goes through [`quietly`], which catches the unwind and returns the panic's
//! message, so that a damaged store ends in a normal error ("the user store is damaged:
//! …", exit 1), never in a crash, exit 101 or a backtrace on the operator's terminal.
//!
//! The default panic hook would still print the message on stderr before the unwind is
//! caught. So a hook is installed once, chained to the one it replaces: a panic on a
//! thread that is inside `quietly` is kept for the error instead of printed; every other
//! panic is reported exactly as before. The hook is not what handles the panic (the
//! caller gets an `Err`); it only keeps the message from being printed twice.

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// How many `quietly` calls this thread is inside.
    static INSIDE: Cell<u32> = const { Cell::new(0) };
    /// The message of the last panic caught inside `quietly` on this thread.
    static MESSAGE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs `f`; a panic inside it is returned as `Err(message)` and printed nowhere.
///
/// `f` must leave nothing half-changed that the caller keeps using after an `Err`: the
/// store drops (and re-opens) a database handle that panicked.
pub(crate) fn quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_hook();
    INSIDE.with(|n| n.set(n.get() + 1));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    INSIDE.with(|n| n.set(n.get().saturating_sub(1)));
    result.map_err(|payload| {
        MESSAGE
            .with(|m| m.borrow_mut().take())
            .or_else(|| payload_text(payload.as_ref()))
            .unwrap_or_else(|| "a check inside redb failed".to_string())
    })
}

fn payload_text(payload: &(dyn std::any::Any + Send)) -> Option<String> {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
}

fn install_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if INSIDE.with(Cell::get) > 0 {
                let mut text = payload_text(info.payload())
                    .unwrap_or_else(|| "a check inside redb failed".to_string());
                if let Some(at) = info.location() {
                    text.push_str(&format!(" at {}:{}", at.file(), at.line()));
                }
                MESSAGE.with(|m| *m.borrow_mut() = Some(text));
            } else {
                previous(info);
            }
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_its_message() {
        let result: Result<(), String> = quietly(|| panic!("page 7 is not a branch"));
        let message = result.expect_err("the panic is caught");
        assert!(
            message.starts_with("page 7 is not a branch at "),
            "{message}"
        );
        assert!(message.contains("guard.rs"), "{message}");
    }

    #[test]
    fn values_pass_through_and_nesting_works() {
        assert_eq!(quietly(|| 7), Ok(7));
        let outer = quietly(|| {
            let inner: Result<(), String> = quietly(|| panic!("inner"));
            assert!(inner.is_err());
            // Still inside the outer call: a second panic is also caught quietly.
            panic!("outer");
        });
        assert!(outer.expect_err("caught").starts_with("outer"));
        INSIDE.with(|n| assert_eq!(n.get(), 0));
    }
}
