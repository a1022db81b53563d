// Leash dashboard: a little plain JavaScript, no build step, nothing fetched
// from elsewhere. Pages work without it; with it they refresh themselves,
// ask before destructive buttons, and select all rows of a page at once.
"use strict";

(function () {
  const REFRESH_KEY = "leash.refresh";
  const seconds = Number(document.body.dataset.refreshS || "5");
  let timer = null;

  function enabled() {
    return window.localStorage.getItem(REFRESH_KEY) !== "off";
  }

  // The page is refreshed unless the operator is in the middle of something:
  // rows selected, a field being typed in, or the tab not shown.
  function busy() {
    const active = document.activeElement;
    if (active && (active.tagName === "INPUT" || active.tagName === "TEXTAREA")) return true;
    if (document.querySelector("main input[type=checkbox]:checked")) return true;
    if (document.querySelector("details[open]")) return true;
    return document.hidden;
  }

  async function refresh() {
    if (!enabled() || busy()) return;
    try {
      const response = await fetch(window.location.href, {
        credentials: "same-origin",
        headers: { "X-Leash-Refresh": "1" },
      });
      if (!response.ok || response.redirected) return;
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = page.getElementById("live");
      const live = document.getElementById("live");
      if (fresh && live && !busy()) {
        // What the last action said stays on screen until the next one.
        const said = fresh.querySelector(".flash") ? [] : Array.from(live.querySelectorAll(".flash"));
        live.replaceChildren(...said, ...fresh.childNodes);
        wire(live);
      }
    } catch (error) {
      // the broker or the dashboard is restarting: try again next time
    }
  }

  function schedule() {
    if (timer !== null) window.clearInterval(timer);
    timer = enabled() ? window.setInterval(refresh, seconds * 1000) : null;
    const toggle = document.getElementById("refresh-toggle");
    if (toggle) {
      toggle.hidden = false;
      toggle.textContent = enabled() ? "Auto-refresh on" : "Auto-refresh off";
      toggle.setAttribute("aria-pressed", enabled() ? "true" : "false");
    }
  }

  function wire(root) {
    root.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.dataset.confirm)) event.preventDefault();
      });
    });
    root.querySelectorAll("button[data-confirm]").forEach(function (button) {
      button.addEventListener("click", function (event) {
        if (!window.confirm(button.dataset.confirm)) event.preventDefault();
      });
    });
    root.querySelectorAll("input.select-all").forEach(function (all) {
      all.addEventListener("change", function () {
        const table = all.closest("table");
        table.querySelectorAll("input[name=id]").forEach(function (box) {
          box.checked = all.checked;
        });
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    wire(document);
    const toggle = document.getElementById("refresh-toggle");
    if (toggle) {
      toggle.addEventListener("click", function () {
        window.localStorage.setItem(REFRESH_KEY, enabled() ? "off" : "on");
        schedule();
      });
    }
    schedule();
  });
})();
