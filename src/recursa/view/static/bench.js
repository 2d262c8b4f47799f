// One bench folder: the summary table, a plot drawn from it, and every problem with the methods side by side.
import { api, fill, count, errorBox, h, pre, seconds } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
const pct = (x) => `${(100 * x).toFixed(1)}%`;

function svg(tag, attrs, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

function summaryTable(rows) {
  const head = ["method", "n", "accuracy", "95% CI", "completion tok", "prompt tok", "latent steps", "s/problem",
    "no answer", "errors"];
  return h("table", { id: "summary-table" }, h("thead", {}, h("tr", {}, head.map((c) => h("th", {}, c)))),
    h("tbody", {}, rows.map((r) => h("tr", { "data-method": r.method },
      h("td", {}, h("code", {}, r.method)), h("td", { class: "num" }, r.n),
      h("td", { class: "num accuracy" }, pct(r.accuracy)),
      h("td", { class: "num" }, `${pct(r.ci95[0])}–${pct(r.ci95[1])}`),
      h("td", { class: "num" }, count(r.completion_tokens)), h("td", { class: "num" }, count(r.prompt_tokens)),
      h("td", { class: "num" }, count(r.latent_steps)), h("td", { class: "num" }, seconds(r.seconds)),
      h("td", { class: "num" }, r.no_answer), h("td", { class: "num" }, r.errors)))));
}

// Accuracy with its 95% interval, one horizontal bar per method (the same numbers as the table).
function accuracyPlot(rows) {
  const labelW = Math.min(360, 12 + 7 * Math.max(...rows.map((r) => r.method.length))), barH = 20, gap = 10;
  const plotW = 420, top = 8, width = labelW + plotW + 70, height = top + rows.length * (barH + gap) + 24;
  const plot = svg("svg", { id: "accuracy-plot", width, height, role: "img",
    "aria-label": "accuracy per method with 95% intervals" });
  const x = (v) => labelW + plotW * v;
  for (const tick of [0, 0.25, 0.5, 0.75, 1]) {
    plot.append(svg("line", { x1: x(tick), x2: x(tick), y1: top, y2: height - 20, class: "grid" }),
      svg("text", { x: x(tick), y: height - 6, "text-anchor": "middle", class: "axis" }, `${tick * 100}%`));
  }
  rows.forEach((r, i) => {
    const y = top + i * (barH + gap), mid = y + barH / 2;
    plot.append(svg("text", { x: labelW - 8, y: mid + 4, "text-anchor": "end" }, r.method),
      svg("rect", { x: x(0), y, width: plotW * r.accuracy, height: barH, class: "bar" }),
      svg("line", { x1: x(r.ci95[0]), x2: x(r.ci95[1]), y1: mid, y2: mid, class: "whisker" }),
      svg("text", { x: x(r.ci95[1]) + 6, y: mid + 4, class: "value" }, pct(r.accuracy)));
  });
  return plot;
}

function answerCell(method, a) {
  if (!a) return h("div", { class: "side" }, h("div", { class: "label" }, method), h("p", { class: "muted" }, "not run"));
  return h("div", { class: `side ${a.correct ? "right" : "wrong"}`, "data-method": method },
    h("div", { class: "label" }, method),
    h("p", {}, h("strong", {}, a.correct ? "✓ " : "✗ "), a.extracted ?? h("span", { class: "muted" }, "no answer")),
    h("p", { class: "muted" }, `${count(a.completion_tokens)} tok · ${seconds(a.seconds)}`),
    a.error ? h("div", { class: "error-line" }, a.error) : null,
    a.stopped ? h("p", { class: "badge status-stopped" }, a.stopped) : null,
    pre(a.answer || ""),
    (a.agents || []).length > 1 ? h("details", {}, h("summary", {}, `${a.agents.length} agents`),
      a.agents.map((g) => h("div", { class: "field" }, h("div", { class: "label" }, g.role),
        g.latent_gist ? h("p", { class: "muted" }, `thought ≈ ${JSON.stringify(g.latent_gist)}`) : null,
        g.text ? pre(g.text) : h("p", { class: "muted" }, `${g.latent_steps || 0} latent steps, no text`)))) : null);
}

function problemItem(p, methods) {
  return h("details", { class: "problem", "data-id": p.id },
    h("summary", {}, h("span", { class: "name" }, p.id),
      h("span", { class: "question" }, p.question || ""), h("span", { class: "tag" }, `gold ${p.gold ?? "–"}`),
      methods.map((m) => {
        const a = p.answers[m];
        return a ? h("span", { class: `chip ${a.correct ? "right" : "wrong"}`, title: m }, `${a.extracted ?? "–"}`) : null;
      })),
    h("div", { class: "body" }, pre(p.question || ""),
      h("div", { class: "sides", style: `grid-template-columns: repeat(${methods.length}, minmax(0, 1fr))` },
        methods.map((m) => answerCell(m, p.answers[m])))));
}

export async function showBench(page, key) {
  const bench = await api(`/api/bench?key=${encodeURIComponent(key)}`);
  const m = bench.manifest || {};
  const rows = bench.summary.methods;
  const list = h("div", { id: "problems" });
  const note = h("span", { class: "muted" });
  const filter = h("select", { id: "problem-filter" }, h("option", { value: "all" }, "all problems"),
    h("option", { value: "disagree" }, "methods disagree"), h("option", { value: "all_fail" }, "every method fails"));
  const show = () => {
    const chosen = bench.problems.filter((p) => filter.value === "all" || p[filter.value]);
    fill(list, ...chosen.map((p) => problemItem(p, bench.methods)));
    note.textContent = `${chosen.length} of ${bench.problems.length}`;
  };
  filter.addEventListener("change", show);
  fill(page, h("p", {}, h("a", { href: "#/benches" }, "← all benchmarks")), h("h1", {}, key),
    h("p", {}, `${m.task || "?"} on ${m.model || "?"} · ${bench.summary.problems} problems finished by every method`),
    errorBox(bench.errors, "Parts of this bench could not be read") || "",
    rows.length ? [summaryTable(rows), accuracyPlot(rows)] : h("p", { class: "muted" }, "No finished samples yet."),
    bench.has_plot ? h("p", {}, h("a", { href: `/api/bench/plot?key=${encodeURIComponent(key)}`, target: "_blank" },
      "summary.png (tokens and seconds too)")) : null,
    (bench.traces || []).length ? h("p", {}, "trace of the whole bench: ",
      bench.traces.map((t) => h("a", { href: `#/run/${t}`, class: "tag" }, t))) : null,
    h("div", { class: "toolbar" }, h("h2", {}, "Problems"), filter, note,
      h("span", { class: "muted" }, `answers in the order ${bench.methods.join(" · ")}; open a problem to compare`)),
    list);
  show();
}
