// Light or dark: the system's choice (prefers-color-scheme) until the person
// picks one with the toggle, which is remembered in this browser. A classic
// script loaded in <head>, so the theme is set before the first paint.
"use strict";
(() => {
  const STORAGE_KEY = "aqueduct-console.theme";
  const systemDark = window.matchMedia("(prefers-color-scheme: dark)");
  const root = document.documentElement;

  function chosen() {
    const stored = localStorage.getItem(STORAGE_KEY);
    return stored === "light" || stored === "dark" ? stored : null;
  }

  function effective() {
    return chosen() ?? (systemDark.matches ? "dark" : "light");
  }

  function apply() {
    // data-theme sets the CSS color-scheme, which light-dark() colours follow.
    const theme = chosen();
    if (theme) root.dataset.theme = theme;
    else delete root.dataset.theme;
    const toggle = document.getElementById("theme-toggle");
    if (toggle) toggle.setAttribute("aria-pressed", String(effective() === "dark"));
  }

  apply();
  systemDark.addEventListener("change", apply);
  document.addEventListener("DOMContentLoaded", () => {
    apply();
    document.getElementById("theme-toggle").addEventListener("click", () => {
      localStorage.setItem(STORAGE_KEY, effective() === "dark" ? "light" : "dark");
      apply();
    });
  });
})();
