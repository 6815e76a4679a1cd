// onnxruntime-web (WASM) in Node: greedy decoding of an edgellm model folder's model.onnx with a
// growing cache (each step's present.* fed back as past_key_values.*, the mask as wide as past +
// new tokens), the way a browser app or transformers.js runs it.
// usage: node onnxruntime_web.mjs REQUEST_JSON, REQUEST = {folder, cases: [{prompt_ids, new_tokens, eos}], shared}
// prints {cases: [{new_ids}]}. With "shared": true the cache is instead one preallocated buffer per
// past/present pair, as wide as the context, bound as both the input and the output of each step
// (onnxruntime-genai's past_present_share_buffer): in onnxruntime-web that gives wrong ids
// (docs/interop.md), which is why a web app feeds present back as past.
import fs from "node:fs";
import path from "node:path";
import * as ort from "onnxruntime-web";

const request = JSON.parse(process.argv[2]);
ort.env.wasm.numThreads = 1;
const session = await ort.InferenceSession.create(fs.readFileSync(path.join(request.folder, "model.onnx")));
const pastNames = session.inputNames.filter((n) => n.startsWith("past_key_values."));
const shapes = Object.fromEntries(session.inputMetadata.map((m) => [m.name, m.shape]));
const int64 = (values, dims) => new ort.Tensor("int64", BigInt64Array.from(values, BigInt), dims);
const cases = [];
for (const c of request.cases) {
  let past = Object.fromEntries(pastNames.map((n) => {
    const [, heads, , headDim] = shapes[n];  // (batch_size, kv heads, past_sequence_length, head_dim)
    const length = request.shared ? request.capacity : 0;
    return [n, new ort.Tensor("float32", new Float32Array(length * heads * headDim), [1, heads, length, headDim])];
  }));
  let input = c.prompt_ids, filled = 0;
  const newIds = [];
  while (newIds.length < c.new_tokens) {
    const seq = input.length;
    const width = request.shared ? request.capacity : filled + seq;  // a shared cache: zeros past the filled part
    const feeds = {
      input_ids: int64(input, [1, seq]),
      attention_mask: int64(Array.from({ length: width }, (_, i) => (i < filled + seq ? 1 : 0)), [1, width]),
      position_ids: int64(Array.from({ length: seq }, (_, i) => filled + i), [1, seq]),
      ...past,
    };
    const fetches = request.shared ? Object.fromEntries([["logits", null],
      ...pastNames.map((n) => [n.replace("past_key_values", "present"), past[n]])]) : undefined;
    const result = await (fetches ? session.run(feeds, fetches) : session.run(feeds));
    const vocab = result.logits.dims[2];
    const last = result.logits.data.subarray((seq - 1) * vocab, seq * vocab);
    let best = 0;
    for (let i = 1; i < vocab; i++) if (last[i] > last[best]) best = i;
    if (best === c.eos) break;
    newIds.push(best);
    past = Object.fromEntries(pastNames.map((n) => [n, result[n.replace("past_key_values", "present")]]));
    filled += seq;
    input = [best];
  }
  cases.push({ new_ids: newIds });
}
console.log(JSON.stringify({ cases }));
