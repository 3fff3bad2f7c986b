//! Leases: dnsmasq's lease file, and the lease events that put a guest's
//! address into its port's `Endpoint` (what anti-spoofing allows).

use crate::model::mac::Mac;
use std::{
    fs, io,
    net::{IpAddr, Ipv4Addr},
    path::Path,
};

use vxdp_common::endpoint_flags;

use crate::{
    dataplane::{Maps, Pins},
    host::state::{NetworkRecord, StateDir},
    xml::{self, NetworkDef},
};

use super::{DnsmasqError, Paths, io_err};

/// One line of dnsmasq's lease file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseEntry {
    /// Seconds since the epoch; 0 for an infinite lease.
    pub expiry: u64,
    /// The client's MAC (IPv4 leases; DHCPv6 leases have none).
    pub mac: Option<[u8; 6]>,
    pub ip: IpAddr,
    pub hostname: Option<String>,
    /// DHCPv4 client id or DHCPv6 DUID.
    pub client_id: Option<String>,
}

fn star(s: &str) -> Option<String> {
    (s != "*").then(|| s.to_string())
}

/// Parses a lease file's text (`expiry mac ip hostname client-id` per
/// IPv4 lease; after a `duid` line, `expiry iaid ip hostname duid` per
/// IPv6 lease). Lines that do not parse are skipped: dnsmasq rewrites the
/// file and a reader may see it mid-way.
pub fn parse_leases(text: &str) -> Vec<LeaseEntry> {
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 || f[0] == "duid" {
            continue;
        }
        let (Ok(expiry), Ok(ip)) = (f[0].parse::<u64>(), f[2].parse::<IpAddr>()) else {
            continue;
        };
        let mac = if ip.is_ipv4() {
            Mac::parse(f[1]).ok().map(Mac::octets)
        } else {
            None
        };
        out.push(LeaseEntry {
            expiry,
            mac,
            ip,
            hostname: star(f[3]),
            client_id: f.get(4).and_then(|s| star(s)),
        });
    }
    out
}

/// Writes `leases` (IPv4) as the network's lease file, which dnsmasq
/// reads when it starts: leases another DHCP server granted (libvirt's,
/// at `vxdp libvirt-adopt`) stay known, so their guests keep their
/// addresses and anti-spoofing allows them. Returns the file's path.
pub fn seed_leases(
    state_dir: &Path,
    network: &str,
    leases: &[LeaseEntry],
) -> Result<std::path::PathBuf, DnsmasqError> {
    let paths = Paths::new(state_dir, network);
    fs::create_dir_all(&paths.dir).map_err(io_err(&paths.dir))?;
    let mut text = String::new();
    for l in leases {
        let (IpAddr::V4(ip), Some(mac)) = (l.ip, l.mac) else {
            continue;
        };
        // Fields are single words: what is not is left out, not split.
        let word = |s: &Option<String>| {
            s.as_deref()
                .filter(|s| !s.is_empty() && !s.contains(char::is_whitespace))
                .unwrap_or("*")
                .to_string()
        };
        text.push_str(&format!(
            "{} {} {ip} {} {}\n",
            l.expiry,
            Mac(mac),
            word(&l.hostname),
            word(&l.client_id)
        ));
    }
    let path = paths.leases();
    fs::write(&path, text).map_err(io_err(&path))?;
    Ok(path)
}

/// The leases of a network (empty when it never ran dnsmasq).
pub fn read_leases(state_dir: &Path, network: &str) -> Result<Vec<LeaseEntry>, DnsmasqError> {
    let path = Paths::new(state_dir, network).leases();
    match fs::read_to_string(&path) {
        Ok(text) => Ok(parse_leases(&text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_err(&path)(e)),
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The static `<host>` address for `mac`, if the definition has one.
fn static_ipv4(def: &NetworkDef, mac: &[u8; 6]) -> Option<Ipv4Addr> {
    def.ips
        .iter()
        .flat_map(|ip| &ip.dhcp_hosts)
        .find_map(|h| match (h.mac, h.ip) {
            (Some(m), Some(IpAddr::V4(a))) if &m == mac => Some(a),
            _ => None,
        })
}

/// The address a guest with `mac` may use on the network: its static
/// `<host>` address, else its current (unexpired) IPv4 lease.
pub fn guest_ipv4(state_dir: &Path, rec: &NetworkRecord, mac: &[u8; 6]) -> Option<Ipv4Addr> {
    let def = xml::parse_network(&rec.xml, &rec.name).ok()?;
    if let Some(a) = static_ipv4(&def, mac) {
        return Some(a);
    }
    let now = now();
    read_leases(state_dir, &rec.name)
        .ok()?
        .into_iter()
        .find_map(|l| match l.ip {
            IpAddr::V4(a) if l.mac.as_ref() == Some(mac) && (l.expiry == 0 || l.expiry > now) => {
                Some(a)
            }
            _ => None,
        })
}

/// Writes `ipv4` (or "unknown" for None) into the endpoints of the
/// network's ports with `mac`; forgetting only applies to ports whose known
/// address is `forget`. Returns how many ports changed.
fn set_port_ipv4(
    pins: &Pins,
    rec: &NetworkRecord,
    mac: &[u8; 6],
    ipv4: Option<Ipv4Addr>,
    forget: Ipv4Addr,
) -> Result<usize, DnsmasqError> {
    let maps = Maps::open(pins)?;
    let mut n = 0;
    for port in &rec.ports {
        if port
            .mac
            .as_deref()
            .and_then(|m| Mac::parse(m).ok().map(Mac::octets))
            .as_ref()
            != Some(mac)
        {
            continue;
        }
        // An address given at plug time (`attach-interface --ip`) is the
        // operator's word: leases neither replace nor clear it.
        if port.ipv4.is_some() {
            continue;
        }
        let Some(mut ep) = maps.endpoint(port.ifindex)? else {
            continue;
        };
        match ipv4 {
            Some(a) => {
                ep.ipv4 = u32::from_ne_bytes(a.octets());
                ep.flags |= endpoint_flags::IPV4_KNOWN;
            }
            None if ep.ipv4 != u32::from_ne_bytes(forget.octets()) => continue,
            None => {
                ep.ipv4 = 0;
                ep.flags &= !endpoint_flags::IPV4_KNOWN;
            }
        }
        maps.set_endpoint(port.ifindex, &ep)?;
        n += 1;
    }
    Ok(n)
}

/// Handles one dnsmasq lease event (`vxdp dhcp-lease-event NETWORK ACTION
/// MAC IP [HOSTNAME]`): `add`/`old` make the leased IPv4 address the
/// guest's known address, `del` forgets it (a static `<host>` address
/// and an `attach-interface --ip` address stay). Other actions (`tftp`, `init`, DHCPv6 events) change nothing.
pub fn apply_event(
    state_dir: &Path,
    pins: &Pins,
    network: &str,
    args: &[String],
) -> Result<String, DnsmasqError> {
    let action = args.first().map(String::as_str).unwrap_or("");
    if !matches!(action, "add" | "old" | "del") || args.len() < 3 {
        return Ok(format!("{network}: ignored lease event {args:?}"));
    }
    let Ok(Mac(mac)) = Mac::parse(&args[1]) else {
        return Ok(format!(
            "{network}: ignored lease event without a MAC {args:?}"
        ));
    };
    let Ok(IpAddr::V4(ip)) = args[2].parse::<IpAddr>() else {
        return Ok(format!("{network}: ignored non-IPv4 lease event {args:?}"));
    };
    let state = StateDir::open(state_dir)?;
    let Some(rec) = state.network(network)? else {
        return Ok(format!(
            "{network}: not started; lease event {args:?} ignored"
        ));
    };
    let def = xml::parse_network(&rec.xml, &rec.name)?;
    let known = match (action, static_ipv4(&def, &mac)) {
        (_, Some(fixed)) => Some(fixed),
        ("del", None) => None,
        _ => Some(ip),
    };
    let n = set_port_ipv4(pins, &rec, &mac, known, ip)?;
    let what = known.map_or("unknown".to_string(), |a| a.to_string());
    Ok(format!(
        "{network}: lease {action} {} {ip}: {n} port(s) now allow {what}",
        Mac(mac)
    ))
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    now()
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) for seconds since the epoch.
pub fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The `net-dhcp-leases` table: like virsh, one row per unexpired lease
/// with its expiry, MAC, protocol, address/prefix, hostname and client id.
pub fn table(def: &NetworkDef, leases: &[LeaseEntry], mac: Option<&[u8; 6]>, now: u64) -> String {
    let mut rows = vec![[
        "Expiry Time (UTC)".to_string(),
        "MAC address".into(),
        "Protocol".into(),
        "IP address".into(),
        "Hostname".into(),
        "Client ID or DUID".into(),
    ]];
    for l in leases {
        if l.expiry != 0 && l.expiry <= now {
            continue;
        }
        if mac.is_some() && l.mac.as_ref() != mac {
            continue;
        }
        let prefix = def
            .ips
            .iter()
            .find(|ip| ip.contains(l.ip))
            .map_or(if l.ip.is_ipv4() { 32 } else { 128 }, |ip| ip.prefix);
        rows.push([
            if l.expiry == 0 {
                "never".into()
            } else {
                format_utc(l.expiry)
            },
            l.mac.as_ref().map_or("-".into(), |m| Mac(*m).to_string()),
            if l.ip.is_ipv4() {
                "ipv4".into()
            } else {
                "ipv6".into()
            },
            format!("{}/{prefix}", l.ip),
            l.hostname.clone().unwrap_or_else(|| "-".into()),
            l.client_id.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    let mut widths = [0usize; 6];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    for (i, r) in rows.iter().enumerate() {
        let cells: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push(' ');
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
        if i == 0 {
            out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 3 * 5 + 2));
            out.push('\n');
        }
    }
    out
}
