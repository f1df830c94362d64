"""The page `efr serve` shows at ``/``: plain HTML, CSS and JavaScript, nothing fetched from elsewhere.

Drop photos (or choose them) and each is shown with its faces boxed and labelled and a bar per
class; "Start webcam" sends camera frames (getUserMedia; a page on localhost needs no TLS) one
after another and redraws the boxes and bars as answers come.  The model's name, classes, input
size and test accuracy come from GET /model.  A ``?token=T`` in the address is sent with every
request.  For tests: ``#try=<data: URL of a photo>`` runs that photo as if dropped, and the page
sets ``data-state="done"`` on <body> when its answer is drawn (or ``"error"``).
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>EFR: facial expressions</title>
<style>
body{font-family:system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:12px 20px}header h1{margin:0;font-size:20px}
#model{font-size:14px;opacity:.9;margin-top:4px}main{padding:16px 20px;max-width:1100px}
#drop{border:2px dashed #8893a7;border-radius:10px;padding:26px;text-align:center;background:#fff;cursor:pointer}
#drop.over{background:#e8f0ff;border-color:#3b6fd8}button{font-size:15px;padding:7px 14px;margin:10px 8px 0 0}
#status{font-size:14px;color:#555;margin:8px 0}.error{color:#b00020}
.card{display:flex;flex-wrap:wrap;gap:16px;background:#fff;border-radius:10px;padding:12px;margin:12px 0;
box-shadow:0 1px 3px #0002}.card canvas{max-width:520px;width:100%;height:auto}
.faces{flex:1;min-width:240px}.face{margin-bottom:10px}.face-label{font-weight:600}
.bar{display:flex;align-items:center;font-size:13px;margin:2px 0}.bar span{width:90px}
.bar div{height:12px;background:#3b6fd8;border-radius:3px;margin-right:6px}
</style></head>
<body data-state="idle">
<header><h1>EFR: the emotion of every face</h1><div id="model">loading the model...</div></header>
<main>
<div id="drop">Drop photos here, or click to choose them<input id="files" type="file" accept="image/*" multiple hidden></div>
<button id="cam">Start webcam</button><span id="fps"></span>
<div id="status"></div>
<div id="live"></div>
<div id="results"></div>
</main>
<script>
"use strict";
const token = new URLSearchParams(location.search).get("token");
const headers = token ? {"X-EFR-Token": token} : {};
const COLORS = ["#e6194b","#3cb44b","#4363d8","#f58231","#911eb4","#42d4f4","#f032e6","#9a6324","#808000"];
let classes = [];
const $ = (id) => document.getElementById(id);
function el(tag, cls, text) { const e = document.createElement(tag); if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text; return e; }
function status(text, bad) { $("status").textContent = text; $("status").className = bad ? "error" : ""; }

fetch("/model", {headers}).then(r => r.json()).then(m => {
  if (m.error) { $("model").textContent = m.error; return; }
  classes = m.classes;
  const acc = m.test_accuracy == null ? "not recorded" :
    (100 * m.test_accuracy).toFixed(1) + " % (" + m.test_accuracy_on + ")";
  $("model").textContent = m.name + " | classes: " + m.classes.join(", ") + " | input " +
    m.input_size.join(" x ") + " px | test accuracy " + acc + " | runtime " + m.runtime;
}).catch(e => { $("model").textContent = "could not read /model: " + e; });

async function send(blobs) {
  const form = new FormData();
  for (const [blob, name] of blobs) form.append("files", blob, name);
  const response = await fetch("/predict", {method: "POST", body: form, headers});
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.error || response.statusText);
  return answer;
}

function draw(canvas, bitmap, faces) {
  const scale = Math.min(1, 640 / bitmap.width);
  canvas.width = Math.round(bitmap.width * scale); canvas.height = Math.round(bitmap.height * scale);
  const g = canvas.getContext("2d");
  g.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  g.lineWidth = 3; g.font = "bold 16px system-ui,sans-serif";
  faces.forEach((f, i) => {
    const [x, y, w, h] = f.box.map(v => v * scale), color = COLORS[i % COLORS.length];
    g.strokeStyle = color; g.strokeRect(x, y, w, h);
    const text = f.label + " " + (100 * f.confidence).toFixed(0) + "%";
    g.fillStyle = color; g.fillRect(x, Math.max(0, y - 22), g.measureText(text).width + 10, 22);
    g.fillStyle = "#fff"; g.fillText(text, x + 5, Math.max(16, y - 6));
  });
}

function bars(box, faces) {
  box.replaceChildren();
  if (!faces.length) { box.append(el("div", "face-label", "no face found")); return; }
  faces.forEach((f, i) => {
    const face = el("div", "face");
    const label = el("div", "face-label", "face " + (i + 1) + ": " + f.label);
    label.style.color = COLORS[i % COLORS.length]; label.dataset.label = f.label; face.append(label);
    for (const name of (classes.length ? classes : Object.keys(f.probabilities))) {
      const p = f.probabilities[name] || 0, row = el("div", "bar"), fill = el("div");
      fill.style.width = Math.round(160 * p) + "px";
      row.append(el("span", "", name), fill, document.createTextNode((100 * p).toFixed(1) + " %"));
      face.append(row);
    }
    box.append(face);
  });
}

async function run(files) {
  files = Array.from(files).filter(f => f.size);
  if (!files.length) return;
  status("sending " + files.length + " photo(s)...");
  try {
    const answer = await send(files.map(f => [f, f.name || "photo"]));
    for (let i = 0; i < files.length; i++) {
      const card = el("div", "card"), canvas = el("canvas"), faces = el("div", "faces");
      const image = answer.images[i];
      faces.append(el("div", "", image.name + " (" + image.width + " x " + image.height + ")"));
      const list = el("div"); faces.append(list); card.append(canvas, faces);
      $("results").prepend(card);
      bars(list, image.faces);
      try { draw(canvas, await createImageBitmap(files[i]), image.faces); } catch (e) { canvas.remove(); }
    }
    status(answer.images.reduce((n, im) => n + im.faces.length, 0) + " face(s) in " + files.length +
      " photo(s), " + answer.timing_ms.total.toFixed(0) + " ms on the server");
    document.body.dataset.state = "done";
  } catch (e) { status(String(e.message || e), true); document.body.dataset.state = "error"; }
}

const drop = $("drop");
drop.onclick = () => $("files").click();
$("files").onchange = (e) => run(e.target.files);
drop.ondragover = (e) => { e.preventDefault(); drop.classList.add("over"); };
drop.ondragleave = () => drop.classList.remove("over");
drop.ondrop = (e) => { e.preventDefault(); drop.classList.remove("over"); run(e.dataTransfer.files); };

let stream = null;
$("cam").onclick = async () => {
  if (stream) { stream.getTracks().forEach(t => t.stop()); stream = null; $("cam").textContent = "Start webcam";
    $("live").replaceChildren(); $("fps").textContent = ""; return; }
  try { stream = await navigator.mediaDevices.getUserMedia({video: true, audio: false}); }
  catch (e) { status("no webcam: " + e.message, true); return; }
  $("cam").textContent = "Stop webcam";
  const video = el("video"); video.srcObject = stream; video.muted = true; await video.play();
  const card = el("div", "card"), canvas = el("canvas"), list = el("div", "faces");
  card.append(canvas, list); $("live").replaceChildren(card);
  const grab = el("canvas");
  let last = performance.now();
  while (stream) {
    grab.width = video.videoWidth; grab.height = video.videoHeight;
    grab.getContext("2d").drawImage(video, 0, 0);
    const blob = await new Promise(r => grab.toBlob(r, "image/jpeg", 0.85));
    try {
      const answer = await send([[blob, "frame.jpg"]]);
      const faces = answer.images[0].faces;
      draw(canvas, grab, faces); bars(list, faces);
      const now = performance.now(); $("fps").textContent = (1000 / (now - last)).toFixed(1) + " frames/s"; last = now;
    } catch (e) { status(String(e.message || e), true); await new Promise(r => setTimeout(r, 1000)); }
  }
};

if (location.hash.startsWith("#try=")) {
  fetch(location.hash.slice(5)).then(r => r.blob()).then(b => run([new File([b], "try.png", {type: b.type})]));
}
</script></body></html>
"""
