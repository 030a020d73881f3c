// Bar charts drawn as SVG by hand: a few rectangles and labels need no chart library.
// Colours come from the stylesheet (classes), so the charts follow the theme.

import { h, svg } from "./dom.js";

// Charts are drawn at the width they are shown (in CSS pixels), so their text
// is always 12 px, on a phone as on a wide screen.
const HEIGHT = 200;
const MARGIN = { top: 12, right: 8, bottom: 30, left: 56 };
const X_LABEL_SPACE = 64; // pixels each day label needs

/** The smallest 1, 2 or 5 times a power of ten at or above `value` (an axis' top). */
export function niceCeiling(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

/** "2026-01-05" as "Jan 5" (a UTC day stays that day wherever the reader is). */
function dayLabel(day) {
  return new Date(`${day}T00:00:00Z`).toLocaleDateString("en", {
    month: "short",
    day: "numeric",
    timeZone: "UTC",
  });
}

/**
 * Charts of one figure per day, put in `container` (emptied first): for each
 * spec a figure with its title and total, holding an SVG drawn to the
 * figure's own width.
 *
 * Each spec: `title` (what is counted), `points` ([{day: "2026-01-05", value}],
 * in order), `format` (how a value reads), `kind` (a class naming the series,
 * for its colour), `whole` (values are counts: no gridline at half an odd top).
 */
export function showDailyBarCharts(container, specs) {
  const figures = specs.map(({ title, points, format, kind }) => {
    const total = points.reduce((sum, point) => sum + point.value, 0);
    return h(
      "figure",
      { class: `chart ${kind}`, "data-series": kind },
      h("figcaption", {}, h("span", {}, title), h("strong", { class: "chart-total" }, format(total))),
    );
  });
  container.replaceChildren(...figures);
  // Every figure in the page first: then each one's width is its grid cell's.
  specs.forEach(({ title, points, format, whole = true }, index) => {
    const width = Math.max(240, Math.floor(figures[index].clientWidth));
    const total = points.reduce((sum, point) => sum + point.value, 0);
    const busiest = points.reduce((best, point) => (point.value > (best?.value ?? 0) ? point : best), null);
    const summary = busiest
      ? `${title}: ${format(total)} over ${points.length} days; most on ${busiest.day} (${format(busiest.value)}).`
      : `${title}: none over ${points.length} days.`;
    figures[index].append(
      svg(
        "svg",
        { viewBox: `0 0 ${width} ${HEIGHT}`, width, height: HEIGHT, role: "img", "aria-label": summary },
        ...drawBars(points, format, whole, width),
      ),
    );
  });
}

function drawBars(points, format, whole, width) {
  const plotWidth = width - MARGIN.left - MARGIN.right;
  const plotHeight = HEIGHT - MARGIN.top - MARGIN.bottom;
  const top = niceCeiling(Math.max(0, ...points.map((point) => point.value)));
  const slot = plotWidth / Math.max(1, points.length);
  const barWidth = Math.max(1, Math.min(48, slot * 0.7));
  const y = (value) => MARGIN.top + plotHeight - (value / top) * plotHeight;

  const levels = [0, top / 2, top].filter((value) => !whole || Number.isInteger(value));
  const grid = levels.map((value) =>
    svg(
      "g",
      { class: "grid-line" },
      svg("line", { x1: MARGIN.left, x2: width - MARGIN.right, y1: y(value), y2: y(value) }),
      svg(
        "text",
        { x: MARGIN.left - 6, y: y(value), "text-anchor": "end", "dominant-baseline": "middle" },
        format(value),
      ),
    ),
  );
  const every = Math.ceil(points.length / Math.max(1, Math.floor(plotWidth / X_LABEL_SPACE)));
  const bars = points.map((point, index) => {
    const x = MARGIN.left + index * slot + (slot - barWidth) / 2;
    const height = Math.max(0, y(0) - y(point.value));
    const parts = [
      svg(
        "rect",
        {
          class: "bar",
          x,
          y: y(0) - height,
          width: barWidth,
          height,
          "data-day": point.day,
          "data-value": point.value,
        },
        svg("title", {}, `${point.day}: ${format(point.value)}`),
      ),
    ];
    // Every few days a label, counted back from the last day so that today always has one.
    if ((points.length - 1 - index) % every === 0) {
      parts.push(
        svg(
          "text",
          { class: "axis-label", x: x + barWidth / 2, y: HEIGHT - 10, "text-anchor": "middle" },
          dayLabel(point.day),
        ),
      );
    }
    return svg("g", {}, ...parts);
  });
  return [...grid, ...bars];
}

/** A small bar showing `value` as a share of `largest`, beside the number it draws (so hidden from readers). */
export function shareBar(value, largest) {
  const width = largest > 0 ? (value / largest) * 100 : 0;
  return svg(
    "svg",
    {
      class: "share-bar",
      viewBox: "0 0 100 8",
      preserveAspectRatio: "none",
      "aria-hidden": "true",
      focusable: "false",
    },
    svg("rect", { class: "share-track", x: 0, y: 0, width: 100, height: 8 }),
    svg("rect", { class: "bar", x: 0, y: 0, width, height: 8 }),
  );
}
