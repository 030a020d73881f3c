// The limits and budgets of a token or team, as form fields, and back as the API's JSON.
//
// An empty field is "not set": for a token the gateway default applies, for a
// team there is no limit. Edits are sent as a JSON merge patch of what changed.

import { h, integer, money } from "./dom.js";

export const LIMITS = [
  ["requests_per_minute", "Requests per minute", "req/min"],
  ["images_per_minute", "Images per minute", "img/min"],
  ["images_per_day", "Images per day", "img/day"],
];
export const BUDGETS = [
  ["per_day_usd", "Budget per day (USD)", "day"],
  ["per_month_usd", "Budget per month (USD)", "month"],
];

function numberField(prefix, group, name, label, step) {
  const id = `${prefix}-${name}`;
  return h(
    "div",
    { class: "field" },
    h("label", { for: id }, label),
    h("input", { id, name: `${group}.${name}`, type: "number", min: "0", step, inputmode: "decimal" }),
  );
}

/** Fills each `[data-policy-fields=prefix]` placeholder of `root` with the limit and budget fields. */
export function addPolicyFields(root) {
  for (const container of root.querySelectorAll("[data-policy-fields]")) {
    const prefix = container.dataset.policyFields;
    container.replaceChildren(
      h(
        "fieldset",
        { class: "policy-fields" },
        h("legend", {}, "Limits"),
        ...LIMITS.map(([name, label]) => numberField(prefix, "limits", name, label, "1")),
      ),
      h(
        "fieldset",
        { class: "policy-fields" },
        h("legend", {}, "Budgets"),
        ...BUDGETS.map(([name, label]) => numberField(prefix, "budgets", name, label, "0.01")),
      ),
    );
  }
}

/** {limits, budgets} with only the fields that are set, as numbers. */
export function readPolicy(form) {
  const policy = { limits: {}, budgets: {} };
  for (const [group, fields] of [
    ["limits", LIMITS],
    ["budgets", BUDGETS],
  ]) {
    for (const [name] of fields) {
      const value = form.elements[`${group}.${name}`].value;
      if (value !== "") policy[group][name] = Number(value);
    }
  }
  return policy;
}

/** Puts a token's or team's limits and budgets in the form (unset ones empty). */
export function fillPolicy(form, { limits = {}, budgets = {} }) {
  for (const [group, fields, values] of [
    ["limits", LIMITS, limits],
    ["budgets", BUDGETS, budgets],
  ]) {
    for (const [name] of fields) form.elements[`${group}.${name}`].value = values[name] ?? "";
  }
}

/** The merge patch from `before` to `after` ({limits, budgets}): changed values, null for cleared ones. */
export function policyPatch(before, after) {
  const patch = {};
  for (const [group, fields] of [
    ["limits", LIMITS],
    ["budgets", BUDGETS],
  ]) {
    const changes = {};
    for (const [name] of fields) {
      const old = before[group]?.[name] ?? null;
      const now = after[group]?.[name] ?? null;
      if (old !== now) changes[name] = now;
    }
    if (Object.keys(changes).length) patch[group] = changes;
  }
  return patch;
}

/** "10 req/min · 500 img/day", or `unset` when none is set. */
export function limitsText(limits = {}, unset) {
  const parts = LIMITS.filter(([name]) => limits[name] !== undefined).map(
    ([name, , unit]) => `${integer.format(limits[name])} ${unit}`,
  );
  return parts.length ? parts.join(" · ") : unset;
}

/** "$5.00/day · $100.00/month", or `unset`. */
export function budgetsText(budgets = {}, unset) {
  const parts = BUDGETS.filter(([name]) => budgets[name] !== undefined).map(
    ([name, , unit]) => `${money(budgets[name])}/${unit}`,
  );
  return parts.length ? parts.join(" · ") : unset;
}
