//! The command line: `turnd [serve]`, `turnd check-config FILE`,
//! `turnd credentials`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::serve;

#[derive(Debug, Parser)]
#[command(name = "turnd", version, about = "STUN/TURN relay for self-hosted WebRTC")]
pub struct Cli {
    /// Configuration file (TOML); without it, every default applies.
    #[arg(short, long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run the relay (what `turnd` alone does).
    Serve,
    /// Validate a configuration file: exit status 0 when valid, 1 when not.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Print TURN REST credentials and an iceServers JSON minted from the
    /// configured (or generated) shared secret.
    Credentials {
        /// User name after the expiry in the REST username.
        #[arg(long, default_value = "turnd")]
        user: String,
        /// How long the credential is valid, e.g. 12h, 30m, 7d.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
}

fn load(path: Option<&Path>) -> anyhow::Result<(Config, String)> {
    match path {
        Some(p) => Ok((Config::load(p)?, p.display().to_string())),
        None => Ok((Config::default(), "(defaults)".into())),
    }
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command.unwrap_or(Cmd::Serve) {
        Cmd::Serve => serve_forever(cli.config.as_deref()),
        Cmd::CheckConfig { file } => {
            let checked = Config::load(&file).map_err(anyhow::Error::from).and_then(|c| {
                c.secrets(&file.display().to_string())?;
                Ok(c)
            });
            match checked {
                Ok(_) => {
                    println!("{}: ok", file.display());
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{e:#}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Cmd::Credentials { user, ttl } => {
            let (cfg, file) = load(cli.config.as_deref())?;
            let (secrets, _) = serve::resolve_secrets(&cfg, &file, false)?;
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

fn serve_forever(path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let (cfg, file) = load(path)?;
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| cfg.log_level.clone());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&filter).context("bad RUST_LOG filter")?)
        .init();
    let (secrets, generated) = serve::resolve_secrets(&cfg, &file, true)?;
    let running = serve::start(&cfg, secrets.clone())?;
    for a in &running.relay.udp {
        tracing::info!(listen = %a, transport = "udp", "listening");
    }
    for (a, kind) in &running.relay.streams {
        tracing::info!(listen = %a, transport = kind, "listening");
    }
    if let Some(c) = &running.certs {
        let kind = if c.is_self_signed() { "self-signed " } else { "" };
        println!("turnd: TLS {kind}certificate SHA-256 {}", c.fingerprint());
    }
    if let Some(h) = &running.http {
        for a in &h.http {
            tracing::info!(listen = %a, "serving the call page over http");
        }
        for a in &h.https {
            tracing::info!(listen = %a, "serving the call page over https");
        }
        for link in h.join_links() {
            println!("turnd: join link: {link}");
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
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]).context("cannot install signal handlers")?;
    for sig in signals.forever() {
        if sig != SIGHUP {
            tracing::info!(signal = sig, "shutting down");
            break;
        }
        match running.reload_certificate() {
            Ok(None) => tracing::info!("SIGHUP: no TLS listener, nothing to reload"),
            Ok(Some(fp)) => tracing::info!(fingerprint = %fp, "SIGHUP: certificate reloaded"),
            Err(e) => tracing::error!(error = %format!("{e:#}"), "SIGHUP: certificate not reloaded, the old one stays"),
        }
    }
    running.stop();
    Ok(ExitCode::SUCCESS)
}
