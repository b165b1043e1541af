//! Asterisk queue_log (placeholder until the parser lands).
