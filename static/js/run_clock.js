// The run's wall-clock meter, ticking every second in the browser. The server says
// when a working run's clock started (`data-clock-since` on #run-status, its pauses
// left out) only at status changes, which may be 15 s apart in a streaming step; the
// page counts up from there. It stops as soon as the status carries no clock (the run
// waits for an approval, is stopping or stopped). It reads the DOM at every tick, so
// htmx replacing the status or the meter (a live frame, a new run's panel) is fine.
(function () {
  "use strict";

  var WORKING = { thinking: true, streaming: true, tool_running: true };
  // The browser's clock minus the server's, per status element: measured when the
  // element first shows, from the time the server rendered it.
  var skews = new WeakMap();

  // As routing.budgets.meter_state: amber from 60%, red above 85%.
  function level(percent) {
    if (percent > 85) {
      return "critical";
    }
    return percent >= 60 ? "warning" : "ok";
  }

  function tick() {
    var status = document.getElementById("run-status");
    var row = document.getElementById("budget-wall_clock");
    if (!status || !row || !status.dataset.clockSince || !WORKING[status.dataset.status]) {
      return;
    }
    var now = Date.now() / 1000;
    if (!skews.has(status)) {
      skews.set(status, now - parseFloat(status.dataset.renderedAt || String(now)));
    }
    var used = Math.max(0, now - skews.get(status) - parseFloat(status.dataset.clockSince));
    var limit = parseFloat(row.dataset.limit || "0");
    var percent = limit ? Math.min(100, Math.floor((used * 100) / limit)) : 0;
    var value = row.querySelector(".meter-value");
    if (value) {
      value.textContent =
        Math.round(used) + " s of " + (limit ? Math.round(limit) + " s" : "—") + " · " + percent + "%";
    }
    var meter = row.querySelector("svg.meter");
    if (meter) {
      meter.setAttribute("class", "meter level-" + level(percent));
      meter.setAttribute("aria-valuenow", String(percent));
      var fill = meter.querySelector(".meter-fill");
      if (fill) {
        fill.setAttribute("width", percent + "%");
      }
    }
  }

  setInterval(tick, 1000);
  // A live frame may have put the server's older reading back: tick at once.
  document.addEventListener("htmx:wsAfterMessage", tick);
  document.addEventListener("htmx:afterSwap", tick);
})();
