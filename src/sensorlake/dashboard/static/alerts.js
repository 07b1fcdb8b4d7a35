// Anomalies and alerts (#/alerts): current alerts with silences, and the anomalies feed.
"use strict";

(function (SL) {
  const { el, fmtTime, fmtRel, fmtCell, store } = SL;
  const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });
  const STATUSES = ["firing", "pending", "resolved"];
  const REFRESH_MS = 5000;

  SL.page("alerts", {
    title: "Alerts",
    async render(ctx) {
      const statusWanted = new Set((ctx.query.get("status") || STATUSES.join(",")).split(",")
        .filter((s) => STATUSES.includes(s)));
      if (!statusWanted.size) STATUSES.forEach((s) => statusWanted.add(s));
      let device = ctx.query.get("device") || "";
      let detector = ctx.query.get("detector") || "";
      let alertsAnswer = null;
      let anomaliesAnswer = null;
      const seenDevices = new Set([...store.devices.keys()]);
      const seenDetectors = new Set();
      if (device) seenDevices.add(device);
      if (detector) seenDetectors.add(detector);

      const chips = STATUSES.map((s) => el("button", {
        type: "button", class: "chip chip-" + s, testid: "status-chip-" + s, text: s,
        "aria-pressed": statusWanted.has(s) ? "true" : "false",
        onclick: (e) => {
          if (statusWanted.has(s)) statusWanted.delete(s); else statusWanted.add(s);
          e.currentTarget.setAttribute("aria-pressed", statusWanted.has(s) ? "true" : "false");
          saveQuery();
          showAlerts();
        },
      }));
      const deviceSelect = el("select", { id: "alert-device", testid: "alert-device-filter" });
      const detectorSelect = el("select", { id: "alert-detector", testid: "alert-detector-filter" });
      const alertsBox = el("div", { testid: "alerts-list" }, el("p", { class: "muted", text: "Loading…" }));
      const alertsMeta = el("p", { class: "muted small", testid: "alerts-meta" });
      const silencesBox = el("div", { testid: "silences-list" });
      const anomaliesBox = el("div", { testid: "anomalies-list" }, el("p", { class: "muted", text: "Loading…" }));
      const anomaliesMeta = el("p", { class: "muted small" });

      ctx.root.append(el("section", { class: "page", "aria-labelledby": "alerts-title" },
        el("div", { class: "page-head" }, el("h1", { id: "alerts-title", text: "Anomalies and alerts" })),
        el("form", { class: "toolbar", onsubmit: (e) => e.preventDefault() },
          el("div", { class: "field" }, el("span", { class: "label", id: "status-label", text: "Status" }),
            el("div", { class: "chips", role: "group", "aria-labelledby": "status-label" }, chips)),
          el("div", { class: "field" }, el("label", { for: deviceSelect.id, text: "Device" }), deviceSelect),
          el("div", { class: "field" }, el("label", { for: detectorSelect.id, text: "Detector" }), detectorSelect)),
        el("h2", { class: "section-title", text: "Alerts" }), alertsMeta, alertsBox,
        el("h2", { class: "section-title", text: "Silences" }), silencesBox,
        el("h2", { class: "section-title", text: "Anomalies" }), anomaliesMeta, anomaliesBox));

      function saveQuery() {
        const status = STATUSES.filter((s) => statusWanted.has(s));
        ctx.setQuery({ device, detector, status: status.length === STATUSES.length ? "" : status.join(",") });
      }

      function fillSelect(select, values, current, allLabel) {
        const wanted = ["", ...[...values].sort(collator.compare)];
        const have = [...select.options].map((o) => o.value);
        if (JSON.stringify(have) !== JSON.stringify(wanted)) {
          select.replaceChildren(...wanted.map((v) => el("option", { value: v, text: v || allLabel })));
        }
        select.value = current;
      }
      function fillFilters() {
        fillSelect(deviceSelect, seenDevices, device, "All devices");
        fillSelect(detectorSelect, seenDetectors, detector, "All detectors");
      }
      deviceSelect.addEventListener("change", () => {
        device = deviceSelect.value;
        saveQuery();
        showAlerts();
        loadAnomalies(true);
      });
      detectorSelect.addEventListener("change", () => {
        detector = detectorSelect.value;
        saveQuery();
        showAlerts();
        loadAnomalies(true);
      });

      // ---- alerts

      async function loadAlerts() {
        let answer;
        try {
          answer = await ctx.api("/api/v1/alerts");
        } catch (e) {
          if (SL.isQuiet(e)) throw e;
          alertsBox.replaceChildren(SL.errorBox(e, "alerts-error"));
          return;
        }
        const list = answer && Array.isArray(answer.alerts) ? answer.alerts : [];
        for (const a of list) {
          if (a.device != null) seenDevices.add(String(a.device));
          if (a.detector != null) seenDetectors.add(String(a.detector));
        }
        if (SL.live.state !== "live") store.setAlerts(store.alertsFromList(list));
        const same = alertsAnswer && JSON.stringify(alertsAnswer) === JSON.stringify(answer);
        alertsAnswer = answer;
        fillFilters();
        alertsMeta.textContent = answer && answer.as_of ? "As of " + fmtTime(answer.as_of) : "";
        if (!same) { showAlerts(); showSilences(); }
      }

      function showAlerts() {
        if (!alertsAnswer) return;
        const list = (Array.isArray(alertsAnswer.alerts) ? alertsAnswer.alerts : []).filter((a) =>
          statusWanted.has(String(a.status)) && (!device || String(a.device) === device)
          && (!detector || String(a.detector) === detector));
        const order = { firing: 0, pending: 1, resolved: 2 };
        list.sort((a, b) => (order[a.status] ?? 3) - (order[b.status] ?? 3)
          || collator.compare(String(a.device), String(b.device)));
        keepFocus(alertsBox, () => {
          if (!list.length) {
            const total = Array.isArray(alertsAnswer.alerts) ? alertsAnswer.alerts.length : 0;
            alertsBox.replaceChildren(el("p", { class: "empty", testid: "alerts-empty",
              text: total ? "No alert matches the filter." : "No alert is firing or pending." }));
            return;
          }
          const rows = list.map((a) => alertRow(a));
          alertsBox.replaceChildren(SL.table(
            ["Status", "Device", "Detector", "Kind", "Field", "Value", "Expected", "Severity", "Since", ""],
            rows, { testid: "alerts-table", label: "Alerts" }));
        });
      }

      function alertRow(a) {
        const status = String(a.status || "");
        const dev = a.device != null ? String(a.device) : "";
        const kind = status === "firing" ? "danger" : status === "pending" ? "warn" : "ok";
        const since = a.fired_at || a.since || a.ts;
        const silenceButton = dev ? el("button", {
          type: "button", class: "button button-small", testid: "silence-button", text: "Silence",
          dataset: { device: dev, focusKey: "silence:" + dev + ":" + a.detector + ":" + a.field },
          "aria-label": "Silence alerts of " + dev,
          onclick: () => silenceDialog(dev),
        }) : null;
        return el("tr", { testid: "alert-row", dataset: { device: dev, status } },
          el("td", {}, SL.badge(status, kind), a.silenced ? el("span", { class: "badge badge-neutral", text: "silenced" }) : null),
          el("td", {}, dev ? SL.deviceLink(dev) : ""),
          el("td", { text: fmtCell(a.detector) }),
          el("td", { text: fmtCell(a.kind) }),
          el("td", { text: fmtCell(a.field) }),
          el("td", { text: a.value_text != null ? String(a.value_text) : fmtCell(a.value) }),
          el("td", { text: fmtCell(a.expected) }),
          el("td", { text: fmtCell(a.severity) }),
          el("td", { class: "nowrap", title: since ? fmtTime(since) : "", text: since ? fmtRel(since) : "—" }),
          el("td", {}, silenceButton));
      }

      // ---- silences

      function showSilences() {
        const list = alertsAnswer && Array.isArray(alertsAnswer.silences) ? alertsAnswer.silences : [];
        keepFocus(silencesBox, () => {
          if (!list.length) {
            silencesBox.replaceChildren(el("p", { class: "empty", testid: "silences-empty", text: "No device is silenced." }));
            return;
          }
          silencesBox.replaceChildren(el("ul", { class: "silences" }, list.map((s) => {
            const dev = String(s.device);
            const err = el("div", { class: "inline-error" });
            return el("li", { class: "silence", testid: "silence-row", dataset: { device: dev } },
              el("div", { class: "silence-text" },
                el("strong", {}, SL.deviceLink(dev)),
                el("span", { class: "muted", title: fmtTime(s.until), text: " until " + fmtTime(s.until) }),
                s.comment ? el("span", { class: "silence-comment", text: " — " + s.comment }) : null),
              el("button", {
                type: "button", class: "button button-small", testid: "unsilence-button", text: "Unsilence",
                "aria-label": "Unsilence " + dev, dataset: { focusKey: "unsilence:" + dev },
                onclick: async (e) => {
                  const button = e.currentTarget;
                  button.disabled = true;
                  err.replaceChildren();
                  try {
                    await ctx.api("/api/v1/alerts/silences/" + encodeURIComponent(dev), { method: "DELETE" });
                    alertsAnswer = null;
                    await loadAlerts();
                  } catch (ex) {
                    if (SL.isQuiet(ex)) return;
                    button.disabled = false;
                    err.replaceChildren(SL.errorBox(ex, "unsilence-error"));
                  }
                },
              }), err);
          })));
        });
      }

      async function silenceDialog(dev) {
        const done = await SL.dialog({
          title: "Silence " + dev,
          message: "No notification is sent for this device's alerts while it is silenced.",
          testid: "silence-dialog",
          submitLabel: "Silence",
          submitTestid: "silence-submit",
          fields: [
            { name: "preset", label: "For", type: "radio", value: "2h", testid: "silence-for",
              options: [["1h", "1 hour"], ["2h", "2 hours"], ["1d", "1 day"], ["custom", "Other:"]] },
            { name: "custom", label: "Other duration", placeholder: "e.g. 30m, 90m, 3d", testid: "silence-custom",
              hint: "Used when Other is chosen (or when filled in)." },
            { name: "comment", label: "Comment (optional)", type: "textarea", testid: "silence-comment" },
          ],
          onSubmit: async (v) => {
            const custom = (v.custom || "").trim();
            const duration = custom || (v.preset !== "custom" ? v.preset : "");
            if (!duration) throw new Error("Enter a duration such as 30m, 2h or 1d");
            return ctx.api("/api/v1/alerts/silences", {
              method: "POST", json: { device: dev, for: duration, comment: (v.comment || "").trim() },
            });
          },
        });
        if (done) {
          alertsAnswer = null;
          try { await loadAlerts(); } catch (e) { /* shown there */ }
        }
      }

      // ---- anomalies

      async function loadAnomalies(force) {
        const q = new URLSearchParams({ limit: "200" });
        if (device) q.set("device", device);
        if (detector) q.set("detector", detector);
        const wantDevice = device;
        const wantDetector = detector;
        let answer;
        try {
          answer = await ctx.api("/api/v1/anomalies?" + q.toString());
        } catch (e) {
          if (SL.isQuiet(e)) throw e;
          anomaliesBox.replaceChildren(SL.errorBox(e, "anomalies-error"));
          return;
        }
        if (wantDevice !== device || wantDetector !== detector) return;
        const list = answer && Array.isArray(answer.anomalies) ? answer.anomalies : [];
        for (const a of list) {
          if (a.device_id != null) seenDevices.add(String(a.device_id));
          if (a.detector != null) seenDetectors.add(String(a.detector));
        }
        fillFilters();
        const same = !force && anomaliesAnswer && JSON.stringify(anomaliesAnswer.anomalies) === JSON.stringify(list);
        anomaliesAnswer = answer;
        anomaliesMeta.textContent = list.length
          ? "The latest " + list.length + " anomal" + (list.length === 1 ? "y" : "ies")
            + (device || detector ? " matching the filter" : "") : "";
        if (same) return;
        if (!list.length) {
          anomaliesBox.replaceChildren(el("p", { class: "empty", testid: "anomalies-empty",
            text: device || detector ? "No anomaly matches the filter." : "No anomaly was detected yet." }));
          return;
        }
        keepFocus(anomaliesBox, () => {
          anomaliesBox.replaceChildren(SL.table(
            ["Time", "Device", "Detector", "Kind", "Field", "Value", "Expected", "Severity"],
            list.map((a) => el("tr", { testid: "anomaly-row", dataset: { device: a.device_id, detector: a.detector } },
              el("td", { class: "nowrap", title: a.ts || "", text: fmtTime(a.ts) }),
              el("td", {}, a.device_id != null ? SL.deviceLink(String(a.device_id)) : ""),
              el("td", { text: fmtCell(a.detector) }),
              el("td", { text: fmtCell(a.kind) }),
              el("td", { text: fmtCell(a.field) }),
              el("td", { text: fmtCell(a.value_text != null ? a.value_text : a.value) }),
              el("td", { text: fmtCell(a.expected) }),
              el("td", {}, a.severity ? el("span", { class: "severity severity-" + String(a.severity).toLowerCase(), text: String(a.severity) }) : ""))),
            { testid: "anomalies-table", label: "Anomalies" }));
        });
      }

      fillFilters();
      saveQuery();
      await Promise.allSettled([loadAlerts(), loadAnomalies(true)]);
      if (!ctx.alive) return;
      ctx.ready();
      ctx.poll(REFRESH_MS, () => Promise.all([loadAlerts(), loadAnomalies(false)]));
    },
  });

  /** Re-renders without losing the keyboard focus on a button that is drawn again. */
  function keepFocus(box, fn) {
    const active = document.activeElement;
    const key = active && box.contains(active) ? active.dataset.focusKey : null;
    fn();
    if (key) {
      const again = [...box.querySelectorAll("[data-focus-key]")].find((n) => n.dataset.focusKey === key);
      if (again) again.focus();
    }
  }
})(window.SL);
