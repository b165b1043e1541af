//! Asterisk Manager Interface (placeholder until the parser lands).
