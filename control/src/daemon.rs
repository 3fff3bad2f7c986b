//! `vxdp serve`: the long-running control plane. It adopts the pinned
//! dataplane (or loads it when nothing is pinned), reconciles the host with
//! the started networks every period, expires idle conntrack flows and
//! serves Prometheus metrics over HTTP. The dataplane never depends on it:
//! programs, maps and links are pinned, so killing, restarting or upgrading
//! the daemon leaves every flow running. SIGTERM/SIGINT end it, leaving the
//! dataplane in place.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::CONTENT_TYPE,
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
};

use crate::{
    conntrack_gc,
    dataplane::Maps,
    metrics::{self, DaemonStats},
    network::Context,
    pinned, reconcile, report,
};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("listening on {addr}: {source} (pass another --listen address)")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("installing the signal handlers: {0}")]
    Signal(std::io::Error),
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

/// Runs until SIGTERM or SIGINT.
pub async fn serve(ctx: Context, opts: ServeOptions) -> Result<(), DaemonError> {
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?;
    let ctx = Arc::new(ctx);
    let stats = Arc::new(DaemonStats::default());

    if ctx.pins.is_loaded() {
        let ids = pinned::pinned_ids(&ctx.pins).map_err(|source| crate::dataplane::DataplaneError::Io {
            path: ctx.pins.root.clone(),
            source,
        })?;
        let progs: Vec<_> = ids.progs.iter().map(|(p, id)| format!("{} id {id}", file_name(p))).collect();
        eprintln!(
            "[vxdp] serve: adopted the pinned dataplane under {} ({}; {} maps, {} links)",
            ctx.pins.root.display(),
            progs.join(", "),
            ids.maps.len(),
            ids.links.len()
        );
    }

    // Autostart networks come up before the first reconcile, so the first
    // pass already covers them; one that fails is logged and does not stop
    // the daemon (the operator fixes it and runs `vxdp net-start`).
    match crate::definitions::autostart(&ctx).await {
        Ok((started, failed)) => {
            for name in &started {
                eprintln!("[vxdp] serve: autostart: network {name} started");
            }
            for (name, e) in &failed {
                eprintln!("[vxdp] serve: autostart: network {name} failed to start: {e}");
            }
        }
        Err(e) => eprintln!("[vxdp] serve: autostart: reading the definitions failed: {e}"),
    }

    // A failed pass is logged and retried every period, like later ones:
    // the metrics endpoint is most useful exactly when something is broken.
    match reconcile::reconcile(&ctx, true).await {
        Ok(first) => {
            stats.repairs.fetch_add(first.lines.len() as u64, Ordering::Relaxed);
            eprintln!("[vxdp] serve: first reconcile done ({} repairs)", first.lines.len());
        }
        Err(e) => {
            stats.reconcile_failures.fetch_add(1, Ordering::Relaxed);
            eprintln!("[vxdp] serve: first reconcile failed (retrying every period): {e}");
        }
    }

    let listener = TcpListener::bind(opts.listen)
        .await
        .map_err(|source| DaemonError::Listen { addr: opts.listen, source })?;
    eprintln!(
        "[vxdp] serve: metrics on http://{}/metrics, reconciling every {:?}",
        listener.local_addr().unwrap_or(opts.listen),
        opts.reconcile_interval
    );

    let mut tick = tokio::time::interval(opts.reconcile_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; the first pass just ran
    loop {
        tokio::select! {
            _ = term.recv() => { eprintln!("[vxdp] serve: SIGTERM, exiting; the dataplane stays in place"); break; }
            _ = int.recv() => { eprintln!("[vxdp] serve: SIGINT, exiting; the dataplane stays in place"); break; }
            _ = tick.tick() => periodic(&ctx, &stats).await,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let (ctx, stats) = (ctx.clone(), stats.clone());
                    tokio::spawn(async move {
                        let service = service_fn(move |req| handle(req, ctx.clone(), stats.clone()));
                        // A client that hangs up mid-request is its own business.
                        let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                    });
                }
                Err(e) => eprintln!("[vxdp] serve: accept: {e}"),
            },
        }
    }
    Ok(())
}

fn file_name(p: &std::path::Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// One reconcile pass and one conntrack sweep; errors are logged, the next
/// period tries again.
async fn periodic(ctx: &Context, stats: &DaemonStats) {
    match reconcile::reconcile(ctx, true).await {
        Ok(r) => {
            stats.repairs.fetch_add(r.lines.len() as u64, Ordering::Relaxed);
        }
        Err(e) => {
            stats.reconcile_failures.fetch_add(1, Ordering::Relaxed);
            eprintln!("[vxdp] serve: reconcile failed: {e}");
        }
    }
    let pins = ctx.pins.clone();
    let swept = tokio::task::spawn_blocking(move || -> Result<_, crate::dataplane::DataplaneError> {
        if !pins.is_loaded() {
            return Ok(Default::default());
        }
        conntrack_gc::expire(&Maps::open(&pins)?, report::monotonic_ns())
    })
    .await;
    match swept {
        Ok(Ok(by_network)) => {
            stats.add_expired(&by_network);
            let n: u64 = by_network.values().sum();
            if n > 0 {
                eprintln!("[vxdp] serve: expired {n} idle conntrack flows");
            }
        }
        Ok(Err(e)) => eprintln!("[vxdp] serve: conntrack sweep failed: {e}"),
        Err(e) => eprintln!("[vxdp] serve: conntrack sweep panicked: {e}"),
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, "text/plain; charset=utf-8".parse().expect("static header"));
    r
}

async fn handle(
    req: Request<Incoming>,
    ctx: Arc<Context>,
    stats: Arc<DaemonStats>,
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
        "/metrics" => match tokio::task::spawn_blocking(move || metrics::render(&ctx, Some(&stats))).await {
            Ok(Ok(body)) => {
                let (body, content_type) = if openmetrics {
                    (body, "application/openmetrics-text; version=1.0.0; charset=utf-8")
                } else {
                    (metrics::to_prometheus_text(&body), "text/plain; version=0.0.4; charset=utf-8")
                };
                let mut r = text(StatusCode::OK, body);
                r.headers_mut().insert(CONTENT_TYPE, content_type.parse().expect("static header"));
                r
            }
            Ok(Err(e)) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("reading the dataplane's counters: {e}\n")),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("metrics task failed: {e}\n")),
        },
        "/" => text(StatusCode::OK, "vxdp serve: metrics at /metrics\n"),
        _ => text(StatusCode::NOT_FOUND, "not found; metrics are at /metrics\n"),
    })
}
