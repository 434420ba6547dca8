// What htmx cannot do on the chat page: copy buttons, clearing the message box once a
// run took it, and reconnecting the run's websocket with the last event this page
// has, so the server sends only what it missed. Here, not in hx-on attributes: the
// Content-Security-Policy runs no inline script.
(function () {
  "use strict";

  // The ws extension reconnects to the URL it read when the page loaded; the page
  // has moved on since. Every live message updates #run-last-seq, so read it here.
  function withLastSeq(url) {
    var marker = document.getElementById("run-last-seq");
    if (!marker || !/\/ws\/runs\/\d+\//.test(url)) {
      return url;
    }
    var target = new URL(url, window.location.href);
    target.searchParams.set("after", marker.dataset.seq || "0");
    return target.toString();
  }

  if (window.htmx && htmx.createWebSocket) {
    var createWebSocket = htmx.createWebSocket;
    htmx.createWebSocket = function (url) {
      return createWebSocket(withLastSeq(url));
    };
  }

  // A message the run took is cleared from the box (not on a refusal, which the
  // person may want to edit and send again).
  document.addEventListener("htmx:afterRequest", function (event) {
    var form = event.detail.elt;
    if (form && form.id === "run-form" && event.detail.successful) {
      form.elements.message.value = "";
    }
  });

  // The Runs sidebar marks the run this page shows. The sidebar may come over the
  // session's socket (a run was added), rendered for every viewer alike: mark it here.
  function markCurrentRun() {
    var panel = document.getElementById("run-panel");
    var shown = panel && panel.dataset.runId ? "run-row-" + panel.dataset.runId : "";
    document.querySelectorAll("#run-history li[id^='run-row-']").forEach(function (row) {
      row.classList.toggle("current", row.id === shown);
    });
  }
  document.addEventListener("htmx:wsAfterMessage", markCurrentRun);
  document.addEventListener("htmx:afterSettle", markCurrentRun);

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    var area = document.createElement("textarea");
    area.value = text;
    document.body.appendChild(area);
    area.select();
    document.execCommand("copy");
    area.remove();
    return Promise.resolve();
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-copy]");
    if (!button) {
      return;
    }
    var source = document.getElementById(button.dataset.copy);
    if (!source) {
      return;
    }
    copyText(source.textContent).then(function () {
      button.classList.add("copied");
      button.textContent = "Copied";
      setTimeout(function () {
        button.classList.remove("copied");
        button.textContent = "Copy";
      }, 1500);
    });
  });
})();
