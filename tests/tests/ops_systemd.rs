//! The systemd unit shipped in `packaging/`: `systemd-analyze verify` finds
//! nothing to say about it, and `vxdp serve` run the way the unit runs it
//! (only the unit's capability bounding set, no new privileges,
//! `$NOTIFY_SOCKET` set) autostarts its networks, reports READY=1 to the
//! notify socket only after the first reconcile, keeps reconciling without
//! a failure, and reports STOPPING=1 on SIGTERM.

mod ops_support;

use std::{
    os::unix::net::UnixDatagram,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use ops_support::{NetworkGuard, http_get, unit_capabilities, unit_file};
use vxdp_testkit::Serve;
use vxdp_testkit::{DEFAULT_XML, NatTopology, OUTSIDE_HOST, vxdp_bin};

#[test]
fn unit_passes_systemd_analyze_verify() -> Result<()> {
    let dir = tempdir("sdverify")?;
    // verify checks that ExecStart= exists: point it at the binary under test.
    let unit = std::fs::read_to_string(unit_file())?;
    ensure!(
        unit.contains("ExecStart=/usr/bin/vxdp serve"),
        "the unit no longer runs /usr/bin/vxdp serve"
    );
    let bin = vxdp_bin()?;
    let unit = unit.replace(
        "ExecStart=/usr/bin/vxdp",
        &format!("ExecStart={}", bin.display()),
    );
    let path = dir.0.join("vxdp.service");
    std::fs::write(&path, unit)?;
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .context("running systemd-analyze (Debian package systemd)")?;
    ensure!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "systemd-analyze verify ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn serve_with_the_units_capabilities_autostarts_and_notifies_ready_after_the_first_reconcile()
-> Result<()> {
    const LISTEN: &str = "127.0.0.1:9465";
    let topo = NatTopology::new("sdn", 1)?;
    std::fs::create_dir_all(&topo.state_dir)?;
    let xml = topo.state_dir.join("default.xml");
    std::fs::write(&xml, DEFAULT_XML)?;
    topo.vxdp(&["net-define", xml.to_str().context("path")?])?;
    let _network = NetworkGuard {
        topo: &topo,
        name: "default",
    };
    topo.vxdp(&["net-autostart", "default"])?;

    // systemd's side of the protocol: a datagram socket named by NOTIFY_SOCKET.
    let sock_path = topo.state_dir.join("notify.sock");
    let notify = UnixDatagram::bind(&sock_path)?;
    notify.set_read_timeout(Some(Duration::from_millis(200)))?;

    // CapabilityBoundingSet= and NoNewPrivileges= as setpriv does them: a
    // root process keeps only the bounding set across exec.
    let caps = unit_capabilities()?;
    let bounding = std::iter::once("-all".to_string())
        .chain(
            caps.iter()
                .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_ascii_lowercase())),
        )
        .collect::<Vec<_>>()
        .join(",");
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--bounding-set",
        &bounding,
        "--inh-caps",
        "-all",
        "--no-new-privs",
        "--",
    ])
    .arg(vxdp_bin()?)
    .arg("--netns")
    .arg(&topo.hyp.name);
    let mut serve = Serve::spawn(
        &topo,
        cmd,
        &["--listen", LISTEN],
        "caps",
        &[("NOTIFY_SOCKET", &sock_path)],
    )?;

    let ready = wait_datagram(&notify, &mut serve, "READY=1", Duration::from_secs(60))?;
    let log = serve.log();
    // Log lines are written before the datagram is sent.
    ensure!(
        log.contains("autostart: network default started"),
        "READY=1 ({ready:?}) before autostart:\n{log}"
    );
    ensure!(
        log.contains("first reconcile done"),
        "READY=1 ({ready:?}) without a successful first reconcile:\n{log}"
    );
    ensure!(
        ready.contains("STATUS=first reconcile done"),
        "READY=1 without the status line: {ready:?}"
    );
    ensure!(
        !log.contains("failed"),
        "vxdp serve with the unit's capabilities logged a failure:\n{log}"
    );

    // What the daemon started under those capabilities works: a guest on
    // it reaches the outside host, and the network is reported up.
    topo.vxdp(&[
        "attach-interface",
        "--network",
        "default",
        "--dev",
        &topo.guests[0].port,
        "--mac",
        &topo.guests[0].mac,
    ])?;
    topo.wait_ping(0, OUTSIDE_HOST, Duration::from_secs(20))?;
    let metrics = http_get(&topo.hyp, LISTEN, "/metrics")?;
    ensure!(
        metrics.lines().any(|l| l.starts_with("vxdp_network_up{")
            && l.contains("network=\"default\"")
            && l.ends_with(" 1")),
        "network default not reported up:\n{metrics}"
    );
    // A few reconcile periods (1 s) with the restricted capabilities.
    std::thread::sleep(Duration::from_millis(3500));
    let log = serve.log();
    ensure!(
        !log.contains("failed"),
        "vxdp serve with the unit's capabilities logged a failure:\n{log}"
    );

    let status = serve.signal(libc::SIGTERM)?;
    ensure!(
        status.success(),
        "vxdp serve exited with {status} on SIGTERM:\n{}",
        serve.log()
    );
    let stopping = recv_until(
        &notify,
        "STOPPING=1",
        Instant::now() + Duration::from_secs(2),
    )?;
    ensure!(
        stopping.is_some(),
        "no STOPPING=1 on SIGTERM:\n{}",
        serve.log()
    );
    Ok(())
}

/// Receives datagrams until one contains `want`, while `serve` runs.
fn wait_datagram(
    sock: &UnixDatagram,
    serve: &mut Serve,
    want: &str,
    within: Duration,
) -> Result<String> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(m) = recv_until(sock, want, Instant::now() + Duration::from_millis(500))? {
            return Ok(m);
        }
        if let Some(status) = serve.child.try_wait()? {
            bail!(
                "vxdp serve exited ({status}) before sending {want}:\n{}",
                serve.log()
            );
        }
        if Instant::now() > deadline {
            bail!("no {want} within {within:?}:\n{}", serve.log());
        }
    }
}

fn recv_until(sock: &UnixDatagram, want: &str, deadline: Instant) -> Result<Option<String>> {
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match sock.recv(&mut buf) {
            Ok(n) => {
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                if m.lines().any(|l| l == want) {
                    return Ok(Some(m));
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(None)
}

/// A directory removed on drop.
struct TempDir(std::path::PathBuf);

fn tempdir(tag: &str) -> Result<TempDir> {
    let p = std::env::temp_dir().join(format!("vxdp-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&p)?;
    Ok(TempDir(p))
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
