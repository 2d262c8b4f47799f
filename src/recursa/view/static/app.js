// Router and the two list pages (runs, benchmarks). One run: run.js; one bench folder: bench.js.
import { api, fill, clearTimers, count, every, failure, h, seconds, statusBadge, when } from "./dom.js";
import { showRun } from "./run.js";
import { showBench } from "./bench.js";

const page = document.getElementById("page");
function setPage(...children) { fill(page, ...children); }

async function route() {
  clearTimers();
  const hash = decodeURIComponent(location.hash.replace(/^#\/?/, ""));
  const [section, ...rest] = hash.split("/");
  const key = rest.join("/");
  document.getElementById("nav-runs").classList.toggle("active", section !== "benches" && section !== "bench");
  document.getElementById("nav-benches").classList.toggle("active", section === "benches" || section === "bench");
  try {
    if (section === "run" && key) await showRun(page, key);
    else if (section === "bench" && key) await showBench(page, key);
    else if (section === "benches") await showBenches();
    else await showRuns();
  } catch (err) {
    setPage(failure(err.message));
  }
}

function runRow(run) {
  const open = () => { location.hash = `#/run/${run.key}`; };
  return h("tr", { class: "clickable", "data-key": run.key, onclick: open },
    h("td", { class: "nowrap" }, when(run.started)),
    h("td", {}, h("a", { href: `#/run/${run.key}` }, run.method || "?")),
    h("td", {}, run.model || "–"),
    h("td", { class: "question", title: run.question || "" }, run.question || h("span", { class: "muted" }, "–")),
    h("td", { class: "answer" }, run.extracted ?? h("span", { class: "muted" }, "–")),
    h("td", { class: "num" }, count(run.tokens)),
    h("td", { class: "num" }, seconds(run.seconds)),
    h("td", {}, statusBadge(run.status),
      run.problems ? h("span", { class: "badge status-error", title: "lines that could not be read" },
        `${run.problems} bad line${run.problems > 1 ? "s" : ""}`) : null));
}

async function showRuns() {
  const search = h("input", { id: "search", type: "search", placeholder: "Search method, model, question, answer…",
    autocomplete: "off" });
  const body = h("tbody");
  const note = h("span", { class: "muted" });
  const table = h("table", { id: "runs" },
    h("thead", {}, h("tr", {}, ["started", "method", "model", "question", "answer", "tokens", "seconds", "status"]
      .map((c) => h("th", {}, c)))), body);
  async function load() {
    const runs = await api(`/api/runs?q=${encodeURIComponent(search.value)}`);
    fill(body, ...runs.map(runRow));
    note.textContent = `${runs.length} run${runs.length === 1 ? "" : "s"}`;
    if (!runs.length) body.append(h("tr", {}, h("td", { colspan: 8, class: "muted" },
      search.value ? "No run matches." : "No runs yet: `recursa run …` writes traces into this folder.")));
  }
  let pending = null;
  search.addEventListener("input", () => { clearTimeout(pending); pending = setTimeout(load, 150); });
  setPage(h("div", { class: "toolbar" }, h("h1", {}, "Runs"), search, note), table);
  await load();
  search.focus();
  every(5000, () => load().catch(() => {}));
}

async function showBenches() {
  const rows = await api("/api/benches");
  const body = h("tbody", {}, rows.map((b) => h("tr", { class: "clickable", "data-key": b.key,
    onclick: () => { location.hash = `#/bench/${b.key}`; } },
  h("td", {}, h("a", { href: `#/bench/${b.key}` }, b.key)),
  h("td", {}, b.task || "–"), h("td", {}, b.model || "–"),
  h("td", {}, (b.methods || []).join(", ")), h("td", { class: "num" }, count(b.n_tasks)),
  h("td", { class: "nowrap" }, when(b.modified)))));
  if (!rows.length) body.append(h("tr", {}, h("td", { colspan: 6, class: "muted" },
    "No bench folders here: `recursa bench --out DIR` writes one.")));
  setPage(h("div", { class: "toolbar" }, h("h1", {}, "Benchmarks")),
    h("table", { id: "benches" }, h("thead", {}, h("tr", {}, ["folder", "task", "model", "methods", "problems",
      "modified"].map((c) => h("th", {}, c)))), body));
}

window.addEventListener("hashchange", route);
api("/api/info").then((info) => { document.getElementById("root").textContent = info.root; }).catch(() => {});
route();
