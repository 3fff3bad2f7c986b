//! Fuzzes every dataplane program through `BPF_PROG_TEST_RUN` (see
//! `vxdp_tests::fuzz` for the frames and the invariants checked).
//!
//! 20,000 frames per program by default (part of `cargo xtask test`);
//! `VXDP_FUZZ_FRAMES` raises it (`cargo xtask fuzz` runs 1,000,000), and
//! `VXDP_FUZZ_SEED` replays a run whose seed a failure printed.
//!
//! Needs root (network namespaces, BPF).

use vxdp_tests::{
    fuzz::{Prog, frames_from_env, fuzz, seed_from_env},
    progtest::with_nat_world,
};

#[test]
fn every_program_survives_random_and_mutated_frames() {
    let frames = frames_from_env(20_000);
    let seed = seed_from_env();
    println!(
        "fuzz: seed {seed:#x} (replay with VXDP_FUZZ_SEED={seed:#x} VXDP_FUZZ_FRAMES={frames}), {frames} frames per program"
    );
    with_nat_world(|w| {
        let report = fuzz(w, seed, frames);
        println!("{}", report.summary());
        for p in Prog::ALL {
            let st = report
                .per_prog
                .get(&p)
                .unwrap_or_else(|| panic!("{} was never run", p.name()));
            assert!(
                st.frames >= frames,
                "{} ran {} frames, fewer than {frames}",
                p.name(),
                st.frames
            );
            assert!(
                st.frames - st.refused_by_kernel > frames / 2,
                "{}: the kernel refused most frames ({} of {}): the fuzzer tests nothing",
                p.name(),
                st.refused_by_kernel,
                st.frames
            );
        }
        assert!(
            report.failures.is_empty(),
            "seed {seed:#x}: {} invariant violations, the first {}:\n{}",
            report.failures.len() as u64 + report.more_failures,
            report.failures.len(),
            report.failures.join("\n")
        );
    });
}
