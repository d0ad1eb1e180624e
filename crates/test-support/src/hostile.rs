//! Hostile workloads generated as WebAssembly text, shared by the crates' tests and the
//! e2e.

use std::fmt::Write as _;

/// A module whose one function keeps `values` values live to its end across a branch
/// each: compiling it costs time growing with the square of its size (2,000 took 1.1 s,
/// 5,000 8.8 s, 10,000 44 s, 20,000 283 s in the engine's test build) while the file
/// stays small (270 KB of binary at 10,000). `nonce` makes each module distinct, so no
/// precompile cache has it. Running it returns at once (`_start` is empty).
pub fn slow_to_compile(values: usize, nonce: u64) -> String {
    let mut wat = String::from("(module\n");
    let _ = writeln!(wat, "(memory (export \"memory\") 1)");
    let _ = writeln!(wat, "(global i64 (i64.const {}))", nonce as i64);
    wat.push_str("(func (export \"_start\"))\n");
    // Local 0 is the parameter, so nothing folds to a constant.
    wat.push_str("(func (export \"f\") (param i64) (result i64)\n");
    let _ = writeln!(wat, "(local {})", "i64 ".repeat(values.max(2) - 1));
    for i in 1..values.max(2) {
        let _ = writeln!(
            wat,
            "(if (i64.eqz (local.get {p})) (then (local.set {i} (i64.const {i}))) \
             (else (local.set {i} (i64.rotl (local.get {p}) (local.get 0)))))",
            p = i - 1
        );
    }
    wat.push_str("(local.get 0)\n");
    for i in 1..values.max(2) {
        let _ = writeln!(wat, "(i64.add (local.get {i}))");
    }
    wat.push_str("))\n");
    wat
}
