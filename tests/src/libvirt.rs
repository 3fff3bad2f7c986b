//! A private libvirtd for differential tests (DESIGN.md §7 item 5).
//!
//! libvirtd runs inside its own network namespace (with the devices of
//! [`crate::corpus::add_host_devices`]) and its own mount namespace
//! (`unshare -m --propagation private`), where private directories are bound
//! over all of `/run`, `/etc/libvirt` (a copy without any network
//! definitions, so no `default` network autostarts), `/var/lib/libvirt`,
//! `/var/log/libvirt` and `/var/cache/libvirt`. It therefore sees neither the
//! host's sockets and configuration nor its interfaces, and whatever it
//! writes (bridges, firewall rules, dnsmasq and its lease helper's pid file)
//! stays in those namespaces and directories. `virsh` reaches it through
//! `nsenter` into the same namespaces.
//!
//! [`Libvirtd::start_in`] runs it instead in a namespace the caller built
//! (the connection-table differential plugs its guests into libvirt's
//! bridge there).
//!
//! Drop destroys and undefines every network (libvirt's dnsmasq outlives a
//! libvirtd stopped with networks up), stops libvirtd, kills whatever is left
//! of it (everything in a namespace of its own; dnsmasq in a borrowed one)
//! and deletes the namespace it created and its directories.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};

use crate::corpus::add_host_devices;

use vxdp_testkit::{Netns, run};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Binds private directories over libvirt's paths and execs libvirtd, so the
/// child's pid is libvirtd's. `$1` is the private root.
const INNER: &str = r#"set -e
r="$1"
mount --bind "$r/run" /run
mount --bind "$r/etc" /etc/libvirt
mount --bind "$r/lib" /var/lib/libvirt
mount --bind "$r/log" /var/log/libvirt
mount --bind "$r/cache" /var/cache/libvirt
exec libvirtd
"#;

/// Appended to the private copy of `qemu.conf` when the test runs QEMU
/// domains. What each line changes, and why it is needed on these
/// machines (DESIGN.md §11):
const QEMU_CONF_FOR_TESTS: &str = r#"
# --- vxdp tests (tests/src/libvirt.rs) ---
# No AppArmor/SELinux labelling: no security module is loaded here and the
# guest image lives under the workspace, not in libvirt's image paths.
security_driver = "none"
# QEMU runs as root, and libvirt changes no file ownership (the image and the
# test's console/command sockets stay the test's).
user = "root"
group = "root"
dynamic_ownership = 0
# No cgroup controllers and no private /dev per domain: the test machines are
# containers where libvirt may not create cgroups or mount namespaces for QEMU.
cgroup_controllers = [ ]
namespaces = [ ]
# QEMU writes its own log file: no virtlogd daemon to start and stop.
stdio_handler = "file"
"#;

/// Whether libvirtd is set up to run QEMU domains.
enum Vms<'a> {
    No,
    Yes { hook: Option<&'a str> },
}

pub struct Libvirtd {
    /// The namespace libvirtd created for itself ([`Libvirtd::start`]).
    pub ns: Option<Netns>,
    ns_name: String,
    root: PathBuf,
    child: Option<Child>,
    pid: u32,
}

fn require_tool(name: &str) -> Result<()> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).exists()))
        .unwrap_or(false)
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join(name).exists());
    ensure!(
        found,
        "{name} is not installed: the libvirt differential test needs libvirt-daemon-system, libvirt-clients \
         and dnsmasq-base (`cargo xtask setup` installs them)"
    );
    Ok(())
}

impl Libvirtd {
    /// Starts libvirtd in fresh namespaces and waits for its socket.
    pub fn start(tag: &str) -> Result<Self> {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("vx{tag}{}-{n}", std::process::id());
        Self::check_tools()?;
        let ns = Netns::new(format!("{prefix}-lv"))?;
        add_host_devices(&ns)?;
        let name = ns.name.clone();
        Self::launch(Some(ns), name, &prefix, &Vms::No)
    }

    /// Starts libvirtd in the caller's network namespace `ns` (and a private
    /// mount namespace of its own) and waits for its socket.
    pub fn start_in(ns: &Netns) -> Result<Self> {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        Self::check_tools()?;
        Self::launch(None, ns.name.clone(), &format!("{}-{n}", ns.name), &Vms::No)
    }

    /// [`Libvirtd::start_in`], configured to run QEMU domains on this
    /// machine (DESIGN.md §11), and with `hook` (a script's text), if
    /// given, as its qemu hook (`/etc/libvirt/hooks/qemu` of the private
    /// configuration).
    pub fn start_in_for_vms(ns: &Netns, hook: Option<&str>) -> Result<Self> {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        Self::check_tools()?;
        require_tool("qemu-system-x86_64")?;
        Self::launch(
            None,
            ns.name.clone(),
            &format!("{}-{n}", ns.name),
            &Vms::Yes { hook },
        )
    }

    fn check_tools() -> Result<()> {
        ensure!(
            unsafe { libc::geteuid() } == 0,
            "the libvirt differential tests need root"
        );
        for tool in ["libvirtd", "virsh", "dnsmasq", "unshare", "nsenter"] {
            require_tool(tool)?;
        }
        Ok(())
    }

    fn launch(ns: Option<Netns>, ns_name: String, prefix: &str, vms: &Vms) -> Result<Self> {
        let root = std::env::temp_dir().join(format!("{prefix}-libvirt"));
        for d in ["run", "lib", "log", "cache"] {
            std::fs::create_dir_all(root.join(d))?;
        }
        run(
            "cp",
            &[
                "-a",
                "/etc/libvirt",
                root.join("etc").to_str().context("path")?,
            ],
        )?;
        // No network or domain definitions at all: in particular not the
        // autostarted `default` network (virbr0, 192.168.122.0/24), nor the
        // host's domains.
        let qemu = root.join("etc/qemu");
        if qemu.exists() {
            std::fs::remove_dir_all(&qemu)?;
        }
        std::fs::create_dir_all(qemu.join("networks/autostart"))?;
        let _ = std::fs::remove_dir_all(root.join("etc/hooks"));
        if let Vms::Yes { hook } = vms {
            let conf = root.join("etc/qemu.conf");
            let mut text = std::fs::read_to_string(&conf).unwrap_or_default();
            text.push_str(QEMU_CONF_FOR_TESTS);
            std::fs::write(&conf, text)?;
            if let Some(hook) = hook {
                use std::os::unix::fs::PermissionsExt as _;
                let dir = root.join("etc/hooks");
                std::fs::create_dir_all(&dir)?;
                std::fs::write(dir.join("qemu"), hook)?;
                std::fs::set_permissions(dir.join("qemu"), std::fs::Permissions::from_mode(0o755))?;
            }
        }
        let log = std::fs::File::create(root.join("libvirtd.log"))?;
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns_name,
                "unshare",
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                INNER,
                "sh",
            ])
            .arg(&root)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting libvirtd")?;
        let pid = child.id();
        let mut lv = Self {
            ns,
            ns_name,
            root,
            child: Some(child),
            pid,
        };
        let sock = lv.root.join("run/libvirt/libvirt-sock");
        let start = Instant::now();
        loop {
            if let Some(status) = lv.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!(
                    "libvirtd exited ({status}) before its socket appeared: {}",
                    lv.log_tail()
                );
            }
            if sock.exists()
                && lv
                    .virsh(&["net-list", "--all"])
                    .is_ok_and(|o| o.status.success())
            {
                break;
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("libvirtd did not answer within 30 s: {}", lv.log_tail());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(lv)
    }

    /// Starts a transient network from `xml` (`virsh net-create`); fails
    /// with virsh's message.
    pub fn net_create(&self, name: &str, xml: &str) -> Result<()> {
        let file = self.root.join(format!("{name}.xml"));
        std::fs::write(&file, xml)?;
        let out = self.virsh(&["net-create", file.to_str().context("path")?])?;
        ensure!(
            out.status.success(),
            "virsh net-create {name} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.root.join("libvirtd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// A libvirt URI that reaches this libvirtd from the host's mount
    /// namespace (its socket under the private /run), for `vxdp
    /// libvirt-adopt --connect`.
    pub fn uri(&self) -> String {
        format!(
            "qemu+unix:///system?socket={}",
            self.root.join("run/libvirt/libvirt-sock").display()
        )
    }

    /// `virsh -q -c qemu:///system ARGS` inside libvirtd's namespaces.
    pub fn virsh(&self, args: &[&str]) -> Result<Output> {
        Command::new("nsenter")
            .args([
                "-t",
                &self.pid.to_string(),
                "-m",
                "-n",
                "virsh",
                "-q",
                "-c",
                "qemu:///system",
            ])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running virsh")
    }

    fn network_names(&self, flag: &str) -> Vec<String> {
        self.virsh(&["net-list", flag, "--name"])
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// QEMU's log of domain `name` (under the private /var/log/libvirt).
    pub fn domain_log(&self, name: &str) -> PathBuf {
        self.root.join("log/qemu").join(format!("{name}.log"))
    }

    /// Stops every running domain (`virsh destroy`): QEMU goes with it.
    pub fn destroy_domains(&self) {
        let names = self
            .virsh(&["list", "--name"])
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for name in names.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let _ = self.virsh(&["destroy", name]);
        }
    }

    /// Destroys and undefines every network libvirtd has.
    pub fn clean_networks(&self) {
        for name in self.network_names("--all") {
            let _ = self.virsh(&["net-destroy", &name]);
            let _ = self.virsh(&["net-undefine", &name]);
        }
    }

    /// What is left of this libvirtd: every process of its own namespace, or
    /// the dnsmasq processes of a borrowed one.
    fn leftover_pids(&self) -> Vec<i32> {
        let pids: Vec<i32> = Command::new("ip")
            .args(["netns", "pids", &self.ns_name])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        if self.ns.is_some() {
            return pids;
        }
        pids.into_iter()
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim() == "dnsmasq" || c.trim() == "qemu-system-x86")
            })
            .collect()
    }
}

impl Drop for Libvirtd {
    fn drop(&mut self) {
        self.destroy_domains();
        self.clean_networks();
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
            let start = Instant::now();
            while child.try_wait().ok().flatten().is_none()
                && start.elapsed() < Duration::from_secs(10)
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // Only what libvirtd left: dnsmasq and its helpers (and a QEMU of
        // a domain it could not stop).
        for _ in 0..3 {
            let pids = self.leftover_pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Mutants of libvirt network definitions for the differential fuzz test
/// (`libvirt_diff.rs`, `cargo xtask libvirt-fuzz`): a small XML tree, a
/// seeded generator and the mutation operators (drop, add, duplicate or move
/// elements and attributes, switch forward modes, out-of-range and malformed
/// values).
pub mod mutate {
    use std::collections::BTreeMap;

    use anyhow::{Result, bail};

    /// An element: name as written (with its prefix), attributes in order, children.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Elem {
        pub name: String,
        pub attrs: Vec<(String, String)>,
        pub children: Vec<Node>,
    }

    #[derive(Debug, Clone, PartialEq)]
    pub enum Node {
        Elem(Elem),
        Text(String),
    }

    fn unescape(s: &str) -> String {
        s.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&")
    }

    fn escape(s: &str) -> String {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('\'', "&apos;")
            .replace('"', "&quot;")
    }

    /// Parses the plain XML of the corpus: elements, attributes, text;
    /// the declaration and comments are skipped. Not a general XML parser.
    pub fn parse(text: &str) -> Result<Elem> {
        let mut stack: Vec<Elem> = vec![Elem {
            name: String::new(),
            attrs: vec![],
            children: vec![],
        }];
        let mut rest = text;
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix("<?") {
                rest = &r[r
                    .find("?>")
                    .ok_or_else(|| anyhow::anyhow!("unterminated <?"))?
                    + 2..];
            } else if let Some(r) = rest.strip_prefix("<!--") {
                rest = &r[r
                    .find("-->")
                    .ok_or_else(|| anyhow::anyhow!("unterminated comment"))?
                    + 3..];
            } else if let Some(r) = rest.strip_prefix("</") {
                let end = r
                    .find('>')
                    .ok_or_else(|| anyhow::anyhow!("unterminated end tag"))?;
                let e = stack.pop().ok_or_else(|| anyhow::anyhow!("unbalanced"))?;
                if e.name != r[..end].trim() || stack.is_empty() {
                    bail!("mismatched </{}>", &r[..end]);
                }
                stack.last_mut().unwrap().children.push(Node::Elem(e));
                rest = &r[end + 1..];
            } else if let Some(r) = rest.strip_prefix('<') {
                let end = r
                    .find('>')
                    .ok_or_else(|| anyhow::anyhow!("unterminated tag"))?;
                let (body, closed) = match r[..end].strip_suffix('/') {
                    Some(b) => (b, true),
                    None => (&r[..end], false),
                };
                let name_end = body.find(char::is_whitespace).unwrap_or(body.len());
                let mut e = Elem {
                    name: body[..name_end].to_string(),
                    attrs: vec![],
                    children: vec![],
                };
                let mut a = body[name_end..].trim_start();
                while !a.is_empty() {
                    let eq = a.find('=').ok_or_else(|| {
                        anyhow::anyhow!("attribute without value in <{}>", e.name)
                    })?;
                    let name = a[..eq].trim().to_string();
                    let v = a[eq + 1..].trim_start();
                    let q = v
                        .chars()
                        .next()
                        .ok_or_else(|| anyhow::anyhow!("no value"))?;
                    let close = v[1..]
                        .find(q)
                        .ok_or_else(|| anyhow::anyhow!("unterminated value"))?;
                    e.attrs.push((name, unescape(&v[1..1 + close])));
                    a = v[close + 2..].trim_start();
                }
                if closed {
                    stack.last_mut().unwrap().children.push(Node::Elem(e));
                } else {
                    stack.push(e);
                }
                rest = &r[end + 1..];
            } else {
                let end = rest.find('<').unwrap_or(rest.len());
                let t = &rest[..end];
                if !t.trim().is_empty() {
                    stack
                        .last_mut()
                        .unwrap()
                        .children
                        .push(Node::Text(unescape(t)));
                }
                rest = &rest[end..];
            }
        }
        let mut top = stack
            .pop()
            .filter(|_| stack.is_empty())
            .ok_or_else(|| anyhow::anyhow!("unclosed element"))?;
        match top.children.pop() {
            Some(Node::Elem(e)) if top.children.is_empty() => Ok(e),
            _ => bail!("expected exactly one root element"),
        }
    }

    /// Writes `e` back as indented XML.
    pub fn write(e: &Elem) -> String {
        let mut out = String::new();
        write_into(e, 0, &mut out);
        out
    }

    fn write_into(e: &Elem, depth: usize, out: &mut String) {
        out.push_str(&"  ".repeat(depth));
        out.push('<');
        out.push_str(&e.name);
        for (k, v) in &e.attrs {
            out.push_str(&format!(" {k}='{}'", escape(v)));
        }
        if e.children.is_empty() {
            out.push_str("/>\n");
            return;
        }
        if let [Node::Text(t)] = e.children.as_slice() {
            out.push_str(&format!(">{}</{}>\n", escape(t), e.name));
            return;
        }
        out.push_str(">\n");
        for c in &e.children {
            match c {
                Node::Elem(c) => write_into(c, depth + 1, out),
                Node::Text(t) => {
                    out.push_str(&"  ".repeat(depth + 1));
                    out.push_str(&escape(t.trim()));
                    out.push('\n');
                }
            }
        }
        out.push_str(&format!("{}</{}>\n", "  ".repeat(depth), e.name));
    }

    /// xorshift64*: deterministic for a seed, no dependency.
    pub struct Rng(u64);

    impl Rng {
        pub fn new(seed: u64) -> Rng {
            Rng(seed.max(1))
        }
        pub fn next_u64(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        pub fn below(&mut self, n: usize) -> usize {
            if n == 0 {
                0
            } else {
                (self.next_u64() % n as u64) as usize
            }
        }
        pub fn pick<'a, T>(&mut self, v: &'a [T]) -> Option<&'a T> {
            if v.is_empty() {
                None
            } else {
                Some(&v[self.below(v.len())])
            }
        }
    }

    /// Paths (child indices from the root) of every element below the root.
    fn elem_paths(e: &Elem, prefix: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        for (i, c) in e.children.iter().enumerate() {
            if let Node::Elem(c) = c {
                prefix.push(i);
                out.push(prefix.clone());
                elem_paths(c, prefix, out);
                prefix.pop();
            }
        }
    }

    fn at<'a>(root: &'a mut Elem, path: &[usize]) -> &'a mut Elem {
        let mut e = root;
        for &i in path {
            e = match &mut e.children[i] {
                Node::Elem(c) => c,
                Node::Text(_) => unreachable!("paths only name elements"),
            };
        }
        e
    }

    /// What the corpus offers to graft and to set: elements by parent name,
    /// attribute values by (element, attribute).
    #[derive(Default)]
    pub struct Vocabulary {
        pub elements: BTreeMap<String, Vec<Elem>>,
        pub values: BTreeMap<(String, String), Vec<String>>,
    }

    impl Vocabulary {
        pub fn add(&mut self, e: &Elem) {
            for (k, v) in &e.attrs {
                let vs = self.values.entry((e.name.clone(), k.clone())).or_default();
                if !vs.contains(v) {
                    vs.push(v.clone());
                }
            }
            for c in &e.children {
                if let Node::Elem(c) = c {
                    let es = self.elements.entry(e.name.clone()).or_default();
                    if !es.contains(c) {
                        es.push(c.clone());
                    }
                    self.add(c);
                }
            }
        }
    }

    const MODES: &[&str] = &[
        "nat",
        "route",
        "open",
        "bridge",
        "private",
        "vepa",
        "passthrough",
        "hostdev",
        "NAT",
        "none",
        "",
    ];
    /// Out-of-range and malformed values, tried on any attribute.
    const BAD_VALUES: &[&str] = &[
        "",
        " ",
        "0",
        "1",
        "-1",
        "2",
        "65535",
        "65536",
        "4095",
        "4096",
        "4294967295",
        "4294967296",
        "99999999999999999999",
        "abc",
        "1.5",
        "0x10",
        "+5",
        "yes",
        "no",
        "on",
        "off",
        "YES",
        "true",
        "ipv4",
        "ipv6",
        "10.0.0.256",
        "fd00::1",
        "::",
        "0.0.0.0",
        "255.255.255.255",
        "255.255.0.255",
        "192.168.122.0",
        "192.168.122.255",
        "2001:db8::1",
        "52:54:00:00:00:01",
        "01:00:5e:00:00:01",
        "52:54:00:00:00",
        "eth0",
        "eth1",
        "br0",
        "a/b",
        "-x",
        "averyveryverylongname0",
        "seconds",
        "minutes",
        "hours",
        "pci",
        "tcp",
        "udp",
        "openvswitch",
        "802.1Qbh",
        "kernel",
        "libvirt",
    ];

    /// One mutation of `doc`; returns a short description of what was done.
    pub fn mutate(doc: &mut Elem, vocab: &Vocabulary, rng: &mut Rng) -> String {
        let mut paths = Vec::new();
        elem_paths(doc, &mut Vec::new(), &mut paths);
        let all_elems = {
            let mut v = vec![Vec::new()];
            v.extend(paths.iter().cloned());
            v
        };
        match rng.below(9) {
            0 => {
                // Drop an element.
                let Some(p) = rng.pick(&paths).cloned() else {
                    return "nothing to drop".into();
                };
                let (last, parent) = p.split_last().expect("non-empty");
                let parent = at(doc, parent);
                let name = match parent.children.remove(*last) {
                    Node::Elem(e) => e.name,
                    Node::Text(_) => String::new(),
                };
                format!("dropped <{name}>")
            }
            1 => {
                // Drop an attribute.
                let p = rng.pick(&all_elems).cloned().unwrap_or_default();
                let e = at(doc, &p);
                if e.attrs.is_empty() {
                    return format!("<{}> has no attribute to drop", e.name);
                }
                let i = rng.below(e.attrs.len());
                let (k, _) = e.attrs.remove(i);
                format!("dropped <{}> @{k}", e.name)
            }
            2 => {
                // Duplicate an element next to itself.
                let Some(p) = rng.pick(&paths).cloned() else {
                    return "nothing to duplicate".into();
                };
                let (last, parent) = p.split_last().expect("non-empty");
                let parent = at(doc, parent);
                let copy = parent.children[*last].clone();
                parent.children.insert(*last + 1, copy);
                "duplicated an element".into()
            }
            3 => {
                // Move an element under another one.
                let Some(p) = rng.pick(&paths).cloned() else {
                    return "nothing to move".into();
                };
                let (last, parent) = p.split_last().expect("non-empty");
                let node = at(doc, parent).children.remove(*last);
                let mut targets = Vec::new();
                elem_paths(doc, &mut Vec::new(), &mut targets);
                targets.push(Vec::new());
                let t = rng.pick(&targets).cloned().unwrap_or_default();
                let target = at(doc, &t);
                let name = if let Node::Elem(e) = &node {
                    e.name.clone()
                } else {
                    String::new()
                };
                let pos = rng.below(target.children.len() + 1);
                target.children.insert(pos, node);
                format!("moved <{name}> into <{}>", target.name)
            }
            4 => {
                // Graft an element the corpus has under a parent of the same name.
                let p = rng.pick(&all_elems).cloned().unwrap_or_default();
                let e = at(doc, &p);
                let Some(donors) = vocab.elements.get(&e.name) else {
                    return format!("no donor for <{}>", e.name);
                };
                let g = rng.pick(donors).expect("non-empty").clone();
                let name = g.name.clone();
                let pos = rng.below(e.children.len() + 1);
                e.children.insert(pos, Node::Elem(g));
                format!("added <{name}> to <{}>", e.name)
            }
            5 => {
                // Switch (or add) the forward mode.
                let mode = *rng.pick(MODES).expect("modes");
                let fwd = doc.children.iter_mut().find_map(|c| match c {
                    Node::Elem(e) if e.name == "forward" => Some(e),
                    _ => None,
                });
                match fwd {
                    Some(f) => {
                        f.attrs.retain(|(k, _)| k != "mode");
                        f.attrs.push(("mode".into(), mode.into()));
                    }
                    None => doc.children.insert(
                        1,
                        Node::Elem(Elem {
                            name: "forward".into(),
                            attrs: vec![("mode".into(), mode.into())],
                            children: vec![],
                        }),
                    ),
                }
                format!("forward mode '{mode}'")
            }
            6 | 7 => {
                // Set an attribute (existing or known for this element) to a bad
                // value, a value seen elsewhere, or a neighbouring number.
                let p = rng.pick(&all_elems).cloned().unwrap_or_default();
                let e = at(doc, &p);
                let known: Vec<&String> = vocab
                    .values
                    .keys()
                    .filter(|(el, _)| *el == e.name)
                    .map(|(_, a)| a)
                    .collect();
                let attr = if !e.attrs.is_empty() && rng.below(3) > 0 {
                    e.attrs[rng.below(e.attrs.len())].0.clone()
                } else if let Some(a) = rng.pick(&known) {
                    (*a).clone()
                } else {
                    return format!("no attribute for <{}>", e.name);
                };
                let current = e
                    .attrs
                    .iter()
                    .find(|(k, _)| *k == attr)
                    .map(|(_, v)| v.clone());
                let value = match (
                    rng.below(3),
                    current.as_deref().and_then(|v| v.parse::<i64>().ok()),
                ) {
                    (0, Some(n)) => (n + [-1i64, 1, -100, 100][rng.below(4)]).to_string(),
                    (1, _) => vocab
                        .values
                        .get(&(e.name.clone(), attr.clone()))
                        .and_then(|v| rng.pick(v))
                        .cloned()
                        .unwrap_or_default(),
                    _ => (*rng.pick(BAD_VALUES).expect("values")).to_string(),
                };
                e.attrs.retain(|(k, _)| *k != attr);
                e.attrs.push((attr.clone(), value.clone()));
                format!("<{}> @{attr}='{value}'", e.name)
            }
            _ => {
                // Change an element's text (name, uuid, hostname, ...).
                let texts: Vec<Vec<usize>> = paths
                    .iter()
                    .filter(|p| {
                        let mut d = doc.clone();
                        matches!(at(&mut d, p).children.as_slice(), [Node::Text(_)])
                    })
                    .cloned()
                    .collect();
                let Some(p) = rng.pick(&texts).cloned() else {
                    return "no text to change".into();
                };
                let e = at(doc, &p);
                let v = *rng
                    .pick(&[
                        "",
                        " x",
                        "a/b",
                        "x\ny",
                        "-x",
                        "name with space",
                        "0123",
                        "f0f0f0f0-0000-4000-8000-000000000001",
                        "zz",
                    ])
                    .expect("texts");
                e.children = vec![Node::Text(v.into())];
                format!("<{}> text '{}'", e.name, v.escape_debug())
            }
        }
    }
}
