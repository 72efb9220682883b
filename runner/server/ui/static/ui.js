// runner's web UI: a little progressive enhancement. Every page works without it.
"use strict";

function setupCompare() {
  const form = document.getElementById("compare-form");
  if (!form) return;
  const button = document.getElementById("compare-button");
  const hint = document.getElementById("compare-hint");
  const boxes = Array.from(form.querySelectorAll("input[name=run]"));
  const update = () => {
    const n = boxes.filter((b) => b.checked).length;
    button.disabled = n !== 2;
    hint.textContent = n === 2 ? "Ready: the older run is the baseline (A)." : `Select two runs to compare them (${n} selected).`;
  };
  boxes.forEach((b) => b.addEventListener("change", update));
  update();
  // on an experiment's page: with "pick points" ticked, a point of a chart selects its run
  const pick = document.getElementById("pick-points");
  const points = Array.from(document.querySelectorAll("a.run-point"));
  const mark = () =>
    points.forEach((p) => {
      const box = boxes.find((b) => b.value === p.dataset.run);
      p.classList.toggle("picked", Boolean(box && box.checked));
    });
  boxes.forEach((b) => b.addEventListener("change", mark));
  points.forEach((p) =>
    p.addEventListener("click", (event) => {
      if (!pick || !pick.checked) return;
      event.preventDefault();
      const box = boxes.find((b) => b.value === p.dataset.run);
      if (!box) return;
      box.checked = !box.checked;
      box.dispatchEvent(new Event("change"));
    }),
  );
  mark();
}

function setupFilters() {
  const form = document.getElementById("rows-filter");
  if (!form) return;
  form.querySelectorAll("input[type=checkbox], select").forEach((el) =>
    el.addEventListener("change", () => {
      if (el.name !== "score" || form.elements.namedItem("below").value !== "") form.submit();
    }),
  );
}

function setupDrawer() {
  const table = document.getElementById("rows");
  const drawer = document.getElementById("drawer");
  if (!table || !drawer) return;
  const body = document.getElementById("drawer-body");
  const pageLink = document.getElementById("drawer-link");
  let current = null;

  const close = () => {
    drawer.hidden = true;
    if (current) current.classList.remove("open");
    current = null;
    if (location.hash.startsWith("#trace=")) history.replaceState(null, "", location.pathname + location.search);
  };
  const open = async (row) => {
    const id = row.dataset.trace;
    if (current) current.classList.remove("open");
    current = row;
    row.classList.add("open");
    drawer.hidden = false;
    drawer.setAttribute("aria-busy", "true");
    body.textContent = "Loading…";
    pageLink.href = "/traces/" + encodeURIComponent(id);
    history.replaceState(null, "", "#trace=" + encodeURIComponent(id));
    try {
      const response = await fetch("/traces/" + encodeURIComponent(id) + "?partial=1", { credentials: "same-origin" });
      if (!response.ok) throw new Error(response.status + " " + response.statusText);
      if (current !== row) return;
      // the server renders and escapes the fragment; nothing here builds HTML from data
      body.innerHTML = await response.text();
    } catch (err) {
      body.textContent = "Could not load the trace: " + err.message;
    } finally {
      drawer.removeAttribute("aria-busy");
    }
  };

  table.addEventListener("click", (event) => {
    const row = event.target.closest("tr.row");
    if (!row || event.metaKey || event.ctrlKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    if (row === current) close();
    else open(row);
  });
  document.getElementById("drawer-close").addEventListener("click", close);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !drawer.hidden) close();
  });
  if (location.hash.startsWith("#trace=")) {
    const id = decodeURIComponent(location.hash.slice("#trace=".length));
    const row = Array.from(table.querySelectorAll("tr.row")).find((r) => r.dataset.trace === id);
    if (row) open(row);
  }
}

function setupRowLinks() {
  // rows of the logs table open their trace; the name cell is a real link without script
  document.querySelectorAll("table[data-rows=link]").forEach((table) =>
    table.addEventListener("click", (event) => {
      const row = event.target.closest("tr[data-href]");
      if (!row || event.target.closest("a") || event.metaKey || event.ctrlKey || event.shiftKey || event.button !== 0) return;
      location.href = row.dataset.href;
    }),
  );
}

document.addEventListener("DOMContentLoaded", () => {
  setupCompare();
  setupRowLinks();
  setupFilters();
  setupDrawer();
});
