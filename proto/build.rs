//! Compiles `mezzo/v1/*.proto` with protox (pure Rust), so the build needs
//! no system `protoc`; and `mesos/v1/*.proto` into a descriptor set only
//! (no Rust code: Mesos' protobuf bodies go through `src/mesos/types.rs`,
//! see `src/mesos/protobuf.rs`).

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
        // A task and its framework's info inline made every message to an
        // agent (a heartbeat too) 1,352 bytes: each agent's queue and every
        // turn's list of effects held that per message.
        .boxed(".mezzo.v1.MasterMessage.message.run_task")
        // Set on few tasks, and 1 KiB of every task record inline when
        // not boxed: the leader holds one record per task (issue 17).
        .boxed(".mezzo.v1.TaskInfo.executor")
        .boxed(".mezzo.v1.TaskInfo.container")
        .boxed(".mezzo.v1.TaskInfo.health_check")
        // 1 KiB stream buffers instead of 8 (src/codec.rs).
        .codec_path("crate::codec::LeanCodec")
        .compile_fds(fds)?;

    let mesos = ["mesos/v1/mesos.proto", "mesos/v1/scheduler/scheduler.proto"];
    for f in mesos {
        println!("cargo:rerun-if-changed={f}");
    }
    let set = protox::Compiler::new(["."])?
        .include_imports(true)
        .open_files(mesos)?
        .encode_file_descriptor_set();
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("mesos_v1.bin");
    std::fs::write(out, set)?;
    Ok(())
}
