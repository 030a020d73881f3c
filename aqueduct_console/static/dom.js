// Small helpers for building the page: elements, and figures as people read them.

/**
 * An element with attributes and children. Attributes are set as attributes
 * (never as inline styles or handlers, which the content security policy
 * forbids); `false`, `null` and `undefined` leave one out, `true` sets it empty.
 * Children are nodes or text; null and false children are skipped.
 */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    element.setAttribute(name, value === true ? "" : String(value));
  }
  element.append(...children.flat().filter((child) => child !== null && child !== false));
  return element;
}

/** An SVG element (charts), attributes as for `h`. */
export function svg(tag, attributes = {}, ...children) {
  const element = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    element.setAttribute(name, String(value));
  }
  element.append(...children.flat().filter((child) => child !== null && child !== false));
  return element;
}

/** A table: `columns` are [heading, cell(row) -> node or text, class?]. */
export function table(caption, columns, rows) {
  return h(
    "table",
    {},
    h("caption", { class: "visually-hidden" }, caption),
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        columns.map(([heading, , kind]) => h("th", { scope: "col", class: kind }, heading)),
      ),
    ),
    h(
      "tbody",
      {},
      rows.map((row) =>
        h(
          "tr",
          {},
          columns.map(([, cell, kind]) => h("td", { class: kind }, cell(row) ?? "")),
        ),
      ),
    ),
  );
}

/** Shows an error paragraph with the error's full text, or hides it (null). */
export function showError(element, error) {
  element.hidden = !error;
  element.replaceChildren(error ? describeError(error) : "");
}

/** What went wrong, as one line: status, type and code, message, request id. */
export function describeError(error) {
  if (error.status === undefined) return String(error.message ?? error);
  const parts = [];
  if (error.afterStart) parts.push("Error during the stream");
  else parts.push(error.status ? `HTTP ${error.status}` : "No answer");
  const kind = [error.type, error.code].filter(Boolean).join(", ");
  if (kind) parts.push(`(${kind})`);
  let text = `${parts.join(" ")}: ${error.message}`;
  if (error.param) text += ` [param: ${error.param}]`;
  if (error.retryAfter) text += ` Retry after ${error.retryAfter} s.`;
  if (error.requestId) text += ` Request id: ${error.requestId}`;
  return text;
}

export const integer = new Intl.NumberFormat("en", { maximumFractionDigits: 0 });
const dollars = new Intl.NumberFormat("en", { style: "currency", currency: "USD", maximumFractionDigits: 4 });

/** USD for a cost that may be unknown (no price configured). */
export function money(value) {
  return value === undefined || value === null ? "—" : dollars.format(value);
}

/** Milliseconds, rounded; "—" when unknown. */
export function millis(value) {
  return value === undefined || value === null ? "—" : `${integer.format(value)} ms`;
}

/** A Unix time (seconds) as a UTC date and minute. */
export function when(seconds) {
  if (!seconds) return "—";
  return new Date(seconds * 1000).toISOString().slice(0, 16).replace("T", " ") + " UTC";
}

/**
 * Copies text to the clipboard and says so in `status`. Without clipboard
 * access (a page served over plain http from another machine), `select()`
 * selects the text instead, for the person to copy.
 */
export async function copyText(text, status, select) {
  try {
    await navigator.clipboard.writeText(text);
    status.textContent = "Copied.";
  } catch {
    select();
    status.textContent = "Selected: press Ctrl+C (⌘C) to copy.";
  }
}

/** Selects an element's text (for copying by hand). */
export function selectContents(element) {
  const range = document.createRange();
  range.selectNodeContents(element);
  getSelection().removeAllRanges();
  getSelection().addRange(range);
}
