// Usage: charts per UTC day, and a breakdown by model, token, team or operation
// (the admin API's `GET /admin/v1/usage`, once grouped by day and once as chosen).

import { callApi } from "./api.js";
import { shareBar, showDailyBarCharts } from "./charts.js";
import { h, integer, millis, money, table } from "./dom.js";

const DAY_SECONDS = 86400;
// What a group with no key is, by grouping (rows with no team, or no known model).
const NO_KEY = { team: "(no team)", model: "(unknown model)", token: "(none)", operation: "(none)" };

function isoDay(seconds) {
  return new Date(seconds * 1000).toISOString().slice(0, 10);
}

/** Every UTC day of the period, oldest first: days with no usage are zeros, not gaps. */
export function daysOf(since, until) {
  const days = [];
  for (let day = Math.floor(since / DAY_SECONDS) * DAY_SECONDS; day <= until; day += DAY_SECONDS) {
    days.push(isoDay(day));
  }
  return days;
}

const count = (value) => integer.format(value);

export class UsagePanel {
  constructor() {
    this.since = document.getElementById("usage-since");
    this.by = document.getElementById("breakdown-by");
    this.charts = document.getElementById("usage-charts");
    this.dayTable = document.getElementById("usage-days");
    this.breakdown = document.getElementById("breakdown");
    this.rows = null; // the days last loaded
    this.drawnWidth = 0;
    // Charts are drawn to their width: a wider or narrower window redraws them.
    new ResizeObserver(() => {
      if (this.rows && this.charts.clientWidth && this.charts.clientWidth !== this.drawnWidth)
        this.#drawCharts();
    }).observe(this.charts);
  }

  /** Loads and draws both views; rejects with the API's error. */
  async load() {
    await Promise.all([this.loadDays(), this.loadBreakdown()]);
  }

  async loadDays() {
    const query = new URLSearchParams({ since: this.since.value, by: "day" });
    const { body } = await callApi("GET", `/admin/v1/usage?${query}`);
    const byDay = new Map((body.groups ?? []).map((group) => [group.key, group]));
    const rows = daysOf(body.since, body.until).map((day) => ({
      day,
      requests: 0,
      images: 0,
      failures: 0,
      unpriced_requests: 0,
      ...byDay.get(day),
    }));
    this.rows = rows;
    this.#drawCharts();
    this.dayTable.replaceChildren(
      table(
        "Usage per day",
        [
          ["Day (UTC)", (row) => row.day],
          ["Requests", (row) => count(row.requests), "number"],
          ["Images", (row) => count(row.images), "number"],
          ["Failures", (row) => count(row.failures), "number"],
          ["Cost", (row) => money(row.cost_usd), "number"],
          ["p50 latency", (row) => millis(row.p50_latency_ms), "number"],
          ["p95 latency", (row) => millis(row.p95_latency_ms), "number"],
        ],
        [...rows].reverse(),
      ),
    );
  }

  /** Draws the four charts for the loaded days, at the width the page gives them. */
  #drawCharts() {
    const rows = this.rows;
    const series = (name) => rows.map((row) => ({ day: row.day, value: row[name] ?? 0 }));
    const unpriced = rows.reduce((sum, row) => sum + (row.unpriced_requests ?? 0), 0);
    showDailyBarCharts(this.charts, [
      { title: "Requests", points: series("requests"), format: count, kind: "requests" },
      { title: "Images", points: series("images"), format: count, kind: "images" },
      { title: "Cost", points: series("cost_usd"), format: money, kind: "cost", whole: false },
      { title: "Failures", points: series("failures"), format: count, kind: "failures" },
    ]);
    if (unpriced) {
      this.charts.append(
        h(
          "p",
          { class: "hint chart-note" },
          `Cost counts priced requests only: ${count(unpriced)} had no configured price.`,
        ),
      );
    }
    this.drawnWidth = this.charts.clientWidth;
  }

  async loadBreakdown() {
    const by = this.by.value;
    const query = new URLSearchParams({ since: this.since.value, by });
    const { body } = await callApi("GET", `/admin/v1/usage?${query}`);
    const groups = [...(body.groups ?? [])].sort((a, b) => b.requests - a.requests);
    if (!groups.length) {
      this.breakdown.replaceChildren(h("p", { class: "hint" }, "No requests in this period."));
      return;
    }
    const largest = groups[0].requests;
    const columns = [
      [by[0].toUpperCase() + by.slice(1), (group) => group.name ?? group.key ?? NO_KEY[by]],
      [
        "Requests",
        (group) => h("span", { class: "with-bar" }, shareBar(group.requests, largest), count(group.requests)),
        "number",
      ],
      ["Images", (group) => count(group.images), "number"],
      ["Failures", (group) => count(group.failures), "number"],
      ["p50 latency", (group) => millis(group.p50_latency_ms), "number"],
      ["p95 latency", (group) => millis(group.p95_latency_ms), "number"],
      ["Cost", (group) => money(group.cost_usd), "number"],
      ["Unpriced", (group) => count(group.unpriced_requests ?? 0), "number"],
    ];
    if (by === "token" || by === "team")
      columns.splice(1, 0, ["Id", (group) => h("code", {}, group.key ?? "—")]);
    this.breakdown.replaceChildren(table(`Usage by ${by}`, columns, groups));
  }
}
