//! How every benchmark reports: the median, min and max of its samples,
//! and the ratio to its baseline.

/// Median, min, max of samples.
pub fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// Prints a benchmark's median, min and max in `unit`.
pub fn line(name: &str, unit: &str, v: (f64, f64, f64)) {
    println!(
        "{name:<44} median {:>10.3} {unit}  (min {:.3}, max {:.3})",
        v.0, v.1, v.2
    );
}

/// Prints `a` against its baseline `b`.
pub fn ratio(name: &str, a: f64, b: f64) {
    println!("{name:<44} ratio  {:>10.2}x", a / b);
}
