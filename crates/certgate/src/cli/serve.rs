//! `certgate serve`: run the gateway, or with `--check` load everything and report.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

/// Runs the gateway. SIGHUP reloads the configuration and every file it names (all or
/// nothing: a configuration with problems is refused and the running one keeps serving);
/// SIGTERM and Ctrl-C stop it after open connections finish. Managed certificates (`managed =
/// "NAME"`) missing from state_dir are requested from the online CA before the first load,
/// and renewed in the background.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  certgate serve --config certgate.toml --check     # load everything, report, exit
  certgate serve --config certgate.toml
  certgate serve --config /etc/certgate/certgate.toml --log-format json")]
pub struct ServeArgs {
    /// The configuration file (see docs/config.md).
    #[arg(long, short, env = "CERTGATE_CONFIG", default_value = "certgate.toml")]
    pub config: PathBuf,
    /// Load the configuration, certificates, keys, CAs and CRLs, print "ok" or every problem,
    /// and exit.
    #[arg(long)]
    pub check: bool,
    /// How diagnostics on stderr are written: "text" for people (colour only on a terminal,
    /// and never with NO_COLOR set), "json" (one object a line) for log shippers.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The format of diagnostics on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_logging(args.log_format);
    // Managed certificates missing from state_dir are requested first (not by --check,
    // which only reads): the configuration that serves them is loaded next.
    if !args.check {
        match certgate_gateway::managed::bootstrap(&args.config) {
            Ok(done) => {
                for line in done {
                    eprintln!("certgate: {line}");
                }
            }
            Err(errors) => {
                eprint!("{errors}");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    let config = match certgate_gateway::config::load(&args.config) {
        Ok(c) => c,
        Err(errors) => {
            eprint!("{errors}");
            return Ok(ExitCode::FAILURE);
        }
    };
    use certgate_gateway::config::{ConfigErrors, Severity};
    let (problems, warnings): (Vec<_>, Vec<_>) =
        config.notes.iter().partition(|(severity, _)| *severity == Severity::Check);
    for (_, warning) in &warnings {
        eprintln!("warning: {warning}");
    }
    if args.check {
        // Problems of time are errors here: the configuration would serve, but not as meant.
        if !problems.is_empty() {
            eprint!("{}", ConfigErrors(problems.into_iter().map(|(_, p)| p.clone()).collect()));
            return Ok(ExitCode::FAILURE);
        }
        let routes: usize = config.listeners.len();
        writeln!(super::out::Out::lock(), "ok: {} ({routes} listener(s))", args.config.display())?;
        return Ok(ExitCode::SUCCESS);
    }
    for (_, problem) in &problems {
        eprintln!("warning: {problem} (serving anyway; `serve --check` fails on it)");
    }
    let runtime = runtime(config.worker_threads)?;
    let path = args.config.clone();
    runtime.block_on(async {
        let (triggers, requests) = reload_on_sighup()?;
        let reloader = certgate_gateway::Reloader {
            load: Box::new(move || {
                // A managed certificate new to the file is requested before it is loaded.
                for line in certgate_gateway::managed::bootstrap(&path)? {
                    tracing::info!("reload: {line}");
                }
                certgate_gateway::config::load(&path)
            }),
            requests,
            triggers: Some(triggers),
            reopen_logs: reopen_on_sigusr1()?,
        };
        certgate_gateway::serve(config, Some(reloader), shutdown_signal(), print_ready).await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// A multi-threaded runtime with `threads` workers (default: one per core).
pub fn runtime(threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        // The configuration refuses 0; never ask tokio for it.
        builder.worker_threads(n.max(1));
    }
    Ok(builder.enable_all().build()?)
}

/// Logs to stderr; `CERTGATE_LOG` (e.g. `debug`, `certgate_gateway=debug`) sets the level.
/// Text has colour only when stderr is a terminal and `NO_COLOR` is not set.
pub fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("CERTGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(colour).try_init()
        }
    };
}

fn print_ready(ready: certgate_gateway::Ready) {
    for (name, addr) in ready.listeners {
        eprintln!("certgate: listener {name} on https://{addr}");
    }
    if let Some(addr) = ready.admin {
        let scheme = if ready.admin_tls { "https" } else { "http" };
        eprintln!("certgate: admin on {scheme}://{addr}");
    }
}

/// A reload request for each SIGHUP (`systemctl reload`, `kill -HUP`): the signal no longer
/// ends the process.
fn reload_on_sighup()
-> anyhow::Result<(tokio::sync::mpsc::Sender<()>, tokio::sync::mpsc::Receiver<()>)> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let triggers = tx.clone();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = signal(SignalKind::hangup())?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the configuration");
                // A full queue already holds a reload that will read the newest files.
                let _ = tx.try_send(());
            }
        });
    }
    #[cfg(not(unix))]
    drop(tx);
    Ok((triggers, rx))
}

/// A request to reopen the access-log file for each SIGUSR1 (logrotate's `postrotate`).
fn reopen_on_sigusr1() -> anyhow::Result<tokio::sync::mpsc::Receiver<()>> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut usr1 = signal(SignalKind::user_defined1())?;
        tokio::spawn(async move {
            while usr1.recv().await.is_some() {
                let _ = tx.try_send(());
            }
        });
    }
    #[cfg(not(unix))]
    drop(tx);
    Ok(rx)
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    eprintln!("certgate: stopping");
}
