// Pipeline health (#/health): ingest, lag, commits, dead letters, tables and disk.
"use strict";

(function (SL) {
  const { el, fmtNum, fmtInt, fmtBytes, fmtTime, fmtAge, DASH } = SL;
  const REFRESH_MS = 2000;

  const isNum = (v) => typeof v === "number" && Number.isFinite(v);

  SL.page("health", {
    title: "Health",
    async render(ctx) {
      const tiles = el("div", { class: "tiles", testid: "health-tiles" });
      const problems = el("div", { testid: "health-problems" });
      const tablesBox = el("div", { testid: "health-tables" });
      const deadBox = el("div", { testid: "health-dead-letters" });
      const errors = el("div", {});
      const asOf = el("p", { class: "muted small", "aria-live": "off" });
      ctx.root.append(el("section", { class: "page", "aria-labelledby": "health-title" },
        el("div", { class: "page-head" }, el("h1", { id: "health-title", text: "Pipeline health" }), asOf),
        errors, tiles, problems,
        el("div", { class: "health-grid" },
          el("div", {}, el("h2", { class: "section-title", text: "Tables" }), tablesBox),
          el("div", {}, el("h2", { class: "section-title", text: "Dead letters by reason" }), deadBox))));

      const tileNodes = new Map();
      function tile(metric, label) {
        let t = tileNodes.get(metric);
        if (!t) {
          const value = el("p", { class: "tile-value", testid: "health-value" });
          const note = el("p", { class: "tile-note muted small" });
          const node = el("div", { class: "tile", testid: "health-tile", dataset: { metric } },
            el("p", { class: "tile-label", text: label }), value, note);
          tiles.append(node);
          t = { node, value, note };
          tileNodes.set(metric, t);
        }
        return t;
      }
      function set(metric, label, value, note, state) {
        const t = tile(metric, label);
        if (t.value.textContent !== value) t.value.textContent = value;
        const n = note || "";
        if (t.note.textContent !== n) t.note.textContent = n;
        t.node.dataset.state = state || "";
      }

      function show(h) {
        const status = typeof h.status === "string" ? h.status : null;
        set("status", "Status", status || DASH, status === "ok" ? "all parts running" : status ? "see the problems below" : "",
          status === "ok" ? "ok" : status ? "bad" : "");
        set("ingest_per_s", "Ingest", isNum(h.ingest_per_s) ? fmtNum(h.ingest_per_s) + " /s" : DASH, "readings per second");
        set("lag", "Lag", isNum(h.lag) ? fmtInt(h.lag) : DASH, "messages not yet committed");
        const dl = h.dead_letters && typeof h.dead_letters === "object" ? h.dead_letters : null;
        set("dead_letters", "Dead letters", dl && isNum(dl.total) ? fmtInt(dl.total) : DASH, "messages that could not be stored",
          dl && dl.total > 0 ? "warn" : "");
        const age = isNum(h.last_commit_age_s) ? h.last_commit_age_s : null;
        set("last_commit", "Last commit", age != null ? fmtAge(age) + " ago" : (h.last_commit ? SL.fmtRel(h.last_commit) : DASH),
          h.last_commit ? fmtTime(h.last_commit) : "no commit yet");
        const disk = h.disk && typeof h.disk === "object" ? h.disk : {};
        set("data_bytes", "Data on disk", fmtBytes(disk.data_bytes), "lake and stream");
        set("free_bytes", "Free disk", fmtBytes(disk.free_bytes), "on the data volume",
          isNum(disk.free_bytes) && isNum(disk.data_bytes) && disk.free_bytes < disk.data_bytes * 0.1 ? "warn" : "");

        const list = Array.isArray(h.problems) ? h.problems : [];
        problems.replaceChildren(...(list.length ? [
          el("h2", { class: "section-title", text: "Problems" }),
          el("ul", { class: "problems", testid: "problem-list" }, list.map((p) => el("li", { class: "problem", testid: "problem" },
            el("strong", { text: p && p.problem != null ? String(p.problem) : "problem" }),
            p && p.since ? el("span", { class: "muted", text: " since " + fmtTime(p.since) }) : null))),
        ] : []));

        const tables = Array.isArray(h.tables) ? h.tables : [];
        tablesBox.replaceChildren(tables.length
          ? SL.table(["Table", { text: "Files", num: true }, { text: "Size", num: true }], tables.map((t) => el("tr", { testid: "health-table-row", dataset: { table: t && t.name } },
            el("td", { text: t && t.name != null ? String(t.name) : DASH }),
            el("td", { class: "num", text: fmtInt(t && t.files) }),
            el("td", { class: "num", text: fmtBytes(t && t.bytes) }))), { testid: "health-table", label: "Tables" })
          : el("p", { class: "muted", text: h.tables === undefined ? DASH : "No table yet." }));

        const reasons = dl && Array.isArray(dl.reasons) ? dl.reasons : [];
        deadBox.replaceChildren(reasons.length
          ? el("ul", { class: "reasons", testid: "dead-letter-reasons" }, reasons.map((r) => el("li", { testid: "dead-letter-reason" },
            el("span", { class: "reason", text: r && r.reason != null ? String(r.reason) : DASH }),
            el("span", { class: "count", text: fmtInt(r && r.count) }))))
          : el("p", { class: "muted", text: dl ? "None." : DASH }));
        asOf.textContent = "Updated " + new Date().toLocaleTimeString() + " · every 2 s";
      }

      async function load() {
        try {
          const h = await ctx.api("/api/v1/health", { allow: [503] });
          errors.replaceChildren();
          tiles.classList.remove("stale");
          delete tiles.dataset.stale;
          show(h && typeof h === "object" ? h : {});
        } catch (e) {
          if (SL.isQuiet(e)) throw e;
          // Unreachable: the banner says so; the figures stay, dimmed, as the last ones known.
          errors.replaceChildren(e instanceof SL.ApiError && e.status === 0 ? "" : SL.errorBox(e, "health-error"));
          if (!tileNodes.size) show({});
          tiles.classList.add("stale");
          tiles.dataset.stale = "1";
          asOf.textContent = asOf.textContent.replace(/ · .*$/, "") + " · not current: the server does not answer";
        }
      }

      try { await load(); } catch (e) { return; }
      ctx.ready();
      ctx.poll(REFRESH_MS, load);
    },
  });
})(window.SL);
