//! The `switchboard.v1` gRPC API: code generated from `proto/switchboard/v1/switchboard.proto`
//! (by protox and tonic-prost-build at build time, no system protoc) and the conversions between
//! the core model and the wire types.
//!
//! **Architecture Invariant:** the only crate that knows both the core model and the wire
//! format. The server and the CLI convert through here and nowhere else.

#[allow(
    missing_docs,
    missing_debug_implementations,
    unused_qualifications,
    clippy::all,
    reason = "generated code"
)]
pub mod v1 {
    tonic::include_proto!("switchboard.v1");
}

/// The encoded file descriptor set, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/switchboard_descriptor.bin"));

pub mod convert;
