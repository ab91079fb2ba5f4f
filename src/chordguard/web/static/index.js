// The chord list: filters mirrored in the URL, refreshed every few seconds.
"use strict";

const FILTERS = ["kind", "state", "diagnosis", "callback"];
const form = document.getElementById("filters");
let choicesFilled = false;

function currentQuery() {
  const params = new URLSearchParams();
  for (const name of FILTERS) {
    const value = form.elements[name].value.trim();
    if (value) params.set(name, value);
  }
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

async function refresh() {
  const query = choicesFilled ? currentQuery() : new URLSearchParams(location.search);
  const {ok, body} = await api(`/api/chords?${query}`);
  if (!ok) { showMessage(body.error || "cannot load chords", "error"); return; }
  fillChoices(body.choices);
  renderFrame(body);
  document.getElementById("counts").textContent =
    `${body.matched} of ${body.total} chords` + (body.matched > body.chords.length ?
      ` (first ${body.chords.length} shown)` : "");
  const rows = body.chords.map(row);
  document.querySelector("#chords tbody").replaceChildren(...(rows.length ? rows :
    [el("tr", {}, el("td", {colspan: 8, cls: "dim", text: "no chord matches"}))]));
}

function filtersChanged() {
  history.replaceState(null, "", `?${currentQuery()}`);
  refresh();
}
form.addEventListener("input", filtersChanged);
form.addEventListener("change", filtersChanged);
form.addEventListener("submit", e => e.preventDefault());
setupToken();
poll(refresh, 3000);
