// Device (#/devices/NAME): a chart per numeric field, anomalies marked, the latest readings.
"use strict";

(function (SL) {
  const { el, fmtNum, fmtRel, fmtTime, store, toMs, nums } = SL;

  const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });
  const LIVE_MAX_POINTS = 20000;

  SL.page("device", {
    title: "Device",
    async render(ctx) {
      const name = ctx.params.name;
      document.title = name + " · sensorlake";
      let range = SL.rangeFromQuery(ctx.query, "24h");
      let loadRun = 0;

      const status = el("span", { class: "badge", testid: "device-status" });
      const meta = el("p", { class: "muted", testid: "device-meta" });
      const resetZoom = el("button", {
        type: "button", class: "button", testid: "reset-zoom", text: "Reset zoom", hidden: true,
        onclick: () => {
          if (range.kind === "zoom") setRange(range.base);
        },
      });
      const picker = SL.rangePicker(range, (r) => setRange(r));
      const rangeText = el("p", { class: "muted small", testid: "range-text", "aria-live": "polite" });
      const chartsBox = el("div", { class: "charts", testid: "charts" });
      const errors = el("div", {});
      const latestBox = el("div", { testid: "latest-readings" }, el("p", { class: "muted", text: "Loading…" }));
      root(ctx).append(el("section", { class: "page", "aria-labelledby": "device-title" },
        el("nav", { class: "breadcrumb", "aria-label": "Breadcrumb" },
          el("a", { href: "#/", text: "Overview" }), el("span", { "aria-hidden": "true", text: " / " }),
          el("span", { "aria-current": "page", text: name })),
        el("div", { class: "page-head" },
          el("h1", { id: "device-title", class: "device-title" }, name, " ", status),
          meta,
          el("a", { class: "small", href: "#/alerts?device=" + encodeURIComponent(name), text: "Alerts and anomalies of this device" })),
        el("div", { class: "toolbar toolbar-range" }, picker.node, resetZoom),
        rangeText, errors, chartsBox,
        el("h2", { class: "section-title", text: "Latest readings" }), latestBox));

      const charts = new Map(); // field → {chart, host, caption, data, source}
      ctx.cleanup(() => { for (const c of charts.values()) c.chart.destroy(); });

      function showHead() {
        const d = store.devices.get(name);
        if (!d) {
          status.textContent = "unknown";
          status.className = "badge badge-off";
          return;
        }
        const online = store.isOnline(d);
        status.textContent = online === true ? "online" : online === false ? "offline" : "unknown";
        status.className = "badge " + (online === true ? "badge-ok" : "badge-off");
        const parts = [];
        if (d.topic) parts.push(d.topic);
        parts.push(d.last_seen ? "last seen " + fmtRel(d.last_seen) : "no reading yet");
        meta.textContent = parts.join(" · ");
        meta.title = d.last_seen ? fmtTime(d.last_seen) : "";
      }

      function setRange(r) {
        range = r;
        picker.set(r);
        resetZoom.hidden = r.kind !== "zoom";
        ctx.setQuery(SL.rangeToQuery(r));
        loadCharts();
      }

      function zoom(min, max) {
        const base = range.kind === "zoom" ? range.base : range;
        setRange({ kind: "zoom", from: min * 1000, to: max * 1000, base });
      }

      function chartFor(field, index) {
        let c = charts.get(field);
        if (c) return c;
        const host = el("div", { class: "chart", testid: "chart", dataset: { field } });
        const caption = el("p", { class: "chart-source", testid: "chart-source", text: "Loading…" });
        const headingId = "chart-" + index + "-title";
        const fig = el("figure", { class: "chart-card", "aria-labelledby": headingId },
          el("figcaption", {}, el("h2", { id: headingId, class: "chart-title", text: field })),
          host, caption);
        chartsBox.append(fig);
        const chart = new SL.Chart(host, {
          syncKey: "device", onZoom: zoom,
          emptyText: "No readings of " + field + " in this range",
        });
        c = { chart, host, caption, field, index, data: null, source: null };
        charts.set(field, c);
        return c;
      }

      async function loadCharts() {
        const run = ++loadRun;
        const r = SL.resolveRange(range);
        rangeText.textContent = (range.kind === "zoom" ? "Zoomed to " : "From ") + fmtTime(r.from) + " to " + fmtTime(r.to);
        const d = store.devices.get(name);
        const fields = d ? SL.numericFields(d.values).sort(collator.compare) : [];
        if (!fields.length) {
          chartsBox.replaceChildren(el("p", { class: "empty", testid: "no-fields",
            text: d ? "This device has sent no numeric value yet." : "No device " + name + " is known." }));
          return;
        }
        for (const c of charts.values()) c.caption.textContent = "Loading…";
        const q = new URLSearchParams({ device: name, since: r.from.toISOString(), until: r.to.toISOString(), limit: "500" });
        const anomaliesP = ctx.api("/api/v1/anomalies?" + q.toString())
          .then((a) => (a && Array.isArray(a.anomalies) ? a.anomalies : []))
          .catch((e) => { if (e instanceof SL.GoneError) throw e; return null; });
        const answers = await Promise.allSettled(fields.map((f) => SL.fetchChart(ctx, f, [name], r)));
        let anomalies;
        try { anomalies = await anomaliesP; } catch (e) { return; }
        if (run !== loadRun || !ctx.alive) return;
        const failed = [];
        fields.forEach((field, i) => {
          const c = chartFor(field, i);
          const answer = answers[i];
          if (answer.status === "rejected") {
            if (SL.isQuiet(answer.reason)) return;
            failed.push([field, answer.reason]);
            c.caption.replaceChildren(SL.errorBox(answer.reason, "chart-error"));
            return;
          }
          drawField(c, answer.value, (anomalies || []).filter((a) => a && a.field === field), r);
        });
        errors.replaceChildren();
        if (anomalies === null) {
          errors.append(el("p", { class: "muted small", text: "Anomalies could not be loaded for this range." }));
        }
      }

      function drawField(c, answer, anomalies, r) {
        const series = (answer && Array.isArray(answer.series)) ? answer.series : [];
        const s = series.find((x) => x && String(x.device_id) === name) || series[0] || {};
        const t = nums(s.t);
        const keep = t.map((v, i) => (v == null ? -1 : i)).filter((i) => i >= 0);
        const pickAt = (arr) => keep.map((i) => (arr[i] === undefined ? null : arr[i]));
        const xs = pickAt(t);
        const avg = pickAt(nums(s.avg));
        const source = answer && answer.source ? String(answer.source) : "raw";
        const rollup = source !== "raw" && Array.isArray(s.min) && Array.isArray(s.max);
        const color = c.index;
        let spec;
        if (rollup) {
          spec = {
            lines: [{ label: "avg", color }, { label: "min", color, faint: true }, { label: "max", color, faint: true }],
            bands: [[3, 2, color]],
            data: [xs, avg, pickAt(nums(s.min)), pickAt(nums(s.max))],
          };
        } else {
          spec = { lines: [{ label: c.field, color }], bands: [], data: [xs, avg] };
        }
        spec.range = { min: r.from.getTime() / 1000, max: r.to.getTime() / 1000 };
        spec.anomalies = anomalies.map((a) => ({
          t: toMs(a.ts) / 1000, v: typeof a.value === "number" ? a.value : null,
        })).filter((a) => Number.isFinite(a.t));
        c.data = spec.data;
        c.source = source;
        c.chart.draw(spec);
        showCaption(c, answer, spec.anomalies.length);
      }

      function showCaption(c, answer, anomalyCount) {
        const points = c.data[0].length;
        c.host.dataset.source = c.source;
        c.host.dataset.points = String(points);
        c.host.dataset.anomalies = String(anomalyCount);
        const parts = [SL.sourceLabel(c.source), points.toLocaleString() + " point" + (points === 1 ? "" : "s")];
        if (answer && answer.step_s) parts.push("step " + SL.fmtAge(answer.step_s));
        if (anomalyCount) parts.push(anomalyCount + " anomal" + (anomalyCount === 1 ? "y" : "ies") + " marked");
        c.caption.textContent = parts.join(" · ");
      }

      /** A live event for this device: the new values at the live edge of raw charts. */
      function appendLive() {
        if (!SL.RANGE_SECONDS[range.kind]) return;
        const d = store.devices.get(name);
        if (!d) return;
        const t = toMs(d.last_seen) / 1000;
        if (!Number.isFinite(t)) return;
        const now = Date.now() / 1000;
        const from = now - SL.RANGE_SECONDS[range.kind];
        for (const c of charts.values()) {
          if (c.source !== "raw" || !c.data) continue;
          const v = d.values ? d.values[c.field] : undefined;
          if (typeof v !== "number" || !Number.isFinite(v)) continue;
          const [xs, ys] = c.data;
          if (xs.length && t <= xs[xs.length - 1]) continue;
          xs.push(t);
          ys.push(v);
          let drop = 0;
          while (drop < xs.length && xs[drop] < from) drop++;
          if (xs.length - drop > LIVE_MAX_POINTS) drop = xs.length - LIVE_MAX_POINTS;
          if (drop) { xs.splice(0, drop); ys.splice(0, drop); }
          c.chart.update(c.data, { min: from, max: Math.max(now, t) });
          c.host.dataset.points = String(xs.length);
          const caption = c.caption.textContent.split(" · ");
          if (caption.length > 1) {
            caption[1] = xs.length.toLocaleString() + " point" + (xs.length === 1 ? "" : "s");
            c.caption.textContent = caption.join(" · ");
          }
        }
      }

      async function loadLatest() {
        const sql = "SELECT * FROM telemetry WHERE device_id = '" + name.replace(/'/g, "''")
          + "' ORDER BY ts DESC LIMIT 50";
        try {
          const result = await ctx.api("/api/v1/query", { method: "POST", json: { sql, max_rows: 50 } });
          latestBox.replaceChildren(SL.resultTable(result, { testid: "latest-table", rowTestid: "reading-row", label: "Latest readings of " + name }));
        } catch (e) {
          if (e instanceof SL.GoneError) return;
          const box = SL.errorBox(e, "latest-error");
          latestBox.replaceChildren(box || el("p", { class: "muted", text: "" }));
        }
      }

      ctx.on(store, "devices", (ev) => {
        if (!ev || !ev.changed || !ev.changed.has(name)) return;
        showHead();
        if (ev.live) appendLive();
      });
      ctx.every(1000, showHead);

      try {
        await store.load(ctx);
      } catch (e) {
        if (SL.isQuiet(e)) return;
        errors.replaceChildren(SL.errorBox(e, "page-error"));
      }
      showHead();
      await Promise.allSettled([loadCharts(), loadLatest()]);
      ctx.ready();
    },
  });

  function root(ctx) { return ctx.root; }

  /** A query answer as a table: times in the local zone (the value as sent in the title). */
  function resultTable(result, opts = {}) {
    const columns = (result && Array.isArray(result.columns)) ? result.columns : [];
    const types = (result && Array.isArray(result.types)) ? result.types : [];
    const rows = (result && Array.isArray(result.rows)) ? result.rows : [];
    const from = opts.from || 0;
    const to = Math.min(rows.length, opts.to == null ? rows.length : opts.to);
    const isTime = columns.map((_, i) => /TIMESTAMP|DATE|TIME/i.test(String(types[i] || "")));
    const body = [];
    for (let r = from; r < to; r++) {
      const row = rows[r] || [];
      body.push(el("tr", { testid: opts.rowTestid || "row" }, columns.map((_, i) => cell(row[i], isTime[i]))));
    }
    if (!columns.length) return el("p", { class: "muted", text: "The query answered no columns." });
    const heads = columns.map((c, i) => ({
      text: String(c), num: /INT|DOUBLE|FLOAT|DECIMAL|REAL|NUMERIC/i.test(String(types[i] || "")),
    }));
    const wrap = SL.table(heads, body, { testid: opts.testid, label: opts.label });
    if (!rows.length) wrap.append(el("p", { class: "muted table-empty", text: "No rows." }));
    return wrap;
  }

  function cell(v, isTime) {
    if (v == null) return el("td", { class: "null", text: "null" });
    if (isTime && typeof v === "string") {
      const ms = Date.parse(v);
      if (Number.isFinite(ms)) return el("td", { class: "nowrap", title: v, text: fmtTime(ms) });
    }
    if (typeof v === "number") return el("td", { class: "num", title: String(v), text: fmtNum(v) });
    if (typeof v === "boolean") return el("td", { text: String(v) });
    return el("td", { text: typeof v === "object" ? JSON.stringify(v) : String(v) });
  }

  SL.resultTable = resultTable;
})(window.SL);
