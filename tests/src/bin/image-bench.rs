//! Benchmark driver for `scripts/bench-images` (issue 15): pulling an
//! image from a registry on loopback into the agent's image store, against
//! `skopeo copy` of the same image into an OCI layout, side by side.
//!
//! The image: the host's busybox-static plus one layer of `--mib` MiB of
//! incompressible bytes, pushed to Debian's `docker-registry` on a free
//! loopback port. Timed, one at a time:
//!
//! - *mezzo cold pull*: `Puller::pull` into an empty store (manifest,
//!   config and every layer fetched, verified and unpacked);
//! - *mezzo warm pull*: the same pull into the store that has it (one
//!   manifest request, nothing downloaded): what a task of a cached image
//!   pays;
//! - *skopeo copy*: `skopeo copy docker://… oci:DIR` into an empty layout
//!   (fetched and verified, not unpacked).

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use hdrhistogram::Histogram;
use mezzo_agent::images::{Puller, RegistryConfig, RemoteImage, Store};
use mezzo_tests::oci::{Entry, busybox_layout, noise};
use mezzo_tests::registry::Registry;

#[derive(Debug, Parser)]
#[command(about = "Image pulls from a loopback registry: Mezzo's store against skopeo")]
struct Args {
    /// Size of the image's own layer, MiB (busybox's base layer comes on top).
    #[arg(long, default_value_t = 50)]
    mib: usize,
    /// Timed pulls of each kind.
    #[arg(long, default_value_t = 10)]
    runs: usize,
}

fn ms(d: Duration) -> u64 {
    (d.as_micros() as u64).max(1)
}

fn line(name: &str, h: &Histogram<u64>) {
    let q = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "  {name:<18} p50 {:>8.1} ms  p99 {:>8.1} ms  ({} runs)",
        q(0.5),
        q(0.99),
        h.len()
    );
    println!(
        "RESULT {{\"system\":\"{name}\",\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"runs\":{}}}",
        q(0.5),
        q(0.99),
        h.len()
    );
}

fn main() -> Result<()> {
    let a = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(a))
}

async fn run(a: Args) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let registry = Registry::start().await?;
    let data = noise(a.mib << 20, 0x9e37_79b9_7f4a_7c15);
    let layout = dir.path().join("layout");
    busybox_layout(
        &layout,
        "1",
        serde_json::json!({}),
        &[Entry::File("data/blob.bin", &data, 0o644)],
    )?;
    drop(data);
    registry.push(&layout, "1", "bench/big").await?;
    println!(
        "image: busybox + {} MiB layer, registry {} (docker-registry), {} runs each",
        a.mib, registry.host, a.runs
    );

    let puller = Puller::new(&RegistryConfig {
        insecure: vec![registry.host.clone()],
        extra_ca: None,
    })?;
    let (mut cold, mut warm, mut skopeo) = (hist()?, hist()?, hist()?);
    for i in 0..a.runs {
        let store_dir = dir.path().join(format!("store-{i}"));
        let host = registry.host.clone();
        let puller = puller.clone();
        let (c, w) = tokio::task::spawn_blocking(move || -> Result<(Duration, Duration)> {
            let store = Store::open(&store_dir)?;
            let remote = RemoteImage {
                host: &host,
                repository: "bench/big",
                lookup: "1",
                digest: None,
                credentials: None,
            };
            let t = Instant::now();
            puller.pull(&store, &remote)?;
            let cold = t.elapsed();
            let t = Instant::now();
            puller.pull(&store, &remote)?;
            let warm = t.elapsed();
            std::fs::remove_dir_all(&store_dir)?;
            Ok((cold, warm))
        })
        .await??;
        cold.record(ms(c))?;
        warm.record(ms(w))?;

        let out = dir.path().join(format!("skopeo-{i}"));
        let t = Instant::now();
        let status = tokio::process::Command::new("skopeo")
            .args(["copy", "--insecure-policy", "--src-tls-verify=false", "--quiet"])
            .arg(format!("docker://{}/bench/big:1", registry.host))
            .arg(format!("oci:{}:1", out.display()))
            .status()
            .await
            .context("skopeo")?;
        anyhow::ensure!(status.success(), "skopeo copy failed: {status}");
        skopeo.record(ms(t.elapsed()))?;
        std::fs::remove_dir_all(&out)?;
    }
    line("mezzo cold pull", &cold);
    line("mezzo warm pull", &warm);
    line("skopeo copy", &skopeo);
    let p50 = |h: &Histogram<u64>| h.value_at_quantile(0.5) as f64;
    println!(
        "summary: cold pull p50 {:.2}x skopeo's (lower is faster)",
        p50(&cold) / p50(&skopeo)
    );
    Ok(())
}

fn hist() -> Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 600_000_000, 3)?)
}
