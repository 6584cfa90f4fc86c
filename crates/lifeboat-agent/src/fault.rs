//! Named points where a fault test stops the agent dead (`tests/kill.rs`).
//!
//! Built only with the `fault-injection` feature; otherwise every point is an empty inline
//! function, so release agents carry no hook. With it, `LIFEBOAT_FAULT_POINT=<name>[@<n>]`
//! makes the `n`th arrival at `<name>` (the first by default) print
//! `lifeboat-fault: reached <name>` on stderr and park that thread forever; the test reads the
//! line and sends SIGKILL. The kill comes from outside, as a node's OOM killer or a deleted pod's
//! would, while the agent's other threads (S3 uploads in flight) go on until it lands.
//! Hand-written because the `fail` crate's actions cannot announce a point to an external
//! killer (its `print` goes to the `log` crate, and `pause` is silent).

/// Arrival at a named point.
#[inline(always)]
pub fn point(name: &str) {
    #[cfg(feature = "fault-injection")]
    armed::arrive(name, 1);
    #[cfg(not(feature = "fault-injection"))]
    let _ = name;
}

/// A byte counter of `name` moving from `before` to `after`: `<name>@<n>` fires when the `n`th
/// byte passes.
#[inline(always)]
pub fn bytes(name: &str, before: u64, after: u64) {
    #[cfg(feature = "fault-injection")]
    armed::cross(name, before, after);
    #[cfg(not(feature = "fault-injection"))]
    let _ = (name, before, after);
}

#[cfg(feature = "fault-injection")]
mod armed {
    use std::collections::HashMap;
    use std::io::Write;
    use std::sync::{Mutex, OnceLock};

    fn target() -> Option<&'static (String, u64)> {
        static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
        TARGET
            .get_or_init(|| {
                let spec = std::env::var("LIFEBOAT_FAULT_POINT").ok()?;
                Some(match spec.split_once('@') {
                    Some((name, n)) => (name.to_owned(), n.parse().ok()?),
                    None => (spec, 1),
                })
            })
            .as_ref()
    }

    pub fn arrive(name: &str, step: u64) {
        let Some((wanted, n)) = target() else { return };
        if wanted != name {
            return;
        }
        static SEEN: OnceLock<Mutex<HashMap<String, u64>>> = OnceLock::new();
        let count = {
            let mut seen = SEEN
                .get_or_init(Default::default)
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let c = seen.entry(name.to_owned()).or_default();
            *c += step;
            *c
        };
        if count == *n {
            park(name);
        }
    }

    pub fn cross(name: &str, before: u64, after: u64) {
        let Some((wanted, n)) = target() else { return };
        if wanted == name && before < *n && *n <= after {
            park(name);
        }
    }

    fn park(name: &str) -> ! {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "lifeboat-fault: reached {name}");
        let _ = err.flush();
        loop {
            std::thread::park();
        }
    }
}
