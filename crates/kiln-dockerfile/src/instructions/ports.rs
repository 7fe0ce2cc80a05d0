//! `EXPOSE` port specifications → the image config's `ExposedPorts` keys (`80/tcp`), with
//! BuildKit's rules: `[ip:][hostPort:]port[-end][/proto]`, protocol `tcp` by default
//! (`tcp`, `udp` or `sctp`, any case), ranges expanded, numbers 0–65535.

use std::net::IpAddr;

/// Expands expanded `EXPOSE` words into `port/proto` keys, in order (a range gives one key per
/// port). Errors name the word and what is wrong with it.
pub fn exposed_ports(words: &[String]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for w in words {
        out.extend(parse_port(w)?);
    }
    Ok(out)
}

fn parse_port(raw: &str) -> Result<Vec<String>, String> {
    let parts: Vec<&str> = raw.split(':').collect();
    let n = parts.len();
    let (ip, host_port, container) = match n {
        1 => (String::new(), "", parts[0]),
        2 => (String::new(), parts[0], parts[1]),
        _ => (parts[..n - 2].join(":"), parts[n - 2], parts[n - 1]),
    };
    let (port, proto) = container.split_once('/').unwrap_or((container, ""));
    if port.is_empty() {
        return Err(format!("invalid port: {raw:?}: no port specified"));
    }
    let proto = match proto.to_lowercase().as_str() {
        "" => "tcp".to_string(),
        "tcp" | "udp" | "sctp" => proto.to_lowercase(),
        _ => return Err(format!("invalid port: {raw:?}: invalid proto: {proto}")),
    };
    if !ip.is_empty() {
        let bare = ip
            .strip_prefix('[')
            .and_then(|i| i.strip_suffix(']'))
            .unwrap_or(&ip);
        if bare.parse::<IpAddr>().is_err() {
            return Err(format!("invalid IP address: {ip}"));
        }
    }
    let (start, end) = port_range(port).map_err(|_| format!("invalid containerPort: {port}"))?;
    if !host_port.is_empty() {
        let (hs, he) =
            port_range(host_port).map_err(|_| format!("invalid hostPort: {host_port}"))?;
        if end - start != he - hs && end != start {
            return Err(format!(
                "invalid ranges specified for container and host Ports: {port} and {host_port}"
            ));
        }
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

fn port_range(s: &str) -> Result<(u32, u32), ()> {
    if s.is_empty() {
        return Err(());
    }
    let (start, end) = s.split_once('-').map_or((s, None), |(a, b)| (a, Some(b)));
    let start_port = port_number(start)?;
    match end {
        None => Ok((start_port, start_port)),
        Some(e) if e == start => Ok((start_port, start_port)),
        Some(e) => {
            let end_port = port_number(e)?;
            if end_port < start_port {
                return Err(());
            }
            Ok((start_port, end_port))
        }
    }
}

/// Go's `strconv.ParseInt(s, 10, 0)` limited to 0–65535.
fn port_number(s: &str) -> Result<u32, ()> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(());
    }
    let n: i64 = s.parse().map_err(|_| ())?;
    u32::try_from(n).ok().filter(|&p| p <= 65_535).ok_or(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports(w: &[&str]) -> Result<Vec<String>, String> {
        exposed_ports(&w.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn specs() {
        assert_eq!(
            ports(&["80", "443/TCP", "53/udp"]).unwrap(),
            ["80/tcp", "443/tcp", "53/udp"]
        );
        assert_eq!(
            ports(&["8000-8002"]).unwrap(),
            ["8000/tcp", "8001/tcp", "8002/tcp"]
        );
        assert_eq!(ports(&["8080:80"]).unwrap(), ["80/tcp"]);
        assert_eq!(ports(&["127.0.0.1:8080:80/udp"]).unwrap(), ["80/udp"]);
        assert_eq!(ports(&["[::1]:8080:80"]).unwrap(), ["80/tcp"]);
        let err = |spec| ports(&[spec]).unwrap_err();
        assert_eq!(
            err("80/xyz"),
            r#"invalid port: "80/xyz": invalid proto: xyz"#
        );
        assert_eq!(err("70000"), "invalid containerPort: 70000");
        assert_eq!(err("abc"), "invalid containerPort: abc");
        assert_eq!(err("90-80"), "invalid containerPort: 90-80");
        assert_eq!(err("/tcp"), r#"invalid port: "/tcp": no port specified"#);
        assert_eq!(err("nope:1:80"), "invalid IP address: nope");
        assert_eq!(
            err("1-3:5-6"),
            "invalid ranges specified for container and host Ports: 5-6 and 1-3"
        );
    }
}
