// Tokens and teams: lists, creation (a new token's secret shown once), revocation,
// and policies edited in a dialog and sent as a PATCH of what changed.

import { callApi } from "./api.js";
import { copyText, h, showError, table, when } from "./dom.js";
import { budgetsText, fillPolicy, limitsText, policyPatch, readPolicy } from "./policy_fields.js";

const DAY_SECONDS = 86400;

function nameCell(record) {
  return h("span", {}, h("strong", {}, record.name), h("br"), h("code", { class: "hint" }, record.id));
}

export class TokensPanel {
  /** @param report Shows an error of the panel's actions (or clears it: null). */
  constructor(report) {
    this.report = report;
    this.tokens = [];
    this.teams = [];
    this.editing = null; // {kind, record} the policy dialog is editing
    this.tokenList = document.getElementById("tokens");
    this.teamList = document.getElementById("teams");
    this.secret = document.getElementById("token-secret");
    this.dialog = document.getElementById("policy-dialog");
    this.policyForm = document.getElementById("policy-form");

    const createToken = document.getElementById("token-create-form");
    createToken.addEventListener("submit", (event) =>
      this.#submit(event, () => this.#createToken(createToken)),
    );
    const createTeam = document.getElementById("team-create-form");
    createTeam.addEventListener("submit", (event) => this.#submit(event, () => this.#createTeam(createTeam)));
    this.policyForm.addEventListener("submit", (event) => this.#submit(event, () => this.#savePolicy()));
    document.getElementById("policy-cancel").addEventListener("click", () => this.dialog.close());
    document.getElementById("token-secret-copy").addEventListener("click", () => {
      const value = document.getElementById("token-secret-value");
      copyText(value.value, document.getElementById("token-secret-copied"), () => value.select());
    });
    document.getElementById("token-secret-done").addEventListener("click", () => this.#forgetSecret());
  }

  /** Loads tokens, teams and the models a new token may be limited to. */
  async load() {
    const [tokens, teams, models] = await Promise.all([
      callApi("GET", "/admin/v1/tokens"),
      callApi("GET", "/admin/v1/teams"),
      callApi("GET", "/v1/models"),
    ]);
    this.tokens = tokens.body.tokens ?? [];
    this.teams = teams.body.teams ?? [];
    this.#showTokens();
    this.#showTeams();
    this.#showModelChoices(models.body.data.map((model) => model.id));
    for (const select of [
      document.getElementById("new-token-team"),
      document.getElementById("policy-team"),
    ]) {
      this.#fillTeams(select);
    }
  }

  /** Runs a form's action: errors go to the form's own alert, success reloads the lists. */
  async #submit(event, action) {
    event.preventDefault();
    const form = event.target;
    const alert = form.querySelector("[role=alert]");
    const button = form.querySelector("button[type=submit]");
    showError(alert, null);
    button.disabled = true;
    try {
      await action();
      await this.load();
    } catch (error) {
      showError(alert, error);
    } finally {
      button.disabled = false;
    }
  }

  async #createToken(form) {
    const fields = form.elements;
    const body = {
      name: fields.name.value.trim(),
      models: [...form.querySelectorAll("input[name=models]:checked")].map((box) => box.value),
      team: fields.team.value,
      admin: fields.admin.checked,
      ...readPolicy(form),
    };
    if (fields.expires_days.value)
      body.expires_in_seconds = Math.round(Number(fields.expires_days.value) * DAY_SECONDS);
    const { body: created } = await callApi("POST", "/admin/v1/tokens", { json: body });
    form.reset();
    document.getElementById("token-create").open = false;
    this.#showSecret(created.token, created.secret);
  }

  async #createTeam(form) {
    const body = { name: form.elements.name.value.trim(), ...readPolicy(form) };
    await callApi("POST", "/admin/v1/teams", { json: body });
    form.reset();
  }

  #showSecret(token, secret) {
    document.getElementById("token-secret-title").textContent = `Token “${token.name}” created.`;
    document.getElementById("token-secret-copied").textContent = "";
    const value = document.getElementById("token-secret-value");
    value.value = secret;
    this.secret.hidden = false;
    value.focus();
    value.select();
  }

  /** The secret leaves the page: it is shown once, and never again. */
  #forgetSecret() {
    document.getElementById("token-secret-value").value = "";
    this.secret.hidden = true;
    this.tokenList.querySelector("button")?.focus();
  }

  async #revoke(token) {
    if (!confirm(`Revoke the token “${token.name}”? Every request with it is refused from now on.`)) return;
    this.report(null);
    try {
      await callApi("POST", `/admin/v1/tokens/${encodeURIComponent(token.id)}:revoke`);
      await this.load();
    } catch (error) {
      this.report(error);
    }
  }

  #openPolicy(kind, record) {
    this.editing = { kind, record };
    const form = this.policyForm;
    document.getElementById("policy-dialog-title").textContent =
      `${kind === "token" ? "Token" : "Team"} policy: ${record.name}`;
    document.getElementById("policy-owner-fields").hidden = kind !== "token";
    if (kind === "token") {
      form.elements.team.value = record.team_id ?? "";
      form.elements.admin.checked = record.admin;
    }
    fillPolicy(form, record);
    showError(form.querySelector("[role=alert]"), null);
    this.dialog.showModal();
  }

  async #savePolicy() {
    const { kind, record } = this.editing;
    const form = this.policyForm;
    const patch = policyPatch(record, readPolicy(form));
    if (kind === "token") {
      const team = form.elements.team.value || null;
      if (team !== (record.team_id ?? null)) patch.team = team;
      if (form.elements.admin.checked !== record.admin) patch.admin = form.elements.admin.checked;
    }
    if (Object.keys(patch).length) {
      const path = `/admin/v1/${kind === "token" ? "tokens" : "teams"}/${encodeURIComponent(record.id)}/policy`;
      await callApi("PATCH", path, { json: patch });
    }
    this.dialog.close();
  }

  #teamName(id) {
    return this.teams.find((team) => team.id === id)?.name ?? id;
  }

  #fillTeams(select) {
    const chosen = select.value;
    select.replaceChildren(
      h("option", { value: "" }, "No team"),
      ...this.teams.map((team) => h("option", { value: team.id }, team.name)),
    );
    select.value = this.teams.some((team) => team.id === chosen) ? chosen : "";
  }

  #showModelChoices(names) {
    const fieldset = document.getElementById("new-token-models");
    const legend = fieldset.querySelector("legend");
    fieldset.replaceChildren(
      legend,
      ...names.map((name) =>
        h(
          "label",
          { class: "check" },
          h("input", { type: "checkbox", name: "models", value: name }),
          ` ${name}`,
        ),
      ),
    );
  }

  #showTokens() {
    const actions = (token) => {
      const edit = h(
        "button",
        { type: "button" },
        "Policy",
        h("span", { class: "visually-hidden" }, ` of ${token.name}`),
      );
      edit.addEventListener("click", () => this.#openPolicy("token", token));
      if (token.state === "revoked") return h("span", { class: "actions" }, edit);
      const revoke = h(
        "button",
        { type: "button", class: "danger" },
        "Revoke",
        h("span", { class: "visually-hidden" }, ` ${token.name}`),
      );
      revoke.addEventListener("click", () => this.#revoke(token));
      return h("span", { class: "actions" }, edit, revoke);
    };
    if (!this.tokens.length) {
      this.tokenList.replaceChildren(h("p", { class: "hint" }, "No tokens."));
      return;
    }
    this.tokenList.replaceChildren(
      table(
        "Tokens",
        [
          ["Name", nameCell],
          ["State", (token) => h("span", { class: `badge ${token.state}` }, token.state)],
          ["Team", (token) => (token.team_id ? this.#teamName(token.team_id) : "—")],
          ["Models", (token) => (token.models.length ? token.models.join(", ") : "all")],
          ["Admin", (token) => (token.admin ? "yes" : "no")],
          ["Limits", (token) => limitsText(token.limits, "defaults")],
          ["Budgets", (token) => budgetsText(token.budgets, "defaults")],
          ["Created", (token) => when(token.created_at)],
          ["Expires", (token) => (token.expires_at ? when(token.expires_at) : "never")],
          ["", actions],
        ],
        this.tokens,
      ),
    );
    for (const row of this.tokenList.querySelectorAll("tbody tr")) {
      row.dataset.token = row.querySelector("code").textContent;
    }
  }

  #showTeams() {
    if (!this.teams.length) {
      this.teamList.replaceChildren(h("p", { class: "hint" }, "No teams yet."));
      return;
    }
    const actions = (team) => {
      const edit = h(
        "button",
        { type: "button" },
        "Policy",
        h("span", { class: "visually-hidden" }, ` of ${team.name}`),
      );
      edit.addEventListener("click", () => this.#openPolicy("team", team));
      return edit;
    };
    this.teamList.replaceChildren(
      table(
        "Teams",
        [
          ["Name", nameCell],
          [
            "Tokens",
            (team) => String(this.tokens.filter((token) => token.team_id === team.id).length),
            "number",
          ],
          ["Limits", (team) => limitsText(team.limits, "no limits")],
          ["Budgets", (team) => budgetsText(team.budgets, "no budgets")],
          ["Created", (team) => when(team.created_at)],
          ["", actions],
        ],
        this.teams,
      ),
    );
  }
}
