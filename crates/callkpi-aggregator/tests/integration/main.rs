//! In-process tests of the aggregator over loopback: a tonic client
//! speaks `callkpi.v1.Ingest` to a served port, as an agent would.

mod endpoints;
mod ingest;
mod support;
mod tls;
