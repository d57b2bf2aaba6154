// Compiles the gRPC API. protoc comes from a vendored crate so that a fresh
// machine builds without a system protobuf compiler.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded.
        unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    let protos = [
        "proto/annexmesh/v1/agent.proto",
        "proto/annexmesh/v1/coordinator.proto",
        "proto/annexmesh/v1/admin.proto",
    ];
    tonic_prost_build::configure().bytes(".annexmesh.v1").compile_protos(&protos, &["proto"])?;
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
