//! `vxdp serve`: the long-running control plane. It adopts the pinned
//! dataplane (or loads it when nothing is pinned), reconciles the host with
//! the started networks every period, expires idle conntrack flows and
//! serves Prometheus metrics over HTTP. The dataplane never depends on it:
//! programs, maps and links are pinned, so killing, restarting or upgrading
//! the daemon leaves every flow running. SIGTERM/SIGINT end it, leaving the
//! dataplane in place. The HTTP endpoint and the signals never wait for the
//! reconcile work (see [`serve`]).

pub mod metrics;
pub mod report;
pub mod status;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::CONTENT_TYPE,
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
};

use crate::{
    daemon::metrics::DaemonStats, dataplane::Maps, dataplane::conntrack_gc, dataplane::pinned,
    host::Context, ops::reconcile,
};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("listening on {addr}: {source} (pass another --listen address)")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("installing the signal handlers: {0}")]
    Signal(std::io::Error),
    #[error("starting the reconcile thread: {0}")]
    Thread(std::io::Error),
    #[error("{0}")]
    Dataplane(#[from] crate::dataplane::DataplaneError),
}

/// `vxdp serve`'s settings.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Address of the HTTP endpoint (`GET /metrics`).
    pub listen: SocketAddr,
    /// How often the host is reconciled and conntrack swept.
    pub reconcile_interval: Duration,
}

/// Longest a client may take to send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 64;
/// Scrapes waiting for a metrics render; more are answered 503.
const MAX_WAITING_SCRAPES: usize = 32;

/// Runs until SIGTERM or SIGINT.
///
/// Two threads, so neither blocks the other: this one (the caller's
/// runtime) answers signals and HTTP; a worker thread with a runtime of its
/// own runs autostart, the reconcile passes and the conntrack sweeps, which
/// wait for the state directory's lock (up to [`crate::host::state::LOCK_WAIT`])
/// and for dnsmasq to start. /metrics never waits for that lock (records
/// are read as they are, each replaced atomically). SIGTERM ends the
/// process at once, also in the middle of a pass: every pass repairs from
/// whatever state it finds, and the kernel drops the lock with the process.
pub async fn serve(ctx: Context, opts: ServeOptions) -> Result<(), DaemonError> {
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?;
    let ctx = Arc::new(ctx);
    let stats = Arc::new(DaemonStats::default());

    if ctx.pins.is_loaded() {
        let ids = pinned::pinned_ids(&ctx.pins).map_err(|source| {
            crate::dataplane::DataplaneError::Io {
                path: ctx.pins.root.clone(),
                source,
            }
        })?;
        let progs: Vec<_> = ids
            .progs
            .iter()
            .map(|(p, id)| format!("{} id {id}", file_name(p)))
            .collect();
        log::info!(
            "serve: adopted the pinned dataplane under {} ({}; {} maps, {} links)",
            ctx.pins.root.display(),
            progs.join(", "),
            ids.maps.len(),
            ids.links.len()
        );
    }

    let listener = TcpListener::bind(opts.listen)
        .await
        .map_err(|source| DaemonError::Listen {
            addr: opts.listen,
            source,
        })?;
    log::info!(
        "serve: metrics on http://{}/metrics, reconciling every {:?}",
        listener.local_addr().unwrap_or(opts.listen),
        opts.reconcile_interval
    );

    {
        let (ctx, stats, interval) = (ctx.clone(), stats.clone(), opts.reconcile_interval);
        std::thread::Builder::new()
            .name("vxdp-reconcile".into())
            .spawn(move || work(&ctx, &stats, interval))
            .map_err(DaemonError::Thread)?;
    }

    let renderer = Arc::new(MetricsRenderer::default());
    // One status collection at a time (each reads the conntrack tables).
    let status_lock = Arc::new(tokio::sync::Mutex::new(()));
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        tokio::select! {
            _ = term.recv() => { log::info!("serve: SIGTERM, exiting; the dataplane stays in place"); notify_systemd("STOPPING=1\n"); break; }
            _ = int.recv() => { log::info!("serve: SIGINT, exiting; the dataplane stays in place"); notify_systemd("STOPPING=1\n"); break; }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // Over the limit: close it; a scraper retries next interval.
                    let Ok(permit) = connections.clone().try_acquire_owned() else { continue };
                    let (ctx, stats, renderer, status_lock) = (ctx.clone(), stats.clone(), renderer.clone(), status_lock.clone());
                    tokio::spawn(async move {
                        let service = service_fn(move |req| handle(req, ctx.clone(), stats.clone(), renderer.clone(), status_lock.clone()));
                        // A client that hangs up mid-request is its own business.
                        let _ = http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(HEADER_READ_TIMEOUT)
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                        drop(permit);
                    });
                }
                Err(e) => log::warn!("serve: accept: {e}"),
            },
        }
    }
    Ok(())
}

/// The worker thread: autostart, a first reconcile, then a reconcile pass
/// and a conntrack sweep every `interval`, until the process ends.
fn work(ctx: &Context, stats: &DaemonStats, interval: Duration) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            // Metrics still answer; vxdp_reconcile_failures says why nothing is repaired.
            stats.reconcile_failures.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "serve: starting the reconcile runtime failed, nothing will be reconciled: {e}"
            );
            return;
        }
    };
    rt.block_on(async {
        // Autostart networks come up before the first reconcile, so the
        // first pass already covers them; one that fails is logged and does
        // not stop the daemon (the operator fixes it and runs `vxdp net-start`).
        match crate::ops::definitions::autostart(ctx).await {
            Ok((started, failed)) => {
                for name in &started {
                    log::info!("serve: autostart: network {name} started");
                }
                for (name, e) in &failed {
                    log::warn!("serve: autostart: network {name} failed to start: {e}");
                }
            }
            Err(e) => log::warn!("serve: autostart: reading the definitions failed: {e}"),
        }
        // A failed pass is logged and retried every period, like later ones:
        // the metrics endpoint is most useful exactly when something is broken.
        match reconcile::reconcile(ctx, true).await {
            Ok(first) => {
                stats
                    .repairs
                    .fetch_add(first.lines.len() as u64, Ordering::Relaxed);
                log::info!(
                    "serve: first reconcile done ({} repairs)",
                    first.lines.len()
                );
                notify_systemd(&format!(
                    "READY=1\nSTATUS=first reconcile done ({} repairs)\n",
                    first.lines.len()
                ));
            }
            Err(e) => {
                stats.reconcile_failures.fetch_add(1, Ordering::Relaxed);
                log::warn!("serve: first reconcile failed (retrying every period): {e}");
                // Ready all the same: what could be started is up, the
                // metrics say what failed, and a unit stuck in "activating"
                // would hold back libvirt's guests on every network.
                notify_systemd(&format!(
                    "READY=1\nSTATUS=first reconcile failed, retrying every period: {e}\n"
                ));
            }
        }
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate; the first pass just ran
        // A port libvirt puts on a vxdp bridge is plugged at its next link
        // change, not a whole period later (the periodic pass still catches
        // what an event missed).
        let mut changes = match crate::host::netlink::Netlink::link_changes() {
            Ok(c) => Some(c),
            Err(e) => {
                log::warn!(
                    "serve: not listening to link changes ({e}); ports on vxdp bridges are followed every period"
                );
                None
            }
        };
        loop {
            let changed = async {
                match changes.as_mut() {
                    Some(c) => futures::StreamExt::next(c).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tick.tick() => periodic(ctx, stats).await,
                Some(()) = changed => {
                    // One pass for a burst (libvirt creates, enslaves and
                    // sets up a tap in a row; the pass's own changes echo).
                    tokio::time::sleep(LINK_CHANGE_SETTLE).await;
                    if let Some(c) = changes.as_mut() {
                        while let Some(Some(())) = futures::FutureExt::now_or_never(
                            futures::StreamExt::next(c),
                        ) {}
                    }
                    on_link_change(ctx, stats).await;
                }
            }
        }
    });
}

/// How long a link change waits for the rest of its burst.
const LINK_CHANGE_SETTLE: Duration = Duration::from_millis(100);

/// A reconcile pass after a link change (no conntrack sweep).
async fn on_link_change(ctx: &Context, stats: &DaemonStats) {
    reconcile_counted(ctx, stats, false, "reconcile after a link change").await;
}

/// One reconcile pass (`load`: as `reconcile::reconcile` takes it), its
/// repairs and failures counted for the metrics; a failure is logged as
/// `what` failed.
async fn reconcile_counted(ctx: &Context, stats: &DaemonStats, load: bool, what: &str) {
    match reconcile::reconcile(ctx, load).await {
        Ok(r) => {
            stats
                .repairs
                .fetch_add(r.lines.len() as u64, Ordering::Relaxed);
        }
        Err(e) => {
            stats.reconcile_failures.fetch_add(1, Ordering::Relaxed);
            log::warn!("serve: {what} failed: {e}");
        }
    }
}

/// A render's text, or what went wrong, shared by the scrapes it answers.
type Rendered = Arc<Result<String, String>>;

/// One metrics render at a time, shared: a scrape is answered by a render
/// that started after the scrape arrived (so never with older counters),
/// and scrapes that arrive during a render share the next one. The cost
/// of any number of scrapers is at most one render running, also when
/// scrapers give up: the render holds the lock, not the scrape.
#[derive(Default)]
struct MetricsRenderer {
    /// When the last render started, and its result.
    last: Arc<tokio::sync::Mutex<Option<(Instant, Rendered)>>>,
    waiting: AtomicUsize,
}

impl MetricsRenderer {
    /// The metrics, or None when too many scrapes already wait.
    async fn get(&self, ctx: Arc<Context>, stats: Arc<DaemonStats>) -> Option<Rendered> {
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= MAX_WAITING_SCRAPES {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        let arrived = Instant::now();
        let mut last = self.last.clone().lock_owned().await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        if let Some((started, result)) = &*last
            && *started >= arrived
        {
            return Some(result.clone());
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let started = Instant::now();
            let result = match tokio::task::spawn_blocking(move || {
                metrics::render(&ctx, Some(&stats))
            })
            .await
            {
                Ok(Ok(body)) => Ok(body),
                Ok(Err(e)) => Err(format!("reading the dataplane's counters: {e}")),
                Err(e) => Err(format!("metrics task failed: {e}")),
            };
            let result = Arc::new(result);
            *last = Some((started, result.clone()));
            drop(last);
            // The scrape may have given up meanwhile.
            let _ = tx.send(result);
        });
        Some(
            rx.await.unwrap_or_else(|_| {
                Arc::new(Err("the metrics render ended without a result".into()))
            }),
        )
    }
}

/// The socket to systemd (sd_notify(3)), connected by [`prepare_notify`].
static NOTIFY: std::sync::OnceLock<Result<std::os::unix::net::UnixDatagram, String>> =
    std::sync::OnceLock::new();

/// Connects to the unix datagram socket named by `$NOTIFY_SOCKET` (a path,
/// or an abstract name when it starts with `@`), if set. Call it before
/// entering another network or mount namespace (`--netns`, the bpffs
/// search): an abstract name belongs to the network namespace and a path
/// to the mount namespace the socket is connected in.
pub fn prepare_notify() {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let _ = NOTIFY.set(
        connect_notify(&target)
            .map_err(|e| format!("connecting to {}: {e}", target.to_string_lossy())),
    );
}

fn connect_notify(target: &std::ffi::OsStr) -> std::io::Result<std::os::unix::net::UnixDatagram> {
    use std::os::{
        linux::net::SocketAddrExt, unix::ffi::OsStrExt, unix::net::SocketAddr as UnixAddr,
    };
    let addr = match target.as_bytes().split_first() {
        Some((b'@', name)) => UnixAddr::from_abstract_name(name)?,
        Some((b'/', _)) => UnixAddr::from_pathname(std::path::Path::new(target))?,
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "neither an absolute path nor @abstract",
            ));
        }
    };
    let socket = std::os::unix::net::UnixDatagram::unbound()?;
    socket.connect_addr(&addr)?;
    Ok(socket)
}

/// Sends systemd one notify datagram of `KEY=value` lines. Without
/// `$NOTIFY_SOCKET` (not run by systemd with `Type=notify`) nothing is
/// sent. A failure is logged and otherwise ignored: systemd then times the
/// start out, which says more than a daemon that refuses to run.
pub fn notify_systemd(message: &str) {
    if NOTIFY.get().is_none() {
        prepare_notify();
    }
    let result = match NOTIFY.get() {
        None => return,
        Some(Err(e)) => Err(e.clone()),
        Some(Ok(socket)) => match socket.send(message.as_bytes()) {
            Ok(n) if n == message.len() => Ok(()),
            Ok(n) => Err(format!("sent {n} of {} bytes", message.len())),
            Err(e) => Err(e.to_string()),
        },
    };
    if let Err(e) = result {
        log::info!("serve: telling systemd {:?}: {e}", message.trim_end());
    }
}

fn file_name(p: &std::path::Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// One reconcile pass and one conntrack sweep; errors are logged, the next
/// period tries again.
async fn periodic(ctx: &Context, stats: &DaemonStats) {
    reconcile_counted(ctx, stats, true, "reconcile").await;
    let pins = ctx.pins.clone();
    let swept =
        tokio::task::spawn_blocking(move || -> Result<_, crate::dataplane::DataplaneError> {
            if !pins.is_loaded() {
                return Ok(Default::default());
            }
            conntrack_gc::expire(&Maps::open(&pins)?, crate::dataplane::monotonic_ns())
        })
        .await;
    match swept {
        Ok(Ok(by_network)) => {
            stats.add_expired(&by_network);
            let n: u64 = by_network.values().sum();
            if n > 0 {
                log::info!("serve: expired {n} idle conntrack flows");
            }
        }
        Ok(Err(e)) => log::warn!("serve: conntrack sweep failed: {e}"),
        Err(e) => log::warn!("serve: conntrack sweep panicked: {e}"),
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        "text/plain; charset=utf-8".parse().expect("static header"),
    );
    r
}

/// A built-in page asset. The policy keeps the page to this server: no
/// inline script, no external request, no framing.
fn asset(body: &'static str, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut r = text(StatusCode::OK, body);
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, content_type.parse().expect("static header"));
    h.insert(
        "content-security-policy",
        "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
            .parse()
            .expect("static header"),
    );
    h.insert(
        "x-content-type-options",
        "nosniff".parse().expect("static header"),
    );
    r
}

async fn handle(
    req: Request<Incoming>,
    ctx: Arc<Context>,
    stats: Arc<DaemonStats>,
    renderer: Arc<MetricsRenderer>,
    status_lock: Arc<tokio::sync::Mutex<()>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n"));
    }
    // Prometheus asks for OpenMetrics in its Accept header; everyone else
    // (promtool, curl, older scrapers) gets the classic text format.
    let openmetrics = req
        .headers()
        .get(hyper::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    Ok(match req.uri().path() {
        "/metrics" => match renderer.get(ctx, stats).await.as_deref() {
            Some(Ok(body)) => {
                let (body, content_type) = if openmetrics {
                    (
                        body.clone(),
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )
                } else {
                    (
                        metrics::to_prometheus_text(body),
                        "text/plain; version=0.0.4; charset=utf-8",
                    )
                };
                let mut r = text(StatusCode::OK, body);
                r.headers_mut()
                    .insert(CONTENT_TYPE, content_type.parse().expect("static header"));
                r
            }
            Some(Err(e)) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
            None => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many scrapes waiting; retry later\n",
            ),
        },
        "/" => asset(status::PAGE_HTML, "text/html; charset=utf-8"),
        "/status.js" => asset(status::PAGE_JS, "text/javascript; charset=utf-8"),
        "/status.css" => asset(status::PAGE_CSS, "text/css; charset=utf-8"),
        "/api/status" => {
            let _one = status_lock.lock().await;
            match tokio::task::spawn_blocking(move || status::collect(&ctx)).await {
                Ok(Ok(s)) => match serde_json::to_string(&s) {
                    Ok(body) => {
                        let mut r = text(StatusCode::OK, body);
                        r.headers_mut().insert(
                            CONTENT_TYPE,
                            "application/json".parse().expect("static header"),
                        );
                        r
                    }
                    Err(e) => text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("encoding the status: {e}\n"),
                    ),
                },
                Ok(Err(e)) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("reading the status: {e}\n"),
                ),
                Err(e) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("status task failed: {e}\n"),
                ),
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; the status page is at /, metrics at /metrics, JSON at /api/status\n",
        ),
    })
}
