//! A real Prometheus (Debian's `prometheus`) scrapes `vxdp serve` inside
//! the test's hypervisor namespace every second, with the shipped rules
//! loaded. The test sends known traffic — pings through NAT and pings from
//! a spoofed source, which the guest port drops — and reads back through
//! Prometheus's HTTP API (`/api/v1/query`): the exact counts per interface
//! and per drop reason, the recorded per-network, per-interface and
//! per-reason rates, the rules' health, and every panel query of the
//! shipped Grafana dashboard (each must return data). Also runs
//! `promtool check rules` and `promtool test rules` on the shipped rules.

mod ops_support;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail, ensure};
use ops_support::{http_get, wait_http};
use serde_json::Value;
use vxdp_testkit::Serve;
use vxdp_testkit::{DEFAULT_XML, NatTopology, Netns, OUTSIDE_HOST, vxdp_bin};

const METRICS: &str = "127.0.0.1:9465";
const PROMETHEUS: &str = "127.0.0.1:9090";

fn packaging(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging")
        .join(rel)
}

/// `promtool <args>`, which must succeed.
fn promtool(args: &[&str], dir: &Path) -> Result<String> {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .context("running promtool (Debian package prometheus; cargo xtask setup installs it)")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success(),
        "promtool {} failed ({}):\n{text}",
        args.join(" "),
        out.status
    );
    Ok(text)
}

#[test]
fn shipped_rules_pass_promtool_check_and_unit_tests() -> Result<()> {
    let dir = packaging("prometheus");
    let check = promtool(&["check", "rules", "vxdp-rules.yml"], &dir)?;
    ensure!(check.contains("SUCCESS"), "promtool check rules:\n{check}");
    let test = promtool(&["test", "rules", "vxdp-rules.test.yml"], &dir)?;
    ensure!(
        test.contains("SUCCESS") && !test.contains("FAILED"),
        "promtool test rules:\n{test}"
    );
    Ok(())
}

/// A Prometheus server in a network namespace, with its configuration and
/// data under `dir`; killed on drop.
struct Prometheus {
    child: Child,
    log: PathBuf,
}

impl Prometheus {
    fn start(ns: &Netns, dir: &Path, target: &str) -> Result<Self> {
        std::fs::create_dir_all(dir.join("data"))?;
        let rules = packaging("prometheus/vxdp-rules.yml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: vxdp\n    static_configs:\n      - targets: ['{target}']\n",
            rules.display()
        );
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let log = dir.join("prometheus.log");
        // `ip netns exec` execs prometheus: the child is prometheus itself.
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "prometheus"])
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={PROMETHEUS}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context(
                "starting prometheus (Debian package prometheus; cargo xtask setup installs it)",
            )?;
        Ok(Self { child, log })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `/api/v1/query` at `time` (unix seconds): the result vector.
fn query(ns: &Netns, expr: &str, time: f64) -> Result<Vec<Value>> {
    let body = http_get(
        ns,
        PROMETHEUS,
        &format!(
            "/api/v1/query?query={}&time={time:.3}",
            percent_encode(expr)
        ),
    )
    .with_context(|| format!("query {expr}"))?;
    let v: Value = serde_json::from_str(&body)?;
    ensure!(v["status"] == "success", "query {expr}: {body}");
    ensure!(
        v["data"]["resultType"] == "vector",
        "query {expr} did not return a vector: {body}"
    );
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

/// The single value of `expr` at `time`; an error when there is not
/// exactly one series.
fn scalar(ns: &Netns, expr: &str, time: f64) -> Result<f64> {
    let r = query(ns, expr, time)?;
    ensure!(
        r.len() == 1,
        "{expr} at {time}: expected one series, got {r:?}"
    );
    let v = r[0]["value"][1].as_str().context("sample value")?;
    Ok(v.parse()?)
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Waits until Prometheus holds a sample of `up{job="vxdp"}` == 1 scraped
/// after `after` (unix seconds): everything the target served before
/// then is in the database.
fn wait_scraped_after(ns: &Netns, prom: &mut Prometheus, after: f64) -> Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = prom.child.try_wait()? {
            bail!("prometheus exited ({status}):\n{}", prom.log());
        }
        if let Ok(r) = query(ns, "timestamp(up{job=\"vxdp\"} == 1)", now())
            && let Some(ts) = r
                .first()
                .and_then(|s| s["value"][1].as_str())
                .and_then(|t| t.parse::<f64>().ok())
            && ts > after
        {
            return Ok(ts);
        }
        if Instant::now() > deadline {
            bail!(
                "prometheus scraped no successful sample after {after} within 30 s:\n{}",
                prom.log()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Rate over a window that holds samples from well before until after the
/// traffic: Prometheus divides the increase between the window's first and
/// last samples, extrapolated towards the window's edges by at most ~1.1
/// sample intervals (1 s) each, by the window's length. So rate × window
/// lies in [count, count × (1 + 2.5 s / seconds covered by samples)].
fn ensure_rate_matches(
    what: &str,
    rate: f64,
    window_s: f64,
    count: f64,
    covered_s: f64,
) -> Result<()> {
    let seen = rate * window_s;
    let upper = count * (1.0 + 2.5 / covered_s);
    ensure!(
        seen >= count - 1e-6 && seen <= upper,
        "{what}: rate {rate}/s × {window_s} s = {seen}, expected {count} (at most {upper})"
    );
    Ok(())
}

#[test]
fn prometheus_scrapes_rates_drops_rules_and_every_dashboard_panel() -> Result<()> {
    let mut topo = NatTopology::new("prom", 1)?;
    // Static address: the port then refuses any other source.
    topo.start_with(DEFAULT_XML, true)?;
    topo.wait_ping(0, OUTSIDE_HOST, Duration::from_secs(20))?;
    let mut serve = Serve::spawn(
        &topo,
        Serve::command(&topo, &vxdp_bin()?),
        &["--listen", METRICS],
        "prom",
        &[],
    )?;
    wait_http(&mut serve, &topo.hyp, METRICS, "/metrics")?;
    let mut prom = Prometheus::start(&topo.hyp, &topo.state_dir.join("prometheus"), METRICS)?;

    let started = now();
    wait_scraped_after(&topo.hyp, &mut prom, started)?;
    // Twenty seconds of idle samples, so the rate windows below are covered.
    std::thread::sleep(Duration::from_secs(20));
    let before = wait_scraped_after(&topo.hyp, &mut prom, now())?;

    const PINGS: u32 = 20;
    const SPOOFED: u32 = 10;
    let guest = &topo.guests[0];
    let ping = guest.ns.exec(
        "ping",
        &[
            "-c",
            &PINGS.to_string(),
            "-i",
            "0.1",
            "-W",
            "1",
            OUTSIDE_HOST,
        ],
    )?;
    ensure!(
        String::from_utf8_lossy(&ping.stdout).contains(&format!("{PINGS} received")),
        "pings were lost"
    );
    // A hostile guest: the same port, a source address it was not given.
    guest
        .ns
        .ip(&["addr", "add", "192.168.122.99/32", "dev", "eth0"])?;
    let spoofed = guest.ns.exec_status(
        "ping",
        &[
            "-c",
            &SPOOFED.to_string(),
            "-i",
            "0.1",
            "-W",
            "1",
            "-I",
            "192.168.122.99",
            OUTSIDE_HOST,
        ],
    )?;
    ensure!(
        !spoofed.status.success(),
        "pings from a spoofed source got answers"
    );
    let after = wait_scraped_after(&topo.hyp, &mut prom, now() + 1.0)?;

    let h = &topo.hyp;
    let port = guest.port.as_str();
    // Exact counts, as Prometheus stored them.
    let delta =
        |expr: &str| -> Result<f64> { Ok(scalar(h, expr, after)? - scalar(h, expr, before)?) };
    let snat = format!(
        r#"vxdp_packets_total{{network="default",interface="{port}",direction="from_guest",action="snat_forwarded"}}"#
    );
    let dnat = r#"vxdp_packets_total{network="default",interface="up0",direction="from_uplink",action="dnat_forwarded"}"#;
    let spoof = format!(
        r#"vxdp_drops_total{{network="default",interface="{port}",reason="spoofed_source"}}"#
    );
    ensure!(
        delta(&snat)? == PINGS as f64,
        "{snat} moved by {}, expected {PINGS}",
        delta(&snat)?
    );
    ensure!(
        delta(dnat)? == PINGS as f64,
        "{dnat} moved by {}, expected {PINGS}",
        delta(dnat)?
    );
    ensure!(
        delta(&spoof)? == SPOOFED as f64,
        "{spoof} moved by {}, expected {SPOOFED}",
        delta(&spoof)?
    );
    // The spoofed pings were dropped, not NATed: no other forwarded packet.
    let all_snat = format!(
        r#"sum(vxdp_packets_total{{network="default",interface="{port}",action="snat_forwarded"}})"#
    );
    ensure!(
        delta(&all_snat)? == PINGS as f64,
        "spoofed packets were forwarded"
    );

    // The recording rules' rates (1 m windows) at `after`: every sample of
    // the traffic is inside, and at least 20 s of samples before it.
    let eval = wait_rule_evaluated_after(h, &mut prom, after)?;
    // Seconds of the 1 m window that hold samples.
    let covered = (eval - started).min(60.0);
    ensure!(
        covered >= 20.0,
        "only {covered} s of samples before the rates are read"
    );
    let rate = |expr: &str| scalar(h, expr, eval);
    ensure_rate_matches(
        "per-interface snat rate",
        rate(&format!(
            r#"vxdp:packets:rate1m{{network="default",interface="{port}",action="snat_forwarded"}}"#
        ))?,
        60.0,
        PINGS as f64,
        covered,
    )?;
    ensure_rate_matches(
        "per-interface dnat rate",
        rate(r#"vxdp:packets:rate1m{network="default",interface="up0",action="dnat_forwarded"}"#)?,
        60.0,
        PINGS as f64,
        covered,
    )?;
    ensure_rate_matches(
        "per-reason drop rate",
        rate(r#"vxdp_network_reason:drops:rate1m{network="default",reason="spoofed_source"}"#)?,
        60.0,
        SPOOFED as f64,
        covered,
    )?;
    // Per network: at least both directions of every ping (ARP and
    // neighbour traffic add to it).
    let net_rate = rate(r#"vxdp_network:packets:rate1m{network="default"}"#)?;
    ensure!(
        net_rate * 60.0 >= 2.0 * PINGS as f64,
        "network rate {net_rate}/s is below the pings sent"
    );
    let if_rate = rate(&format!(
        r#"vxdp_interface:packets:rate1m{{network="default",interface="{port}"}}"#
    ))?;
    ensure!(
        if_rate * 60.0 >= PINGS as f64,
        "interface rate {if_rate}/s is below the pings sent"
    );
    // No spoofed_source drops anywhere else.
    let elsewhere = query(h, r#"vxdp:drops:rate1m{reason="spoofed_source"} > 0"#, eval)?;
    ensure!(
        elsewhere.len() == 1 && elsewhere[0]["metric"]["interface"] == port,
        "spoofed_source drops on other interfaces: {elsewhere:?}"
    );
    let up = scalar(h, r#"vxdp_network_up{network="default"}"#, eval)?;
    ensure!(up == 1.0, "network default not up in Prometheus");

    // Every rule loaded and evaluated without error; no alert fires.
    let rules: Value = serde_json::from_str(&http_get(h, PROMETHEUS, "/api/v1/rules")?)?;
    let mut n = 0;
    for group in rules["data"]["groups"].as_array().context("rule groups")? {
        for rule in group["rules"].as_array().context("rules")? {
            n += 1;
            ensure!(
                rule["health"] == "ok",
                "rule {} unhealthy: {}",
                rule["name"],
                rule["lastError"]
            );
        }
    }
    ensure!(n >= 10, "only {n} rules loaded");
    let alerts: Value = serde_json::from_str(&http_get(h, PROMETHEUS, "/api/v1/alerts")?)?;
    let firing: Vec<_> = alerts["data"]["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["state"] == "firing")
        .collect();
    ensure!(
        firing.is_empty(),
        "alerts firing on a healthy network: {firing:?}"
    );

    // The Grafana dashboard: every panel query returns data. Its
    // variables as Grafana fills them: all networks, a short rate window,
    // the last five minutes.
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(packaging(
        "grafana/vxdp-dashboard.json",
    ))?)?;
    let panels = dash["panels"].as_array().context("dashboard panels")?;
    ensure!(!panels.is_empty(), "dashboard without panels");
    let mut exprs = 0;
    for p in panels {
        for t in p["targets"]
            .as_array()
            .with_context(|| format!("panel {} without targets", p["title"]))?
        {
            let expr = t["expr"]
                .as_str()
                .with_context(|| format!("panel {}: target without expr", p["title"]))?;
            let resolved = expr
                .replace("$network", ".*")
                .replace("$__rate_interval", "15s")
                .replace("$__range", "5m");
            ensure!(
                !resolved.contains('$'),
                "panel {}: unknown variable in {expr}",
                p["title"]
            );
            let r = query(h, &resolved, eval)?;
            ensure!(
                !r.is_empty(),
                "panel {} query returned nothing: {resolved}",
                p["title"]
            );
            exprs += 1;
        }
    }
    ensure!(exprs >= panels.len(), "fewer queries than panels");
    let var = &dash["templating"]["list"][0];
    ensure!(
        var["name"] == "network",
        "dashboard variable is not `network`"
    );
    let networks = query(h, "group by (network) (vxdp_network_up)", eval)?;
    ensure!(
        networks.iter().any(|s| s["metric"]["network"] == "default"),
        "the network variable's source has no default"
    );
    Ok(())
}

/// The time of a recording-rule evaluation that saw the scrape at `after`.
fn wait_rule_evaluated_after(ns: &Netns, prom: &mut Prometheus, after: f64) -> Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = prom.child.try_wait()? {
            bail!("prometheus exited ({status}):\n{}", prom.log());
        }
        let r = query(
            ns,
            "timestamp(vxdp_network:packets:rate1m{network=\"default\"})",
            now(),
        )?;
        if let Some(ts) = r
            .first()
            .and_then(|s| s["value"][1].as_str())
            .and_then(|t| t.parse::<f64>().ok())
            && ts > after
        {
            return Ok(ts);
        }
        if Instant::now() > deadline {
            bail!(
                "the recording rules were not evaluated after {after} within 30 s:\n{}",
                prom.log()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
