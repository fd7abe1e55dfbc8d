//! `smartregion-probe`: what the end-to-end tests do from inside a pod on the real node.
//! Each command prints one line saying what happened and exits 0 when it succeeded, 1
//! when it did not (a refused or timed-out connection is an answer, not a crash), so a
//! test reads the outcome from the pod's phase and termination message.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "smartregion-probe", version)]
struct Cli {
    #[command(subcommand)]
    command: Probe,
    /// Where the outcome is also written (Kubernetes shows it as the termination message).
    #[arg(long, global = true, default_value = "/dev/termination-log")]
    message_file: String,
}

#[derive(Subcommand)]
enum Probe {
    /// POST a body to a URL; succeeds on a 2xx answer.
    Post {
        url: String,
        /// `Name: value`, repeatable.
        #[arg(long = "header")]
        headers: Vec<String>,
        /// The request body.
        #[arg(long)]
        body: String,
        /// Attempts, one second apart, while the connection fails (Service endpoints
        /// and DNS records appear a moment after the pods are Ready).
        #[arg(long, default_value_t = 1)]
        attempts: u32,
    },
    /// GETs a URL; succeeds on a 2xx answer, and prints the status and the body.
    Get {
        url: String,
        /// `Name: value`, repeatable.
        #[arg(long = "header")]
        headers: Vec<String>,
        /// Attempts, one second apart, while the connection fails.
        #[arg(long, default_value_t = 1)]
        attempts: u32,
    },
    /// POSTs measurements to a URL without pause for a while, each request on a new
    /// connection (so the Service spreads them over the pods, as many senders would) and
    /// with one new row; succeeds when every request was answered 2xx. Prints the count
    /// of every status and of transport errors, and the first failures.
    Load {
        url: String,
        /// `Name: value`, repeatable.
        #[arg(long = "header")]
        headers: Vec<String>,
        /// The rows' sensor; request `i` carries its metric `load-<i>` at `--time`.
        #[arg(long)]
        sensor: String,
        /// RFC 3339 time of the rows.
        #[arg(long, default_value = "2026-12-01T00:00:00Z")]
        time: String,
        /// How long to keep sending.
        #[arg(long = "for")]
        seconds: u64,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 4)]
        concurrency: u32,
    },
    /// Opens a TCP connection; succeeds when it is accepted.
    Connect {
        /// HOST:PORT (a name is looked up first).
        target: String,
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
    },
    /// Looks a name up; succeeds when it has an address.
    Resolve { name: String },
    /// Accepts TCP connections on a port and answers each with one line, forever.
    Serve {
        #[arg(long, default_value_t = 9000)]
        port: u16,
    },
}

fn post(url: &str, headers: &[String], body: &str, attempts: u32) -> Result<String> {
    request(url, headers, Some(body), attempts)
}

/// One request (a POST of `body` as JSON, or a GET without one), tried up to `attempts`
/// times while the connection fails.
fn request(url: &str, headers: &[String], body: Option<&str>, attempts: u32) -> Result<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut last = None;
    for attempt in 1..=attempts.max(1) {
        let mut named = Vec::new();
        for header in headers {
            let (name, value) = header
                .split_once(':')
                .with_context(|| format!("header {header:?} is not `Name: value`"))?;
            named.push((name.trim(), value.trim()));
        }
        let answer = match body {
            Some(body) => {
                let mut request = agent.post(url);
                for (name, value) in &named {
                    request = request.header(*name, *value);
                }
                request.content_type("application/json").send(body)
            }
            None => {
                let mut request = agent.get(url);
                for (name, value) in &named {
                    request = request.header(*name, *value);
                }
                request.call()
            }
        };
        match answer {
            Ok(mut response) => {
                let status = response.status();
                let text = response.body_mut().read_to_string().unwrap_or_default();
                if status.is_success() {
                    return Ok(format!("{status} {text}"));
                }
                bail!("{url} answered {status}: {text}");
            }
            Err(error) => {
                last = Some(error);
                if attempt < attempts {
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }
    bail!(
        "{} {url} failed: {}",
        if body.is_some() { "POST" } else { "GET" },
        last.map(|e| e.to_string()).unwrap_or_default()
    )
}

/// What a load run saw.
#[derive(Default)]
struct Tally {
    sent: u64,
    /// Answers by status code.
    statuses: std::collections::BTreeMap<u16, u64>,
    transport_errors: u64,
    /// The first few failures, for the report.
    failures: Vec<String>,
}

impl Tally {
    fn failed(&mut self, what: String) {
        if self.failures.len() < 10 {
            self.failures.push(what);
        }
    }

    fn line(&self) -> String {
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(status, count)| format!("{status}={count}"))
            .collect();
        let acknowledged: u64 = self
            .statuses
            .iter()
            .filter(|(status, _)| (200..300).contains(*status))
            .map(|(_, count)| count)
            .sum();
        format!(
            "sent={} acknowledged={acknowledged} statuses=[{}] transport_errors={} failures={:?}",
            self.sent,
            statuses.join(","),
            self.transport_errors,
            self.failures
        )
    }

    fn all_acknowledged(&self) -> bool {
        self.sent > 0
            && self.transport_errors == 0
            && self
                .statuses
                .keys()
                .all(|status| (200..300).contains(status))
    }
}

struct Load<'a> {
    url: &'a str,
    headers: &'a [String],
    sensor: &'a str,
    time: &'a str,
    seconds: u64,
    concurrency: u32,
}

fn load(load: &Load) -> Result<String> {
    let next = std::sync::atomic::AtomicU64::new(0);
    let tally = std::sync::Mutex::new(Tally::default());
    let deadline = std::time::Instant::now() + Duration::from_secs(load.seconds);
    // No pooled connections: each request opens its own.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_idle_connections(0)
        .timeout_global(Some(Duration::from_secs(15)))
        .build()
        .into();
    std::thread::scope(|scope| {
        for _ in 0..load.concurrency.max(1) {
            scope.spawn(|| {
                while std::time::Instant::now() < deadline {
                    let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let body = format!(
                        r#"[{{"sensor":"{}","metric":"load-{index}","time":"{}","value":{index}}}]"#,
                        load.sensor, load.time
                    );
                    let mut request = agent.post(load.url).header("Connection", "close");
                    for header in load.headers {
                        if let Some((name, value)) = header.split_once(':') {
                            request = request.header(name.trim(), value.trim());
                        }
                    }
                    let outcome = request.content_type("application/json").send(&body);
                    let mut tally = tally.lock().expect("no thread panics holding it");
                    tally.sent += 1;
                    match outcome {
                        Ok(mut response) => {
                            let status = response.status().as_u16();
                            *tally.statuses.entry(status).or_default() += 1;
                            if !(200..300).contains(&status) {
                                let text = response.body_mut().read_to_string().unwrap_or_default();
                                tally.failed(format!("request {index}: {status} {text}"));
                            }
                        }
                        Err(error) => {
                            tally.transport_errors += 1;
                            tally.failed(format!("request {index}: {error}"));
                        }
                    }
                }
            });
        }
    });
    let tally = tally.into_inner().expect("no thread panicked");
    if tally.all_acknowledged() {
        Ok(tally.line())
    } else {
        bail!("{}", tally.line())
    }
}

fn addresses(target: &str) -> Result<Vec<SocketAddr>> {
    let found: Vec<SocketAddr> = target
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {target}"))?
        .collect();
    if found.is_empty() {
        bail!("{target} has no address");
    }
    Ok(found)
}

fn connect(target: &str, timeout: Duration) -> Result<String> {
    let address = addresses(target)?[0];
    let mut stream = TcpStream::connect_timeout(&address, timeout)
        .with_context(|| format!("connection to {target} ({address}) failed"))?;
    // A listener of `serve` greets; anything else may say nothing.
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    let mut greeting = [0u8; 64];
    let read = stream.read(&mut greeting).unwrap_or(0);
    Ok(format!(
        "connected to {target} ({address}) {}",
        String::from_utf8_lossy(&greeting[..read]).trim()
    ))
}

fn serve(port: u16) -> Result<String> {
    let listener = TcpListener::bind(("0.0.0.0", port))
        .with_context(|| format!("cannot listen on port {port}"))?;
    println!("listening on port {port}");
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let peer = stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        println!("connection from {peer}");
        let _ = stream.write_all(b"smartregion-probe\n");
    }
    Ok("listener closed".into())
}

fn run(probe: &Probe) -> Result<String> {
    match probe {
        Probe::Post {
            url,
            headers,
            body,
            attempts,
        } => post(url, headers, body, *attempts),
        Probe::Get {
            url,
            headers,
            attempts,
        } => request(url, headers, None, *attempts),
        Probe::Load {
            url,
            headers,
            sensor,
            time,
            seconds,
            concurrency,
        } => load(&Load {
            url,
            headers,
            sensor,
            time,
            seconds: *seconds,
            concurrency: *concurrency,
        }),
        Probe::Connect { target, timeout_ms } => {
            connect(target, Duration::from_millis(*timeout_ms))
        }
        Probe::Resolve { name } => {
            let found = addresses(&format!("{name}:0"))?;
            Ok(format!("{name} has {}", found[0].ip()))
        }
        Probe::Serve { port } => serve(*port),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (line, code) = match run(&cli.command) {
        Ok(line) => (format!("ok: {line}"), ExitCode::SUCCESS),
        Err(error) => (format!("failed: {error:#}"), ExitCode::FAILURE),
    };
    println!("{line}");
    // Outside a pod the file may not exist; the line above is the outcome then.
    let _ = std::fs::write(&cli.message_file, &line);
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_succeeds_only_when_every_request_was_acknowledged() {
        let mut tally = Tally::default();
        assert!(!tally.all_acknowledged(), "nothing sent");
        tally.sent = 2;
        tally.statuses.insert(200, 2);
        assert!(tally.all_acknowledged());
        tally.statuses.insert(503, 1);
        assert!(!tally.all_acknowledged());
        assert!(
            tally.line().contains("statuses=[200=2,503=1]"),
            "{}",
            tally.line()
        );
        let mut broken = Tally {
            sent: 1,
            transport_errors: 1,
            ..Tally::default()
        };
        broken.statuses.clear();
        assert!(!broken.all_acknowledged());
    }
}
