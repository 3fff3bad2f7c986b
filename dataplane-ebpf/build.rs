//! Link options for the eBPF object (bpf-linker).
//!
//! bpf-linker passes `--bpf-expand-memcpy-in-order` to LLVM by default.
//! That option sets LLVM's inline limits for `memset` and `memmove` to zero,
//! so every zeroed padding field, every zero-initialised struct and every
//! struct copied out of a map value becomes a call to a byte-by-byte loop
//! (aya-ebpf's `memset`/`memmove`): a 40-byte conntrack entry copy cost
//! about 300 instructions per packet on the NAT path. Without the option
//! LLVM expands small memory operations into loads and stores, as clang
//! does for C programs. (The in-order expansion only matters to old JITs
//! that pattern-matched memcpy sequences.)
fn main() {
    println!("cargo::rustc-link-arg-bins=--disable-expand-memcpy-in-order");
}
