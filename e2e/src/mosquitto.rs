//! A local MQTT broker (Debian's Mosquitto) for the ingest tests, on a free loopback port
//! under the cluster's state directory, so `cluster down` stops it if a test could not.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::Cluster;
use crate::control_plane::free_port;
use crate::process::{self, Signal};

pub struct Mosquitto {
    pid: u32,
    pub port: u16,
    marker: PathBuf,
    dir: PathBuf,
}

fn binary() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("mosquitto"))
        .find(|candidate| candidate.is_file())
        .context("mosquitto not found; install it with `apt-get install mosquitto` (e2e/test does)")
}

impl Mosquitto {
    pub async fn start(cluster: &Cluster, name: &str) -> Result<Mosquitto> {
        let dir = cluster.state_dir.join(name);
        std::fs::create_dir_all(&dir)?;
        let port = free_port()?;
        let config = dir.join("mosquitto.conf");
        std::fs::write(
            &config,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        )?;
        let pid = process::spawn_detached(
            &binary()?,
            &["-c".into(), config.display().to_string()],
            &dir.join("mosquitto.log"),
            None,
        )?;
        let marker = PathBuf::from(format!("{}/", cluster.state_dir.display()));
        crate::wait::until(
            "mosquitto to listen",
            Duration::from_secs(10),
            || async move {
                Ok(tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| ()))
            },
        )
        .await?;
        Ok(Mosquitto {
            pid,
            port,
            marker,
            dir,
        })
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = process::stop(
            self.pid,
            &self.marker,
            Signal::SIGTERM,
            Duration::from_secs(5),
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
