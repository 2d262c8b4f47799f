// Small helpers shared by the pages. Text from traces is model-written: it only ever goes into textContent.

// Replace an element's children (arrays are flattened; null, undefined and false are skipped).
export function fill(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// Page timers (live refresh); the router clears them when the page changes.
let timers = [];
export function every(ms, fn) { timers.push(setInterval(fn, ms)); }
export function clearTimers() { timers.forEach(clearInterval); timers = []; }

export async function api(path) {
  const response = await fetch(path, { cache: "no-store" });
  let body = null;
  try { body = await response.json(); } catch { body = null; }
  if (!response.ok) {
    const detail = body && (body.detail || body.error);
    throw new Error(typeof detail === "string" ? detail : `${response.status} ${response.statusText}`);
  }
  return body;
}

export function seconds(value) {
  if (value === null || value === undefined) return "–";
  if (value < 0.001) return "0 s";
  if (value < 10) return `${value.toFixed(value < 1 ? 3 : 2)} s`;
  if (value < 600) return `${value.toFixed(1)} s`;
  return `${Math.floor(value / 60)} min ${Math.round(value % 60)} s`;
}

export function count(value, unit = "") {
  if (value === null || value === undefined) return "–";
  const text = Number.isInteger(value) ? value.toLocaleString("en") : Number(value).toFixed(1);
  return unit ? `${text} ${unit}` : text;
}

export function bytes(value) {
  if (typeof value !== "number") return String(value);
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (value >= 1024 && i < units.length - 1) { value /= 1024; i += 1; }
  return `${value.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function when(epochSeconds) {
  if (!epochSeconds) return "–";
  const d = new Date(epochSeconds * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export function statusBadge(status) {
  return h("span", { class: `badge status-${status}` }, status);
}

export function errorBox(errors, title = "Some of this could not be read") {
  if (!errors || !errors.length) return null;
  return h("div", { class: "errors", role: "alert" }, h("strong", {}, title),
    errors.map((e) => h("div", { class: "error-line" }, e)));
}

export function failure(message) {
  return h("div", { class: "errors", role: "alert" }, h("div", { class: "error-line" }, message));
}

export function pre(text, cls = "") {
  return h("pre", { class: cls }, text === null || text === undefined ? "" : String(text));
}
