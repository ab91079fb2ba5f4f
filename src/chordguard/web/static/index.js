// The chord list: filters and page mirrored in the URL, refreshed every few seconds. The
// server filters and pages (offset/limit); the page shows one page of rows at a time.
"use strict";

const FILTERS = ["kind", "state", "diagnosis", "callback"];
const form = document.getElementById("filters");
let choicesFilled = false;
const atStart = new URLSearchParams(location.search);
const limit = wholeNumber(atStart.get("limit"));  // 0: the server's page size
let offset = wholeNumber(atStart.get("offset"));
let pageSize = 1;  // the page size the server used last
let matched = 0;

function wholeNumber(text) {
  return Math.max(0, parseInt(text, 10) || 0);
}

function currentQuery() {
  const params = new URLSearchParams();
  for (const name of FILTERS) {
    const value = form.elements[name].value.trim();
    if (value) params.set(name, value);
  }
  if (offset) params.set("offset", offset);
  if (limit) params.set("limit", limit);
  return params;
}

function fillChoices(choices) {
  if (choicesFilled) return;
  const wanted = new URLSearchParams(location.search);
  for (const [name, values] of Object.entries(choices)) {
    const select = form.elements[name];
    for (const value of values) select.append(el("option", {value, text: value}));
  }
  for (const name of FILTERS) form.elements[name].value = wanted.get(name) || "";
  choicesFilled = true;
}

function row(chord) {
  return el("tr", {cls: chord.state, "data-chord": chord.id},
    el("td", {cls: "id"}, el("a", {href: `/chords/${encodeURIComponent(chord.id)}`, text: chord.id})),
    el("td", {text: chord.kind}),
    el("td", {text: chord.callback_name || "?", title: chord.callback_id || ""}),
    el("td", {}, progressBar(chord)),
    el("td", {text: spanText(chord.age), title: chord.age ? chord.age.basis : ""}),
    el("td", {text: spanText(chord.idle), title: chord.idle ? chord.idle.basis : ""}),
    el("td", {text: rateText(chord)}),
    el("td", {}, diagnosisBadges(chord.diagnoses)));
}

function renderPager(body) {
  pageSize = Math.max(1, body.limit);
  matched = body.matched;
  const shown = body.chords.length;
  const range = `showing ${body.offset + 1}–${body.offset + shown} of ${body.matched}`;
  document.getElementById("counts").textContent =
    !shown ? `no chord matches (${body.total} in flight)` :
    body.matched === body.total ? `${range} chords` :
    `${range} matching (${body.total} in flight)`;
  document.getElementById("previous").disabled = body.offset === 0;
  document.getElementById("next").disabled = body.offset + shown >= body.matched;
}

async function refresh() {
  const query = choicesFilled ? currentQuery() : new URLSearchParams(location.search);
  const {ok, body} = await api(`/api/chords?${query}`);
  if (!ok) { showMessage(body.error || "cannot load chords", "error"); return; }
  fillChoices(body.choices);
  renderFrame(body);
  if (body.offset && body.offset >= body.matched) {  // the list shrank under this page
    goTo(Math.max(0, body.matched - 1 - ((body.matched - 1) % Math.max(1, body.limit))));
    return;
  }
  renderPager(body);
  const rows = body.chords.map(row);
  document.querySelector("#chords tbody").replaceChildren(...(rows.length ? rows :
    [el("tr", {}, el("td", {colspan: 8, cls: "dim", text: "no chord matches"}))]));
}

function goTo(newOffset) {
  offset = newOffset;
  history.replaceState(null, "", `?${currentQuery()}`);
  refresh();
}

function filtersChanged() {
  goTo(0);
}
form.addEventListener("input", filtersChanged);
form.addEventListener("change", filtersChanged);
document.getElementById("previous").addEventListener("click",
  () => goTo(Math.max(0, offset - pageSize)));
document.getElementById("next").addEventListener("click", () => {
  if (offset + pageSize < matched) goTo(offset + pageSize);
});
form.addEventListener("submit", e => e.preventDefault());
setupToken();
poll(refresh, 3000);
