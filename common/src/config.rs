//! Configuration loading shared by every daemon.
//!
//! Precedence, lowest first: built-in defaults (the struct's `Default`) <
//! config file < `MFS_*` environment variables < command-line flags.
//!
//! The config file may be MooseFS-style (`KEY = VALUE` lines, `#` comments,
//! as in `mfsmaster.cfg`) or TOML (when the name ends in `.toml`). Keys are
//! case-insensitive: `DATA_PATH`, `data_path` and `MFS_DATA_PATH` name the
//! same setting. Unknown keys and bad values are refused with the key and the
//! line they came from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {msg}")]
    Syntax {
        path: PathBuf,
        line: usize,
        msg: String,
    },
    #[error("bad configuration: {0}")]
    Invalid(String),
}

/// A MooseFS-style `KEY = VALUE` file as a figment provider, remembering the
/// line of every key so errors can point at it.
#[derive(Debug, Clone)]
pub struct KeyValueFile {
    path: PathBuf,
    values: BTreeMap<String, (Value, usize)>,
}

impl KeyValueFile {
    /// Parses `text` (the contents of `path`). `aliases` maps MooseFS key
    /// names (lowercase) to the setting they mean.
    pub fn parse(path: &Path, text: &str, aliases: &[(&str, &str)]) -> Result<Self, ConfigError> {
        let mut values = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let content = match raw.find('#') {
                Some(p) => &raw[..p],
                None => raw,
            }
            .trim();
            if content.is_empty() {
                continue;
            }
            let Some((k, v)) = content.split_once('=') else {
                return Err(ConfigError::Syntax {
                    path: path.to_owned(),
                    line,
                    msg: format!("expected `KEY = VALUE`, found `{content}`"),
                });
            };
            let key = canonical_key(k.trim(), aliases);
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(ConfigError::Syntax {
                    path: path.to_owned(),
                    line,
                    msg: format!("bad key `{}`", k.trim()),
                });
            }
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .unwrap_or(v);
            let value = Value::from_str(v).unwrap_or_else(|never| match never {});
            values.insert(key, (value, line));
        }
        Ok(KeyValueFile {
            path: path.to_owned(),
            values,
        })
    }

    /// The line a key was set on.
    pub fn line_of(&self, key: &str) -> Option<usize> {
        self.values.get(&key.to_ascii_lowercase()).map(|(_, l)| *l)
    }
}

impl Provider for KeyValueFile {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("config file {}", self.path.display()))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let dict: Dict = self
            .values
            .iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect();
        Ok(Profile::Default.collect(dict))
    }
}

fn canonical_key(key: &str, aliases: &[(&str, &str)]) -> String {
    let key = key.to_ascii_lowercase();
    aliases
        .iter()
        .find(|(alias, _)| *alias == key)
        .map(|(_, name)| name.to_string())
        .unwrap_or(key)
}

/// Deserializes a flag written as MooseFS does (`0`/`1`) or as `true`/`false`,
/// `yes`/`no`, `on`/`off`.
pub fn flexible_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Num(i64),
        Text(String),
    }
    match <Flag as serde::Deserialize>::deserialize(d)? {
        Flag::Bool(b) => Ok(b),
        Flag::Num(0) => Ok(false),
        Flag::Num(1) => Ok(true),
        Flag::Text(s) => match s.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(serde::de::Error::custom(format!(
                "expected 0 or 1, found `{s}`"
            ))),
        },
        Flag::Num(n) => Err(serde::de::Error::custom(format!(
            "expected 0 or 1, found {n}"
        ))),
    }
}

/// The config file to read and whether it must exist: the one given with
/// `-c` (required), else the daemon's default path (read only if present).
pub fn config_file(given: Option<&Path>, default: &str) -> (PathBuf, bool) {
    match given {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(default), false),
    }
}

/// Loads a daemon's configuration.
///
/// `file`: the config file, if any (a missing file is an error only when
/// `file_required`); `overrides`: values from command-line flags (only the
/// ones the user gave, as a serializable struct whose `None` fields are
/// skipped).
/// `aliases` maps MooseFS key names (lowercase, e.g. `matocl_listen_port`) to
/// the setting they mean; they are accepted in the file and the environment.
pub fn load<T, O>(
    file: Option<&Path>,
    file_required: bool,
    aliases: &[(&str, &str)],
    overrides: &O,
) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
    O: Serialize,
{
    let mut fig = Figment::from(Serialized::defaults(T::default()));
    let mut kv: Option<KeyValueFile> = None;
    if let Some(path) = file {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                if path.extension().is_some_and(|e| e == "toml") {
                    fig = fig.merge(Toml::string(&text).nested());
                } else {
                    let parsed = KeyValueFile::parse(path, &text, aliases)?;
                    fig = fig.merge(parsed.clone());
                    kv = Some(parsed);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !file_required => {}
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        }
    }
    fig = fig
        .merge({
            // Only the environment variables that name a setting of this
            // daemon: MFS_MASTERS, MFS_BIN_DIR and other roles' keys are
            // not ours to refuse.
            let known: Vec<String> = Figment::from(Serialized::defaults(T::default()))
                .data()
                .ok()
                .and_then(|m| {
                    m.get(&Profile::Default)
                        .map(|d| d.keys().cloned().collect())
                })
                .unwrap_or_default();
            let owned: Vec<(String, String)> = aliases
                .iter()
                .map(|(a, n)| (a.to_string(), n.to_string()))
                .collect();
            Env::prefixed("MFS_")
                .map(move |k| {
                    let k = k.as_str().to_ascii_lowercase();
                    owned
                        .iter()
                        .find(|(a, _)| *a == k)
                        .map(|(_, n)| n.clone())
                        .unwrap_or(k)
                        .into()
                })
                .filter(move |k| known.iter().any(|n| n.as_str() == k.as_str()))
        })
        .merge(Serialized::defaults(overrides));
    fig.extract::<T>().map_err(|errs| {
        let mut msgs = Vec::new();
        for e in errs {
            let key = e.path.join(".");
            let unknown = matches!(e.kind, figment::error::Kind::UnknownField(..));
            let field = match &e.kind {
                figment::error::Kind::UnknownField(f, _) => f.clone(),
                _ => key.clone(),
            };
            let place = match (&kv, e.metadata.as_ref()) {
                (Some(kv), Some(md)) if md.name.starts_with("config file") => kv
                    .line_of(&field)
                    .map(|l| format!("{}:{l}: ", kv.path.display()))
                    .unwrap_or_default(),
                (_, Some(md)) => format!("{}: ", md.name),
                _ => String::new(),
            };
            let what = if unknown {
                format!("unknown key `{}`", field.to_ascii_uppercase())
            } else {
                format!("key `{}`: {}", field.to_ascii_uppercase(), e.kind)
            };
            msgs.push(format!("{place}{what}"));
        }
        ConfigError::Invalid(msgs.join("; "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Cfg {
        data_path: String,
        port: u16,
        #[serde(deserialize_with = "flexible_bool")]
        flag: bool,
    }

    #[derive(Serialize, Default)]
    struct NoOverrides {}

    const AL: &[(&str, &str)] = &[("matocl_listen_port", "port")];

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.cfg");
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    #[test]
    fn moosefs_format_with_alias_and_comments() {
        let (_d, p) = write(
            "# comment\nDATA_PATH = /var/lib/mfs\n\nMATOCL_LISTEN_PORT = 9521 # trailing\nFLAG=1\n",
        );
        let c: Cfg = load(Some(&p), true, AL, &NoOverrides {}).unwrap();
        assert_eq!(c.data_path, "/var/lib/mfs");
        assert_eq!(c.port, 9521);
        assert!(c.flag);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let (_d, p) = write("DATA_PATH = /x\nBOGUS_KEY = 3\n");
        let e = load::<Cfg, _>(Some(&p), true, AL, &NoOverrides {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("BOGUS_KEY"), "{e}");
        assert!(e.contains(":2:"), "{e}");
    }

    #[test]
    fn bad_value_names_key_and_line() {
        let (_d, p) = write("\nMATOCL_LISTEN_PORT = ninety\n");
        let e = load::<Cfg, _>(Some(&p), true, AL, &NoOverrides {})
            .unwrap_err()
            .to_string();
        assert!(e.contains(":2:"), "{e}");
        assert!(e.to_ascii_uppercase().contains("PORT"), "{e}");
    }

    #[test]
    fn syntax_error_names_line() {
        let (_d, p) = write("DATA_PATH = /x\nno equals here\n");
        let e = load::<Cfg, _>(Some(&p), true, AL, &NoOverrides {})
            .unwrap_err()
            .to_string();
        assert!(e.contains(":2:"), "{e}");
    }

    #[test]
    fn foreign_env_vars_are_ignored() {
        // Another role's key or a tool's variable must not stop a daemon.
        std::env::set_var("MFS_SOME_OTHER_ROLES_KEY", "1");
        let c: Cfg = load(None, false, AL, &NoOverrides {}).unwrap();
        assert_eq!(c, Cfg::default());
    }

    #[test]
    fn flags_override_file() {
        #[derive(Serialize)]
        struct O {
            port: Option<u16>,
        }
        let (_d, p) = write("MATOCL_LISTEN_PORT = 1\n");
        let c: Cfg = load(Some(&p), true, AL, &O { port: Some(7) }).unwrap();
        assert_eq!(c.port, 7);
    }

    #[test]
    fn missing_optional_file_gives_defaults() {
        let c: Cfg = load(
            Some(Path::new("/nonexistent/x.cfg")),
            false,
            AL,
            &NoOverrides {},
        )
        .unwrap();
        assert_eq!(c, Cfg::default());
        assert!(load::<Cfg, _>(
            Some(Path::new("/nonexistent/x.cfg")),
            true,
            AL,
            &NoOverrides {}
        )
        .is_err());
    }
}

/// The settings as `KEY = VALUE` lines, the form the daemons' config files
/// take (what `--print-config` prints).
pub fn key_value_lines<T: Serialize>(cfg: &T) -> String {
    let v = serde_json::to_value(cfg).unwrap_or_default();
    let mut out = String::new();
    if let Some(map) = v.as_object() {
        for (k, v) in map {
            let val = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.push_str(&format!("{} = {}\n", k.to_ascii_uppercase(), val));
        }
    }
    out
}

#[cfg(test)]
mod key_value_tests {
    #[test]
    fn a_given_file_is_required_the_default_is_not() {
        let p = std::path::Path::new("/x/my.cfg");
        assert_eq!(
            super::config_file(Some(p), "/etc/mfs/a.cfg"),
            (p.to_path_buf(), true)
        );
        assert_eq!(
            super::config_file(None, "/etc/mfs/a.cfg"),
            ("/etc/mfs/a.cfg".into(), false)
        );
    }

    #[derive(serde::Serialize)]
    struct Cfg {
        data_path: String,
        master_port: u16,
        fsync: bool,
    }

    #[test]
    fn prints_upper_case_keys_and_plain_values() {
        let c = Cfg {
            data_path: "/var/lib/mfs".into(),
            master_port: 9421,
            fsync: false,
        };
        let out = super::key_value_lines(&c);
        let mut lines: Vec<&str> = out.lines().collect();
        lines.sort();
        assert_eq!(
            lines,
            [
                "DATA_PATH = /var/lib/mfs",
                "FSYNC = false",
                "MASTER_PORT = 9421"
            ]
        );
    }
}
