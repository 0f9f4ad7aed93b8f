//! Compiles `mezzo/v1/*.proto` with protox (pure Rust), so the build needs
//! no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "mezzo/v1/common.proto",
        "mezzo/v1/scheduler.proto",
        "mezzo/v1/agent.proto",
        "mezzo/v1/raft.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Holds registry credentials: `Debug` by hand, without them
        // (src/lib.rs).
        .skip_debug(["mezzo.v1.Image"])
        .compile_fds(fds)?;
    Ok(())
}
