// One run: its summary, answer, agents (from the answer record), the Aime board (live) and the trace tree.
import { api, fill, bytes, count, errorBox, every, h, pre, seconds, statusBadge, when } from "./dom.js";
import { boardSection } from "./board.js";

// Fields shown first (in this order) for a kind of span; the rest follow. Long text goes into a <pre>.
const FIRST = {
  rlm_iteration: ["reply", "final"],
  repl_block: ["code", "output", "error"],
  sub_call: ["prompts", "chars", "model", "exchanges"],
  agent: ["latent_gist", "latent_steps", "cache_length", "cache_bytes"],
};
const LABELS = { reply: "model reply", output: "REPL output", prompts: "prompts", latent_gist: "latent gist" };
const HIDDEN = new Set(["depth", "turn", "round"]);      // already in the node's title
const PRE = new Set(["code", "output", "reply", "error", "text", "prompt"]);   // always shown as text blocks
const OPEN_KINDS = new Set(["run", "rlm", "method"]);

function scalar(key, value) {
  if (typeof value === "number") {
    if (key.includes("bytes")) return bytes(value);
    if (key.includes("seconds")) return seconds(value);
    return count(value);
  }
  return value === true ? "yes" : String(value);
}

export function fields(attrs, kind = "") {
  const order = [...(FIRST[kind] || []), ...Object.keys(attrs).sort()];
  const facts = h("dl", { class: "facts" });
  const blocks = [];
  for (const key of new Set(order)) {
    const value = attrs[key];
    if (!(key in attrs) || value === null || value === "" || value === false || HIDDEN.has(key)) continue;
    const label = LABELS[key] || key.replaceAll("_", " ");
    if (key === "exchanges" && Array.isArray(value)) {     // a sub-call's prompts and answers, as pairs
      blocks.push(h("div", { class: "field field-exchanges" }, h("div", { class: "label" }, "prompts and answers"),
        h("ol", { class: "exchanges" }, value.map((x) => h("li", {}, pre(x.prompt || ""),
          h("div", { class: "label" }, "answer"), pre(x.answer || ""))))));
    } else if (Array.isArray(value) && value.every((v) => typeof v === "string")) {
      blocks.push(h("div", { class: `field field-${key}` }, h("div", { class: "label" }, label),
        h("ol", { class: "gist" }, value.map((v) => h("li", {}, pre(v, "inline"))))));
    } else if (typeof value === "object") {
      blocks.push(h("div", { class: `field field-${key}` }, h("div", { class: "label" }, label),
        pre(JSON.stringify(value, null, 1))));
    } else if (typeof value === "string" && (PRE.has(key) || value.includes("\n") || value.length > 90)) {
      blocks.push(h("div", { class: `field field-${key}` }, h("div", { class: "label" }, label), pre(value)));
    } else {
      facts.append(h("div", {}, h("dt", {}, label), h("dd", { class: `field-${key}` }, scalar(key, value))));
    }
  }
  return [facts.childElementCount ? facts : null, ...blocks];
}

function nodeTitle(node) {
  const a = node.attrs;
  const extras = [];
  if (a.round !== undefined) extras.push(`round ${a.round}`);
  if (a.depth !== undefined && node.kind !== "rlm") extras.push(`depth ${a.depth}`);
  if (node.kind === "board") extras.push([a.key, a.task_id, a.status].filter(Boolean).join(" "));
  if (node.kind === "sub_call" && a.prompts) extras.push(`${a.prompts} prompt${a.prompts > 1 ? "s" : ""}`);
  return h("summary", {},
    h("span", { class: `kind kind-${node.kind}` }, node.kind),
    h("span", { class: "name" }, node.name), extras.map((e) => h("span", { class: "tag" }, e)),
    h("span", { class: "cost" }, seconds(node.seconds)),
    node.tokens ? h("span", { class: "cost" }, `${count(node.tokens)} tok`) : null,
    node.latent_steps ? h("span", { class: "cost" }, `${count(node.latent_steps)} latent`) : null,
    a.error ? h("span", { class: "badge status-error" }, "error") : null,
    a.stopped ? h("span", { class: "badge status-stopped" }, "stopped") : null);
}

function treeNode(node, open) {
  const isOpen = open ? open.has(node.id) : OPEN_KINDS.has(node.kind);
  return h("details", { class: `node node-${node.kind}`, "data-id": node.id, "data-kind": node.kind, open: isOpen },
    nodeTitle(node), h("div", { class: "body" }, fields(node.attrs, node.kind),
      node.children.map((c) => treeNode(c, open))));
}

function agentsSection(answer) {
  const agents = answer.agents || [];
  if (!agents.length) return null;
  const rounds = new Set(agents.map((a) => (a.extra || {}).round).filter((r) => r !== undefined));
  const items = [];
  let lastRound;
  for (const agent of agents) {
    const extra = agent.extra || {};
    if (rounds.size && extra.round !== lastRound) {
      lastRound = extra.round;
      items.push(h("h3", { class: "round" }, `Round ${extra.round}`));
    }
    const { prompt, ...rest } = extra;
    items.push(h("details", { class: "agent", "data-role": agent.role },
      h("summary", {}, h("span", { class: "kind kind-agent" }, "agent"), h("span", { class: "name" }, agent.role),
        extra.model ? h("span", { class: "tag" }, extra.model) : null,
        h("span", { class: "cost" }, seconds(agent.seconds)),
        h("span", { class: "cost" }, `${count(agent.prompt_tokens)} in / ${count(agent.completion_tokens)} out`),
        agent.latent_steps ? h("span", { class: "cost" }, `${agent.latent_steps} latent`) : null),
      h("div", { class: "body" }, fields(rest, "agent"),
        prompt ? h("div", { class: "field" }, h("div", { class: "label" }, "prompt"), pre(prompt)) : null,
        agent.text ? h("div", { class: "field" }, h("div", { class: "label" }, "reply"), pre(agent.text)) : null)));
  }
  return h("section", { id: "agents" }, h("h2", {}, rounds.size ? "Agents by round" : "Agents"), items);
}

function header(summary, answer) {
  const facts = [["method", summary.method], ["model", summary.model || "–"],
    ["status", statusBadge(summary.status)], ["tokens", count(summary.tokens)],
    ["seconds", seconds(summary.seconds)], ["started", when(summary.started)], ["run id", summary.run_id]];
  return h("section", { id: "summary" },
    h("dl", { class: "facts" }, facts.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v)))),
    h("div", { class: "field" }, h("div", { class: "label" }, "question"),
      summary.question ? pre(summary.question) : h("p", { class: "muted" },
        "Not recorded (runs started with `recursa run` save it beside the trace).")),
    answer ? h("div", { class: "field" }, h("div", { class: "label" }, `answer (extracted: ${answer.extracted ?? "none"})`),
      pre(answer.text)) : null,
    answer && answer.stopped ? h("p", { class: "badge status-stopped" }, `stopped early: ${answer.stopped}`) : null);
}

export async function showRun(page, key) {
  const tree = h("section", { id: "trace" });
  const errors = h("div", { id: "trace-errors" });
  let detail = await api(`/api/run?key=${encodeURIComponent(key)}`);

  function renderTree(keepOpen) {
    const open = keepOpen ? new Set([...tree.querySelectorAll("details[open]")].map((d) => d.dataset.id)) : null;
    fill(tree, h("h2", {}, "Trace"),
      detail.tree.length ? detail.tree.map((n) => treeNode(n, open)) : h("p", { class: "muted" }, "No events yet."));
    fill(errors, errorBox(detail.errors, "Parts of this run could not be read") || "");
  }
  const board = detail.board ? boardSection(key) : null;
  const boardNote = detail.board_note ? h("p", { class: "muted" }, detail.board_note) : null;
  fill(page, h("p", {}, h("a", { href: "#/runs" }, "← all runs")), h("h1", {}, key),
    errors, header(detail.summary, detail.answer), board, boardNote,
    detail.answer ? agentsSection(detail.answer) : null, tree);
  renderTree(false);
  if (board) await board.refresh();
  if (detail.summary.status === "running") {
    every(2000, async () => {
      if (detail.summary.status !== "running") return;
      detail = await api(`/api/run?key=${encodeURIComponent(key)}`);
      renderTree(true);
    });
  }
}
