// Oculus dashboard: relative times, self-refresh, table filters kept in the URL, and the
// forms and buttons that post JSON to the write API. No external code; CSP allows only
// this file.
"use strict";

function ago(seconds) {
  if (seconds < 0) return "just now";
  if (seconds < 90) return Math.round(seconds) + " s ago";
  if (seconds < 5400) return Math.round(seconds / 60) + " min ago";
  if (seconds < 172800) return Math.round(seconds / 3600) + " h ago";
  return Math.round(seconds / 86400) + " d ago";
}

function updateTimes() {
  const now = Date.now();
  for (const t of document.querySelectorAll("time[datetime]")) {
    const at = Date.parse(t.getAttribute("datetime"));
    if (Number.isNaN(at)) continue;
    if (!t.dataset.absolute) t.dataset.absolute = t.textContent;
    t.title = t.dataset.absolute + " UTC";
    t.textContent = t.classList.contains("ago") ? ago((now - at) / 1000) : t.dataset.absolute;
  }
}

let busy = 0;
function scheduleRefresh() {
  const seconds = Number(document.body.dataset.refresh || 0);
  if (!seconds) return;
  setInterval(() => {
    const editing = document.activeElement && document.activeElement.matches("input, textarea");
    if (!busy && !editing && !document.hidden) location.reload();
  }, seconds * 1000);
}

// Filters: form.filters[data-filter] names the rows; each select filters on the row's
// data attribute of the same name (rows without that attribute ignore it).
function readHash() {
  return new URLSearchParams(location.hash.replace(/^#/, ""));
}

function applyFilters(form) {
  const wanted = {};
  for (const el of form.elements) if (el.name && el.value) wanted[el.name] = el.value;
  let shown = 0, total = 0;
  const perTable = {};
  for (const row of document.querySelectorAll(form.dataset.filter)) {
    if (row.classList.contains("none")) continue;
    total++;
    let ok = true;
    for (const [key, value] of Object.entries(wanted)) {
      const have = row.dataset[key];
      if (have === undefined) continue;
      if (key === "reason" ? !have.split(" ").includes(value) : have !== value) ok = false;
    }
    row.hidden = !ok;
    const seen = ok && !row.hasAttribute("data-range-hidden");  // the time range hides it
    if (seen) shown++;
    const id = row.closest("table")?.id || "";
    perTable[id] = perTable[id] || [0, 0];
    perTable[id][1]++;
    if (seen) perTable[id][0]++;
  }
  const count = form.querySelector("[data-count]");
  if (count && count.dataset.countOf) {  // "#attempts:attempts,#fills:fills": one count each
    count.textContent = count.dataset.countOf.split(",").map((part) => {
      const [sel, noun] = part.split(":");
      const [s, t] = perTable[sel.replace(/^#/, "")] || [0, 0];
      return s + " of " + t + " " + noun;
    }).join(" · ") + " shown";
  } else if (count) {
    count.textContent = shown + " of " + total + " rows shown";
  }
  const hash = new URLSearchParams(wanted).toString();
  history.replaceState(null, "", hash ? "#" + hash : location.pathname);
}

// A select set from the URL: a value the page's rows did not offer (a market or reason
// older than its newest rows) gets its option, so the filter holds and says what it is.
function setSelect(el, value) {
  if (el.tagName === "SELECT" && value && ![...el.options].some((o) => o.value === value)) {
    el.add(new Option(value, value));
  }
  el.value = value;
}

function setupFilters() {
  for (const form of document.querySelectorAll("form.filters[data-filter]")) {
    const state = readHash();
    for (const el of form.elements) if (el.name && state.has(el.name)) setSelect(el, state.get(el.name));
    form.addEventListener("change", () => applyFilters(form));
    form.addEventListener("reset", () => setTimeout(() => applyFilters(form)));
    form.addEventListener("submit", (e) => e.preventDefault());
    window.addEventListener("hashchange", () => {
      const s = readHash();
      for (const el of form.elements) if (el.name) setSelect(el, s.get(el.name) || "");
      applyFilters(form);
    });
    applyFilters(form);
  }
}

// The write API.
async function post(url, body) {
  busy++;
  try {
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
    });
    let data = {};
    try { data = await response.json(); } catch (e) { data = {}; }
    if (!response.ok) {
      let message = data.detail || response.statusText;
      if (data.errors) message += ": " + data.errors.map((e) => (e.field ? e.field + ": " : "") + e.problem).join("; ");
      if (response.status === 401) message = "not logged in (reload the page to log in)";
      throw new Error(message);
    }
    return data;
  } finally {
    busy--;
  }
}

function show(output, ok, text) {
  if (!output) { if (!ok) alert(text); return; }
  output.className = ok ? "ok" : "error";
  output.textContent = text;
}

const SCALE = { usd: 1e6, price: 1e6, bps: 100, ratio: 1e4 };

function readField(el) {
  const unit = el.dataset.unit;
  const raw = el.value.trim();
  if (unit === "bool") return raw === "" ? undefined : raw === "true";
  if (unit === "text") return raw === "" ? undefined : raw;
  if (unit === "list") return raw.split(/[\s,]+/).filter(Boolean);
  if (raw === "") return undefined;
  if (raw.toLowerCase() === "inherit") return null;
  const n = Number(raw);
  if (!Number.isFinite(n)) throw new Error(el.name + ": not a number: " + raw);
  if (unit in SCALE) return Math.round(n * SCALE[unit]);
  if (!Number.isInteger(n)) throw new Error(el.name + ": whole numbers only");
  return n;
}

async function waitForPage(url, output) {
  for (let i = 0; i < 120; i++) {
    const r = await fetch(url, { method: "HEAD", credentials: "same-origin", cache: "no-store" });
    if (r.ok) { location.href = url; return; }
    show(output, true, "queued; the result page appears at " + url + " … (" + i + " s)");
    await new Promise((done) => setTimeout(done, 1000));
  }
  show(output, false, "no result page after 2 minutes: is the config_test job running? (status page)");
}

function setupForms() {
  for (const form of document.querySelectorAll("form[data-api-form]")) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const output = form.querySelector("output");
      const target = (event.submitter && event.submitter.dataset.submitTo) || form.dataset.apiForm;
      if (form.dataset.confirm && !confirm(form.dataset.confirm)) return;
      let url = form.dataset.apiForm;
      const body = JSON.parse(form.dataset.fixed || "{}");
      let hours;
      try {
        for (const el of form.querySelectorAll("[data-unit]")) {
          if (el.dataset.unit === "path") { url = url.replace("{" + el.name + "}", encodeURIComponent(el.value)); continue; }
          if (el.dataset.unit === "hours") { hours = Number(el.value); continue; }
          if ("onlyChanged" in form.dataset && el.value.trim() === (el.dataset.initial || "")) continue;
          const value = readField(el);
          if (value !== undefined) body[el.name] = value;
        }
      } catch (e) { show(output, false, e.message); return; }
      try {
        if (target !== form.dataset.apiForm) {
          const result = await post(target, { global: body, users: {}, hours: hours || 24 });
          await waitForPage(result.page, output);
          return;
        }
        if ("onlyChanged" in form.dataset && !Object.keys(body).length) { show(output, false, "nothing changed"); return; }
        await post(url, body);
        show(output, true, "saved; the pages show it within a few seconds");
        setTimeout(() => location.reload(), 3500);
      } catch (e) { show(output, false, e.message); }
    });
  }
  for (const button of document.querySelectorAll("button[data-api]")) {
    button.addEventListener("click", async () => {
      if (button.dataset.confirm && !confirm(button.dataset.confirm)) return;
      button.disabled = true;
      try {
        await post(button.dataset.api, JSON.parse(button.dataset.body || "{}"));
        button.textContent = "done ✓";
        setTimeout(() => location.reload(), 3500);
      } catch (e) {
        button.disabled = false;
        alert(e.message);
      }
    });
  }
}

// Tables with class "sortable": a click on a header with data-sort ("num" or "text")
// sorts by the cells' data-v (empty values last whatever the direction); a second click
// reverses. The choice is kept in the URL (#sort=<column>-<asc|desc>), so the page's
// reload keeps it.
function sortTable(table, column, descending) {
  const kind = table.tHead.rows[0].cells[column].dataset.sort;
  const body = table.tBodies[0];
  const rows = Array.from(body.rows).filter((r) => r.cells.length > column);
  const value = (row) => {
    const v = row.cells[column].dataset.v;
    if (v === undefined || v === "") return null;
    return kind === "num" ? Number(v) : v.toLowerCase();
  };
  rows.sort((a, b) => {
    const x = value(a), y = value(b);
    if (x === null || y === null) return (x === null) - (y === null);
    const c = kind === "num" ? x - y : x.localeCompare(y);
    return descending ? -c : c;
  });
  for (const row of rows) body.appendChild(row);
  for (const th of table.tHead.rows[0].cells) th.removeAttribute("aria-sort");
  table.tHead.rows[0].cells[column].setAttribute("aria-sort", descending ? "descending" : "ascending");
}

function setupSort() {
  for (const table of document.querySelectorAll("table.sortable")) {
    const headers = table.tHead.rows[0].cells;
    for (let i = 0; i < headers.length; i++) {
      if (!headers[i].dataset.sort) continue;
      headers[i].tabIndex = 0;
      headers[i].addEventListener("click", () => {
        const descending = headers[i].getAttribute("aria-sort") === "ascending";
        sortTable(table, i, descending);
        history.replaceState(null, "", "#sort=" + i + "-" + (descending ? "desc" : "asc"));
      });
    }
    const m = /sort=(\d+)-(asc|desc)/.exec(location.hash);
    if (m && Number(m[1]) < headers.length) sortTable(table, Number(m[1]), m[2] === "desc");
  }
}

// Freshness: a page whose figures are older than data-amber-s (its build, or its data:
// the older of the last poll and snapshot) turns amber, past data-red-s red, and its live
// indicators ("connected", "ready", "ACTIVE") say stale: a dead builder or job cannot
// leave a page green.
function checkFreshness() {
  const body = document.body;
  if (body.dataset.static !== undefined) return;  // an archival page (an attempt's) never goes stale
  const built = Date.parse(body.dataset.generated);
  if (Number.isNaN(built)) return;
  const data = Date.parse(body.dataset.dataAt || "");
  const built_age = (Date.now() - built) / 1000;
  const data_age = Number.isNaN(data) ? 0 : (Date.now() - data) / 1000;
  const age = Math.max(built_age, data_age);
  const level = age > Number(body.dataset.redS) ? "red" : age > Number(body.dataset.amberS) ? "amber" : "";
  body.classList.toggle("stale-amber", level === "amber");
  body.classList.toggle("stale-red", level === "red");
  const banner = document.getElementById("stale");
  if (banner) {
    banner.hidden = !level;
    banner.textContent = !level ? "" : built_age >= data_age
      ? "This page was built " + ago(built_age) + ": the site builder may be down, so what it shows may be out of date."
      : "Its data is as of " + ago(data_age) + ": poll or snapshot has not finished a run since, so what it shows may be out of date (see the status page).";
  }
  for (const el of document.querySelectorAll("[data-live]")) {
    if (!el.dataset.liveText) el.dataset.liveText = el.textContent;
    el.textContent = level === "red" ? "stale" : el.dataset.liveText;
    el.classList.toggle("ok", level !== "red");
    el.classList.toggle("skip", level === "red");
  }
}

// Every other table of rows sorts by a click on its header and has a search box: a
// cell's value is its data-v, else its <time>, else its text read as a number when it
// is one ($1,234.50, −3.2%, 12 bps). The choice lasts while the tab is open
// (sessionStorage), through the page's own reloads.
function cellValue(cell) {
  if (cell.dataset.v !== undefined) return cell.dataset.v === "" ? null : cell.dataset.v;
  const time = cell.querySelector("time[datetime]");
  if (time) return Date.parse(time.getAttribute("datetime"));
  const text = cell.textContent.trim();
  const number = text.replace(/[$,%+\s]|bps|ms|×/g, "").replace("−", "-");
  if (number !== "" && !Number.isNaN(Number(number))) return Number(number);
  return text === "–" || text === "" ? null : text.toLowerCase();
}

function sortRows(table, column, descending) {
  const body = table.tBodies[0];
  const rows = Array.from(body.rows).filter((r) => r.cells.length > column);
  rows.sort((a, b) => {
    const x = cellValue(a.cells[column]), y = cellValue(b.cells[column]);
    if (x === null || y === null) return (x === null) - (y === null);
    const c = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
    return descending ? -c : c;
  });
  for (const row of rows) body.appendChild(row);
  for (const th of table.tHead.rows[0].cells) th.removeAttribute("aria-sort");
  table.tHead.rows[0].cells[column].setAttribute("aria-sort", descending ? "descending" : "ascending");
}

function setupTables() {
  const tables = Array.from(document.querySelectorAll("main table")).filter((t) =>
    t.tHead && t.tBodies.length && !t.matches(".sortable, .config, .kv, .histogram"));
  tables.forEach((table, index) => {
    const key = "oculus-sort:" + location.pathname + ":" + index;
    const headers = table.tHead.rows[0].cells;
    for (let i = 0; i < headers.length; i++) {
      headers[i].classList.add("sorts");
      headers[i].tabIndex = 0;
      headers[i].addEventListener("click", () => {
        const descending = headers[i].getAttribute("aria-sort") === "ascending";
        sortRows(table, i, descending);
        sessionStorage.setItem(key, i + ":" + (descending ? "desc" : "asc"));
      });
    }
    const saved = /^(\d+):(asc|desc)$/.exec(sessionStorage.getItem(key) || "");
    if (saved && Number(saved[1]) < headers.length) sortRows(table, Number(saved[1]), saved[2] === "desc");
    const rows = Array.from(table.tBodies[0].rows).filter((r) => !r.classList.contains("none"));
    if (rows.length < 8) return;
    const box = document.createElement("input");
    box.type = "search";
    box.className = "table-search";
    box.placeholder = "search these " + rows.length + " rows";
    box.setAttribute("aria-label", "search the table");
    const skey = "oculus-search:" + location.pathname + ":" + index;
    const apply = () => {
      const q = box.value.trim().toLowerCase();
      for (const r of table.tBodies[0].rows) {
        r.toggleAttribute("data-search-hidden", q !== "" && !r.textContent.toLowerCase().includes(q));
      }
      sessionStorage.setItem(skey, box.value);
    };
    box.value = sessionStorage.getItem(skey) || "";
    box.addEventListener("input", apply);
    const holder = table.parentElement.classList.contains("scroll") ? table.parentElement : table;
    holder.before(box);
    apply();
  });
}

// Time ranges: a chart comes in each range (figure[data-ranges] holds one img per
// range), and a table[data-ranged] hides its rows older than the range (by their
// data-at, against the page's build time); a button shows its range on every chart and
// table of the page, and the choice lasts through the page's reloads (per tab).
const RANGE_KEY = "oculus-range";

const RANGE_SPANS = { "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400, all: Infinity };

function showRange(key) {
  const built = Date.parse(document.body.dataset.generated);
  const cutoff = built - (RANGE_SPANS[key] ?? Infinity) * 1000;
  for (const row of document.querySelectorAll("table[data-ranged] tbody tr[data-at]")) {
    row.toggleAttribute("data-range-hidden", Date.parse(row.dataset.at) < cutoff);
  }
  for (const b of document.querySelectorAll(".table-ranges button[data-range]")) {
    b.setAttribute("aria-pressed", String(b.dataset.range === key));
  }
  for (const form of document.querySelectorAll("form.filters[data-filter]")) applyFilters(form);
  for (const fig of document.querySelectorAll("figure[data-ranges]")) {
    if (!fig.querySelector('img[data-range="' + key + '"]')) continue;
    for (const img of fig.querySelectorAll("img[data-range]")) img.hidden = img.dataset.range !== key;
    for (const b of fig.querySelectorAll("button[data-range]")) {
      b.setAttribute("aria-pressed", String(b.dataset.range === key));
    }
  }
}

function setupRanges() {
  for (const b of document.querySelectorAll("figure[data-ranges] button[data-range], .table-ranges button[data-range]")) {
    b.addEventListener("click", () => {
      sessionStorage.setItem(RANGE_KEY, b.dataset.range);
      showRange(b.dataset.range);
    });
  }
  showRange(sessionStorage.getItem(RANGE_KEY) || "30d");
}

document.addEventListener("DOMContentLoaded", () => {
  updateTimes();
  setInterval(updateTimes, 1000);
  checkFreshness();
  setInterval(checkFreshness, 5000);
  setupFilters();
  setupForms();
  setupSort();
  setupTables();
  setupRanges();
  scheduleRefresh();
});
