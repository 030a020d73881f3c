// The dashboard: usage charts and breakdowns, tokens, teams. It needs a token with admin scope.

import { savedToken } from "./api.js";
import { describeError, showError } from "./dom.js";
import { addPolicyFields } from "./policy_fields.js";
import { TokensPanel } from "./tokens.js";
import { UsagePanel } from "./usage.js";

export function startDashboard() {
  const alert = document.getElementById("dashboard-error");
  const report = (error) => {
    if (error?.status === 401 || error?.status === 403) {
      const need = error.status === 401 ? "The token was refused" : "This token has no admin scope";
      showError(alert, `${need}: the dashboard needs an admin token. ${describeError(error)}`);
    } else {
      showError(alert, error);
    }
  };
  addPolicyFields(document);
  const usage = new UsagePanel();
  const tokens = new TokensPanel(report);
  let shown = false;

  async function load() {
    report(null);
    if (!savedToken()) {
      showError(alert, "Enter an admin token above to see usage, tokens and teams.");
      return;
    }
    try {
      await Promise.all([usage.load(), tokens.load()]);
    } catch (error) {
      report(error);
    }
  }

  async function loadBreakdown() {
    try {
      await usage.loadBreakdown();
    } catch (error) {
      report(error);
    }
  }

  document.getElementById("usage-since").addEventListener("change", load);
  document.getElementById("breakdown-by").addEventListener("change", loadBreakdown);
  document.getElementById("dashboard-refresh").addEventListener("click", load);
  document.addEventListener("token-changed", () => shown && load());

  return {
    /** The page became visible (or hidden): it loads when shown, so it is never stale. */
    setShown(visible) {
      shown = visible;
      if (visible) load();
    },
  };
}
