//! HTTP to one repository of one registry: scheme choice, retries with
//! backoff, authentication, size-capped documents and resumable blobs.
//!
//! No ureq option that starts a resolver thread (`timeout_global`,
//! `timeout_per_call`, `timeout_resolve`) is set: den forks into user
//! namespaces after a pull and must be single-threaded by then.

use std::io::{self, Read};
use std::net::IpAddr;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use ureq::http::{Response, StatusCode};
use ureq::{Agent, Body};

use super::auth::{self, Challenge};
use super::credentials::{self, Credentials, Secret};
use super::reference::Reference;
use crate::image::digest::Digest;
use crate::image::environment::{Environment, Proxies};

pub const INSECURE_ENV: &str = "DEN_INSECURE_REGISTRIES";
const ATTEMPTS: u32 = 5;

/// Whether `registry` (`host[:port]`) may be spoken to over plain http:
/// loopback hosts (http first, then https if the registry speaks TLS),
/// and those listed in `$DEN_INSECURE_REGISTRIES` (http only).
pub fn is_plain_http(registry: &str, insecure: Option<&str>) -> bool {
    let host = host_of(registry);
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    loopback
        || insecure.is_some_and(|list| {
            list.split(',')
                .map(str::trim)
                .any(|entry| entry == registry || (!entry.contains(':') && entry == host))
        })
}

/// An agent for a plain file download (a build's `download:` step), with
/// the rules registry requests follow: the system trust store, proxies
/// as curl reads them (never for loopback), retries left to the caller.
pub fn download_agent(url: &str, proxies: &Proxies) -> anyhow::Result<Agent> {
    let https = url.starts_with("https://");
    let authority = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let proxy = match is_plain_http(authority, None) {
        true => None,
        false => proxy_for(host_of(authority), https, &|name| proxies.get(name))?,
    };
    Ok(agent(false, proxy))
}

/// `host:port` → `host`; `[::1]:5000` → `[::1]`.
fn host_of(registry: &str) -> &str {
    if registry.starts_with('[') {
        return registry
            .split_once(']')
            .map_or(registry, |(h, _)| &registry[..h.len() + 1]);
    }
    registry.split_once(':').map_or(registry, |(host, _)| host)
}

pub struct Client {
    registry: String,
    repository: String,
    /// The API host (`registry-1.docker.io` for docker.io).
    host: String,
    scheme: SchemeRule,
    proxies: Proxies,
    /// Chosen on first use (loopback registries are probed).
    transport: OnceLock<Transport>,
    /// Looked up on the first 401 only.
    credentials: OnceLock<Option<Credentials>>,
    /// The `Authorization` value that worked (Basic, or a Bearer token for
    /// this repository's pull scope).
    authorization: Mutex<Option<String>>,
}

/// How the scheme is chosen (docs/registry.md, Transport).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SchemeRule {
    Https,
    /// Listed in `$DEN_INSECURE_REGISTRIES`.
    Http,
    /// Loopback: plain http, unless the registry answers like a TLS
    /// server, then https (verified like any other).
    HttpThenHttps,
}

struct Transport {
    base: String,
    https: bool,
    agent: Agent,
    /// A proxy variable that could not be used: every request fails.
    proxy_error: Option<String>,
}

/// An agent for one scheme. Loopback hosts never go through a proxy;
/// others use the proxy `proxy_for` names.
fn agent(https: bool, proxy: Option<ureq::Proxy>) -> Agent {
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::PlatformVerifier)
        .build();
    Agent::config_builder()
        .http_status_as_error(false)
        .https_only(https)
        .max_redirects(5)
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .user_agent(concat!("den/", env!("CARGO_PKG_VERSION")))
        .tls_config(tls)
        .proxy(proxy)
        .build()
        .new_agent()
}

/// The proxy for `host` (no port) over http or https, from the
/// environment as curl reads it: `HTTPS_PROXY` for https, `HTTP_PROXY`
/// for http, else `ALL_PROXY` (each also lowercase); none for hosts
/// matching `NO_PROXY`. `env` looks a variable up.
fn proxy_for(
    host: &str,
    https: bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<ureq::Proxy>> {
    let set = |name: &str| {
        env(name)
            .or_else(|| env(&name.to_lowercase()))
            .filter(|v| !v.trim().is_empty())
    };
    if let Some(list) = set("NO_PROXY")
        && no_proxy_matches(&list, host)
    {
        return Ok(None);
    }
    let scheme_var = if https { "HTTPS_PROXY" } else { "HTTP_PROXY" };
    let Some((name, url)) = [scheme_var, "ALL_PROXY"]
        .into_iter()
        .find_map(|name| set(name).map(|url| (name, url)))
    else {
        return Ok(None);
    };
    ureq::Proxy::new(url.trim())
        .map(Some)
        .map_err(|err| anyhow!("${name} (`{url}`) is not a usable proxy: {err}"))
}

/// `NO_PROXY` entries: `*`, `host`, `.domain` or `*.domain` (covering the
/// domain and its subdomains), `host:port` (the port is ignored).
fn no_proxy_matches(list: &str, host: &str) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    list.split(',').map(str::trim).any(|entry| {
        if entry == "*" {
            return true;
        }
        let entry = entry.trim_start_matches('*').trim_start_matches('.');
        let entry = match entry.rsplit_once(':') {
            Some((name, port))
                if port.chars().all(|c| c.is_ascii_digit()) && !name.contains(':') =>
            {
                name
            }
            _ => entry,
        };
        let entry = entry
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        !entry.is_empty() && (host == entry || host.ends_with(&format!(".{entry}")))
    })
}

/// Whether a plain-http probe of a loopback registry says it speaks TLS:
/// a Go server answers plain http on a TLS port with 400 ("Client sent
/// an HTTP request to an HTTPS server"), others close or send garbage.
/// A refused connection or a timeout says nothing: stay with http.
fn speaks_tls(agent: &Agent, host: &str) -> bool {
    match agent.get(format!("http://{host}/v2/")).call() {
        Ok(response) => response.status() == StatusCode::BAD_REQUEST,
        Err(ureq::Error::Io(err)) => !matches!(
            err.kind(),
            io::ErrorKind::ConnectionRefused | io::ErrorKind::TimedOut
        ),
        Err(
            ureq::Error::ConnectionFailed | ureq::Error::HostNotFound | ureq::Error::Timeout(_),
        ) => false,
        Err(_) => true,
    }
}

impl Client {
    /// A client for `reference`'s registry; the insecure list comes from
    /// `$DEN_INSECURE_REGISTRIES` and den's settings file.
    pub fn new(reference: &Reference, env: &Environment) -> anyhow::Result<Client> {
        let insecure = env.insecure_registries()?;
        let host = reference.api_host().to_string();
        // Loopback first (even when listed): http, or https if it speaks TLS.
        let scheme = if is_plain_http(&host, None) {
            SchemeRule::HttpThenHttps
        } else if is_plain_http(&reference.registry, Some(&insecure)) {
            SchemeRule::Http
        } else {
            SchemeRule::Https
        };
        Ok(Client {
            registry: reference.registry.clone(),
            repository: reference.repository.clone(),
            host,
            scheme,
            proxies: env.proxies.clone(),
            transport: OnceLock::new(),
            credentials: OnceLock::new(),
            authorization: Mutex::new(None),
        })
    }

    fn transport(&self) -> &Transport {
        self.transport.get_or_init(|| {
            let loopback = self.scheme == SchemeRule::HttpThenHttps;
            let https = match self.scheme {
                SchemeRule::Https => true,
                SchemeRule::Http => false,
                SchemeRule::HttpThenHttps => speaks_tls(&agent(false, None), &self.host),
            };
            let proxy = if loopback {
                Ok(None)
            } else {
                proxy_for(host_of(&self.host), https, &|name| self.proxies.get(name))
            };
            let (proxy, proxy_error) = match proxy {
                Ok(proxy) => (proxy, None),
                Err(err) => (None, Some(format!("{err:#}"))),
            };
            Transport {
                base: format!("{}://{}", if https { "https" } else { "http" }, self.host),
                https,
                agent: agent(https, proxy),
                proxy_error,
            }
        })
    }

    fn agent(&self) -> &Agent {
        &self.transport().agent
    }

    fn https(&self) -> bool {
        self.transport().https
    }

    fn url(&self, kind: &str, object: &str) -> String {
        format!(
            "{}/v2/{}/{kind}/{object}",
            self.transport().base,
            self.repository
        )
    }

    /// GET with retries and authentication; returns any final status but
    /// 401 (turned into an error) for the caller to judge.
    fn get(&self, url: &str, headers: &[(&str, &str)]) -> anyhow::Result<Response<Body>> {
        if let Some(err) = &self.transport().proxy_error {
            bail!("cannot reach registry {}: {err}", self.registry);
        }
        let mut authenticated = false;
        let mut attempt = 0;
        loop {
            let mut request = self.agent().get(url);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let current = self
                .authorization
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if let Some(value) = &current {
                request = request.header("Authorization", value);
            }
            match request.call() {
                Ok(response) if response.status() == StatusCode::UNAUTHORIZED => {
                    if authenticated {
                        return Err(self.rejected(None));
                    }
                    self.authenticate(&response)?;
                    authenticated = true;
                }
                Ok(response)
                    if (response.status().is_server_error()
                        || response.status() == StatusCode::TOO_MANY_REQUESTS)
                        && attempt + 1 < ATTEMPTS =>
                {
                    let wait = retry_after(&response);
                    backoff(attempt, wait);
                    attempt += 1;
                }
                Ok(response) => return Ok(response),
                Err(err) if is_transient(&err) && attempt + 1 < ATTEMPTS => {
                    backoff(attempt, None);
                    attempt += 1;
                }
                Err(err) => return Err(self.transport_error(err)),
            }
        }
    }

    fn transport_error(&self, err: ureq::Error) -> anyhow::Error {
        let https = self.https();
        let base = &self.transport().base;
        let text = err.to_string();
        // rustls' verdict may arrive wrapped in an io error.
        if https && is_certificate_error(&err) {
            return anyhow!(
                "cannot reach registry {} ({base}): its TLS certificate is not trusted ({text}); \
                 add the CA that signed it to the system's certificates, or point SSL_CERT_FILE \
                 at a bundle that holds it",
                self.registry
            );
        }
        let hint = match &err {
            ureq::Error::RequireHttpsOnly(_) => format!(
                "; den refuses to follow {} to plain http (list the registry under `insecure-registries` in ~/.config/den/config.yaml, or in {INSECURE_ENV}, to use http)",
                self.registry
            ),
            ureq::Error::Tls(_) | ureq::Error::Rustls(_) if https => format!(
                "; if {} serves plain http, list it under `insecure-registries` in ~/.config/den/config.yaml or in {INSECURE_ENV}",
                self.registry
            ),
            _ => String::new(),
        };
        anyhow!(
            "cannot reach registry {} ({base}): {err}{hint}",
            self.registry
        )
    }

    fn credentials(&self) -> anyhow::Result<Option<&Credentials>> {
        if let Some(found) = self.credentials.get() {
            return Ok(found.as_ref());
        }
        let found = credentials::lookup(&self.registry, &self.repository)?;
        Ok(self.credentials.get_or_init(|| found).as_ref())
    }

    /// After a 401: the error for rejected or missing credentials.
    fn rejected(&self, token_server: Option<&str>) -> anyhow::Error {
        match self.credentials.get().and_then(Option::as_ref) {
            Some(c) => {
                let who = match token_server {
                    Some(realm) => format!("the token server {realm}"),
                    None => self.registry.clone(),
                };
                let user = if c.username.is_empty() {
                    "an identity token".to_string()
                } else {
                    c.username.clone()
                };
                if self.repository.is_empty() {
                    return anyhow!("{who} rejected the username or password for {user}");
                }
                anyhow!(
                    "{who} rejected the credentials for {user} (from {}) when pulling {}",
                    c.origin,
                    self.repository
                )
            }
            None => anyhow!(
                "{host} needs credentials: run `den login {host}` (or `podman login`, \
                 `docker login`)",
                host = self.registry
            ),
        }
    }

    /// Answers a 401's challenge by setting `authorization`.
    fn authenticate(&self, response: &Response<Body>) -> anyhow::Result<()> {
        let challenge = response
            .headers()
            .get_all("www-authenticate")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(auth::parse_challenge);
        let credentials = self.credentials()?;
        let value = match challenge {
            Some(Challenge::Basic) | None => {
                let Some(c) = credentials else {
                    return Err(self.rejected(None));
                };
                let Secret::Password(password) = &c.secret else {
                    bail!(
                        "{} asks for a password but {} holds an identity token for it",
                        self.registry,
                        c.origin
                    );
                };
                basic(&c.username, password)
            }
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => format!(
                "Bearer {}",
                self.token(&realm, service, scope, credentials)?
            ),
        };
        *self.authorization.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
        Ok(())
    }

    fn token(
        &self,
        realm: &str,
        service: Option<String>,
        scope: Option<String>,
        credentials: Option<&Credentials>,
    ) -> anyhow::Result<String> {
        if self.https() && realm.starts_with("http://") {
            bail!(
                "{} sends den to a plain-http token server ({realm}); refusing",
                self.registry
            );
        }
        // `den login` (no repository) asks for a token without a scope.
        let scope = scope.or_else(|| {
            (!self.repository.is_empty()).then(|| format!("repository:{}:pull", self.repository))
        });
        let mut attempt = 0;
        let response = loop {
            let result = match credentials.map(|c| &c.secret) {
                Some(Secret::IdentityToken(token)) => {
                    let mut form = vec![
                        ("grant_type", "refresh_token"),
                        ("refresh_token", token.as_str()),
                        ("client_id", "den"),
                    ];
                    if let Some(scope) = &scope {
                        form.push(("scope", scope.as_str()));
                    }
                    if let Some(service) = &service {
                        form.push(("service", service.as_str()));
                    }
                    self.agent().post(realm).send_form(form)
                }
                secret => {
                    let mut query = Vec::new();
                    if let Some(scope) = &scope {
                        query.push(format!("scope={}", auth::url_encode(scope)));
                    }
                    if let Some(service) = &service {
                        query.push(format!("service={}", auth::url_encode(service)));
                    }
                    let mut url = realm.to_string();
                    if !query.is_empty() {
                        url.push(if realm.contains('?') { '&' } else { '?' });
                        url.push_str(&query.join("&"));
                    }
                    let mut request = self.agent().get(&url);
                    if let (Some(Secret::Password(password)), Some(c)) = (secret, credentials) {
                        request = request.header("Authorization", basic(&c.username, password));
                    }
                    request.call()
                }
            };
            match result {
                Ok(r)
                    if (r.status().is_server_error()
                        || r.status() == StatusCode::TOO_MANY_REQUESTS)
                        && attempt + 1 < ATTEMPTS =>
                {
                    backoff(attempt, retry_after(&r));
                    attempt += 1;
                }
                Err(err) if is_transient(&err) && attempt + 1 < ATTEMPTS => {
                    backoff(attempt, None);
                    attempt += 1;
                }
                Ok(r) => break r,
                Err(err) => bail!("cannot reach the token server {realm}: {err}"),
            }
        };
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(self.rejected(Some(realm)));
        }
        if !status.is_success() {
            bail!("the token server {realm} answered {status}");
        }
        let bytes = response
            .into_body()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .with_context(|| format!("cannot read the reply of the token server {realm}"))?;
        let reply: auth::TokenReply = serde_json::from_slice(&bytes)
            .with_context(|| format!("the token server {realm} sent an invalid reply"))?;
        reply
            .token()
            .with_context(|| format!("the token server {realm} sent no token"))
    }

    /// A manifest or index: its bytes, media type and digest, checked
    /// against a pinned digest and `Docker-Content-Digest`.
    pub fn manifest(
        &self,
        object: &str,
        accept: &str,
    ) -> anyhow::Result<(Vec<u8>, Option<String>, Digest)> {
        let url = self.url("manifests", object);
        let response = self.get(&url, &[("Accept", accept)])?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            bail!(
                "{}/{} has no `{object}` (the repository or the tag does not exist)",
                self.registry,
                self.repository
            );
        }
        if !status.is_success() {
            bail!(
                "{} answered {status} for manifest `{object}`",
                self.registry
            );
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header("content-type")
            .map(|t| t.split(';').next().unwrap_or_default().trim().to_string());
        let announced = header("docker-content-digest");
        let bytes = response
            .into_body()
            .with_config()
            .limit(4 << 20)
            .read_to_vec()
            .with_context(|| format!("cannot read manifest `{object}` from {}", self.registry))?;
        let digest = Digest::of(&bytes);
        if let Ok(pinned) = Digest::parse(object)
            && pinned != digest
        {
            bail!(
                "{} sent a manifest for {object} that hashes to {digest}",
                self.registry
            );
        }
        if let Some(announced) = announced
            && announced.starts_with("sha256:")
            && announced != digest.to_string()
        {
            bail!(
                "{} sent a manifest for `{object}` that hashes to {digest}, not to the \
                 {announced} it announced; the registry is corrupt or tampered with",
                self.registry
            );
        }
        Ok((bytes, content_type, digest))
    }

    /// A small blob (the config), read whole and verified.
    pub fn small_blob(&self, digest: &Digest, size: u64) -> anyhow::Result<Vec<u8>> {
        if size > 8 << 20 {
            bail!("blob {digest} is {size} bytes, too large for an image config");
        }
        let response = self.get(&self.url("blobs", &digest.to_string()), &[])?;
        if !response.status().is_success() {
            bail!(
                "{} answered {} for blob {digest}",
                self.registry,
                response.status()
            );
        }
        let bytes = response
            .into_body()
            .with_config()
            .limit(size + 1)
            .read_to_vec()
            .with_context(|| format!("cannot read blob {digest} from {}", self.registry))?;
        let actual = Digest::of(&bytes);
        if &actual != digest || bytes.len() as u64 != size {
            bail!(
                "blob {digest} from {} is corrupt: it hashes to {actual}",
                self.registry
            );
        }
        Ok(bytes)
    }

    /// A layer blob as a stream that resumes with `Range` after a broken
    /// connection. The caller verifies its digest.
    pub fn blob(&self, digest: &Digest) -> ResumableBlob<'_> {
        ResumableBlob {
            client: self,
            url: self.url("blobs", &digest.to_string()),
            reader: None,
            delivered: 0,
            attempt: 0,
        }
    }
}

/// `den login` (src/image/registry/login.rs): checking credentials.
impl Client {
    /// A client for `registry` alone (no repository) that answers
    /// challenges with `credentials` instead of reading the auth files.
    pub fn for_login(
        registry: &str,
        credentials: Credentials,
        env: &Environment,
    ) -> anyhow::Result<Client> {
        let reference = Reference {
            registry: registry.to_string(),
            repository: String::new(),
            tag: None,
            digest: None,
        };
        let client = Client::new(&reference, env)?;
        let _ = client.credentials.set(Some(credentials));
        Ok(client)
    }

    /// `GET /v2/` through the usual authentication: Ok when the registry
    /// accepts the credentials (or needs none).
    pub fn check_login(&self) -> anyhow::Result<()> {
        let url = format!("{}/v2/", self.transport().base);
        let response = self.get(&url, &[])?;
        let status = response.status();
        if !status.is_success() {
            bail!("{} answered {status} for /v2/", self.registry);
        }
        Ok(())
    }
}

pub struct ResumableBlob<'a> {
    client: &'a Client,
    url: String,
    reader: Option<Box<dyn Read + Send + 'static>>,
    delivered: u64,
    attempt: u32,
}

impl ResumableBlob<'_> {
    fn open(&mut self) -> io::Result<()> {
        let range = format!("bytes={}-", self.delivered);
        let headers: &[(&str, &str)] = if self.delivered > 0 {
            &[("Range", &range)]
        } else {
            &[]
        };
        let response = self
            .client
            .get(&self.url, headers)
            .map_err(io::Error::other)?;
        let status = response.status();
        let mut reader: Box<dyn Read + Send> = Box::new(response.into_body().into_reader());
        match status {
            StatusCode::OK => {
                // No range support: skip what was already delivered.
                let skipped = io::copy(&mut reader.by_ref().take(self.delivered), &mut io::sink())?;
                if skipped != self.delivered {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "blob shrank on retry",
                    ));
                }
            }
            StatusCode::PARTIAL_CONTENT if self.delivered > 0 => {}
            StatusCode::NOT_FOUND => {
                return Err(io::Error::other(format!(
                    "{} has no blob {} (the image is incomplete in the registry)",
                    self.client.registry, self.url
                )));
            }
            status => {
                return Err(io::Error::other(format!(
                    "{} answered {status} for {}",
                    self.client.registry, self.url
                )));
            }
        }
        self.reader = Some(reader);
        Ok(())
    }
}

impl Read for ResumableBlob<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.reader.is_none() {
                self.open()?;
            }
            let reader = self.reader.as_mut().expect("opened above");
            match reader.read(buf) {
                Ok(n) => {
                    self.delivered += n as u64;
                    return Ok(n);
                }
                Err(err) if self.attempt + 1 < ATTEMPTS && err.kind() != io::ErrorKind::Other => {
                    self.reader = None;
                    backoff(self.attempt, None);
                    self.attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        credentials::base64_encode(format!("{user}:{password}").as_bytes())
    )
}

fn is_transient(err: &ureq::Error) -> bool {
    matches!(
        err,
        ureq::Error::Io(_) | ureq::Error::Timeout(_) | ureq::Error::ConnectionFailed
    ) && !is_certificate_error(err)
}

/// A TLS certificate the verifier rejected (no retry helps).
fn is_certificate_error(err: &ureq::Error) -> bool {
    matches!(
        err,
        ureq::Error::Io(_) | ureq::Error::Tls(_) | ureq::Error::Rustls(_)
    ) && err.to_string().to_lowercase().contains("certificate")
}

fn retry_after(response: &Response<Body>) -> Option<Duration> {
    let seconds: u64 = response
        .headers()
        .get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds.min(30)))
}

/// 0.25, 0.5, 1, 2 s … ±20 %, or what the server asked for.
fn backoff(attempt: u32, wait: Option<Duration>) {
    let base = Duration::from_millis(250) * 2u32.pow(attempt.min(4));
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() % 400) as f64
        / 1000.0
        + 0.8;
    std::thread::sleep(wait.unwrap_or(base.mul_f64(jitter)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxies_by_scheme_and_no_proxy() {
        let vars = [
            ("HTTP_PROXY", "http://plain:1"),
            ("https_proxy", "http://secure:2"),
            (
                "NO_PROXY",
                "internal.lan, .corp.example,*.dev.example, 10.1.1.1:5000",
            ),
        ];
        let env = |name: &str| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        };
        let uri = |host: &str, https: bool| {
            proxy_for(host, https, &env)
                .unwrap()
                .map(|p| format!("{}:{}", p.host(), p.port()))
        };
        assert_eq!(uri("reg.lan", false).as_deref(), Some("plain:1"));
        assert_eq!(uri("reg.lan", true).as_deref(), Some("secure:2"));
        for direct in [
            "internal.lan",
            "corp.example",
            "a.corp.example",
            "x.dev.example",
            "10.1.1.1",
        ] {
            assert_eq!(uri(direct, true), None, "{direct}");
        }
        assert!(uri("notinternal.lan", true).is_some());
        let all = |name: &str| (name == "ALL_PROXY").then(|| "socks9://x".to_string());
        assert!(proxy_for("reg.lan", true, &all).is_err());
        let none = |_: &str| None;
        assert!(proxy_for("reg.lan", true, &none).unwrap().is_none());
    }

    #[test]
    fn scheme_rules() {
        for plain in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5555",
            "127.1.2.3",
            "[::1]:5000",
            "[::1]",
        ] {
            assert!(is_plain_http(plain, None), "{plain}");
        }
        for tls in [
            "docker.io",
            "ghcr.io",
            "10.0.0.1:5000",
            "localhost.example.com",
            "[::2]:1",
        ] {
            assert!(!is_plain_http(tls, None), "{tls}");
        }
        let list = Some("reg.lan:5000, other.lan");
        assert!(is_plain_http("reg.lan:5000", list));
        assert!(!is_plain_http("reg.lan:5001", list));
        assert!(!is_plain_http("reg.lan", list));
        assert!(is_plain_http("other.lan", list));
        assert!(is_plain_http("other.lan:8080", list));
    }
}
