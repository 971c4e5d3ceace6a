// The QA pages: runs with their verdicts, a form to start one, each run's results and charts, and comparisons
// across runs (over time, across providers and machine types) with the baseline drawn. Charts are PNGs drawn
// by the server with matplotlib (the same ones as in the downloadable report), shown as data: URIs because an
// <img> cannot send the token. Every node is built from text with the dashboard's h(), like every other page.

import { api, ApiError, dataUri, download, query, streamEvents } from "./api.js";

const FINAL = ["passed", "failed", "error", "cancelled"];
const VERDICTS = ["pass", "fail", "error", "skip"];
let suitesCache = null;

async function suites() {
  if (!suitesCache) suitesCache = await api("/v1/qa-suites");
  return suitesCache;
}

function fmt(value, unit) {
  if (value === null || value === undefined) return "—";
  const abs = Math.abs(value);
  const text = abs >= 100 ? Math.round(value).toLocaleString("en-US") : abs >= 1 ? value.toFixed(2) : value.toPrecision(3);
  return unit ? `${text} ${unit}` : text;
}

function verdictChips(ui, summary) {
  const { h } = ui;
  return h("span", { class: "verdicts" }, VERDICTS.filter((v) => summary?.[v]).map((v) =>
    h("span", { class: `verdict verdict-${v}`, dataset: { verdict: v }, title: `${summary[v]} ${v}` }, `${summary[v]} ${v}`)));
}

function chartImage(ui, path, name) {
  const { h } = ui;
  const box = h("figure", { class: "qa-chart", dataset: { chart: name } }, h("div", { class: "muted small" }, "drawing…"));
  dataUri(path).then((uri) => {
    ui.fill(box, h("img", { src: uri, alt: `${name} chart` }), h("figcaption", { class: "muted small" }, name.replace("_", " ")));
  }).catch((e) => ui.fill(box, h("div", { class: "muted small" }, `no chart: ${e.message}`)));
  return box;
}

// --- the list, the form and the comparisons -----------------------------------------------------------

export async function qaPage(ui, params) {
  const { h, fill, layout, badge, timeCell, navigate, every } = ui;
  const [all, running] = await Promise.all([suites(), api("/v1/instances?status=running&limit=100")]);
  const suiteFilter = params.get("suite") || "";
  const tbody = h("tbody");
  const banner = h("div");

  // the form: suite, instances, the suite's parameters
  const formBanner = h("div", { id: "qa-form-banner" });
  const suiteSelect = h("select", { id: "qa-suite", name: "suite" }, all.map((s) => h("option", { value: s.name }, s.name)));
  const instanceBox = h("div", { class: "qa-instances", id: "qa-instances" },
    running.items.length ? running.items.map((i) => h("label", { class: "check" },
      h("input", { type: "checkbox", value: i.id, name: "instances" }), ` ${i.name} `, h("span", { class: "muted mono small" }, `${i.id} · ${i.provider}/${i.machine_type}`)))
      : h("span", { class: "muted" }, "No running instance: start one first."));
  const paramBox = h("div", { class: "grid-2", id: "qa-params" });
  const describe = h("p", { class: "muted small", id: "qa-suite-description" });
  function showParams() {
    const suite = all.find((s) => s.name === suiteSelect.value);
    describe.textContent = `${suite.description} Instances: ${suite.min_instances === suite.max_instances ? suite.min_instances : `${suite.min_instances}–${suite.max_instances}`}.`;
    fill(paramBox, suite.params.map((p) => ui.field(`params.${p.name}`, p.name.replace(/_/g, " "),
      h("input", { id: `qa-param-${p.name}`, name: p.name, placeholder: Array.isArray(p.default) ? p.default.join(",") : String(p.default), autocomplete: "off" }),
      `${p.description}${p.minimum !== null && p.minimum !== undefined ? ` (${p.minimum}–${p.maximum})` : ""}${p.choices.length ? ` (comma-separated: ${p.choices.join(", ")})` : ""}`)));
  }
  suiteSelect.addEventListener("change", showParams);
  const start = h("button", { class: "btn btn-primary", type: "submit", id: "qa-start" }, "Start run");
  const form = h("form", { class: "card form", id: "qa-form", novalidate: true, onsubmit: async (e) => {
    e.preventDefault();
    const suite = all.find((s) => s.name === suiteSelect.value);
    const given = {};
    for (const p of suite.params) {
      const raw = form.querySelector(`#qa-param-${p.name}`).value.trim();
      if (raw) given[p.name] = Array.isArray(p.default) ? raw.split(",").map((v) => v.trim()).filter(Boolean) : Number(raw);
    }
    const body = { suite: suite.name, instances: [...instanceBox.querySelectorAll("input:checked")].map((c) => c.value),
                   ...(Object.keys(given).length ? { params: given } : {}) };
    start.disabled = true;
    try {
      const run = await api("/v1/qa-runs", { method: "POST", body });
      ui.toast(`${run.suite} run queued`);
      navigate(`#/qa/${run.id}`);
    } catch (error) { ui.showProblem(form, error, formBanner); } finally { start.disabled = false; }
  } },
    formBanner,
    h("div", { class: "grid-2" }, ui.field("suite", "Suite", suiteSelect), h("div", {}, describe)),
    h("div", { class: "field", dataset: { field: "instances" } }, h("label", {}, "Instances (network: client first, then server; one alone runs against onebox's host)"),
      instanceBox, h("div", { class: "field-error", role: "alert" })),
    paramBox,
    h("div", { class: "actions" }, start));
  showParams();

  // comparisons across runs
  const measureSuites = all.filter((s) => s.checks.some((c) => c.kind === "measure"));
  const cmpSuite = h("select", { id: "qa-compare-suite" }, measureSuites.map((s) => h("option", { value: s.name }, s.name)));
  const cmpCheck = h("select", { id: "qa-compare-check" });
  const cmpBy = h("select", { id: "qa-compare-by" }, h("option", { value: "time" }, "over time"), h("option", { value: "machine" }, "by provider and machine type"));
  const cmpChart = h("div", { id: "qa-compare-chart" });
  const cmpTable = h("div", { id: "qa-baselines" });
  function fillChecks() {
    const suite = measureSuites.find((s) => s.name === cmpSuite.value);
    fill(cmpCheck, suite.checks.filter((c) => c.kind === "measure").map((c) => h("option", { value: c.name, selected: c.name === suite.main_check }, `${c.name} (${c.unit})`)));
  }
  async function compare() {
    const q = query({ suite: cmpSuite.value, check: cmpCheck.value });
    fill(cmpChart, chartImage(ui, `/v1/qa-history/chart${query({ suite: cmpSuite.value, check: cmpCheck.value, by: cmpBy.value })}`, "compare"));
    try {
      const history = await api(`/v1/qa-history${q}`);
      fill(cmpTable, history.baselines.length ? h("table", { class: "table compact" },
        h("thead", {}, h("tr", {}, ["Provider", "Machine type", "Baseline", "Tolerance", "From"].map((c) => h("th", {}, c)))),
        h("tbody", {}, history.baselines.map((b) => h("tr", { dataset: { machine: b.machine_type } },
          h("td", {}, b.provider), h("td", {}, b.machine_type), h("td", { class: "mono" }, fmt(b.value, history.unit)),
          h("td", {}, `${b.tolerance_percent}%`), h("td", {}, b.source === "admin" ? "set by an admin" : `median of ${b.samples} passed runs`)))))
        : h("p", { class: "muted small" }, `${history.items.length} result(s); no baseline yet for this check.`));
    } catch (e) { fill(cmpTable, ui.errorBanner(e)); }
  }
  cmpSuite.addEventListener("change", () => { fillChecks(); compare(); });
  cmpCheck.addEventListener("change", compare);
  cmpBy.addEventListener("change", compare);

  const filter = h("select", { id: "qa-filter-suite", onchange: (e) => navigate(`#/qa${query({ suite: e.target.value })}`) },
    h("option", { value: "" }, "all suites"), all.map((s) => h("option", { value: s.name, selected: s.name === suiteFilter }, s.name)));
  layout("qa", h("section", { class: "page" },
    h("header", { class: "page-head" }, h("h1", {}, "QA runs"),
      h("button", { class: "btn btn-primary", type: "button", id: "qa-new", onclick: () => { form.hidden = !form.hidden; } }, "New run")),
    form,
    h("div", { class: "filters" }, h("label", {}, "Suite ", filter)), banner,
    h("div", { class: "table-wrap" }, h("table", { class: "table", id: "qa-runs" },
      h("thead", {}, h("tr", {}, ["Suite", "Instances", "Status", "Checks", "Created"].map((c) => h("th", {}, c)))), tbody)),
    h("div", { class: "card qa-compare", id: "qa-compare" },
      h("div", { class: "card-head" }, h("h2", {}, "Compare runs"), h("div", { class: "row" }, cmpSuite, cmpCheck, cmpBy)),
      cmpChart, cmpTable)));
  form.hidden = params.get("new") !== "1";

  async function refresh() {
    let data;
    try { data = await api(`/v1/qa-runs${query({ suite: suiteFilter, limit: 50 })}`); fill(banner); } catch (e) { fill(banner, ui.errorBanner(e)); return; }
    fill(tbody, ...(data.items.length ? data.items.map((r) => h("tr", { class: "clickable", dataset: { id: r.id, status: r.status }, onclick: () => navigate(`#/qa/${r.id}`) },
      h("td", {}, h("a", { href: `#/qa/${r.id}`, class: "strong" }, r.suite), h("div", { class: "muted mono small" }, r.id)),
      h("td", {}, r.targets.map((t) => h("div", { class: "small" }, `${t.name} `, h("span", { class: "muted" }, `${t.provider}/${t.machine_type}`)))),
      h("td", {}, badge(r.status), r.cancel_requested && !FINAL.includes(r.status) ? h("span", { class: "muted small" }, " cancelling") : null),
      h("td", {}, verdictChips(ui, r.summary)),
      h("td", {}, timeCell(r.created_at))))
      : [h("tr", {}, h("td", { colspan: 5, class: "empty" }, "No QA run yet. Start one on a running instance."))]));
  }
  await refresh();
  every(4000, refresh);
  if (measureSuites.length) { fillChecks(); compare(); }
}

// --- one run ----------------------------------------------------------------------------------------

export async function qaRunPage(ui, id) {
  const { h, fill, layout, badge, navigate } = ui;
  let run = await api(`/v1/qa-runs/${encodeURIComponent(id)}`);
  const all = await suites();
  const suite = all.find((s) => s.name === run.suite);
  const head = h("header", { class: "page-head" });
  const targets = h("div", { class: "card" });
  const results = h("div", { class: "card" });
  const charts = h("div", { class: "card", id: "qa-charts" });
  const timeline = h("ol", { class: "timeline", id: "qa-timeline" });
  const liveState = h("span", { class: "live", id: "qa-live-state" }, "connecting…");
  const seen = new Set();
  let chartsDrawn = false;

  function renderHead() {
    const live = !FINAL.includes(run.status);
    fill(head,
      h("div", {}, h("a", { href: "#/qa", class: "muted small" }, "← QA runs"),
        h("h1", {}, `${run.suite} run `, badge(run.status)), h("div", { class: "muted mono small" }, run.id)),
      h("div", { class: "actions" },
        h("button", { class: "btn btn-ghost", type: "button", id: "qa-download-html", onclick: () => save("html") }, "Report (HTML)"),
        h("button", { class: "btn btn-ghost", type: "button", id: "qa-download-zip", onclick: () => save("zip") }, "Report + charts (zip)"),
        live ? h("button", { class: "btn btn-danger", type: "button", id: "qa-cancel", disabled: run.cancel_requested, onclick: cancel }, run.cancel_requested ? "Cancelling…" : "Cancel") : null));
    fill(targets, h("h2", {}, "Instances"), h("table", { class: "table compact" },
      h("tbody", {}, run.targets.map((t) => h("tr", {},
        h("td", {}, h("a", { href: `#/instances/${t.instance_id}` }, t.name), h("div", { class: "muted mono small" }, t.instance_id)),
        h("td", {}, t.role), h("td", {}, `${t.provider} · ${t.region}`), h("td", {}, t.machine_type), h("td", { class: "muted" }, t.image || "—"))))),
      h("p", { class: "muted small" }, `Parameters: ${Object.entries(run.params).map(([k, v]) => `${k}=${v}`).join(", ")}`),
      run.error ? h("div", { class: "banner banner-error", role: "alert" }, `${run.error.step ? `[${run.error.step}] ` : ""}${run.error.code}: ${run.error.message}`) : null);
    fill(results, h("div", { class: "card-head" }, h("h2", {}, "Checks"), verdictChips(ui, run.summary)),
      run.results.length ? h("div", { class: "table-scroll" }, h("table", { class: "table compact", id: "qa-results" },
        h("thead", {}, h("tr", {}, ["Check", "Instance", "Verdict", "Value", "Baseline", "Why"].map((c) => h("th", {}, c)))),
        h("tbody", {}, run.results.map((r) => h("tr", { dataset: { check: r.check, verdict: r.verdict } },
          h("td", {}, h("span", { class: "strong" }, r.check), r.target ? h("span", { class: "muted" }, ` [${r.target}]`) : null, h("div", { class: "muted small" }, r.title)),
          h("td", { class: "mono small" }, r.instance_id.slice(-8)),
          h("td", {}, h("span", { class: `verdict verdict-${r.verdict}` }, r.verdict)),
          h("td", { class: "mono num" }, fmt(r.value, r.unit)),
          h("td", { class: "mono num" }, r.baseline ? `${fmt(r.baseline.value, r.unit)} ±${r.baseline.tolerance_percent}%` : "—"),
          h("td", { class: "small why" }, r.message))))))
        : h("p", { class: "muted" }, FINAL.includes(run.status) ? "No check was measured." : "Results appear as each check finishes."));
  }

  function drawCharts() {
    if (chartsDrawn || !run.results.length) {
      if (!run.results.length) fill(charts, h("h2", {}, "Charts"), h("p", { class: "muted" }, "Charts appear once checks have results."));
      return;
    }
    chartsDrawn = FINAL.includes(run.status); // while running, redraw as results arrive; once ended, once
    const names = [...suite.charts, ...(suite.main_check ? ["trend"] : [])];
    fill(charts, h("h2", {}, "Charts"), h("div", { class: "qa-chart-grid" },
      names.map((name) => chartImage(ui, `/v1/qa-runs/${encodeURIComponent(id)}/report${query({ format: "png", chart: name })}`, name))));
  }

  async function refresh() {
    const before = run.results.length;
    try { run = await api(`/v1/qa-runs/${encodeURIComponent(id)}`); } catch (e) { if (e.status === 404) navigate("#/qa"); return; }
    renderHead();
    if (run.results.length !== before || FINAL.includes(run.status)) drawCharts();
  }

  async function cancel() {
    try { run = await api(`/v1/qa-runs/${encodeURIComponent(id)}`, { method: "DELETE" }); ui.toast("Cancelling: stopping its processes"); renderHead(); }
    catch (e) { ui.toast(e.message, "error"); }
  }

  async function save(format) {
    try { await download(`/v1/qa-runs/${encodeURIComponent(id)}/report${query({ format })}`, `${id}-report.${format}`); }
    catch (e) { ui.toast(e instanceof ApiError ? e.message : String(e), "error"); }
  }

  function addEvent(e) {
    const key = `${e.at}|${e.type}|${e.message}`;
    if (seen.has(key)) return;
    seen.add(key);
    const kind = ["qa.fail", "qa.error", "step.failed", "ansible.failed"].includes(e.type) ? "bad" : ["qa.pass", "step.succeeded"].includes(e.type) ? "good" : "";
    timeline.append(h("li", { class: `tl-item ${kind}`, dataset: { type: e.type } },
      h("time", { datetime: e.at, title: new Date(e.at).toLocaleString() }, new Date(e.at).toLocaleTimeString()),
      h("span", { class: "tl-type" }, e.type), e.step ? h("span", { class: "chip chip-sm" }, e.step) : null,
      h("div", { class: "tl-message" }, e.message)));
    timeline.scrollTop = timeline.scrollHeight;
    if (e.type.startsWith("qa.") && !["qa.requested", "qa.iperf3", "qa.install", "qa.facts"].includes(e.type)) refresh();
  }

  renderHead();
  drawCharts();
  layout("qa", h("section", { class: "page detail" }, head, results,
    h("div", { class: "grid-detail" },
      h("div", { class: "col" }, charts),
      h("div", { class: "col" }, targets, h("div", { class: "card" }, h("div", { class: "card-head" }, h("h2", {}, "Events"), liveState), timeline)))));

  const stream = streamEvents(id, {
    path: `/v1/qa-runs/${encodeURIComponent(id)}/events/stream`,
    onState: (state) => { liveState.textContent = state; liveState.className = `live live-${state}`; },
    onEvent: addEvent,
    onStatus: (s) => { if (s.status !== run.status) refresh(); },
    onEnd: (s) => { liveState.textContent = `ended (${s.status})`; liveState.className = "live live-ended"; refresh(); },
    onFallback: () => {
      liveState.textContent = "polling";
      const poll = async () => { try { (await api(`/v1/qa-runs/${encodeURIComponent(id)}/events`)).forEach(addEvent); } catch { /* next time */ } refresh(); };
      poll();
      ui.every(3000, poll);
    },
  });
  ui.cleanups.push(() => stream.close());
}
