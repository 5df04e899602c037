//! How the process's memory allocator treats freed memory (policy for training processes).
//!
//! candle allocates a fresh buffer for every op's output and every gradient contribution. With
//! its defaults, glibc's malloc serves large blocks with `mmap` and trims the top of the heap, so
//! every freed activation goes back to the kernel and the next step faults the same pages in
//! again, zero-filled: up to a third of a LoRA step on the benchmark shapes (BENCHMARKS.md, "The
//! allocator"). [`keep_freed_memory`] tells glibc to keep freed memory in the process instead.
//! The cost is that the resident size stays at the run's peak until the process exits, which is
//! what a training process reaches every step anyway.
//!
//! The `rkif` binary and the benchmarks call it first thing; a notebook may call it in its first
//! cell. It helps allocations made on the main thread (where rkif trains): glibc serves other
//! threads from arenas of at most 64 MiB heaps, which `mmap` larger blocks whatever the settings. Nothing changes when the environment already configures malloc (`MALLOC_*_` variables or
//! `GLIBC_TUNABLES`) or asks for the system default with `RKIF_MALLOC=default`, and on targets
//! other than glibc.

use std::fmt;

/// Set to `default` to leave the allocator as the system configures it.
pub const OPT_OUT_VAR: &str = "RKIF_MALLOC";

/// Environment variables through which glibc's malloc is configured at start-up; when one is
/// set, the user has chosen and [`keep_freed_memory`] leaves it alone.
pub const GLIBC_MALLOC_VARS: [&str; 4] = [
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "GLIBC_TUNABLES",
];

/// Blocks below this size come from the heap (and are reused) rather than from `mmap`:
/// 1 GiB covers every activation and gradient of the models rkif trains on CPU.
pub const MMAP_THRESHOLD_BYTES: i32 = 1 << 30;

/// Extra memory requested each time the heap grows, so that growth is rare.
pub const TOP_PAD_BYTES: i32 = 512 << 20;

/// What [`keep_freed_memory`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocatorSetting {
    /// glibc keeps freed memory: mmap threshold [`MMAP_THRESHOLD_BYTES`], no trimming, top pad
    /// [`TOP_PAD_BYTES`].
    KeepsFreedMemory,
    /// The allocator was left as it was, for the stated reason.
    Unchanged(String),
}

impl fmt::Display for AllocatorSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::KeepsFreedMemory => write!(
                f,
                "glibc malloc keeps freed memory (mmap threshold {} MiB, no trim, top pad {} MiB)",
                MMAP_THRESHOLD_BYTES >> 20,
                TOP_PAD_BYTES >> 20
            ),
            Self::Unchanged(why) => write!(f, "allocator left as configured: {why}"),
        }
    }
}

/// The decision, apart from the mechanism: why the allocator must be left alone, given a
/// lookup of environment variables, or `None` when it may be tuned.
pub fn reason_to_leave_alone(var: impl Fn(&str) -> Option<String>) -> Option<String> {
    if let Some(value) = var(OPT_OUT_VAR) {
        return match value.as_str() {
            "default" => Some(format!("{OPT_OUT_VAR}=default")),
            "" | "keep-freed" => None,
            other => Some(format!(
                "{OPT_OUT_VAR}={other:?} is not `default` or `keep-freed`; leaving malloc as it is"
            )),
        };
    }
    GLIBC_MALLOC_VARS
        .iter()
        .find(|name| var(name).is_some())
        .map(|name| format!("{name} is set in the environment"))
}

/// Tells glibc's malloc to keep freed memory in the process (see the module docs), unless the
/// environment says otherwise. Call it before any large allocation; calling it again is harmless.
pub fn keep_freed_memory() -> AllocatorSetting {
    if let Some(why) = reason_to_leave_alone(|name| std::env::var(name).ok()) {
        return AllocatorSetting::Unchanged(why);
    }
    apply()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply() -> AllocatorSetting {
    // -1 disables trimming altogether (mallopt(3)). Setting any of these also stops glibc from
    // moving its mmap threshold on its own.
    let settings = [
        (
            "M_MMAP_THRESHOLD",
            libc::M_MMAP_THRESHOLD,
            MMAP_THRESHOLD_BYTES,
        ),
        ("M_TRIM_THRESHOLD", libc::M_TRIM_THRESHOLD, -1),
        ("M_TOP_PAD", libc::M_TOP_PAD, TOP_PAD_BYTES),
    ];
    for (name, param, value) in settings {
        // SAFETY: mallopt only updates malloc's global parameters under its own lock; it takes
        // no pointers and returns 0 when it rejects a value.
        let accepted = unsafe { libc::mallopt(param, value) } == 1;
        if !accepted {
            return AllocatorSetting::Unchanged(format!("glibc rejected {name} = {value}"));
        }
    }
    AllocatorSetting::KeepsFreedMemory
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> AllocatorSetting {
    AllocatorSetting::Unchanged("not glibc; nothing to tune".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn tunes_when_nothing_is_configured() {
        assert_eq!(reason_to_leave_alone(lookup(&[])), None);
        assert_eq!(
            reason_to_leave_alone(lookup(&[(OPT_OUT_VAR, "keep-freed")])),
            None
        );
    }

    #[test]
    fn respects_the_opt_out_and_the_users_own_malloc_settings() {
        let why = reason_to_leave_alone(lookup(&[(OPT_OUT_VAR, "default")])).unwrap();
        assert!(why.contains("RKIF_MALLOC=default"), "{why}");
        for name in GLIBC_MALLOC_VARS {
            let why = reason_to_leave_alone(lookup(&[(name, "1")])).unwrap();
            assert!(why.contains(name), "{why}");
        }
        let why = reason_to_leave_alone(lookup(&[(OPT_OUT_VAR, "jemalloc")])).unwrap();
        assert!(why.contains("jemalloc"), "{why}");
    }
}
