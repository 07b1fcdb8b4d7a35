// sensorlake dashboard: the core shared by every page.
//
// DOM helpers, formatting, the fetch wrapper (API key, errors), the key prompt and other
// dialogs, the live event stream (SSE read with fetch so that it can carry the key), the
// device store it feeds, the theme, the navigation bar and the hash router. Each page lives in
// its own file and registers itself with SL.page(); boot.js starts everything.
//
// Nothing here writes data into the DOM as HTML: text goes in with textContent.
"use strict";

window.SL = (function () {
  const SL = {};

  // ---------------------------------------------------------------- DOM helpers

  /** el("div", {class, text, testid, dataset, onclick, ...attrs}, ...children) */
  function el(tag, props, ...kids) {
    const node = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (v == null || v === false) continue;
        if (k === "class") node.className = v;
        else if (k === "text") node.textContent = String(v);
        else if (k === "testid") node.dataset.testid = v;
        else if (k === "dataset") {
          for (const [dk, dv] of Object.entries(v)) if (dv != null) node.dataset[dk] = String(dv);
        } else if (k === "value" || k === "checked" || k === "selected") node[k] = v;
        else if (k.startsWith("on") && typeof v === "function") {
          node.addEventListener(k.slice(2), v);
        } else if (v === true) node.setAttribute(k, "");
        else node.setAttribute(k, String(v));
      }
    }
    append(node, kids);
    return node;
  }

  function append(node, kids) {
    for (const kid of kids) {
      if (kid == null || kid === false) continue;
      if (Array.isArray(kid)) append(node, kid);
      else if (kid instanceof Node) node.appendChild(kid);
      else node.appendChild(document.createTextNode(String(kid)));
    }
    return node;
  }

  function clear(node) {
    node.replaceChildren();
    return node;
  }

  // ---------------------------------------------------------------- formatting

  const DASH = "—";

  /** A number as people read it: integers whole, others with at most 4 decimals (fewer for
   * large numbers, significant digits for tiny ones), trailing zeros dropped. */
  function fmtNum(v) {
    if (v == null || v === "") return DASH;
    if (typeof v !== "number") return String(v);
    if (!Number.isFinite(v)) return String(v);
    if (Number.isInteger(v)) return String(v);
    const a = Math.abs(v);
    let s;
    if (a >= 1e15) s = v.toPrecision(4);
    else if (a >= 1) {
      const intDigits = Math.floor(Math.log10(a)) + 1;
      s = v.toFixed(Math.max(0, Math.min(4, 6 - intDigits)));
    } else if (a >= 1e-6) s = v.toPrecision(4);
    else s = v.toExponential(3);
    if (s.includes("e")) {
      const [m, e] = s.split("e");
      return (m.includes(".") ? m.replace(/\.?0+$/, "") : m) + "e" + e;
    }
    return s.includes(".") ? s.replace(/\.?0+$/, "") : s;
  }

  function fmtInt(v) {
    if (v == null || typeof v !== "number" || !Number.isFinite(v)) return DASH;
    return Math.round(v).toLocaleString();
  }

  function fmtBytes(v) {
    if (v == null || typeof v !== "number" || !Number.isFinite(v)) return DASH;
    const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let n = v;
    let i = 0;
    while (Math.abs(n) >= 1024 && i < units.length - 1) {
      n /= 1024;
      i++;
    }
    return (i === 0 ? String(n) : n.toFixed(n >= 100 ? 0 : n >= 10 ? 1 : 2)) + " " + units[i];
  }

  /** Epoch milliseconds of an ISO string, a Date, or a number: epoch seconds below 1e11 (the
   * API's floats, e.g. saved_at), epoch milliseconds above; NaN when there is none. */
  function toMs(t) {
    if (t == null || t === "") return NaN;
    if (t instanceof Date) return t.getTime();
    if (typeof t === "number") return Math.abs(t) < 1e11 ? t * 1000 : t;
    return Date.parse(t);
  }

  const timeFormat = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
  });

  /** A time in the browser's zone. */
  function fmtTime(t) {
    const ms = toMs(t);
    return Number.isFinite(ms) ? timeFormat.format(new Date(ms)) : DASH;
  }

  function fmtAge(seconds) {
    if (seconds == null || !Number.isFinite(seconds)) return DASH;
    const s = Math.max(0, seconds);
    if (s < 60) return Math.round(s) + " s";
    if (s < 3600) return Math.floor(s / 60) + " min";
    if (s < 86400) return Math.floor(s / 3600) + " h";
    return Math.floor(s / 86400) + " d";
  }

  /** "12 s ago", "3 min ago"; "—" for no time. */
  function fmtRel(t) {
    const ms = toMs(t);
    if (!Number.isFinite(ms)) return DASH;
    const s = (Date.now() - ms) / 1000;
    if (s < 1) return "just now";
    return fmtAge(s) + " ago";
  }

  /** Any JSON value as short text for a table cell. */
  function fmtCell(v) {
    if (v == null) return "";
    if (typeof v === "number") return fmtNum(v);
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  }

  // ---------------------------------------------------------------- storage

  const storage = {
    get(key) {
      try { return localStorage.getItem(key); } catch (e) { return null; }
    },
    set(key, value) {
      try {
        if (value == null) localStorage.removeItem(key);
        else localStorage.setItem(key, value);
      } catch (e) { /* private mode: kept for this page only */ }
    },
  };

  const KEY_STORE = "sensorlake.key";
  let memoryKey = null;
  function getKey() {
    return storage.get(KEY_STORE) || memoryKey;
  }
  function setKey(key) {
    memoryKey = key || null;
    storage.set(KEY_STORE, key || null);
    const out = document.getElementById("sign-out");
    if (out) out.hidden = !key;
  }

  // ---------------------------------------------------------------- events

  class Emitter {
    constructor() { this._handlers = new Map(); }
    on(event, fn) {
      if (!this._handlers.has(event)) this._handlers.set(event, new Set());
      this._handlers.get(event).add(fn);
      return () => this._handlers.get(event).delete(fn);
    }
    emit(event, payload) {
      for (const fn of [...(this._handlers.get(event) || [])]) {
        try { fn(payload); } catch (e) { console.error(e); }
      }
    }
  }
  const bus = new Emitter();

  // ---------------------------------------------------------------- banner

  const banner = {
    _network: false,
    _el() { return document.getElementById("banner"); },
    network() {
      this._network = true;
      const b = this._el();
      if (!b) return;
      b.replaceChildren(
        el("strong", { text: "Cannot reach the sensorlake server." }),
        " Check that it is running; the page keeps trying.");
      b.hidden = false;
    },
    clearNetwork() {
      if (!this._network) return;
      this._network = false;
      const b = this._el();
      if (b) { b.hidden = true; b.replaceChildren(); }
    },
  };

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, message, hint, body) {
      super(message || "request failed");
      this.name = "ApiError";
      this.status = status;
      this.hint = hint || null;
      this.body = body || null;
    }
  }

  /** Raised in place of an answer that no longer matters: the page was left, or the key
   * changed while the request was out. Pages ignore it. */
  class GoneError extends Error {
    constructor() { super("gone"); this.name = "GoneError"; }
  }

  let authEpoch = 0;

  async function readError(res) {
    let text = "";
    try { text = await res.text(); } catch (e) { /* nothing */ }
    try {
      const body = JSON.parse(text);
      if (body && typeof body === "object") {
        return {
          error: typeof body.error === "string" ? body.error
            : (body.error != null ? JSON.stringify(body.error) : null),
          hint: typeof body.hint === "string" ? body.hint : null,
          body,
        };
      }
    } catch (e) { /* not JSON */ }
    return { error: null, hint: null, body: null, text };
  }

  function authHeaders(headers) {
    const key = getKey();
    if (key) headers.Authorization = "Bearer " + key;
    return headers;
  }

  /**
   * fetch() for the API: sends the key, raises ApiError with the server's error and hint for
   * any status that is not ok (but those listed in opts.allow), opens the key prompt on 401.
   * opts: method, json (a body to send as JSON), raw (answer the Response), accept, allow,
   * signal.
   */
  async function api(path, opts = {}) {
    const epoch = authEpoch;
    const headers = authHeaders({ Accept: opts.accept || "application/json" });
    let body;
    if (opts.json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(opts.json);
    }
    let res;
    try {
      res = await fetch(path, {
        method: opts.method || "GET", headers, body, signal: opts.signal, cache: "no-store",
        credentials: "same-origin",
      });
    } catch (e) {
      if (e && e.name === "AbortError") throw e;
      if (epoch !== authEpoch) throw new GoneError();
      banner.network();
      throw new ApiError(0, "Cannot reach the sensorlake server",
        "check that it is running; the page retries");
    }
    banner.clearNetwork();
    if (epoch !== authEpoch) throw new GoneError();
    const allowed = (opts.allow || []).includes(res.status);
    if (res.status === 401) {
      const info = await readError(res);
      auth.needed(info);
      throw new ApiError(401, info.error || "an API key is needed", info.hint);
    }
    if (!res.ok && !allowed) {
      const info = await readError(res);
      const fallback = "HTTP " + res.status + (res.statusText ? " " + res.statusText : "");
      throw new ApiError(res.status, info.error || fallback, info.hint, info.body);
    }
    if (opts.raw) return res;
    if (res.status === 204) return null;
    const text = await res.text();
    if (epoch !== authEpoch) throw new GoneError();
    if (!text) return null;
    try {
      return JSON.parse(text);
    } catch (e) {
      throw new ApiError(res.status, "the server answered something that is not JSON",
        "is this the sensorlake API? (" + path + ")");
    }
  }

  /** An error as an inline box: message, hint; nothing for errors that need no showing. */
  function errorBox(err, testid, force) {
    if (!force && isQuiet(err)) return null;
    const message = err instanceof ApiError || (err && err.message) ? err.message : String(err);
    const hint = err && err.hint;
    const box = el("div", { class: "error-box", role: "alert", testid: testid || "error" },
      el("p", { class: "error-message", text: message }),
      hint ? el("p", { class: "error-hint", text: hint }) : null);
    if (err instanceof ApiError && err.status === 403) {
      box.prepend(el("p", { class: "error-title", text: "Not allowed with this key" }));
    }
    return box;
  }

  function isQuiet(err) {
    return err instanceof GoneError || (err && err.name === "AbortError")
      || (err instanceof ApiError && err.status === 401);
  }

  // ---------------------------------------------------------------- dialogs

  let openDialogs = 0;
  const dialogClosers = new Set();

  /** Cancels every open dialog (when the key is refused, what they were for is gone). */
  function closeAllDialogs() {
    for (const close of [...dialogClosers]) close(null);
  }

  /**
   * A modal form. fields: [{name, label, type ("text", "password", "select", "radio",
   * "textarea"), value, options: [[value, label]], placeholder, testid, required, hint}].
   * onSubmit(values) may be async; an error it raises is shown in the dialog, which stays open.
   * Answers what onSubmit answered, or null when cancelled. Focus stays inside; Esc cancels.
   */
  function dialog(spec) {
    return new Promise((resolve) => {
      const previous = document.activeElement;
      const titleId = "dlg-title-" + Math.random().toString(36).slice(2);
      const errorArea = el("div", { class: "dialog-error", testid: "dialog-error" });
      const inputs = {};
      const fieldNodes = (spec.fields || []).map((f) => fieldNode(f, inputs));
      const submit = el("button", {
        type: "submit", class: "button button-primary", testid: spec.submitTestid || "dialog-submit",
        text: spec.submitLabel || "OK",
      });
      const cancel = spec.cancelLabel === null ? null : el("button", {
        type: "button", class: "button", testid: "dialog-cancel", text: spec.cancelLabel || "Cancel",
      });
      const form = el("form", { class: "dialog-form", novalidate: true },
        el("h2", { id: titleId, class: "dialog-title", text: spec.title }),
        spec.message ? el("p", { class: "dialog-message", text: spec.message }) : null,
        spec.messageNode || null,
        fieldNodes, errorArea,
        el("div", { class: "dialog-actions" }, cancel, submit));
      const box = el("div", {
        class: "dialog", role: "dialog", "aria-modal": "true", "aria-labelledby": titleId,
        testid: spec.testid || "dialog",
      }, form);
      const backdrop = el("div", { class: "dialog-backdrop" }, box);
      const others = [...document.body.children];
      const madeInert = others.filter((n) => !n.inert);
      madeInert.forEach((n) => { n.inert = true; });
      document.body.appendChild(backdrop);
      openDialogs++;

      let done = false;
      dialogClosers.add(close);
      function close(value) {
        if (done) return;
        done = true;
        dialogClosers.delete(close);
        openDialogs--;
        backdrop.remove();
        madeInert.forEach((n) => { n.inert = false; });
        document.removeEventListener("keydown", onKey, true);
        if (previous && previous.isConnected && typeof previous.focus === "function") {
          previous.focus();
        }
        resolve(value);
      }
      function focusables() {
        return [...box.querySelectorAll(
          "button, [href], input, select, textarea, [tabindex]:not([tabindex='-1'])")]
          .filter((n) => !n.disabled && n.offsetParent !== null);
      }
      function onKey(e) {
        if (e.key === "Escape") {
          e.preventDefault();
          e.stopPropagation();
          if (spec.cancelLabel !== null) close(null);
        } else if (e.key === "Tab") {
          const f = focusables();
          if (!f.length) return;
          const first = f[0];
          const last = f[f.length - 1];
          if (e.shiftKey && (document.activeElement === first || !box.contains(document.activeElement))) {
            e.preventDefault();
            last.focus();
          } else if (!e.shiftKey && (document.activeElement === last || !box.contains(document.activeElement))) {
            e.preventDefault();
            first.focus();
          }
        }
      }
      document.addEventListener("keydown", onKey, true);
      if (cancel) cancel.addEventListener("click", () => close(null));
      backdrop.addEventListener("mousedown", (e) => {
        if (e.target === backdrop && spec.cancelLabel !== null) close(null);
      });
      form.addEventListener("submit", async (e) => {
        e.preventDefault();
        errorArea.replaceChildren();
        const values = {};
        for (const [name, get] of Object.entries(inputs)) values[name] = get();
        for (const f of spec.fields || []) {
          if (f.required && !String(values[f.name] || "").trim()) {
            errorArea.replaceChildren(errorBox(new Error((f.label || f.name) + " is needed")));
            return;
          }
        }
        submit.disabled = true;
        try {
          const answer = spec.onSubmit ? await spec.onSubmit(values) : values;
          close(answer === undefined ? values : answer);
        } catch (err) {
          if (done) return;
          if (err instanceof GoneError) { close(null); return; }
          errorArea.replaceChildren(errorBox(err, "dialog-error-box", true));
        } finally {
          submit.disabled = false;
        }
      });
      const first = box.querySelector("input:not([type=radio]), input:checked, select, textarea")
        || submit;
      first.focus();
    });
  }

  function fieldNode(f, inputs) {
    const id = "fld-" + f.name + "-" + Math.random().toString(36).slice(2, 8);
    const hint = f.hint ? el("p", { class: "field-hint", id: id + "-hint", text: f.hint }) : null;
    if (f.type === "radio") {
      const radios = (f.options || []).map(([value, label]) => {
        const input = el("input", {
          type: "radio", name: id, value, checked: value === f.value,
          testid: f.testid ? f.testid + "-" + value : null,
        });
        return el("label", { class: "choice" }, input, " ", label);
      });
      inputs[f.name] = () => {
        const checked = radios.map((r) => r.querySelector("input")).find((i) => i.checked);
        return checked ? checked.value : null;
      };
      return el("fieldset", { class: "field" }, el("legend", { text: f.label }), radios, hint);
    }
    let input;
    if (f.type === "select") {
      input = el("select", { id, testid: f.testid },
        (f.options || []).map(([value, label]) => el("option", { value, text: label, selected: value === f.value })));
    } else if (f.type === "textarea") {
      input = el("textarea", { id, testid: f.testid, rows: 3, placeholder: f.placeholder, value: f.value || "" });
    } else {
      input = el("input", {
        id, type: f.type || "text", testid: f.testid, value: f.value || "",
        placeholder: f.placeholder, autocomplete: f.autocomplete || "off",
        required: !!f.required, spellcheck: "false",
      });
    }
    if (hint) input.setAttribute("aria-describedby", id + "-hint");
    inputs[f.name] = () => input.value;
    const wrap = el("div", { class: "field" }, el("label", { for: id, text: f.label }), input, hint);
    if (f.onInput) input.addEventListener("input", () => f.onInput(input.value, wrap));
    return wrap;
  }

  // ---------------------------------------------------------------- authentication

  const auth = {
    prompting: false,
    /** A request answered 401: forget what was shown, ask for a key. */
    needed(info) {
      if (this.prompting) return;
      closeAllDialogs();
      this.prompting = true;
      authEpoch++;
      const hadKey = !!getKey();
      if (hadKey) setKey(null);
      live.stop();
      store.reset();
      router.blank();
      const message = hadKey
        ? "The stored API key was not accepted" + (info && info.error ? ": " + info.error : ".")
        : "This sensorlake needs an API key to show its data.";
      this.prompt(message);
    },
    async prompt(message) {
      this.prompting = true;
      const saved = await dialog({
        title: "API key",
        message: message || "Enter an API key with the read scope (admin for silences and saved queries).",
        testid: "key-prompt",
        submitLabel: "Save",
        submitTestid: "key-save",
        fields: [{
          name: "key", label: "API key", type: "password", testid: "key-input", required: true,
          autocomplete: "current-password",
          hint: "Kept in this browser only (localStorage) and sent as a Bearer token.",
        }],
        onSubmit: async (values) => {
          const key = values.key.trim();
          await checkKey(key);
          return key;
        },
      });
      this.prompting = false;
      if (saved) {
        setKey(saved);
        authEpoch++;
        live.start();
        router.render();
      } else {
        router.blank();
      }
    },
    signOut() {
      setKey(null);
      authEpoch++;
      live.stop();
      store.reset();
      live.start();
      router.render();
    },
  };

  /** Tries a key on a read route before keeping it: 401 and 403 are told in the prompt. */
  async function checkKey(key) {
    let res;
    try {
      res = await fetch("/api/v1/tables", {
        headers: { Accept: "application/json", Authorization: "Bearer " + key }, cache: "no-store",
      });
    } catch (e) {
      throw new ApiError(0, "Cannot reach the sensorlake server", "check that it is running");
    }
    if (res.ok) return;
    const info = await readError(res);
    if (res.status === 401) {
      throw new ApiError(401, info.error || "this key was not accepted",
        info.hint || "check the key: sensorlake keys list shows the keys there are");
    }
    if (res.status === 403) {
      throw new ApiError(403, info.error || "this key may not read", info.hint);
    }
    throw new ApiError(res.status, info.error || "HTTP " + res.status, info.hint);
  }

  // ---------------------------------------------------------------- store of live state

  const store = new Emitter();
  store.devices = new Map(); // name → {name, topic, values, last_seen, online, status, attributes, ...}
  store.offlineAfter = null;
  store.alerts = null; // {firing, pending, by_device}
  store.reset = function () {
    this.devices = new Map();
    this.offlineAfter = null;
    this.alerts = null;
    this.emit("alerts", null);
  };

  function laterIso(a, b) {
    const ma = toMs(a);
    const mb = toMs(b);
    if (!Number.isFinite(ma)) return b;
    if (!Number.isFinite(mb)) return a;
    return mb >= ma ? b : a;
  }

  /** Merges device records (from /api/v1/devices or a live event) by name; answers
   * {name: [changed value fields]} for the devices whose values moved. */
  store.mergeDevices = function (records, fromLive) {
    const changed = new Map();
    for (const r of records || []) {
      if (!r || typeof r !== "object") continue;
      const name = r.device_id != null ? String(r.device_id) : r.name != null ? String(r.name) : null;
      if (!name) continue;
      const old = this.devices.get(name);
      const now = old ? { ...old } : { name, values: {} };
      const fields = [];
      if (!fromLive) {
        for (const k of ["status", "attributes", "readings", "certificate_expires", "gateway"]) {
          if (k in r) now[k] = r[k];
        }
      }
      if (r.topic != null) now.topic = r.topic;
      if (r.last_seen != null) now.last_seen = laterIso(now.last_seen, r.last_seen);
      const isNewer = !old || !old.last_seen || toMs(r.last_seen) >= toMs(old.last_seen)
        || !Number.isFinite(toMs(r.last_seen));
      if (typeof r.online === "boolean" && (fromLive || isNewer || old.online == null)) {
        now.online = r.online;
      } else if (!("online" in now)) now.online = null;
      if (r.values && typeof r.values === "object" && isNewer) {
        const merged = { ...(now.values || {}) };
        for (const [k, v] of Object.entries(r.values)) {
          if (!(k in merged) || !sameValue(merged[k], v)) fields.push(k);
          merged[k] = v;
        }
        now.values = merged;
      }
      this.devices.set(name, now);
      if (!old || fields.length || old.online !== now.online || old.last_seen !== now.last_seen
        || old.topic !== now.topic) {
        changed.set(name, fields);
      }
    }
    return changed;
  };

  function sameValue(a, b) {
    if (a === b) return true;
    if (typeof a === "object" || typeof b === "object") return JSON.stringify(a) === JSON.stringify(b);
    return false;
  }

  /** Whether a device counts as online: what the server said, else from last_seen. */
  store.isOnline = function (d) {
    if (typeof d.online === "boolean") return d.online;
    const ms = toMs(d.last_seen);
    if (!Number.isFinite(ms) || store.offlineAfter == null) return null;
    return Date.now() - ms <= store.offlineAfter * 1000;
  };

  store.setAlerts = function (counts) {
    this.alerts = counts;
    this.emit("alerts", counts);
  };

  /** Alert counts from GET /api/v1/alerts' list (when no live event said them yet). */
  store.alertsFromList = function (list) {
    const counts = { firing: 0, pending: 0, by_device: {} };
    for (const a of list || []) {
      if (a.status !== "firing" && a.status !== "pending") continue;
      counts[a.status]++;
      if (a.device != null) counts.by_device[a.device] = (counts.by_device[a.device] || 0) + 1;
    }
    return counts;
  };

  /** The device list, fetched (and merged into the store). */
  store.load = async function (ctx) {
    const answer = await (ctx ? ctx.api("/api/v1/devices") : api("/api/v1/devices"));
    if (answer && typeof answer.offline_after === "number") store.offlineAfter = answer.offline_after;
    const list = (answer && Array.isArray(answer.devices)) ? answer.devices : [];
    store.mergeDevices(list, false);
    store.emit("devices", { full: true, changed: new Map(list.map((d) => [String(d.name), []])) });
    return list;
  };

  function numericFields(values) {
    return Object.entries(values || {})
      .filter(([, v]) => typeof v === "number" && Number.isFinite(v))
      .map(([k]) => k);
  }

  // ---------------------------------------------------------------- live events (SSE)

  const live = new Emitter();
  live.state = "connecting";
  let liveRun = 0;
  let liveAbort = null;
  let liveTimer = null;
  let backoff = 1000;
  const STALL_MS = 60000;

  function setLiveState(state) {
    live.state = state;
    const node = document.getElementById("live-status");
    if (node) {
      node.textContent = state;
      node.dataset.state = state;
      node.title = state === "live" ? "Receiving live updates"
        : state === "reconnecting" ? "Live updates interrupted: reconnecting"
          : state === "signed-out" ? "Live updates need an API key" : "Connecting to live updates";
    }
    live.emit("state", state);
  }

  live.start = function () {
    live.stop();
    const run = ++liveRun;
    backoff = 1000;
    connect(run, false);
  };

  live.stop = function () {
    liveRun++;
    if (liveAbort) liveAbort.abort();
    liveAbort = null;
    clearTimeout(liveTimer);
    setLiveState("signed-out");
  };

  async function connect(run, retrying) {
    if (run !== liveRun) return;
    setLiveState(retrying ? "reconnecting" : "connecting");
    const abort = new AbortController();
    liveAbort = abort;
    let stall = null;
    const kick = () => {
      clearTimeout(stall);
      stall = setTimeout(() => abort.abort(), STALL_MS);
    };
    try {
      kick();
      const res = await fetch("/api/v1/live", {
        headers: authHeaders({ Accept: "text/event-stream" }), signal: abort.signal,
        cache: "no-store", credentials: "same-origin",
      });
      if (run !== liveRun) return;
      if (res.status === 401) {
        clearTimeout(stall);
        const info = await readError(res);
        auth.needed(info);
        return;
      }
      if (!res.ok || !res.body) throw new Error("live: HTTP " + res.status);
      setLiveState("live");
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      const parser = sseParser((event, data) => {
        if (run !== liveRun) return;
        backoff = 1000;
        onLiveEvent(event, data);
      });
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        kick();
        parser.push(decoder.decode(value, { stream: true }));
        if (run !== liveRun) { reader.cancel().catch(() => {}); return; }
      }
      parser.push(decoder.decode());
    } catch (e) {
      if (run !== liveRun) return;
    } finally {
      clearTimeout(stall);
    }
    if (run !== liveRun) return;
    setLiveState("reconnecting");
    const wait = backoff;
    backoff = Math.min(backoff * 2, 10000);
    liveTimer = setTimeout(() => connect(run, true), wait);
  }

  /** Text in, (event, data) out for each complete frame; `:` lines are keep-alives. */
  function sseParser(onFrame) {
    let buffer = "";
    let event = "";
    let data = [];
    function line(text) {
      if (text === "") {
        if (data.length) onFrame(event || "message", data.join("\n"));
        event = "";
        data = [];
        return;
      }
      if (text[0] === ":") return;
      const colon = text.indexOf(":");
      const field = colon < 0 ? text : text.slice(0, colon);
      let value = colon < 0 ? "" : text.slice(colon + 1);
      if (value[0] === " ") value = value.slice(1);
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
      else if (field === "retry" && /^\d+$/.test(value)) backoff = Math.min(Math.max(+value, 1000), 10000);
    }
    return {
      push(chunk) {
        buffer += chunk;
        let start = 0;
        for (let i = 0; i < buffer.length; i++) {
          const c = buffer[i];
          if (c === "\n" || c === "\r") {
            if (c === "\r" && i === buffer.length - 1) break; // a \n may follow in the next chunk
            line(buffer.slice(start, i));
            if (c === "\r" && buffer[i + 1] === "\n") i++;
            start = i + 1;
          }
        }
        buffer = buffer.slice(start);
      },
    };
  }

  function onLiveEvent(event, data) {
    let body;
    try { body = JSON.parse(data); } catch (e) { return; }
    if (!body || typeof body !== "object") return;
    if (event === "devices") {
      const changed = store.mergeDevices(body.devices, true);
      store.emit("devices", { full: !!body.full, changed, live: true, records: body.devices || [] });
    } else if (event === "alerts") {
      store.setAlerts({
        firing: typeof body.firing === "number" ? body.firing : 0,
        pending: typeof body.pending === "number" ? body.pending : 0,
        by_device: body.by_device && typeof body.by_device === "object" ? body.by_device : {},
      });
    }
    live.emit(event, body);
  }

  // ---------------------------------------------------------------- theme

  const media = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;

  function theme() {
    const chosen = document.documentElement.dataset.theme;
    if (chosen === "dark" || chosen === "light") return chosen;
    return media && media.matches ? "dark" : "light";
  }

  function showTheme() {
    const button = document.getElementById("theme-toggle");
    if (button) button.setAttribute("aria-pressed", theme() === "dark" ? "true" : "false");
  }

  function toggleTheme() {
    const next = theme() === "dark" ? "light" : "dark";
    document.documentElement.dataset.theme = next;
    storage.set("sensorlake.theme", next);
    showTheme();
    bus.emit("theme", next);
  }

  if (media && media.addEventListener) {
    media.addEventListener("change", () => {
      if (!document.documentElement.dataset.theme) {
        showTheme();
        bus.emit("theme", theme());
      }
    });
  }

  // ---------------------------------------------------------------- router and pages

  const pages = {};
  /** SL.page(name, {title, render(ctx)}) — render builds into ctx.root and calls ctx.ready()
   * once its first render is done. */
  function page(name, def) { pages[name] = def; }

  function parseHash() {
    let hash = location.hash.replace(/^#/, "");
    if (!hash.startsWith("/")) hash = "/";
    const q = hash.indexOf("?");
    const path = q < 0 ? hash : hash.slice(0, q);
    const query = new URLSearchParams(q < 0 ? "" : hash.slice(q + 1));
    const parts = path.split("/").filter(Boolean).map((p) => {
      try { return decodeURIComponent(p); } catch (e) { return p; }
    });
    let name = "notfound";
    const params = {};
    if (parts.length === 0) name = "overview";
    else if (parts[0] === "devices" && parts.length === 2) { name = "device"; params.name = parts[1]; }
    else if (parts[0] === "devices" && parts.length === 1) name = "overview";
    else if (parts.length === 1 && ["compare", "alerts", "sql", "health"].includes(parts[0])) name = parts[0];
    return { name, params, query, path };
  }

  class PageCtx {
    constructor(route, root) {
      this.route = route;
      this.params = route.params;
      this.query = route.query;
      this.root = root;
      this.alive = true;
      this._cleanups = [];
    }
    api(path, opts) {
      return api(path, opts).then(
        (v) => { if (!this.alive) throw new GoneError(); return v; },
        (e) => { if (!this.alive) throw new GoneError(); throw e; });
    }
    /** Runs fn now and then every ms after each run ends, while the page is shown (skipping
     * while the browser tab is hidden). */
    poll(ms, fn) {
      let timer = null;
      const run = async () => {
        if (!this.alive) return;
        if (!document.hidden && !openDialogs) {
          try { await fn(); } catch (e) { if (!isQuiet(e)) console.warn(e); }
        }
        if (this.alive) timer = setTimeout(run, ms);
      };
      timer = setTimeout(run, ms);
      this.cleanup(() => clearTimeout(timer));
    }
    every(ms, fn) {
      const id = setInterval(() => { if (this.alive) fn(); }, ms);
      this.cleanup(() => clearInterval(id));
    }
    on(emitter, event, fn) { this.cleanup(emitter.on(event, fn)); }
    cleanup(fn) { this._cleanups.push(fn); }
    ready() { if (this.alive) document.body.dataset.ready = "1"; }
    /** Puts the page's state into the hash's query without a new render. */
    setQuery(values) {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(values)) if (v != null && v !== "") q.set(k, v);
      const text = q.toString();
      const path = this.route.path || "/";
      const hash = "#" + path + (text ? "?" + text : "");
      if (location.hash !== hash) history.replaceState(null, "", hash);
      this.query = q;
    }
    destroy() {
      this.alive = false;
      for (const fn of this._cleanups.splice(0)) {
        try { fn(); } catch (e) { console.error(e); }
      }
    }
  }

  const router = {
    current: null,
    first: true,
    render() {
      const main = document.getElementById("main");
      if (this.current) this.current.destroy();
      document.body.dataset.ready = "0";
      clear(main);
      const route = parseHash();
      markNav(route.name);
      closeMenu();
      const def = pages[route.name] || pages.notfound;
      document.title = (def && def.title ? def.title + " · " : "") + "sensorlake";
      const ctx = new PageCtx(route, main);
      this.current = ctx;
      if (!this.first) main.focus({ preventScroll: true });
      this.first = false;
      window.scrollTo(0, 0);
      if (auth.prompting) { this.blank(); return; }
      try {
        const out = def.render(ctx);
        if (out && typeof out.catch === "function") {
          out.catch((e) => { showPageError(ctx, e); });
        }
      } catch (e) {
        showPageError(ctx, e);
      }
    },
    /** Nothing but a sign-in message: what was shown before is gone. */
    blank() {
      if (this.current) this.current.destroy();
      this.current = null;
      const main = document.getElementById("main");
      clear(main);
      main.append(el("section", { class: "page page-message", testid: "signed-out" },
        el("h1", { text: "Sign in" }),
        el("p", { text: "An API key is needed to see this sensorlake's data." }),
        el("button", {
          type: "button", class: "button button-primary", text: "Enter API key",
          onclick: () => { if (!auth.prompting) auth.prompt(); },
        })));
      document.body.dataset.ready = "1";
    },
  };

  function showPageError(ctx, e) {
    if (!ctx.alive || isQuiet(e)) return;
    console.error(e);
    const box = errorBox(e, "page-error");
    if (box) ctx.root.prepend(box);
    ctx.ready();
  }

  page("notfound", {
    title: "Not found",
    render(ctx) {
      ctx.root.append(el("section", { class: "page page-message" },
        el("h1", { text: "No such page" }),
        el("p", {}, "There is nothing at ", el("code", { text: location.hash || "/" }), ". ",
          el("a", { href: "#/", text: "Go to the overview" }), ".")));
      ctx.ready();
    },
  });

  // ---------------------------------------------------------------- navigation bar

  function markNav(name) {
    const active = name === "device" ? "overview" : name;
    for (const a of document.querySelectorAll(".nav-links a[data-page]")) {
      if (a.dataset.page === active) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
  }

  function closeMenu() {
    const button = document.getElementById("menu-button");
    if (button) button.setAttribute("aria-expanded", "false");
    document.body.classList.remove("menu-open");
  }

  function showAlertBadge(counts) {
    const badge = document.getElementById("alerts-badge");
    if (!badge) return;
    const firing = counts && typeof counts.firing === "number" ? counts.firing : 0;
    badge.hidden = !firing;
    badge.textContent = firing ? String(firing) : "";
    badge.setAttribute("aria-label", firing + " firing");
    badge.title = firing + " firing";
  }

  function setupNav() {
    const button = document.getElementById("menu-button");
    button.addEventListener("click", () => {
      const open = button.getAttribute("aria-expanded") !== "true";
      button.setAttribute("aria-expanded", open ? "true" : "false");
      document.body.classList.toggle("menu-open", open);
    });
    document.addEventListener("keydown", (e) => {
      if (e.key === "Escape" && document.body.classList.contains("menu-open") && !openDialogs) {
        closeMenu();
        button.focus();
      }
    });
    document.getElementById("theme-toggle").addEventListener("click", toggleTheme);
    document.getElementById("sign-out").addEventListener("click", () => auth.signOut());
    document.getElementById("sign-out").hidden = !getKey();
    // The skip link jumps to the content without touching the route in the hash. The content
    // is scrolled to just below the sticky bar: scrollIntoView() would hide its heading under it.
    document.querySelector(".skip-link").addEventListener("click", (e) => {
      e.preventDefault();
      const main = document.getElementById("main");
      const bar = document.querySelector(".topbar");
      main.focus({ preventScroll: true });
      const top = main.getBoundingClientRect().top + window.scrollY - (bar ? bar.offsetHeight : 0);
      window.scrollTo(0, Math.max(0, top));
    });
    store.on("alerts", showAlertBadge);
    showTheme();
  }

  /** The badge before the first live event: counted from the alert list. */
  async function primeAlerts() {
    try {
      const answer = await api("/api/v1/alerts");
      if (!store.alerts && answer && Array.isArray(answer.alerts)) {
        store.setAlerts(store.alertsFromList(answer.alerts));
      }
    } catch (e) { /* the badge waits for live events */ }
  }

  function start() {
    setupNav();
    window.addEventListener("hashchange", () => router.render());
    router.render();
    live.start();
    primeAlerts();
  }

  // ---------------------------------------------------------------- time ranges

  const RANGES = [
    ["15m", "15 min", 15 * 60],
    ["1h", "1 h", 3600],
    ["24h", "24 h", 86400],
    ["7d", "7 days", 7 * 86400],
    ["30d", "30 days", 30 * 86400],
  ];
  const RANGE_SECONDS = Object.fromEntries(RANGES.map(([k, , s]) => [k, s]));

  /** {kind: "24h"} | {kind: "custom"|"zoom", from: ms, to: ms} → {from: Date, to: Date} */
  function resolveRange(range) {
    if (range && RANGE_SECONDS[range.kind]) {
      const to = Date.now();
      return { from: new Date(to - RANGE_SECONDS[range.kind] * 1000), to: new Date(to) };
    }
    return { from: new Date(range.from), to: new Date(range.to) };
  }

  function rangeFromQuery(query, fallback) {
    const kind = query.get("range");
    if (kind && RANGE_SECONDS[kind]) return { kind };
    const from = toMs(query.get("from"));
    const to = toMs(query.get("to"));
    if (Number.isFinite(from) && Number.isFinite(to) && to > from) return { kind: "custom", from, to };
    return { kind: fallback };
  }

  function rangeToQuery(range) {
    if (!range) return {};
    if (RANGE_SECONDS[range.kind]) return { range: range.kind };
    const base = range.kind === "zoom" && range.base ? range.base : range;
    if (range.kind === "zoom" && RANGE_SECONDS[base.kind]) return { range: base.kind };
    return { from: new Date(base.from).toISOString(), to: new Date(base.to).toISOString() };
  }

  function localInput(ms) {
    const d = new Date(ms);
    const p = (n) => String(n).padStart(2, "0");
    return d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate()) + "T"
      + p(d.getHours()) + ":" + p(d.getMinutes());
  }

  /** Buttons for the fixed ranges and a custom from–to form; onChange(range). */
  function rangePicker(initial, onChange) {
    let current = initial;
    const buttons = RANGES.map(([kind, label]) => el("button", {
      type: "button", class: "chip", testid: "range-" + kind, text: label, dataset: { kind },
      onclick: () => choose({ kind }),
    }));
    const customButton = el("button", {
      type: "button", class: "chip", testid: "range-custom", text: "Custom",
      "aria-expanded": "false", dataset: { kind: "custom" },
      onclick: () => {
        const open = form.hidden;
        form.hidden = !open;
        customButton.setAttribute("aria-expanded", open ? "true" : "false");
        if (open) {
          const r = resolveRange(current);
          fromInput.value = localInput(r.from.getTime());
          toInput.value = localInput(r.to.getTime());
          fromInput.focus();
        }
      },
    });
    const uid = Math.random().toString(36).slice(2, 8);
    const fromInput = el("input", { type: "datetime-local", id: "from-" + uid, testid: "range-from", required: true });
    const toInput = el("input", { type: "datetime-local", id: "to-" + uid, testid: "range-to", required: true });
    const formError = el("p", { class: "field-error", role: "alert" });
    const form = el("form", { class: "range-custom", hidden: true, testid: "range-custom-form" },
      el("label", { for: fromInput.id, text: "From" }), fromInput,
      el("label", { for: toInput.id, text: "To" }), toInput,
      el("button", { type: "submit", class: "button", testid: "range-apply", text: "Apply" }),
      formError);
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const from = new Date(fromInput.value).getTime();
      const to = new Date(toInput.value).getTime();
      if (!Number.isFinite(from) || !Number.isFinite(to) || to <= from) {
        formError.textContent = "Pick a start before the end.";
        return;
      }
      formError.textContent = "";
      choose({ kind: "custom", from, to });
    });
    const node = el("div", { class: "range-picker", testid: "range-picker" },
      el("div", { class: "chips", role: "group", "aria-label": "Time range" }, buttons, customButton),
      form);

    function show() {
      const kind = current.kind === "zoom" && current.base ? current.base.kind : current.kind;
      for (const b of [...buttons, customButton]) {
        b.setAttribute("aria-pressed", b.dataset.kind === kind ? "true" : "false");
      }
    }
    function choose(range) {
      current = range;
      show();
      if (range.kind !== "custom") {
        form.hidden = true;
        customButton.setAttribute("aria-expanded", "false");
      }
      onChange(range);
    }
    show();
    return {
      node,
      set(range) { current = range; show(); },
    };
  }

  // ---------------------------------------------------------------- small shared widgets

  function table(columns, rows, opts = {}) {
    // A column: its heading, or {text, num} for one of numbers (aligned right).
    const head = el("thead", {}, el("tr", {}, columns.map((c) => (typeof c === "object" && c
      ? el("th", { scope: "col", class: c.num ? "num" : null, text: c.text })
      : el("th", { scope: "col", text: c })))));
    const body = el("tbody", {}, rows);
    return el("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": opts.label || "Table" },
      el("table", { class: "data-table", testid: opts.testid }, head, body));
  }

  function badge(text, kind, props) {
    return el("span", Object.assign({ class: "badge badge-" + (kind || "neutral"), text }, props || {}));
  }

  function deviceLink(name) {
    return el("a", { href: "#/devices/" + encodeURIComponent(name), text: name });
  }

  Object.assign(SL, {
    el, append, clear, DASH, fmtNum, fmtInt, fmtBytes, fmtTime, fmtRel, fmtAge, fmtCell, toMs,
    storage, getKey, setKey, Emitter, bus, banner, ApiError, GoneError, api, errorBox, isQuiet,
    dialog, auth, store, live, numericFields, theme, page, pages, router, start,
    RANGES, RANGE_SECONDS, resolveRange, rangeFromQuery, rangeToQuery, rangePicker,
    table, badge, deviceLink, sseParser,
  });
  return SL;
})();
