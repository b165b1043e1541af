//! Placeholder: replaced by the ami parser bench.
fn main() {}
