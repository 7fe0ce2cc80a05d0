//! Credentials: read from the docker client config (`$DOCKER_CONFIG/config.json` or
//! `~/.docker/config.json`: `auths`, `credHelpers`, `credsStore`) and written by `kiln login`.

use std::path::PathBuf;

use base64::Engine as _;
use docker_credential::{CredentialRetrievalError, DockerCredential};
use oci_client::secrets::RegistryAuth;
use serde_json::{Map, Value};

use crate::Error;

/// The key docker uses for Docker Hub in `auths`.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// The credentials for a registry host, anonymous when none are configured.
pub fn credentials(host: &str) -> Result<RegistryAuth, Error> {
    let keys: Vec<&str> = if host == kiln_image::DEFAULT_DOMAIN {
        vec![DOCKER_HUB_KEY, "docker.io", "index.docker.io"]
    } else {
        vec![host]
    };
    for key in keys {
        match docker_credential::get_credential(key) {
            Ok(DockerCredential::UsernamePassword(user, password)) => {
                return Ok(RegistryAuth::Basic(user, password));
            }
            Ok(DockerCredential::IdentityToken(token)) => return Ok(RegistryAuth::Bearer(token)),
            Err(
                CredentialRetrievalError::ConfigNotFound
                | CredentialRetrievalError::NoCredentialConfigured
                | CredentialRetrievalError::ConfigReadError,
            ) => {}
            Err(e) => {
                return Err(Error::Credentials {
                    host: host.to_owned(),
                    why: format!("{e:?}"),
                });
            }
        }
    }
    Ok(RegistryAuth::Anonymous)
}

/// The docker client config file kiln reads and writes.
pub fn config_path() -> PathBuf {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => PathBuf::from(dir).join("config.json"),
        None => {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(".docker/config.json")
        }
    }
}

fn key_for(host: &str) -> &str {
    if host == kiln_image::DEFAULT_DOMAIN {
        DOCKER_HUB_KEY
    } else {
        host
    }
}

fn read_config(path: &PathBuf) -> Result<Map<String, Value>, Error> {
    match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(Error::Credentials {
                host: String::new(),
                why: format!("{} is not a JSON object", path.display()),
            }),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Map::new()),
        Err(e) => Err(Error::io("read", path)(e)),
    }
}

fn write_config(path: &PathBuf, config: &Map<String, Value>) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir).map_err(Error::io("create directory", dir))?;
    let bytes = serde_json::to_vec_pretty(config).unwrap_or_default();
    let tmp = path.with_extension("json.kiln-tmp");
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(Error::io("create", &tmp))?;
        file.write_all(&bytes).map_err(Error::io("write", &tmp))?;
        file.sync_all().map_err(Error::io("fsync", &tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(Error::io("rename into", path))
}

/// Stores `user`/`password` for `host` in `auths` of the docker config file. Returns the file.
pub fn store(host: &str, user: &str, password: &str) -> Result<PathBuf, Error> {
    let path = config_path();
    store_in(&path, host, user, password)?;
    Ok(path)
}

fn store_in(path: &PathBuf, host: &str, user: &str, password: &str) -> Result<(), Error> {
    let mut config = read_config(path)?;
    let auths = config
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    if !auths.is_object() {
        *auths = Value::Object(Map::new());
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    if let Value::Object(auths) = auths {
        auths.insert(
            key_for(host).to_owned(),
            serde_json::json!({ "auth": encoded }),
        );
    }
    write_config(path, &config)
}

/// Removes the stored credentials of `host`. Returns whether there were any.
pub fn logout(host: &str) -> Result<bool, Error> {
    logout_in(&config_path(), host)
}

fn logout_in(path: &PathBuf, host: &str) -> Result<bool, Error> {
    let mut config = read_config(path)?;
    let removed = config
        .get_mut("auths")
        .and_then(Value::as_object_mut)
        .and_then(|auths| auths.remove(key_for(host)))
        .is_some();
    if removed {
        write_config(path, &config)?;
    }
    Ok(removed)
}

/// Checks `user`/`password` against `host` (basic auth, or the bearer-token flow the
/// registry asks for) and stores them. Returns the config file written.
pub fn login(
    registry: &crate::Registry,
    host: &str,
    user: &str,
    password: &str,
) -> Result<PathBuf, Error> {
    registry.check_login(host, user, password)?;
    store(host, user, password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_writes_what_docker_credential_reads_and_logout_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"credsStore":"","other":1}"#).unwrap();
        store_in(&path, "127.0.0.1:5000", "kiln", "pa:ss").unwrap();
        store_in(&path, "docker.io", "hub", "x").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"other\": 1"), "other keys survive: {text}");
        assert!(text.contains(DOCKER_HUB_KEY), "{text}");
        let read = docker_credential::get_credential_from_reader(
            std::fs::File::open(&path).unwrap(),
            "127.0.0.1:5000",
        );
        assert!(matches!(
            read,
            Ok(DockerCredential::UsernamePassword(u, p)) if u == "kiln" && p == "pa:ss"
        ));
        assert!(logout_in(&path, "127.0.0.1:5000").unwrap());
        assert!(!logout_in(&path, "127.0.0.1:5000").unwrap());
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "credentials are private");
    }
}
