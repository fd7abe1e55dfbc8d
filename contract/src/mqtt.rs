//! The MQTT broker address: checked by the operator when it validates a tenant (and
//! opens egress to its port), used by ingest when it connects.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("MQTT URL {0:?} must look like mqtt://host[:port] or mqtts://host[:port]")]
pub struct BadUrl(pub String);

/// A broker address, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broker {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

/// `mqtt://host[:port]` or `mqtts://host[:port]`, with the protocol's default ports.
pub fn parse_url(url: &str) -> Result<Broker, BadUrl> {
    let bad = || BadUrl(url.to_string());
    let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("mqtt://") {
        (false, rest)
    } else {
        return Err(bad());
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().map_err(|_| bad())?),
        None => (rest, if tls { 8883 } else { 1883 }),
    };
    if host.is_empty() || host.contains(['/', '@', ' ']) {
        return Err(bad());
    }
    Ok(Broker {
        tls,
        host: host.to_string(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_scheme_host_and_default_ports() {
        let broker = |tls, host: &str, port| Broker {
            tls,
            host: host.into(),
            port,
        };
        assert_eq!(
            parse_url("mqtt://broker.example.it"),
            Ok(broker(false, "broker.example.it", 1883))
        );
        assert_eq!(
            parse_url("mqtts://broker.example.it:8884/"),
            Ok(broker(true, "broker.example.it", 8884))
        );
        for bad in ["http://x", "mqtt://", "mqtt://a:b", "mqtt://user@host"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
