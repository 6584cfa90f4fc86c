//! The operator binary.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use kube::Api;
use lifeboat_operator::config::{AgentConfig, AgentFlags};
use lifeboat_operator::context::Context;
use lifeboat_operator::leader::{LeaderElector, LeaseConfig};
use lifeboat_operator::metrics::Metrics;
use tokio::sync::watch;
use tracing::{error, info};

#[derive(Parser)]
#[command(
    version,
    about = "Lifeboat operator: backups, restores and disaster-recovery drills for Kubernetes"
)]
struct Args {
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "LIFEBOAT_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    #[command(flatten)]
    agent: AgentFlags,
    /// Watch only this namespace (install with a Role instead of a ClusterRole).
    #[arg(long, env = "LIFEBOAT_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Act only while holding the Lease `--lease-name` (run two replicas for availability).
    #[arg(long, env = "LIFEBOAT_LEADER_ELECTION")]
    leader_election: bool,
    /// The leader Lease's name: one per installation, so that two in one namespace do not
    /// share a leader.
    #[arg(long, env = "LIFEBOAT_LEASE_NAME", default_value = "lifeboat-operator")]
    lease_name: String,
    /// The operator's own namespace: the Lease's, and the master signing key's.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    leader_election_namespace: String,
    /// How long the Lease holds without renewal: the longest a dead leader delays its successor.
    /// The leader renews every third of it.
    #[arg(
        long,
        env = "LIFEBOAT_LEASE_DURATION_SECONDS",
        default_value_t = 15,
        value_parser = clap::value_parser!(u64).range(2..=300)
    )]
    lease_duration_seconds: u64,
    /// The Secret in the operator's namespace holding the master signing key (key `key`, at
    /// least 32 bytes), from which each namespace's key is derived. Without it no Job is made.
    #[arg(long, env = "LIFEBOAT_SIGNING_KEY_SECRET")]
    signing_key_secret: Option<String>,
    /// Log as JSON lines (for log collectors) instead of text.
    #[arg(long, env = "LIFEBOAT_LOG_JSON")]
    log_json: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if args.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "operator stopped");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let client = kube::Client::try_default().await?;
    let metrics = Metrics::new()?;
    let agent = AgentConfig {
        log_json: args.log_json,
        ..AgentConfig::from(args.agent)
    };
    let mut ctx = Context::new(client, metrics.clone(), agent);
    if let Some(name) = &args.signing_key_secret {
        ctx = ctx.with_signing_key(lifeboat_operator::signing_key::MasterKeySecret::new(
            &args.leader_election_namespace,
            name,
        )?);
    }
    let ctx = Arc::new(ctx);

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let ready = Arc::new(AtomicBool::new(false));
    let server = tokio::spawn(lifeboat_operator::server::serve(
        args.metrics_addr,
        metrics,
        ready.clone(),
        stopped(stop_rx.clone()),
    ));
    ready.store(true, Ordering::Relaxed);
    info!(metrics = %args.metrics_addr, "operator started");

    let elector = args.leader_election.then(|| {
        let identity = std::env::var("POD_NAME")
            .unwrap_or_else(|_| format!("{}-{}", hostname(), std::process::id()));
        LeaderElector::new(
            Api::namespaced(ctx.client.clone(), &args.leader_election_namespace),
            &args.lease_name,
            &identity,
            LeaseConfig::with_duration(Duration::from_secs(args.lease_duration_seconds)),
        )
    });
    if let Some(elector) = &elector {
        tokio::select! {
            _ = elector.acquire() => {}
            _ = shutdown_signal() => {
                let _ = stop_tx.send(true);
                server.await??;
                return Ok(());
            }
        }
    }
    let controllers = tokio::spawn(lifeboat_operator::run(
        ctx,
        args.namespace,
        stopped(stop_rx),
    ));
    let lost = async {
        match &elector {
            Some(e) => e.hold().await,
            None => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        _ = shutdown_signal() => Ok(()),
        _ = lost => Err("lost the leader lease; exiting so that only one replica acts".into()),
    };
    info!("shutting down");
    let _ = stop_tx.send(true);
    controllers.await?;
    server.await??;
    result
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "lifeboat-operator".into())
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_lease_name_is_the_charts_per_release_flag() {
        let args = Args::try_parse_from(["lifeboat-operator", "--lease-name=b-lifeboat-operator"])
            .unwrap();
        assert_eq!(args.lease_name, "b-lifeboat-operator");
        let args = Args::try_parse_from(["lifeboat-operator"]).unwrap();
        assert_eq!(
            args.lease_name, "lifeboat-operator",
            "what earlier releases held"
        );
    }
}
