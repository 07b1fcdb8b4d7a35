// Charts: a thin wrapper around uPlot that follows the theme and the container's width, draws
// min–max bands and anomaly marks, and tells a page when the user dragged to zoom.
"use strict";

(function (SL) {
  const { el, fmtNum } = SL;

  function cssVar(styles, name, fallback) {
    const v = styles.getPropertyValue(name).trim();
    return v || fallback;
  }

  /** The theme's chart colours, read from the CSS custom properties of app.css. */
  function chartColors() {
    const s = getComputedStyle(document.documentElement);
    const palette = [];
    for (let i = 1; i <= 10; i++) palette.push(cssVar(s, "--series-" + i, "#1f6fd1"));
    return {
      axis: cssVar(s, "--chart-axis", "#4b5563"),
      grid: cssVar(s, "--chart-grid", "rgba(0,0,0,0.08)"),
      anomaly: cssVar(s, "--chart-anomaly", "#d11a2a"),
      surface: cssVar(s, "--surface", "#ffffff"),
      palette,
    };
  }

  /** #rrggbb (or #rgb) with an alpha, as rgba(); other colour forms are answered as they are. */
  function alpha(color, a) {
    let m = /^#([0-9a-f]{3})$/i.exec(color);
    if (m) color = "#" + m[1].split("").map((c) => c + c).join("");
    m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(color);
    if (!m) return color;
    return "rgba(" + parseInt(m[1], 16) + "," + parseInt(m[2], 16) + "," + parseInt(m[3], 16) + "," + a + ")";
  }

  /** A line's colour: a palette index (follows the theme), a CSS colour, or by position. */
  function pick(c, color, i) {
    if (typeof color === "number") return c.palette[color % c.palette.length];
    return color || c.palette[i % c.palette.length];
  }

  function axisSize(u, values, axisIdx, cycleNum) {
    const axis = u.axes[axisIdx];
    let size = axis.ticks.size + axis.gap;
    const longest = (values || []).reduce((acc, v) => (v && v.length > acc.length ? v : acc), "");
    if (longest) {
      u.ctx.font = axis.font[0];
      size += u.ctx.measureText(longest).width / (window.devicePixelRatio || 1);
    }
    // Only grows while uPlot converges (cycleNum > 1), so that it cannot oscillate.
    const wanted = Math.ceil(size) + 4;
    return cycleNum > 1 && axis._size ? Math.max(axis._size, wanted) : wanted;
  }

  function defaultHeight() {
    return window.innerWidth < 600 ? 200 : 260;
  }

  /**
   * One chart in `host` (an element the page made: it keeps data-testid="chart" and the page's
   * data- attributes). draw({lines, data, range, anomalies, time}) draws:
   *   lines: [{label, color?, faint?}] — one per y array of data; color: a palette index
   *     (follows the theme) or a CSS colour;
   *   bands: [[upperIdx, lowerIdx, color]] — series indexes (1-based, as uPlot counts);
   *   data: [x[], y1[], ...] (x ascending; epoch seconds for time charts);
   *   range: {min, max} for the x scale, or null for the data's extent;
   *   anomalies: [{t, v}] drawn as red points (v null: a mark at the top).
   * opts: {height, syncKey, onZoom(min, max), emptyText}
   */
  class Chart {
    constructor(host, opts = {}) {
      this.host = host;
      this.opts = opts;
      this.u = null;
      this.spec = null;
      this.empty = el("p", { class: "chart-empty", hidden: true, text: opts.emptyText || "No data in this range" });
      this.mount = el("div", { class: "chart-mount" });
      host.replaceChildren(this.mount, this.empty);
      this._offTheme = SL.bus.on("theme", () => this.render());
      this._width = 0;
      if (window.ResizeObserver) {
        this._resize = new ResizeObserver(() => {
          const w = this.width();
          if (this.u && w && Math.abs(w - this._width) > 1) {
            this._width = w;
            this.u.setSize({ width: w, height: this.height() });
          }
        });
        this._resize.observe(host);
      }
    }

    width() { return Math.floor(this.host.clientWidth || (this.host.parentElement && this.host.parentElement.clientWidth) || 600); }
    height() { return this.opts.height || defaultHeight(); }

    draw(spec) {
      const sameShape = this.u && this.spec && this.spec.time === spec.time
        && JSON.stringify(this.spec.lines) === JSON.stringify(spec.lines)
        && JSON.stringify(this.spec.bands || []) === JSON.stringify(spec.bands || []);
      this.spec = spec;
      if (sameShape) this.update(spec.data, spec.range, spec.anomalies);
      else this.render();
    }

    /** New data for the same series; the x scale set to range when given. */
    update(data, range, anomalies) {
      this.spec.data = data;
      if (range !== undefined) this.spec.range = range;
      if (anomalies !== undefined) this.spec.anomalies = anomalies;
      if (!this.u) { this.render(); return; }
      this.u.setData(data, !this.spec.range);
      this._applyRange();
      this._showEmpty();
    }

    _applyRange() {
      const r = this.spec.range;
      if (r && Number.isFinite(r.min) && Number.isFinite(r.max) && r.max > r.min) {
        this.u.setScale("x", { min: r.min, max: r.max });
      }
    }

    _showEmpty() {
      const x = this.spec.data[0] || [];
      const hasY = this.spec.data.slice(1).some((ys) => ys.some((v) => v != null));
      this.empty.hidden = x.length > 0 && hasY;
    }

    render() {
      if (!this.spec) return;
      if (this.u) { this.u.destroy(); this.u = null; }
      if (typeof window.uPlot !== "function") {
        this.empty.textContent = "The chart library did not load.";
        this.empty.hidden = false;
        return;
      }
      const c = chartColors();
      const spec = this.spec;
      const time = spec.time !== false;
      const series = [{ label: spec.xLabel || (time ? "Time" : "x") }];
      spec.lines.forEach((line, i) => {
        const color = pick(c, line.color, i);
        series.push({
          label: line.label,
          stroke: line.faint ? alpha(color, 0.45) : color,
          width: line.faint ? 1 : 1.75,
          spanGaps: true,
          points: line.faint ? { show: false } : undefined,
          value: (u, v) => (v == null ? "—" : fmtNum(v)),
        });
      });
      const bands = (spec.bands || []).map(([hi, lo, color]) => ({
        series: [hi, lo], fill: alpha(pick(c, color, 0), 0.16),
      }));
      const axis = {
        stroke: c.axis,
        grid: { stroke: c.grid, width: 1 },
        ticks: { stroke: c.grid, width: 1 },
      };
      const anomalies = () => this.spec.anomalies || [];
      const opts = {
        width: this.width(),
        height: this.height(),
        series,
        bands,
        scales: { x: { time } },
        axes: [
          Object.assign({}, axis, time ? {} : { values: (u, splits) => splits.map((v) => fmtNum(v)) }),
          Object.assign({}, axis, { size: axisSize, values: (u, splits) => splits.map((v) => fmtNum(v)) }),
        ],
        cursor: {
          drag: { x: true, y: false, setScale: true },
          sync: this.opts.syncKey ? { key: this.opts.syncKey } : undefined,
        },
        legend: { live: true },
        hooks: {
          setSelect: [(u) => {
            if (!this.opts.onZoom || u.select.width < 3) return;
            const min = u.posToVal(u.select.left, "x");
            const max = u.posToVal(u.select.left + u.select.width, "x");
            if (max > min) this.opts.onZoom(min, max);
          }],
          draw: [(u) => drawAnomalies(u, anomalies(), c)],
        },
      };
      this._width = opts.width;
      this.u = new window.uPlot(opts, spec.data, this.mount);
      this._applyRange();
      this._showEmpty();
    }

    destroy() {
      if (this._resize) this._resize.disconnect();
      if (this._offTheme) this._offTheme();
      if (this.u) this.u.destroy();
      this.u = null;
    }
  }

  function drawAnomalies(u, list, c) {
    if (!list.length) return;
    const { left, top, width, height } = u.bbox;
    const ratio = window.devicePixelRatio || 1;
    const xs = u.scales.x;
    const ctx = u.ctx;
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, top, width, height);
    ctx.clip();
    ctx.fillStyle = c.anomaly;
    ctx.strokeStyle = c.surface;
    ctx.lineWidth = 1.5 * ratio;
    for (const a of list) {
      if (!(a.t >= xs.min && a.t <= xs.max)) continue;
      const x = u.valToPos(a.t, "x", true);
      const onLine = a.v != null && Number.isFinite(a.v);
      let y = onLine ? u.valToPos(a.v, "y", true) : top + 6 * ratio;
      if (!Number.isFinite(y)) y = top + 6 * ratio;
      y = Math.min(Math.max(y, top + 5 * ratio), top + height - 5 * ratio);
      ctx.beginPath();
      ctx.arc(x, y, 4.5 * ratio, 0, Math.PI * 2);
      ctx.fill();
      ctx.stroke();
    }
    ctx.restore();
  }

  /** Series of different x arrays → one ascending x array, gaps filled with null. */
  function mergeSeries(list) {
    const all = new Set();
    for (const s of list) for (const t of s.t) if (t != null) all.add(t);
    const xs = [...all].sort((a, b) => a - b);
    const index = new Map();
    xs.forEach((t, i) => index.set(t, i));
    const ys = list.map((s) => {
      const out = new Array(xs.length).fill(null);
      s.t.forEach((t, i) => {
        const at = index.get(t);
        if (at != null) out[at] = s.v[i] == null ? null : s.v[i];
      });
      return out;
    });
    return [xs, ...ys];
  }

  const SOURCE_LABEL = { raw: "raw readings", "1m": "1-minute rollups", "1h": "1-hour rollups" };

  function sourceLabel(source) {
    return SOURCE_LABEL[source] || (source ? String(source) : "unknown source");
  }

  /** GET /api/v1/chart for a field, devices (null: all) and a {from, to} of Dates. */
  function fetchChart(ctx, field, devices, range) {
    const q = new URLSearchParams({ field });
    if (devices && devices.length) q.set("devices", devices.join(","));
    q.set("from", range.from.toISOString());
    q.set("to", range.to.toISOString());
    return ctx.api("/api/v1/chart?" + q.toString());
  }

  function nums(a) {
    return Array.isArray(a) ? a.map((v) => (typeof v === "number" && Number.isFinite(v) ? v : null)) : [];
  }

  SL.Chart = Chart;
  SL.chartColors = chartColors;
  SL.mergeSeries = mergeSeries;
  SL.sourceLabel = sourceLabel;
  SL.fetchChart = fetchChart;
  SL.nums = nums;
  SL.alpha = alpha;
})(window.SL);
