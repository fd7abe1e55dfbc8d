//! A real, local Kubernetes control plane and PostgreSQL for end-to-end tests and the demo.
//!
//! No Docker engine is available, so instead of kind this crate runs the real components
//! (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok) as host processes,
//! built from their Go modules by `e2e/go/build.sh`, plus a throwaway PostgreSQL cluster.
//!
//! Processes outlive the command that started them: `e2e/cluster up` returns while the
//! cluster keeps running, and later runs (or tests) find it through the state directory.
//! Tests call [`shared`] and build their own clients from [`Cluster::kubeconfig`].

mod control_plane;
pub mod node;
pub mod paths;
mod pki;
pub mod postgres;
pub(crate) mod process;
mod state;

pub mod api_reference;
pub mod apiserver;
pub mod apply;
pub mod bench;
pub mod cgroup;
pub mod chart_operator;
pub mod cluster;
pub mod dcat;
pub mod gateway;
pub mod gateway_api;
pub mod helm;
pub mod http;
pub mod image;
pub mod ingest;
pub mod mosquitto;
pub mod operator;
pub mod pglite;
pub mod pods;
pub mod wait;
pub mod workload;

pub use cluster::{Cluster, shared};
pub use postgres::{Engine, Server as PostgresServer};

/// `prefix` plus a random suffix, so every test run works in its own objects even on a
/// cluster that earlier runs used. Stays a valid tenant and namespace name when `prefix`
/// is a DNS label of at most 33 characters.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let mixed = nanos
        ^ std::process::id().rotate_left(16)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9);
    format!("{prefix}-{:06x}", mixed & 0xff_ffff)
}
