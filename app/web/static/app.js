// The onebox dashboard: a hash router, a sidebar driven by GET /v1/features, and one function per page.
// Every node is built with h() from text, never from HTML strings, so API data cannot inject markup.

import { api, ApiError, query, session, setUnauthorizedHandler, streamEvents } from "./api.js";
import { lineChart, sparkline } from "./charts.js";
import { costFacts, costsPage } from "./costs.js";
import { qaPage, qaRunPage } from "./qa.js";

const STATUSES = ["pending", "provisioning", "configuring", "running", "stopping", "stopped", "starting", "rebooting",
  "failed", "deleting", "deleted"];
// Day 2: where an instance goes after it first ran, and what each action needs (app/lifecycle/states.py).
const DAY2 = { stopping: "Stopping", stopped: "Stopped", starting: "Starting", rebooting: "Rebooting" };
const ACTIONS = [
  { action: "stop", label: "Stop", needs: "running", hint: "Stop the VM; its disk is kept" },
  { action: "start", label: "Start", needs: "stopped", hint: "Start it again (same disk)" },
  { action: "reboot", label: "Reboot", needs: "running", hint: "Reboot the VM" },
];
const PAGE_SIZE = 20;
const root = document.getElementById("app");
let features = { features: {}, dev_login: false };
let cleanups = []; // timers and streams of the current page, stopped when the page changes

// --- small helpers ---------------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "value") node.value = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// replaceChildren() would print null as "null": drop the absent children first, as h() does.
function fill(node, ...children) {
  node.replaceChildren(...children.flat(Infinity).filter((c) => c !== undefined && c !== null && c !== false));
  return node;
}

function toast(message, kind = "info") {
  const node = h("div", { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status" }, message);
  document.getElementById("toasts").append(node);
  setTimeout(() => node.remove(), 4000);
}

function every(ms, fn) {
  const timer = setInterval(fn, ms);
  cleanups.push(() => clearInterval(timer));
}

function ago(iso) {
  if (!iso) return "—";
  const seconds = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  if (seconds < 60) return `${Math.max(0, seconds)} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return new Date(iso).toLocaleDateString();
}

function timeCell(iso) {
  return h("time", { datetime: iso, title: new Date(iso).toLocaleString() }, ago(iso));
}

function badge(status) {
  return h("span", { class: `badge badge-${status}`, dataset: { status } }, status);
}

function healthBadge(health) {
  const state = health?.state || "unknown";
  return h("span", { class: `health health-${state}`, title: health?.last_seen_at ? `last report ${ago(health.last_seen_at)}` : "no report yet" }, state);
}

function copyButton(text, label = "Copy") {
  return h("button", {
    class: "btn btn-ghost btn-xs copy", type: "button", title: `Copy ${text}`, "aria-label": `${label}: ${text}`,
    onclick: async (e) => {
      e.stopPropagation();
      try {
        await navigator.clipboard.writeText(text);
        toast(`Copied ${text}`);
      } catch {
        const range = document.createRange();
        range.selectNodeContents(e.currentTarget.previousSibling || e.currentTarget);
        getSelection().removeAllRanges();
        getSelection().addRange(range);
        toast("Selected: press Ctrl+C to copy");
      }
    },
  }, label);
}

function pct(v) { return v === null || v === undefined ? "—" : `${v.toFixed(1)}%`; }

function errorBanner(error) {
  const detail = error instanceof ApiError ? (error.problem.detail || error.problem.title) : String(error.message || error);
  return h("div", { class: "banner banner-error", role: "alert" }, detail);
}

function metricPoints(items, pick) {
  return items.map((p) => ({ t: new Date(p.at).getTime(), v: pick(p) }));
}

// --- routing and layout ----------------------------------------------------------------------------

function parseRoute() {
  const [path, qs] = location.hash.replace(/^#/, "").split("?");
  return { parts: (path || "/").split("/").filter(Boolean), params: new URLSearchParams(qs || "") };
}

function navigate(hash) { location.hash = hash; }

function layout(active, content) {
  const f = features.features;
  const claims = session.claims;
  const link = (key, href, label, icon) =>
    h("a", { href, class: `nav-item${active === key ? " active" : ""}`, dataset: { nav: key } }, h("span", { class: "nav-icon", "aria-hidden": "true" }, icon), label);
  const nav = h("nav", { class: "sidebar", "aria-label": "Main" },
    h("a", { class: "brand", href: "#/" }, h("span", { class: "brand-mark", "aria-hidden": "true" }), "onebox"),
    h("div", { class: "nav" },
      f.instances_ui ? link("instances", "#/instances", "Instances", "▣") : null,
      f.instances_ui ? link("new", "#/instances/new", "New instance", "+") : null,
      f.snapshots ? link("snapshots", "#/snapshots", "Snapshots", "◷") : null,
      link("costs", "#/costs", "Costs", "$"),
      link("qa", "#/qa", "QA runs", "✓"),
      h("a", { href: "/docs", class: "nav-item", target: "_blank", rel: "noopener" }, h("span", { class: "nav-icon" }, "⌘"), "API docs")),
    h("div", { class: "whoami" },
      h("div", { class: "muted small" }, "Signed in as"),
      h("div", { class: "user", dataset: { testid: "user" } }, claims?.sub || "?"),
      h("button", { class: "btn btn-ghost btn-sm", type: "button", onclick: signOut }, "Sign out")));
  root.className = "shell";
  fill(root, nav, h("main", { class: "content" }, content));
}

function signOut() {
  session.token = null;
  navigate("#/signin");
}

async function render() {
  for (const stop of cleanups) stop();
  cleanups = [];
  const { parts, params } = parseRoute();
  if (!session.token && parts[0] !== "signin") return navigate("#/signin");
  const f = features.features;
  try {
    if (parts[0] === "signin") return signInPage();
    if (parts[0] === "instances" && parts[1] === "new" && f.instances_ui) return createPage(params);
    if (parts[0] === "instances" && parts[1] && f.instances_ui) return detailPage(parts[1]);
    if (parts[0] === "snapshots" && f.snapshots) return snapshotsPage();
    if (parts[0] === "costs") return costsPage(pageKit());
    if (parts[0] === "qa") return parts[1] ? qaRunPage(pageKit(), parts[1]) : qaPage(pageKit(), params);
    if ((parts[0] === "instances" || parts.length === 0) && f.instances_ui) return listPage(params);
    if (parts.length === 0 && f.snapshots) return navigate("#/snapshots");
    layout(null, h("section", { class: "page" }, h("h1", {}, "Nothing here"),
      h("p", { class: "muted" }, "This page does not exist, or its feature is turned off on this server.")));
  } catch (error) {
    layout(null, errorBanner(error));
  }
}

// What pages kept in modules of their own (qa.js, costs.js) build with: the same helpers as the pages here.
function pageKit() {
  return { h, fill, layout, badge, timeCell, toast, every, errorBanner, navigate, field, showProblem, cleanups };
}

// --- sign-in ---------------------------------------------------------------------------------------

function signInPage() {
  const tokenInput = h("textarea", { id: "token", name: "token", rows: 4, placeholder: "eyJhbGciOi…", autocomplete: "off", spellcheck: "false", required: true });
  const error = h("div", { class: "field-error", id: "token-error", role: "alert" });
  async function tryToken(token) {
    session.token = token.trim();
    try {
      await api("/v1/snapshots?limit=1"); // any authenticated read proves the token
      navigate("#/");
    } catch (e) {
      session.token = null;
      error.textContent = e.status === 401 ? "This token is invalid or expired." : `Could not sign in: ${e.message}`;
    }
  }
  const devButton = features.dev_login
    ? h("button", {
        class: "btn btn-secondary", type: "button", id: "dev-login",
        onclick: async () => {
          try {
            const minted = await api("/v1/dev/token", { method: "POST", body: { user: devUser.value || "dev" } });
            await tryToken(minted.token);
          } catch (e) { error.textContent = e.message; }
        },
      }, "Development sign-in")
    : null;
  const devUser = h("input", { id: "dev-user", value: "dev", "aria-label": "Local user name", class: "input-sm" });
  root.className = "signin";
  fill(root, h("section", { class: "card signin-card" },
    h("div", { class: "brand brand-lg" }, h("span", { class: "brand-mark" }), "onebox"),
    h("p", { class: "muted" }, "One VM on AWS, GCP, Azure or this machine."),
    h("form", { onsubmit: (e) => { e.preventDefault(); tryToken(tokenInput.value); } },
      h("label", { for: "token" }, "API token"),
      tokenInput,
      h("p", { class: "hint" }, "Mint one with ", h("code", {}, "onebox token --user NAME"), ". It is kept in this tab only (session storage)."),
      error,
      h("button", { class: "btn btn-primary", type: "submit", id: "sign-in" }, "Sign in")),
    devButton ? h("div", { class: "dev-login" }, h("div", { class: "divider" }, "or, on this development server"),
      h("div", { class: "row" }, devUser, devButton)) : null));
}

// --- instances list --------------------------------------------------------------------------------

async function listPage(params) {
  const status = params.get("status") || "";
  const provider = params.get("provider") || "";
  const cursors = (params.get("after") || "").split(",").filter(Boolean); // the stack of cursors behind us
  const filters = h("div", { class: "filters" },
    h("label", {}, "Status ", h("select", { id: "filter-status", onchange: (e) => go({ status: e.target.value }) },
      h("option", { value: "" }, "all live"), STATUSES.map((s) => h("option", { value: s, selected: s === status }, s)))),
    h("label", {}, "Provider ", h("select", { id: "filter-provider", onchange: (e) => go({ provider: e.target.value }) },
      h("option", { value: "" }, "all"), ["local", "qemu", "aws", "gcp", "azure"].map((p) => h("option", { value: p, selected: p === provider }, p)))));
  function go(change, after = []) {
    const next = { status, provider, ...change, after: after.join(",") };
    navigate(`#/instances${query(next)}`);
  }
  const tbody = h("tbody");
  const pager = h("div", { class: "pager" });
  const banner = h("div");
  layout("instances", h("section", { class: "page" },
    h("header", { class: "page-head" }, h("h1", {}, "Instances"),
      h("a", { class: "btn btn-primary", href: "#/instances/new", id: "new-instance" }, "New instance")),
    filters, banner,
    h("div", { class: "table-wrap" }, h("table", { class: "table", id: "instances" },
      h("thead", {}, h("tr", {}, ["Name", "Provider", "Region", "Status", "Public IP", "Health", "CPU", "Created"].map((c) => h("th", {}, c)))),
      tbody)),
    pager));

  const sparks = new Map(); // instance id → points, refreshed less often than the list
  async function loadSparks(items) {
    const since = new Date(Date.now() - 3600_000).toISOString().replace(/\.\d+Z$/, "Z");
    await Promise.all(items.filter((i) => i.status === "running").map(async (i) => {
      try {
        const series = await api(`/v1/instances/${i.id}/metrics${query({ since, limit: 120 })}`);
        sparks.set(i.id, metricPoints(series.items, (p) => p.cpu_percent));
      } catch { /* the row still shows the latest value */ }
    }));
  }
  let lastSparkLoad = 0;
  async function refresh() {
    let data;
    try {
      data = await api(`/v1/instances${query({ status, provider, limit: PAGE_SIZE, cursor: cursors[cursors.length - 1] })}`);
      fill(banner);
    } catch (e) { fill(banner, errorBanner(e)); return; }
    if (Date.now() - lastSparkLoad > 30_000) { lastSparkLoad = Date.now(); await loadSparks(data.items); }
    fill(tbody, ...(data.items.length ? data.items.map((i) => h("tr", { dataset: { id: i.id, status: i.status }, class: "clickable", onclick: () => navigate(`#/instances/${i.id}`) },
      h("td", {}, h("a", { href: `#/instances/${i.id}`, class: "strong" }, i.name), h("div", { class: "muted mono small" }, i.id)),
      h("td", {}, h("span", { class: `provider provider-${i.provider}` }, i.provider)),
      h("td", {}, i.region, i.zone && i.zone !== i.region ? h("span", { class: "muted" }, ` / ${i.zone}`) : null),
      h("td", {}, badge(i.status)),
      h("td", { class: "ip" }, i.public_ip ? [h("span", { class: "mono" }, i.public_ip), copyButton(i.public_ip)] : h("span", { class: "muted" }, "—")),
      h("td", {}, healthBadge(i.health)),
      h("td", { class: "cpu" }, sparkline(sparks.get(i.id) || []), h("span", { class: "cpu-value mono", dataset: { testid: "cpu" } }, pct(i.health?.cpu_percent))),
      h("td", {}, timeCell(i.created_at))))
      : [h("tr", {}, h("td", { colspan: 8, class: "empty" }, status || provider ? "No instance matches these filters." : "No instances yet. Create one to get started."))]));
    fill(pager,
      h("button", { class: "btn btn-ghost", type: "button", disabled: !cursors.length, id: "prev-page", onclick: () => go({}, cursors.slice(0, -1)) }, "← Newer"),
      h("span", { class: "muted small" }, `Page ${cursors.length + 1}`),
      h("button", { class: "btn btn-ghost", type: "button", disabled: !data.next_cursor, id: "next-page", onclick: () => go({}, [...cursors, data.next_cursor]) }, "Older →"));
  }
  await refresh();
  every(4000, refresh);
}

// --- create form -----------------------------------------------------------------------------------

function field(name, label, input, hint) {
  return h("div", { class: "field", dataset: { field: name } },
    h("label", { for: input.id }, label), input,
    hint ? h("div", { class: "hint" }, hint) : null,
    h("div", { class: "field-error", id: `${input.id}-error`, role: "alert" }));
}

function showProblem(form, error, banner) {
  form.querySelectorAll(".field").forEach((f) => { f.classList.remove("invalid"); f.querySelector(".field-error").textContent = ""; });
  fill(banner);
  if (!error) return;
  const unplaced = [];
  const errors = error instanceof ApiError ? error.errors : [];
  for (const e of errors) {
    // "labels.team" → "labels"; "buckets.0.endpoint" → "buckets"; the first field a message names gets it.
    const name = e.field.split(".")[0];
    const target = form.querySelector(`.field[data-field="${CSS.escape(e.field)}"]`) || form.querySelector(`.field[data-field="${CSS.escape(name)}"]`);
    if (target) {
      target.classList.add("invalid");
      const slot = target.querySelector(".field-error");
      slot.textContent = slot.textContent ? `${slot.textContent}; ${e.message}` : e.message;
    } else unplaced.push(`${e.field}: ${e.message}`);
  }
  if (!errors.length || unplaced.length) fill(banner, h("div", { class: "banner banner-error", role: "alert" }, unplaced.length ? unplaced.join("; ") : error.message));
  form.querySelector(".field.invalid input, .field.invalid select, .field.invalid textarea")?.focus();
}

function parseLabels(text) {
  const labels = {};
  for (const line of text.split(/\n|,/).map((l) => l.trim()).filter(Boolean)) {
    const at = line.indexOf("=");
    if (at < 0) labels[line] = "";
    else labels[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return labels;
}

function machineLabel(m) {
  const parts = [`${m.vcpus} vCPU`, `${m.memory_gb} GB`];
  if (m.gpu_count) parts.push(`${m.gpu_count}× ${m.gpu_type || "GPU"}`);
  if (m.hourly_usd !== null && m.hourly_usd !== undefined) parts.push(m.hourly_usd === 0 ? "free" : `~$${m.hourly_usd}/h`);
  return `${m.name} — ${parts.join(" · ")}`;
}

async function createPage(params) {
  const [catalog, snapshots] = await Promise.all([
    api("/v1/catalog"),
    features.features.snapshots ? api("/v1/snapshots?status=available&limit=100").catch(() => ({ items: [] })) : { items: [] },
  ]);
  const providers = catalog.providers;
  const usable = providers.filter((p) => p.available);
  const fromSnapshot = snapshots.items.find((s) => s.id === params.get("snapshot"));
  const el = {
    name: h("input", { id: "f-name", name: "name", placeholder: "train-01", autocomplete: "off", required: true }),
    provider: h("select", { id: "f-provider", name: "provider" }, usable.map((p) => h("option", { value: p.name }, p.name))),
    region: h("select", { id: "f-region", name: "region" }),
    zone: h("select", { id: "f-zone", name: "zone" }),
    machine_type: h("select", { id: "f-machine-type", name: "machine_type" }),
    source: h("select", { id: "f-source", name: "source" }),
    disk_gb: h("input", { id: "f-disk", name: "disk_gb", type: "number", min: 8, max: 4096, placeholder: "20" }),
    ssh_user: h("input", { id: "f-ssh-user", name: "ssh_user", value: session.claims?.sub?.replace(/[^a-z0-9_-]/g, "").slice(0, 32) || "", required: true, autocomplete: "off" }),
    ssh_public_key: h("textarea", { id: "f-ssh-key", name: "ssh_public_key", rows: 3, placeholder: "ssh-ed25519 AAAA… you@laptop", required: true, spellcheck: "false" }),
    bootstrap_script: h("textarea", { id: "f-bootstrap", name: "bootstrap_script", rows: 4, placeholder: "#!/bin/sh\necho hello > ~/hello.txt", spellcheck: "false" }),
    labels: h("textarea", { id: "f-labels", name: "labels", rows: 2, placeholder: "team=research\nproject=llm", spellcheck: "false" }),
  };
  const unavailable = providers.filter((p) => !p.available);
  const summary = h("div", { class: "summary", id: "machine-summary" });

  function current() { return usable.find((p) => p.name === el.provider.value); }
  function fillRegions() {
    const p = current();
    fill(el.region, ...(p?.regions || []).map((r) => h("option", { value: r.name }, r.name)));
    fillRegion();
  }
  function fillRegion() {
    const p = current();
    const region = p?.regions.find((r) => r.name === el.region.value);
    fill(el.zone, h("option", { value: "" }, "any zone"), ...(region?.zones || []).filter((z) => z !== region.name).map((z) => h("option", { value: z }, z)));
    fill(el.machine_type, ...(region?.machine_types || []).map((m) => h("option", { value: m.name }, machineLabel(m))));
    const snaps = snapshots.items.filter((s) => s.provider === p?.name && s.region === region?.name);
    fill(el.source,
      h("optgroup", { label: "Images" }, (p?.images || []).map((i) => h("option", { value: `image:${i}` }, i))),
      snaps.length ? h("optgroup", { label: "Your snapshots" }, snaps.map((s) => h("option", { value: `snapshot:${s.id}` }, `${s.name} (${s.id})`))) : null);
    if (fromSnapshot && snaps.includes(fromSnapshot)) el.source.value = `snapshot:${fromSnapshot.id}`;
    describe();
  }
  function describe() {
    const region = current()?.regions.find((r) => r.name === el.region.value);
    const m = region?.machine_types.find((t) => t.name === el.machine_type.value);
    fill(summary, m ? h("div", { class: "chips" },
      h("span", { class: "chip" }, `${m.vcpus} vCPU`), h("span", { class: "chip" }, `${m.memory_gb} GB memory`),
      m.gpu_count ? h("span", { class: "chip chip-gpu" }, `${m.gpu_count}× ${m.gpu_type || "GPU"}`) : null,
      h("span", { class: "chip" }, m.hourly_usd === null || m.hourly_usd === undefined ? "price unknown" : m.hourly_usd === 0 ? "free (this machine)" : `~$${m.hourly_usd}/hour`)) : "");
  }
  el.provider.addEventListener("change", fillRegions);
  el.region.addEventListener("change", fillRegion);
  el.machine_type.addEventListener("change", describe);
  if (fromSnapshot) { el.provider.value = fromSnapshot.provider; }
  fillRegions();
  if (fromSnapshot) { el.region.value = fromSnapshot.region; fillRegion(); }

  const banner = h("div", { id: "form-banner" });
  const submit = h("button", { class: "btn btn-primary", type: "submit", id: "create" }, "Create instance");
  let idempotencyKey = null, lastBody = null;
  const form = h("form", { class: "card form", id: "create-form", novalidate: true, onsubmit: async (e) => {
    e.preventDefault();
    const [kind, ref] = el.source.value.split(/:(.*)/s);
    const body = {
      name: el.name.value.trim(), provider: el.provider.value, region: el.region.value, zone: el.zone.value || undefined,
      machine_type: el.machine_type.value, ssh_user: el.ssh_user.value.trim(), ssh_public_key: el.ssh_public_key.value.trim(),
      bootstrap_script: el.bootstrap_script.value || undefined, labels: parseLabels(el.labels.value),
      disk_gb: el.disk_gb.value ? Number(el.disk_gb.value) : undefined,
      ...(kind === "snapshot" ? { snapshot_id: ref } : ref ? { image: ref } : {}),
    };
    // Same body again (a retry after a network error) → same key → never two instances.
    const serialized = JSON.stringify(body);
    if (serialized !== lastBody) { lastBody = serialized; idempotencyKey = crypto.randomUUID(); }
    submit.disabled = true;
    submit.textContent = "Creating…";
    try {
      const created = await api("/v1/instances", { method: "POST", body, headers: { "Idempotency-Key": idempotencyKey } });
      toast(`Instance ${created.name} queued`);
      navigate(`#/instances/${created.id}`);
    } catch (error) {
      showProblem(form, error, banner);
    } finally {
      submit.disabled = false;
      submit.textContent = "Create instance";
    }
  } },
    banner,
    h("fieldset", {}, h("legend", {}, "Where"),
      h("div", { class: "grid-2" },
        field("name", "Name", el.name, "lowercase letters, digits and -, starting with a letter"),
        field("provider", "Provider", el.provider),
        field("region", "Region", el.region),
        field("zone", "Zone", el.zone),
        field("machine_type", "Machine type", el.machine_type),
        field(fromSnapshot ? "snapshot_id" : "image", "Image or snapshot", el.source),
        field("disk_gb", "Disk (GB)", el.disk_gb, "8–4096; default 20")),
      summary),
    h("fieldset", {}, h("legend", {}, "Access"),
      h("div", { class: "grid-2" },
        field("ssh_user", "SSH user", el.ssh_user, "created on the VM; not root"),
        field("ssh_public_key", "SSH public key", el.ssh_public_key, "one OpenSSH line: ed25519, ecdsa or RSA ≥ 2048 bits"))),
    h("fieldset", {}, h("legend", {}, "Setup (optional)"),
      h("div", { class: "grid-2" },
        field("bootstrap_script", "Bootstrap script", el.bootstrap_script, "run once after configuration"),
        field("labels", "Labels", el.labels, "key=value, one per line"))),
    h("div", { class: "actions" }, h("a", { class: "btn btn-ghost", href: "#/instances" }, "Cancel"), submit));
  el.source.addEventListener("change", () => {
    el.source.closest(".field").dataset.field = el.source.value.startsWith("snapshot:") ? "snapshot_id" : "image";
  });
  layout("new", h("section", { class: "page" },
    h("header", { class: "page-head" }, h("h1", {}, fromSnapshot ? `New instance from ${fromSnapshot.name}` : "New instance")),
    unavailable.length ? h("div", { class: "banner banner-warn", role: "status" },
      unavailable.map((p) => `${p.name} is unavailable: ${p.error?.message || "unknown error"}`).join(" · ")) : null,
    usable.length ? form : h("p", {}, "No provider is available right now.")));
  el.name.focus();
}

// --- instance detail -------------------------------------------------------------------------------

const STEPS = [
  { key: "pending", label: "Queued" },
  { key: "create", label: "Create VM" },
  { key: "wait_running", label: "Boot" },
  { key: "configure", label: "Configure" },
  { key: "running", label: "Running" },
];

function stepStates(instance, events) {
  const done = new Set(), started = new Set(), failedSteps = new Set();
  for (const e of events) {
    if (e.type === "step.succeeded" || e.type === "step.skipped") done.add(e.step);
    if (e.type === "step.started") started.add(e.step);
    if (e.type === "step.failed") failedSteps.add(e.step);
  }
  const s = instance.status;
  // An error of a later stop or start does not undo having run: only one of provisioning's steps does.
  const neverRan = instance.error && STEPS.some((step) => step.key === instance.error.step);
  const reached = ["running", "deleting", "deleted", ...Object.keys(DAY2)].includes(s) && !neverRan;
  return STEPS.map((step, index) => {
    if (step.key === "pending") return s === "pending" ? "current" : "done";
    if (step.key === "running") return reached ? "done" : "todo";
    if (done.has(step.key) || reached) return "done";
    if (s === "failed" && (failedSteps.has(step.key) || instance.error?.step === step.key)) return "failed";
    if (started.has(step.key) && ["provisioning", "configuring"].includes(s)) return "current";
    const previous = STEPS[index - 1];
    if (["provisioning", "configuring"].includes(s) && (previous.key === "pending" || done.has(previous.key)) && !started.has(step.key)) return "next";
    return "todo";
  });
}

function stepper(instance, events) {
  const states = stepStates(instance, events);
  const s = instance.status;
  const extra = ["deleting", "deleted", "failed"].includes(s) ? h("li", { class: `step step-${s === "deleting" ? "current" : s === "failed" ? "failed" : "done"}` },
    h("span", { class: "step-dot" }), h("span", { class: "step-label" }, s === "failed" ? "Failed" : s === "deleting" ? "Deleting" : "Deleted"))
    : DAY2[s] ? h("li", { class: `step step-${s === "stopped" ? "done" : "current"}`, dataset: { step: s } },
      h("span", { class: "step-dot" }, s === "stopped" ? "■" : "…"), h("span", { class: "step-label" }, DAY2[s])) : null;
  return h("ol", { class: "stepper", id: "stepper", "aria-label": "Progress" },
    STEPS.map((step, i) => h("li", { class: `step step-${states[i]}`, dataset: { step: step.key, state: states[i] } },
      h("span", { class: "step-dot" }, states[i] === "done" ? "✓" : states[i] === "failed" ? "!" : String(i + 1)),
      h("span", { class: "step-label" }, step.label))),
    extra);
}

function sshCommand(i) {
  if (!i.public_ip) return null;
  const port = i.ssh_port && i.ssh_port !== 22 ? `-p ${i.ssh_port} ` : "";
  const user = i.provider === "local" ? "$(whoami)" : i.ssh_user; // a local instance logs in the account running onebox
  return `ssh ${port}${user}@${i.public_ip}`;
}

// The instance's lifecycle rules: what will happen to it (its schedule, the policy included) and a form for its
// own settings, sent as a JSON merge patch (an empty field clears the value: the policy's then applies).
function lifecycleCard(id, get, onSaved) {
  const when = (iso) => iso ? h("time", { datetime: iso, title: new Date(iso).toLocaleString() }, new Date(iso).toLocaleString()) : null;
  const fromPolicy = (s, key) => s.from_policy?.includes(key) ? h("span", { class: "chip chip-sm chip-policy", title: "set by your policy" }, "policy") : null;
  const choice = (name) => h("select", { id: `l-${name}`, name }, h("option", { value: "" }, "default (stop)"),
    h("option", { value: "stop" }, "stop"), h("option", { value: "delete" }, "delete"));
  const el = {
    ttl_hours: h("input", { id: "l-ttl", name: "ttl_hours", type: "number", min: 0.0167, step: "any", placeholder: "none" }),
    on_expiry: choice("on_expiry"),
    idle_minutes: h("input", { id: "l-idle", name: "idle_minutes", type: "number", min: 1, step: 1, placeholder: "off" }),
    on_idle: choice("on_idle"),
    delete_after_stopped_days: h("input", { id: "l-stopped-days", name: "delete_after_stopped_days", type: "number", min: 1, step: 1, placeholder: "never" }),
  };
  const summary = h("dl", { class: "facts", id: "schedule" });
  const banner = h("div");
  const save = h("button", { class: "btn btn-secondary", type: "submit", id: "lifecycle-save" }, "Save");
  const form = h("form", { class: "lifecycle-form", id: "lifecycle-form", novalidate: true, onsubmit: async (e) => {
    e.preventDefault();
    const number = (input) => input.value === "" ? null : Number(input.value);
    const hours = number(el.ttl_hours);
    const patch = {
      ttl_seconds: hours === null ? null : Math.round(hours * 3600), on_expiry: el.on_expiry.value || null,
      idle_minutes: number(el.idle_minutes), on_idle: el.on_idle.value || null,
      delete_after_stopped_days: number(el.delete_after_stopped_days),
    };
    const before = get();
    // A merge patch of what changed only: an unchanged TTL keeps counting from when it was set.
    for (const key of Object.keys(patch)) if (patch[key] === (before[key] ?? null)) delete patch[key];
    save.disabled = true;
    try {
      const updated = await api(`/v1/instances/${encodeURIComponent(id)}`, { method: "PATCH", body: patch });
      showProblem(form, null, banner);
      toast("Lifecycle settings saved");
      onSaved(updated);
      fillInputs(updated);
    } catch (error) { showProblem(form, error, banner); } finally { save.disabled = false; }
  } },
    banner,
    h("div", { class: "grid-2" },
      field("ttl_seconds", "Time to live (hours)", el.ttl_hours, "counted from now, and again from each start"),
      field("on_expiry", "Then", el.on_expiry),
      field("idle_minutes", "Idle autostop (minutes)", el.idle_minutes, "idle on every signal: CPU, GPUs, network, disk, SSH"),
      field("on_idle", "Then", el.on_idle),
      field("delete_after_stopped_days", "Delete when stopped for (days)", el.delete_after_stopped_days)),
    h("div", { class: "actions" }, save));
  function fillInputs(i) {
    el.ttl_hours.value = i.ttl_seconds ? +(i.ttl_seconds / 3600).toFixed(4) : "";
    el.on_expiry.value = i.on_expiry || "";
    el.idle_minutes.value = i.idle_minutes ?? "";
    el.on_idle.value = i.on_idle || "";
    el.delete_after_stopped_days.value = i.delete_after_stopped_days ?? "";
  }
  let filled = false;
  function update(i) {
    if (!filled) { fillInputs(i); filled = true; }
    const s = i.schedule;
    const last = i.last_request;
    fill(summary,
      !s ? [h("dt", {}, "Rules"), h("dd", { class: "muted" }, "none (deleted)")] : [
        h("dt", {}, "Time to live"), h("dd", { id: "schedule-ttl" }, s.expires_at ? [`${s.on_expiry === "delete" ? "deleted" : "stopped"} at `, when(s.expires_at), " ", fromPolicy(s, "expires_at")] : h("span", { class: "muted" }, i.status === "stopped" ? "counts again from the next start" : "none")),
        h("dt", {}, "Idle autostop"), h("dd", { id: "schedule-idle" }, s.idle_minutes ? [`${s.on_idle === "delete" ? "delete" : "stop"} after ${s.idle_minutes} min idle `, fromPolicy(s, "idle_minutes")] : h("span", { class: "muted" }, "off")),
        h("dt", {}, "When stopped"), h("dd", { id: "schedule-stopped" }, s.delete_after_stopped_days ? (s.delete_at ? ["deleted at ", when(s.delete_at), " ", fromPolicy(s, "delete_after_stopped_days")] : [`deleted after ${s.delete_after_stopped_days} days`, " ", fromPolicy(s, "delete_after_stopped_days")]) : h("span", { class: "muted" }, "kept")),
      ],
      last ? [h("dt", {}, `Last ${last.action}`), h("dd", { id: "last-request" }, `by ${last.requested_by}${last.rule ? ` (rule ${last.rule})` : ""}`, last.reason ? h("div", { class: "muted small" }, last.reason) : null)] : null);
  }
  const node = h("div", { class: "card", id: "lifecycle-card" }, h("h2", {}, "Lifecycle"), summary, form);
  return { node, update };
}

async function detailPage(id) {
  let instance = await api(`/v1/instances/${encodeURIComponent(id)}`);
  const events = [];
  const seen = new Set();
  const f = features.features;
  const head = h("header", { class: "page-head" });
  const stepsBox = h("div", { class: "card" });
  const info = h("div", { class: "card" });
  const timeline = h("ol", { class: "timeline", id: "timeline" });
  const liveState = h("span", { class: "live", id: "live-state" }, "connecting…");
  const charts = h("div", { class: "charts", id: "charts" });
  const snapsBox = h("div", { class: "card", id: "snapshots-card" });
  const dialog = h("dialog", { class: "dialog", id: "confirm-delete" });
  const lifecycle = lifecycleCard(id, () => instance, (updated) => { instance = updated; renderHead(); });

  function renderHead() {
    const i = instance;
    const deletable = !["deleting", "deleted"].includes(i.status);
    fill(head,
      h("div", {}, h("a", { href: "#/instances", class: "muted small" }, "← Instances"),
        h("h1", {}, i.name, " ", badge(i.status)), h("div", { class: "muted mono small" }, i.id)),
      h("div", { class: "actions" },
        ACTIONS.map((a) => h("button", {
          class: "btn btn-ghost", type: "button", id: `${a.action}-button`, dataset: { action: a.action },
          disabled: i.status !== a.needs, title: i.status === a.needs ? a.hint : `${a.label} needs a ${a.needs} instance`,
          onclick: () => act(a.action),
        }, a.label)),
        f.snapshots ? h("button", { class: "btn btn-secondary", type: "button", id: "snapshot-button", disabled: i.status !== "running", title: i.status === "running" ? "Snapshot the root disk" : "only a running instance can be snapshotted", onclick: takeSnapshot }, "Snapshot") : null,
        h("button", { class: "btn btn-danger", type: "button", id: "delete-button", disabled: !deletable, onclick: () => dialog.showModal() }, "Delete")));
    lifecycle.update(i);
    fill(stepsBox, h("h2", {}, "Progress"), stepper(i, events),
      i.error ? h("div", { class: "banner banner-error", role: "alert" }, `${i.error.step ? `[${i.error.step}] ` : ""}${i.error.code}: ${i.error.message}`) : null);
    const ssh = sshCommand(i);
    fill(info, h("h2", {}, "Details"), h("dl", { class: "facts" },
      h("dt", {}, "Provider"), h("dd", {}, `${i.provider} · ${i.region}${i.zone && i.zone !== i.region ? ` / ${i.zone}` : ""}`),
      h("dt", {}, "Machine"), h("dd", {}, `${i.machine_type} · ${i.disk_gb} GB disk`),
      h("dt", {}, "Image"), h("dd", {}, i.snapshot_id ? `snapshot ${i.snapshot_id}` : (i.image || "default")),
      h("dt", {}, "Public IP"), h("dd", { id: "public-ip" }, i.public_ip ? [h("span", { class: "mono" }, i.public_ip), copyButton(i.public_ip)] : h("span", { class: "muted" }, "not yet")),
      h("dt", {}, "SSH"), h("dd", { id: "ssh-command" }, ssh ? [h("code", {}, ssh), copyButton(ssh)] : h("span", { class: "muted" }, "once it runs")),
      h("dt", {}, "Health"), h("dd", {}, healthBadge(i.health), " CPU ", h("span", { class: "mono", id: "cpu-now" }, pct(i.health?.cpu_percent)), " · memory ", h("span", { class: "mono" }, pct(i.health?.memory_percent)), " · disk ", h("span", { class: "mono" }, pct(i.health?.disk_percent))),
      costFacts(h, i.cost),
      h("dt", {}, "Created"), h("dd", {}, timeCell(i.created_at)),
      Object.keys(i.labels || {}).length ? [h("dt", {}, "Labels"), h("dd", {}, Object.entries(i.labels).map(([k, v]) => h("span", { class: "chip" }, v ? `${k}=${v}` : k)))] : null));
  }

  function addEvent(e) {
    const key = `${e.at}|${e.type}|${e.message}`;
    if (seen.has(key)) return;
    seen.add(key);
    events.push(e);
    const kind = e.type.includes("fail") || e.type.includes("error") ? "bad" : e.type.includes("succeeded") || e.type === "instance.running" ? "good" : "";
    timeline.append(h("li", { class: `tl-item ${kind}`, dataset: { type: e.type } },
      h("time", { datetime: e.at, title: new Date(e.at).toLocaleString() }, new Date(e.at).toLocaleTimeString()),
      h("span", { class: "tl-type" }, e.type), e.step ? h("span", { class: "chip chip-sm" }, e.step) : null,
      h("div", { class: "tl-message" }, e.message)));
    timeline.scrollTop = timeline.scrollHeight;
    if (e.type.startsWith("snapshot") || e.step === "snapshot") loadSnapshots();
  }

  async function refreshInstance() {
    const seenAt = instance.health?.last_seen_at;
    try { instance = await api(`/v1/instances/${encodeURIComponent(id)}`); renderHead(); } catch (e) { if (e.status === 404) navigate("#/instances"); return; }
    if (instance.health?.last_seen_at !== seenAt) loadCharts(); // a new sample: redraw the last hour
  }

  async function loadCharts() {
    const until = Date.now(), hourAgo = until - 3600_000;
    let items = [];
    try {
      items = (await api(`/v1/instances/${encodeURIComponent(id)}/metrics${query({ since: new Date(hourAgo).toISOString().replace(/\.\d+Z$/, "Z"), limit: 500 })}`)).items;
    } catch { return; }
    // The axis spans the last hour; while the samples cover less, it starts at the first one and spans at
    // least two minutes, so a new instance's chart fills from the left instead of being a dot at the edge.
    const first = items.length ? new Date(items[0].at).getTime() : hourAgo;
    const from = Math.max(hourAgo, first - 5000);
    const to = Math.max(until, from + 120_000);
    const card = (title, series, testid) => h("div", { class: "card chart-card", dataset: { chart: testid } }, h("h3", {}, `${title} · ${until - from >= 3_500_000 ? "last hour" : `since ${new Date(from).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}`}`),
      series.some((s) => s.points.length) ? lineChart(series, { from, to }) : h("div", { class: "empty" }, "No samples in the last hour yet: the agent reports every 30 s once configured."),
      series.length > 1 ? h("div", { class: "legend" }, series.map((s, i) => h("span", { class: `legend-item series-${i % 6}` }, s.label))) : null);
    const gpuIndexes = [...new Set(items.flatMap((p) => (p.gpus || []).map((g) => g.index)))].sort((a, b) => a - b);
    fill(charts,
      card("CPU", [{ label: "CPU", points: metricPoints(items, (p) => p.cpu_percent) }], "cpu"),
      card("Memory", [{ label: "memory", points: metricPoints(items, (p) => p.memory_percent) }], "memory"),
      f.gpu_metrics && gpuIndexes.length ? card("GPU utilization", gpuIndexes.map((g) => ({
        label: `GPU ${g}${items.flatMap((p) => p.gpus || []).find((x) => x.index === g)?.name ? ` (${items.flatMap((p) => p.gpus || []).find((x) => x.index === g).name})` : ""}`,
        points: metricPoints(items, (p) => (p.gpus || []).find((x) => x.index === g)?.utilization_percent ?? null),
      })), "gpu") : null);
  }

  async function loadSnapshots() {
    if (!f.snapshots) return;
    let items = [];
    try { items = (await api(`/v1/snapshots${query({ instance_id: id, limit: 100 })}`)).items; } catch { return; }
    fill(snapsBox, h("h2", {}, "Snapshots"),
      items.length ? h("table", { class: "table compact", id: "instance-snapshots" }, h("tbody", {}, items.map((s) => h("tr", { dataset: { id: s.id, status: s.status } },
        h("td", {}, s.name, h("div", { class: "muted mono small" }, s.id)), h("td", {}, badge(s.status)), h("td", {}, timeCell(s.created_at)),
        h("td", {}, s.status === "available" && f.instances_ui ? h("a", { class: "btn btn-ghost btn-xs", href: `#/instances/new?snapshot=${s.id}` }, "New instance from it") : null)))))
        : h("p", { class: "muted" }, "No snapshots yet."));
    if (items.some((s) => ["creating", "deleting"].includes(s.status))) setTimeout(loadSnapshots, 2000);
  }

  async function act(action) {
    try {
      instance = await api(`/v1/instances/${encodeURIComponent(id)}/${action}`, { method: "POST" });
      toast(`${action[0].toUpperCase()}${action.slice(1)} of ${instance.name} requested`);
      renderHead();
    } catch (e) { toast(e.message, "error"); }
  }

  async function takeSnapshot() {
    const stamp = new Date().toISOString().slice(0, 19).replace(/[-:T]/g, "").toLowerCase();
    try {
      const snap = await api(`/v1/instances/${encodeURIComponent(id)}/snapshots`, { method: "POST", body: { name: `${instance.name}-${stamp}`.slice(0, 63).replace(/-+$/, "") } });
      toast(`Snapshot ${snap.name} started`);
      loadSnapshots();
    } catch (e) { toast(e.message, "error"); }
  }

  fill(dialog, h("form", { method: "dialog" },
    h("h2", {}, "Delete this instance?"),
    h("p", {}, "The VM ", h("strong", {}, instance.name), " and its disk are removed from ", instance.provider, ". Snapshots are kept. This cannot be undone."),
    h("div", { class: "actions" },
      h("button", { class: "btn btn-ghost", value: "cancel", id: "cancel-delete" }, "Cancel"),
      h("button", { class: "btn btn-danger", value: "delete", id: "confirm-delete-button" }, "Delete instance"))));
  dialog.addEventListener("close", async () => {
    if (dialog.returnValue !== "delete") return;
    try {
      instance = await api(`/v1/instances/${encodeURIComponent(id)}`, { method: "DELETE" });
      toast(`Deleting ${instance.name}`);
      renderHead();
    } catch (e) { toast(e.message, "error"); }
  });

  renderHead();
  layout("instances", h("section", { class: "page detail" }, head,
    h("div", { class: "grid-detail" },
      h("div", { class: "col" }, stepsBox, info, lifecycle.node, charts),
      h("div", { class: "col" }, h("div", { class: "card" }, h("div", { class: "card-head" }, h("h2", {}, "Events"), liveState), timeline), snapsBox)),
    dialog));

  // Live: the SSE stream, or polling when the stream cannot be used.
  let polling = null;
  function startPolling() {
    if (polling) return;
    liveState.textContent = "polling";
    liveState.className = "live live-polling";
    const poll = async () => {
      try { (await api(`/v1/instances/${encodeURIComponent(id)}/events`)).forEach(addEvent); } catch { /* next time */ }
      await refreshInstance();
    };
    poll();
    polling = setInterval(poll, 3000);
    cleanups.push(() => clearInterval(polling));
  }
  const stream = streamEvents(id, {
    onState: (state) => { liveState.textContent = state; liveState.className = `live live-${state}`; },
    onEvent: addEvent,
    onStatus: async (s) => {
      const changed = s.status !== instance.status || s.public_ip !== instance.public_ip;
      Object.assign(instance, s);
      renderHead();
      if (changed) { await refreshInstance(); if (s.status === "running") loadCharts(); }
    },
    onEnd: (s) => { liveState.textContent = `ended (${s.status})`; liveState.className = "live live-ended"; refreshInstance(); },
    onFallback: startPolling,
  });
  cleanups.push(() => stream.close());
  loadCharts();
  loadSnapshots();
  every(5000, refreshInstance); // health is not part of the stream: the agent's latest sample, read here
  every(15_000, loadCharts);
}

// --- snapshots -------------------------------------------------------------------------------------

async function snapshotsPage() {
  const tbody = h("tbody");
  const banner = h("div");
  layout("snapshots", h("section", { class: "page" },
    h("header", { class: "page-head" }, h("h1", {}, "Snapshots")), banner,
    h("div", { class: "table-wrap" }, h("table", { class: "table", id: "snapshots" },
      h("thead", {}, h("tr", {}, ["Name", "Instance", "Where", "Status", "Created", ""].map((c) => h("th", {}, c)))), tbody))));
  async function refresh() {
    let data;
    try { data = await api("/v1/snapshots?limit=100"); fill(banner); } catch (e) { fill(banner, errorBanner(e)); return; }
    const live = data.items.filter((s) => s.status !== "deleted");
    fill(tbody, ...(live.length ? live.map((s) => h("tr", { dataset: { id: s.id, status: s.status } },
      h("td", {}, h("span", { class: "strong" }, s.name), h("div", { class: "muted mono small" }, s.id)),
      h("td", {}, features.features.instances_ui ? h("a", { href: `#/instances/${s.instance_id}`, class: "mono" }, s.instance_id) : s.instance_id),
      h("td", {}, `${s.provider} · ${s.region}`),
      h("td", {}, badge(s.status), s.error ? h("div", { class: "muted small" }, s.error.message) : null),
      h("td", {}, timeCell(s.created_at)),
      h("td", { class: "row-actions" },
        s.status === "available" && features.features.instances_ui ? h("a", { class: "btn btn-secondary btn-xs", href: `#/instances/new?snapshot=${s.id}`, dataset: { action: "create-from" } }, "Create instance") : null,
        ["available", "failed"].includes(s.status) ? h("button", { class: "btn btn-ghost btn-xs", type: "button", onclick: async () => {
          if (!confirm(`Delete snapshot ${s.name}?`)) return;
          try { await api(`/v1/snapshots/${s.id}`, { method: "DELETE" }); toast(`Deleting ${s.name}`); refresh(); } catch (e) { toast(e.message, "error"); }
        } }, "Delete") : null)))
      : [h("tr", {}, h("td", { colspan: 6, class: "empty" }, "No snapshots yet. Take one from a running instance's page."))]));
  }
  await refresh();
  every(5000, refresh);
}

// --- start -----------------------------------------------------------------------------------------

setUnauthorizedHandler(() => { session.token = null; toast("Your session ended: sign in again", "error"); navigate("#/signin"); });
window.addEventListener("hashchange", render);
(async () => {
  try {
    features = await api("/v1/features");
  } catch { /* the defaults keep the sign-in page usable */ }
  document.body.dataset.ready = "true";
  render();
})();
