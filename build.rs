// Compiles the gRPC API. protoc comes from a vendored crate so that a fresh
// machine builds without a system protobuf compiler.
use std::path::PathBuf;
use std::process::Command;

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
    // The descriptor set serves gRPC server reflection.
    let descriptors = PathBuf::from(std::env::var("OUT_DIR")?).join("annexmesh_descriptor.bin");
    tonic_prost_build::configure()
        .bytes(".annexmesh.v1")
        .file_descriptor_set_path(&descriptors)
        .compile_protos(&protos, &["proto"])?;
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    commit();
    Ok(())
}

/// `ANNEXMESH_COMMIT` for `--version`: the commit this was built from, from
/// the environment (packagers building from a tarball) or git, else
/// "unknown".
fn commit() {
    println!("cargo:rerun-if-env-changed=ANNEXMESH_COMMIT");
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = std::env::var("ANNEXMESH_COMMIT")
        .ok()
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]));
    // Rebuild when HEAD moves: HEAD itself and the branch it points at.
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
    }
    if let (Some(common), Some(head)) =
        (git(&["rev-parse", "--git-common-dir"]), git(&["symbolic-ref", "-q", "HEAD"]))
    {
        // Only files that exist: a missing one would rerun this every build.
        for file in [format!("{common}/{head}"), format!("{common}/packed-refs")] {
            if std::path::Path::new(&file).exists() {
                println!("cargo:rerun-if-changed={file}");
            }
        }
    }
    println!("cargo:rustc-env=ANNEXMESH_COMMIT={}", commit.unwrap_or_else(|| "unknown".into()));
}
