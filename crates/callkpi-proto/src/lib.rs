//! callkpi's wire contract: the Rust code generated from
//! `proto/callkpi/v1/*.proto` (package `callkpi.v1`), its encoded descriptor
//! set for gRPC reflection, and the lossless conversion between the core
//! event model and the wire event.
//!
//! The `.proto` files are the authority: they document every message, field
//! and unit, and the `Ingest` handshake and ack semantics. The code is
//! generated at build time by `build.rs` with protox (pure Rust, no system
//! `protoc`) and tonic-prost-build.
//!
//! Clients are generated without tonic's transport, so there is no
//! `connect` helper: build a `tonic::transport::Channel` in the binary (which
//! enables tonic's `channel` feature) and pass it to `IngestClient::new`.
//!
//! # Layout
//! - [`pb`]: generated messages, enums, clients (`ingest_client`,
//!   `reports_client`) and servers (`ingest_server`, `reports_server`).
//! - [`convert`]: `callkpi_core::event::Event` to and from [`pb::Event`].
//! - [`report`]: KPI reports and queries, core to and from the wire.
//! - [`calls`]: call summaries and timelines, core to the wire.
//! - [`events_crc32c`], [`encoded_events_crc32c`]: the `Batch.crc32c` checksum.
//! - [`FILE_DESCRIPTOR_SET`], [`CONTRACT_REVISION`]: for reflection and for
//!   the `Hello`/`Welcome` revision check.

pub mod calls;
pub mod convert;
pub mod report;

pub use convert::ConvertError;

/// Code generated from package `callkpi.v1`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic, clippy::nursery, rustdoc::all)]
pub mod pb {
    tonic::include_proto!("callkpi.v1");
}

/// The encoded `google.protobuf.FileDescriptorSet` of package `callkpi.v1`
/// (source info included), for `tonic-reflection`'s
/// `register_encoded_file_descriptor_set`.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/callkpi_v1_descriptor.bin"));

/// Revision of the `Event` schema this crate was generated from, sent in
/// `Hello.contract_revision` and `Welcome.contract_revision`.
///
/// Bump it whenever a field or a oneof case is added anywhere inside
/// `Event`: an aggregator can verify `Batch.crc32c` only by re-encoding the
/// events it decoded, which reproduces the agent's bytes only when it knows
/// every field the agent may have set.
pub const CONTRACT_REVISION: u32 = 1;

/// CRC-32C (Castagnoli), the checksum of `Batch.crc32c`.
const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// The `Batch.crc32c` of `events`: CRC-32C over the concatenation of each
/// event's encoding, prefixed by its length as a varint.
///
/// prost encodes deterministically (fields in number order; `Event` has no
/// maps), so re-encoding decoded events gives the sender's bytes back as long
/// as both sides share [`CONTRACT_REVISION`].
pub fn events_crc32c(events: &[pb::Event]) -> u32 {
    use prost::Message as _;
    let mut digest = CRC32C.digest();
    for event in events {
        digest.update(&event.encode_length_delimited_to_vec());
    }
    digest.finalize()
}

/// The same checksum as [`events_crc32c`], over events already encoded (each
/// item is one event's plain encoding, without length prefix), as a spool
/// stores them: no decoding needed.
pub fn encoded_events_crc32c<'a>(encoded: impl IntoIterator<Item = &'a [u8]>) -> u32 {
    let mut digest = CRC32C.digest();
    let mut prefix = Vec::with_capacity(10);
    for bytes in encoded {
        prefix.clear();
        prost::encoding::encode_varint(bytes.len() as u64, &mut prefix);
        digest.update(&prefix);
        digest.update(bytes);
    }
    digest.finalize()
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    fn event(seq: u64, caller: &str) -> pb::Event {
        pb::Event {
            agent_id: "agent-1".into(),
            seq,
            site: "paris".into(),
            source: pb::SourceKind::AsteriskAmi.into(),
            call_id: "1700000000.1".into(),
            leg_id: "1700000000.1".into(),
            captured_at_ns: 1_700_000_000_123_456_789,
            monotonic_ns: 42,
            source_time_ns: Some(1_700_000_000_000_000_000),
            clock_synced: true,
            kind: Some(pb::event::Kind::CallOffered(pb::event::CallOffered {
                direction: pb::Direction::Inbound.into(),
                caller: caller.into(),
                called: "0140000000".into(),
                trunk: None,
            })),
        }
    }

    #[test]
    fn crc32c_is_the_castagnoli_crc() {
        // The standard check value of CRC-32C.
        assert_eq!(CRC32C.checksum(b"123456789"), 0xE306_9283);
        assert_eq!(events_crc32c(&[]), 0);
    }

    #[test]
    fn crc32c_of_events_and_of_their_encodings_agree() {
        let events = vec![event(1, "0600000001"), event(2, "0600000002")];
        let encoded: Vec<Vec<u8>> = events.iter().map(|e| e.encode_to_vec()).collect();
        let from_events = events_crc32c(&events);
        assert_eq!(from_events, encoded_events_crc32c(encoded.iter().map(Vec::as_slice)));

        // A re-sent batch, decoded and re-encoded, checks the same.
        let batch = pb::Batch { first_seq: 1, last_seq: 2, events, crc32c: from_events };
        let resent = pb::Batch::decode(batch.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(events_crc32c(&resent.events), resent.crc32c);

        // Any change is seen, including a reordering.
        let changed = [event(1, "0600000001"), event(2, "0600000003")];
        assert_ne!(events_crc32c(&changed), from_events);
        let swapped = [event(2, "0600000002"), event(1, "0600000001")];
        assert_ne!(events_crc32c(&swapped), from_events);
    }

    #[test]
    fn descriptor_set_holds_the_three_files_and_both_services() {
        let text = String::from_utf8_lossy(FILE_DESCRIPTOR_SET);
        for needle in [
            "callkpi/v1/events.proto",
            "callkpi/v1/ingest.proto",
            "callkpi/v1/reports.proto",
            "Ingest",
            "Reports",
            "GetKpis",
        ] {
            assert!(text.contains(needle), "descriptor set lacks {needle}");
        }
    }
}
