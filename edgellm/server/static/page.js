// The chat page: the conversation, the settings and the stop button. What the page knows about the
// model is in #info (written by edgellm/server/page.py); a backend answers each message:
// server.js (edgellm serve's /v1 API, streamed) or browser.js (model.onnx run in this page).
// A backend has load(info) and reply(info, turn, settings, signal), an async generator of text
// pieces that returns {tokens} (the reply's length) and throws an Error with a message to show, or
// an AbortError when stopped.
const info = JSON.parse(document.getElementById("info").textContent);
const $ = (id) => document.getElementById(id);
const browser = info.backend === "browser";
const backend = await import(browser ? "./browser.js" : "./server.js");
let history = [];  // chat models: the conversation so far, [{role, content}]
let controller = null;  // aborts the reply being written

function setState(state, status = "") {
  document.body.dataset.state = state;  // loading, idle or running (tests wait on it)
  $("status").textContent = status;
  $("send").disabled = state !== "idle";
  $("stop").disabled = state !== "running";
}

function add(kind, text) {
  const div = document.createElement("div");
  div.className = `message ${kind}`;
  div.textContent = text;
  $("messages").append(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

function number(id) {
  const value = $(id).value.trim();
  return value === "" ? undefined : Number(value);  // left empty: the model's default
}

function settings() {
  if (browser) return { max_tokens: number("max_tokens") };
  return { temperature: number("temperature"), top_p: number("top_p"), max_tokens: number("max_tokens"),
           seed: number("seed"), json: $("json").checked };
}

function describe() {
  const where = browser ? "runs in this browser (onnxruntime-web, WASM), greedy" : "served by edgellm serve";
  $("about").textContent = `context ${info.context} tokens · ${where}`;
  const d = info.defaults;
  for (const [id, value] of [["temperature", d.temperature], ["top_p", d.top_p], ["max_tokens", d.max_tokens],
                             ["seed", d.seed]]) if (value !== null) $(id).value = value;
  if (browser) for (const label of document.querySelectorAll(".sampling")) label.hidden = true;
  if (info.json_output) {  // the reason JSON output is off here
    $("json").disabled = true;
    $("json_label").classList.add("off");
    $("json_label").title = info.json_output;
  }
  if (info.task) {
    const data = info.data.length ? ` (trained on ${info.data.join(", ")})` : "";
    $("task").textContent = `A task model: it answers one prompt written like the prompts it was trained on${data}, `
      + "and stops at the end of its answer. Each prompt stands alone: the page sends completions, not a chat.";
    $("task").hidden = false;
    $("prompt").placeholder = "Write a prompt in the model's task format; Enter sends, Shift+Enter starts a new line";
  }
}

async function send(text) {
  add("user", text);
  const asked = { role: "user", content: text };
  const turn = info.task ? { prompt: text } : { messages: [...history, asked] };
  const div = add("assistant running", "");
  controller = new AbortController();
  setState("running", "writing…");
  let reply = "", pieces = 0, status = "done";
  const started = performance.now();
  try {
    const stream = backend.reply(info, turn, settings(), controller.signal);
    for (;;) {
      const { value: piece, done } = await stream.next();
      if (done) {  // the backend's summary: {tokens}
        const seconds = (performance.now() - started) / 1000;
        const speed = (piece.tokens / seconds).toFixed(0);
        status = `done: ${piece.tokens} tokens in ${seconds.toFixed(2)} s (${speed} tokens/s)`;
        break;
      }
      reply += piece;
      div.textContent = reply;
      div.dataset.pieces = ++pieces;  // how many streamed pieces made the reply
      div.scrollIntoView({ block: "end" });
    }
  } catch (error) {
    if (error.name === "AbortError") status = "stopped";
    else {
      status = "error";
      const longChat = error.code === "context_length_exceeded" && history.length;
      add("error", error.message + (longChat ? " Clear starts a new conversation." : ""));
    }
  }
  div.classList.remove("running");
  if (status === "error" && !reply) div.remove();
  else if (!info.task) history.push(asked, { role: "assistant", content: reply });
  controller = null;
  setState("idle", status);
}

$("form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("prompt").value;
  if (!text.trim() || document.body.dataset.state !== "idle") return;
  $("prompt").value = "";
  send(text);
});
$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); $("form").requestSubmit(); }
});
$("stop").addEventListener("click", () => controller?.abort());
$("clear").addEventListener("click", () => { controller?.abort(); history = []; $("messages").replaceChildren(); });

describe();
setState("loading", browser ? "loading the model into the page…" : "");
try {
  await backend.load(info);
  setState("idle", browser ? "model loaded" : "");
} catch (error) {
  add("error", error.message);
  setState("failed", "the model did not load");
}
