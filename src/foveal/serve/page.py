"""The web page at `/`: pick or drop an image, see the top-5 classes. Self-contained (no external assets)."""

PAGE_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>foveal classifier</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
  #drop { display: block; border: 2px dashed #888; border-radius: 8px; padding: 2rem; text-align: center; cursor: pointer; }
  #drop.over { background: #eef; }
  #preview { width: 8rem; max-height: 12rem; object-fit: contain; margin-top: 1rem; image-rendering: pixelated; }
  ol { padding-left: 1.5rem; }
  li { margin: .4rem 0; }
  .bar { display: inline-block; height: .8rem; background: #4a7; vertical-align: middle; margin-left: .5rem; }
  #error { color: #b00; }
  #meta { color: #666; font-size: .9rem; }
</style>
</head>
<body>
<h1>foveal classifier</h1>
<p id="meta">loading model information...</p>
<label id="drop" for="file">Drop an image here, or click to pick one
  <input type="file" id="file" name="file" accept="image/*" hidden>
</label>
<div><img id="preview" alt="" hidden></div>
<p id="status"></p>
<p id="error" role="alert"></p>
<ol id="top5" aria-label="top-5 classes"></ol>
<script>
const $ = (id) => document.getElementById(id);
fetch("metadata").then(r => r.json()).then(m => {
  $("meta").textContent = `model ${m.model} (${m.backend}), ${m.classes.length} classes, ${m.img_size} px input`;
}).catch(() => { $("meta").textContent = ""; });

async function classify(file) {
  $("error").textContent = ""; $("top5").innerHTML = ""; $("status").textContent = "classifying " + file.name + "...";
  const img = $("preview"); img.src = URL.createObjectURL(file); img.hidden = false;
  const body = new FormData(); body.append("file", file, file.name);
  try {
    const r = await fetch("predict", { method: "POST", body });
    const j = await r.json();
    if (!r.ok) { throw new Error(j.error || ("HTTP " + r.status)); }
    for (const t of j.results[0].top) {
      const li = document.createElement("li");
      const pct = (100 * t.prob).toFixed(1);
      li.textContent = `${t.class}: ${pct}%`;
      const bar = document.createElement("span"); bar.className = "bar"; bar.style.width = (2 * pct) + "px";
      li.appendChild(bar); $("top5").appendChild(li);
    }
    $("status").textContent = file.name;
  } catch (e) { $("status").textContent = ""; $("error").textContent = "error: " + e.message; }
}
$("file").addEventListener("change", (e) => { if (e.target.files.length) classify(e.target.files[0]); });
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over");
  if (e.dataTransfer.files.length) classify(e.dataTransfer.files[0]);
});
</script>
</body>
</html>
"""
