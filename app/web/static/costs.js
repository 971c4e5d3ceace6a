// The Costs page: this month's spend by provider (stacked, cumulative), the budget lines, a forecast to the
// month's end, the top instances and a CSV download; and the cost line of an instance's page. Every figure
// comes from GET /v1/costs and GET /v1/budget (the ledger on the server); nothing is computed here but sums.

import { api, query, session } from "./api.js";
import { stackedChart } from "./charts.js";

const DAY = 86_400_000;

export function usd(value, digits) {
  if (value === null || value === undefined) return "—";
  const places = digits ?? (value === 0 || Math.abs(value) >= 1 ? 2 : 4); // small sums keep their digits
  return `$${value.toLocaleString("en-US", { minimumFractionDigits: places, maximumFractionDigits: places })}`;
}

// The "Cost" line of an instance's facts.
export function costFacts(h, cost) {
  if (!cost) return null;
  const rate = cost.hourly_usd === null ? "price unknown" : `${usd(cost.hourly_usd)}/h now`;
  return [h("dt", {}, "Cost"), h("dd", { id: "instance-cost" },
    h("span", { class: "mono", dataset: { testid: "cost-to-date" } }, usd(cost.to_date_usd)), " so far · ",
    h("span", { class: "mono", dataset: { testid: "cost-hourly" } }, rate),
    cost.priced ? null : h("span", { class: "muted small" }, " (part of it had no known price)"))];
}

function monthBounds(now = new Date()) {
  return { start: Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1),
           end: Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1) };
}

// Cumulative spend per provider at the end of each day so far: the chart's stacked series.
function cumulative(report, start, now) {
  const providers = [...new Set(report.items.map((i) => i.group))];
  const totals = Object.fromEntries(providers.map((p) => [p, report.items.filter((i) => i.group === p).reduce((s, i) => s + i.total_usd, 0)]));
  providers.sort((a, b) => totals[b] - totals[a]);
  const days = Math.max(1, Math.ceil((now - start) / DAY));
  const times = [start, ...Array.from({ length: days }, (_, d) => Math.min(start + (d + 1) * DAY, now))];
  return providers.map((provider) => {
    let running = 0;
    const perDay = new Map(report.items.filter((i) => i.group === provider).map((i) => [i.period, i.total_usd]));
    const points = times.map((t, index) => {
      if (index > 0) running += perDay.get(new Date(start + (index - 1) * DAY).toISOString().slice(0, 10)) || 0;
      return { t, v: running };
    });
    return { label: provider, points, total: totals[provider] };
  });
}

async function downloadCsv(from, to) {
  const response = await fetch(`/v1/costs${query({ from, to, group_by: "instance", granularity: "day" })}`,
                               { headers: { Accept: "text/csv", Authorization: `Bearer ${session.token}` } });
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  const url = URL.createObjectURL(await response.blob());
  const link = Object.assign(document.createElement("a"), { href: url, download: `onebox-costs-${from.slice(0, 7)}.csv` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

export async function costsPage({ h, fill, layout, every, errorBanner, toast }) {
  const stats = h("div", { class: "stats", id: "cost-stats" });
  const chartCard = h("div", { class: "card", id: "cost-chart" });
  const topCard = h("div", { class: "card", id: "top-instances" });
  const banner = h("div");
  const admin = session.claims?.role === "admin";
  let range = null;
  layout("costs", h("section", { class: "page" },
    h("header", { class: "page-head" },
      h("div", {}, h("h1", {}, "Costs"), h("div", { class: "muted small", id: "cost-month" })),
      h("button", { class: "btn btn-secondary", type: "button", id: "download-csv", onclick: async () => {
        try { await downloadCsv(range.from, range.to); } catch (e) { toast(`Could not download: ${e.message}`, "error"); }
      } }, "Download CSV")),
    banner, stats, chartCard, topCard));

  async function load() {
    const now = Date.now();
    const { start, end } = monthBounds(new Date(now));
    range = { from: new Date(start).toISOString().replace(/\.\d+Z$/, "Z"), to: new Date(now).toISOString().replace(/\.\d+Z$/, "Z") };
    let overview, byProvider, byInstance;
    try {
      [overview, byProvider, byInstance] = await Promise.all([
        api("/v1/budget"),
        api(`/v1/costs${query({ ...range, group_by: "provider", granularity: "day" })}`),
        api(`/v1/costs${query({ ...range, group_by: "instance", granularity: "month" })}`),
      ]);
      fill(banner);
    } catch (e) { fill(banner, errorBanner(e)); return; }

    const spent = byProvider.total_usd;
    const forecast = spent + byProvider.hourly_usd * ((end - now) / 3_600_000);
    const budget = overview.budgets[0];
    document.getElementById("cost-month").textContent =
      `${new Date(start).toLocaleDateString([], { month: "long", year: "numeric", timeZone: "UTC" })} (UTC) · ${admin ? "everyone's instances" : "your instances"}`;
    const stat = (id, label, value, note, extra) => h("div", { class: "card stat", id },
      h("h3", {}, label), h("div", { class: "stat-value mono" }, value), note ? h("div", { class: "stat-note" }, note) : null, extra);
    fill(stats,
      stat("stat-spent", "Spent this month", usd(spent, 2), `${usd(byProvider.hourly_usd)}/h right now`),
      stat("stat-forecast", "Forecast to month end", usd(forecast, 2), "spent + today's hourly rate until the month ends"),
      budget
        ? stat("stat-budget", `${budget.scope === "team" ? `Team ${budget.name}` : "Your"} budget`, usd(budget.monthly_usd, 2),
            `${budget.used_percent.toFixed(1)} % used · ${usd(budget.left_usd, 2)} left (${usd(budget.reserved_usd, 2)} reserved) · ${budget.state}`,
            h("div", { class: `meter meter-${budget.state}` }, h("span", { dataset: { used: budget.used_percent } })))
        : stat("stat-budget", "Budget", "none", "no monthly budget applies to you"));
    const meter = stats.querySelector(".meter > span");
    if (meter) meter.style.width = `${Math.min(100, budget.used_percent)}%`; // a style property, not markup: allowed by the CSP

    const series = cumulative(byProvider, start, now);
    const lines = overview.budgets.map((b) => ({ label: b.scope === "team" ? `team ${b.name}` : "budget", value: b.monthly_usd }));
    fill(chartCard, h("h2", {}, "Spend this month, by provider"),
      series.length
        ? stackedChart(series, { from: start, to: end, lines, forecast: { from: { t: now, v: spent }, to: { t: end, v: forecast } } })
        : h("div", { class: "empty" }, "Nothing has cost anything this month yet."),
      h("div", { class: "legend" }, series.map((s, i) => h("span", { class: `legend-item series-${i % 6}`, dataset: { provider: s.label } }, `${s.label} ${usd(s.total, 2)}`)),
        lines.length ? h("span", { class: "legend-budget" }, "- - budget") : null, h("span", { class: "muted" }, "··· forecast")));

    const top = [...byInstance.items].sort((a, b) => b.total_usd - a.total_usd).slice(0, 8);
    fill(topCard, h("h2", {}, "Top instances this month"),
      top.length ? h("table", { class: "table compact", id: "top-table" },
        h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Kind"), h("th", { class: "num" }, "Cost"), h("th", { class: "num" }, "Share"))),
        h("tbody", {}, top.map((i) => h("tr", { dataset: { id: i.group } },
          h("td", {}, i.group.startsWith("i-") ? h("a", { href: `#/instances/${i.group}`, class: "strong" }, i.label || i.group) : h("span", { class: "strong" }, i.label || i.group),
            h("div", { class: "muted mono small" }, i.group)),
          h("td", {}, i.group.startsWith("s-") ? "snapshot" : "instance"),
          h("td", { class: "num mono" }, usd(i.total_usd, 2)),
          h("td", { class: "num mono" }, spent ? `${((100 * i.total_usd) / spent).toFixed(1)} %` : "—")))))
        : h("p", { class: "muted" }, "No instance has cost anything this month."));
  }
  await load();
  every(60_000, load);
}
