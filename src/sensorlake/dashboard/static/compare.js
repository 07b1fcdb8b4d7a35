// Compare (#/compare): one field, several devices, one chart.
"use strict";

(function (SL) {
  const { el, fmtTime, store } = SL;
  const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

  SL.page("compare", {
    title: "Compare",
    async render(ctx) {
      let range = SL.rangeFromQuery(ctx.query, "7d");
      let run = 0;
      const fieldSelect = el("select", { id: "compare-field", testid: "compare-field" });
      const all = el("input", { type: "checkbox", id: "compare-all", testid: "compare-all" });
      const checks = el("div", { class: "checks", testid: "compare-devices" });
      const picker = SL.rangePicker(range, (r) => setRange(r));
      const resetZoom = el("button", {
        type: "button", class: "button", testid: "reset-zoom", text: "Reset zoom", hidden: true,
        onclick: () => { if (range.kind === "zoom") setRange(range.base); },
      });
      const rangeText = el("p", { class: "muted small", testid: "range-text", "aria-live": "polite" });
      const host = el("div", { class: "chart", testid: "chart" });
      const caption = el("p", { class: "chart-source", testid: "chart-source" });
      const errors = el("div", {});
      const chart = new SL.Chart(host, { onZoom: zoom, height: window.innerWidth < 600 ? 240 : 360 });
      ctx.cleanup(() => chart.destroy());

      ctx.root.append(el("section", { class: "page", "aria-labelledby": "compare-title" },
        el("div", { class: "page-head" }, el("h1", { id: "compare-title", text: "Compare devices" })),
        errors,
        el("div", { class: "compare-layout" },
          el("form", { class: "panel compare-controls", onsubmit: (e) => e.preventDefault() },
            el("div", { class: "field" }, el("label", { for: fieldSelect.id, text: "Field" }), fieldSelect),
            el("fieldset", { class: "field device-picks" },
              el("legend", { text: "Devices" }),
              el("label", { class: "choice choice-all", for: all.id }, all, " All devices"),
              checks)),
          el("div", { class: "compare-main" },
            el("div", { class: "toolbar toolbar-range" }, picker.node, resetZoom),
            rangeText,
            el("figure", { class: "chart-card" }, host, caption)))));

      try {
        await store.load(ctx);
      } catch (e) {
        if (SL.isQuiet(e)) return;
        errors.replaceChildren(SL.errorBox(e, "page-error"));
      }
      const devices = [...store.devices.keys()].sort(collator.compare);
      const fieldSet = new Set();
      for (const d of store.devices.values()) for (const f of SL.numericFields(d.values)) fieldSet.add(f);
      const fields = [...fieldSet].sort(collator.compare);
      const wanted = ctx.query.get("field");
      const field0 = fields.includes(wanted) ? wanted : (wanted || fields[0] || "");
      if (wanted && !fields.includes(wanted)) fields.unshift(wanted);
      fieldSelect.replaceChildren(...fields.map((f) => el("option", { value: f, text: f })));
      fieldSelect.value = field0;
      const picked = ctx.query.get("devices");
      const pickedSet = picked ? new Set(picked.split(",").filter(Boolean)) : null;
      const boxes = devices.map((name, i) => {
        const input = el("input", {
          type: "checkbox", id: "cmp-dev-" + i, testid: "compare-device", dataset: { device: name },
          checked: !pickedSet || pickedSet.has(name),
        });
        input.addEventListener("change", () => { syncAll(); load(); });
        checks.append(el("label", { class: "choice", for: input.id }, input, " ",
          el("span", { class: "swatch", "aria-hidden": "true", dataset: { color: String(i % 10 + 1) } }), name));
        return input;
      });
      function syncAll() {
        const n = boxes.filter((b) => b.checked).length;
        all.checked = n === boxes.length && n > 0;
        all.indeterminate = n > 0 && n < boxes.length;
      }
      all.addEventListener("change", () => {
        for (const b of boxes) b.checked = all.checked;
        syncAll();
        load();
      });
      fieldSelect.addEventListener("change", () => load());
      syncAll();

      function setRange(r) {
        range = r;
        picker.set(r);
        resetZoom.hidden = r.kind !== "zoom";
        load();
      }
      function zoom(min, max) {
        const base = range.kind === "zoom" ? range.base : range;
        setRange({ kind: "zoom", from: min * 1000, to: max * 1000, base });
      }

      async function load() {
        const mine = ++run;
        const field = fieldSelect.value;
        const chosen = boxes.filter((b) => b.checked).map((b) => b.dataset.device);
        const everyone = chosen.length === boxes.length;
        ctx.setQuery(Object.assign({ field, devices: everyone ? "" : chosen.join(",") }, SL.rangeToQuery(range)));
        const r = SL.resolveRange(range);
        rangeText.textContent = (range.kind === "zoom" ? "Zoomed to " : "From ") + fmtTime(r.from) + " to " + fmtTime(r.to);
        if (!field) {
          caption.textContent = "No device has sent a numeric value yet.";
          return;
        }
        if (!chosen.length && boxes.length) {
          chart.draw({ lines: [], data: [[]], range: { min: r.from / 1000, max: r.to / 1000 } });
          host.dataset.field = field;
          host.dataset.points = "0";
          caption.textContent = "Pick at least one device.";
          return;
        }
        caption.textContent = "Loading…";
        let answer;
        try {
          answer = await SL.fetchChart(ctx, field, everyone ? null : chosen, r);
        } catch (e) {
          if (SL.isQuiet(e) || mine !== run) return;
          caption.replaceChildren(SL.errorBox(e, "chart-error"));
          return;
        }
        if (mine !== run) return;
        const series = (answer && Array.isArray(answer.series) ? answer.series : [])
          .filter((s) => s && s.device_id != null)
          .sort((a, b) => collator.compare(String(a.device_id), String(b.device_id)));
        const list = series.map((s) => ({ t: SL.nums(s.t), v: SL.nums(s.avg) }));
        const data = SL.mergeSeries(list);
        const lines = series.map((s) => {
          const i = devices.indexOf(String(s.device_id));
          return { label: String(s.device_id), color: i >= 0 ? i : devices.length };
        });
        chart.draw({ lines, bands: [], data, range: { min: r.from / 1000, max: r.to / 1000 } });
        let points = 0;
        for (const ys of data.slice(1)) for (const v of ys) if (v != null) points++;
        const source = answer && answer.source ? String(answer.source) : "raw";
        host.dataset.field = field;
        host.dataset.source = source;
        host.dataset.points = String(points);
        const parts = [SL.sourceLabel(source), series.length + " device" + (series.length === 1 ? "" : "s"),
          points.toLocaleString() + " point" + (points === 1 ? "" : "s")];
        if (answer && answer.step_s) parts.push("step " + SL.fmtAge(answer.step_s));
        if (source !== "raw") parts.push("averages per step");
        caption.textContent = parts.join(" · ");
      }

      await load();
      ctx.ready();
    },
  });
})(window.SL);
