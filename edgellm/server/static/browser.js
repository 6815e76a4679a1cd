// The browser backend of the chat page: model.onnx run in this page by onnxruntime-web (WASM),
// with the folder's tokenizer.json (@huggingface/tokenizers) and chat template (@huggingface/jinja),
// all served by `edgellm web` from this machine. Greedy: the text equals edgellm's greedy text.
// The KV cache grows: each step's present.* is fed back as past_key_values.* and the mask is as
// wide as past + new tokens (one buffer bound as both past and present gives wrong tokens in
// onnxruntime-web; docs/interop.md).
import * as ort from "/modules/onnxruntime-web/dist/ort.wasm.min.mjs";
import { Tokenizer } from "/modules/@huggingface/tokenizers/dist/tokenizers.min.mjs";
import { Template } from "/modules/@huggingface/jinja/dist/index.js";

ort.env.wasm.wasmPaths = "/modules/onnxruntime-web/dist/";
ort.env.wasm.numThreads = 1;  // threads need a cross-origin isolated page; one is enough for small models
let model;

async function fetched(name, as) {
  const response = await fetch(`/model/${name}`);
  if (!response.ok) {
    throw new Error(`Cannot read ${name} of the model folder: ${response.status} ${response.statusText}`);
  }
  return response[as]();
}

export async function load() {
  const [tokenizerJson, tokenizerConfig, bytes] = await Promise.all(
    [fetched("tokenizer.json", "json"), fetched("tokenizer_config.json", "json"),
     fetched("model.onnx", "arrayBuffer")]);
  const session = await ort.InferenceSession.create(new Uint8Array(bytes), { executionProviders: ["wasm"] });
  const shapes = Object.fromEntries(session.inputMetadata.map((m) => [m.name, m.shape]));
  model = { session, shapes, tokenizer: new Tokenizer(tokenizerJson, tokenizerConfig),
            template: new Template(tokenizerConfig.chat_template),
            pastNames: session.inputNames.filter((n) => n.startsWith("past_key_values.")) };
}

const int64 = (values, dims) => new ort.Tensor("int64", BigInt64Array.from(values, BigInt), dims);

export async function* reply(info, turn, settings, signal) {
  const { session, shapes, tokenizer, template, pastNames } = model;
  const chat = Boolean(turn.messages);
  // a task model's prompt goes through its template too: the folder's chat template is the task template
  const messages = turn.messages ?? [{ role: "user", content: turn.prompt }];
  const ids = tokenizer.encode(template.render({ messages, add_generation_prompt: true }),
                               { add_special_tokens: false }).ids;
  if (ids.length >= info.context) {
    throw Object.assign(new Error(`The prompt is ${ids.length} tokens but the model's context is ${info.context} `
                                  + "tokens. Shorten the prompt."), { code: "context_length_exceeded" });
  }
  const wanted = settings.max_tokens ?? info.defaults.max_tokens;
  if (!Number.isInteger(wanted) || wanted < 1) {
    throw new Error(`max tokens must be an integer >= 1. Received: ${wanted}`);
  }
  const steps = Math.min(wanted, info.context - ids.length);
  let past = Object.fromEntries(pastNames.map((n) => {
    const [, heads, , headDim] = shapes[n];  // (batch_size, kv heads, past_sequence_length, head_dim)
    return [n, new ort.Tensor("float32", new Float32Array(0), [1, heads, 0, headDim])];
  }));
  let input = ids, filled = 0, sent = 0, text = "";
  const newIds = [];
  while (newIds.length < steps) {
    await nextTask();  // session.run holds the page's thread: let it paint and take clicks (Stop) between steps
    if (signal.aborted) throw new DOMException("Stopped", "AbortError");
    const seq = input.length;
    const result = await session.run({
      input_ids: int64(input, [1, seq]),
      attention_mask: int64(new Array(filled + seq).fill(1), [1, filled + seq]),
      position_ids: int64(Array.from({ length: seq }, (_, i) => filled + i), [1, seq]),
      ...past,
    });
    const vocab = result.logits.dims[2];
    const last = result.logits.data.subarray((seq - 1) * vocab, seq * vocab);
    let best = 0;
    for (let i = 1; i < vocab; i++) if (last[i] > last[best]) best = i;
    if (best === info.eos) break;
    newIds.push(best);
    past = Object.fromEntries(pastNames.map((n) => [n, result[n.replace("past_key_values", "present")]]));
    filled += seq;
    input = [best];
    let raw = tokenizer.decode(newIds);
    const stop = firstStop(raw, info.stops);
    if (stop >= 0) raw = raw.slice(0, stop);
    // a chat reply after "Assistant:" starts after its space, as the server's does
    const lead = chat ? raw.length - raw.trimStart().length : 0;
    text = raw.slice(lead);
    if (stop >= 0) break;
    const ready = safeEnd(raw, info.stops) - lead;
    if (ready > sent) {
      yield text.slice(sent, ready);
      sent = ready;
    }
  }
  if (text.length > sent) yield text.slice(sent);
  return { tokens: newIds.length };
}

// a promise that resolves in a later task, so that the events and the painting waiting for the
// thread go first (a message, not setTimeout: no 4 ms clamp)
function nextTask() {
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = resolve;
    channel.port2.postMessage(null);
  });
}

function firstStop(text, stops) {
  const found = stops.map((s) => text.indexOf(s)).filter((i) => i >= 0);
  return found.length ? Math.min(...found) : -1;
}

// how much of the text can be shown: not an unfinished UTF-8 character (U+FFFD at the end) nor what
// may be the start of a stop string
function safeEnd(text, stops) {
  let end = text.length;
  while (end > 0 && text[end - 1] === "\uFFFD") end--;
  for (const stop of stops) {
    for (let k = Math.min(stop.length - 1, end); k > 0; k--) {
      if (text.slice(0, end).endsWith(stop.slice(0, k))) { end -= k; break; }
    }
  }
  return end;
}
