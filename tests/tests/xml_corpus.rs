//! The libvirt network XML corpus through the real `vxdp` binary: every valid
//! file survives define → dumpxml → define with the same model, every invalid
//! one is refused naming the element at fault and changes nothing.

use anyhow::{Context, Result, ensure};
use vxdp_control::xml::{NetworkDef, parse_network};
use vxdp_tests::corpus::{VxdpHost, corpus_files, expected_faults, network_name, tree_snapshot};

/// The model of `text`, with the values vxdp generates at define time taken
/// from `generated` (UUID, bridge name, bridge MAC).
fn with_generated(text: &str, file: &str, generated: &NetworkDef) -> Result<NetworkDef> {
    let mut def = parse_network(text, file).with_context(|| format!("{file} no longer parses"))?;
    def.uuid = def.uuid.or(generated.uuid.clone());
    if def.bridge.name.is_none() {
        def.bridge.name = generated.bridge.name.clone();
    }
    def.mac = def.mac.or(generated.mac);
    Ok(def)
}

#[test]
fn valid_corpus_round_trips_through_define_and_dumpxml() -> Result<()> {
    let files = corpus_files("valid")?;
    ensure!(
        files.len() >= 40,
        "the valid corpus has {} files, want at least 40",
        files.len()
    );
    let host = VxdpHost::new("corpus")?;
    for file in &files {
        let fname = file.display().to_string();
        let text = std::fs::read_to_string(file)?;
        let name = network_name(&text).with_context(|| format!("{fname}: no <name>"))?;
        host.vxdp(&["net-define", &fname])?;
        let dumped = host.vxdp(&["net-dumpxml", &name])?;
        let dumped_def = parse_network(&dumped, "dumpxml")
            .with_context(|| format!("{fname}: net-dumpxml output does not parse:\n{dumped}"))?;
        ensure!(
            dumped_def.uuid.is_some(),
            "{fname}: the stored definition has no UUID:\n{dumped}"
        );
        // Nothing of the file was lost or changed, only defaults were added.
        let original = with_generated(&text, &fname, &dumped_def)?;
        ensure!(
            original == dumped_def,
            "{fname}: net-dumpxml changed the model\nfile:\n{text}\ndumped:\n{dumped}"
        );
        // Defining the dumped XML again (it carries the UUID) yields the same model.
        let again = host.write("again.xml", &dumped)?;
        host.vxdp(&["net-define", again.to_str().context("path")?])?;
        let dumped2 = host.vxdp(&["net-dumpxml", &name])?;
        let def2 = parse_network(&dumped2, "dumpxml")?;
        ensure!(
            def2 == dumped_def,
            "{fname}: redefining the dumped XML changed the model\nfirst:\n{dumped}\nsecond:\n{dumped2}"
        );
        ensure!(
            dumped2 == dumped,
            "{fname}: second net-dumpxml differs from the first"
        );
        host.vxdp(&["net-undefine", &name])?;
    }
    let left = host.vxdp(&["net-list", "--all"])?;
    ensure!(
        left.lines().count() == 1,
        "networks left after undefining all:\n{left}"
    );
    Ok(())
}

#[test]
fn invalid_corpus_is_refused_naming_the_fault_and_changes_nothing() -> Result<()> {
    let files = corpus_files("invalid")?;
    ensure!(
        files.len() >= 15,
        "the invalid corpus has {} files, want at least 15",
        files.len()
    );
    let expected = expected_faults()?;
    let host = VxdpHost::new("invalid")?;
    // A running network, so there is host state (bridge, address, pins) to disturb.
    let default = host.write("default.xml", vxdp_testkit::DEFAULT_XML)?;
    host.vxdp(&["net-define", default.to_str().context("path")?])?;
    host.vxdp(&["net-start", "default"])?;
    let before = (
        tree_snapshot(&host.state_dir)?,
        host.ns.ip(&["-br", "link"])?.stdout,
        host.ns.ip(&["-br", "addr"])?.stdout,
        tree_snapshot(&host.bpffs)?,
    );
    ensure!(
        !before.3.is_empty(),
        "no pins under {} while a network runs",
        host.bpffs.display()
    );
    for file in &files {
        let fname = file.display().to_string();
        let base = file
            .file_name()
            .and_then(|f| f.to_str())
            .context("file name")?;
        let element = expected
            .get(base)
            .with_context(|| format!("{base} is not listed in invalid/EXPECTED"))?;
        for verb in ["net-define", "net-validate", "net-create"] {
            let out = host.vxdp_status(&[verb, &fname])?;
            let err = String::from_utf8_lossy(&out.stderr);
            ensure!(
                !out.status.success(),
                "`vxdp {verb} {base}` succeeded; it must be refused"
            );
            ensure!(
                err.contains(&fname) && err.contains(&format!("{element}:")),
                "`vxdp {verb} {base}` must name the file and {element}, said: {err}"
            );
        }
    }
    let after = (
        tree_snapshot(&host.state_dir)?,
        host.ns.ip(&["-br", "link"])?.stdout,
        host.ns.ip(&["-br", "addr"])?.stdout,
        tree_snapshot(&host.bpffs)?,
    );
    ensure!(
        before.0 == after.0,
        "refused definitions changed the state directory {}",
        host.state_dir.display()
    );
    ensure!(
        before.1 == after.1,
        "refused definitions changed the links:\n{}\n->\n{}",
        String::from_utf8_lossy(&before.1),
        String::from_utf8_lossy(&after.1)
    );
    ensure!(
        before.2 == after.2,
        "refused definitions changed the addresses"
    );
    ensure!(
        before.3 == after.3,
        "refused definitions changed the pinned objects under {}",
        host.bpffs.display()
    );
    host.vxdp(&["net-destroy", "default"])?;
    host.vxdp(&["net-undefine", "default"])?;
    Ok(())
}

#[test]
fn conflicting_definitions_are_refused() -> Result<()> {
    let host = VxdpHost::new("clash")?;
    let a = host.write("a.xml", "<network><name>a</name><forward/><bridge name='vxa'/><ip address='10.70.0.1' prefix='16'/></network>")?;
    host.vxdp(&["net-define", a.to_str().unwrap()])?;
    let cases = [
        (
            "same-name.xml",
            "<network><name>a</name><forward/><ip address='10.71.0.1' prefix='24'/></network>",
            "/network/name",
            "already exists",
        ),
        (
            "overlap.xml",
            "<network><name>b</name><forward/><ip address='10.70.5.1' prefix='24'/></network>",
            "/network/ip[1]@address",
            "overlaps network 'a'",
        ),
        (
            "bridge.xml",
            "<network><name>c</name><forward/><bridge name='vxa'/><ip address='10.72.0.1' prefix='24'/></network>",
            "/network/bridge@name",
            "already used by network 'a'",
        ),
    ];
    let before = tree_snapshot(&host.state_dir)?;
    for (file, xml, element, reason) in cases {
        let p = host.write(file, xml)?;
        let out = host.vxdp_status(&["net-define", p.to_str().unwrap()])?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success(), "{file} was accepted");
        ensure!(
            err.contains(file) && err.contains(element) && err.contains(reason),
            "{file}: expected {element} / {reason}, got: {err}"
        );
    }
    ensure!(
        before == tree_snapshot(&host.state_dir)?,
        "refused definitions changed the state directory"
    );
    // Two host-bridge networks may share the host's bridge; a NAT network may not take it.
    let hb1 = host.write(
        "hb1.xml",
        "<network><name>hb1</name><forward mode='bridge'/><bridge name='br0'/></network>",
    )?;
    let hb2 = host.write(
        "hb2.xml",
        "<network><name>hb2</name><forward mode='bridge'/><bridge name='br0'/></network>",
    )?;
    host.vxdp(&["net-define", hb1.to_str().unwrap()])?;
    host.vxdp(&["net-define", hb2.to_str().unwrap()])?;
    let natbr = host.write("natbr.xml", "<network><name>natbr</name><forward/><bridge name='br0'/><ip address='10.75.0.1' prefix='24'/></network>")?;
    let out = host.vxdp_status(&["net-define", natbr.to_str().unwrap()])?;
    ensure!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("/network/bridge@name"),
        "a NAT network took host bridge br0"
    );
    // The same UUID under another name is refused too.
    let dumped = host.vxdp(&["net-dumpxml", "a"])?;
    let uuid = dumped
        .split("<uuid>")
        .nth(1)
        .and_then(|s| s.split("</uuid>").next())
        .context("no uuid")?;
    let p = host.write("uuid.xml", &format!("<network><name>d</name><uuid>{uuid}</uuid><forward/><ip address='10.73.0.1' prefix='24'/></network>"))?;
    let out = host.vxdp_status(&["net-define", p.to_str().unwrap()])?;
    ensure!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("/network/uuid"),
        "a duplicate UUID was not refused naming /network/uuid"
    );
    // A generated bridge name skips the one taken by 'a' and existing links.
    let e = host.write(
        "e.xml",
        "<network><name>e</name><ip address='10.74.0.1' prefix='24'/></network>",
    )?;
    host.ns
        .ip(&["link", "add", "virbr0", "type", "dummy"])
        .or_else(|_| host.ns.ip(&["link", "add", "virbr0", "type", "bridge"]))?;
    host.vxdp(&["net-define", e.to_str().unwrap()])?;
    let dumped = host.vxdp(&["net-dumpxml", "e"])?;
    ensure!(
        dumped.contains("<bridge name='virbr1'"),
        "expected the first free virbrN (virbr0 exists as a link):\n{dumped}"
    );
    ensure!(
        dumped.contains("<mac address='52:54:00:"),
        "no generated 52:54:00 MAC:\n{dumped}"
    );
    Ok(())
}
