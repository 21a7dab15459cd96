//! Writes `runtime.v1.rs` (prost messages and the tonic RuntimeService/ImageService
//! clients) for `node/proto/api.proto` into the directory given as the first argument.
//! Needs `protoc` (Debian: protobuf-compiler). Run through `scripts/gen-cri.sh`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args().nth(1).ok_or("usage: logbook-cri-gen OUT_DIR PROTO_DIR")?;
    let protos = std::env::args().nth(2).ok_or("usage: logbook-cri-gen OUT_DIR PROTO_DIR")?;
    tonic_prost_build::configure()
        .build_server(false)
        .out_dir(&out)
        .compile_protos(&[format!("{protos}/api.proto")], &[protos])?;
    Ok(())
}
