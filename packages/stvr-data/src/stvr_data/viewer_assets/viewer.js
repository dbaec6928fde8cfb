// The STVR benchmark viewer: plain JavaScript, no build step. Its data is
// window.STVR_DATA, written by `stvr-data view` into data.js (file:// pages may not
// fetch local JSON). Boxes are drawn from that data, never burned into the videos.
//
// Times: each pair's previews start at the query / reference start, so a video's
// currentTime is the time since the span's start. Reference image k (an 8-frame clip)
// covers [k / 3, (k + 1) / 3) s; query keyframe j covers [j * interval, (j + 1) * interval).
"use strict";

const COLOURS = { query: "rgb(0, 128, 255)", truth: "rgb(0, 255, 0)", detection: "rgb(255, 0, 255)" };
const LINE = 3;
const DATA = window.STVR_DATA;
const $ = (id) => document.getElementById(id);
const state = { pair: null, time: 0, playing: false, threshold: 0.5, last: null };

function fmt(seconds) { return Number(seconds).toFixed(2) + " s"; }

function labelText(label) {
  const names = DATA.labels[label];
  return names ? `${label} (${names})` : label;
}

function showSummary() {
  const s = DATA.summary;
  $("title").textContent = `${s.name}: ${s.split} split`;
  $("summary").textContent = s.lines.join(" · ");
  document.title = `${s.name} (${s.split})`;
  if (s.figure) { $("figure").src = s.figure; } else { $("figure").remove(); }
  const counts = {};
  for (const p of DATA.pairs) counts[p.label] = (counts[p.label] || 0) + 1;
  for (const label of Object.keys(DATA.labels)) {
    const row = $("labels").tBodies[0].insertRow();
    row.insertCell().textContent = label;
    row.insertCell().textContent = DATA.labels[label] || "";
    row.insertCell().textContent = `${counts[label] || 0} shown of ${s.pairs_per_label[label] || 0}`;
    const option = new Option(labelText(label), label);
    $("label-filter").add(option);
  }
}

function listPairs() {
  const wanted = $("label-filter").value;
  const list = $("pair-list");
  list.replaceChildren();
  for (const pair of DATA.pairs) {
    if (wanted && pair.label !== wanted) continue;
    const item = document.createElement("li");
    item.dataset.pair = pair.id;
    item.innerHTML = `<b></b><small></small>`;
    item.firstChild.textContent = pair.id;
    item.lastChild.textContent = `${labelText(pair.label)} · ${pair.ref.video}`;
    item.addEventListener("click", () => selectPair(pair.id, 0));
    if (state.pair && state.pair.id === pair.id) item.classList.add("selected");
    list.append(item);
  }
}

function setupStage(which, part) {
  const video = $(`${which}-video`);
  const canvas = $(`${which}-canvas`);
  const width = DATA.summary.display_width;
  const height = Math.round(width * DATA.summary.clip_height / DATA.summary.clip_width);
  canvas.width = width;
  canvas.height = height;
  canvas.parentElement.style.width = width + "px";
  canvas.parentElement.style.height = height + "px";
  video.pause();
  if (part.media) { video.src = part.media; video.hidden = false; }
  else { video.removeAttribute("src"); video.hidden = true; }
}

function selectPair(id, time) {
  const pair = DATA.pairs.find((p) => p.id === id) || DATA.pairs[0];
  if (!pair) return;
  state.pair = pair;
  $("pair-title").textContent = `${pair.id}: ${labelText(pair.label)}`;
  $("query-span").textContent = `${pair.query.video} [${pair.query.start}, ${pair.query.end}) s`;
  $("ref-span").textContent = `${pair.ref.video} [${pair.ref.start}, ${pair.ref.end}) s`;
  setupStage("query", pair.query);
  setupStage("ref", pair.ref);
  $("time").max = String(pair.ref.end - pair.ref.start);
  for (const item of $("pair-list").children) {
    item.classList.toggle("selected", item.dataset.pair === pair.id);
  }
  seek(time);
}

function queryTime(time) {
  const length = state.pair.query.end - state.pair.query.start;
  return length > 0 ? time % length : 0;
}

function seek(time) {
  const length = state.pair.ref.end - state.pair.ref.start;
  state.time = Math.min(Math.max(0, time), Math.max(0, length - 1e-6));
  for (const [which, t] of [["ref", state.time], ["query", queryTime(state.time)]]) {
    const video = $(`${which}-video`);
    if (!video.hidden && Math.abs(video.currentTime - t) > 0.05) video.currentTime = t;
  }
  draw();
}

function box(ctx, b, colour, text) {
  const [w, h] = [ctx.canvas.width, ctx.canvas.height];
  const x = Math.round(b[0] * w), y = Math.round(b[1] * h);
  const bw = Math.round((b[2] - b[0]) * w), bh = Math.round((b[3] - b[1]) * h);
  ctx.strokeStyle = colour;
  ctx.lineWidth = LINE;
  ctx.strokeRect(x + 0.5, y + 0.5, bw, bh);
  if (text) {
    ctx.font = "bold 13px system-ui, sans-serif";
    const tw = ctx.measureText(text).width + 6;
    const ty = y >= 16 ? y - 16 : y + bh;
    ctx.fillStyle = colour;
    ctx.fillRect(x, ty, tw, 16);
    ctx.fillStyle = "black";
    ctx.fillText(text, x + 3, ty + 12);
  }
}

function draw() {
  const pair = state.pair;
  const image = Math.floor(state.time * 3 + 1e-6);
  const ref = $("ref-canvas").getContext("2d");
  ref.clearRect(0, 0, ref.canvas.width, ref.canvas.height);
  for (const row of pair.ref.truth) if (row[0] === image) box(ref, row.slice(1, 5), COLOURS.truth);
  for (const row of pair.ref.detections) {
    if (row[0] === image && row[5] >= state.threshold) {
      box(ref, row.slice(1, 5), COLOURS.detection, row[5].toFixed(2));
    }
  }
  const query = $("query-canvas").getContext("2d");
  query.clearRect(0, 0, query.canvas.width, query.canvas.height);
  const keyframe = Math.floor(queryTime(state.time) / DATA.summary.keyframe_interval + 1e-6);
  const queryBox = pair.query.boxes[Math.min(keyframe, pair.query.boxes.length - 1)];
  if (queryBox) box(query, queryBox, COLOURS.query, "query");
  $("time").value = String(state.time);
  $("clock").textContent = `${fmt(state.time)} (source ${fmt(pair.ref.start + state.time)}, image ${image})`;
}

function tick(now) {
  if (!state.playing) return;
  const ref = $("ref-video");
  if (!ref.hidden && !ref.paused) {
    state.time = ref.currentTime;  // the reference video is the clock
    const query = $("query-video");
    if (!query.hidden && Math.abs(query.currentTime - queryTime(state.time)) > 0.15) {
      query.currentTime = queryTime(state.time);
    }
    draw();
  } else {
    const length = state.pair.ref.end - state.pair.ref.start;
    const step = state.last === null ? 0 : (now - state.last) / 1000;
    seek(length > 0 ? (state.time + step) % length : 0);
  }
  state.last = now;
  requestAnimationFrame(tick);
}

function play(on) {
  state.playing = on;
  state.last = null;
  $("play").textContent = on ? "pause" : "play";
  for (const which of ["ref", "query"]) {
    const video = $(`${which}-video`);
    if (video.hidden) continue;
    if (on) video.play().catch(() => {}); else video.pause();
  }
  if (on) requestAnimationFrame(tick);
}

function fromHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  if (params.has("thr")) state.threshold = Number(params.get("thr"));
  return { pair: params.get("pair"), time: Number(params.get("t") || 0) };
}

function start() {
  showSummary();
  const wanted = fromHash();
  if (DATA.has_detections) {
    $("threshold-box").hidden = false;
    $("legend-detection").hidden = false;
    $("threshold").value = String(state.threshold);
    $("threshold-value").textContent = state.threshold.toFixed(2);
  }
  listPairs();
  $("label-filter").addEventListener("change", listPairs);
  $("play").addEventListener("click", () => play(!state.playing));
  $("time").addEventListener("input", (e) => seek(Number(e.target.value)));
  $("threshold").addEventListener("input", (e) => {
    state.threshold = Number(e.target.value);
    $("threshold-value").textContent = state.threshold.toFixed(2);
    draw();
  });
  for (const which of ["ref", "query"]) {
    $(`${which}-video`).addEventListener("error", () => {
      $(`${which}-video`).hidden = true;  // undecodable here: boxes still show
    });
  }
  if (DATA.pairs.length) selectPair(wanted.pair, wanted.time);
  else $("pair-title").textContent = "This split has no pairs.";
}

start();
