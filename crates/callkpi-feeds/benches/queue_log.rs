//! Placeholder: replaced by the queue_log parser bench.
fn main() {}
