//! Generates the Rust code of the public API from `proto/mfs/v1/*.proto`
//! with protox (pure Rust: no system protoc needed).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/mfs/v1/common.proto",
        "proto/mfs/v1/meta.proto",
        "proto/mfs/v1/admin.proto",
        "proto/mfs/v1/chunk.proto",
        "proto/mfs/v1/chunkserver.proto",
        "proto/mfs/v1/raft.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out.join("mfs_descriptor.bin");
    std::fs::write(&descriptor_path, prost::Message::encode_to_vec(&fds))?;
    // The big data fields are `bytes::Bytes`: decoding them takes a slice of
    // the receive buffer instead of a copy, and a chunkserver forwards the
    // same buffer down the chain.
    tonic_prost_build::configure()
        .bytes(".mfs.v1.ChunkWriteRequest.data")
        .bytes(".mfs.v1.ChunkWriteRange.data")
        .bytes(".mfs.v1.ChunkReadReply.data")
        // Encode buffers grown once to each message's size (see codec.rs).
        .codec_path("crate::codec::SizedCodec")
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        .compile_fds(fds)?;
    Ok(())
}
