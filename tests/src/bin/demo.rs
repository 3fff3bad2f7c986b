//! `cargo xtask demo`: libvirt's default NAT network run by vxdp in
//! throwaway namespaces, a guest reaching an outside host, counters and
//! conntrack shown, everything torn down.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use vxdp_testkit::{DEFAULT_XML, NatTopology, OUTSIDE_HOST, fetch, serve_payload};

fn step(msg: &str) {
    println!("\n==> {msg}");
}

fn main() -> Result<()> {
    let t0 = Instant::now();
    step("building a throwaway topology: outside host (wan), hypervisor (hyp), one guest");
    let mut topo = NatTopology::new("demo", 1)?;
    println!(
        "    namespaces {}, {}, {}\n    outside host {OUTSIDE_HOST} (no route back to 192.168.122.0/24)",
        topo.wan.name, topo.hyp.name, topo.guests[0].ns.name
    );

    step("vxdp net-create default.xml (libvirt's default network: virbr0, 192.168.122.1/24, NAT)");
    println!("{DEFAULT_XML}");
    topo.start(DEFAULT_XML)?;
    print!(
        "{}",
        String::from_utf8_lossy(&topo.vxdp(&["net-list"])?.stdout)
    );

    step("waiting for the guest's bridge port to forward (STP, ~4 s), then ping from the guest");
    topo.wait_ping(0, OUTSIDE_HOST, Duration::from_secs(15))?;
    let ping = topo.guests[0]
        .ns
        .exec("ping", &["-c", "3", "-i", "0.3", OUTSIDE_HOST])?;
    print!("{}", String::from_utf8_lossy(&ping.stdout));

    step("fetching over TCP from the outside host");
    let page = b"hello from the outside host, fetched through vxdp's eBPF NAT\n".repeat(1000);
    let (addr, server) = serve_payload(&topo.wan, &format!("{OUTSIDE_HOST}:8080"), page.clone())?;
    let got = fetch(&topo.guests[0].ns, addr, Duration::from_secs(5))?;
    let peer = server.join().expect("server thread")?;
    ensure!(got == page, "the fetched data differs from what was sent");
    println!(
        "    guest received {} bytes intact; the outside host saw the connection from {peer}",
        got.len()
    );

    step("vxdp stats");
    print!(
        "{}",
        String::from_utf8_lossy(&topo.vxdp(&["stats"])?.stdout)
    );
    step("vxdp conntrack list");
    print!(
        "{}",
        String::from_utf8_lossy(&topo.vxdp(&["conntrack", "list"])?.stdout)
    );

    step("tearing down (vxdp net-destroy default, namespaces deleted)");
    drop(topo);
    println!("\ndemo finished in {:.1} s", t0.elapsed().as_secs_f64());
    Ok(())
}
