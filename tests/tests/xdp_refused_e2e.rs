//! Counters say what the kernel did: the uplink's XDP program redirects
//! inbound frames straight to a guest port that takes XDP frames (a tap),
//! but a tap nobody has open refuses them after the program returned
//! (`tun_xdp_xmit` has no queue). Those frames must be counted as
//! `xdp_redirect_refused` drops, not as `route_inbound_forwarded`.
//!
//! The outside host sends finished checksums here (`OutsideChecksums::
//! Finished`, as a wire would): frames with unfinished ones never take the
//! XDP redirect (they go to the uplink's TC program), so the default veth
//! would not exercise the refused redirect at all.
//!
//! Needs root (network namespaces, BPF).

use std::{
    net::UdpSocket,
    time::{Duration, Instant},
};

use anyhow::{Result, bail, ensure};
use vxdp_testkit::{NatTopology, OutsideChecksums};

const GUEST: &str = "192.168.122.50";
const GUEST_MAC: &str = "52:54:00:aa:00:50";
const FRAMES: u64 = 50;

#[test]
fn a_redirect_the_kernel_refuses_is_a_drop_not_forwarded() -> Result<()> {
    let mut topo = NatTopology::with_outside("rr", 0, OutsideChecksums::Finished)?;
    topo.create(
        "<network><name>default</name><forward mode='route'/><bridge name='virbr0' stp='off'/>\
         <ip address='192.168.122.1' netmask='255.255.255.0'/></network>",
    )?;
    // A persistent tap that no hypervisor has opened.
    topo.hyp
        .ip(&["tuntap", "add", "dev", "tapq0", "mode", "tap"])?;
    topo.hyp.ip(&["link", "set", "tapq0", "up"])?;
    topo.vxdp(&[
        "attach-interface",
        "--network",
        "default",
        "--dev",
        "tapq0",
        "--mac",
        GUEST_MAC,
        "--ip",
        GUEST,
    ])?;
    // The guest's neighbour entry, so the uplink's fib lookup resolves it.
    topo.hyp.ip(&[
        "neigh",
        "replace",
        GUEST,
        "lladdr",
        GUEST_MAC,
        "dev",
        "virbr0",
        "nud",
        "permanent",
    ])?;
    topo.wan.ip(&[
        "route",
        "replace",
        "192.168.122.0/24",
        "via",
        vxdp_testkit::UPLINK_ADDR,
    ])?;

    let (refused0, _) = topo.counter("default", "xdp_redirect_refused")?;
    let (fwd0, _) = topo.counter("default", "route_inbound_forwarded")?;
    let sender = topo.wan.enter(|| UdpSocket::bind("0.0.0.0:0"))??;
    for i in 0..FRAMES {
        sender.send_to(format!("frame {i}").as_bytes(), (GUEST, 9))?;
        std::thread::sleep(Duration::from_millis(5));
    }
    // The tracepoint programs count as the kernel flushes; give it a moment.
    let start = Instant::now();
    let (refused, fwd) = loop {
        let (r, _) = topo.counter("default", "xdp_redirect_refused")?;
        let (f, _) = topo.counter("default", "route_inbound_forwarded")?;
        if r - refused0 >= FRAMES || start.elapsed() > Duration::from_secs(5) {
            break (r - refused0, f - fwd0);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    println!(
        "{FRAMES} frames to a tap nobody reads: xdp_redirect_refused +{refused}, route_inbound_forwarded +{fwd}"
    );
    if refused == 0 && fwd == 0 {
        bail!(
            "no frame reached the XDP redirect (nothing counted either way); the test exercised nothing"
        );
    }
    ensure!(
        refused == FRAMES,
        "{refused} of {FRAMES} refused redirects counted as xdp_redirect_refused"
    );
    ensure!(
        fwd == 0,
        "{fwd} refused redirects still counted as route_inbound_forwarded"
    );
    topo.stop()
}
