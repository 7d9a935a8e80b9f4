// keras_hash image search page: plain JS, no build step, no network beyond this server.
"use strict";

const $ = (id) => document.getElementById(id);
let info = null;
let lastQuery = null; // () => Promise, re-run when k or radius changes
let generation = 0; // only the newest search may draw: older answers are dropped

function params() {
  const radiusMode = document.querySelector("input[name=mode]:checked").value === "radius";
  const query = new URLSearchParams();
  if (radiusMode) {
    query.set("radius", $("radius").value);
    query.set("limit", $("k").value);
  } else {
    query.set("k", $("k").value);
  }
  return query.toString();
}

function showError(message) {
  $("status").textContent = message;
  $("status").className = "error";
}

async function call(url, options) {
  const started = performance.now();
  const reply = await fetch(url, options);
  const body = await reply.json().catch(() => ({}));
  if (!reply.ok) {
    const detail = typeof body.detail === "string" ? body.detail
      : JSON.stringify(body.detail || reply.statusText);
    throw new Error(`${reply.status}: ${detail}`);
  }
  body.elapsed = performance.now() - started;
  return body;
}

function showCode(query) {
  const bits = $("bits");
  bits.replaceChildren();
  for (const bit of query.bits) {
    const cell = document.createElement("span");
    if (bit === "1") cell.className = "on";
    bits.appendChild(cell);
  }
  bits.dataset.bits = query.bits;
  $("hex").textContent = query.code;
  $("query-code").hidden = false;
}

function showResults(answer) {
  showCode(answer.query);
  const grid = $("results");
  grid.replaceChildren();
  for (const hit of answer.results) {
    const card = document.createElement("div");
    card.className = "result" + (hit.distance === 0 ? " d0" : "");
    card.tabIndex = 0;
    card.dataset.id = hit.id;
    card.dataset.distance = hit.distance;
    card.title = `id ${hit.id}: Hamming distance ${hit.distance}; click to search by it`;
    if (hit.thumbnail) {
      const img = document.createElement("img");
      img.src = hit.thumbnail;
      img.alt = `image ${hit.id}`;
      card.appendChild(img);
    }
    const distance = document.createElement("div");
    distance.className = "distance";
    distance.textContent = `d = ${hit.distance}`;
    const id = document.createElement("div");
    id.className = "id";
    id.textContent = `id ${hit.id}`;
    card.append(distance, id);
    card.addEventListener("click", () => searchId(hit.id, hit.image));
    card.addEventListener("keydown", (e) => { if (e.key === "Enter") searchId(hit.id, hit.image); });
    grid.appendChild(card);
  }
  const shown = answer.results.length;
  const what = answer.mode === "radius"
    ? `${answer.count} codes within radius ${answer.radius}` + (answer.count > shown ? `, first ${shown} shown` : "")
    : `${shown} nearest codes`;
  const by = answer.query.id !== undefined ? ` of id ${answer.query.id}` : "";
  $("status").textContent = `${what}${by} (${Math.round(answer.elapsed)} ms)`;
  $("status").className = "";
  grid.dataset.state = "done";
}

function run(query) {
  lastQuery = query;
  const mine = ++generation;
  $("results").dataset.state = "loading";
  $("status").textContent = "searching…";
  $("status").className = "";
  query().then((answer) => {
    if (mine === generation) showResults(answer);
  }).catch((error) => {
    if (mine !== generation) return;
    $("results").dataset.state = "error";
    showError(error.message);
  });
}

function preview(src) {
  $("preview").src = src;
  $("preview").hidden = !src;
  $("drop-text").textContent = "Drop or click for another image";
}

function searchFile(file) {
  if (!file) return;
  preview(URL.createObjectURL(file));
  run(() => call(`api/search/image?${params()}`, { method: "POST", body: file }));
}

function searchId(id, image) {
  if (image) preview(image);
  run(() => call(`api/search/id/${encodeURIComponent(id)}?${params()}`));
}

function searchCode(hex) {
  run(() => call(`api/search/code?code=${encodeURIComponent(hex)}&${params()}`));
}

function setup() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => searchFile(e.target.files[0]));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    searchFile(e.dataTransfer.files[0]);
  });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter") $("file").click(); });
  $("code-search").addEventListener("click", () => searchCode($("code").value));
  $("code").addEventListener("keydown", (e) => {
    if (e.key === "Enter") { e.preventDefault(); searchCode($("code").value); }
  });
  for (const input of document.querySelectorAll("#controls input[type=number], input[name=mode]")) {
    // An emptied number field is a user still typing, not a search.
    input.addEventListener("change", () => { if (lastQuery && input.value !== "") run(lastQuery); });
  }
  call("api/info").then((answer) => {
    info = answer;
    const images = answer.images ? `${answer.images.count} images` : "no images";
    $("info").textContent = `${answer.bits}-bit codes · ${answer.index.kind} of ${answer.index.size} · ${images}`;
    $("radius").max = answer.bits;
    $("k").max = Math.min(answer.limits.max_results, answer.index.size);
    $("k").value = Math.min(Number($("k").value), answer.index.size);
    document.body.dataset.ready = "1";
  }).catch((error) => showError(`cannot reach the service: ${error.message}`));
}

setup();
