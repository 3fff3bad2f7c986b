//! Man pages and shell completions generated from the command's clap
//! definitions, so `man vxdp`, `vxdp --help` and tab completion never
//! disagree. Run by the hidden `vxdp generate-docs` verb, which `cargo
//! xtask man` and `cargo xtask deb` call (xtask cannot link the command's
//! definitions itself: it must start on a machine without the eBPF
//! toolchain).
//!
//! Pages: `vxdp.1` and one per visible verb, named after the verb's path
//! (`vxdp-net-define.1`, `vxdp-conntrack-list.1`, ...). Hidden verbs (the
//! dnsmasq helpers, this one) get none. A verb's examples ([`EXAMPLES`],
//! attached by [`with_examples`]) become its EXAMPLES section.
//! Completions: `vxdp.bash`, `_vxdp` (zsh) and `vxdp.fish`.

use std::{
    io,
    path::{Path, PathBuf},
};

use clap::Command;
use clap_complete::Shell;
use clap_mangen::{
    Man,
    roff::{Roff, bold, roman},
};

/// The manual's name in every page's header.
const MANUAL: &str = "vxdp manual";

/// What else to read, on the top-level page.
const SEE_ALSO: &str = "virsh(1), dnsmasq(8), bpftool(8), systemctl(1); \
    /usr/share/doc/vxdp/README.md and the documents under \
    /usr/share/doc/vxdp/docs/ (architecture, modes, guest services, daemon, \
    security, performance, libvirt XML, testing, design decisions) when \
    installed from the Debian package, README.md and docs/ in the source tree \
    otherwise.";

/// Files vxdp reads and writes, on the top-level page.
const FILES: [(&str, &str); 6] = [
    (
        "/var/lib/vxdp/networks/NAME.xml",
        "Stored network definitions (net-define); NAME.autostart marks autostart.",
    ),
    (
        "/var/lib/vxdp/run/NAME.json",
        "Records of started networks (ports, ifindexes, what to undo).",
    ),
    (
        "/var/lib/vxdp/dnsmasq/NAME/",
        "A network's dnsmasq: dnsmasq.conf, leases, pid files, lease-hook, log.",
    ),
    (
        "/sys/fs/bpf/vxdp/v1/",
        "Pinned maps, programs and links (--bpffs): the dataplane runs without a process.",
    ),
    (
        "/etc/default/vxdp",
        "VXDP_SERVE_ARGS for vxdp.service (Debian package).",
    ),
    (
        "/usr/share/vxdp/",
        "Prometheus rules and the Grafana dashboard (Debian package).",
    ),
];

/// Examples per verb path ("" is `vxdp` itself), shown by `--help` and as
/// the man pages' EXAMPLES. Every line that starts with `vxdp ` must parse
/// (a test of the binary checks it); `#` starts a comment.
pub const EXAMPLES: &[(&str, &str)] = &[
    (
        "",
        "vxdp net-define /etc/libvirt/qemu/networks/default.xml
vxdp net-start default
vxdp attach-interface --xml guest-if.xml --tap-owner libvirt-qemu:kvm   # prints the tap's name
vxdp stats default
vxdp --netns hv net-list --all   # inside network namespace hv",
    ),
    (
        "net-define",
        "vxdp net-define /etc/libvirt/qemu/networks/default.xml
vxdp net-dumpxml default > default.xml   # edit it, keep its <uuid>, then:
vxdp net-define default.xml              # redefine; restart to apply",
    ),
    ("net-undefine", "vxdp net-undefine default"),
    (
        "net-start",
        "vxdp net-start default
vxdp net-autostart default   # and start it at boot (vxdp serve, vxdp autostart)",
    ),
    (
        "net-create",
        "vxdp net-create isolated.xml   # started now, forgotten at net-destroy",
    ),
    (
        "net-validate",
        "vxdp net-validate default.xml && vxdp net-define default.xml",
    ),
    ("net-destroy", "vxdp net-destroy default"),
    (
        "net-list",
        "vxdp net-list         # running networks
vxdp net-list --all   # defined ones too",
    ),
    ("net-info", "vxdp net-info default"),
    (
        "net-dumpxml",
        "vxdp net-dumpxml default
vxdp net-dumpxml default --inactive   # the stored definition, not the running one",
    ),
    (
        "net-autostart",
        "vxdp net-autostart default
vxdp net-autostart default --disable",
    ),
    ("autostart", "vxdp autostart   # what vxdp serve does when it starts"),
    (
        "attach-interface",
        "vxdp attach-interface --xml guest-if.xml --tap-owner libvirt-qemu:kvm
vxdp attach-interface --network default --dev vnet0 --mac 52:54:00:12:34:56
vxdp attach-interface --network default --dev vnet0 --mac 52:54:00:12:34:56 --ip 192.168.122.10 --ip 2001:db8:ca2:2::10",
    ),
    (
        "detach-interface",
        "vxdp detach-interface --xml guest-if.xml
vxdp detach-interface --network default --dev vnet0",
    ),
    (
        "net-dhcp-leases",
        "vxdp net-dhcp-leases default
vxdp net-dhcp-leases default --mac 52:54:00:12:34:56",
    ),
    (
        "stats",
        "vxdp stats                  # every network and the uplink, counters that are not zero
vxdp stats default --all    # one network, every counter
vxdp stats --by-interface   # split by guest port and uplink",
    ),
    (
        "conntrack",
        "vxdp conntrack list default
vxdp conntrack flush default",
    ),
    ("conntrack list", "vxdp conntrack list default"),
    ("conntrack flush", "vxdp conntrack flush"),
    (
        "serve",
        "vxdp serve
vxdp serve --listen 0.0.0.0:9465 --reconcile-interval 30s
curl -s http://127.0.0.1:9465/metrics",
    ),
    ("load", "vxdp load   # after vxdp unload, or an upgrade that needs it"),
    (
        "unload",
        "vxdp unload && vxdp load   # reload the dataplane (the conntrack table is lost)",
    ),
];

/// `cmd` with each verb's [`EXAMPLES`] as its `after_long_help` (shown by
/// `--help`, not by `-h`). Verbs not in the table are left alone.
pub fn with_examples(cmd: Command) -> Command {
    fn attach(cmd: Command, path: &str) -> Command {
        let cmd = match EXAMPLES.iter().find(|(p, _)| *p == path) {
            Some((_, ex)) => cmd.after_long_help(format!("Examples:\n{}", indent(ex))),
            None => cmd,
        };
        cmd.mut_subcommands(|sub| {
            let sub_path = if path.is_empty() {
                sub.get_name().to_string()
            } else {
                format!("{path} {}", sub.get_name())
            };
            attach(sub, &sub_path)
        })
    }
    attach(cmd, "")
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Writes every man page of `cmd` into `dir` (created if missing); returns
/// the files written, the top-level page first.
pub fn write_man_pages(cmd: Command, dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = cmd.disable_help_subcommand(true);
    // Sets every subcommand's display name to its path (vxdp-net-define).
    cmd.build();
    let verbs = verb_pages(&cmd);
    let mut written = Vec::new();
    let top_see_also = verbs
        .iter()
        .map(|v| format!("{v}(1)"))
        .collect::<Vec<_>>()
        .join(", ");
    write_page(
        &cmd,
        dir,
        &format!("{top_see_also}; {SEE_ALSO}"),
        true,
        &mut written,
    )?;
    walk(&cmd, dir, &mut written)?;
    Ok(written)
}

/// Writes bash, zsh and fish completions for `cmd` into `dir`; returns the
/// files written.
pub fn write_completions(cmd: Command, dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    // clap_complete's bash script offers hidden verbs too: leave them out.
    let mut cmd = visible(&cmd);
    let name = cmd.get_name().to_string();
    [Shell::Bash, Shell::Zsh, Shell::Fish]
        .into_iter()
        .map(|shell| clap_complete::generate_to(shell, &mut cmd, &name, dir))
        .collect()
}

/// A copy of `cmd` with what completion needs (names, help, arguments,
/// version), without hidden verbs and arguments.
fn visible(cmd: &Command) -> Command {
    // clap takes owned names only with its `string` feature; this runs once
    // per verb in a short-lived process.
    let leak = |s: &str| -> &'static str { Box::leak(s.to_string().into_boxed_str()) };
    let mut out = Command::new(leak(cmd.get_name()))
        .args(cmd.get_arguments().filter(|a| !a.is_hide_set()).cloned())
        .subcommands(
            cmd.get_subcommands()
                .filter(|s| !s.is_hide_set())
                .map(visible),
        );
    if let Some(about) = cmd.get_about() {
        out = out.about(about.clone());
    }
    if let Some(version) = cmd.get_version() {
        out = out.version(leak(version));
    }
    out
}

/// The names of the pages of every visible verb, in the order `--help`
/// lists them (nested verbs after their parent).
fn verb_pages(cmd: &Command) -> Vec<String> {
    let mut out = Vec::new();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        out.push(page_name(sub));
        out.extend(verb_pages(sub));
    }
    out
}

fn page_name(cmd: &Command) -> String {
    cmd.get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_string()
}

fn walk(cmd: &Command, dir: &Path, written: &mut Vec<PathBuf>) -> io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let mut see_also = vec![format!("{}(1)", page_name(cmd))];
        see_also.extend(verb_pages(sub).iter().map(|v| format!("{v}(1)")));
        write_page(sub, dir, &see_also.join(", "), false, written)?;
        walk(sub, dir, written)?;
    }
    Ok(())
}

fn write_page(
    cmd: &Command,
    dir: &Path,
    see_also: &str,
    top: bool,
    written: &mut Vec<PathBuf>,
) -> io::Result<()> {
    let man = Man::new(cmd.clone()).manual(MANUAL);
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut page)?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(&mut page)?;
    }
    let mut roff = Roff::new();
    if let Some(examples) = cmd.get_after_long_help().map(|h| h.to_string()) {
        examples_section(&mut roff, &examples);
    }
    if top {
        roff.control("SH", ["FILES"]);
        for (path, what) in FILES {
            roff.control("TP", []);
            roff.text([bold(path)]);
            roff.text([roman(what)]);
        }
        roff.control("SH", ["EXIT STATUS"]);
        roff.text([roman(
            "0 on success; 1 on an error, which is printed on standard error as \
             \"vxdp: error: \" followed by what failed, where (file, element, interface) and why; \
             2 when the command line is not understood.",
        )]);
    }
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(see_also)]);
    roff.to_writer(&mut page)?;
    let path = dir.join(man.get_filename());
    std::fs::write(&path, page)?;
    written.push(path);
    Ok(())
}

/// An `after_long_help` of the form "Examples:\n  CMD   # what\n..." as an
/// EXAMPLES section, one example per line, kept as written (no filling).
fn examples_section(roff: &mut Roff, text: &str) {
    let body = text.strip_prefix("Examples:").unwrap_or(text);
    roff.control("SH", ["EXAMPLES"]);
    roff.control("nf", []);
    for line in body.lines().skip_while(|l| l.trim().is_empty()) {
        roff.text([roman(line.trim_end())]);
    }
    roff.control("fi", []);
}

#[cfg(test)]
mod tests {
    use clap::{Arg, Command};

    use super::*;

    fn sample() -> Command {
        Command::new("vxdp")
            .version("1.0")
            .about("A sample")
            .arg(Arg::new("state-dir").long("state-dir").global(true))
            .subcommand(
                Command::new("net-define")
                    .about("Define a network")
                    .after_long_help(
                        "Examples:\n  vxdp net-define default.xml   # store it\n  .leading dot",
                    ),
            )
            .subcommand(
                Command::new("conntrack")
                    .about("Flows")
                    .subcommand(Command::new("list").about("List flows")),
            )
            .subcommand(Command::new("internal").hide(true))
    }

    #[test]
    fn one_page_per_visible_verb_with_examples_and_see_also() {
        let dir = std::env::temp_dir().join(format!("vxdp-docgen-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let files = write_man_pages(sample(), &dir).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "vxdp.1",
                "vxdp-net-define.1",
                "vxdp-conntrack.1",
                "vxdp-conntrack-list.1"
            ]
        );
        let define = std::fs::read_to_string(dir.join("vxdp-net-define.1")).unwrap();
        assert!(define.contains(".SH EXAMPLES"), "{define}");
        assert!(define.contains("vxdp net\\-define default.xml"), "{define}");
        // A line of text starting with a dot must not become a request.
        assert!(
            !define.lines().any(|l| l.starts_with(".leading")),
            "{define}"
        );
        assert!(define.contains(".SH \"SEE ALSO\"") || define.contains(".SH SEE ALSO"));
        assert!(define.contains("vxdp(1)"), "{define}");
        let top = std::fs::read_to_string(dir.join("vxdp.1")).unwrap();
        assert!(top.contains("vxdp\\-conntrack\\-list(1)"), "{top}");
        assert!(top.contains(".SH FILES"), "{top}");
        assert!(!top.contains("internal"), "hidden verb documented:\n{top}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn completions_for_three_shells() {
        let dir = std::env::temp_dir().join(format!("vxdp-compl-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let files = write_completions(sample(), &dir).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["vxdp.bash", "_vxdp", "vxdp.fish"]);
        let bash = std::fs::read_to_string(dir.join("vxdp.bash")).unwrap();
        assert!(bash.contains("net-define"), "{bash}");
        assert!(!bash.contains("internal"), "hidden verb completed:\n{bash}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
