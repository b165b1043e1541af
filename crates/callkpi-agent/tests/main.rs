//! Integration tests of the agent's sources and start-up, against a real
//! spool in a temporary directory and in-test servers on 127.0.0.1.

mod agent;
