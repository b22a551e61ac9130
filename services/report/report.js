// The report page. Live (served by the aggregator): JSON from /report/data, /report/records
// (a page of rows, filtered and searched on the server) and /report/record (one transcript).
// Static (`introspect report --out DIR`): the same JSON from script files beside the page,
// which also load from file:// where fetch() is refused; a search there looks in the page shown.
"use strict";
(function () {
  const LIVE = window.INTROSPECT_REPORT_MODE === "live";
  const BASE = location.pathname.replace(/\/?$/, "/"); // /report -> /report/data, behind any prefix too
  const FILTER_NAMES = { all: "all", correct: "correct", incorrect: "incorrect", faithful: "faithful",
    unfaithful: "unfaithful", missmatch: "missmatch", error: "error" };
  // Rows per page, live only (`/report?rows=100`; the server allows 1 to 200): static pages are cut when written.
  const ROWS = Number(new URLSearchParams(location.search).get("rows")) || 0;
  const state = { data: null, experiment: null, filter: "all", q: "", offset: 0, position: null };
  const $ = (id) => document.getElementById(id);

  // -- where the data come from --
  const waiting = {};
  window.introspectReport = {
    receive(key, value) { if (waiting[key]) { waiting[key].resolve(value); delete waiting[key]; } },
  };
  // One load per file, however many ask for it at once (the rows of a page share a chunk).
  const loaded = new Map();
  function loadScript(key) {
    if (!loaded.has(key)) {
      const promise = loadScriptOnce(key);
      promise.catch(() => loaded.delete(key)); // asked again later, it is loaded again
      loaded.set(key, promise);
    }
    return loaded.get(key);
  }
  function loadScriptOnce(key) {
    return new Promise((resolve, reject) => {
      waiting[key] = { resolve };
      const script = document.createElement("script");
      script.src = key + ".js";
      script.onload = () => { script.remove(); if (waiting[key]) { delete waiting[key]; reject(new Error(key + ": no data")); } };
      script.onerror = () => { script.remove(); delete waiting[key]; reject(new Error("cannot load " + key)); };
      document.head.appendChild(script);
    });
  }
  async function fetchJSON(path) {
    const response = await fetch(BASE + path, { credentials: "same-origin" });
    if (!response.ok) throw new Error(path.split("?")[0] + ": " + response.status + " " + (await response.text()));
    return response.json();
  }
  const getData = () => (LIVE ? fetchJSON("data") : loadScript("data"));
  function recordsPage(experiment, filter, q, offset) {
    if (LIVE) {
      const query = new URLSearchParams({ experiment: experiment.name, filter, q, offset, limit: pageSize() });
      return fetchJSON("records?" + query);
    }
    const page = Math.floor(offset / state.data.page_size);
    return loadScript(`records/${experiment.number}/${filter}/page-${page}`).then((loaded) =>
      q ? searchStaticPage(experiment, loaded, q) : loaded);
  }
  const pageSize = () => (LIVE && ROWS >= 1 && ROWS <= 200 ? ROWS : state.data.page_size);
  async function fullRow(experiment, position) {
    if (LIVE) return fetchJSON("record?" + new URLSearchParams({ experiment: experiment.name, position }));
    const chunk = Math.floor(position / state.data.chunk);
    const rows = await loadScript(`records/${experiment.number}/rows/chunk-${chunk}`);
    return rows.find((row) => row.position === position);
  }
  // Static search: the rows of this page whose any field holds the text.
  async function searchStaticPage(experiment, page, q) {
    const needle = q.toLowerCase();
    const full = await Promise.all(page.rows.map((row) => fullRow(experiment, row.position)));
    const rows = page.rows.filter((row, i) => Object.values(full[i] || {}).some(
      (value) => typeof value === "string" && value.toLowerCase().includes(needle)));
    return Object.assign({}, page, { rows, matchedOnPage: true });
  }

  // -- drawing --
  function element(tag, attributes, ...children) {
    const made = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (name === "class") made.className = value; else made.setAttribute(name, value);
    }
    for (const child of children) if (child !== null && child !== undefined) made.append(child);
    return made;
  }
  const cell = (text, numeric) => element("td", numeric ? { class: "number" } : {}, text === null ? "" : String(text));
  const proportionText = (value) => (value ? value.text : "");

  function drawComparison() {
    const rows = state.data.experiments;
    const introspection = rows.some((row) => row.introspection);
    const headers = ["#", "dataset", "split", "task", "model", "answers", "system", "options", "seed", "n",
      "accuracy [95% CI]", "faithfulness [95% CI]"].concat(introspection ? ["introspection [95% CI]"] : []);
    const head = $("comparison").tHead;
    head.replaceChildren(element("tr", {}, ...headers.map((name) => element("th", {}, name))));
    const body = $("comparison").tBodies[0];
    body.replaceChildren(...rows.map((row) => {
      const tr = element("tr", { class: "experiment", "data-name": row.name },
        cell(row.number, true), cell(row.dataset), cell(row.split), cell(row.task), cell(row.model),
        cell(row.answers), cell(row.system_message), cell(row.options || "-"), cell(row.seed, true),
        cell(row.n, true), cell(proportionText(row.accuracy), true), cell(proportionText(row.faithfulness), true),
        introspection ? cell(proportionText(row.introspection), true) : null);
      tr.addEventListener("click", () => chooseExperiment(row.name));
      return tr;
    }));
    $("no-experiments").hidden = rows.length > 0;
  }

  function drawJobs() {
    const jobs = state.data.jobs;
    const box = $("jobs");
    if (jobs === null) {
      box.replaceChildren(element("p", { class: "hint" }, "From a results folder: every experiment shown is complete."));
      return;
    }
    if (!jobs.length) { box.replaceChildren(element("p", { class: "hint" }, "No job yet.")); return; }
    const table = element("table", { id: "jobs-table" }, element("thead", {}, element("tr", {},
      ...["job", "experiment", "progress", "", "accuracy", "faithfulness"].map((name) => element("th", {}, name)))));
    const body = element("tbody");
    for (const job of jobs) {
      const summary = job.summary || {};
      const percent = (v) => (v === null || v === undefined ? "" : (100 * v).toFixed(1) + "%");
      body.append(element("tr", { class: "job", "data-job": job.job_id }, cell(job.job_id), cell(job.experiment_id),
        element("td", {}, element("progress", { max: Math.max(job.expected, 1), value: job.received })),
        cell(`${job.received}/${job.expected}` + (job.complete ? " complete" : ""), true),
        cell(percent(summary.accuracy), true), cell(percent(summary.faithfulness ?? summary.introspection), true)));
    }
    table.append(body);
    box.replaceChildren(table);
  }

  function drawFigures() {
    const figures = state.data.figures || [];
    const box = $("figures");
    if (!figures.length) {
      box.replaceChildren(element("p", { class: "hint", id: "no-figures" },
        "No figures" + (state.data.figures_note ? ": " + state.data.figures_note : ".")));
      return;
    }
    box.replaceChildren(...figures.map((figure) => {
      const src = (LIVE ? BASE : "") + figure.src; // a thumbnail; the full size opens on its own
      return element("figure", { "data-figure": figure.name }, element("a", { href: src, target: "_blank" },
        element("img", { src, alt: figure.title, loading: "lazy" })), element("figcaption", {}, figure.title));
    }));
  }

  function drawExperimentChoice() {
    const select = $("experiment");
    select.replaceChildren(...state.data.experiments.map((row) => element("option", { value: row.name },
      `#${row.number} ${row.dataset} ${row.task} ${row.model}${row.options ? " " + row.options : ""}`)));
    if (state.experiment) select.value = state.experiment.name;
  }

  function drawFilters(counts) {
    $("filters").replaceChildren(...state.data.filters.filter((name) => !counts || name in counts).map((name) => {
      const button = element("button", { type: "button", class: "filter" + (name === state.filter ? " active" : ""),
        "data-filter": name }, FILTER_NAMES[name] + (counts ? ` (${counts[name]})` : ""));
      button.addEventListener("click", () => { state.filter = name; state.offset = 0; loadPage(); });
      return button;
    }));
  }

  async function loadPage() {
    const experiment = state.experiment;
    if (!experiment) return;
    const list = $("records");
    list.dataset.loading = "1";
    let page;
    try {
      page = await recordsPage(experiment, state.filter, state.q, state.offset);
    } catch (error) {
      list.tBodies[0].replaceChildren(element("tr", {}, element("td", { colspan: 5 }, String(error.message))));
      $("page-info").textContent = "";
      delete list.dataset.loading;
      return;
    }
    if (experiment !== state.experiment) return; // another experiment was chosen meanwhile
    drawFilters(page.counts);
    list.tBodies[0].replaceChildren(...page.rows.map((row) => {
      const tr = element("tr", { class: "record", "data-position": row.position, "data-idx": row.idx,
        "data-status": row.status }, cell(row.idx, true), cell(row.label), cell(row.predict ?? row.error ?? ""),
        cell(row.explain_predict ?? row.ability ?? ""), element("td", {}, element("span",
          { class: "status " + row.status }, row.status)));
      if (row.position === state.position) tr.classList.add("selected");
      tr.addEventListener("click", () => openTranscript(row.position));
      return tr;
    }));
    const last = Math.min(page.offset + page.limit, page.total);
    $("page-info").textContent = page.total
      ? `${page.offset + 1}–${last} of ${page.total}` : "no observation matches";
    $("page-info").dataset.total = page.total;
    $("page-info").dataset.offset = page.offset;
    $("search-scope").textContent = page.matchedOnPage
      ? `${page.rows.length} row(s) of this page hold "${state.q}" (the static report searches the page shown).`
      : state.q ? `Searching every record for "${state.q}".` : "";
    list.dataset.experiment = experiment.name; // what the list shows now
    $("prev").disabled = page.offset === 0;
    $("next").disabled = last >= page.total;
    delete list.dataset.loading;
  }

  const TRANSCRIPT = [
    ["predict_prompt", "Question (classification prompt)"], ["predict_answer", "Model's answer"],
    ["ability_prompt", "Introspection prompt"], ["ability_answer", "Model's answer"],
    ["explain_prompt", "Explanation prompt"], ["explain_answer", "Model's explanation"],
    ["explain_predict_prompt", "Question about the explained paragraph"],
    ["explain_predict_answer", "Model's answer"],
  ];

  async function openTranscript(position) {
    state.position = position;
    for (const tr of document.querySelectorAll("#records tr.record")) {
      tr.classList.toggle("selected", Number(tr.dataset.position) === position);
    }
    const box = $("transcript");
    box.replaceChildren(element("p", { class: "hint" }, "Loading…"));
    let row;
    try {
      row = await fullRow(state.experiment, position);
    } catch (error) {
      box.replaceChildren(element("p", {}, String(error.message)));
      return;
    }
    if (state.position !== position || !row) return;
    const facts = element("dl", { class: "facts" });
    const fact = (name, value) => { if (value !== null && value !== undefined) facts.append(element("dt", {}, name), element("dd", {}, String(value))); };
    fact("idx", row.idx);
    fact("label", row.label);
    fact("answer read", row.predict);
    fact("correct", row.correct);
    fact("introspection read", row.ability);
    fact("explanation read", row.explain);
    fact("answer after the explanation", row.explain_predict);
    fact("faithful", row.faithful);
    fact("introspect", row.introspect);
    fact("error", row.error);
    fact("duration (s)", row.duration);
    box.replaceChildren(element("h3", { id: "transcript-title" }, `Observation ${row.idx} `,
      element("span", { class: "status " + row.status }, row.status)), facts);
    box.dataset.position = position;
    for (const [field, title] of TRANSCRIPT) {
      if (row[field] === null || row[field] === undefined) continue;
      box.append(element("h3", {}, title), element("pre", { class: "field", "data-field": field }, row[field]));
    }
  }

  function chooseExperiment(name) {
    state.experiment = state.data.experiments.find((row) => row.name === name) || null;
    state.offset = 0;
    state.position = null;
    $("experiment").value = name;
    for (const tr of document.querySelectorAll("#comparison tr.experiment")) {
      tr.classList.toggle("selected", tr.dataset.name === name);
    }
    $("transcript").replaceChildren(element("p", { class: "hint" }, "Open a row to read its prompts and answers."));
    delete $("transcript").dataset.position;
    loadPage();
  }

  async function refresh() {
    try {
      state.data = await getData();
    } catch (error) {
      $("source").textContent = "Cannot load the report's data: " + error.message;
      return;
    }
    const data = state.data;
    $("source").textContent = (LIVE ? "Served by the aggregator, from " : "From the results folder ") + data.source;
    $("notes").replaceChildren(...(data.notes || []).map((note) => element("li", {}, note)));
    drawComparison();
    drawJobs();
    drawFigures();
    drawExperimentChoice();
    if (!state.experiment && data.experiments.length) chooseExperiment(data.experiments[0].name);
    else if (state.experiment) {
      state.experiment = data.experiments.find((row) => row.name === state.experiment.name) || state.experiment;
    }
    document.body.dataset.ready = "1";
    // While a job runs, its progress and the table are asked for again.
    if (LIVE && (data.jobs || []).some((job) => !job.complete)) setTimeout(refresh, 5000);
  }

  $("experiment").addEventListener("change", (event) => chooseExperiment(event.target.value));
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.q = $("search").value.trim();
    state.offset = 0;
    loadPage();
  });
  $("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - pageSize()); loadPage(); });
  $("next").addEventListener("click", () => { state.offset += pageSize(); loadPage(); });
  refresh();
})();
