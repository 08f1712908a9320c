// The labeling page of `quarry project serve` as a person uses it, in headless Chromium:
// a 100-item batch labeled with the keyboard (with an undo before and after a label was saved,
// and a skipped item labeled at the end), the labels checked in the project's journal, the
// rendered images checked on disk, the next batch asked for with Enter and shown, and
// screenshots taken. Prints (and writes to WORK/browser-timings.json) how long each next image
// took to show after its key press and each label took to be saved.
// usage: node label_page.mjs QUARRY_LOOP WORK CHROMIUM
import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

const [loop, work, chromiumPath] = process.argv.slice(2);
const torch = process.env.QUARRY_TORCH === "1";
const classes = ["ring", "cross", "square", "bar"];
const proj = path.join(work, "project");
fs.rmSync(proj, { recursive: true, force: true });

function fail(msg) {
  console.error("FAIL: " + msg);
  process.exitCode = 1;
  throw new Error(msg);
}
function check(cond, msg) { if (!cond) fail(msg); }
const q = (...args) => execFileSync(loop, args, { encoding: "utf8" });
const stats = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const at = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  return { n: s.length, median: at(0.5), p95: at(0.95), max: s[s.length - 1] };
};
function pngSize(file) {
  const b = fs.readFileSync(file);
  check(b.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])), file + " is not a PNG");
  return { width: b.readUInt32BE(16), height: b.readUInt32BE(20), bytes: b.length };
}

// The annotator's ground truth, where LibTorch is built in: a model trained on the synthetic
// pool's own labels (its predictions on the pool it was trained on), so that the labels given
// on the page are right and the first model's validation curve means something. Without it,
// the keys cycle through the classes.
function readNpyFloat32(file) {
  const b = fs.readFileSync(file);
  const headerLen = b.readUInt16LE(8);
  const header = b.toString("latin1", 10, 10 + headerLen);
  check(header.includes("'<f4'"), file + ": not float32: " + header);
  const shape = header.match(/'shape': \((\d+), (\d+)\)/).slice(1).map(Number);
  const data = new Float32Array(b.buffer.slice(b.byteOffset + 10 + headerLen, b.byteOffset + b.length));
  return { rows: shape[0], cols: shape[1], data };
}
let truth = null;
if (torch) {
  const oracle = path.join(work, "oracle");
  fs.rmSync(oracle, { recursive: true, force: true });
  q("train", "--dataset", "synthetic:1000", "--data-seed", "3", "--epochs", "10", "--threads", "2", "--out",
    path.join(work, "oracle.pt"));
  q("infer", "--dataset", "synthetic:1000", "--data-seed", "3", "--model", path.join(work, "oracle.pt"), "--out", oracle);
  const p = readNpyFloat32(path.join(oracle, "probs.npy"));
  truth = [];
  for (let r = 0; r < p.rows; r++) {
    let best = 0;
    for (let c = 1; c < p.cols; c++) if (p.data[r * p.cols + c] > p.data[r * p.cols + best]) best = c;
    truth.push(best);
  }
}
const keyFor = (item, n) => 1 + (truth ? truth[item] : n % 4);

q("project", "init", proj, "--dataset", "synthetic:1000", "--classes", classes.join(","), "--strategy",
  torch ? "entropy" : "random", "--seed", "3", "--threads", "2");
q("project", "next", proj, "-k", "100");

const server = spawn(loop, ["project", "serve", proj, "--port", "0"], { stdio: ["ignore", "pipe", "pipe"] });
let serverLog = "";
server.stderr.on("data", (d) => { serverLog += d; });
const url = await new Promise((resolve, reject) => {
  let out = "";
  server.stdout.on("data", (d) => {
    out += d;
    const m = out.match(/http:\/\/[\d.]+:\d+\/\?token=[\w-]+/);
    if (m) resolve(m[0]);
  });
  server.on("exit", (code) => reject(new Error("the server ended (" + code + "): " + serverLog)));
});

let browser;
try {
  browser = await chromium.launch({ executablePath: chromiumPath, args: ["--no-sandbox", "--disable-dev-shm-usage"] });
} catch (e) {
  console.log("SKIP: Chromium cannot start: " + e.message.split("\n")[0]);
  server.kill();
  process.exit(77);
}

const shot = (name) => path.join(work, name);
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(url);
  await page.waitForSelector("#img", { state: "visible" });
  await page.waitForFunction(() => document.getElementById("img").complete);
  check(!page.url().includes("token="), "the token stays in the address bar: " + page.url());
  const current = async () => Number((await page.textContent("#meta")).match(/item (\d+)/)[1]);

  // 100 items, each with its key; n = 10: a wrong label undone before it was sent and given
  // again; n = 50: a wrong label undone after it was saved (a relabel); n = 30: skipped, labeled
  // at the end.
  const expected = new Map();
  let skipped = -1;
  for (let n = 0; n < 100; n++) {
    const item = await current();
    const right = keyFor(item, n);
    const key = n === 10 || n === 50 ? 1 + (right % 4) : right;
    if (n === 30) {
      skipped = item;
      await page.keyboard.press("s");
      continue;
    }
    await page.keyboard.press(String(key));
    expected.set(item, classes[key - 1]);
    if (n === 10 || n === 50) {
      if (n === 50) await page.waitForFunction(() => window.quarry.unsaved() === 0);
      await page.keyboard.press("Backspace");
      check((await current()) === item, "undo did not go back to item " + item);
      await page.keyboard.press(String(right));
      expected.set(item, classes[right - 1]);
    }
    if (n === 5) await page.screenshot({ path: shot("labeling-batch1.png") });
    await page.waitForTimeout(15);  // a fast annotator: about 60 labels a second at most
  }
  check((await page.textContent("#donetitle")) === "Skipped items remain", "the skipped item is not reported");
  await page.click("#back");
  check((await current()) === skipped, "'back to the skipped' did not show item " + skipped);
  await page.keyboard.press(String(keyFor(skipped, 1)));
  expected.set(skipped, classes[keyFor(skipped, 1) - 1]);
  await page.waitForFunction(() => window.quarry.unsaved() === 0, null, { timeout: 30000 });
  await page.waitForFunction(() => document.getElementById("donetitle").textContent === "Batch complete");

  // The journal has exactly what was pressed.
  fs.rmSync(path.join(work, "labels.csv"), { force: true });
  q("project", "export", proj, "-o", path.join(work, "labels.csv"));
  const rows = fs.readFileSync(path.join(work, "labels.csv"), "utf8").trim().split("\n").slice(1);
  const saved = new Map(rows.map((r) => [Number(r.split(",")[0]), r.split(",")[1]]));
  check(saved.size === 100, "the journal holds " + saved.size + " labels, not 100");
  for (const [item, label] of expected) check(saved.get(item) === label, `item ${item}: saved ${saved.get(item)}, pressed ${label}`);
  const journal = fs.readFileSync(path.join(proj, "labels.journal"), "utf8").trim().split("\n");
  check(journal.length < 100, "labels were not sent in groups: " + journal.length + " journal records");
  const images = fs.readdirSync(path.join(proj, "batches", "0001")).filter((f) => f.endsWith(".png"));
  check(images.length === 100, images.length + " rendered images in batches/0001, not 100");
  for (const f of images.slice(0, 5)) {
    const s = pngSize(path.join(proj, "batches", "0001", f));
    check(s.width === 28 && s.height === 28, f + ": " + s.width + "x" + s.height);
  }

  // Enter: the next round (retrain where LibTorch is built in, select) runs in the background.
  const timings = await page.evaluate(() => window.quarry.timings.slice());
  const saveTimes = await page.evaluate(() => window.quarry.saveTimes.slice());
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => /batch 0002/.test(document.getElementById("batchname").textContent), null,
                             { timeout: 600000 });
  await page.waitForSelector("#img", { state: "visible" });
  await page.waitForFunction(() => document.getElementById("img").complete);
  if (torch) {
    check(/model: /.test(await page.textContent("#pred")), "batch 2 shows no model prediction");
    check((await page.$$("#curve circle")).length === 1, "the learning curve has no point for the first model");
  }
  await page.screenshot({ path: shot("labeling-page.png") });
  const s = pngSize(shot("labeling-page.png"));
  check(s.width === 1280 && s.height === 800 && s.bytes > 20000, "screenshot " + JSON.stringify(s));
  check(errors.length === 0, "errors on the page: " + errors.join("; "));

  const result = {
    chromium: browser.version(),
    items: 100,
    key_to_next_image_ms: stats(timings),
    key_to_saved_ms: stats(saveTimes),
    journal_records: journal.length,
    model: torch,
  };
  fs.writeFileSync(path.join(work, "browser-timings.json"), JSON.stringify(result, null, 1) + "\n");
  console.log(JSON.stringify(result));
  console.log("screenshots: " + shot("labeling-batch1.png") + " " + shot("labeling-page.png"));
  console.log("PASS");
} finally {
  await browser.close();
  // The server stops cleanly on SIGTERM (exit 0; under a sanitizer, no leak and no error).
  const exited = new Promise((resolve) => server.on("exit", (code, signal) => resolve({ code, signal })));
  server.kill("SIGTERM");
  const { code, signal } = await exited;
  if (code !== 0) {
    console.error("FAIL: the server ended with " + (code ?? signal) + ":\n" + serverLog);
    process.exitCode = 1;
  }
}
