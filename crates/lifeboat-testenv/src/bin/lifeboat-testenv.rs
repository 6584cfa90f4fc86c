//! Runs the test control plane outside the test suite: `up` for a local API server to try
//! Lifeboat against (`up --node` adds a real node that runs pods), `bench` to measure its warm
//! start (process spawn → CRDs Established).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use lifeboat_testenv::{ControlPlane, Node, NodeOptions, install_crds};

#[derive(Parser)]
#[command(
    about = "Lifeboat's local Kubernetes control plane (etcd + kube-apiserver + kube-controller-manager)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a control plane with Lifeboat's CRDs installed and keep it running until SIGINT or
    /// SIGTERM.
    Up {
        /// Also write the admin kubeconfig here (it is written last, once everything is ready).
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// Also start a node (containerd, kubelet, kube-scheduler) so pods run; needs root.
        #[arg(long)]
        node: bool,
        /// OCI image archives (*.tar) to import into the node, e.g. target/node-images from
        /// hack/node/images.sh.
        #[arg(long, requires = "node")]
        images: Option<PathBuf>,
        /// Leave the CRDs out, for an install that brings its own (`helm install`).
        #[arg(long)]
        no_crds: bool,
    },
    /// Start and stop a control plane several times and report the start-up times.
    Bench {
        #[arg(long, default_value_t = 5)]
        runs: u32,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up {
            kubeconfig,
            node,
            images,
            no_crds,
        } => up(kubeconfig, node.then_some(NodeOptions { images }), !no_crds).await,
        Command::Bench { runs } => bench(runs).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lifeboat-testenv: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Starts a control plane, with the CRDs installed when `crds`; returns it with the time taken.
async fn start(crds: bool) -> Result<(ControlPlane, Duration), lifeboat_testenv::Error> {
    let t0 = Instant::now();
    let cp = ControlPlane::start(true).await?;
    if crds {
        install_crds(&cp.client().await?).await?;
    }
    Ok((cp, t0.elapsed()))
}

async fn up(
    kubeconfig: Option<PathBuf>,
    node: Option<NodeOptions>,
    crds: bool,
) -> Result<(), lifeboat_testenv::Error> {
    let (cp, took) = start(crds).await?;
    println!(
        "control plane ready in {:.1}s at {}",
        took.as_secs_f64(),
        cp.server()
    );
    let node = match node {
        Some(options) => {
            let node = Node::start(&cp, &options).await?;
            println!(
                "node {} ready in {:.1}s (files in {}); pods reach the host at {}",
                node.name(),
                node.start_time().as_secs_f64(),
                node.dir().display(),
                node.gateway()
            );
            Some(node)
        }
        None => None,
    };
    let path = match kubeconfig {
        Some(out) => {
            std::fs::copy(cp.kubeconfig(), &out)
                .map_err(|e| lifeboat_testenv::Error::Io(out.display().to_string(), e))?;
            out
        }
        None => cp.kubeconfig().to_path_buf(),
    };
    println!("export KUBECONFIG={}", path.display());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| lifeboat_testenv::Error::Io("SIGTERM handler".into(), e))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    println!("stopping");
    drop(node);
    drop(cp);
    Ok(())
}

async fn bench(runs: u32) -> Result<(), lifeboat_testenv::Error> {
    let mut times = Vec::new();
    for run in 1..=runs.max(1) {
        let (cp, took) = start(true).await?;
        drop(cp);
        println!("run {run}: {:.2}s", took.as_secs_f64());
        times.push(took.as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "warm start (spawn → CRDs Established), {} runs: min {:.2}s, median {:.2}s, max {:.2}s",
        times.len(),
        times[0],
        median,
        times[times.len() - 1]
    );
    Ok(())
}
