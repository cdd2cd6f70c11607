//! The command line: `turnd [serve]`, `turnd check-config FILE`,
//! `turnd credentials`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use sd_notify::NotifyState;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::secret::Secret;
use crate::serve;

#[derive(Debug, Parser)]
#[command(name = "turnd", version, about = "STUN/TURN relay for self-hosted WebRTC")]
pub struct Cli {
    /// Configuration file (TOML) to serve with; without it, every default
    /// applies.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Cmd>,
}

/// `-c/--config` for the subcommands that read the configuration.
#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// Configuration file (TOML); without it, every default applies.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run the relay (what `turnd` alone does).
    Serve(ConfigArg),
    /// Validate a configuration file and the files it names (secrets,
    /// admin token, certificate): every problem at once, each with its key,
    /// line and value. Exit status 0 when valid, 1 when not.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Print TURN REST credentials and an iceServers JSON minted from the
    /// configured (or generated) shared secret.
    Credentials {
        #[command(flatten)]
        config: ConfigArg,
        /// User name after the expiry in the REST username.
        #[arg(long, default_value = "turnd")]
        user: String,
        /// How long the credential is valid, e.g. 12h, 30m, 7d.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// List the allocations of a running turnd (its admin API: the first
    /// `admin.listen` address and the token from the config).
    Sessions(ConfigArg),
    /// Delete every allocation of a user on a running turnd.
    Kill {
        #[command(flatten)]
        config: ConfigArg,
        /// The user: the `<user>` part of a REST username, or a static user.
        #[arg(long)]
        user: String,
    },
    /// Check a TURN server from where you are: STUN Binding, Allocate,
    /// CreatePermission and ChannelBind between two allocations of its own,
    /// and data relayed between them. Exit status 0 only when data went
    /// through.
    Probe(crate::probe::Args),
}

fn load(path: Option<&Path>) -> anyhow::Result<(Config, String)> {
    match path {
        Some(p) => Ok((Config::load(p)?, p.display().to_string())),
        None => Ok((Config::default(), "(defaults)".into())),
    }
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // `turnd -c FILE sub…` (the option before the subcommand) still names
    // the file for the subcommands that read one.
    let or_top = |c: ConfigArg| c.config.or(cli.config.clone());
    match cli.command.unwrap_or(Cmd::Serve(ConfigArg { config: None })) {
        Cmd::Serve(c) => serve_forever(or_top(c).as_deref()),
        Cmd::CheckConfig { file } => {
            match Config::check(&file) {
                Ok(c) => {
                    println!("{}: ok", file.display());
                    // What the firewall must let in.
                    for (addr, t) in c.listeners().0 {
                        let proto = if t == crate::config::ListenTransport::Udp {
                            "udp"
                        } else {
                            "tcp"
                        };
                        println!("  listen {proto} {addr} ({t})");
                    }
                    println!("  relay ports udp {}-{}", c.relay.min_port, c.relay.max_port);
                    let udp: Vec<_> = c
                        .listeners()
                        .0
                        .into_iter()
                        .filter(|(_, t)| *t == crate::config::ListenTransport::Udp)
                        .map(|(a, _)| a)
                        .collect();
                    let relay_ips: Vec<std::net::IpAddr> =
                        [c.relay.relay_ipv4.map(Into::into), c.relay.relay_ipv6.map(Into::into)]
                            .into_iter()
                            .flatten()
                            .collect();
                    println!("  xdp {}", crate::net::xdp::preflight(&c.xdp, &udp, &relay_ips));
                    match serve::acme_spec(&c) {
                        Some(spec) => println!("  acme {}", crate::acme::describe(&spec, &spec.cert_path())),
                        None => println!("  acme off"),
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{e:#}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Cmd::Sessions(c) => {
            let (cfg, _) = load(or_top(c).as_deref())?;
            let v = admin_call(&cfg, "GET", "/admin/sessions", None)?;
            print_sessions(&v);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Kill { config, user } => {
            let (cfg, _) = load(or_top(config).as_deref())?;
            let v = admin_call(&cfg, "POST", "/admin/kill", Some(("user", &user)))?;
            println!("killed {} allocation(s) of {user}", v["killed"]);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Probe(args) => crate::probe::run(args),
        Cmd::Credentials { config, user, ttl } => {
            let (cfg, file) = load(or_top(config).as_deref())?;
            // Before turnd ever ran there is no generated secret yet: make
            // it now, where `turnd` (serve) will find and use it.
            let secrets = match service_secret(&cfg) {
                Some(s) => vec![s],
                None => {
                    let serve::Secrets {
                        secrets,
                        generated,
                        created,
                    } = serve::resolve_secrets(&cfg, &file)?;
                    if let Some(p) = generated.filter(|_| created) {
                        eprintln!(
                            "turnd: generated the shared secret in {} (turnd started by this user with this \
                             configuration uses it; the systemd service keeps its own in {})",
                            p.display(),
                            SERVICE_SECRET
                        );
                    }
                    secrets
                }
            };
            let secret = secrets
                .first()
                .context("no shared secret configured: static users have fixed passwords, nothing to mint")?;
            let (username, password) = serve::mint(&cfg, secret, &user, ttl);
            let json =
                serve::Endpoints::configured(&cfg).ice_servers_json(&serve::public_host(&cfg), &username, &password);
            println!("username: {username}");
            println!("password: {password}");
            println!("{}", serde_json::to_string_pretty(&json)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Where the systemd unit's turnd keeps its generated secret
/// (`StateDirectory=turnd`).
const SERVICE_SECRET: &str = "/var/lib/turnd/secret";

/// The systemd service's generated secret, when the configuration names no
/// secret and no data dir, this user has no generated secret of its own,
/// and the service's can be read: `turnd credentials` run from a root
/// shell then mints credentials the service accepts.
fn service_secret(cfg: &Config) -> Option<Secret> {
    let configured = !cfg.auth.static_auth_secrets.is_empty()
        || !cfg.auth.static_auth_secret_files.is_empty()
        || cfg.data_dir.is_some()
        || std::env::var_os("STATE_DIRECTORY").is_some();
    if configured || serve::secret_path(&serve::data_dir(cfg)).exists() {
        return None;
    }
    let s = std::fs::read_to_string(SERVICE_SECRET).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| {
        eprintln!("turnd: using the systemd service's shared secret in {SERVICE_SECRET}");
        Secret::new(s)
    })
}

fn serve_forever(path: Option<&Path>) -> anyhow::Result<ExitCode> {
    serve::limit_malloc_arenas();
    let (cfg, file) = load(path)?;
    let logging = Logging::init(&cfg)?;
    let serve::Secrets { secrets, generated, .. } = serve::resolve_secrets(&cfg, &file)?;
    let running = serve::start(&cfg, secrets.clone())?;
    for a in &running.relay.udp {
        tracing::info!(listen = %a, transport = "udp", "listening");
    }
    for (a, kind) in &running.relay.streams {
        tracing::info!(listen = %a, transport = %kind, "listening");
    }
    let host = serve::public_host(&cfg);
    let tls = running.relay.streams.iter().any(|(_, k)| k.uses_tls());
    if tls && serve::bare_host(&host).parse::<std::net::IpAddr>().is_ok() {
        tracing::warn!(
            public_host = %host,
            "Firefox uses turns: (TURN over TLS) URLs only with a host name, never an IP address: \
             set public-host to a DNS name (with a certificate for it) for TLS on 443 in Firefox"
        );
    }
    if let Some(c) = &running.certs {
        let kind = match c.source() {
            crate::tls::Source::SelfSigned => "self-signed ",
            crate::tls::Source::Acme => "ACME-issued ",
            crate::tls::Source::Files => "",
        };
        let (_, until) = c.validity();
        let until = crate::tls::date(until);
        println!(
            "turnd: TLS {kind}certificate SHA-256 {}, valid until {until}",
            c.fingerprint()
        );
        if let Some(spec) = serve::acme_spec(&cfg) {
            println!("turnd: ACME: {}", crate::acme::describe(&spec, &spec.cert_path()));
        }
    }
    if let Some(h) = &running.http {
        for a in &h.http {
            tracing::info!(listen = %a, "serving the call page over http");
        }
        for a in &h.https {
            tracing::info!(listen = %a, "serving the call page over https");
        }
        let links = h.join_links();
        for link in &links {
            println!("turnd: join link: {link}");
        }
        // On a terminal, a code a phone's camera opens: the link it can
        // use (HTTPS lets it use the camera), never a loopback one.
        if std::io::stdout().is_terminal() {
            let reachable =
                |l: &&String| !(l.contains("://127.") || l.contains("://[::1]") || l.contains("://localhost"));
            let phone = (links.iter().filter(reachable))
                .find(|l| l.starts_with("https://"))
                .or_else(|| links.iter().find(reachable));
            if let Some(code) = phone.and_then(|l| crate::qr::terminal(l)) {
                println!(
                    "turnd: scan with a phone to join ({}):\n{code}",
                    phone.map_or("", |l| l.as_str())
                );
            }
        }
    }
    if let Some(secret) = secrets.first() {
        let (username, password) = serve::mint(&cfg, secret, "turnd", Duration::from_secs(24 * 3600));
        let json = running
            .endpoints()
            .ice_servers_json(&serve::public_host(&cfg), &username, &password);
        if let Some(p) = generated {
            println!(
                "turnd: shared secret in {} (use it as coturn's static-auth-secret would be used)",
                p.display()
            );
        }
        println!("turnd: iceServers valid for 24h (mint more with `turnd credentials --user NAME --ttl 12h`):");
        println!("{}", serde_json::to_string(&json)?);
    }
    let _ = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status("serving")]);
    let code = run_until_stopped(running, path, &logging)?;
    Ok(code)
}

/// Handles signals until turnd should exit: SIGHUP reloads the
/// configuration, SIGTERM or SIGINT drain (new allocations refused, existing
/// ones go on until they end or `drain-timeout` passes), a second one exits
/// at once. Pings the systemd watchdog while every worker turns. Runs on
/// turnd's runtime, woken only by a signal, the last allocation ending, the
/// drain deadline or the watchdog period.
fn run_until_stopped(mut running: serve::Daemon, path: Option<&Path>, logging: &Logging) -> anyhow::Result<ExitCode> {
    use tokio::signal::unix::{signal, SignalKind};
    let handle = running.lifecycle.tasks().handle().clone();
    let outcome = handle.block_on(async {
        let mut hup = signal(SignalKind::hangup()).context("cannot install signal handlers")?;
        let mut term = signal(SignalKind::terminate()).context("cannot install signal handlers")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot install signal handlers")?;
        let watchdog = sd_notify::watchdog_enabled();
        let mut ping = tokio::time::interval(watchdog.map_or(Duration::from_secs(3600), |p| p / 2));
        let mut drain_deadline: Option<tokio::time::Instant> = None;
        let shared = running.relay.shared.clone();
        loop {
            let deadline = async {
                match drain_deadline {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            let drained = async {
                match drain_deadline {
                    Some(_) => shared.drained().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = hup.recv() => reload(&mut running, path, logging),
                _ = term.recv() => {
                    if drain(&running, "SIGTERM", &mut drain_deadline) {
                        return anyhow::Ok(());
                    }
                }
                _ = int.recv() => {
                    if drain(&running, "SIGINT", &mut drain_deadline) {
                        return Ok(());
                    }
                }
                _ = drained => {
                    tracing::info!("drained: no allocation left");
                    return Ok(());
                }
                _ = deadline => {
                    tracing::info!(allocations = running.allocations(), "drain timeout: exiting with allocations left");
                    return Ok(());
                }
                _ = ping.tick(), if watchdog.is_some() => {
                    let period = watchdog.unwrap_or_default();
                    let relay_workers = running.relay.workers.clone();
                    let limit = (period / 4).min(Duration::from_secs(1));
                    let alive = tokio::task::spawn_blocking(move || relay_workers.alive(limit)).await.unwrap_or(false);
                    if alive {
                        let _ = sd_notify::notify(&[NotifyState::Watchdog]);
                    } else {
                        tracing::error!("a relay worker does not turn: watchdog not pinged");
                    }
                }
            }
        }
    });
    running.stop();
    outcome.map(|()| ExitCode::SUCCESS)
}

/// A SIGTERM or SIGINT: starts draining, or, when already draining, says
/// turnd exits now (true).
fn drain(running: &serve::Daemon, signal: &str, deadline: &mut Option<tokio::time::Instant>) -> bool {
    if deadline.is_some() {
        tracing::info!(signal, "second signal: exiting now");
        return true;
    }
    let left = running.allocations();
    tracing::info!(signal, allocations = left, timeout = ?running.config.drain_timeout, "draining: new allocations refused");
    let status = format!("draining: {left} allocations");
    let _ = sd_notify::notify(&[NotifyState::Stopping, NotifyState::Status(&status)]);
    *deadline = Some(tokio::time::Instant::now() + running.config.drain_timeout);
    running.start_draining();
    false
}

fn reload(running: &mut serve::Daemon, path: Option<&Path>, logging: &Logging) {
    let Some(path) = path else {
        tracing::info!("SIGHUP: no configuration file, nothing to reload");
        return;
    };
    let _ = sd_notify::notify(&[NotifyState::Reloading]);
    match running.reload(path) {
        Ok(r) => {
            logging.set_level(&running.config.log_level);
            for what in &r.needs_restart {
                tracing::warn!(section = what, "changed, but takes effect only after a restart");
            }
            if let Some(e) = &r.certificate_error {
                tracing::error!(error = %e, "SIGHUP: certificate not reloaded, the old one stays");
            }
            tracing::info!(file = %path.display(), fingerprint = ?r.fingerprint, "SIGHUP: configuration reloaded");
        }
        Err(e) => tracing::error!(error = %format!("{e:#}"), "SIGHUP: configuration not reloaded, the old one stays"),
    }
    let _ = sd_notify::notify(&[NotifyState::Ready]);
}

/// The log subscriber: text or JSON lines, with a filter a reload can
/// change (unless RUST_LOG set it).
struct Logging {
    filter: tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>,
    from_env: bool,
}

impl Logging {
    fn init(cfg: &crate::config::Config) -> anyhow::Result<Self> {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        let env = std::env::var("RUST_LOG").ok();
        let level = env.clone().unwrap_or_else(|| cfg.log_level.clone());
        let filter = tracing_subscriber::EnvFilter::try_new(&level).context("bad RUST_LOG filter")?;
        let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
        let json = cfg.log_format == crate::config::LogFormat::Json;
        let stderr = std::io::stderr;
        // Colour only for a person at a terminal; under systemd (stderr
        // connected to the journal) plain lines with a syslog priority
        // prefix, which journald turns into the entry's priority, and no
        // timestamp (the journal has its own).
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let journal = !terminal && std::env::var_os("JOURNAL_STREAM").is_some();
        let text = tracing_subscriber::fmt::layer().with_writer(stderr).with_ansi(terminal);
        tracing_subscriber::registry()
            .with(filter)
            .with((!json && !journal).then_some(text))
            .with((!json && journal).then(|| {
                tracing_subscriber::fmt::layer()
                    .with_writer(stderr)
                    .with_ansi(false)
                    .event_format(Journal(tracing_subscriber::fmt::format().without_time()))
            }))
            .with(json.then(|| tracing_subscriber::fmt::layer().json().with_writer(stderr)))
            .init();
        Ok(Self {
            filter: handle,
            from_env: env.is_some(),
        })
    }

    fn set_level(&self, level: &str) {
        if self.from_env {
            return;
        }
        match tracing_subscriber::EnvFilter::try_new(level) {
            Ok(f) => {
                let _ = self.filter.reload(f);
            }
            Err(e) => tracing::error!(error = %e, "log-level not changed"),
        }
    }
}

/// Log lines for journald: `<N>` (the syslog priority of the level) in
/// front of what `F` writes.
struct Journal<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for Journal<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}

/// A call to the admin API of the turnd `cfg` describes.
fn admin_call(
    cfg: &Config,
    method: &str,
    path: &str,
    query: Option<(&str, &str)>,
) -> anyhow::Result<serde_json::Value> {
    let addr = cfg
        .admin
        .listen
        .first()
        .context("no admin.listen in the configuration (the admin API is off)")?;
    let token = cfg.admin.token()?.context("no admin.token in the configuration")?;
    let host = if addr.ip().is_unspecified() {
        std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        *addr
    };
    let url = format!("http://{host}{path}");
    let auth = format!("Bearer {}", token.expose());
    let resp = if method == "POST" {
        ureq::post(&url)
            .header("Authorization", &auth)
            .query_pairs(query)
            .send_empty()
    } else {
        ureq::get(&url).header("Authorization", &auth).query_pairs(query).call()
    };
    let mut resp = resp.with_context(|| format!("admin API at {url}"))?;
    let body = resp.body_mut().read_to_string().context("admin API answer")?;
    serde_json::from_str(&body).context("admin API answer is not JSON")
}

fn print_sessions(v: &serde_json::Value) {
    let list = v["sessions"].as_array().cloned().unwrap_or_default();
    println!(
        "{:<28} {:<5} {:<24} {:<24} {:>7} {:>10} {:>12} {:>12}  peers",
        "user", "via", "client", "relayed", "age", "state", "to peer", "to client"
    );
    for s in &list {
        let peers: Vec<&str> = s["peers"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p.as_str()).collect())
            .unwrap_or_default();
        // "idle 42s": its client has sent nothing for that long.
        let state = match s["idle"].as_bool() {
            Some(true) => format!("idle {}s", s["silent_secs"]),
            _ => "active".to_string(),
        };
        println!(
            "{:<28} {:<5} {:<24} {:<24} {:>6}s {:>10} {:>12} {:>12}  {}",
            s["user"].as_str().unwrap_or("?"),
            s["transport"].as_str().unwrap_or("?"),
            s["client"].as_str().unwrap_or("?"),
            s["relayed"].as_str().unwrap_or("?"),
            s["age_secs"],
            state,
            format!("{} B", s["to_peer_bytes"]),
            format!("{} B", s["to_client_bytes"]),
            peers.join(" ")
        );
    }
    println!("{} allocation(s)", list.len());
}
