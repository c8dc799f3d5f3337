//! The `authgate` command: the proxy, and the development peers as subcommands.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use clap::{Parser, Subcommand};
use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::ListenerConfig;
use pingora::proxy::http_proxy;
use pingora::server::configuration::Opt;
use pingora::server::{RunArgs, Server};
use pingora::services::listening::Service;

use authgate::connections::Guarded;
use authgate::devserver::{self, echo, standin};
use authgate::drain::{self, Draining, Readiness};
use authgate::reload::{EarlyHangup, Reloader};
use authgate::runtime::Runtime;
use authgate::tls::CertStore;
use authgate::upstreams::HealthChecks;
use authgate::{admin::Admin, config, proxy::AuthGate};

// Pingora allocates per request (headers, tasks, buffers); mimalloc's thread-local free lists
// make that several times cheaper than glibc's malloc (see BENCHMARKS.md). Heap profilers
// (valgrind's DHAT, heaptrack) only see the system allocator: build with
// `--features system-allocator` for them.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: authgate::allocator::MiMalloc = authgate::allocator::MiMalloc;

#[derive(Parser)]
#[command(
    name = "authgate",
    version,
    about = "Authenticating edge proxy for Authgear, on Pingora"
)]
struct Cli {
    /// The configuration file.
    #[arg(short, long, default_value = "/etc/authgate/authgate.yaml")]
    conf: PathBuf,
    /// Check the configuration file and exit.
    #[arg(short, long)]
    test: bool,
    /// Run in the background (Pingora daemon mode).
    #[arg(short, long)]
    daemon: bool,
    /// Take the listening sockets over from a running authgate (zero-downtime upgrade).
    #[arg(short, long)]
    upgrade: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the resolver stand-in (follows Authgear's resolver contract; for development and tests).
    Standin {
        #[arg(long, default_value = "127.0.0.1:3001")]
        listen: SocketAddr,
        /// YAML file with users and their sessions and tokens.
        #[arg(long, default_value = "conf/users.yaml")]
        users: PathBuf,
        /// Artificial latency added to every resolve, e.g. `50ms`.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
        latency: Duration,
        /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Benchmarks only: every unknown `session` cookie starting with this prefix is a
        /// valid session of its own user (e.g. `bench-`); empty: off.
        #[arg(long, default_value = "")]
        any_session_prefix: String,
        /// Serve the login and logout pages (`/login`, `/logout`), returning browsers only to
        /// addresses of this app origin (repeatable; scheme://host[:port]).
        #[arg(long)]
        app_origin: Vec<String>,
        /// The origin its JWT access tokens name as `iss` and `aud` (Authgear's project
        /// origin); default: http:// and the listen address.
        #[arg(long)]
        token_origin: Option<String>,
    },
    /// Run the echo backend (answers with what it received, as JSON).
    Echo {
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: SocketAddr,
        /// The name it signs its answers with (`served_by`); default: the listen address.
        #[arg(long)]
        name: Option<String>,
        /// Answer `/logout` with a `303` to this URL (the app's sign-out handing over to the
        /// identity provider's).
        #[arg(long)]
        logout_url: Option<String>,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Standin {
            listen,
            users,
            latency,
            tls_cert,
            tls_key,
            any_session_prefix,
            app_origin,
            token_origin,
        }) => run_standin(
            listen,
            &users,
            latency,
            tls_cert.zip(tls_key),
            (&any_session_prefix, &app_origin),
            &token_origin.unwrap_or_else(|| format!("http://{listen}")),
        ),
        Some(Command::Echo {
            listen,
            name,
            logout_url,
        }) => {
            let handler =
                echo::handler_with(&name.unwrap_or_else(|| listen.to_string()), logout_url);
            run_dev(listen, |l, conns| devserver::serve(l, None, conns, handler))
        }
        None => return run_proxy(&cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("authgate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_proxy(cli: &Cli) -> ExitCode {
    // First: until the reloader's watch runs, SIGHUP's default action would end the process.
    let early_hangup = EarlyHangup::catch();
    let settings = match config::load(&cli.conf) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("authgate: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.test {
        println!("authgate: {}: configuration ok", cli.conf.display());
        return ExitCode::SUCCESS;
    }
    let runtime = match Runtime::build(&settings, None) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("authgate: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let opt = Opt {
        upgrade: cli.upgrade,
        daemon: cli.daemon,
        ..Opt::default()
    };
    // Read before the server starts (and, as a daemon, leaves the terminal): a pair that
    // cannot be served is reported here, like a configuration error.
    let mut certs = CertStore::default();
    let mut resolvers = Vec::with_capacity(settings.listen.len());
    for l in &settings.listen {
        resolvers.push(match &l.tls {
            None => None,
            Some((cert, key)) => match certs.add(&l.addr.to_string(), cert, key) {
                Ok(r) => Some(r),
                Err(e) => {
                    eprintln!("authgate: configuration error: {e}");
                    return ExitCode::from(2);
                }
            },
        });
    }
    let runtime = Arc::new(ArcSwap::from_pointee(runtime));
    let reloader = Reloader::new(
        cli.conf.clone(),
        &settings,
        runtime.clone(),
        Arc::new(certs),
    )
    .with_early_hangup(early_hangup);
    let mut server = Server::new_with_opt_and_conf(opt, settings.server);
    server.bootstrap();
    let readiness = Readiness::default();
    for (l, resolver) in settings.listen.iter().zip(resolvers) {
        let name = format!("authgate {}", l.addr);
        let mut proxy = http_proxy(
            &server.configuration,
            AuthGate::new(runtime.clone(), readiness.clone()),
        );
        // Read at start: a change of these needs a graceful upgrade (see reload).
        let limits = runtime.load().client;
        authgate::connections::apply_to_pingora(&limits);
        let mut options = HttpServerOptions::default();
        options.h2c = l.h2c;
        options.keepalive_request_limit = limits.keepalive_reuses();
        options.h2_idle_timeout = Some(limits.keepalive_timeout).filter(|d| !d.is_zero());
        proxy.server_options = Some(options);
        let guarded = Guarded::new(proxy, runtime.clone(), l.h2c);
        let mut service = Service::new(name, Draining::new(guarded, drain::WINDOW));
        match resolver {
            Some(resolver) => {
                // No paths: Pingora would read them once; the resolver lets a reload rotate.
                let mut tls = match TlsSettings::intermediate("", "") {
                    Ok(t) => t,
                    Err(e) => {
                        eprintln!("authgate: listener {}: {e}", l.addr);
                        return ExitCode::from(2);
                    }
                };
                tls.set_cert_resolver(resolver);
                if l.h2 {
                    tls.enable_h2();
                }
                service.add_tls_with_settings(&l.addr.to_string(), None, tls);
            }
            None => service.add_listener(
                ListenerConfig::tcp(l.addr.to_string())
                    .l4_buffer(authgate::connections::plain_l4_buffers()),
            ),
        }
        server.add_service(service);
    }
    if let Some(addr) = settings.admin_listen {
        let mut admin = Service::new(
            "authgate admin".into(),
            Admin::new(runtime.clone(), readiness.clone()),
        );
        admin.add_tcp(&addr.to_string());
        server.add_service(admin);
        log::info!("admin endpoint on {addr}");
    }
    server.add_service(pingora::services::background::background_service(
        "reload", reloader,
    ));
    server.add_service(pingora::services::background::background_service(
        "fleet",
        authgate::fleet::Supervisor::new(runtime.clone()),
    ));
    let jwt_of = runtime.clone();
    server.add_service(pingora::services::background::background_service(
        "jwt keys",
        authgate::jwt::KeyKeeper::new(move || jwt_of.load().jwt.clone()),
    ));
    let pools_of = runtime.clone();
    server.add_service(pingora::services::background::background_service(
        "health checks",
        HealthChecks::new(move || pools_of.load().pools.clone()),
    ));
    let addrs: Vec<String> = settings
        .listen
        .iter()
        .map(|l| {
            format!(
                "{}{}",
                if l.tls.is_some() {
                    "https://"
                } else {
                    "http://"
                },
                l.addr
            )
        })
        .collect();
    log::info!("authgate listening on {}", addrs.join(", "));
    let drain_delay = runtime.clone();
    drain::exit_when_idle(server.watch_execution_phase());
    server.run(RunArgs {
        shutdown_signal: Box::new(drain::Signals::new(readiness, move || {
            drain_delay.load().drain_delay
        })),
    });
    // As Pingora's run_forever: the runtimes are gone; nothing left to drop in order.
    std::process::exit(0)
}

fn run_standin(
    listen: SocketAddr,
    users: &std::path::Path,
    latency: Duration,
    tls: Option<(PathBuf, PathBuf)>,
    (any_session_prefix, app_origins): (&str, &[String]),
    token_origin: &str,
) -> Result<(), String> {
    let text = std::fs::read_to_string(users).map_err(|e| format!("{}: {e}", users.display()))?;
    let directory =
        standin::Directory::from_yaml(&text).map_err(|e| format!("{}: {e}", users.display()))?;
    let tls = match tls {
        None => None,
        Some((cert, key)) => {
            let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
            Some(devserver::tls_config(&read(&cert)?, &read(&key)?)?)
        }
    };
    let mut standin = standin::Standin::new(directory, latency)
        .with_any_session_prefix(any_session_prefix)
        .with_tokens(token_origin)?;
    if !app_origins.is_empty() {
        standin = standin.with_login(app_origins)?;
    }
    let standin = Arc::new(standin);
    run_dev(listen, move |l, _| {
        let conns = standin.stats.connections.clone();
        let s = standin.clone();
        devserver::serve(l, tls, conns, move |req| s.clone().handle(req))
    })
}

/// Runs one development server on a tokio runtime of its own until the process is stopped.
fn run_dev<F, Fut>(listen: SocketAddr, serve: F) -> Result<(), String>
where
    F: FnOnce(tokio::net::TcpListener, Arc<std::sync::atomic::AtomicU64>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        log::info!("listening on {listen}");
        serve(listener, Arc::default()).await;
        Ok(())
    })
}
