//! Where connections go and come from: URL templates with `{topic}` and source address ranges.

use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};

/// A parsed `http://` or `ws://` URL template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    /// The `Host` header value.
    pub host: String,
    /// Path and query, with `{topic}` still in it.
    pub path_template: String,
}

impl Target {
    /// Parses `scheme://host[:port]/path`; resolves the host once, here.
    pub fn parse(url: &str) -> Result<Target, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("{url}: expected scheme://host:port/path"))?;
        let default_port = match scheme {
            "http" | "ws" => 80,
            _ => {
                return Err(format!(
                    "{url}: only http:// and ws:// (no TLS in the load tool)"
                ))
            }
        };
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let with_port = if hostport
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            hostport.to_string()
        } else {
            format!("{hostport}:{default_port}")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| format!("{url}: cannot resolve {with_port}: {e}"))?
            .find(|a| a.is_ipv4())
            .ok_or_else(|| format!("{url}: no IPv4 address for {with_port}"))?;
        Ok(Target {
            addr,
            host: hostport.to_string(),
            path_template: path.to_string(),
        })
    }

    /// The path for one topic.
    pub fn path(&self, topic: &str) -> String {
        self.path_template.replace("{topic}", topic)
    }
}

/// Parses a comma-separated list of URL templates (one per node); at least one.
pub fn parse_targets(list: &str) -> Result<Vec<Target>, String> {
    let v = list
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(Target::parse)
        .collect::<Result<Vec<_>, _>>()?;
    if v.is_empty() {
        return Err(format!("{list:?}: no URL"));
    }
    Ok(v)
}

/// Parses `127.0.0.2-127.0.0.50`, `127.0.0.7`, or a comma-separated list of both.
pub fn parse_source_ips(spec: &str) -> Result<Vec<Ipv4Addr>, String> {
    /// More source addresses than anyone needs: 256 × ~28k ephemeral ports.
    const MAX_SOURCE_IPS: u32 = 256;
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let ip = |s: &str| {
            s.trim()
                .parse::<Ipv4Addr>()
                .map_err(|_| format!("{s:?} is not an IPv4 address (in --source-ips {spec:?})"))
        };
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (ip(a)?, ip(b)?),
            None => (ip(part)?, ip(part)?),
        };
        let (a, b) = (u32::from(a), u32::from(b));
        if a > b {
            return Err(format!("--source-ips {part:?}: the range runs backwards"));
        }
        if b - a >= MAX_SOURCE_IPS || out.len() as u32 + (b - a) >= MAX_SOURCE_IPS {
            return Err(format!(
                "--source-ips {spec:?}: more than {MAX_SOURCE_IPS} addresses"
            ));
        }
        out.extend((a..=b).map(Ipv4Addr::from));
    }
    if out.is_empty() {
        return Err(format!("--source-ips {spec:?}: no address"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ranges() {
        let v = parse_source_ips("127.0.0.2-127.0.0.50").unwrap();
        assert_eq!(v.len(), 49);
        assert_eq!(v[0], Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(v[48], Ipv4Addr::new(127, 0, 0, 50));
        assert_eq!(
            parse_source_ips("127.0.0.9").unwrap(),
            vec![Ipv4Addr::new(127, 0, 0, 9)]
        );
        let v = parse_source_ips("127.0.0.255-127.0.1.1, 127.0.0.3").unwrap();
        assert_eq!(
            v,
            vec![
                Ipv4Addr::new(127, 0, 0, 255),
                Ipv4Addr::new(127, 0, 1, 0),
                Ipv4Addr::new(127, 0, 1, 1),
                Ipv4Addr::new(127, 0, 0, 3)
            ]
        );
        for bad in [
            "",
            "127.0.0.5-127.0.0.2",
            "localhost",
            "127.0.0.1-",
            "127.0.0.0-127.0.255.255",
        ] {
            assert!(parse_source_ips(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn targets() {
        let t = Target::parse("http://127.0.0.1:8080/sse/{topic}").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.host, "127.0.0.1:8080");
        assert_eq!(t.path("t-3"), "/sse/t-3");
        let t = Target::parse("ws://127.0.0.1/ws/{topic}?since=x").unwrap();
        assert_eq!(t.addr.port(), 80);
        assert_eq!(t.path("a"), "/ws/a?since=x");
        assert_eq!(Target::parse("http://127.0.0.1:1").unwrap().path("a"), "/");
        assert!(Target::parse("https://127.0.0.1/").is_err());
        assert!(Target::parse("127.0.0.1:80/x").is_err());
    }

    #[test]
    fn target_lists() {
        let v = parse_targets("http://127.0.0.1:1/sse/{topic}, http://127.0.0.1:2/sse/{topic}")
            .unwrap();
        assert_eq!(v.iter().map(|t| t.addr.port()).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(parse_targets("http://127.0.0.1:3/x").unwrap().len(), 1);
        assert!(parse_targets("").is_err());
        assert!(parse_targets(" , ").is_err());
        assert!(parse_targets("http://127.0.0.1:1/a,https://x/b").is_err());
    }
}
