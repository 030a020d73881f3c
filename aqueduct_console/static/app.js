// The console's entry point: the token box, and which page is shown (#playground, #dashboard).

import { savedToken, saveToken } from "./api.js";
import { startDashboard } from "./dashboard.js";
import { startPlayground } from "./playground.js";

const PAGES = ["playground", "dashboard"];

function startTokenBox() {
  const form = document.getElementById("token-form");
  const input = document.getElementById("token-input");
  const status = document.getElementById("token-status");
  const show = () => {
    const token = savedToken();
    // Only the last characters: enough to tell tokens apart, not to use one.
    status.textContent = token
      ? `Using the token ending “…${token.slice(-4)}” (this tab only).`
      : "No token yet.";
    document.getElementById("token-forget").disabled = !token; // disabled, not hidden: nothing moves
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    saveToken(input.value.trim());
    input.value = "";
  });
  document.getElementById("token-forget").addEventListener("click", () => saveToken(""));
  document.addEventListener("token-changed", show);
  show();
}

function startPages(dashboard) {
  let current = null;
  const show = (moveFocus) => {
    const wanted = location.hash.slice(1);
    if (current && !PAGES.includes(wanted)) return; // an in-page link, such as "Skip to content"
    current = PAGES.includes(wanted) ? wanted : PAGES[0];
    for (const page of PAGES) document.getElementById(page).hidden = page !== current;
    for (const link of document.querySelectorAll(".page-links a")) {
      if (link.hash === `#${current}`) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    document.title = `${current[0].toUpperCase()}${current.slice(1)} · Aqueduct console`;
    dashboard.setShown(current === "dashboard");
    // After a link, a keyboard or screen reader user lands on the page's heading.
    if (moveFocus) document.getElementById(`${current}-title`).focus();
  };
  window.addEventListener("hashchange", () => show(true));
  show(false);
}

startTokenBox();
startPlayground();
startPages(startDashboard());
