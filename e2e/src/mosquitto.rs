//! A local MQTT broker (Debian's Mosquitto) for the ingest tests and the benchmark, on a
//! free port under the cluster's state directory, so `cluster down` stops it if a test
//! could not; and devices that publish to it as sensors do: one reading per message at
//! QoS 1, each waiting for the broker's PUBACK before the next.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

use crate::Cluster;
use crate::control_plane::free_port;
use crate::process::{self, Signal};

pub struct Mosquitto {
    pid: u32,
    pub address: IpAddr,
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

/// How the broker is set up.
#[derive(Clone, Copy, Debug)]
pub struct Broker {
    /// Where it listens: loopback, or the node link's host end so pods reach it.
    pub address: IpAddr,
    /// Unacknowledged messages it sends one client at once (Mosquitto's default is 20).
    pub max_inflight: u16,
    /// Messages it queues for a client beyond those in flight; 0: no limit (Mosquitto's
    /// default is 1000, after which it drops QoS 1 messages for an absent client).
    pub max_queued: u32,
}

impl Default for Broker {
    /// Mosquitto's defaults, on loopback.
    fn default() -> Self {
        Broker {
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            max_inflight: 20,
            max_queued: 1000,
        }
    }
}

impl Broker {
    /// What a broker in front of many single-reading devices is set up for: many
    /// unacknowledged messages per subscriber (so one commit can take many), and a queue
    /// that holds whatever arrives while the subscriber's pod is replaced.
    pub fn for_devices(address: IpAddr) -> Broker {
        Broker {
            address,
            max_inflight: 1000,
            max_queued: 0,
        }
    }
}

impl Mosquitto {
    /// Mosquitto's defaults on loopback.
    pub async fn start(cluster: &Cluster, name: &str) -> Result<Mosquitto> {
        Self::start_with(cluster, name, Broker::default()).await
    }

    pub async fn start_with(cluster: &Cluster, name: &str, broker: Broker) -> Result<Mosquitto> {
        let dir = cluster.state_dir.join(name);
        std::fs::create_dir_all(&dir)?;
        let port = free_port()?;
        let config = dir.join("mosquitto.conf");
        std::fs::write(
            &config,
            format!(
                "listener {port} {}\nallow_anonymous true\npersistence false\n\
                 max_inflight_messages {}\nmax_queued_messages {}\nset_tcp_nodelay true\n",
                broker.address, broker.max_inflight, broker.max_queued
            ),
        )?;
        let pid = process::spawn_detached(
            &binary()?,
            &["-c".into(), config.display().to_string()],
            &dir.join("mosquitto.log"),
            None,
        )?;
        let marker = PathBuf::from(format!("{}/", cluster.state_dir.display()));
        let address = broker.address;
        crate::wait::until(
            "mosquitto to listen",
            Duration::from_secs(10),
            || async move {
                Ok(tokio::net::TcpStream::connect((address, port))
                    .await
                    .ok()
                    .map(|_| ()))
            },
        )
        .await?;
        Ok(Mosquitto {
            pid,
            address,
            port,
            marker,
            dir,
        })
    }

    pub fn url(&self) -> String {
        format!("mqtt://{}:{}", self.address, self.port)
    }

    /// The broker's process, for its CPU time.
    pub fn pid(&self) -> u32 {
        self.pid
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

/// What a fleet of devices did.
#[derive(Debug, Default)]
pub struct Published {
    /// `(device, message)` of every message the broker acknowledged.
    pub acknowledged: Vec<(usize, usize)>,
    /// Publish to PUBACK, per acknowledged message.
    pub latencies: Vec<Duration>,
    /// Messages the broker did not acknowledge (the device's connection broke).
    pub unacknowledged: usize,
}

impl Published {
    /// The `q` quantile of the latencies (0.5: the median).
    pub fn latency(&mut self, q: f64) -> Duration {
        self.latencies.sort();
        let at = ((self.latencies.len() as f64 * q) as usize)
            .min(self.latencies.len().saturating_sub(1));
        self.latencies.get(at).copied().unwrap_or_default()
    }
}

/// `devices` devices publish to `address:port` until `until`, each one message at a time
/// (QoS 1, the next once the broker acknowledged the last): message `m` of device `d` on
/// `topic(d)` with `payload(d, m)`. Connections are opened before the clock starts.
pub async fn publish_readings(
    address: IpAddr,
    port: u16,
    devices: usize,
    until: Instant,
    topic: impl Fn(usize) -> String + Send + Sync + 'static,
    payload: impl Fn(usize, usize) -> String + Send + Sync + 'static,
) -> Result<Published> {
    let topic = std::sync::Arc::new(topic);
    let payload = std::sync::Arc::new(payload);
    let mut fleet = Vec::new();
    let id = crate::unique_name("device");
    for device in 0..devices {
        let mut options = MqttOptions::new(format!("{id}-{device}"), address.to_string(), port);
        options.set_keep_alive(Duration::from_secs(30));
        let (client, mut events) = AsyncClient::new(options, 10);
        // Connected before the clock starts.
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Event::Incoming(Packet::ConnAck(_)) = events.poll().await? {
                    return anyhow::Ok(());
                }
            }
        })
        .await
        .context("a device did not connect")??;
        fleet.push((device, client, events));
    }
    let mut tasks = Vec::new();
    for (device, client, mut events) in fleet {
        let (topic, payload) = (topic.clone(), payload.clone());
        tasks.push(tokio::spawn(async move {
            let mut published = Published::default();
            for message in 0.. {
                if Instant::now() >= until {
                    break;
                }
                let started = Instant::now();
                client
                    .publish(
                        topic(device),
                        QoS::AtLeastOnce,
                        false,
                        payload(device, message),
                    )
                    .await?;
                let acknowledged = async {
                    loop {
                        match events.poll().await {
                            Ok(Event::Incoming(Packet::PubAck(_))) => return true,
                            Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => return false,
                            Ok(_) => {}
                        }
                    }
                };
                match tokio::time::timeout(Duration::from_secs(30), acknowledged).await {
                    Ok(true) => {
                        published.latencies.push(started.elapsed());
                        published.acknowledged.push((device, message));
                    }
                    _ => {
                        published.unacknowledged += 1;
                        break;
                    }
                }
            }
            let _ = client.disconnect().await;
            anyhow::Ok(published)
        }));
    }
    let mut all = Published::default();
    for task in tasks {
        let published = task.await??;
        all.acknowledged.extend(published.acknowledged);
        all.latencies.extend(published.latencies);
        all.unacknowledged += published.unacknowledged;
    }
    if all.acknowledged.is_empty() && devices > 0 {
        bail!("the broker acknowledged no message");
    }
    Ok(all)
}
