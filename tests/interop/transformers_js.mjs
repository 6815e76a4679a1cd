// transformers.js (Node, its onnxruntime-node CPU backend) on an edgellm model folder.
// usage: node transformers_js.mjs REQUEST_JSON, REQUEST = {folder, cases: [{text | messages, new_tokens}]}
// prints {cases: [{prompt_ids, rendered, new_ids}]}: the tokenizer's (or chat template's) ids and
// greedy new ids from model.generate.
import path from "node:path";
import { env, AutoTokenizer, AutoModelForCausalLM, Tensor } from "@huggingface/transformers";

const request = JSON.parse(process.argv[2]);
const folder = path.resolve(request.folder);
env.allowRemoteModels = false;
env.localModelPath = path.dirname(folder) + "/";
const name = path.basename(folder);
const tokenizer = await AutoTokenizer.from_pretrained(name);
const model = await AutoModelForCausalLM.from_pretrained(name, { subfolder: "", dtype: "fp32", device: "cpu" });
const cases = [];
for (const c of request.cases) {
  let ids, rendered = null;
  if (c.messages) {
    rendered = tokenizer.apply_chat_template(c.messages, { tokenize: false, add_generation_prompt: true });
    ids = tokenizer.apply_chat_template(c.messages, { add_generation_prompt: true, return_tensor: false }).input_ids;
  } else {
    ids = tokenizer.encode(c.text);
  }
  const input_ids = new Tensor("int64", BigInt64Array.from(ids, BigInt), [1, ids.length]);
  const attention_mask = new Tensor("int64", new BigInt64Array(ids.length).fill(1n), [1, ids.length]);
  const out = await model.generate({ input_ids, attention_mask, max_new_tokens: c.new_tokens, do_sample: false });
  cases.push({ prompt_ids: ids, rendered, new_ids: Array.from(out.data, Number).slice(ids.length) });
}
console.log(JSON.stringify({ cases }));
