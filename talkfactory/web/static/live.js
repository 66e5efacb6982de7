// Live refresh without a framework: every element with data-refresh="URL" is replaced, every
// data-every seconds (default 2), by the HTML that URL answers. The page works without this script;
// it only saves reloading. Refreshing pauses while the tab is hidden.
(function () {
  "use strict";
  function refresh(el) {
    if (document.hidden) return;
    fetch(el.dataset.refresh, { credentials: "same-origin", headers: { "X-Fragment": "1" } })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        el.innerHTML = html;
        el.dataset.refreshedAt = String(Date.now());
        el.dispatchEvent(new CustomEvent("refreshed", { bubbles: true }));
      })
      .catch(function (err) { el.dataset.refreshError = String(err); });
  }
  function start() {
    document.querySelectorAll("[data-refresh]").forEach(function (el) {
      var every = 1000 * (parseFloat(el.dataset.every) || 2);
      setInterval(function () { refresh(el); }, every);
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
