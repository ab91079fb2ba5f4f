// The dead-letter queue: what the guard set aside, with replay and drop.
"use strict";

function actions(letter, enabled) {
  if (!enabled) return "";
  const id = encodeURIComponent(letter.id);
  const reason = el("input", {placeholder: "reason (needed to drop)", size: 24});
  const act = async (what) => {
    const {ok, body} = await postAction(`/api/dead-letters/${id}/${what}`, {reason: reason.value});
    showMessage(ok ? `${what}: done` : `${what} refused: ${body.error}`, ok ? "ok" : "error");
    await refresh();
  };
  return el("span", {}, el("button", {onclick: () => act("replay"), text: "replay"}), " ",
    reason, " ", el("button", {onclick: () => act("drop"), text: "drop"}));
}

async function refresh() {
  const {ok, body} = await api("/api/dead-letters");
  if (!ok) { showMessage(body.error || "cannot load dead letters", "error"); return; }
  renderFrame(body);
  const box = document.getElementById("letters");
  if (body.dead_letters === null) {
    box.textContent = "No dead-letter queue: the guard's store is not configured for this app.";
    return;
  }
  if (!body.dead_letters.length) { box.textContent = "The dead-letter queue is empty."; return; }
  const keys = [...new Set(body.dead_letters.flatMap(l => Object.keys(l)))];
  box.replaceChildren(el("table", {id: "letters-table"},
    el("tr", {}, keys.map(k => el("th", {text: k})), el("th", {text: "actions"})),
    body.dead_letters.map(l => el("tr", {"data-letter": l.id},
      keys.map(k => el("td", {cls: "mono", text: typeof l[k] === "object" && l[k] !== null ? JSON.stringify(l[k]) : (l[k] ?? "")})),
      el("td", {}, actions(l, body.actions_enabled))))));
}

setupToken();
poll(refresh, 5000);
