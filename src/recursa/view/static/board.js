// The Aime progress board of a run, refreshed while the SQLite board changes (the server says when it has not).
import { api, fill, every, h, pre, statusBadge } from "./dom.js";

const MARK = { pending: "○", running: "◐", done: "●", failed: "✕", blocked: "–" };

function taskItem(task, children) {
  return h("li", { class: `task task-${task.status}`, "data-task": task.id },
    h("div", { class: "task-line" }, h("span", { class: "mark", title: task.status }, MARK[task.status] || "?"),
      h("strong", {}, `${task.id}. `), task.title, " ", statusBadge(task.status),
      task.attempts > 1 ? h("span", { class: "tag" }, `${task.attempts} attempts`) : null),
    task.criteria ? h("div", { class: "muted" }, `done when: ${task.criteria}`) : null,
    task.toolkits && task.toolkits.length ? h("div", { class: "muted" }, `toolkits: ${task.toolkits.join(", ")}`) : null,
    task.result ? h("div", {}, "result: ", task.result) : null,
    task.pointers && task.pointers.length ? h("div", { class: "muted" }, `pointers: ${task.pointers.join(", ")}`) : null,
    task.progress.length ? h("ul", { class: "progress" }, task.progress.map((p) =>
      h("li", {}, h("span", { class: "tag" }, p.status), p.message))) : null,
    task.reports.map((r) => h("div", { class: "report" }, h("span", { class: "tag" }, `report: ${r.status}`),
      `${r.steps} steps`, r.guard ? ` (stopped by ${r.guard})` : "", pre(r.summary))),
    children.length ? h("ul", { class: "tasks" }, children) : null);
}

function render(board) {
  if (board.error) return [h("div", { class: "errors" }, h("div", { class: "error-line" }, board.error))];
  const kids = {};
  for (const t of board.tasks) (kids[t.parent || ""] ||= []).push(t);
  const known = new Set(board.tasks.map((t) => t.id));
  const build = (t) => taskItem(t, (kids[t.id] || []).map(build));
  const roots = board.tasks.filter((t) => !t.parent || !known.has(t.parent));
  return [h("div", { class: "field" }, h("div", { class: "label" }, "goal"), pre(board.goal || "")),
    h("p", {}, "state: ", statusBadge(board.state || "?")),
    board.answer ? h("div", { class: "field" }, h("div", { class: "label" }, "answer"), pre(board.answer)) : null,
    roots.length ? h("ul", { class: "tasks" }, roots.map(build)) : h("p", { class: "muted" }, "No tasks yet.")];
}

export function boardSection(key) {
  const content = h("div", { id: "board-content" });
  const stamp = h("span", { class: "muted" });
  const section = h("section", { id: "board" }, h("h2", {}, "Aime board ", stamp), content);
  let version = "";
  section.refresh = async () => {
    const board = await api(`/api/board?key=${encodeURIComponent(key)}&version=${encodeURIComponent(version)}`);
    if (board.unchanged) return;
    version = board.version;
    fill(content, ...render(board).filter(Boolean));
    stamp.textContent = `updated ${new Date().toLocaleTimeString()}`;
  };
  every(1500, () => section.refresh().catch(() => {}));
  return section;
}
