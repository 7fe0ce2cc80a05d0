//! Plain HTTP(S) downloads (`ADD <url>`), made with the registry client's settings, so that a
//! download trusts what a pull trusts: the CA file and `insecure` flag configured for its host,
//! and the proxies of the environment (`HTTPS_PROXY`, `NO_PROXY`).

use std::io::{self, Read};

use bytes::Buf;

use crate::client::{ORIGIN_CONNECT_TIMEOUT, READ_TIMEOUT};
use crate::{Error, Registry};

/// A response being read: the body as a blocking [`Read`], and its headers.
pub struct Download<'r> {
    registry: &'r Registry,
    response: reqwest::Response,
    chunk: bytes::Bytes,
}

impl std::fmt::Debug for Download<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Download")
            .field("url", &self.response.url().as_str())
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// GETs `url` (http or https), following redirects. A status other than 2xx is an error.
    /// Only the connection and each read are timed out, never the whole transfer.
    pub fn fetch_url(&self, url: &str) -> Result<Download<'_>, Error> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| Error::Config(format!("URL {url:?} does not parse: {e}")))?;
        let host = match (parsed.host_str(), parsed.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => return Err(Error::Config(format!("URL {url:?} names no host"))),
        };
        let builder = self
            .client_builder(&host, ORIGIN_CONNECT_TIMEOUT)?
            .read_timeout(READ_TIMEOUT);
        let http = |what: String| {
            let host = host.clone();
            move |source| Error::Http { host, what, source }
        };
        // Inside the runtime: the client's connector needs its reactor.
        let response = self.block_on(async {
            let client = builder
                .build()
                .map_err(http("set up the HTTP client".into()))?;
            client
                .get(parsed)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .map_err(http(format!("GET {url}")))
        })?;
        Ok(Download {
            registry: self,
            response,
            chunk: bytes::Bytes::new(),
        })
    }
}

impl Download<'_> {
    /// A response header, if it is there and is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.response.headers().get(name)?.to_str().ok()
    }
}

impl Read for Download<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.registry.block_on(self.response.chunk()) {
                Ok(Some(chunk)) => self.chunk = chunk,
                Ok(None) => return Ok(0),
                Err(e) => return Err(io::Error::other(e)),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk.advance(n);
        Ok(n)
    }
}
