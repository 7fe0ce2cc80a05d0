//! The registry client: endpoints (origin and mirrors), scheme choice, auth, retries.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;

use crate::config::{is_loopback, mirror_host};
use crate::{Error, Event, RegistryConfig, Reporter};

/// Connect timeout for mirrors: a dead mirror must cost little.
const MIRROR_CONNECT_TIMEOUT: Duration = Duration::from_millis(800);
/// Connect timeout for the registry itself.
pub(crate) const ORIGIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A stalled body is an error after this long without data.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a probe or login check may take, whole.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts per request before giving up on transient errors.
pub(crate) const ATTEMPTS: u32 = 5;

/// A client for OCI registries, configured with mirrors and per-host settings.
///
/// It owns a small async runtime; every public call blocks until its transfers are done.
pub struct Registry {
    pub(crate) config: RegistryConfig,
    rt: tokio::runtime::Runtime,
    endpoints: Mutex<HashMap<(String, bool, bool), Arc<Endpoint>>>,
    /// Blobs moved at once.
    pub(crate) concurrency: usize,
}

/// One host kiln talks to, with its chosen scheme and credentials.
pub(crate) struct Endpoint {
    /// `host[:port]`.
    pub host: String,
    /// The protocol client.
    pub client: oci_client::Client,
    /// Credentials (anonymous when none).
    pub auth: RegistryAuth,
    /// Whether it is a mirror.
    pub mirror: bool,
    /// Whether it speaks plain HTTP.
    pub http: bool,
    /// A plain client with the host's TLS settings, for the requests kiln makes itself
    /// (manifests and blobs): a body may take as long as it needs while data flows.
    pub web: reqwest::Client,
    /// What the registry's auth answered, reused for later requests.
    pub grants: Grants,
}

/// What a registry's auth answered for a repository and operation (a bearer token, or none
/// needed), and when: asking costs a `GET /v2/` and, with token auth, a round trip to the
/// realm, and kiln makes many requests of one repository.
#[derive(Default)]
pub(crate) struct Grants(Mutex<HashMap<(String, bool), Grant>>);

/// A token, or none needed, and when the registry's auth gave it.
type Grant = (Option<String>, std::time::Instant);

impl Grants {
    /// How long an answer is reused. Registry tokens live at least 60 s (the distribution
    /// token spec's default `expires_in`), so a reused one is never stale.
    const REUSE: Duration = Duration::from_secs(45);

    /// The answer for `repository` (pushing or not) if it is fresh: `Some(None)` is "no token
    /// needed".
    pub(crate) fn fresh(&self, repository: &str, push: bool) -> Option<Option<String>> {
        let grants = self.0.lock().ok()?;
        let (token, at) = grants.get(&(repository.to_owned(), push))?;
        (at.elapsed() < Self::REUSE).then(|| token.clone())
    }

    pub(crate) fn remember(&self, repository: &str, push: bool, token: Option<String>) {
        if let Ok(mut grants) = self.0.lock() {
            grants.insert(
                (repository.to_owned(), push),
                (token, std::time::Instant::now()),
            );
        }
    }
}

impl Endpoint {
    /// An oci-client reference on this endpoint.
    pub fn reference(
        &self,
        path: &str,
        tag: Option<&str>,
        digest: Option<&str>,
    ) -> oci_client::Reference {
        match (tag, digest) {
            (_, Some(d)) => {
                oci_client::Reference::with_digest(self.host.clone(), path.to_owned(), d.to_owned())
            }
            (Some(t), None) => {
                oci_client::Reference::with_tag(self.host.clone(), path.to_owned(), t.to_owned())
            }
            (None, None) => oci_client::Reference::with_tag(
                self.host.clone(),
                path.to_owned(),
                "latest".to_owned(),
            ),
        }
    }

    /// Registers the credentials for this reference's registry with the client.
    pub async fn authorize(&self, reference: &oci_client::Reference) {
        self.client
            .store_auth_if_needed(reference.resolve_registry(), &self.auth)
            .await;
    }
}

impl Registry {
    /// A client with these settings.
    pub fn new(config: RegistryConfig) -> Result<Registry, Error> {
        config.validate()?;
        // Every HTTP client kiln makes is made through a `Registry`, after this. A provider
        // installed already (by an earlier `Registry`) is the same one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        Ok(Registry {
            config,
            rt,
            endpoints: Mutex::new(HashMap::new()),
            concurrency: 4,
        })
    }

    pub(crate) fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// The endpoints to pull `domain` from: its mirrors in order, then itself.
    /// Mirrors that cannot be reached are reported and left out.
    pub(crate) async fn pull_endpoints(
        &self,
        domain: &str,
        reporter: &dyn Reporter,
    ) -> Result<Vec<Arc<Endpoint>>, Error> {
        let mut endpoints = Vec::new();
        for mirror in self.config.host(domain).mirrors {
            let (host, http) = mirror_host(&mirror)?;
            match self.endpoint(&host, true, http).await {
                Ok(e) => endpoints.push(e),
                Err(e) => reporter.report(Event::MirrorSkipped {
                    mirror: &host,
                    why: error_chain(&e),
                }),
            }
        }
        match self.endpoint(domain, false, false).await {
            Ok(e) => endpoints.push(e),
            Err(e) if endpoints.is_empty() => return Err(e),
            // The mirrors may still serve; the origin's error shows if they do not.
            Err(e) => tracing::warn!("origin {domain} unreachable: {e}"),
        }
        Ok(endpoints)
    }

    /// The endpoint of a host (cached): scheme probed, credentials loaded.
    pub(crate) async fn endpoint(
        &self,
        host: &str,
        mirror: bool,
        mirror_http: bool,
    ) -> Result<Arc<Endpoint>, Error> {
        let key = (host.to_owned(), mirror, mirror_http);
        if let Some(e) = self
            .endpoints
            .lock()
            .ok()
            .and_then(|m| m.get(&key).cloned())
        {
            return Ok(e);
        }
        let conf = self.config.host(host);
        let connect_timeout = if mirror {
            MIRROR_CONNECT_TIMEOUT
        } else {
            ORIGIN_CONNECT_TIMEOUT
        };
        let ca = match &conf.ca {
            Some(path) => Some(std::fs::read(path).map_err(Error::io("read CA file", path))?),
            None => None,
        };
        let http_allowed = mirror_http || conf.insecure || is_loopback(host);
        // Docker Hub's API lives at index.docker.io, as oci-client resolves it.
        let api_host = if host == kiln_image::DEFAULT_DOMAIN {
            "index.docker.io"
        } else {
            host
        };
        // No cap on the whole request, as for oci-client's own: a big blob takes time. The
        // probes use it too, capped each (each client loads the system's root certificates).
        let web = self.build_client(host, connect_timeout, |b| b.read_timeout(READ_TIMEOUT))?;
        let probe = |url: String| web.get(url).timeout(PROBE_TIMEOUT).send();
        let http = if mirror_http {
            true
        } else {
            let https = probe(format!("https://{api_host}/v2/")).await;
            match https {
                Ok(_) => false,
                Err(e) if !http_allowed => {
                    return Err(Error::Unreachable {
                        host: host.to_owned(),
                        why: format!(
                            "https: {}{}",
                            error_chain(&e),
                            "; plain http is allowed only for localhost, 127.0.0.1 and hosts configured `insecure = true`"
                        ),
                    });
                }
                Err(https_err) => match probe(format!("http://{api_host}/v2/")).await {
                    Ok(r) if matches!(r.status().as_u16(), 200 | 401) => true,
                    Ok(r) => {
                        return Err(Error::Unreachable {
                            host: host.to_owned(),
                            why: format!(
                                "https: {}; http: /v2/ answered {}",
                                error_chain(&https_err),
                                r.status()
                            ),
                        });
                    }
                    Err(http_err) => {
                        return Err(Error::Unreachable {
                            host: host.to_owned(),
                            why: format!(
                                "https: {}; http: {}",
                                error_chain(&https_err),
                                error_chain(&http_err)
                            ),
                        });
                    }
                },
            }
        };
        let client = oci_client::Client::new(ClientConfig {
            protocol: if http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            accept_invalid_certificates: conf.insecure,
            use_monolithic_push: true,
            extra_root_certificates: ca
                .map(|data| {
                    vec![Certificate {
                        encoding: CertificateEncoding::Pem,
                        data,
                    }]
                })
                .unwrap_or_default(),
            platform_resolver: None,
            connect_timeout: Some(connect_timeout),
            read_timeout: Some(READ_TIMEOUT),
            user_agent: concat!("kiln/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        });
        let auth = crate::auth::credentials(host)?;
        let endpoint = Arc::new(Endpoint {
            host: host.to_owned(),
            client,
            auth,
            mirror,
            http,
            web,
            grants: Grants::default(),
        });
        if let Ok(mut map) = self.endpoints.lock() {
            map.insert(key, endpoint.clone());
        }
        Ok(endpoint)
    }

    /// A plain reqwest client with the host's TLS settings (probes and login checks), whose
    /// requests are over in 30 s.
    pub(crate) fn http_client(
        &self,
        host: &str,
        connect_timeout: Duration,
    ) -> Result<reqwest::Client, Error> {
        self.build_client(host, connect_timeout, |b| b.timeout(PROBE_TIMEOUT))
    }

    /// A reqwest client with the host's TLS settings and the timeouts `timeouts` sets.
    fn build_client(
        &self,
        host: &str,
        connect_timeout: Duration,
        timeouts: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
    ) -> Result<reqwest::Client, Error> {
        timeouts(self.client_builder(host, connect_timeout)?)
            .build()
            .map_err(|source| Error::Http {
                host: host.to_owned(),
                what: "set up the HTTP client".into(),
                source,
            })
    }

    /// A reqwest client builder with the host's TLS settings: its CA file and `insecure`.
    pub(crate) fn client_builder(
        &self,
        host: &str,
        connect_timeout: Duration,
    ) -> Result<reqwest::ClientBuilder, Error> {
        let conf = self.config.host(host);
        let mut builder = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .danger_accept_invalid_certs(conf.insecure);
        if let Some(path) = &conf.ca {
            let pem = std::fs::read(path).map_err(Error::io("read CA file", path))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Error::Config(format!("CA file {}: {e}", path.display())))?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(builder)
    }

    /// Checks credentials the way `docker login` does: `/v2/` answers 401 with a challenge;
    /// basic credentials are tried on `/v2/` itself, bearer ones at the token realm.
    pub(crate) fn check_login(&self, host: &str, user: &str, password: &str) -> Result<(), Error> {
        self.block_on(async {
            let endpoint = self.endpoint(host, false, false).await?;
            let scheme = if endpoint.http { "http" } else { "https" };
            let client = self.http_client(host, ORIGIN_CONNECT_TIMEOUT)?;
            let http = |what: &str| {
                let host = host.to_owned();
                let what = what.to_owned();
                move |source| Error::Http { host, what, source }
            };
            let api_host = if host == kiln_image::DEFAULT_DOMAIN {
                "index.docker.io"
            } else {
                host
            };
            let url = format!("{scheme}://{api_host}/v2/");
            let res = client.get(&url).send().await.map_err(http("GET /v2/"))?;
            if res.status().is_success() {
                return Ok(());
            }
            let challenge = res
                .headers()
                .get(reqwest::header::WWW_AUTHENTICATE)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let status = if challenge.to_ascii_lowercase().starts_with("bearer") {
                let params = challenge_params(&challenge);
                let realm = params
                    .get("realm")
                    .cloned()
                    .ok_or_else(|| Error::Unreachable {
                        host: host.to_owned(),
                        why: format!("bearer challenge without realm: {challenge}"),
                    })?;
                let mut query: Vec<(&str, &str)> = vec![("account", user)];
                if let Some(service) = params.get("service") {
                    query.push(("service", service));
                }
                client
                    .get(&realm)
                    .query(&query)
                    .basic_auth(user, Some(password))
                    .send()
                    .await
                    .map_err(http("GET the token realm"))?
                    .status()
            } else {
                client
                    .get(&url)
                    .basic_auth(user, Some(password))
                    .send()
                    .await
                    .map_err(http("GET /v2/ with basic auth"))?
                    .status()
            };
            if status.is_success() {
                Ok(())
            } else {
                Err(Error::Unauthorized {
                    host: host.to_owned(),
                    what: "login".into(),
                    status: status.as_u16(),
                })
            }
        })
    }
}

/// `key="value"` pairs of a `WWW-Authenticate` challenge.
fn challenge_params(header: &str) -> HashMap<String, String> {
    let rest = header.split_once(' ').map_or("", |(_, r)| r);
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            for c in chars.by_ref() {
                if c == '"' {
                    break;
                }
                value.push(c);
            }
        } else {
            while let Some(c) = chars.peek() {
                if *c == ',' {
                    break;
                }
                value.push(*c);
                chars.next();
            }
        }
        params.insert(key.trim().to_owned(), value);
    }
    params
}

/// An error and its causes on one line.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// Runs `op` until it succeeds, fails for good, or runs out of attempts; transient errors
/// wait 200 ms, 400 ms, 800 ms… between attempts.
pub(crate) async fn retry<T, F, Fut>(
    what: &str,
    reporter: &dyn Reporter,
    attempts: u32,
    mut op: F,
) -> Result<T, Error>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut attempt = 1;
    loop {
        match op(attempt).await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() && attempt < attempts => {
                reporter.report(Event::Retry {
                    what,
                    attempt,
                    error: error_chain(&e),
                });
                tokio::time::sleep(Duration::from_millis(200 << (attempt - 1))).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let p = challenge_params(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:x:pull""#,
        );
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["service"], "registry.example");
    }
}
