// SQL console (#/sql): tables and saved queries, an editor, results as a table or a chart, CSV.
"use strict";

(function (SL) {
  const { el, fmtNum, storage } = SL;
  const PAGE_ROWS = 100;
  const MAX_ROWS = 10000;
  const DEFAULT_SQL = "SELECT * FROM telemetry ORDER BY ts DESC LIMIT 100";
  const SQL_STORE = "sensorlake.sql";
  const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

  SL.page("sql", {
    title: "SQL",
    async render(ctx) {
      let result = null;
      let page = 0;
      let tab = "table";
      let loadedName = "";
      const describeCache = new Map();

      const editor = el("textarea", {
        id: "sql-editor", testid: "sql-editor", class: "sql-editor", spellcheck: "false",
        autocapitalize: "off", autocomplete: "off", rows: 8, "aria-describedby": "sql-keys",
        value: storage.get(SQL_STORE) || DEFAULT_SQL,
      });
      const runButton = el("button", { type: "submit", class: "button button-primary", testid: "sql-run", text: "Run" });
      const csvButton = el("button", { type: "button", class: "button", testid: "sql-csv", text: "Download CSV" });
      const saveButton = el("button", { type: "button", class: "button", testid: "sql-save", text: "Save…" });
      const errorArea = el("div", { class: "sql-error-area" });
      const meta = el("div", { class: "sql-meta", testid: "sql-meta", "aria-live": "polite" });
      const tablesList = el("ul", { class: "tree", testid: "table-list" }, el("li", { class: "muted", text: "Loading…" }));
      const savedList = el("ul", { class: "saved", testid: "saved-list" }, el("li", { class: "muted", text: "Loading…" }));
      const savedError = el("div", {});

      const tabTable = el("button", { type: "button", role: "tab", id: "tab-table", class: "tab", testid: "sql-tab-table",
        "aria-controls": "panel-table", text: "Table" });
      const tabChart = el("button", { type: "button", role: "tab", id: "tab-chart", class: "tab", testid: "sql-tab-chart",
        "aria-controls": "panel-chart", text: "Chart" });
      const pager = el("div", { class: "pager" });
      const tableBox = el("div", { class: "sql-table-box" });
      const panelTable = el("div", { role: "tabpanel", id: "panel-table", "aria-labelledby": "tab-table" }, pager, tableBox);
      const xSelect = el("select", { id: "chart-x", testid: "sql-chart-x" });
      const yBox = el("div", { class: "checks checks-inline", testid: "sql-chart-y" });
      const chartHost = el("div", { class: "chart", testid: "chart" });
      const chartNote = el("p", { class: "chart-source", testid: "chart-source" });
      const panelChart = el("div", { role: "tabpanel", id: "panel-chart", "aria-labelledby": "tab-chart", hidden: true },
        el("div", { class: "toolbar" },
          el("div", { class: "field" }, el("label", { for: xSelect.id, text: "X axis" }), xSelect),
          el("fieldset", { class: "field" }, el("legend", { text: "Y axis" }), yBox)),
        el("figure", { class: "chart-card" }, chartHost, chartNote));
      const resultArea = el("div", { class: "sql-result-area", hidden: true },
        meta,
        el("div", { class: "tabs", role: "tablist", "aria-label": "Result view" }, tabTable, tabChart),
        panelTable, panelChart);

      let chart = null;
      ctx.cleanup(() => { if (chart) chart.destroy(); });

      const form = el("form", { class: "sql-form", onsubmit: (e) => { e.preventDefault(); run(); } },
        el("label", { for: editor.id, class: "label", text: "Query" }), editor,
        el("div", { class: "toolbar" }, runButton, csvButton, saveButton,
          el("span", { id: "sql-keys", class: "muted small", text: "Ctrl+Enter (⌘+Enter) runs the query" })));

      ctx.root.append(el("section", { class: "page", "aria-labelledby": "sql-title" },
        el("div", { class: "page-head" }, el("h1", { id: "sql-title", text: "SQL console" })),
        el("div", { class: "sql-layout" },
          el("aside", { class: "panel sql-side", "aria-label": "Tables and saved queries" },
            el("h2", { class: "side-title", text: "Tables" }), tablesList,
            el("h2", { class: "side-title", text: "Saved queries" }), savedError, savedList),
          el("div", { class: "sql-main" }, form, errorArea, resultArea))));

      // ---- editor

      editor.addEventListener("keydown", (e) => {
        if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
          e.preventDefault();
          run();
        }
      });
      editor.addEventListener("input", () => storage.set(SQL_STORE, editor.value));

      function insertAtCursor(text) {
        const start = editor.selectionStart ?? editor.value.length;
        const end = editor.selectionEnd ?? start;
        const before = editor.value.slice(0, start);
        const pad = before && !/[\s(,.]$/.test(before) ? " " : "";
        editor.setRangeText(pad + text, start, end, "end");
        editor.focus();
        storage.set(SQL_STORE, editor.value);
      }

      function showError(e) {
        const box = SL.errorBox(e, "sql-error");
        errorArea.replaceChildren(box || "");
      }

      async function run() {
        const sql = editor.value;
        if (!sql.trim()) {
          showError(new SL.ApiError(400, "The query is empty", "write a SELECT, e.g. " + DEFAULT_SQL));
          return;
        }
        storage.set(SQL_STORE, sql);
        errorArea.replaceChildren();
        runButton.disabled = true;
        runButton.textContent = "Running…";
        try {
          const answer = await ctx.api("/api/v1/query", { method: "POST", json: { sql, max_rows: MAX_ROWS } });
          result = answer || { columns: [], rows: [] };
          page = 0;
          showResult();
        } catch (e) {
          if (e instanceof SL.GoneError) return;
          showError(e);
        } finally {
          runButton.disabled = false;
          runButton.textContent = "Run";
        }
      }

      // ---- result

      function rowsOf() { return result && Array.isArray(result.rows) ? result.rows : []; }

      function showResult() {
        resultArea.hidden = false;
        const rows = rowsOf();
        const parts = [rows.length.toLocaleString() + " row" + (rows.length === 1 ? "" : "s")];
        if (typeof result.elapsed_ms === "number") parts.push(fmtNum(result.elapsed_ms) + " ms");
        const lines = [el("p", { text: parts.join(" · ") })];
        if (result.truncated) {
          lines.push(el("p", { class: "note", testid: "sql-truncated",
            text: "Only the first " + rows.length.toLocaleString() + " rows are shown: add a LIMIT or download the CSV for all of them." }));
        }
        if (result.uncommitted_rows) {
          lines.push(el("p", { class: "muted small",
            text: "Includes " + Number(result.uncommitted_rows).toLocaleString() + " recent reading(s) not yet committed to the lake." }));
        }
        if (Array.isArray(result.notes) && result.notes.length) {
          lines.push(el("ul", { class: "notes" }, result.notes.map((n) => el("li", { text: typeof n === "string" ? n : JSON.stringify(n) }))));
        }
        meta.replaceChildren(...lines);
        showPage();
        setupChartControls();
        selectTab(tab, false);
      }

      function showPage() {
        const rows = rowsOf();
        const pages = Math.max(1, Math.ceil(rows.length / PAGE_ROWS));
        page = Math.min(Math.max(0, page), pages - 1);
        const from = page * PAGE_ROWS;
        const to = Math.min(rows.length, from + PAGE_ROWS);
        const prev = el("button", { type: "button", class: "button button-small", testid: "sql-prev", text: "‹ Prev",
          disabled: page === 0, onclick: () => { page--; showPage(); focusPager("sql-prev"); } });
        const next = el("button", { type: "button", class: "button button-small", testid: "sql-next", text: "Next ›",
          disabled: page >= pages - 1, onclick: () => { page++; showPage(); focusPager("sql-next"); } });
        const label = rows.length
          ? "rows " + (from + 1).toLocaleString() + "–" + to.toLocaleString() + " of " + rows.length.toLocaleString()
          : "no rows";
        pager.replaceChildren(prev, el("span", { class: "pager-label", testid: "sql-page", text: label }), next);
        pager.hidden = rows.length <= PAGE_ROWS;
        tableBox.replaceChildren(SL.resultTable(result, {
          testid: "sql-result", rowTestid: "sql-row", from, to, label: "Query result",
        }));
      }

      function focusPager(testid) {
        const b = pager.querySelector("[data-testid='" + testid + "']");
        if (b && !b.disabled) b.focus();
        else {
          const other = pager.querySelector("button:not([disabled])");
          if (other) other.focus();
        }
      }

      function selectTab(which, focus) {
        tab = which;
        const isChart = which === "chart";
        tabTable.setAttribute("aria-selected", isChart ? "false" : "true");
        tabChart.setAttribute("aria-selected", isChart ? "true" : "false");
        tabTable.tabIndex = isChart ? -1 : 0;
        tabChart.tabIndex = isChart ? 0 : -1;
        panelTable.hidden = isChart;
        panelChart.hidden = !isChart;
        if (focus) (isChart ? tabChart : tabTable).focus();
        if (isChart) drawChart();
      }
      tabTable.addEventListener("click", () => selectTab("table", false));
      tabChart.addEventListener("click", () => selectTab("chart", false));
      for (const t of [tabTable, tabChart]) {
        t.addEventListener("keydown", (e) => {
          if (e.key === "ArrowRight" || e.key === "ArrowLeft" || e.key === "Home" || e.key === "End") {
            e.preventDefault();
            selectTab(tab === "table" ? "chart" : "table", true);
          }
        });
      }

      // ---- chart of a result

      function columnKinds() {
        const columns = result && Array.isArray(result.columns) ? result.columns : [];
        const types = result && Array.isArray(result.types) ? result.types : [];
        const rows = rowsOf();
        return columns.map((name, i) => {
          const type = String(types[i] || "");
          let sample = null;
          for (let r = 0; r < rows.length && sample == null; r++) sample = rows[r] ? rows[r][i] : null;
          const time = /TIMESTAMP|DATE/i.test(type)
            || (typeof sample === "string" && /^\d{4}-\d\d-\d\d[T ]\d\d:\d\d/.test(sample) && Number.isFinite(Date.parse(sample)));
          const numeric = !time && (/INT|DOUBLE|FLOAT|DECIMAL|REAL|NUMERIC|HUGEINT/i.test(type) || typeof sample === "number");
          return { name: String(name), index: i, time, numeric };
        });
      }

      function setupChartControls() {
        const kinds = columnKinds();
        const keepX = xSelect.value;
        const keepY = new Set([...yBox.querySelectorAll("input:checked")].map((i) => i.value));
        xSelect.replaceChildren(el("option", { value: "#row", text: "(row number)" }),
          ...kinds.map((k) => el("option", { value: String(k.index), text: k.name + (k.time ? " (time)" : "") })));
        const firstTime = kinds.find((k) => k.time);
        const firstNum = kinds.find((k) => k.numeric);
        const xOk = [...xSelect.options].some((o) => o.value === keepX);
        xSelect.value = xOk && keepX ? keepX : firstTime ? String(firstTime.index) : firstNum ? String(firstNum.index) : "#row";
        const numeric = kinds.filter((k) => k.numeric);
        const reuse = numeric.some((k) => keepY.has(String(k.index)));
        yBox.replaceChildren(...numeric.map((k, n) => {
          const input = el("input", {
            type: "checkbox", id: "chart-y-" + k.index, value: String(k.index), testid: "sql-chart-y-column",
            dataset: { column: k.name },
            checked: reuse ? keepY.has(String(k.index)) : n === 0 && String(k.index) !== xSelect.value || (n === 1 && String(numeric[0].index) === xSelect.value),
          });
          input.addEventListener("change", drawChart);
          return el("label", { class: "choice", for: input.id }, input, " " + k.name);
        }));
        if (!numeric.length) yBox.append(el("p", { class: "muted small", text: "The result has no numeric column." }));
      }
      xSelect.addEventListener("change", drawChart);

      function drawChart() {
        if (!result || panelChart.hidden) return;
        const kinds = columnKinds();
        const rows = rowsOf();
        const xKey = xSelect.value;
        const xKind = xKey === "#row" ? null : kinds[Number(xKey)];
        const ys = [...yBox.querySelectorAll("input:checked")].map((i) => kinds[Number(i.value)]).filter(Boolean);
        const pairs = [];
        rows.forEach((row, r) => {
          let x;
          if (!xKind) x = r + 1;
          else {
            const v = row[xKind.index];
            x = xKind.time ? (typeof v === "number" ? v : Date.parse(v) / 1000) : (typeof v === "number" ? v : Number(v));
          }
          if (x == null || !Number.isFinite(x)) return;
          pairs.push([x, row]);
        });
        pairs.sort((a, b) => a[0] - b[0]);
        const data = [pairs.map((p) => p[0]), ...ys.map((k) => pairs.map((p) => {
          const v = p[1][k.index];
          return typeof v === "number" && Number.isFinite(v) ? v : null;
        }))];
        if (!chart) chart = new SL.Chart(chartHost, { emptyText: "Nothing to draw: pick a y column with numbers" });
        chart.draw({
          time: !!(xKind && xKind.time), xLabel: xKind ? xKind.name : "row",
          lines: ys.map((k, i) => ({ label: k.name, color: i })), bands: [], data, range: null,
        });
        let points = 0;
        for (const col of data.slice(1)) for (const v of col) if (v != null) points++;
        chartHost.dataset.field = ys.map((k) => k.name).join(",");
        chartHost.dataset.source = "query";
        chartHost.dataset.points = String(points);
        chartNote.textContent = ys.length
          ? points.toLocaleString() + " point" + (points === 1 ? "" : "s") + (result.truncated ? " (of the rows fetched)" : "")
            + " · drag to zoom, double-click to reset"
          : "Pick one or more y columns.";
      }

      // ---- CSV

      csvButton.addEventListener("click", async () => {
        const sql = editor.value;
        if (!sql.trim()) return;
        errorArea.replaceChildren();
        csvButton.disabled = true;
        const label = csvButton.textContent;
        csvButton.textContent = "Preparing…";
        try {
          const res = await ctx.api("/api/v1/query", {
            method: "POST", json: { sql, format: "csv" }, raw: true, accept: "text/csv",
          });
          const blob = await res.blob();
          const name = filenameOf(res.headers.get("Content-Disposition")) || "query.csv";
          const url = URL.createObjectURL(blob);
          const a = el("a", { href: url, download: name, hidden: true });
          document.body.append(a);
          a.click();
          a.remove();
          setTimeout(() => URL.revokeObjectURL(url), 30000);
        } catch (e) {
          if (!(e instanceof SL.GoneError)) showError(e);
        } finally {
          csvButton.disabled = false;
          csvButton.textContent = label;
        }
      });

      // ---- tables

      function quoteIdent(name) {
        return /^[A-Za-z_][A-Za-z0-9_]*$/.test(name) ? name : '"' + name.replace(/"/g, '""') + '"';
      }

      async function loadTables() {
        let answer;
        try {
          answer = await ctx.api("/api/v1/tables");
        } catch (e) {
          if (SL.isQuiet(e)) throw e;
          tablesList.replaceChildren(el("li", {}, SL.errorBox(e, "tables-error")));
          return;
        }
        const views = new Set(answer && Array.isArray(answer.views) ? answer.views.map(String) : []);
        const names = [...new Set([...(answer && Array.isArray(answer.tables) ? answer.tables : []).map(String), ...views])]
          .sort(collator.compare);
        if (!names.length) {
          tablesList.replaceChildren(el("li", { class: "muted", text: "No table yet." }));
          return;
        }
        tablesList.replaceChildren(...names.map((name) => tableItem(name, views.has(name))));
      }

      function tableItem(name, isView) {
        const cols = el("ul", { class: "columns", hidden: true, testid: "column-list" });
        const toggle = el("button", {
          type: "button", class: "tree-toggle", testid: "table-item", dataset: { table: name },
          "aria-expanded": "false",
        }, el("span", { class: "caret", "aria-hidden": "true" }), name,
        isView ? el("span", { class: "tag", text: "view" }) : null);
        const query = el("button", {
          type: "button", class: "button button-small button-quiet", text: "Query",
          "aria-label": "Query " + name, testid: "table-query",
          onclick: () => {
            editor.value = "SELECT * FROM " + quoteIdent(name) + " LIMIT 100";
            storage.set(SQL_STORE, editor.value);
            editor.focus();
          },
        });
        toggle.addEventListener("click", async () => {
          const open = toggle.getAttribute("aria-expanded") !== "true";
          toggle.setAttribute("aria-expanded", open ? "true" : "false");
          cols.hidden = !open;
          if (open && !describeCache.has(name)) {
            cols.replaceChildren(el("li", { class: "muted", text: "Loading…" }));
            try {
              const info = await ctx.api("/api/v1/tables/" + encodeURIComponent(name));
              describeCache.set(name, info);
              showColumns(cols, info);
            } catch (e) {
              if (SL.isQuiet(e)) return;
              cols.replaceChildren(el("li", {}, SL.errorBox(e, "columns-error")));
            }
          }
        });
        return el("li", { class: "tree-item" }, el("div", { class: "tree-row" }, toggle, query), cols);
      }

      function showColumns(cols, info) {
        const list = columnsOf(info);
        if (!list.length) {
          cols.replaceChildren(el("li", { class: "muted", text: "No columns listed." }));
          return;
        }
        cols.replaceChildren(...list.map((c) => el("li", {},
          el("button", {
            type: "button", class: "column-button", testid: "column-item", dataset: { column: c.name },
            title: c.doc || "Insert " + c.name + " at the cursor",
            "aria-label": "Insert column " + c.name + (c.type ? " (" + c.type + ")" : ""),
            onclick: () => insertAtCursor(quoteIdent(c.name)),
          }, el("span", { class: "column-name", text: c.name }), c.type ? el("span", { class: "column-type", text: c.type }) : null))));
      }

      // ---- saved queries

      async function loadSaved() {
        let answer;
        try {
          answer = await ctx.api("/api/v1/queries");
        } catch (e) {
          if (SL.isQuiet(e)) throw e;
          savedList.replaceChildren();
          savedError.replaceChildren(e instanceof SL.ApiError && e.status === 404
            ? el("p", { class: "muted small", text: "This server keeps no saved queries." })
            : SL.errorBox(e, "saved-error"));
          return;
        }
        savedError.replaceChildren();
        const list = answer && Array.isArray(answer.queries) ? answer.queries : [];
        if (!list.length) {
          savedList.replaceChildren(el("li", { class: "muted small", text: "None yet: write a query and Save it." }));
          return;
        }
        savedList.replaceChildren(...list.slice().sort((a, b) => collator.compare(String(a.name), String(b.name))).map((q) => {
          const name = String(q.name);
          return el("li", { class: "saved-item", testid: "saved-query-item", dataset: { name } },
            el("button", {
              type: "button", class: "saved-load", testid: "saved-query", dataset: { name },
              title: q.saved_at ? "Saved " + SL.fmtTime(q.saved_at) : "",
              onclick: () => {
                editor.value = String(q.sql || "");
                loadedName = name;
                storage.set(SQL_STORE, editor.value);
                editor.focus();
              },
            }, el("span", { class: "saved-name", text: name }),
            el("span", { class: "saved-sql", text: String(q.sql || "").replace(/\s+/g, " ").slice(0, 80) })),
            el("button", {
              type: "button", class: "icon-button", testid: "saved-delete", dataset: { name },
              "aria-label": "Delete saved query " + name, title: "Delete", text: "×",
              onclick: () => deleteSaved(name),
            }));
        }));
      }

      async function deleteSaved(name) {
        const ok = await SL.dialog({
          title: "Delete saved query", message: "Delete the saved query “" + name + "”?",
          testid: "delete-dialog", submitLabel: "Delete", submitTestid: "delete-confirm",
          onSubmit: () => ctx.api("/api/v1/queries/" + encodeURIComponent(name), { method: "DELETE" }).then(() => true),
        });
        if (ok) {
          if (loadedName === name) loadedName = "";
          try { await loadSaved(); } catch (e) { /* signed out */ }
        }
      }

      saveButton.addEventListener("click", async () => {
        const sql = editor.value;
        if (!sql.trim()) {
          showError(new SL.ApiError(400, "The query is empty", "write the query to save first"));
          return;
        }
        const saved = await SL.dialog({
          title: "Save query", testid: "save-dialog", submitLabel: "Save", submitTestid: "save-confirm",
          fields: [{ name: "name", label: "Name", value: loadedName, required: true, testid: "save-name",
            hint: "Saving under an existing name replaces that query." }],
          onSubmit: async (v) => {
            const name = v.name.trim();
            await ctx.api("/api/v1/queries", { method: "POST", json: { name, sql } });
            return name;
          },
        });
        if (saved) {
          loadedName = saved;
          try { await loadSaved(); } catch (e) { /* signed out */ }
        }
      });

      await Promise.allSettled([loadTables(), loadSaved()]);
      ctx.ready();
    },
  });

  /** The column list of a GET /api/v1/tables/{name} answer, whatever key it is under. */
  function columnsOf(info) {
    if (!info || typeof info !== "object") return [];
    let list = info.columns || info.schema || info.fields;
    if (list && !Array.isArray(list) && typeof list === "object") list = list.fields || list.columns || Object.entries(list).map(([name, type]) => ({ name, type }));
    if (!Array.isArray(list)) return [];
    return list.map((c) => {
      if (typeof c === "string") return { name: c, type: "" };
      if (Array.isArray(c)) return { name: String(c[0]), type: c[1] != null ? String(c[1]) : "" };
      if (c && typeof c === "object") {
        return { name: String(c.name ?? c.column ?? c.column_name ?? ""), type: c.type != null ? String(c.type) : (c.data_type != null ? String(c.data_type) : ""), doc: c.doc || "" };
      }
      return null;
    }).filter((c) => c && c.name);
  }

  /** The file name of a Content-Disposition header (filename* first), or null. */
  function filenameOf(header) {
    if (!header) return null;
    const star = /filename\*\s*=\s*([^']*)'[^']*'([^;]+)/i.exec(header);
    if (star) {
      try { return clean(decodeURIComponent(star[2].trim().replace(/^"|"$/g, ""))); } catch (e) { /* fall through */ }
    }
    const plain = /filename\s*=\s*("((?:[^"\\]|\\.)*)"|[^;]+)/i.exec(header);
    if (plain) return clean(plain[2] != null ? plain[2].replace(/\\(.)/g, "$1") : plain[1].trim());
    return null;
  }

  function clean(name) {
    const base = String(name).split(/[\\/]/).pop().trim();
    return base || null;
  }

  SL.filenameOf = filenameOf;
  SL.columnsOf = columnsOf;
})(window.SL);
