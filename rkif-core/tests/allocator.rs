//! `allocator::keep_freed_memory` makes glibc keep freed memory: a loop that allocates, touches
//! and frees 32-96 MiB blocks (the size of activations and gradients) faults pages in once,
//! instead of on every pass. A custom harness (`harness = false`), because the setting applies
//! to the main thread's arena and libtest runs tests on other threads; the two cases run in
//! child processes, since the setting cannot be undone.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn main() {
    use rkif_core::allocator::{
        keep_freed_memory, AllocatorSetting, GLIBC_MALLOC_VARS, OPT_OUT_VAR,
    };
    const CHILD: &str = "RKIF_ALLOCATOR_TEST_CHILD";

    if let Ok(mode) = std::env::var(CHILD) {
        if mode == "tuned" {
            assert_eq!(keep_freed_memory(), AllocatorSetting::KeepsFreedMemory);
        }
        let before = minor_faults();
        let mut checksum = 0u64;
        for i in 0..24usize {
            let n = (32 + (i % 3) * 32) << 20;
            let block = std::hint::black_box(vec![1u8; n]);
            checksum += u64::from(block[n - 1]) + u64::from(block[n / 2]);
        }
        println!("{} {checksum}", minor_faults() - before);
        return;
    }

    let faults = |mode: &str| -> i64 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap());
        child.env(CHILD, mode).env_remove(OPT_OUT_VAR);
        for name in GLIBC_MALLOC_VARS {
            child.env_remove(name);
        }
        let out = child.output().unwrap();
        assert!(out.status.success(), "{mode} child failed: {out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        stdout.split(' ').next().unwrap().trim().parse().unwrap()
    };
    let (default, tuned) = (faults("default"), faults("tuned"));
    println!("page faults: {tuned} with freed memory kept, {default} with glibc's defaults");
    // 24 blocks of 32-96 MiB are ~390k pages; kept memory faults in about one 96 MiB block's.
    assert!(
        tuned * 4 < default,
        "page faults: {tuned} with freed memory kept, {default} with glibc's defaults"
    );
    println!("test allocator: ok");
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn minor_faults() -> i64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct we own; it is plain data, valid when zeroed.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    usage.ru_minflt
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn main() {
    println!("test allocator: skipped (not glibc)");
}
