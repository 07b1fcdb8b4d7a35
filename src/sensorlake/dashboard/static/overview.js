// Overview (#/): every device as a card, kept current by the live events.
"use strict";

(function (SL) {
  const { el, fmtNum, fmtRel, fmtTime, store } = SL;

  const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

  SL.page("overview", {
    title: "Overview",
    async render(ctx) {
      const root = ctx.root;
      const search = el("input", {
        type: "search", id: "device-search", testid: "device-search", autocomplete: "off",
        placeholder: "Name, topic or attribute", value: ctx.query.get("q") || "",
        spellcheck: "false",
      });
      const stateFilter = el("select", { id: "device-state", testid: "device-state-filter" },
        el("option", { value: "", text: "All devices" }),
        el("option", { value: "online", text: "Online" }),
        el("option", { value: "offline", text: "Offline" }));
      stateFilter.value = ["online", "offline"].includes(ctx.query.get("state")) ? ctx.query.get("state") : "";
      const summary = el("p", { class: "muted", testid: "device-summary", "aria-live": "polite" });
      const grid = el("div", { class: "cards", testid: "device-grid" });
      const none = el("p", { class: "empty", testid: "device-empty", hidden: true });
      const errors = el("div", {});
      const form = el("form", { class: "toolbar", role: "search", onsubmit: (e) => e.preventDefault() },
        el("div", { class: "field field-grow" }, el("label", { for: search.id, text: "Search devices" }), search),
        el("div", { class: "field" }, el("label", { for: stateFilter.id, text: "Show" }), stateFilter));
      root.append(el("section", { class: "page", "aria-labelledby": "overview-title" },
        el("div", { class: "page-head" }, el("h1", { id: "overview-title", text: "Devices" }), summary),
        form, errors, grid, none));

      const cards = new Map(); // name → {node, parts}

      function filter() {
        const text = search.value.trim().toLowerCase();
        const want = stateFilter.value;
        let shown = 0;
        let online = 0;
        for (const [name, card] of cards) {
          const d = store.devices.get(name);
          if (!d) continue;
          const isOn = store.isOnline(d) === true;
          if (isOn) online++;
          const okState = !want || (want === "online" ? isOn : !isOn);
          const okText = !text || haystack(d).includes(text);
          card.node.hidden = !(okState && okText);
          if (!card.node.hidden) shown++;
        }
        const total = cards.size;
        summary.textContent = total
          ? (shown === total ? "" : shown + " of ") + total + " device" + (total === 1 ? "" : "s") + ", " + online + " online"
          : "";
        none.hidden = shown > 0 || !loaded;
        none.textContent = total ? "No device matches the filter." : "No device has sent a reading yet.";
        ctx.setQuery({ q: search.value.trim(), state: want });
      }

      function place(name, node) {
        const names = [...cards.keys()].sort(collator.compare);
        const i = names.indexOf(name);
        const after = names.slice(i + 1).map((n) => cards.get(n).node).find((n) => n.isConnected);
        grid.insertBefore(node, after || null);
      }

      function upsert(name, changedFields) {
        const d = store.devices.get(name);
        if (!d) return;
        let card = cards.get(name);
        if (!card) {
          card = makeCard(name);
          cards.set(name, card);
          place(name, card.node);
        }
        fillCard(card, d, changedFields || []);
      }

      function tick() {
        for (const [name, card] of cards) {
          const d = store.devices.get(name);
          if (d) showSeen(card, d);
        }
        filter();
      }

      let loaded = false;
      search.addEventListener("input", filter);
      stateFilter.addEventListener("change", filter);

      // What the store already has (live events since the page was last shown) at once.
      for (const name of store.devices.keys()) upsert(name, null);

      ctx.on(store, "devices", (ev) => {
        if (!ev || !ev.changed) return;
        for (const [name, fields] of ev.changed) upsert(name, ev.live ? fields : null);
        filter();
      });
      ctx.on(store, "alerts", () => { for (const [name, card] of cards) showAlerts(card, name); });
      ctx.every(1000, tick);

      if (!store.alerts) {
        ctx.api("/api/v1/alerts").then((a) => {
          if (!store.alerts && a && Array.isArray(a.alerts)) store.setAlerts(store.alertsFromList(a.alerts));
        }).catch(() => {});
      }
      try {
        await store.load(ctx);
      } catch (e) {
        const box = SL.errorBox(e, "page-error");
        if (box) errors.replaceChildren(box);
        if (SL.isQuiet(e)) return;
      }
      loaded = true;
      filter();
      ctx.ready();
    },
  });

  function haystack(d) {
    const parts = [d.name, d.topic || "", d.status || "", d.gateway || ""];
    if (d.attributes && typeof d.attributes === "object") {
      for (const [k, v] of Object.entries(d.attributes)) parts.push(k, typeof v === "object" ? JSON.stringify(v) : String(v));
    }
    return parts.join(" ").toLowerCase();
  }

  function makeCard(name) {
    const link = el("a", { class: "card-link", href: "#/devices/" + encodeURIComponent(name), text: name });
    const status = el("span", { class: "badge", testid: "device-status" });
    const topic = el("p", { class: "card-topic", testid: "device-topic", hidden: true });
    const values = el("dl", { class: "values", testid: "device-values" });
    const noValues = el("p", { class: "muted small", text: "No numeric values yet", hidden: true });
    const seen = el("span", { class: "muted small", testid: "device-last-seen" });
    const alerts = el("a", {
      class: "badge badge-danger badge-link", testid: "device-alerts",
      href: "#/alerts?device=" + encodeURIComponent(name), hidden: true,
    });
    const node = el("article", { class: "card device-card", testid: "device-card", dataset: { device: name } },
      el("header", { class: "card-head" }, el("h2", { class: "card-title" }, link), status),
      topic, values, noValues,
      el("footer", { class: "card-foot" }, seen, alerts));
    return { node, status, topic, values, noValues, seen, alerts, valueNodes: new Map() };
  }

  function fillCard(card, d, changedFields) {
    if (d.topic) {
      card.topic.textContent = d.topic;
      card.topic.hidden = false;
    }
    const fields = SL.numericFields(d.values).sort(collator.compare);
    const flash = new Set(changedFields);
    for (const f of fields) {
      let dd = card.valueNodes.get(f);
      if (!dd) {
        dd = el("dd", { testid: "device-value", dataset: { field: f } });
        card.valueNodes.set(f, dd);
        const row = el("div", { class: "value-row" }, el("dt", { text: f }), dd);
        const names = [...card.valueNodes.keys()].sort(collator.compare);
        const next = names.slice(names.indexOf(f) + 1).map((n) => card.valueNodes.get(n).parentElement)
          .find((n) => n && n.isConnected);
        card.values.insertBefore(row, next || null);
      }
      const text = fmtNum(d.values[f]);
      if (dd.textContent !== text) {
        const had = dd.textContent !== "";
        dd.textContent = text;
        dd.title = String(d.values[f]);
        if (had && flash.has(f)) {
          dd.classList.remove("flash");
          void dd.offsetWidth; // restart the animation
          dd.classList.add("flash");
          clearTimeout(dd._flash);
          dd._flash = setTimeout(() => dd.classList.remove("flash"), 1700);
        }
      }
    }
    for (const [f, dd] of card.valueNodes) {
      if (!fields.includes(f)) { dd.parentElement.remove(); card.valueNodes.delete(f); }
    }
    card.noValues.hidden = fields.length > 0;
    showSeen(card, d);
    showAlerts(card, d.name);
  }

  function showSeen(card, d) {
    const online = store.isOnline(d);
    const label = online === true ? "online" : online === false ? "offline" : (d.last_seen ? "unknown" : "never seen");
    if (card.status.textContent !== label) {
      card.status.textContent = label;
      card.status.className = "badge " + (online === true ? "badge-ok" : "badge-off");
    }
    card.node.dataset.online = online === true ? "true" : "false";
    const text = d.last_seen ? "last seen " + fmtRel(d.last_seen) : "no reading yet";
    if (card.seen.textContent !== text) card.seen.textContent = text;
    card.seen.title = d.last_seen ? fmtTime(d.last_seen) : "";
  }

  function showAlerts(card, name) {
    const counts = store.alerts && store.alerts.by_device;
    const n = counts && typeof counts[name] === "number" ? counts[name] : 0;
    card.alerts.hidden = !n;
    card.alerts.textContent = n ? n + (n === 1 ? " alert" : " alerts") : "";
    card.alerts.setAttribute("aria-label", n + " open alert" + (n === 1 ? "" : "s") + " for " + name);
  }
})(window.SL);
