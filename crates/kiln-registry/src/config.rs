//! Per-registry settings: mirrors, insecure (plain HTTP or unverified TLS), extra CA.

use std::collections::BTreeMap;
use std::path::PathBuf;

use kiln_image::Platform;
use serde::Deserialize;

use crate::Error;

/// Settings of every registry kiln talks to, keyed by host (`docker.io`, `127.0.0.1:5000`).
///
/// As TOML (`/etc/kiln/config.toml`, `$XDG_CONFIG_HOME/kiln/config.toml`, `--config`):
///
/// ```toml
/// [registry."docker.io"]
/// mirrors = ["https://mirror.example", "http://10.0.0.5:5000"]
///
/// [registry."registry.internal:5000"]
/// insecure = true
/// ca = "/etc/kiln/certs/internal-ca.pem"
///
/// [push]
/// gzip_level = 6    # 1 (fastest, biggest, the default) … 9 (smallest)
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Per-host settings.
    #[serde(default)]
    pub registry: BTreeMap<String, HostConfig>,
    /// Push settings.
    #[serde(default)]
    pub push: PushConfig,
}

/// How pushes compress.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    /// gzip level of layers compressed for a push (1–9; default 1: a push waits on the
    /// compressor; 6 gives blobs some 20 % smaller, in about three times the time).
    #[serde(default)]
    pub gzip_level: Option<u32>,
}

/// Settings of one registry host.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Mirrors tried in order before this registry, for pulls only: `https://host[:port]` or
    /// `http://host[:port]` (plain HTTP is then allowed for that mirror).
    #[serde(default)]
    pub mirrors: Vec<String>,
    /// Allow plain HTTP and unverified TLS for this host.
    #[serde(default)]
    pub insecure: bool,
    /// A PEM file of extra CA certificates to trust for this host.
    #[serde(default)]
    pub ca: Option<PathBuf>,
}

impl RegistryConfig {
    /// Merges `other` over `self`: a host in `other` replaces the fields it sets.
    pub fn merge(&mut self, other: RegistryConfig) {
        for (host, conf) in other.registry {
            let entry = self.registry.entry(host).or_default();
            if !conf.mirrors.is_empty() {
                entry.mirrors = conf.mirrors;
            }
            entry.insecure |= conf.insecure;
            if conf.ca.is_some() {
                entry.ca = conf.ca;
            }
        }
        if other.push.gzip_level.is_some() {
            self.push.gzip_level = other.push.gzip_level;
        }
    }

    /// Adds a mirror (`--registry-mirror`): `URL` mirrors docker.io, `HOST=URL` mirrors HOST.
    pub fn add_mirror(&mut self, flag: &str) -> Result<(), Error> {
        let (host, url) = match flag.split_once('=') {
            Some((host, url)) => (host.to_owned(), url.to_owned()),
            None => (kiln_image::DEFAULT_DOMAIN.to_owned(), flag.to_owned()),
        };
        mirror_host(&url)?;
        self.registry.entry(host).or_default().mirrors.push(url);
        Ok(())
    }

    /// The settings of one host (defaults when it has none).
    pub fn host(&self, host: &str) -> HostConfig {
        self.registry.get(host).cloned().unwrap_or_default()
    }

    /// Checks every mirror URL.
    pub fn validate(&self) -> Result<(), Error> {
        if let Some(level) = self.push.gzip_level
            && !(1..=9).contains(&level)
        {
            return Err(Error::Config(format!(
                "push.gzip_level = {level}: expected 1 to 9"
            )));
        }
        for conf in self.registry.values() {
            for mirror in &conf.mirrors {
                mirror_host(mirror)?;
            }
        }
        Ok(())
    }
}

/// `(host, plain_http)` of a mirror URL.
pub(crate) fn mirror_host(url: &str) -> Result<(String, bool), Error> {
    let (rest, http) = if let Some(rest) = url.strip_prefix("https://") {
        (rest, false)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (rest, true)
    } else {
        (url, false)
    };
    let host = rest.trim_end_matches('/');
    if host.is_empty()
        || host.contains('/')
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
    {
        return Err(Error::Config(format!(
            "mirror {url:?}: expected https://host[:port] or http://host[:port]"
        )));
    }
    Ok((host.to_owned(), http))
}

/// Whether plain HTTP is allowed without configuration: loopback hosts.
pub(crate) fn is_loopback(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(':') => {
            name
        }
        _ => host,
    };
    name == "localhost"
        || name == "[::1]"
        || name == "::1"
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Parses `os/arch[/variant]` (`linux/amd64`, `linux/arm64/v8`).
pub fn parse_platform(text: &str) -> Result<Platform, Error> {
    let parts: Vec<&str> = text.split('/').collect();
    let valid =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    match parts.as_slice() {
        [os, arch] if valid(os) && valid(arch) => Ok(platform(os, arch, None)),
        [os, arch, variant] if valid(os) && valid(arch) && valid(variant) => {
            Ok(platform(os, arch, Some(variant)))
        }
        _ => Err(Error::BadPlatform(text.to_owned())),
    }
}

fn platform(os: &str, arch: &str, variant: Option<&str>) -> Platform {
    Platform {
        architecture: arch.to_owned(),
        os: os.to_owned(),
        variant: variant.map(str::to_owned),
        extra: Default::default(),
    }
}

/// The host's platform: `linux/<arch>`.
pub(crate) fn host_platform() -> Platform {
    platform("linux", kiln_image::host_architecture(), None)
}

/// `os/arch[/variant]`.
pub(crate) fn platform_string(p: &Platform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_recognised() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost"));
        assert!(is_loopback("localhost:5000"));
        assert!(!is_loopback("docker.io"));
        assert!(!is_loopback("10.0.0.1:5000"));
    }

    #[test]
    fn mirrors_and_platforms_parse() {
        assert_eq!(
            mirror_host("http://127.0.0.1:5001/").unwrap(),
            ("127.0.0.1:5001".into(), true)
        );
        let err = mirror_host("https://x/y").unwrap_err();
        assert!(
            matches!(&err, Error::Config(why) if why.starts_with("mirror \"https://x/y\": expected")),
            "{err:?}"
        );
        let mut config = RegistryConfig::default();
        config.add_mirror("https://m.example").unwrap();
        config.add_mirror("quay.io=http://127.0.0.1:9").unwrap();
        assert_eq!(config.host("docker.io").mirrors, ["https://m.example"]);
        assert_eq!(config.host("quay.io").mirrors, ["http://127.0.0.1:9"]);
        assert_eq!(
            parse_platform("linux/arm64/v8").unwrap().variant.as_deref(),
            Some("v8")
        );
        let err = parse_platform("linux").unwrap_err();
        assert!(
            matches!(&err, Error::BadPlatform(p) if p == "linux"),
            "{err:?}"
        );
    }

    #[test]
    fn toml_shape_is_the_documented_one() {
        let config: RegistryConfig = serde_json::from_value(serde_json::json!({
            "registry": {"docker.io": {"mirrors": ["https://m"], "insecure": true}}
        }))
        .unwrap();
        assert!(config.host("docker.io").insecure);
    }
}
