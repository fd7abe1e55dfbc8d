//! Every end-to-end test that needs the local control plane and PostgreSQL, in one test
//! binary (one link of kube, the operator and ingest instead of thirteen). The idle-cost
//! test has a binary of its own (`tests/idle.rs`): no other test may write to the cluster
//! while it watches. Modules are named after what they test.

mod argocd;
mod support;

mod argocd_health;
mod argocd_tracking;
mod chart;
mod database;
mod database_outage;
mod exposure;
mod gateway;
mod grafana;
mod ingest;
mod ingest_deployment;
mod ingest_mqtt;
mod onboard;
mod open_data;
mod operator;
mod read;
mod real_node;
mod resilience;
mod sharing;
mod smoke;
mod tenant_database;
mod trust;
