//! The binary's own symbols for the C library.

/// `pow(3)`, from the `libm` crate (Rust's port of musl's), so that a shim does not load
/// glibc's libm.so for it: tokio's multi-thread scheduler (its task-poll-time average) is
/// the only caller of anything in libm, and with `pow` defined here the linker
/// (`--as-needed`) leaves libm.so out. One shared library fewer for every shim start to
/// map and relocate, and about 0.5 MiB less mapped into a node-grouped shim.
#[unsafe(no_mangle)]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}

#[cfg(test)]
mod tests {
    use super::pow;

    // Not against `f64::powf`: in this binary that is a call to the `pow` above.
    #[test]
    fn pow_answers_as_the_c_library_does() {
        assert_eq!(pow(2.0, 10.0), 1024.0);
        assert_eq!(pow(2.0, 0.5), std::f64::consts::SQRT_2);
        assert_eq!(pow(10.0, -2.0), 0.01);
        assert_eq!(pow(-8.0, 3.0), -512.0);
        assert_eq!(pow(0.0, 0.0), 1.0);
        assert_eq!(pow(0.9, 0.0), 1.0);
        assert_eq!(pow(f64::INFINITY, -1.0), 0.0);
        assert!(pow(-8.0, 0.5).is_nan());
    }
}
