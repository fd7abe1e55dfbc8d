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
pub mod paths;
mod pki;
mod postgres;
mod process;
mod state;

pub mod cluster;
pub mod wait;

pub use cluster::{Cluster, shared};
