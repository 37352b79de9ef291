//! Reloading the configuration without a restart: on `SIGHUP`, or when the configuration
//! file, a secret file or a certificate changes (Kubernetes swaps a mounted Secret's
//! files through a symlink, so directories are watched, not files).
//!
//! A reload reads everything again and validates it as `portcullis check --offline`
//! does; a configuration with any problem is refused (each problem logged with its key
//! and fix, `portcullis_config_reload_failures_total` counted) and the old one keeps
//! serving, ready. A valid one is built into a new app that replaces the old at once:
//! requests in flight finish on the old app, sessions carry over when the store's
//! settings are the same, and the listeners are kept. TLS certificates are read again
//! for new handshakes. Settings only a restart can change are named in the log; the
//! rest applies.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use portcullis_config::{Config, LoadError};
use portcullis_proxy::{App, Certificates, Live};
use tokio::sync::mpsc;

/// How long the files must stay quiet after a change before the reload (an editor, or
/// Kubernetes, writes several files in a burst).
const SETTLE: Duration = Duration::from_millis(500);

/// Reads the configuration again, as the process was started.
pub(crate) type LoadAgain = Box<dyn Fn() -> Result<Config, LoadError> + Send + Sync>;

/// What the reloader works with.
pub(crate) struct Reloader {
    pub load: LoadAgain,
    pub live: Live,
    pub current: Config,
    pub workers: usize,
    pub certificates: Option<Arc<Certificates>>,
}

/// The directories to watch: the configuration file's, every `*_FILE` variable's, and
/// those of the files the configuration names.
fn watched(config: &Config, file: Option<&PathBuf>) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = file.into_iter().cloned().collect();
    for (name, value) in std::env::vars() {
        if name.ends_with("_FILE") && value.starts_with('/') {
            files.push(PathBuf::from(value));
        }
    }
    if let Some(tls) = &config.tls {
        files.push(tls.cert_file.clone());
        files.push(tls.key_file.clone());
    }
    files.extend(config.outbound_ca_file.clone());
    if let Some(jwt) = &config.identity_jwt {
        files.push(jwt.signing_key_file.clone());
        files.extend(jwt.previous_key_files.iter().cloned());
    }
    let mut dirs: Vec<PathBuf> = files
        .iter()
        .filter_map(|f| {
            let f = if f.is_absolute() {
                f.clone()
            } else {
                std::env::current_dir().ok()?.join(f)
            };
            f.parent().map(PathBuf::from)
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// The settings a running process cannot change, by key, when they differ.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let s = (&old.server, &new.server);
    for (key, changed) in [
        ("listen_addr", old.listen_addr != new.listen_addr),
        ("server.workers", s.0.workers != s.1.workers),
        (
            "server.max_connections",
            s.0.max_connections != s.1.max_connections,
        ),
        (
            "server.header_read_timeout",
            s.0.header_read_timeout != s.1.header_read_timeout,
        ),
        (
            "server.max_header_bytes",
            s.0.max_header_bytes != s.1.max_header_bytes,
        ),
        ("server.idle_timeout", s.0.idle_timeout != s.1.idle_timeout),
        (
            "server.shutdown_grace",
            s.0.shutdown_grace != s.1.shutdown_grace,
        ),
        ("tls", old.tls.is_some() != new.tls.is_some()),
        (
            "admin.listen_addr",
            old.admin.as_ref().map(|a| a.listen_addr) != new.admin.as_ref().map(|a| a.listen_addr),
        ),
        ("ext_authz", old.ext_authz != new.ext_authz),
        ("log_level", old.log.level != new.log.level),
        ("log_format", old.log.format != new.log.format),
    ] {
        if changed {
            keys.push(key);
        }
    }
    keys
}

impl Reloader {
    /// Reloads on `SIGHUP` and on file changes, for as long as the process runs.
    pub(crate) async fn run(mut self, file: Option<PathBuf>) {
        let (tx, mut rx) = mpsc::channel::<&'static str>(8);
        let _watcher = self.watch(file.as_ref(), tx.clone());
        #[cfg(unix)]
        {
            let tx = tx.clone();
            tokio::spawn(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let Ok(mut hup) = signal(SignalKind::hangup()) else {
                    tracing::warn!("cannot listen for SIGHUP: reload by signal is off");
                    return;
                };
                while hup.recv().await.is_some() {
                    let _ = tx.send("SIGHUP").await;
                }
            });
        }
        while let Some(why) = rx.recv().await {
            // Let a burst of changes settle, then reload once.
            if why != "SIGHUP" {
                while let Ok(Some(_)) = tokio::time::timeout(SETTLE, rx.recv()).await {}
            }
            self.reload(why).await;
        }
    }

    fn watch(
        &self,
        file: Option<&PathBuf>,
        tx: mpsc::Sender<&'static str>,
    ) -> Option<notify::RecommendedWatcher> {
        use notify::{RecursiveMode, Watcher};
        let dirs = watched(&self.current, file);
        let handler = move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|e| !e.kind.is_access()) {
                let _ = tx.try_send("a file changed");
            }
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the configuration files: reload on SIGHUP only");
                return None;
            }
        };
        for dir in &dirs {
            if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch a configuration directory");
            }
        }
        tracing::debug!(dirs = ?dirs, "watching for configuration changes");
        Some(watcher)
    }

    async fn reload(&mut self, why: &str) {
        let old = self.live.load_full();
        let refuse = |problems: &[String]| {
            for problem in problems {
                tracing::error!(problem = %problem, "configuration reload refused");
            }
            tracing::error!(
                problems = problems.len(),
                "configuration reload refused ({why}): the previous configuration keeps serving"
            );
            old.count_reload(false);
        };
        let config = match (self.load)() {
            Ok(config) => config,
            Err(LoadError::Invalid(errors)) => {
                let problems: Vec<String> = errors.0.iter().map(|e| e.to_string()).collect();
                return refuse(&problems);
            }
            Err(e) => return refuse(&[e.to_string()]),
        };
        let problems = crate::check::offline_problems(&config);
        if !problems.is_empty() {
            return refuse(&problems);
        }
        let http = match crate::serve::outbound_client(&config) {
            Ok(h) => h,
            Err(e) => return refuse(&[format!("{e:#}")]),
        };
        if let (Some(certs), Some(tls)) = (&self.certificates, &config.tls)
            && let Err(e) = certs.reload(&tls.cert_file, &tls.key_file)
        {
            return refuse(&[format!("tls: {e}")]);
        }
        let app = match App::reloaded(&config, http, self.workers, &old).await {
            Ok(app) => Arc::new(app),
            Err(e) => return refuse(&[e.to_string()]),
        };
        let restart = needs_restart(&self.current, &config);
        if !restart.is_empty() {
            tracing::warn!(
                keys = %restart.join(", "),
                "these settings changed but need a restart to apply; the rest of the new configuration applies now"
            );
        }
        app.start_background();
        App::start_polling(&app);
        app.count_reload(true);
        self.live.store(app);
        self.current = config;
        tracing::info!("configuration reloaded ({why})");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_only_settings_are_named() {
        let load = |pairs: &[(&str, &str)]| {
            portcullis_config::load(&portcullis_config::Sources {
                env: pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .chain([(
                        "UPSTREAM_URL".to_string(),
                        "http://127.0.0.1:3000".to_string(),
                    )])
                    .collect(),
                ..Default::default()
            })
            .unwrap()
        };
        let old = load(&[]);
        assert!(needs_restart(&old, &load(&[])).is_empty());
        let moved = load(&[("LISTEN_ADDR", "127.0.0.1:9999"), ("SERVER__WORKERS", "3")]);
        assert_eq!(
            needs_restart(&old, &moved),
            ["listen_addr", "server.workers"]
        );
        // Policy changes apply live.
        assert!(needs_restart(&old, &load(&[("UPSTREAM__PRESERVE_HOST", "true")])).is_empty());
    }
}
