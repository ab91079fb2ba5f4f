// Shared helpers for the chordguard dashboard. Every value from the API is inserted as
// text (textContent), never as HTML.
"use strict";

const TOKEN_KEY = "chordguard.token";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "cls") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function api(path, options) {
  const response = await fetch(path, Object.assign({cache: "no-store"}, options || {}));
  let body = null;
  try { body = await response.json(); } catch (e) { body = {error: response.statusText}; }
  return {status: response.status, ok: response.ok, body};
}

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

async function postAction(path, fields) {
  const form = new URLSearchParams(fields || {});
  return api(path, {method: "POST", body: form,
                    headers: {"X-Chordguard-Token": token()}});
}

function spanText(span) {
  return span ? span.label : "?";
}

function progressBar(row) {
  const total = row.total;
  const wrap = el("div", {cls: "progress", title: `${row.done}/${total ?? "?"} done, ${row.failed} failed`});
  const bar = el("div", {cls: row.failed ? "bar failed" : "bar"});
  bar.style.width = total ? `${Math.min(100, 100 * row.done / total)}%` : "0%";
  wrap.append(bar, el("span", {cls: "progress-label", text: `${row.done}/${total ?? "?"}`}));
  return wrap;
}

function diagnosisBadges(diagnoses) {
  if (!diagnoses.length) return el("span", {cls: "badge ok", text: "ok"});
  return el("span", {}, diagnoses.map(d =>
    el("span", {cls: `badge ${d.severity}`, title: d.summary, text: d.code})));
}

function rateText(row) {
  if (row.unlock_retries === null && !row.unlock_chains) return "";
  let text = `${row.unlock_retries ?? 0} retries`;
  if (row.unlock_chains > 1) text += ` ×${row.unlock_chains} chains`;
  if (row.unlock_rate) text += `, ${row.unlock_rate.per_second.toFixed(2)}/s`;
  return text;
}

function renderFrame(data) {
  const frame = document.getElementById("frame");
  frame.replaceChildren(
    el("span", {cls: `health ${data.health.status}`, id: "health", text: data.health.status}),
    el("span", {text: `celery ${data.celery_version}`}),
    el("span", {text: `${data.health.in_flight_chords} in flight, ${data.health.stuck_chords} blocked`}),
    el("span", {id: "sources"}, "sources: ", data.sources.length ? data.sources.map(s =>
      el("span", {cls: s.ok ? "source ok" : "source down", title: s.detail, text: s.name})) :
      el("span", {cls: "source down", text: "none applied"})),
    el("span", {cls: "dim", text: `snapshot ${new Date(data.taken_at).toLocaleTimeString()}`}),
    el("span", {cls: data.actions_enabled ? "mode write" : "mode", id: "mode",
                text: data.actions_enabled ? "actions enabled" : "read-only"}));
  document.getElementById("token-box").hidden = !data.actions_enabled;
  const dlq = document.getElementById("dlq-link");
  if (dlq) dlq.hidden = !data.dead_letters_enabled;
}

function setupToken() {
  const input = document.getElementById("token");
  input.value = token();
  input.addEventListener("change", () => sessionStorage.setItem(TOKEN_KEY, input.value.trim()));
}

function showMessage(text, kind) {
  const box = document.getElementById("message");
  box.className = kind || "";
  box.textContent = text;
}

// Re-run `refresh` every `ms` milliseconds, never two at once.
function poll(refresh, ms) {
  const run = async () => {
    try { await refresh(); } catch (e) { showMessage(`refresh failed: ${e}`, "error"); }
    setTimeout(run, ms);
  };
  run();
}
