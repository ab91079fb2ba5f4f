// One chord: facts, diagnoses explained, a timeline of its parts, header tasks, journal.
"use strict";

const chordId = decodeURIComponent(location.pathname.split("/").pop());
document.getElementById("chord-id").textContent = chordId;

function facts(chord) {
  const rows = [
    ["kind", chord.kind], ["state", chord.state],
    ["callback", `${chord.callback_name || "?"}  id ${chord.callback_id || "?"}  state ${chord.callback_state || "?"}`],
    ["progress", `${chord.done}/${chord.total ?? "?"} done, ${chord.failed} failed`],
    ["created", chord.created_at || "not recorded by Celery"],
    ["age", chord.age ? `${chord.age.label} — ${chord.age.basis}` : "?"],
    ["idle", chord.idle ? `${chord.idle.label} — ${chord.idle.basis}` : "?"],
    ["unlock retries", chord.unlock_retries === null ? "" : String(chord.unlock_retries)],
    ["unlock chains", chord.unlock_chains === null ? "" : String(chord.unlock_chains)],
    ["unlock rate", chord.unlock_rate ? `${chord.unlock_rate.per_second.toFixed(2)} polls/s ` +
      `(≥ ${chord.unlock_rate.per_interval_floor.toFixed(2)} per retry interval, over ` +
      `${chord.unlock_rate.window_seconds.toFixed(0)} s)` : "not measured yet"],
    ["sources", chord.sources.join(", ")],
  ];
  return el("dl", {cls: "facts"}, rows.flatMap(([k, v]) => [el("dt", {text: k}), el("dd", {text: v})]));
}

function diagnoses(chord) {
  if (!chord.diagnoses.length) return el("p", {cls: "badge ok", text: "no problem found"});
  return chord.diagnoses.map(d => el("div", {cls: `diagnosis ${d.severity}`, "data-code": d.code},
    el("strong", {text: `${d.code} (${d.severity}): ${d.summary}`}),
    el("p", {text: d.explanation}),
    el("p", {cls: "next", text: `next: ${d.next_step}`}),
    Object.keys(d.evidence).length ? el("pre", {cls: "dim", text: JSON.stringify(d.evidence, null, 1)}) : null));
}

function timeline(chord, takenAt) {
  const events = chord.timeline;
  if (!events.length) return el("p", {cls: "dim", text: "no part has finished yet and Celery recorded no creation time"});
  const start = Date.parse(events[0].at);
  const end = Math.max(Date.parse(takenAt), start + 1);
  const bar = el("div", {cls: "timeline", id: "timeline"});
  for (const event of events) {
    const tick = el("span", {cls: `tick ${event.state}`, title: `${event.at} ${event.what} ${event.state}`});
    tick.style.left = `${100 * (Date.parse(event.at) - start) / (end - start)}%`;
    bar.append(tick);
  }
  const list = el("table", {}, el("tr", {}, el("th", {text: "when"}), el("th", {text: "what"}), el("th", {text: "state"})),
    events.map(e => el("tr", {}, el("td", {cls: "mono", text: e.at}), el("td", {text: e.what}), el("td", {text: e.state}))));
  return el("div", {}, bar, el("p", {cls: "dim", text: `from ${events[0].at} to the snapshot at ${takenAt}`}), list);
}

function table(title, headings, rows) {
  if (!rows.length) return null;
  return el("div", {}, el("h3", {text: title}), el("table", {},
    el("tr", {}, headings.map(h => el("th", {text: h}))),
    rows.map(cells => el("tr", {}, cells.map(c => el("td", {cls: "mono", text: c ?? ""}))))));
}

function header(chord) {
  return table("header tasks", ["#", "task id", "name", "state", "done at", "held by", "result / traceback"],
    chord.header.map(p => [p.index, p.task_id, p.name, p.state || "?", p.date_done, p.held_by,
                           p.traceback || (p.result === null ? "" : JSON.stringify(p.result))]));
}

function history(records) {
  const box = document.getElementById("history");
  if (records === null) { box.textContent = "no journal: the guard's store is not configured for this app"; return; }
  if (!records.length) { box.textContent = "no journal record for this chord"; return; }
  const keys = [...new Set(records.flatMap(r => Object.keys(r)))];
  box.className = "";
  box.replaceChildren(table("", keys, records.map(r => keys.map(k =>
    typeof r[k] === "object" && r[k] !== null ? JSON.stringify(r[k]) : r[k]))));
}

async function refresh() {
  const {status, body} = await api(`/api/chords/${encodeURIComponent(chordId)}`);
  if (status === 404) {
    document.getElementById("fail-box").hidden = true;
    document.getElementById("chord").replaceChildren(el("p", {id: "not-in-flight", text: body.error}));
    return;
  }
  if (status !== 200) { showMessage(body.error || `HTTP ${status}`, "error"); return; }
  renderFrame(body);
  history(body.history);
  const chord = body.chord;
  document.getElementById("fail-box").hidden = !(body.actions_enabled && chord);
  if (!chord) {
    document.getElementById("chord").replaceChildren(el("p", {id: "not-in-flight",
      text: "This chord is no longer in flight; its journal history is below."}));
    return;
  }
  document.getElementById("chord").replaceChildren(...[
    facts(chord),
    el("h3", {text: "diagnoses"}), ...[diagnoses(chord)].flat(),
    el("h3", {text: "timeline"}), timeline(chord, body.taken_at),
    header(chord),
    table("chord_unlock copies", ["task id", "retries", "where", "eta"],
          chord.unlock_copies.map(c => [c.task_id, c.retries, c.where, c.eta])),
    table("Redis keys", ["key", "TTL (s)"], Object.entries(chord.redis_keys).map(([k, t]) =>
          [k, t === null ? "missing" : t < 0 ? "no expiry" : t])),
    table("where each figure comes from", ["figure", "evidence"], Object.entries(chord.evidence)),
  ].filter(part => part !== null));
}

document.getElementById("fail-form").addEventListener("submit", async event => {
  event.preventDefault();
  const reason = event.target.elements.reason.value;
  if (!confirm(`Fail chord ${chordId}? Its callback will end FAILURE.`)) return;
  const {ok, body} = await postAction(`/api/chords/${encodeURIComponent(chordId)}/fail`, {reason});
  if (ok) showMessage(`chord failed: ${body.plan.steps.join("; ")}`, "ok");
  else showMessage(`not failed: ${body.error}`, "error");
  await refresh();
});
setupToken();
poll(refresh, 3000);
