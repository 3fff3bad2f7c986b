//! The status page of `vxdp serve` in headless Chromium: the page (HTML,
//! script and style built into the binary) renders the network, its
//! ports, their counters, the top drop reasons and the NAT flows from
//! `/api/status`, and loads nothing from anywhere else. A hostile guest
//! opens 150 flows and sends from a spoofed address: the JSON and the page
//! list at most 100 flows (with the true total) and the spoofing shows as
//! the port's top drop reason.

mod ops_support;

use std::{net::UdpSocket, process::Command, time::Duration};

use anyhow::{Context, Result, ensure};
use ops_support::{http_get, wait_http};
use vxdp_testkit::Serve;
use vxdp_testkit::{DEFAULT_XML, NatTopology, OUTSIDE_HOST, vxdp_bin};

const LISTEN: &str = "127.0.0.1:9465";
const FLOWS: u16 = 150;
const SHOWN: usize = 100;

#[test]
fn status_page_renders_in_chromium_and_caps_a_guests_flows() -> Result<()> {
    let mut topo = NatTopology::new("stat", 1)?;
    topo.start_with(DEFAULT_XML, true)?;
    topo.wait_ping(0, OUTSIDE_HOST, Duration::from_secs(20))?;
    let mut serve = Serve::spawn(
        &topo,
        Serve::command(&topo, &vxdp_bin()?),
        &["--listen", LISTEN],
        "status",
        &[],
    )?;
    wait_http(&mut serve, &topo.hyp, LISTEN, "/api/status")?;

    // The hostile guest: many flows, and a source address it was not given.
    let guest = &topo.guests[0];
    guest.ns.enter(|| -> Result<()> {
        for i in 0..FLOWS {
            let s = UdpSocket::bind(("0.0.0.0", 40000 + i))?;
            s.send_to(b"x", (OUTSIDE_HOST, 9))?;
        }
        Ok(())
    })??;
    guest
        .ns
        .ip(&["addr", "add", "192.168.122.99/32", "dev", "eth0"])?;
    let _ = guest.ns.exec_status(
        "ping",
        &[
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "1",
            "-I",
            "192.168.122.99",
            OUTSIDE_HOST,
        ],
    )?;

    let json: serde_json::Value =
        serde_json::from_str(&http_get(&topo.hyp, LISTEN, "/api/status")?)?;
    let flows = json["flows"].as_array().context("flows")?;
    let total = json["flows_total"].as_u64().context("flows_total")?;
    ensure!(
        flows.len() == SHOWN,
        "{} flows listed, expected the cap {SHOWN}",
        flows.len()
    );
    ensure!(
        total >= u64::from(FLOWS),
        "flows_total {total} < the {FLOWS} flows the guest opened"
    );
    let net = &json["networks"][0];
    ensure!(
        net["name"] == "default" && net["up"] == true,
        "network default not up: {net}"
    );
    let top = &net["top_drops"][0];
    ensure!(
        top["reason"] == "spoofed_source"
            && top["interface"] == guest.port.as_str()
            && top["packets"] == 3,
        "top drop reason is not the 3 spoofed pings on {}: {}",
        guest.port,
        net["top_drops"]
    );
    let port = net["interfaces"]
        .as_array()
        .context("interfaces")?
        .iter()
        .find(|i| i["name"] == guest.port.as_str())
        .context("port missing")?;
    ensure!(
        port["packets"].as_u64().unwrap_or(0) >= u64::from(FLOWS),
        "port packets {} < flows sent",
        port["packets"]
    );

    // The page's assets: no address of anywhere else.
    for asset in ["/", "/status.js", "/status.css"] {
        let body = http_get(&topo.hyp, LISTEN, asset)?;
        ensure!(!body.contains("://"), "{asset} refers to another site");
    }

    // Headless Chromium in the hypervisor namespace renders the page.
    let profile = topo.state_dir.join("chromium-profile");
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &topo.hyp.name,
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args([
            "--virtual-time-budget=10000",
            "--dump-dom",
            &format!("http://{LISTEN}/"),
        ])
        .output()
        .context("running chromium (Debian package chromium; cargo xtask setup installs it)")?;
    let dom = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && dom.contains("data-loaded=\"yes\""),
        "the page did not render ({}):\n{dom}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "data-network=\"default\"",
        guest.port.as_str(),
        "spoofed_source",
        "192.168.122.10:40000",
        &format!("{total} flow(s), first {SHOWN} shown"),
    ] {
        ensure!(dom.contains(want), "rendered page lacks {want:?}:\n{dom}");
    }
    // Flow rows: the guest column holds address:port (the ports table
    // shows the bare address).
    let rows = dom.matches(&format!("<td>{}:", guest.addr)).count();
    ensure!(
        rows == SHOWN,
        "the page lists {rows} flows, expected {SHOWN}"
    );
    ensure!(!dom.contains("error:"), "the page shows an error:\n{dom}");
    Ok(())
}
