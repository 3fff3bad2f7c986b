// vxdp status page: renders /api/status. Every value is set as text
// (textContent), never parsed as HTML: flow addresses come from guests.
"use strict";

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells, numeric) {
  const tr = el("tr");
  cells.forEach((c, i) => tr.appendChild(el("td", c, numeric && numeric.includes(i) ? "num" : "")));
  return tr;
}

function table(headers, rows, numeric) {
  const t = el("table");
  const head = el("tr");
  headers.forEach((h) => head.appendChild(el("th", h)));
  t.appendChild(el("thead")).appendChild(head);
  const body = t.appendChild(el("tbody"));
  rows.forEach((r) => body.appendChild(row(r, numeric)));
  return t;
}

function render(s) {
  document.getElementById("summary").textContent =
    `${s.networks.length} network(s), dataplane ${s.dataplane_loaded ? "loaded" : "not loaded"}`;
  const box = document.getElementById("networks");
  box.replaceChildren();
  for (const n of s.networks) {
    const sec = el("section");
    sec.className = "network";
    sec.dataset.network = n.name;
    const h = el("h2", `${n.name} `);
    h.appendChild(el("span", n.up ? "up" : "down", n.up ? "up" : "down"));
    sec.appendChild(h);
    sec.appendChild(el("p", `mode ${n.mode}, bridge ${n.bridge}, uplink ${n.uplink || "none"}, subnet ${n.subnet}`));
    sec.appendChild(table(
      ["interface", "role", "MAC", "IPv4", "packets", "bytes", "drops"],
      n.interfaces.map((i) => [i.name, i.role, i.mac || "", i.ipv4 || "", i.packets, i.bytes, i.drops]),
      [4, 5, 6]));
    sec.appendChild(el("h3", "Top drop reasons"));
    if (n.top_drops.length === 0) sec.appendChild(el("p", "no drops"));
    else sec.appendChild(table(["reason", "interface", "packets"],
      n.top_drops.map((d) => [d.reason, d.interface, d.packets]), [2]));
    box.appendChild(sec);
  }
  document.getElementById("flows-summary").textContent =
    `${s.flows_total} flow(s)` + (s.flows_total > s.flows.length ? `, first ${s.flows.length} shown` : "");
  const body = document.querySelector("#flows tbody");
  body.replaceChildren(...s.flows.map((f) =>
    row([f.network, f.proto, f.guest, f.remote, f.nat, f.state, `${f.idle_s} s`], [6])));
  document.querySelector("#forwards tbody").replaceChildren(...s.forwards.map((f) =>
    row([f.network, f.dev, f.proto, f.address, f.ranges, f.guest || "", f.opened, f.pending || ""], [6])));
  document.body.dataset.loaded = "yes";
}

async function refresh() {
  try {
    const r = await fetch("/api/status", { cache: "no-store" });
    if (!r.ok) throw new Error(`${r.status} ${await r.text()}`);
    render(await r.json());
  } catch (e) {
    document.getElementById("summary").textContent = `error: ${e.message}`;
  }
}

refresh();
setInterval(refresh, 5000);
